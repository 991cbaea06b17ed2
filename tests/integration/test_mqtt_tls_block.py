"""MQTT as a client (url: ssl://) with the shared tls: block (issue 16: one shape of TLS
configuration on every edge), against a mosquitto TLS listener started here that requires a
client certificate (require_certificate true, certificates made by openssl in the test).

- HTTP IN -> MQTT OUT (paho, tls: { ca, cert, key }) -> mosquitto over TLS -> MQTT IN
  (junction's own client, the same tls: block) -> file OUT: the message arrives, its bytes
  unchanged.
- An MQTT IN whose tls: ca is another CA does not connect: the log says certificate verify
  failed, and nothing from it is stored.
- junction check: tls: with a tcp:// url, tls: together with ca_file, and allowed_peers on an
  OUT (paho has no setting for it) are refused.
"""
import os
import uuid

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until
from test_mqtt_roundtrip import Mosquitto
from tlst import Pki

t = Checks("mqtt_tls_block")
cleanups = []
pre = "jtls%s" % uuid.uuid4().hex[:8]


def bodies(d):
    try:
        names = [n for n in os.listdir(d) if not n.startswith(".")]
    except OSError:
        return []
    out = []
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            out.append(f.read())
    return out


try:
    mq = Mosquitto()
    cleanups.append(mq.cleanup)
    pki = Pki(mq.dir)  # readable by the mosquitto user a root-started mosquitto becomes
    ca = pki.ca("ca", "MQTT CA")
    ca2 = pki.ca("ca2", "Other CA")
    srv, srv_key = pki.cert("broker", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    cli, cli_key = pki.cert("client", "ca", "junction", client=True)
    for f in os.listdir(mq.dir):
        if f.endswith(".key") or f.endswith(".pem"):
            os.chmod(os.path.join(mq.dir, f), 0o644)
    tport = free_port()
    with open(mq.cfg, "a") as f:
        f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                "require_certificate true\n" % (tport, ca, srv, srv_key))
    mq.start()
    t.on_fail.append(lambda: print("---- mosquitto log (tail) ----\n%s" %
                                   "\n".join(mq.log().splitlines()[-40:])))
    hport = free_port()
    tls = "{ ca: %s, cert: %s, key: %s }" % (ca, cli, cli_key)
    j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(h)d
    path: /in
  mq-out:
    type: mqtt
    direction: out
    url: ssl://localhost:%(p)d
    topic: %(pre)s/x
    qos: 1
    tls: %(tls)s
  mq-in:
    type: mqtt
    direction: in
    url: ssl://localhost:%(p)d
    topics: ["%(pre)s/#"]
    tls: %(tls)s
  mq-wrong-ca:
    type: mqtt
    direction: in
    url: ssl://localhost:%(p)d
    client_id: wrong-ca
    topics: ["%(pre)s/#"]
    tls: { ca: %(ca2)s, cert: %(cli)s, key: %(cli_key)s }
  files:
    type: file
    direction: out
    dir: @DIR@/out
  wrong:
    type: file
    direction: out
    dir: @DIR@/wrong
routes:
  out: { from: [web], to: [mq-out] }
  in: { from: [mq-in], to: [files] }
  bad: { from: [mq-wrong-ca], to: [wrong] }
""" % {"h": hport, "p": tport, "pre": pre, "tls": tls, "ca2": ca2, "cli": cli,
       "cli_key": cli_key}, wait_ports=[hport])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    t.check(wait_until(lambda: "[mqtt.mq-in] connected to ssl://" in j.log() and
                       "[mqtt.mq-out] connected to ssl://" in j.log(), 15),
            "MQTT IN and OUT connect over TLS with their client certificate")
    t.check("[mqtt.mq-wrong-ca] connected" not in j.log(), "the other CA's one does not")
    body = b"over-tls-" + uuid.uuid4().hex.encode()
    got = None
    # The subscription may come a moment after the connection: post until it arrives.
    for _ in range(20):
        st, _, _ = curl(["--data-binary", body, "http://127.0.0.1:%d/in" % hport])
        if wait_until(lambda: body in bodies(j.path("out")), 1):
            got = st
            break
    t.eq(got, 202, "HTTP IN -> MQTT OUT (tls:) -> mosquitto TLS -> MQTT IN (tls:) -> file")
    t.check(wait_until(lambda: "certificate verify failed" in j.log(), 15),
            "MQTT IN with another CA: certificate verify failed is logged")
    t.eq(bodies(j.path("wrong")), [], "nothing came through the channel of the other CA")
    t.eq(j.stop(), 0, "exit 0")

    # ---- junction check ----
    def check(chan):
        cfg = os.path.join(mq.dir, "check.yaml")
        with open(cfg, "w") as f:
            f.write("junction: { data_dir: %s/d }\nchannels:\n  c:\n%s" % (mq.dir, chan))
        code, out, err = run_junction(["check", "-c", cfg])
        return code, out + err

    code, out = check("    type: mqtt\n    direction: out\n    url: tcp://localhost:1\n"
                      "    topic: x\n    tls: %s\n" % tls)
    t.check(code == 1 and "tls: needs an ssl:// or mqtts:// url" in out,
            "check: tls: with tcp:// is refused\n" + out)
    code, out = check("    type: mqtt\n    direction: out\n    url: ssl://localhost:1\n"
                      "    topic: x\n    ca_file: %s\n    tls: %s\n" % (ca, tls))
    t.check(code == 1 and "ca_file: give TLS settings in tls: only" in out,
            "check: tls: and ca_file together are refused\n" + out)
    code, out = check("    type: mqtt\n    direction: out\n    url: ssl://localhost:1\n"
                      "    topic: x\n    tls: { ca: %s, allowed_peers: [b] }\n" % ca)
    t.check(code == 1 and "allowed_peers is not available for MQTT OUT" in out,
            "check: allowed_peers on an MQTT OUT is refused\n" + out)
finally:
    for f in reversed(cleanups):
        f()
t.finish()
