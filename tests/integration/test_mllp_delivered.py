"""MLLP IN `ack: delivered`: the ACK carries the outcome of the route, not just durability.

- HTTP OUT receiver down: AE "not delivered yet" after delivered_timeout (1.5 s here); the
  message stays queued and reaches the receiver once it is up; a resend of it then gets AA (the
  outcome that came after the AE) and is not delivered twice.
- HTTP OUT answering 200: AA (sent with python3-hl7's real mllp_send).
- HTTP OUT answering 400: AR with an ERR naming the reason (HTTP 400).
- No route takes the message (unrouted: dead-letter): AR naming it.
- MLLP OUT downstream answering AA, then AR: that downstream ACK is passed back byte for byte
  (MSA-2 already equals the sender's MSH-10 since the message goes through unchanged).
- SIGTERM while an outcome is awaited: AE "broker is stopping" reaches the sender before exit.
mllp_send never checks the ACK and reads one recv per message, so every case but the 200 one
uses the test's own client (mllpt.MllpClient), which reads whole frames.
"""
import os
import time

from jnt import Checks, Junction, Receiver, free_port, wait_until
from mllpt import MllpClient, MllpListener, frame, have_mllp_send, mllp_send, segments

t = Checks("mllp_delivered")
cleanups = []
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
ADT = open(os.path.join(SRC, "tests/data/hl7/adt_a01.hl7"), "rb").read()
ORU = (b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500||ORU^R01^ORU_R01|ORU00001|P|2.5\r"
       b"PID|1||7^^^MR\rOBX|1|NM|GLU||5\r")

CONFIG = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 2s
channels:
  to-http:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(http_in)d
    ack: delivered
    delivered_timeout: 1500ms
  to-mllp:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(mllp_in)d
    ack: delivered
    delivered_timeout: 5s
  to-void:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(void_in)d
    ack: delivered
    delivered_timeout: 10s
  void:
    type: http
    direction: out
    url: http://127.0.0.1:%(void_port)d/nobody-listens
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 200ms }
  ehr:
    type: http
    direction: out
    url: http://127.0.0.1:%(http_port)d/api/adt
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 200ms }
  lab-out:
    type: mllp
    direction: out
    connect: 127.0.0.1:%(mllp_port)d
    ack_timeout: 2s
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
routes:
  adt-to-ehr:
    from: [to-http]
    when: hl7("MSH-9.1") == "ADT"
    to: [ehr]
  all-to-lab:
    from: [to-mllp]
    to: [lab-out]
  all-to-void:
    from: [to-void]
    to: [void]
