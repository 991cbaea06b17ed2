"""auth: on a websocket IN listener (issue 16's shape, docs/websocket.md#auth), against Debian's
python3-websockets: bearer and basic in the handshake's Authorization header. A connection with
no credentials, a wrong token, a wrong password or an unknown user is opened and then closed
with 1008 before any of its frames is ingested (the frames it sent are not journaled: the
channel's received count stays, nothing reaches the file OUT); each refusal is counted in
/api/v1/channels and in junction_auth_failures_total, and logged without the secret. The right
token and the right user are answered with acks and their messages delivered. mtls over wss
(verify_peer: true, auth mtls with allowed_peers): the allowed client certificate is acked, another
one the CA signed is closed with 1008 (403) and counted as method=mtls."""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile

import websockets

from jnt import Checks, Junction, admin_api, free_port, wait_until
from tlst import Pki, client_ctx
from wst import run

t = Checks("websocket_auth")
TOKEN = "tok-" + base64.b16encode(os.urandom(8)).decode()
PASSWORD = "pw-" + base64.b16encode(os.urandom(6)).decode()
HASH = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                      check=True).stdout.decode().strip()

port, aport = free_port(), free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(aport)d
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%(port)d
    path: /feed
    auth:
      - { type: bearer, tokens: [ "%(token)s" ] }
      - type: basic
        users: { alice: "%(hash)s" }
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % {"port": port, "aport": aport, "token": TOKEN, "hash": HASH}, wait_ports=[port, aport])
t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
url = "ws://127.0.0.1:%d/feed" % port


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


async def attempt(headers, frames=3):
    """Connects with headers, sends frames, returns ("acks", n) or ("closed", code)."""
    acks = 0
    try:
        async with websockets.connect(url, extra_headers=headers, open_timeout=5) as ws:
            for i in range(frames):
                await ws.send("frame %d" % i)
            for i in range(frames):
                a = json.loads(await asyncio.wait_for(ws.recv(), 5))
                acks += "ack" in a
            return ("acks", acks)
    except websockets.ConnectionClosed as e:
        return ("closed", e.code)


def received():
    code, jj = admin_api(aport, "GET", "/api/v1/channels")
    for c in jj.get("channels", []):
        if c["name"] == "ws":
            return c
    return {}


def files():
    d = j.path("out")
    return [n for n in os.listdir(d) if not n.startswith(".")] if os.path.isdir(d) else []


try:
    j.start()
    for what, hdrs in [("no credentials", {}),
                       ("a wrong token", {"Authorization": "Bearer nope"}),
                       ("a wrong password", {"Authorization": basic("alice", "nope")}),
                       ("an unknown user", {"Authorization": basic("mallory", PASSWORD)})]:
        t.eq(run(attempt(hdrs)), ("closed", 1008), "%s: closed with 1008" % what)
    row = received()
    t.eq(row.get("received"), 0, "refused: nothing journaled")
    t.eq(row.get("auth_failures"), 4, "refused: 4 auth failures counted")
    t.eq(files(), [], "refused: nothing delivered")
    m = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % aport],
                       capture_output=True).stdout.decode()
    t.check('junction_auth_failures_total{channel="ws",method="none"} 1' in m,
            "metrics: the refusal without credentials")
    t.check('junction_auth_failures_total{channel="ws",method="bearer"} 1' in m,
            "metrics: the wrong token")
    t.check('junction_auth_failures_total{channel="ws",method="basic"} 2' in m,
            "metrics: the wrong password and the unknown user")

    t.eq(run(attempt({"Authorization": "Bearer " + TOKEN})), ("acks", 3), "bearer: acked")
    t.eq(run(attempt({"Authorization": basic("alice", PASSWORD)})), ("acks", 3),
         "basic: acked")
    t.check(wait_until(lambda: len(files()) == 6, 10), "accepted: 6 messages delivered")
    t.eq(received().get("received"), 6, "accepted: 6 journaled")
    log = j.log()
    t.check("refused 401" in log, "refusals are logged")
    t.check(TOKEN not in log and PASSWORD not in log and "nope" not in log,
            "no secret in the log")
    j.stop()

    # ---- mtls: the TLS-verified client certificate, narrowed by allowed_peers ----
    tmp = tempfile.mkdtemp(prefix="jn-wsauth-")
    try:
        pki = Pki(tmp)
        ca = pki.ca("ca", "Test CA")
        srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
        c7, c7_key = pki.cert("c7", "ca", "edge-7", client=True)
        c9, c9_key = pki.cert("c9", "ca", "edge-9", client=True)
        port2, aport2 = free_port(), free_port()
        j2 = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(aport)d
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%(port)d
    tls: { cert: %(srv)s, key: %(key)s, ca: %(ca)s, verify_peer: true }
    auth:
      - { type: mtls, allowed_peers: [ edge-7 ] }
  files: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [ws], to: [files] }
""" % {"port": port2, "aport": aport2, "srv": srv, "key": srv_key, "ca": ca},
                      wait_ports=[port2, aport2])
        t.on_fail.append(lambda: print("---- mtls junction log ----\n%s" % j2.log()))
        try:
            j2.start()

            async def tls_attempt(ctx):
                try:
                    async with websockets.connect("wss://127.0.0.1:%d/" % port2, ssl=ctx,
                                                  open_timeout=5) as ws:
                        await ws.send("with a cert")
                        return ("ack", "ack" in json.loads(await asyncio.wait_for(ws.recv(), 5)))
                except websockets.ConnectionClosed as e:
                    return ("closed", e.code)

            t.eq(run(tls_attempt(client_ctx(ca, c9, c9_key))), ("closed", 1008),
                 "mtls: edge-9 (verified, not in allowed_peers) closed with 1008")
            t.eq(run(tls_attempt(client_ctx(ca, c7, c7_key))), ("ack", True),
                 "mtls: edge-7 acked")
            code, jj = admin_api(aport2, "GET", "/api/v1/channels")
            row = [c for c in jj.get("channels", []) if c["name"] == "ws"]
            t.eq(row and row[0].get("received"), 1, "mtls: only edge-7's message journaled")
            m = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % aport2],
                               capture_output=True).stdout.decode()
            t.check('junction_auth_failures_total{channel="ws",method="mtls"} 1' in m,
                    "mtls: the refusal counted as method=mtls")
        finally:
            j2.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
finally:
    j.cleanup()
t.finish()
