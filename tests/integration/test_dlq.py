"""Dead letters of every kind can be listed and replayed, and one never blocks another (issue
12, item 1: a dead letter without a destination, from `unrouted: dead-letter` or a service
error, could not be decoded, and made every replay fail). An unrouted message is visible: one
warn line per channel per minute naming the routes whose conditions did not hold, and a count
(item 2)."""
import os
import json

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("dlq")
port, dead_port = free_port(), free_port()
CONFIG = """
junction:
  data_dir: @DIR@/data
  shutdown_timeout: 1s
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d" }
  erp: { type: file, direction: out, dir: "@DIR@/erp", name: "{id}.json" }
  down:
    type: http
    direction: out
    url: http://127.0.0.1:%d/nobody
    retry: { attempts: 1 }
services:
  tidy: { type: json-map, rename: { a: b } }
routes:
  orders: { from: [in], when: 'header("X-Kind") == "order"', to: [erp] }
  mapped: { from: [in], when: 'header("X-Kind") == "map"', via: [tidy], to: [erp] }
  doomed: { from: [in], when: 'header("X-Kind") == "down"', to: [down] }
%s
"""
j = Junction(CONFIG % (port, dead_port, ""), wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
url = "http://127.0.0.1:%d/ingest" % port


def post(kind, body):
    st, resp, _ = curl(["-H", "X-Kind: " + kind, "--data-binary", body, url])
    t.eq(st, 202, "%s accepted" % kind)
    return json.loads(resp)["id"] if st == 202 else "?"


def dlq_ids():
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    return code, out, err, [line.split()[1] for line in out.splitlines() if line.strip()]


try:
    j.start()
    unrouted = [post("other", "u%d" % i) for i in range(3)]
    svc = post("map", "not json")
    dest = post("down", "d")
    t.check(wait_until(lambda: j.log().count("dead-lettered") >= 3, 10),
            "the service error and the destination's failure are dead-lettered")
    t.check(wait_until(lambda: "junction dlq list" in j.log(), 10), "the unrouted note came")
    t.eq(j.stop(), 0, "stop")
    log = j.log()
    notes = [l for l in log.splitlines() if "matched no route" in l]
    t.eq(len(notes), 1, "three unrouted messages within a minute: one note")
    note = notes[0] if notes else ""
    t.check("[warn]" in note and "channel 'in'" in note and unrouted[0] in note,
            "the note is a warn naming the channel and the message: %r" % note)
    t.check("route 'orders' when: header(\"X-Kind\") == \"order\"" in note and
            "route 'doomed'" in note, "it names the routes whose conditions did not hold")
    t.check(("msg=%s dead-lettered" % unrouted[1]) not in log,
            "unrouted messages are not also logged one warn each")
    t.check("junction stopped: 5 dead-lettered, 3 unrouted" in log,
            "the stop line counts them: %r" % log.splitlines()[-1:])

    # ---- list: all five, whatever their kind ----
    code, out, err, ids = dlq_ids()
    t.eq(code, 0, "dlq list exits 0: %s" % err)
    t.eq(sorted(ids), sorted(unrouted + [svc, dest]), "every dead letter is listed")
    t.check("cannot be decoded" not in err, "none is undecodable: %r" % err)
    line = [l for l in out.splitlines() if svc in l]
    t.check(line and "route=mapped" in line[0] and "destination=-" in line[0] and
            "tidy" in line[0], "the service error keeps its route and reason: %r" % line)
    line = [l for l in out.splitlines() if unrouted[0] in l]
    t.check(line and "destination=-" in line[0] and "unrouted" in line[0],
            "the unrouted one says why: %r" % line)

    # ---- replay one by id: the others neither block it nor count as its failures ----
    code, out, err = run_junction(["dlq", "replay", unrouted[0], "-c", j.cfg])
    t.eq(code, 0, "replay of an unrouted dead letter: %s" % err)
    t.eq(out.strip(), "replayed %s to (routing)" % unrouted[0], "it says where it went")
    code, out, err = run_junction(["dlq", "replay", dest, "-c", j.cfg])
    t.eq(code, 0, "replay of a destination's dead letter: %s" % err)
    t.eq(out.strip(), "replayed %s to down" % dest, "back to its destination")
    code, out, err, ids = dlq_ids()
    t.eq(sorted(ids), sorted(unrouted[1:] + [svc]), "the two replayed ones left the dlq")

    # ---- restart with a route that takes it: the replayed unrouted message is delivered ----
    with open(j.cfg, "w") as f:
        f.write((CONFIG % (port, dead_port, """  rest: { from: [in], when: 'header("X-Kind") == "other"', to: [erp] }""")).replace("@DIR@", j.dir))
    j.start()
    erp = j.path("erp", unrouted[0] + ".json")
    t.check(wait_until(lambda: os.path.exists(erp), 10), "the replayed message is routed and "
            "delivered once a route takes it")
    t.eq(j.stop(), 0, "stop 2")
    code, out, err = run_junction(["trace", unrouted[0], "-c", j.cfg])
    events = [l.split()[2] for l in out.splitlines()]
    t.eq(events[-3:], ["replayed", "routed", "delivered"], "trace: replayed, routed, delivered")

    # ---- replay --all: the rest, and the one whose destination is still down again ----
    code, out, err, ids = dlq_ids()
    t.eq(sorted(ids), sorted(unrouted[1:] + [svc, dest]), "the still-down one is back")
    code, out, err = run_junction(["dlq", "replay", "--all", "-c", j.cfg])
    t.eq(code, 0, "replay --all: %s" % err)
    t.eq(len(out.splitlines()), 4, "four replayed")
    code, out, err, ids = dlq_ids()
    t.eq(ids, [], "the dlq is empty")
finally:
    j.cleanup()
t.finish()
