"""Crash test for the MQTT listener (channels/mqtt_listen.c): a raw-socket publisher (a device,
tests/integration/mqttraw.py) floods numbered QoS 1 messages (then QoS 2) straight to junction,
up to 64 in flight, and records each one junction acknowledged (PUBACK; PUBREC for QoS 2);
junction (MQTT listener -> HTTP OUT to a receiver) is killed with SIGKILL at random moments
and restarted on the same data_dir; the publisher reconnects and goes on with new messages.

Asserted: every acknowledged message reaches the receiver (the acknowledgement is written after
the commit), no body is changed, junction never dies on its own. Messages sent but not
acknowledged when a kill came may or may not arrive; duplicates are counted and printed.
Seed: JN_CRASH_SEED (printed)."""
import os
import random
import socket
import sys
import threading
import time

from crashlib import Broker, Checks, Receiver, SANITIZER_RX, crash_loop, free_port, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import mqttraw as mr  # noqa: E402


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = set()
        self.sent = 0
        self.delivered = {}
        self.corrupt = []
        self.last_delivery = None

    @staticmethod
    def body(n):
        return b"crash-%d;%s" % (n, b"y" * (n % 41))

    def note_delivery(self, body, msg_id):
        with self.lock:
            self.last_delivery = time.monotonic()
            try:
                n = int(body[6:body.index(b";")])
            except ValueError:
                self.corrupt.append(body[:60])
                return None
            if body != self.body(n):
                self.corrupt.append(body[:60])
            self.delivered[n] = self.delivered.get(n, 0) + 1
            return n


class Device(threading.Thread):
    """Publishes 1..total at QoS qos, 64 in flight; reconnects after each drop."""

    def __init__(self, port, ledger, qos, total):
        super().__init__(daemon=True)
        self.port, self.ledger, self.qos, self.total = port, ledger, qos, total
        self.connects = 0
        self.done = False

    def run(self):
        n = 1
        while n <= self.total:
            try:
                c = mr.Client(self.port, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                c.send(mr.connect("crash-dev", 4, keepalive=30))
                a = c.read(5)
                if a is None or a[0] != 2 or a[2][1] != 0:
                    continue
                self.connects += 1
                inflight = {}
                pid = 0
                while n <= self.total or inflight:
                    while n <= self.total and len(inflight) < 64:
                        pid = pid % 65535 + 1
                        inflight[pid] = n
                        with self.ledger.lock:
                            self.ledger.sent = max(self.ledger.sent, n)
                        c.send(mr.publish("dev/crash", self.ledger.body(n), qos=self.qos,
                                          pid=pid))
                        n += 1
                    a = c.read(10)
                    if a is None:
                        break
                    if a[0] in (4, 5):  # PUBACK, PUBREC: committed
                        p = int.from_bytes(a[2][:2], "big")
                        if p in inflight:
                            with self.ledger.lock:
                                self.ledger.acked.add(inflight.pop(p))
                        if a[0] == 5:
                            c.send(mr.pubrel(p))
            except (OSError, TimeoutError, socket.timeout):
                pass
            finally:
                c.close()
        self.done = True


def run(t, rng, qos, total, kills):
    what = "qos %d" % qos
    ledger = Ledger()
    rcv = Receiver(ledger).start()
    port = free_port()
    broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
channels:
  devices:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    concurrency: 8
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 200ms }
routes:
  r: { from: [devices], to: [out] }
""" % (port, rcv.port), wait_ports=(port,))
    failed_before = t.failed
    try:
        broker.start()
        dev = Device(port, ledger, qos, total)
        dev.start()
        delays = crash_loop(broker, rng, kills, lo=0.3, hi=1.2,
                            note=lambda s: print("%s: %s" % (what, s), flush=True))
        dev.join(120)
        t.check(dev.done, "%s: the device sent all %d" % (what, total))
        wait_until(lambda: ledger.acked <= set(ledger.delivered), 60)
        with ledger.lock:
            lost = sorted(ledger.acked - set(ledger.delivered))
            dups = sum(v - 1 for v in ledger.delivered.values())
            print("%s: sent %d, acknowledged %d, delivered %d unique, LOST %d %s, duplicates "
                  "%d, %d connects, kills at %s s" %
                  (what, ledger.sent, len(ledger.acked), len(ledger.delivered), len(lost),
                   lost[:20], dups, dev.connects, ", ".join("%.2f" % d for d in delays)),
                  flush=True)
        t.check(len(ledger.acked) > total // 2, "%s: most messages were acknowledged" % what)
        t.eq(lost, [], "%s: every acknowledged message is delivered" % what)
        t.eq(ledger.corrupt, [], "%s: every delivered body is what was sent" % what)
        t.eq(["run %d rc %s" % (x.n, x.rc) for x in broker.unexpected_exits()], [],
             "%s: junction never exited on its own" % what)
        t.eq(broker.grep(SANITIZER_RX), [], "%s: no sanitizer report" % what)
        t.eq(broker.stop(), 0, "%s: SIGTERM at the end: exit 0" % what)
    finally:
        if t.failed > failed_before:
            broker.dump_logs(60)
        rcv.stop()
        broker.cleanup()


def main():
    seed = int(os.environ.get("JN_CRASH_SEED", str(random.randrange(1 << 30))))
    print("JN_CRASH_SEED=%d" % seed, flush=True)
    rng = random.Random(seed)
    t = Checks("crash_mqtt_listener")
    for qos, total, kills in ((1, 20000, 5), (2, 10000, 4)):
        run(t, rng, qos, total, kills)
    t.finish()


main()
