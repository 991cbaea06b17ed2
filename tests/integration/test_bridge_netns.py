"""The bridge across a network namespace (issue 19's netns variant, docs/bridge.md#tests): the
edge runs in a network namespace of its own whose one link is a veth pair to the host (a /30);
the hub listens on the host's end of it. This machine has no iptables or nft, so "can only reach
the hub's port" is made by addressing and checked, not by a firewall: from inside the namespace
the hub's bridge port answers, while the hub's admin port and its receiver (both bound to the
host's 127.0.0.1, also when dialled on the host's veth address) and the host's loopback do not.

  flow     200 messages posted to the edge (its HTTP IN on the namespace's address) all reach
           the hub's receiver, none twice; the hub's per-edge row shows the edge up, received 200
  outage   the veth taken down on the host's side for at least 6 s while 200 more arrive at the
           edge (posted from inside the namespace; it keeps acknowledging them into its
           journal), the edge sees its link down (pings unanswered), then up again: all 400 at
           the receiver, none twice; the link was lost and remade (the edge's link.lost grew)

Needs root and `ip netns` (CAP_SYS_ADMIN, CAP_NET_ADMIN). Where either is missing the test
prints SKIP with the reason and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
"""
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jnt  # noqa: E402
import test_bridge  # noqa: E402
from jnt import Checks, Junction, Receiver, admin_api, free_port, wait_until  # noqa: E402

# test_bridge's hub (bearer auth, HTTP OUT to a Receiver), listening on the host's veth end.
HUB = test_bridge.HUB.replace("listen: 127.0.0.1:%(bport)d", "listen: %(hip)s:%(bport)d")

EDGE = """
junction:
  data_dir: @DIR@/data
  admin: 127.0.0.1:%(aport)d
  shutdown_timeout: 1s
channels:
  web:
    type: http
    direction: in
    listen: %(eip)s:%(hport)d
  up:
    type: bridge
    direction: out
    url: ws://%(hip)s:%(bport)d/bridge
    token: "%(token)s"
    node: netns-edge
    ping_interval: 1s
    timeout: 5s
    reconnect_backoff: 50ms
    reconnect_max_backoff: 500ms
    retry: { attempts: 100000, backoff: 50ms, max_backoff: 500ms }
routes:
  to-hub: { from: [web], to: [up] }
"""


def sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True)


def skip(why):
    print("SKIP: test_bridge_netns: %s" % why, flush=True)
    sys.exit(77)


def tcp_ok(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.3):
            return True
    except OSError:
        return False


class NetNs:
    """A network namespace joined to the host by one veth pair (a /30)."""

    def __init__(self):
        tag = "%d" % (os.getpid() % 100000)
        self.name = "jnws" + tag
        self.hdev, self.edev = "jnh" + tag, "jne" + tag
        net = random.randrange(1, 250)
        self.hip, self.eip = "10.213.%d.1" % net, "10.213.%d.2" % net
        self.made = False

    def setup(self):
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.hdev, "type", "veth", "peer", "name", self.edev],
            ["ip", "link", "set", self.edev, "netns", self.name],
            ["ip", "addr", "add", self.hip + "/30", "dev", self.hdev],
            ["ip", "link", "set", self.hdev, "up"],
            ["ip", "netns", "exec", self.name, "ip", "addr", "add", self.eip + "/30", "dev",
             self.edev],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", self.edev, "up"],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
        ]
        for i, st in enumerate(steps):
            r = sh(*st)
            if i == 0 and r.returncode == 0:
                self.made = True
            if r.returncode != 0:
                return "%s: %s" % (" ".join(st), (r.stderr or r.stdout).strip())
        return None

    def reach(self, ip, port):
        """True when a TCP connect from inside the namespace to ip:port succeeds."""
        code = ("import socket,sys\ntry:\n socket.create_connection((%r,%d),timeout=1).close()\n"
                "except OSError:\n sys.exit(1)\n" % (ip, port))
        return sh("ip", "netns", "exec", self.name, sys.executable, "-c", code).returncode == 0

    def link(self, up):
        return sh("ip", "link", "set", self.hdev, "up" if up else "down").returncode == 0

    def cleanup(self):
        sh("ip", "link", "del", self.hdev)
        if self.made:
            sh("ip", "netns", "del", self.name)


class NsJunction(Junction):
    """A junction run inside the namespace (ip netns exec execs it: the pid is junction's)."""

    def __init__(self, ns, config, wait=()):
        Junction.__init__(self, config)
        self.ns, self.wait = ns, wait

    def start(self, timeout=10.0):
        self.log_f = open(self.logpath, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, jnt.BIN] +
                                     jnt.root_args(["run", "-c", self.cfg]), cwd=self.dir,
                                     stdout=self.log_f, stderr=subprocess.STDOUT, env=self.env)
        for ip, port in self.wait:
            if not wait_until(lambda: tcp_ok(ip, port) or self.proc.poll() is not None,
                              timeout):
                raise RuntimeError("edge did not open %s:%d" % (ip, port))
            if self.proc.poll() is not None:
                raise RuntimeError("edge exited:\n%s" % self.log())
        return self


