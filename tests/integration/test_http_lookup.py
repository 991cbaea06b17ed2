"""jn-it-http-lookup: the http-lookup service against a real HTTP server on 127.0.0.1.

HTTP IN -> http-lookup -> file OUT, the lookup served by a Python http.server (jnt.Receiver
with an answer function) that records every request:
- a field of the JSON answer is put into the JSON payload (into: json.PATH), the URL built
  from a header; a second message with the same key is served from the cache (the server sees
  one GET); a key with a slash is percent-encoded in the path; past max_entries the oldest
  answer is dropped;
- into: header.NAME with a field of the answer: the file name template reads the header;
- into: json merges the answer object, the URL built from a JSON field of the payload;
- a server that does not answer within timeout: the message is dead-lettered with "timed
  out", and the next message flows; a 404 with on_error: fail is dead-lettered naming the
  status; with on_error: skip the message is delivered unchanged; an answer that is not JSON
  is dead-lettered with the parser's reason;
- `junction check` refuses an https URL, a bad into and a placeholder that does not parse.
"""
import json
import os
import re
import threading
import time

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until

t = Checks("http-lookup")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  log_level: info
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
    path: /ingest
  out:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.X-Case}-{header.X-Family}-{id}.json"
services:
  patient:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/patients/{header.patient-id}
    field: name
    into: json.patient.name
    timeout: 5s
    cache: {ttl: 10m, max_entries: 2}
  family:
    type: http-lookup
    url: "http://127.0.0.1:%(rport)d/patients/{header.patient-id}?from={channel}"
    field: name.family
    into: header.X-Family
  merge:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/orders/{json.order.id}
    into: json
  slow:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/slow/{header.patient-id}
    into: header.X-Family
    timeout: 300ms
  missing-fail:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/missing/{header.patient-id}
    into: header.X-Family
  missing-skip:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/missing/{header.patient-id}
    into: header.X-Family
    on_error: skip
  notjson:
    type: http-lookup
    url: http://127.0.0.1:%(rport)d/text/{header.patient-id}
    into: json
routes:
  p:
    from: in
    when: header("X-Case") == "p"
    via: [patient]
    to: out
  f:
    from: in
    when: header("X-Case") == "f"
    via: [family]
    to: out
  m:
    from: in
    when: header("X-Case") == "m"
    via: [merge]
    to: out
  slow:
    from: in
    when: header("X-Case") == "slow"
    via: [slow]
    to: out
  fail:
    from: in
    when: header("X-Case") == "fail"
    via: [missing-fail]
    to: out
  skip:
    from: in
    when: header("X-Case") == "skip"
    via: [missing-skip]
    to: out
  nj:
    from: in
    when: header("X-Case") == "nj"
    via: [notjson]
    to: out
"""

BAD_CONFIG = """
channels:
  in: {type: http, direction: in, listen: 127.0.0.1:1, path: /x}
  out: {type: file, direction: out, dir: out}
services:
  tls:
    type: http-lookup
    url: https://127.0.0.1:1/p/{id}
    into: json
  where:
    type: http-lookup
    url: http://127.0.0.1:1/p/{id}
    into: body.x
  ph:
    type: http-lookup
    url: http://127.0.0.1:1/p/{json.a..b}
    into: json
routes:
  r: {from: in, via: [tls, where, ph], to: out}
