"""MLLP IN's ACKs when the peer does not read them for a while (issue 20: an ACK on an idle
plain socket goes out with one send(), and whatever the socket does not take goes through the
bufferevent behind it). One connection pipelines 3000 ADT^A01 without reading, from a thread,
with a small receive buffer, so the ACKs fill both socket buffers and the later ones queue in
junction; then it reads everything. Every message gets exactly one complete AA ACK, in the
order sent (MSA-2 = its MSH-10), and all 3000 are delivered to the file OUT."""
import os
import socket
import threading
import time

from jnt import Checks, Junction, free_port, wait_until
from mllpt import frame, segments

t = Checks("mllp_ack_backlog")
N = 3000
ADT = (b"MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240301101500||ADT^A01^ADT_A01|%s|P|2.5\r"
       b"EVN|A01|20240301101500\rPID|1||12345^^^MR||DOE^JOHN||19700101|M\r"
       b"PV1|1|I|W1^101^1\r")

in_port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 2s
channels:
  adt-in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: @DIR@/out
    mode: append
    framing: hl7-batch
    name: "all.hl7"
routes:
  r:
    from: [adt-in]
    to: [out]
""" % in_port, wait_ports=[in_port])
sock = None
try:
    j.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", in_port))
    ids = [b"BK%05d" % i for i in range(N)]
    sent = []

    def send_all():
        for i in ids:
            sock.sendall(frame(ADT % i))
        sent.append(True)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Not reading: junction's ACKs fill our receive buffer and its send buffer first.
    time.sleep(1.0)
    sock.settimeout(30)
    buf = b""
    deadline = time.time() + 60
    while buf.count(b"\x1c\r") < N and time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            print("no more ACKs after %d of %d" % (buf.count(b"\x1c\r"), N), flush=True)
            break
        if not chunk:
            break
        buf += chunk
    sender.join(5)
    t.check(bool(sent), "the sender got all %d messages out" % N)
    frames = [f for f in buf.split(b"\x1c\r") if f]
    t.eq(len(frames), N, "one ACK per message")
    bad = []
    for i, f in enumerate(frames[:N]):
        segs = segments(f + b"\x1c\r")
        ok = (f.startswith(b"\x0b") and f.count(b"\x0b") == 1 and len(segs) >= 2 and
              segs[0].startswith(b"MSH|") and segs[1] == b"MSA|AA|" + ids[i])
        if not ok:
            bad.append((i, f[:80]))
    t.eq(bad[:3], [], "every ACK is whole, AA, and answers the message sent in that place")
    t.check(wait_until(lambda: os.path.exists(j.path("out", "all.hl7")) and
                       open(j.path("out", "all.hl7"), "rb").read().count(b"MSH|") >= N, 30),
            "all %d messages are in the file" % N)
    if os.path.exists(j.path("out", "all.hl7")):
        t.eq(open(j.path("out", "all.hl7"), "rb").read().count(b"|BK"), N,
             "each message once in the file")
    sock.close()
    sock = None
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
except Exception as e:  # junction gone, a timeout: report with the log, never a bare traceback
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()[-4000:]))
    if sock is not None:
        sock.close()
    j.cleanup()
t.finish()
