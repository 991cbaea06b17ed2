"""A SIGHUP while junction is starting does not kill it (found by crash_reload under the
sanitizers: its first SIGHUP follows the IN port's opening at once, and junction died of the
signal's default action because its handler was added only after every channel had started).

Each round starts junction and sends SIGHUP as soon as the admin port takes connections (the
admin listener opens before the journal's recovery and the channels): junction must stay up,
open its IN port, take a message and deliver it, log the reload, and exit 0 on SIGTERM."""
import os
import signal
import time

from jnt import Checks, Junction, curl, free_port, port_open, wait_until

t = Checks("sighup_start")
ROUNDS = 8

for rnd in range(ROUNDS):
    admin = free_port()
    port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%d
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d", path: /ingest }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
""" % (admin, port))
    try:
        j.start()
        # As soon as the admin port answers, before the IN channel is up (1 ms polls).
        opened = wait_until(lambda: port_open(admin) or not j.alive(), 10.0, 0.001)
        if j.alive():
            j.proc.send_signal(signal.SIGHUP)
        t.check(opened and port_open(admin), "round %d: the admin port opened" % rnd)
        up = wait_until(lambda: port_open(port) or not j.alive(), 10.0)
        t.check(j.alive(), "round %d: junction survives a SIGHUP during its start (rc %s)" %
                (rnd, j.proc.returncode))
        if not (up and j.alive()):
            print(j.log())
            continue
        code, _, _ = curl(["-X", "POST", "--data-binary", "round %d" % rnd,
                           "http://127.0.0.1:%d/ingest" % port])
        t.eq(code, 202, "round %d: a message is accepted after the early SIGHUP" % rnd)
        out = j.path("out")
        t.check(wait_until(lambda: os.path.isdir(out) and len(os.listdir(out)) == 1, 10.0),
                "round %d: and delivered" % rnd)
        t.check(wait_until(lambda: "SIGHUP received" in j.log(), 5.0),
                "round %d: the early SIGHUP is handled (a reload), not ignored" % rnd)
        t.eq(j.stop(), 0, "round %d: SIGTERM: junction exits 0" % rnd)
    finally:
        j.cleanup()
    time.sleep(0.05)
t.finish()
