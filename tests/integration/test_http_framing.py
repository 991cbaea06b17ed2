"""HTTP IN answers bad framing itself, never with libevent's HTML pages (issue 16): raw sockets
send an oversize body (Content-Length and chunked), oversize headers, a long request line,
malformed request lines, a bad or doubled Content-Length, an unknown Transfer-Encoding, chunked
abuse, a bare CR, an unknown method, HTTP/2.0; each answer's status and JSON body are checked,
the connection is closed after it, nothing of it is journaled, and good requests (also pipelined
before a bad one, chunked, Connection: close) still get their 202s, on the same connection."""
import json
import os
import socket

from jnt import Checks, Junction, free_port, wait_until

t = Checks("http_framing")
port, aport = free_port(), free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%d
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
    max_message: 1KiB
    max_headers: 2KiB
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r:
    from: [in]
    to: [out]
""" % (aport, port), wait_ports=[port, aport])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))


def out_files():
    try:
        return sorted(f for f in os.listdir(j.path("out")) if not f.startswith("."))
    except FileNotFoundError:
        return []


def exchange(data, timeout=5.0, to=None):
    """Sends data, reads until the server closes (or timeout). Returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", to or port), timeout=timeout)
    s.sendall(data)
    got, closed = b"", False
    try:
        while True:
            x = s.recv(65536)
            if not x:
                closed = True
                break
            got += x
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return got, closed


