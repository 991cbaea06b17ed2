"""file OUT, mode: append (issue 20): HTTP IN -> many messages per file.

1. 400 messages from one sender end in the file(s) exactly once each, in order, each followed
   by the separator (a multi-byte one, given with escapes).
2. Rotation by size: several files, each complete (whole records only, none over the limit but
   by one record), no .part left after the stop.
3. A file is never visible under its final name before it is complete: a watcher reads every
   final name as soon as it appears during the load; later reads must give the same bytes.
4. A leftover .part (a crash) is completed at the next start: its torn tail is cut, the rest
   is renamed to a final name that does not replace an existing file.
5. mode: file spreads files over subfolders from the template ("{header.X-Dept}/{id}.msg").
6. Config errors: {id} in an append name, a bad escape in separator, a name leaving dir.
"""
import http.client
import os
import re
import threading
import time
import traceback

from jnt import Checks, Junction, free_port, run_junction, wait_until

SEP = b"\r\n--\r\n"

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: "off"
  log_level: info
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
    path: /ingest
  app:
    type: file
    direction: out
    dir: @DIR@/out
    mode: append
    name: "{date}/{header.X-Key}.log"
    separator: '\\r\\n--\\r\\n'
    max_file_bytes: %(max)s
  spread:
    type: file
    direction: out
    dir: @DIR@/spread
    name: "{header.X-Dept}/{id}.msg"
routes:
  r:
    from: [in]
    when: header("X-Key")
    to: [app]
  s:
    from: [in]
    when: header("X-Dept")
    to: [spread]
"""


def final_files(root):
    """relative path -> bytes of every file under root whose name does not start with '.'."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if not n.startswith("."):
                p = os.path.join(d, n)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, root)] = f.read()
    return out


def part_files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root)
                  for n in names if n.endswith(".part"))


def records(data):
    """The records of one file; None when it does not end with the separator."""
    if not data.endswith(SEP):
        return None
    return data[:-len(SEP)].split(SEP)


