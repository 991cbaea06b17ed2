"""HTTP IN -> route -> HTTP OUT against a real receiver: exact bytes, path and query, method,
templated headers and X-Junction-Id, Content-Type passed through (or the default), PUT; 503
then 200 is retried once and delivered; 400 is rejected at once with a warn line; a receiver
that is down at first gets the message once it comes up; a request still in flight at stop is
finished by the channel; junction exits 0 on SIGTERM."""
import json
import re
import socket

from jnt import Checks, Junction, Receiver, curl, free_port, wait_until

t = Checks("http_out")
cleanups = []


def start(out_url, retry, extra_out=""):
    """A junction with one HTTP IN and an HTTP OUT to out_url; returns (junction, ingest url)."""
    port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
  out:
    type: http
    direction: out
    url: %s
    headers: { X-Source: "{channel}", X-Msg: "{id}" }
    retry: %s
%s
routes:
  r:
    from: [in]
    to: [out%s]
""" % (port, out_url, retry, extra_out, ", put" if extra_out else ""), wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log (%s) ----\n%s" % (out_url, j.log())))
    j.start()
    return j, "http://127.0.0.1:%d/ingest" % port


def post(url, body, *hdrs):
    """POSTs body to junction's HTTP IN; returns the id from the 202 (or None)."""
    args = []
    for h in hdrs:
        args += ["-H", h]
    status, resp, _ = curl(args + ["--data-binary", body, url])
    t.eq(status, 202, "HTTP IN answers 202")
    try:
        msg_id = json.loads(resp)["id"]
    except (ValueError, KeyError):
        t.check(False, "202 body has an id: %r" % resp)
        return None
    t.eq(len(msg_id), 26, "the id is a 26-character ULID")
    return msg_id


def warn_lines(j, msg_id):
    return [line for line in j.log().splitlines()
            if "[warn]" in line and "[http.out]" in line and "msg=%s" % msg_id in line]


def stays(cond, seconds):
    """True if cond() stays false for the whole time (for asserting that nothing more comes)."""
    return not wait_until(cond, seconds)


