"""mllpt: MLLP helpers for junction's integration tests (standard library only).

- MllpListener: a real MLLP server on a free loopback port that records each frame and answers
  with an ACK whose MSA-1 comes from a list (the last one repeats), MSA-2 echoing MSH-10; or
  with nothing (silent), or with a wrong control id, to test junction's MLLP OUT.
- MllpClient: a raw MLLP client for exact bytes (bad frames, pipelining, half frames).
- mllp_send(): runs python3-hl7's real mllp_send (stack.md §9: always -f FILE, /usr/bin/python3).
"""
import os
import socket
import subprocess
import threading
import time

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
MLLP_SEND = "/usr/bin/mllp_send"


def frame(msg):
    return VT + msg + FS + CR


def msh_field(msg, n):
    """MSH-n of an HL7 message (bytes), MSH-1 being the field separator."""
    seg = msg.split(b"\r")[0].split(b"\n")[0]
    sep = seg[3:4]
    parts = seg.split(sep)
    if n == 1:
        return sep
    return parts[n - 1] if n - 1 < len(parts) else b""


def segments(ack):
    """The segments of an ACK (framing removed), as a list of bytes."""
    ack = ack.strip(VT + FS + CR)
    return [s for s in ack.split(b"\r") if s]


class MllpListener:
    """An MLLP peer for junction's MLLP OUT. codes: MSA-1 per message in turn (last repeats);
    a code of None means: say nothing (junction must time out); "WRONGID": AA with another
    control id."""

    def __init__(self, codes=("AA",), port=None):
        self.port = port or free_port()
        self.codes = list(codes)
        self.frames = []
        self.conns = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        with c:
            while not self.stopped:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while FS + CR in buf:
                    raw, buf = buf.split(FS + CR, 1)
                    msg = raw[raw.find(VT) + 1:]
                    with self.lock:
                        idx = len(self.frames)
                        self.frames.append(msg)
                        code = self.codes[min(idx, len(self.codes) - 1)]
                    if code is None:
                        continue
                    ctl = msh_field(msg, 10)
                    if code == "WRONGID":
                        code, ctl = "AA", b"NOT-" + ctl
                    ack = (b"MSH|^~\\&|PEER|X|JN|Y|20240101000000||ACK|A" + ctl + b"|P|2.5\r"
                           b"MSA|" + code.encode() + b"|" + ctl + b"\r")
                    if code not in ("AA", "CA"):
                        ack += b"ERR|||207^Application internal error^HL70357|E||||peer says no\r"
                    try:
                        c.sendall(frame(ack))
                    except OSError:
                        return

    def count(self):
        with self.lock:
            return len(self.frames)

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass


def free_port():
    from jnt import free_port as jnt_free_port  # one record of the ports given out
    return jnt_free_port()


class MllpClient:
    """A raw MLLP client: send any bytes, read ACK frames one by one."""

    def __init__(self, port, timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_ack(self, timeout=10.0):
        """The next ACK (without framing), or None when the connection closed first."""
        end = time.monotonic() + timeout
        while FS + CR not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no ACK within %.1fs (have %r)" % (timeout, self.buf))
            self.s.settimeout(left)
            data = self.s.recv(65536)
            if not data:
                return None
            self.buf += data
        raw, self.buf = self.buf.split(FS + CR, 1)
        if not raw.startswith(VT):
            raise AssertionError("ACK not framed: %r" % raw)
        return raw[1:]

    def closed(self, timeout=5.0):
        """True when the peer closes the connection (after any pending data) within timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.s.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.buf += data
        return False

    def close(self):
        self.s.close()


def mllp_send(port, path, loose=False, timeout=30):
    """Runs python3-hl7's mllp_send on a file; returns (exit code, stdout bytes, stderr)."""
    args = [MLLP_SEND, "-p", str(port), "-f", path]
    if loose:
        args.insert(1, "--loose")
    p = subprocess.run(args + ["127.0.0.1"], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def have_mllp_send():
    return os.access(MLLP_SEND, os.X_OK)
