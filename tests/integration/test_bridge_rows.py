"""The bridge's per-edge rows (issue 19 item 3, docs/bridge.md#monitoring): an edge (HTTP IN ->
bridge OUT, node clinic-1) and a hub (bridge IN -> HTTP OUT to a Receiver) on loopback.

  rows     5 messages through: the hub's row of clinic-1 in /api/v1/channels (link.edges) is
           up, received 5, duplicates 0, last message and last ack set, and the status the edge
           reports (queued 0, in flight 0); the edge's own link shows up, queued, in flight and
           last ack; /metrics has junction_link_edge_* with an edge label
  queued   the edge's OUT paused by the operator while 3 messages arrive: the hub's row shows
           the edge's queue depth 3 as reported; resumed: 0 again and received 8
  dups     a raw link (an edge without status frames, as an older one) sends one envelope
           twice: its row has received 1, duplicates 1, queued null; one copy at the receiver
  down     the edge stopped: its row on the hub turns down (since moves), the hub's links_up 0,
           junction_link_edge_up 0; the row is kept
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jnt import Checks, admin_api, curl, wait_until  # noqa: E402
from test_bridge import TOKEN, Pair, Poster, RawBridge, body, channel_row  # noqa: E402

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id():
    """A junction message id (a ULID: 48-bit ms time, 80 random bits, Crockford base32)."""
    v = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(v >> (5 * i)) & 31] for i in reversed(range(26)))


def mp_str(s):
    b = s.encode()
    return (bytes([0xA0 | len(b)]) if len(b) < 32 else bytes([0xD9, len(b)])) + b


def envelope(mid, origin, payload):
    """[1, "m", id, origin, first_received_us, [], payload:bin] in msgpack."""
    return (bytes([0x97, 0x01]) + mp_str("m") + mp_str(mid) + mp_str(origin) +
            b"\xd3" + struct.pack("!q", int(time.time() * 1e6)) + b"\x90" +
            bytes([0xC4, len(payload)]) + payload)


def edge_row(aport, node):
    link = channel_row(aport, "edges").get("link") or {}
    for e in link.get("edges") or []:
        if e.get("node") == node:
            return e
    return {}


def metrics(aport):
    code, out, _ = curl(["-s", "http://127.0.0.1:%d/metrics" % aport])
    return out.decode("utf-8", "replace")


def rows(t, p):
    po = Poster(p.hport, threads=1)
    po.post_range(list(range(1, 6)))
    t.eq(len(po.acked), 5, "rows: 5 messages acknowledged by the edge")
    t.check(wait_until(lambda: p.r.count() >= 5, 15), "rows: 5 at the hub's receiver")
    ok = wait_until(lambda: edge_row(p.hub_aport, "clinic-1").get("received") == 5 and
                    edge_row(p.hub_aport, "clinic-1").get("queued") == 0 and
                    edge_row(p.hub_aport, "clinic-1").get("in_flight") == 0, 10)
    r = edge_row(p.hub_aport, "clinic-1")
    t.check(ok, "rows: the hub's row of clinic-1 settles at received 5, queued 0: %r" % r)
    t.eq(r.get("up"), True, "rows: clinic-1 up")
    t.eq(r.get("duplicates"), 0, "rows: no duplicates")
    t.check(r.get("since") and r.get("last_message") and r.get("last_ack") and
            r.get("status_time"), "rows: since, last message, last ack, status time set")
    t.check(str(r.get("peer", "")).startswith("127.0.0.1:"), "rows: peer is the edge's address")
    link = channel_row(p.edge_aport, "up").get("link") or {}
    t.eq(link.get("up"), True, "rows: the edge's link up")
    t.eq(link.get("queued"), 0, "rows: the edge's link shows its queue depth")
    t.eq(link.get("in_flight"), 0, "rows: the edge's link shows in flight")
    t.check(link.get("last_ack") and link.get("since"), "rows: the edge's last ack and since")
    m = metrics(p.hub_aport)
    t.check('junction_link_edge_up{channel="edges",edge="clinic-1"} 1' in m,
            "rows: junction_link_edge_up of clinic-1 is 1")
    t.check('junction_link_edge_received_total{channel="edges",edge="clinic-1"} 5' in m,
            "rows: junction_link_edge_received_total of clinic-1 is 5")
    t.check('junction_link_edge_queued{channel="edges",edge="clinic-1"} 0' in m,
            "rows: junction_link_edge_queued of clinic-1 is 0")


def queued(t, p):
    code, _ = admin_api(p.edge_aport, "POST", "/api/v1/channels/up/pause")
    t.eq(code, 200, "queued: the edge's OUT paused")
    po = Poster(p.hport, threads=1)
    po.post_range(list(range(6, 9)))
    t.eq(len(po.acked), 3, "queued: 3 more acknowledged by the edge")
    t.check(wait_until(lambda: edge_row(p.hub_aport, "clinic-1").get("queued") == 3, 10),
            "queued: the hub's row shows the edge's queue depth 3: %r"
            % edge_row(p.hub_aport, "clinic-1"))
    t.eq(edge_row(p.hub_aport, "clinic-1").get("received"), 5, "queued: nothing more received")
    code, _ = admin_api(p.edge_aport, "POST", "/api/v1/channels/up/resume")
    t.eq(code, 200, "queued: resumed")
    t.check(wait_until(lambda: edge_row(p.hub_aport, "clinic-1").get("received") == 8 and
                       edge_row(p.hub_aport, "clinic-1").get("queued") == 0, 10),
            "queued: drained: received 8, queued 0: %r" % edge_row(p.hub_aport, "clinic-1"))


def dups(t, p):
    mid = new_id()
    env = envelope(mid, "raw-7", b"raw payload")
    w = RawBridge(p.hub_bport, TOKEN)
    t.eq(w.status, 101, "dups: raw link handshake")
    acks = 0
    try:
        for _ in range(2):
            w.send_frame(2, env)
            op, payload = w.read_frame()   # one ack frame per envelope: [1, "a", [id]]
            acks += op == 2 and mid.encode() in payload and b"\xa1a" in payload
    finally:
        w.close()
    t.eq(acks, 2, "dups: both copies acked by id")
    r = edge_row(p.hub_aport, "raw-7")
    t.eq((r.get("received"), r.get("duplicates")), (1, 1), "dups: received 1, duplicates 1: %r"
         % r)
    t.check(r.get("queued", 0) is None and r.get("in_flight", 0) is None,
            "dups: no status from it: queued and in flight null")
    t.check(wait_until(lambda: b"raw payload" in p.r.bodies(), 10), "dups: the copy delivered")
    time.sleep(0.3)
    t.eq(p.r.bodies().count(b"raw payload"), 1, "dups: one copy at the receiver")
    t.check(wait_until(lambda: edge_row(p.hub_aport, "raw-7").get("up") is False, 5),
            "dups: the raw link's row down once it closed")


def down(t, p):
    before = edge_row(p.hub_aport, "clinic-1").get("since")
    t.eq(p.edge.stop(), 0, "down: the edge exits 0")
    t.check(wait_until(lambda: edge_row(p.hub_aport, "clinic-1").get("up") is False, 10),
            "down: clinic-1's row is down: %r" % edge_row(p.hub_aport, "clinic-1"))
    r = edge_row(p.hub_aport, "clinic-1")
    t.check(r.get("since") and r.get("since") != before, "down: since moved (%r -> %r)"
            % (before, r.get("since")))
    t.eq(r.get("received"), 8, "down: the row keeps its counts")
    t.eq((channel_row(p.hub_aport, "edges").get("link") or {}).get("links_up"), 0,
         "down: the hub has no link up")
    t.check('junction_link_edge_up{channel="edges",edge="clinic-1"} 0' in metrics(p.hub_aport),
            "down: junction_link_edge_up of clinic-1 is 0")


def main():
    t = Checks("test_bridge_rows")
    p = Pair().start()
    try:
        for name, fn in [("rows", rows), ("queued", queued), ("dups", dups), ("down", down)]:
            t0 = time.monotonic()
            fn(t, p)
            print("%s: %.1f s" % (name, time.monotonic() - t0), flush=True)
    finally:
        if t.failed:
            print(p.edge.log()[-4000:])
            print(p.hub.log()[-4000:])
        p.cleanup()
    t.finish()


if __name__ == "__main__":
    main()
