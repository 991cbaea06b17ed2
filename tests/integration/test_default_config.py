"""The README's first command in miniature: `junction run` with no -c, from a directory without
config/, uses the embedded default config: HTTP IN on /ingest, file OUT under ./out/."""
import os

from jnt import Checks, Junction, curl, free_port, wait_until, SRC

t = Checks("default_config")
port = free_port()
j = Junction("", wait_ports=[port], args=["run"],
             env={"JUNCTION_LISTEN": "127.0.0.1:%d" % port})
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    os.unlink(j.cfg)  # no config file anywhere: the embedded one is used
    j.start()
    t.check("(embedded default config)" in j.log(), "the embedded config is used")
    order = os.path.join(SRC, "tests", "data", "order.json")
    status, resp, _ = curl(["--data-binary", "@" + order, "http://127.0.0.1:%d/ingest" % port])
    t.eq(status, 202, "POST /ingest answers 202")
    outdir = j.path("out")
    t.check(wait_until(lambda: os.path.isdir(outdir) and len(os.listdir(outdir)) == 1, 10),
            "one file appears under ./out/")
    if os.path.isdir(outdir) and os.listdir(outdir):
        name = os.listdir(outdir)[0]
        with open(os.path.join(outdir, name), "rb") as f, open(order, "rb") as g:
            t.eq(f.read(), g.read(), "it holds the posted bytes")
    t.eq(j.stop(), 0, "exits 0 on SIGTERM")

    # The file in the repo and the embedded copy are the same config: check both.
    from jnt import run_junction
    code, out, err = run_junction(["check", "-c", os.path.join(SRC, "config", "junction.yaml")])
    t.eq(code, 0, "config/junction.yaml passes check: %s" % err)
finally:
    j.cleanup()
t.finish()
