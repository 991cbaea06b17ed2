"""OUT ordering: `ordered: fifo` sends one at a time in queue order; `ordered: key` keeps the
order per value of a header while different keys go in parallel; `none` uses concurrency."""
import http.client

from jnt import Checks, Junction, Receiver, free_port, wait_until

t = Checks("ordering")
port = free_port()
fifo = Receiver(delay=0.03).start()
bykey = Receiver(delay=0.2).start()
free = Receiver(delay=0.2).start()
j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  in: { type: http, direction: in, listen: 127.0.0.1:%d }
  fifo:
    type: http
    direction: out
    url: http://127.0.0.1:%d/
    concurrency: 8
    ordered: fifo
  bykey:
    type: http
    direction: out
    url: http://127.0.0.1:%d/
    concurrency: 8
    ordered: key
    ordered_key: X-Patient
  free:
    type: http
    direction: out
    url: http://127.0.0.1:%d/
    concurrency: 4
routes:
  all:
    from: [in]
    to: [fifo, bykey, free]
""" % (port, fifo.port, bykey.port, free.port), wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    j.start()
    # One keep-alive connection posting back to back: the messages queue up faster than the
    # slow receivers answer, so what runs in parallel is junction's choice, not the test's pace.
    sent = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(12):
        key = "ABC"[i % 3]
        body = "%s-%02d" % (key, i)
        conn.request("POST", "/ingest", body=body, headers={"X-Patient": key})
        resp = conn.getresponse()
        resp.read()
        t.eq(resp.status, 202, "accepted %s" % body)
        sent.append(body)
    conn.close()
    for r in (fifo, bykey, free):
        t.check(wait_until(lambda: r.count() == 12, 20), "all 12 arrive (%d)" % r.count())
    got = [b.decode() for b in fifo.bodies()]
    t.eq(got, sent, "fifo: exactly the queue order")
    t.eq(fifo.max_inflight, 1, "fifo: one request at a time")
    got = [b.decode() for b in bykey.bodies()]
    for key in "ABC":
        t.eq([b for b in got if b[0] == key], [b for b in sent if b[0] == key],
             "key: order kept for key %s" % key)
    t.check(bykey.max_inflight >= 2, "key: different keys in parallel (max %d)" %
            bykey.max_inflight)
    t.check(bykey.max_inflight <= 3, "key: never two of one key at once (max %d of 3 keys)" %
            bykey.max_inflight)
    t.check(free.max_inflight >= 2 and free.max_inflight <= 4,
            "none: up to concurrency at once (max %d)" % free.max_inflight)
    t.eq(j.stop(), 0, "exit 0")
finally:
    j.cleanup()
    for r in (fifo, bykey, free):
        r.stop()
t.finish()
