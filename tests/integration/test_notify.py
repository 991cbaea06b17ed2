"""Callbacks: a route's notify: URL gets a signed JSON POST when its message fails an attempt,
is delivered, or is dead-lettered; the signature verifies with the shared secret."""
import base64
import hashlib
import hmac
import json
import time

from jnt import Checks, Junction, Receiver, curl, free_port, wait_until

t = Checks("notify")
port = free_port()
dest = Receiver(responses=[503, 200]).start()      # first attempt fails, then delivered
reject = Receiver(responses=[400]).start()         # refused: dead-lettered at once
cb = Receiver(responses=[200]).start()             # the callback receiver
SECRET = "s3cr3t-key"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in: { type: http, direction: in, listen: 127.0.0.1:%d }
  dest:
    type: http
    direction: out
    url: http://127.0.0.1:%d/d
    retry: { attempts: 5, backoff: 20ms, max_backoff: 50ms }
  picky:
    type: http
    direction: out
    url: http://127.0.0.1:%d/p
routes:
  good:
    from: [in]
    when: header("X-To") == "dest"
    to: [dest]
    notify: http://127.0.0.1:%d/callbacks
    notify_secret: %s
    notify_webhook_secret: %s
  bad:
    from: [in]
    when: header("X-To") == "picky"
    to: [picky]
    notify: http://127.0.0.1:%d/callbacks
    notify_on: [dead-lettered]
""" % (port, dest.port, reject.port, cb.port, SECRET, WHSEC, cb.port), wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    j.start()
    st, resp, _ = curl(["-H", "X-To: dest", "--data-binary", "hello", "http://127.0.0.1:%d/ingest" % port])
    t.eq(st, 202, "accepted")
    mid = json.loads(resp)["id"]
    t.check(wait_until(lambda: cb.count() >= 2, 15), "two callbacks arrive (got %d)" % cb.count())
    reqs = sorted(cb.requests[:2], key=lambda r: json.loads(r["body"])["status"] != "failed")
    bodies = [json.loads(r["body"]) for r in reqs]
    t.eq([b["status"] for b in bodies], ["failed", "delivered"], "failed, then delivered")
    for r, b in zip(reqs, bodies):
        t.eq((b["id"], b["route"], b["destination"]), (mid, "good", "dest"), "callback names "
             "the message, route and destination")
        t.eq(r["path"], "/callbacks", "posted to the notify path")
        t.eq(r["headers"].get("content-type"), "application/json", "JSON content type")
        t.eq(r["headers"].get("x-junction-event"), b["status"], "event header")
        sig = r["headers"].get("x-junction-signature", "")
        parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
        ts = parts.get("t", "0")
        want = hmac.new(SECRET.encode(), ts.encode() + b"." + r["body"], hashlib.sha256).hexdigest()
        t.check(parts.get("v1") == want, "the signature verifies: %r" % sig)
        t.check(abs(int(ts) - time.time()) < 60, "the signed time is now")
        # Standard Webhooks, as the spec's reference verifies it: HMAC-SHA256 over
        # id.timestamp.body with the base64-decoded secret after whsec_.
        h = r["headers"]
        wid, wts = h.get("webhook-id", ""), h.get("webhook-timestamp", "0")
        mac = hmac.new(base64.b64decode(WHSEC[6:]), ("%s.%s." % (wid, wts)).encode() + r["body"],
                       hashlib.sha256).digest()
        t.check(wid and ("v1," + base64.b64encode(mac).decode()) in
                h.get("webhook-signature", "").split(" "),
                "the Standard Webhooks signature verifies: %r" % h.get("webhook-signature"))
    t.check(reqs[0]["headers"].get("webhook-id") != reqs[1]["headers"].get("webhook-id"),
            "each callback has its own webhook-id")
    t.eq(bodies[0]["attempts"], 1, "failed on attempt 1")
    t.check("503" in (bodies[0]["error"] or ""), "the failure says why: %r" % bodies[0]["error"])
    t.eq(bodies[1]["attempts"], 2, "delivered on attempt 2")
    t.check("error" not in bodies[1] or bodies[1]["error"] is None, "no error when delivered")
    t.check(bodies[1]["time"].endswith("Z") and "T" in bodies[1]["time"], "ISO 8601 UTC time")

    st, resp, _ = curl(["-H", "X-To: picky", "--data-binary", "nope", "http://127.0.0.1:%d/ingest" % port])
    bad_id = json.loads(resp)["id"]
    t.check(wait_until(lambda: cb.count() >= 3, 15), "a dead-letter callback arrives")
    last = json.loads(cb.requests[-1]["body"])
    t.eq((last["id"], last["status"], last["destination"], last["attempts"]),
         (bad_id, "dead-lettered", "picky", 1), "dead-lettered callback")
    t.check("HTTP 400" in last["error"], "with the reason: %r" % last["error"])
    t.check("x-junction-signature" not in cb.requests[-1]["headers"] and
            "webhook-signature" not in cb.requests[-1]["headers"], "no secret: no signature")
    time.sleep(0.3)
    t.eq(cb.count(), 3, "notify_on: [dead-lettered] sends nothing else")
    t.eq(j.stop(), 0, "exit 0")
finally:
    j.cleanup()
    for r in (dest, reject, cb):
        r.stop()
t.finish()
