"""The web dashboard (issue 15, docs/dashboard.md) in a real browser.

A junction with an admin token, an HTTP IN, a file OUT and an HTTP OUT to a receiver that
answers 400 first (so the first message, an HL7 one, is a dead letter) and 200 after. Over
curl: / and /ui/ are served without the token, with their types and the CSP; the API still
answers 401. Then tests/browser/dashboard.mjs drives Debian's chromium with playwright-core
(node): the page asks for the token, shows the channels, its counters move within 3 s of 20
posts, Pause shows paused while the HTTP IN answers 503, the dead letter's Replay button delivers
it (checked here, at the receiver), the HL7 message's page has PID on a line of its own, and an
<img onerror> payload shows as text without running. The screenshots go to a temporary folder,
or to docs/img/ with JN_UPDATE_SCREENSHOTS=1.

chromium, node and tests/browser/node_modules come from scripts/install-deps.sh; without them
this test FAILS (it does not skip): CI installs them.
"""
import json
import os
import shutil
import subprocess
import tempfile

from jnt import SRC, Checks, Junction, Receiver, curl, free_port, wait_until

t = Checks("dashboard")
cleanups = []
TOKEN = "dash-test-token-7f3a"
BROWSER_DIR = os.path.join(SRC, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
  admin_token: "%(token)s"
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(http_in)d
    path: /ingest
  archive:
    type: file
    direction: out
    dir: @DIR@/archive
  emr:
    type: http
    direction: out
    url: http://127.0.0.1:%(rcv)d/emr
    retry: { attempts: 2, backoff: 20ms, max_backoff: 50ms }
services:
  tojson: { type: hl7-to-json }
routes:
  r:
    from: [in]
    to: [archive, emr]
  hl7json:
    from: [in]
    when: header("Content-Type") == "x-application/hl7-v2+er7"
    via: [tojson]
    to: [archive]
"""

HL7 = ("MSH|^~\\&|LAB|HOSP|EMR|HOSP|20261207083000||ORU^R01|MSG0001|P|2.5\r"
       "PID|1||123456^^^HOSP^MR||Doe^John^Q||19700101|M\r"
       "OBR|1||LAB-1|GLU^Glucose\r"
       "OBX|1|NM|GLU^Glucose||5.5|mmol/L|3.9-6.1|N|||F\r")
XSS = '<p>hello</p><img src=x onerror="window.__pwned=1">'


def admin(port, path, method="GET", body=None, token=TOKEN):
    args = ["-X", method, "http://127.0.0.1:%d%s" % (port, path)]
    if token:
        args += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    code, out, hdr = curl(args)
    try:
        return code, json.loads(out), hdr
    except ValueError:
        return code, {"unparsed": out.decode("utf-8", "replace")}, hdr


def post(port, body, ctype):
    code, out, _ = curl(["-X", "POST", "-H", "Content-Type: " + ctype, "--data-binary", body,
                         "http://127.0.0.1:%d/ingest" % port])
    return code, json.loads(out).get("id") if code == 202 else None


def header(hdr, name):
    for line in hdr.splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def tools_present():
    """The browser test's tools, or a FAIL naming what is missing and how to get it."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("%s (apt-get install chromium)" % CHROMIUM)
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        missing.append("tests/browser/node_modules/playwright-core (npm ci in tests/browser)")
    return t.check(not missing, "the browser test needs %s: run scripts/install-deps.sh" %
                   ", ".join(missing))


try:
    adm, http_in, rcv_port = free_port(), free_port(), free_port()
    rcv = Receiver([400, 200], port=rcv_port).start()
    cleanups.append(rcv.stop)
    j = Junction(CONFIG % dict(admin=adm, http_in=http_in, rcv=rcv_port, token=TOKEN),
                 wait_ports=[http_in, adm])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-6000:]))
    j.start()

    # The page without the token, the API with it.
    sizes = 0
    for path, ctype in (("/", "text/html"), ("/ui/app.js", "text/javascript"),
                        ("/ui/style.css", "text/css")):
        code, body, hdr = curl(["http://127.0.0.1:%d%s" % (adm, path)])
        sizes += len(body)
        t.check(code == 200 and (header(hdr, "Content-Type") or "").startswith(ctype),
                "%s: 200 %s without a token (got %d, %r)" % (path, ctype, code,
                                                             header(hdr, "Content-Type")))
        csp = header(hdr, "Content-Security-Policy") or ""
        t.check("script-src 'self'" in csp and "default-src 'self'" in csp and
                "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp,
                "%s has the CSP: %r" % (path, csp))
        t.eq(header(hdr, "Cache-Control"), "no-cache", "%s: Cache-Control" % path)
        etag = header(hdr, "ETag")
        code, _, _ = curl(["-H", "If-None-Match: %s" % etag, "http://127.0.0.1:%d%s" % (adm, path)])
        t.eq(code, 304, "%s: 304 for its own ETag" % path)
    t.check(sizes < 200 * 1024, "the page is under 200 KB (%d bytes)" % sizes)
    code, _, _ = curl(["http://127.0.0.1:%d/ui/missing.js" % adm])
    t.eq(code, 404, "an unknown /ui/ file is 404")
    code, _, hdr = admin(adm, "/api/v1/status", token=None)
    t.check(code == 401 and header(hdr, "WWW-Authenticate"), "the API still asks for the token")

    # One HL7 message, dead-lettered by the receiver's 400; one HTML snippet, delivered.
    code, hl7_id = post(http_in, HL7, "x-application/hl7-v2+er7")
    t.eq(code, 202, "the HL7 message is accepted")
    t.check(wait_until(lambda: admin(adm, "/api/v1/status")[1].get("journal", {})
                       .get("dead_letters") == 1, 10), "the HL7 message is a dead letter")
    code, xss_id = post(http_in, XSS, "text/html")
    t.eq(code, 202, "the HTML message is accepted")
    t.check(wait_until(lambda: rcv.count() == 2, 10), "the receiver took the HTML one")

    if tools_present():
        shots = os.path.join(SRC, "docs", "img") if os.environ.get("JN_UPDATE_SCREENSHOTS") \
            else tempfile.mkdtemp(prefix="jn-dash-")
        if shots.startswith(tempfile.gettempdir()):
            cleanups.append(lambda: shutil.rmtree(shots, ignore_errors=True))
        env = dict(os.environ, JN_DASH_URL="http://127.0.0.1:%d/" % adm, JN_DASH_TOKEN=TOKEN,
                   JN_DASH_INGEST="http://127.0.0.1:%d/ingest" % http_in, JN_DASH_IN="in",
                   JN_DASH_CHANNELS="in,archive,emr", JN_DASH_HL7_ID=hl7_id,
                   JN_DASH_XSS_ID=xss_id, JN_DASH_SHOTS=shots)
        try:
            p = subprocess.run(["node", os.path.join(BROWSER_DIR, "dashboard.mjs")], env=env,
                               cwd=BROWSER_DIR, capture_output=True, timeout=150)
            out = p.stdout.decode("utf-8", "replace")
            print(out, end="")
            if p.returncode != 0:
                print(p.stderr.decode("utf-8", "replace")[-3000:])
            rc = p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode("utf-8", "replace"), -1
            print(out)
        for line in out.splitlines():
            if line.startswith("ok: "):
                t.check(True, line)
            elif line.startswith("FAIL: "):
                t.check(False, "browser: " + line[6:])
        t.eq(rc, 0, "dashboard.mjs exits 0")
        last = out.strip().splitlines()[-1] if out.strip() else "{}"
        try:
            res = json.loads(last)
        except ValueError:
            res = {}
        t.eq(res.get("replayed"), hl7_id, "the page replayed the dead letter")
        # The receiver now answers 200: the replayed message reached it a second time.
        def got_again():
            with rcv.lock:
                return [(i, r["body"]) for i, r in enumerate(rcv.requests)
                        if r["headers"].get("x-junction-id") == hl7_id]
        t.check(wait_until(lambda: len(got_again()) == 2, 10),
                "the receiver got the replayed HL7 message again: %r" % got_again())
        t.check(all(b == HL7.encode() for _, b in got_again()), "byte for byte")
        t.check(wait_until(lambda: rcv.bodies().count(b"counter-7") == 2, 10),
                "the filter's replay from the kept messages sent counter-7 again")
        for name in ("dashboard-overview.png", "dashboard-message.png"):
            f = os.path.join(shots, name)
            size = os.path.getsize(f) if os.path.exists(f) else -1
            t.check(0 < size < 200 * 1024, "screenshot %s is there and small (%d bytes)" %
                    (name, size))
    # Under scripts/sanitize.sh a leak or UB report makes this exit code non-zero.
    t.eq(j.stop(), 0, "junction stops cleanly after serving the dashboard")
finally:
    for c in reversed(cleanups):
        c()
t.finish()
