/*
 * mqtt: the channel type (subscribe to topic filters on an outside MQTT broker IN, with
 * junction's own client on channels/mqtt_proto over MQTT 5 or 3.1.1; publish to it OUT, with
 * paho-mqtt-c's MQTTAsync client over MQTT 3.1.1): its option table, the cross-field check (url
 * scheme, TLS options, topic filters, the topic template; url XOR listen for IN) and the def,
 * which picks the IN side per instance: mqtt_in.c (url) or mqtt_listen.c (listen). The sides are
 * channels/mqtt_in.c and channels/mqtt_out.c (one file per direction, like kafka_*.c); OUT's
 * paho client is channels/mqtt_client.c.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/util.h>
#include <sys/socket.h>

#include "jn_auth.h"
#include "jn_channel.h"
#include "jn_net.h"
#include "mqtt_int.h"

static const char *const proto_names[] = {"5", "3.1.1", NULL};

/* handoff and state_dir belonged to the paho IN side: accepted, with a warning, so an older
 * config still loads. */
static int deprecated_ignored(const void *value, const struct jn_node *node, const char *what,
                              struct jn_diag *d)
{
    (void)value;
    jn_diag_warn(d, &node->pos, "%s: deprecated and ignored (MQTT IN acknowledges after the "
                 "commit and keeps no paho state; docs/mqtt.md)", what);
    return 0;
}

