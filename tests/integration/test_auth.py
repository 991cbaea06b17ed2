"""Inbound authentication on HTTP IN, secrets from files, a private data dir, outbound Standard
Webhooks signatures (issue 16, parts 3, 4 and 5), against the real binary with curl, Python's ssl/hmac and certificates made by openssl.

- auth: [bearer, basic, hmac] on one channel: no credentials 401 with both WWW-Authenticate
  challenges and junction's JSON error; bearer good (from ${ENV} and from ${file:}), bad
  (error="invalid_token"); basic with a hash made by `openssl passwd -6` here, good and wrong;
  Standard Webhooks signed here by a few lines of Python (the spec's algorithm): good, replayed
  id, tampered body, old timestamp, wrong secret, rotation (two secrets); the identity reaches
  the OUT side as auth-user, the Authorization header does not.
- auth: [mtls] on an https channel: the client the allowed_peers names 202 (auth-user is its
  tls-peer id), another client of the same CA 403.
- Refusals: nothing journaled (the file OUT folders hold exactly the accepted ones; the journal
  counts agree), each counted in /metrics junction_auth_failures_total{channel,method} and in
  /api/v1/channels auth_failures, each logged; the log, `junction check` and `describe` never
  show a secret (token, password, whsec secret).
- HTTP OUT with sign: (standard-webhooks): each request's signature verifies with the spec's
  algorithm in Python, webhook-id is the message id, the same on the retry after a 500.
- ${file:/missing} is a `junction check` error at file:line:col.
- data_dir is 0700 with its files 0600; file OUT files get file_mode (0600 here, 0640 default).
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time

from jnt import Checks, Junction, Receiver, admin_api, curl, free_port, run_junction, wait_until
from tlst import Pki

t = Checks("auth")
cleanups = []
os.umask(0o022)
tmp = tempfile.mkdtemp(prefix="jn-auth-")
cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
pki = Pki(tmp)

TOKEN_A = "tokA-" + os.urandom(12).hex()
TOKEN_B = "tokB-" + os.urandom(12).hex()
PASSWORD = "pw-" + os.urandom(6).hex()
KEY1, KEY2 = os.urandom(32), os.urandom(24)
WHSEC1 = "whsec_" + base64.b64encode(KEY1).decode()
WHSEC2 = "whsec_" + base64.b64encode(KEY2).decode()
SECRETS = [TOKEN_A, TOKEN_B, PASSWORD, WHSEC1, WHSEC2, WHSEC1[6:], WHSEC2[6:]]


def sw_sign(key, msg_id, ts, body):
    """Standard Webhooks: base64 HMAC-SHA256 over "id.timestamp.body" (spec section 'Signature')."""
    mac = hmac.new(key, b"%s.%d.%s" % (msg_id.encode(), ts, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(port, body, headers=(), extra=()):
    args = ["--data-binary", body, "http://127.0.0.1:%d/ingest" % port]
    for h in headers:
        args += ["-H", h]
    return curl(list(extra) + args)


def hooks(port, msg_id, ts, body, key, sig=None):
    return post(port, body, ["webhook-id: " + msg_id, "webhook-timestamp: %d" % ts,
                             "webhook-signature: " + (sig or sw_sign(key, msg_id, ts,
                                                                     body.encode()))])


def files(d):
    return sorted(f for f in os.listdir(d) if not f.startswith(".")) if os.path.isdir(d) else []


try:
    ca = pki.ca("ca", "Auth CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    cli, cli_key = pki.cert("client", "ca", "client1", client=True)
    intr, intr_key = pki.cert("intruder", "ca", "intruder", client=True)
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                            check=True).stdout.decode().strip()
    t.check(hashed.startswith("$6$"), "openssl passwd -6 gives a SHA-512-crypt hash")

    hport, tport, aport = free_port(), free_port(), free_port()
    sink = Receiver().start()
    cleanups.append(sink.stop)
    hooks_rcv = Receiver(responses=(500, 200)).start()
    cleanups.append(hooks_rcv.stop)
    config = """
