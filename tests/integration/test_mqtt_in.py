"""MQTT IN on junction's own client (channels/mqtt_in.c) against a real mosquitto started here:

1. MQTT 5 and 3.1.1 channels; QoS 0, 1 and 2 messages arrive with exact bytes; MQTT 5 user
   properties and content type become mqtt-user-<name> / mqtt-content-type headers.
2. Many in flight: 5000 QoS 1 messages published as fast as mosquitto_pub can all arrive as
   files, none twice, and mosquitto drops nothing for junction's session.
3. Flow control: the route's destination is down with max_queued 20 (when_full: block): the
   journal refuses, junction acknowledges nothing it refused and reconnects so the broker
   resends; once the destination is up every message arrives.
4. mosquitto restarts (persistence on): junction reconnects and takes what comes after.
5. Persistent session: messages published while junction is down arrive after it starts.
6. A peer that sends bad packets (a fake broker on a socket here): the connection is closed
   with an error line, junction stays up and connects again.
7. ssl:// to a mosquitto TLS listener with the channel's ca_file.
8. The deprecated handoff / state_dir options load with a warning.
9. A scripted broker: a QoS 2 PUBLISH resent with DUP after the PUBREC was lost with the
   connection is answered PUBREC again and stored once; PUBREL gets PUBCOMP, QoS 1 PUBACK."""
import os
import socket
import subprocess
import threading
import time
import uuid

from jnt import Checks, Junction, Receiver, free_port, wait_until
from test_mqtt_roundtrip import Mosquitto, files_in

t = Checks("mqtt_in")
cleanups = []
pre = "jt%s" % uuid.uuid4().hex[:8]


def pub_many(mq, topic, bodies, qos=1, version=None):
    """mosquitto_pub -l: one message per line of stdin, as fast as it goes; its exit code."""
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mq.port), "-t", topic, "-q", str(qos),
            "-l", "-i", "jt-pubmany-" + uuid.uuid4().hex[:8]]
    if version:
        args += ["-V", version]
    p = subprocess.run(args, input=b"".join(b + b"\n" for b in bodies), capture_output=True,
                       timeout=120)
    if p.returncode != 0:
        print("mosquitto_pub: %r" % p.stdout[-500:])
    return p.returncode


def bodies_in(d):
    out = {}
    for name in files_in(d):
        try:
            with open(os.path.join(d, name), "rb") as f:
                b = f.read()
        except OSError:
            continue
        out[b] = out.get(b, 0) + 1
    return out


class BadBroker:
    """Answers CONNECT with a CONNACK, then sends bytes that are no MQTT: the connection count
    shows junction coming back after each close."""

    def __init__(self, garbage):
        self.garbage = garbage
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            try:
                c.settimeout(5)
                c.recv(4096)                             # CONNECT
                c.sendall(b"\x20\x03\x00\x00\x00")       # CONNACK (v5), success, no props
                c.sendall(self.garbage[(self.conns - 1) % len(self.garbage)])
                c.recv(4096)                             # until junction closes
            except OSError:
                pass
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def read_packet(c):
    """One MQTT packet from socket c: (first byte, body)."""
    def exact(n):
        out = b""
        while len(out) < n:
            chunk = c.recv(n - len(out))
            if not chunk:
                raise OSError("closed")
            out += chunk
        return out
    first = exact(1)[0]
    n, mul = 0, 1
    while True:
        d = exact(1)[0]
        n += (d & 0x7F) * mul
        mul *= 128
        if not d & 0x80:
            break
    return first, exact(n)


