"""The bridge (issue 19 part 2, docs/bridge.md): an edge junction (HTTP IN -> bridge OUT) and a hub
junction (bridge IN -> HTTP OUT to a Receiver) on loopback.

  smoke   one message through: the hub's copy keeps the edge's id (X-Junction-Id at the
          receiver equals the id the edge answered), has bridge-origin; the admin API shows the
          link (up, last ack) on both sides
  auth    the hub's auth: bearer refuses an edge with no token and one with a wrong token
          (closed with 1008, counted), nothing journaled; the right token links
  bad     a malformed envelope closes the link with 1002, a text frame with 1003; nothing
          journaled
  (a)     the hub stopped while 5,000 messages arrive at the edge, started again: all 5,000 at
          the hub's receiver, none twice
  (b)     a TCP proxy between them that cuts every connection every 2 s while 3,000 messages
          flow: 0 lost, none twice at the receiver (the hub's duplicate window acks resends)
  (c)     kill -9 of the edge, then of the hub, mid-stream: every message the edge acknowledged
          reaches the receiver; duplicates at the receiver are counted (the hub's HTTP OUT
          delivers at least once after its own crash), none lost
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jnt import Checks, Junction, Receiver, admin_api, free_port, wait_until  # noqa: E402
from wst import RawWs  # noqa: E402

TOKEN = "edge-token-" + hashlib.sha256(os.urandom(8)).hexdigest()[:16]

HUB = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(aport)d
  shutdown_timeout: 1s
channels:
  edges:
    type: bridge
    direction: in
    listen: 127.0.0.1:%(bport)d
    path: /bridge
    auth:
      - { type: bearer, tokens: [ "%(token)s" ] }
  sink:
    type: http
    direction: out
    url: http://127.0.0.1:%(rport)d/in
    concurrency: 32
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 500ms }
routes:
  to-sink: { from: [edges], to: [sink] }
"""

EDGE = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(aport)d
  shutdown_timeout: 1s
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
  up:
    type: bridge
    direction: out
    url: ws://127.0.0.1:%(bport)d/bridge
    token: "${file:@DIR@/token}"
    node: clinic-1
    reconnect_backoff: 50ms
    reconnect_max_backoff: 500ms
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 500ms }
routes:
  to-hub: { from: [web], to: [up] }
