"""MLLP IN duplicate window across a restart (issue 12, item 14): the window is kept in the
journal, so a resend after junction stopped and started again is still a duplicate.

- ack: commit: a message is ACKed AA and delivered to a file OUT; SIGTERM; start again; the
  resend of the same MSH-10 gets the very same ACK bytes and no second file is written.
- ack: delivered: the same, with the ACK that carried the outcome (AA once delivered); the
  entry's answer was written to the journal when the outcome came.
- ack: delivered whose outcome had not come at the stop (HTTP receiver down: AE at
  delivered_timeout): after the restart the resend is answered AE "accepted before a restart"
  and not routed again; once the receiver is up the message arrives exactly once.
- duplicate_window: 1s: a resend after the window has passed (across the restart) is a new
  message: a fresh AA and a second file; the expired entries are pruned from the journal.
Each IN channel routes to its own file OUT directory, so deliveries are counted as files.
"""
import os
import time

from jnt import Checks, Junction, Receiver, free_port, wait_until
from mllpt import MllpClient, frame, segments

t = Checks("mllp_dedup_restart")
cleanups = []
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
ADT = open(os.path.join(SRC, "tests/data/hl7/adt_a01.hl7"), "rb").read()

CONFIG = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 2s
channels:
  commit-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(commit_port)d
  delivered-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(dlv_port)d
    ack: delivered
    delivered_timeout: 10s
  short-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(short_port)d
    duplicate_window: 1s
  pending-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(pending_port)d
    ack: delivered
    delivered_timeout: 500ms
  pending-out:
    type: http
    direction: out
    url: http://127.0.0.1:%(http_port)d/adt
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 200ms }
  commit-out: { type: file, direction: out, dir: "@DIR@/out-commit" }
  delivered-out: { type: file, direction: out, dir: "@DIR@/out-delivered" }
  short-out: { type: file, direction: out, dir: "@DIR@/out-short" }
routes:
  c: { from: [commit-in], to: [commit-out] }
  d: { from: [delivered-in], to: [delivered-out] }
  s: { from: [short-in], to: [short-out] }
  p: { from: [pending-in], to: [pending-out] }
"""


def files(j, name):
    d = j.path(name)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def send(port, msg):
    c = MllpClient(port)
    try:
        c.send(frame(msg))
        return c.read_ack()
    finally:
        c.close()


def msa(ack):
    segs = segments(ack or b"")
    return segs[1] if len(segs) > 1 else b""


try:
    commit_port, dlv_port, short_port = free_port(), free_port(), free_port()
    pending_port, http_port = free_port(), free_port()
    j = Junction(CONFIG % locals(), wait_ports=[commit_port, dlv_port, short_port, pending_port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))

    m_commit = ADT.replace(b"|MSG00001|", b"|RST-C-1|")
    m_dlv = ADT.replace(b"|MSG00001|", b"|RST-D-1|")
    m_short = ADT.replace(b"|MSG00001|", b"|RST-S-1|")
    m_pending = ADT.replace(b"|MSG00001|", b"|RST-P-1|")

    # ---- first run: each message once ----
    j.start()
    ack_c = send(commit_port, m_commit)
    t.eq(msa(ack_c), b"MSA|AA|RST-C-1", "ack: commit: AA")
    ack_d = send(dlv_port, m_dlv)
    t.eq(msa(ack_d), b"MSA|AA|RST-D-1", "ack: delivered: AA once the file is written")
    ack_s = send(short_port, m_short)
    t_short = time.monotonic()
    t.eq(msa(ack_s), b"MSA|AA|RST-S-1", "duplicate_window 1s: AA")
    t.check(wait_until(lambda: len(files(j, "out-commit")) == 1 and
                       len(files(j, "out-delivered")) == 1 and
                       len(files(j, "out-short")) == 1, 10),
            "each message is delivered once")
    # A resend in the same run is a duplicate, as before (the in-memory window).
    t.eq(send(commit_port, m_commit), ack_c, "same run: the resend gets the very same ACK")
    ack_p = send(pending_port, m_pending)
    t.check(msa(ack_p).startswith(b"MSA|AE|RST-P-1|not delivered yet within delivered_timeout"),
            "receiver down: AE at delivered_timeout (%r)" % msa(ack_p))

    # ---- SIGTERM, start again on the same data_dir ----
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
    j.start()

    again_c = send(commit_port, m_commit)
    t.eq(again_c, ack_c, "after the restart, ack: commit: the very same ACK bytes (AA)")
    again_d = send(dlv_port, m_dlv)
    t.eq(again_d, ack_d, "after the restart, ack: delivered: the very same ACK bytes (AA)")
    again_p = send(pending_port, m_pending)
    t.check(msa(again_p).startswith(b"MSA|AE|RST-P-1|not delivered yet: accepted before a "
                                    b"restart"),
            "after the restart, outcome not known: AE, not routed again (%r)" % msa(again_p))
    t.check(wait_until(lambda: j.log().count("duplicate of message RST-C-1") == 2 and
                       j.log().count("duplicate of message RST-D-1") == 1 and
                       j.log().count("duplicate of message RST-P-1") == 1, 5),
            "the resends after the restart are logged as duplicates")
    rcv = Receiver([200], port=http_port).start()
    cleanups.append(rcv.stop)
    t.check(wait_until(lambda: rcv.count() >= 1, 10),
            "receiver up: the message queued before the restart arrives")

    # The short window has passed (across the restart): the resend is a new message.
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t_short)))
    again_s = send(short_port, m_short)
    t.eq(msa(again_s), b"MSA|AA|RST-S-1", "duplicate_window passed: AA")
    t.check(again_s != ack_s, "duplicate_window passed: a new ACK (its own MSH-10), not the "
            "remembered one")
    t.check(wait_until(lambda: len(files(j, "out-short")) == 2, 10),
            "duplicate_window passed: the resend is delivered as a new message")
    t.check(not wait_until(lambda: len(files(j, "out-commit")) > 1 or
                           len(files(j, "out-delivered")) > 1, 1.5),
            "no second copy of the duplicates (files: commit %d, delivered %d)" %
            (len(files(j, "out-commit")), len(files(j, "out-delivered"))))
    t.eq(rcv.count(), 1, "the message whose outcome was open at the stop arrives once")
    # The prune deletes what expired from the journal (first pass 1 s after the start).
    t.check(wait_until(lambda: "duplicate window: deleting" in j.log(), 15),
            "expired duplicate entries are pruned from the journal")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0 (second run)")
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
