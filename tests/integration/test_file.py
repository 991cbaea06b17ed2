"""jn-it-file: the file channel against the real junction binary.

A drop folder (IN) and a file writer (OUT), driven with real files: renamed-in drops, split
lines, a file over max_message, names that must be left alone (dot files, .tmp, .part), a FIFO,
a dangling symlink, a symlink to a real file, a name clash in done/, a writer that cannot rename
(settle), a name template that renders to nothing (REJECT), config errors from `junction check`,
and a clean exit on SIGTERM.
"""
import os
import re
import signal
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jnt import Checks, Junction, run_junction, wait_until  # noqa: E402

CONFIG = """\
junction:
  data_dir: @DIR@/data
  log_level: debug
channels:
  drop:
    type: file
    direction: in
    dir: @DIR@/in
    poll_interval: 50ms
    max_message: 1KiB
  lines:
    type: file
    direction: in
    dir: @DIR@/lines
    split: lines
    poll_interval: 50ms
    max_message: 64
  slow:
    type: file
    direction: in
    dir: @DIR@/slow
    poll_interval: 50ms
    settle: 1s
  rej:
    type: file
    direction: in
    dir: @DIR@/rej
    poll_interval: 50ms
  out:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{channel}-{id}.txt"
  bad:
    type: file
    direction: out
    dir: @DIR@/bad
    name: "{header.no-such-header}"
    retry: { attempts: 1 }
routes:
  r1:
    from: [drop, lines, slow]
    to: [out]
  r2:
    from: [rej]
    to: [bad]
"""

ID = r"[0-9A-HJKMNP-TV-Z]{26}"


def drop(j, sub, name, data):
    """Writes like a well-behaved producer: a dot-tmp name first, then rename."""
    tmp = j.path(sub, "." + name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, j.path(sub, name))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def out_files(j, channel):
    """name -> bytes of the files out/ holds for one source channel."""
    d = j.path("out")
    res = {}
    for n in os.listdir(d):
        if n.startswith(channel + "-"):
            res[n] = read(os.path.join(d, n))
    return res


def out_payloads(j, channel):
    return sorted(out_files(j, channel).values())


