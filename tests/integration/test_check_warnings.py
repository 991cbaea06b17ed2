"""junction check's warnings (issue 21, part 6): a config that loads but will not work as meant
is said at file:line:col as "warning:" on stderr and check still exits 0: an IN channel no route
reads, an OUT channel nothing sends to, a listener on 0.0.0.0 / :: without tls:, the admin on a
wildcard without admin_tls. The same config with those fixed has none; run logs them."""
import os
import shutil
import subprocess
import tempfile

from jnt import Checks, Junction, free_port, run_junction, wait_until

t = Checks("check_warnings")
tmp = tempfile.mkdtemp(prefix="jn-warn-")

BAD = """\
junction:
  data_dir: ./data
  admin: 0.0.0.0:18081
  admin_token: abc
channels:
  in: { type: http, direction: in, listen: "0.0.0.0:18080" }
  lonely: { type: mllp, direction: in, listen: "[::]:12575" }
  out: { type: file, direction: out, dir: ./out }
  spare: { type: file, direction: out, dir: ./spare }
  fallback: { type: file, direction: out, dir: ./fallback }
routes:
  r: { from: [in], to: [out] }
unrouted: fallback
"""
try:
    p = os.path.join(tmp, "bad.yaml")
    with open(p, "w") as f:
        f.write(BAD)
    rc, out, err = run_junction(["check", "-c", p])
    t.eq(rc, 0, "warnings only: check exits 0")
    t.eq(out, "%s: ok (5 channels, 0 services, 1 routes)\n" % p, "with its summary")
    want = [
        "{f}:3:10: warning: junction: admin: 0.0.0.0:18081 takes connections from every "
        "network without admin_tls: (its token travels in clear)",
        "{f}:6:44: warning: channel 'in' (http): listen: 0.0.0.0:18080 takes connections from "
        "every network without tls: (set tls.cert and tls.key, or listen on a private address)",
        "{f}:7:3: warning: channel 'lonely' (mllp): no route reads from this IN channel; what it "
        "receives is sent to unrouted: 'fallback'",
        "{f}:7:48: warning: channel 'lonely' (mllp): listen: [::]:12575 takes connections from "
        "every network without tls: (set tls.cert and tls.key, or listen on a private address)",
        "{f}:9:3: warning: channel 'spare' (file): no route sends to this OUT channel",
    ]
    t.eq(err.splitlines(), [w.format(f=p) for w in want], "each warning at file:line:col, in "
         "file order; the unrouted: channel counts as used")

    # The default unrouted policy is named in the IN channel's warning.
    p2 = os.path.join(tmp, "dl.yaml")
    with open(p2, "w") as f:
        f.write(BAD.replace("unrouted: fallback\n", "  r2: { from: [in], to: [fallback] }\n"))
    rc, out, err = run_junction(["check", "-c", p2])
    t.check(rc == 0 and "no route reads from this IN channel; what it receives is dead-lettered "
            "as unrouted" in err, "dead-letter is the default: %r" % err)

    # ---- fixed: loopback, tls on the wildcard listener, every channel used ----
    good = BAD.replace("admin: 0.0.0.0:18081", "admin: 127.0.0.1:18081")
    good = good.replace('listen: "[::]:12575"', 'listen: "127.0.0.1:12575"')
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key", "-out",
                    "server.pem", "-days", "2", "-subj", "/CN=localhost"], cwd=tmp, check=True,
                   capture_output=True)
    good = good.replace('listen: "0.0.0.0:18080" }',
                        'listen: "0.0.0.0:18080", tls: {cert: server.pem, key: server.key} }')
    good = good.replace("  r: { from: [in], to: [out] }",
                        "  r: { from: [in, lonely], to: [out, spare] }")
    p3 = os.path.join(tmp, "good.yaml")
    with open(p3, "w") as f:
        f.write(good)
    rc, out, err = run_junction(["check", "-c", p3])
    t.eq((rc, err), (0, ""), "the fixed config has no warning")

    # ---- run logs them at startup ----
    port = free_port()
    j = Junction("""
junction: { data_dir: "@DIR@/data", admin: "off" }
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d" }
  out: { type: file, direction: out, dir: "@DIR@/out" }
  spare: { type: file, direction: out, dir: "@DIR@/spare" }
routes:
  r: { from: [in], to: [out] }
""" % port, wait_ports=[port])
    try:
        j.start()
        t.check(wait_until(lambda: "[warn] config: %s:6:3: warning: channel 'spare' (file): no "
                           "route sends to this OUT channel" % j.cfg in j.log(), 5),
                "run logs the warning: %s" % j.log())
        t.eq(j.stop(), 0, "and runs")
    finally:
        j.cleanup()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
