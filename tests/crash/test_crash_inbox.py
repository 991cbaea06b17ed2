"""Crash with messages in the inbox (issue 13 step 6): HTTP IN -> a 10 ms delay service -> HTTP
OUT. Routes through services are routed after the 202, so 600 POSTs are all acknowledged long
before the service has let them through; junction is killed with SIGKILL while most of them
still wait in the inbox (accepted, not routed) and starts again on the same data_dir: every
acknowledged message arrives at least once, with its exact bytes and the X-Junction-Id of its
202. Then a clean stop leaves nothing queued and a further start finds nothing to recover."""
import re
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, free_port,
                      wait_delivered, wait_until)

N = 600
t = Checks("crash_inbox")
ledger = Ledger()
in_port = free_port()
rcv = Receiver(ledger, port=free_port())
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
    concurrency: 4
    timeout: 5s
services:
  slow:
    type: delay
    duration: 10ms
routes:
  r:
    from: [in]
    via: [slow]
    to: [out]
""" % (in_port, rcv.port), wait_ports=[in_port])
t.on_fail.append(lambda: broker.dump_logs(100))
t.on_fail.append(lambda: print(ledger.summary()))
t0 = time.monotonic()

try:
    rcv.start()
    broker.start()
    load = Load(ledger, in_port, threads=4, total=N)
    load.start()
    t.check(load.join(120), "the load finishes")
    t.eq(load.errors, [], "no harness error in the senders")
    r = ledger.report()
    print("posted %d in %.1fs: acknowledged %d, refused %d, failed %d" %
          (r["sent"], time.monotonic() - t0, r["acknowledged"], r["refused"], r["failed"]))
    t.eq(r["acknowledged"], N, "every POST gets 202 with an id")
    t.check(wait_until(lambda: rcv.requests > 0, 10), "the service lets the first ones through")
    t.check(broker.kill9(), "junction is alive until kill -9")
    at_kill = rcv.requests
    print("delivered before the kill: %d of %d" % (at_kill, N))
    t.check(at_kill < N, "most messages were still behind the service at the kill (%d of %d "
            "delivered)" % (at_kill, N))

    broker.start()
    rec = wait_until(lambda: broker.grep(r"journal: recovered \d+ queued"), 10)
    t.check(rec, "the restart logs what it recovered")
    if rec:
        m = re.search(r"recovered (\d+) queued deliveries and (\d+) accepted", rec[0][1])
        t.check(int(m.group(2)) > 0, "accepted messages waited in the inbox: %s" %
                rec[0][1].split("] ", 2)[-1])
    t.check(wait_delivered(ledger, 60), "all %d acknowledged messages arrive after the restart "
            "(missing %d)" % (N, len(ledger.missing())))
    rep = check_report(t, ledger, broker, expect_acked=N, what="inbox")
    print("duplicates: %d" % rep["duplicates"])

    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
    t.check(re.search(r"stopping: intake closed; 0 send\(s\) in flight; 0 queued message",
                      broker.log()), "stop: nothing in flight and nothing queued")
    before = rcv.requests
    broker.start()
    time.sleep(1.0)
    t.eq([line for n, line in broker.grep(r"journal: recovered") if n == broker.cur.n], [],
         "third start: nothing to recover")
    t.eq(rcv.requests, before, "third start: nothing is sent again")
    t.eq(broker.stop(), 0, "third start: SIGTERM exits 0")
    check_report(t, ledger, broker, expect_acked=N, what="final")
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
