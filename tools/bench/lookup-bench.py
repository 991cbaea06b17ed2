#!/usr/bin/env python3
"""lookup-bench: N messages through an http-lookup whose server answers after a delay.

HTTP IN -> http-lookup -> file OUT, all on 127.0.0.1 with free ports. The lookup server (a
Python ThreadingHTTPServer in this process) answers each GET after --delay seconds; the
messages are posted over one keep-alive connection; the wall time runs from the first POST
until the N-th file is in the OUT folder. Prints one line per run and the median.

  tools/bench/lookup-bench.py --bin build/junction [--n 200] [--delay 0.02] [--runs 3]
                              [--concurrency 16]

--concurrency is left out of the config when 0 (for a junction without the option).
"""
import argparse
import http.client
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def lookup_server(delay):
    port = free_port()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):
            time.sleep(delay)
            body = json.dumps({"v": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def one_run(args, lport):
    d = tempfile.mkdtemp(prefix="jn-lookup-bench-")
    port = free_port()
    conc = "\n    concurrency: %d" % args.concurrency if args.concurrency else ""
    cfg = """junction:
  data_dir: %(d)s/data
  admin: "127.0.0.1:%(aport)d"
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(port)d", path: /ingest }
  out: { type: file, direction: out, dir: %(d)s/out }
services:
  lk:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/p/{json.n}
    into: json.lookup%(conc)s
routes:
  r: { from: in, via: [lk], to: out }
""" % dict(d=d, port=port, lport=lport, conc=conc, aport=free_port())
    with open(os.path.join(d, "junction.yaml"), "w") as f:
        f.write(cfg)
    log = open(os.path.join(d, "log"), "w")
    root = ["--allow-root"] if os.geteuid() == 0 else []
    p = subprocess.Popen([args.bin, "run"] + root + ["-c", os.path.join(d, "junction.yaml")],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_port(port):
            raise RuntimeError("junction did not start: see %s/log" % d)
        c = http.client.HTTPConnection("127.0.0.1", port)
        t0 = time.monotonic()
        for n in range(args.n):
            c.request("POST", "/ingest", body=json.dumps({"n": n}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 202:
                raise RuntimeError("POST answered %d" % r.status)
        out = os.path.join(d, "out")
        while True:
            k = len([x for x in os.listdir(out) if not x.startswith(".")]) \
                if os.path.isdir(out) else 0
            if k >= args.n:
                break
            if time.monotonic() - t0 > 120:
                raise RuntimeError("only %d of %d after 120 s" % (k, args.n))
            time.sleep(0.005)
        return time.monotonic() - t0
    finally:
        p.terminate()
        p.wait(20)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=0)
    args = ap.parse_args()
    srv, lport = lookup_server(args.delay)
    times = []
    for i in range(args.runs):
        s = one_run(args, lport)
        times.append(s)
        print("run %d: %d messages in %.2f s" % (i + 1, args.n, s), flush=True)
    print("median %.2f s (%s, lookup %.0f ms)" % (statistics.median(times), args.bin,
                                                   args.delay * 1000))
    srv.shutdown()


if __name__ == "__main__":
    main()
