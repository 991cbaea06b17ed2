"""Limits on every listener (issue 16, parts 6 and 7; docs/security.md "Limits").

- HTTP IN with max_connections 2: two idle connections held, a third is answered 503 with
  junction's JSON error, Retry-After and Connection: close, then closed; once one of the two
  closes a new request is taken again.
- HTTP IN with net.max_connections_per_ip 1: a second connection from 127.0.0.1 is answered 503
  the same way while the first stays usable.
- HTTP IN with rate_limit { rate: 2/m, burst: 2 }: two POSTs 202, the third 429 with
  Retry-After (> 0) and a JSON error naming the rate limit; nothing of it in the output.
- MLLP IN with max_connections 1: a second connection is closed at once, nothing answered.
- MLLP IN with rate_limit { rate: 1/m, burst: 1 }: the first message AA, the second AE with an
  ERR segment naming the rate limit.
- /metrics counts all of it: junction_connections_refused_total{channel,reason},
  junction_rate_limited_total{channel}, junction_messages_refused_total.
- A bad rate is a `junction check` error at file:line:col.
- As root, `junction run` without --user refuses (exit 2); --user with an unknown user fails;
  with a real user (made here with useradd when running as root, removed after) the process
  runs as that user and still takes messages.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time

from jnt import BIN, Checks, Junction, admin_api, curl, free_port, run_junction, wait_until
from mllpt import CR, FS, VT, MllpClient, segments

t = Checks("limits")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  hmax:
    type: http
    direction: in
    listen: 127.0.0.1:%(hmax)d
    path: /ingest
    max_connections: 2
  hip:
    type: http
    direction: in
    listen: 127.0.0.1:%(hip)d
    path: /ingest
    net: { max_connections_per_ip: 1 }
  hrate:
    type: http
    direction: in
    listen: 127.0.0.1:%(hrate)d
    path: /ingest
    rate_limit: { rate: 2/m, burst: 2 }
  mmax:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(mmax)d
    max_connections: 1
  mrate:
    type: mllp
    direction: in
    listen: 127.0.0.1:%(mrate)d
    rate_limit: { rate: 1/m, burst: 1 }
  out:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  all: { from: [hmax, hip, hrate, mmax, mrate], to: [out] }
"""

HL7 = (b"MSH|^~\\&|LAB|HOSP|EHR|WARD|20240101120000||ADT^A01|%s|P|2.5\r"
       b"PID|1||12345^^^HOSP^MR||DOE^JOHN\r")


def post(port, body, extra=()):
    code, out, hdrs = curl(["-X", "POST", "--data-binary", body] + list(extra) +
                           ["http://127.0.0.1:%d/ingest" % port])
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    return code, j, hdrs


