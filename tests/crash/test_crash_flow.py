"""Crash under back-pressure (issue 20): HTTP IN -> HTTP OUT with max_queued 300 while the
receiver is down. Four senders flood; most POSTs are refused (503) once the queue is full; junction
is killed with SIGKILL three times at random moments and restarted. After each start the queue's
depth (the journal's own count, /api/v1/queues) equals the records really queued: at least the
acknowledged messages, at most those plus the ones whose 202 the kill cut off, and never more
than max_queued plus one commit group. Then the receiver comes up: every acknowledged message
arrives, and the depth ends at 0."""
import json
import random
import time
import traceback
import urllib.request

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, crash_loop,
                      free_port, wait_delivered, wait_until)

LIMIT = 300
t = Checks("crash_flow")
ledger = Ledger()
in_port, admin = free_port(), free_port()
rcv = Receiver(ledger, port=free_port())  # down until the end
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
    retry: { attempts: 100000, backoff: 20ms, max_backoff: 100ms }
    concurrency: 4
    max_queued: { messages: %d }
routes:
  r:
    from: [in]
    to: [out]
""" % (admin, in_port, rcv.port, LIMIT), wait_ports=[in_port, admin])
t.on_fail.append(lambda: broker.dump_logs(60))
t.on_fail.append(lambda: print(ledger.summary()))
rng = random.Random(20)


def queued():
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/queues" % admin,
                                    timeout=5) as r:
            q = json.loads(r.read())
    except (OSError, ValueError):
        return None
    for e in q.get("queues", []):
        if e["channel"] == "out":
            return e.get("queued")
    return None


try:
    broker.start()
    load = Load(ledger, in_port, threads=4, fail_pause=0.01)
    load.start()
    crash_loop(broker, rng, 3, lo=0.3, hi=1.2, ledger=ledger)
    time.sleep(0.5)
    load.stop()
    t.check(load.join(30), "the senders stop")
    t.eq(load.errors, [], "no harness error in the senders")
    r = ledger.report()
    print("sent %d: acknowledged %d, refused %d, failed %d" %
          (r["sent"], r["acknowledged"], r["refused"], r["failed"]))
    t.check(r["refused"] > 0, "the full queue refused POSTs (503)")
    t.check(LIMIT <= r["acknowledged"], "at least max_queued were acknowledged (%d)" %
            r["acknowledged"])
    # One more kill, with the flood over: the restart reads the depth from the journal.
    t.check(broker.kill9(), "junction is alive until the last kill -9")
    broker.start()
    d = queued()
    acked, failed = r["acknowledged"], r["failed"]
    t.check(d is not None and acked <= d <= acked + failed,
            "after the restart the depth is the journal's: acknowledged %d <= %r <= %d "
            "(+ sends cut off by a kill)" % (acked, d, acked + failed))
    t.check(d is not None and d <= LIMIT + 64,
            "the queue never passed max_queued by more than a commit group (%r)" % d)
    rcv.start()
    t.check(wait_delivered(ledger, 60), "every acknowledged message arrives (missing %d)" %
            len(ledger.missing()))
    t.check(wait_until(lambda: queued() == 0, 20), "the depth ends at 0 (%r)" % queued())
    check_report(t, ledger, broker, what="flow control")
    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
except Exception as e:
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    load_stop = globals().get("load")
    if load_stop is not None:
        load_stop.stop()
    rcv.stop()
    broker.cleanup()
t.finish()
