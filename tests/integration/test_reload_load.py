"""Twenty reloads under steady HTTP and MLLP load (issue 21's reload check).

Two configs alternate by POST /api/v1/reload, 20 times:
  X: hin -> [tag: template "X:{json.k}"] -> outA;             min (MLLP) -> outM
  Y: hin -> [tag: template "Y:{json.k}"] -> outA, and a route h2: hin -> outB (the raw JSON);
     min -> outM
so each reload adds or removes a route and changes a service, while an HTTP sender (one
keep-alive connection) and an MLLP sender (one connection) keep sending. Checked: every reload
is applied; no request is refused on either channel (neither changed); every message arrives
once; each HTTP message's outputs match one config: "X:k" in outA and nothing in outB, or
"Y:k" in outA and k in outB; and the action log of a sample of them names the hash of that same
config on its routing records.
"""
import json
import os
import threading
import time

from jnt import Checks, Junction, KeepAliveSender, admin_api, free_port, wait_until
from mllpt import MllpClient, frame, segments

t = Checks("reload_load")
cleanups = []

HEAD = """junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  hin: { type: http, direction: in, listen: "127.0.0.1:%(p)d", path: /ingest }
  min: { type: mllp, direction: in, listen: "127.0.0.1:%(m)d" }
  outA: { type: file, direction: out, dir: "@DIR@/outA" }
  outB: { type: file, direction: out, dir: "@DIR@/outB" }
  outM: { type: file, direction: out, dir: "@DIR@/outM" }
services:
  tag: { type: template, template: "%(form)s:{json.k}" }
routes:
  h: { from: [hin], via: [tag], to: [outA] }
  m: { from: [min], to: [outM] }
"""
X = HEAD.replace("%(form)s", "X")
Y = HEAD.replace("%(form)s", "Y") + "  h2: { from: [hin], to: [outB] }\n"


class MllpSender(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop_flag = port, threading.Event()
        self.acked, self.bad, self.error = [], [], None

    def run(self):
        c = MllpClient(self.port)
        n = 0
        try:
            while not self.stop_flag.is_set():
                cid = "M%d" % n
                msg = ("MSH|^~\\&|LAB|H|J|H|20261207120000||ADT^A01|%s|P|2.5\r"
                       "PID|1||%d^^^H||DOE^JOHN\r" % (cid, n)).encode()
                c.send(frame(msg))
                ack = c.read_ack()
                msa = [s for s in segments(ack) if s.startswith(b"MSA")]
                if msa and msa[0].split(b"|")[1] == b"AA":
                    self.acked.append(cid)
                else:
                    self.bad.append((cid, ack[:120]))
                n += 1
                time.sleep(0.005)
        except Exception as e:
            self.error = repr(e)
        finally:
            c.close()


def files(d):
    out = []
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if not name.startswith("."):
            try:
                out.append(open(os.path.join(d, name), "rb").read())
            except OSError:
                pass
    return out


try:
    admin, p, m = free_port(), free_port(), free_port()
    kw = dict(admin=admin, p=p, m=m)
    j = Junction(X % kw, wait_ports=[p, m, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    j.start()
    hs, ms = KeepAliveSender(p, pause=0.003), MllpSender(m)
    hs.start()
    ms.start()
    t.check(wait_until(lambda: len(hs.acked) > 50 and len(ms.acked) > 20, 20), "load flows")
    hashes = {}
    applied = 0
    for i in range(20):
        text = Y if i % 2 == 0 else X
        with open(j.cfg, "w") as f:
            f.write((text % kw).replace("@DIR@", j.dir))
        code, rep = admin_api(admin, "POST", "/api/v1/reload")
        if code == 200 and rep.get("status") == "reloaded":
            applied += 1
            hashes["Y" if text is Y else "X"] = rep["config_hash"]
        else:
            t.check(False, "reload %d: %r %r" % (i + 1, code, rep))
        time.sleep(0.3)
    t.eq(applied, 20, "all 20 reloads applied")
    hashes["X"] = hashes.get("X") or admin_api(admin, "GET", "/api/v1/status")[1]["config_hash"]
    time.sleep(0.5)
    hs.stop_flag.set()
    ms.stop_flag.set()
    hs.join(15)
    ms.join(15)
    t.check(hs.error is None and ms.error is None, "both connections stayed up: %r %r" %
            (hs.error, ms.error))
    t.check(not hs.bad and not ms.bad, "no request refused on the channels that did not change: "
            "%r %r" % (hs.bad[:3], ms.bad[:3]))
    print("%d HTTP and %d MLLP messages over 20 reloads" % (len(hs.acked), len(ms.acked)))

    def arrived():
        a = len(files(j.path("outA"))) >= len(hs.acked)
        mm = len(files(j.path("outM"))) >= len(ms.acked)
        return a and mm
    t.check(wait_until(arrived, 30), "everything arrived")
    time.sleep(0.5)
    form = {}
    dup = []
    for body in files(j.path("outA")):
        s = body.decode()
        k = int(s[2:])
        if k in form:
            dup.append(k)
        form[k] = s[0]
    inb = {}
    for body in files(j.path("outB")):
        k = json.loads(body)["k"]
        inb[k] = inb.get(k, 0) + 1
    t.check(set(form) == set(hs.acked) and not dup,
            "each HTTP message once in outA (missing %r, twice %r)" %
            (sorted(set(hs.acked) - set(form))[:5], dup[:5]))
    t.check(set(form.values()) == {"X", "Y"}, "both configs routed messages: %r" %
            set(form.values()))
    wrong = [k for k, f in form.items() if (f == "Y") != (inb.get(k) == 1)]
    t.check(not wrong and all(v == 1 for v in inb.values()),
            "outputs match one config: Y's also in outB once, X's not at all (%d wrong: %r)" %
            (len(wrong), wrong[:5]))
    cids = [segments(b)[0].split(b"|")[9].decode() for b in files(j.path("outM"))]
    t.check(sorted(cids) == sorted(ms.acked), "each MLLP message once in outM (%d of %d)" %
            (len(set(cids)), len(ms.acked)))

    # The action log: the routing records of a sample name the config whose outputs they have.
    mism = []
    keys = sorted(hs.acked)
    for k in keys[:: max(1, len(keys) // 50)]:
        code, msg = admin_api(admin, "GET", "/api/v1/messages/%s" % hs.acked[k])
        hs_ = {e.get("config") for e in msg.get("trace", []) if e["event"].startswith("routed")}
        if hs_ != {hashes[form[k]]}:
            mism.append((k, form[k], hs_))
    t.check(not mism, "each sampled trace names exactly the config of its outputs: %r" %
            mism[:3])
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