def main():
    c = Checks("file")
    j = Junction(CONFIG)
    c.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
    try:
        j.start()
        started = wait_until(lambda: all(os.path.isdir(j.path(*p)) for p in (
            ("in",), ("in", "done"), ("in", "error"), ("lines", "done"), ("slow",), ("out",),
            ("rej",), ("bad",))) or not j.alive(), 10)
        if not c.check(started and j.alive(), "junction starts and creates its folders"):
            return

        # Names a writer is still working on, and things that are not regular files. All are
        # in place before the first real file, so the polls that take it have seen them.
        ignored = {".hidden": b"dot file\n", "w.part": b"partial\n", "w.tmp": b"temporary\n"}
        for n, data in ignored.items():
            with open(j.path("in", n), "wb") as f:
                f.write(data)
        os.mkfifo(j.path("in", "pipe.fifo"))
        os.symlink(j.path("nowhere", "gone.txt"), j.path("in", "dangling.txt"))
        with open(j.path("target.txt"), "wb") as f:
            f.write(b"reached through a symlink\n")
        os.symlink(j.path("target.txt"), j.path("in", "link.txt"))

        # 1. A dropped file arrives byte-exact; the source moves to done/.
        payload = b"hello\x00world\r\nbinary \xff\xfe end"
        drop(j, "in", "a.txt", payload)
        ok = wait_until(lambda: payload in out_payloads(j, "drop"), 10)
        c.check(ok, "a.txt is delivered byte-exact under out/")
        c.check(wait_until(lambda: os.path.exists(j.path("in", "done", "a.txt")), 5),
                "a.txt moved to in/done/")
        c.check(not os.path.exists(j.path("in", "a.txt")), "a.txt is gone from in/")
        if os.path.exists(j.path("in", "done", "a.txt")):
            c.eq(read(j.path("in", "done", "a.txt")), payload, "done/a.txt keeps its bytes")
        names = list(out_files(j, "drop"))
        c.check(names and all(re.fullmatch(r"drop-" + ID + r"\.txt", n) for n in names),
                "out names follow {channel}-{id}.txt: %r" % names)

        # 2. A symlink to a regular file is followed; the link itself moves to done/.
        c.check(wait_until(lambda: b"reached through a symlink\n" in out_payloads(j, "drop"), 10),
                "a symlink to a regular file is read")
        c.check(wait_until(lambda: os.path.islink(j.path("in", "done", "link.txt")), 5),
                "the symlink moves to done/")
        c.check(os.path.exists(j.path("target.txt")), "the symlink's target is left alone")

        # 3. split: lines: one message per non-empty line, LF or CRLF stripped.
        drop(j, "lines", "x.txt", b"one\r\ntwo\n\n  three  \r\n\r\nlast")
        want = sorted([b"one", b"two", b"  three  ", b"last"])
        ok = wait_until(lambda: out_payloads(j, "lines") == want, 10)
        c.eq(out_payloads(j, "lines"), want, "split: lines gives one exact file per line")
        c.check(wait_until(lambda: os.path.exists(j.path("lines", "done", "x.txt")), 5),
                "x.txt moved to lines/done/")

        # 4. A file over max_message goes to error/ with a reason naming the limit.
        big = b"x" * 2000
        drop(j, "in", "big.bin", big)
        reason_path = j.path("in", "error", "big.bin.reason")
        c.check(wait_until(lambda: os.path.exists(reason_path), 10), "big.bin.reason written")
        c.check(os.path.exists(j.path("in", "error", "big.bin")), "big.bin moved to in/error/")
        if os.path.exists(j.path("in", "error", "big.bin")):
            c.eq(read(j.path("in", "error", "big.bin")), big, "error/big.bin keeps its bytes")
        if os.path.exists(reason_path):
            reason = read(reason_path).decode()
            c.check("max_message" in reason and "1024" in reason and "2000" in reason,
                    "the reason names the limit and the size: %r" % reason)
            c.check(reason.endswith("\n") and reason.count("\n") == 1,
                    "the reason is one line: %r" % reason)
        c.check(big not in out_payloads(j, "drop"), "big.bin is not delivered")

        # 5. A line over max_message refuses the whole file, before any line is ingested.
        before = len(out_payloads(j, "lines"))
        drop(j, "lines", "long.txt", b"short\n" + b"y" * 100 + b"\n")
        lreason = j.path("lines", "error", "long.txt.reason")
        c.check(wait_until(lambda: os.path.exists(lreason), 10), "long.txt goes to error/")
        if os.path.exists(lreason):
            r = read(lreason).decode()
            c.check("line 2" in r and "max_message" in r and "64" in r,
                    "the reason names the line and the limit: %r" % r)
        c.eq(len(out_payloads(j, "lines")), before, "no line of long.txt is delivered")

        # 6. The same name dropped again: done/ keeps both, the second with .<id>.
        drop(j, "in", "a.txt", b"second a\n")
        c.check(wait_until(lambda: b"second a\n" in out_payloads(j, "drop"), 10),
                "a second a.txt is delivered")
        clash = wait_until(lambda: [n for n in os.listdir(j.path("in", "done"))
                                    if re.fullmatch(r"a\.txt\." + ID, n)], 5)
        c.check(clash, "the second a.txt is kept in done/ as a.txt.<id>: %r"
                % os.listdir(j.path("in", "done")))
        if clash:
            c.eq(read(j.path("in", "done", clash[0])), b"second a\n", "done/a.txt.<id> bytes")
            c.eq(read(j.path("in", "done", "a.txt")), payload, "the first done/a.txt is kept")

        # 7. The broker lived through the dangling symlink and the FIFO and keeps working.
        drop(j, "in", "after.txt", b"after the odd ones\n")
        c.check(wait_until(lambda: b"after the odd ones\n" in out_payloads(j, "drop"), 10),
                "a file dropped later is still processed")
        c.check(j.alive(), "junction is alive after the dangling symlink and the FIFO")
        for n, data in ignored.items():
            p = j.path("in", n)
            c.check(os.path.exists(p) and read(p) == data, "%s is left alone" % n)
            c.check(not os.path.exists(j.path("in", "done", n)), "%s is not in done/" % n)
        c.check(stat.S_ISFIFO(os.lstat(j.path("in", "pipe.fifo")).st_mode),
                "the FIFO is left alone")
        c.check(os.path.islink(j.path("in", "dangling.txt")), "the dangling symlink is left alone")
        c.check(not any(n.startswith(("dangling", "pipe", ".hidden", "w."))
                        for n in os.listdir(j.path("in", "error"))),
                "none of the skipped names went to error/")
        c.check("dangling.txt: vanished, or a symlink to nothing" in j.log(),
                "the dangling symlink is logged at debug")
        for n in ignored:
            c.check(n not in j.log(), "%s is never mentioned (never looked at)" % n)

        # 8. settle: a writer that appends in place is read only once the file is still.
        sp = j.path("slow", "s.txt")
        with open(sp, "wb") as f:
            f.write(b"part one, ")
            f.flush()
            time.sleep(0.3)
            f.write(b"part two")
        c.check(wait_until(lambda: out_payloads(j, "slow") != [], 10), "s.txt is delivered")
        time.sleep(0.3)  # a premature read would show up as a second, partial message
        c.eq(out_payloads(j, "slow"), [b"part one, part two"], "settle waits for the whole file")

        # 9. A name that renders empty is rejected (dead-lettered), never written.
        drop(j, "rej", "r.txt", b"no name for me\n")
        c.check(wait_until(lambda: "dead-lettered" in j.log() and "not a file name" in j.log(),
                           10), "an empty rendered name is rejected with a reason")
        c.eq(os.listdir(j.path("bad")), [], "nothing is written for a rejected name")

        # 10. No temp files are left in out/.
        c.eq([n for n in os.listdir(j.path("out")) if n.startswith(".")], [],
             "no .tmp files left in out/")
        c.check(j.alive(), "junction is still running")
    finally:
        code = j.stop(signal.SIGTERM)
        c.eq(code, 0, "junction exits 0 on SIGTERM")
        check_configs(c, j)
        if c.failed == 0:
            j.cleanup()
        else:
            print("(kept %s)" % j.dir)
    c.finish()


