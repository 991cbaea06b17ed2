"""Scale-out: two junction nodes in one consumer group share a 4-partition topic; node A is
killed with kill -9 while records keep coming; node B takes A's partitions over. A is then
restarted on its own data_dir (what it had made durable but not yet delivered is delivered
then). Counted against a ledger of what is in the topic: lost must be 0; duplicates (records
A had made durable but whose offsets were not yet committed) are printed."""
import os
import signal
import threading
import time

from jnt import Checks, Junction, wait_until
from test_kafka_mock import KafkaMock, LineProducer, consume, kafka_in_config

t = Checks("kafka_group")
cleanups = []


def node(bs, name):
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
    fsync: false
    name: "{id}.msg"
routes:
  r: { from: [kin], to: [fout] }
""" % kafka_in_config(bs, "g-scale", ["scale"]))
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- node %s log ----\n%s" % (name, j.log())))
    return j


def delivered(*nodes):
    """token -> times delivered, over every node's out folder."""
    seen = {}
    for j in nodes:
        d = j.path("out")
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if not f.endswith(".msg"):
                continue
            with open(os.path.join(d, f), "rb") as fh:
                tok = fh.read()
            seen[tok] = seen.get(tok, 0) + 1
    return seen


def assigned(j):
    return "assigned" in j.log() and not j.log().rstrip().endswith("assigned 0 partition(s)")


try:
    mock = KafkaMock(["scale:4"])
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    a, b = node(bs, "A"), node(bs, "B")
    a.start()
    b.start()
    t.check(wait_until(lambda: "assigned 2 partition(s)" in a.log() and
                       "assigned 2 partition(s)" in b.log(), 30),
            "the two nodes share the 4 partitions, 2 each")

    prod = LineProducer(bs, "scale")
    stop = threading.Event()
    sent = [0]

    def load():
        while not stop.is_set():
            prod.send(b"rec-%06d" % sent[0])
            sent[0] += 1
            time.sleep(0.002)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    t.check(wait_until(lambda: len(os.listdir(a.path("out"))) >= 200 if
                       os.path.isdir(a.path("out")) else False, 20), "A is consuming")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed_at = sent[0]
    t.check(wait_until(lambda: "assigned 4 partition(s)" in b.log(), 30),
            "B takes all 4 partitions over after A is killed")
    time.sleep(1.0)
    stop.set()
    th.join()
    prod.close()
    truth = [r["value"] for r in consume(bs, "scale")]
    t.eq(len(truth), sent[0], "the topic holds every record the load produced")
    # A's durable backlog: restarting it delivers what it had made durable.
    a.start()
    want = set(truth)
    t.check(wait_until(lambda: want <= set(delivered(a, b)), 40),
            "every record is delivered by one node or the other")
    got = delivered(a, b)
    lost = len(want - set(got))
    dups = sum(got.values()) - len(got)
    print("kafka_group: %d records (A killed after %d), %d delivered, lost %d, duplicates %d" %
          (len(truth), killed_at, sum(got.values()), lost, dups))
    t.eq(lost, 0, "lost")
    t.eq(len(set(got) - want), 0, "nothing delivered that is not in the topic")
    t.eq(a.stop(), 0, "A: SIGTERM exit 0")
    t.eq(b.stop(), 0, "B: SIGTERM exit 0")
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
