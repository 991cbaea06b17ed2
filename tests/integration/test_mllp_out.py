"""junction's MLLP OUT against a real MLLP listener written here: the exact bytes arrive framed,
one persistent connection carries several messages, AA is delivered; AE is retried (then AA
delivers it); AR is rejected at once (dead-lettered with the peer's reason); a peer that does
not answer within ack_timeout is retried on a new connection; an ACK whose MSA-2 is not the
MSH-10 sent is retried; on_error: reject dead-letters an AE; a payload that is not HL7 is
rejected without being sent. Messages come in over HTTP so the payload is exact."""
import os
import re

from jnt import Checks, Junction, curl, free_port, wait_until
from mllpt import MllpListener

t = Checks("mllp_out")
cleanups = []


def msg(ctl):
    return (b"MSH|^~\\&|JN|X|PEER|Y|20240301101500||ADT^A08^ADT_A01|" + ctl + b"|P|2.5\r"
            b"PID|1||7^^^MR||DOE^JOHN\r")


def start(codes, extra=""):
    peer = MllpListener(codes).start()
    cleanups.append(peer.stop)
    port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: mllp
    direction: out
    connect: 127.0.0.1:%d
    ack_timeout: 500ms
    retry: { attempts: 5, backoff: 20ms, max_backoff: 50ms }
%s
routes:
  r:
    from: [in]
    to: [out]
""" % (port, peer.port, extra), wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    return j, peer, "http://127.0.0.1:%d/ingest" % port


def post(j, url, body):
    path = j.path("body-%d" % len(os.listdir(j.dir)))
    with open(path, "wb") as f:
        f.write(body)
    status, _, _ = curl(["--data-binary", "@" + path, url])
    t.eq(status, 202, "HTTP IN answers 202")


try:
    # ---- 1. AA: exact bytes, one persistent connection for several messages ----
    j, peer, url = start(["AA"])
    for i in range(3):
        post(j, url, msg(b"OK%d" % i))
        t.check(wait_until(lambda: peer.count() >= i + 1, 5), "message %d arrives" % i)
    t.eq(peer.frames, [msg(b"OK0"), msg(b"OK1"), msg(b"OK2")], "the peer gets the exact bytes")
    t.check(wait_until(lambda: j.log().count("delivered (attempt 1)") == 3, 5),
            "all three delivered on the first attempt")
    t.eq(peer.conns, 1, "one persistent connection carries them all")
    t.eq(j.stop(), 0, "exit 0")

    # ---- 2. AE then AA: retried, delivered ----
    j, peer, url = start(["AE", "AA"])
    post(j, url, msg(b"AE1"))
    t.check(wait_until(lambda: "delivered after retries (attempt 2)" in j.log(), 5), "AE: delivered on attempt 2")
    t.check("peer answered AE: peer says no" in j.log(), "AE: the reason from ERR-8 is logged")
    t.eq(peer.count(), 2, "AE: sent twice")
    j.stop()

    # ---- 3. AR: rejected at once, dead-lettered ----
    j, peer, url = start(["AR"])
    post(j, url, msg(b"AR1"))
    t.check(wait_until(lambda: "dead-letter" in j.log() or "dead letter" in j.log(), 5),
            "AR: dead-lettered")
    t.check(re.search(r"dead-lettered .*: peer answered AR: peer says no", j.log()),
            "AR: reason logged")
    t.check(not wait_until(lambda: peer.count() > 1, 0.5), "AR: sent once")
    j.stop()

    # ---- 4. no answer: retried on a new connection after ack_timeout ----
    j, peer, url = start([None, "AA"])
    post(j, url, msg(b"TO1"))
    t.check(wait_until(lambda: "delivered after retries (attempt 2)" in j.log(), 5),
            "timeout: delivered on attempt 2")
    t.check("no ACK from 127.0.0.1:%d within 500 ms" % peer.port in j.log(),
            "timeout: the reason names the peer and the timeout")
    t.eq(peer.conns, 2, "timeout: the connection was replaced")
    j.stop()

    # ---- 5. MSA-2 is not our MSH-10: retried ----
    j, peer, url = start(["WRONGID", "AA"])
    post(j, url, msg(b"ID1"))
    t.check(wait_until(lambda: "delivered after retries (attempt 2)" in j.log(), 5),
            "wrong MSA-2: delivered on attempt 2")
    t.check("ACK is for control id 'NOT-ID1', expected 'ID1'" in j.log(),
            "wrong MSA-2: the reason says which")
    j.stop()

    # ---- 6. on_error: reject; a payload that is not HL7 ----
    j, peer, url = start(["AE"], extra="    on_error: reject")
    post(j, url, msg(b"AE2"))
    t.check(wait_until(lambda: re.search(r"dead-lettered .*: peer answered AE", j.log()), 5),
            "on_error: reject dead-letters an AE")
    post(j, url, b"not hl7 at all")
    t.check(wait_until(lambda: "the payload is not an HL7 message" in j.log(), 5),
            "a payload that is not HL7 is rejected")
    t.check(not wait_until(lambda: peer.count() > 1, 0.5), "and is never sent")
    j.stop()
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