def check_configs(c, j):
    """`junction check` reports file-channel config errors at their position."""
    cases = [
        ("bad_tmpl.yaml", "    name: \"{nope}.txt\"\n", "out",
         r"bad_tmpl\.yaml:\d+:\d+: .*name: .*unknown placeholder '\{nope\}'"),
        ("slash.yaml", "    name: \"a/../../{id}\"\n", "out",
         r"slash\.yaml:\d+:\d+: .*name: .*relative path inside dir"),
        ("split_out.yaml", "    split: lines\n", "out",
         r"split_out\.yaml:\d+:\d+: .*split.*only to direction: in"),
        ("same.yaml", "    done_dir: @DIR@/in/\n", "in",
         r"same\.yaml:\d+:\d+: .*done_dir: must differ from dir"),
    ]
    for fname, extra, direction, pattern in cases:
        text = ("channels:\n  x:\n    type: file\n    direction: %s\n    dir: @DIR@/in\n%s"
                % (direction, extra)).replace("@DIR@", j.dir)
        path = os.path.join(j.dir, fname)
        with open(path, "w") as f:
            f.write(text)
        code, out, err = run_junction(["check", "-c", path])
        c.eq(code, 1, "junction check refuses %s" % fname)
        c.check(re.search(pattern, out + err), "%s: error matches %r:\n%s%s"
                % (fname, pattern, out, err))
    path = os.path.join(j.dir, "nodir.yaml")
    with open(path, "w") as f:
        f.write("channels:\n  x:\n    type: file\n    direction: in\n")
    code, out, err = run_junction(["check", "-c", path])
    c.eq(code, 1, "junction check refuses a file channel without dir")
    c.check("dir" in out + err, "the missing dir is named:\n%s%s" % (out, err))


if __name__ == "__main__":
    main()
