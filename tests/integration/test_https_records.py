"""An HTTPS answer leaves in one TLS record (broker/jn_listener.c listener__tls_coalesce):
evhttp puts an answer's head and body in two buffer chains, and bufferevent_openssl wrote each
as a record of its own, two records and two write() calls an answer. `openssl s_client -msg`
shows the records: after one POST, the server sends exactly one application-data record,
holding the whole 202 with its body; a larger answer (the admin's /api/v1/channels, still under
16 KiB) is one record too."""
import os
import re
import subprocess
import tempfile

from jnt import Checks, Junction, free_port

t = Checks("https_records")
tmp = tempfile.mkdtemp(prefix="jn-rec-")
cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                "-keyout", key, "-out", cert], check=True, capture_output=True)
port, admin = free_port(), free_port()
TLS = "{ cert: %s, key: %s }" % (cert, key)
j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%d
  admin_tls: %s
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d", path: /ingest, tls: %s }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
""" % (admin, TLS, port, TLS), wait_ports=[port, admin])


def records(p, request):
    """The server's application-data records after the handshake, and what s_client printed."""
    p_ = subprocess.run(["sh", "-c", "(printf '%s'; sleep 1) | openssl s_client -connect "
                         "127.0.0.1:%d -msg -quiet -no_ign_eof -tls1_3" % (request, p)],
                        capture_output=True, timeout=20)
    out = p_.stdout.decode("latin-1") + p_.stderr.decode("latin-1")
    # "<<< TLS 1.3, InnerContent [length 0001]" then "    17": a record of application data.
    n = len(re.findall(r"<<< TLS 1\.3, InnerContent \[length 0001\]\s*\n\s*17\b", out))
    return n, out


try:
    j.start()
    n, out = records(port, r"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    t.check("HTTP/1.1 202" in out and '{"id":"' in out, "the POST is answered 202 with its id")
    t.eq(n, 1, "the 202 and its body in one record")
    n, out = records(admin, r"GET /api/v1/channels HTTP/1.1\r\nHost: x\r\n\r\n")
    t.check("HTTP/1.1 200" in out and '"channels"' in out, "the admin answers over https")
    t.eq(n, 1, "the admin's answer in one record")
    t.eq(j.stop(), 0, "junction exits 0")
finally:
    j.cleanup()
    for f in (cert, key):
        os.unlink(f)
    os.rmdir(tmp)
t.finish()
