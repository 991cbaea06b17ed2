"""Bad input on junction's MLLP IN, from the corpus in tests/data/hl7/bad (see its README.md):
each case's bytes go out on a fresh connection and the answer must be exactly the expected ACK
frames (MSH-7 and MSH-10 of each ACK aside), then a closed connection with a log line naming
the peer and the fault where the case says so. While a connection sits in the middle of a
frame, others go on; junction never goes down; every good message in the cases is routed."""
import glob
import os
import socket
import time

from jnt import Checks, Junction, free_port, wait_until
from mllpt import FS, CR, VT, MllpClient

t = Checks("mllp_bad")
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
BAD = os.path.join(SRC, "tests/data/hl7/bad")


def normalize(ack):
    """An ACK frame with its MSH-7 and MSH-10 replaced by {TS} and {ACKID}."""
    body = ack
    segs = body.split(b"\r")
    f = segs[0][3:4]
    parts = segs[0].split(f)
    if len(parts) > 9:
        parts[6] = b"{TS}"
        parts[9] = b"{ACKID}"
    segs[0] = f.join(parts)
    return VT + b"\r".join(segs) + FS + CR


def read_all(c, want_acks, wait_close):
    """ACK frames until want_acks came (then a short grace for extra ones) or the peer closed."""
    got = []
    closed = False
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            a = c.read_ack(timeout=0.4 if len(got) >= want_acks else end - time.monotonic())
        except (TimeoutError, socket.timeout):
            break
        except OSError:
            closed = True
            break
        if a is None:
            closed = True
            break
        got.append(normalize(a))
    if wait_close and not closed:
        closed = c.closed(5)
    return got, closed


try:
    port, sport = free_port(), free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: info
channels:
  in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
    max_message: 1KiB
  strict-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
    strict: true
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  all:
    from: [in, strict-in]
    to: [out]
""" % (port, sport), wait_ports=[port, sport])
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()

    # A connection left in the middle of a frame does not hold up the others.
    hang = MllpClient(port)
    hang.send(VT + b"MSH|^~\\&|LAB|HOSP|EHR|WARD|2024||ADT^A01|H1|P|2.5\rPID|")

    cases = sorted(p[:-3] for p in glob.glob(os.path.join(BAD, "*.in")))
    t.check(len(cases) >= 15, "the corpus has the bad cases (%d)" % len(cases))
    for case in cases:
        name = os.path.basename(case)
        sent = open(case + ".in", "rb").read()
        want = open(case + ".ack", "rb").read()
        want_frames = [VT + x + FS + CR for x in want.split(FS + CR) if x] if want else []
        want_frames = [w.replace(VT + VT, VT) for w in want_frames]
        close = case + ".close"
        close_text = open(close, "rb").read().decode().strip() if os.path.exists(close) else None
        c = MllpClient(sport if name.startswith("strict_") else port)
        c.send(sent)
        if name.endswith("_eof"):
            c.s.shutdown(socket.SHUT_WR)
        got, closed = read_all(c, len(want_frames), close_text is not None)
        c.close()
        t.eq(got, want_frames, "%s: the exact ACKs" % name)
        if close_text is not None:
            t.check(closed, "%s: the connection is closed" % name)
            t.check(wait_until(lambda: any(close_text in line and "peer 127.0.0.1:" in line
                                           for line in j.log().splitlines()), 5),
                    "%s: a log line names the peer and the fault: %r" % (name, close_text))
        else:
            t.check(not closed, "%s: the connection stays open" % name)
        t.check(j.alive(), "%s: junction is still running" % name)

    # The held connection still works once it finishes its frame.
    hang.send(b"1\r" + FS + CR)
    a = hang.read_ack()
    t.eq(a.split(b"\r")[1] if a else None, b"MSA|AA|H1", "the half-sent message is ACKed AA")
    hang.close()
    # Good messages among the cases were routed: G1, G2, E3 and H1.
    t.check(wait_until(lambda: len(os.listdir(j.path("out"))) == 4 if os.path.isdir(
        j.path("out")) else False, 5), "the 4 good messages were delivered: %r" %
        (os.listdir(j.path("out")) if os.path.isdir(j.path("out")) else None))
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
except Exception as e:  # junction gone, a timeout: report with the log, never just a traceback
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    try:
        j.cleanup()
    except NameError:
        pass
t.finish()