static const struct jn_opt mqtt_opts[] = {
    JN_OPT_STR("url", NULL, 0, struct mqtt_conf, url,
               "The broker: tcp://host:port or mqtt://host:port; ssl://host:port or "
               "mqtts://host:port for TLS. IN takes either url (a client of that broker) or "
               "listen (devices connect to junction); OUT needs url."),
    JN_OPT_STR("listen", NULL, JN_OPT_IN, struct mqtt_conf, listen,
               "IN as an MQTT server: ip:port to listen on ([::]:1883 for IPv6); devices "
               "connect and publish, each QoS 1/2 message acknowledged after its commit "
               "(docs/mqtt.md, The listener). Instead of url."),
    JN_OPT_INT("max_connections", "10000", 1, 1000000, JN_OPT_IN, struct mqtt_conf,
               max_connections, "listen: device connections at once; more are closed at "
               "accept with a log line. net.max_connections, when set, is the same setting."),
    JN_OPT_SUB("net", jn_net_opts, struct jn_net_conf, JN_OPT_IN, struct mqtt_conf, net,
               "listen: options shared with the other listening channels (docs/channels.md)."),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct mqtt_conf, tls,
               "TLS (docs/security.md). listen: tls.cert and tls.key make the listener TLS; "
               "tls.verify_peer: true requires client certificates. url (ssl:// or mqtts://): "
               "the broker's CAs, a client certificate and the checks, instead of ca_file, "
               "cert_file, key_file, key_password and verify (OUT: allowed_peers, server_name, "
               "ciphersuites and min_version 1.3 are not available)."),
    JN_OPT_SUBLIST("auth", jn_auth_opts, struct jn_auth_conf, JN_OPT_IN, struct mqtt_conf,
                   auth,
                   "listen: who may connect (docs/security.md): type basic checks CONNECT's "
                   "user name and password against users (crypt hashes), type mtls the "
                   "client certificate; any one listed method suffices. Refused: CONNACK "
                   "0x86 / 0x87 (3.1.1: 4 / 5). Empty: anyone may connect."),
    JN_OPT_STRLIST("allowed_topics", NULL, JN_OPT_IN, struct mqtt_conf, allowed_topics,
                   "listen: topic filters (+, #) a device may publish to; a PUBLISH to "
                   "another topic is answered 0x87 (MQTT 5) or closes the connection (3.1.1), "
                   "and is not stored. Empty: any topic."),
    JN_OPT_STR("client_id", "", 0, struct mqtt_conf, client_id,
               "MQTT client id; empty: junction-<channel name>. Keep it stable (IN: the broker "
               "keeps the session under it) and unique on the broker."),
    JN_OPT_STR("username", NULL, 0, struct mqtt_conf, username, "User name, if the broker asks."),
    JN_OPT_STR("password", NULL, JN_OPT_SECRET, struct mqtt_conf, password,
               "Password; never logged."),
    JN_OPT_PATH("ca_file", NULL, 0, struct mqtt_conf, ca_file,
                "TLS: PEM file of the CAs that sign the broker's certificate (default: the "
                "system's)."),
    JN_OPT_PATH("cert_file", NULL, 0, struct mqtt_conf, cert_file,
                "TLS: PEM client certificate (chain), for brokers that ask for one."),
    JN_OPT_PATH("key_file", NULL, 0, struct mqtt_conf, key_file,
                "TLS: PEM private key of cert_file (default: in cert_file)."),
    JN_OPT_STR("key_password", NULL, JN_OPT_SECRET, struct mqtt_conf, key_password,
               "TLS: password of key_file; never logged."),
    JN_OPT_BOOL("verify", "true", 0, struct mqtt_conf, verify,
                "TLS: check the broker's certificate and that it names the url's host."),
    JN_OPT_DURATION("keepalive", "30s", 1000, 65535000LL, 0, struct mqtt_conf, keepalive,
                    "MQTT keep-alive (whole seconds); a silent broker is found dead after "
                    "about 1.5 times this."),
    JN_OPT_DURATION("connect_timeout", "10s", 1000, 3600000LL, 0, struct mqtt_conf,
                    connect_timeout, "Time allowed for TCP, TLS and CONNACK (whole seconds); "
                    "listen: for a device's CONNECT after its TCP (and TLS) connection."),
    JN_OPT_DURATION("reconnect_backoff", "500ms", 10, 3600000LL, 0, struct mqtt_conf,
                    reconnect_min,
                    "First wait before reconnecting; doubles per failure, with jitter."),
    JN_OPT_DURATION("reconnect_max_backoff", "30s", 10, 86400000LL, 0, struct mqtt_conf,
                    reconnect_max, "Cap of the reconnect wait."),
    JN_OPT_INT("qos", "2", 0, 2, 0, struct mqtt_conf, qos,
               "IN: the QoS asked for in the subscription (the broker sends each message at "
               "the lower of this and its publisher's QoS). OUT: the QoS of each PUBLISH; "
               "delivered means PUBACK (1), PUBCOMP (2), or written to the socket (0). "
               "docs/mqtt.md gives the guarantee of each."),
    JN_OPT_STRLIST("topics", NULL, JN_OPT_IN, struct mqtt_conf, topics,
                   "url: topic filters to subscribe to (+ and # wildcards, "
                   "$share/group/filter); required with url."),
    JN_OPT_BOOL("clean_session", "false", JN_OPT_IN, struct mqtt_conf, clean_session,
                "false: the broker keeps the subscription and queues QoS 1/2 messages while "
                "junction is away; true: each connection starts empty."),
    JN_OPT_ENUM("protocol_version", "5", proto_names, JN_OPT_IN, struct mqtt_conf, protocol,
                "The MQTT version spoken to the broker: 5 (Receive Maximum, Session "
                "Expiry, user properties and content type as headers) or 3.1.1."),
    JN_OPT_INT("receive_maximum", "1024", 1, 65535, JN_OPT_IN, struct mqtt_conf, receive_max,
               "Messages the broker (listen: each device) may have sent and junction not yet "
               "acknowledged (each is acknowledged after its commit). MQTT 5 sends it as "
               "Receive Maximum (CONNECT, or CONNACK to a device); with 3.1.1 junction stops "
               "reading while that many are open."),
    JN_OPT_DURATION("session_expiry", "7d", 0, 4294967295000LL, JN_OPT_IN, struct mqtt_conf,
                    session_expiry,
                    "MQTT 5 with clean_session false: how long the broker keeps the "
                    "session (subscriptions, queued messages) after junction disconnects "
                    "(whole seconds)."),
    JN_OPT_SIZE("max_packet_size", "16MiB", 64, 268435460ULL, JN_OPT_IN, struct mqtt_conf,
                max_packet,
                "The largest packet taken from the broker (listen: from a device). MQTT 5 "
                "tells the peer, which then does not send larger ones; a larger packet closes "
                "the connection with an error line (listen: DISCONNECT 0x95 first)."),
    JN_OPT_STR("handoff", NULL, JN_OPT_IN, struct mqtt_conf, handoff,
               "Deprecated and ignored (the paho client's hand-off is gone: every message is "
               "acknowledged after its commit).", .validate = deprecated_ignored),
    JN_OPT_PATH("state_dir", NULL, JN_OPT_IN, struct mqtt_conf, state_dir,
                "Deprecated and ignored (IN keeps no paho persistence any more; the broker's "
                "session and the journal hold everything).", .validate = deprecated_ignored),
    JN_OPT_STR("topic", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct mqtt_conf, topic,
               "Topic template: {id} {channel} {date} {time} {ts} {header.NAME}; a rendered "
               "topic that is empty or has + or # is rejected (dead-lettered)."),
    JN_OPT_BOOL("retain", "false", JN_OPT_OUT, struct mqtt_conf, retain,
                "Publish with the retain flag."),
    JN_OPT_DURATION("timeout", "30s", 1000, 3600000LL, JN_OPT_OUT, struct mqtt_conf, timeout,
                    "A publish not acknowledged in this time is retried."),
    JN_OPT_INT("max_inflight", "65535", 1, 65535, JN_OPT_OUT, struct mqtt_conf, max_inflight,
               "paho's maxInflight. Keep it above concurrency: paho 1.3.11 stalls to 10 "
               "messages/s when a burst reaches it."),
    JN_OPT_END,
};

