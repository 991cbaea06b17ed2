"""MQTT round trips against a real mosquitto started here (and its mosquitto_pub/mosquitto_sub):
MQTT IN -> junction -> file OUT and HTTP OUT (exact bytes; mqtt-topic, mqtt-qos, mqtt-retain
headers; QoS 0/1/2, retained, wildcard filters); HTTP IN -> junction -> MQTT OUT (exact bytes
on the rendered topic, the PUBLISH QoS and the retain flag); a topic that renders with a
wildcard is dead-lettered at once; junction exits 0 on SIGTERM.

Also the home of the Mosquitto helper the other test_mqtt_*.py files import (everything that
runs is under __main__)."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

from jnt import Checks, Junction, Receiver, curl, free_port, port_open, wait_until


class Mosquitto:
    """A mosquitto broker on a free 127.0.0.1 port with its own config in a temporary directory.

    persistence: keep sessions and queued messages across a stop/start (in the temp dir, which
    is made writable for the mosquitto user that a root-started mosquitto drops to)."""

    def __init__(self, port=None, persistence=False):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="jn-mosq-")
        self.persistence = persistence
        self.proc = None
        self.logs = []
        self.cfg = os.path.join(self.dir, "mosquitto.conf")
        pdir = os.path.join(self.dir, "db")
        os.makedirs(pdir)
        # Started as root, mosquitto runs as user mosquitto: it must be able to enter the
        # folder and write its database (stack.md 4).
        os.chmod(self.dir, 0o755)
        os.chmod(pdir, 0o777)
        with open(self.cfg, "w") as f:
            f.write("per_listener_settings false\n"
                    "listener %d 127.0.0.1\n"
                    "allow_anonymous true\n"
                    "persistence %s\n"
                    "persistence_location %s/\n"
                    "autosave_interval 1\n"
                    "log_dest stdout\n"
                    "log_type all\n"
                    "max_queued_messages 1000000\n"
                    "max_inflight_messages 100\n"
                    % (self.port, "true" if persistence else "false", pdir))
        os.chmod(self.cfg, 0o644)

    def start(self, timeout=10.0):
        logpath = os.path.join(self.dir, "mosquitto.%d.log" % (len(self.logs) + 1))
        self.logs.append(logpath)
        self.log_f = open(logpath, "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", self.cfg], stdout=self.log_f,
                                     stderr=subprocess.STDOUT)
        if not wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout):
            raise RuntimeError("mosquitto did not open port %d:\n%s" % (self.port, self.log()))
        if self.proc.poll() is not None:
            raise RuntimeError("mosquitto exited with %s:\n%s" % (self.proc.returncode,
                                                                  self.log()))
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log_f.close()
        self.proc = None

    def log(self):
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- second real clients ----

    def pub(self, topic, payload, qos=1, retain=False, client_id=None):
        """Publishes exactly payload (bytes) with mosquitto_pub; returns its exit code."""
        args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                "-q", str(qos), "-s", "-i", client_id or "jt-pub-" + uuid.uuid4().hex[:10]]
        if retain:
            args.append("-r")
        p = subprocess.run(args, input=payload, capture_output=True, timeout=20)
        return p.returncode

    def sub(self, topic, qos=2, client_id=None, clean=True, count=None, wait=None):
        """A mosquitto_sub printing 'topic|qos|retain|hexpayload' lines; returns a Subscriber."""
        return Subscriber(self, topic, qos, client_id, clean, count, wait)


class Subscriber:
    def __init__(self, mosq, topic, qos, client_id, clean, count, wait):
        self.out = tempfile.NamedTemporaryFile(prefix="jn-mqsub-", delete=False)
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosq.port), "-t", topic,
                "-q", str(qos), "-F", "%t|%q|%r|%x",
                "-i", client_id or "jt-sub-" + uuid.uuid4().hex[:10]]
        if not clean:
            args.append("-c")
        if count is not None:
            args += ["-C", str(count)]
        if wait is not None:
            args += ["-W", str(wait)]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)

    def lines(self):
        with open(self.out.name, "rb") as f:
            return [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln]

    def messages(self):
        """[(topic, qos, retain, payload bytes)]"""
        out = []
        for ln in self.lines():
            parts = ln.split("|")
            if len(parts) != 4:
                continue
            try:
                out.append((parts[0], int(parts[1]), int(parts[2]), bytes.fromhex(parts[3])))
            except ValueError:
                continue
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.out.name)
        except OSError:
            pass


def files_in(d):
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except OSError:
        return []


def main():
    t = Checks("mqtt_roundtrip")
    cleanups = []
    pre = "jt%s" % uuid.uuid4().hex[:8]
    try:
        mq = Mosquitto().start()
        cleanups.append(mq.cleanup)
        t.on_fail.append(lambda: print("---- mosquitto log ----\n%s" % mq.log()))
        rcv = Receiver([200]).start()
        cleanups.append(rcv.stop)
        http_port = free_port()
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
    topics: [%(pre)s/in/#, %(pre)s/other/+/x]
  files:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.mqtt-qos}.{header.mqtt-retain}.{id}.msg"
  hooks:
    type: http
    direction: out
    url: http://127.0.0.1:%(rport)d/hook
    headers: { X-Topic: "{header.mqtt-topic}", X-Qos: "{header.mqtt-qos}",
               X-Retain: "{header.mqtt-retain}" }
  h-in:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
    path: /ingest
  m-out:
    type: mqtt
    direction: out
    url: mqtt://127.0.0.1:%(mport)d
    client_id: %(pre)s-out
    topic: "%(pre)s/out/{header.X-Kind}/{channel}"
    qos: 1
    retain: true
    concurrency: 4
    retry: { attempts: 3, backoff: 50ms, max_backoff: 200ms }
  m-out2:
    type: mqtt
    direction: out
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-out2
    topic: "%(pre)s/q2/{header.X-Kind}"
    retry: { attempts: 3, backoff: 50ms, max_backoff: 200ms }
routes:
  from-mqtt: { from: [m-in], to: [files, hooks] }
  to-mqtt: { from: [h-in], to: [m-out, m-out2] }
""" % {"mport": mq.port, "pre": pre, "rport": rcv.port, "hport": http_port},
            wait_ports=[http_port])
        cleanups.append(j.cleanup)
        t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
        # Retained before junction subscribes: it comes with the retain flag set.
        t.eq(mq.pub("%s/in/pre" % pre, b"retained before subscribe", 1, True), 0,
             "mosquitto_pub a retained message")
        j.start()
        t.check(wait_until(lambda: "[mqtt.m-in] subscribed to 2 topic filter(s)" in j.log(), 10),
                "MQTT IN connects and subscribes")
        t.check(wait_until(lambda: "[mqtt.m-out] connected to mqtt://" in j.log(), 10),
                "MQTT OUT connects")

        # ---- 1. MQTT IN -> file OUT and HTTP OUT ----
        sent = [
            ("%s/in/a" % pre, b"qos0 \x00\x01\xff binary", 0, False),
            ("%s/in/b/c" % pre, b'{"qos": 1}\r\n', 1, False),
            ("%s/in/d" % pre, b"qos2 " + bytes(range(256)), 2, False),
            ("%s/other/z/x" % pre, b"plus wildcard", 1, False),
            ("%s/in/ret" % pre, b"retained one", 1, True),
        ]
        for topic, payload, qos, retain in sent:
            t.eq(mq.pub(topic, payload, qos, retain), 0, "mosquitto_pub to %s" % topic)
        mq.pub("%s/elsewhere" % pre, b"not subscribed", 1)
        outdir = j.path("out")
        t.check(wait_until(lambda: len(files_in(outdir)) >= len(sent) + 1, 10),
                "file OUT gets %d files (got %d)" % (len(sent), len(files_in(outdir))))
        t.check(wait_until(lambda: rcv.count() >= len(sent) + 1, 10),
                "HTTP OUT gets every message")
        got = {}
        for name in files_in(outdir):
            with open(os.path.join(outdir, name), "rb") as f:
                got.setdefault(f.read(), []).append(name)
        by_body = {r["body"]: r["headers"] for r in rcv.requests}
        for topic, payload, qos, retain in sent:
            names = got.get(payload, [])
            t.eq(len(names), 1, "exactly one file holds the bytes sent to %s" % topic)
            if names:
                q, r, _ = names[0].split(".", 2)
                t.eq(q, str(qos), "%s: mqtt-qos header in the file name" % topic)
                # A message published while a subscriber is connected reaches it with the
                # retain flag cleared (MQTT 3.1.1 3.3.1.3).
                t.eq(r, "false", "%s: mqtt-retain header for a live message" % topic)
            h = by_body.get(payload)
            t.check(h is not None, "%s: HTTP OUT got the exact bytes" % topic)
            if h is not None:
                t.eq(h.get("x-topic"), topic, "%s: mqtt-topic header" % topic)
                t.eq(h.get("x-qos"), str(qos), "%s: mqtt-qos header" % topic)
        t.check(b"not subscribed" not in got, "a topic outside the filters is not taken")
        pre_h = by_body.get(b"retained before subscribe")
        t.check(pre_h is not None, "the retained message is taken when junction subscribes")
        if pre_h is not None:
            t.eq(pre_h.get("x-retain"), "true", "mqtt-retain: true for a retained message")
            t.eq(pre_h.get("x-qos"), "1", "retained message: mqtt-qos 1")
        # clean_session: false: what is published while junction is away waits in the broker.
        t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (first run)")
        t.eq(mq.pub("%s/in/away" % pre, b"sent while junction was away", 2), 0,
             "mosquitto_pub while junction is stopped")
        j2 = Junction(open(j.cfg).read().replace(j.dir, "@DIR@"), wait_ports=[http_port])
        cleanups.append(j2.cleanup)
        t.on_fail.append(lambda: print("---- junction (2nd) log ----\n%s" % j2.log()))
        j2.start()
        t.check(wait_until(lambda: any(r["body"] == b"sent while junction was away"
                                       for r in rcv.requests), 10),
                "a message published while junction was stopped arrives after the restart")

        # ---- 2. HTTP IN -> MQTT OUT ----
        live = mq.sub("%s/out/#" % pre, qos=2)
        live2 = mq.sub("%s/q2/#" % pre, qos=2)
        cleanups.append(live.stop)
        cleanups.append(live2.stop)
        time.sleep(0.5)  # mosquitto_sub connects and subscribes
        body = b'{"order": 7}\r\n\x00\xfe tail'
        with open(j2.path("body.bin"), "wb") as f:
            f.write(body)
        status, resp, _ = curl(["-H", "X-Kind: orders", "--data-binary", "@" + j2.path("body.bin"),
                                "http://127.0.0.1:%d/ingest" % http_port])
        t.eq(status, 202, "HTTP IN answers 202")
        t.check(wait_until(lambda: live.messages(), 10), "the subscriber gets the message")
        t.check(wait_until(lambda: live2.messages(), 10), "the QoS 2 subscriber gets it too")
        msgs = live.messages()
        t.eq(msgs[:1], [("%s/out/orders/h-in" % pre, 1, 0, body)],
             "exact bytes on the rendered topic, QoS 1 (retain cleared for a live subscriber)")
        t.eq(live2.messages()[:1], [("%s/q2/orders" % pre, 2, 0, body)],
             "the default qos is 2 (PUBCOMP)")
        t.check(wait_until(lambda: "[mqtt.m-out2] msg=" in j2.log() and
                           "delivered (attempt 1)" in j2.log(), 5), "m-out2 delivered")
        # The retain flag: a subscriber that comes later gets it as retained.
        late = mq.sub("%s/out/orders/h-in" % pre, qos=1, count=1, wait=5)
        cleanups.append(late.stop)
        t.check(wait_until(lambda: late.messages(), 8), "a later subscriber gets the retained "
                "message")
        t.eq(late.messages()[:1], [("%s/out/orders/h-in" % pre, 1, 1, body)],
             "retained: retain flag set for a later subscriber")

        # ---- 3. a rendered topic with a wildcard is dead-lettered at once ----
        status, resp, _ = curl(["-H", "X-Kind: a+b", "--data-binary", "wild",
                                "http://127.0.0.1:%d/ingest" % http_port])
        t.eq(status, 202, "HTTP IN answers 202 (wildcard)")
        t.check(wait_until(lambda: "the rendered topic has a wildcard" in j2.log() and
                           "dead-lettered" in j2.log(), 5),
                "a topic with + is rejected and dead-lettered")
        t.check(not any(m[3] == b"wild" for m in live.messages()), "nothing published for it")
        t.eq(j2.stop(), 0, "SIGTERM: junction exits 0")
        t.eq([ln for ln in (j.log() + j2.log()).splitlines() if "[error]" in ln], [],
             "no error lines")
    finally:
        for c in reversed(cleanups):
            try:
                c()
            except Exception as e:  # cleanup must go on
                print("cleanup: %r" % e)
    t.finish()


if __name__ == "__main__":
    main()
