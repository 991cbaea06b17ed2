"""junction init (issue 21, part 6): every example is a config `junction check` accepts without
a warning; stdout by default; -o writes a file and refuses to overwrite one (--force replaces
it); an unknown example is a usage error naming the examples."""
import os
import shutil
import tempfile

from jnt import Checks, run_junction

t = Checks("init")
tmp = tempfile.mkdtemp(prefix="jn-init-")
EXAMPLES = ["http-to-file", "hl7", "mqtt", "kafka"]
try:
    rc, out, err = run_junction(["help", "init"])
    t.eq(rc, 0, "help init")
    for e in EXAMPLES:
        t.check("\n  %s " % e in out, "help init lists the example %s" % e)

    for e in EXAMPLES:
        path = os.path.join(tmp, e + ".yaml")
        rc, out, err = run_junction(["init", "--example", e, "-o", path])
        t.eq(rc, 0, "%s: written (%s)" % (e, err))
        t.check(os.path.exists(path), "%s: the file exists" % e)
        with open(path) as f:
            text = f.read()
        t.check(text.startswith("# junction starter config") and "--example %s" % e in text,
                "%s: commented, naming its example" % e)
        rc, out, err = run_junction(["check", "-c", path], cwd=tmp)
        t.eq(rc, 0, "%s: junction check accepts it: %s" % (e, err))
        t.eq(err, "", "%s: without a warning" % e)
        t.check(out.startswith(path + ": ok ("), "%s: check's summary: %r" % (e, out))
        rc, out2, _ = run_junction(["init", "--example", e])
        t.eq((rc, out2), (0, text), "%s: without -o the same text goes to stdout" % e)

    rc, out, _ = run_junction(["init"])
    with open(os.path.join(tmp, "http-to-file.yaml")) as f:
        t.eq(out, f.read(), "the default example is http-to-file")

    # ---- an existing file is not overwritten ----
    path = os.path.join(tmp, "mine.yaml")
    with open(path, "w") as f:
        f.write("# my config\n")
    rc, out, err = run_junction(["init", "-o", path])
    t.eq(rc, 1, "init onto an existing file fails")
    t.check("mine.yaml exists; not overwriting it (--force replaces it)" in err, "it says so: %r"
            % err)
    with open(path) as f:
        t.eq(f.read(), "# my config\n", "the file is unchanged")
    rc, out, err = run_junction(["init", "--example", "hl7", "-o", path, "--force"])
    t.eq(rc, 0, "--force replaces it")
    with open(path) as f:
        t.check("--example hl7" in f.read(), "with the example")

    # ---- usage errors ----
    rc, out, err = run_junction(["init", "--example", "soap"])
    t.eq(rc, 2, "an unknown example is a usage error")
    t.eq(err, "junction init: unknown example 'soap', expected one of: http-to-file hl7 mqtt "
         "kafka\n", "naming the examples")
    rc, out, err = run_junction(["init", "--bogus"])
    t.eq(rc, 2, "an unknown option is a usage error")
    t.check("usage: junction init [--example NAME] [-o FILE] [--force]" in err, "with the usage")
    rc, out, err = run_junction(["init", "-o", os.path.join(tmp, "no", "such", "dir.yaml")])
    t.eq(rc, 1, "a file that cannot be created: exit 1")
    t.check("No such file or directory" in err, "with the reason: %r" % err)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.finish()
