"""file OUT, mode: append with framing: hl7-batch (issue 20): HTTP IN -> HL7 batch files.

1. 300 HL7 messages (segments ending in CR, LF or CRLF, with and without a final terminator)
   end in batch files rotated by size: each final file is FHS, BHS, the messages in order with
   every segment ending in CR and nothing else changed, then BTS|<its message count> and
   FTS|1; every message once.
2. A leftover .part (a crash) is completed at the next start: the torn tail is cut, a trailer
   written before the crash is replaced by one with the right count; a leftover with a header
   only is removed.
3. framing: hl7-batch without mode: append is refused at file:line:col.
"""
import http.client
import os
import re
import traceback

from jnt import Checks, Junction, free_port, run_junction, wait_until

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: "off"
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
    path: /ingest
  batch:
    type: file
    direction: out
    dir: @DIR@/out
    mode: append
    framing: hl7-batch
    name: "adt.hl7"
    max_file_bytes: 6000
routes:
  r:
    from: [in]
    to: [batch]
"""


def final_files(root):
    out = {}
    for n in os.listdir(root) if os.path.isdir(root) else ():
        if not n.startswith("."):
            with open(os.path.join(root, n), "rb") as f:
                out[n] = f.read()
    return out


def order_key(name):
    m = re.match(r"^adt(?:\.(\d+))?\.hl7$", name)
    return int(m.group(1) or 0) if m else -1


def message(i):
    """An ADT message; the segment terminators vary with i."""
    segs = [b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261207120000||ADT^A01|CTRL%05d|P|2.5" % i,
            b"PID|1||%d^^^HOSP||DOE^JANE" % i, b"PV1|1|I|W%d" % (i % 9)]
    term = [b"\r", b"\n", b"\r\n"][i % 3]
    body = term.join(segs)
    return body + term if i % 2 == 0 else body  # half without a final terminator


def as_record(m):
    """What the batch file must hold for m: every segment ending in CR."""
    r = m.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return r if r.endswith(b"\r") else r + b"\r"


def parse_batch(data):
    """(header segments, message records, trailer segments) of a batch file, or an error."""
    segs = data.split(b"\r")
    if segs[-1] != b"":
        return "the file does not end with CR"
    segs = segs[:-1]
    if len(segs) < 4 or not segs[0].startswith(b"FHS|^~\\&|") or \
            not segs[1].startswith(b"BHS|^~\\&|"):
        return "no FHS/BHS header: %r" % segs[:2]
    if not segs[-2].startswith(b"BTS|") or segs[-1] != b"FTS|1":
        return "no BTS/FTS trailer: %r" % segs[-2:]
    msgs = []
    for s in segs[2:-2]:
        if s.startswith(b"MSH|"):
            msgs.append(s + b"\r")
        elif msgs:
            msgs[-1] += s + b"\r"
        else:
            return "a segment before the first MSH: %r" % s
    if segs[-2] != b"BTS|%d" % len(msgs):
        return "BTS says %r, the file holds %d messages" % (segs[-2], len(msgs))
    return msgs


t = Checks("file_append_hl7")
port = free_port()
j = Junction(CONFIG % {"port": port}, wait_ports=[port])
t.on_fail.append(lambda: print(j.log()))
try:
    j.start()
    out = j.path("out")
    N = 300
    sent = [message(i) for i in range(N)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    codes = []
    for m in sent:
        conn.request("POST", "/ingest", body=m, headers={"Content-Type": "x-application/hl7-v2+er7"})
        r = conn.getresponse()
        r.read()
        codes.append(r.status)
    conn.close()
    t.eq(codes, [202] * N, "every POST is accepted")
    t.check(wait_until(lambda: len(final_files(out)) >= 2, 10),
            "files are completed by size during the load")
    t.eq(j.stop(), 0, "junction stops cleanly")
    t.eq([n for n in os.listdir(out) if n.endswith(".part")], [], "no .part left after the stop")
    files = final_files(out)
    names = sorted(files, key=order_key)
    t.check(len(names) >= 3, "rotation by max_file_bytes gives several batch files: %r" % names)
    got = []
    for n in names:
        b = parse_batch(files[n])
        if t.check(isinstance(b, list), "%s is a whole batch file: %s" % (n, b)):
            got += b
            t.check(b"\n" not in files[n], "%s has no LF: segments end in CR only" % n)
    t.eq(len(got), N, "every message is in the batch files once")
    t.check(got == [as_record(m) for m in sent],
            "the records are the messages in order, segments ending in CR, nothing else changed")

    # 2. Leftovers of a "crash": two whole messages, a stale trailer, a torn third message.
    hdr = b"FHS|^~\\&|junction||||20261207000000+0000\rBHS|^~\\&|junction||||20261207000000+0000\r"
    m1, m2 = as_record(message(1000)), as_record(message(1001))
    with open(os.path.join(out, ".adt.hl7.part"), "wb") as f:
        f.write(hdr + m1 + m2 + b"BTS|7\rFTS|1\r" + b"MSH|^~\\&|torn")
    with open(os.path.join(out, ".adt9.hl7.part"), "wb") as f:
        f.write(hdr + b"MSH|^~")
    before = set(files)
    j.start()
    t.check(wait_until(lambda: not any(n.endswith(".part") for n in os.listdir(out)), 5),
            "the leftovers are dealt with at the start: %r" % os.listdir(out))
    new = {n: d for n, d in final_files(out).items() if n not in before}
    t.eq(list(new.values()), [hdr + m1 + m2 + b"BTS|2\rFTS|1\r"],
         "the leftover is completed with a trailer counting its 2 messages, torn tail cut")
    t.check(re.search(r"removed the leftover .*\.adt9\.hl7\.part", j.log()),
            "the leftover with no whole message is removed")
    t.eq(j.stop(), 0, "junction stops cleanly again")
except Exception:
    t.check(False, "exception:\n" + traceback.format_exc())
finally:
    j.cleanup()

# 3. hl7-batch frames files of many messages: mode: file is refused.
cfg = Junction("""
channels:
  in: { type: http, direction: in, listen: 127.0.0.1:%d, path: /i }
  out:
    type: file
    direction: out
    dir: @DIR@/out
    framing: hl7-batch
routes:
  r: { from: [in], to: [out] }
""" % free_port())
try:
    code, so, se = run_junction(["check", "-c", cfg.cfg])
    t.eq(code, 1, "junction check refuses framing: hl7-batch with mode: file")
    t.check(re.search(r"junction\.yaml:\d+:\d+: .*framing: hl7-batch .*needs mode: append",
                      so + se), "the error names framing and mode:\n%s%s" % (so, se))
finally:
    cfg.cleanup()
t.finish()
