"""junction check: every class of config error is reported at file:line:col and exits 1;
a good config exits 0; `junction run` refuses a bad config with the same messages."""
import os
import tempfile

from jnt import Checks, run_junction

t = Checks("check")
tmp = tempfile.mkdtemp(prefix="jn-check-")

GOOD = """\
junction:
  data_dir: ./data
channels:
  in:
    type: http
    direction: in
    listen: 127.0.0.1:18080
  out:
    type: file
    direction: out
    dir: ./out
routes:
  r:
    from: [in]
    when: header("X-Kind") == "order" || channel =~ "^in"
    to: [out]
"""

# (name, config text, the exact error lines expected on stderr)
CASES = [
    ("yaml_syntax", "channels:\n  in: [1, 2\n  out: 3\n",
     ["{f}:3:6: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence "
      "started at 2:7)"]),
    ("unknown_key", GOOD.replace("    listen:", "    lisen: x\n    listen:"),
     ["{f}:7:5: channel 'in' (http): unknown option 'lisen', did you mean 'listen'? (expected one "
      "of: type, direction, "]),
    ("wrong_type", GOOD.replace("    dir: ./out", "    dir: ./out\n    fsync: sometimes"),
     ["{f}:12:12: channel 'out' (file): fsync: 'sometimes' is not a bool, expected true or false"]),
    ("out_of_range", GOOD.replace("    dir: ./out", "    dir: ./out\n    retry: {attempts: 0}"),
     ["{f}:12:23: channel 'out' (file): retry: attempts: 0 is out of range 1..1000000"]),
    ("missing_required", GOOD.replace("    dir: ./out\n", ""),
     ["{f}:9:5: channel 'out' (file): missing required option 'dir'"]),
    ("duplicate_name", GOOD.replace("routes:", "  out:\n    type: file\n    direction: out\n"
                                    "    dir: ./o2\nroutes:"),
     ["{f}:12:3: duplicate key 'out' (first at line 8), expected each name once"]),
    ("unknown_channel", GOOD.replace("to: [out]", "to: [ot]"),
     ["{f}:16:10: route 'r': to: unknown channel 'ot' (did you mean 'out'?), expected the name "
      "of one defined under 'channels:'"]),
    ("unknown_service", GOOD.replace("    to: [out]", "    via: [norm]\n    to: [out]"),
     ["{f}:16:11: route 'r': via: unknown service 'norm', expected the name of one defined "
      "under 'services:'"]),
    ("no_destinations", GOOD.replace("to: [out]", "to: []"),
     ["{f}:16:9: route 'r': to: the list is empty, expected at least one OUT channel"]),
    ("no_to_at_all", GOOD.replace("    to: [out]\n", ""),
     ["{f}:14:5: route 'r': missing required option 'to'"]),
    ("in_as_destination", GOOD.replace("to: [out]", "to: [out, in]"),
     ["{f}:16:15: route 'r': to: 'in' is an IN channel and cannot be a destination, expected an "
      "OUT channel (direction: out)"]),
    ("bad_condition", GOOD.replace('"order" ||', '"order" |'),
     ["{f}:15:39: unexpected '|' at column 29; did you mean '||'?"]),
    ("bad_regex", GOOD.replace('=~ "^in"', '=~ "(in"'),
     ["{f}:15:53:"]),
    ("unknown_type", GOOD.replace("type: file", "type: fiel"),
     ["{f}:9:11: channel 'out': unknown channel type 'fiel' (did you mean 'file'?), expected one "
      "of: bridge, file, http"]),
    ("env_unset", GOOD.replace("./data", "${JN_TEST_SURELY_UNSET}"),
     ["{f}:2:13: environment variable JN_TEST_SURELY_UNSET is not set, expected it set or a "
      "default as ${JN_TEST_SURELY_UNSET:-default}"]),
    ("bad_template", GOOD.replace("    dir: ./out", "    dir: ./out\n    name: \"{nope}\""),
     ["{f}:12:"]),
]

