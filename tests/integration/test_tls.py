"""TLS and mutual TLS on junction's edges (issue 16, parts 1 and 2), with certificates made by the
openssl command in a temp dir: a CA, a server, a client, a client of another CA, an expired
client, a client the CA signed but allowed_peers does not name.

- HTTPS IN (tls: with verify_peer and allowed_peers, an encrypted key with key_password):
  curl with the good client is accepted (202) and its message carries tls-peer "CN=client1
  sha256:<fingerprint>" (a tls-peer header the client sends itself is dropped); no client
  certificate, the other CA, the expired one and the one not in allowed_peers are refused in
  the handshake, each logged with its reason; `openssl s_client -tls1_1` is refused while
  -tls1_2 passes; sslscan finds no SSLv3, TLS 1.0 or 1.1 and no NULL/EXPORT/RC4/DES/MD5/anon
  cipher (skipped with a note when sslscan is missing). Every refusal leaves the file OUT empty
  (nothing journaled).
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
import re
import shutil
import signal
import socket
import ssl
import subprocess
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
    hport, mport, oport = free_port(), free_port(), free_port()
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
  open:
    type: http
    direction: in
    listen: 127.0.0.1:%(oport)d
    tls: { cert: %(lab_pem)s, key: %(lab_key)s }
  web-files: { type: file, direction: out, dir: "@DIR@/web" }
  lab-files: { type: file, direction: out, dir: "@DIR@/lab" }
  peers:
    type: http
    direction: out
    url: http://127.0.0.1:%(sink)d/peer
    headers: { X-Peer: "{header.tls-peer}", X-From: "{channel}" }
routes:
  w: { from: [web, open], to: [web-files, peers] }
  l: { from: [lab], to: [lab-files, peers] }
""" % {"hport": hport, "mport": mport, "oport": oport, "srv": srv, "srv_key": srv_key, "lab_pem": lab_pem,
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
    # curl sees the close before the broker's log line is written: wait for each.
    for reason in ("peer did not return a certificate", "unable to get local issuer certificate",
                   "certificate has expired", "not in allowed_peers"):
        t.check(wait_until(lambda: reason in j.log(), 5),
                "HTTPS IN: the refusal is logged with its reason: %s" % reason)
    st, _, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/ingest" % hport])
    t.eq(st, 0, "HTTPS IN: plain HTTP on the TLS port gets no HTTP answer")

    rc, out = s_client(hport, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca)
    t.check(rc != 0 and "protocol version" in out,
            "HTTPS IN: TLS 1.1 is refused by the server (alert protocol version)\n" + out[-600:])
    rc, out = s_client(hport, "-tls1_2", "-CAfile", ca, "-cert", cli, "-key", cli_key)
    t.check("Verify return code: 0 (ok)" in out and "TLSv1.2" in out,
            "HTTPS IN: TLS 1.2 with the good client passes (the check above can fail)\n"
            + out[-600:])

    # sslscan against an HTTPS listener with the default protocol and cipher settings.
    if shutil.which("sslscan"):
        p = subprocess.run(["sslscan", "--no-colour", "127.0.0.1:%d" % oport],
                           capture_output=True, timeout=120)
        scan = p.stdout.decode("utf-8", "replace")
        for proto in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
            t.check(re.search(r"^%s\s+disabled" % re.escape(proto), scan, re.M) is not None,
                    "sslscan: %s disabled\n%s" % (proto, scan))
        ciphers = [l for l in scan.splitlines() if l.startswith(("Accepted", "Preferred"))]
        t.check(any("TLSv1.2" in l for l in ciphers) and any("TLSv1.3" in l for l in ciphers),
                "sslscan: TLS 1.2 and 1.3 ciphers are found (so the checks can fail)\n" + scan)
        weak = [l for l in ciphers if re.search(r"NULL|EXP|RC4|DES|MD5|anon", l)]
        t.eq(weak, [], "sslscan: no NULL, EXPORT, RC4, DES, MD5 or anonymous cipher")
    else:
        print("note: sslscan is not installed (scripts/install-deps.sh installs it); skipped")

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
    mlog = [l for l in j.log().splitlines() if "[mllp.lab]" in l and "handshake refused" in l]
    for reason in ("peer did not return a certificate", "unable to get local issuer certificate",
                   "certificate has expired", "not in allowed_peers", "unsupported protocol"):
        t.check(any(reason in l for l in mlog), "MLLP/TLS: refusal logged: %s" % reason)
    time.sleep(0.3)  # anything wrongly accepted would have been written by now
    t.eq(len(files(web_dir)), 1, "every HTTPS refusal left nothing in the journal")
    t.eq(len(files(lab_dir)), 1, "every MLLP/TLS refusal left nothing in the journal")
    t.eq(sink.count(), 2, "nothing else was delivered")

    # ---- 3. reload on SIGHUP ----
    # An open connection, then the MLLP listener's files swapped for server3's: new connections
    # get it, the open one goes on; then a broken file, refused, the running one stays.
    t.eq(peer_cert_fp(mport), fingerprint(srv2), "reload: the MLLP listener presents server2")
    keep = good.wrap_socket(socket.create_connection(("127.0.0.1", mport), timeout=5),
                            server_hostname="localhost")
    keep.sendall(b"\x0b" + hl7(b"KEEP1") + b"\x1c\r")
    t.check(b"MSA|AA|KEEP1" in keep.recv(65536), "reload: the open connection works")
    shutil.copy(srv3, lab_pem)
    shutil.copy(srv3_key, lab_key)
    j.proc.send_signal(signal.SIGHUP)
    t.check(wait_until(lambda: "channel 'lab': tls: certificates reloaded" in j.log(), 5),
            "reload: SIGHUP reloads the MLLP listener's certificate")
    t.eq(peer_cert_fp(mport), fingerprint(srv3), "reload: a new connection gets the new one")
    keep.sendall(b"\x0b" + hl7(b"KEEP2") + b"\x1c\r")
    t.check(b"MSA|AA|KEEP2" in keep.recv(65536), "reload: the open connection keeps going")
    keep.close()
    kept_before = j.log().count("keeping the certificates in use")
    with open(lab_pem, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    j.proc.send_signal(signal.SIGHUP)
    t.check(wait_until(lambda: j.log().count("keeping the certificates in use") > kept_before, 5),
            "reload: a broken certificate is refused with an error line")
    t.check(("[error] channel 'lab': tls: cert: %s: " % lab_pem) in j.log(),
            "reload: the error line names the file")
    t.eq(peer_cert_fp(mport), fingerprint(srv3), "reload: the running certificate stays")
    ack = tls_mllp_send(mport, hl7(b"TLS2"), good)
    t.check(ack is not None and b"MSA|AA|TLS2" in ack, "reload: new clients are still served")
    t.check("channel 'web': tls: certificates reloaded" in j.log(),
            "reload: the HTTPS listener reloaded too")
    st, _, _ = https("--cert", cli, "--key", cli_key)
    t.eq(st, 202, "reload: HTTPS IN still serves (its encrypted key reloaded with key_password)")
    # Without a signal: the files replaced on disk are taken up within a few seconds.
    shutil.copy(srv2, lab_pem)
    shutil.copy(srv2_key, lab_key)
    t.check(wait_until(lambda: peer_cert_fp(mport) == fingerprint(srv2), 10, 0.25),
            "reload: certificate files replaced on disk are taken up without SIGHUP")
    t.check("channel 'lab': tls: certificate files changed on disk: reloaded" in j.log(),
            "reload: and it says so")
    t.eq(j.stop(), 0, "exit 0")
    if os.environ.get("JN_TEST_SHOWLOG"):
        print(j.log())

    # ---- 4. HTTP OUT and MLLP OUT to TLS receivers started here ----
    # The receivers require junction's client certificate (mutual TLS both ways).
    https_ok = TlsReceiver(server_ctx(srv2, srv2_key, ca)).start()
    https_ca2 = TlsReceiver(server_ctx(wrong_ca_srv, wrong_ca_key, ca)).start()
    https_name = TlsReceiver(server_ctx(wrong_name_srv, wrong_name_key, ca)).start()
    mllp_ok = TlsMllpListener(server_ctx(srv2, srv2_key, ca)).start()
    mllp_ca2 = TlsMllpListener(server_ctx(wrong_ca_srv, wrong_ca_key, ca)).start()
    for r in (https_ok, https_ca2, https_name, mllp_ok, mllp_ca2):
        cleanups.append(r.stop)
    iport = free_port()
    out_tls = "tls: { ca: %s, cert: %s, key: %s }" % (ca, cli, cli_key)
    j = start("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
  admin: "off"
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(iport)d" }
  h-ok:
    type: http
    direction: out
    url: https://127.0.0.1:%(h_ok)d/x
    %(tls)s
  h-ca2:
    type: http
    direction: out
    url: https://127.0.0.1:%(h_ca2)d/x
    retry: { attempts: 2, backoff: 10ms }
    %(tls)s
  h-name:
    type: http
    direction: out
    url: https://127.0.0.1:%(h_name)d/x
    retry: { attempts: 2, backoff: 10ms }
    tls: { ca: %(ca)s, cert: %(cli)s, key: %(cli_key)s, server_name: localhost }
  h-nocert:
    type: http
    direction: out
    url: https://127.0.0.1:%(h_ok)d/nocert
    retry: { attempts: 2, backoff: 10ms }
    tls: { ca: %(ca)s }
  m-ok:
    type: mllp
    direction: out
    connect: 127.0.0.1:%(m_ok)d
    %(tls)s
  m-ca2:
    type: mllp
    direction: out
    connect: 127.0.0.1:%(m_ca2)d
    retry: { attempts: 2, backoff: 10ms }
    %(tls)s
routes:
  r: { from: [in], to: [h-ok, h-ca2, h-name, h-nocert, m-ok, m-ca2] }
""" % {"iport": iport, "h_ok": https_ok.port, "h_ca2": https_ca2.port,
       "h_name": https_name.port, "m_ok": mllp_ok.port, "m_ca2": mllp_ca2.port, "tls": out_tls,
       "ca": ca, "cli": cli, "cli_key": cli_key}, [iport])
    st, _, _ = curl(["--data-binary", hl7(b"OUT1").decode(), "http://127.0.0.1:%d/ingest" % iport])
    t.eq(st, 202, "OUT: the message is accepted")
    t.check(wait_until(lambda: https_ok.count() == 1, 10), "HTTP OUT: delivered over https")
    t.eq(https_ok.bodies()[:1], [hl7(b"OUT1")], "HTTP OUT: the exact body arrived")
    t.check(wait_until(lambda: mllp_ok.count() == 1, 10), "MLLP OUT: delivered over TLS")
    t.eq(mllp_ok.frames[:1], [hl7(b"OUT1")], "MLLP OUT: the exact frame arrived")
    t.check(wait_until(lambda: j.log().count("dead-lettered") >= 4, 15),
            "OUT: the wrong CA, the wrong name and the missing client cert are dead-lettered")
    t.eq(https_ca2.count() + https_name.count() + mllp_ca2.count(), 0,
         "OUT: nothing was sent to a peer that failed verification")
    t.eq(j.stop(), 0, "exit 0")
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    lines = {l.split("destination=")[1].split()[0]: l for l in out.splitlines()
             if "destination=" in l}
    t.check("certificate verify failed: unable to get local issuer certificate"
            in lines.get("h-ca2", ""), "HTTP OUT, wrong CA: the dead letter says so\n" + out)
    t.check("attempts=2" in lines.get("h-ca2", ""), "HTTP OUT, wrong CA: retried first")
    t.check("certificate verify failed: hostname mismatch" in lines.get("h-name", ""),
            "HTTP OUT, wrong name (server_name localhost): the dead letter says so\n" + out)
    nocert = lines.get("h-nocert", "")
    # TLS 1.3: the client's handshake ends before the server checks its certificate, so the
    # server's alert may reach junction after its request write has already failed (EPIPE
    # under load): then the reason is the closed connection, still a failed attempt.
    t.check("TLS: tlsv13 alert certificate required" in nocert or
            "alert \"certificate required\"" in nocert or
            "does it require a client certificate?" in nocert or
            "connection closed (Broken pipe)" in nocert,
            "HTTP OUT without the client cert the peer requires: a TLS reason\n" + out)
    t.check("certificate verify failed: unable to get local issuer certificate"
            in lines.get("m-ca2", ""), "MLLP OUT, wrong CA: the dead letter says so\n" + out)
    t.check("attempts=2" in lines.get("m-ca2", ""), "MLLP OUT, wrong CA: retried first")
    t.eq(sorted(lines), ["h-ca2", "h-name", "h-nocert", "m-ca2"], "OUT: those four, no other")

    # ---- 5. the admin listener over https ----
    aport = free_port()
    j = start("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
  admin: 127.0.0.1:%d
  admin_tls: { cert: %s, key: %s }
""" % (aport, srv2, srv2_key), [aport])
    st, body, _ = curl(["--cacert", ca, "https://127.0.0.1:%d/health" % aport])
    t.eq(st, 200, "admin_tls: /health over https")
    st, _, _ = curl(["http://127.0.0.1:%d/health" % aport])
    t.eq(st, 0, "admin_tls: plain http gets no answer")
    t.check("admin: listening on https://127.0.0.1:%d" % aport in j.log(), "admin_tls: logged")
    t.eq(j.stop(), 0, "exit 0")

    # ---- 6. configuration errors ----
    def check(chan):
        cfg = os.path.join(tmp, "check.yaml")
        with open(cfg, "w") as f:
            f.write("junction: { data_dir: %s/d }\nchannels:\n  c:\n%s" % (tmp, chan))
        code, out, err = run_junction(["check", "-c", cfg])
        return code, out + err

    base_in = "    type: http\n    direction: in\n    listen: 127.0.0.1:1\n"
    code, out = check(base_in + "    tls: { cert: %s, key: %s, min_version: \"1.1\" }\n"
                      % (srv2, srv2_key))
    t.check(code == 1 and "check.yaml:7:" in out and "TLS 1.1 is refused" in out,
            "check: min_version 1.1 is an error at its line\n" + out)
    code, out = check(base_in + "    tls: { ca: %s }\n" % ca)
    t.check(code == 1 and "TLS is off" in out, "check: tls options with TLS off\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s, verify_peer: true }\n"
                      % (srv2, srv2_key))
    t.check(code == 1 and "needs ca" in out, "check: verify_peer without ca\n" + out)
    code, out = check("    type: http\n    direction: out\n    url: http://127.0.0.1:1/\n"
                      "    tls: { ca: %s }\n" % ca)
    t.check(code == 1 and "needs an https:// url" in out, "check: tls with an http url\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s, allowed_peers: [\"sha256:12\"] }"
                      "\n" % (srv2, srv2_key))
    t.check(code == 1 and "not sha256:<64 hex digits>" in out,
            "check: a bad fingerprint in allowed_peers\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s, ca: %s, allowed_peers: "
                      "[\"sha256:%s\"] }\n" % (srv2, srv2_key, ca, cli_fp))
    t.eq(code, 0, "check: a good TLS block passes\n" + out)
    missing = os.path.join(tmp, "missing.pem")
    code, out = check(base_in + "    tls: { cert: %s, key: %s }\n" % (missing, srv2_key))
    t.check(code == 1 and "check.yaml:7:10:" in out and
            ("tls: cert: cannot read %s: No such file or directory" % missing) in out,
            "check: a missing cert file is named with the reason, at the tls block\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s }\n" % (srv2, cli_key))
    t.check(code == 1 and "does not belong to cert" in out, "check: a key of another cert\n"
            + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s, key_password: wrong }\n"
                      % (srv, srv_key))
    t.check(code == 1 and ("tls: key: %s: " % srv_key) in out,
            "check: a wrong key_password names the key file\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s }\n" % (srv, srv_key))
    t.check(code == 1 and "needs key_password" in out,
            "check: an encrypted key without key_password\n" + out)
    code, out = check(base_in + "    tls: { cert: %s, key: %s, key_password: s3cret }\n"
                      % (srv, srv_key))
    t.eq(code, 0, "check: the encrypted key with its password passes\n" + out)
    t.check("s3cret" not in out, "check: the password is not printed")
    bport = free_port()
    jb = Junction("""
junction: { data_dir: @DIR@/data, admin: "off" }
channels:
  c:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
    tls: { cert: %s, key: %s }
""" % (bport, missing, srv2_key))
    cleanups.append(jb.cleanup)
    jb.start()
    t.check(wait_until(lambda: not jb.alive(), 10), "run: a missing cert stops junction")
    t.check(("tls: cert: cannot read %s: No such file or directory" % missing) in jb.log(),
            "run: the error names the file and the reason\n" + jb.log())

finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:
            print("cleanup: %r" % e)
t.finish()