"""


def adt(ctl):
    return ADT.replace(b"|MSG00001|", b"|" + ctl + b"|")


def msa(ack):
    segs = segments(ack)
    return segs[1] if len(segs) > 1 else b""


def err_seg(ack):
    return [s for s in segments(ack) if s.startswith(b"ERR|")]


def ask(port, msg, timeout=10.0):
    """Sends one framed message on a new connection; returns (ACK, seconds it took)."""
    c = MllpClient(port, timeout=timeout)
    try:
        t0 = time.monotonic()
        c.send(frame(msg))
        ack = c.read_ack(timeout)
        return ack, time.monotonic() - t0
    finally:
        c.close()


def received(rcv, ctl):
    return sum(1 for b in rcv.bodies() if b"|" + ctl + b"|" in b)


try:
    if not have_mllp_send():
        t.check(False, "python3-hl7's mllp_send is installed (apt-get install python3-hl7)")
        t.finish()
    http_in, mllp_in, http_port, mllp_port = free_port(), free_port(), free_port(), free_port()
    void_in, void_port = free_port(), free_port()
    j = Junction(CONFIG % locals(), wait_ports=[http_in, mllp_in, void_in])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()

    # ---- 1. receiver down: AE after delivered_timeout, delivered later ----
    ack, took = ask(http_in, adt(b"DOWN1"))
    t.eq(msa(ack)[:13], b"MSA|AE|DOWN1|", "receiver down: AE with MSA-2 = MSH-10: %r" % ack)
    t.check(1.3 <= took < 5.0, "the AE comes at delivered_timeout (1.5 s), took %.2f s" % took)
    errs = err_seg(ack)
    t.check(len(errs) == 1 and b"not delivered yet" in errs[0],
            "the ERR says not delivered yet: %r" % errs)
    rcv = Receiver([200, 200, 400, 200], port=http_port).start()
    cleanups.append(rcv.stop)
    t.check(wait_until(lambda: received(rcv, b"DOWN1") == 1, 10),
            "the AE'd message stays queued and is delivered once the receiver is up")
    # Its outcome came after the AE: the duplicate window now holds AA for it.
    ack, _ = ask(http_in, adt(b"DOWN1"))
    t.eq(msa(ack), b"MSA|AA|DOWN1", "a resend after the late delivery gets AA")
    t.check(wait_until(lambda: "duplicate of message DOWN1" in j.log(), 5),
            "the resend is taken as a duplicate")

    # ---- 2. receiver answers 200: AA, with the real mllp_send ----
    path = j.path("ok.hl7")
    with open(path, "wb") as f:
        f.write(frame(adt(b"OK1")))
    code, out, err = mllp_send(http_in, path)
    t.eq(code, 0, "mllp_send exits 0 (stderr: %s)" % err)
    acks = [a.rstrip(b"\n").rstrip(b"\r").rstrip(b"\x1c") for a in out.split(b"\x0b")[1:]]
    t.eq(len(acks), 1, "mllp_send printed one ACK: %r" % out)
    if acks:
        t.eq(msa(acks[0]), b"MSA|AA|OK1", "receiver 200: AA")
        t.eq(err_seg(acks[0]), [], "AA has no ERR")
    t.eq(received(rcv, b"OK1"), 1, "the AA came after the receiver had the message")

    # ---- 3. receiver answers 400: AR naming the reason ----
    ack, _ = ask(http_in, adt(b"BAD1"))
    t.eq(msa(ack)[:12], b"MSA|AR|BAD1|", "receiver 400: AR: %r" % ack)
    errs = err_seg(ack)
    t.check(len(errs) == 1 and b"HTTP 400" in errs[0] and b"207^" in errs[0],
            "the ERR (207) names the reason, HTTP 400: %r" % errs)
    t.eq(received(rcv, b"BAD1"), 1, "the receiver got it once (and refused it)")

    # ---- 4. unrouted (dead-lettered at routing): AR at once ----
    ack, _ = ask(http_in, ORU)
    t.eq(msa(ack)[:16], b"MSA|AR|ORU00001|", "unrouted: AR: %r" % ack)
    t.check(b"unrouted" in b"".join(err_seg(ack)), "the ERR says unrouted: %r" % ack)

    # ---- 5. MLLP OUT downstream: its ACK is passed back ----
    peer = MllpListener(["AA", "AR"], port=mllp_port).start()
    cleanups.append(peer.stop)
    ack, _ = ask(mllp_in, adt(b"LAB1"))
    t.eq(ack, b"MSH|^~\\&|PEER|X|JN|Y|20240101000000||ACK|ALAB1|P|2.5\rMSA|AA|LAB1\r",
         "downstream AA: its ACK passed back byte for byte")
    ack, _ = ask(mllp_in, adt(b"LAB2"))
    t.eq(ack, b"MSH|^~\\&|PEER|X|JN|Y|20240101000000||ACK|ALAB2|P|2.5\rMSA|AR|LAB2\r"
              b"ERR|||207^Application internal error^HL70357|E||||peer says no\r",
         "downstream AR: its ACK (with its ERR) passed back byte for byte")
    t.eq(peer.count(), 2, "the downstream got each message once")

    t.check(not wait_until(lambda: received(rcv, b"DOWN1") > 1, 0.5),
            "DOWN1 was delivered once, the resend was not routed")

    # ---- 6. the broker stops while an outcome is awaited: AE "broker is stopping" ----
    retries = j.log().count("retry in")
    c = MllpClient(void_in)
    cleanups.append(c.close)
    c.send(frame(adt(b"STOP1")))
    t.check(wait_until(lambda: j.log().count("retry in") > retries, 5),
            "STOP1 is being retried (nobody listens)")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
    ack = c.read_ack(5)
    t.eq(msa(ack or b"")[:13], b"MSA|AE|STOP1|", "stopping: AE before the connection closes")
    t.check(b"broker is stopping" in b"".join(err_seg(ack or b"")),
            "the ERR says the broker is stopping: %r" % ack)
except Exception as e:  # junction gone, a timeout: report with the log, never just a traceback
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