# (name, config text, the whole of stderr expected, {f} standing for the file's path)
TYPES = "bridge, file, http, kafka, mllp, mqtt, websocket"
EXACT = [
    # test_issue_12_6: a channel whose type is unknown is not used for the route's checks (it
    # used to be taken for an OUT channel: "from: 'in' is an OUT channel").
    ("issue_12_6_unknown_type", GOOD.replace("type: http", "type: htp"),
     ["{f}:5:11: channel 'in': unknown channel type 'htp' (did you mean 'http'?), expected one "
      "of: " + TYPES,
      "{f}: 1 error(s)"]),
    # ... nor one whose direction is missing or wrong (it used to be taken for an IN channel).
    ("issue_12_6_no_direction", GOOD.replace("    direction: out\n", ""),
     ["{f}:9:5: channel 'out' (file): missing required option 'direction' (enum: in: messages "
      "arrive here; out: messages leave here.)",
      "{f}: 1 error(s)"]),
    ("issue_12_6_bad_direction", GOOD.replace("direction: in", "direction: inn"),
     ["{f}:6:16: channel 'in' (http): direction: 'inn' is not allowed, expected one of: in | out "
      "(did you mean 'in'?)",
      "{f}: 1 error(s)"]),
    # Errors come in line order, whichever section the loader checks first.
    ("issue_12_6_line_order",
     "routes:\n  r:\n    from: [in]\n    to: [ot]\n" +
     GOOD[GOOD.index("channels:"):GOOD.index("routes:")].replace("    listen:",
                                                                 "    lisen: x\n    listen:") +
     "junction:\n  log_level: loud\n",
     ["{f}:4:10: route 'r': to: unknown channel 'ot' (did you mean 'out'?), expected the name of "
      "one defined under 'channels:'",
      "{f}:9:5: channel 'in' (http): unknown option 'lisen', did you mean 'listen'? (expected one "
      "of: type, direction, retry, concurrency, ordered, ordered_key, max_queued, when_full, "
      "rate_limit, listen, path, max_message, max_headers, read_timeout, request_timeout, max_connections, net, tls, auth, respond)",
      "{f}:16:14: junction: log_level: 'loud' is not allowed, expected one of: error | warn | "
      "info | debug | trace",
      "{f}: 3 error(s)"]),
    # test_issue_12_8: an unquoted ${ENV} in a flow mapping gets a hint to quote it.
    ("issue_12_8_env_in_flow_map",
     "channels:\n  in: { type: http, direction: in, listen: ${LISTEN} }\n",
     ["{f}:2:44: YAML syntax error: did not find expected ',' or '}' (while parsing a flow "
      "mapping started at 2:7); quote a ${...} inside { } or [ ]: listen: \"${LISTEN}\"",
      "{f}: 1 error(s)"]),
    ("issue_12_8_env_in_flow_seq",
     "routes:\n  r: {from: [${SRC}], to: [out]}\n",
     ["{f}:2:14: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
      "sequence started at 2:13); quote a ${...} inside { } or [ ]: \"${SRC}\"",
      "{f}: 1 error(s)"]),
    # test_issue_12_9: an unterminated quote is reported where it starts, not at the end.
    ("issue_12_9_unterminated_quote",
     GOOD.replace("dir: ./out", "dir: \"./out").replace(GOOD.splitlines()[14] + "\n", ""),
     ["{f}:11:10: YAML syntax error while scanning a quoted scalar started here: found "
      "unexpected end of stream at 16:1",
      "{f}: 1 error(s)"]),
    ("issue_12_9_simple_key", GOOD.replace("    listen:", "    listen\n    path: /x\n    listen:"),
     ["{f}:7:5: YAML syntax error while scanning a simple key started here: could not find "
      "expected ':' at 8:5",
      "{f}: 1 error(s)"]),
]

path = os.path.join(tmp, "good.yaml")
with open(path, "w") as f:
    f.write(GOOD)
code, out, err = run_junction(["check", "-c", path])
t.eq(code, 0, "a good config passes check (stderr: %s)" % err)
t.check("ok" in out, "check says ok: %r" % out)

env = dict(os.environ)
env.pop("JN_TEST_SURELY_UNSET", None)
for name, text, expected in CASES:
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    code, out, err = run_junction(["check", "-c", path], env=env)
    t.eq(code, 1, "%s: check exits 1" % name)
    lines = err.splitlines()
    for want in expected:
        want = want.replace("{f}", path)
        t.check(any(line.startswith(want) for line in lines),
                "%s: expected a line starting with\n   %s\n got:\n   %s" % (name, want,
                                                                          "\n   ".join(lines)))
    # run refuses to start with the same messages
    if name in ("unknown_key", "in_as_destination"):
        code2, _, err2 = run_junction(["run", "-c", path], env=env)
        t.eq(code2, 1, "%s: run refuses a bad config" % name)
        t.check(expected[0].replace("{f}", path) in err2, "%s: run prints the same error" % name)

for name, text, expected in EXACT:
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    code, out, err = run_junction(["check", "-c", path], env=env)
    t.eq(code, 1, "%s: check exits 1" % name)
    t.eq(err.splitlines(), [line.replace("{f}", path) for line in expected],
         "%s: the whole of stderr" % name)

code, out, err = run_junction(["check", "-c", os.path.join(tmp, "missing.yaml")])
t.eq(code, 1, "a missing file is an error")
t.check("cannot open: No such file or directory" in err, "missing file reason: %r" % err)

code, out, err = run_junction(["frobnicate"])
t.eq(code, 2, "an unknown command exits 2")
code, out, err = run_junction(["--help"])
t.check(code == 0 and "junction run" in out.replace("  run", "junction run"), "--help works")
code, out, err = run_junction(["version"])
t.check(code == 0 and out.startswith("junction "), "version prints the version: %r" % out)

t.finish()
