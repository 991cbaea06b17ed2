"""No secret value is ever printed (issue 16, part 5), for every option marked secret.

One config sets each secret option, each to its own recognisable value, through ${ENV} and
${file:}: admin_token, auth tokens / users / hmac secrets, tls key_password (an encrypted key),
HTTP OUT sign_secret and sign.secret, a route's notify_secret and notify_webhook_secret, MQTT
OUT password and key_password (the same encrypted key), Kafka sasl.password and a Kafka properties sasl.password.
junction runs it at log_level debug and is driven a little (a message in, deliveries failing
and retried, a 401); then none of the values appears in:
- junction's log, `junction check` (the valid config, and the config with errors elsewhere),
  `junction describe` and `junction ctl` output;
- the admin API: /api/v1/status, channels (each), routes, queues, messages, config history and
  the config text (which keeps the references, not their values), /metrics.
"""
import json
import os
import shutil
import tempfile

from jnt import Checks, Junction, curl, free_port, run_junction, wait_until
from tlst import Pki

t = Checks("secrets")
cleanups = []

S = {
    "ADMIN_TOKEN": "sec-admin-token-4b2f9e71c0",
    "BEARER": "sec-bearer-token-91aa03e6d5",
    "HMAC": "whsec_c2VjLWhtYWMta2V5LTM3NzFmMDBiNTk=",
    "KEY_PW": "sec-key-password-58c1d2",
    "SIGN_SECRET": "sec-sign-secret-0f6e9a3b17",
    "SIGN_WHSEC": "whsec_c2VjLXNpZ24td2hzZWMtNjZhOWM=",
    "NOTIFY": "sec-notify-secret-7ad0e4c2",
    "NOTIFY_WHSEC": "whsec_c2VjLW5vdGlmeS13aHNlYy1kMmU=",
    "MQTT_PW": "sec-mqtt-password-1c9b",
    "KAFKA_PW": "sec-kafka-sasl-pw-3f08",
    "KAFKA_PROP_PW": "sec-kafka-prop-pw-a61d",
}
BASIC_PW = "sec-basic-password-2d7c"  # only its hash is in the config; never sent back either


def values():
    out = list(S.values()) + [BASIC_PW]
    # the base64 inside whsec_ too
    out += [v[6:] for v in S.values() if v.startswith("whsec_")]
    return out


def leaks(text, where):
    for v in values():
        t.check(v not in text, "%s does not show %s..." % (where, v[:12]))


