"""junction ctl against an admin listener over https with mutual TLS and a token (issue 16).

Certificates are made by the openssl command in the test (tlst.Pki): a CA, a second CA, the
admin's server certificate (localhost, 127.0.0.1), a client of the CA and a client of the other
CA. junction runs with junction.admin_tls { verify_peer: true, ca } and admin_token.

- `ctl status --admin https://... --ca --cert --key` with the token in $JUNCTION_ADMIN_TOKEN
  answers; `ctl channels -c FILE` takes https and the token from the config's admin and
  admin_tls; `ctl pause` / `ctl resume` (POST) work over it.
- Refused, exit 1 with a reason on stderr: no client certificate, a client of the other CA, a
  server the given --ca did not sign, a --server-name the certificate does not carry, a wrong
  token (401), plain http to the https listener.
- --ca without https is a usage error (exit 2). The token never appears in ctl's output.
- A message posted over mTLS to an HTTPS IN has its client's identity in the action log's
  "received" record: `ctl show ID` (over https), the API's trace (`peer`) and the offline
  `junction trace ID` print `peer=CN=... sha256:...`.
"""
import json
import os
import tempfile

from jnt import Checks, Junction, curl, free_port, run_junction
from tlst import Pki, fingerprint

t = Checks("ctl_tls")
tmp = tempfile.mkdtemp(prefix="jn-ctl-tls-")
pki = Pki(tmp)
TOKEN = "ctl-tls-token-5f1c9a0e77d2"
cleanups = []


def ctl(args, token=TOKEN):
    env = dict(os.environ)
    env.pop("JUNCTION_ADMIN_TOKEN", None)
    if token is not None:
        env["JUNCTION_ADMIN_TOKEN"] = token
    code, out, err = run_junction(["ctl"] + args, env=env)
    return code, out, err


try:
    ca = pki.ca("ca", "Test CA")
    ca2 = pki.ca("ca2", "Other CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1")
    cli, cli_key = pki.cert("client", "ca", "ops-laptop", client=True)
    other, other_key = pki.cert("other", "ca2", "ops-laptop", client=True)

    aport, hport = free_port(), free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
  admin: 127.0.0.1:%d
  admin_token: %s
  admin_tls: { cert: %s, key: %s, ca: %s, verify_peer: true }
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /in
    tls: { cert: %s, key: %s, ca: %s, verify_peer: true }
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  r: { from: [web], to: [out] }
""" % (aport, TOKEN, srv, srv_key, ca, hport, srv, srv_key, ca), wait_ports=[aport, hport])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    url = "https://127.0.0.1:%d" % aport
    mtls = ["--ca", ca, "--cert", cli, "--key", cli_key]

    code, out, err = ctl(["status", "--admin", url] + mtls)
    t.eq(code, 0, "ctl status over https with a client certificate: exit 0\n" + err)
    t.check("ready" in out and "channels 2" in out, "ctl status prints the broker's status\n" + out)

    code, out, err = ctl(["status", "--admin", url, "--json"] + mtls)
    t.check(code == 0 and '"version"' in out, "ctl status --json over https\n" + out + err)

    # From the config: admin (no scheme) + admin_tls means https; the token is admin_token.
    code, out, err = ctl(["channels", "-c", j.cfg] + mtls, token=None)
    t.eq(code, 0, "ctl channels -c FILE: https and the token from the config\n" + err)
    t.check("web" in out and "out" in out, "ctl channels lists the channels\n" + out)

    code, out, err = ctl(["pause", "web", "--admin", url] + mtls)
    t.check(code == 0 and "web: paused" in out, "ctl pause (POST) over https\n" + out + err)
    code, out, err = ctl(["resume", "web", "--admin", url] + mtls)
    t.check(code == 0 and "web: up" in out, "ctl resume (POST) over https\n" + out + err)

    # The TLS peer of a message is in its action log: ctl show (over https) and trace.
    st, body, _ = curl(["--cacert", ca, "--cert", cli, "--key", cli_key, "--data-binary", "hi",
                        "https://127.0.0.1:%d/in" % hport])
    t.eq(st, 202, "a message over mTLS")
    msg_id = json.loads(body)["id"] if st == 202 else "?"
    peer = "peer=CN=ops-laptop sha256:" + fingerprint(cli)
    code, out, err = ctl(["show", msg_id, "--admin", url] + mtls)
    t.check(code == 0 and peer in out, "ctl show: the received action names the TLS peer\n"
            + out + err)
    code, out, err = ctl(["show", msg_id, "--admin", url, "--json"] + mtls)
    t.check(code == 0 and ('"peer": "%s' % peer[5:] in out or '"peer":"%s' % peer[5:] in out),
            "the admin API's trace has the peer\n" + out)

    # Refusals: each exits 1 and says why.
    code, out, err = ctl(["status", "--admin", url, "--ca", ca])
    t.eq(code, 1, "no client certificate: exit 1")
    t.check("alert certificate required" in err, "no client certificate: the server's alert\n" + err)

    code, out, err = ctl(["status", "--admin", url, "--ca", ca, "--cert", other,
                          "--key", other_key])
    t.eq(code, 1, "a client certificate of another CA: exit 1")
    t.check("alert unknown ca" in err, "another CA's client: the server's alert\n" + err)

    code, out, err = ctl(["status", "--admin", url, "--ca", ca2, "--cert", cli,
                          "--key", cli_key])
    t.eq(code, 1, "the admin's certificate is not signed by --ca: exit 1")
    t.check("certificate verify failed" in err, "wrong --ca: certificate verify failed\n" + err)

    code, out, err = ctl(["status", "--admin", url, "--server-name", "admin.elsewhere.example"]
                         + mtls)
    t.eq(code, 1, "a name the admin's certificate does not carry: exit 1")
    t.check("hostname mismatch" in err, "wrong --server-name: hostname mismatch\n" + err)

    code, out, err = ctl(["status", "--admin", url] + mtls, token="not-the-token-0000000000")
    t.eq(code, 1, "a wrong token over https: exit 1")
    t.check("401" in out + err or "unauthorized" in (out + err).lower(),
            "a wrong token: the 401 is shown\n" + out + err)
    t.check("not-the-token" not in out + err, "the sent token is not printed")

    code, out, err = ctl(["status", "--admin", "http://127.0.0.1:%d" % aport])
    t.eq(code, 1, "plain http to the https admin: exit 1")

    code, out, err = ctl(["status", "--admin", "127.0.0.1:%d" % aport, "--ca", ca])
    t.eq(code, 2, "--ca without https: a usage error\n" + err)

    for args in (["status", "--admin", url] + mtls, ["channels", "-c", j.cfg] + mtls):
        code, out, err = ctl(args)
        t.check(TOKEN not in out + err, "ctl never prints the token (%s)" % args[0])
    t.check(TOKEN not in j.log(), "the admin's log never shows the token")
    t.eq(j.stop(), 0, "exit 0")
    code, out, err = run_junction(["trace", msg_id, "-c", j.cfg])
    t.check(code == 0 and peer in out, "junction trace (offline) shows the peer\n" + out + err)
finally:
    for c in reversed(cleanups):
        c()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