class ScriptedBroker:
    """Plays MQTT 5 broker to check the QoS 2 and QoS 1 answers byte by byte. Connection 1: a
    QoS 2 PUBLISH (id 5), wait for PUBREC, then drop the connection as if that PUBREC were lost.
    Connection 2: the same PUBLISH again with DUP (must be answered PUBREC, not taken twice),
    PUBREL (PUBCOMP), then a QoS 1 PUBLISH (id 6, PUBACK). seen: what junction answered."""

    PUB2 = b"\x00\x02q2\x00\x05\x00once"
    PUB1 = b"\x00\x02q2\x00\x06\x00one"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.done = False
        threading.Thread(target=self._run, daemon=True).start()

    def _expect(self, c, first):
        while True:
            f, body = read_packet(c)
            if f == 0xC0:                            # PINGREQ
                c.sendall(b"\xd0\x00")
                continue
            self.seen.append((f, body))
            if f == first:
                return body

    def _run(self):
        try:
            c, _ = self.sock.accept()
            c.settimeout(10)
            self._expect(c, 0x10)                   # CONNECT
            c.sendall(b"\x20\x03\x01\x00\x00")     # CONNACK, session present
            self._expect(c, 0x82)                   # SUBSCRIBE (first connect of the run)
            c.sendall(b"\x90\x04\x00\x01\x00\x02")
            c.sendall(bytes([0x34, len(self.PUB2)]) + self.PUB2)
            self._expect(c, 0x50)                   # PUBREC, after the commit
            c.close()                               # "lost" with the PUBREC
            c, _ = self.sock.accept()
            c.settimeout(10)
            self._expect(c, 0x10)
            c.sendall(b"\x20\x03\x01\x00\x00")
            c.sendall(bytes([0x3C, len(self.PUB2)]) + self.PUB2)   # DUP
            self._expect(c, 0x50)                   # PUBREC again
            c.sendall(b"\x62\x02\x00\x05")          # PUBREL
            self._expect(c, 0x70)                   # PUBCOMP
            c.sendall(bytes([0x32, len(self.PUB1)]) + self.PUB1)
            self._expect(c, 0x40)                   # PUBACK
            self.done = True
            self.conn = c                           # kept open until the end
        except OSError as e:
            self.seen.append(("error", str(e)))

    def stop(self):
        self.sock.close()


def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    os.chmod(key, 0o644)
    return crt, key


