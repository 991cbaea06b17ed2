"""jn-it-services-catalogue: split, template and hl7-map through routes, with the real binary.

- HTTP IN -> split (json-array) -> template ({json.} fields, split headers) -> file OUT: a POST
  of a three-element array gives three files, each rendered from its element;
- an array with a bad element is dead-lettered with a reason naming the element, nothing of it
  is written, and the next POST flows as before (no head-of-line block);
- HTTP IN -> hl7-map -> file OUT: fields copied, set and removed in the delivered message.
"""
import os
import re

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until

t = Checks("services-catalogue")
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
  hl7in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port2)d
    path: /hl7
  out:
    type: file
    direction: out
    dir: @DIR@/out
    name: "{header.split-index}-of-{header.split-count}-{id}.txt"
  hl7out:
    type: file
    direction: out
    dir: @DIR@/hl7out
    name: "{id}.hl7"
services:
  each:
    type: split
    format: json-array
  line:
    type: template
    template: "{header.split-index}: {json.sku} x{json.qty}"
    strict: true
  ehr:
    type: hl7-map
    copy: {PID-2: PID-3.1}
    set: {MSH-5: EHR}
    remove: [PID-19, NTE]
routes:
  r:
    from: in
    via: [each, line]
    to: out
  h:
    from: hl7in
    via: [ehr]
    to: hl7out
"""


def post(port, path, body):
    code, out, _ = curl(["-X", "POST", "--data-binary", body,
                         "http://127.0.0.1:%d/%s" % (port, path)])
    m = re.search(rb'"id":"([0-9A-Z]+)"', out)
    return code, (m.group(1).decode() if m else None)


def files(j, sub="out"):
    d = j.path(sub)
    if not os.path.isdir(d):
        return {}
    res = {}
    for n in os.listdir(d):
        if not n.startswith("."):
            with open(os.path.join(d, n), "rb") as f:
                res[n] = f.read()
    return res


def dlq(j):
    code, out, err = run_junction(["dlq", "list", "-c", j.cfg])
    return out + err


try:
    port, port2 = free_port(), free_port()
    j = Junction(CONFIG % {"port": port, "port2": port2}, wait_ports=[port, port2])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    code, out, err = run_junction(["check", "-c", j.cfg])
    t.eq(code, 0, "junction check accepts the config: %s%s" % (out, err))
    j.start()

    # ---- one POST, three files ----
    code, mid = post(port, "ingest", '[{"sku":"a","qty":1},{"sku":"b","qty":2},'
                                     '{"sku":"c","qty":3}]')
    t.eq(code, 202, "POST of a 3-element array: 202")
    t.check(wait_until(lambda: len(files(j)) == 3, 10), "three files are written")
    got = files(j)
    t.eq(sorted(got.values()), [b"1: a x1", b"2: b x2", b"3: c x3"],
         "each rendered from its element: %r" % got)
    t.eq(sorted(n.split("-")[0] + "/" + n.split("-")[2] for n in got), ["1/3", "2/3", "3/3"],
         "named by split-index and split-count")
    t.check(all(mid not in n for n in got), "the parts are messages with ids of their own")

    # ---- a bad element: dead letter naming it; the next one flows ----
    code, bad_id = post(port, "ingest", '[{"sku":"d","qty":1},{"sku":oops}]')
    t.eq(code, 202, "the bad array is accepted (services run after the ack)")
    code, miss_id = post(port, "ingest", '[{"sku":"e"}]')
    t.check(wait_until(lambda: bad_id in dlq(j) and miss_id in dlq(j), 10),
            "both reach the dead letters")
    d = dlq(j)
    bad_line = next((ln for ln in d.splitlines() if bad_id in ln), "")
    miss_line = next((ln for ln in d.splitlines() if miss_id in ln), "")
    t.check("split: element 2 is not JSON" in bad_line, "the reason names the element: %r"
            % bad_line)
    t.check("{json.qty}: no such field" in miss_line,
            "strict: a missing field is named: %r" % miss_line)
    code, after_id = post(port, "ingest", '[{"sku":"z","qty":9}]')
    t.check(wait_until(lambda: b"1: z x9" in files(j).values(), 10),
            "the next message is delivered as before")
    t.eq(len(files(j)), 4, "and nothing of the bad ones was written")

    # ---- hl7-map ----
    msg = ("MSH|^~\\&|LAB|H|OLD|H|20240101||ADT^A01|M1|P|2.5\r"
           "PID|1||42^^^MR||DOE^JANE\r"
           "NTE|1|note\r")
    code, hid = post(port2, "hl7", msg)
    t.eq(code, 202, "POST HL7: 202")
    t.check(wait_until(lambda: ("%s.hl7" % hid) in files(j, "hl7out"), 10),
            "the mapped message is delivered")
    t.eq(files(j, "hl7out").get("%s.hl7" % hid),
         b"MSH|^~\\&|LAB|H|EHR|H|20240101||ADT^A01|M1|P|2.5\rPID|1|42|42^^^MR||DOE^JANE\r",
         "MSH-5 set, PID-3.1 copied to PID-2, NTE removed")

    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "junction exits 0 on SIGTERM")
finally:
    for c in cleanups:
        c()
t.finish()
