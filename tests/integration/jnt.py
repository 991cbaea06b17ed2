"""jnt: helpers for junction's integration tests.

Each test starts the real build/junction on free 127.0.0.1 ports with its own config in a
temporary directory, drives it with real peers (curl, files, a small HTTP receiver), asserts
exact bytes, prints junction's log on failure and cleans up. Standard library only.
"""
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("JUNCTION_BIN", os.path.join(os.getcwd(), "build", "junction"))
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())


_GIVEN_PORTS = set()


def free_port():
    """A port that was free a moment ago on 127.0.0.1, and not one this process was given
    before: the kernel may hand the same ephemeral port to two binds in a row once the first
    socket is closed, and a test that takes several ports before starting junction got the
    same one for two listeners (test_limits under the sanitizers: admin and an MLLP IN)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise RuntimeError("no fresh free port in 100 tries")


def wait_until(cond, timeout=10.0, step=0.02):
    """Polls cond() until it is true or timeout seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Checks:
    """Counts checks; a failed one prints and is remembered. finish() exits."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.on_fail = []

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s" % what, flush=True)
        return cond

    def eq(self, got, want, what):
        ok = got == want
        if not ok:
            what = "%s\n   got:      %r\n   expected: %r" % (what, got, want)
        return self.check(ok, what)

    def finish(self):
        if self.failed:
            for f in self.on_fail:
                try:
                    f()
                except Exception as e:  # a dump that fails must not hide the result
                    print("(while printing diagnostics: %r)" % e)
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed))
        sys.exit(1 if self.failed else 0)


class Junction:
    """A junction process on a config written into its own temporary directory."""

    def __init__(self, config, wait_ports=(), env=None, args=None):
        self.dir = tempfile.mkdtemp(prefix="jn-it-")
        self.cfg = os.path.join(self.dir, "junction.yaml")
        with open(self.cfg, "w") as f:
            f.write(config.replace("@DIR@", self.dir))
        self.logpath = os.path.join(self.dir, "junction.log")
        self.proc = None
        self.wait_ports = wait_ports
        self.env = dict(os.environ, **(env or {}))
        self.args = args

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def start(self, timeout=10.0):
        args = root_args(self.args or ["run", "-c", self.cfg])
        self.log_f = open(self.logpath, "ab")
        self.proc = subprocess.Popen([BIN] + args, cwd=self.dir, stdout=self.log_f,
                                     stderr=subprocess.STDOUT, env=self.env)
        for p in self.wait_ports:
            if not wait_until(lambda: port_open(p) or self.proc.poll() is not None, timeout):
                raise RuntimeError("junction did not open port %d" % p)
            if self.proc.poll() is not None:
                raise RuntimeError("junction exited with %s:\n%s" % (self.proc.returncode, self.log()))
        return self

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return getattr(self, "_kept_log", "")  # after cleanup: what was read then

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends sig and waits; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log_f.close()
                return None
        self.log_f.close()
        return self.proc.returncode

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Keep the log: failure reports print it after the temp dir is gone.
        self._kept_log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)


class KeepAliveSender(threading.Thread):
    """Posts {"k": n} for n = 0, 1, ... to http://127.0.0.1:port/path over ONE keep-alive
    connection until stop(), pause seconds apart. sent: (n, t_sent, t_answered, status) for each;
    acked: n -> id for each 202 (in order); bad: (n, status, body[:100]) for the others; error:
    the exception (or the server's Connection: close) that ended the connection early, else None.
    """

    def __init__(self, port, path="/ingest", pause=0.0):
        super().__init__(daemon=True)
        self.port, self.path, self.pause = port, path, pause
        self.stop_flag = threading.Event()
        self.sent, self.acked, self.bad, self.error = [], {}, [], None
        self.lock = threading.Lock()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        try:
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                conn.request("POST", self.path, body=json.dumps({"k": n}),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                with self.lock:
                    self.sent.append((n, t0, time.monotonic(), r.status))
                    if r.status == 202:
                        self.acked[n] = json.loads(body)["id"]
                    else:
                        self.bad.append((n, r.status, body[:100]))
                n += 1
                if r.getheader("Connection", "").lower() == "close":
                    self.error = "the server closed the connection after message %d" % n
                    return
                if self.pause:
                    time.sleep(self.pause)
        except Exception as e:  # a dropped connection: what the reload tests must never see
            self.error = repr(e)
        finally:
            conn.close()

    def count(self):
        """Messages acknowledged (202) so far."""
        with self.lock:
            return len(self.acked)

    def stop(self):
        self.stop_flag.set()
        self.join(15)


def root_args(args):
    """`junction run` refuses to run as root without --user or --allow-root (docs/security.md);
    tests running as root (containers) say --allow-root unless they chose otherwise."""
    if (os.geteuid() == 0 and args and args[0] == "run" and "--user" not in args
            and "--allow-root" not in args and "--help" not in args and "-h" not in args):
        return ["run", "--allow-root"] + list(args[1:])
    return list(args)


def bench(*args, timeout=60):
    """Runs tools/bench's jn-bench (built beside junction) with --json; its JSON object, or {}
    with what it printed when there is none."""
    exe = os.path.join(os.path.dirname(BIN), "jn-bench")
    p = subprocess.run([exe, "--json"] + [str(a) for a in args], capture_output=True,
                       timeout=timeout)
    lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
    js = [ln for ln in lines if ln.startswith("{")]
    if not js:
        print("jn-bench %r: rc %d\n%s\n%s" % (args, p.returncode, p.stdout.decode(),
                                             p.stderr.decode()))
        return {}
    return json.loads(js[-1])


def run_junction(args, cwd=None, env=None, timeout=20):
    """Runs junction to completion (check, version ...); returns (code, stdout, stderr)."""
    p = subprocess.run([BIN] + root_args(args), cwd=cwd, env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def curl(args, timeout=20):
    """Runs curl; returns (status_code, body, headers_text). -s and -D - are added."""
    hdr = tempfile.NamedTemporaryFile(delete=False)
    hdr.close()
    try:
        p = subprocess.run(["curl", "-s", "-D", hdr.name, "--max-time", "10"] + args,
                           capture_output=True, timeout=timeout)
        with open(hdr.name, "rb") as f:
            h = f.read().decode("latin-1")
    finally:
        os.unlink(hdr.name)
    status = 0
    for line in h.splitlines():
        if line.startswith("HTTP/"):
            status = int(line.split()[1])
    return status, p.stdout, h


def admin_api(port, method, path, body=None):
    """One call of junction's admin API on 127.0.0.1:port: (status, the JSON answer), or
    (status, {"unparsed": text}) when the answer is not JSON."""
    args = ["-X", method, "http://127.0.0.1:%d%s" % (port, path)]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    code, out, _ = curl(args)
    try:
        return code, json.loads(out)
    except ValueError:
        return code, {"unparsed": out.decode("utf-8", "replace")}


class Receiver:
    """A real HTTP server on a free loopback port that records what it receives.

    responses: a list of status codes to answer in turn (the last one repeats).
    answer: optional; called with the request path, returns (status, body bytes) to answer
    with instead (or None for the default); may sleep, as each request has a thread."""

    def __init__(self, responses=(200,), port=None, delay=0.0, answer=None):
        self.port = port or free_port()
        self.answer = answer
        self.requests = []
        self.responses = list(responses)
        self.lock = threading.Lock()
        self.delay = delay          # seconds to wait before answering
        self.inflight = 0
        self.max_inflight = 0       # the most requests being answered at once
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The status line with headers and the body are two writes: without this, Nagle
            # holds the body until the client's delayed ACK (40 ms per request).
            disable_nagle_algorithm = True

            def do_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if outer.delay:
                    with outer.lock:
                        outer.inflight += 1
                        outer.max_inflight = max(outer.max_inflight, outer.inflight)
                    time.sleep(outer.delay)
                    with outer.lock:
                        outer.inflight -= 1
                with outer.lock:
                    idx = len(outer.requests)
                    outer.requests.append({"method": self.command, "path": self.path,
                                           "headers": {k.lower(): v for k, v in self.headers.items()},
                                           "body": body})
                    status = outer.responses[min(idx, len(outer.responses) - 1)]
                reply = b"ok\n"
                got = outer.answer(self.path) if outer.answer else None
                if got is not None:
                    status, reply = got
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_GET = do_any

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def bodies(self):
        with self.lock:
            return [r["body"] for r in self.requests]

    def count(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
