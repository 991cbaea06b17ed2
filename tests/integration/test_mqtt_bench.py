"""jn-bench's MQTT modes (tools/bench/jn-bench.c), against the real peers they measure:

1. --mode mqtt --inflight 16 at QoS 1 and QoS 2 against mosquitto: every PUBLISH answered
   (PUBACK; PUBREC, then PUBREL -> PUBCOMP), no error, no packet id mismatch.
2. The same against junction's MQTT listener -> file OUT: every message jn-bench counted as
   acknowledged is a file (junction's PUBACK comes after the commit); at most the window more.
3. --rate is a ceiling: never more PUBLISHes acknowledged than the rate allows over the run.
4. --mode mqtt-idle holds K connections to junction's listener: all CONNACKed and up at the
   end, junction's RSS sampled, msg_per_s null."""
import time

from jnt import Checks, Junction, bench, free_port, wait_until
from test_mqtt_roundtrip import Mosquitto, files_in

t = Checks("mqtt_bench")


def settled(count, quiet=1.0, limit=20):
    """count() once it has not changed for quiet seconds (the deliveries in flight are written),
    or after limit seconds."""
    last, since, t0 = count(), time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(0.1)
        n = count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def main():
    mq = Mosquitto()
    j = None
    try:
        mq.start()
        url = "mqtt://127.0.0.1:%d/jn/bench" % mq.port
        for qos, n in ((1, 3000), (2, 1500)):
            r = bench("--mode", "mqtt", "--url", url, "--conns", 4, "--inflight", 16,
                      "--qos", qos, "--count", n, "--warmup", 0, "--duration", 30)
            t.check(r.get("ok_total", 0) >= n, "qos %d: %d acknowledged of %d (%r)" %
                    (qos, r.get("ok_total", 0), n, r))
            t.eq((r.get("errors"), r.get("err_puback_id"), r.get("qos"), r.get("inflight")),
                 (0, 0, qos, 16), "qos %d against mosquitto: no errors" % qos)

        # 3. the rate is a ceiling: 2 s at 300/s; at most 10 ms worth saved up (3), 1 rounding
        r = bench("--mode", "mqtt", "--url", url, "--conns", 2, "--inflight", 8, "--rate", 300,
                  "--warmup", 0, "--duration", 2)
        t.check(0 < r.get("ok", 0) <= 300 * r.get("duration_s", 0) + 4,
                "--rate 300 for %.2f s: %r acknowledged" % (r.get("duration_s", 0), r.get("ok")))
        t.eq(r.get("errors"), 0, "--rate: no errors")

        # 2. and 4. against junction's listener
        port = free_port()
        j = Junction("""
junction:
  data_dir: @DIR@/data
channels:
  devices:
    type: mqtt
    direction: in
    listen: 127.0.0.1:%d
  out:
    type: file
    direction: out
    dir: @DIR@/out
    fsync: false
routes:
  r:
    from: [devices]
    to: [out]
""" % port, wait_ports=[port])
        t.on_fail.append(lambda: print(j.log()[-3000:]))
        j.start()
        jurl = "mqtt://127.0.0.1:%d/dev/t" % port
        total = 0
        for qos in (1, 2):
            r = bench("--mode", "mqtt", "--url", jurl, "--conns", 4, "--inflight", 8,
                      "--qos", qos, "--count", 800, "--warmup", 0, "--duration", 30)
            t.eq((r.get("errors"), r.get("err_puback_id")), (0, 0),
                 "qos %d against the listener: no errors (%r)" % (qos, r))
            acked = r.get("ok_total", 0)
            t.check(acked >= 800, "qos %d: %d acknowledged by junction" % (qos, acked))
            # Acknowledged means committed: each one is delivered. Up to the window (4 x 8)
            # may have been committed without jn-bench seeing the PUBACK before it stopped.
            lo, hi = total + acked, total + acked + 32
            wait_until(lambda: len(files_in(j.path("out"))) >= lo, 20)
            got = settled(lambda: len(files_in(j.path("out"))))
            t.check(lo <= got <= hi, "qos %d: %d files for %d acknowledged (expected %d..%d)" %
                    (qos, got - total, acked, lo, hi))
            total = got

        r = bench("--mode", "mqtt-idle", "--url", jurl, "--conns", 300, "--duration", 2,
                  "--pid", j.proc.pid)
        t.eq((r.get("up"), r.get("ok"), r.get("errors"), r.get("msg_per_s", 0)),
             (300, 300, 0, None), "mqtt-idle: 300 connections CONNACKed and held")
        t.check((r.get("rss_peak_kb") or 0) > 0, "mqtt-idle: junction's RSS sampled")
        t.check(j.alive(), "junction still running")
    finally:
        if j is not None:
            j.stop()
            j.cleanup()
        mq.cleanup()
    t.finish()


if __name__ == "__main__":
    main()
