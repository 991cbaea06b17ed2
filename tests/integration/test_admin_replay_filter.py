"""Replay and list dead letters by filter while the broker runs (issue 14).

Ten messages from two IN channels, some with a header X-Kind: lab and some with "needle" in the
payload, are dead-lettered by a receiver that always answers 400. GET /api/v1/dead-letters and
dry runs of POST /api/v1/replay count exactly the ones each filter names (channel, header,
payload text, destination, since/until); `"to": ["good"]` puts the lab ones into another OUT
channel, whose receiver gets exactly those ids once, and the rest stay dead letters; `junction
ctl dlq list` and `ctl replay --channel ... --to ...` do the same over the API. Unknown fields,
a `to` that is no OUT channel, status other than dead and a bad time are refused with 400/404.
"""
import json
import time

from jnt import Checks, Junction, Receiver, admin_api, curl, free_port, run_junction, wait_until

t = Checks("admin_replay_filter")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  in-a:
    type: http
    direction: in
    listen: 127.0.0.1:%(a)d
    path: /ingest
  in-b:
    type: http
    direction: in
    listen: 127.0.0.1:%(b)d
    path: /ingest
  bad:
    type: http
    direction: out
    url: http://127.0.0.1:%(bad)d/sink
  good:
    type: http
    direction: out
    url: http://127.0.0.1:%(good)d/sink
routes:
  ra:
    from: [in-a]
    to: [bad]
  rb:
    from: [in-b]
    to: [bad]
