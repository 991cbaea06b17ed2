"""Hot reload (issue 21 part 1): routes and services change live, nothing lost, one config each.

A sender posts numbered JSON messages over ONE keep-alive connection the whole time, while the
config is changed four times under it:
  A: in -> out, no services (routed in the ingest transaction)
  B: in -> [slow (delay 20ms), tb (template "B:...")] -> out   (POST /api/v1/reload)
  C: in -> [tc (template "C:...")] -> out, out's retry changed  (junction ctl reload, while B's
     delay keeps a backlog in the routing worker)
  A again                                                       (SIGHUP)
Each delivered file says which config routed it (the original JSON, "B:n" or "C:n"). Checked:
every accepted message is delivered exactly once and in one form; what was acknowledged before
a reload began is in the old form (A's, routed at ingest), what was sent after it returned is in
the new one; B's backlog finishes under B after the switch to C (jobs keep their generation);
the connection is never dropped; /api/v1/status names each new hash. Refused reloads keep the
running config: a file with an error (422, file:line:col, `ctl reload` exits 1 printing it) and
another data_dir (409: needs a restart). An unchanged file is "unchanged". Each message's routing
actions in the action log name one config hash.
"""
import json
import os
import signal
import time

from jnt import Checks, Junction, KeepAliveSender, admin_api, free_port, run_junction, wait_until

t = Checks("reload")
cleanups = []

HEAD = """junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(p)d", path: /ingest }
  out: { type: file, direction: out, dir: "@DIR@/out"%(retry)s }
"""
A = HEAD + """routes:
  r: { from: [in], to: [out] }
"""
B = HEAD + """services:
  slow: { type: delay, duration: 20ms }
  tb: { type: template, template: "B:{json.k}" }
routes:
  r: { from: [in], via: [slow, tb], to: [out] }
"""
C = HEAD + """services:
  tc: { type: template, template: "C:{json.k}" }
routes:
  r: { from: [in], via: [tc], to: [out] }
"""


def write(j, text, **kw):
    v = dict(admin=kw["admin"], p=kw["p"], retry=kw.get("retry", ""))
    with open(j.cfg, "w") as f:
        f.write((text % v).replace("@DIR@", j.dir))


def delivered(j):
    """n -> list of forms ("A", "B", "C") of the delivered files."""
    out = {}
    d = j.path("out")
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.startswith("."):
            continue
        try:
            body = open(os.path.join(d, name)).read()
        except OSError:
            continue
        if body.startswith("B:") or body.startswith("C:"):
            out.setdefault(int(body[2:]), []).append(body[0])
        else:
            try:
                out.setdefault(json.loads(body)["k"], []).append("A")
            except ValueError:
                out.setdefault(-1, []).append(body[:40])
    return out


def reload_api(admin):
    return admin_api(admin, "POST", "/api/v1/reload")