try:
    tmp = tempfile.mkdtemp(prefix="jn-secrets-")
    cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    pki = Pki(tmp)
    pki.ca("ca", "Secrets CA")
    srv, srv_key = pki.cert("server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1",
                            password=S["KEY_PW"])
    with open(os.path.join(tmp, "kafka_pw"), "w") as f:
        f.write(S["KAFKA_PW"] + "\n")
    import subprocess
    basic_hash = subprocess.run(["openssl", "passwd", "-6", BASIC_PW], capture_output=True,
                                check=True).stdout.decode().strip()
    hport, aport = free_port(), free_port()
    dead = free_port()  # nothing listens: OUT deliveries fail and retry
    cfg = """
junction:
  data_dir: @DIR@/data
  log_level: debug
  shutdown_timeout: 1s
  admin: 127.0.0.1:%(aport)d
  admin_token: "${ADMIN_TOKEN}"
channels:
  web:
    type: http
    direction: in
    listen: 127.0.0.1:%(hport)d
    path: /in
    tls: { cert: %(srv)s, key: %(srv_key)s, key_password: "${KEY_PW}" }
    auth:
      - { type: bearer, tokens: [ "${BEARER}" ] }
      - { type: basic, users: { alice: "%(hash)s" } }
      - { type: hmac, secrets: [ "${HMAC}" ] }
  hook-out:
    type: http
    direction: out
    url: http://127.0.0.1:%(dead)d/x
    sign_secret: "${SIGN_SECRET}"
    sign: { scheme: standard-webhooks, secret: "${SIGN_WHSEC}" }
    retry: { attempts: 3, backoff: 100ms }
  mqtt-out:
    type: mqtt
    direction: out
    url: ssl://127.0.0.1:%(dead)d
    topic: t
    username: u
    password: "${MQTT_PW}"
    ca_file: %(ca)s
    cert_file: %(srv)s
    key_file: %(srv_key)s
    key_password: "${KEY_PW}"
  kafka-out:
    type: kafka
    direction: out
    brokers: [127.0.0.1:%(dead)d]
    topic: t
    sasl: { mechanism: PLAIN, username: u, password: "${file:%(tmp)s/kafka_pw}" }
  kafka-props:
    type: kafka
    direction: out
    brokers: [127.0.0.1:%(dead)d]
    topic: t
    properties: { security.protocol: SASL_PLAINTEXT, sasl.mechanisms: PLAIN,
                  sasl.username: u, sasl.password: "${KAFKA_PROP_PW}" }
routes:
  r:
    from: [web]
    to: [hook-out, mqtt-out, kafka-out, kafka-props]
    notify: http://127.0.0.1:%(dead)d/cb
    notify_secret: "${NOTIFY}"
    notify_webhook_secret: "${NOTIFY_WHSEC}"
""" % {"aport": aport, "hport": hport, "srv": srv, "srv_key": srv_key, "hash": basic_hash,
       "dead": dead, "tmp": tmp, "ca": pki.p("ca.pem")}
    env = dict(os.environ, **S)
    j = Junction(cfg, wait_ports=[hport, aport], env=env)
    cleanups.append(j.cleanup)
    t.on_fail.append(lambda: print("---- junction log (tail) ----\n%s" % j.log()[-6000:]))
    j.start()

    https = "https://127.0.0.1:%d/in" % hport
    ca = pki.p("ca.pem")
    st, _, _ = curl(["--cacert", ca, "-H", "Authorization: Bearer " + S["BEARER"],
                     "--data-binary", "hello", https])
    t.eq(st, 202, "a message in (bearer)")
    st, _, _ = curl(["--cacert", ca, "-u", "alice:" + BASIC_PW, "--data-binary", "b", https])
    t.eq(st, 202, "a message in (basic)")
    st, _, _ = curl(["--cacert", ca, "-H", "Authorization: Bearer wrong-" + S["BEARER"],
                     "--data-binary", "x", https])
    t.eq(st, 401, "a refused one")
    t.check(wait_until(lambda: "attempt" in j.log() and "hook-out" in j.log(), 15),
            "deliveries fail and are retried (logged)")

    # ---- the admin API ----
    def api(path):
        code, out, _ = curl(["-H", "Authorization: Bearer " + S["ADMIN_TOKEN"],
                             "http://127.0.0.1:%d%s" % (aport, path)])
        return code, out.decode("utf-8", "replace")

    seen = {}
    for path in ("/api/v1/status", "/api/v1/channels", "/api/v1/routes", "/api/v1/queues",
                 "/api/v1/messages", "/api/v1/config/history", "/metrics", "/api/v1/dead-letters"):
        seen[path] = api(path)
    t.eq(seen["/api/v1/status"][0], 200, "the admin API answers (status)")
    for name in ("web", "hook-out", "mqtt-out", "kafka-out", "kafka-props"):
        seen["/api/v1/channels/" + name] = api("/api/v1/channels/" + name)
    try:
        running = json.loads(seen["/api/v1/config/history"][1])["running"]
        seen["config text"] = api("/api/v1/config/" + running)
        t.check("${KEY_PW}" in seen["config text"][1],
                "the config text keeps the reference ${KEY_PW}")
    except (ValueError, KeyError) as e:
        t.check(False, "config history: %r" % e)
    for path, (code, body) in sorted(seen.items()):
        leaks(body, "admin %s (%s)" % (path, code))

    # ---- ctl, check, describe ----
    ctl_env = dict(env, JUNCTION_ADMIN_TOKEN=S["ADMIN_TOKEN"])
    for verb in (["status"], ["channels"], ["queues"], ["routes", "--json"]):
        code, out, err = run_junction(["ctl"] + verb + ["--admin", "127.0.0.1:%d" % aport],
                                      env=ctl_env)
        t.eq(code, 0, "ctl %s answers" % verb[0])
        leaks(out + err, "ctl %s" % verb[0])
    code, out, err = run_junction(["check", "-c", j.cfg], env=env)
    t.eq(code, 0, "check: the config is valid\n" + out + err)
    leaks(out + err, "check (valid)")
    with open(j.path("bad.yaml"), "w") as f:
        f.write(open(j.cfg).read().replace("retry: { attempts: 3", "retry: { attempts: -3")
                .replace("topic: t\n    username", "topic: t\n    qos: 7\n    username"))
    code, out, err = run_junction(["check", "-c", j.path("bad.yaml")], env=env)
    t.eq(code, 1, "check: a config with errors is refused\n" + out + err)
    leaks(out + err, "check (with errors)")
    # a wrong key_password: the error names the file, not the password
    code, out, err = run_junction(["check", "-c", j.cfg], env=dict(env, KEY_PW="not-" + S["KEY_PW"]))
    t.eq(code, 1, "check: a wrong key_password is an error")
    t.check("not-" + S["KEY_PW"] not in out + err, "check does not print the wrong key_password")
    for args in (["describe"], ["describe", "kafka"], ["describe", "--markdown"]):
        code, out, err = run_junction(args, env=env)
        t.eq(code, 0, " ".join(args))
        leaks(out + err, " ".join(args))

    t.eq(j.stop(), 0, "exit 0")
    leaks(j.log(), "the log (debug)")
finally:
    for f in reversed(cleanups):
        f()
t.finish()
