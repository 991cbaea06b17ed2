"""Flow control (issue 20): max_queued with when_full block / reject / drop-oldest, and
min_free_disk.

block: with its destination down, an HTTP IN takes exactly max_queued (20) messages, then
answers 503 + Retry-After naming the full destination; /api/v1/queues says queued 20, full;
/api/v1/channels names the limit that holds the IN channel; the metrics agree. The depth is
the journal's own count: after a restart it is still 20 and intake is still refused. When the
receiver comes up the queue drains below 90 % and intake resumes by itself; every accepted
message is delivered exactly once.
reject: a full queue takes messages and dead-letters them for that destination at once.
drop-oldest: a full queue takes them and dead-letters its oldest waiting ones: the depth stays
at the limit. min_free_disk larger than the disk: every POST is 503 naming min_free_disk.
"""
import json
import time

from jnt import Checks, Junction, Receiver, admin_api, curl, free_port, wait_until

t = Checks("flow_control")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
  min_free_disk: %(min_free)s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(a)d
    path: /ingest
  in-tele:
    type: http
    direction: in
    listen: 127.0.0.1:%(b)d
    path: /ingest
  in-rej:
    type: http
    direction: in
    listen: 127.0.0.1:%(c)d
    path: /ingest
  slow:
    type: http
    direction: out
    url: http://127.0.0.1:%(rcv)d/sink
    retry: { attempts: 100000, backoff: 50ms, max_backoff: 100ms }
    max_queued: { messages: 20 }
  tele:
    type: http
    direction: out
    url: http://127.0.0.1:%(down)d/sink
    retry: { attempts: 100000, backoff: 1s, max_backoff: 1s }
    max_queued: { messages: 5 }
    when_full: drop-oldest
  rej:
    type: http
    direction: out
    url: http://127.0.0.1:%(down)d/sink
    retry: { attempts: 100000, backoff: 1s, max_backoff: 1s }
    max_queued: { messages: 3 }
    when_full: reject
routes:
  r: { from: [in], to: [slow] }
  rt: { from: [in-tele], to: [tele] }
  rr: { from: [in-rej], to: [rej] }