def header(hdrs, name):
    for line in hdrs.splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def hold(port):
    """An idle TCP connection to port (its HTTP request never comes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    cleanups.append(s.close)
    return s


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def metrics(admin):
    code, out, _ = curl(["http://127.0.0.1:%d/metrics" % admin])
    return out.decode("utf-8", "replace") if code == 200 else ""


def out_count(j):
    try:
        return len(os.listdir(j.path("out")))
    except OSError:
        return 0


try:
    ports = {k: free_port() for k in ("admin", "hmax", "hip", "hrate", "mmax", "mrate")}
    j = Junction(CONFIG % ports, wait_ports=[ports["hmax"], ports["mrate"], ports["admin"]])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    time.sleep(0.3)  # wait_ports' probe connections close at once; let the broker see them go

    # ---- HTTP max_connections: 2 held, the third answered 503 and closed ----
    a, b = hold(ports["hmax"]), hold(ports["hmax"])
    time.sleep(0.2)  # both accepted and counted
    code, body, hdrs = post(ports["hmax"], "over")
    t.eq(code, 503, "past max_connections the request is answered 503")
    t.check("max_connections" in body.get("error", ""),
            "the 503 is junction's JSON error naming max_connections: %r" % body)
    t.eq(header(hdrs, "Retry-After"), "1", "the 503 has Retry-After")
    t.eq((header(hdrs, "Connection") or "").lower(), "close", "and closes the connection")
    a.close()
    b.close()
    answers = []  # until the server has seen the two go, a request may still get a 503
    t.check(wait_until(lambda: answers.append(post(ports["hmax"], "ok")[0]) or
                       answers[-1] == 202, 5),
            "once the held connections close, a request is taken (202): %r" % answers)
    t.check(set(answers[:-1]) <= {503}, "before that only 503s: %r" % answers)
    hmax_refused = 1 + len(answers) - 1

    # ---- HTTP max_connections_per_ip: a second connection from 127.0.0.1 is refused ----
    first = hold(ports["hip"])
    time.sleep(0.2)
    code, body, hdrs = post(ports["hip"], "second")
    t.eq(code, 503, "a second connection from one address is answered 503")
    t.check("max_connections_per_ip" in body.get("error", ""),
            "naming max_connections_per_ip: %r" % body)
    t.eq(header(hdrs, "Retry-After"), "1", "with Retry-After")
    first.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst")
    first.settimeout(5)
    resp = first.recv(4096)
    t.check(resp.startswith(b"HTTP/1.1 202"), "the first connection is still served: %r" % resp)
    first.close()

    # ---- HTTP rate_limit: burst 2 taken, the third 429 ----
    n_before = wait_until(lambda: out_count(j) >= 2, 5) and out_count(j)
    codes = [post(ports["hrate"], "r%d" % i) for i in range(3)]
    t.eq([c[0] for c in codes], [202, 202, 429], "rate_limit burst 2: 202, 202, then 429")
    ra = header(codes[2][2], "Retry-After")
    t.check(ra is not None and ra.isdigit() and 1 <= int(ra) <= 30,
            "the 429 has Retry-After in seconds until a token (rate 2/m: at most 30): %r" % ra)
    t.check("rate limit" in codes[2][1].get("error", ""),
            "the 429 is a JSON error naming the rate limit: %r" % codes[2][1])
    time.sleep(0.5)
    t.eq(out_count(j), n_before + 2, "only the two accepted messages were delivered")

    # ---- MLLP max_connections 1: the second connection is closed at once ----
    m1 = MllpClient(ports["mmax"])
    cleanups.append(m1.close)
    m1.send(VT + HL7 % b"M1" + FS + CR)
    ack = m1.read_ack()
    t.check(ack is not None and b"MSA|AA|M1" in ack, "the first MLLP connection is served")
    m2 = MllpClient(ports["mmax"])
    cleanups.append(m2.close)
    try:
        m2.send(VT + HL7 % b"M2" + FS + CR)
    except OSError:
        pass
    t.check(m2.closed(5), "past max_connections an MLLP connection is closed at once")
    t.eq(m2.buf, b"", "and nothing is answered on it")

    # ---- MLLP rate_limit 1/m: AA, then AE with ERR naming the rate limit ----
    mr = MllpClient(ports["mrate"])
    cleanups.append(mr.close)
    mr.send(VT + HL7 % b"R1" + FS + CR)
    a1 = mr.read_ack()
    mr.send(VT + HL7 % b"R2" + FS + CR)
    a2 = mr.read_ack()
    t.check(a1 is not None and b"MSA|AA|R1" in a1, "the first message within the rate: AA")
    segs2 = segments(a2 or b"")
    t.check(any(s.startswith(b"MSA|AE|R2") for s in segs2),
            "the second, past the rate: AE: %r" % a2)
    t.check(any(s.startswith(b"ERR|") and b"rate limit" in s for s in segs2),
            "with an ERR segment naming the rate limit: %r" % a2)

    # ---- the counters ----
    m = metrics(ports["admin"])
    t.eq(metric(m, "junction_connections_refused_total", channel="hmax",
                reason="max_connections"), float(hmax_refused),
         "hmax: every 503 counted as a connection refused (max_connections)")
    t.eq(metric(m, "junction_connections_refused_total", channel="hip",
                reason="max_connections_per_ip"), 1.0,
         "hip: 1 connection refused (max_connections_per_ip)")
    t.eq(metric(m, "junction_connections_refused_total", channel="mmax",
                reason="max_connections"), 1.0, "mmax: 1 connection refused")
    t.eq(metric(m, "junction_rate_limited_total", channel="hrate"), 1.0,
         "hrate: 1 message rate-limited")
    t.eq(metric(m, "junction_rate_limited_total", channel="mrate"), 1.0,
         "mrate: 1 message rate-limited")
    t.eq(metric(m, "junction_messages_refused_total", channel="hrate"), 1.0,
         "the rate-limited message is in junction_messages_refused_total")
    t.check(metric(m, "junction_rate_limited_total", channel="hmax") is None,
            "no rate-limit sample for a channel without rate_limit")
    code, chans = admin_api(ports["admin"], "GET", "/api/v1/channels")
    byname = {c["name"]: c for c in (chans or {}).get("channels", [])}
    t.eq(byname.get("hmax", {}).get("connections_refused"),
         {"max_connections": hmax_refused, "max_connections_per_ip": 0},
         "/api/v1/channels: hmax's refused connections")
    t.eq(byname.get("hrate", {}).get("rate_limited"), 1, "/api/v1/channels: hrate's rate_limited")
    t.check("rate_limited" not in byname.get("hmax", {}), "no rate_limited without a rate_limit")
    t.check(re.search(r"max_connections \(2\) reached", j.log()) is not None,
            "the refusal is logged")
    j.stop()

    # ---- a bad rate is a check error at file:line:col ----
    bad = j.path("bad.yaml")
    with open(bad, "w") as f:
        f.write("channels:\n  h:\n    type: http\n    direction: in\n    listen: 127.0.0.1:1\n"
                "    rate_limit: { rate: fast }\n  o:\n    type: file\n    direction: out\n"
                "    dir: /tmp\nroutes:\n  r: { from: [h], to: [o] }\n")
    code, out, err = run_junction(["check", "-c", bad])
    t.eq(code, 1, "a bad rate fails check")
    t.check(re.search(r"bad\.yaml:6:\d+: .*rate: 'fast' is not a rate", out + err) is not None,
            "with file:line:col and what is expected: %r" % (out + err))

    # ---- running as root ----
    if os.geteuid() != 0:
        print("SKIP: not root: the --user / root refusal checks need root")
    else:
        ucfg = j.path("user.yaml")
        uport = free_port()
        with open(ucfg, "w") as f:
            f.write(("junction:\n  data_dir: %s\n  admin: \"off\"\nchannels:\n  h:\n    type: http\n"
                     "    direction: in\n    listen: 127.0.0.1:%d\n    path: /ingest\n  o:\n"
                     "    type: file\n    direction: out\n    dir: %s\nroutes:\n"
                     "  r: { from: [h], to: [o] }\n") % (j.path("udata"), uport, j.path("uout")))
        p = subprocess.run([BIN, "run", "-c", ucfg], capture_output=True, timeout=20)
        t.eq(p.returncode, 2, "as root without --user or --allow-root: exit 2")
        t.check(b"refusing to run as root" in p.stderr and b"--user" in p.stderr,
                "with a clear error: %r" % p.stderr)
        p = subprocess.run([BIN, "run", "--user", "jn-no-such-user-x", "-c", ucfg],
                           capture_output=True, timeout=20)
        t.eq(p.returncode, 1, "--user with an unknown user: exit 1")
        t.check(b"no such user 'jn-no-such-user-x'" in p.stdout + p.stderr,
                "naming the user: %r" % (p.stdout + p.stderr))
        if shutil.which("useradd") is None or shutil.which("userdel") is None:
            print("SKIP: no useradd/userdel: the drop to a real user is not checked")
        else:
            user = "jnlimits%d" % os.getpid()
            r = subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", user],
                               capture_output=True)
            if r.returncode != 0:
                print("SKIP: useradd failed (%r): the drop to a real user is not checked" %
                      r.stderr)
            else:
                cleanups.append(lambda: subprocess.run(["userdel", user], capture_output=True))
                import pwd
                uid = pwd.getpwnam(user).pw_uid
                os.makedirs(j.path("uout"), exist_ok=True)
                os.chown(j.path("uout"), uid, -1)  # the service user writes the output
                os.chmod(j.dir, 0o711)  # mkdtemp made it 0700: let the user reach uout
                ju = Junction(open(ucfg).read(), wait_ports=[uport],
                              args=["run", "--user", user, "-c", ucfg])
                cleanups.append(ju.cleanup)
                t.on_fail.append(lambda: print("---- junction --user log ----\n%s" % ju.log()))
                ju.start()
                t.check(wait_until(lambda: "running as user %s" % user in ju.log(), 5),
                        "it says it runs as the user")
                with open("/proc/%d/status" % ju.proc.pid) as f:
                    st = f.read()
                uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", st, re.M).groups()
                t.eq(uids, (str(uid),) * 4, "real, effective, saved and fs uid are the user's")
                t.check(re.search(r"^Groups:\s*$", st, re.M) is not None or
                        " 0 " not in (re.search(r"^Groups:(.*)$", st, re.M).group(1) + " "),
                        "root's group is gone from the supplementary groups")
                code, _, _ = post(uport, "as-user")
                t.eq(code, 202, "the bound listener still takes messages after the drop")
                t.check(wait_until(lambda: len(os.listdir(j.path("uout"))) == 1, 5),
                        "and the message is delivered by the service user")
                t.eq(ju.stop(), 0, "and it stops cleanly")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass

t.finish()