junction:
  data_dir: @DIR@/data/inner
  log_level: debug
  shutdown_timeout: 1s
  admin: 127.0.0.1:%(aport)d
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
    auth:
      - { type: bearer, tokens: [ "${TOKEN_A}", "${file:secrets/token_b}" ] }
      - type: basic
        users: { alice: "%(hash)s" }
      - type: hmac
        scheme: standard-webhooks
        secrets: [ "${file:@DIR@/secrets/whsec1}", "${WHSEC2}" ]
        tolerance: 5m
  secure:
    type: http
    direction: in
    listen: 127.0.0.1:%(tport)d
    tls: { cert: %(srv)s, key: %(srv_key)s, ca: %(ca)s, verify_peer: true }
    auth:
      - { type: mtls, allowed_peers: [client1] }
  out:
    type: file
    direction: out
    dir: "@DIR@/out"
    file_mode: "0600"
  tout: { type: file, direction: out, dir: "@DIR@/tout" }
  peers:
    type: http
    direction: out
    url: http://127.0.0.1:%(sink)d/peer
    headers: { X-User: "{header.auth-user}", X-Authz: "{header.Authorization}" }
  signed:
    type: http
    direction: out
    url: http://127.0.0.1:%(hooks)d/hook
    sign: { scheme: standard-webhooks, secret: "${file:secrets/whsec1}" }
    retry: { attempts: 5, backoff: 100ms }
routes:
  w: { from: [web], to: [out, peers, signed] }
  s: { from: [secure], to: [tout, peers] }
