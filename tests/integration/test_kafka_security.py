"""Kafka's tls: and sasl: blocks (issue 16) against a real TLS peer on loopback.

librdkafka's mock cluster speaks no TLS, so the "broker" here is a python TLS server that
requires a client certificate, records who completed the handshake, and closes (it speaks no
Kafka: what is checked is the TLS librdkafka was configured for):
- a kafka OUT with tls { ca, cert, key } and sasl (SASL_SSL) completes the handshake with the
  server of its CA and shows junction's client certificate;
- a server whose certificate another CA signed is refused by librdkafka, and junction's log
  says "certificate verify failed";
- the SASL password appears in neither junction's log, `junction check` nor `describe`;
- `junction check` refuses tls options librdkafka has no setting for, properties that the
  blocks set as well, a missing ca file (named), and sasl without a password; sasl without tls
  is a warning.
(tests/unit/test_kafka.c checks every librdkafka property the blocks set.)
"""
import os
import shutil
import socket
import ssl
import tempfile
import threading

from jnt import Checks, Junction, free_port, run_junction, wait_until
from tlst import Pki, server_ctx

t = Checks("kafka_security")
cleanups = []
PASSWORD = "kafka-sasl-pw-7d1e93c0a5"


class TlsPeer:
    """Accepts TLS connections on 127.0.0.1:port requiring a client certificate; records the
    client CNs that completed a handshake and the handshake errors."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.peers, self.errors = [], []
        self.stopping = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(5)
            try:
                s = self.ctx.wrap_socket(c, server_side=True)
                cert = s.getpeercert()
                cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
                self.peers.append(cn[0] if cn else "?")
                s.close()
            except (ssl.SSLError, OSError) as e:
                self.errors.append(str(e))
                c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def kafka_cfg(port, tls, extra=""):
    return """
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /in
  k:
    type: kafka
    direction: out
    brokers: [localhost:%d]
    topic: t
%s
%s
routes:
  r: { from: [web], to: [k] }
""" % (free_port(), port, "    tls: %s" % tls if tls else "", extra)


try:
    tmp = tempfile.mkdtemp(prefix="jn-kafka-sec-")
    cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    pki = Pki(tmp)
    ca = pki.ca("ca", "Kafka CA")
    ca2 = pki.ca("ca2", "Other CA")
    srv, srv_key = pki.cert("broker", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    bad, bad_key = pki.cert("broker2", "ca2", "localhost", san="DNS:localhost,IP:127.0.0.1")
    cli, cli_key = pki.cert("client", "ca", "junction-client", client=True)
    sasl = "    sasl: { mechanism: SCRAM-SHA-512, username: jn, password: \"%s\" }" % PASSWORD

    good = TlsPeer(server_ctx(srv, srv_key, ca))
    cleanups.append(good.stop)
    j = Junction(kafka_cfg(good.port, "{ ca: %s, cert: %s, key: %s }" % (ca, cli, cli_key),
                           sasl))
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    t.check(wait_until(lambda: "junction-client" in good.peers, 20),
            "librdkafka completes the TLS handshake with the broker of its CA, showing "
            "junction's client certificate (peers %r, errors %r)" % (good.peers, good.errors))
    t.eq(j.stop(), 0, "exit 0")
    t.check(PASSWORD not in j.log(), "the SASL password is not in junction's log")

    other = TlsPeer(server_ctx(bad, bad_key, ca))
    cleanups.append(other.stop)
    j2 = Junction(kafka_cfg(other.port, "{ ca: %s, cert: %s, key: %s }" % (ca, cli, cli_key)))
    cleanups.append(j2.cleanup)
    t.on_fail.append(lambda: print("---- junction log (other CA) ----\n%s" % j2.log()))
    j2.start()
    t.check(wait_until(lambda: "certificate verify failed" in j2.log(), 20),
            "a broker of another CA: librdkafka refuses it, the log says certificate verify "
            "failed")
    t.eq(other.peers, [], "no handshake completed with the broker of another CA")
    t.eq(j2.stop(), 0, "exit 0")

    # ---- junction check ----
    def check(tls, extra=""):
        cfg = os.path.join(tmp, "check.yaml")
        with open(cfg, "w") as f:
            f.write(kafka_cfg(9, tls, extra).replace("@DIR@", tmp))
        code, out, err = run_junction(["check", "-c", cfg])
        return code, out + err

    code, out = check("{ enabled: true, ca: %s }" % ca, sasl)
    t.eq(code, 0, "check: tls + sasl is valid\n" + out)
    t.check(PASSWORD not in out, "check does not print the SASL password")
    code, out = check("{ enabled: true, ca: %s, allowed_peers: [kafka1] }" % ca)
    t.check(code == 1 and "allowed_peers is not available for Kafka" in out,
            "check: allowed_peers refused for Kafka\n" + out)
    code, out = check("{ enabled: true, ca: %s }" % ca, "    properties: { ssl.ca.location: /x }")
    t.check(code == 1 and "ssl.ca.location is set by the channel's tls: block" in out,
            "check: a property the tls: block sets too is refused\n" + out)
    code, out = check("{ enabled: true, ca: %s/missing-ca.pem }" % tmp)
    t.check(code == 1 and "missing-ca.pem" in out, "check: a missing ca file is named\n" + out)
    code, out = check("{ ca: %s }" % ca)
    t.check(code == 1 and "TLS is off" in out, "check: tls options without enabled or cert are "
            "refused, as on every client\n" + out)
    code, out = check("{ enabled: true, ca: %s }" % ca, "    sasl: { username: jn }")
    t.check(code == 1 and "password is required" in out, "check: sasl without a password\n" + out)
    code, out = check(None, sasl)
    t.check(code == 0 and "in the clear" in out, "check: sasl without tls is a warning\n" + out)
    code, out, err = run_junction(["describe", "kafka"])
    t.check(code == 0 and "sasl" in out + err and PASSWORD not in out + err,
            "describe kafka lists sasl, no secret\n" + out + err)
finally:
    for f in reversed(cleanups):
        f()
t.finish()
