"""The websocket channel (issue 19, part 1) against Debian's python3-websockets.

IN: a client pipelines text and binary frames and gets one {"ack":"<id>"} per frame, in order;
each message lands in a file OUT with its exact bytes, and an HTTP OUT shows its headers
(ws-peer, ws-path, ws-opcode, Origin, User-Agent). A frame over max_message closes with 1009
and a text frame that is not UTF-8 (sent raw) with 1007; neither is journaled. A handshake for
another path is refused. A destination that is down and full (max_queued, when_full: block)
makes the IN answer {"nack":...,"retry_after":1}.
OUT: a websockets server gets every message and acks it; a server that stays silent for the
first frame makes it time out, retried on a new connection, then delivered; a server restart
is reconnected to and delivery resumes."""
import asyncio
import json
import os
import time

import websockets

from jnt import Checks, Junction, Receiver, curl, free_port, wait_until
from wst import RawWs, WsServer, run

t = Checks("websocket")
cleanups = []


def start(config, ports):
    j = Junction(config, wait_ports=ports)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    return j


def files(d):
    """The finished files (the file OUT writes a dot-file first, then renames it)."""
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []


try:
    # ---- IN ----
    ws_port, rcv_port = free_port(), free_port()
    rcv = Receiver().start()
    cleanups.append(rcv.stop)
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
    path: /feed
    max_message: 1KiB
  files:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.ws-opcode}-{id}.msg"
  hook:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    headers:
      X-Peer: "{header.ws-peer}"
      X-Path: "{header.ws-path}"
      X-Opcode: "{header.ws-opcode}"
      X-Origin: "{header.Origin}"
      X-UA: "{header.User-Agent}"
routes:
  r: { from: [ws], to: [files, hook] }