"""


class Pair:
    """A hub and an edge (and the hub's receiver); bport is where the edge dials (a proxy may
    sit there), hub_bport where the hub listens."""

    def __init__(self, token=TOKEN, proxy_port=None):
        self.r = Receiver().start()
        self.hub_bport = free_port()
        self.bport = proxy_port or self.hub_bport
        self.hub_aport, self.edge_aport, self.hport = free_port(), free_port(), free_port()
        self.hub = Junction(HUB % {"aport": self.hub_aport, "bport": self.hub_bport,
                                   "rport": self.r.port, "token": TOKEN},
                            wait_ports=[self.hub_bport, self.hub_aport])
        self.edge = Junction(EDGE % {"aport": self.edge_aport, "bport": self.bport,
                                     "hport": self.hport},
                             wait_ports=[self.hport, self.edge_aport])
        with open(self.edge.path("token"), "w") as f:
            f.write(token + "\n")

    def start(self):
        self.hub.start()
        self.edge.start()
        return self

    def cleanup(self):
        for j in (self.edge, self.hub):
            j.cleanup()
        self.r.stop()


def body(n):
    return ("msg-%06d " % n).encode() + b"x" * 100


def token_of(b):
    return b.split(b" ", 1)[0]


class Poster:
    """Posts numbered bodies to the edge's HTTP IN over keep-alive connections; records which
    were acknowledged (202) with their ids."""

    def __init__(self, port, threads=4):
        self.port = port
        self.threads = threads
        self.acked = {}     # n -> id
        self.lock = threading.Lock()

    def post_range(self, ns, retry_until=None):
        def worker(part):
            conn = None
            for n in part:
                while True:
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                        conn.request("POST", "/ingest", body=body(n),
                                     headers={"Content-Type": "text/plain"})
                        resp = conn.getresponse()
                        data = resp.read()
                        if resp.status == 202:
                            with self.lock:
                                self.acked[n] = json.loads(data)["id"]
                            break
                    except (OSError, http.client.HTTPException):
                        if conn is not None:
                            conn.close()
                        conn = None
                    if retry_until is None or time.monotonic() > retry_until:
                        break
                    time.sleep(0.05)
            if conn is not None:
                conn.close()
        parts = [ns[i::self.threads] for i in range(self.threads)]
        ths = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for th in ths:
            th.start()
        for th in ths:
            th.join()


def received_tokens(r):
    return [token_of(b) for b in r.bodies()]


def channel_row(aport, name):
    code, j = admin_api(aport, "GET", "/api/v1/channels")
    for c in j.get("channels", []):
        if c["name"] == name:
            return c
    return {}


def journal_count_received(aport, name):
    return channel_row(aport, name).get("received", -1)


def smoke(t):
    p = Pair().start()
    try:
        po = Poster(p.hport, threads=1)
        po.post_range([1])
        t.check(wait_until(lambda: p.r.count() >= 1, 10), "smoke: the message reached the hub")
        reqs = p.r.requests
        if t.check(len(reqs) == 1, "smoke: one copy at the receiver"):
            h = reqs[0]["headers"]
            t.eq(reqs[0]["body"], body(1), "smoke: body exact")
            t.eq(h.get("x-junction-id"), po.acked.get(1), "smoke: the hub kept the edge's id")
        row = channel_row(p.edge_aport, "up")
        link = row.get("link") or {}
        t.check(link.get("up") is True, "smoke: edge link up in /api/v1/channels: %r" % row)
        t.check(wait_until(lambda: (channel_row(p.edge_aport, "up").get("link") or {})
                           .get("last_ack") is not None, 5), "smoke: edge last_ack set")
        hrow = channel_row(p.hub_aport, "edges")
        t.eq((hrow.get("link") or {}).get("links_up"), 1, "smoke: hub shows one edge linked")
        code, _ = admin_api(p.hub_aport, "GET", "/metrics")
        import subprocess
        m = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % p.edge_aport],
                           capture_output=True).stdout.decode()
        t.check('junction_link_up{channel="up"} 1' in m, "smoke: junction_link_up metric")
        t.check(TOKEN not in p.edge.log() and TOKEN not in m, "smoke: token never logged")
        t.eq(p.edge.stop(), 0, "smoke: the edge exits 0")
        t.eq(p.hub.stop(), 0, "smoke: the hub exits 0")
    finally:
        if t.failed:
            print(p.edge.log()[-3000:])
            print(p.hub.log()[-3000:])
        p.cleanup()


def auth_and_bad(t):
    p = Pair(token="wrong-token")
    p.hub.start()
    try:
        # The edge with a wrong token: refused, retries, nothing reaches the hub's journal.
        p.edge.start()
        Poster(p.hport, threads=1).post_range([1, 2])
        t.check(wait_until(lambda: (channel_row(p.hub_aport, "edges").get("auth_failures") or 0)
                           >= 1, 10), "auth: the wrong token is refused and counted")
        # No token at all, from a raw client; then a right one with bad envelopes.
        w = RawWs(p.hub_bport, "/bridge")
        t.eq(w.status, 101, "auth: the handshake itself completes")
        t.eq(w.close_code(), 1008, "auth: no token: closed with 1008")
        w.close()
        w = RawWs(p.hub_bport, "/bridge")
        w.send_frame(2, b"\x93\x01\xa1m\x00")
        t.eq(w.close_code(), 1008, "auth: an envelope without a token: 1008, not ingested")
        w.close()
        t.eq(journal_count_received(p.hub_aport, "edges"), 0, "auth: nothing journaled")
        t.check("wrong-token" not in p.hub.log() and "wrong-token" not in p.edge.log(),
                "auth: the token is in no log")
        t.eq(p.r.count(), 0, "auth: nothing delivered")
        t.eq(p.edge.stop(), 0, "auth: the edge exits 0")
        t.eq(p.hub.stop(), 0, "auth: the hub exits 0")
    finally:
        if t.failed:
            print(p.edge.log()[-3000:])
            print(p.hub.log()[-3000:])
        p.cleanup()


class RawBridge(RawWs):
    """RawWs with the hub's bearer token in its handshake."""

    def __init__(self, port, token):
        import base64
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /bridge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Authorization: Bearer %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (port, key, token)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise IOError("closed during the handshake")
            buf += d
        head, self.rest = buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])


