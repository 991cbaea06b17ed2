"""Hot reload of changed channels (issue 21 part 1): restarted in place, the rest untouched.

A sender posts over ONE keep-alive connection to channel `in` throughout. The config changes:
  1. channel `side` (a second HTTP IN) moves to another port, and OUT channel `out` writes to
     another folder: `side` is restarted (the old port refuses, the new one takes messages),
     `out` is restarted once its sends in flight are done, its queue kept: every message
     accepted on `in` arrives once, in one of the two folders; `in`'s connection never drops.
  2. `side` is moved to a port that is taken: its restart fails, it runs its old options again
     (the old port still answers) and the log says so; once the port is free, the same file
     reloaded again restarts it on the new port (the running config kept what runs).
  3. a changed direction is refused (409) and nothing changes.
  4. an HTTP OUT channel `extra` (to a port where nothing listens yet) and a route to it are
     added; messages queue for it; it is removed (its queue kept, /api/v1/channels says
     "removed", it sends nothing once its peer is up); it is added again: what its queue kept
     is delivered, each once.
"""
import json
import os
import socket
import time

from jnt import Checks, Junction, KeepAliveSender, Receiver, admin_api, curl, free_port, port_open, wait_until

t = Checks("reload_channels")
cleanups = []

CFG = """junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(p)d", path: /ingest }
  side: { type: http, direction: in, listen: "127.0.0.1:%(side)d", path: /ingest }
  out: { type: file, direction: out, dir: "@DIR@/%(outdir)s" }
routes:
  r: { from: [in, side], to: [out] }
"""


def delivered(j):
    got = {}
    for d in ("out1", "out2"):
        path = j.path(d)
        for name in os.listdir(path) if os.path.isdir(path) else []:
            if name.startswith("."):
                continue
            try:
                k = json.loads(open(os.path.join(path, name)).read())["k"]
            except (OSError, ValueError, KeyError):
                continue
            got.setdefault(k, []).append(d)
    return got


def post(port, body):
    code, _, _ = curl(["-X", "POST", "--data-binary", body, "--max-time", "3",
                       "http://127.0.0.1:%d/ingest" % port])
    return code


