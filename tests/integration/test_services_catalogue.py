"""jn-it-services-catalogue: split, template and hl7-map through routes, with the real binary.

- HTTP IN -> split (json-array) -> template ({json.} fields, split headers) -> file OUT: a POST
  of a three-element array gives three files, each rendered from its element;
- an array with a bad element is dead-lettered with a reason naming the element, nothing of it
  is written, and the next POST flows as before (no head-of-line block);
- HTTP IN -> hl7-map -> file OUT: fields copied, set and removed in the delivered message;
- HTTP IN -> validate (a JSON Schema file) -> file OUT: a valid order is delivered unchanged,
  an invalid one is dead-lettered with every violation named (path and why), one with more
  than the reason holds lists what fits, counts the rest and logs them all, a payload that is
  not JSON with the parser's reason, and the next order flows;
- HTTP IN -> filter (hl7("MSH-9.1") == "ADT") -> validate (an HL7 profile) -> file OUT: an
  ORU is dropped (the trace says filtered, nothing is written), an ADT without PV1 and PID-5
  is dead-lettered naming both, a complete ADT is delivered;
- `junction check` reports a bad schema at the schema file's line:col, an inline one at its
  line:col in the config, and a filter condition that does not compile.
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
  vin:
    type: http
    direction: in
    listen: 127.0.0.1:%(port3)d
    path: /orders
  vout:
    type: file
    direction: out
    dir: @DIR@/vout
    name: "{id}.json"
  adtin:
    type: http
    direction: in
    listen: 127.0.0.1:%(port4)d
    path: /adt
  adtout:
    type: file
    direction: out
    dir: @DIR@/adtout
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
  contract:
    type: validate
    schema: order.schema.json
  adt-only:
    type: filter
    when: hl7("MSH-9.1") == "ADT"
  adt-profile:
    type: validate
    hl7:
      segments: [MSH, PID, PV1]
      required: [MSH-9, PID-3, PID-5]
routes:
  r:
    from: in
    via: [each, line]
    to: out
  h:
    from: hl7in
    via: [ehr]
    to: hl7out
  v:
    from: vin
    via: [contract]
    to: vout
  adt:
    from: adtin
    via: [adt-only, adt-profile]
    to: adtout
"""

SCHEMA = """{
  "type": "object",
  "required": ["id", "patient"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string", "pattern": "^[0-9]+$"},
    "patient": {"type": "string", "minLength": 2},
    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
    "priority": {"enum": ["routine", "stat"]},
    "tests": {"type": "array", "items": {"type": "string", "maxLength": 4}}
  }
}
"""

BAD_SCHEMA = """{
  "type": "object",
  "properties": {
    "qty": {"type": "integr"},
    "id": {"minItems": 2}
  }
}
"""

