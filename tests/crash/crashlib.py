"""crashlib: a crash-loop harness for junction (Python 3 standard library only).

Any channel's crash test can use it. The parts:

  Ledger        what the senders were told and what the receiver got: every message carries a
                unique token ("crash-<n>;" at the start of its body), so a delivery is matched to
                its send even when the 202 (and so the id) never came back because junction was
                killed mid-request. X-Junction-Id is the fallback match and is cross-checked.
  Load          sender threads over HTTP keep-alive (http.client). An ack counts only when a 202
                with an id was fully received; any other answer is a refusal, no answer is a
                failed send. Either a fixed number of messages, or continuous until stop().
  Receiver      a real threaded HTTP server that records each delivery into the ledger; it can
                be started late (a receiver that is down) and on a port chosen in advance.
  Broker        a junction process on one config and one data_dir that survives restarts:
                kill9(), restart(), stop(); one log file per run, last lines of each on failure.
  crash_loop    kills junction with SIGKILL at random moments (seeded) and restarts it.
  check_report  the assertions every crash test makes: nothing acknowledged is lost, no corrupt
                body, no id mix-up, junction never died on its own, no sanitizer report.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import jnt  # noqa: E402
from jnt import Checks, free_port, port_open, wait_until  # noqa: E402,F401

TOKEN_RE = re.compile(rb"^crash-(\d+);")


def make_body(n, pad=64):
    """The exact body of message n: its token, then pad bytes derived from n (binary, so a
    changed byte anywhere is noticed)."""
    head = b"crash-%d;" % n
    return head + bytes(((n * 31 + i * 7) & 0xFF) for i in range(pad))


def body_token(body):
    m = TOKEN_RE.match(body)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------

class Ledger:
    """Thread-safe record of sends, answers and deliveries, keyed by token."""

    def __init__(self, pad=64):
        self.pad = pad
        self.lock = threading.Lock()
        self.sent = set()        # tokens whose request was started
        self.acked = {}          # token -> id (a full 202 with an id)
        self.refused = {}        # token -> (status, body head): a complete non-202 answer
        self.failed = {}         # token -> reason: no complete answer (connection killed ...)
        self.delivered = {}      # token -> times delivered
        self.delivered_ids = {}  # token -> set of X-Junction-Id values seen
        self.id_owner = {}       # id -> token, from acks
        self.id_collisions = []  # (id, token, other token): one id acked for two messages
        self.corrupt = []        # (token, reason): a delivery whose bytes are not what was sent
        self.unknown = []        # deliveries matching no token nor acked id
        self.first_delivery = None
        self.last_delivery = None

    # senders
    def note_sent(self, n):
        with self.lock:
            self.sent.add(n)

    def note_ack(self, n, msg_id):
        with self.lock:
            self.acked[n] = msg_id
            other = self.id_owner.get(msg_id)
            if other is not None and other != n:
                self.id_collisions.append((msg_id, n, other))
            else:
                self.id_owner[msg_id] = n

    def note_refused(self, n, status, body=b""):
        with self.lock:
            self.refused[n] = (status, body[:120])

    def note_failed(self, n, reason):
        with self.lock:
            self.failed[n] = reason

    # receiver
    def note_delivery(self, body, msg_id):
        """Records one request the receiver got; returns the token it was matched to."""
        n = body_token(body)
        with self.lock:
            now = time.monotonic()
            self.first_delivery = self.first_delivery or now
            self.last_delivery = now
            if n is None and msg_id in self.id_owner:
                n = self.id_owner[msg_id]
                self.corrupt.append((n, "body has no token (matched by X-Junction-Id %s): %r" %
                                     (msg_id, body[:60])))
            elif n is not None and body != make_body(n, self.pad):
                self.corrupt.append((n, "body differs from what was sent (%d bytes): %r" %
                                     (len(body), body[:60])))
            if n is None:
                self.unknown.append((msg_id, body[:60]))
                return None
            self.delivered[n] = self.delivered.get(n, 0) + 1
            self.delivered_ids.setdefault(n, set()).add(msg_id)
            return n

    # reading
    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def missing(self):
        """Acknowledged tokens not delivered (yet)."""
        with self.lock:
            return sorted(n for n in self.acked if n not in self.delivered)

    def all_delivered(self):
        with self.lock:
            return all(n in self.delivered for n in self.acked)

    def report(self):
        with self.lock:
            acked = set(self.acked)
            delivered = set(self.delivered)
            lost = sorted(acked - delivered)
            dup = sum(c - 1 for c in self.delivered.values())
            id_mismatch = []
            for n, ids in self.delivered_ids.items():
                if n in self.acked and ids != {self.acked[n]}:
                    id_mismatch.append((n, self.acked[n], sorted(i or "" for i in ids)))
                elif len(ids) > 1:
                    id_mismatch.append((n, None, sorted(i or "" for i in ids)))
            return {
                "sent": len(self.sent),
                "acknowledged": len(acked),
                "refused": len(self.refused),
                "failed": len(self.failed),
                "delivered_requests": sum(self.delivered.values()),
                "delivered_unique": len(delivered),
                "duplicates": dup,
                "dup_messages": sum(1 for c in self.delivered.values() if c > 1),
                "lost": len(lost),
                "lost_tokens": lost,
                "delivered_unacked": len(delivered - acked),
                "delivered_refused": sorted(delivered & set(self.refused)),
                "delivered_unsent": sorted(delivered - self.sent),
                "id_mismatch": id_mismatch,
                "id_collisions": list(self.id_collisions),
                "corrupt": list(self.corrupt),
                "unknown": list(self.unknown),
                "refusal_kinds": _kinds(s for s, _ in self.refused.values()),
                "failure_kinds": _kinds(_reason_kind(r) for r in self.failed.values()),
            }

    def summary(self, rep=None):
        r = rep or self.report()
        lines = [
            "ledger: sent %d, acknowledged %d, refused %d, failed sends %d" %
            (r["sent"], r["acknowledged"], r["refused"], r["failed"]),
            "ledger: delivered %d unique in %d requests, duplicates %d (%d messages), "
            "delivered without an ack %d, LOST %d" %
            (r["delivered_unique"], r["delivered_requests"], r["duplicates"], r["dup_messages"],
             r["delivered_unacked"], r["lost"]),
        ]
        if r["refusal_kinds"]:
            lines.append("ledger: refusals by status: %s" % r["refusal_kinds"])
        if r["failure_kinds"]:
            lines.append("ledger: failed sends by kind: %s" % r["failure_kinds"])
        for key in ("lost_tokens", "delivered_refused", "delivered_unsent", "id_mismatch",
                    "id_collisions", "corrupt", "unknown"):
            if r[key]:
                with self.lock:
                    extra = ""
                    if key == "lost_tokens":
                        extra = " ids: %s" % [self.acked.get(n) for n in r[key][:20]]
                lines.append("ledger: %s (%d): %s%s" % (key, len(r[key]), r[key][:20], extra))
        return "\n".join(lines)


def _kinds(it):
    out = {}
    for k in it:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _reason_kind(reason):
    return reason.split("(", 1)[0]


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------

class Load:
    """Sender threads POSTing make_body(n) for n = 1, 2, ... over keep-alive connections.

    total: stop after this many messages were sent (None: until stop()). rate: messages per
    second over all threads (None: as fast as junction answers). A failed send is not repeated
    (its token is used once); the thread waits fail_pause and reconnects."""

    def __init__(self, ledger, port, path="/ingest", threads=2, total=None, rate=None,
                 timeout=10.0, fail_pause=0.02, headers=None, host="127.0.0.1"):
        self.ledger = ledger
        self.host = host
        self.port = port
        self.path = path
        self.nthreads = threads
        self.total = total
        self.rate = rate
        self.timeout = timeout
        self.fail_pause = fail_pause
        self.headers = dict(headers or {"Content-Type": "application/octet-stream"})
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.next_n = 1
        self.threads = []
        self.errors = []  # exceptions that escaped a worker (a harness bug)

    def _take(self):
        with self.lock:
            if self.total is not None and self.next_n > self.total:
                return None
            n = self.next_n
            self.next_n += 1
            return n

    def sent(self):
        with self.lock:
            return self.next_n - 1

    def start(self):
        for i in range(self.nthreads):
            th = threading.Thread(target=self._run, name="load-%d" % i, daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def _run(self):
        try:
            self._worker()
        except Exception as e:  # pragma: no cover - reported by the test
            self.errors.append(repr(e))

    def _worker(self):
        conn = None
        interval = self.nthreads / self.rate if self.rate else 0.0
        due = time.monotonic()
        while not self.stop_ev.is_set():
            if interval:
                due += interval
                wait = due - time.monotonic()
                if wait > 0:
                    if self.stop_ev.wait(wait):
                        break
                elif wait < -1.0:
                    due = time.monotonic()  # do not burst to catch up after a stall
            n = self._take()
            if n is None:
                break
            body = make_body(n, self.ledger.pad)
            self.ledger.note_sent(n)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("POST", self.path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 202:
                    try:
                        msg_id = json.loads(data)["id"]
                    except (ValueError, KeyError, TypeError):
                        msg_id = None
                    if isinstance(msg_id, str) and msg_id:
                        self.ledger.note_ack(n, msg_id)
                    else:
                        self.ledger.note_refused(n, "202-without-id", data)
                else:
                    self.ledger.note_refused(n, resp.status, data)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.ledger.note_failed(n, "%s(%s)" % (type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
                if self.stop_ev.wait(self.fail_pause):
                    break
        if conn is not None:
            conn.close()

    def stop(self, timeout=15.0):
        self.stop_ev.set()
        self.join(timeout)

    def join(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        for th in self.threads:
            th.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(th.is_alive() for th in self.threads)


# ---------------------------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------------------------

class Receiver:
    """A threaded HTTP server on 127.0.0.1:port that records every complete request into the
    ledger (after reading the whole body, before answering). Not listening until start();
    start()/stop() may be repeated on the same port.

    status: the answer, or a function () -> status called per request (e.g. a 503 now and
    then, so junction's retry path runs across the kills too). Only a request answered 2xx is
    recorded as delivered; a request whose body was cut short (junction killed while sending)
    is not recorded and gets no answer."""

    def __init__(self, ledger, port=None, status=200):
        self.ledger = ledger
        self.port = port or free_port()
        self.status = status
        self.server = None
        self.thread = None
        self.requests = 0   # complete requests, whatever the answer
        self.answers = {}   # status -> count
        self.cut = 0        # requests cut short
        self.lock = threading.Lock()

    def _handler(self):
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are separate writes; with Nagle on, the body would wait for the
            # peer's delayed ACK (40 ms a request).
            disable_nagle_algorithm = True

            def _body(self):
                """The whole body, or None when the connection ended first."""
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        line = self.rfile.readline()
                        if not line:
                            return None
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:
                                tail = self.rfile.readline()
                                if not tail:
                                    return None
                                if tail in (b"\r\n", b"\n"):
                                    return b"".join(parts)
                        part = self.rfile.read(size)
                        if len(part) != size or not self.rfile.readline():
                            return None
                        parts.append(part)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                return body if len(body) == n else None

            def do_any(self):
                body = self._body()
                if body is None:
                    with outer.lock:
                        outer.cut += 1
                    self.close_connection = True
                    return
                st = outer.status() if callable(outer.status) else outer.status
                if 200 <= st < 300:
                    outer.ledger.note_delivery(body, self.headers.get("X-Junction-Id"))
                with outer.lock:
                    outer.requests += 1
                    outer.answers[st] = outer.answers.get(st, 0) + 1
                reply = b"ok\n"
                self.send_response(st)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_any

            def log_message(self, *a):
                pass

        return H

    def start(self):
        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def handle_error(self, request, client_address):
                # A peer killed with SIGKILL resets its connections: expected here.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="receiver")
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# ---------------------------------------------------------------------------------------------
# Broker: junction across restarts on one data_dir
# ---------------------------------------------------------------------------------------------

class Run:
    def __init__(self, n, logpath):
        self.n = n
        self.logpath = logpath
        self.proc = None
        self.started = None
        self.ended = None
        self.how = None   # "kill9", "sigterm", or "exited" (on its own: a bug in a crash test)
        self.rc = None
        self.saved = None  # the log's text, kept by cleanup() for a dump after it


class Broker:
    """junction on one config in its own temporary directory; data_dir is @DIR@/data (write it
    so in the config). Each start is a Run with its own log file."""

    def __init__(self, config, wait_ports=(), env=None, bin_path=None):
        self.dir = tempfile.mkdtemp(prefix="jn-crash-")
        self.cfg = os.path.join(self.dir, "junction.yaml")
        with open(self.cfg, "w") as f:
            f.write(config.replace("@DIR@", self.dir))
        self.wait_ports = list(wait_ports)
        self.env = dict(os.environ, **(env or {}))
        self.bin = bin_path or jnt.BIN
        self.runs = []
        self.log_f = None

    def path(self, *p):
        return os.path.join(self.dir, *p)

    @property
    def cur(self):
        return self.runs[-1] if self.runs else None

    def alive(self):
        r = self.cur
        return r is not None and r.proc is not None and r.proc.poll() is None

    def start(self, timeout=20.0):
        if self.alive():
            raise RuntimeError("junction is already running")
        r = Run(len(self.runs) + 1, self.path("junction.run%02d.log" % (len(self.runs) + 1)))
        self.runs.append(r)
        self.log_f = open(r.logpath, "ab")
        r.started = time.monotonic()
        # As root (containers) junction run wants --allow-root (docs/security.md).
        root = ["--allow-root"] if os.geteuid() == 0 else []
        r.proc = subprocess.Popen([self.bin, "run"] + root + ["-c", self.cfg], cwd=self.dir,
                                  stdout=self.log_f, stderr=subprocess.STDOUT, env=self.env)
        for p in self.wait_ports:
            if not wait_until(lambda: port_open(p) or r.proc.poll() is not None, timeout):
                raise RuntimeError("junction run %d did not open port %d in %.0fs" %
                                   (r.n, p, timeout))
            if r.proc.poll() is not None:
                self._ended(r, "exited")
                raise RuntimeError("junction run %d exited with %s at start:\n%s" %
                                   (r.n, r.proc.returncode, self.log_tail(r, 100)))
        return self

    def _ended(self, r, how):
        if r.how is None:
            r.how = how
            r.rc = r.proc.returncode
            r.ended = time.monotonic()
        if self.log_f is not None:
            self.log_f.close()
            self.log_f = None

    def check_exited(self):
        """If the current run died on its own, records it and returns True."""
        r = self.cur
        if r is not None and r.how is None and r.proc.poll() is not None:
            self._ended(r, "exited")
            return True
        return False

    def kill9(self):
        """SIGKILL; returns False if junction was already dead (exited on its own)."""
        r = self.cur
        if r is None or r.how is not None:
            return False
        if r.proc.poll() is not None:
            self._ended(r, "exited")
            return False
        r.proc.send_signal(signal.SIGKILL)
        r.proc.wait()
        self._ended(r, "kill9")
        return True

    def restart(self, timeout=20.0):
        if self.alive():
            self.kill9()
        return self.start(timeout)

    def stop(self, timeout=30.0):
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        r = self.cur
        if r is None or r.how is not None:
            return r.rc if r else None
        if r.proc.poll() is not None:
            self._ended(r, "exited")
            return r.rc
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
            self._ended(r, "sigterm-timeout")
            return None
        self._ended(r, "sigterm")
        return r.rc

    def unexpected_exits(self):
        self.check_exited()
        return [r for r in self.runs if r.how in ("exited", "sigterm-timeout")]

    def log(self, r=None):
        r = r or self.cur
        if r is None:
            return ""
        if r.saved is not None:
            return r.saved
        try:
            with open(r.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def all_logs(self):
        return "".join(self.log(r) for r in self.runs)

    def log_tail(self, r=None, n=100):
        lines = self.log(r).splitlines()
        return "\n".join(lines[-n:])

    def dump_logs(self, n=100, runs=None):
        """Prints the last n lines of each run's log (of the given runs, default all)."""
        for r in (runs or self.runs):
            dur = (r.ended or time.monotonic()) - r.started if r.started else 0.0
            print("---- junction run %d (%s, rc %s, %.2fs) last %d lines: %s ----" %
                  (r.n, r.how or "running", r.rc, dur, n, r.logpath))
            print(self.log_tail(r, n))
        sys.stdout.flush()

    def grep(self, pattern):
        rx = re.compile(pattern)
        return [(r.n, line) for r in self.runs for line in self.log(r).splitlines()
                if rx.search(line)]

    def cleanup(self):
        """Kills what still runs and removes the directory; the logs stay readable (in memory)
        so a failure can still print them afterwards."""
        for r in self.runs:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
                if r.how is None:
                    self._ended(r, "killed-at-cleanup")
        if self.log_f is not None:
            self.log_f.close()
            self.log_f = None
        for r in self.runs:
            if r.saved is None:
                r.saved = self.log(r)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Crashing
# ---------------------------------------------------------------------------------------------

def kill_at_random(broker, rng, lo, hi, restart=True, note=print):
    """Sleeps a random lo..hi seconds, SIGKILLs junction, restarts it on the same data_dir and
    config (unless restart is False). Returns (delay, was_alive, seconds to come back)."""
    delay = rng.uniform(lo, hi)
    time.sleep(delay)
    was_alive = broker.kill9()
    if not was_alive:
        note("crash: junction run %d had already exited on its own (rc %s)" %
             (broker.cur.n, broker.cur.rc))
    back = 0.0
    if restart:
        t0 = time.monotonic()
        broker.start()
        back = time.monotonic() - t0
    return delay, was_alive, back


def crash_loop(broker, rng, kills, lo=0.2, hi=1.5, ledger=None, note=print):
    """kills times: wait a random lo..hi s, kill -9, restart. Returns the list of delays."""
    delays = []
    for i in range(kills):
        delay, alive, back = kill_at_random(broker, rng, lo, hi, note=note)
        delays.append(delay)
        extra = ""
        if ledger is not None:
            r = ledger.report()
            extra = ": acked %d, delivered %d, failed sends %d" % (
                r["acknowledged"], r["delivered_unique"], r["failed"])
        note("crash %2d: kill -9 after %.3fs%s, back in %.2fs%s" %
             (i + 1, delay, "" if alive else " (WAS ALREADY DEAD)", back, extra))
    return delays


def wait_delivered(ledger, timeout, note=print, every=5.0):
    """Waits until every acknowledged message was delivered at least once; True if so."""
    end = time.monotonic() + timeout
    last = time.monotonic()
    while True:
        if ledger.all_delivered():
            return True
        now = time.monotonic()
        if now >= end:
            return False
        if now - last >= every:
            last = now
            note("waiting: %d acknowledged message(s) not delivered yet" % len(ledger.missing()))
        time.sleep(0.05)


SANITIZER_RX = r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|" \
               r"ThreadSanitizer|Assertion .* failed"


def check_report(t, ledger, broker=None, expect_acked=None, what="crash"):
    """The checks every crash test makes. Returns the report dict."""
    rep = ledger.report()
    print(ledger.summary(rep), flush=True)
    if expect_acked is not None:
        t.eq(rep["acknowledged"], expect_acked, "%s: acknowledged messages" % what)
    t.eq(rep["lost"], 0, "%s: nothing acknowledged is lost (lost tokens %s)" %
         (what, rep["lost_tokens"][:20]))
    t.eq(rep["corrupt"], [], "%s: every delivered body is exactly what was sent" % what)
    t.eq(rep["unknown"], [], "%s: every delivery matches a sent message" % what)
    t.eq(rep["delivered_unsent"], [], "%s: nothing delivered that was never sent" % what)
    t.eq(rep["delivered_refused"], [], "%s: nothing delivered that was refused" % what)
    t.eq(rep["id_mismatch"], [], "%s: X-Junction-Id is the id from the 202, also on "
         "redelivery" % what)
    t.eq(rep["id_collisions"], [], "%s: every acknowledged message has its own id" % what)
    if broker is not None:
        ex = broker.unexpected_exits()
        t.eq(["run %d rc %s" % (r.n, r.rc) for r in ex], [],
             "%s: junction never exited on its own" % what)
        t.eq(broker.grep(SANITIZER_RX), [], "%s: no sanitizer report" % what)
    return rep
