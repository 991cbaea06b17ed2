"""The websocket channel over TLS, and its keep-alive.

wss IN: a python3-websockets client that trusts the test CA sends a frame over wss:// and gets
its ack; one that trusts another CA fails the handshake, and nothing is journaled. wss OUT: a
websockets server over TLS gets the message and acks it (junction checks the server's
certificate against tls.ca); with a CA that did not sign it the delivery fails with the
verification reason. ping_interval: a raw client that never answers pings is closed after two
intervals; a websockets client (which answers them) stays connected and is still acked."""
import asyncio
import json
import shutil
import ssl
import tempfile
import time

import websockets

from jnt import Checks, Junction, curl, free_port, wait_until
from tlst import Pki, client_ctx, server_ctx
from wst import RawWs, WsServer, run

t = Checks("websocket_tls")
cleanups = []
tmp = tempfile.mkdtemp(prefix="jn-wstls-")
cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))


def start(config, ports):
    j = Junction(config, wait_ports=ports)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    return j


try:
    pki = Pki(tmp)
    ca = pki.ca("ca", "Test CA")
    other = pki.ca("other", "Other CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")

    # ---- wss IN ----
    ws_port = free_port()
    j = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    ping_interval: 1s
    tls: { cert: %s, key: %s }
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % (ws_port, srv, srv_key), [ws_port])

    async def wss(ctx, wait=0.0):
        async with websockets.connect("wss://127.0.0.1:%d/" % ws_port, ssl=ctx) as ws:
            if wait:
                await asyncio.sleep(wait)
            await ws.send("over tls")
            return json.loads(await ws.recv())

    a = run(wss(client_ctx(ca)))
    t.check("ack" in a, "wss IN: acked over TLS (%r)" % (a,))
    try:
        run(wss(client_ctx(other)))
        refused = False
    except ssl.SSLError:
        refused = True
    t.check(refused, "wss IN: a client that does not trust the certificate fails the handshake")
    a = run(wss(client_ctx(ca), wait=3.0))
    t.check("ack" in a, "ping_interval 1s: a client that answers pings stays up for 3 s")

    # ---- keep-alive: a plain listener, a raw client that never answers pings ----
    ws2 = free_port()
    j2 = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    ping_interval: 1s
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % ws2, [ws2])
    raw = RawWs(ws2, "/", timeout=10)
    t.eq(raw.status, 101, "raw client: handshake 101")
    t0 = time.monotonic()
    pings = 0
    try:
        while True:
            op, _ = raw.read_frame()
            if op == 9:
                pings += 1
            if op == 8:
                break
    except (IOError, OSError):
        pass
    took = time.monotonic() - t0
    raw.close()
    t.check(pings >= 1, "the silent client was pinged (%d)" % pings)
    t.check(1.5 <= took <= 6.0, "and closed after about two intervals (%.1f s)" % took)
    t.eq(j2.stop(), 0, "ping: exit 0")
    t.eq(j.stop(), 0, "wss IN: exit 0")

    # ---- wss IN with verify_peer: client certificates required ----
    cli, cli_key = pki.cert("client", "ca", "edge-7", client=True)
    ws3 = free_port()
    j3 = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    tls: { cert: %s, key: %s, ca: %s, verify_peer: true }
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % (ws3, srv, srv_key, ca), [ws3])

    async def mtls(ctx, port=ws3):
        async with websockets.connect("wss://127.0.0.1:%d/" % port, ssl=ctx) as ws:
            await ws.send("with a cert")
            return json.loads(await ws.recv())

    a = run(mtls(client_ctx(ca, cli, cli_key)))
    t.check("ack" in a, "verify_peer: a client with a certificate from ca is acked")
    try:
        run(mtls(client_ctx(ca)))
        no_cert = "acked"
    except (ssl.SSLError, websockets.WebSocketException, OSError, asyncio.TimeoutError) as e:
        no_cert = "refused (%s)" % type(e).__name__
    t.check(no_cert.startswith("refused"), "verify_peer: a client without one is refused (%s)" %
            no_cert)
    t.eq(j3.stop(), 0, "mTLS IN: exit 0")

    # allowed_peers on the listener: edge-7's certificate (from ca) is not edge-9.
    cli9, cli9_key = pki.cert("client9", "ca", "edge-9", client=True)
    ws4 = free_port()
    j4 = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    tls: { cert: %s, key: %s, ca: %s, allowed_peers: [edge-9] }
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % (ws4, srv, srv_key, ca), [ws4])
    a = run(mtls(client_ctx(ca, cli9, cli9_key), ws4))
    t.check("ack" in a, "allowed_peers: edge-9 is acked")
    try:
        run(mtls(client_ctx(ca, cli, cli_key), ws4))
        other_peer = "acked"
    except (ssl.SSLError, websockets.WebSocketException, OSError, asyncio.TimeoutError) as e:
        other_peer = "refused (%s)" % type(e).__name__
    t.check(other_peer.startswith("refused"), "allowed_peers: edge-7 is refused (%s)" %
            other_peer)
    t.check("not in tls.allowed_peers" in j4.log(), "allowed_peers: the refusal is logged")
    t.eq(j4.stop(), 0, "allowed_peers IN: exit 0")

    # ---- wss OUT ----
    def out_junction(srv_port, cafile):
        http_port = free_port()
        return start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: websocket
    direction: out
    url: wss://127.0.0.1:%d/
    timeout: 2s
    reconnect_backoff: 50ms
    reconnect_max_backoff: 200ms
    tls: { ca: %s }
    retry: { attempts: 3, backoff: 50ms, max_backoff: 100ms }
