"""Crash test for MQTT IN (channels/mqtt_in.c, junction's own client that acknowledges after the
commit): a publisher (mosquitto_pub -l, a real second client) floods numbered messages to a
mosquitto started here while junction (MQTT IN -> HTTP OUT to a receiver) is killed with SIGKILL
at random moments and restarted on the same data_dir. The broker is never killed, so every
message the publisher sent was acknowledged to it by mosquitto; the ledger counts, per run, how
many never reached the receiver (lost) and how many reached it more than once (duplicates).

Runs: QoS 1 and QoS 2 floods. Asserted: nothing is lost (mosquitto forgets a message only at
junction's PUBACK / PUBREC, which is written after the commit), no body is changed, junction
never dies on its own and restarts cleanly. Duplicates are counted and printed (the messages
committed whose acknowledgement the kill cut off; QoS 2 is at least once across a crash).
Seed: JN_CRASH_SEED (printed)."""
import os
import random
import subprocess
import sys
import threading
import time
import uuid

from crashlib import Broker, Checks, Receiver, SANITIZER_RX, crash_loop, free_port, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_mqtt_roundtrip import Mosquitto  # noqa: E402


class MqttLedger:
    """Tokens sent by the publisher and bodies the receiver got (Receiver calls note_delivery)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.delivered = {}
        self.corrupt = []
        self.unknown = []
        self.last_delivery = None

    def body(self, n):
        return b"crash-%d;%s" % (n, b"x" * (n % 37))

    def note_delivery(self, body, msg_id):
        with self.lock:
            self.last_delivery = time.monotonic()
            if not body.startswith(b"crash-") or b";" not in body:
                self.unknown.append(body[:60])
                return None
            try:
                n = int(body[6:body.index(b";")])
            except ValueError:
                self.unknown.append(body[:60])
                return None
            if body != self.body(n):
                self.corrupt.append((n, body[:60]))
            self.delivered[n] = self.delivered.get(n, 0) + 1
            return n

    def report(self):
        with self.lock:
            sent = set(range(1, self.sent + 1))
            got = set(self.delivered)
            return {
                "sent": self.sent,
                "delivered_unique": len(got & sent),
                "lost": sorted(sent - got),
                "duplicates": sum(c - 1 for c in self.delivered.values()),
                "dup_messages": sum(1 for c in self.delivered.values() if c > 1),
                "extra": sorted(got - sent),
                "corrupt": list(self.corrupt),
                "unknown": list(self.unknown),
            }


class Publisher:
    """mosquitto_pub -l: one message per line written to its stdin, at `rate` per second."""

    def __init__(self, mq, ledger, topic, qos, total, rate):
        self.ledger = ledger
        self.total = total
        self.rate = rate
        self.proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mq.port), "-t", topic, "-q",
             str(qos), "-l", "-i", "jt-crashpub-" + uuid.uuid4().hex[:8]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        t0 = time.monotonic()
        for n in range(1, self.total + 1):
            due = t0 + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.proc.stdin.write(self.ledger.body(n) + b"\n")
            self.proc.stdin.flush()
            with self.ledger.lock:
                self.ledger.sent = n
        self.proc.stdin.close()

    def join(self, timeout):
        self.thread.join(timeout)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def run(t, mq, rng, qos, total, rate, kills):
    what = "qos %d" % qos
    ledger = MqttLedger()
    rcv = Receiver(ledger).start()
    pre = "jt%s" % uuid.uuid4().hex[:8]
    broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
channels:
  m-in:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%d
    client_id: %s-in
    topics: [%s/crash/#]
    qos: %d
    reconnect_backoff: 50ms
    reconnect_max_backoff: 200ms
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    concurrency: 8
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 200ms }
routes:
  r: { from: [m-in], to: [out] }
""" % (mq.port, pre, pre, qos, rcv.port))
    failed_before = t.failed
    try:
        broker.start()
        if not t.check(wait_until(lambda: broker.grep(r"\[mqtt\.m-in\] subscribed"), 10),
                       "%s: junction subscribes" % what):
            return None
        pub = Publisher(mq, ledger, "%s/crash/data" % pre, qos, total, rate).start()
        t0 = time.monotonic()
        delays = crash_loop(broker, rng, kills, lo=0.4, hi=1.6,
                            note=lambda s: print("%s: %s" % (what, s), flush=True))
        t.eq(pub.join(60), 0, "%s: mosquitto_pub sent everything and exited 0" % what)
        # Everything is in the broker now: wait for all, or for 10 s without a delivery (what
        # is lost never comes).
        wait_until(lambda: len(ledger.delivered) >= total or
                   (ledger.last_delivery is not None and
                    time.monotonic() - ledger.last_delivery > 10.0), 120)
        wait_until(lambda: ledger.last_delivery is None or
                   time.monotonic() - ledger.last_delivery > 1.0, 15)
        took = time.monotonic() - t0
        r = ledger.report()
        print("%s: sent %d, delivered %d unique, LOST %d %s, duplicates %d (%d messages), "
              "%d kills at %s s, %.1fs" %
              (what, r["sent"], r["delivered_unique"], len(r["lost"]), r["lost"][:20],
               r["duplicates"], r["dup_messages"], kills,
               ", ".join("%.2f" % d for d in delays), took), flush=True)
        t.eq(r["sent"], total, "%s: the publisher sent all %d" % (what, total))
        t.eq(r["corrupt"], [], "%s: every delivered body is what was sent" % what)
        t.eq(r["unknown"] + r["extra"], [], "%s: nothing delivered that was not sent" % what)
        t.eq(r["lost"], [], "%s: nothing mosquitto acknowledged to the publisher is lost" % what)
        t.eq(["run %d rc %s" % (x.n, x.rc) for x in broker.unexpected_exits()], [],
             "%s: junction never exited on its own" % what)
        t.eq(broker.grep(SANITIZER_RX), [], "%s: no sanitizer report" % what)
        # The last restart may be only a moment old: let it come up before the SIGTERM.
        t.check(wait_until(lambda: "[mqtt.m-in] subscribed" in broker.log(), 10),
                "%s: the last run subscribes" % what)
        t.eq(broker.stop(), 0, "%s: SIGTERM at the end: exit 0" % what)
        return r
    finally:
        if t.failed > failed_before:
            broker.dump_logs(60)
        rcv.stop()
        broker.cleanup()


def main():
    seed = int(os.environ.get("JN_CRASH_SEED", str(random.randrange(1 << 30))))
    print("JN_CRASH_SEED=%d" % seed, flush=True)
    rng = random.Random(seed)
    t = Checks("crash_mqtt")
    mq = Mosquitto()
    # (qos, messages, per second, kills): a flood well above what the crash loop lets through
    runs = ((1, 6000, 1500, 6), (2, 4000, 1000, 6))
    only = os.environ.get("JN_CRASH_MQTT_RUNS")  # e.g. "2" to run the QoS 2 one only
    if only:
        runs = [r for r in runs if str(r[0]) in only.split(",")]
    try:
        mq.start()
        results = {}
        for qos, total, rate, kills in runs:
            results[qos] = run(t, mq, rng, qos, total, rate, kills)
        print("summary (seed %d):" % seed)
        for qos, r in results.items():
            if r is not None:
                print("  qos %d sent %d lost %d duplicates %d (%d messages)" %
                      (qos, r["sent"], len(r["lost"]), r["duplicates"], r["dup_messages"]))
    finally:
        if t.failed:
            print("---- mosquitto log (tail) ----\n%s" %
                  "\n".join(mq.log().splitlines()[-60:]))
        mq.cleanup()
    t.finish()


if __name__ == "__main__":
    main()