""" % (ws_port, rcv.port), [ws_port])
    outdir = j.path("out")
    url = "ws://127.0.0.1:%d/feed" % ws_port
    N = 20
    sent = [("text %d é" % i) if i % 2 == 0 else bytes([i, 0, 255, 10]) * 3 for i in range(N)]

    async def pipeline():
        async with websockets.connect(url, origin="http://dash.example",
                                      user_agent_header="wstest/1.0") as ws:
            local = "%s:%d" % ws.local_address[:2]
            for m in sent:
                await ws.send(m)
            acks = [json.loads(await ws.recv()) for _ in sent]
            return local, acks

    local, acks = run(pipeline())
    ids = [a.get("ack") for a in acks]
    t.eq(len(acks), N, "one ack frame per message")
    t.check(all(isinstance(i, str) and len(i) == 26 for i in ids), "each ack carries an id")
    t.eq(len(set(ids)), N, "the ids are distinct")
    t.check(wait_until(lambda: len(files(outdir)) == N, 10), "every message lands in the file OUT")
    got = {}
    for name in files(outdir):
        op, mid = name[:-4].split("-", 1)
        with open(os.path.join(outdir, name), "rb") as f:
            got[mid] = (op, f.read())
    want = {ids[i]: ("text" if isinstance(m, str) else "binary",
                     m.encode() if isinstance(m, str) else m) for i, m in enumerate(sent)}
    t.eq(got, want, "acks are in order: each id names its message, exact bytes and opcode")
    t.check(wait_until(lambda: rcv.count() == N, 10), "the HTTP OUT gets them too")
    h = rcv.requests[0]["headers"]
    t.eq((h.get("x-peer"), h.get("x-path"), h.get("x-origin"), h.get("x-ua")),
         (local, "/feed", "http://dash.example", "wstest/1.0"),
         "headers: ws-peer (ip:port), ws-path, Origin, User-Agent")
    t.eq(sorted(r["headers"].get("x-opcode") for r in rcv.requests),
         sorted("text" if isinstance(m, str) else "binary" for m in sent), "header ws-opcode")

    # Oversize: close 1009, nothing journaled.
    async def oversize():
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(b"x" * 1025)
            try:
                await ws.recv()
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
            return "no close"

    t.eq(run(oversize()), 1009, "a message over max_message: close 1009")

    # Fragments are joined before the limit applies: 3 x 400 bytes is over 1 KiB too.
    async def fragmented():
        async with websockets.connect(url) as ws:
            await ws.send([b"y" * 400, b"y" * 400, b"y" * 400])
            try:
                await ws.recv()
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
            return "no close"

    t.eq(run(fragmented()), 1009, "fragments over max_message: close 1009")

    async def fragmented_ok():
        async with websockets.connect(url) as ws:
            await ws.send(["ab", "cd", "ef"])
            return json.loads(await ws.recv())

    a = run(fragmented_ok())
    t.check("ack" in a, "a fragmented message within the limit is joined and acked")
    t.check(wait_until(lambda: ("text-%s.msg" % a.get("ack")) in files(outdir), 5),
            "the joined message lands whole")
    with open(os.path.join(outdir, "text-%s.msg" % a.get("ack")), "rb") as f:
        t.eq(f.read(), b"abcdef", "joined bytes")

    # Bad UTF-8 in a text frame (raw: the library will not send it): close 1007.
    raw = RawWs(ws_port, "/feed")
    t.eq(raw.status, 101, "raw client: handshake 101")
    raw.send_frame(0x1, b"ok \xff\xfe bad")
    t.eq(raw.close_code(), 1007, "text that is not UTF-8: close 1007")
    raw.close()
    # An unmasked client frame is a protocol error (RFC 6455 5.1), but libwebsockets 4.1 does
    # not enforce the mask bit and takes it (docs/websocket.md, known limits): recorded here, so
    # a newer lws that closes with 1002 shows up, and counted below.
    raw = RawWs(ws_port, "/feed")
    raw.send_frame(0x1, b"unmasked", masked=False)
    op, p = raw.read_frame()
    unmasked_taken = op == 1 and b'"ack"' in p
    if not unmasked_taken:
        t.eq(op, 8, "an unmasked frame: either taken (lws 4.1) or closed")
    print("unmasked client frame: %s" % ("taken and acked (lws 4.1)" if unmasked_taken
                                         else "closed"))
    raw.close()
    # A frame after the client's close frame is not taken.
    raw = RawWs(ws_port, "/feed")
    raw.send_frame(0x8, b"\x03\xe8bye")
    try:
        raw.send_frame(0x1, b"after close")
    except OSError:
        pass
    t.eq(raw.close_code(), 1000, "the client's close is answered 1000")
    raw.close()
    time.sleep(0.3)
    t.eq(len(files(outdir)), N + 1 + (1 if unmasked_taken else 0),
         "neither the oversize, the bad text nor the frame after close was journaled")
    t.check("message over max_message" in j.log() and "is not UTF-8" in j.log(),
            "both refusals are logged")

    # Another path: the handshake is refused.
    try:
        raw = RawWs(ws_port, "/other")
        refused = raw.status != 101
        raw.close()
    except IOError:
        refused = True  # lws closes the connection instead of upgrading it
    t.check(refused, "a handshake for another path is refused")
    t.eq(j.stop(), 0, "IN: exit 0")

    # ---- IN: flow control refusal -> nack ----
    ws_port, down, quiet_port = free_port(), free_port(), free_port()
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
    max_connections: 2
  quiet:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    ack: none
  files:
    type: file
    direction: out
    dir: @DIR@/out
  down:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    retry: { attempts: 100000, backoff: 1s, max_backoff: 1s }
    max_queued: { messages: 3 }
    when_full: block
routes:
  r: { from: [ws], to: [down] }
  q: { from: [quiet], to: [files] }
""" % (ws_port, quiet_port, down), [ws_port, quiet_port])

    async def flood():
        async with websockets.connect("ws://127.0.0.1:%d/" % ws_port) as ws:
            out = []
            for i in range(8):
                await ws.send("m%d" % i)
                out.append(json.loads(await ws.recv()))
            return out

    answers = run(flood())
    n_ack = sum(1 for a in answers if "ack" in a)
    nacks = [a for a in answers if "nack" in a]
    t.eq(n_ack, 3, "a destination full at 3: three acks")
    t.eq(len(nacks), 5, "then nack frames")
    t.check(all(a.get("retry_after") == 1 and "full" in a["nack"] for a in nacks),
            "a nack says why and retry_after: 1 (%s)" % (nacks[:1],))
    print("nack: %s" % json.dumps(nacks[0]) if nacks else "no nack")

    # max_connections: 2 -> a third handshake is refused while two are open.
    async def three():
        u = "ws://127.0.0.1:%d/" % ws_port
        async with websockets.connect(u) as a, websockets.connect(u) as b:
            try:
                async with websockets.connect(u, open_timeout=3) as c:
                    await c.send("third")
                    await c.recv()
                    third = "open"
            except (websockets.WebSocketException, OSError, asyncio.TimeoutError) as e:
                third = "refused (%s)" % type(e).__name__
            await a.ping()
            await b.ping()
            return third
    third = run(three())
    t.check(third.startswith("refused"), "max_connections 2: the third is refused (%s)" % third)
    t.check("max_connections (2) reached" in j.log(), "max_connections: logged")

    # ack: none -> the message lands, nothing is answered.
    async def quiet():
        async with websockets.connect("ws://127.0.0.1:%d/" % quiet_port) as ws:
            await ws.send("no answer wanted")
            try:
                return await asyncio.wait_for(ws.recv(), 1.0)
            except asyncio.TimeoutError:
                return None
    t.eq(run(quiet()), None, "ack: none: no frame comes back")
    t.check(wait_until(lambda: len(files(j.path("out"))) == 1, 5), "ack: none: the message lands")
    t.eq(j.stop(), 0, "flow: exit 0")

    # ---- OUT ----
    def out_junction(srv_port, extra=""):
        http_port = free_port()
        j = start("""
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
    url: ws://127.0.0.1:%d/in
    timeout: 700ms
    reconnect_backoff: 50ms
    reconnect_max_backoff: 200ms
    concurrency: 4
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
%s
routes:
  r: { from: [in], to: [out] }
""" % (http_port, srv_port, extra), [http_port])
        return j, "http://127.0.0.1:%d/ingest" % http_port

    def post(j, url, body):
        path = j.path("body-%d" % time.monotonic_ns())
        with open(path, "wb") as f:
            f.write(body)
        status, _, _ = curl(["--data-binary", "@" + path, url])
        t.eq(status, 202, "HTTP IN answers 202")

    srv_port = free_port()
    srv = WsServer(srv_port).start()
    cleanups.append(srv.stop)
    j, hurl = out_junction(srv_port)
    bodies = [b"hello %d" % i for i in range(5)] + [b"\x00\xffbin"]
    for b in bodies:
        post(j, hurl, b)
    t.check(wait_until(lambda: j.log().count("delivered (attempt 1)") == len(bodies), 10),
            "OUT: every message delivered on the first attempt once acked")
    t.eq(sorted(m if isinstance(m, bytes) else m.encode() for m in srv.messages), sorted(bodies),
         "OUT: the server gets the exact payloads")
    t.check(any(isinstance(m, bytes) for m in srv.messages) and
            any(isinstance(m, str) for m in srv.messages), "OUT: text and binary frames")
    t.eq(srv.conns, 1, "OUT: one kept-open connection")

    # Server restart: reconnect, delivery resumes.
    srv.stop()
    post(j, hurl, b"while down")
    time.sleep(0.5)
    srv = WsServer(srv_port).start()
    cleanups.append(srv.stop)
    t.check(wait_until(lambda: b"while down" in [m if isinstance(m, bytes) else m.encode()
                                                 for m in srv.messages], 15),
            "OUT: after a server restart it reconnects and delivers")
    t.check(wait_until(lambda: j.log().count("delivered") >= len(bodies) + 1, 5),
            "OUT: counted delivered")
    t.eq(j.stop(), 0, "OUT: exit 0")
    srv.stop()

    # A server that never acks the first frame: timeout -> retried -> delivered when acked.
    srv_port = free_port()
    srv = WsServer(srv_port, ignore=lambda n: n == 0).start()
    cleanups.append(srv.stop)
    j, hurl = out_junction(srv_port, "    ordered: fifo\n")
    post(j, hurl, b"late ack")
    t.check(wait_until(lambda: "delivered after retries (attempt 2)" in j.log(), 10),
            "OUT: no ack within timeout -> retried, delivered on attempt 2")
    t.check("no ack within 700 ms" in j.log(), "OUT: the timeout is the reason")
    t.eq(srv.messages, ["late ack", "late ack"], "OUT: sent twice")
    t.eq(srv.conns, 2, "OUT: the retry went on a new connection")
    t.eq(j.stop(), 0, "OUT late: exit 0")

    # await_ack: false: written counts, the server's silence does not matter.
    srv.stop()
    srv = WsServer(srv_port, ignore=lambda n: True).start()
    cleanups.append(srv.stop)
    j, hurl = out_junction(srv_port, "    await_ack: false\n")
    post(j, hurl, b"fire and forget")
    t.check(wait_until(lambda: "delivered (attempt 1)" in j.log(), 10),
            "OUT await_ack: false: delivered once written")
    t.eq(j.stop(), 0, "OUT no-ack: exit 0")

    # junction OUT -> junction IN: IN's acks (its own ids, in order) are what OUT waits for.
    b_port = free_port()
    b = start("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
    path: /in
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [ws], to: [files] }
""" % b_port, [b_port])
    j, hurl = out_junction(b_port)
    for i in range(6):
        post(j, hurl, b"hop %d" % i)
    t.check(wait_until(lambda: j.log().count("delivered (attempt 1)") == 6, 10),
            "junction -> junction: all delivered on the first attempt (acked by the IN)")
    # B acks at its commit; its file OUT writes a moment later.
    t.check(wait_until(lambda: len(files(b.path("out"))) == 6, 10), "junction -> junction: 6 files")
    got = []
    for name in files(b.path("out")):
        with open(os.path.join(b.path("out"), name), "rb") as f:
            got.append(f.read())
    t.eq(sorted(got), sorted(b"hop %d" % i for i in range(6)), "junction -> junction: bytes")
    t.eq(j.stop(), 0, "A: exit 0")
    t.eq(b.stop(), 0, "B: exit 0")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass
t.finish()
