"""A small raw-socket MQTT client for tests of junction's MQTT listener (3.1.1 and 5): builds
CONNECT / PUBLISH / PUBREL / PINGREQ / DISCONNECT bytes and reads packets, so a test can send
exactly what it wants (bad bytes included) and see exactly what comes back."""
import socket
import struct
import time


def varint(n):
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, version=4, keepalive=60, user=None, password=None, clean=True,
            will=None):
    """will: (topic, payload, qos)."""
    flags = 0x02 if clean else 0
    if user is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
    body = s("MQTT") + bytes([version, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        body += b"\x00"
    body += s(client_id)
    if will is not None:
        if version == 5:
            body += b"\x00"
        body += s(will[0]) + s(will[1])
    if user is not None:
        body += s(user)
    if password is not None:
        body += s(password)
    return packet(0x10, body)


def publish(topic, payload, qos=0, pid=0, version=4, retain=False, dup=False):
    body = s(topic)
    if qos:
        body += struct.pack(">H", pid)
    if version == 5:
        body += b"\x00"
    return packet(0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0), body + payload)


def pubrel(pid):
    return packet(0x62, struct.pack(">H", pid))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class Client:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, b):
        self.sock.sendall(b)

    def read(self, timeout=10.0):
        """(type, flags, body) of the next packet; None when the connection closed."""
        end = time.time() + timeout
        while True:
            if len(self.buf) >= 2:
                mult, n, i = 1, 0, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 127) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first >> 4, first & 15, body
            left = end - time.time()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return None
            self.buf += d

    def closed(self, timeout=10.0):
        """True when the peer closes within timeout (packets before that are skipped)."""
        end = time.time() + timeout
        try:
            while time.time() < end:
                if self.read(end - time.time()) is None:
                    return True
        except (TimeoutError, socket.timeout):
            return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
