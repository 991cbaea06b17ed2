"""The engine's listener (broker/jn_listener.c) under HTTP IN and MLLP IN, on the real binary.

Phase 1 (limits): max_connections on HTTP (the net: name; an extra peer is answered 503 and
closed, docs/security.md "Limits"; served again once one closes) and on MLLP (the old top-level name; the extra socket is closed at once),
and net.max_connections_per_ip on both (127.0.0.1 and 127.0.0.2 are two peers: the second
address still gets in).

Phase 2 (EMFILE): the broker runs under a low open-file limit (ulimit -n). We open connections
until accept fails with EMFILE: the broker logs it once per channel instead of spinning, keeps
running, and serves HTTP and MLLP again once the connections close.
"""
import resource
import socket
import time

from jnt import Checks, Junction, curl, free_port, wait_until
from mllpt import frame, segments

t = Checks("listener")
MSG = (b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500||ADT^A01|L%05d|P|2.5\r"
       b"PID|1||123^^^HOSP^MR||DOE^JOHN\r")


def dial(port, src=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if src:
        s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s, within=2.0):
    """True when the server closes s (EOF or reset) within the time; False if it stays open."""
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def http_post(port, body=b"x", src=None, timeout=5.0):
    """Status code of one POST /ingest over a raw socket (0 when no answer in time)."""
    try:
        s = dial(port, src)
        s.settimeout(timeout)
        s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    except (OSError, ValueError, IndexError):
        return 0


def mllp_ack(port, n, src=None, timeout=5.0):
    """MSA-1 of the ACK for one message (b"" when none)."""
    try:
        s = dial(port, src)
        s.settimeout(timeout)
        s.sendall(frame(MSG % n))
        data = b""
        while b"\x1c\r" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        for seg in segments(data):
            if seg.startswith(b"MSA|"):
                return seg.split(b"|")[1]
    except OSError:
        pass
    return b""


def config(ports):
    return """
junction:
  data_dir: @DIR@/data
channels:
  hmax:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    net: { max_connections: 3 }
  hip:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    net: { max_connections_per_ip: 2 }
  mmax:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
    max_connections: 2
  mip:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
    net: { max_connections_per_ip: 1, accept_pause: 100ms }
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r:
    from: [hmax, hip, mmax, mip]
    to: [out]
""" % tuple(ports)


# ---- phase 1: limits ----
ports = [free_port() for _ in range(4)]
hmax, hip, mmax, mip = ports
j = Junction(config(ports), wait_ports=ports)
t.on_fail.append(lambda: print("---- junction log (limits) ----\n" + j.log()))
held = []
try:
    j.start()
    # wait_ports' probe connections close at once; let the broker see them go.
    time.sleep(0.3)

    # HTTP, net.max_connections 3: a 4th peer is answered 503, then served when one closes.
    held = [dial(hmax) for _ in range(3)]
    time.sleep(0.3)
    t.eq(http_post(hmax), 503, "http: a 4th connection over max_connections 3 is answered 503 "
         "while 3 are open")
    t.check(wait_until(lambda: "max_connections (3) reached" in j.log(), 5),
            "http: the limit is logged")
    held.pop().close()
    t.eq(http_post(hmax), 202, "http: once one closes a new peer is served")
    for s in held:
        s.close()
    held = []

    # MLLP, max_connections 2 (the old top-level name): a 3rd is closed at once.
    held = [dial(mmax) for _ in range(2)]
    time.sleep(0.3)
    third = dial(mmax)
    t.check(closed_by_server(third), "mllp: a 3rd connection over max_connections 2 is closed")
    third.close()
    t.check(not closed_by_server(held[0], 0.3), "mllp: the first two stay open")
    t.check(wait_until(lambda: "max_connections (2) reached" in j.log(), 5),
            "mllp: the limit is logged")
    held.pop().close()
    time.sleep(0.3)
    t.eq(mllp_ack(mmax, 1), b"AA", "mllp: once one closes a new peer is served")
    for s in held:
        s.close()
    held = []

    # HTTP, net.max_connections_per_ip 2: a 3rd from 127.0.0.1 is refused; 127.0.0.2 gets in.
    held = [dial(hip) for _ in range(2)]
    time.sleep(0.3)
    t.eq(http_post(hip), 503, "http: a 3rd connection from one address is answered 503")
    t.eq(http_post(hip, src="127.0.0.2"), 202, "http: another address is served")
    t.check("max_connections_per_ip (2) reached" in j.log(), "http: the per-IP limit is logged")
    for s in held:
        s.close()
    held = []
    time.sleep(0.3)
    t.eq(http_post(hip), 202, "http: once its connections closed the address is served again")

    # MLLP, net.max_connections_per_ip 1.
    held = [dial(mip)]
    time.sleep(0.3)
    second = dial(mip)
    t.check(closed_by_server(second), "mllp: a 2nd connection from one address is closed")
    second.close()
    t.eq(mllp_ack(mip, 2, src="127.0.0.2"), b"AA", "mllp: another address is served")
    held.pop().close()
    time.sleep(0.3)
    t.eq(mllp_ack(mip, 3), b"AA", "mllp: once its connection closed the address is served again")
    t.check(j.alive(), "the broker runs on")
    t.eq(j.stop(), 0, "junction exits 0 on SIGTERM")
finally:
    for s in held:
        s.close()
    j.cleanup()

# ---- phase 2: EMFILE ----
ports = [free_port() for _ in range(2)]
hport, mport = ports
j2 = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  hin:
    type: http
    direction: in
    listen: 127.0.0.1:%d
  min:
    type: mllp
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r:
    from: [hin, min]
    to: [out]
""" % (hport, mport), wait_ports=ports)
t.on_fail.append(lambda: print("---- junction log (EMFILE) ----\n" + j2.log()))
LIMIT = 64
old = resource.getrlimit(resource.RLIMIT_NOFILE)
held = []
try:
    # The child inherits the low soft limit; ours goes back at once.
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, old[1]))
    try:
        j2.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    time.sleep(0.3)
    for port, name in ((hport, "hin"), (mport, "min")):
        # More connections than the broker has descriptors: the extra ones wait in the backlog.
        held = [dial(port) for _ in range(LIMIT + 10)]
        t.check(wait_until(lambda: ("%s] cannot accept a connection: Too many open files" % name)
                           in j2.log(), 5), "%s: EMFILE is logged" % name)
        time.sleep(1.0)  # several accept_pause periods
        t.check(j2.alive(), "%s: the broker keeps running at EMFILE" % name)
        n = j2.log().count("%s] cannot accept a connection" % name)
        t.check(n <= 2, "%s: logged once, not once per failed accept (%d lines)" % (name, n))
        for s in held:
            s.close()
        held = []
        time.sleep(0.5)
    t.eq(http_post(hport), 202, "http: served again once the connections closed")
    t.eq(mllp_ack(mport, 10), b"AA", "mllp: served again once the connections closed")
    t.eq(j2.stop(), 0, "junction exits 0 on SIGTERM")
finally:
    for s in held:
        s.close()
    j2.cleanup()

t.finish()
