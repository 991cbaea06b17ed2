"""WebSocket test peers on Debian's python3-websockets (10.4): a server that records what it gets
and acks it (or not), a client helper, and a raw client for frames the library will not send
(a text frame that is not UTF-8)."""
import asyncio
import base64
import json
import os
import socket
import struct
import threading

import websockets


class WsServer:
    """A websockets server on its own thread and event loop. Each message is recorded; the
    answer is {"ack": n} unless ignore(n) says to stay silent for message number n (0-based)."""

    def __init__(self, port, ignore=None, ssl=None):
        self.port = port
        self.ssl = ssl
        self.ignore = ignore or (lambda n: False)
        self.messages = []
        self.conns = 0
        self.lock = threading.Lock()
        self.loop = None
        self.thread = None
        self.stop_ev = None
        self.ready = threading.Event()

    async def handler(self, ws, path=None):
        with self.lock:
            self.conns += 1
        try:
            async for m in ws:
                with self.lock:
                    n = len(self.messages)
                    self.messages.append(m)
                if not self.ignore(n):
                    await ws.send(json.dumps({"ack": str(n)}))
        except websockets.ConnectionClosed:
            pass

    async def main(self):
        self.stop_ev = asyncio.Event()
        async with websockets.serve(self.handler, "127.0.0.1", self.port, ssl=self.ssl):
            self.ready.set()
            await self.stop_ev.wait()

    def start(self):
        def run():
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self.main())
            self.loop.close()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.ready.wait(5)
        return self

    def count(self):
        with self.lock:
            return len(self.messages)

    def stop(self):
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_ev.set)
            self.thread.join(10)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class RawWs:
    """A minimal RFC 6455 client over a plain socket: any frame, then the server's close code."""

    def __init__(self, port, path="/", timeout=5):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise IOError("closed during the handshake")
            buf += d
        head, self.rest = buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])

    def send_frame(self, opcode, payload, fin=True, masked=True):
        mask = os.urandom(4) if masked else b""
        mbit = 0x80 if masked else 0
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mbit | 127, n)
        body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload)) if masked else payload
        self.s.sendall(hdr + mask + body)

    def read_frame(self):
        def need(n):
            while len(self.rest) < n:
                d = self.s.recv(65536)
                if not d:
                    raise IOError("closed")
                self.rest += d
            out, self.rest = self.rest[:n], self.rest[n:]
            return out
        b0, b1 = need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", need(8))[0]
        return b0 & 0x0F, need(n)

    def close_code(self):
        """Reads frames until a close frame; its code, or None when the socket just closed."""
        try:
            while True:
                op, p = self.read_frame()
                if op == 8:
                    return struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None
        except (IOError, socket.timeout):
            return None

    def close(self):
        self.s.close()
