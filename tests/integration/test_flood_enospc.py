"""A whole-broker flood onto a small tmpfs data dir that runs out of space (issue 20).

The data dir is a 64 MiB tmpfs of the test's own, 16 MiB of it taken by a ballast file; the
journal's map (1 GiB) is larger than the disk and min_free_disk is off, so the disk fills for
real (ENOSPC) while the destination is down. 16 senders flood HTTP IN with 8 KiB messages, each
with an id of its own:
1. every request is answered: 202, or 503 with Retry-After once the disk is full; never a
   dropped connection or another status; junction stays up and its admin API answers;
2. deleting the ballast frees space: intake resumes by itself within 10 s, with the
   destination still down;
3. kill -9 on the full disk, a restart on it, then the destination comes up: every
   acknowledged id arrives (at-least-once: a duplicate is allowed, a loss is not).

Mounting needs root (CAP_SYS_ADMIN): without it the test says so and passes as skipped."""
import http.client
import os
import signal
import subprocess
import threading
import time
import traceback

from jnt import Checks, Junction, Receiver, admin_api, free_port, wait_until

SIZE = 8192
SENDERS = 16

t = Checks("flood_enospc")
port, admin, rport = free_port(), free_port(), free_port()
j = Junction("""
junction:
  data_dir: @DIR@/mnt/data
  admin: 127.0.0.1:%d
  max_size: 1GiB
  min_free_disk: 0
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%d/sink
    retry: { attempts: 100000, backoff: 50ms, max_backoff: 200ms }
routes:
  r:
    from: [in]
    to: [out]
""" % (admin, port, rport), wait_ports=[port])
mnt = j.path("mnt")
os.makedirs(mnt)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt],
                  capture_output=True).returncode != 0:
    print("flood_enospc: skipped, cannot mount a tmpfs here (needs root)")
    j.cleanup()
    t.finish()
t.on_fail.append(lambda: print(j.log()[-6000:]))


def body(tag):
    head = tag.encode() + b";"
    return head + b"z" * (SIZE - len(head))


class Sender(threading.Thread):
    """Posts until told to stop; keeps the acked ids and every answer."""

    def __init__(self, n, stop):
        super().__init__(daemon=True)
        self.n, self.stop = n, stop
        self.acked, self.codes, self.no_retry_after, self.errors = [], {}, 0, []
        self.last_refused = 0.0

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        seq = 0
        while not self.stop.is_set():
            tag = "s%02d-%06d" % (self.n, seq)
            seq += 1
            try:
                conn.request("POST", "/ingest", body=body(tag))
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                continue
            self.codes[r.status] = self.codes.get(r.status, 0) + 1
            if r.status == 202:
                self.acked.append(tag)
            elif r.status == 503:
                self.last_refused = time.time()
                if r.getheader("Retry-After") is None:
                    self.no_retry_after += 1
                time.sleep(0.02)  # a polite sender would wait Retry-After; a flood barely does
        conn.close()


def post_one(tag):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/ingest", body=body(tag))
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return -1
    finally:
        conn.close()


rec = None
try:
    with open(os.path.join(mnt, "ballast"), "wb") as f:
        f.write(b"\0" * (16 << 20))
    j.start()

    # 1. The flood, until every sender has been refused for a while.
    stop = threading.Event()
    senders = [Sender(i, stop) for i in range(SENDERS)]
    for s in senders:
        s.start()
    full = wait_until(lambda: all(s.last_refused for s in senders), 120, 0.1)
    t.check(full, "the disk fills: every sender is refused (503) within 120 s")
    vfs = os.statvfs(mnt)
    dsize = os.path.getsize(os.path.join(mnt, "data", "data.mdb")) \
        if os.path.exists(os.path.join(mnt, "data", "data.mdb")) else -1
    print("full: %.1f MiB free on the tmpfs, data.mdb %.1f MiB" %
          (vfs.f_bavail * vfs.f_frsize / 2**20, dsize / 2**20))
    admin_ok = []
    for _ in range(5):
        code, st = admin_api(admin, "GET", "/api/v1/status")
        admin_ok.append(code == 200 and isinstance(st, dict))
        time.sleep(0.3)
    stop.set()
    for s in senders:
        s.join(30)
    acked = [a for s in senders for a in s.acked]
    codes = {}
    for s in senders:
        for c, n in s.codes.items():
            codes[c] = codes.get(c, 0) + n
    print("flood: answers %r, %d acked (%.1f MiB)" % (codes, len(acked), len(acked) * SIZE / 2**20))
    t.check(len(acked) > 1000, "most of the free space took messages first: %d acked" % len(acked))
    t.eq(sorted(codes), [202, 503], "every request was answered 202 or 503")
    t.eq(sum(s.no_retry_after for s in senders), 0, "every 503 carries Retry-After")
    t.eq([e for s in senders for e in s.errors], [], "no connection was dropped or timed out")
    t.check(all(admin_ok), "the admin API answers while the disk is full: %r" % admin_ok)
    t.check(j.alive(), "junction is up on the full disk")
    t.check("No space left" in j.log() or "is full" in j.log(), "the log names the full disk")
    t.check(post_one("probe-full") == 503, "a new message is still refused while full")

    # 2. Space is freed: intake resumes by itself within 10 s (destination still down).
    os.unlink(os.path.join(mnt, "ballast"))
    t0 = time.time()
    resumed = []

    def try_post():
        tag = "after-%03d" % len(resumed)
        code = post_one(tag)
        if code == 202:
            resumed.append(tag)
        return code == 202

    t.check(wait_until(try_post, 10, 0.2),
            "intake resumes within 10 s of the space being freed (%.1f s)" % (time.time() - t0))
    print("intake resumed %.2f s after the ballast was deleted" % (time.time() - t0))
    for i in range(20):
        if post_one("more-%03d" % i) == 202:
            resumed.append("more-%03d" % i)
    t.check(len(resumed) >= 10, "messages are taken again after the space came back: %d" %
            len(resumed))
    acked += resumed

    # Fill it again, then kill -9 on the full disk.
    stop = threading.Event()
    senders = [Sender(i + 50, stop) for i in range(4)]
    for s in senders:
        s.start()
    t.check(wait_until(lambda: all(s.last_refused for s in senders), 120, 0.1),
            "the disk fills again")
    stop.set()
    for s in senders:
        s.join(30)
    acked += [a for s in senders for a in s.acked]
    j.stop(signal.SIGKILL)

    # 3. Restart on the full disk, then the destination comes up: every acked id arrives.
    j.start()
    rec = Receiver(port=rport).start()
    want = set(acked)

    def arrived():
        return {b.split(b";", 1)[0].decode() for b in rec.bodies()}

    t.check(wait_until(lambda: want <= arrived(), 180, 0.5),
            "every acknowledged message is delivered after the restart")
    got = arrived()
    lost = sorted(want - got)
    t.eq(lost[:10], [], "nothing acknowledged is lost (%d of %d missing)" % (len(lost), len(want)))
    print("delivered %d requests for %d acked ids (%d duplicates)" %
          (rec.count(), len(want), rec.count() - len(got)))
    t.check(post_one("after-restart") == 202, "intake works after the drain")
    t.eq(j.stop(), 0, "junction stops cleanly")
except Exception:
    t.check(False, "exception:\n" + traceback.format_exc())
finally:
    if rec is not None:
        rec.stop()
    if j.alive():
        j.stop(signal.SIGKILL)
    subprocess.run(["umount", mnt], capture_output=True)
    j.cleanup()
t.finish()
