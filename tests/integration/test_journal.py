"""The journal: queued messages survive a restart; a full journal refuses new input with 503
and Retry-After while queued messages still leave, and intake resumes by itself; dead letters
can be listed, traced and replayed; two brokers cannot share a data_dir."""
import json
import os
import shutil
import tempfile

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until

t = Checks("journal")
tmp = tempfile.mkdtemp(prefix="jn-journal-")
port, rport = free_port(), free_port()
CONFIG = """
junction:
  data_dir: %(data)s
  max_size: %(size)s
  shutdown_timeout: 2s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%(port)d
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%(rport)d/sink
    concurrency: 4
    retry: { attempts: %(attempts)d, backoff: 20ms, max_backoff: 100ms }
routes:
  r:
    from: [in]
    to: [out]
"""


def config(data, size="64MiB", attempts=1000):
    return CONFIG % {"data": data, "size": size, "port": port, "rport": rport,
                     "attempts": attempts}


def post(body):
    return curl(["--data-binary", body, "http://127.0.0.1:%d/ingest" % port])


procs = []
try:
    # ---- 1. restart with queued messages: nothing acknowledged is lost ----
    data = os.path.join(tmp, "d1")
    j = Junction(config(data), wait_ports=[port])
    procs.append(j)
    t.on_fail.append(lambda: print("---- log 1 ----\n" + j.log()))
    j.start()
    ids = []
    for i in range(3):
        st, resp, _ = post("queued-%d" % i)
        t.eq(st, 202, "queued-%d accepted while the receiver is down" % i)
        if st == 202:
            ids.append(json.loads(resp)["id"])
    t.eq(j.stop(), 0, "graceful stop with a queue: exit 0")
    t.check("3 queued message(s) stay in the journal" in j.log() or
            "stay in the journal" in j.log(), "the stop says the queue stays in the journal")
    rec = Receiver(port=rport).start()
    j2 = Junction(config(data), wait_ports=[port])
    procs.append(j2)
    t.on_fail.append(lambda: print("---- log 2 ----\n" + j2.log()))
    j2.start()
    t.check(wait_until(lambda: rec.count() >= 3, 15), "the 3 queued messages are delivered "
            "after the restart (got %d)" % rec.count())
    got = sorted(b.decode() for b in rec.bodies())
    t.eq(got, ["queued-0", "queued-1", "queued-2"], "exact bodies after the restart")
    t.check("recovered 3 queued deliveries" in j2.log(), "the start says what it recovered")

    # ---- 2. a second broker on the same data_dir is refused ----
    code, out, err = run_junction(["run", "-c", j2.cfg])
    t.eq(code, 1, "a second junction on the same data_dir exits 1")
    t.check("another junction (pid" in err and "is using data_dir" in err,
            "it says why: %r" % err[-300:])

    # ---- 3. trace of a delivered message ----
    code, out, err = run_junction(["trace", ids[0], "-c", j2.cfg])
    t.eq(code, 0, "trace works while the broker runs")
    events = [line.split()[2] for line in out.splitlines()]
    t.eq(events, ["received", "routed", "retry-scheduled"] + (["retry-scheduled"] *
         (events.count("retry-scheduled") - 1)) + ["delivered"],
         "trace shows received, routed, retries, delivered")
    t.eq(j2.stop(), 0, "stop 2")
    rec.stop()

    # ---- 4. dead letters: list, trace, replay ----
    data3 = os.path.join(tmp, "d3")
    j3 = Junction(config(data3, attempts=2), wait_ports=[port])
    procs.append(j3)
    t.on_fail.append(lambda: print("---- log 3 ----\n" + j3.log()))
    j3.start()
    st, resp, _ = post("doomed")
    dead = json.loads(resp)["id"] if st == 202 else "?"
    t.check(wait_until(lambda: "msg=%s dead-lettered" % dead in j3.log(), 10),
            "two failed attempts dead-letter the message")
    t.eq(j3.stop(), 0, "stop 3")
    code, out, err = run_junction(["dlq", "list", "-c", j3.cfg])
    t.eq(code, 0, "dlq list")
    t.check(dead in out and "attempts=2" in out and "destination=out" in out and
            "connection refused" in out, "the dead letter keeps its last error and "
            "attempts: %r" % out)
    rec = Receiver(port=rport).start()
    code, out, err = run_junction(["dlq", "replay", dead, "-c", j3.cfg])
    t.eq(code, 0, "dlq replay ID: %s" % err)
    code, out, err = run_junction(["dlq", "list", "-c", j3.cfg])
    t.check(dead not in out, "the dead letter left the dlq")
    j4 = Junction(config(data3), wait_ports=[port])
    procs.append(j4)
    t.on_fail.append(lambda: print("---- log 4 ----\n" + j4.log()))
    j4.start()
    t.check(wait_until(lambda: rec.bodies() == [b"doomed"], 10), "the replayed message is "
            "delivered when the broker starts")
    t.eq(j4.stop(), 0, "stop 4")
    code, out, err = run_junction(["trace", dead, "-c", j4.cfg])
    events = [line.split()[2] for line in out.splitlines()]
    t.check(events[-2:] == ["replayed", "delivered"] and "dead-lettered" in events,
            "trace: dead-lettered, replayed, delivered: %r" % events)
    rec.stop()

    # ---- 5. full journal: 503 + Retry-After, queued still leave, intake resumes ----
    data5 = os.path.join(tmp, "d5")
    j5 = Junction(config(data5, size="2MiB"), wait_ports=[port])
    procs.append(j5)
    t.on_fail.append(lambda: print("---- log 5 ----\n" + j5.log()))
    j5.start()
    chunk = os.path.join(tmp, "chunk")
    with open(chunk, "wb") as f:
        f.write(b"z" * 20000)
    accepted, refused, hdr503 = 0, 0, ""
    for i in range(200):
        st, resp, hdrs = curl(["--data-binary", "@" + chunk,
                               "http://127.0.0.1:%d/ingest" % port])
        if st == 202:
            accepted += 1
        elif st == 503:
            refused += 1
            hdr503 = hdrs
            if refused >= 3:
                break
        else:
            t.check(False, "unexpected status %d while filling" % st)
            break
    t.check(accepted > 10 and refused >= 3, "the journal fills: %d accepted, then 503 (%d)" %
            (accepted, refused))
    t.check("retry-after: 1" in hdr503.lower(), "503 carries Retry-After")
    t.check("journal" in j5.log() and "full" in j5.log(), "the log warns about a full journal")
    t.check(j5.alive(), "junction is up while full")
    rec = Receiver(port=rport).start()
    t.check(wait_until(lambda: rec.count() >= accepted, 30), "every accepted message still "
            "leaves while full (%d of %d)" % (rec.count(), accepted))
    t.check(wait_until(lambda: curl(["--data-binary", "@" + chunk,
                                     "http://127.0.0.1:%d/ingest" % port])[0] == 202, 30, 0.2),
            "intake resumes by itself once the queue has drained")
    t.eq(j5.stop(), 0, "stop 5")
    rec.stop()
finally:
    if t.failed:  # the logs live in the temp dirs: print them before they go
        for f in t.on_fail:
            f()
        t.on_fail = []
    for p in procs:
        p.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
