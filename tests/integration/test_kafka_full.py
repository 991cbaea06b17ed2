"""Kafka IN while junction's journal is full: the partition is paused at the first refused
offset (no offset is stored past it), sought back and resumed once the journal has room, and
every record arrives: nothing skipped. The journal is 2 MiB, the records 20 kB each (3 MB in
all), and the HTTP receiver behind junction is down at first, so the journal fills up. Few
large records on purpose: every message also writes action-log entries, which a small journal
keeps, and with thousands of small records the log alone kept the journal above its
high-water mark after every message had left (the journal's matter). max_in_flight is 8 so
one group commit holds at most 160 kB: the journal checks its high-water mark before a group,
and a group of 1000 x 20 kB would jump from under 90 % to MDB_MAP_FULL, where even deletes
fail (see docs/kafka.md). The retry backoff is
not short on purpose: every failed attempt adds an action-log entry, and in a 2 MiB journal a
fast retry loop would fill it with those instead of with messages."""
import re

from jnt import Checks, Junction, Receiver, free_port, wait_until
from test_kafka_mock import KafkaMock, kafka_in_config, produce_files

t = Checks("kafka_full")
cleanups = []
N = 150


def body(n):
    return b"full-%03d;" % n + bytes(((n * 13 + i) & 0xFF) for i in range(20000))


try:
    mock = KafkaMock(["full:1"])
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    rport = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  max_size: 2MiB
  log_level: info
  shutdown_timeout: 2s
channels:
%s
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    concurrency: 4
    retry: { attempts: 1000, backoff: 500ms, max_backoff: 500ms }
routes:
  r: { from: [kin], to: [out] }
""" % (kafka_in_config(bs, "g-full", ["full"],
                                "    pause_retry: 300ms\n    max_in_flight: 8\n"), rport))
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
    produce_files(bs, "full", [body(n) for n in range(N)])
    j.start()
    t.check(wait_until(lambda: "paused at offset" in j.log(), 30),
            "the partition is paused when the journal refuses")
    m = re.search(r"full\[0\] paused at offset (\d+)", j.log())
    paused_at = int(m.group(1)) if m else -1
    t.check(0 < paused_at < N, "paused part-way: at offset %d of %d" % (paused_at, N))
    t.check(j.alive(), "junction is up while full")
    rcv = Receiver(port=rport).start()
    cleanups.append(rcv.stop)
    t.check(wait_until(lambda: len(set(rcv.bodies())) >= N, 45),
            "every record arrives once the journal drains (%d of %d)" %
            (len(set(rcv.bodies())), N))
    got = rcv.bodies()
    want = set(body(n) for n in range(N))
    lost = len(want - set(got))
    t.eq(lost, 0, "lost records")
    t.eq(len(set(got) - want), 0, "no corrupt or unknown bodies")
    print("kafka_full: %d delivered, %d duplicates, paused at offset %d" %
          (len(got), len(got) - len(set(got)), paused_at))
    t.check("resumed at offset" in j.log(), "the log says where it resumed")
    t.eq(j.stop(), 0, "SIGTERM: exit 0")
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