try:
    admin, p = free_port(), free_port()
    kw = dict(admin=admin, p=p)
    j = Junction(A % dict(kw, retry=""), wait_ports=[p, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    j.start()
    hash_a = admin_api(admin, "GET", "/api/v1/status")[1]["config_hash"]
    adm = ["--admin", "127.0.0.1:%d" % admin]

    s = KeepAliveSender(p)
    s.start()
    t.check(wait_until(lambda: s.count() >= 200, 20), "A: messages flow before any reload")

    # ---- A -> B by the API ----
    write(j, B, **kw)
    before_b = time.monotonic()
    code, rep = reload_api(admin)
    after_b = time.monotonic()
    t.eq(code, 200, "reload to B: 200 (%r)" % (rep,))
    t.eq(rep.get("status"), "reloaded", "reload to B: reloaded")
    hash_b = rep.get("config_hash")
    t.check(hash_b and hash_b != hash_a and rep.get("previous_hash") == hash_a,
            "the answer names the new and the previous hash: %r" % rep)
    ch = " | ".join(rep.get("changes", []))
    t.check("service 'slow' added" in ch and "service 'tb' added" in ch and
            "route 'r': via changed" in ch, "what changed is listed: %r" % ch)
    st = admin_api(admin, "GET", "/api/v1/status")[1]
    t.check(st["config_hash"] == hash_b and st.get("config_reloads") == 1,
            "status names B and one reload: %r" % {k: st.get(k) for k in
                                                   ("config_hash", "config_reloads")})
    # B routes 50 a second (its 20 ms delay): sent at ~100 a second, a backlog builds in
    # the routing worker, each message acknowledged once its inbox record is committed.
    s.pause = 0.01
    n0 = s.count()
    t.check(wait_until(lambda: s.count() >= n0 + 150, 20), "B: messages flow")

    # ---- refused: an error in the file, then a new channel ----
    with open(j.cfg) as f:
        good = f.read()
    with open(j.cfg, "w") as f:
        f.write(good.replace("duration: 20ms", "duration: 20ms, colour: red"))
    code, rep = reload_api(admin)
    errs = " | ".join(rep.get("errors", []))
    t.eq(code, 422, "a file with an unknown option: 422 (%r)" % (rep,))
    t.check(rep.get("status") == "invalid" and ("%s:" % os.path.basename(j.cfg)) in errs and
            "colour" in errs, "its error at file:line:col: %r" % errs)
    rc, out, err = run_junction(["ctl", "reload"] + adm)
    t.check(rc == 1 and "invalid" in err and "colour" in err,
            "ctl reload: exit 1, the error printed: %r %r" % (out, err))
    with open(j.cfg, "w") as f:
        f.write(good.replace("data_dir: %s/data" % j.dir, "data_dir: %s/data2" % j.dir))
    code, rep = reload_api(admin)
    errs = " | ".join(rep.get("errors", []))
    t.check(code == 409 and rep.get("status") == "refused" and
            "junction.data_dir changed" in errs and "restart" in errs,
            "another data_dir: 409, needs a restart: %r %r" % (code, rep))
    t.eq(admin_api(admin, "GET", "/api/v1/status")[1]["config_hash"], hash_b,
         "after both refusals B still runs")
    with open(j.cfg, "w") as f:
        f.write(good)
    code, rep = reload_api(admin)
    t.check(code == 200 and rep.get("status") == "unchanged", "B again: unchanged: %r" % rep)

    # ---- B -> C by ctl, with B's delay holding a backlog ----
    t.check(wait_until(lambda: admin_api(admin, "GET", "/api/v1/status")[1]
                       .get("routing_in_flight", 0) >= 5, 15),
            "B's delay keeps messages waiting for the routing worker")
    write(j, C, retry=", retry: {attempts: 3}", **kw)
    before_c = time.monotonic()
    rc, out, err = run_junction(["ctl", "reload"] + adm)
    after_c = time.monotonic()
    t.check(rc == 0 and out.startswith("reloaded: config %s -> " % hash_b) and
            "service 'tc' added" in out and "service 'slow' removed" in out and
            "channel 'out': retry.attempts changed (applied live)" in out,
            "ctl reload to C: %r %r" % (out, err))
    s.pause = 0.0
    hash_c = admin_api(admin, "GET", "/api/v1/status")[1]["config_hash"]
    t.check(hash_c not in (hash_a, hash_b), "C runs: %r" % hash_c)
    n1 = s.count()
    t.check(wait_until(lambda: s.count() >= n1 + 150, 20), "C: messages flow")

    # ---- C -> A by SIGHUP ----
    write(j, A, **kw)
    before_a2 = time.monotonic()
    os.kill(j.proc.pid, signal.SIGHUP)
    t.check(wait_until(lambda: admin_api(admin, "GET", "/api/v1/status")[1]["config_hash"] ==
                       hash_a, 10), "SIGHUP: A runs again")
    after_a2 = time.monotonic()
    n2 = s.count()
    t.check(wait_until(lambda: s.count() >= n2 + 150, 20), "A again: messages flow")
    s.stop_flag.set()
    s.join(15)
    t.check(s.error is None, "the sender's one connection was never dropped: %r" % s.error)
    sent = list(s.sent)
    t.check(all(st == 202 for _, _, _, st in sent),
            "every message accepted: %r" % [x for x in sent if x[3] != 202][:3])
    acked = {n for n, _, _, st in sent if st == 202}
    t.check(wait_until(lambda: set(delivered(j)) >= acked, 30),
            "every accepted message delivered (%d)" % len(acked))
    got = delivered(j)
    t.check(set(got) == acked, "nothing else delivered: %r" % sorted(set(got) - acked)[:5])
    twice = {n: f for n, f in got.items() if len(f) != 1}
    t.check(not twice, "each exactly once: %r" % list(twice.items())[:5])
    form = {n: f[0] for n, f in got.items()}
    sent_at = {n: (t0, t1) for n, t0, t1, _ in sent}

    def forms(lo, hi):
        return {form[n] for n, (t0, t1) in sent_at.items() if t1 < hi and t0 > lo}
    t.check(forms(0, before_b) <= {"A"}, "acknowledged before the reload to B: A's routing")
    # Those include the backlog the worker still held when C came: routed after the switch,
    # under the generation they were posted with.
    t.check(forms(after_b, before_c) == {"B"},
            "sent between the reloads to B and C: B's: %r" % forms(after_b, before_c))
    t.check(forms(after_c, before_a2) == {"C"},
            "sent after the reload to C and before SIGHUP: C's: %r" % forms(after_c, before_a2))
    t.check(forms(after_a2, 1e18) == {"A"}, "sent after SIGHUP: A's: %r" % forms(after_a2, 1e18))

    # Each message's routing actions name one config (sampled across the run).
    mixed = []
    ids = {}
    code, lst = admin_api(admin, "GET", "/api/v1/messages?limit=1000")
    for m in lst.get("messages", []) if isinstance(lst, dict) else []:
        ids[m.get("id")] = m
    for mid in list(ids)[:: max(1, len(ids) // 60)]:
        code, m = admin_api(admin, "GET", "/api/v1/messages/%s" % mid)
        hs = {e.get("config") for e in m.get("trace", []) if e["event"].startswith("routed") or
              e["event"] in ("filtered", "queued")}
        if len(hs) > 1:
            mixed.append((mid, hs))
    t.check(len(ids) > 0 and not mixed, "routing actions of each message name one config "
            "(%d checked): %r" % (len(ids), mixed[:3]))

    rc, out, err = run_junction(["ctl", "config", "history"] + adm)
    t.check(rc == 0 and hash_b in out and hash_c in out and hash_a in out,
            "ctl config history lists A, B and C: %r" % out)
    t.check("config reloaded: %s -> %s" % (hash_a, hash_b) in j.log() and
            "config reload invalid" in j.log(), "the log says each reload and refusal")
    t.eq(j.stop(), 0, "stops cleanly after four configs")
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
