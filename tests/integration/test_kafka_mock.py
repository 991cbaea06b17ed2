"""Kafka test helpers (imported by the other test_kafka_* tests and tests/crash/test_crash_kafka.py),
and, run as a test, a check of the helpers themselves: the mock cluster from
tests/tools/kafka_mock.c comes up, kcat produces to it and consumes back exact bytes, keys and
headers, and the mock's down/up commands work.

The mock is a separate process so junction can be killed (kill -9) without taking the cluster
with it. kcat is the second real client: it produces what junction consumes and consumes what
junction produces.
"""
import os
import shutil
import subprocess
import tempfile
import threading

import jnt

MOCK = os.environ.get("JN_KAFKA_MOCK",
                      os.path.join(os.path.dirname(os.path.abspath(jnt.BIN)), "kafka_mock"))
KCAT = shutil.which("kcat") or "kcat"

# Consumer tuning every junction-in-a-group test uses: the mock honours the session timeout,
# so a killed member is noticed after 6 s instead of librdkafka's default 45 s.
GROUP_PROPS = '{ session.timeout.ms: "6000", heartbeat.interval.ms: "500" }'


class KafkaMock:
    """kafka_mock on free 127.0.0.1 ports; topics like "t:3" (3 partitions)."""

    def __init__(self, topics, brokers=1):
        self.proc = subprocess.Popen([MOCK, "--brokers", str(brokers)] + list(topics),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError("kafka_mock did not start (exit %s)" % self.proc.poll())
        self.bootstraps = line
        self.lock = threading.Lock()

    def cmd(self, line):
        """Sends a command (down, up, topic NAME N); returns the mock's answer line."""
        with self.lock:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
            return self.proc.stdout.readline().decode().strip()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def produce_files(bs, topic, payloads, key=None, headers=(), partition=None):
    """Produces each payload (bytes) as one record with kcat, exact bytes (one file each)."""
    d = tempfile.mkdtemp(prefix="jn-kcat-")
    try:
        files = []
        for i, p in enumerate(payloads):
            f = os.path.join(d, "m%06d" % i)
            with open(f, "wb") as fh:
                fh.write(p)
            files.append(f)
        args = [KCAT, "-P", "-b", bs, "-t", topic]
        if key is not None:
            args += ["-k", key]
        if partition is not None:
            args += ["-p", str(partition)]
        for h in headers:
            args += ["-H", h]
        subprocess.run(args + files, check=True, timeout=30, capture_output=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def produce_lines(bs, topic, lines, keyed=False):
    """Produces one record per line (no newline in a line) in one kcat run. keyed: each line
    is "key:value"."""
    args = [KCAT, "-P", "-b", bs, "-t", topic]
    if keyed:
        args += ["-K", ":"]
    data = b"".join(l + b"\n" for l in lines)
    subprocess.run(args, input=data, check=True, timeout=60, capture_output=True)


class LineProducer:
    """A kcat producer fed line by line from the test (for load while something is killed)."""

    def __init__(self, bs, topic):
        self.proc = subprocess.Popen([KCAT, "-P", "-b", bs, "-t", topic, "-X", "linger.ms=5"],
                                     stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def send(self, line):
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


FMT = "K%K:%kS%S:%sH%h P%p O%o\n"


def consume(bs, topic, timeout=20):
    """Every record of topic from the beginning: a list of dicts (key, value, headers,
    partition, offset), in partition then offset order. Exact bytes for key and value."""
    p = subprocess.run([KCAT, "-C", "-b", bs, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-f", FMT], capture_output=True, timeout=timeout)
    out, recs, i = p.stdout, [], 0

    def num(i, stop):
        j = out.index(stop, i)
        return int(out[i:j]), j + len(stop)

    while i < len(out):
        assert out[i:i + 1] == b"K", out[i:i + 40]
        klen, i = num(i + 1, b":")
        key = None
        if klen >= 0:
            key, i = out[i:i + klen], i + klen
        assert out[i:i + 1] == b"S", out[i:i + 40]
        slen, i = num(i + 1, b":")
        val = None
        if slen >= 0:
            val, i = out[i:i + slen], i + slen
        assert out[i:i + 1] == b"H", out[i:i + 40]
        j = out.index(b" P", i)
        hdrs = {}
        for kv in out[i + 1:j].split(b","):
            if kv:
                k, _, v = kv.partition(b"=")
                hdrs[k.decode()] = v
        part, i = num(j + 2, b" O")
        off, i = num(i, b"\n")
        recs.append({"key": key, "value": val, "headers": hdrs, "partition": part,
                     "offset": off})
    return recs


def kafka_in_config(bs, group, topics, extra=""):
    """The YAML of a kafka IN channel block named kin (indented for `channels:`)."""
    return """  kin:
    type: kafka
    direction: in
    brokers: %s
    topics: [%s]
    group: %s
    properties: %s
%s""" % (bs, ", ".join(topics), group, GROUP_PROPS, extra)


if __name__ == "__main__":
    t = jnt.Checks("kafka_mock")
    mock = None
    try:
        mock = KafkaMock(["selftest:2"])
        t.check(mock.bootstraps.startswith("127.0.0.1:"), "bootstraps on 127.0.0.1: %s" %
                mock.bootstraps)
        produce_files(mock.bootstraps, "selftest", [b"a\x00b\nc", b"\xff"], key="k1",
                      headers=["h1=v1"], partition=1)
        recs = consume(mock.bootstraps, "selftest")
        t.eq([(r["key"], r["value"], r["headers"], r["partition"]) for r in recs],
             [(b"k1", b"a\x00b\nc", {"h1": b"v1"}, 1), (b"k1", b"\xff", {"h1": b"v1"}, 1)],
             "kcat round trip through the mock: exact bytes, key, headers")
        produce_lines(mock.bootstraps, "selftest", [b"x:1", b"y:2"], keyed=True)
        t.eq(len(consume(mock.bootstraps, "selftest")), 4, "line producer adds 2")
        t.eq(mock.cmd("down"), "ok", "down answers ok")
        t.eq(mock.cmd("up"), "ok", "up answers ok")
        t.eq(mock.cmd("topic more 3"), "ok", "topic creation answers ok")
        t.check(mock.cmd("bogus").startswith("error"), "an unknown command is an error")
        # produce (the bench's pre-load): 50 records of 100 bytes over the 3 partitions of
        # "more", every one readable back with its size.
        ans = mock.cmd("produce more 50 100")
        t.check(ans.startswith("ok 50 records") and ans.endswith("the topic holds 50"),
                "produce answers with the count the topic holds: %s" % ans)
        recs = consume(mock.bootstraps, "more")
        t.eq((len(recs), sorted({r["partition"] for r in recs}),
              {len(r["value"]) for r in recs}), (50, [0, 1, 2], {100}),
             "50 records of 100 bytes, round robin over partitions 0-2")
        t.check(mock.cmd("produce more 0 100").startswith("error"), "produce of 0 is an error")
        mock.stop()
        t.eq(mock.proc.returncode, 0, "the mock exits 0 when stdin closes")
    finally:
        if mock is not None:
            mock.stop()
    t.finish()
