"""Handshake and idle timeouts on every TLS listener junction runs itself (issue 16, part 6):
MLLP IN and the MQTT listener (net.handshake_timeout, the engine's listener) and HTTPS IN
(request_timeout: evhttp drives its handshake, and the first request's deadline runs from the
accept).

For each listener, at once (threads):
- a client that connects and sends nothing is disconnected;
- a client that trickles a real ClientHello a byte every 0.2 s (the whole hello would take well
  over a minute) is disconnected all the same: the handshake's limit is a deadline from the
  accept, not an idle timeout that every byte resets;
- a client that completes the handshake and then stays silent is disconnected (MLLP
  idle_timeout, MQTT connect_timeout, HTTP request_timeout);
- a normal client is still served afterwards.
The engine's listeners log "no TLS handshake within 1000 ms" for the first two.
"""
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time

import mqttraw as mr
from jnt import Checks, Junction, curl, free_port, wait_until
from tlst import Pki, client_ctx, tls_mllp_send

t = Checks("tls_timeouts")
cleanups = []
LIMIT = 40.0  # seconds a test client waits to be disconnected (the timeouts below are 1-2 s)


def client_hello():
    """The bytes of a real TLS ClientHello (python's ssl on memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def closed_within(sock, limit, trickle=b""):
    """Sends trickle a byte every 0.2 s (nothing if empty) until the peer closes; True when it
    closed within limit seconds."""
    end = time.time() + limit
    i = 0
    sock.settimeout(0.2)
    while time.time() < end:
        if i < len(trickle):
            try:
                sock.send(trickle[i:i + 1])
            except OSError:
                return True
            i += 1
        try:
            d = sock.recv(65536)
            if not d:
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def tls_connect(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    return s


results = {}


def probe(name, fn):
    try:
        results[name] = fn()
    except Exception as e:  # reported as a failed check
        results[name] = "error: %r" % e


try:
    tmp = tempfile.mkdtemp(prefix="jn-tls-to-")
    cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    pki = Pki(tmp)
    ca = pki.ca("ca", "Timeout CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    mport, qport, hport = free_port(), free_port(), free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
channels:
  lab:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(m)d
    idle_timeout: 1s
    net: { handshake_timeout: 1s }
    tls: { cert: %(c)s, key: %(k)s }
  dev:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%(q)d
    connect_timeout: 1s
    net: { handshake_timeout: 1s }
    tls: { cert: %(c)s, key: %(k)s }
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(h)d
    path: /in
    request_timeout: 1s
    tls: { cert: %(c)s, key: %(k)s }
  out:
    type: file
    direction: out
    dir: @DIR@/out
    fsync: false
routes:
  r: { from: [lab, dev, web], to: [out] }
""" % {"m": mport, "q": qport, "h": hport, "c": srv, "k": srv_key}, wait_ports=[mport, qport, hport])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    hello = client_hello()
    t.check(len(hello) > 100 and hello[0] == 0x16, "a ClientHello to trickle (%d bytes)" % len(hello))
    ctx = client_ctx(ca)

    probes = []
    for name, port in (("mllp", mport), ("mqtt", qport), ("https", hport)):
        probes.append(("%s silent" % name, lambda p=port: closed_within(
            socket.create_connection(("127.0.0.1", p), timeout=5), LIMIT)))
        probes.append(("%s trickle" % name, lambda p=port: closed_within(
            socket.create_connection(("127.0.0.1", p), timeout=5), LIMIT, hello)))
        probes.append(("%s idle after the handshake" % name, lambda p=port: closed_within(
            tls_connect(p, ctx), LIMIT)))
    threads = [threading.Thread(target=probe, args=pr) for pr in probes]
    for th in threads:
        th.start()
    for th in threads:
        th.join(LIMIT + 20)
    for name, _ in probes:
        t.eq(results.get(name), True, "%s: disconnected by junction" % name)

    log = j.log()
    t.check(log.count("no TLS handshake within 1000 ms") >= 4,
            "the engine's listeners log the handshakes cut off (MLLP and MQTT, silent and "
            "trickling)")

    # Still serving.
    msg = b"MSH|^~\\&|LAB|X|JN|Y|20240301101500||ADT^A08^ADT_A01|TO1|P|2.5\rPID|1||42\r"
    ack = tls_mllp_send(mport, msg, ctx)
    t.check(ack is not None and b"MSA|AA|TO1" in ack, "MLLP/TLS still serves")
    st, _, _ = curl(["--cacert", ca, "--data-binary", "x", "https://127.0.0.1:%d/in" % hport])
    t.eq(st, 202, "HTTPS IN still serves")
    c = tls_connect(qport, ctx)
    c.sendall(mr.connect("after"))
    c.settimeout(5)
    t.check(c.recv(4)[:1] == b"\x20", "the MQTT listener still serves (CONNACK)")
    c.close()
    t.eq(j.stop(), 0, "exit 0")
finally:
    for f in reversed(cleanups):
        f()
t.finish()