def post(ip, port, ns, acked, deadline):
    """Posts body n for each n in ns to the edge, retrying each until 202 or the deadline."""
    conn = None
    for n in ns:
        while n not in acked and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(ip, port, timeout=5)
                conn.request("POST", "/ingest", body=b"netns-%06d" % n,
                             headers={"Content-Type": "text/plain"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 202:
                    acked[n] = json.loads(data)["id"]
                    break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.05)
    if conn is not None:
        conn.close()


def edge_row(aport, node):
    code, j = admin_api(aport, "GET", "/api/v1/channels")
    for c in j.get("channels", []):
        if c["name"] == "edges":
            for e in (c.get("link") or {}).get("edges") or []:
                if e.get("node") == node:
                    return e
    return {}


def edge_link_ns(ns, aport):
    """The edge's link object, read from inside the namespace (its admin is on the namespace's
    own 127.0.0.1)."""
    res = sh("ip", "netns", "exec", ns.name, "curl", "-s", "--max-time", "5",
             "http://127.0.0.1:%d/api/v1/channels" % aport)
    try:
        for c in json.loads(res.stdout).get("channels", []):
            if c["name"] == "up":
                return c.get("link") or {}
    except ValueError:
        pass
    return {}


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--post":
        acked = {}
        post(sys.argv[2], int(sys.argv[3]), range(int(sys.argv[4]), int(sys.argv[5])), acked,
             time.monotonic() + 60)
        print(json.dumps(acked))
        return
    if os.geteuid() != 0:
        skip("needs root for ip netns (running as uid %d)" % os.geteuid())
    if shutil.which("ip") is None:
        skip("no ip command (iproute2)")
    ns = NetNs()
    why = ns.setup()
    if why is not None:
        ns.cleanup()
        skip("cannot make a network namespace with a veth pair here: %s" % why)
    t = Checks("test_bridge_netns")
    r = Receiver().start()
    hub = edge = None
    try:
        bport, haport = free_port(), free_port()
        eaport, hport = free_port(), free_port()
        hub = Junction(HUB % {"aport": haport, "hip": ns.hip, "bport": bport, "rport": r.port,
                              "token": test_bridge.TOKEN}, wait_ports=[haport])
        hub.start()
        t.check(wait_until(lambda: tcp_ok(ns.hip, bport), 10), "the hub listens on the veth")
        edge = NsJunction(ns, EDGE % {"aport": eaport, "eip": ns.eip, "hport": hport,
                                      "hip": ns.hip, "bport": bport,
                                      "token": test_bridge.TOKEN},
                          wait=[(ns.eip, hport)])
        edge.start()
        t.on_fail.append(lambda: print("---- edge ----\n%s\n---- hub ----\n%s"
                                       % (edge.log()[-4000:], hub.log()[-4000:])))

        # What the namespace can reach: the hub's bridge port, and nothing else of the host's.
        t.check(ns.reach(ns.hip, bport), "netns: the hub's bridge port is reachable")
        t.check(not ns.reach(ns.hip, haport), "netns: the hub's admin port is not")
        t.check(not ns.reach(ns.hip, r.port), "netns: the hub's receiver is not")
        t.check(not ns.reach("127.0.0.1", r.port), "netns: the host's loopback is not")

        # flow
        acked = {}
        post(ns.eip, hport, range(200), acked, time.monotonic() + 60)
        t.eq(len(acked), 200, "flow: 200 acknowledged by the edge")
        t.check(wait_until(lambda: r.count() >= 200, 30), "flow: 200 at the receiver (%d)"
                % r.count())
        t.check(wait_until(lambda: edge_row(haport, "netns-edge").get("received") == 200, 10),
                "flow: the hub's row of the edge: received 200: %r"
                % edge_row(haport, "netns-edge"))
        t.eq(edge_row(haport, "netns-edge").get("up"), True, "flow: the edge's row is up")
        lost0 = edge_link_ns(ns, eaport).get("lost", -1)

        # outage
        t.check(ns.link(False), "outage: the veth down on the host's side")
        t0 = time.monotonic()
        # The host cannot reach the edge's HTTP IN while the link is down: post from inside
        # the namespace (this file run there with --post), where its address is still local.
        res = sh("ip", "netns", "exec", ns.name, sys.executable, os.path.abspath(__file__),
                 "--post", ns.eip, str(hport), "200", "400")
        try:
            acked.update({int(k): v for k, v in json.loads(res.stdout or "{}").items()})
        except ValueError:
            print(res.stdout, res.stderr)
        t.check(wait_until(lambda: edge_link_ns(ns, eaport).get("up") is False, 10),
                "outage: the edge sees its link down (its pings go unanswered)")
        while time.monotonic() - t0 < 6:
            time.sleep(0.2)
        t.eq(len(acked), 400, "outage: 400 acknowledged by the edge")
        t.check(ns.link(True), "outage: the veth up again")
        t.check(wait_until(lambda: r.count() >= 400, 60), "outage: 400 at the receiver (%d)"
                % r.count())
        bodies = r.bodies()
        got = set(bodies)
        t.eq(len([n for n in range(400) if b"netns-%06d" % n not in got]), 0,
             "outage: none lost")
        t.eq(len(bodies), len(got), "outage: none twice at the receiver")
        t.check(edge_link_ns(ns, eaport).get("lost", -1) > lost0,
                "outage: the edge's link was lost and remade (link.lost %r -> %r)"
                % (lost0, edge_link_ns(ns, eaport).get("lost")))
        t.check(wait_until(lambda: edge_row(haport, "netns-edge").get("up") is True, 10),
                "outage: the edge's row is up again")
        t.eq(edge.stop(), 0, "the edge exits 0")
        t.eq(hub.stop(), 0, "the hub exits 0")
    finally:
        for j in (edge, hub):
            if j is not None:
                j.cleanup()
        r.stop()
        ns.cleanup()
    t.finish()


if __name__ == "__main__":
    main()
