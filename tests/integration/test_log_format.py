"""Log formats (issue 21, part 3): junction.log_format: json writes one JSON object per line
(time, level, component, msg); under journald (stderr is the stream $JOURNAL_STREAM names) lines
start with a syslog priority <N> and text lines carry no timestamp; a JOURNAL_STREAM that names
another file changes nothing; the default stays the house text format."""
import json
import os
import re
import tempfile

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("log_format")

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: off
  log_level: debug
%s
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d" }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
"""
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(error|warn|info|debug|trace)\] ")


def run(fmt, journald=None):
    """Starts junction (log_format fmt), sends a message, stops; returns its log lines."""
    port = free_port()
    j = Junction(CONFIG % ("  log_format: %s" % fmt if fmt else "", port), wait_ports=[port])
    open(j.logpath, "ab").close()  # the file stderr will be: its dev:ino for JOURNAL_STREAM
    st = os.stat(j.logpath)
    if journald == "match":
        j.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    elif journald == "other":
        j.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)
    t.on_fail.append(lambda: print("---- log (%s, %s) ----\n%s" % (fmt, journald, j.log())))
    try:
        j.start()
        s, _, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/ingest" % port])
        t.eq(s, 202, "%s/%s: accepted" % (fmt, journald))
        wait_until(lambda: "delivered" in j.log(), 5)
        t.eq(j.stop(), 0, "%s/%s: clean stop" % (fmt, journald))
        return [l for l in j.log().splitlines() if l]
    finally:
        j.cleanup()


# ---- json ----
lines = run("json")
objs = []
for l in lines:
    try:
        objs.append(json.loads(l))
    except ValueError:
        t.check(False, "json: a line that is not JSON: %r" % l)
t.check(len(objs) >= 5 and len(objs) == len(lines), "json: every line is a JSON object")
t.check(all(set(o) == {"time", "level", "component", "msg"} for o in objs),
        "json: each has exactly time, level, component, msg")
t.check(all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["time"]) for o in objs),
        "json: time is UTC with milliseconds")
t.check(any(o["component"] == "core" and o["msg"].startswith("junction started") for o in objs),
        "json: the broker's own lines have component core")
t.check(any(o["component"] == "http.in" and o["msg"].startswith("listening on") for o in objs),
        "json: a channel's lines have its name as component")
t.check(any(o["level"] == "debug" and "received" in o["msg"] for o in objs),
        "json: levels are named (debug line for the received message)")
t.check(all(o["level"] in ("error", "warn", "info", "debug", "trace") for o in objs),
        "json: only known levels")

# ---- text under journald: <N> priorities, no timestamp ----
lines = run("text", "match")
t.check(lines and all(re.match(r"^<[3467]>\[(error|warn|info|debug|trace)\] ", l) for l in lines),
        "journald: every line is <N>[level] ... without a timestamp: %r" % lines[:3])
t.check(any(l.startswith("<6>[info] junction started") for l in lines), "info is <6>")
t.check(any(l.startswith("<7>[debug] [http.in] msg=") for l in lines), "debug is <7>")

# ---- json under journald: the priority, then the object ----
lines = run("json", "match")
t.check(lines and all(re.match(r"^<[3467]>\{", l) for l in lines), "journald json: <N>{...}")
t.check(all(json.loads(l[3:])["msg"] for l in lines), "journald json: the rest parses")

# ---- JOURNAL_STREAM of another file (inherited by a redirected child): plain text ----
lines = run(None, "other")
t.check(lines and all(STAMP.match(l) for l in lines),
        "JOURNAL_STREAM not matching stderr: the usual timestamped lines: %r" % lines[:2])

# ---- a bad value is a config error ----
d = tempfile.mkdtemp(prefix="jn-logfmt-")
p = os.path.join(d, "j.yaml")
with open(p, "w") as f:
    f.write("junction:\n  log_format: xml\n")
rc, out, err = run_junction(["check", "-c", p])
t.eq(rc, 1, "log_format: xml is refused")
t.check(p + ":2:15: junction: log_format: 'xml' is not allowed, expected one of: text | json"
        in err, "at its position: %r" % err)
os.unlink(p)
os.rmdir(d)
t.finish()
