"""Replay of dead letters while the broker runs (issue 14): POST /api/v1/replay.

100 messages are dead-lettered by a receiver that answers 400 to its first 100 requests. A dry
run counts them and changes nothing; the replay then puts every one back while junction keeps
running: each arrives at the receiver exactly once more (0 lost, 0 extra copies), the job's
progress ends done with 100 replayed, the dead-letter queue is empty and each trace ends
"replayed" -> "delivered". Bad bodies are 400, an unknown job 404, GET on replay 405.
"""
import json
import re
import time

from jnt import Checks, Junction, Receiver, admin_api, curl, free_port, run_junction, wait_until

t = Checks("admin_replay")
cleanups = []
N = 100

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
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
    concurrency: 4
    retry: { attempts: 3, backoff: 20ms, max_backoff: 50ms }
routes:
  r:
    from: [in]
    to: [out]
"""


api = admin_api


def dead(port):
    _, st = api(port, "GET", "/api/v1/status")
    return st.get("journal", {}).get("dead_letters")


try:
    admin, http_in, rcv_port = free_port(), free_port(), free_port()
    rcv = Receiver([400] * N + [200], port=rcv_port).start()
    cleanups.append(rcv.stop)
    j = Junction(CONFIG % dict(admin=admin, http_in=http_in, rcv=rcv_port),
                 wait_ports=[http_in, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-5000:]))
    j.start()
    for i in range(N):
        code, _, _ = curl(["-X", "POST", "--data-binary", "msg-%03d" % i,
                           "http://127.0.0.1:%d/ingest" % http_in])
        if code != 202:
            t.check(False, "POST %d: 202 (got %d)" % (i, code))
            break
    t.check(wait_until(lambda: dead(admin) == N, 20), "all %d are dead letters (HTTP 400)" % N)
    first = {}
    with rcv.lock:
        for r in rcv.requests:
            first.setdefault(r["headers"].get("x-junction-id"), r["body"])
    t.eq(len(first), N, "the receiver saw each once, and refused it")

    code, dry = api(admin, "POST", "/api/v1/replay", '{"dry_run": true}')
    t.check(code == 200 and dry.get("count") == N and len(dry.get("ids", [])) == 20 and
            dry.get("dry_run") is True, "dry run: the count and the first 20 ids: %r" % dry)
    t.eq(dead(admin), N, "the dry run changed nothing")
    code, one = api(admin, "POST", "/api/v1/replay",
                    json.dumps({"ids": [dry["ids"][0]], "dry_run": True}))
    t.eq((code, one.get("count")), (200, 1), "a dry run by id counts that one")

    code, out, err = run_junction(["ctl", "replay", "--dry-run", "--admin",
                                   "127.0.0.1:%d" % admin])
    t.check(code == 0 and "%d dead letter(s) would be replayed" % N in out,
            "ctl replay --dry-run: %r %r" % (out, err))
    code, out, err = run_junction(["ctl", "messages", "--status", "dead", "--limit", "1000",
                                   "--admin", "127.0.0.1:%d" % admin])
    rows = [l for l in out.splitlines()[1:] if l.strip()]
    t.check(code == 0 and len(rows) == N and all(l.split()[-1] == "dead" for l in rows),
            "ctl messages --status dead: %d rows: %r" % (len(rows), out[:300]))
    code, out, err = run_junction(["ctl", "show", dry["ids"][0], "--admin",
                                   "127.0.0.1:%d" % admin])
    t.check(code == 0 and "dead-lettered" in out and "HTTP 400" in out,
            "ctl show ID: the trace with the dead letter's reason: %r" % out)
    # One by id with ctl, the rest with the API.
    before = rcv.count()
    code, out, err = run_junction(["ctl", "replay", dry["ids"][0], "--admin",
                                   "127.0.0.1:%d" % admin])
    t.check(code == 0 and re.search(r"replay \d+: 1 of 1 put back, 0 failed", out),
            "ctl replay ID: waits for its job: %r %r" % (out, err))
    t.check(wait_until(lambda: rcv.count() == before + 1, 10), "that one arrives")
    code, job = api(admin, "POST", "/api/v1/replay", '{}')
    t.check(code == 202 and job.get("count") == N - 1 and job.get("job"),
            "replay the rest: 202 with a job: %r" % job)

    def done():
        c, p = api(admin, "GET", "/api/v1/replay/%s" % job.get("job"))
        return p if c == 200 and p.get("done") else None
    prog = wait_until(done, 20)
    t.check(prog and prog.get("replayed") == N - 1 and prog.get("failed") == 0,
            "the job ends done: %r" % prog)
    t.check(wait_until(lambda: rcv.count() == before + N, 20),
            "every replayed message arrives (%d of %d)" % (rcv.count() - before, N))
    time.sleep(0.3)
    t.check(wait_until(lambda: dead(admin) == 0, 5), "the dead-letter queue is empty")
    with rcv.lock:
        again = [r["headers"].get("x-junction-id") for r in rcv.requests[before:]]
        bodies = {r["headers"].get("x-junction-id"): r["body"] for r in rcv.requests[before:]}
    t.eq(sorted(again), sorted(first), "each exactly once more: 0 lost, 0 extra copies")
    t.check(all(bodies.get(k) == v for k, v in first.items()), "with the same bytes")
    code, tr = api(admin, "GET", "/api/v1/messages/%s" % dry["ids"][0])
    evs = [e["event"] for e in tr.get("trace", [])]
    t.check(code == 200 and evs[-2:] == ["replayed", "delivered"] and tr.get("status") ==
            "delivered", "its trace ends replayed, delivered: %r" % evs)
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    t.check("0 dead letter(s)" in err, "junction dlq list: none left: %r" % err)

    for body, what in (("[1,2]", "not an object"), ('{"ids": "x"}', "ids not a list"),
                       ('{"dry_run": "yes"}', "dry_run not a boolean"), ("{bad", "not JSON")):
        code, b = api(admin, "POST", "/api/v1/replay", body)
        t.check(code == 400 and b.get("error"), "%s: 400: %r" % (what, b))
    code, b = api(admin, "GET", "/api/v1/replay/999")
    t.eq(code, 404, "an unknown job: 404")
    code, b = api(admin, "GET", "/api/v1/replay")
    t.eq(code, 405, "GET on replay: 405")
    code, b = api(admin, "POST", "/api/v1/replay", '{}')
    t.check(code == 200 and b.get("count") == 0, "nothing left to replay: 200, count 0: %r" % b)
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
