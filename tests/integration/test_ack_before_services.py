"""Acknowledge before services (issue 13 step 6): a route through services is routed after the
sender's answer, from the inbox the ingest commit wrote, so a slow service delays its own
messages and never the acknowledgement.

- HTTP IN -> delay 1500ms -> set-header -> HTTP OUT: three POSTs all get their 202 before the
  first of them reaches the receiver; then all three arrive, in the order sent, transformed,
  with the ids of their 202s. The trace shows received, then routed+transformed.
- A service that fails after the 202 (json-map on a body that is not JSON): the message is
  dead-lettered with the service's reason, as before.
- MLLP IN `ack: delivered` through the slow service keeps its meaning: the AA comes only once
  the receiver has the message; a service failure gives AR naming the service.
- SIGTERM while messages wait behind the slow service: junction stops at once (exit 0, well
  within shutdown_timeout) and the next start routes what waited, from the inbox: every
  acknowledged message arrives once.
"""
import os
import re
import time

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until
from mllpt import MllpClient, frame, segments

t = Checks("ack_before_services")
cleanups = []
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
ADT = open(os.path.join(SRC, "tests/data/hl7/adt_a01.hl7"), "rb").read()

CONFIG = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 5s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(http_in)d
    path: /ingest
  bad:
    type: http
    direction: in
    listen: 127.0.0.1:%(bad_in)d
    path: /ingest
  hl7:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(mllp_in)d
    ack: delivered
    delivered_timeout: 10s
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%(rcv_port)d/sink
    headers: { X-Stamped: "{header.X-Stamped}" }
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
services:
  slow:
    type: delay
    duration: %(delay)s
  stamp:
    type: set-header
    set: { X-Stamped: "yes" }
  tidy:
    type: json-map
    rename: { a: b }
routes:
  slow-path:
    from: [in, hl7]
    via: [slow, stamp]
    to: [out]
  failing:
    from: [bad]
    via: [slow, tidy]
    to: [out]
"""


def post(port, body):
    code, out, hdrs = curl(["-X", "POST", "--data-binary", body,
                            "http://127.0.0.1:%d/ingest" % port])
    m = re.search(rb'"id":"([0-9A-Z]+)"', out)
    return code, (m.group(1).decode() if m else None)


def msa(ack):
    segs = segments(ack or b"")
    return segs[1] if len(segs) > 1 else b""


def adt(ctl):
    return ADT.replace(b"|MSG00001|", b"|" + ctl + b"|")


try:
    http_in, bad_in, mllp_in, rcv_port = free_port(), free_port(), free_port(), free_port()
    delay = "1500ms"
    rcv = Receiver([200], port=rcv_port).start()
    cleanups.append(rcv.stop)
    j = Junction(CONFIG % locals(), wait_ports=[http_in, bad_in, mllp_in])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()

    # ---- 1. three 202s before the first delivery; then all three, in order ----
    ids = []
    for n in range(3):
        code, mid = post(http_in, "msg-%d" % n)
        t.eq(code, 202, "POST %d behind a 1.5 s service: 202" % n)
        ids.append(mid)
    t.eq(rcv.count(), 0, "all three 202s came before the first message left the service")
    t.check(wait_until(lambda: rcv.count() >= 3, 15), "then all three are delivered")
    with rcv.lock:
        got = [(r["body"], r["headers"].get("x-stamped"), r["headers"].get("x-junction-id"))
               for r in rcv.requests]
    t.eq([g[0] for g in got], [b"msg-0", b"msg-1", b"msg-2"], "in the order they were sent")
    t.eq([g[1] for g in got], ["yes"] * 3, "transformed by the route's set-header")
    t.eq([g[2] for g in got], ids, "each with the id its 202 gave")
    code, out, err = run_junction(["trace", "-c", j.cfg, ids[0]])
    t.eq(code, 0, "junction trace exits 0 (%s)" % err)
    events = re.findall(r"\b(received|routed\+transformed|delivered)\b", out)
    t.eq(events[:3], ["received", "routed+transformed", "delivered"],
         "the trace: received, routed+transformed, delivered: %r" % out)

    # ---- 2. a service failing after the 202: dead-lettered with its reason ----
    code, bad_id = post(bad_in, "this is not json")
    t.eq(code, 202, "not JSON, behind json-map: still 202 (the services run after it)")
    t.check(wait_until(lambda: "payload is not JSON" in j.log(), 10),
            "json-map's failure is logged after the 202")
    # The log line is written when the dead letter is built; its commit follows.
    dl = {}

    def listed():
        dl["r"] = run_junction(["dlq", "list", "-c", j.cfg])
        return dl["r"][0] == 0 and bad_id in dl["r"][1]
    wait_until(listed, 10)
    code, out, err = dl["r"]
    t.check(code == 0 and bad_id in out and "payload is not JSON" in out,
            "dlq list shows it with the service's reason: %r %r" % (out, err))

    # ---- 3. MLLP ack: delivered through the slow service ----
    before = rcv.count()
    c = MllpClient(mllp_in, timeout=15)
    cleanups.append(c.close)
    c.send(frame(adt(b"SLOW1")))
    ack = c.read_ack(15)
    t.eq(msa(ack)[:13], b"MSA|AA|SLOW1", "ack: delivered through services: AA: %r" % ack)
    t.eq(rcv.count(), before + 1, "the AA came once the receiver had the message")
    c.close()

    # ---- 4. SIGTERM with messages behind the service; the next start routes them ----
    before = rcv.count()
    acked = []
    for n in range(6):
        code, mid = post(http_in, "later-%d" % n)
        if code == 202:
            acked.append(mid)
    t.eq(len(acked), 6, "six more 202s")
    t0 = time.monotonic()
    t.eq(j.stop(), 0, "SIGTERM with messages behind the service: exit 0")
    took = time.monotonic() - t0
    t.check(took < 4.5, "it stopped without waiting for the service's backlog (%.2f s)" % took)
    left = rcv.count() - before
    t.check(left < 6, "some of them were still waiting when it stopped (%d delivered)" % left)
    j.start()
    t.check(wait_until(lambda: re.search(r"recovered \d+ queued deliveries and [1-9]\d* "
                                         r"accepted", j.log()), 10),
            "the restart routes what waited in the inbox")
    t.check(wait_until(lambda: rcv.count() - before >= 6, 20),
            "every acknowledged message arrives after the restart")
    time.sleep(0.5)
    with rcv.lock:
        ids_after = [r["headers"].get("x-junction-id") for r in rcv.requests[before:]]
    t.eq(sorted(ids_after), sorted(acked), "each exactly once, with its 202's id")
    t.eq(j.stop(), 0, "second stop: exit 0")
    t.check(re.search(r"stopping: intake closed; 0 send\(s\) in flight; 0 queued",
                      j.log().rsplit("junction started", 1)[-1]),
            "nothing left queued")
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