def bad_envelopes(t):
    p = Pair()
    p.hub.start()
    try:
        for what, op, payload, code in [
                ("not msgpack", 2, b"\xc1\xc1\xc1", 1002),
                ("version 2", 2, b"\x97\x02\xa1m" + b"\xc0" * 5, 1002),
                ("a bad id", 2, b"\x97\x01\xa1m\xa3abc\xa1e\x00\x90\xc4\x00", 1002),
                ("a text frame", 1, b"hello", 1003)]:
            w = RawBridge(p.hub_bport, TOKEN)
            t.eq(w.status, 101, "bad: %s: handshake with the token" % what)
            w.send_frame(op, payload)
            t.eq(w.close_code(), code, "bad: %s: closed with %d" % (what, code))
            w.close()
        t.eq(journal_count_received(p.hub_aport, "edges"), 0, "bad: nothing journaled")
    finally:
        if t.failed:
            print(p.hub.log()[-3000:])
        p.cleanup()


def hub_down(t):
    """(a) The hub stopped while 5,000 messages arrive at the edge; started again."""
    p = Pair().start()
    try:
        N = 5000
        po = Poster(p.hport, threads=4)
        po.post_range(list(range(1, 101)))
        t.check(wait_until(lambda: p.r.count() >= 100, 20), "(a) the first 100 through")
        p.hub.stop()
        t0 = time.monotonic()
        po.post_range(list(range(101, N + 1)))
        t.eq(len(po.acked), N, "(a) the edge acknowledged all %d while the hub was down" % N)
        t.check(wait_until(lambda: (channel_row(p.edge_aport, "up").get("link") or {})
                           .get("up") is False, 5), "(a) the edge shows its link down")
        # The hub stays down ~20 s in all.
        time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
        p.hub.start()
        t.check(wait_until(lambda: p.r.count() >= N, 60), "(a) all at the hub's receiver "
                "(got %d)" % p.r.count())
        time.sleep(0.5)
        toks = received_tokens(p.r)
        t.eq(len(set(toks)), N, "(a) every message at the hub")
        t.eq(len(toks), N, "(a) none twice")
    finally:
        if t.failed:
            print(p.edge.log()[-4000:])
            print(p.hub.log()[-4000:])
        p.cleanup()


class CutProxy:
    """A TCP proxy on a free port to target that cuts every connection every `every` seconds."""

    def __init__(self, target, every=2.0):
        self.target = target
        self.every = every
        self.port = free_port()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(16)
        self.socks = []
        self.lock = threading.Lock()
        self.stopping = False
        self.cuts = 0

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _cutter(self):
        while not self.stopping:
            time.sleep(self.every)
            with self.lock:
                socks, self.socks = self.socks, []
            if socks:
                self.cuts += 1
            for s in socks:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
                except OSError:
                    pass

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._cutter, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        self.ls.close()


