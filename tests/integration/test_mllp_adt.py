"""The HL7 done-when: an ADT^A01 sent with python3-hl7's real mllp_send is ACKed AA once it is
durable, routed on MSH-9 (hl7("MSH-9.1") == "ADT") to an HTTP OUT as JSON (hl7-to-json) and to
an MLLP OUT as HL7, byte for byte; an ORU is not taken by those routes. Durable before the ACK:
with both receivers down, the ACKed message survives kill -9 and is delivered after a restart.
A resend of the same message (same MSH-10, MSH-3, MSH-4) gets the very same ACK and is not
delivered twice. (mllp_send strips the message's last CR before framing it, so that is what
arrives; the codec takes a last segment without its end.)"""
import json
import os
import re
import signal

from jnt import Checks, Junction, Receiver, free_port, wait_until
from mllpt import MllpListener, frame, have_mllp_send, mllp_send, segments

t = Checks("mllp_adt")
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
  adt-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(in_port)d
  ehr:
    type: http
    direction: out
    url: http://127.0.0.1:%(http_port)d/api/adt
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
  lab-out:
    type: mllp
    direction: out
    connect: 127.0.0.1:%(mllp_port)d
    ack_timeout: 2s
    retry: { attempts: 100, backoff: 50ms, max_backoff: 200ms }
services:
  adt-json:
    type: hl7-to-json
routes:
  adt-to-ehr:
    from: [adt-in]
    when: hl7("MSH-9.1") == "ADT" && hl7("MSH-9.2") =~ "A0[1-8]"
    via: [adt-json]
    to: [ehr]
  adt-to-lab:
    from: [adt-in]
    when: hl7("MSH-9.1") == "ADT"
    to: [lab-out]
