"""test_issue_12_7: relative paths in a config file are relative to the file's folder, not to
junction's working folder, so `run` and `trace`/`log` started from different folders with the
same -c agree on data_dir, and a file OUT channel's `dir: ./out` lands beside the config."""
import json
import os

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

CONFIG = """\
junction:
  data_dir: ./data
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
  out:
    type: file
    direction: out
    dir: ./out
routes:
  r:
    from: [in]
    to: [out]
"""

t = Checks("config_paths")
port = free_port()
# The broker's working folder is j.dir; the config is in j.dir/etc, named relative to it.
j = Junction("", wait_ports=[port], args=["run", "-c", os.path.join("etc", "junction.yaml")])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    etc = j.path("etc")
    other = j.path("elsewhere")
    os.mkdir(etc)
    os.mkdir(other)
    cfg = os.path.join(etc, "junction.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG % {"port": port})

    j.start()
    status, body, _ = curl(["--data-binary", "hello", "http://127.0.0.1:%d/ingest" % port])
    t.eq(status, 202, "POST /ingest answers 202")
    msg_id = json.loads(body)["id"] if status == 202 else "none"
    outdir = os.path.join(etc, "out")
    t.check(wait_until(lambda: os.path.isdir(outdir) and len(os.listdir(outdir)) == 1, 10),
            "the message is written under the config's folder, etc/out/")
    if os.path.isdir(outdir) and os.listdir(outdir):
        with open(os.path.join(outdir, os.listdir(outdir)[0]), "rb") as f:
            t.eq(f.read(), b"hello", "it holds the posted bytes")
    t.check(os.path.isdir(os.path.join(etc, "data")), "the journal is in etc/data/")
    t.check(not os.path.exists(j.path("out")) and not os.path.exists(j.path("data")),
            "nothing is written under the working folder")

    # trace and log from yet another folder, with the config's absolute path
    def trace_events():
        code, out, _ = run_junction(["trace", msg_id, "-c", cfg], cwd=other)
        return code == 0 and [line.split()[2] for line in out.splitlines()]

    t.check(wait_until(lambda: (trace_events() or [])[-1:] == ["delivered"], 10),
            "trace from another folder finds the message: %r" % (trace_events(),))
    t.eq(trace_events(), ["received", "routed", "delivered"], "trace shows its actions")
    code, out, err = run_junction(["log", "--since", "1h", "-c", cfg], cwd=other)
    t.eq(code, 0, "log from another folder works: %s" % err)
    t.eq(sum(1 for line in out.splitlines() if msg_id in line), 3,
         "log lists the message's three actions:\n%s" % out)
    t.eq(j.stop(), 0, "exits 0 on SIGTERM")
finally:
    j.cleanup()
t.finish()