routes:
  r: { from: [in], to: [out] }
""" % (http_port, srv_port, cafile), [http_port]), "http://127.0.0.1:%d/ingest" % http_port

    srv_port = free_port()
    server = WsServer(srv_port, ssl=server_ctx(srv, srv_key)).start()
    cleanups.append(server.stop)
    j, hurl = out_junction(srv_port, ca)
    status, _, _ = curl(["--data-binary", "secret stuff", hurl])
    t.eq(status, 202, "HTTP IN 202")
    t.check(wait_until(lambda: "delivered (attempt 1)" in j.log(), 10), "wss OUT: delivered")
    t.eq(server.messages, ["secret stuff"], "wss OUT: the server got it over TLS")
    t.eq(j.stop(), 0, "wss OUT: exit 0")

    j, hurl = out_junction(srv_port, ca + ", allowed_peers: [not-localhost]")
    status, _, _ = curl(["--data-binary", "not this peer", hurl])
    t.check(wait_until(lambda: "attempt 3 failed" in j.log() or "dead-letter" in j.log().lower(),
                       15), "wss OUT, allowed_peers without the server's name: fails")
    t.check("not in tls.allowed_peers" in j.log(), "wss OUT allowed_peers: logged")
    t.check("not this peer" not in server.messages, "wss OUT allowed_peers: nothing sent")
    t.eq(j.stop(), 0, "wss OUT allowed_peers: exit 0")

    j, hurl = out_junction(srv_port, ca + ", allowed_peers: [localhost]")
    status, _, _ = curl(["--data-binary", "this peer", hurl])
    t.check(wait_until(lambda: "delivered (attempt 1)" in j.log(), 10),
            "wss OUT, allowed_peers with the server's CN: delivered")
    t.eq(j.stop(), 0, "wss OUT allowed_peers ok: exit 0")

    j, hurl = out_junction(srv_port, other)
    status, _, _ = curl(["--data-binary", "not for you", hurl])
    t.check(wait_until(lambda: "dead-letter" in j.log().lower() or
                       "attempt 3 failed" in j.log(), 15),
            "wss OUT, wrong CA: the delivery fails")
    t.check("not for you" not in server.messages, "wss OUT, wrong CA: nothing sent")
    t.eq(j.stop(), 0, "wss OUT wrong CA: exit 0")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass
t.finish()
