"""test_issue_12_brokers_comma_string: `brokers:` written as librdkafka's bootstrap.servers string
("a:9092,b:9092", blanks around the commas allowed) works like a list. Against a mock cluster of
two brokers, a Kafka IN channel and a Kafka OUT channel each name both brokers in one string:
kcat -> Kafka IN -> file OUT gives the exact bytes, and HTTP IN -> Kafka OUT gives records
kcat reads back. `junction check` accepts the string and refuses an empty item at its
file:line:col."""
import os

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until
from test_kafka_mock import GROUP_PROPS, KafkaMock, consume, produce_files

t = Checks("kafka_brokers")
cleanups = []


def files(d):
    try:
        return sorted(f for f in os.listdir(d) if f.endswith(".msg"))
    except OSError:
        return []


try:
    mock = KafkaMock(["kb-in:2", "kb-out:2"], brokers=2)
    cleanups.append(mock.stop)
    bs = mock.bootstraps
    servers = bs.split(",")
    t.eq(len(servers), 2, "the mock has two brokers: %s" % bs)
    port = free_port()
    config = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
  kin:
    type: kafka
    direction: in
    brokers: %(plain)s
    topics: [kb-in]
    group: g-brokers
    properties: %(props)s
  fout:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.kafka-partition}-{header.kafka-offset}.msg"
  hin: { type: http, direction: in, listen: 127.0.0.1:%(port)d, path: /ingest }
  kout:
    type: kafka
    direction: out
    brokers: "%(spaced)s"
    topic: kb-out
    key: "{header.X-Key}"
    properties: { linger.ms: "1" }
routes:
  from-kafka: { from: [kin], to: [fout] }
  to-kafka: { from: [hin], to: [kout] }
""" % {"plain": ",".join(servers), "spaced": " ,  ".join(servers), "props": GROUP_PROPS,
       "port": port}
    j = Junction(config, wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))

    code, out, err = run_junction(["check", "-c", j.cfg])
    t.eq(code, 0, "check accepts brokers as comma-separated strings: %s" % (out + err))

    j.start()
    # ---- Kafka IN: records on both partitions arrive as files, exact bytes ----
    bodies = {0: [b"p0-a\x00\xff", b"p0-b"], 1: [b"p1-a\r\n"]}
    for part, bl in bodies.items():
        produce_files(bs, "kb-in", bl, key="k", partition=part)
    out_dir = j.path("out")
    t.check(wait_until(lambda: len(files(out_dir)) >= 3, 30),
            "3 records consumed through the comma string: %r" % files(out_dir))
    want = {"%d-%d.msg" % (p, i): b for p, bl in bodies.items() for i, b in enumerate(bl)}
    t.eq(files(out_dir), sorted(want), "one file per record, named by partition-offset")
    for name, b in want.items():
        if os.path.exists(os.path.join(out_dir, name)):
            with open(os.path.join(out_dir, name), "rb") as f:
                t.eq(f.read(), b, "%s: exact bytes" % name)

    # ---- Kafka OUT: produced through the comma string, read back with kcat ----
    url = "http://127.0.0.1:%d/ingest" % port
    sent = [b"out-%d" % i for i in range(4)]
    for i, b in enumerate(sent):
        status, _, _ = curl(["-H", "X-Key: key-%d" % i, "--data-binary", b, url])
        t.eq(status, 202, "HTTP IN accepts message %d" % i)
    t.check(wait_until(lambda: len(consume(bs, "kb-out")) >= 4, 30), "4 records in kb-out")
    recs = consume(bs, "kb-out")
    t.eq(sorted((r["key"], r["value"]) for r in recs),
         [(b"key-%d" % i, b) for i, b in enumerate(sent)], "each record once, key and bytes")
    t.eq(j.stop(), 0, "SIGTERM: exit 0")

    # ---- check: an empty item is an error at the value's file:line:col ----
    bad = j.path("bad.yaml")
    with open(bad, "w") as f:
        f.write(config.replace("@DIR@", j.dir).replace(
            '    brokers: "%s"' % " ,  ".join(servers),
            '    brokers: "%s,,%s"' % (servers[0], servers[1])))
    code, out, err = run_junction(["check", "-c", bad])
    t.eq(code, 1, "check refuses an empty item")
    t.check(("%s:23:14: channel 'kout' (kafka): brokers: item 2 of '%s,,%s' is empty, "
             "expected values separated by commas" % (bad, servers[0], servers[1])) in err,
            "the error names file:line:col and the item: %s" % err)
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for c in reversed(cleanups):
        c()
t.finish()
