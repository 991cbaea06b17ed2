"""The admin listener (issue 14, first part): /health, /ready, /metrics and /api/v1/status,
channels and routes, against the running binary with curl and a real HTTP receiver.

- /health 200; /ready 200 once every channel has started; /ready 503 naming "shutting down"
  while a SIGTERM waits for a send in flight.
- Sending N messages moves the counters by exactly N (received, routed, delivered), in
  /metrics and in /api/v1/channels and routes; `promtool check metrics` accepts the page.
- Errors are JSON: 404 for an unknown path, 405 (with Allow) for POST on a GET endpoint.
- admin_token: no header or a wrong token 401 (with WWW-Authenticate), the right one 200.
- Beyond loopback without a token junction refuses to start, naming admin_token; an admin
  address that is set and taken stops the start; the default 127.0.0.1:8081 taken is only a
  warning.
"""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until

t = Checks("admin")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 5s
  admin: 127.0.0.1:%(admin)d
%(extra)s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(http_in)d
    path: /ingest
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%(rcv)d/sink
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
services:
  stamp:
    type: set-header
    set: { X-Stamped: "yes" }
routes:
  r:
    from: [in]
    via: [stamp]
    to: [out]
"""


def get(port, path, hdrs=()):
    args = []
    for h in hdrs:
        args += ["-H", h]
    return curl(args + ["http://127.0.0.1:%d%s" % (port, path)])


def get_json(port, path, hdrs=()):
    code, body, _ = get(port, path, hdrs)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, {"unparsed": body.decode("utf-8", "replace")}


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def post(port, body):
    code, _, _ = curl(["-X", "POST", "--data-binary", body,
                       "http://127.0.0.1:%d/ingest" % port])
    return code


try:
    admin, http_in, rcv_port = free_port(), free_port(), free_port()
    rcv = Receiver([200], port=rcv_port).start()
    cleanups.append(rcv.stop)
    j = Junction(CONFIG % dict(admin=admin, http_in=http_in, rcv=rcv_port, extra=""),
                 wait_ports=[http_in, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()

    # ---- health and readiness ----
    code, body = get_json(admin, "/health")
    t.eq((code, body), (200, {"status": "up"}), "/health: 200 up")
    code, body = get_json(admin, "/ready")
    t.eq((code, body), (200, {"ready": True}), "/ready: 200 once the channels have started")

    # ---- counters move by exactly the messages sent ----
    _, before, _ = get(admin, "/metrics")
    before = before.decode()
    n = 7
    codes = [post(http_in, "m-%d" % i) for i in range(n)]
    t.eq(codes, [202] * n, "seven POSTs: 202")
    t.check(wait_until(lambda: rcv.count() >= n, 10), "the receiver got them")
    time.sleep(0.2)
    code, after, hdrs = get(admin, "/metrics")
    after = after.decode()
    t.eq(code, 200, "/metrics: 200")
    t.check("text/plain; version=0.0.4" in hdrs, "/metrics: the 0.0.4 text format")
    for name, labels in (("junction_messages_received_total", '{channel="in"}'),
                         ("junction_messages_routed_total", '{route="r"}'),
                         ("junction_messages_delivered_total", '{channel="out"}')):
        b, a = metric(before, name, labels), metric(after, name, labels)
        t.check(b is not None and a is not None and a - b == n,
                "%s%s moved by exactly %d (%r -> %r)" % (name, labels, n, b, a))
    # Histograms: one commit sample per accepted message, one delivery sample per delivery.
    for name, labels in (("junction_commit_seconds_count", ""),
                         ("junction_delivery_seconds_count", '{channel="out"}'),
                         ("junction_commit_seconds_bucket", '{le="+Inf"}'),
                         ("junction_delivery_seconds_bucket", '{channel="out",le="+Inf"}')):
        b, a = metric(before, name, labels), metric(after, name, labels)
        t.check(b is not None and a is not None and a - b == n,
                "%s%s moved by exactly %d (%r -> %r)" % (name, labels, n, b, a))
    t.check(metric(after, "junction_commit_seconds_bucket", '{le="60"}') ==
            metric(after, "junction_commit_seconds_count"),
            "every commit sample is under 60 s (cumulative buckets)")
    t.check(0 < (metric(after, "junction_delivery_seconds_sum", '{channel="out"}') or 0) < n * 10,
            "junction_delivery_seconds_sum is a plausible total of seconds")
    with open(j.cfg, "rb") as f:
        want_hash = hashlib.sha256(f.read()).hexdigest()[:16]
    t.check(re.search(r'^junction_build_info\{version="[^"]+",config_hash="%s"\} 1$' % want_hash,
                      after, re.M) is not None,
            "junction_build_info carries config_hash %s (the config file's SHA-256)" % want_hash)
    t.eq(metric(after, "junction_channel_up", '{channel="in"}'), 1.0, "channel_up{in} 1")
    t.eq(metric(after, "junction_ready"), 1.0, "junction_ready 1")
    t.check((metric(after, "process_resident_memory_bytes") or 0) > 1e6,
            "process_resident_memory_bytes is the RSS")
    promtool = shutil.which("promtool")
    t.check(promtool is not None, "promtool is installed (Debian package prometheus)")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=after.encode(),
                           capture_output=True, timeout=30)
        t.eq(p.returncode, 0, "promtool check metrics passes: %s %s" %
             (p.stdout.decode(), p.stderr.decode()))

    code, st = get_json(admin, "/api/v1/status")
    t.eq(st.get("config_hash"), want_hash, "status: config_hash is the config file's")
    t.check(code == 200 and st.get("ready") is True and st.get("channels") == 2 and
            st.get("version") and "journal" in st, "/api/v1/status: %r" % st)
    code, ch = get_json(admin, "/api/v1/channels")
    byname = {c["name"]: c for c in ch.get("channels", [])}
    t.check(code == 200 and byname.get("in", {}).get("received") == n and
            byname.get("out", {}).get("delivered") == n and
            byname["in"].get("state") == "up" and byname["out"].get("direction") == "out",
            "/api/v1/channels counts the same: %r" % ch)
    code, rt = get_json(admin, "/api/v1/routes")
    t.eq((code, rt), (200, {"routes": [{"name": "r", "routed": n}]}), "/api/v1/routes")

    # ---- the message browser ----
    code, ms = get_json(admin, "/api/v1/messages?since=10m&channel=in&limit=1000")
    listed = ms.get("messages", [])
    t.check(code == 200 and len(listed) == n and ms.get("next_cursor") is None and
            all(m["status"] == "delivered" and m["channel"] == "in" for m in listed),
            "messages since 10m from in: all %d, delivered: %r" % (n, ms))
    t.check([m["received"] for m in listed] == sorted([m["received"] for m in listed],
                                                       reverse=True), "newest first")
    pages, cursor = [], None
    for _ in range(5):
        code, pg = get_json(admin, "/api/v1/messages?limit=3" +
                            ("&cursor=" + cursor if cursor else ""))
        pages.append([m["id"] for m in pg.get("messages", [])])
        cursor = pg.get("next_cursor")
        if not cursor:
            break
    t.eq([len(p) for p in pages], [3, 3, 1], "cursor paging: pages of 3, 3, 1")
    t.eq(sum(pages, []), [m["id"] for m in listed], "the pages are the list, in order, once")
    code, ms = get_json(admin, "/api/v1/messages?status=dead")
    t.eq((code, ms.get("messages")), (200, []), "status=dead: none")
    code, ms = get_json(admin, "/api/v1/messages?until=2020-01-01T00:00:00")
    t.eq((code, ms.get("messages")), (200, []), "until 2020: none")
    mid = listed[0]["id"] if listed else "x"
    code, one = get_json(admin, "/api/v1/messages/" + mid)
    t.check(code == 200 and one.get("status") == "delivered" and
            [e["event"] for e in one.get("trace", [])] ==
            ["received", "routed+transformed", "delivered"],
            "messages/ID: its trace: %r" % one)
    code, one = get_json(admin, "/api/v1/messages/" + mid[:-1] + ("0" if mid[-1] != "0" else "1"))
    t.check(code == 404 and "no message" in one.get("error", ""), "unknown id: 404: %r" % one)
    for q, word in (("since=banana", "since"), ("limit=0", "limit"), ("status=lost", "status"),
                    ("cursor=zz", "cursor")):
        code, body = get_json(admin, "/api/v1/messages?" + q)
        t.check(code == 400 and body.get("error", "").startswith(word + ":"),
                "messages?%s: 400 naming %s: %r" % (q, word, body))
    code, body = get_json(admin, "/api/v1/messages/not-an-id")
    t.check(code == 400 and "is not a message id" in body.get("error", ""),
            "messages/not-an-id: 400: %r" % body)

    # ---- junction ctl, the API's command-line client ----
    code, out, err = run_junction(["ctl", "status", "-c", j.cfg])
    t.check(code == 0 and "ready" in out and "channels 2, routes 1" in out,
            "ctl status (address from the config): %r %r" % (out, err))
    code, out, err = run_junction(["ctl", "channels", "--admin", "127.0.0.1:%d" % admin])
    rows = {l.split()[0]: l.split() for l in out.splitlines()[1:] if l.strip()}
    t.check(code == 0 and rows.get("in", [])[4:5] == [str(n)] and
            rows.get("out", [])[5:6] == [str(n)], "ctl channels: a table with the counts: %r" %
            out)
    code, out, err = run_junction(["ctl", "routes", "--json", "--admin", "127.0.0.1:%d" % admin])
    t.check(code == 0 and json.loads(out) == {"routes": [{"name": "r", "routed": n}]},
            "ctl routes --json: the API's JSON: %r" % out)
    code, out, err = run_junction(["ctl", "status", "--admin", "127.0.0.1:%d" % free_port()])
    t.check(code == 1 and "cannot reach the admin listener" in err,
            "ctl against nothing: exit 1, said: %r" % err)
    code, out, err = run_junction(["ctl", "frobnicate", "-c", j.cfg])
    t.eq(code, 2, "ctl with an unknown verb: exit 2 (usage)")

    # ---- errors are JSON ----
    code, body = get_json(admin, "/api/v1/nope")
    t.check(code == 404 and "no such endpoint: /api/v1/nope" in body.get("error", ""),
            "unknown path: 404 naming it: %r" % body)
    code, body, hdrs = curl(["-X", "POST", "http://127.0.0.1:%d/health" % admin])
    t.check(code == 405 and re.search(r"(?im)^allow: GET, HEAD", hdrs) and
            b"only answers GET" in body, "POST /health: 405 with Allow: %r" % body)

    # ---- pause and resume: an IN refuses with 503, an OUT holds its queue ----
    def ctl(name, action, method="POST"):
        code, body, hdrs = curl(["-X", method, "http://127.0.0.1:%d/api/v1/channels/%s/%s" %
                                 (admin, name, action)])
        try:
            return code, json.loads(body), hdrs
        except ValueError:
            return code, {"unparsed": body}, hdrs
    code, body, _ = ctl("in", "pause")
    t.eq((code, body), (200, {"channel": "in", "state": "paused"}), "pause in: 200 paused")
    code, body, _ = ctl("in", "pause")
    t.check(code == 409 and "paused already" in body.get("error", ""),
            "pause again: 409: %r" % body)
    code, body, _ = ctl("nosuch", "resume")
    t.check(code == 404 and "no channel 'nosuch'" in body.get("error", ""),
            "unknown channel: 404: %r" % body)
    code, body, hdrs = ctl("in", "pause", "GET")
    t.check(code == 405 and re.search(r"(?im)^allow: POST", hdrs), "GET on pause: 405")
    code, body, hdrs = curl(["-X", "POST", "--data-binary", "while-paused",
                             "http://127.0.0.1:%d/ingest" % http_in])
    t.check(code == 503 and b"paused" in body and re.search(r"(?im)^retry-after:", hdrs),
            "a POST to the paused IN: 503 with Retry-After, naming the pause: %r" % body)
    code, ch = get_json(admin, "/api/v1/channels")
    t.eq([c["state"] for c in ch["channels"] if c["name"] == "in"], ["paused"],
         "channels: in is paused")
    _, m, _ = get(admin, "/metrics")
    t.eq(metric(m.decode(), "junction_channel_paused", '{channel="in"}'), 1.0,
         "junction_channel_paused{in} 1")
    code, body, _ = ctl("in", "resume")
    t.eq((code, body), (200, {"channel": "in", "state": "up"}), "resume in: 200 up")
    t.eq(post(http_in, "after-resume"), 202, "after resume: 202 again")
    t.check(wait_until(lambda: rcv.count() >= n + 1, 10), "and it is delivered")

    code, body, _ = ctl("out", "pause")
    t.eq(code, 200, "pause out: 200")
    held_from = rcv.count()
    t.eq([post(http_in, "held-%d" % i) for i in range(5)], [202] * 5,
         "five POSTs while out is paused: 202 (intake goes on)")
    t.check(wait_until(lambda: metric(get(admin, "/metrics")[1].decode(),
                                      "junction_journal_queued") == 5.0, 5),
            "the five wait in the queue (junction_journal_queued 5)")
    time.sleep(0.5)
    t.eq(rcv.count(), held_from, "nothing is sent while out is paused")
    code, out, err = run_junction(["ctl", "queues", "--admin", "127.0.0.1:%d" % admin])
    t.check(code == 0 and re.search(r"^out\s+yes\s+5 ", out, re.M),
            "ctl queues: out paused with 5: %r %r" % (out, err))
    code, qs = get_json(admin, "/api/v1/queues")
    q = (qs.get("queues") or [{}])[0]
    t.check(code == 200 and q.get("channel") == "out" and q.get("paused") is True and
            q.get("in_memory") == 5 and q.get("complete") is True and
            q.get("oldest_seconds", 0) >= 0.4, "/api/v1/queues: out paused, 5 held, the oldest "
            "waiting since the POSTs: %r" % qs)
    age = metric(get(admin, "/metrics")[1].decode(), "junction_queue_oldest_seconds",
                 '{channel="out"}')
    t.check(age is not None and age >= 0.4, "junction_queue_oldest_seconds{out} %r" % age)
    code, body, _ = ctl("out", "resume")
    t.eq(code, 200, "resume out: 200")
    t.check(wait_until(lambda: rcv.count() == held_from + 5, 10),
            "after resume the queue drains: all five delivered")
    t.check(wait_until(lambda: metric(get(admin, "/metrics")[1].decode(),
                                      "junction_journal_queued") == 0.0, 5),
            "and the queue is empty")

    # ---- /ready 503 while a stop waits for a send in flight ----
    rcv.delay = 3.0
    t.eq(post(http_in, "slow"), 202, "one more POST, its receiver answers in 3 s")
    t.check(wait_until(lambda: rcv.inflight > 0, 5), "the send is in flight")
    j.proc.send_signal(15)
    t.check(wait_until(lambda: "stopping: intake closed" in j.log(), 5), "SIGTERM: stopping")
    code, body = get_json(admin, "/ready")
    t.check(code == 503 and body.get("ready") is False and
            "shutting down" in body.get("not_ready", []),
            "/ready during the stop: 503 shutting down: %r" % body)
    code, _ = get_json(admin, "/health")
    t.eq(code, 200, "/health during the stop: still 200")
    t.eq(j.stop(), 0, "junction exits 0 after the send")
    rcv.delay = 0.0

    # ---- admin_token ----
    admin2, http2 = free_port(), free_port()
    j2 = Junction(CONFIG % dict(admin=admin2, http_in=http2, rcv=rcv_port,
                                extra='  admin_token: "${JN_TEST_ADMIN_TOKEN}"'),
                  wait_ports=[http2, admin2], env={"JN_TEST_ADMIN_TOKEN": "s3cret-token"})
    cleanups.append(j2.cleanup)
    j2.start()
    code, body, hdrs = get(admin2, "/health")
    t.check(code == 401 and re.search(r"(?im)^www-authenticate: Bearer", hdrs) and
            b"Authorization: Bearer" in body, "no token: 401 with WWW-Authenticate: %r" % body)
    code, _, _ = get(admin2, "/health", ["Authorization: Bearer s3cret-tokeX"])
    t.eq(code, 401, "a wrong token: 401")
    code, _, _ = get(admin2, "/health", ["Authorization: Bearer s3cret-token-longer"])
    t.eq(code, 401, "a longer token: 401")
    code, _, _ = get(admin2, "/metrics", ["Authorization: Bearer s3cret-token"])
    t.eq(code, 200, "the right token: 200")
    tokf = j2.path("token")
    with open(tokf, "w") as f:
        f.write("s3cret-token\n")
    code, out, err = run_junction(["ctl", "pause", "out", "--admin", "127.0.0.1:%d" % admin2,
                                   "--token-file", tokf])
    t.check(code == 0 and "out: paused" in out, "ctl pause with --token-file: %r %r" %
            (out, err))
    code, out, err = run_junction(["ctl", "resume", "out", "--admin", "127.0.0.1:%d" % admin2],
                                  env=dict(os.environ, JUNCTION_ADMIN_TOKEN="s3cret-token"))
    t.check(code == 0 and "out: up" in out, "ctl resume with $JUNCTION_ADMIN_TOKEN: %r %r" %
            (out, err))
    code, out, err = run_junction(["ctl", "status", "--admin", "127.0.0.1:%d" % admin2],
                                  env=dict(os.environ, JUNCTION_ADMIN_TOKEN="wrong"))
    t.check(code == 1 and "401" in err, "ctl with a wrong token: exit 1 with the 401: %r" % err)
    t.check("s3cret-token" not in j2.log(), "the token is never logged")
    t.eq(j2.stop(), 0, "token junction exits 0")

    # ---- refusals at start ----
    j3 = Junction(CONFIG.replace("127.0.0.1:%(admin)d", "0.0.0.0:%(admin)d") %
                  dict(admin=free_port(), http_in=free_port(), rcv=rcv_port, extra=""))
    cleanups.append(j3.cleanup)
    j3.start()
    t.check(wait_until(lambda: j3.proc.poll() is not None, 10), "beyond loopback, no token: "
            "junction exits")
    t.check(j3.proc.returncode == 1 and "admin_token" in j3.log() and
            "not a loopback address" in j3.log(), "exit 1 naming admin_token: %s" % j3.log())

    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken = free_port()
    held.bind(("127.0.0.1", taken))
    held.listen(1)
    cleanups.append(held.close)
    j4 = Junction(CONFIG % dict(admin=taken, http_in=free_port(), rcv=rcv_port, extra=""))
    cleanups.append(j4.cleanup)
    j4.start()
    t.check(wait_until(lambda: j4.proc.poll() is not None, 10), "admin port set and taken: "
            "junction exits")
    t.eq(j4.proc.returncode, 1, "exit 1: %s" % j4.log())

    # The default: 127.0.0.1:8081, held here (or by someone else already): only a warning.
    dflt = socket.socket()
    dflt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        dflt.bind(("127.0.0.1", 8081))
        dflt.listen(1)
    except OSError:
        pass  # taken by another process: the same for junction
    cleanups.append(dflt.close)
    http5 = free_port()
    j5 = Junction(CONFIG.replace("  admin: 127.0.0.1:%(admin)d\n", "") %
                  dict(http_in=http5, rcv=rcv_port, extra=""), wait_ports=[http5])
    cleanups.append(j5.cleanup)
    j5.start()
    t.check(wait_until(lambda: "admin: not started on the default 127.0.0.1:8081" in j5.log(),
                       5), "default admin port taken: a warning")
    t.eq(post(http5, "still-runs"), 202, "and junction runs without it")
    t.eq(j5.stop(), 0, "exits 0")
except Exception as e:
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass
t.finish()
