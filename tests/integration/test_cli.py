"""The command line (issue 12): an unknown command is one error line with a suggestion and a
pointer to --help, exit 2; `junction help CMD` prints that command's help; `describe TYPE` in
text shows the same (in)/(out) marks as --markdown and refers to nothing it does not print;
`junction log --since` takes the forms its help shows ("10m ago", "10m", a UTC time) and
refuses others with a clear error."""
import json
import re
import time

from jnt import Checks, Junction, curl, free_port, run_junction

t = Checks("cli")

# ---- unknown commands and help ----
HINT = "Run 'junction --help' for the list of commands."

code, out, err = run_junction(["rnu"])
t.eq(code, 2, "an unknown command exits 2")
t.eq(err.splitlines(), ["junction: unknown command 'rnu' (did you mean 'run'?)", HINT],
     "a near miss: one error line with the suggestion and one pointing to --help")
t.eq(out, "", "nothing on stdout for an unknown command")
code, out, err = run_junction(["frobnicate", "-c", "x.yaml"])
t.eq(code, 2, "a far miss exits 2")
t.eq(err.splitlines(), ["junction: unknown command 'frobnicate'", HINT],
     "a far miss: no suggestion")

code, out, err = run_junction(["help", "run"])
t.eq(code, 0, "help run exits 0 (stderr: %r)" % err)
t.check(out.startswith("usage: junction run [-c FILE] [--user NAME] [--allow-root]\n"),
        "help run starts with run's usage: %r"
        % out[:200])
t.check("describe" not in out and "dlq" not in out, "help run shows only run: %r" % out)
code2, out2, _ = run_junction(["run", "--help"])
t.eq((code2, out2), (0, out), "run --help prints the same as help run")

code, out, err = run_junction(["help", "log"])
t.check(code == 0 and out.startswith("usage: junction log [--since T] [--until T] [-c FILE]\n")
        and "10m ago" in out, "help log: its usage and the time forms: %r" % out)
code, out, err = run_junction(["help", "dlq"])
t.check(code == 0 and "dlq list" in out and "dlq replay" in out,
        "help dlq shows both forms: %r" % out)

code, out, err = run_junction(["help"])
code2, out2, _ = run_junction(["--help"])
t.eq(code, 0, "help exits 0")
t.eq(out, out2, "help prints the general help, as --help does")
for cmd in ("run", "check", "describe", "trace", "log", "dlq", "help", "version"):
    t.check(re.search(r"^  %s\b" % cmd, out, re.M), "the general help lists %s" % cmd)

code, out, err = run_junction(["help", "nosuch"])
t.eq(code, 2, "help of an unknown command exits 2")
t.eq(err.splitlines(), ["junction: unknown command 'nosuch'", HINT], "help nosuch: the error")
code, out, err = run_junction(["help", "lgo"])
t.eq(err.splitlines()[:1], ["junction: unknown command 'lgo' (did you mean 'log'?)"],
     "help lgo suggests log")

code, out, err = run_junction(["check", "--bogus"])
t.eq(code, 2, "an unexpected argument exits 2")
t.eq(err.splitlines(), ["junction: unexpected argument '--bogus'",
                        "usage: junction check [-c FILE]",
                        "Run 'junction help check' for more."],
     "an unexpected argument: the error and the command's usage, not the whole help")

code, out, err = run_junction(["dlq"])
t.eq((code, err.splitlines()), (2, ["usage: junction dlq list [-c FILE]",
                                    "   or: junction dlq replay ID|--all [-c FILE]",
                                    "Run 'junction help dlq' for more."]),
     "dlq without a subcommand: both usage lines")

# ---- describe TYPE: the marks of --markdown, nothing "below" ----
code, md, _ = run_junction(["describe", "--markdown"])
t.eq(code, 0, "describe --markdown")


