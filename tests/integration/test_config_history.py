"""Which config version handled a message (issue 21 part 2).

A broker runs config A and takes a message; it is stopped, the config is changed (a route gets
a set-header service: version B) and it takes another. Each action of each message's trace
names the config hash it was done under (A for the first, B for the second, the same as
/api/v1/status's config_hash then); `junction ctl config history` lists both versions with
their load times, B marked running; `ctl config show A` prints A's text byte for byte; an
unknown or malformed hash is refused. A journal record written before the config field reads
with an empty one (the unit test of the store covers the old format).
"""
import json
import os

from jnt import Checks, Junction, admin_api, curl, free_port, run_junction, wait_until

t = Checks("config_history")
cleanups = []

A = """junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%(p)d", path: /ingest }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
"""
B = A.replace("routes:", """services:
  stamp: { type: set-header, set: { x-v: "b" } }
routes:""").replace("r: { from: [in], to: [out] }", "r: { from: [in], via: [stamp], to: [out] }")


def post(port, body):
    code, out, _ = curl(["-X", "POST", "--data-binary", body, "http://127.0.0.1:%d/ingest" % port])
    return code, json.loads(out)["id"] if code == 202 else None


try:
    admin, p = free_port(), free_port()
    j = Junction(A % dict(admin=admin, p=p), wait_ports=[p, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-3000:]))
    j.start()
    text_a = open(j.cfg).read()
    hash_a = admin_api(admin, "GET", "/api/v1/status")[1].get("config_hash")
    code, id_a = post(p, "first")
    t.eq(code, 202, "message under A accepted")
    t.check(wait_until(lambda: os.path.isdir(j.path("out")) and
                       len(os.listdir(j.path("out"))) == 1, 10), "delivered under A")
    t.eq(j.stop(), 0, "A stops")

    with open(j.cfg, "w") as f:
        f.write((B % dict(admin=admin, p=p)).replace("@DIR@", j.dir))
    j.start()
    hash_b = admin_api(admin, "GET", "/api/v1/status")[1].get("config_hash")
    t.check(hash_a and hash_b and hash_a != hash_b, "two versions: %r %r" % (hash_a, hash_b))
    code, id_b = post(p, "second")
    t.check(wait_until(lambda: len(os.listdir(j.path("out"))) == 2, 10), "delivered under B")

    def configs(mid):
        code, m = admin_api(admin, "GET", "/api/v1/messages/%s" % mid)
        return [(e["event"], e.get("config")) for e in m.get("trace", [])]
    ca, cb = configs(id_a), configs(id_b)
    t.check(len(ca) >= 2 and all(c == hash_a for _, c in ca),
            "every action of the first message names A: %r" % ca)
    t.check(len(cb) >= 3 and all(c == hash_b for _, c in cb),
            "every action of the second message names B: %r" % cb)

    adm = ["--admin", "127.0.0.1:%d" % admin]
    code, out, err = run_junction(["ctl", "config", "history"] + adm)
    rows = [l.split() for l in out.splitlines()[1:]]
    t.check(code == 0 and len(rows) == 2 and rows[0][0] == hash_b and "(running)" in out and
            rows[1][0] == hash_a, "ctl config history: B (running) then A: %r %r" % (out, err))
    code, out, err = run_junction(["ctl", "config", "show", hash_a] + adm)
    t.check(code == 0 and out == text_a, "ctl config show A: its text as written: %r" % out[:200])
    code, out, err = run_junction(["ctl", "show", id_a] + adm)
    t.check(code == 0 and ("config=" + hash_a) in out, "ctl show names the config: %r" % out)
    code, out, err = run_junction(["ctl", "config", "show", "0123456789abcdef"] + adm)
    t.check(code == 1 and "no config" in err, "an unknown hash: %r" % err)
    code, b = admin_api(admin, "GET", "/api/v1/config/nothex")
    t.eq(code, 400, "a malformed hash: 400")
    t.eq(j.stop(), 0, "B stops")
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