"""


def api(port, path):
    return admin_api(port, "GET", path)


def post(port, body):
    code, out, hdrs = curl(["-X", "POST", "--data-binary", body,
                            "http://127.0.0.1:%d/ingest" % port])
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    return code, j, hdrs


def queue(admin, name):
    _, q = api(admin, "/api/v1/queues")
    for e in q.get("queues", []):
        if e["channel"] == name:
            return e
    return {}


try:
    admin, pa, pb, pc, rcv_port, down = (free_port() for _ in range(6))
    cfg = CONFIG % dict(admin=admin, a=pa, b=pb, c=pc, rcv=rcv_port, down=down,
                        min_free="64MiB")
    j = Junction(cfg, wait_ports=[pa, pb, pc, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-6000:]))
    j.start()

    # ---- block ----
    accepted, refused = [], []
    for i in range(30):
        code, body, hdrs = post(pa, "m-%02d" % i)
        if code == 202:
            accepted.append(body.get("id"))
        else:
            refused.append((code, body, hdrs))
    t.eq(len(accepted), 20, "exactly max_queued (20) accepted while the destination is down")
    t.check(refused and all(c == 503 and "slow" in b.get("error", "") and
                            "max_queued" in b.get("error", "") and "Retry-After" in h
                            for c, b, h in refused),
            "the rest: 503 + Retry-After naming the full destination: %r" % (refused[:1],))
    q = queue(admin, "slow")
    t.check(q.get("queued") == 20 and q.get("full") is True,
            "/api/v1/queues: slow queued 20, full: %r" % q)
    _, ch = api(admin, "/api/v1/channels")
    inch = [c for c in ch.get("channels", []) if c["name"] == "in"]
    t.check(inch and "slow" in (inch[0].get("blocked") or ""),
            "/api/v1/channels: in is blocked, by slow: %r" % inch)
    _, m, _ = curl(["http://127.0.0.1:%d/metrics" % admin])
    m = m.decode()
    t.check('junction_queue_depth{channel="slow"} 20' in m and
            'junction_queue_full{channel="slow"} 1' in m and
            'junction_channel_blocked{channel="in"} 1' in m,
            "metrics: depth 20, full 1, in blocked 1")

    # The depth is the journal's: a restart keeps it, and intake stays refused.
    t.eq(j.stop(), 0, "junction stops cleanly with 20 queued")
    j.start()
    t.eq(queue(admin, "slow").get("queued"), 20, "after the restart: queued 20")
    code, body, _ = post(pa, "after-restart")
    t.eq(code, 503, "after the restart intake is still refused (503)")

    # The receiver comes up: the queue drains, intake resumes by itself.
    rcv = Receiver([200], port=rcv_port).start()
    cleanups.append(rcv.stop)
    t.check(wait_until(lambda: rcv.count() >= 20, 20), "the 20 are delivered")

    def resumed():
        code, body, _ = post(pa, "late")
        if code == 202:
            accepted.append(body.get("id"))
            return True
        return False
    t.check(wait_until(resumed, 10), "intake resumes by itself once the queue has room")
    t.check(wait_until(lambda: rcv.count() >= 21, 10), "and that one is delivered")
    time.sleep(0.3)
    with rcv.lock:
        got = [r["headers"].get("x-junction-id") for r in rcv.requests]
    t.eq(sorted(got), sorted(accepted), "every accepted message delivered exactly once, none "
         "of the refused")
    t.check(wait_until(lambda: queue(admin, "slow").get("queued") == 0, 5) and
            queue(admin, "slow").get("full") is False, "slow: queued 0, not full")

    # ---- reject ----
    codes = [post(pc, "r-%d" % i)[0] for i in range(6)]
    t.eq(codes, [202] * 6, "reject: all six taken (202)")
    t.check(wait_until(lambda: queue(admin, "rej").get("queued") == 3, 5),
            "rej: queued stays at max_queued 3: %r" % queue(admin, "rej"))
    _, dl = api(admin, "/api/v1/dead-letters?destination=rej")
    t.check(dl.get("count") == 3 and all("when_full: reject" in d["error"]
                                         for d in dl.get("dead_letters", [])),
            "rej: the other 3 dead-lettered with the reason: %r" % dl)

    # ---- drop-oldest ----
    ids = [post(pb, "t-%d" % i)[1].get("id") for i in range(10)]
    t.check(all(ids), "drop-oldest: all ten taken")
    t.check(wait_until(lambda: queue(admin, "tele").get("queued") == 5, 5),
            "tele: queued stays at max_queued 5: %r" % queue(admin, "tele"))
    _, dl = api(admin, "/api/v1/dead-letters?destination=tele")
    dropped = [d["id"] for d in dl.get("dead_letters", [])]
    t.check(dl.get("count") == 5 and all("drop-oldest" in d["error"]
                                         for d in dl.get("dead_letters", [])),
            "tele: 5 dropped, dead-lettered with the reason: %r" % dl)
    t.check(ids[-1] not in dropped and all(i in ids[:9] for i in dropped),
            "the dropped ones are older ones, never the newest")
    t.eq(j.stop(), 0, "junction exits 0")

    # ---- min_free_disk ----
    admin2, p2a, p2b, p2c = free_port(), free_port(), free_port(), free_port()
    j2 = Junction(CONFIG % dict(admin=admin2, a=p2a, b=p2b, c=p2c, rcv=rcv_port, down=down,
                                min_free="1000TiB"), wait_ports=[p2a, admin2])
    cleanups.append(j2.cleanup)
    t.on_fail.append(lambda: print("---- junction 2 log ----\n%s" % j2.log()[-3000:]))
    j2.start()
    code, body, hdrs = post(p2a, "x")
    t.check(code == 503 and "min_free_disk" in body.get("error", "") and "Retry-After" in hdrs,
            "min_free_disk above the disk's free space: 503 naming it: %r" % body)
    _, st = api(admin2, "/api/v1/status")
    t.check(st.get("flow", {}).get("disk_low") is True and
            st.get("flow", {}).get("blocked_total", 0) >= 1,
            "status: flow.disk_low true, blocked_total counted: %r" % st.get("flow"))
    t.check("less than min_free_disk" in j2.log(), "the log says why")
    t.eq(j2.stop(), 0, "junction 2 exits 0")
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
