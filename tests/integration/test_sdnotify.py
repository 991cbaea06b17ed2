"""systemd's notify protocol (issue 21, part 3): a Python AF_UNIX datagram socket stands in for
systemd as NOTIFY_SOCKET. READY=1 comes only once the HTTP IN port takes connections, STATUS=
lines follow the counts, WATCHDOG=1 comes at half of WATCHDOG_USEC (and not when WATCHDOG_PID
names another process), STOPPING=1 on SIGTERM; an abstract socket name (@...) works too."""
import os
import signal
import socket
import time

from jnt import Checks, Junction, curl, free_port, port_open, wait_until

t = Checks("sdnotify")

CONFIG = """
junction:
  data_dir: @DIR@/data
  admin: off
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:%d" }
  out: { type: file, direction: out, dir: "@DIR@/out" }
routes:
  r: { from: [in], to: [out] }
"""


class Manager:
    """The service manager's end: collects datagrams, noting whether the port was open."""

    def __init__(self, addr, port):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.sock.settimeout(0.05)
        self.port = port
        self.msgs = []  # (time, text, port open when it arrived)

    def poll(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.msgs.append((time.monotonic(), data.decode(), port_open(self.port)))

    def has(self, key):
        self.poll()
        return [m for m in self.msgs if key in m[1].split("\n")]

    def with_prefix(self, prefix):
        self.poll()
        return [line for m in self.msgs for line in m[1].split("\n") if line.startswith(prefix)]

    def close(self):
        self.sock.close()


def run(name, addr, env):
    port = free_port()
    mgr = Manager(addr, port)
    env = dict(env, NOTIFY_SOCKET=addr if addr[0] != "\0" else "@" + addr[1:])
    j = Junction(CONFIG % port, env=env)
    t.on_fail.append(lambda: print("---- junction log (%s) ----\n%s" % (name, j.log())))
    try:
        j.start()
        # The manager must be listening before junction starts: poll without waiting on a port.
        t.check(wait_until(lambda: mgr.has("READY=1"), 10), "%s: READY=1 arrives" % name)
        ready = mgr.has("READY=1")
        t.eq(len(ready), 1, "%s: READY=1 is sent once" % name)
        t.check(ready and ready[0][2], "%s: the HTTP IN port accepts connections when READY=1 "
                "arrives" % name)
        t.check(ready and "STATUS=ready; 2/2 channels up; 0 received; 0 queued; 0 dead-lettered"
                in ready[0][1].split("\n"), "%s: READY=1 carries the first STATUS=: %r"
                % (name, ready[0][1] if ready else None))
        st, _, _ = curl(["--data-binary", "x", "http://127.0.0.1:%d/ingest" % port])
        t.eq(st, 202, "%s: a message is taken" % name)
        t.check(wait_until(lambda: any("1 received" in s for s in mgr.with_prefix("STATUS=")), 6),
                "%s: a later STATUS= counts it: %r" % (name, mgr.with_prefix("STATUS=")))
        return j, mgr
    except Exception:
        j.cleanup()
        mgr.close()
        raise


tmp = "/tmp/jn-sdn-%d" % os.getpid()
os.makedirs(tmp, exist_ok=True)

# ---- a socket path, with the watchdog ----
path = os.path.join(tmp, "notify.sock")
j, mgr = run("path", path, {"WATCHDOG_USEC": "200000"})
try:
    t.check(wait_until(lambda: mgr.has("WATCHDOG=1"), 3), "watchdog pings arrive")
    # Counted over 2 s of steady polling (arrival times alone jitter with the test's own work).
    before = len(mgr.has("WATCHDOG=1"))
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        mgr.poll()
    n = len(mgr.has("WATCHDOG=1")) - before
    t.check(15 <= n <= 25, "WATCHDOG=1 every ~100 ms (half of 200 ms): %d in 2 s" % n)
    j.proc.send_signal(signal.SIGTERM)
    t.check(wait_until(lambda: mgr.has("STOPPING=1"), 5), "SIGTERM sends STOPPING=1")
    stopping = mgr.has("STOPPING=1")
    t.check(stopping and any(l.startswith("STATUS=stopping") for l in stopping[0][1].split("\n")),
            "with a STATUS=stopping line: %r" % (stopping[0][1] if stopping else None))
    t.eq(j.stop(), 0, "it still exits cleanly")
finally:
    j.cleanup()
    mgr.close()

# ---- an abstract name; WATCHDOG_PID names another process: no watchdog ----
abstract = "\0jn-sdn-%d" % os.getpid()
j, mgr = run("abstract", abstract, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
try:
    time.sleep(0.5)
    t.eq(mgr.has("WATCHDOG=1"), [], "no WATCHDOG=1 when WATCHDOG_PID is another process")
    t.eq(j.stop(), 0, "SIGTERM stops it")
    t.check(mgr.has("STOPPING=1"), "STOPPING=1 on the abstract socket too")
finally:
    j.cleanup()
    mgr.close()

# ---- the HTTP IN port is taken: the broker exits without ever saying READY=1 ----
busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen(1)
bport = busy.getsockname()[1]
path2 = os.path.join(tmp, "notify2.sock")
mgr = Manager(path2, bport)
j = Junction(CONFIG % bport, env={"NOTIFY_SOCKET": path2})
try:
    j.start()
    t.eq(j.proc.wait(10), 1, "a channel that cannot start: exit 1")
    mgr.poll()
    t.eq([m[1] for m in mgr.msgs], [], "and no READY=1 (nothing at all) was sent")
finally:
    j.cleanup()
    mgr.close()
    busy.close()

# ---- a relative NOTIFY_SOCKET: refused with a log line, the broker runs as usual ----
port = free_port()
j = Junction(CONFIG % port, wait_ports=[port], env={"NOTIFY_SOCKET": "relative.sock"})
try:
    j.start()
    t.check(wait_until(lambda: "NOTIFY_SOCKET 'relative.sock' is not an absolute path" in j.log(),
                       5), "a bad NOTIFY_SOCKET is said in the log")
    t.eq(j.stop(), 0, "and the broker runs and stops as usual")
finally:
    j.cleanup()

for f in os.listdir(tmp):
    os.unlink(os.path.join(tmp, f))
os.rmdir(tmp)
t.finish()
