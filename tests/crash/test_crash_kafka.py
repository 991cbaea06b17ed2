"""Crash test for Kafka IN: junction consumes a 2-partition topic from the librdkafka mock
cluster while kcat keeps producing; junction is killed with kill -9 at random moments
(seeded: JN_CRASH_SEED) and restarted on the same data_dir, 3 times. At the end every record in
the topic (the ledger: the topic itself, read back with kcat) must have been delivered to the
file OUT at least once: lost = 0. Duplicates, records made durable whose offsets were not yet
committed when junction died, are counted and printed, as is the bound they should respect
(about commit_interval's worth of records per kill)."""
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from jnt import Checks, Junction, wait_until  # noqa: E402
from test_kafka_mock import KafkaMock, LineProducer, consume, kafka_in_config  # noqa: E402

t = Checks("crash_kafka")
seed = int(os.environ.get("JN_CRASH_SEED", str(int(time.time()))))
rng = random.Random(seed)
print("crash_kafka: seed %d" % seed)
KILLS = 3
cleanups = []


def delivered(j):
    seen = {}
    d = j.path("out")
    for f in os.listdir(d) if os.path.isdir(d) else []:
        if f.endswith(".msg"):
            with open(os.path.join(d, f), "rb") as fh:
                tok = fh.read()
            seen[tok] = seen.get(tok, 0) + 1
    return seen


try:
    mock = KafkaMock(["crash:2"])
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 3s
channels:
%s
  fout:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{id}.msg"
routes:
  r: { from: [kin], to: [fout] }
""" % kafka_in_config(bs, "g-crash", ["crash"]))
    cleanups.append(j.cleanup)
    logs = []
    t.on_fail.append(lambda: print("---- junction logs ----\n" + "\n".join(logs) + j.log()))

    prod = LineProducer(bs, "crash")
    stop = threading.Event()
    sent = [0]

    def load():
        while not stop.is_set():
            prod.send(b"crash-%06d" % sent[0])
            sent[0] += 1
            time.sleep(0.001)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    j.start()
    for k in range(KILLS):
        # Let it join (the killed member's session must expire first: up to ~6 s) and consume.
        base = len(delivered(j))
        t.check(wait_until(lambda: len(delivered(j)) > base + 50, 30),
                "run %d consumes (%d delivered)" % (k + 1, len(delivered(j))))
        time.sleep(rng.uniform(0.0, 1.5))
        j.proc.send_signal(signal.SIGKILL)
        j.proc.wait()
        t.check(j.proc.returncode == -signal.SIGKILL, "run %d died by the kill, not by itself" %
                (k + 1))
        j.log_f.close()
        logs.append(j.log())
        j.start()
    time.sleep(0.5)
    stop.set()
    th.join()
    prod.close()
    truth = [r["value"] for r in consume(bs, "crash")]
    t.eq(len(truth), sent[0], "the topic holds every record produced")
    want = set(truth)
    t.check(wait_until(lambda: want <= set(delivered(j)), 60),
            "every record in the topic is delivered")
    got = delivered(j)
    lost = len(want - set(got))
    dups = sum(got.values()) - len(got)
    print("crash_kafka: %d records, %d kills, %d deliveries, lost %d, duplicates %d" %
          (len(truth), KILLS, sum(got.values()), lost, dups))
    t.eq(lost, 0, "lost")
    t.eq(len(set(got) - want), 0, "nothing delivered that is not in the topic")
    t.check("AddressSanitizer" not in j.log() and "runtime error" not in j.log(),
            "no sanitizer report")
    t.eq(j.stop(), 0, "final SIGTERM: exit 0")
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