def md_rows(section):
    """{option: description} of the first table after the heading line section."""
    rows, on = {}, False
    for line in md.splitlines():
        if line == section:
            on = True
        elif on and line.startswith("| `"):
            cells = [c.strip() for c in line.split(" | ")]
            rows[cells[0].strip("|` ")] = cells[-1].rstrip(" |")
        elif on and rows and not line.startswith("|"):
            break
    return rows


common = md_rows("## `channels:` (every channel)")
t.check("retry" in common and common["retry"].startswith("(out) "),
        "the markdown marks retry (out): %r" % common.get("retry"))
code, listing, _ = run_junction(["describe"])
types = re.findall(r"^  (\S+)", listing.split("service types:")[0], re.M)
t.check("mllp" in types and "file" in types, "describe lists the channel types: %r" % types)
for ty in types:
    rows = dict(common, **md_rows("### channel type `%s`" % ty))
    code, text, err = run_junction(["describe", ty])
    t.eq(code, 0, "describe %s exits 0 (%r)" % (ty, err))
    seen = 0
    for line in text.splitlines()[1:]:
        name = line.split()[0]
        if name not in rows:
            continue
        seen += 1
        marks = re.match(r"((?:\((?:in|out)\) )*)", rows[name]).group(1)
        doc = rows[name][len(marks):].replace("\\|", "|")[:20]
        at = line.find(doc)
        t.check(at > 0 and (line[:at].endswith(" " + marks) if marks
                            else not re.search(r"\((in|out)\) $", line[:at])),
                "describe %s: %s has the marks %r of --markdown: %r" % (ty, name, marks, line))
    t.eq(seen, len(rows), "describe %s: every option of the markdown is in the text" % ty)
    # "below"/"above" as an adverb ("the types below."), not "above concurrency".
    refs = [x for x in text.splitlines() if re.search(r"\b(below|above)\b(?! \w)", x)]
    t.eq(refs, [], "describe %s refers to nothing above or below" % ty)
    t.check(re.match(r"channel type %s \((in|out|in, out)\): " % ty, text),
            "describe %s names its directions: %r" % (ty, text.splitlines()[0]))

# ---- log --since: the forms the help shows ----
port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r:
    from: [in]
    to: [out]
""" % port, wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    j.start()
    st, body, _ = curl(["--data-binary", "hello", "http://127.0.0.1:%d/ingest" % port])
    t.eq(st, 202, "the message is accepted")
    mid = json.loads(body)["id"] if st == 202 else "?"
    t.eq(j.stop(), 0, "the broker stops")

    utc10 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 600))
    for since in ("10m ago", "10m", "1h", "2h ago", "90s ago", "1d  ago", utc10, utc10 + "Z"):
        code, out, err = run_junction(["log", "--since", since, "-c", j.cfg])
        t.eq(code, 0, "log --since %r exits 0 (stderr: %r)" % (since, err))
        t.check(re.search(r"^\S+  %s  received" % mid, out, re.M),
                "log --since %r shows the recent action: %r" % (since, out))
    code, out, err = run_junction(["log", "--until", "10m ago", "-c", j.cfg])
    t.check(code == 0 and mid not in out and "0 action(s)" in err,
            "log --until '10m ago' leaves out the newer action: %r %r" % (out, err))
    code, out, err = run_junction(["log", "--since", "1h", "--until", "0s ago", "-c", j.cfg])
    t.check(code == 0 and mid in out, "log from 1h to 0s ago: %r %r" % (out, err))

    for bad in ("10 minutes", "10", "ago", "10m ago ago", "m ago", "2026-13-01T00:00:00",
                "yesterday", ""):
        code, out, err = run_junction(["log", "--since", bad, "-c", j.cfg])
        t.eq(code, 2, "log --since %r exits 2" % bad)
        t.eq(err.splitlines(), ["junction: --since '%s': expected a duration ago (10m ago, 10m, "
                                "2h, 7d) or a UTC time YYYY-MM-DDTHH:MM:SS[Z]" % bad],
             "log --since %r: a clear error" % bad)
        t.eq(out, "", "log --since %r prints no actions" % bad)
finally:
    j.cleanup()

t.finish()
