"""Request-reply's `respond: response_via:` (issue 17 part 5): the destination's answer goes
through services before the caller gets it.

A real HTTP server stands in for the API: it answers 201 {"patient": {"name": "DOE"}, "n": N}
with X-Answer: yes. Four HTTP INs respond from it:
  shape   via [reshape (json-map), stamp (lua)]: json-map renames patient.name to name; the
          script sets http-status 200, a header from the old one, and adds the status it saw
  fail    via [boom (lua error)]     -> 502 whose reason names the service and its error
  drop    via [drop (lua nil)]       -> 502 saying the service dropped the answer
  badst   via [badstatus (lua)]      -> 502: http-status "abc" is not a status
In every case the message itself is delivered as usual (the API saw each request once).
`junction check` refuses an unknown response_via service at file:line:col.
"""
import http.server
import json
import os
import threading

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("response_via")
cleanups = []


class Api:
    def __init__(self):
        self.port = free_port()
        self.got = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.got.append(self.rfile.read(n))
                reply = json.dumps({"patient": {"name": "DOE"}, "n": len(outer.got)}).encode()
                self.send_response(201)
                self.send_header("X-Answer", "yes")
                self.send_header("Content-Type", "application/json")
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
  shape: { type: http, direction: in, listen: "127.0.0.1:%(a)d", path: /q,
           respond: { from: api, response_via: [reshape, stamp] } }
  fail: { type: http, direction: in, listen: "127.0.0.1:%(b)d", path: /q,
          respond: { from: api, response_via: [boom] } }
  drop: { type: http, direction: in, listen: "127.0.0.1:%(c)d", path: /q,
          respond: { from: api, response_via: [drop] } }
  badst: { type: http, direction: in, listen: "127.0.0.1:%(d)d", path: /q,
           respond: { from: api, response_via: [badstatus] } }
  api: { type: http, direction: out, url: "http://127.0.0.1:%(api)d/x" }
services:
  reshape:
    type: json-map
    rename: { patient.name: name }
    remove: [patient]
  stamp:
    type: lua
    source: |
      function process(msg)
        local j = junction.json.decode(msg.payload)
        j.was = msg.headers["http-status"]
        j.id = msg.id
        msg.payload = junction.json.encode(j)
        msg.headers["http-status"] = "200"
        msg.headers["X-Seen"] = msg.headers["x-answer"]
        msg.headers["X-Answer"] = nil
        return msg
      end
  boom:
    type: lua
    source: |
      function process(msg) error("no shape for this answer", 0) end
  drop:
    type: lua
    source: |
      function process(msg) return nil end
  badstatus:
    type: lua
    source: |
      function process(msg) msg.headers["http-status"] = "abc"; return msg end
routes:
  r: { from: [shape, fail, drop, badst], to: [api] }
"""

try:
    api = Api()
    cleanups.append(api.stop)
    a, b, c, d = free_port(), free_port(), free_port(), free_port()
    cfg = CFG % dict(a=a, b=b, c=c, d=d, api=api.port)
    j = Junction(cfg, wait_ports=[a, b, c, d])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-3000:]))
    j.start()

    code, out, hdrs = curl(["-X", "POST", "--data-binary", "one", "http://127.0.0.1:%d/q" % a])
    low = hdrs.lower()
    t.eq(code, 200, "the status the lua service set (the API said 201)")
    try:
        body = json.loads(out)
    except ValueError:
        body = None
    t.check(body is not None and body.get("name") == "DOE" and "patient" not in body,
            "json-map reshaped the body: %r" % out[:300])
    t.check(body is not None and body.get("was") == "201",
            "the services saw the answer's status as http-status: %r" % out[:300])
    t.check(body is not None and isinstance(body.get("id"), str) and
            ("x-junction-id: %s" % body.get("id", "?")).lower() in low,
            "the answer message carries the message's id: %r / %r" % (out[:200], hdrs[:300]))
    t.check("x-seen: yes" in low and "x-answer:" not in low,
            "headers set and removed by the service: %r" % hdrs[:400])
    t.check("content-type: application/json" in low, "the answer's other headers stay")

    code, out, _ = curl(["-X", "POST", "--data-binary", "two", "http://127.0.0.1:%d/q" % b])
    out = out.decode() if isinstance(out, bytes) else out
    t.eq(code, 502, "a failing service: 502")
    t.check("service 'boom' (lua) failed" in out and "no shape for this answer" in out,
            "its reason names the service and its error: %r" % out)

    code, out, _ = curl(["-X", "POST", "--data-binary", "three", "http://127.0.0.1:%d/q" % c])
    out = out.decode() if isinstance(out, bytes) else out
    t.eq(code, 502, "a service that drops the answer: 502")
    t.check("service 'drop' (lua) dropped the answer" in out, "saying so: %r" % out)

    code, out, _ = curl(["-X", "POST", "--data-binary", "four", "http://127.0.0.1:%d/q" % d])
    out = out.decode() if isinstance(out, bytes) else out
    t.eq(code, 502, "an http-status that is no status: 502")
    t.check("http-status 'abc' is not a status" in out, "saying so: %r" % out)

    t.eq(sorted(api.got), sorted([b"one", b"two", b"three", b"four"]),
         "each message was delivered once, whatever became of its answer")
    t.check(wait_until(lambda: "response_via: service 'boom'" in j.log(), 5),
            "the log says which service failed")
    t.eq(j.stop(), 0, "stops cleanly")

    bad = cfg.replace("response_via: [boom]", "response_via: [boom, nope, stmp]")
    path = os.path.join(j.dir, "bad.yaml")
    with open(path, "w") as f:
        f.write(bad.replace("@DIR@", j.dir))
    rc, out, err = run_junction(["check", "-c", path])
    t.check(rc == 1 and "bad.yaml:7:54:" in err and "unknown service 'nope'" in err,
            "check: an unknown response_via service at file:line:col: %r" % err)
    t.check("bad.yaml:7:60:" in err and "unknown service 'stmp' (did you mean 'stamp'?)" in err,
            "check: with the nearest name: %r" % err)
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
