"""The TLS handshake deadline on the evhttp-driven listeners (issue 16): the admin listener with
admin_tls, and HTTPS IN with net.handshake_timeout, drop a TCP client that connects and sends
nothing (or trickles a partial ClientHello) once the deadline has passed, log it as a refused
handshake, and keep serving a client that does finish its handshake (openssl s_client / curl).
The admin's deadline is net.handshake_timeout's default, 10 s (the admin has no net: block)."""
import socket
import tempfile
import time

from jnt import Checks, Junction, curl, free_port, wait_until
from tlst import Pki

t = Checks("tls_deadline")
tmp = tempfile.mkdtemp(prefix="jn-tls-deadline-")
pki = Pki(tmp)
ca = pki.ca("ca", "Test CA")
srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
aport, hport = free_port(), free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
  admin: 127.0.0.1:%d
  admin_tls: { cert: %s, key: %s }
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /in
    request_timeout: 60s
    net: { handshake_timeout: 1s }
    tls: { cert: %s, key: %s }
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [web], to: [out] }
""" % (aport, srv, srv_key, hport, srv, srv_key), wait_ports=[aport, hport])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))


def closed_within(port, seconds, send=b""):
    """Connects, sends `send` (a partial ClientHello), waits for the server's end. Returns the
    seconds it took, or None when the connection was still open after `seconds`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    start = time.monotonic()
    if send:
        s.sendall(send)
    try:
        while True:
            if not s.recv(4096):
                break
    except socket.timeout:
        s.close()
        return None
    except ConnectionResetError:
        pass
    s.close()
    return time.monotonic() - start


try:
    j.start()
    # HTTPS IN: 1 s deadline; request_timeout (60 s) would not cut it off this soon.
    took = closed_within(hport, 20)
    t.check(took is not None, "HTTPS IN: a silent client is disconnected (took %r s)" % took)
    t.check(wait_until(lambda: "no TLS handshake within 1000 ms" in j.log(), 5),
            "HTTPS IN: the log says no TLS handshake within 1000 ms")
    # A trickled ClientHello start does not extend it (a deadline, not an idle timeout).
    s = socket.create_connection(("127.0.0.1", hport), timeout=20)
    start = time.monotonic()
    end = None
    for b in b"\x16\x03\x01\x00\xa0\x01\x00\x00":
        try:
            s.sendall(bytes([b]))
        except OSError:
            end = time.monotonic()
            break
        time.sleep(0.3)
    if end is None:
        try:
            while s.recv(4096):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
        end = time.monotonic()
    s.close()
    t.check(end - start < 10, "HTTPS IN: a trickling handshake is cut off too (%.1f s)" %
            (end - start))
    status, body, _ = curl(["--cacert", ca, "--data-binary", "ok",
                            "https://localhost:%d/in" % hport, "--resolve",
                            "localhost:%d:127.0.0.1" % hport])
    t.eq(status, 202, "HTTPS IN: a client that completes its handshake is served")

    # The admin listener: the same deadline, net.handshake_timeout's default of 10 s.
    took = closed_within(aport, 30)
    t.check(took is not None, "admin: a silent TLS client is disconnected (took %r s)" % took)
    t.check(wait_until(lambda: "[admin] peer" in j.log() and
                       "no TLS handshake within 10000 ms" in j.log(), 5),
            "admin: the log says no TLS handshake within 10000 ms")
    status, body, _ = curl(["--cacert", ca, "https://localhost:%d/health" % aport,
                            "--resolve", "localhost:%d:127.0.0.1" % aport])
    t.eq(status, 200, "admin: a client that completes its handshake is served")
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
finally:
    j.cleanup()
t.finish()