/* ---- checks ---- */

int jn_mqtt__url_tls(const char *url)
{
    if (url == NULL) {
        return -1;
    }
    if (strncasecmp(url, "ssl://", 6) == 0 || strncasecmp(url, "mqtts://", 8) == 0) {
        return 1;
    }
    if (strncasecmp(url, "tcp://", 6) == 0 || strncasecmp(url, "mqtt://", 7) == 0) {
        return 0;
    }
    return -1;
}

/* ---- outside input (mqtt_int.h: no paho types, fuzzed alone) ---- */

const char *jn_mqtt__filter_error(const char *f)
{
    size_t n = strlen(f);

    if (n == 0) {
        return "is empty";
    }
    if (n > MQTT_MAX_TOPIC) {
        return "is longer than 65535 bytes";
    }
    for (const char *lvl = f;;) {
        const char *end = strchr(lvl, '/');
        size_t ln = end != NULL ? (size_t)(end - lvl) : strlen(lvl);
        if (memchr(lvl, '#', ln) != NULL && (ln != 1 || end != NULL)) {
            return "has '#' other than as the whole last level";
        }
        if (memchr(lvl, '+', ln) != NULL && ln != 1) {
            return "has '+' other than as a whole level";
        }
        if (end == NULL) {
            break;
        }
        lvl = end + 1;
    }
    return NULL;
}

/* listen: the address, the option pairs that belong to url, tls, auth, allowed_topics. */
static int listen_check(const struct mqtt_conf *c, const struct jn_node *node,
                        struct jn_diag *d)
{
    static const char *const url_keys[] = {"topics", "client_id", "username", "password",
                                           "ca_file", "cert_file", "key_file", "key_password",
                                           "clean_session", "session_expiry", "qos",
                                           "verify", "keepalive", "reconnect_backoff",
                                           "reconnect_max_backoff", "protocol_version", NULL};
    struct sockaddr_storage ss;
    int sl = sizeof(ss), port, errors = 0;
    char host[256];

    if (evutil_parse_sockaddr_port(c->listen, (struct sockaddr *)&ss, &sl) != 0 ||
        jn_split_hostport(c->listen, host, sizeof(host), &port, 0) != 0) {
        jn_diag_add(d, jn_node_pos(node, "listen"), "mqtt: listen: '%s' is not ip:port, "
                    "expected e.g. 0.0.0.0:1883", c->listen);
        errors++;
    }
    for (size_t i = 0; url_keys[i] != NULL; i++) {
        if (jn_node_get(node, url_keys[i]) != NULL) {
            jn_diag_add(d, jn_node_pos(node, url_keys[i]),
                        "mqtt: %s: belongs to url (a client of a broker), not to listen",
                        url_keys[i]);
            errors++;
        }
    }
    for (size_t i = 0; i < c->allowed_topics.n; i++) {
        const char *why = jn_mqtt__filter_error(c->allowed_topics.v[i]);
        if (why != NULL) {
            jn_diag_add(d, jn_node_pos(node, "allowed_topics"),
                        "mqtt: allowed_topics: '%s' %s", c->allowed_topics.v[i], why);
            errors++;
        }
    }
    errors += jn_auth_check(&c->auth, jn_tls_on(&c->tls) &&
                                          (c->tls.verify_peer == JN_TLS_VERIFY_TRUE ||
                                           (c->tls.verify_peer == JN_TLS_VERIFY_AUTO &&
                                            c->tls.allowed_peers.n > 0)),
                            node, "auth", "mqtt", d);
    return errors + jn_tls_check(&c->tls, JN_TLS_SERVER, jn_tls_on(&c->tls), node, "tls",
                                 "mqtt", d);
}

