"""tlst: certificates and TLS peers for junction's TLS integration tests (standard library and
the `openssl` command only).

- Pki(dir): makes CAs and certificates with the real openssl command, including an expired one
  (openssl ca with explicit dates) and an encrypted key.
- fingerprint(pem): the SHA-256 fingerprint as junction writes it (lowercase hex, no colons).
- server_ctx()/client_ctx(): python ssl contexts.
- TlsMllpListener: mllpt's MLLP peer, over TLS (optionally requiring a client certificate).
- TlsReceiver: jnt's HTTP receiver, over TLS.
"""
import hashlib
import os
import socket
import ssl
import subprocess

from jnt import Receiver
from mllpt import MllpListener


def run(args, cwd):
    p = subprocess.run(args, cwd=cwd, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(args), p.stderr.decode("utf-8", "replace")))
    return p.stdout


CA_CNF = """
[ ca ]
default_ca = CA_default
[ CA_default ]
database = %(dir)s/index-%(ca)s.txt
new_certs_dir = %(dir)s
serial = %(dir)s/serial-%(ca)s
default_md = sha256
policy = policy_any
copy_extensions = copy
unique_subject = no
[ policy_any ]
commonName = supplied
"""


class Pki:
    """Certificates in dir. Each cert is name.pem with its key name.key."""

    def __init__(self, d):
        self.dir = d

    def p(self, name):
        return os.path.join(self.dir, name)

    def ca(self, name, cn):
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "30",
             "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)
        with open(self.p("index-%s.txt" % name), "w"):
            pass
        with open(self.p("serial-%s" % name), "w") as f:
            f.write("1000\n")
        with open(self.p("ca-%s.cnf" % name), "w") as f:
            f.write(CA_CNF % {"dir": self.dir, "ca": name})
        return self.p(name + ".pem")

    def cert(self, name, ca, cn, san=None, start=None, end=None, password=None, client=False):
        """A certificate signed by ca; start/end as YYYYMMDDHHMMSSZ for odd validity."""
        args = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn]
        if password:
            args += ["-passout", "pass:" + password]
        else:
            args += ["-nodes"]
        if san:
            args += ["-addext", "subjectAltName=" + san]
        args += ["-addext", "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
        run(args, self.dir)
        sign = ["openssl", "ca", "-batch", "-notext", "-config", "ca-%s.cnf" % ca,
                "-cert", ca + ".pem", "-keyfile", ca + ".key", "-in", name + ".csr",
                "-out", name + ".pem"]
        if start:
            sign += ["-startdate", start, "-enddate", end]
        else:
            sign += ["-days", "30"]
        run(sign, self.dir)
        return self.p(name + ".pem"), self.p(name + ".key")


def fingerprint(pem_path):
    with open(pem_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def server_ctx(cert, key, ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ctx(ca, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class TlsMllpListener(MllpListener):
    """MllpListener over TLS; handshake failures are counted, not raised."""

    def __init__(self, ctx, codes=("AA",)):
        super().__init__(codes)
        self.ctx = ctx
        self.tls_errors = []

    def _serve(self, c):
        try:
            c.settimeout(10)
            s = self.ctx.wrap_socket(c, server_side=True)
            s.settimeout(None)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.tls_errors.append(str(e))
            c.close()
            return
        super()._serve(s)


class TlsReceiver(Receiver):
    """jnt.Receiver over TLS (the listening socket wrapped; a failed handshake is dropped)."""

    def __init__(self, ctx, responses=(200,)):
        super().__init__(responses)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                             do_handshake_on_connect=False)
        self.tls_errors = []
        outer = self
        orig = self.server.finish_request

        def finish(request, client_address):
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                with outer.lock:
                    outer.tls_errors.append(str(e))
                return
            orig(request, client_address)

        self.server.finish_request = finish
        self.server.handle_error = lambda *a: None


def tls_mllp_send(port, msg, ctx, timeout=5.0):
    """Sends one MLLP frame over TLS; returns the ACK bytes, or None (refused or closed)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"\x0b" + msg + b"\x1c\r")
        buf = b""
        while b"\x1c\r" not in buf:
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        return buf
    except (ssl.SSLError, OSError):
        return None
    finally:
        raw.close()


def s_client(port, *args, timeout=10):
    """openssl s_client against 127.0.0.1:port; returns (exit code, stdout+stderr text)."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=b"", capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

