"""Kept messages and retention (issue 20 part 2, issue 14's browser and replay of delivered).

Three HTTP IN channels feed three routes to file OUTs: keep: all, keep: headers, keep: none.
After delivery the admin API shows a kept message's headers and serves its payload byte for
byte with its content-type; a headers-only one shows its size and refuses the payload; a
keep: none one is not kept. The message list filters by route, header and payload text
through what is kept. A delivered message is replayed from the kept store into another OUT
channel (same id, same payload) and by filter (a dry run counts the headers-only ones apart).
Kept messages survive a restart. Retention: with retention.max_bytes 1 MiB, 2000 messages of
2 KB leave the kept store within its budget, the oldest deleted first and counted in
/metrics; with retention.keep 2s, a message kept is gone a few seconds later.
"""
import json
import os
import time

from jnt import (Checks, Junction, Receiver, admin_api, curl, free_port, run_junction,
                 wait_until)

t = Checks("retention")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
  max_size: 64MiB
  retention: { keep: %(keep)s, max_bytes: %(maxb)s }
channels:
  in-all:  { type: http, direction: in, listen: "127.0.0.1:%(a)d", path: /ingest }
  in-hdr:  { type: http, direction: in, listen: "127.0.0.1:%(h)d", path: /ingest }
  in-none: { type: http, direction: in, listen: "127.0.0.1:%(n)d", path: /ingest }
  in-svc:  { type: http, direction: in, listen: "127.0.0.1:%(s)d", path: /ingest }
  files:   { type: file, direction: out, dir: "@DIR@/out" }
  other:   { type: http, direction: out, url: "http://127.0.0.1:%(rcv)d/sink" }
services:
  stamp: { type: set-header, set: { x-stamped: "yes" } }
  second: { type: set-header, set: { x-second: "2" } }
routes:
  r-all:  { from: [in-all], to: [files] }
  r-svc:  { from: [in-svc], via: [stamp, second], to: [files] }
  r-hdr:  { from: [in-hdr], to: [files], keep: headers }
  r-none: { from: [in-none], to: [files], keep: none }