""" % {"aport": aport, "hport": hport, "tport": tport, "hash": hashed, "srv": srv,
       "srv_key": srv_key, "ca": ca, "sink": sink.port, "hooks": hooks_rcv.port}
    j = Junction(config, wait_ports=[hport, tport, aport],
                 env={"TOKEN_A": TOKEN_A, "WHSEC2": WHSEC2})
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    os.makedirs(j.path("secrets"))
    with open(j.path("secrets", "token_b"), "w") as f:
        f.write(TOKEN_B + "\n")
    with open(j.path("secrets", "whsec1"), "w") as f:
        f.write(WHSEC1)

    # ---- junction check and describe show no secret ----
    code, out, err = run_junction(["check", "-c", j.cfg], cwd=j.dir, env=j.env)
    t.eq(code, 0, "check passes: %s%s" % (out, err))
    code2, dout, derr = run_junction(["describe", "http"], cwd=j.dir, env=j.env)
    for s in SECRETS:
        t.check(s not in out + err + dout + derr, "check/describe do not show a secret")
    t.check("auth[].tokens" in dout and "Secret" in dout, "describe http lists auth[] options")

    j.start()
    accepted = 0

    # ---- no credentials ----
    st, body, hdr = post(hport, "none")
    t.eq(st, 401, "no credentials: 401")
    t.check('WWW-Authenticate: Bearer realm="junction"' in hdr, "Bearer challenge: %r" % hdr)
    t.check('WWW-Authenticate: Basic realm="junction"' in hdr, "Basic challenge: %r" % hdr)
    err_body = json.loads(body)
    t.check(err_body.get("error", "").startswith("unauthorized: no credentials"),
            "JSON error body: %r" % body)

    # ---- bearer ----
    st, body, _ = post(hport, "bearer-env", ["Authorization: Bearer " + TOKEN_A])
    t.eq(st, 202, "bearer token from ${ENV}: 202 (%r)" % body)
    accepted += st == 202
    st, body, _ = post(hport, "bearer-file", ["Authorization: Bearer " + TOKEN_B])
    t.eq(st, 202, "bearer token from ${file:} (newline dropped): 202 (%r)" % body)
    accepted += st == 202
    st, body, hdr = post(hport, "bearer-bad", ["Authorization: Bearer " + TOKEN_A + "x"])
    t.eq(st, 401, "wrong bearer token: 401")
    t.check('error="invalid_token"' in hdr, "invalid_token in the challenge: %r" % hdr)

    # ---- basic ----
    st, body, _ = post(hport, "basic-good", extra=["-u", "alice:" + PASSWORD])
    t.eq(st, 202, "basic alice with the right password: 202 (%r)" % body)
    accepted += st == 202
    st, _, _ = post(hport, "basic-bad", extra=["-u", "alice:" + PASSWORD + "x"])
    t.eq(st, 401, "basic with a wrong password: 401")
    st, _, _ = post(hport, "basic-nouser", extra=["-u", "mallory:" + PASSWORD])
    t.eq(st, 401, "basic with an unknown user: 401")

    # ---- Standard Webhooks ----
    now = int(time.time())
    st, body, _ = hooks(hport, "msg_1", now, "hook-1", KEY1)
    t.eq(st, 202, "signed webhook (first secret): 202 (%r)" % body)
    accepted += st == 202
    st, body, _ = hooks(hport, "msg_1", now, "hook-1", KEY1)
    t.eq(st, 401, "the same webhook-id again: refused as a replay")
    t.check("replay" in body.decode(), "the answer says replay: %r" % body)
    st, _, _ = hooks(hport, "msg_2", now, "hook-2", KEY2)
    t.eq(st, 202, "signed with the second secret (rotation): 202")
    accepted += st == 202
    st, _, _ = hooks(hport, "msg_3", now, "hook-3", KEY1,
                     sig="v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " +
                     sw_sign(KEY1, "msg_3", now, b"hook-3"))
    t.eq(st, 202, "several signatures, one good: 202")
    accepted += st == 202
    st, _, _ = hooks(hport, "msg_4", now, "tampered", KEY1,
                     sig=sw_sign(KEY1, "msg_4", now, b"original"))
    t.eq(st, 401, "tampered body: 401")
    st, body, _ = hooks(hport, "msg_5", now - 400, "old", KEY1)
    t.eq(st, 401, "timestamp 400 s old: 401")
    t.check("tolerance" in body.decode(), "the answer names the tolerance: %r" % body)
    st, _, _ = hooks(hport, "msg_6", now, "wrong", os.urandom(32))
    t.eq(st, 401, "signed with another secret: 401")

    # ---- mtls ----
    st, body, _ = curl(["--cacert", ca, "--cert", cli, "--key", cli_key, "--data-binary",
                        "mtls-good", "https://127.0.0.1:%d/ingest" % tport])
    t.eq(st, 202, "mtls: the client allowed_peers names: 202 (%r)" % body)
    accepted_t = int(st == 202)
    st, body, _ = curl(["--cacert", ca, "--cert", intr, "--key", intr_key, "--data-binary",
                        "mtls-intruder", "https://127.0.0.1:%d/ingest" % tport])
    t.eq(st, 403, "mtls: a verified client not in auth allowed_peers: 403 (%r)" % body)
    t.check(b"forbidden" in body and b"intruder" in body, "the 403 names the peer: %r" % body)

    # ---- nothing of the refused ones journaled ----
    t.check(wait_until(lambda: len(files(j.path("out"))) == accepted and
                       len(files(j.path("tout"))) == accepted_t, 10),
            "file OUT holds exactly the accepted messages (%d + %d): %r %r" % (
                accepted, accepted_t, files(j.path("out")), files(j.path("tout"))))
    contents = set()
    for f in files(j.path("out")):
        with open(j.path("out", f)) as fh:
            contents.add(fh.read())
    t.eq(contents, {"bearer-env", "bearer-file", "basic-good", "hook-1", "hook-2", "hook-3"},
         "the accepted bodies")
    t.check(wait_until(lambda: sink.count() == accepted + accepted_t, 10), "peers got them all")
    users = sorted(r["headers"].get("x-user", "") for r in sink.requests)
    t.check(users.count("bearer") == 2 and users.count("hmac") == 3 and "alice" in users,
            "auth-user: bearer, alice, hmac: %r" % users)
    t.check(any(u.startswith("CN=client1 sha256:") for u in users),
            "auth-user of mtls is the peer id: %r" % users)
    t.check(all(r["headers"].get("x-authz", "") == "" for r in sink.requests),
            "the Authorization header is not in the message")
    # ---- outbound Standard Webhooks signatures, checked with the spec's algorithm ----
    t.check(wait_until(lambda: hooks_rcv.count() == accepted + 1, 15),
            "signed OUT: every message, the first one twice (500 then retried): %d" %
            hooks_rcv.count())
    ids = {}
    for r in hooks_rcv.requests:
        h = r["headers"]
        ids.setdefault(h.get("webhook-id"), []).append(r)
        ts = int(h.get("webhook-timestamp", "0"))
        t.eq(h.get("webhook-signature"), sw_sign(KEY1, h.get("webhook-id", ""), ts, r["body"]),
             "signed OUT: the signature verifies")
        t.check(abs(ts - time.time()) < 60, "signed OUT: the timestamp is now")
    t.eq(sorted(ids), sorted(f[:-4] for f in files(j.path("out"))),
         "signed OUT: webhook-id is the message id")
    t.eq(sorted(len(v) for v in ids.values()), [1] * (accepted - 1) + [2],
         "signed OUT: the retry carries the same webhook-id")

    time.sleep(0.3)
    st, chans = admin_api(aport, "GET", "/api/v1/channels")
    by = {c["name"]: c for c in chans.get("channels", [])}
    t.eq(by.get("web", {}).get("received"), accepted, "web received counts the accepted only")
    t.eq(by.get("web", {}).get("auth_failures"), 8, "web auth_failures: 8 refusals")
    t.eq(by.get("secure", {}).get("auth_failures"), 1, "secure auth_failures: 1")
    st, status = admin_api(aport, "GET", "/api/v1/status")
    t.eq(st, 200, "status answers")
    _, metrics, _ = curl(["http://127.0.0.1:%d/metrics" % aport])
    m = metrics.decode()
    for line in ('junction_auth_failures_total{channel="web",method="none"} 1',
                 'junction_auth_failures_total{channel="web",method="bearer"} 1',
                 'junction_auth_failures_total{channel="web",method="basic"} 2',
                 'junction_auth_failures_total{channel="web",method="hmac"} 4',
                 'junction_auth_failures_total{channel="secure",method="mtls"} 1'):
        t.check(line + "\n" in m, "metrics: %s" % line)
    t.check('junction_auth_failures_total{channel="out"' not in m, "no series for OUT channels")
    t.check('junction_auth_failures_total{channel="web",method="mtls"}' not in m,
            "no series for a method the channel does not list")

    # ---- the admin API's message browser and the log show no secret ----
    _, msgs, _ = curl(["http://127.0.0.1:%d/api/v1/messages?limit=100" % aport])
    log = j.log()
    for s in SECRETS:
        t.check(s not in log, "the log does not show a secret")
        t.check(s not in msgs.decode(), "the message browser does not show a secret")
    t.check(log.count("refused 401 (auth ") == 8 and "refused 403 (auth mtls)" in log,
            "every refusal is logged")

    # ---- permissions ----
    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)
    data = j.path("data", "inner")
    t.eq(oct(mode(j.path("data"))), oct(0o700), "a parent data_dir creates is 0700")
    t.eq(oct(mode(data)), oct(0o700), "data_dir is 0700")
    for f in os.listdir(data):
        t.eq(oct(mode(os.path.join(data, f))), oct(0o600), "journal file %s is 0600" % f)
    for f in files(j.path("out")):
        t.eq(oct(mode(j.path("out", f))), oct(0o600), "file_mode 0600 on %s" % f)
    for f in files(j.path("tout")):
        t.eq(oct(mode(j.path("tout", f))), oct(0o640), "default file_mode 0640 on %s" % f)
    j.stop()

    # ---- ${file:} missing, and a bad file_mode: check errors at file:line:col ----
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("channels:\n  a:\n    type: http\n    direction: in\n"
                "    auth:\n      - type: bearer\n        tokens: [\"${file:/nonexistent/t}\"]\n"
                "  b: { type: file, direction: out, dir: /tmp/x }\n"
                "routes:\n  r: { from: [a], to: [b] }\n")
    code, out, err = run_junction(["check", "-c", bad])
    t.eq(code, 1, "check fails")
    t.check("bad.yaml:7:18: cannot read /nonexistent/t for ${file:/nonexistent/t}" in out + err,
            "missing ${file:} at file:line:col: %r" % (out + err))
    with open(bad, "w") as f:
        f.write("channels:\n  a: { type: http, direction: in }\n"
                "  b: { type: file, direction: out, dir: /tmp/x, file_mode: \"0999\" }\n"
                "routes:\n  r: { from: [a], to: [b] }\n")
    code, out, err = run_junction(["check", "-c", bad])
    t.eq(code, 1, "check fails on file_mode")
    t.check("bad.yaml:3:60:" in out + err and "not a file mode" in out + err,
            "bad file_mode named: %r" % (out + err))
finally:
    for c in reversed(cleanups):
        c()
t.finish()
