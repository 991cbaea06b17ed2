"""The README's example config, taken from README.md as written, delivers the README's own curl
to both destinations (issue 12, item 2: its curl used to send a form content type that the route
refuses, and the message became a silent unrouted dead letter)."""
import json
import os
import re
import shlex

from jnt import Checks, Junction, Receiver, SRC, free_port, wait_until
import subprocess

t = Checks("readme")
with open(os.path.join(SRC, "README.md")) as f:
    readme = f.read()
m = re.search(r"## A config\s+```yaml\n(.*?)```", readme, re.S)
t.check(m is not None, "README has an example config")
config = m.group(1) if m else ""
after = readme[m.end():] if m else ""
c = re.search(r"```sh\n(curl [^\n]*)\n```", after)
t.check(c is not None, "README gives a curl for the example config")
cmd = c.group(1) if c else "curl"

port = free_port()
rec = Receiver().start()
t.check("127.0.0.1:8080" in config and "127.0.0.1:9000" in config, "the config's addresses")
config = config.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
config = config.replace("127.0.0.1:9000", "127.0.0.1:%d" % rec.port)
j = Junction(config, wait_ports=[port])
t.on_fail.append(lambda: print("---- junction log ----\n" + j.log()))
try:
    j.start()
    # The README's curl word for word, but for the port, run from the source folder.
    argv = shlex.split(cmd.replace("127.0.0.1:8080", "127.0.0.1:%d" % port))
    p = subprocess.run(argv[:1] + ["-s", "-o", "/dev/null", "-w", "%{http_code}"] + argv[1:],
                       cwd=SRC, capture_output=True, timeout=20)
    t.eq(p.stdout.decode(), "202", "the README's curl is accepted")
    t.check(wait_until(lambda: rec.count() == 1, 10), "erp receives the order")
    if rec.count():
        body = json.loads(rec.bodies()[0])
        t.eq(body.get("customer_name"), "Ann Example", "the tidy service renamed the field")
    arch = j.path("out", "archive")
    t.check(wait_until(lambda: os.path.isdir(arch) and len(os.listdir(arch)) == 1, 10),
            "archive holds one file (under the config file's folder)")
    t.check("dead-lettered" not in j.log() and "matched no route" not in j.log(),
            "nothing dead-lettered or unrouted")
    t.eq(j.stop(), 0, "exit 0")
finally:
    j.cleanup()
    rec.stop()
t.finish()