try:
    # Ports are taken just before they are used: a port picked early may be another test's by
    # the time it is used.
    admin, p, side1 = (free_port() for _ in range(3))
    kw = dict(admin=admin, p=p, side=side1, outdir="out1")
    j = Junction(CFG % kw, wait_ports=[p, side1, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    j.start()

    def write(**over):
        with open(j.cfg, "w") as f:
            f.write((CFG % dict(kw, **over)).replace("@DIR@", j.dir))

    s = KeepAliveSender(p, pause=0.002)
    s.start()
    t.check(wait_until(lambda: s.count() >= 100, 20), "messages flow on `in`")

    # ---- 1: side moves, out writes elsewhere ----
    side2 = free_port()
    write(side=side2, outdir="out2")
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    ch = " | ".join(rep.get("changes", []))
    t.check(code == 200 and rep.get("status") == "reloaded", "reload: %r %r" % (code, rep))
    t.check("channel 'side': listen changed: the channel restarts" in ch and
            "channel 'out': dir changed: the channel restarts" in ch,
            "the changes say which channels restart: %r" % ch)
    t.check(wait_until(lambda: port_open(side2), 5), "side listens on its new port")
    t.check(wait_until(lambda: post(side1, json.dumps({"k": -9})) != 202, 5),
            "and no longer on its old one")
    t.eq(post(side2, json.dumps({"k": -2})), 202, "side takes a message on its new port")
    t.check(wait_until(lambda: "restarted with its new options" in j.log() and
                       "[file.out] restarted with its new options" in j.log(), 10),
            "out restarted once its sends in flight were done")
    n0 = s.count()
    t.check(wait_until(lambda: s.count() >= n0 + 100, 20), "messages keep flowing on `in`")
    t.check(wait_until(lambda: any(d == ["out2"] for d in delivered(j).values()), 10),
            "new messages are written to out's new folder")

    # ---- 2: a port that is taken: the old options run again, a later reload retries ----
    side3 = free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", side3))
    blocker.listen(1)
    write(side=side3, outdir="out2")
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    t.check(code == 200, "reload with a taken port: applied (%r)" % (rep,))
    t.check(wait_until(lambda: "its new options failed" in j.log(), 5),
            "the log says the new options failed and the old ones run again")
    t.eq(post(side2, json.dumps({"k": -3})), 202, "side still takes messages on its old port")
    blocker.close()
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    t.check(code == 200 and rep.get("status") == "reloaded" and
            "channel 'side': listen changed" in " | ".join(rep.get("changes", [])),
            "the same file again: side is restarted again (%r)" % (rep,))
    t.check(wait_until(lambda: port_open(side3), 5), "side listens on the freed port")
    t.eq(post(side3, json.dumps({"k": -4})), 202, "and takes a message there")

    # ---- 3: a direction change is refused ----
    with open(j.cfg) as f:
        good = f.read()
    with open(j.cfg, "w") as f:
        f.write(good.replace("side: { type: http, direction: in, listen: \"127.0.0.1:%d\", "
                             "path: /ingest }" % side3,
                             "side: { type: http, direction: out, url: \"http://127.0.0.1:%d/\" }"
                             % side3).replace("from: [in, side]", "from: [in]"))
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    t.check(code == 409 and "channel 'side': its direction changed" in
            " | ".join(rep.get("errors", [])), "a direction change: 409 (%r)" % (rep,))
    t.check(port_open(side3), "side still listens")

    # ---- 4: a channel added, removed with messages queued, and added again ----
    rp = free_port()  # nothing listens there yet: extra's sends fail and are retried
    extra = CFG.replace("routes:", "  extra: { type: http, direction: out, "
                        "url: \"http://127.0.0.1:%d/x\", retry: { attempts: 100000, "
                        "backoff: 50ms, max_backoff: 200ms } }\nroutes:" % rp) + \
        "  rx: { from: [in], to: [extra] }\n"
    with open(j.cfg, "w") as f:
        f.write((extra % dict(kw, side=side3, outdir="out2")).replace("@DIR@", j.dir))
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    ch = " | ".join(rep.get("changes", []))
    t.check(code == 200 and "channel 'extra' added" in ch and "route 'rx' added" in ch,
            "a channel and its route added live: %r %r" % (code, rep))
    added_at = s.count()
    t.check(wait_until(lambda: s.count() >= added_at + 100, 20), "messages flow to both")
    removed_at = s.count()
    write(side=side3, outdir="out2")
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    ch = " | ".join(rep.get("changes", []))
    t.check(code == 200 and "channel 'extra' removed" in ch and "queue is kept" in ch,
            "the channel removed live: %r %r" % (code, rep))

    def extra_row():
        code, chans = admin_api(admin, "GET", "/api/v1/channels")
        rows = [c for c in chans.get("channels", chans) if c.get("name") == "extra"] \
            if isinstance(chans, (dict, list)) else []
        return rows[0] if rows else {}
    t.check(wait_until(lambda: extra_row().get("state") == "removed", 10),
            "/api/v1/channels shows it removed: %r" % extra_row())
    rcv = Receiver(port=rp).start()
    cleanups.append(rcv.stop)
    time.sleep(1.0)
    t.eq(rcv.count(), 0, "a removed channel sends nothing")
    with open(j.cfg, "w") as f:
        f.write((extra % dict(kw, side=side3, outdir="out2")).replace("@DIR@", j.dir))
    code, rep = admin_api(admin, "POST", "/api/v1/reload")
    t.check(code == 200 and "channel 'extra' added again" in " | ".join(rep.get("changes", [])),
            "added again: %r %r" % (code, rep))
    # The one message in flight while the channel was added may have been routed just before
    # the switch (acknowledged just after it): only those sent after it are certain.
    definite = set(list(s.acked)[added_at + 1:removed_at])
    t.check(wait_until(lambda: {json.loads(b)["k"] for b in rcv.bodies()} >= definite, 30),
            "what its queue kept while removed is delivered once it is back (%d; missing %r)" %
            (len(definite), sorted(definite - {json.loads(b)["k"] for b in rcv.bodies()})[:10]))
    ks = [json.loads(b)["k"] for b in rcv.bodies()]
    t.check(len(ks) == len(set(ks)), "each once at the receiver")
    t.check(extra_row().get("state") == "up", "extra is up again: %r" % extra_row())

    s.stop_flag.set()
    s.join(15)
    t.check(s.error is None, "the sender's connection to `in` was never dropped: %r" % s.error)
    t.check(not s.bad, "every message on `in` accepted: %r" % s.bad[:3])
    want = set(s.acked) | {-2, -3, -4}
    t.check(wait_until(lambda: set(delivered(j)) >= want, 30),
            "every accepted message delivered (%d)" % len(want))
    got = delivered(j)
    twice = {k: v for k, v in got.items() if len(v) != 1}
    t.check(not twice, "each once: %r" % list(twice.items())[:5])
    t.check(set(got) == want, "nothing else: %r" % sorted(set(got) - want)[:5])
    t.eq(j.stop(), 0, "stops cleanly")
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
