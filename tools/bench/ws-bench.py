#!/usr/bin/python3
"""WebSocket IN benchmark (issue 19): N connections, each sending 1 KiB binary frames in
lockstep (send one, wait for its {"ack":...}, send the next), as jn-bench does for HTTP (one
request in flight per connection). Measures acked frames per second and the ack latency (send
-> ack received: the journal commit included) over the measured seconds, and files delivered
per second by the file OUT over the same time.

    /usr/bin/python3 tools/bench/ws-bench.py [--junction build-bench/junction] [--conns 64]
        [--duration 10] [--warmup 2] [--procs 4] [--size 1024]

The client is python3-websockets on asyncio, split over --procs processes (each a single
thread); on a 2-vCPU machine the client competes with junction for the CPU, so the figure is a
floor for junction's intake, not its ceiling. Only processes started here are stopped, by pid.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import websockets


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def client(port, conns, size, t_start, t_end, q):
    async def one(lat):
        payload = os.urandom(size)
        n = 0
        async with websockets.connect("ws://127.0.0.1:%d/" % port, max_queue=None) as ws:
            while True:
                now = time.time()
                if now >= t_end:
                    break
                await ws.send(payload)
                a = json.loads(await ws.recv())
                done = time.time()
                if "ack" in a and done >= t_start and done < t_end:
                    lat.append(done - now)
                    n += 1
        return n

    async def main():
        lat = []
        counts = await asyncio.gather(*[one(lat) for _ in range(conns)])
        return sum(counts), lat

    n, lat = asyncio.run(main())
    q.put((n, lat))


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--junction", default=os.path.join(root, "build-bench", "junction"))
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="jn-wsbench-")
    port = free_port()
    env = dict(os.environ, JN_BENCH_DIR=d, JN_BENCH_PORT=str(port))
    cfg = os.path.join(root, "tools", "bench", "configs", "ws-file.yaml")
    log = open(os.path.join(d, "junction.log"), "wb")
    j = subprocess.Popen([a.junction, "run"] + (["--allow-root"] if os.geteuid() == 0 else [])
                         + ["-c", cfg], env=env, stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        t0 = time.time() + 0.5
        t_start, t_end = t0 + a.warmup, t0 + a.warmup + a.duration
        q = multiprocessing.Queue()
        per = [a.conns // a.procs + (1 if i < a.conns % a.procs else 0) for i in range(a.procs)]
        ps = [multiprocessing.Process(target=client, args=(port, c, a.size, t_start, t_end, q))
              for c in per if c > 0]
        for p in ps:
            p.start()
        outdir = os.path.join(d, "out")

        def nfiles():
            return len(os.listdir(outdir)) if os.path.isdir(outdir) else 0
        time.sleep(max(0, t_start - time.time()))
        f0 = nfiles()
        time.sleep(max(0, t_end - time.time()))
        f1 = nfiles()
        res = [q.get(timeout=a.duration + 60) for _ in ps]
        for p in ps:
            p.join(30)
        n = sum(r[0] for r in res)
        lat = sorted(x for r in res for x in r[1])
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0
        print("| WebSocket IN %d B frames -> file | %d | %.0f msg/s | p50 %.2f ms | p99 %.2f ms "
              "| delivered %.0f files/s |" % (a.size, a.conns, n / a.duration, pct(0.50),
                                              pct(0.99), (f1 - f0) / a.duration))
    finally:
        j.terminate()
        try:
            j.wait(20)
        except subprocess.TimeoutExpired:
            j.kill()
            j.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
