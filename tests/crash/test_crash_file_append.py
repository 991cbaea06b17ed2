"""Crash during a flood into file OUT's append mode (issue 20): HTTP IN -> file, mode: append,
small files (rotation by size all the time). Four senders flood junction while it is killed
with SIGKILL four times at random moments and restarted on the same data_dir and folder. Then
the load stops, everything acknowledged is waited for, and a clean stop closes the last file.

Checked: every acknowledged message is in the final files (duplicates allowed: a crash between
a group's fdatasync and the journal's commit of its deliveries writes them again; counted and
printed), every record is byte-exact (no torn record in a final file: each file ends with the
separator, each record is a whole message), nothing that was not sent, no .part left, and the
restarts completed the .part files the kills left."""
import os
import random
import time
import traceback

from crashlib import (Broker, Checks, Ledger, Load, body_token, crash_loop, free_port,
                      wait_until)

SEP = b"\x00\x00\n"  # make_body's bytes step by 7, so two equal bytes in a row never occur
t = Checks("crash_file_append")
ledger = Ledger()
in_port = free_port()
broker = Broker("""
junction:
  data_dir: @DIR@/data
  admin: "off"
  log_level: info
  shutdown_timeout: 2s
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:%d
    path: /ingest
  out:
    type: file
    direction: out
    dir: @DIR@/out
    mode: append
    name: "{date}/flood.bin"
    separator: '\\x00\\x00\\n'
    max_file_bytes: 64KiB
routes:
  r:
    from: [in]
    to: [out]
""" % in_port, wait_ports=[in_port])
t.on_fail.append(lambda: broker.dump_logs(60))
t.on_fail.append(lambda: print(ledger.summary()))


def read_files(final_only):
    """(name, bytes) of every file under out/; only final names when final_only."""
    out = []
    for d, _, names in os.walk(broker.path("out")):
        for n in names:
            if final_only and n.startswith("."):
                continue
            with open(os.path.join(d, n), "rb") as f:
                out.append((os.path.join(d, n), f.read()))
    return out


def tokens_on_disk():
    """Tokens of the whole records in every file, .part files included (the wait only)."""
    seen = set()
    for _, data in read_files(False):
        for rec in data.split(SEP)[:-1]:
            n = body_token(rec)
            if n is not None:
                seen.add(n)
    return seen


try:
    broker.start()
    load = Load(ledger, in_port, threads=4).start()
    time.sleep(0.5)
    crash_loop(broker, random.Random(20), kills=4, lo=0.3, hi=1.2, ledger=None)
    time.sleep(0.5)
    load.stop()
    t.eq(load.errors, [], "no harness error in the senders")
    acked = set(ledger.acked)
    print("acknowledged %d of %d sent (%d failed sends: the kills)" %
          (len(acked), len(ledger.sent), len(ledger.failed)), flush=True)
    t.check(len(acked) > 500, "the flood got a good number of messages through (%d)" %
            len(acked))
    t.check(wait_until(lambda: acked <= tokens_on_disk(), 60),
            "every acknowledged message reaches the files (%d missing)" %
            len(acked - tokens_on_disk()))
    t.eq(broker.stop(), 0, "junction stops cleanly")

    finals = read_files(True)
    t.eq([p for p, _ in read_files(False) if p.endswith(".part")], [],
         "no .part file after the clean stop")
    torn = []
    for path, data in finals:
        if not data.endswith(SEP):
            torn.append((path, data[-40:]))
            data = data[:data.rfind(SEP) + len(SEP)] if SEP in data else b""
        for rec in data.split(SEP)[:-1]:
            ledger.note_delivery(rec, ledger.acked.get(body_token(rec) or -1))
    t.eq(torn, [], "every final file ends with the separator (no torn record)")
    rep = ledger.report()
    print(ledger.summary(rep), flush=True)
    print("%d final files; %d duplicate record(s) of %d message(s) (at-least-once after a "
          "kill)" % (len(finals), rep["duplicates"], rep["dup_messages"]), flush=True)
    t.eq(rep["lost"], 0, "nothing acknowledged is lost (lost %s)" % rep["lost_tokens"][:20])
    t.eq(rep["corrupt"], [], "every record is exactly a message that was sent")
    t.eq(rep["unknown"], [], "every record carries a token")
    t.eq(rep["delivered_unsent"], [], "nothing in the files that was never sent")
    t.check(len(finals) >= 3, "rotation by size made several files (%d)" % len(finals))
    done = broker.grep(r"completed the leftover")
    print("leftovers completed at the restarts: %d; torn tails cut: %s" %
          (len(done), [line.split("torn tail of ")[-1] for _, line in done][:8]), flush=True)
    t.check(len(done) >= 1, "the restarts completed the .part files the kills left")
    t.eq([(r.n, r.rc) for r in broker.unexpected_exits()], [],
         "junction never exited on its own")
except Exception:
    t.check(False, "exception:\n" + traceback.format_exc())
finally:
    try:
        load.stop(2)
    except NameError:
        pass
    broker.cleanup()
t.finish()
