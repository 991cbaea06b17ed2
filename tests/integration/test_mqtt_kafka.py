"""Cross round trips between the MQTT and Kafka channels (issue 5), each with a file OUT as the
second witness, against a mosquitto started here and the librdkafka mock cluster:

1. mosquitto_pub -> mosquitto -> junction (mqtt IN) -> Kafka (kafka OUT) and file OUT; kcat
   consumes the topic: exact bytes, the MQTT topic carried as the record key and in an
   `mqtt-topic` record header (the QoS in `mqtt-qos`), a `junction-id` header; the files hold
   the exact bytes too.
2. kcat produces -> Kafka -> junction (kafka IN) -> mosquitto (mqtt OUT) and file OUT;
   mosquitto_sub gets exact bytes on the topic rendered from the record's key and a record
   header; the files are named by partition and offset and hold the exact bytes.

Loopback only, free ports, bounded waits (the whole test well under 60 s); junction's and
mosquitto's logs are printed on failure."""
import hashlib
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jnt import Checks, Junction, wait_until  # noqa: E402
from test_kafka_mock import KafkaMock, consume, kafka_in_config, produce_files  # noqa: E402
from test_mqtt_roundtrip import Mosquitto, files_in  # noqa: E402


def read_all(d):
    """{name: bytes} of the files in d."""
    out = {}
    for n in files_in(d):
        with open(os.path.join(d, n), "rb") as f:
            out[n] = f.read()
    return out


def summary(msgs):
    """(topic, qos, retain, length, digest) per message, sorted: short enough to print."""
    return sorted((m[0], m[1], m[2], len(m[3]), hashlib.sha256(m[3]).hexdigest()[:16])
                  for m in msgs)


