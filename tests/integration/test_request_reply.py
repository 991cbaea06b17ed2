"""Request-reply (issue 17 part 5): HTTP IN `respond: from:` answers with the destination's answer.

A real HTTP server stands in for a legacy API behind junction:
  /ok      201, a JSON body and X-Answer: yes           -> the caller gets exactly that
  /reject  422 with a body (junction: rejected, final)  -> the caller gets the 422 and its body
  /slow    503 for its first 2 s, then 200              -> the caller (timeout 1s) gets 504 with
                                                           the message id; the message stays
                                                           accepted and is delivered later
The route from `ok` also writes to a file: only `respond.from`'s answer is the caller's.
`junction check` refuses a respond.from that is not an OUT channel, or one no route feeds, at
file:line:col.
"""
import http.server
import json
import os
import threading
import time

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("request_reply")
cleanups = []


class Api:
    def __init__(self):
        self.port = free_port()
        self.got = []
        self.t0 = time.monotonic()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.got.append((self.path, body))
                if self.path == "/ok":
                    status, reply, extra = 201, json.dumps({"echo": body.decode(),
                                                            "n": len(outer.got)}).encode(), \
                        [("X-Answer", "yes"), ("Content-Type", "application/json")]
                elif self.path == "/reject":
                    status, reply, extra = 422, b'{"error":"no such patient"}', \
                        [("Content-Type", "application/json")]
                elif time.monotonic() - outer.t0 < 2.0:
                    status, reply, extra = 503, b"busy", []
                else:
                    status, reply, extra = 200, b"finally", []
                self.send_response(status)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *a):
                pass
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


CFG = """junction:
  data_dir: @DIR@/data
channels:
  ok: { type: http, direction: in, listen: "127.0.0.1:%(a)d", path: /q, respond: { from: ok-api } }
  rej: { type: http, direction: in, listen: "127.0.0.1:%(b)d", path: /q, respond: { from: rej-api } }
  slow: { type: http, direction: in, listen: "127.0.0.1:%(c)d", path: /q,
          respond: { from: slow-api, timeout: 1s } }
  ok-api: { type: http, direction: out, url: "http://127.0.0.1:%(api)d/ok" }
  rej-api: { type: http, direction: out, url: "http://127.0.0.1:%(api)d/reject" }
  slow-api: { type: http, direction: out, url: "http://127.0.0.1:%(api)d/slow",
              retry: { attempts: 100, backoff: 200ms, max_backoff: 300ms } }
  archive: { type: file, direction: out, dir: "@DIR@/archive" }
routes:
  r-ok: { from: [ok], to: [ok-api, archive] }
  r-rej: { from: [rej], to: [rej-api] }
  r-slow: { from: [slow], to: [slow-api] }
"""

try:
    api = Api()
    cleanups.append(api.stop)
    a, b, c = free_port(), free_port(), free_port()
    j = Junction(CFG % dict(a=a, b=b, c=c, api=api.port), wait_ports=[a, b, c])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-3000:]))
    j.start()

    code, out, hdrs = curl(["-X", "POST", "--data-binary", "hello",
                            "http://127.0.0.1:%d/q" % a])
    out = out.decode()
    t.eq(code, 201, "respond: the destination's status")
    t.check('"echo": "hello"' in out and '"n": 1' in out, "and its body: %r" % out[-200:])
    low = hdrs.lower()
    t.check("x-answer: yes" in low and "content-type: application/json" in low,
            "and its headers: %r" % hdrs[:400])
    t.check("x-junction-id:" in low, "with the message id")
    t.check(wait_until(lambda: os.path.isdir(j.path("archive")) and
                       len(os.listdir(j.path("archive"))) == 1, 10),
            "the route's other destination got it too")

    code, out, _ = curl(["-X", "POST", "--data-binary", "who", "http://127.0.0.1:%d/q" % b])
    out = out.decode()
    t.eq(code, 422, "a rejecting destination: its status")
    t.check("no such patient" in out, "and its body: %r" % out)

    t0 = time.monotonic()
    code, out, _ = curl(["-X", "POST", "--data-binary", "later", "http://127.0.0.1:%d/q" % c])
    out = out.decode()
    took = time.monotonic() - t0
    t.eq(code, 504, "no final answer within the timeout: 504")
    t.check("stays accepted" in out and "slow-api" in out, "saying the message stays: %r" % out)
    t.check(0.8 < took < 5, "after about the timeout (%.1fs)" % took)
    t.check(any(p == "/slow" and body == b"later" for p, body in api.got), "the API was tried")
    t.check(wait_until(lambda: "delivered after retries" in j.log(), 15),
            "the message is delivered once the API answers 200 (the log says so)")
    t.eq(j.stop(), 0, "stops cleanly")

    bad = (CFG % dict(a=a, b=b, c=c, api=api.port)).replace("from: rej-api", "from: nowhere")
    bad = bad.replace("respond: { from: slow-api, timeout: 1s }",
                      "respond: { from: archive, timeout: 1s }")
    path = os.path.join(j.dir, "bad.yaml")
    with open(path, "w") as f:
        f.write(bad.replace("@DIR@", j.dir))
    rc, out, err = run_junction(["check", "-c", path])
    t.check(rc == 1 and "bad.yaml:5:" in err and "respond.from: 'nowhere' is not a channel" in err,
            "check: an unknown respond.from at file:line:col: %r" % err)
    t.check("bad.yaml:7:" in err and "no route from 'slow' feeds 'archive'" in err,
            "check: a respond.from no route feeds: %r" % err)
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
