"""tools/jn-mllp-send against junction's MLLP IN: a plain file with LF ends and two messages is
sent message by message and each ACK printed; a batch file is sent as its messages; without -u
a repeat is a duplicate (same ACK, routed once), with -u -c 4 -n 200 every message is new and
accepted; a message junction refuses makes the exit code 1; python3-hl7's mllp_send --loose
works on the same plain file."""
import os
import subprocess

from jnt import Checks, Junction, free_port, wait_until
from mllpt import have_mllp_send, mllp_send

t = Checks("mllp_tool")
SRC = os.environ.get("JN_SOURCE_DIR", os.getcwd())
BIN = os.environ.get("JUNCTION_BIN", os.path.join(SRC, "build", "junction"))
TOOL = os.path.join(os.path.dirname(BIN), "jn-mllp-send")


def tool(*args):
    p = subprocess.run([TOOL] + list(args), capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


j = None
try:
    port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: info
channels:
  in:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r:
    from: [in]
    when: hl7("MSH-9.1") != "BAD"
    to: [out]
unrouted: drop
""" % port, wait_ports=[port])
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    hostport = "127.0.0.1:%d" % port
    plain = j.path("two.txt")
    with open(plain, "wb") as f:
        f.write(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|P1|P|2.5\nPID|1\n\n"
                b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|P2|P|2.5\nPID|2\n")

    code, out, err = tool(hostport, plain)
    t.eq(code, 0, "two messages: exit 0 (%s)" % err)
    t.check("MSA|AA|P1" in out and "MSA|AA|P2" in out, "each ACK printed: %r" % out)
    t.check("2 message(s) on 1 connection(s)" in err and "2 accepted" in err,
            "summary: %r" % err)

    # Again, without -u: duplicates, ACKed and not routed again.
    code, out, err = tool("-q", hostport, plain)
    t.eq(code, 0, "repeat: exit 0")
    t.check(wait_until(lambda: j.log().count("duplicate of message") == 2, 5),
            "repeat: both are duplicates")

    batch = os.path.join(SRC, "tests/data/hl7/batch.hl7")
    code, out, err = tool(hostport, batch)
    t.eq(code, 0, "batch: exit 0 (%s)" % err)
    t.eq([line for line in out.splitlines() if line.startswith("MSA|")],
         ["MSA|AA|B1", "MSA|AA|B2", "MSA|AA|B3"], "batch: one ACK per message")

    code, out, err = tool("-q", "-u", "-c", "4", "-n", "200", hostport, plain)
    t.eq(code, 0, "load: exit 0 (%s)" % err)
    t.check("200 message(s) on 4 connection(s)" in err and "200 accepted" in err,
            "load: summary: %r" % err)
    t.eq(out, "", "-q prints no ACKs")
    t.check(wait_until(lambda: len(os.listdir(j.path("out"))) == 2 + 3 + 200, 15),
            "every new message was routed once: %d files" % len(os.listdir(j.path("out"))))

    bad = j.path("bad.hl7")
    with open(bad, "wb") as f:
        f.write(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|R1|P|2.5\rpid|1\r")
    code, out, err = tool(hostport, bad)
    t.eq(code, 1, "a refused message: exit 1")
    t.check("MSA|AR|R1" in out and "1 rejected (AR/CR)" in err, "AR printed and counted")

    code, out, err = tool("127.0.0.1:%d" % free_port(), plain)
    t.eq(code, 1, "nobody listening: exit 1")
    t.check("cannot connect" in err, "says it cannot connect: %r" % err)

    code, out, err = tool(hostport)
    t.eq(code, 2, "no file: usage, exit 2")

    if have_mllp_send():
        loose = j.path("loose.txt")
        with open(loose, "wb") as f:
            f.write(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|L1|P|2.5\nPID|1\n")
        code, out, err = mllp_send(port, loose, loose=True)
        t.check(b"MSA|AA|L1" in out, "mllp_send --loose: AA (%r)" % out)
    t.eq(j.stop(), 0, "exit 0")
except Exception as e:
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    if j:
        j.cleanup()
t.finish()