try:
    mq = Mosquitto(persistence=True)
    tls_port = free_port()
    crt, key = make_cert(mq.dir)
    with open(mq.cfg, "a") as f:
        f.write("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n" % (tls_port, crt, key))
    mq.start()
    cleanups.append(mq.cleanup)
    t.on_fail.append(lambda: print("---- mosquitto log (tail) ----\n%s" %
                                   "\n".join(mq.log().splitlines()[-80:])))
    down_port = free_port()
    bad = BadBroker([b"\x30\xff\xff\xff\xff\x7f", b"\x36\x05\x00\x01a\x00\x01",
                     b"\x90\x03\x00\x07\x00"])
    cleanups.append(bad.stop)
    sb = ScriptedBroker()
    cleanups.append(sb.stop)
    hook = Receiver([200]).start()
    cleanups.append(hook.stop)
    cfg = """
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 3s
channels:
  v5:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-v5
    topics: [%(pre)s/v5/#]
    reconnect_backoff: 100ms
    reconnect_max_backoff: 500ms
  v4:
    type: mqtt
    direction: in
    protocol_version: "3.1.1"
    url: mqtt://127.0.0.1:%(mport)d
    client_id: %(pre)s-v4
    topics: [%(pre)s/v4/#]
    receive_maximum: 16
    reconnect_backoff: 100ms
    reconnect_max_backoff: 500ms
  fc:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-fc
    topics: [%(pre)s/fc]
    qos: 1
    receive_maximum: 50
    reconnect_backoff: 100ms
    reconnect_max_backoff: 400ms
  tls:
    type: mqtt
    direction: in
    url: ssl://localhost:%(tport)d
    ca_file: %(crt)s
    client_id: %(pre)s-tls
    topics: [%(pre)s/tls]
    handoff: durable
    state_dir: @DIR@/old-state
  bad:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(bport)d
    topics: [x]
    reconnect_backoff: 200ms
    reconnect_max_backoff: 400ms
  scripted:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(sport)d
    client_id: %(pre)s-scripted
    topics: [q2]
    reconnect_backoff: 50ms
    reconnect_max_backoff: 100ms
  files2:
    type: file
    direction: out
    dir: @DIR@/out2
  files:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.mqtt-qos}.{id}.msg"
  hooks:
    type: http
    direction: out
    url: http://127.0.0.1:%(hport)d/hook
    headers: { X-Topic: "{header.mqtt-topic}", X-Ct: "{header.mqtt-content-type}",
               X-User: "{header.mqtt-user-site}" }
  slow:
    type: http
    direction: out
    url: http://127.0.0.1:%(dport)d/sink
    retry: { attempts: 100000, backoff: 50ms, max_backoff: 100ms }
    max_queued: { messages: 20 }
routes:
  to-files: { from: [v5, v4, tls], to: [files] }
  to-hooks: { from: [v5], to: [hooks] }
  to-slow: { from: [fc], to: [slow] }
  to-files2: { from: [scripted], to: [files2] }
""" % {"mport": mq.port, "tport": tls_port, "crt": crt, "pre": pre, "bport": bad.port,
       "hport": hook.port, "dport": down_port, "sport": sb.port}
    j = Junction(cfg)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log (tail, no retry lines) ----\n%s" %
                                   "\n".join([ln for ln in j.log().splitlines()
                                              if " failed, retry in " not in ln][-150:])))
    j.start()
    for name in ("v5", "v4", "fc", "tls"):
        t.check(wait_until(lambda: "[mqtt.%s] subscribed to 1 topic filter(s)" % name in j.log(),
                           10), "%s connects and subscribes" % name)
    t.check("[mqtt.v5] connected to tcp://127.0.0.1:%d as %s-v5 (MQTT 5" % (mq.port, pre)
            in j.log(), "v5 speaks MQTT 5")
    t.check("(MQTT 3.1.1, session present" in j.log(), "v4 speaks MQTT 3.1.1")
    t.check("handoff: deprecated and ignored" in j.log() and
            "state_dir: deprecated and ignored" in j.log(),
            "handoff and state_dir load with a deprecation warning")
    outdir = j.path("out")

    # ---- 1. QoS 0/1/2, both versions, MQTT 5 properties ----
    sent = []
    for ver, sub in (("5", "v5"), ("311", "v4")):
        for qos in (0, 1, 2):
            body = b"%s qos%d \x00\x01\xff" % (sub.encode(), qos)
            args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mq.port), "-t",
                    "%s/%s/q%d" % (pre, sub, qos), "-q", str(qos), "-s",
                    "-V", "mqttv5" if ver == "5" else "mqttv311"]
            if ver == "5":
                args += ["-D", "publish", "user-property", "site", "plant-%d" % qos,
                         "-D", "publish", "content-type", "application/x-test"]
            p = subprocess.run(args, input=body, capture_output=True, timeout=20)
            t.eq(p.returncode, 0, "mosquitto_pub %s qos %d" % (sub, qos))
            sent.append((body, qos))
    t.check(wait_until(lambda: len(files_in(outdir)) >= len(sent), 10),
            "file OUT gets all %d (got %d)" % (len(sent), len(files_in(outdir))))
    got = {}
    for name in files_in(outdir):
        with open(os.path.join(outdir, name), "rb") as f:
            got.setdefault(f.read(), []).append(name.split(".")[0])
    for body, qos in sent:
        t.eq(got.get(body), [str(qos)], "exactly one file with %r, mqtt-qos %d" % (body, qos))
    t.check(wait_until(lambda: hook.count() >= 3, 10), "HTTP OUT gets the 3 MQTT 5 messages")
    for r in hook.requests:
        q = r["body"].split(b"qos")[1][:1].decode()
        t.eq((r["headers"].get("x-ct"), r["headers"].get("x-user")),
             ("application/x-test", "plant-%s" % q),
             "content type and user property as headers (qos %s)" % q)
    for name in files_in(outdir):
        os.unlink(os.path.join(outdir, name))

    # ---- 2. 5000 QoS 1 published fast, all arrive once ----
    N = 5000
    flood = [b"flood-%05d-%s" % (i, b"y" * 1000) for i in range(N)]
    t0 = time.monotonic()
    t.eq(pub_many(mq, "%s/v5/flood" % pre, flood, 1), 0, "mosquitto_pub sent %d" % N)
    t.check(wait_until(lambda: len(files_in(outdir)) >= N, 60),
            "all %d flood messages are files (got %d)" % (N, len(files_in(outdir))))
    took = time.monotonic() - t0
    bs = bodies_in(outdir)
    t.eq(sorted(b for b in bs if b.startswith(b"flood-")), sorted(flood),
         "every flood message arrived with its exact bytes")
    t.eq([b[:12] for b, c in bs.items() if c > 1], [], "none arrived twice")
    print("flood: %d QoS 1 messages of 1 KB in %.2f s (%.0f/s end to end)" % (N, took, N / took))
    t.eq([ln for ln in mq.log().splitlines() if "dropped" in ln.lower()], [],
         "mosquitto dropped nothing for junction's sessions")

    # ---- 3. flow control: refusals are not lost ----
    M = 400  # well above fc's receive_maximum (50): the later ones meet a full queue
    fcb = [b"fc-%03d" % i for i in range(M)]
    t.eq(pub_many(mq, "%s/fc" % pre, fcb, 1), 0, "mosquitto_pub sent %d for fc" % M)
    t.check(wait_until(lambda: "[mqtt.fc] msg=" in j.log() and "refused by the journal" in
                       j.log(), 30), "the journal refuses fc's intake (destination full)")
    t.check(wait_until(lambda: "refused by the journal, reconnecting so the broker sends them "
                       "again" in j.log(), 30), "fc reconnects so the broker resends")
    slow = Receiver([200], port=down_port).start()
    cleanups.append(slow.stop)
    t.check(wait_until(lambda: set(fcb) <= set(slow.bodies()), 60),
            "once the destination is up all %d arrive (got %d unique)" %
            (M, len(set(slow.bodies()) & set(fcb))))
    print("flow control: %d sent, %d deliveries (%d duplicates)" %
          (M, len(slow.bodies()), len(slow.bodies()) - len(set(slow.bodies()))))

    # ---- 6. bad packets close the connection with a log line, never a crash ----
    t.check(wait_until(lambda: bad.conns >= 4, 10),
            "junction reconnects after each bad packet (%d connections)" % bad.conns)
    n0 = bad.conns
    time.sleep(1.0)
    t.check(bad.conns - n0 <= 12, "with backoff, not in a tight loop (%d connections in 1 s)"
            % (bad.conns - n0))
    log = j.log()
    t.check("[mqtt.bad] bad packet from the broker (0x81)" in log,
            "a broken remaining length: error line with 0x81")
    t.check("[mqtt.bad] protocol error: unexpected SUBACK" in log or
            "[mqtt.bad] bad packet from the broker" in log.split("(0x81)", 1)[-1],
            "a QoS 3 PUBLISH or a stray SUBACK closes the connection too")
    t.check(j.alive(), "junction is still running")
    bad.stop()

    # ---- 9. QoS 2 resent with DUP after a lost PUBREC: taken once; QoS 1: PUBACK ----
    t.check(wait_until(lambda: sb.done, 15), "the scripted broker got PUBREC, PUBREC again, "
            "PUBCOMP and PUBACK: %r" % [(hex(f) if isinstance(f, int) else f, b.hex())
                                        for f, b in sb.seen])
    t.eq([(f, b) for f, b in sb.seen if f in (0x50, 0x70, 0x40)],
         [(0x50, b"\x00\x05"), (0x50, b"\x00\x05"), (0x70, b"\x00\x05"), (0x40, b"\x00\x06")],
         "the answers carry the packet identifiers (short forms)")
    t.eq(sorted(bodies_in(j.path("out2")).items()), [(b"once", 1), (b"one", 1)],
         "the QoS 2 message sent twice is one file; the QoS 1 one too")

    # ---- 7. TLS ----
    tb = b"over tls"
    p = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mq.port), "-t",
                        "%s/tls" % pre, "-q", "1", "-s"], input=tb, capture_output=True,
                       timeout=20)
    t.check(wait_until(lambda: tb in bodies_in(outdir), 10), "ssl:// with ca_file: arrives")

    # ---- 4. mosquitto restarts ----
    mq.stop()
    t.check(wait_until(lambda: "[mqtt.v5] connection to tcp://127.0.0.1:%d lost" % mq.port
                       in j.log(), 10), "v5 notices the broker went away")
    mq.start()
    t.check(wait_until(lambda: j.log().count("[mqtt.v5] connected to") >= 2, 10),
            "v5 connects again after mosquitto restarts")
    t.check("[mqtt.v5] connected to tcp://127.0.0.1:%d as %s-v5 (MQTT 5, session present: yes)"
            % (mq.port, pre) in j.log(), "mosquitto kept the session (persistence)")
    rb = b"after the broker restart"
    t.eq(mq.pub("%s/v5/r" % pre, rb, 1), 0, "publish after the restart")
    t.check(wait_until(lambda: rb in bodies_in(outdir), 10), "it arrives")

    # ---- 5. persistent session: published while junction is down ----
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
    away = [b"away-%03d" % i for i in range(200)]
    t.eq(pub_many(mq, "%s/v5/away" % pre, away[:100], 1), 0, "QoS 1 while junction is down")
    t.eq(pub_many(mq, "%s/v4/away" % pre, away[100:], 2), 0, "QoS 2 while junction is down")
    j2 = Junction(open(j.cfg).read().replace(j.dir, "@DIR@"))
    cleanups.append(j2.cleanup)
    t.on_fail.append(lambda: print("---- junction (2nd) log (tail) ----\n%s" %
                                   "\n".join(j2.log().splitlines()[-80:])))
    j2.start()
    out2 = j2.path("out")
    t.check(wait_until(lambda: set(away) <= set(bodies_in(out2)), 20),
            "all 200 published while junction was down arrive after it starts (got %d)" %
            len(set(away) & set(bodies_in(out2))))
    t.eq(j2.stop(), 0, "SIGTERM: junction exits 0 (second run)")
    errors = [ln for ln in (j.log() + j2.log()).splitlines()
              if "[error]" in ln and "[mqtt.bad]" not in ln]
    t.eq(errors, [], "no error lines but the bad broker's")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:  # cleanup must go on
            print("cleanup: %r" % e)
t.finish()
