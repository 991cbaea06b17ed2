"""jn-it-junction_test: `junction test`, route tests run offline, with the real binary.

On a copy of tests/data/jtest/ (a config with MLLP and HTTP IN, HTTP and file OUT, two Lua
services and a set-header):
- without file arguments it runs the config folder's tests/*.yaml: every case passes (an HL7
  message to JSON and to the audit folder, a condition that does not hold, a JSON order, a dead
  letter, a filtered message, a split), exit 0, and nothing is opened: no data_dir, no OUT
  folder, no listener;
- failing/failing.yaml: exit 1, and each failure says what differs (a unified diff of an HL7
  payload, JSON paths, HL7 paths, headers, counts, dead letters, only: true); --junit writes
  JUnit XML that python's xml module reads with the same verdicts;
- errors in a test file are reported at file:line:col and exit 2, as are a bad config and a
  --junit file that cannot be written;
- the lua example of docs/services.md (its config and script taken from the page as written)
  passes tests/data/jtest/docs/triage.yaml.
"""
import os
import re
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET

from jnt import SRC, Checks, run_junction

t = Checks("junction_test")
tmp = tempfile.mkdtemp(prefix="jn-jtest-")
work = os.path.join(tmp, "jtest")
shutil.copytree(os.path.join(SRC, "tests", "data", "jtest"), work)
config = os.path.join(work, "junction.yaml")

