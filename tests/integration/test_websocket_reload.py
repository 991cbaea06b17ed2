"""WebSocket listener certificate reload (issue 16): a wss IN channel serves certificate A
(openssl s_client's fingerprint); the files are swapped for certificate B (renamed over, as
certbot does) and, once junction has seen the change, new handshakes get B while a wss
connection opened before stays open and is still acked; SIGHUP does the same for C; a bad new
certificate (garbage in the file) is refused with an error line and C stays in use."""
import asyncio
import json
import os
import re
import shutil
import signal
import tempfile

import websockets

from jnt import Checks, Junction, free_port, wait_until
from tlst import Pki, client_ctx, fingerprint, s_client
from wst import run

t = Checks("websocket_reload")
tmp = tempfile.mkdtemp(prefix="jn-wsreload-")
pki = Pki(tmp)
ca = pki.ca("ca", "Test CA")
certs = {}
for name in ("a", "b", "c"):
    certs[name] = pki.cert(name, "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
live_cert, live_key = os.path.join(tmp, "live.pem"), os.path.join(tmp, "live.key")


def install(name):
    cert, key = certs[name]
    shutil.copy(cert, live_cert + ".new")
    shutil.copy(key, live_key + ".new")
    os.rename(live_key + ".new", live_key)
    os.rename(live_cert + ".new", live_cert)


def served():
    code, out = s_client(port, "-servername", "localhost")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        return None
    p = os.path.join(tmp, "served.pem")
    with open(p, "w") as f:
        f.write(m.group(0) + "\n")
    return fingerprint(p)


install("a")
port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    tls: { cert: %s, key: %s }
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % (port, live_cert, live_key), wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
fp = {k: fingerprint(v[0]) for k, v in certs.items()}

try:
    j.start()
    t.eq(served(), fp["a"], "certificate A is served at start")

    async def session():
        """A connection opened under A, used again after each reload."""
        async with websockets.connect("wss://127.0.0.1:%d/" % port, ssl=client_ctx(ca)) as ws:
            await ws.send("before")
            acks = [json.loads(await ws.recv())]
            install("b")
            for _ in range(100):
                if "new connections get the reloaded certificate" in j.log():
                    break
                await asyncio.sleep(0.1)
            await ws.send("after the reload")
            acks.append(json.loads(await ws.recv()))
            return acks

    acks = run(session())
    t.check(all("ack" in a for a in acks),
            "a connection opened before the reload stays open and is acked after it: %r" % acks)
    t.check("certificate files changed on disk: reloaded" in j.log(),
            "the change on disk is logged")
    t.eq(served(), fp["b"], "after the files changed, new handshakes get certificate B")

    n = j.log().count("new connections get the reloaded certificate")
    shutil.copy(certs["c"][0], live_cert)
    shutil.copy(certs["c"][1], live_key)
    os.kill(j.proc.pid, signal.SIGHUP)
    t.check(wait_until(lambda: j.log().count("new connections get the reloaded certificate")
                       > n, 10), "SIGHUP: the link takes the reloaded certificate")
    t.eq(served(), fp["c"], "after SIGHUP, new handshakes get certificate C")

    with open(live_cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    t.check(wait_until(lambda: "keeping the certificates in use" in j.log(), 10),
            "a bad new certificate is refused with an error line")
    t.eq(served(), fp["c"], "after the refusal certificate C is still served")
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
finally:
    j.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