"""


def post(port, body, headers=()):
    args = ["-X", "POST", "--data-binary", body]
    for h in headers:
        args += ["-H", h]
    code, out, _ = curl(args + ["http://127.0.0.1:%d/ingest" % port])
    try:
        return code, json.loads(out)["id"]
    except (ValueError, KeyError):
        return code, None


def metric(port, name):
    code, out, _ = curl(["http://127.0.0.1:%d/metrics" % port])
    for line in out.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def start(keep="7d", maxb="512MiB"):
    ports = dict(admin=free_port(), a=free_port(), h=free_port(), n=free_port(), s=free_port(),
                 rcv=rcv.port, keep=keep, maxb=maxb)
    j = Junction(CONFIG % ports, wait_ports=[ports["a"], ports["h"], ports["n"], ports["s"],
                                              ports["admin"]])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    j.start()
    return j, ports


try:
    rcv = Receiver([200]).start()
    cleanups.append(rcv.stop)
    j, p = start()
    adm = p["admin"]
    api = lambda m, path, body=None: admin_api(adm, m, path, body)  # noqa: E731

    payload = '{"order": 42, "note": "needle in here"}'
    c1, id_all = post(p["a"], payload, ["Content-Type: application/json", "X-Kind: lab"])
    c2, id_hdr = post(p["h"], "x" * 1234, ["X-Kind: lab"])
    c3, id_none = post(p["n"], "nothing kept")
    c4, id_all2 = post(p["a"], "plain other", ["X-Kind: adt"])
    t.check((c1, c2, c3, c4) == (202,) * 4 and all([id_all, id_hdr, id_none, id_all2]),
            "four messages accepted")
    out = j.path("out")
    t.check(wait_until(lambda: os.path.isdir(out) and len(os.listdir(out)) == 4, 10),
            "all four delivered to files")

    code, m = api("GET", "/api/v1/messages/%s" % id_all)
    k = m.get("kept") or {}
    hdrs = {h["name"].lower(): h["value"] for h in k.get("headers", [])}
    t.check(code == 200 and k.get("keep") == "all" and k.get("routes") == ["r-all"] and
            k.get("bytes") == len(payload) and hdrs.get("x-kind") == "lab" and
            k.get("payload_url") == "/api/v1/messages/%s/payload" % id_all,
            "keep: all: kept with headers, route, size, payload url: %r" % m)
    t.check(any(e["event"] == "delivered" for e in m.get("trace", [])),
            "its trace says delivered")
    code, body, h = curl(["http://127.0.0.1:%d/api/v1/messages/%s/payload" % (adm, id_all)])
    t.check(code == 200 and body.decode() == payload and
            "content-type: application/json" in h.lower(),
            "payload: the bytes as received, with their content-type: %d %r" % (code, body))

    c5, id_svc = post(p["s"], "through a service")
    t.check(c5 == 202 and wait_until(lambda: len(os.listdir(out)) == 5, 10),
            "one through the service route, delivered")
    code, m = api("GET", "/api/v1/messages/%s" % id_svc)
    k = m.get("kept") or {}
    outs = k.get("outputs", [])
    h0 = {h["name"].lower(): h["value"] for h in (outs[0]["headers"] if outs else [])}
    h1 = {h["name"].lower(): h["value"] for h in (outs[1]["headers"] if len(outs) > 1 else [])}
    t.check(code == 200 and len(outs) == 2 and outs[0]["route"] == "r-svc" and
            [o["service"] for o in outs] == ["stamp", "second"] and
            h0.get("x-stamped") == "yes" and "x-second" not in h0 and
            h1.get("x-stamped") == "yes" and h1.get("x-second") == "2" and
            "x-stamped" not in {h["name"].lower() for h in k.get("headers", [])},
            "the payload after each service is kept beside the input: %r" % k)
    code, body, _ = curl(["http://127.0.0.1:%d%s" % (adm, outs[0]["payload_url"] if outs else "/x")])
    t.check(code == 200 and body == b"through a service", "its payload: %d %r" % (code, body))
    code, body, _ = curl(["http://127.0.0.1:%d%s" % (adm, outs[1]["payload_url"] if len(outs) > 1 else "/x")])
    t.check(code == 200 and body == b"through a service", "the last one's payload: %d" % code)
    code, _ = api("GET", "/api/v1/messages/%s/outputs/3/payload" % id_svc)
    t.eq(code, 404, "an output it does not have: 404")
    t.eq((api("GET", "/api/v1/messages/%s" % id_all)[1].get("kept") or {}).get("outputs"), [],
         "a route without services keeps no outputs")

    code, m = api("GET", "/api/v1/messages/%s" % id_hdr)
    k = m.get("kept") or {}
    t.check(code == 200 and k.get("keep") == "headers" and k.get("bytes") == 1234 and
            k.get("payload_url") is None, "keep: headers: size, no payload url: %r" % k)
    code, body, _ = curl(["http://127.0.0.1:%d/api/v1/messages/%s/payload" % (adm, id_hdr)])
    t.check(code == 404 and b"keep: headers" in body, "its payload: 404 saying why: %r" % body)

    code, out_, err_ = run_junction(["ctl", "show", id_all, "--admin", "127.0.0.1:%d" % adm])
    t.check(code == 0 and "kept: all" in out_ and payload in out_ and "X-Kind: lab" in out_,
            "ctl show: the kept headers and the payload: %r %r" % (out_, err_))
    code, out_, err_ = run_junction(["ctl", "show", id_hdr, "--admin", "127.0.0.1:%d" % adm])
    t.check(code == 0 and "not kept (keep: headers)" in out_, "ctl show, headers only: %r" % out_)
    code, m = api("GET", "/api/v1/messages/%s" % id_none)
    t.check(code == 200 and m.get("kept") is None, "keep: none: traced, not kept: %r" % m)
    code, body, _ = curl(["http://127.0.0.1:%d/api/v1/messages/%s/payload" % (adm, id_none)])
    t.eq(code, 404, "its payload: 404")
    code, _ = api("GET", "/api/v1/messages/%s/nope" % id_all)
    t.eq(code, 404, "an unknown sub-resource: 404")

    def ids_of(query):
        code, ans = api("GET", "/api/v1/messages?" + query)
        return sorted(x["id"] for x in ans.get("messages", [])) if code == 200 else code
    t.eq(ids_of("route=r-all"), sorted([id_all, id_all2]), "list route=r-all")
    t.eq(ids_of("header.X-Kind=lab"), sorted([id_all, id_hdr]), "list header.X-Kind=lab")
    t.eq(ids_of("q=needle"), [id_all], "list q=needle (payload text)")
    t.eq(ids_of("q=needle&route=r-hdr"), [], "q with another route: none")

    # Replay a delivered message from what is kept, into another OUT channel.
    code, ans = api("POST", "/api/v1/replay",
                    json.dumps({"from": "kept", "ids": [id_all], "to": ["other"]}))
    t.check(code == 202 and ans.get("count") == 1, "replay from kept: 202, 1: %r" % ans)
    t.check(wait_until(lambda: rcv.count() == 1, 10), "the other channel got it")
    with rcv.lock:
        r0 = rcv.requests[0] if rcv.requests else {}
    t.check(r0.get("headers", {}).get("x-junction-id") == id_all and
            r0.get("body", b"").decode() == payload,
            "same id, same payload: %r" % (r0.get("headers", {}).get("x-junction-id"),))
    code, ans = api("POST", "/api/v1/replay",
                    json.dumps({"from": "kept", "dry_run": True, "header.X-Kind": "lab"}))
    t.check(code == 200 and ans.get("count") == 1 and ans.get("headers_only") == 1,
            "dry run from kept header.X-Kind=lab: 1 replayable, 1 headers only: %r" % ans)
    code, ans = api("POST", "/api/v1/replay",
                    json.dumps({"from": "kept", "dry_run": True, "route": "r-all"}))
    t.check(code == 200 and ans.get("count") == 2, "dry run from kept route=r-all: 2: %r" % ans)
    code, ans = api("POST", "/api/v1/replay", json.dumps({"from": "archive"}))
    t.eq(code, 400, "from: something else: 400")
    # Replayed without `to`: routed again by the current routes, delivered to files again.
    code, ans = api("POST", "/api/v1/replay", json.dumps({"from": "kept", "ids": [id_all2]}))
    t.check(code == 202, "replay from kept, routed again: 202: %r" % ans)

    def deliveries(mid):
        code, m = api("GET", "/api/v1/messages/%s" % mid)
        return sum(1 for e in m.get("trace", []) if e["event"] == "delivered")
    t.check(wait_until(lambda: deliveries(id_all2) == 2, 10),
            "routed again and delivered to files a second time (%r)" % deliveries(id_all2))

    t.eq(j.stop(), 0, "junction exits 0")
    j.start()
    code, m = api("GET", "/api/v1/messages/%s" % id_all)
    t.check(code == 200 and (m.get("kept") or {}).get("keep") == "all",
            "kept across a restart: %r" % m.get("kept"))
    t.eq(j.stop(), 0, "junction exits 0 again")

    # The budget: 2000 messages of 2 KB (about 4 MB) against 1 MiB.
    j, p = start(maxb="1MiB")
    adm = p["admin"]
    first = None
    blob = "y" * 2048
    for i in range(40):
        # 50 at a time through one curl each, keep-alive
        args = []
        for _ in range(50):
            args += ["--next", "-s", "-o", "/dev/null", "-X", "POST", "--data-binary", blob,
                     "http://127.0.0.1:%d/ingest" % p["a"]]
        curl(args[1:], timeout=60)
        if first is None:
            code, ans = admin_api(adm, "GET", "/api/v1/messages?route=r-all&limit=1000")
            ms = ans.get("messages", [])
            first = ms[-1]["id"] if ms else None

    def kept_bytes():
        return metric(adm, "junction_kept_bytes")
    t.check(wait_until(lambda: (metric(adm, "junction_kept_messages") or 0) >= 100 and
                       (kept_bytes() or 1 << 30) <= (1 << 20), 20),
            "the kept store falls within 1 MiB: %r bytes, %r messages" %
            (kept_bytes(), metric(adm, "junction_kept_messages")))
    deleted = metric(adm, 'junction_retention_deleted_total{kind="message"}')
    t.check(deleted is not None and deleted >= 1000,
            "retention deleted the oldest (counted): %r" % deleted)
    code, m = admin_api(adm, "GET", "/api/v1/messages/%s" % first)
    t.check(first is not None and (m.get("kept") is None or code == 404),
            "the first one is no longer kept: %r" % m.get("kept"))
    code, st = admin_api(adm, "GET", "/api/v1/status")
    ret = st.get("retention", {})
    t.check(code == 200 and ret.get("budget_bytes") == 1 << 20 and ret.get("kept", 0) > 0,
            "status.retention: %r" % ret)
    t.eq(j.stop(), 0, "junction exits 0 (budget)")

    # By age: keep 2s.
    j, p = start(keep="2s")
    adm = p["admin"]
    code, id_old = post(p["a"], "old one")
    t.check(wait_until(lambda: (admin_api(adm, "GET", "/api/v1/messages/%s" % id_old)[1]
                                .get("kept") or {}).get("keep") == "all", 5), "kept at first")
    t.check(wait_until(lambda: admin_api(adm, "GET", "/api/v1/messages/%s" % id_old)[0] == 404,
                       10), "gone (kept message and actions) a few seconds after 2s")
    t.eq(j.stop(), 0, "junction exits 0 (age)")
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