try:
    # ---- the passing files, found next to the config ----
    # Hold the config's MLLP port: junction test must not need it (it opens no listener).
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 25750))
        holder.listen(1)
    except OSError:
        holder.close()
        holder = None
    code, out, err = run_junction(["test", "-c", config], cwd=tmp)
    if holder:
        holder.close()
    lines = out.splitlines()
    t.eq(code, 0, "all passing cases: exit 0 (stdout %s, stderr %s)" % (out, err))
    t.eq([l for l in lines if l.startswith("PASS ")], [
        "PASS ADT goes to the EHR as JSON and to the audit folder as it came",
        "PASS an ORU is audited only (the adt route's condition does not hold)",
        "PASS an urgent order goes to the lab with a priority",
        "PASS bad JSON is dead-lettered",
        "PASS a test order is filtered",
        "PASS a batch is split, one message per order, in order",
    ], "one PASS line per case, files in name order")
    t.eq(lines[-1], "6 passed, 0 failed (6 case(s) in 2 file(s))", "summary line")
    for d in ("data", "audit", "lab"):
        t.check(not os.path.exists(os.path.join(work, d)),
                "offline: %s/ was not created" % d)

    # ---- failures and what they say ----
    failing = os.path.join(work, "failing", "failing.yaml")
    junit = os.path.join(tmp, "out", "junit.xml")
    os.makedirs(os.path.dirname(junit))
    code, out, err = run_junction(["test", "-c", config, failing, "--junit", junit])
    t.eq(code, 1, "a failing case: exit 1 (stderr %s)" % err)
    t.eq([l for l in out.splitlines() if re.match(r"(PASS|FAIL) ", l)], [
        "PASS passes",
        "FAIL wrong audit payload  (%s:6)" % failing,
        "FAIL wrong JSON, HL7 and header values  (%s:13)" % failing,
        "FAIL expected a dead letter that did not happen  (%s:22)" % failing,
        "FAIL an unexpected dead letter and a wrong count  (%s:25)" % failing,
        "FAIL only true catches another destination  (%s:28)" % failing,
    ], "PASS/FAIL lines")
    block = out.split("FAIL wrong audit payload")[1].split("FAIL ")[0]
    want_diff = [
        "    audit-out[0]: payload differs (269 bytes expected, 474 received):",
        "      --- expected",
        "      +++ actual",
        "      @@ -1,5 +1,5 @@",
        "       MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|EHR|GOOD HEALTH HOSPITAL|20240301101500||"
        "ADT^A01^ADT_A01|MSG00001|P|2.5",
        "       EVN|A01|20240301101500",
        "      -PID|1||PATID9999",
        "      +PID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^"
        "III||19610615|M||2106-3^White^HL70005|2222 HOME STREET^^GREENSBORO^NC^27401-1020||"
        "(555)555-2004|||S||PATID12345001^2^M10^ADT1^AN^A|444333333",
        "       NK1|1|NUCLEAR^NELDA^W|SPO^Spouse^HL70063||||NK^NEXT OF KIN",
        "       PV1|1|I|2000^2012^01||||004777^ATTEND^AARON^A|||SUR||||ADM|A0|",
        "    what happened: 1 to ehr-out, 1 to audit-out",
    ]
    t.eq(block.splitlines()[1:], want_diff, "the payload failure is a unified diff by segment")
    for want in [
        '    ehr-out[0]: json $.patient.id: expected "PATID0000", got "PATID1234"',
        "    ehr-out[0]: json $.extra: missing",
        '    ehr-out[0]: header content-type: expected "text/plain", got "application/json"',
        '    audit-out[0]: hl7 PID-5.1: expected "DOE", got "EVERYMAN"',
        "    dead_letter: expected a dead letter whose reason matches /invalid JSON/, got none",
        "    lab-out: expected 1 message(s), got 0",
        "    dead-lettered by route 'orders' (not expected): service 'triage' (lua): invalid "
        "JSON: json.decode: invalid token near 'not' at line 1 column 3",
        "    audit-out: expected nothing (only: true), got 1 message(s)",
    ]:
        t.check(want in out.splitlines(), "failure output has the line\n   %s\n got:\n%s"
                % (want, out))
    t.check("PV1-2" not in out, "an HL7 check that holds (PV1-2 = I) is not listed")
    t.eq(out.splitlines()[-1], "1 passed, 5 failed (6 case(s) in 1 file(s))", "summary line")

    # ---- JUnit XML ----
    root = ET.parse(junit).getroot()
    t.eq(root.tag, "testsuites", "JUnit root")
    suites = root.findall("testsuite")
    t.eq(len(suites), 1, "one testsuite per file")
    t.eq((suites[0].get("name"), suites[0].get("tests"), suites[0].get("failures")),
         (failing, "6", "5"), "testsuite name and counts")
    cases = suites[0].findall("testcase")
    t.eq([c.get("name") for c in cases],
         ["passes", "wrong audit payload", "wrong JSON, HL7 and header values",
          "expected a dead letter that did not happen",
          "an unexpected dead letter and a wrong count",
          "only true catches another destination"], "testcase names")
    t.eq([c.find("failure") is not None for c in cases], [False, True, True, True, True, True],
         "failure elements where the cases failed")
    f = cases[1].find("failure")
    t.eq(f.get("message"), "audit-out[0]: payload differs (269 bytes expected, 474 received):",
         "failure message: the first difference")
    t.check("-PID|1||PATID9999" in f.text and "MSH|^~\\&|ADT1" in f.text,
            "failure text: the diff, & escaped and read back: %r" % f.text)
    t.check('expected "PATID0000", got "PATID1234"' in cases[2].find("failure").text,
            "quotes read back from the XML")
    t.check(all(float(c.get("time")) >= 0 for c in cases), "each testcase has a time")

    # ---- errors: exit 2 ----
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as fh:
        fh.write("cases:\n"
                 "  - name: typo\n"
                 "    input: {chanel: http-in, payload: x}\n"
                 "    expect: {lab-ot: {count: 1}, ehr-out: {hl7: {PID-x: 1}, regex: \"([\"}}\n"
                 "  - name: not an IN channel\n"
                 "    input: {channel: lab-out, payload_file: nope.txt}\n"
                 "    expect: {filtered: maybe}\n")
    code, out, err = run_junction(["test", "-c", config, bad])
    t.eq(code, 2, "test file errors: exit 2")
    t.eq(out, "", "nothing is run")
    for want in [
        "%s:3:12: case 'typo': input: channel: missing",
        "%s:3:13: case 'typo': input: unknown key 'chanel', did you mean 'channel'?",
        "%s:4:14: case 'typo': expect: destination 'lab-ot' is not a channel of the config, "
        "did you mean 'lab-out'?",
        "%s:4:50: case 'typo': expect: ehr-out: hl7: path 'PID-x': ",
        "%s:4:68: case 'typo': expect: ehr-out: regex /([/: ",
        "%s:6:22: case 'not an IN channel': input: channel 'lab-out' is not an IN channel",
        "%s:6:45: case 'not an IN channel': input: payload_file: cannot open %s/nope.txt: ",
        "%s:7:24: case 'not an IN channel': expect: filtered: 'maybe' is not a bool",
    ]:
        want = want.replace("%s", bad, 1).replace("%s", tmp)
        t.check(any(l.startswith(want) for l in err.splitlines()),
                "error line starting with\n   %s\n got:\n%s" % (want, err))
    code, out, err = run_junction(["test", "-c", os.path.join(tmp, "nope.yaml")])
    t.eq(code, 2, "a config that does not load: exit 2")
    code, out, err = run_junction(["test", "-c", config, failing, "--junit",
                                   os.path.join(tmp, "no", "such", "dir", "j.xml")])
    t.eq(code, 2, "a JUnit file that cannot be written: exit 2")
    t.check("--junit" in err, "... and says so: %r" % err)
    empty = os.path.join(tmp, "empty")
    shutil.copytree(work, empty, ignore=shutil.ignore_patterns("tests"))
    code, out, err = run_junction(["test", "-c", os.path.join(empty, "junction.yaml")])
    t.eq(code, 2, "no test files next to the config: exit 2")
    t.check("tests/*.yaml matches nothing" in err, "... and says where it looked: %r" % err)
    code, out, err = run_junction(["test", "--frob"])
    t.eq(code, 2, "an unknown option: exit 2")
    code, out, err = run_junction(["help", "test"])
    t.check(code == 0 and "usage: junction test [-c FILE] [--junit OUT] [TEST.yaml ...]" in out
            and "JUnit" in out, "junction help test: %r" % out)
    code, out, err = run_junction(["--help"])
    t.check(code == 0 and re.search(r"^  test ", out, re.M) is not None,
            "the general help lists test: %r" % out)

    # ---- the lua example of docs/services.md ----
    with open(os.path.join(SRC, "docs", "services.md")) as fh:
        doc = fh.read()
    section = doc.split("## `lua`")[1]
    blocks = re.findall(r"```(yaml|lua)\n(.*?)```", section, re.S)
    doc_yaml = blocks[0][1]
    doc_lua = blocks[1][1]
    t.check("services:" in doc_yaml and "function process(msg)" in doc_lua,
            "docs/services.md still has the lua example")
    ddir = os.path.join(tmp, "docs")
    os.makedirs(os.path.join(ddir, "scripts"))
    with open(os.path.join(ddir, "junction.yaml"), "w") as fh:
        fh.write("junction:\n  data_dir: ./data\nchannels:\n"
                 "  lab-in: {type: http, direction: in, listen: 127.0.0.1:18091}\n"
                 "  ehr-out: {type: file, direction: out, dir: ./ehr}\n" + doc_yaml)
    with open(os.path.join(ddir, "scripts", "triage.lua"), "w") as fh:
        fh.write(doc_lua)
    code, out, err = run_junction(["test", "-c", os.path.join(ddir, "junction.yaml"),
                                   os.path.join(work, "docs", "triage.yaml")])
    t.eq(code, 0, "the docs example passes its tests:\n%s%s" % (out, err))
    t.check(out.splitlines()[-1].startswith("5 passed, 0 failed"), "five cases: %r" % out)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

t.finish()