int jn_mqtt__tls_block(const struct mqtt_conf *c)
{
    const struct jn_tls_conf *t = &c->tls;

    return t->enabled || t->cert != NULL || t->key != NULL || t->key_password != NULL ||
           t->ca != NULL || t->allowed_peers.n > 0 || t->server_name != NULL ||
           t->verify_peer != JN_TLS_VERIFY_AUTO;
}

/* A client's tls: block: with an ssl:// url, instead of the older options; OUT (paho) has no
 * setting for some of it. Then the files are loaded as jn_tls_new would. */
static int url_tls_check(const struct mqtt_conf *c, unsigned dir, int tls,
                         const struct jn_node *node, struct jn_diag *d)
{
    static const char *const old[] = {"ca_file", "cert_file", "key_file", "key_password",
                                      "verify", NULL};
    const struct jn_node *tn = jn_node_get(node, "tls");
    int errors = 0;

    if (tls != 1) {
        jn_diag_add(d, jn_node_pos(node, "tls"), "mqtt: tls: needs an ssl:// or mqtts:// url");
        return 1;
    }
    if (!jn_mqtt__tls_block(c)) {
        jn_diag_add(d, jn_node_pos(node, "tls"), "mqtt: tls: give at least ca, cert or "
                    "enabled: true (or leave tls: out and use the system's CAs)");
        return 1;
    }
    for (size_t i = 0; old[i] != NULL; i++) {
        if (jn_node_get(node, old[i]) != NULL) {
            jn_diag_add(d, jn_node_pos(node, old[i]), "mqtt: %s: give TLS settings in tls: "
                        "only (not both)", old[i]);
            errors++;
        }
    }
    if (dir & JN_DIR_OUT) {
        static const char *const no[] = {"allowed_peers", "server_name", "ciphersuites", NULL};
        for (size_t i = 0; no[i] != NULL; i++) {
            if (jn_node_get(tn, no[i]) != NULL) {
                jn_diag_add(d, jn_node_pos(tn, no[i]), "mqtt: tls: %s is not available for "
                            "MQTT OUT (paho has no setting for it)", no[i]);
                errors++;
            }
        }
        if (c->tls.min_version == JN_TLS_V13) {
            jn_diag_add(d, jn_node_pos(tn, "min_version"), "mqtt: tls: min_version 1.3 is not "
                        "available for MQTT OUT");
            errors++;
        }
    }
    return errors + jn_tls_check(&c->tls, JN_TLS_CLIENT, 1, node, "tls", "mqtt", d);
}

