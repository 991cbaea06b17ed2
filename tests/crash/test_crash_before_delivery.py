"""Crash before delivery: HTTP IN -> HTTP OUT to a receiver that is down. 2,000 messages are
POSTed (each must get 202), junction is killed with SIGKILL while all of them are queued, the
receiver comes up and junction starts again on the same data_dir: every acknowledged message
arrives at least once, with its exact bytes and the X-Junction-Id from its 202. Then a clean
stop leaves nothing queued and a further start finds nothing to recover."""
import re
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, free_port,
                      wait_delivered, wait_until)

N = 2000
t = Checks("crash_before_delivery")
ledger = Ledger()
in_port = free_port()
rcv = Receiver(ledger, port=free_port())  # not started: nothing listens on its port yet
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
t0 = time.monotonic()


def quiet(seconds):
    """Waits until the receiver has had no request for `seconds` (at most 10 s)."""
    def calm():
        last = ledger.last_delivery
        return last is None or time.monotonic() - last >= seconds
    return wait_until(calm, 10)


try:
    broker.start()
    load = Load(ledger, in_port, threads=4, total=N)
    load.start()
    t.check(load.join(120), "the load finishes")
    t.eq(load.errors, [], "no harness error in the senders")
    r = ledger.report()
    print("posted %d in %.1fs: acknowledged %d, refused %d, failed %d" %
          (r["sent"], time.monotonic() - t0, r["acknowledged"], r["refused"], r["failed"]))
    t.eq(r["acknowledged"], N, "every POST gets 202 with an id")
    t.eq((r["refused"], r["failed"]), (0, 0), "no refusal and no failed send")
    t.eq(rcv.requests, 0, "nothing delivered while the receiver is down")
    t.check(wait_until(lambda: broker.grep(r"cannot connect"), 5),
            "junction tries to deliver and cannot connect")

    t.check(broker.kill9(), "junction is alive until kill -9")
    rcv.start()
    t1 = time.monotonic()
    broker.start()
    rec = wait_until(lambda: broker.grep(r"journal: recovered \d+ queued"), 10)
    t.check(rec, "the restart logs what it recovered")
    if rec:
        m = re.search(r"recovered (\d+) queued deliveries and (\d+) accepted", rec[0][1])
        t.eq(int(m.group(1)) + int(m.group(2)), N,
             "recovered queued deliveries + accepted messages to route = %d (%s)" %
             (N, rec[0][1].split("] ", 2)[-1]))
    t.check(wait_delivered(ledger, 60), "all %d acknowledged messages arrive after the restart "
            "(missing %d)" % (N, len(ledger.missing())))
    print("delivered after the restart in %.1fs" % (time.monotonic() - t1))
    quiet(0.5)
    rep = check_report(t, ledger, broker, expect_acked=N, what="before delivery")
    print("duplicates: %d" % rep["duplicates"])

    # A clean stop with everything delivered: nothing stays queued, nothing dead-lettered.
    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
    t.check(re.search(r"stopping: intake closed; 0 send\(s\) in flight; 0 queued message",
                      broker.log()), "stop: nothing in flight and nothing queued")
    t.check("junction stopped: 0 dead-lettered" in broker.log(), "stop: nothing dead-lettered")
    # A further start finds an empty queue and sends nothing again.
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