def answers(raw):
    """Splits raw HTTP/1.1 answers: [(status, headers dict lowercased, body bytes)]."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        out.append((status, hdrs, rest[:n]))
        raw = rest[n:]
    return out


def refused(name, data, status, words, to=None):
    raw, closed = exchange(data, to=to)
    a = answers(raw)
    t.check(len(a) == 1, "%s: one answer (got %r)" % (name, raw[:300]))
    if not a:
        return
    st, hdrs, body = a[0]
    t.eq(st, status, "%s: status" % name)
    t.check(b"<HTML" not in raw.upper(), "%s: no HTML page" % name)
    t.eq(hdrs.get("content-type"), "application/json", "%s: JSON" % name)
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError):
        err = ""
    t.check(all(w in err for w in words), "%s: the reason says %r: %r" % (name, words, err))
    t.eq(hdrs.get("connection", "").lower(), "close", "%s: Connection: close" % name)
    t.check(closed, "%s: the connection is closed after the answer" % name)


POST = b"POST /ingest HTTP/1.1\r\nHost: x\r\n"
try:
    j.start()
    refused("Content-Length over max_message",
            POST + b"Content-Length: 5000\r\n\r\n" + b"x" * 5000, 413,
            ["5000 bytes", "limit of 1024 bytes"])
    refused("Content-Length over max_message, Expect: 100-continue, no body sent",
            POST + b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n", 413,
            ["2000000 bytes"])
    refused("chunked body over max_message",
            POST + b"Transfer-Encoding: chunked\r\n\r\n300\r\n" + b"a" * 0x300 + b"\r\n" +
            b"300\r\n" + b"b" * 0x300 + b"\r\n0\r\n\r\n", 413,
            ["chunked body", "limit of 1024 bytes"])
    refused("headers over max_headers",
            POST + b"X-Big: " + b"h" * 3000 + b"\r\nContent-Length: 1\r\n\r\nx", 431,
            ["headers are over the limit of 2048 bytes"])
    refused("many headers over max_headers",
            POST + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(60)) + b"\r\n",
            431, ["2048 bytes"])
    refused("request line over max_headers",
            b"GET /" + b"p" * 3000 + b" HTTP/1.1\r\n\r\n", 414, ["request line"])
    refused("malformed request line", b"HELLO\r\n\r\n", 400, ["malformed request line",
                                                                "HELLO"])
    refused("request line without a version", b"POST /ingest\r\n\r\n", 400,
            ["malformed request line"])
    refused("binary garbage", b"\x00\x01 NOT HTTP\r\n\r\n", 400, ["control byte"])
    refused("unknown method", b"BREW /ingest HTTP/1.1\r\n\r\n", 501, ["BREW"])
    refused("CONNECT", b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n", 501, ["CONNECT"])
    refused("HTTP/2.0", b"POST /ingest HTTP/2.0\r\n\r\n", 505, ["HTTP/2.0"])
    refused("Content-Length not a number", POST + b"Content-Length: 12abc\r\n\r\n", 400,
            ["Content-Length", "12abc"])
    refused("negative Content-Length", POST + b"Content-Length: -1\r\n\r\n", 400,
            ["Content-Length"])
    refused("Content-Length twice",
            POST + b"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc", 400, ["more than once"])
    refused("Content-Length and chunked",
            POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400, ["both Content-Length and Transfer-Encoding"])
    refused("Transfer-Encoding gzip", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501,
            ["only chunked"])
    refused("header without a colon", POST + b"NoColonHere\r\n\r\n", 400, ["malformed header"])
    refused("space before the colon", POST + b"Content-Length : 3\r\n\r\nabc", 400,
            ["malformed header"])
    refused("obsolete line folding", POST + b"X-A: 1\r\n  folded\r\n\r\n", 400,
            ["line folding"])
    refused("bare CR in a header", POST + b"X-A: 1\rX-B: 2\r\n\r\n", 400, ["bare CR"])
    refused("bad chunk size", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
            400, ["not hex digits"])
    refused("chunk extension", POST + b"Transfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n",
            400, ["chunk extensions"])
    refused("chunk data not followed by CRLF",
            POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", 400,
            ["not followed by CRLF"])
    refused("our own header from the client", POST + b"Junction-Refused: 400 x\r\n\r\n", 400,
            ["Junction-Refused"])
    refused("HEAD with a body", b"HEAD /ingest HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400,
            ["no body"])
    refused("Expect other than 100-continue", POST + b"Content-Length: 1\r\nExpect: x\r\n\r\nx",
            417, ["100-continue"])

    t.eq(out_files(), [], "nothing refused was journaled")

    # The admin listener has the same guard (64 KiB bodies, 16 KiB headers, no chunked).
    A = b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\n"
    refused("admin: body over 64 KiB", A + b"Content-Length: 70000\r\n\r\n", 413,
            ["70000 bytes", "65536 bytes"], to=aport)
    refused("admin: headers over 16 KiB", A + b"X-Big: " + b"h" * 17000 + b"\r\n\r\n", 431,
            ["16384 bytes"], to=aport)
    refused("admin: garbage", b"\x16\x03\x01 hello?\r\n\r\n", 400, ["control byte"],
            to=aport)
    refused("admin: chunked body", A + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            411, ["Content-Length"], to=aport)
    raw, _ = exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
                      timeout=2, to=aport)
    t.eq([x[0] for x in answers(raw)], [200, 404], "admin: good requests still answered, "
         "keep-alive")

    # Good requests still pass: chunked, exact limit, Connection: close, leading empty line.
    raw, _ = exchange(POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
                      b"0\r\n\r\n", timeout=2)
    a = answers(raw)
    t.check(len(a) == 1 and a[0][0] == 202, "a good chunked POST answers 202: %r" % raw[:200])
    raw, closed = exchange(POST + b"Content-Length: 1024\r\nConnection: close\r\n\r\n" +
                           b"z" * 1024)
    a = answers(raw)
    t.check(len(a) == 1 and a[0][0] == 202 and closed,
            "exactly max_message with Connection: close: 202, then closed: %r" % raw[:200])
    raw, _ = exchange(b"\r\n" + POST + b"Content-Length: 2\r\n\r\nok", timeout=2)
    a = answers(raw)
    t.check(len(a) == 1 and a[0][0] == 202, "an empty line before the request is ignored")

    # Pipelined: two good requests, then a bad one on the same connection: 202, 202, 413, in
    # that order, then closed. Keep-alive holds for the good ones.
    raw, closed = exchange(POST + b"Content-Length: 2\r\n\r\np1" + POST +
                           b"Content-Length: 2\r\n\r\np2" + POST +
                           b"Content-Length: 9999\r\n\r\n")
    a = answers(raw)
    t.eq([x[0] for x in a], [202, 202, 413], "pipelined: 202, 202, then 413")
    t.check(closed, "pipelined: closed after the 413")
    t.check(all("connection" not in x[1] for x in a[:2]), "the 202s keep the connection")

    t.check(wait_until(lambda: len(out_files()) == 5, 10),
            "exactly the 5 good bodies were journaled and delivered: %r" % out_files())
    bodies = set()
    for f in out_files():
        with open(j.path("out", f), "rb") as fh:
            bodies.add(fh.read())
    t.eq(bodies, {b"hello world", b"z" * 1024, b"ok", b"p1", b"p2"}, "the delivered bodies")
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
finally:
    j.cleanup()
t.finish()