"""


api = admin_api


def dry(port, **filters):
    filters["dry_run"] = True
    code, ans = api(port, "POST", "/api/v1/replay", json.dumps(filters))
    return ans.get("count") if code == 200 else (code, ans)


try:
    admin, pa, pb = free_port(), free_port(), free_port()
    bad = Receiver([400]).start()
    good = Receiver([200]).start()
    cleanups += [bad.stop, good.stop]
    j = Junction(CONFIG % dict(admin=admin, a=pa, b=pb, bad=bad.port, good=good.port),
                 wait_ports=[pa, pb, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-5000:]))
    j.start()
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    sent = []  # (port, kind, payload)
    for i in range(6):
        kind = "lab" if i % 2 == 0 else "adt"
        sent.append((pa, kind, "a-%d%s" % (i, " needle" if i < 2 else "")))
    for i in range(4):
        sent.append((pb, "lab" if i == 0 else "adt", "b-%d" % i))
    ids = {}
    for port, kind, payload in sent:
        code, out, _ = curl(["-X", "POST", "-H", "X-Kind: " + kind, "--data-binary", payload,
                             "http://127.0.0.1:%d/ingest" % port])
        t.eq(code, 202, "POST %s: 202" % payload)
        try:
            ids[payload] = json.loads(out)["id"]
        except (ValueError, KeyError):
            ids[payload] = None

    def ndead():
        c, d = api(admin, "GET", "/api/v1/dead-letters")
        return d.get("count") if c == 200 else None
    t.check(wait_until(lambda: ndead() == 10, 20), "all ten are dead letters (%r)" % ndead())

    code, chs = api(admin, "GET", "/api/v1/channels")
    byname = {c["name"]: c for c in chs.get("channels", [])}
    le = byname.get("bad", {}).get("last_error") or {}
    t.check(code == 200 and "400" in le.get("error", "") and le.get("time", "").endswith("Z")
            and byname.get("good", {}).get("last_error", 1) is None,
            "channels: the failing OUT's last error with its time, none on the others: %r" % chs)
    code, dl = api(admin, "GET", "/api/v1/dead-letters?channel=in-b&limit=2")
    rows = dl.get("dead_letters", [])
    t.check(code == 200 and dl.get("count") == 4 and len(rows) == 2 and
            all(r["channel"] == "in-b" and r["destination"] == "bad" and r["attempts"] == 1 and
                "400" in r["error"] for r in rows),
            "dead-letters?channel=in-b&limit=2: count 4, two rows with their reason: %r" % dl)
    t.eq(dry(admin, channel="in-b"), 4, "dry run channel=in-b: 4")
    t.eq(dry(admin, **{"header.X-Kind": "lab"}), 4, "dry run header.X-Kind=lab: 4")
    t.eq(dry(admin, **{"header.x-kind": "lab", "channel": "in-a"}), 3,
         "header names in any case, with channel=in-a: 3")
    t.eq(dry(admin, q="needle"), 2, "dry run q=needle (payload text): 2")
    t.eq(dry(admin, destination="bad", route="rb"), 4, "destination=bad route=rb: 4")
    t.eq(dry(admin, since=started), 10, "since the test's start: 10")
    t.eq(dry(admin, until=started), 0, "until the test's start: 0")
    t.eq(dry(admin, channel="nope"), 0, "a channel with none: 0")

    # Replay the lab ones of in-a into good instead of bad.
    want = sorted(ids[p] for port, k, p in sent if port == pa and k == "lab")
    code, job = api(admin, "POST", "/api/v1/replay",
                    json.dumps({"channel": "in-a", "header.X-Kind": "lab", "to": ["good"]}))
    t.check(code == 202 and job.get("count") == 3, "replay to good: 202, 3: %r" % job)
    t.check(wait_until(lambda: good.count() == 3, 10), "good got 3")
    time.sleep(0.3)
    with good.lock:
        got = sorted(r["headers"].get("x-junction-id") for r in good.requests)
    t.eq(got, want, "exactly the lab messages of in-a, once each")
    t.check(wait_until(lambda: ndead() == 7, 5), "the other 7 stay dead letters")
    code, tr = api(admin, "GET", "/api/v1/messages/%s" % want[0])
    evs = [(e["event"], e.get("channel")) for e in tr.get("trace", [])]
    t.check(("replayed", "good") in evs and evs[-1] == ("delivered", "good"),
            "its trace: replayed into good, delivered there: %r" % evs)

    # ctl over the same API.
    adm = ["--admin", "127.0.0.1:%d" % admin]
    code, out, err = run_junction(["ctl", "dlq", "list", "--channel", "in-b"] + adm)
    lines = [l for l in out.splitlines() if l.startswith(tuple(ids[p] for _, _, p in sent
                                                                if ids[p]))]
    t.check(code == 0 and len(lines) == 4 and "4 dead letter(s)" in out,
            "ctl dlq list --channel in-b: 4 rows: %r %r" % (out, err))
    code, out, err = run_junction(["ctl", "dlq", "list", "--header", "bad"] + adm)
    t.check(code == 2 and "NAME=VALUE" in err, "ctl --header without '=': usage, 2: %r" % err)
    code, out, err = run_junction(["ctl", "replay", "--channel", "in-b", "--grep", "b-",
                                   "--to", "good"] + adm)
    t.check(code == 0 and "4 of 4 put back, 0 failed" in out,
            "ctl replay --channel in-b --grep b- --to good: %r %r" % (out, err))
    t.check(wait_until(lambda: good.count() == 7, 10), "good got those 4 too")
    t.check(wait_until(lambda: ndead() == 3, 5), "3 dead letters left (in-a adt)")
    code, out, err = run_junction(["ctl", "messages", "--grep", "needle"] + adm)
    lines = [l for l in out.splitlines() if len(l.split()) > 1 and l.split()[1] in ids.values()]
    t.check(code == 0 and sorted(l.split()[1] for l in lines) ==
            sorted([ids["a-0 needle"], ids["a-1 needle"]]),
            "ctl messages --grep needle: the two kept with it: %r %r" % (out, err))
    code, out, err = run_junction(["ctl", "messages", "--to", "good"] + adm)
    t.eq(code, 2, "ctl messages --to: usage")

    for body, want_code, what in (
            ('{"to": ["in-a"]}', 404, "to an IN channel"),
            ('{"to": "nope"}', 404, "to an unknown channel"),
            ('{"colour": "red"}', 400, "an unknown field"),
            ('{"status": "delivered"}', 400, "status other than dead"),
            ('{"since": "yesterday"}', 400, "a bad time"),
            ('{"ids": "x"}', 400, "ids not a list"),
            ('{"header.X": 1}', 400, "a header value not a string")):
        code, b = api(admin, "POST", "/api/v1/replay", body)
        t.check(code == want_code and b.get("error"), "%s: %d: %r" % (what, want_code, b))
    code, b = api(admin, "GET", "/api/v1/dead-letters?to=good")
    t.check(code == 400 and "to" in b.get("error", ""), "dead-letters?to=: 400: %r" % b)
    code, b = api(admin, "GET", "/api/v1/dead-letters?limit=0")
    t.eq(code, 400, "dead-letters?limit=0: 400")
    t.eq(ndead(), 3, "the refusals changed nothing")
    t.eq(j.stop(), 0, "junction exits 0")
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
