"""HTTP IN -> route -> file OUT: exact bytes, 202 with the id, headers kept, 404/405/413 with
reasons, keep-alive, and the broker stays up through bad requests and exits 0 on SIGTERM."""
import json
import os
import socket
import subprocess

from jnt import Checks, Junction, curl, free_port, wait_until

t = Checks("http_in")
port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
    max_message: 64KiB
  out:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{id}-{header.X-Order}.msg"
routes:
  r:
    from: [in]
    to: [out]
""" % port, wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
url = "http://127.0.0.1:%d/ingest" % port


def out_files():
    try:
        return sorted(os.listdir(j.path("out")))
    except FileNotFoundError:
        return []


try:
    j.start()
    body = b'{"order": 1, "bytes": "\\u00e9\\n"}\x00\xff tail'
    with open(j.path("order.bin"), "wb") as f:
        f.write(body)
    status, resp, hdrs = curl(["-H", "X-Order: A17", "-H", "Content-Type: application/json",
                               "--data-binary", "@" + j.path("order.bin"), url])
    t.eq(status, 202, "POST answers 202")
    t.check("application/json" in hdrs.lower(), "202 is JSON")
    msg_id = json.loads(resp)["id"]
    t.eq(len(msg_id), 26, "the id is a 26-character ULID")
    want = "%s-A17.msg" % msg_id
    t.check(wait_until(lambda: want in out_files(), 10), "file %s appears (have %r)" %
            (want, out_files()))
    if want in out_files():
        with open(j.path("out", want), "rb") as f:
            t.eq(f.read(), body, "the file holds exactly the posted bytes")

    status, resp, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/other" % port])
    t.eq(status, 404, "unknown path answers 404")
    t.eq(json.loads(resp), {"error": "no such path: /other, expected POST /ingest"},
         "404 says why")

    status, resp, hdrs = curl(["-X", "GET", url])
    t.eq(status, 405, "GET answers 405")
    t.check("allow: post" in hdrs.lower(), "405 has Allow: POST")
    t.eq(json.loads(resp), {"error": "method not allowed on /ingest, expected POST"},
         "405 says why")
    status, _, _ = curl(["-X", "PATCH", "--data-binary", "x", url])
    t.eq(status, 405, "PATCH answers 405")

    big = j.path("big.bin")
    with open(big, "wb") as f:
        f.write(b"x" * (64 * 1024 + 1))
    status, resp, _ = curl(["--data-binary", "@" + big, url])
    t.eq(status, 413, "a body over max_message answers 413")
    exact = j.path("exact.bin")
    with open(exact, "wb") as f:
        f.write(b"y" * (64 * 1024))
    status, resp, _ = curl(["-H", "X-Order: max", "--data-binary", "@" + exact, url])
    t.eq(status, 202, "a body of exactly max_message is accepted")

    # Keep-alive: several requests on one connection (curl says it re-uses it).
    p = subprocess.run(["curl", "-sv", "-H", "X-Order: ka", "--data-binary", "k1", url,
                        "--next", "-H", "X-Order: ka", "--data-binary", "k2", url],
                       capture_output=True, timeout=20)
    err = p.stderr.decode("latin-1")
    t.eq(err.count("HTTP/1.1 202"), 2, "two 202s over keep-alive")
    t.check("Re-using existing connection" in err or "Reusing existing connection" in err,
            "the connection is re-used")

    # Garbage on the socket: the broker answers 400 or closes, and stays up.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\x00\x01 NOT HTTP\r\n\r\n")
    try:
        s.recv(1024)
    except OSError:
        pass
    s.close()
    status, resp, _ = curl(["-H", "X-Order: after", "--data-binary", "still here", url])
    t.eq(status, 202, "junction still accepts after garbage")

    t.check(wait_until(lambda: len([f for f in out_files() if not f.startswith(".")]) == 5, 10),
            "5 accepted messages, 5 files: %r" % out_files())
    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
    t.check("stopping: intake closed" in j.log(), "the log says it stopped intake")
finally:
    j.cleanup()
t.finish()
