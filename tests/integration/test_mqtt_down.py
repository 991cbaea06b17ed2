"""The outside MQTT broker is down: junction starts anyway and keeps trying (a warn line), HTTP IN
keeps accepting and the messages for MQTT OUT wait in junction's queue; when mosquitto comes up,
MQTT IN subscribes and MQTT OUT delivers all of them (a persistent mosquitto_sub session gets
exactly the bytes sent). Then the broker goes away while junction is connected and comes back:
the connection is re-established and what was queued in between is delivered too."""
import http.client
import re
import time
import uuid

from jnt import Checks, Junction, free_port, wait_until
from test_mqtt_roundtrip import Mosquitto, files_in

N = 40
t = Checks("mqtt_down")
cleanups = []
pre = "jt%s" % uuid.uuid4().hex[:8]
sub_id = "%s-sub" % pre


def post_all(port, bodies):
    """POSTs each body (bytes, binary) to junction's HTTP IN; returns how many got 202."""
    ok = 0
    for b in bodies:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/ingest", body=b,
                     headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        ok += resp.status == 202
        conn.close()
    return ok


try:
    mq = Mosquitto(persistence=True)
    cleanups.append(mq.cleanup)
    t.on_fail.append(lambda: print("---- mosquitto log ----\n%s" % mq.log()))
    # A subscriber session that outlives its client and mosquitto's restarts: it collects
    # what junction publishes while nobody is connected.
    mq.start()
    s0 = mq.sub("%s/out/#" % pre, qos=1, client_id=sub_id, clean=False, wait=1)
    s0.proc.wait(10)
    s0.stop()
    mq.stop()

    http_port = free_port()
    j = Junction("""
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 3s
channels:
  h-in:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
    path: /ingest
  m-out:
    type: mqtt
    direction: out
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-out
    topic: "%(pre)s/out/{id}"
    qos: 1
    concurrency: 8
    reconnect_backoff: 100ms
    reconnect_max_backoff: 500ms
    retry: { attempts: 1000, backoff: 50ms, max_backoff: 300ms }
  m-in:
    type: mqtt
    direction: in
    url: tcp://127.0.0.1:%(mport)d
    client_id: %(pre)s-in
    topics: [%(pre)s/in/#]
    reconnect_backoff: 100ms
    reconnect_max_backoff: 500ms
  files:
    type: file
    direction: out
    dir: @DIR@/out
routes:
  to-mqtt: { from: [h-in], to: [m-out] }
  from-mqtt: { from: [m-in], to: [files] }
""" % {"hport": http_port, "mport": mq.port, "pre": pre}, wait_ports=[http_port])
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log ----\n%s" % j.log()))
    j.start()
    t.check(wait_until(lambda: "[mqtt.m-out] cannot reach tcp://127.0.0.1:%d" % mq.port
                       in j.log(), 10), "OUT: a warn line says the broker cannot be reached")
    t.check(wait_until(lambda: "[mqtt.m-in] cannot reach" in j.log(), 10),
            "IN: a warn line says the broker cannot be reached")
    t.eq(len(re.findall(r"\[warn\] \[mqtt\.m-out\] cannot reach", j.log())), 1,
         "the first failure is a warn line, the next ones debug")

    bodies = [b"down-%d;" % i + bytes([i, 0, 255, 10]) for i in range(N)]
    t.eq(post_all(http_port, bodies), N,
         "HTTP IN accepts all %d messages while the broker is down" % N)
    t.check(wait_until(lambda: "not connected to tcp://" in j.log(), 5),
            "OUT: sends are retried with 'not connected'")
    t.check("dead-lettered" not in j.log(), "nothing is dead-lettered while the broker is down")

    mq.start()
    t.check(wait_until(lambda: "[mqtt.m-out] connected to" in j.log(), 10), "OUT reconnects")
    t.check(wait_until(lambda: "[mqtt.m-in] subscribed to 1 topic filter(s)" in j.log(), 10),
            "IN connects and subscribes")
    t.check(wait_until(lambda: j.log().count("[mqtt.m-out] msg=") and
                       len(re.findall(r"\[mqtt\.m-out\] msg=\S+ delivered", j.log())) >= N, 20),
            "OUT delivers all %d queued messages" % N)
    # No -C: mosquitto_sub stopping at a count would leave the rest of the broker's in-flight
    # window unacknowledged, and the broker would send those again to the next connection.
    sub = mq.sub("%s/out/#" % pre, qos=1, client_id=sub_id, clean=False)
    cleanups.append(sub.stop)
    t.check(wait_until(lambda: len(sub.messages()) >= N, 15),
            "the persistent subscriber gets %d messages (got %d)" % (N, len(sub.messages())))
    got = sorted(m[3] for m in sub.messages())
    t.eq(got, sorted(bodies), "exactly the bytes that were posted, each once")
    t.check(all(m[1] == 1 for m in sub.messages()), "all at QoS 1")
    sub.stop()

    t.eq(mq.pub("%s/in/x" % pre, b"after the broker came up", 1), 0, "mosquitto_pub to IN")
    t.check(wait_until(lambda: len(files_in(j.path("out"))) >= 1, 10), "IN -> file OUT works")

    # ---- the broker goes away while junction is connected ----
    mq.stop()
    t.check(wait_until(lambda: "[mqtt.m-out] connection to" in j.log() and "lost" in j.log(),
                       10), "OUT notices the lost connection")
    more = [b"second-%d" % i for i in range(10)]
    t.eq(post_all(http_port, more), 10, "HTTP IN accepts 10 more while the broker is away")
    time.sleep(0.5)
    mq.start()
    sub2 = mq.sub("%s/out/#" % pre, qos=1, client_id=sub_id, clean=False)
    cleanups.append(sub2.stop)
    t.check(wait_until(lambda: len(sub2.messages()) >= 10, 20),
            "after the broker is back the 10 are delivered (got %d)" % len(sub2.messages()))
    t.eq(sorted(m[3] for m in sub2.messages()), sorted(more), "the exact bytes of the 10")
    t.eq(mq.pub("%s/in/y" % pre, b"after the second restart", 1), 0, "mosquitto_pub to IN again")
    t.check(wait_until(lambda: len(files_in(j.path("out"))) >= 2, 10),
            "IN resubscribed or kept its session: the message arrives")
    t.check("dead-lettered" not in j.log(), "nothing dead-lettered")
    t.eq(j.stop(), 0, "SIGTERM: junction exits 0")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:
            print("cleanup: %r" % e)
t.finish()
