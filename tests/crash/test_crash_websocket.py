"""Crash test for WebSocket IN: python3-websockets clients flood junction (websocket IN -> HTTP
OUT to a receiver) with numbered binary frames, a window of frames in flight per connection,
while junction is killed with SIGKILL at random moments and restarted on the same data_dir.
A frame counts as acknowledged only when its {"ack":"<id>"} frame came back (acks come in
order per connection, so the n-th answer is the n-th frame's); frames whose answer never came
(the connection died) are failed sends, not acks. Asserted (crashlib.check_report): every
acknowledged frame is delivered after the restarts, bodies exact, X-Junction-Id is the acked
id. Seed: JN_CRASH_SEED (printed)."""
import asyncio
import collections
import json
import os
import random
import threading
import time

import websockets

from crashlib import (Broker, Checks, Ledger, Receiver, check_report, crash_loop, free_port,
                      make_body, wait_delivered)


class WsLoad:
    """threads connections, each pipelining up to window frames; reconnects when junction is
    gone. Tokens come from one counter; runs until stop()."""

    def __init__(self, ledger, port, threads=4, window=32):
        self.ledger = ledger
        self.port = port
        self.threads = threads
        self.window = window
        self.lock = threading.Lock()
        self.next = 0
        self.stopping = threading.Event()
        self.workers = []

    def _take(self):
        with self.lock:
            self.next += 1
            return self.next

    async def _conn(self):
        pending = collections.deque()
        try:
            async with websockets.connect("ws://127.0.0.1:%d/" % self.port,
                                          open_timeout=2, close_timeout=1) as ws:
                while not self.stopping.is_set():
                    while len(pending) < self.window:
                        n = self._take()
                        self.ledger.note_sent(n)
                        pending.append(n)
                        await ws.send(make_body(n))
                    a = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    n = pending.popleft()
                    if "ack" in a:
                        self.ledger.note_ack(n, a["ack"])
                    else:
                        self.ledger.note_refused(n, 503, json.dumps(a).encode())
                # Drain what is in flight before leaving.
                while pending:
                    a = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    n = pending.popleft()
                    if "ack" in a:
                        self.ledger.note_ack(n, a["ack"])
                    else:
                        self.ledger.note_refused(n, 503, json.dumps(a).encode())
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
            for n in pending:
                self.ledger.note_failed(n, "connection: %s" % type(e).__name__)
            await asyncio.sleep(0.05)

    def _worker(self):
        async def loop():
            while not self.stopping.is_set():
                await self._conn()
        asyncio.run(loop())

    def start(self):
        for _ in range(self.threads):
            th = threading.Thread(target=self._worker, daemon=True)
            th.start()
            self.workers.append(th)
        return self

    def stop(self):
        self.stopping.set()
        for th in self.workers:
            th.join(30)


def main():
    seed = int(os.environ.get("JN_CRASH_SEED", str(random.randrange(1 << 30))))
    print("JN_CRASH_SEED=%d" % seed, flush=True)
    rng = random.Random(seed)
    t = Checks("crash_websocket")
    ledger = Ledger()
    rcv = Receiver(ledger).start()
    ws_port = free_port()
    broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
channels:
  ws:
    type: websocket
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    concurrency: 8
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 200ms }
routes:
  r: { from: [ws], to: [out] }
""" % (ws_port, rcv.port), wait_ports=[ws_port])
    try:
        broker.start()
        load = WsLoad(ledger, ws_port).start()
        t0 = time.monotonic()
        crash_loop(broker, rng, 6, lo=0.3, hi=1.2, ledger=ledger)
        time.sleep(0.5)
        load.stop()
        t.check(ledger.acked_count() > 500, "frames were acknowledged across the kills (%d)" %
                ledger.acked_count())
        t.check(wait_delivered(ledger, 60), "every acknowledged frame is delivered")
        print("took %.1fs" % (time.monotonic() - t0), flush=True)
        check_report(t, ledger, broker, what="websocket")
        t.eq(broker.stop(), 0, "SIGTERM at the end: exit 0")
    finally:
        if t.failed:
            broker.dump_logs(60)
        rcv.stop()
        broker.cleanup()
    t.finish()


if __name__ == "__main__":
    main()
