#!/usr/bin/python3
"""Bridge benchmark (issue 19): edge -> hub delivered messages per second, 1 KiB, window 256,
and the RSS of an idle edge.

Each run: an edge (HTTP IN -> bridge OUT, configs/bridge-edge.yaml) is started with its hub
down and filled with --count messages of --size bytes by jn-bench (so the queue is the load,
not a client racing junction for the CPU); then the hub (bridge IN -> file OUT,
configs/bridge-hub.yaml) is started, and the edge's delivered count (admin API) is sampled
until the queue is empty: delivered/s = messages / (last delivered - first delivered). Every
delivery counted here is an ack the hub sent after its own commit. The same run then drains
the same backlog through HTTP OUT to jn-sink with concurrency 256 (configs/bridge-peer-http.yaml)
as the peer figure. Idle RSS: a fresh edge linked to its hub, nothing queued, 3 s after start,
and the same node with HTTP OUT in place of the bridge.

    /usr/bin/python3 tools/bench/bridge-bench.py [--build build-bench] [--count 100000]
        [--size 1024] [--repeat 3]

Prints one markdown table of medians. Only processes started here are stopped, by pid.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "tools", "bench", "configs")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def channel(aport, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/channels" % aport, timeout=5) as r:
        for c in json.load(r)["channels"]:
            if c["name"] == name:
                return c
    return {}


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Proc:
    def __init__(self, args, env, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def junction(build, cfg, env, log):
    args = [os.path.join(build, "junction"), "run"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    return Proc(args + ["-c", os.path.join(CONFIGS, cfg)], env, log)


def fill(build, hport, count, size):
    subprocess.run([os.path.join(build, "jn-bench"), "--mode", "http", "--url",
                    "http://127.0.0.1:%d/ingest" % hport, "--conns", "16", "--count",
                    str(count), "--size", str(size), "--warmup", "0", "--duration", "600"],
                   check=True, stdout=subprocess.DEVNULL)


def sink_count(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=5) as r:
        return json.load(r)["requests"]


def drain_rate(read, count, d0, timeout=300):
    """Samples read() (a delivered count, d0 before the drain began) every 50 ms: the rate
    between the first and the last delivery of count messages."""
    first = last = None
    t_call = time.monotonic()
    end = t_call + timeout
    while time.monotonic() < end:
        d = read() - d0
        now = time.monotonic()
        if d > 0 and first is None:
            first = (now, d)
        if d >= count:
            last = (now, d)
            break
        time.sleep(0.05)
    if first is None or last is None:
        return 0.0
    if last[0] <= first[0]:
        # The reader was starved until the end (jn-sink answers /stats late under 256
        # connections): from the call's start instead.
        return last[1] / (last[0] - t_call)
    return (last[1] - first[1]) / (last[0] - first[0])


def idle(build, work, n):
    """RSS of a fresh edge linked to its hub with nothing queued, and of the same edge node with
    an HTTP OUT in place of the bridge (the peer), each 3 s after start."""
    d = os.path.join(work, "idle%d" % n)
    os.makedirs(d)
    env = dict(os.environ, JN_BENCH_DIR=d, JN_BENCH_HUB_PORT=str(free_port()),
               JN_BENCH_HUB_ADMIN=str(free_port()), JN_BENCH_EDGE_PORT=str(free_port()),
               JN_BENCH_EDGE_ADMIN=str(free_port()), JN_BENCH_SINK_PORT=str(free_port()))
    eadmin = int(env["JN_BENCH_EDGE_ADMIN"])
    hub = junction(build, "bridge-hub.yaml", env, os.path.join(d, "hub.log"))
    edge = junction(build, "bridge-edge.yaml", env, os.path.join(d, "edge.log"))
    try:
        wait_port(eadmin)
        end = time.monotonic() + 10
        while time.monotonic() < end and not (channel(eadmin, "up").get("link") or {}).get("up"):
            time.sleep(0.1)
        time.sleep(3)
        edge_kb = rss_kb(edge.p.pid)
    finally:
        edge.stop()
        hub.stop()
    env["JN_BENCH_DIR"] = d + "/peer"
    os.makedirs(env["JN_BENCH_DIR"])
    peer = junction(build, "bridge-peer-http.yaml", env, os.path.join(d, "peer.log"))
    try:
        wait_port(eadmin)
        time.sleep(3)
        peer_kb = rss_kb(peer.p.pid)
    finally:
        peer.stop()
    return edge_kb, peer_kb


def one_run(build, count, size, work, n):
    d = os.path.join(work, "run%d" % n)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    env = dict(os.environ, JN_BENCH_DIR=d, JN_BENCH_HUB_PORT=str(free_port()),
               JN_BENCH_HUB_ADMIN=str(free_port()), JN_BENCH_EDGE_PORT=str(free_port()),
               JN_BENCH_EDGE_ADMIN=str(free_port()), JN_BENCH_SINK_PORT=str(free_port()))
    eport, eadmin = int(env["JN_BENCH_EDGE_PORT"]), int(env["JN_BENCH_EDGE_ADMIN"])
    procs = []
    try:
        edge = junction(build, "bridge-edge.yaml", env, os.path.join(d, "edge.log"))
        procs.append(edge)
        if not wait_port(eport) or not wait_port(eadmin):
            raise RuntimeError("edge did not start")
        fill(build, eport, count, size)
        d0 = channel(eadmin, "up").get("delivered", 0)
        hub = junction(build, "bridge-hub.yaml", env, os.path.join(d, "hub.log"))
        procs.append(hub)
        rate = drain_rate(lambda: channel(eadmin, "up").get("delivered", 0), count, d0)
        edge.stop()
        hub.stop()
        procs = []
        # The peer: the same backlog drained by HTTP OUT (concurrency 256) to jn-sink.
        sink = Proc([os.path.join(build, "jn-sink"), "--listen",
                     "127.0.0.1:%s" % env["JN_BENCH_SINK_PORT"]], env, os.path.join(d, "sink.log"))
        procs.append(sink)
        env["JN_BENCH_DIR"] = d + "/peer"
        os.makedirs(env["JN_BENCH_DIR"])
        peer = junction(build, "bridge-peer-http.yaml", env, os.path.join(d, "peer.log"))
        procs.append(peer)
        if not wait_port(eport) or not wait_port(eadmin):
            raise RuntimeError("peer edge did not start")
        peer_http = None
        # Fill while paused (the sink is up, so hold the queue via the admin API).
        urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/api/v1/channels/out/pause" % eadmin, method="POST",
            data=b""), timeout=5).read()
        fill(build, eport, count, size)
        d0 = sink_count(int(env["JN_BENCH_SINK_PORT"]))
        urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/api/v1/channels/out/resume" % eadmin, method="POST",
            data=b""), timeout=5).read()
        # Counted at the sink: junction's admin answers late while HTTP OUT drains.
        peer_http = drain_rate(lambda: sink_count(int(env["JN_BENCH_SINK_PORT"])), count, d0)
        return rate, peer_http
    finally:
        for p in procs:
            p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="jn-bridge-bench-")
    rates, rss, peers, prss = [], [], [], []
    try:
        for n in range(a.repeat):
            r, p = one_run(a.build, a.count, a.size, work, n)
            m, pm = idle(a.build, work, n)
            print("run %d: bridge %.0f msg/s, peer HTTP OUT %.0f msg/s; idle RSS: edge %d KiB, "
                  "peer %d KiB" % (n + 1, r, p, m, pm), file=sys.stderr, flush=True)
            rates.append(r)
            rss.append(m)
            peers.append(p)
            prss.append(pm)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| scenario | median | runs |")
    print("|---|---|---|")
    print("| bridge edge -> hub, %d B, window 256 (delivered/s) | %.0f | %s |" % (
        a.size, statistics.median(rates), ", ".join("%.0f" % x for x in rates)))
    print("| peer: same backlog, HTTP OUT -> jn-sink, concurrency 256 (delivered/s) | %.0f | %s |"
          % (statistics.median(peers), ", ".join("%.0f" % x for x in peers)))
    print("| idle edge RSS, linked, nothing queued (MiB) | %.1f | %s |" % (
        statistics.median(rss) / 1024, ", ".join("%.1f" % (x / 1024) for x in rss)))
    print("| peer: idle RSS of the same node with HTTP OUT instead (MiB) | %.1f | %s |" % (
        statistics.median(prss) / 1024, ", ".join("%.1f" % (x / 1024) for x in prss)))


if __name__ == "__main__":
    main()
