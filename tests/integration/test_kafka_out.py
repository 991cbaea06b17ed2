"""HTTP IN -> junction -> Kafka OUT against the librdkafka mock cluster, consumed back with kcat:
exact bytes, key and headers from templates, the junction-id header; a record too large for
the producer is dead-lettered at once (REJECT); with the cluster down, messages are accepted
and queue in junction (a send that times out is retried with backoff) and all arrive once it is
up again, in order; `junction check` refuses properties junction owns and bad values at their
line, without printing a secret."""
import json
import os

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until
from test_kafka_mock import KafkaMock, consume

t = Checks("kafka_out")
cleanups = []


def post(url, body, *hdrs):
    args = []
    for h in hdrs:
        args += ["-H", h]
    status, resp, _ = curl(args + ["--data-binary", body, url])
    t.eq(status, 202, "HTTP IN answers 202")
    try:
        return json.loads(resp)["id"]
    except (ValueError, KeyError):
        return None


try:
    mock = KafkaMock(["orders:2", "big:1", "q:1"])
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
  hin: { type: http, direction: in, listen: 127.0.0.1:%d, path: /ingest }
  kout:
    type: kafka
    direction: out
    brokers: [%s]
    topic: "{header.X-Topic}"
    key: "{header.X-Key}"
    headers: { source: "{channel}", content-type: "{header.Content-Type}" }
    timeout: 2s
    properties: { message.max.bytes: "10000", linger.ms: "1" }
    retry: { attempts: 100, backoff: 200ms, max_backoff: 1s }
routes:
  r: { from: [hin], to: [kout] }
""" % (port, bs), wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
    j.start()
    url = "http://127.0.0.1:%d/ingest" % port

    # ---- 1. exact bytes, key, headers ----
    body = b"\x00\x01order\r\n\xff" + bytes(range(256))
    path = j.path("body.bin")
    with open(path, "wb") as f:
        f.write(body)
    id1 = post(url, "@" + path, "X-Topic: orders", "X-Key: cust-7",
               "Content-Type: application/octet-stream")
    id2 = post(url, "second", "X-Topic: orders", "X-Key: cust-7")
    recs = []
    t.check(wait_until(lambda: len(consume(bs, "orders")) >= 2, 15), "2 records in Kafka")
    recs = sorted(consume(bs, "orders"), key=lambda r: r["offset"])
    if len(recs) == 2:
        t.eq(recs[0]["value"], body, "record 1: exact bytes")
        t.eq(recs[1]["value"], b"second", "record 2: exact bytes")
        t.eq([r["key"] for r in recs], [b"cust-7", b"cust-7"], "key from the template")
        t.eq(recs[0]["partition"], recs[1]["partition"], "one key, one partition")
        t.eq(recs[0]["headers"], {"source": b"hin", "content-type": b"application/octet-stream",
                                  "junction-id": id1.encode()}, "headers from templates + id")
        t.eq(recs[1]["headers"].get("junction-id"), id2.encode(), "junction-id of record 2")

    # ---- 2. too large: rejected at once, dead-lettered, nothing produced ----
    big = j.path("big.bin")
    with open(big, "wb") as f:
        f.write(b"B" * 20000)
    idb = post(url, "@" + big, "X-Topic: big")
    t.check(wait_until(lambda: "msg=%s dead-lettered" % idb in j.log(), 10),
            "a record over message.max.bytes is dead-lettered")
    t.check("MSG_SIZE_TOO_LARGE" in j.log(), "the reason names MSG_SIZE_TOO_LARGE")
    t.check("msg=%s attempt 1 failed" % idb not in j.log(), "not retried")
    t.eq(consume(bs, "big"), [], "nothing produced to big")

    # ---- 3. cluster down: accepted, queued, all delivered once it is up, in order ----
    t.eq(mock.cmd("down"), "ok", "mock cluster down")
    ids = [post(url, "q-%02d" % i, "X-Topic: q", "X-Key: k") for i in range(20)]
    t.check(all(ids), "20 messages accepted while Kafka is down")
    t.check(wait_until(lambda: "MSG_TIMED_OUT" in j.log(), 10),
            "a send times out after `timeout` and goes to junction's retry")
    mock.cmd("up")
    t.check(wait_until(lambda: len(consume(bs, "q")) >= 20, 40), "all 20 arrive once Kafka is up")
    vals = [r["value"] for r in sorted(consume(bs, "q"), key=lambda r: r["offset"])]
    t.eq(vals, [b"q-%02d" % i for i in range(20)], "exactly once each, in order (concurrency 1)")
    t.eq(j.stop(), 0, "SIGTERM: exit 0")

    # ---- 4. check: owned keys and bad values refused at their line; secrets not printed ----
    cfg = j.path("bad.yaml")
    with open(cfg, "w") as f:
        f.write("""channels:
  k:
    type: kafka
    direction: out
    brokers: 127.0.0.1:9092
    topic: "t-{header.x}"
    properties:
      acks: "1"
      sasl.password: "hunter2-secret"
      ssl.key.password: "also-secret"
      session.timeout.ms: "abc"
      no.such.property: "1"
  i:
    type: kafka
    direction: in
    brokers: 127.0.0.1:9092
    topics: [a]
    group: g
    properties: { enable.auto.offset.store: "true" }
routes:
  r: { from: [i], to: [k] }
""")
    code, out, err = run_junction(["check", "-c", cfg])
    both = out + err
    t.eq(code, 1, "check fails")
    t.check("bad.yaml:8:" in both and "acks is set by junction" in both, "acks refused at 8: " +
            both)
    t.check("bad.yaml:11:" in both and "session.timeout.ms" in both, "bad value at line 11")
    t.check("bad.yaml:12:" in both and "no.such.property" in both, "unknown property at 12")
    t.check("bad.yaml:19:" in both and "enable.auto.offset.store" in both,
            "enable.auto.offset.store refused for IN")
    t.check("hunter2" not in both and "also-secret" not in both, "no secret in the output")
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
