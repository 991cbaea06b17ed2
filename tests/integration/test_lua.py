"""jn-it-lua: `type: lua` services end to end, with the real junction binary.

HTTP IN -> lua (a script file named relative to the config) -> file OUT, driven with curl:
- a text payload changed and a header set (the file name template reads the header), a JSON
  payload through junction.json, a split into three messages;
- nil drops the message: the trace says `filtered` and nothing is written;
- error("why") dead-letters it with that reason; a runtime error with the Lua traceback;
- `while true do end` and a memory bomb are dead-lettered with the budget that ran out, and
  the broker keeps serving: the next messages are accepted and delivered as before;
- `junction check` on a script that does not compile fails with the script's file:line.
"""
import os
import re

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("lua")
cleanups = []

CONFIG = """
junction:
  data_dir: @DIR@/data
  log_level: info
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
    path: /ingest
  out:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.X-Kind}-{id}.txt"
services:
  script:
    type: lua
    script: scripts/transform.lua
    max_instructions: 1000000
    max_memory: 8MiB
routes:
  r:
    from: in
    via: [script]
    to: out
"""

SCRIPT = r"""
local json = junction.json
seen = 0

function process(msg)
  seen = seen + 1
  local p = msg.payload
  if p == "drop" then return nil end
  if p == "bad" then error("refused: bad payload", 0) end
  if p == "spin" then while true do end end
  if p == "bomb" then local s = string.rep("x", 1 << 30) end
  if p == "boom" then
    local t = nil
    return t.field
  end
  if p:sub(1, 6) == "split " then
    local out = {}
    for part in p:sub(7):gmatch("[^,]+") do
      out[#out + 1] = {payload = part, headers = {["X-Kind"] = "part"}}
    end
    return out
  end
  local v = json.decode(p)
  if type(v) == "table" then
    v.seen_by = "lua"
    msg.payload = json.encode(v)
    msg.headers["x-kind"] = "json"
  else
    msg.payload = p:upper()
    msg.headers["X-KIND"] = "text"
  end
  junction.log.info("transformed", #msg.payload, "bytes")
  return msg
end
"""

BAD = "function process(msg)\n  return msg +\nend\n"


def post(port, body):
    code, out, _ = curl(["-X", "POST", "--data-binary", body, "http://127.0.0.1:%d/ingest" % port])
    m = re.search(rb'"id":"([0-9A-Z]+)"', out)
    return code, (m.group(1).decode() if m else None)


def files(j):
    d = j.path("out")
    if not os.path.isdir(d):
        return {}
    res = {}
    for n in os.listdir(d):
        if n.endswith(".txt"):
            with open(os.path.join(d, n), "rb") as f:
                res[n] = f.read()
    return res


def dlq(j):
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    return out + err