try:
    # ---- 1. bytes, path, method, headers; fan-out to a second OUT with PUT ----
    rcv = Receiver([200]).start()
    cleanups.append(rcv.stop)
    rcv_put = Receiver([200]).start()
    cleanups.append(rcv_put.stop)
    j, url = start("http://127.0.0.1:%d/sink?x=1" % rcv.port,
                   "{ attempts: 3, backoff: 50ms, max_backoff: 200ms }",
                   extra_out="""  put:
    type: http
    direction: out
    url: http://127.0.0.1:%d/put
    method: PUT""" % rcv_put.port)
    body = b'{"order": 1}\r\n\x00\xff\xfe binary tail \x01'
    with open(j.path("body.bin"), "wb") as f:
        f.write(body)
    id1 = post(url, "@" + j.path("body.bin"), "Content-Type: application/x-order+json")
    t.check(wait_until(lambda: rcv.count() >= 1, 10), "the receiver gets the message")
    t.check(wait_until(lambda: rcv_put.count() >= 1, 10), "the PUT receiver gets the message")
    if rcv.count() >= 1:
        r = rcv.requests[0]
        t.eq(r["body"], body, "the receiver gets exactly the posted bytes")
        t.eq(r["method"], "POST", "method is POST by default")
        t.eq(r["path"], "/sink?x=1", "path and query as in the url")
        t.eq(r["headers"].get("x-source"), "in", "X-Source: {channel} is the source channel")
        t.eq(r["headers"].get("x-msg"), id1, "X-Msg: {id} is the id from the 202")
        t.eq(r["headers"].get("x-junction-id"), id1, "X-Junction-Id is the id from the 202")
        t.eq(r["headers"].get("content-type"), "application/x-order+json",
             "Content-Type is passed through")
        t.eq(r["headers"].get("content-length"), str(len(body)), "Content-Length")
        t.eq(r["headers"].get("host"), "127.0.0.1:%d" % rcv.port, "Host")
    if rcv_put.count() >= 1:
        r = rcv_put.requests[0]
        t.eq(r["method"], "PUT", "method: PUT is used")
        t.eq(r["path"], "/put", "PUT path")
        t.eq(r["body"], body, "the PUT receiver gets exactly the posted bytes")
        t.eq(r["headers"].get("x-junction-id"), id1, "PUT: X-Junction-Id")
    # No Content-Type on the way in: the default goes out.
    id2 = post(url, "second", "Content-Type:")
    t.check(wait_until(lambda: rcv.count() >= 2, 10), "the receiver gets a second message")
    if rcv.count() >= 2:
        r = rcv.requests[1]
        t.eq(r["body"], b"second", "second body")
        t.eq(r["headers"].get("x-junction-id"), id2, "second X-Junction-Id")
        t.eq(r["headers"].get("content-type"), "application/octet-stream",
             "no Content-Type: application/octet-stream")
    t.check(stays(lambda: rcv.count() > 2, 0.5), "each message is sent once (got %d)" %
            rcv.count())
    t.eq(warn_lines(j, id1), [], "no warn line for a delivered message")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (delivered)")

    # ---- 2. 503, then 200: one retry, delivered ----
    rcv = Receiver([503, 200]).start()
    cleanups.append(rcv.stop)
    j, url = start("http://127.0.0.1:%d/sink?x=1" % rcv.port,
                   "{ attempts: 3, backoff: 50ms, max_backoff: 200ms }")
    mid = post(url, "retry me", "Content-Type: text/plain")
    t.check(wait_until(lambda: rcv.count() >= 2, 10), "503: the receiver gets it again")
    t.check(stays(lambda: rcv.count() > 2, 0.6), "503 then 200: exactly two requests (got %d)" %
            rcv.count())
    t.eq(rcv.bodies(), [b"retry me", b"retry me"], "503 then 200: the same bytes twice")
    t.check(wait_until(lambda: "msg=%s delivered after retries (attempt 2)" % mid in j.log(), 5),
            "503 then 200: delivered on attempt 2")
    w = warn_lines(j, mid)
    t.eq(len(w), 1, "503: one warn line for the retry: %r" % w)
    t.check(any("HTTP 503 Service Unavailable" in line for line in w),
            "503: the warn line says HTTP 503 Service Unavailable: %r" % w)
    t.check("dead-lettered" not in j.log(), "503 then 200: nothing dead-lettered")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (after a retry)")

    # ---- 3. 400: rejected at once, no retry ----
    rcv = Receiver([400]).start()
    cleanups.append(rcv.stop)
    j, url = start("http://127.0.0.1:%d/sink?x=1" % rcv.port,
                   "{ attempts: 3, backoff: 50ms, max_backoff: 200ms }")
    mid = post(url, "bad one", "Content-Type: text/plain")
    t.check(wait_until(lambda: rcv.count() >= 1, 10), "400: the receiver gets it")
    t.check(wait_until(lambda: warn_lines(j, mid), 5), "400: a warn line names the id")
    w = warn_lines(j, mid)
    t.check(any(re.search(r"HTTP 400 Bad Request: ok$", line) for line in w),
            "400: the warn line has the status and the response body: %r" % w)
    t.check(stays(lambda: rcv.count() > 1, 0.6), "400: sent once, no retry (got %d)" %
            rcv.count())
    t.check(wait_until(lambda: re.search(r"msg=%s dead-lettered .*attempts=1" % mid, j.log()), 5),
            "400: dead-lettered after one attempt")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (after a reject)")

    # ---- 4. receiver down, then up: the retry loop delivers ----
    rport = free_port()
    j, url = start("http://127.0.0.1:%d/late" % rport,
                   "{ attempts: 20, backoff: 100ms, max_backoff: 300ms }")
    mid = post(url, "patience", "Content-Type: text/plain")
    t.check(wait_until(lambda: any("cannot connect" in line for line in warn_lines(j, mid)), 10),
            "down: a warn line says it cannot connect: %r" % warn_lines(j, mid))
    rcv = Receiver([200], port=rport).start()
    cleanups.append(rcv.stop)
    t.check(wait_until(lambda: rcv.count() >= 1, 15), "up: the receiver gets the message")
    t.check(stays(lambda: rcv.count() > 1, 0.6), "up: exactly once (got %d)" % rcv.count())
    t.eq(rcv.bodies()[:1], [b"patience"], "up: the exact bytes")
    if rcv.count() >= 1:
        t.eq(rcv.requests[0]["headers"].get("x-junction-id"), mid, "up: X-Junction-Id")
        t.eq(rcv.requests[0]["path"], "/late", "up: path")
    t.check(wait_until(lambda: re.search(r"msg=%s delivered after retries \(attempt \d+\)" % mid, j.log()), 5),
            "up: delivered")
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (after the peer came back)")

    # ---- 5. a request still in flight at shutdown is finished by the channel ----
    # A listener that never accepts: the connection completes in the kernel's backlog, the
    # request is written, and no answer ever comes (timeout 30s > shutdown_timeout 3s).
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cleanups.append(hole.close)
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    j, url = start("http://127.0.0.1:%d/hole" % hole.getsockname()[1],
                   "{ attempts: 3, backoff: 50ms, max_backoff: 200ms }")
    mid = post(url, "in flight", "Content-Type: text/plain")
    t.check(wait_until(lambda: "msg=%s send attempt 1" % mid in j.log(), 5), "hole: sent")
    t.eq(j.stop(), 0, "SIGTERM with a request in flight: junction exits 0")
    t.check("[http.out] msg=%s send cut short by the stop (stopping); it stays queued" % mid
            in j.log(), "hole: the channel finishes the delivery with a retry 'stopping'")
    t.eq(warn_lines(j, mid), [], "hole: the cut-short send is not a failed attempt")
    t.check("shutdown_timeout reached with 1 send(s) in flight; they stay queued" in j.log(),
            "hole: the core says the send stays queued for the next start")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass
t.finish()
