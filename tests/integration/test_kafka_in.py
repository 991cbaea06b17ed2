"""Kafka IN -> junction -> file OUT and HTTP OUT, against the librdkafka mock cluster with kcat
as the producer: exact bytes in the files, and key, partition, offset, timestamp, topic and
record headers as junction headers (seen through HTTP OUT header templates); a clean stop
commits the stored offsets, so a restart consumes only what is new; junction exits 0."""
import os
import time

from jnt import Checks, Junction, Receiver, wait_until
from test_kafka_mock import KafkaMock, kafka_in_config, produce_files

t = Checks("kafka_in")
cleanups = []


def files(d):
    try:
        return sorted(f for f in os.listdir(d) if f.endswith(".msg"))
    except OSError:
        return []


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


try:
    mock = KafkaMock(["kin1:3"])
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    rcv = Receiver([200]).start()
    cleanups.append(rcv.stop)
    config = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
%s
  fout:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.kafka-partition}-{header.kafka-offset}.msg"
  hout:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    headers:
      X-Topic: "{header.kafka-topic}"
      X-Key: "{header.kafka-key}"
      X-Part: "{header.kafka-partition}"
      X-Off: "{header.kafka-offset}"
      X-Ts: "{header.kafka-timestamp}"
      X-Ts-Type: "{header.kafka-timestamp-type}"
      X-H1: "{header.kafka-header-h1}"
      X-H2: "{header.kafka-header-trace-id}"
routes:
  r:
    from: [kin]
    to: [fout, hout]
""" % (kafka_in_config(bs, "g-in", ["kin1"]), rcv.port)
    j = Junction(config)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
    out = j.path("out")

    # Produced before junction starts: a new group starts at the beginning (earliest).
    bodies = [b"binary\x00\x01\x02\xff\r\n-end", b"{\"a\": 1}\n", b"x" * 70000]
    before_ms = int(time.time() * 1000)
    produce_files(bs, "kin1", bodies, key="order-42", headers=["h1=v1", "trace-id=abc"],
                  partition=2)
    j.start()
    t.check(wait_until(lambda: len(files(out)) >= 3, 20), "3 records become 3 files: %r" %
            files(out))
    t.eq(files(out), ["2-0.msg", "2-1.msg", "2-2.msg"], "named by partition and offset")
    for i, b in enumerate(bodies):
        if os.path.exists(os.path.join(out, "2-%d.msg" % i)):
            t.eq(read(out, "2-%d.msg" % i), b, "record %d: exact bytes in the file" % i)
    t.check(wait_until(lambda: rcv.count() >= 3, 10), "3 HTTP deliveries")
    reqs = sorted(rcv.requests, key=lambda r: int(r["headers"].get("x-off", "-1")))
    for i, r in enumerate(reqs[:3]):
        h = r["headers"]
        t.eq(r["body"], bodies[i], "HTTP body %d exact" % i)
        t.eq((h.get("x-topic"), h.get("x-key"), h.get("x-part"), h.get("x-off"), h.get("x-h1"),
              h.get("x-h2"), h.get("x-ts-type")),
             ("kin1", "order-42", "2", str(i), "v1", "abc", "create"),
             "record %d: topic, key, partition, offset, headers as junction headers" % i)
        ts = int(h.get("x-ts") or 0)
        t.check(before_ms - 5000 <= ts <= int(time.time() * 1000) + 1000,
                "kafka-timestamp is the record's create time in ms: %d" % ts)
    t.check("assigned 3 partition(s)" in j.log(), "the log names the assignment")

    # ---- a clean stop commits; a restart consumes only what is new ----
    t.eq(j.stop(), 0, "SIGTERM: exit 0")
    t.check("revoked 3 partition(s)" in j.log(), "left the group at stop")
    produce_files(bs, "kin1", [b"after-restart"], partition=0)
    j.start()
    t.check(wait_until(lambda: "0-0.msg" in files(out), 20), "the new record arrives")
    if "0-0.msg" in files(out):
        t.eq(read(out, "0-0.msg"), b"after-restart", "exact bytes after restart")
    time.sleep(1.0)
    received = j.log().count("[kafka.kin] msg=")
    t.eq(received, 4, "4 records received in all: nothing consumed twice after a clean stop")
    t.eq(rcv.count(), 4, "4 HTTP deliveries in all")
    t.eq(j.stop(), 0, "second stop: exit 0")
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
