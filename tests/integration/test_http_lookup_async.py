"""jn-it-http_lookup_async: http-lookup without blocking the routing, and its retries.

HTTP IN -> http-lookup -> HTTP OUT (ordered: fifo) to a recording receiver; the lookups are
served by a Python server on 127.0.0.1 that records how many GETs it holds at once:
  (a) /slow/N answers {"v": N} after 0.5 s and less for later N (so later lookups end
      first): 20 messages -> the server held >= 2 GETs at once, and the OUT receiver got all
      20 enriched, in the order they were accepted;
  (b) /flaky/K answers 503 twice, then 200: the message is enriched, the server saw 3 GETs;
  (c) /down/K always 503: dead letter after 1 + retries attempts, the reason says so;
  (d) /nf/K 404: not retried (1 GET), dead letter;
  (e) a stop while lookups hang (/hang/): junction stops, the messages stay in the inbox and
      are routed and delivered after the next start, once the lookups answer.
"""
import json
import re
import threading
import time

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until

t = Checks("http_lookup_async")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(port)d", path: /ingest }
  out: { type: http, direction: out, url: "http://127.0.0.1:%(oport)d/out", ordered: fifo }
services:
  slow:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/slow/{json.n}
    into: json.lookup
    timeout: 5s
  flaky:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/flaky/{json.n}
    into: json.lookup
    retry_delay: 100ms
  down:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/down/{json.n}
    into: json.lookup
    retry_delay: 100ms
  nf:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/nf/{json.n}
    into: json.lookup
    retry_delay: 100ms
  hang:
    type: http-lookup
    url: http://127.0.0.1:%(lport)d/hang/{json.n}
    into: json.lookup
    timeout: 60s
routes:
  slow: { from: in, when: header("X-Case") == "slow", via: [slow], to: out }
  flaky: { from: in, when: header("X-Case") == "flaky", via: [flaky], to: out }
  down: { from: in, when: header("X-Case") == "down", via: [down], to: out }
  nf: { from: in, when: header("X-Case") == "nf", via: [nf], to: out }
  hang: { from: in, when: header("X-Case") == "hang", via: [hang], to: out }
"""


class Lookups:
    """The lookup server's answers, with the most GETs it held at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.hits = {}
        self.release = threading.Event()

    def answer(self, path):
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.hits[path] = self.hits.get(path, 0) + 1
            n = self.hits[path]
        try:
            kind, key = path.split("/")[1:3]
            if kind == "slow":
                time.sleep(max(0.1, 0.5 - int(key) * 0.02))
                return 200, json.dumps({"v": int(key)}).encode()
            if kind == "flaky":
                return (503, b"busy") if n <= 2 else (200, b'{"v": "flaky"}')
            if kind == "down":
                return 503, b"down"
            if kind == "nf":
                return 404, b"no such thing"
            if kind == "hang":
                self.release.wait(30)
                return 200, b'{"v": "after restart"}'
            return 500, b"?"
        finally:
            with self.lock:
                self.inflight -= 1


def post(port, case, n):
    code, out, _ = curl(["-X", "POST", "-H", "X-Case: " + case, "--data-binary",
                         json.dumps({"n": n}), "http://127.0.0.1:%d/ingest" % port])
    m = re.search(rb'"id":"([0-9A-Z]+)"', out)
    return code, (m.group(1).decode() if m else None)


def dl_line(j, mid):
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    return next((ln for ln in (out + err).splitlines() if mid in ln), "")


def got(out):
    res = []
    for b in out.bodies():
        try:
            res.append(json.loads(b))
        except ValueError:
            res.append(b)
    return res


try:
    lk = Lookups()
    cleanups.append(lk.release.set)
    lr = Receiver(answer=lk.answer).start()
    cleanups.append(lr.stop)
    out = Receiver().start()
    cleanups.append(out.stop)
    port = free_port()
    j = Junction(CONFIG % {"port": port, "lport": lr.port, "oport": out.port}, wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    code, o, e = run_junction(["check", "-c", j.cfg])
    t.eq(code, 0, "junction check accepts the config: %s%s" % (o, e))
    j.start()

    # (a) several lookups at once, results in acceptance order
    for n in range(20):
        code, _ = post(port, "slow", n)
        t.eq(code, 202, "message %d accepted" % n)
    t.check(wait_until(lambda: out.count() >= 20, 30), "all 20 delivered (%d)" % out.count())
    bodies = got(out)
    t.eq([b.get("n") if isinstance(b, dict) else b for b in bodies], list(range(20)),
         "in the order they were accepted (ordered: fifo)")
    t.check(all(isinstance(b, dict) and b.get("lookup") == {"v": b.get("n")} for b in bodies),
            "each enriched with its own answer: %r" % bodies[:3])
    t.check(lk.max_inflight >= 2, "the lookup server held %d GETs at once (>= 2)"
            % lk.max_inflight)

    # (b) 503, 503, then 200
    code, b_id = post(port, "flaky", 1)
    t.check(wait_until(lambda: out.count() >= 21, 15), "the flaky one is delivered")
    t.eq(got(out)[-1], {"n": 1, "lookup": {"v": "flaky"}}, "enriched after two 503s")
    t.eq(lk.hits.get("/flaky/1"), 3, "the server saw 3 GETs")

    # (c) always 503: 1 + retries (2) attempts, then the dead letter
    code, c_id = post(port, "down", 2)
    t.check(wait_until(lambda: "answered 503 (3 attempts)" in dl_line(j, c_id), 15),
            "always 503: dead letter after 3 attempts, saying so: %r" % dl_line(j, c_id))
    t.eq(lk.hits.get("/down/2"), 3, "the server saw 3 GETs")

    # (d) 404: no retry
    code, d_id = post(port, "nf", 3)
    t.check(wait_until(lambda: "answered 404 (1 attempt, not retried" in dl_line(j, d_id), 15),
            "404: dead letter, not retried: %r" % dl_line(j, d_id))
    t.eq(lk.hits.get("/nf/3"), 1, "the server saw 1 GET")
    t.eq(out.count(), 21, "neither reached the destination")

    # (e) a stop with lookups in flight
    ids = [post(port, "hang", 10 + k)[1] for k in range(3)]
    t.check(wait_until(lambda: lk.inflight >= 3, 10), "3 lookups hang at the server (%d)"
            % lk.inflight)
    t0 = time.monotonic()
    t.eq(j.stop(), 0, "junction stops with lookups in flight")
    t.check(time.monotonic() - t0 < 10, "without waiting for the lookups' 60 s timeout")
    t.eq(out.count(), 21, "nothing of them was delivered")
    lk.release.set()
    j.start()
    t.check(wait_until(lambda: out.count() >= 24, 20), "after the restart the 3 are routed "
            "again and delivered (%d)" % out.count())
    t.eq(sorted(b.get("n") for b in got(out)[21:] if isinstance(b, dict)), [10, 11, 12],
         "the three hung ones, each once")
    t.check(all(isinstance(b, dict) and b.get("lookup") == {"v": "after restart"}
                for b in got(out)[21:]), "enriched: %r" % got(out)[21:])
    t.eq(j.stop(), 0, "stops cleanly")
except Exception as e:
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    for c_ in reversed(cleanups):
        try:
            c_()
        except Exception:
            pass
t.finish()
