"""What the log says (issue 12, items 4 and 11): the start names every OUT target and the data
dir, each failed attempt is one line, a delivery that succeeds after retries says so, and SIGHUP
does no harm (an unchanged file: the reload says so and the broker keeps running)."""
import signal
import time

from jnt import Checks, Junction, Receiver, curl, free_port, wait_until

t = Checks("logs")
port = free_port()
rec = Receiver(responses=[503, 503, 200]).start()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d" }
  erp:
    type: http
    direction: out
    url: http://127.0.0.1:%d/api
    retry: { attempts: 5, backoff: 20ms, max_backoff: 50ms }
  archive: { type: file, direction: out, dir: "@DIR@/archive" }
routes:
  r: { from: [in], to: [erp, archive] }
""" % (port, rec.port), wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    j.start()
    log = j.log()
    t.check("journal in %s/data" % j.dir in log, "the start names the data dir")
    t.check("[http.erp] sending POST http://127.0.0.1:%d/api" % rec.port in log,
            "the start names the HTTP target")
    t.check("[file.archive] writing to %s/archive" % j.dir in log, "and the file target")

    st, resp, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/ingest" % port])
    t.eq(st, 202, "accepted")
    t.check(wait_until(lambda: rec.count() == 3, 10), "three attempts reach the receiver")
    t.check(wait_until(lambda: "delivered after retries" in j.log(), 5),
            "the late success is logged")
    lines = [l for l in j.log().splitlines() if "[http.erp] msg=" in l]
    failed = [l for l in lines if "HTTP 503" in l]
    t.eq(len(failed), 2, "two failed attempts, one line each: %r" % lines)
    t.check(all("[warn]" in l and "attempt" in l and "retry in" in l for l in failed),
            "each says the attempt, the wait and the reason")
    t.check(any("[info]" in l and "delivered after retries (attempt 3)" in l for l in lines),
            "the success names its attempt")

    # ---- SIGHUP: logged, the broker keeps running and keeps taking messages ----
    j.proc.send_signal(signal.SIGHUP)
    t.check(wait_until(lambda: "SIGHUP received" in j.log(), 5), "SIGHUP is logged")
    time.sleep(0.2)
    t.check(j.alive(), "the broker is still running after SIGHUP")
    t.check(wait_until(lambda: "config reload: unchanged" in j.log(), 5),
            "it says the unchanged config needs nothing")
    st, resp, _ = curl(["--data-binary", "y", "http://127.0.0.1:%d/ingest" % port])
    t.eq(st, 202, "still accepting after SIGHUP")
    t.check(wait_until(lambda: rec.count() == 4, 10), "and delivering")
    t.eq(j.stop(), 0, "SIGTERM still stops it cleanly")
finally:
    j.cleanup()
    rec.stop()
t.finish()
