/*
 * mqtt: the channel type (subscribe to topic filters on an outside MQTT broker IN, with
 * junction's own client on channels/mqtt_proto over MQTT 5 or 3.1.1; publish to it OUT, with
 * paho-mqtt-c's MQTTAsync client over MQTT 3.1.1): its option table, the cross-field check (url
 * scheme, TLS options, topic filters, the topic template) and the def. The sides are
 * channels/mqtt_in.c and channels/mqtt_out.c (one file per direction, like kafka_*.c); OUT's
 * paho client is channels/mqtt_client.c.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jn_channel.h"
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
    JN_OPT_STR("url", NULL, JN_OPT_REQUIRED, struct mqtt_conf, url,
               "The broker: tcp://host:port or mqtt://host:port; ssl://host:port or "
               "mqtts://host:port for TLS."),
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
                    connect_timeout, "Time allowed for TCP, TLS and CONNACK (whole seconds)."),
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
    JN_OPT_STRLIST("topics", NULL, JN_OPT_IN | JN_OPT_REQUIRED, struct mqtt_conf, topics,
                   "Topic filters to subscribe to (+ and # wildcards, $share/group/filter)."),
    JN_OPT_BOOL("clean_session", "false", JN_OPT_IN, struct mqtt_conf, clean_session,
                "false: the broker keeps the subscription and queues QoS 1/2 messages while "
                "junction is away; true: each connection starts empty."),
    JN_OPT_ENUM("protocol_version", "5", proto_names, JN_OPT_IN, struct mqtt_conf, protocol,
                "The MQTT version spoken to the broker: 5 (Receive Maximum, Session "
                "Expiry, user properties and content type as headers) or 3.1.1."),
    JN_OPT_INT("receive_maximum", "1024", 1, 65535, JN_OPT_IN, struct mqtt_conf, receive_max,
               "Messages the broker may have sent and junction not yet acknowledged (each "
               "is acknowledged after its commit). MQTT 5 sends it as Receive Maximum; with "
               "3.1.1 junction stops reading while that many are open."),
    JN_OPT_DURATION("session_expiry", "7d", 0, 4294967295000LL, JN_OPT_IN, struct mqtt_conf,
                    session_expiry,
                    "MQTT 5 with clean_session false: how long the broker keeps the "
                    "session (subscriptions, queued messages) after junction disconnects "
                    "(whole seconds)."),
    JN_OPT_SIZE("max_packet_size", "16MiB", 64, 268435460ULL, JN_OPT_IN, struct mqtt_conf,
                max_packet,
                "The largest packet taken from the broker. MQTT 5 tells the broker, which "
                "then does not send larger messages to junction; with 3.1.1 a larger packet "
                "closes the connection with an error line."),
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

static int mqtt_check(const void *conf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct mqtt_conf *c = conf;
    int errors = 0;
    int tls = jn_mqtt__url_tls(c->url);

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

const struct jn_channel_def jn_channel_mqtt = {
    .name = "mqtt",
    .desc = "MQTT client: subscribe to topic filters (in: MQTT 5 or 3.1.1, acknowledged after "
            "the commit), publish (out: paho, MQTT 3.1.1)",
    .opts = mqtt_opts,
    .conf_size = sizeof(struct mqtt_conf),
    .check = mqtt_check, /* url scheme, TLS options, topic filters (in), template (out) */
    .in = &jn_mqtt__in,
    .out = &jn_mqtt__out,
};