unrouted: drop
"""


def write_framed(j, name, *msgs):
    path = j.path(name)
    with open(path, "wb") as f:
        for m in msgs:
            f.write(frame(m))
    return path


def acks_of(out):
    """The ACKs mllp_send printed (one per message, each + "\\n"), framing removed."""
    return [a.rstrip(b"\n").rstrip(b"\r").rstrip(b"\x1c") for a in out.split(b"\x0b")[1:]]


def check_ack(ack, ctlid, code="AA"):
    segs = segments(ack)
    t.eq(len(segs), 2, "the ACK has MSH and MSA: %r" % ack)
    if len(segs) < 2:
        return
    msh = segs[0].split(b"|")
    t.eq(msh[:7], [b"MSH", b"^~\\&", b"EHR", b"GOOD HEALTH HOSPITAL", b"ADT1",
                   b"GOOD HEALTH HOSPITAL", msh[6]], "ACK MSH-3..6 swap sender and receiver")
    t.check(re.match(rb"^\d{14}\+0000$", msh[6]) is not None, "ACK MSH-7 is a UTC time: %r" %
            msh[6])
    t.eq(msh[8:], [b"ACK^A01^ACK", msh[9], b"P", b"2.5"], "ACK MSH-9, MSH-11, MSH-12")
    t.eq(len(msh[9]), 20, "ACK MSH-10 is 20 characters")
    t.eq(segs[1], b"MSA|" + code.encode() + b"|" + ctlid, "MSA: %s and MSH-10 echoed" % code)


try:
    if not have_mllp_send():
        t.check(False, "python3-hl7's mllp_send is installed (apt-get install python3-hl7)")
        t.finish()
    in_port, http_port, mllp_port = free_port(), free_port(), free_port()
    j = Junction(CONFIG % locals(), wait_ports=[in_port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))

    # ---- 1. durable before ACK: receivers down, AA, kill -9, restart, delivered ----
    j.start()
    code, out, err = mllp_send(in_port, write_framed(j, "adt.hl7", ADT))
    t.eq(code, 0, "mllp_send exits 0 (stderr: %s)" % err)
    acks = acks_of(out)
    t.eq(len(acks), 1, "one ACK printed: %r" % out)
    if acks:
        check_ack(acks[0], b"MSG00001")
    t.check(wait_until(lambda: "retry in" in j.log(), 10),
            "with the receivers down, delivery is being retried")
    j.proc.send_signal(signal.SIGKILL)
    j.proc.wait()
    t.eq(j.proc.returncode, -signal.SIGKILL, "junction died by SIGKILL after the ACK")

    peer = MllpListener(["AA"], port=mllp_port).start()
    cleanups.append(peer.stop)
    rcv = Receiver([200], port=http_port).start()
    cleanups.append(rcv.stop)
    j.start()
    t.check(wait_until(lambda: rcv.count() >= 1 and peer.count() >= 1, 15),
            "after the restart the ACKed message reaches both receivers")
    if peer.count() >= 1:
        t.eq(peer.frames[0], ADT.rstrip(b"\r"),
             "MLLP OUT: the peer gets the exact HL7 bytes (as mllp_send sent them)")
    if rcv.count() >= 1:
        r = rcv.requests[0]
        t.eq(r["path"], "/api/adt", "HTTP OUT path")
        t.eq(r["headers"].get("content-type"), "application/json", "HTTP OUT: JSON")
        doc = json.loads(r["body"])
        segs = doc["segments"]
        t.eq([s[0] for s in segs], ["MSH", "EVN", "PID", "NK1", "PV1"], "JSON segment ids")
        t.eq(segs[0][9], ["ADT", "A01", "ADT_A01"], "JSON MSH-9 components")
        t.eq(segs[0][10], "MSG00001", "JSON MSH-10")
        t.eq(segs[2][3], {"repeat": [["PATID1234", "", "", "GOOD HEALTH HOSPITAL", "MR"],
                                     ["123456789", "", "", "USSSA", "SS"]]},
             "JSON PID-3 keeps both repetitions and their components")
        t.eq(segs[2][5], ["EVERYMAN", "ADAM", "A", "III"], "JSON PID-5")
        t.eq(doc["eol"], "\r", "JSON eol")
        t.eq(r["headers"].get("x-junction-id") is not None, True, "X-Junction-Id set")

    # ---- 2. a duplicate gets the same ACK and is not delivered again ----
    # The window is in memory (docs/hl7.md): after the restart MSG00001 is new again, so the
    # duplicates are tested with a message of this run, twice in one connection and once more
    # in another.
    adt2 = ADT.replace(b"|MSG00001|", b"|MSG00002|")
    code, out, err = mllp_send(in_port, write_framed(j, "adt2.hl7", adt2, adt2))
    acks = acks_of(out)
    t.eq(len(acks), 2, "two ACKs for the message and its duplicate")
    if len(acks) == 2:
        check_ack(acks[0], b"MSG00002")
        t.eq(acks[1], acks[0], "the duplicate gets the very same ACK bytes")
    code, out, err = mllp_send(in_port, write_framed(j, "adt3.hl7", adt2))
    t.eq(acks_of(out), acks[:1], "a resend on a new connection gets the same ACK too")
    t.check(wait_until(lambda: j.log().count("duplicate of message MSG00002") == 2, 5),
            "both duplicates are logged")
    t.check(wait_until(lambda: rcv.count() >= 2 and peer.count() >= 2, 10),
            "MSG00002 reaches both receivers")

    # ---- 3. routed on MSH-9: an ORU is not taken by the ADT routes ----
    code, out, err = mllp_send(in_port, write_framed(j, "oru.hl7", ORU))
    acks = acks_of(out)
    t.eq(len(acks), 1, "ORU: one ACK")
    if acks:
        t.eq(segments(acks[0])[1], b"MSA|AA|ORU00001", "ORU: AA (accepted, then unrouted)")
    t.check(wait_until(lambda: "unrouted from adt-in: dropped" in j.log(), 5),
            "ORU: no route takes it (dropped by unrouted: drop)")
    t.check(not wait_until(lambda: rcv.count() > 2 or peer.count() > 2, 1.0),
            "nothing else reaches the receivers (http %d, mllp %d)" % (rcv.count(),
                                                                      peer.count()))
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
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
