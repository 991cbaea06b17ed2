"""Queue paging: a queue longer than its in-memory window waits in the journal and is read back
in order. A destination that is down for more messages than the window (1024 deliveries or
8 MiB of payload) keeps junction's heap bounded, another destination of the same route is not
held up, a restart reads a window instead of the whole queue, and every message arrives
exactly once and in order (ordered: fifo), also those accepted while the backlog drains."""
import http.client
import os
import re
import shutil
import socket
import tempfile
import threading

from jnt import Checks, Junction, Receiver, free_port, wait_until

t = Checks("queue_paging")
tmp = tempfile.mkdtemp(prefix="jn-paging-")
port, rport = free_port(), free_port()
data, copies = os.path.join(tmp, "data"), os.path.join(tmp, "copies")
CONFIG = """
junction:
  data_dir: %(data)s
  shutdown_timeout: 2s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%(rport)d/sink
    ordered: fifo
    retry: { attempts: 1000000, backoff: 20ms, max_backoff: 100ms }
  copy:
    type: file
    direction: out
    dir: %(copies)s
routes:
  r:
    from: [in]
    to: [out, copy]
""" % {"data": data, "copies": copies, "port": port, "rport": rport}

BODY = 16 * 1024   # 1,500 of them: 24 MB, three times the window's 8 MiB
N1, N2 = 1500, 1000


def body(i):
    head = b"msg-%06d;" % i
    return head + b"x" * (BODY - len(head))


def post_range(lo, hi, statuses):
    """POSTs bodies lo..hi-1 in order on one keep-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        for i in range(lo, hi):
            c.request("POST", "/ingest", body=body(i))
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
    finally:
        c.close()


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


# Under AddressSanitizer (scripts/sanitize.sh) the heap is its quarantine and shadow memory:
# the bounds below say nothing there, so only the plain build checks them.
SANITIZED = "ASAN_OPTIONS" in os.environ

procs, rcv = [], None
# The destination is down until part 3, yet its port stays ours: bound without listen(), so
# junction's connects are refused and no other process's socket can take the port meanwhile.
hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
hold.bind(("127.0.0.1", rport))
try:
    j = Junction(CONFIG, wait_ports=[port])
    procs.append(j)
    t.on_fail.append(lambda: print("---- log ----\n" + j.log()[-6000:]))
    j.start()

    # ---- 1. the destination is down for 1,500 messages of 16 KiB ----
    st = []
    post_range(0, N1, st)
    t.eq(st, [202] * N1, "all %d POSTs accepted while the destination is down" % N1)
    t.check(wait_until(lambda: len(os.listdir(copies)) >= N1, 30),
            "the other destination of the route gets all %d (not held up by the backlog)" % N1)
    anon = rss_anon_kb(j.proc.pid)
    print("heap (RssAnon) with %d x %d B queued: %d kB" % (N1, BODY, anon))
    if not SANITIZED:
        t.check(0 < anon < 20 * 1024, "the heap stays bounded with 24 MB queued: %d kB < 20 MB "
                "(the window holds 8 MiB of payload)" % anon)

    # ---- 2. a restart reads a window, not the queue ----
    t.eq(j.stop(), 0, "SIGTERM with the backlog: exit 0")
    j.start()
    # The 1,500 for the down destination, and any copy whose file was written but whose
    # delivery was not yet recorded at the stop (it is written again: at-least-once).
    rec = wait_until(lambda: re.search(r"recovered (\d+) queued deliveries", j.log()), 10)
    t.check(rec and N1 <= int(rec.group(1)) <= 2 * N1,
            "the start counts the backlog without reading it: %s" % (rec and rec.group(0)))
    wait_until(lambda: "cannot connect" in j.log().split("recovered")[-1], 5)
    anon = rss_anon_kb(j.proc.pid)
    print("heap (RssAnon) after the start with %d queued: %d kB" % (N1, anon))
    if not SANITIZED:
        t.check(0 < anon < 16 * 1024, "after the start the heap holds a window: %d kB < 16 MB"
                % anon)

    # ---- 3. the destination returns; more arrive while the backlog drains ----
    hold.close()
    rcv = Receiver(port=rport, delay=0.001).start()
    st2 = []
    poster = threading.Thread(target=post_range, args=(N1, N1 + N2, st2))
    poster.start()
    poster.join(120)
    t.eq(st2, [202] * N2, "all %d POSTs during the drain accepted" % N2)
    t.check(wait_until(lambda: rcv.count() >= N1 + N2, 90),
            "all %d arrive (got %d)" % (N1 + N2, rcv.count()))
    got = [b[:10] for b in rcv.bodies()]
    want = [body(i)[:10] for i in range(N1 + N2)]
    t.eq(len(got), len(want), "no duplicates")
    t.check(got == want, "exactly once and in order (first difference at %s)" %
            next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), "none"))
    t.check(all(len(b) == BODY for b in rcv.bodies()), "every body whole")
    t.check(wait_until(lambda: len(os.listdir(copies)) >= N1 + N2, 30),
            "the file destination has all %d" % (N1 + N2))
    t.eq(j.stop(), 0, "SIGTERM: exit 0")
    t.check(re.search(r"0 send\(s\) in flight; 0 queued message", j.log().split("recovered")[-1]),
            "nothing stays queued")
finally:
    hold.close()
    for p in procs:
        p.cleanup()
    if rcv:
        rcv.stop()
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
