"""Crash after the ACK, MLLP duplicate window (issue 12, item 14): MLLP IN (ack: commit) -> file
OUT. N messages with distinct MSH-10s are each ACKed AA, junction is killed with SIGKILL right
after the last ACK, started again on the same data_dir, and the sender resends all N (as a
sender does that is not sure its ACKs were read). Every resend gets the very same ACK bytes as
the first copy, and each message is delivered exactly once: the duplicate window entry was
made durable in the same commit as the message, so the crash cannot keep one without the
other."""
import os
import sys
import time
import traceback

from crashlib import Broker, Checks, free_port, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from mllpt import MllpClient, frame, segments  # noqa: E402

N = 40
t = Checks("crash_mllp_dedup")
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
ADT = open(os.path.join(SRC, "tests/data/hl7/adt_a01.hl7"), "rb").read()
in_port = free_port()
broker = Broker("""
junction:
  data_dir: @DIR@/data
  log_level: info
  shutdown_timeout: 2s
channels:
  adt-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: "@DIR@/out"
routes:
  r:
    from: [adt-in]
    to: [out]
""" % in_port, wait_ports=[in_port])
t.on_fail.append(lambda: broker.dump_logs(100))


def delivered():
    d = broker.path("out")
    return [f for f in os.listdir(d) if f.endswith(".msg")] if os.path.isdir(d) else []


def send_all(msgs):
    """Sends every message on one connection, pipelined; returns the ACKs in order."""
    c = MllpClient(in_port)
    try:
        c.send(b"".join(frame(m) for m in msgs))
        return [c.read_ack() for _ in msgs]
    finally:
        c.close()


try:
    msgs = [ADT.replace(b"|MSG00001|", b"|CRASH-%03d|" % i) for i in range(N)]
    broker.start()
    first = send_all(msgs)
    t.check(broker.kill9(), "junction is alive until kill -9 right after the last ACK")
    t.eq([segments(a)[1] for a in first], [b"MSA|AA|CRASH-%03d" % i for i in range(N)],
         "every message is ACKed AA before the crash")

    broker.start()
    t.check(wait_until(lambda: broker.grep(r"duplicate window: %d control id" % N), 5),
            "the restart loads the %d entries of the window from the journal" % N)
    again = send_all(msgs)
    t.eq(again, first, "after kill -9 and a restart every resend gets the very same ACK bytes")
    t.check(wait_until(lambda: len(delivered()) >= N, 15),
            "every acknowledged message is delivered (%d of %d)" % (len(delivered()), N))
    time.sleep(1.0)  # time for a second copy to arrive, if one had been routed
    t.eq(len(delivered()), N, "each message is delivered exactly once")
    t.eq(len(broker.grep(r"duplicate of message CRASH-")), N, "every resend is logged as a "
         "duplicate")
    t.eq(broker.stop(), 0, "SIGTERM: junction exits 0")
    t.eq([r.n for r in broker.unexpected_exits()], [], "junction never exited on its own")
except Exception:
    traceback.print_exc()
    t.check(False, "the test ran to its end without an exception")
finally:
    try:
        broker.cleanup()
    except Exception as e:
        print("(cleanup: %r)" % e)
t.finish()