"""

PATIENTS = {
    "42": {"name": {"family": "DOE", "given": "JANE"}, "mrn": "42"},
    "a/b": {"name": {"family": "SLASH"}},
    "7": {"name": {"family": "ROE"}},
}
release = threading.Event()


def answer(path):
    m = re.match(r"^/patients/([^?]*)", path)
    if m:
        key = m.group(1).replace("%2F", "/")
        if key in PATIENTS:
            return 200, json.dumps(PATIENTS[key]).encode()
        return 404, b"{}"
    if path.startswith("/orders/"):
        return 200, b'{"status":"open","lines":2}'
    if path.startswith("/slow/"):
        release.wait(10)  # well past the 300 ms timeout; released at the end of the test
        return 200, b'{"late":true}'
    if path.startswith("/text/"):
        return 200, b"hello"
    return 404, b"not here"


def post(port, case, body, pid="42"):
    code, out, _ = curl(["-X", "POST", "-H", "X-Case: " + case, "-H", "patient-id: " + pid,
                         "--data-binary", body, "http://127.0.0.1:%d/ingest" % port])
    m = re.search(rb'"id":"([0-9A-Z]+)"', out)
    return code, (m.group(1).decode() if m else None)


def files(j):
    d = j.path("out")
    res = {}
    if os.path.isdir(d):
        for n in os.listdir(d):
            if not n.startswith("."):
                with open(os.path.join(d, n), "rb") as f:
                    res[n] = f.read()
    return res


def by_id(j, mid):
    return next(((n, b) for n, b in files(j).items() if mid in n), (None, None))


def dlq(j):
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    return out + err


def dl_line(j, mid):
    return next((ln for ln in dlq(j).splitlines() if mid in ln), "")


def paths(r):
    with r.lock:
        return [q["path"] for q in r.requests]


try:
    r = Receiver(answer=answer).start()
    cleanups.append(r.stop)
    cleanups.insert(0, release.set)
    port = free_port()
    j = Junction(CONFIG % {"port": port, "rport": r.port}, wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    code, out, err = run_junction(["check", "-c", j.cfg])
    t.eq(code, 0, "junction check accepts the config: %s%s" % (out, err))
    j.start()

    # ---- into: json.PATH, a field of the answer, the cache ----
    code, a = post(port, "p", '{"order":1}')
    t.eq(code, 202, "POST: 202")
    t.check(wait_until(lambda: by_id(j, a)[1] is not None, 10), "the enriched message is "
            "delivered")
    t.eq(by_id(j, a)[1], b'{"order":1,"patient":{"name":{"family":"DOE","given":"JANE"}}}',
         "the answer's name put at patient.name")
    code, b = post(port, "p", '{"order":2,"patient":{"ward":"3"}}')
    t.check(wait_until(lambda: by_id(j, b)[1] is not None, 10), "the second is delivered")
    t.eq(by_id(j, b)[1], b'{"order":2,"patient":{"ward":"3","name":{"family":"DOE",'
         b'"given":"JANE"}}}', "into an existing object, its members kept")
    t.eq(paths(r).count("/patients/42"), 1, "the same key: one GET, the second from the cache "
         "(%r)" % paths(r))
    with r.lock:
        first = dict(r.requests[0])
    t.eq((first["method"], first["headers"].get("host"), first["headers"].get("accept")),
         ("GET", "127.0.0.1:%d" % r.port, "application/json"), "a GET with Host and Accept")
    code, c = post(port, "p", '{"order":3}', pid="a/b")
    t.check(wait_until(lambda: by_id(j, c)[1] is not None, 10), "a key with a slash is looked "
            "up")
    t.check("/patients/a%2Fb" in paths(r), "percent-encoded in the path: %r" % paths(r))
    t.eq(by_id(j, c)[1], b'{"order":3,"patient":{"name":{"family":"SLASH"}}}', "and enriched")

    # max_entries: 2 (42 and a/b are kept): a third key drops the oldest, 42, which is then
    # fetched again; a/b is still kept.
    code, d = post(port, "p", '{"order":4}', pid="7")
    t.check(wait_until(lambda: by_id(j, d)[1] is not None, 10), "a third key is looked up")
    code, e2 = post(port, "p", '{"order":5}', pid="a/b")
    t.check(wait_until(lambda: by_id(j, e2)[1] is not None, 10), "a/b again")
    code, e = post(port, "p", '{"order":6}')
    t.check(wait_until(lambda: by_id(j, e)[1] is not None, 10), "42 again")
    t.eq((paths(r).count("/patients/42"), paths(r).count("/patients/a%2Fb")), (2, 1),
         "the oldest entry was dropped for the third key, the other kept: %r" % paths(r))

    # ---- into: header.NAME; the url with a query ----
    code, f = post(port, "f", "plain text")
    t.check(wait_until(lambda: by_id(j, f)[0] is not None, 10), "delivered")
    t.check((by_id(j, f)[0] or "").startswith("f-DOE-"), "the header set from name.family "
            "names the file: %r" % by_id(j, f)[0])
    t.eq(by_id(j, f)[1], b"plain text", "the payload is unchanged")
    t.check("/patients/42?from=in" in paths(r), "the query as written: %r" % paths(r))

    # ---- into: json, the url from a JSON field ----
    code, m = post(port, "m", '{"order":{"id":"A 7"}}')
    t.check(wait_until(lambda: by_id(j, m)[1] is not None, 10), "delivered")
    t.eq(by_id(j, m)[1], b'{"order":{"id":"A 7"},"status":"open","lines":2}',
         "the answer's members merged")
    t.check("/orders/A%207" in paths(r), "a space encoded: %r" % paths(r))

    # ---- failures ----
    code, s = post(port, "slow", "x")
    code, after = post(port, "f", "after the slow one")
    code, nf = post(port, "fail", "x", pid="nobody")
    code, sk = post(port, "skip", "skipped through", pid="nobody")
    code, nj = post(port, "nj", '{"a":1}')
    t.check(wait_until(lambda: all(i in dlq(j) for i in (s, nf, nj)), 15),
            "the slow, the 404 and the not-JSON ones reach the dead letters")
    t.check("http-lookup: GET http://127.0.0.1:%d/slow/42: timed out" % r.port in dl_line(j, s),
            "the slow one: timed out: %r" % dl_line(j, s))
    t.check("http-lookup: GET http://127.0.0.1:%d/missing/nobody answered 404" % r.port
            in dl_line(j, nf), "on_error: fail: the status named: %r" % dl_line(j, nf))
    t.check("the answer is not JSON" in dl_line(j, nj), "not JSON: the parser's reason: %r"
            % dl_line(j, nj))
    t.check(wait_until(lambda: by_id(j, after)[1] is not None, 10),
            "the message after the slow one is delivered")
    t.check(wait_until(lambda: by_id(j, sk)[1] is not None, 10),
            "on_error: skip: delivered")
    t.eq(by_id(j, sk)[1], b"skipped through", "unchanged")
    t.check((by_id(j, sk)[0] or "").startswith("skip--"), "without the header: %r"
            % by_id(j, sk)[0])
    t.check("on_error: skip" in j.log(), "and the failure logged")

    # ---- junction check ----
    bad = j.path("bad.yaml")
    with open(bad, "w") as fh:
        fh.write(BAD_CONFIG)
    code, out, err = run_junction(["check", "-c", bad])
    t.eq(code, 1, "junction check refuses the bad config")
    msgs = out + err
    for want in ("%s:8:10: service 'tls' (http-lookup): url: the scheme 'https' is not "
                 "supported" % bad,
                 "%s:13:11: service 'where' (http-lookup): into: 'body.x': expected "
                 "header.NAME" % bad,
                 "%s:16:10: service 'ph' (http-lookup): url: http-lookup: {json.a..b}: an "
                 "empty step in the JSON path" % bad):
        t.check(want in msgs, "check says %r:\n%s" % (want, msgs))

    release.set()
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "junction exits 0 on SIGTERM")
finally:
    for cl in cleanups:
        cl()
t.finish()
