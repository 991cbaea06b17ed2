"""MQTT IN as a listener (channels/mqtt_listen.c): devices connect to junction and publish.

1. mosquitto_pub QoS 0, 1 and 2, MQTT 5 and 3.1.1: each message lands once in a file OUT with
   its bytes; the HTTP OUT copy shows the mqtt-topic and mqtt-client-id headers.
2. 16 mosquitto_pub publishers x 500 QoS 1 messages at once: all 8000 arrive, none twice.
3. auth basic: a bad password is refused (mosquitto_pub fails; raw CONNECT gets CONNACK 4 in
   3.1.1, 0x86 in MQTT 5); the right one connects.
4. Raw packets: a bad packet after CONNECT closes the connection; protocol level 3 gets
   CONNACK 1; QoS 2 PUBLISH -> PUBREC, resent with DUP -> PUBREC again and stored once, PUBREL
   -> PUBCOMP; SUBSCRIBE -> SUBACK 0x80; PINGREQ -> PINGRESP; a topic outside allowed_topics
   gets PUBACK 0x87 (MQTT 5) and is not stored; keep-alive 1 s closes a silent connection after
   about 1.5 s; a will is ingested when the connection drops without DISCONNECT; a packet over
   max_packet_size gets DISCONNECT 0x95; the same client id again takes over (0x8E);
   max_connections 1 closes the second connection; 100 random byte strings (before and after
   CONNECT) each close their connection and junction stays up.
   TLS (the tls: block) with auth mtls: the allowed certificate publishes, another is refused.
5. junction check: url and listen together, or listen with topics, are refused."""
import os
import subprocess
import threading
import time
import uuid

import shutil
import tempfile

import mqttraw as mr
from jnt import Checks, Junction, Receiver, free_port, run_junction, wait_until
from tlst import Pki

t = Checks("mqtt_listener")
cleanups = []
pre = "jt%s" % uuid.uuid4().hex[:8]


def files_in(d):
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except OSError:
        return []


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


def pub(port, topic, body, qos=1, version="mqttv311", extra=()):
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic,
                           "-q", str(qos), "-s", "-V", version] + list(extra),
                          input=body, capture_output=True, timeout=30)