def cuts(t):
    """(b) A proxy that cuts the link every 2 s: 0 lost."""
    pport = free_port()
    p = Pair(proxy_port=pport)
    proxy = CutProxy(p.hub_bport)
    proxy.port = pport
    proxy.ls.close()
    proxy.ls = socket.socket()
    proxy.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    proxy.ls.bind(("127.0.0.1", pport))
    proxy.ls.listen(16)
    proxy.start()
    p.start()
    try:
        N = 3000
        po = Poster(p.hport, threads=2)
        end = time.monotonic() + 12
        n = 0
        # Spread the posts over ~12 s so several cuts land mid-stream.
        while n < N and time.monotonic() < end + 20:
            po.post_range(list(range(n + 1, n + 251)))
            n += 250
            time.sleep(0.8)
        t.eq(len(po.acked), N, "(b) the edge acknowledged all %d" % N)
        t.check(wait_until(lambda: len(set(received_tokens(p.r))) >= N, 40),
                "(b) all at the hub's receiver (got %d)" % len(set(received_tokens(p.r))))
        time.sleep(0.5)
        toks = received_tokens(p.r)
        t.eq(len(set(toks)), N, "(b) 0 lost")
        t.eq(len(toks), N, "(b) none twice at the receiver (resends acked from the window)")
        t.check(proxy.cuts >= 3, "(b) the proxy cut the link mid-stream (%d cuts)" % proxy.cuts)
        hrow = channel_row(p.hub_aport, "edges")
        print("(b) cuts %d, hub duplicates acked again %s, edge retried %s" % (
            proxy.cuts, (hrow.get("link") or {}).get("duplicates"),
            channel_row(p.edge_aport, "up").get("retried")))
    finally:
        proxy.stop()
        if t.failed:
            print(p.edge.log()[-4000:])
            print(p.hub.log()[-4000:])
        p.cleanup()


def kills(t):
    """(c) kill -9 of the edge, then of the hub, mid-stream."""
    p = Pair().start()
    try:
        N = 4000
        po = Poster(p.hport, threads=2)
        th = threading.Thread(target=po.post_range, args=(list(range(1, N + 1)),),
                              kwargs={"retry_until": time.monotonic() + 60})
        th.start()
        wait_until(lambda: p.r.count() >= 300, 20)
        at_edge_kill = (len(po.acked), p.r.count())
        p.edge.proc.send_signal(signal.SIGKILL)
        p.edge.proc.wait()
        p.edge.log_f.close()
        p.edge.start()
        wait_until(lambda: p.r.count() >= 1500, 30)
        at_hub_kill = (len(po.acked), p.r.count())
        p.hub.proc.send_signal(signal.SIGKILL)
        p.hub.proc.wait()
        p.hub.log_f.close()
        p.hub.start()
        th.join()
        acked = set(po.acked)
        want = {("msg-%06d" % n).encode() for n in acked}
        t.check(len(acked) >= N * 0.9, "(c) most posts acknowledged (%d of %d)" % (len(acked), N))
        t.check(wait_until(lambda: want <= set(received_tokens(p.r)), 60),
                "(c) every acknowledged message at the hub's receiver (missing %d)" %
                len(want - set(received_tokens(p.r))))
        toks = received_tokens(p.r)
        dups = len(toks) - len(set(toks))
        print("(c) edge killed at %d acked / %d received, hub killed at %d / %d; acknowledged "
              "%d, received %d, distinct %d, duplicates %d" %
              (at_edge_kill + at_hub_kill + (len(acked), len(toks), len(set(toks)), dups)))
        t.check(at_edge_kill[0] < N and at_hub_kill[0] < N,
                "(c) both kills landed while messages were still arriving")
        t.eq(len(want - set(toks)), 0, "(c) 0 acknowledged lost")
    finally:
        if t.failed:
            print(p.edge.log()[-4000:])
            print(p.hub.log()[-4000:])
        p.cleanup()


def main():
    t = Checks("test_bridge")
    which = sys.argv[1:] or ["smoke", "auth", "bad", "a", "b", "c"]
    for name, fn in [("smoke", smoke), ("auth", auth_and_bad), ("bad", bad_envelopes),
                     ("a", hub_down), ("b", cuts), ("c", kills)]:
        if name in which:
            t0 = time.monotonic()
            fn(t)
            print("%s: %.1f s" % (name, time.monotonic() - t0), flush=True)
    t.finish()


if __name__ == "__main__":
    main()