try:
    port = free_port()
    j = Junction(CONFIG % {"port": port}, wait_ports=[port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    os.makedirs(j.path("scripts"))
    with open(j.path("scripts", "transform.lua"), "w") as f:
        f.write(SCRIPT)

    code, out, err = run_junction(["check", "-c", j.cfg])
    t.eq(code, 0, "junction check accepts the script: %s%s" % (out, err))
    j.start()

    # ---- changed in place, a header set, JSON, a split ----
    code, text_id = post(port, "hello")
    t.eq(code, 202, "POST hello: 202")
    t.check(wait_until(lambda: ("text-%s.txt" % text_id) in files(j), 10),
            "the text message arrives, named by the header the script set")
    t.eq(files(j).get("text-%s.txt" % text_id), b"HELLO", "its payload changed by the script")

    code, json_id = post(port, '{"b":[1,2],"a":19.99}')
    t.check(wait_until(lambda: ("json-%s.txt" % json_id) in files(j), 10), "the JSON one arrives")
    t.eq(files(j).get("json-%s.txt" % json_id), b'{"a":19.99,"b":[1,2],"seen_by":"lua"}',
         "decoded, changed and encoded by junction.json")

    code, split_id = post(port, "split a,b,c")
    t.check(wait_until(lambda: len([n for n in files(j) if n.startswith("part-")]) == 3, 10),
            "a split into three messages gives three files")
    parts = sorted(v for n, v in files(j).items() if n.startswith("part-"))
    t.eq(parts, [b"a", b"b", b"c"], "each with its part")
    t.check(("part-%s.txt" % split_id) not in files(j),
            "new tables are new messages with ids of their own")

    # ---- nil: filtered ----
    code, drop_id = post(port, "drop")
    t.eq(code, 202, "POST drop: 202")

    def traced(mid, word):
        c, o, e = run_junction(["trace", "-c", j.cfg, mid])
        return word in o

    t.check(wait_until(lambda: traced(drop_id, "filtered"), 10),
            "the trace of a message the script returned nil for says filtered")
    c, o, e = run_junction(["trace", "-c", j.cfg, drop_id])
    t.check("delivered" not in o and "routed+transformed" not in o,
            "and neither routed+transformed nor delivered: %r" % o)

    # ---- error(), runtime error, budgets: dead letters, and the broker keeps serving ----
    code, bad_id = post(port, "bad")
    code, boom_id = post(port, "boom")
    code, spin_id = post(port, "spin")
    code, bomb_id = post(port, "bomb")
    t.eq(code, 202, "the memory bomb is accepted like any message (the script runs after)")
    t.check(wait_until(lambda: bomb_id in dlq(j), 20), "all four reach the dead letters")
    d = dlq(j)
    lines = {mid: next((ln for ln in d.splitlines() if mid in ln), "")
             for mid in (bad_id, boom_id, spin_id, bomb_id)}
    t.check("refused: bad payload" in lines[bad_id] and "traceback" not in lines[bad_id],
            "error('why') dead-letters with that reason: %r" % lines[bad_id])
    t.check("attempt to index a nil value (local 't')" in lines[boom_id]
            and "traceback: " in lines[boom_id] and "in function 'process'" in lines[boom_id],
            "a runtime error with the Lua traceback: %r" % lines[boom_id])
    t.check("max_instructions (1000000) exceeded at " in lines[spin_id]
            and "transform.lua:10" in lines[spin_id],
            "while true do end: the instruction budget and where: %r" % lines[spin_id])
    t.check("max_memory (8388608 bytes) exceeded" in lines[bomb_id],
            "string.rep bomb: the memory budget: %r" % lines[bomb_id])

    t.check(j.alive(), "junction is still running")
    code, after_id = post(port, "after")
    t.eq(code, 202, "the next POST is accepted")
    t.check(wait_until(lambda: ("text-%s.txt" % after_id) in files(j), 10),
            "and delivered, transformed as before")
    t.eq(files(j).get("text-%s.txt" % after_id), b"AFTER", "by the rebuilt state")
    t.check("[info] [lua.script] msg=%s transformed 5 bytes" % after_id in j.log(),
            "junction.log.info writes the broker's log with the service and message id")
    t.check(re.search(r"\[warn\] \[lua\.script\] msg=%s max_instructions" % spin_id, j.log()),
            "the budget breach is logged as a warning")
    t.eq(j.stop(), 0, "junction exits 0 on SIGTERM")

    # ---- check: a script that does not compile ----
    bad_cfg = CONFIG.replace("scripts/transform.lua", "bad.lua").replace("@DIR@", j.dir)
    with open(j.path("bad.lua"), "w") as f:
        f.write(BAD)
    with open(j.path("bad.yaml"), "w") as f:
        f.write(bad_cfg % {"port": port})
    code, out, err = run_junction(["check", "-c", j.path("bad.yaml")])
    t.eq(code, 1, "junction check fails on a script that does not compile")
    t.check(re.search(r"bad\.yaml:\d+:\d+: service 'script' \(lua\): \S*bad\.lua:3: "
                      r"unexpected symbol near 'end'", err),
            "with the config's position and the script's file:line: %r" % err)
finally:
    for c in reversed(cleanups):
        c()
t.finish()