def main():
    t = Checks("mqtt_kafka")
    cleanups = []
    pre = "jt%s" % uuid.uuid4().hex[:8]
    try:
        mock = KafkaMock(["mk-up:1", "mk-down:1"])
        cleanups.append(mock.stop)
        bs = mock.bootstraps
        mq = Mosquitto().start()
        cleanups.append(mq.cleanup)
        kept = {}
        # mosquitto writes its log when it stops; read it before cleanup removes it (cleanups
        # run in reverse order).
        cleanups.append(lambda: (mq.stop(), kept.update(log=mq.log())))
        t.on_fail.append(lambda: print("---- mosquitto log ----\n%s" % kept.get("log", "")))
        j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
  m-in:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-in
    topics: [%(pre)s/up/#]
  k-out:
    type: kafka
    direction: out
    brokers: %(bs)s
    topic: mk-up
    key: "{header.mqtt-topic}"
    headers: { mqtt-topic: "{header.mqtt-topic}", mqtt-qos: "{header.mqtt-qos}" }
  f-up:
    type: file
    direction: out
    dir: @DIR@/up
    name: "{header.mqtt-qos}.{id}.msg"
%(kin)s
  m-out:
    type: mqtt
    direction: out
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-out
    topic: "%(pre)s/down/{header.kafka-key}/{header.kafka-header-kind}"
    qos: 1
    retry: { attempts: 3, backoff: 50ms, max_backoff: 200ms }
  f-down:
    type: file
    direction: out
    dir: @DIR@/down
    name: "{header.kafka-partition}-{header.kafka-offset}.msg"
routes:
  up: { from: [m-in], to: [k-out, f-up] }
  down: { from: [k-in], to: [m-out, f-down] }
""" % {"mport": mq.port, "pre": pre, "bs": bs,
       "kin": kafka_in_config(bs, "g-%s" % pre, ["mk-down"]).replace("  kin:", "  k-in:", 1)})
        cleanups.append(j.cleanup)
        t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
        j.start()
        t.check(wait_until(lambda: "[mqtt.m-in] subscribed to 1 topic filter(s)" in j.log(), 10),
                "MQTT IN connects and subscribes")
        t.check(wait_until(lambda: "[mqtt.m-out] connected to" in j.log(), 10),
                "MQTT OUT connects")
        t.check(wait_until(lambda: "[kafka.k-in] assigned 1 partition(s)" in j.log(), 15),
                "Kafka IN joins its group and gets the partition")

        # ---- 1. MQTT -> junction -> Kafka (and file OUT) ----
        up = [
            ("%s/up/a" % pre, bytes(range(256)), 1),
            ("%s/up/b/c" % pre, b'{"n": 2}\r\n', 2),
            ("%s/up/d" % pre, b"qos0 \x00 tail \xff", 0),
        ]
        for topic, payload, qos in up:
            t.eq(mq.pub(topic, payload, qos), 0, "mosquitto_pub to %s" % topic)
        recs = []

        def got_up():
            recs[:] = consume(bs, "mk-up", timeout=10)
            return len(recs) >= len(up)

        t.check(wait_until(got_up, 20, 0.3), "kcat consumes %d records from mk-up (got %d)" %
                (len(up), len(recs)))
        by_val = {r["value"]: r for r in recs}
        t.eq(len(recs), len(up), "one record per MQTT message, no more")
        for topic, payload, qos in up:
            r = by_val.get(payload)
            if not t.check(r is not None, "%s: the exact bytes are a record's value" % topic):
                continue
            t.eq(r["key"], topic.encode(), "%s: the MQTT topic is the record key" % topic)
            t.eq(r["headers"].get("mqtt-topic"), topic.encode(),
                 "%s: the MQTT topic is in the mqtt-topic record header" % topic)
            t.eq(r["headers"].get("mqtt-qos"), str(qos).encode(),
                 "%s: mqtt-qos record header" % topic)
            t.check(len(r["headers"].get("junction-id", b"")) == 26,
                    "%s: junction-id record header" % topic)
        updir = j.path("up")
        t.check(wait_until(lambda: len(files_in(updir)) >= len(up), 10),
                "file OUT gets %d files (got %d)" % (len(up), len(files_in(updir))))
        files = read_all(updir)
        for topic, payload, qos in up:
            names = [n for n, b in files.items() if b == payload]
            t.eq(len(names), 1, "%s: exactly one file holds the exact bytes" % topic)
            if names:
                t.eq(names[0].split(".")[0], str(qos), "%s: qos in the file name" % topic)

        # ---- 2. Kafka -> junction -> MQTT (and file OUT) ----
        cid = "jt-sub-" + uuid.uuid4().hex[:10]
        live = mq.sub("%s/down/#" % pre, qos=2, client_id=cid)
        cleanups.append(live.stop)
        probe = "%s/down/probe" % pre

        def subscribed():
            # mosquitto_sub says nothing when it is subscribed: publish until it sees one.
            mq.pub(probe, b"probe", 1)
            return any(m[0] == probe for m in live.messages())

        t.check(wait_until(subscribed, 10, 0.2), "mosquitto_sub is subscribed")
        down = [b"down \x00\x01\xfe\xff binary\r\n", b'{"k": 1}', b"x" * 70000]
        produce_files(bs, "mk-down", down, key="dev-7", headers=["kind=reading"])
        want_topic = "%s/down/dev-7/reading" % pre
        def msgs_down():
            return [m for m in live.messages() if m[0] != probe]

        want = summary((want_topic, 1, 0, p) for p in down)
        # mosquitto_sub may be in the middle of writing the long line: wait for the whole.
        t.check(wait_until(lambda: summary(msgs_down()) == want, 20),
                "mosquitto_sub gets %d messages (got %d)" % (len(down), len(msgs_down())))
        t.eq(summary(msgs_down()), want,
             "exact bytes (length, sha256) on the templated topic (key and "
             "kafka-header-kind), QoS 1, once each")
        t.check(sorted(m[3] for m in msgs_down()) == sorted(down), "byte for byte")
        downdir = j.path("down")
        t.check(wait_until(lambda: len(files_in(downdir)) >= len(down), 10),
                "file OUT gets %d files" % len(down))
        t.eq(read_all(downdir), {"0-%d.msg" % i: p for i, p in enumerate(down)},
             "file OUT: named by partition and offset, exact bytes")

        t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
        t.eq([ln for ln in j.log().splitlines() if "[error]" in ln], [], "no error lines")
    except Exception as e:  # a helper that fails still gets the logs printed
        t.check(False, "unexpected exception: %r" % e)
    finally:
        for c in reversed(cleanups):
            try:
                c()
            except Exception as e:  # cleanup must go on
                print("cleanup: %r" % e)
    t.finish()


if __name__ == "__main__":
    main()