def post_many(port, bodies, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    codes = []
    for b in bodies:
        conn.request("POST", "/ingest", body=b, headers=headers)
        r = conn.getresponse()
        r.read()
        codes.append(r.status)
    conn.close()
    return codes


def file_order_key(name):
    """Final names are the key, then key.1, key.2 ... before the extension."""
    m = re.match(r"^(.*?)(?:\.(\d+))?\.log$", os.path.basename(name))
    return (os.path.dirname(name), m.group(1), int(m.group(2) or 0)) if m else (name, "", 0)


t = Checks("file_append")
port = free_port()
MAX = 4000
j = Junction(CONFIG % {"port": port, "max": MAX}, wait_ports=[port])
t.on_fail.append(lambda: print(j.log()))
try:
    j.start()
    out = j.path("out")

    # 3 (watcher): every final name, read the first time it is seen during the load.
    seen = {}
    stop_watch = threading.Event()

    def watch():
        while not stop_watch.is_set():
            for name, data in final_files(out).items() if os.path.isdir(out) else ():
                seen.setdefault(name, data)
            time.sleep(0.003)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    # 1. One sender, 400 messages of 20-60 bytes (payloads of all lengths, some with \r\n).
    N = 400
    bodies = [(b"msg-%04d;" % i) + b"x" * (i % 41) + (b"\r\n" if i % 7 == 0 else b"")
              for i in range(N)]
    codes = post_many(port, bodies, {"X-Key": "k1", "Content-Type": "text/plain"})
    t.eq(codes, [202] * N, "every POST is accepted")

    def all_written():
        got = []
        for name in sorted(final_files(out), key=file_order_key):
            rs = records(final_files(out)[name])
            got += rs or []
        return got

    # Records reach final names only when their file closes (size here; idle or stop later).
    time.sleep(0.3)
    stop_watch.set()
    watcher.join(5)
    t.eq(j.stop(), 0, "junction stops cleanly")
    t.eq(part_files(out), [], "no .part file is left after the stop")
    files = final_files(out)
    names = sorted(files, key=file_order_key)
    t.check(len(names) >= 3, "rotation by max_file_bytes gives several files: %r" % names)
    got = []
    for name in names:
        data = files[name]
        rs = records(data)
        t.check(rs is not None, "%s ends with the separator" % name)
        got += rs or []
        # 2. A file passes max_file_bytes only by the record that could not go elsewhere.
        t.check(len(data) <= MAX, "%s holds at most max_file_bytes (%d > %d)" %
                (name, len(data), MAX))
    t.eq(len(got), N, "every message is in the files once")
    t.eq(sorted({os.stat(os.path.join(out, n)).st_mode & 0o777 for n in names}), [0o640],
         "append files get file_mode (0640 by default)")
    t.check(got == bodies, "the records are the messages in the order they were sent, byte "
            "for byte")
    t.check(all(n.startswith(time.strftime("%Y-%m-%d", time.gmtime()) + os.sep) or
                n.startswith(time.strftime("%Y-%m-%d", time.gmtime(time.time() - 60)) + os.sep)
                for n in names), "files are in the {date} folder: %r" % names[:3])
    t.check(any(n.endswith("k1.log") for n in names) and
            any(n.endswith("k1.1.log") for n in names),
            "the final names are the key, then the key numbered: %r" % names[:4])

    # 3. What the watcher saw under a final name never changed afterwards.
    changed = [n for n, data in seen.items() if files.get(n) != data]
    t.check(len(seen) >= 1, "the watcher saw final files during the load (%d)" % len(seen))
    t.eq(changed, [], "no file was seen under its final name before it was complete")

    # 4. A leftover .part from a "crash": two whole records and a torn tail.
    day = os.path.dirname(names[0])
    leftover = os.path.join(out, day, ".k1.log.part")
    with open(leftover, "wb") as f:
        f.write(b"left-1" + SEP + b"left-2" + SEP + b"torn-rec")
    # An empty leftover with no whole record is removed.
    empty = os.path.join(out, day, ".k9.log.part")
    with open(empty, "wb") as f:
        f.write(b"torn-only\r\n-")
    before = set(files)
    j.start()
    t.check(wait_until(lambda: part_files(out) == [], 5),
            "the leftover .part files are dealt with at the start: %r" % part_files(out))
    new = {n: d for n, d in final_files(out).items() if n not in before}
    t.eq(list(new.values()), [b"left-1" + SEP + b"left-2" + SEP],
         "the leftover is completed under a new final name, its torn tail cut")
    t.check(final_files(out).items() >= {n: files[n] for n in before}.items(),
            "no earlier file was replaced or changed")
    t.check(re.search(r"completed the leftover .*\.k1\.log\.part as .*k1\.\d+\.log", j.log()),
            "the completion is logged")
    t.check(re.search(r"removed the leftover .*\.k9\.log\.part", j.log()),
            "the leftover without a whole record is removed and logged")

    # 5. mode: file, subfolders from the template.
    codes = post_many(port, [b"a", b"b", b"c"], {"X-Dept": "lab"})
    codes += post_many(port, [b"d"], {"X-Dept": "ward/7"})
    t.eq(codes, [202] * 4, "the mode: file posts are accepted")
    sp = j.path("spread")
    t.check(wait_until(lambda: len(final_files(sp)) == 4, 10),
            "mode: file writes 4 files: %r" % sorted(final_files(sp)))
    got = final_files(sp)
    t.eq(sorted(got[n] for n in got if n.startswith("lab" + os.sep)), [b"a", b"b", b"c"],
         "three files in the lab folder")
    t.eq([got[n] for n in got if n.startswith(os.path.join("ward", "7") + os.sep)], [b"d"],
         "a header with '/' makes nested folders")
    t.eq([n for _, _, ns in os.walk(sp) for n in ns if n.startswith(".")], [],
         "no temp file is left in the subfolders")

    # Idle close: one record, then nothing: the file is renamed within max_file_idle (5 s) + 1.
    codes = post_many(port, [b"idle-one"], {"X-Key": "idle"})
    t.eq(codes, [202], "the idle post is accepted")
    t.check(wait_until(lambda: any(n.endswith("idle.log") for n in final_files(out)), 9),
            "an idle file is closed and renamed without more traffic")
    t.eq(j.stop(), 0, "junction stops cleanly again")
    t.eq(part_files(out), [], "no .part file after the second stop")
except Exception:
    t.check(False, "exception:\n" + traceback.format_exc())
finally:
    j.cleanup()

# 6. Config errors, each at file:line:col.
bad = [
    ("name: \"{id}.ndjson\"", r"name: .*one file per message"),
    ("name: \"{date}.log\"\n    separator: 'a\\q'", r"separator: unknown escape '\\q'"),
    ("name: \"{date}.log\"\n    separator: ''", r"separator: must not be empty"),
    ("name: \"../{date}.log\"", r"name: .*relative path inside dir"),
    ("name: \"/abs/{date}.log\"", r"name: .*relative path inside dir"),
]
for line, pattern in bad:
    cfg = Junction("""
channels:
  in: { type: http, direction: in, listen: 127.0.0.1:%d, path: /i }
  out:
    type: file
    direction: out
    dir: @DIR@/out
    mode: append
    %s
routes:
  r: { from: [in], to: [out] }
""" % (free_port(), line))
    try:
        code, so, se = run_junction(["check", "-c", cfg.cfg])
        t.eq(code, 1, "junction check refuses %s" % line)
        t.check(re.search(r"junction\.yaml:\d+:\d+: .*" + pattern, so + se),
                "%s: the error matches %r:\n%s%s" % (line, pattern, so, se))
    finally:
        cfg.cleanup()
t.finish()