static int mqtt_check(const void *conf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct mqtt_conf *c = conf;
    int errors = 0;
    int tls = jn_mqtt__url_tls(c->url);

    if ((dir & JN_DIR_IN) && (c->listen != NULL) == (c->url != NULL)) {
        jn_diag_add(d, &node->pos, "mqtt: direction in takes either url (subscribe on a "
                    "broker) or listen (devices connect to junction), %s",
                    c->url != NULL ? "not both" : "one of them is required");
        return errors + 1;
    }
    if ((dir & JN_DIR_OUT) && c->url == NULL) {
        jn_diag_add(d, &node->pos, "mqtt: missing required option 'url' for direction: out "
                    "(e.g. url: tcp://127.0.0.1:1883)");
        return errors + 1;
    }
    if (c->listen != NULL) {
        return listen_check(c, node, d);
    }
    static const char *const listen_keys[] = {"auth", "allowed_topics", "net",
                                              "max_connections", NULL};
    for (size_t i = 0; listen_keys[i] != NULL; i++) {
        if (jn_node_get(node, listen_keys[i]) != NULL) {
            jn_diag_add(d, jn_node_pos(node, listen_keys[i]),
                        "mqtt: %s: only with listen", listen_keys[i]);
            errors++;
        }
    }
    if ((dir & JN_DIR_IN) && c->topics.n == 0 && jn_node_get(node, "topics") == NULL) {
        jn_diag_add(d, &node->pos, "mqtt: missing required option 'topics' for direction: in "
                    "with url (e.g. topics: [sensors/#])");
        errors++;
    }
    if (tls < 0) {
        jn_diag_add(d, jn_node_pos(node, "url"),
                    "mqtt: url: '%s' must start with tcp://, mqtt://, ssl:// or mqtts://",
                    c->url != NULL ? c->url : "");
        errors++;
    } else if (strchr(strstr(c->url, "://") + 3, '/') != NULL) {
        jn_diag_add(d, jn_node_pos(node, "url"),
                    "mqtt: url: '%s' has a path; MQTT has none (the topic is a separate option)",
                    c->url);
        errors++;
    }
    if (tls == 0) {
        static const char *const tls_keys[] = {"ca_file", "cert_file", "key_file",
                                               "key_password", NULL};
        for (size_t i = 0; tls_keys[i] != NULL; i++) {
            if (jn_node_get(node, tls_keys[i]) != NULL) {
                jn_diag_add(d, jn_node_pos(node, tls_keys[i]),
                            "mqtt: %s: TLS options need an ssl:// or mqtts:// url", tls_keys[i]);
                errors++;
            }
        }
    }
    if (jn_node_get(node, "tls") != NULL) {
        errors += url_tls_check(c, dir, tls, node, d);
    }
    if (c->key_file != NULL && c->cert_file == NULL) {
        jn_diag_add(d, jn_node_pos(node, "key_file"), "mqtt: key_file: needs cert_file");
        errors++;
    }
    if (c->password != NULL && c->username == NULL) {
        jn_diag_add(d, jn_node_pos(node, "password"), "mqtt: password: needs username");
        errors++;
    }
    if (c->reconnect_max < c->reconnect_min) {
        jn_diag_add(d, jn_node_pos(node, "reconnect_max_backoff"),
                    "mqtt: reconnect_max_backoff: must be at least reconnect_backoff");
        errors++;
    }
    if (dir & JN_DIR_IN) {
        const struct jn_node *tn = jn_node_get(node, "topics");
        if (c->topics.n == 0 && tn != NULL) {
            jn_diag_add(d, &tn->pos, "mqtt: topics: needs at least one topic filter");
            errors++;
        }
        for (size_t i = 0; i < c->topics.n; i++) {
            const char *why = jn_mqtt__filter_error(c->topics.v[i]);
            const struct jn_pos *pos = &node->pos;
            if (tn != NULL && tn->kind == JN_NODE_SEQ && i < tn->n) {
                pos = &tn->vals[i]->pos;
            } else if (tn != NULL) {
                pos = &tn->pos;
            }
            if (why != NULL) {
                jn_diag_add(d, pos, "mqtt: topics: '%s' %s", c->topics.v[i], why);
                errors++;
            }
        }
    }
    if (dir & JN_DIR_OUT) {
        struct jn_err err;
        jn_err_clear(&err);
        if (c->topic == NULL || c->topic[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "topic"), "mqtt: topic: must not be empty");
            errors++;
        } else if (jn_template_check(c->topic, &err) != 0) {
            jn_diag_add(d, jn_node_pos(node, "topic"), "mqtt: topic: %s", err.msg);
            errors++;
        }
    }
    return errors;
}

/* ---- the def ---- */

/* IN is a client (url) or a listener (listen); the check allowed exactly one. */
static const struct jn_in_def *in_side(const struct jn_channel *ch)
{
    return ((const struct mqtt_conf *)ch->conf)->listen != NULL ? &jn_mqtt__listen
                                                                  : &jn_mqtt__in;
}

static int either_init(struct jn_channel *ch, struct jn_err *err)
{
    return in_side(ch)->init(ch, err);
}

static int either_start(struct jn_channel *ch, struct jn_err *err)
{
    return in_side(ch)->start(ch, err);
}

static void either_stop(struct jn_channel *ch)
{
    in_side(ch)->stop(ch);
}

static void either_destroy(struct jn_channel *ch)
{
    in_side(ch)->destroy(ch);
}

static const struct jn_in_def mqtt_in_either = {
    .init = either_init,
    .start = either_start,
    .stop = either_stop,
    .destroy = either_destroy,
};

const struct jn_channel_def jn_channel_mqtt = {
    .name = "mqtt",
    .desc = "MQTT: subscribe to topic filters on a broker (in with url) or take devices' "
            "publishes as a server (in with listen), both MQTT 5 or 3.1.1, acknowledged after "
            "the commit; publish (out: paho, MQTT 3.1.1)",
    .opts = mqtt_opts,
    .conf_size = sizeof(struct mqtt_conf),
    .check = mqtt_check, /* url scheme, TLS options, topic filters (in), template (out) */
    .in = &mqtt_in_either,
    .out = &jn_mqtt__out,
};
