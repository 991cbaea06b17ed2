"""Crash during hot reloads (issue 21 part 1): nothing acknowledged is lost.

HTTP IN -> HTTP OUT under load (4 keep-alive senders) while the config flips between
  A: route through a 5 ms delay service (routed after the 202, from the inbox), OUT timeout 5s
  B: no service (routed in the ingest transaction), OUT timeout 6s (a non-reloadable option:
     the OUT channel restarts once its sends in flight are done, its queue held meanwhile)
by SIGHUP every 0.2-0.6 s, and junction is killed with SIGKILL at random moments between
reloads (seeded), some right after a SIGHUP, and started again on whichever file is there.
Every acknowledged message arrives at least once with its exact bytes and id.
"""
import random
import signal
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, Receiver, check_report, free_port,
                      wait_delivered)

SEED = 2112
t = Checks("crash_reload")
rng = random.Random(SEED)
ledger = Ledger()
in_port = free_port()
rcv = Receiver(ledger, port=free_port())
HEAD = """
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d", path: /ingest }
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 200ms }
    concurrency: 4
    timeout: %%s
""" % (in_port, rcv.port)
A = (HEAD % "5s") + """services:
  slow: { type: delay, duration: 5ms }
routes:
  r: { from: [in], via: [slow], to: [out] }
"""
B = (HEAD % "6s") + """routes:
  r: { from: [in], to: [out] }
"""
broker = Broker(A, wait_ports=[in_port])
t.on_fail.append(lambda: broker.dump_logs(60))
t.on_fail.append(lambda: print(ledger.summary()))


def use(text):
    with open(broker.cfg, "w") as f:
        f.write(text.replace("@DIR@", broker.dir))


try:
    rcv.start()
    broker.start()
    load = Load(ledger, in_port, threads=4)
    load.start()
    reloads = kills = 0
    cfgs = [A, B]
    for i in range(24):
        use(cfgs[(i + 1) % 2])
        if broker.alive():
            broker.cur.proc.send_signal(signal.SIGHUP)
            reloads += 1
        time.sleep(rng.uniform(0.0, 0.3) if i % 4 == 3 else rng.uniform(0.2, 0.6))
        if i % 4 == 3:
            t.check(broker.kill9(), "junction is alive at kill %d" % (kills + 1))
            kills += 1
            broker.start()
    load.stop()
    t.eq(load.errors, [], "no harness error in the senders")
    r = ledger.report()
    print("%d SIGHUPs, %d kills: sent %d, acknowledged %d, refused %d, failed %d" %
          (reloads, kills, r["sent"], r["acknowledged"], r["refused"], r["failed"]))
    t.check(r["acknowledged"] > 500, "messages were acknowledged throughout (%d)" %
            r["acknowledged"])
    applied = sum(1 for run in broker.runs for line in open(run.logpath, errors="replace")
                  if "config reloaded:" in line)
    t.check(applied >= 8, "most reloads were applied (%d of %d)" % (applied, reloads))
    restarted = sum(1 for run in broker.runs for line in open(run.logpath, errors="replace")
                    if "[http.out] restarted with its new options" in line)
    t.check(restarted >= 4, "the OUT channel was restarted by reloads (%d)" % restarted)
    t.check(wait_delivered(ledger, 90), "every acknowledged message arrives (missing %d)" %
            len(ledger.missing()))
    rep = check_report(t, ledger, broker, what="reload")
    print("duplicates: %d" % rep["duplicates"])
    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
except Exception as e:
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    try:
        rcv.stop()
    except Exception:
        pass
    broker.cleanup()
t.finish()
