"""The MQTT codec (channels/mqtt_proto) against a real broker: tests/tools/mqtt_probe, a
subscriber built on the codec, talks to a mosquitto started here, for MQTT 3.1.1 and 5.0 at QoS 1
and 2. mosquitto_pub publishes (5.0: with two user properties each); every message must arrive
exactly once with its exact topic, QoS, payload (up to 200 KB, so packets span many reads and a
3-byte remaining length) and user properties. Then, with the same client id: what was
published while the probe was away arrives on the next run (persistent session, CONNACK
session present), what it acknowledged is not delivered again, and a third run finds nothing."""
import os
import subprocess
import tempfile
import uuid

import jnt
from jnt import Checks, wait_until
from test_mqtt_roundtrip import Mosquitto

PROBE = os.environ.get("MQTT_PROBE",
                       os.path.join(os.path.dirname(os.path.abspath(jnt.BIN)), "mqtt_probe"))


class Probe:
    def __init__(self, port, version, client_id, topic, qos, count, wait=20):
        self.out = tempfile.NamedTemporaryFile(prefix="jn-probe-", delete=False)
        self.err = tempfile.NamedTemporaryFile(prefix="jn-probe-err-", delete=False)
        self.proc = subprocess.Popen(
            [PROBE, "-p", str(port), "-V", str(version), "-i", client_id, "-t", topic,
             "-q", str(qos), "-n", str(count), "-w", str(wait)],
            stdout=self.out, stderr=self.err)

    def text(self):
        with open(self.out.name, "rb") as f:
            return f.read().decode("ascii", "replace")

    def stderr(self):
        with open(self.err.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def subscribed(self):
        return "SUBACK rc=" in self.text()

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def connack(self):
        for ln in self.text().splitlines():
            if ln.startswith("CONNACK "):
                return dict(kv.split("=", 1) for kv in ln.split()[1:])
        return None

    def messages(self):
        """[(topic, qos, payload bytes, [(name, value)])]"""
        out = []
        for ln in self.text().splitlines():
            if not ln.startswith("MSG "):
                continue
            f = dict(kv.split("=", 1) for kv in ln.split()[1:])
            user = []
            if f.get("user"):
                for pair in f["user"].split(","):
                    k, v = pair.split(":")
                    user.append((bytes.fromhex(k).decode(), bytes.fromhex(v).decode()))
            out.append((bytes.fromhex(f["topic"]).decode(), int(f["qos"]),
                        bytes.fromhex(f["payload"]), user))
        return out

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.out, self.err):
            f.close()
            try:
                os.unlink(f.name)
            except OSError:
                pass


def publish(mq, version, topic, payload, qos, user):
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mq.port), "-t", topic, "-q", str(qos),
            "-s", "-i", "jt-pub-" + uuid.uuid4().hex[:10]]
    if version == 5:
        args += ["-V", "5"]
        for k, v in user:
            args += ["-D", "PUBLISH", "user-property", k, v]
    p = subprocess.run(args, input=payload, capture_output=True, timeout=20)
    return p.returncode


def batch(pre, version, qos, tag, first):
    """Three messages: small binary, 300 bytes, 200 KB (remaining length of 1, 2, 3 bytes)."""
    out = []
    sizes = [0, 300, 200 * 1024]
    for i, size in enumerate(sizes):
        n = first + i
        body = (b"%s-%d \x00\x01\xfe\xff " % (tag.encode(), n))
        body += bytes((n * 7 + j) % 256 for j in range(max(0, size - len(body))))
        user = [("k", "v%d" % n), ("app", "jn-%s" % tag)] if version == 5 else []
        out.append(("%s/v%dq%d/%s/%d" % (pre, version, qos, tag, n), qos, body, user))
    return out


def run_case(t, mq, pre, version, qos, cleanups):
    name = "v%d qos %d" % (version, qos)
    cid = "%s-probe-v%d-q%d" % (pre, version, qos)
    filt = "%s/v%dq%d/#" % (pre, version, qos)

    # ---- 1. live: the probe is subscribed while mosquitto_pub publishes ----
    p1 = Probe(mq.port, version, cid, filt, qos, 3)
    cleanups.append(p1.cleanup)
    if not t.check(wait_until(p1.subscribed, 10), "%s: the probe connects and subscribes (%s)"
                   % (name, p1.stderr())):
        return
    t.eq(p1.connack(), {"session_present": "0", "rc": "0x00"},
         "%s: first CONNACK, no session yet" % name)
    live = batch(pre, version, qos, "live", 1)
    for topic, q, body, user in live:
        t.eq(publish(mq, version, topic, body, q, user), 0, "%s: mosquitto_pub %s" % (name, topic))
    t.eq(p1.wait(), 0, "%s: the probe gets 3 messages and exits 0 (%s)" % (name, p1.stderr()))
    t.eq(p1.messages(), live, "%s: each live message exactly once, exact topic, QoS, payload "
         "and user properties" % name)

    # ---- 2. away: published while no probe is connected ----
    away = batch(pre, version, qos, "away", 4)
    for topic, q, body, user in away:
        t.eq(publish(mq, version, topic, body, q, user), 0, "%s: mosquitto_pub %s (away)"
             % (name, topic))
    p2 = Probe(mq.port, version, cid, filt, qos, 3)
    cleanups.append(p2.cleanup)
    t.eq(p2.wait(), 0, "%s: the second run gets 3 messages and exits 0 (%s)"
         % (name, p2.stderr()))
    t.eq(p2.connack(), {"session_present": "1", "rc": "0x00"},
         "%s: the broker kept the session (clean session 0)" % name)
    t.eq(p2.messages(), away, "%s: the second run gets what was published while it was away, "
         "and nothing it had acknowledged" % name)

    # ---- 3. nothing left: every acknowledgement was taken ----
    p3 = Probe(mq.port, version, cid, filt, qos, 1, wait=2)
    cleanups.append(p3.cleanup)
    t.eq(p3.wait(), 2, "%s: a third run times out (exit 2) with nothing to deliver" % name)
    t.eq(p3.messages(), [], "%s: nothing is redelivered" % name)


def main():
    t = Checks("mqtt_proto_peer")
    cleanups = []
    pre = "jt%s" % uuid.uuid4().hex[:8]
    try:
        if not t.check(os.access(PROBE, os.X_OK), "mqtt_probe is built at %s" % PROBE):
            t.finish()
        mq = Mosquitto().start()
        cleanups.append(mq.cleanup)
        t.on_fail.append(lambda: print("---- mosquitto log (tail) ----\n%s"
                                       % "\n".join(mq.log().splitlines()[-80:])))
        for version in (4, 5):
            for qos in (1, 2):
                run_case(t, mq, pre, version, qos, cleanups)
        t.check("protocol error" not in mq.log().lower() and
                "malformed" not in mq.log().lower(),
                "mosquitto logged no protocol error or malformed packet")
    finally:
        for c in reversed(cleanups):
            try:
                c()
            except Exception as e:  # cleanup must go on
                print("cleanup: %r" % e)
    t.finish()


if __name__ == "__main__":
    main()
