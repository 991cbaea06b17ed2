"""Crash loop: HTTP IN -> HTTP OUT to a receiver that stays up, under a continuous load, while
junction is killed with SIGKILL at random moments (0.2-1.5 s apart) and restarted on the same
data_dir, at least 10 times. The receiver answers 503 to about 1 request in 20, so retries
(which rewrite the queue entry) are in the air at the kills too. After the last restart the
load stops and every acknowledged message must arrive at least once (duplicates are allowed
and counted), with its exact bytes and the X-Junction-Id from its 202; then a clean stop
leaves nothing queued.

Replay the kill timings of a failed run with JN_CRASH_SEED=<seed> (printed first); the number
of kills is JN_CRASH_KILLS (default 20)."""
import os
import random
import re
import threading
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, crash_loop,
                      free_port, wait_delivered, wait_until)

seed = int(os.environ.get("JN_CRASH_SEED") or random.SystemRandom().randrange(1, 2**31))
kills = int(os.environ.get("JN_CRASH_KILLS") or 20)
print("seed %d (replay: JN_CRASH_SEED=%d), %d kills" % (seed, seed, kills), flush=True)
rng = random.Random(seed)

t = Checks("crash_loop")
ledger = Ledger()
in_port = free_port()
rcv_rng = random.Random(seed + 1)
rcv_lock = threading.Lock()


def answer():
    with rcv_lock:
        return 503 if rcv_rng.random() < 0.05 else 200


rcv = Receiver(ledger, status=answer)
broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
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
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 200ms }
    concurrency: 8
    timeout: 5s
routes:
  r:
    from: [in]
    to: [out]
""" % (in_port, rcv.port), wait_ports=[in_port])
t.on_fail.append(lambda: broker.dump_logs(100))
t.on_fail.append(lambda: print(ledger.summary()))
t.on_fail.append(lambda: print("seed %d (replay: JN_CRASH_SEED=%d)" % (seed, seed)))
load = None
t0 = time.monotonic()

try:
    rcv.start()
    broker.start()
    load = Load(ledger, in_port, threads=3)
    load.start()
    t.check(wait_until(lambda: ledger.acked_count() >= 50, 10), "the load is acknowledged")
    acked_at = [ledger.acked_count()]

    def note(s):
        print(s, flush=True)
        acked_at.append(ledger.acked_count())

    delays = crash_loop(broker, rng, kills, 0.2, 1.5, ledger=ledger, note=note)
    # Let the last run take some load too, so it is not only a recovery.
    time.sleep(rng.uniform(0.2, 1.5))
    load.stop()
    t.eq(load.errors, [], "no harness error in the senders")
    t.check(broker.alive(), "junction is running after the last restart")
    killed = sum(1 for r in broker.runs if r.how == "kill9")
    t.check(killed >= 10, "junction was killed with SIGKILL at least 10 times (%d)" % killed)
    gains = sum(1 for a, b in zip(acked_at, acked_at[1:]) if b > a)
    t.check(gains >= kills // 2, "the load was acknowledged between most kills (%d of %d)" %
            (gains, kills))
    print("load stopped at %.1fs: %d sent" % (time.monotonic() - t0, load.sent()), flush=True)

    t1 = time.monotonic()
    ok = wait_delivered(ledger, 60)
    t.check(ok, "every acknowledged message arrives (missing %d)" % len(ledger.missing()))
    print("drained in %.1fs" % (time.monotonic() - t1))
    wait_until(lambda: ledger.last_delivery is None or
               time.monotonic() - ledger.last_delivery >= 0.5, 10)
    rep = check_report(t, ledger, broker, what="crash loop")
    print("crash loop: acknowledged %d, delivered unique %d, duplicates %d, lost %d" %
          (rep["acknowledged"], rep["delivered_unique"], rep["duplicates"], rep["lost"]))
    print("receiver: answers %s, requests cut short by a kill %d" % (rcv.answers, rcv.cut))
    t.check(rcv.answers.get(503, 0) > 0, "some deliveries were answered 503 and retried")
    recovered = broker.grep(r"journal: recovered")
    print("restarts that recovered something: %d of %d" % (len(recovered), killed))

    t.eq(broker.stop(), 0, "SIGTERM after the drain: junction exits 0")
    t.check(re.search(r"stopping: intake closed; 0 send\(s\) in flight; 0 queued message",
                      broker.log()), "stop: nothing in flight and nothing queued")
    t.check("junction stopped: 0 dead-lettered" in broker.log(), "stop: nothing dead-lettered")
    print("runtime %.1fs" % (time.monotonic() - t0))
finally:
    if load is not None:
        load.stop(5)
    for c in (broker.cleanup, rcv.stop):
        try:
            c()
        except Exception as e:
            print("(cleanup: %r)" % e)
t.finish()
