"""Limits on the MQTT listener (issue 16, part 6), through the engine's listener and rate limit.

1. rate_limit { rate: 4/s, burst: 2 }: one raw client sends 10 QoS 1 publishes at once. Every one
   is acknowledged on the same connection (nothing is refused, nothing closed), in the order
   sent, never faster than the bucket allows (at any moment at most burst + rate x elapsed + 1
   PUBACKs: an upper bound, so a slow machine cannot fail it). All 10 are stored once, in
   order; QoS 0 publishes behind a held one
   wait too and keep their place. junction_rate_limited_total counts the held publishes and
   junction_messages_refused_total stays 0.
2. net.max_connections_per_ip 2: a third connection from 127.0.0.1 is closed at once and
   counted in junction_connections_refused_total{reason="max_connections_per_ip"}; the first
   two still publish.
"""
import os
import re
import time

import mqttraw as mr
from jnt import Checks, Junction, curl, free_port, wait_until

t = Checks("mqtt_listener_limits")
cleanups = []

RATE, BURST = 4.0, 2


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def metrics(admin):
    code, out, _ = curl(["http://127.0.0.1:%d/metrics" % admin])
    return out.decode("utf-8", "replace") if code == 200 else ""


def stored(j, d):
    """Payloads in the file OUT folder, in message id order (ids are time-ordered); files being
    written (dot names, renamed when complete) are not counted."""
    try:
        names = sorted(n for n in os.listdir(j.path(d)) if not n.startswith("."))
    except OSError:
        return []
    out = []
    for n in names:
        with open(j.path(d, n), "rb") as f:
            out.append(f.read())
    return out


def connack(c, what):
    p = c.read()
    t.check(p is not None and p[0] == 2 and p[2][-1:] == b"\x00", what + ": CONNACK 0")


try:
    port, iport, admin = free_port(), free_port(), free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%d
  shutdown_timeout: 2s
channels:
  slow:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%d
    rate_limit: { rate: %g/s, burst: %d }
  perip:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%d
    net: { max_connections_per_ip: 2 }
  out:
    type: file
    direction: out
    dir: @DIR@/out
    fsync: false
  pout:
    type: file
    direction: out
    dir: @DIR@/pout
    fsync: false
routes:
  r: { from: [slow], to: [out] }
  p: { from: [perip], to: [pout] }
""" % (admin, port, RATE, BURST, iport), wait_ports=[port, iport, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()

    # ---- 1. rate_limit: held, not refused ----
    c = mr.Client(port)
    cleanups.append(c.close)
    c.send(mr.connect("rl-1"))
    connack(c, "rate-limited channel")
    n = 10
    t0 = time.time()
    c.send(b"".join(mr.publish("t/a", b"m%02d" % i, qos=1, pid=i + 1) for i in range(n)))
    acks, over = [], []
    while len(acks) < n:
        p = c.read(timeout=30)
        if p is None:
            break
        if p[0] != 4:  # PUBACK
            continue
        elapsed = time.time() - t0
        pid = int.from_bytes(p[2][:2], "big")
        acks.append(pid)
        if len(acks) > BURST + RATE * elapsed + 1:
            over.append((len(acks), round(elapsed, 3)))
    t.eq(acks, list(range(1, n + 1)), "every publish is acknowledged, in order, on the same "
         "connection")
    t.eq(over, [], "PUBACKs never come faster than rate_limit allows (count, seconds)")
    t.check(wait_until(lambda: len(stored(j, "out")) == n and b"" not in stored(j, "out"), 10),
            "all 10 stored")
    t.eq(stored(j, "out"), [b"m%02d" % i for i in range(n)], "stored once each, in order")

    # QoS 0 behind a held QoS 1 keeps its place.
    c.send(b"".join([mr.publish("t/a", b"q1-a", qos=1, pid=20),
                     mr.publish("t/a", b"q1-b", qos=1, pid=21),
                     mr.publish("t/a", b"q1-c", qos=1, pid=22),
                     mr.publish("t/a", b"q0-d", qos=0),
                     mr.publish("t/a", b"q1-e", qos=1, pid=23)]))
    got = []
    while len(got) < 4:
        p = c.read(timeout=30)
        if p is None:
            break
        if p[0] == 4:
            got.append(int.from_bytes(p[2][:2], "big"))
    t.eq(got, [20, 21, 22, 23], "the second batch is acknowledged in order")
    t.check(wait_until(lambda: len(stored(j, "out")) == n + 5 and b"" not in stored(j, "out"),
                       10), "the second batch stored")
    t.eq(stored(j, "out")[n:], [b"q1-a", b"q1-b", b"q1-c", b"q0-d", b"q1-e"],
         "a QoS 0 publish behind held ones keeps its place")
    c.send(mr.PINGREQ)
    p = c.read()
    t.check(p is not None and p[0] == 13, "the connection is still open (PINGRESP)")

    m = metrics(admin)
    limited = metric(m, "junction_rate_limited_total", channel="slow")
    t.check(limited is not None and limited >= n - BURST,
            "junction_rate_limited_total counts the held publishes (%r)" % limited)
    t.eq(metric(m, "junction_messages_refused_total", channel="slow"), 0.0,
         "nothing was refused")
    t.check("rate limit reached" in j.log(), "the hold is logged")

    # ---- 2. max_connections_per_ip ----
    a, b = mr.Client(iport), mr.Client(iport)
    cleanups += [a.close, b.close]
    a.send(mr.connect("ip-a"))
    connack(a, "per-IP: first")
    b.send(mr.connect("ip-b"))
    connack(b, "per-IP: second")
    third = mr.Client(iport)
    cleanups.append(third.close)
    try:
        third.send(mr.connect("ip-c"))
    except OSError:
        pass
    t.check(third.closed(10), "per-IP: the third connection is closed")
    a.send(mr.publish("t/ip", b"from-a", qos=1, pid=1))
    p = a.read()
    t.check(p is not None and p[0] == 4, "per-IP: the first still publishes")
    t.check(wait_until(lambda: stored(j, "pout") == [b"from-a"], 10), "per-IP: stored")
    m = metrics(admin)
    t.eq(metric(m, "junction_connections_refused_total", channel="perip",
                reason="max_connections_per_ip"), 1.0,
         "per-IP: counted in junction_connections_refused_total")
    for x in (a, b, c):
        x.send(mr.DISCONNECT)
    t.eq(j.stop(), 0, "exit 0")
finally:
    for f in reversed(cleanups):
        f()
t.finish()
