"""Record-to-test (issue 17 part 4): `junction ctl record` writes a channel's real traffic as a
`junction test` file.

A broker runs a route through a Lua script that upper-cases the payload and sets a header,
to a file OUT, and a second route that dead-letters what has "bad" in it. Five messages pass
(one with a binary payload, one with a `${` in it, one dead-lettered). `ctl record --channel
in --count 5 --out F` writes five cases; `junction test -c CONFIG F` passes them all; the
binary payload went to F.d/. After a change of the script (lower-case instead), the same file
fails with the diff. Messages kept without payload (keep: headers) are skipped with a reason,
and a channel that is not an IN channel, or a missing --out, are usage errors.
"""
import json
import os

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("record")
cleanups = []

SCRIPT_UP = """
function process(msg)
  msg.payload = string.upper(msg.payload)
  msg.headers["x-shout"] = "yes"
  return msg
end
"""
SCRIPT_DOWN = SCRIPT_UP.replace("upper", "lower")

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(admin)d
channels:
  in:  { type: http, direction: in, listen: "127.0.0.1:%(p)d", path: /ingest }
  hdr: { type: http, direction: in, listen: "127.0.0.1:%(h)d", path: /ingest }
  out: { type: file, direction: out, dir: "@DIR@/out" }
services:
  shout: { type: lua, script: shout.lua }
  reject: { type: lua, source: "function process(m) if string.find(m.payload, 'bad') then error('bad payload') end return m end" }
routes:
  r:   { from: [in], via: [reject, shout], to: [out] }
  rh:  { from: [hdr], to: [out], keep: headers }
"""

try:
    admin, p, h = free_port(), free_port(), free_port()
    j = Junction(CONFIG % dict(admin=admin, p=p, h=h), wait_ports=[p, h, admin])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()[-4000:]))
    with open(j.path("shout.lua"), "w") as f:
        f.write(SCRIPT_UP)
    j.start()
    bodies = [b"hello world", b"\x00\x01\xffbinary", b"price ${X} ok", b"a bad one", b"last"]
    ids = []
    for b in bodies:
        bf = j.path("body.bin")
        with open(bf, "wb") as f:
            f.write(b)
        code, out, _ = curl(["-X", "POST", "-H", "X-Site: north", "--data-binary", "@" + bf,
                             "http://127.0.0.1:%d/ingest" % p])
        t.eq(code, 202, "POST %r: 202" % b)
        ids.append(json.loads(out)["id"])
    code, out, _ = curl(["-X", "POST", "--data-binary", "x", "http://127.0.0.1:%d/ingest" % h])
    t.eq(code, 202, "POST to the headers-only channel")
    t.check(wait_until(lambda: os.path.isdir(j.path("out")) and
                       len(os.listdir(j.path("out"))) == 5, 10),
            "four delivered through the script, one through rh")

    adm = ["--admin", "127.0.0.1:%d" % admin, "-c", j.cfg]
    rec = j.path("recorded.yaml")
    code, out, err = run_junction(["ctl", "record", "--channel", "in", "--count", "5",
                                   "--out", rec] + adm)
    t.check(code == 0 and "5 case(s) written" in out, "ctl record: 5 cases: %r %r" % (out, err))
    text = open(rec).read() if os.path.exists(rec) else ""
    t.check(text.count("- name:") == 5 and "x-site" in text.lower() and
            '"x-shout": "yes"' in text and "$${X}" in text and "dead_letter:" in text,
            "the file has the cases, the input headers, the header the script set, $${ and "
            "the dead letter: %s" % text[:1500])
    t.check(os.path.isdir(rec + ".d") and
            any(n.endswith(".in") for n in os.listdir(rec + ".d")),
            "the binary payload is a side file in recorded.yaml.d/")
    order = [l.split('"')[1].split()[0] for l in text.splitlines() if "- name:" in l]
    t.eq(order, ids, "cases oldest first, named by their ids")

    code, out, err = run_junction(["test", "-c", j.cfg, rec])
    t.check(code == 0 and "5 passed, 0 failed" in out,
            "junction test on the recording passes with the same config: %r %r" % (out, err))

    # A change of the script: the recording catches it.
    with open(j.path("shout.lua"), "w") as f:
        f.write(SCRIPT_DOWN)
    code, out, err = run_junction(["test", "-c", j.cfg, rec])
    t.check(code == 1 and "1 passed, 4 failed" in out and "HELLO WORLD" in out and
            "hello world" in out, "after the change: 4 fail with the diff: %r" % out)
    with open(j.path("shout.lua"), "w") as f:
        f.write(SCRIPT_UP)

    code, out, err = run_junction(["ctl", "record", "--channel", "hdr", "--out",
                                   j.path("h.yaml")] + adm)
    t.check(code == 1 and "keep: headers" in err and not os.path.exists(j.path("h.yaml")),
            "a channel kept without payloads: skipped with the reason, nothing written: %r" % err)
    code, out, err = run_junction(["ctl", "record", "--channel", "out", "--out", rec] + adm)
    t.check(code == 2 and "no IN channel 'out'" in err, "an OUT channel: usage: %r" % err)
    code, out, err = run_junction(["ctl", "record", "--channel", "in"] + adm)
    t.check(code == 2 and "--out" in err, "no --out: usage: %r" % err)
    code, out, err = run_junction(["ctl", "record", "--channel", "in", "--count", "0",
                                   "--out", rec] + adm)
    t.eq(code, 2, "--count 0: usage")
    t.eq(j.stop(), 0, "junction exits 0")
except Exception as e:
    import traceback
    traceback.print_exc()
    t.check(False, "the test ran to its end: %r" % e)
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception:
            pass
t.finish()
