"""jn-bench's WebSocket mode (tools/bench/jn-bench.c --mode ws) against junction's WebSocket IN
-> file OUT: `wait` sees the upgrade answered; every frame jn-bench counted as acknowledged is
a file (junction's {"ack"} comes after the commit), with the payload jn-bench sent unmasked; a
--size past 125 and past 65535 bytes uses the longer length forms; a path the listener does
not serve is a connect error, not a success."""
import os

from jnt import Checks, Junction, bench, free_port, wait_until

t = Checks("ws_bench")


def msgs(out):
    """The delivered files (file OUT writes .NAME.tmp first and renames it when complete)."""
    return [f for f in os.listdir(out) if not f.startswith(".")] if os.path.isdir(out) else []


port = free_port()
j = Junction("""
junction:
  data_dir: @DIR@/data
  admin: "off"
channels:
  in: { type: websocket, direction: in, listen: "127.0.0.1:%d", path: /ws, max_message: 1MiB }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
""" % port, wait_ports=[port])
try:
    j.start()
    out = j.path("out")
    url = "ws://127.0.0.1:%d/ws" % port
    r = bench("--mode", "wait", "--url", url, "--duration", 10)
    t.eq(r.get("attempts", 0) >= 1 and r.get("accepting_ms") is not None, True,
         "wait: the upgrade is answered (%r)" % r)
    t.eq(len(msgs(out)), 0, "wait sends no message")

    total = 0
    for size, n in ((1024, 400), (100, 50), (70000, 20)):
        r = bench("--mode", "ws", "--url", url, "--conns", 4, "--size", size, "--count", n,
                  "--warmup", 0, "--duration", 30)
        t.check(r.get("ok", 0) >= n, "size %d: %d acknowledged of %d (%r)" %
                (size, r.get("ok", 0), n, r))
        t.eq(r.get("errors"), 0, "size %d: no errors" % size)
        total += r.get("ok", 0)
        # Acked after the commit: each one is in the journal; the file follows.
        t.check(wait_until(lambda: len(msgs(out)) >= total, 20),
                "size %d: every acknowledged frame is a file (%d of %d)" %
                (size, len(msgs(out)), total))
        sizes = set(os.path.getsize(os.path.join(out, f)) for f in msgs(out))
        t.check(size in sizes, "size %d: a file of that many bytes (%r)" % (size, sizes))
    with open(os.path.join(out, sorted(msgs(out))[0]), "rb") as f:
        body = f.read()
    t.check(body and set(body) == {ord("x")}, "the payload arrives unmasked")

    r = bench("--mode", "ws", "--url", "ws://127.0.0.1:%d/other" % port, "--conns", 1,
              "--warmup", 0, "--duration", 1, "--timeout", 2)
    t.eq((r.get("ok"), r.get("errors", 0) > 0), (0, True),
         "another path: refused, counted as errors (%r)" % r)
    t.eq(j.stop(), 0, "junction exits 0")
finally:
    j.cleanup()
t.finish()
