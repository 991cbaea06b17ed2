"""Journal faults: a record that cannot be decoded is reported with where it is and left in
place while the rest is delivered; a journal of a newer format is refused at start; a real full
disk (a small tmpfs) refuses new input with 503 and intake resumes once queued messages leave."""
import json
import os
import shutil
import subprocess
import tempfile

import lmdb  # python3-lmdb: a second, independent LMDB client to plant faults

from jnt import Checks, Junction, Receiver, curl, free_port, run_junction, wait_until

t = Checks("journal_faults")
tmp = tempfile.mkdtemp(prefix="jn-faults-")
port, rport = free_port(), free_port()
CONFIG = """
junction:
  data_dir: %(data)s
  max_size: %(size)s
  # The full-disk case below fills a 3 MiB tmpfs for real (ENOSPC): min_free_disk's earlier
  # refusal (tests/integration/test_flow_control.py) is off here.
  min_free_disk: 0
channels:
  in: { type: http, direction: in, listen: 127.0.0.1:%(port)d }
  out:
    type: http
    direction: out
    url: http://127.0.0.1:%(rport)d/sink
    retry: { attempts: 1000, backoff: 20ms, max_backoff: 100ms }
routes:
  r: { from: [in], to: [out] }
"""


def config(data, size="64MiB"):
    return CONFIG % {"data": data, "size": size, "port": port, "rport": rport}


procs = []
mounted = None
try:
    # ---- 1. an undecodable queue record: reported, left in place, the rest delivered ----
    data = os.path.join(tmp, "d1")
    j = Junction(config(data), wait_ports=[port])
    procs.append(j)
    j.start()
    for i in range(2):
        st, _, _ = curl(["--data-binary", "good-%d" % i, "http://127.0.0.1:%d/ingest" % port])
        t.eq(st, 202, "good-%d accepted (receiver down)" % i)
    t.eq(j.stop(), 0, "stop with 2 queued")
    env = lmdb.open(data, max_dbs=16, map_size=64 << 20)
    q = env.open_db(b"queue")
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        # An undecodable record under a sequence number the journal gave out (the highest one
        # no queue record uses), and one under a number it never gave out.
        issued = int.from_bytes(txn.get(b"seq", db=meta), "big")
        bad = next(s for s in range(issued - 1, 0, -1)
                   if txn.get(b"out\x00" + s.to_bytes(8, "big"), db=q) is None)
        txn.put(b"out\x00" + bad.to_bytes(8, "big"), b"\xc1garbage", db=q)
        txn.put(b"out\x00" + (2 ** 62).to_bytes(8, "big"), b"\xc1garbage", db=q)
    env.close()
    rec = Receiver(port=rport).start()
    j2 = Junction(config(data), wait_ports=[port])
    procs.append(j2)
    t.on_fail.append(lambda: print("---- log ----\n" + j2.log()))
    j2.start()
    t.check(wait_until(lambda: rec.count() >= 2, 10), "the 2 good messages are delivered")
    t.eq(sorted(rec.bodies()), [b"good-0", b"good-1"], "exact bodies")
    t.check("queue entry out/%d cannot be decoded" % bad in j2.log(),
            "the undecodable record is reported with its key")
    t.check("queue entry out/4611686018427387904 has a sequence number this journal never "
            "issued; left in place" in j2.log(), "the foreign key is reported with its key")
    t.eq(j2.stop(), 0, "stop 2")
    env = lmdb.open(data, max_dbs=16, map_size=64 << 20, readonly=True)
    with env.begin(db=env.open_db(b"queue", create=False)) as txn:
        t.eq(txn.stat(env.open_db(b"queue", txn=txn, create=False))["entries"], 2,
             "the bad records are still there, the delivered ones are gone")
    env.close()
    rec.stop()

    # ---- 2. a journal of a newer format is refused with what and where ----
    env = lmdb.open(data, max_dbs=16, map_size=64 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"format", (9).to_bytes(8, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    code, out, err = run_junction(["run", "-c", j2.cfg])
    t.eq(code, 1, "a newer journal format refuses to start")
    t.check("has format 9; this build reads format 1" in err and data in err,
            "it says which journal and which format: %r" % err[-300:])

    # ---- 3. a real full disk ----
    fs = os.path.join(tmp, "fs")
    os.makedirs(fs)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", fs],
                      capture_output=True).returncode != 0:
        print("NOTE: cannot mount a tmpfs here (not root?): the full-disk case is not run")
    else:
        mounted = fs
        data = os.path.join(fs, "d")
        j3 = Junction(config(data, size="64MiB"), wait_ports=[port])  # map larger than the disk
        procs.append(j3)
        t.on_fail.append(lambda: print("---- log 3 ----\n" + j3.log()))
        j3.start()
        chunk = os.path.join(tmp, "chunk")
        with open(chunk, "wb") as f:
            f.write(b"d" * 30000)
        accepted = refused = 0
        for i in range(300):
            st, _, hdrs = curl(["--data-binary", "@" + chunk, "http://127.0.0.1:%d/ingest" % port])
            if st == 202:
                accepted += 1
            elif st == 503:
                refused += 1
                t.check("retry-after" in hdrs.lower(), "503 has Retry-After")
                if refused >= 3:
                    break
        t.check(accepted > 5 and refused >= 3, "the disk fills: %d accepted then 503" % accepted)
        t.check("journal full (No space left on device)" in j3.log() or
                "No space left" in j3.log(), "the log names the full disk")
        t.check(j3.alive(), "junction stays up on a full disk")
        rec = Receiver(port=rport).start()
        t.check(wait_until(lambda: rec.count() >= accepted, 30),
                "every accepted message leaves (%d of %d)" % (rec.count(), accepted))
        t.check(wait_until(lambda: curl(["--data-binary", "@" + chunk,
                                         "http://127.0.0.1:%d/ingest" % port])[0] == 202, 30, 0.2),
                "intake resumes by itself")
        t.eq(j3.stop(), 0, "stop 3")
        rec.stop()
finally:
    if t.failed:
        for f in t.on_fail:
            f()
        t.on_fail = []
    for p in procs:
        p.cleanup()
    if mounted:
        subprocess.run(["umount", "-l", mounted])
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
