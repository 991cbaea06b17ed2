"""Routes end to end: `when` conditions, a `via` chain (set-header then json-map), fan-out to
two OUT channels with exact bytes, `unrouted:` to a channel, and a service error that
dead-letters the message with its reason while the broker goes on."""
import json
import os

from jnt import Checks, Junction, curl, free_port, wait_until

t = Checks("routes")
port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
  orders:
    type: file
    direction: out
    dir: @DIR@/orders
    name: "{header.X-Order}.json"
  audit:
    type: file
    direction: out
    dir: @DIR@/audit
    name: "{header.X-Order}-{header.X-Stamp}.json"
  leftovers:
    type: file
    direction: out
    dir: @DIR@/leftovers
    name: "{header.X-Order}.bin"
services:
  stamp:
    type: set-header
    set: { X-Stamp: "{channel}" }
  tidy:
    type: json-map
    rename: { customer.name: customer_name }
    set: { via: "{header.X-Stamp}" }
    remove: [internal]
routes:
  json-orders:
    from: [in]
    when: header("Content-Type") =~ "^application/json" && header("X-Kind") != "test"
    via: [stamp, tidy]
    to: [orders, audit]
unrouted: leftovers
""" % port, wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
url = "http://127.0.0.1:%d/ingest" % port


def read(*p):
    try:
        with open(j.path(*p), "rb") as f:
            return f.read()
    except OSError:
        return None


try:
    j.start()
    body = b'{"id":1,"customer":{"name":"Ann"},"internal":true}'
    st, _, _ = curl(["-H", "Content-Type: application/json", "-H", "X-Order: o1",
                     "--data-binary", body, url])
    t.eq(st, 202, "json order accepted")
    want = b'{"id":1,"customer_name":"Ann","via":"in"}'  # emptied customer pruned
    t.check(wait_until(lambda: read("orders", "o1.json") is not None and
                       read("audit", "o1-in.json") is not None, 10),
            "fan-out: the order reaches both destinations")
    t.eq(read("orders", "o1.json"), want, "orders/ holds the transformed JSON, exact bytes")
    t.eq(read("audit", "o1-in.json"), want, "audit/ holds the same bytes (header set by stamp)")

    # The condition keeps test traffic and non-JSON out: they go to unrouted: leftovers.
    st, _, _ = curl(["-H", "Content-Type: application/json", "-H", "X-Kind: test",
                     "-H", "X-Order: o2", "--data-binary", body, url])
    t.eq(st, 202, "test order accepted")
    st, _, _ = curl(["-H", "Content-Type: text/plain", "-H", "X-Order: o3",
                     "--data-binary", b"plain text", url])
    t.eq(st, 202, "text accepted")
    t.check(wait_until(lambda: read("leftovers", "o2.bin") is not None and
                       read("leftovers", "o3.bin") is not None, 10), "unrouted go to leftovers")
    t.eq(read("leftovers", "o2.bin"), body, "unrouted o2 untouched")
    t.eq(read("leftovers", "o3.bin"), b"plain text", "unrouted o3 untouched")
    t.eq(read("orders", "o2.json"), None, "the test order was not routed")

    # A payload that claims JSON but is not: json-map fails, the message is dead-lettered
    # with the service's reason, and the broker carries on.
    st, resp, _ = curl(["-H", "Content-Type: application/json", "-H", "X-Order: o4",
                        "--data-binary", b'{"broken": ', url])
    t.eq(st, 202, "broken JSON is accepted (it fails later, in the route)")
    bad_id = json.loads(resp)["id"]
    t.check(wait_until(lambda: "msg=%s dead-lettered" % bad_id in j.log(), 10),
            "the broken message is dead-lettered")
    line = [l for l in j.log().splitlines() if "msg=%s dead-lettered" % bad_id in l]
    t.check(line and "route=json-orders" in line[0] and
            "service 'tidy' (json-map): json-map: payload is not JSON" in line[0],
            "the dead-letter line names route, service and reason: %r" % line)
    st, _, _ = curl(["-H", "Content-Type: application/json", "-H", "X-Order: o5",
                     "--data-binary", b'{"id":5}', url])
    t.eq(st, 202, "still accepting after a service error")
    t.check(wait_until(lambda: read("orders", "o5.json") == b'{"id":5,"via":"in"}', 10),
            "o5 delivered after the failure")
    t.eq(j.stop(), 0, "SIGTERM: exit 0")
finally:
    j.cleanup()
t.finish()