def main():
    port, aport, flood_port, lport = free_port(), free_port(), free_port(), free_port()
    tport = free_port()
    tmp = tempfile.mkdtemp(prefix="jn-mqttl-")
    cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    pki = Pki(tmp)
    ca = pki.ca("ca", "MQTT CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    cli, cli_key = pki.cert("client", "ca", "device7", client=True)
    intr, intr_key = pki.cert("intruder", "ca", "intruder", client=True)
    hook = Receiver([200]).start()
    cleanups.append(hook.stop)
    h = subprocess.run(["openssl", "passwd", "-6", "s3cret"], capture_output=True,
                       check=True).stdout.decode().strip()
    cfg = """
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 3s
channels:
  devices:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(port)d
    allowed_topics: ["%(pre)s/#", "wills/+"]
    max_packet_size: 1KiB
    connect_timeout: 2s
  tlsdev:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(tport)d
    tls: { cert: %(srv)s, key: %(srv_key)s, ca: %(ca)s, verify_peer: true }
    auth:
      - { type: mtls, allowed_peers: [device7] }
  limited:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(lport)d
    max_connections: 1
  secured:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(aport)d
    auth:
      - type: basic
        users: { dev1: "%(hash)s" }
  flood:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(fport)d
  files:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.mqtt-qos}.{id}.msg"
  ffiles:
    type: file
    direction: out
    dir: @DIR@/fout
    fsync: false
  hooks:
    type: http
    direction: out
    url: http://127.0.0.1:%(hport)d/hook
    headers: { X-Topic: "{header.mqtt-topic}", X-Client: "{header.mqtt-client-id}",
               X-Will: "{header.mqtt-will}", X-User: "{header.auth-user}" }
routes:
  to-files: { from: [devices, secured, tlsdev], to: [files] }
  to-hooks: { from: [devices, secured, tlsdev], to: [hooks] }
  to-ffiles: { from: [flood], to: [ffiles] }
""" % {"port": port, "aport": aport, "fport": flood_port, "lport": lport, "tport": tport, "srv": srv,
       "srv_key": srv_key, "ca": ca, "pre": pre, "hash": h,
       "hport": hook.port}
    j = Junction(cfg, wait_ports=(port, aport, flood_port, lport, tport))
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log (tail) ----\n%s" %
                                   "\n".join(j.log().splitlines()[-80:])))
    j.start()
    outdir = j.path("out")

    # ---- 1. QoS 0/1/2, both versions ----
    sent = []
    for ver in ("mqttv5", "mqttv311"):
        for qos in (0, 1, 2):
            body = b"%s qos%d \x00\x01\xff" % (ver.encode(), qos)
            p = pub(port, "%s/%s/q%d" % (pre, ver, qos), body, qos, ver,
                    ["-i", "%s-%s-%d" % (pre, ver, qos)])
            t.eq(p.returncode, 0, "mosquitto_pub %s qos %d (%r)" % (ver, qos, p.stderr[-200:]))
            sent.append((body, qos))
    t.check(wait_until(lambda: len(files_in(outdir)) >= len(sent), 10),
            "file OUT gets all %d (got %d)" % (len(sent), len(files_in(outdir))))
    got = {}
    for name in files_in(outdir):
        with open(os.path.join(outdir, name), "rb") as f:
            got.setdefault(f.read(), []).append(name.split(".")[0])
    for body, qos in sent:
        t.eq(got.get(body), [str(qos)], "exactly one file with %r, mqtt-qos %d" % (body, qos))
    t.check(wait_until(lambda: hook.count() >= len(sent), 10), "HTTP OUT gets them too")
    r = [x for x in hook.requests if x["body"].startswith(b"mqttv5 qos1")]
    t.check(len(r) == 1 and r[0]["headers"].get("x-topic") == "%s/mqttv5/q1" % pre and
            r[0]["headers"].get("x-client") == "%s-mqttv5-1" % pre,
            "mqtt-topic and mqtt-client-id headers (%r)" % (r[0]["headers"] if r else None))

    # ---- 2. 16 publishers x 500 QoS 1 ----
    n_pub, per = 16, 500
    codes = [None] * n_pub

    def flood(i):
        lines = b"".join(b"f-%d-%d\n" % (i, k) for k in range(per))
        p = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(flood_port), "-t",
                            "flood/%d" % i, "-q", "1", "-l", "-i", "%s-f%d" % (pre, i)],
                           input=lines, capture_output=True, timeout=120)
        codes[i] = p.returncode
    t0 = time.time()
    ths = [threading.Thread(target=flood, args=(i,)) for i in range(n_pub)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    pub_s = time.time() - t0
    t.eq(codes, [0] * n_pub, "all 16 publishers finish")
    fdir = j.path("fout")
    t.check(wait_until(lambda: len(files_in(fdir)) >= n_pub * per, 60),
            "all %d flood messages arrive (got %d)" % (n_pub * per, len(files_in(fdir))))
    fb = bodies_in(fdir)
    want = set(b"f-%d-%d" % (i, k) for i in range(n_pub) for k in range(per))
    t.eq(set(fb) == want and all(v == 1 for v in fb.values()), True,
         "each flood message exactly once")
    print("flood: %d QoS 1 messages from %d publishers PUBACKed in %.2f s (%.0f msg/s)" %
          (n_pub * per, n_pub, pub_s, n_pub * per / pub_s))

    # ---- 3. auth ----
    p = pub(aport, "a/b", b"nope", 1, "mqttv311", ["-u", "dev1", "-P", "wrong"])
    t.check(p.returncode != 0, "mosquitto_pub with a bad password fails (%r)" % p.stderr[-200:])
    c = mr.Client(aport)
    c.send(mr.connect("raw-bad", 4, user="dev1", password="wrong"))
    t.eq(c.read(), (2, 0, b"\x00\x04"), "3.1.1 bad login: CONNACK 4")
    t.check(c.closed(5), "and closed")
    c.close()
    c = mr.Client(aport)
    c.send(mr.connect("raw-bad5", 5, user="dev1", password="wrong"))
    a = c.read()
    t.check(a is not None and a[0] == 2 and a[2][1] == 0x86, "MQTT 5 bad login: CONNACK 0x86 "
            "(%r)" % (a,))
    c.close()
    c = mr.Client(aport)
    c.send(mr.connect("raw-none", 4))
    t.eq(c.read(), (2, 0, b"\x00\x05"), "3.1.1 no credentials: CONNACK 5 (not authorized)")
    c.close()
    p = pub(aport, "a/b", b"secured-ok", 1, "mqttv311", ["-u", "dev1", "-P", "s3cret"])
    t.eq(p.returncode, 0, "the right password connects and publishes (%r)" % p.stderr[-200:])
    t.check(wait_until(lambda: any(x["body"] == b"secured-ok" and
                                   x["headers"].get("x-user") == "dev1"
                                   for x in list(hook.requests)), 10),
            "its message arrives with auth-user dev1")
    t.check("login refused (auth basic)" in j.log(), "the refusal is logged")

    # ---- TLS with client certificates (auth mtls) ----
    p = pub(tport, "t/1", b"over tls", 1, "mqttv5",
            ["-h", "localhost", "--cafile", ca, "--cert", cli, "--key", cli_key])
    t.eq(p.returncode, 0, "TLS with the allowed client certificate publishes (%r)" %
         p.stderr[-300:])
    t.check(wait_until(lambda: any(x["body"] == b"over tls" and
                                   "CN=device7" in (x["headers"].get("x-user") or "")
                                   for x in list(hook.requests)), 10),
            "its message arrives with auth-user naming device7 (%r)" %
            [x["headers"].get("x-user") for x in list(hook.requests)
             if x["body"] == b"over tls"])
    p = pub(tport, "t/1", b"intruder tls", 1, "mqttv5",
            ["-h", "localhost", "--cafile", ca, "--cert", intr, "--key", intr_key])
    t.check(p.returncode != 0, "a verified certificate not in allowed_peers is refused (%r)" %
            p.stderr[-300:])
    p = pub(tport, "t/1", b"no cert", 1, "mqttv5", ["-h", "localhost", "--cafile", ca])
    t.check(p.returncode != 0, "TLS without a client certificate fails")

    # ---- 4. raw packets ----
    c = mr.Client(port)
    c.send(mr.connect("raw-q2", 4))
    t.eq(c.read(), (2, 0, b"\x00\x00"), "CONNACK 0")
    c.send(mr.publish(pre + "/q2", b"raw qos2 once", qos=2, pid=7))
    t.eq(c.read(), (5, 0, b"\x00\x07"), "QoS 2: PUBREC after the commit")
    c.send(mr.publish(pre + "/q2", b"raw qos2 once", qos=2, pid=7, dup=True))
    t.eq(c.read(), (5, 0, b"\x00\x07"), "resent with DUP: PUBREC again")
    c.send(mr.pubrel(7))
    t.eq(c.read(), (7, 0, b"\x00\x07"), "PUBREL -> PUBCOMP")
    c.send(mr.packet(0x82, b"\x00\x09" + mr.s("x/#") + b"\x01"))
    t.eq(c.read(), (9, 0, b"\x00\x09\x80"), "SUBSCRIBE -> SUBACK 0x80")
    c.send(mr.PINGREQ)
    t.eq(c.read(), (13, 0, b""), "PINGREQ -> PINGRESP")
    c.send(mr.publish(pre + "/retained", b"raw retained", qos=1, pid=8, retain=True))
    t.eq(c.read(), (4, 0, b"\x00\x08"), "a retained QoS 1 publish is taken (PUBACK)")
    c.send(b"\x30\xff\xff\xff\xff\x01")
    t.check(c.closed(5), "a bad packet (remaining length of 5 bytes) closes the connection")
    c.close()
    t.check(wait_until(lambda: bodies_in(outdir).get(b"raw qos2 once") == 1, 10),
            "the QoS 2 message is stored once")
    t.check(wait_until(lambda: bodies_in(outdir).get(b"raw retained") == 1, 10),
            "the retained one is stored (the flag ignored)")

    c = mr.Client(port)
    c.send(mr.connect("raw-v3", 3))
    t.eq(c.read(), (2, 0, b"\x00\x01"), "protocol level 3: CONNACK 1")
    t.check(c.closed(5), "and closed")
    c.close()

    c = mr.Client(port)
    c.send(mr.connect("raw-v5", 5))
    a = c.read()
    t.check(a is not None and a[0] == 2 and a[2][:2] == b"\x00\x00", "MQTT 5 CONNACK 0")
    c.send(mr.publish("elsewhere/x", b"raw not allowed", qos=1, pid=3, version=5))
    a = c.read()
    t.check(a is not None and a[0] == 4 and a[2][:3] == b"\x00\x03\x87",
            "a topic outside allowed_topics: PUBACK 0x87 (%r)" % (a,))
    c.send(mr.DISCONNECT)
    c.close()

    c = mr.Client(port)
    c.send(mr.connect("raw-big", 5))
    a = c.read()
    c.send(mr.publish(pre + "/big", b"z" * 2000, qos=1, pid=4, version=5))
    a = c.read()
    t.check(a is not None and a[0] == 14 and a[2][:1] == b"\x95",
            "a packet over max_packet_size: DISCONNECT 0x95 (%r)" % (a,))
    t.check(c.closed(5), "and closed")
    c.close()

    c1 = mr.Client(port)
    c1.send(mr.connect("raw-twice", 5))
    c1.read()
    c2 = mr.Client(port)
    c2.send(mr.connect("raw-twice", 5))
    a = c2.read()
    t.check(a is not None and a[0] == 2 and a[2][:2] == b"\x00\x00", "the same client id again: "
            "CONNACK 0")
    a = c1.read()
    t.check(a is not None and a[0] == 14 and a[2][:1] == b"\x8e",
            "the first connection gets DISCONNECT 0x8E Session taken over (%r)" % (a,))
    t.check(c1.closed(5), "and is closed")
    c1.close()
    c2.close()

    l1 = mr.Client(lport)
    l1.send(mr.connect("lim-1", 4))
    t.eq(l1.read(), (2, 0, b"\x00\x00"), "max_connections 1: the first connects")
    l2 = mr.Client(lport)
    t.check(l2.closed(5), "the second is closed at accept")
    l1.close()
    l2.close()

    c = mr.Client(port)
    c.send(mr.connect("raw-ka", 4, keepalive=1))
    t.eq(c.read(), (2, 0, b"\x00\x00"), "keep-alive 1: CONNACK 0")
    t0 = time.time()
    closed = c.closed(6)
    dt = time.time() - t0
    t.check(closed and 1.2 <= dt <= 3.5, "a silent connection is closed after 1.5 x keep-alive "
            "(%.2f s)" % dt)
    c.close()

    c = mr.Client(port)
    c.send(mr.connect("raw-will", 4, will=("wills/raw-will", b"raw gone", 1)))
    t.eq(c.read(), (2, 0, b"\x00\x00"), "CONNACK 0 with a will")
    c.close()  # no DISCONNECT
    t.check(wait_until(lambda: any(x["body"] == b"raw gone" and
                                   x["headers"].get("x-will") == "true" and
                                   x["headers"].get("x-topic") == "wills/raw-will"
                                   for x in list(hook.requests)), 10),
            "the will is ingested when the connection drops")
    c = mr.Client(port)
    c.send(mr.connect("raw-nowill", 4, will=("wills/raw-nowill", b"raw not gone", 1)))
    t.eq(c.read(), (2, 0, b"\x00\x00"), "CONNACK 0 with a will")
    c.send(mr.DISCONNECT)
    c.close()
    time.sleep(0.5)
    t.check(bodies_in(outdir).get(b"raw not gone") is None and
            bodies_in(outdir).get(b"raw not allowed") is None,
            "no will after DISCONNECT; nothing stored for the refused topic")
    # random bytes, before and after CONNECT: every connection closes, junction stays up
    import random
    rng = random.Random(18)
    closed = 0
    for i in range(100):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        c = mr.Client(port)
        if i % 2:
            c.send(mr.connect("junk-%d" % i, 4 + (i % 4 == 1), keepalive=1))
            c.read()
        try:
            c.send(junk if i % 3 else b"\x30" + junk)
            closed += c.closed(4)  # a bad packet at once; a partial one by the timeouts
        except OSError:
            closed += 1
        c.close()
    t.eq(closed, 100, "random bytes close the connection, at the latest by connect_timeout "
         "(2 s) or 1.5 x keep-alive (1 s)")
    t.check(j.alive(), "junction is still up")

    # ---- 5. config checks ----
    for extra, want in (("    url: tcp://127.0.0.1:1\n", "either url"),
                        ("    topics: [a]\n", "topics: belongs to url")):
        path = os.path.join(j.dir, "bad.yaml")
        with open(path, "w") as f:
            f.write("junction:\n  data_dir: %s/d2\nchannels:\n  x:\n    type: mqtt\n"
                    "    direction: in\n    listen: 127.0.0.1:1883\n%s" % (j.dir, extra))
        rc, out, err = run_junction(["check", "-c", path])
        t.check(rc != 0 and want in out + err, "check refuses %r (%r)" % (extra, out + err))
    t.eq(j.stop(), 0, "junction stops cleanly")


try:
    main()
finally:
    for fn in reversed(cleanups):
        try:
            fn()
        except Exception:
            pass
t.finish()