BAD_CONFIG = """
channels:
  in: {type: http, direction: in, listen: 127.0.0.1:1, path: /x}
  out: {type: file, direction: out, dir: out}
services:
  from-file:
    type: validate
    schema: bad.schema.json
  inline:
    type: validate
    schema_inline: |
      type: object
      properties:
        n: {type: number, minimum: lots}
  cond:
    type: filter
    when: header("a") === "b"
routes:
  r: {from: in, via: [from-file, inline, cond], to: out}
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
    port, port2, port3, port4 = free_port(), free_port(), free_port(), free_port()
    j = Junction(CONFIG % {"port": port, "port2": port2, "port3": port3, "port4": port4},
                 wait_ports=[port, port2, port3, port4])
    cleanups.append(j.cleanup)
    with open(j.path("order.schema.json"), "w") as f:
        f.write(SCHEMA)
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

    # ---- validate: a JSON Schema ----
    good = b'{"id":"123","patient":"DOE","qty":2,"priority":"stat","tests":["CBC"]}'
    code, good_id = post(port3, "orders", good)
    t.eq(code, 202, "POST of a valid order: 202")
    t.check(wait_until(lambda: ("%s.json" % good_id) in files(j, "vout"), 10),
            "the valid order is delivered")
    t.eq(files(j, "vout").get("%s.json" % good_id), good, "unchanged")
    code, inv_id = post(port3, "orders", '{"id":"12a","qty":100,"priority":"later",'
                                         '"tests":["CBC","LIPID"],"note":"x"}')
    code, nj_id = post(port3, "orders", 'not json')
    code, arr_id = post(port3, "orders", '[1,2]')
    t.check(wait_until(lambda: all(i in dlq(j) for i in (inv_id, nj_id, arr_id)), 10),
            "the invalid ones reach the dead letters")
    d = dlq(j)
    inv = next((ln for ln in d.splitlines() if inv_id in ln), "")
    for want in ('validate: 6 violations: ',
                 '$.patient: is required but missing',
                 '$.id: "12a" does not match the pattern ^[0-9]+$',
                 '$.qty: 100 is more than the maximum 99',
                 '$.priority: "later" is not one of ["routine","stat"]',
                 '$.tests[1]: 5 characters, more than maxLength 4',
                 '$.note: is not allowed (additionalProperties: false)'):
        t.check(want in inv, "the reason lists %r: %r" % (want, inv))
    nj = next((ln for ln in d.splitlines() if nj_id in ln), "")
    t.check("validate: the payload is not JSON: invalid token" in nj,
            "a payload that is not JSON: the parser's reason: %r" % nj)
    arr = next((ln for ln in d.splitlines() if arr_id in ln), "")
    t.check("$: is array, expected object" in arr, "the wrong type at the root: %r" % arr)
    many = '{"id":"1","patient":"PP","tests":[%s]}' % ",".join('"LONGNAME"' for _ in range(40))
    code, many_id = post(port3, "orders", many)
    t.check(wait_until(lambda: many_id in dlq(j), 10), "an order with 40 violations is "
            "dead-lettered")
    ml = next((ln for ln in dlq(j).splitlines() if many_id in ln), "")
    m = re.search(r"validate: 40 violations: (.*) \(and (\d+) more\)", ml)
    t.check(m is not None, "the reason lists what fits and counts the rest: %r" % ml)
    if m:
        t.eq(m.group(1).count("is integer") + m.group(1).count("characters") + int(m.group(2)),
             40, "listed + counted = 40")
    t.check(wait_until(lambda: "$.tests[39]: 8 characters, more than maxLength 4" in j.log(),
                       10), "the log has the whole list, the last one too")
    code, next_id = post(port3, "orders", '{"id":"9","patient":"ROE"}')
    t.check(wait_until(lambda: ("%s.json" % next_id) in files(j, "vout"), 10),
            "the next valid order is delivered as before")
    t.eq(len(files(j, "vout")), 2, "and nothing of the invalid ones was written")

    # ---- filter + validate: an HL7 profile ----
    def traced(mid, word):
        c, o, e = run_junction(["trace", "-c", j.cfg, mid])
        return word in o

    oru = "MSH|^~\\&|LAB|H|EHR|H|20240101||ORU^R01|M2|P|2.5\rPID|1||42||DOE^JANE\r"
    code, oru_id = post(port4, "adt", oru)
    t.eq(code, 202, "POST of an ORU: 202")
    t.check(wait_until(lambda: traced(oru_id, "filtered"), 10),
            "the filter drops the ORU: the trace says filtered")
    c, o, e = run_junction(["trace", "-c", j.cfg, oru_id])
    t.check("delivered" not in o and "dead" not in o, "and it is neither delivered nor "
            "dead-lettered: %r" % o)
    short = "MSH|^~\\&|ADM|H|EHR|H|20240101||ADT^A01|M3|P|2.5\rPID|1||42\r"
    code, short_id = post(port4, "adt", short)
    full = ("MSH|^~\\&|ADM|H|EHR|H|20240101||ADT^A01|M4|P|2.5\rPID|1||42||DOE^JANE\r"
            "PV1|1|I\r")
    code, full_id = post(port4, "adt", full)
    t.check(wait_until(lambda: short_id in dlq(j), 10), "the short ADT is dead-lettered")
    sl = next((ln for ln in dlq(j).splitlines() if short_id in ln), "")
    t.check("validate: 2 violations: PV1: segment required but missing; PID-5: required but "
            "missing" in sl, "naming the missing segment and field: %r" % sl)
    t.check(wait_until(lambda: ("%s.hl7" % full_id) in files(j, "adtout"), 10),
            "the complete ADT is delivered")
    t.eq(files(j, "adtout").get("%s.hl7" % full_id), full.encode(), "unchanged")
    t.eq(len(files(j, "adtout")), 1, "and only it")

    # ---- junction check: schema and condition errors with positions ----
    bad_dir = j.path("bad")
    os.mkdir(bad_dir)
    with open(os.path.join(bad_dir, "bad.schema.json"), "w") as f:
        f.write(BAD_SCHEMA)
    with open(os.path.join(bad_dir, "junction.yaml"), "w") as f:
        f.write(BAD_CONFIG)
    code, out, err = run_junction(["check", "-c", os.path.join(bad_dir, "junction.yaml")])
    t.eq(code, 1, "junction check refuses the bad config")
    msgs = out + err
    sch = os.path.join(bad_dir, "bad.schema.json")
    cfg = os.path.join(bad_dir, "junction.yaml")
    for want in ("%s:4:21: service 'from-file' (validate): schema: properties.qty: type: "
                 "'integr' is not a type" % sch,
                 "%s:5:12: service 'from-file' (validate): schema: properties.id: 'minItems' "
                 "is not supported" % sch,
                 "%s:14:36: service 'inline' (validate): schema_inline: schema: properties.n: "
                 "minimum: expected a number" % cfg,
                 "%s:17:25: service 'cond' (filter): when: unexpected '=' at column 15" % cfg):
        t.check(want in msgs, "check says %r:\n%s" % (want, msgs))

    t.check(j.alive(), "junction is still running")
    t.eq(j.stop(), 0, "junction exits 0 on SIGTERM")
finally:
    for c in cleanups:
        c()
t.finish()
