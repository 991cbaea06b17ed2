"""Crash during a replay of dead letters while running (issue 14): HTTP IN -> HTTP OUT to a
receiver that refuses everything (400), so 10,000 acknowledged messages become dead letters.
The receiver then accepts, POST /api/v1/replay puts them all back, and junction is killed with
SIGKILL while the replayed messages are being delivered. After the restart whatever was not
yet put back is still a dead letter and is replayed again: every acknowledged message arrives
at least once, with its exact bytes and id; the replay's progress was not lost (what it had
written was queued and is delivered after the restart)."""
import json
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, free_port,
                      wait_delivered, wait_until)
from jnt import curl

N = 10000
t = Checks("crash_replay")
ledger = Ledger()
in_port, admin = free_port(), free_port()
rcv = Receiver(ledger, port=free_port(), status=400)
broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
  admin: 127.0.0.1:%d
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    retry: { attempts: 3, backoff: 20ms, max_backoff: 100ms }
    concurrency: 16
    timeout: 5s
routes:
  r:
    from: [in]
    to: [out]
""" % (admin, in_port, rcv.port), wait_ports=[in_port, admin])
t.on_fail.append(lambda: broker.dump_logs(60))
t.on_fail.append(lambda: print(ledger.summary()))
t0 = time.monotonic()


def api(method, path, body=None):
    args = ["-X", method, "http://127.0.0.1:%d%s" % (admin, path)]
    if body is not None:
        args += ["--data-binary", body]
    code, out, _ = curl(args)
    try:
        return code, json.loads(out)
    except ValueError:
        return code, {}


def dead():
    code, st = api("GET", "/api/v1/status")
    return st.get("journal", {}).get("dead_letters") if code == 200 else None


try:
    rcv.start()
    broker.start()
    load = Load(ledger, in_port, threads=4, total=N)
    load.start()
    t.check(load.join(180), "the load finishes")
    r = ledger.report()
    t.eq(r["acknowledged"], N, "every POST gets 202 with an id")
    t.check(wait_until(lambda: dead() == N, 120), "all %d become dead letters (receiver 400)"
            % N)
    print("dead-lettered %d in %.1fs" % (N, time.monotonic() - t0))

    rcv.status = 200
    code, job = api("POST", "/api/v1/replay", "{}")
    t.check(code == 202 and job.get("count") == N, "replay of all %d: 202: %r" % (N, job))
    t.check(wait_until(lambda: rcv.answers.get(200, 0) >= 200, 60),
            "the replayed messages are being delivered")
    at_kill = rcv.answers.get(200, 0)
    t.check(broker.kill9(), "junction is alive until kill -9 (during the replay's deliveries)")
    print("delivered before the kill: %d of %d" % (at_kill, N))
    t.check(at_kill < N, "the kill came while deliveries were under way (%d of %d)" %
            (at_kill, N))

    broker.start()
    left = dead()
    print("dead letters after the restart: %s" % left)
    if left:
        code, job2 = api("POST", "/api/v1/replay", "{}")
        t.check(code == 202 and job2.get("count") == left,
                "what was not put back is still a dead letter and is replayed: %r" % job2)
    t.check(wait_delivered(ledger, 120), "all %d acknowledged messages arrive (missing %d)" %
            (N, len(ledger.missing())))
    t.check(wait_until(lambda: dead() == 0, 10), "no dead letter is left")
    check_report(t, ledger, broker, expect_acked=N, what="replay")
    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
    print("runtime %.1fs" % (time.monotonic() - t0))
except Exception:
    traceback.print_exc()
    t.check(False, "the test ran to its end without an exception")
finally:
    for c in (broker.cleanup, rcv.stop):
        try:
            c()
        except Exception as e:
            print("(cleanup: %r)" % e)
t.finish()
