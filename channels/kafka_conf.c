/*
 * kafka: the channel type (a consumer group member IN, an idempotent producer OUT, on
 * librdkafka): its option table, the properties junction owns, the cross-field check, the
 * librdkafka conf both sides start from, the callbacks both install, and the def. The sides are
 * channels/kafka_in.c and channels/kafka_out.c; modelled on Fluent Bit's in_kafka/out_kafka
 * (one plugin per direction over one librdkafka conf).
 *
 * Threads: jn_kafka__log_cb and jn_kafka__qev_cb run on librdkafka's threads: the first writes
 * one line with jn_log_print() (one write(2), thread-safe), the second only calls
 * event_active() on the side's wake event (the broker turned evthread_use_pthreads() on).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "kafka_int.h"

static const char *const kafka_sasl_names[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512",
                                               NULL};

static const struct jn_opt kafka_sasl_opts[] = {
    JN_OPT_ENUM("mechanism", "SCRAM-SHA-512", kafka_sasl_names, 0, struct kafka_sasl_conf,
                mechanism, "sasl.mechanisms: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."),
    JN_OPT_STR("username", NULL, 0, struct kafka_sasl_conf, username,
               "sasl.username (required with sasl:)."),
    JN_OPT_STR("password", NULL, JN_OPT_SECRET, struct kafka_sasl_conf, password,
               "sasl.password (required with sasl:); a secret, e.g. \"${file:/run/secrets/"
               "kafka}\"."),
    JN_OPT_END,
};

static const struct jn_opt kafka_opts[] = {
    JN_OPT_STRLIST("brokers", NULL, JN_OPT_REQUIRED | JN_OPT_COMMAS, struct kafka_conf,
                   brokers, "Bootstrap servers, host:port: a list, or one string with commas "
                   "as librdkafka's bootstrap.servers takes it (a:9092,b:9092)"),
    JN_OPT_STRMAP("properties", 0, struct kafka_conf, properties,
                  "librdkafka properties passed to rd_kafka_conf_set as they are (SASL, SSL, "
                  "tuning), checked at load; values of keys containing password, secret or key "
                  "are never logged. Keys junction sets itself are refused (see docs/kafka.md)"),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct kafka_conf, tls,
               "TLS to the brokers (docs/security.md), mapped onto librdkafka: ca -> "
               "ssl.ca.location, cert/key/key_password -> ssl.certificate.location, "
               "ssl.key.location, ssl.key.password, ciphers -> ssl.cipher.suites, verify_peer -> "
               "enable.ssl.certificate.verification and ssl.endpoint.identification.algorithm; "
               "security.protocol SSL (SASL_SSL with sasl:). allowed_peers, server_name, "
               "ciphersuites and min_version 1.3 are not available for Kafka."),
    JN_OPT_SUB("sasl", kafka_sasl_opts, struct kafka_sasl_conf, 0, struct kafka_conf, sasl,
               "SASL authentication to the brokers: security.protocol SASL_SSL with tls:, "
               "else SASL_PLAINTEXT (the password then crosses the network in the clear)."),
    JN_OPT_STRLIST("topics", NULL, JN_OPT_IN | JN_OPT_REQUIRED, struct kafka_conf, topics,
                   "Topics to consume (a value or a list); a name starting with ^ is a regex"),
    JN_OPT_STR("group", NULL, JN_OPT_IN | JN_OPT_REQUIRED, struct kafka_conf, group,
               "Consumer group (group.id): nodes with the same group share the partitions"),
    JN_OPT_STR("header_prefix", "kafka-header-", JN_OPT_IN, struct kafka_conf, header_prefix,
               "Kafka record headers become junction headers named prefix + name; empty: the "
               "names themselves (a name starting with kafka- is then dropped)"),
    JN_OPT_INT("max_in_flight", "1000", 1, 1000000, JN_OPT_IN, struct kafka_conf,
               max_in_flight, "Messages handed to the journal and not yet durable, at most; "
               "consuming waits beyond that"),
    JN_OPT_DURATION("pause_retry", "1s", 10, 3600000LL, JN_OPT_IN, struct kafka_conf,
                    pause_retry, "While the journal refuses input (full), a paused partition "
                    "is sought back and tried again this often"),
    JN_OPT_DURATION("commit_interval", "1s", 10, 3600000LL, JN_OPT_IN, struct kafka_conf,
                    commit_interval, "How often stored offsets are committed "
                    "(auto.commit.interval.ms): after a crash up to this much is consumed "
                    "again"),
    JN_OPT_STR("topic", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct kafka_conf, topic,
               "Topic to produce to; a template: {header.NAME} {channel} {id} {date} ..."),
    JN_OPT_STR("key", NULL, JN_OPT_OUT, struct kafka_conf, key,
               "Record key, a template; unset or rendering empty: no key (the partitioner "
               "picks a partition)"),
    JN_OPT_STRMAP("headers", JN_OPT_OUT, struct kafka_conf, headers,
                  "Record headers, name: template"),
    JN_OPT_STR("id_header", "junction-id", JN_OPT_OUT, struct kafka_conf, id_header,
               "Record header that carries the junction message id (for de-duplication "
               "downstream); empty: none"),
    JN_OPT_DURATION("timeout", "30s", 1000, 86400000LL, JN_OPT_OUT, struct kafka_conf,
                    timeout, "message.timeout.ms: how long librdkafka tries one send before "
                    "junction's retry (with backoff) takes over"),
    JN_OPT_END
};

/* librdkafka properties junction sets from its own options or must own for its guarantees. */
struct kafka_owned {
    const char *key;
    unsigned dirs;
    const char *why;
};

static const struct kafka_owned kafka_owned[] = {
    {"bootstrap.servers", JN_DIR_IN | JN_DIR_OUT, "use brokers"},
    {"metadata.broker.list", JN_DIR_IN | JN_DIR_OUT, "use brokers"},
    {"group.id", JN_DIR_IN, "use group"},
    {"enable.auto.offset.store", JN_DIR_IN,
     "junction stores an offset only once its message is durable"},
    {"enable.auto.commit", JN_DIR_IN, "junction relies on librdkafka committing stored offsets"},
    {"auto.commit.interval.ms", JN_DIR_IN, "use commit_interval"},
    {"enable.idempotence", JN_DIR_OUT, "the producer is always idempotent"},
    {"acks", JN_DIR_OUT, "always all (idempotence needs it)"},
    {"request.required.acks", JN_DIR_OUT, "always all (idempotence needs it)"},
    {"message.timeout.ms", JN_DIR_OUT, "use timeout"},
    {"delivery.timeout.ms", JN_DIR_OUT, "use timeout"},
    {"transactional.id", JN_DIR_OUT, "transactions are not supported"},
    {NULL, 0, NULL},
};

/* Keys whose values are never logged: passwords, secrets, keys (PEM, key passwords). */
static bool kafka_secret_key(const char *k)
{
    return strcasestr(k, "password") != NULL || strcasestr(k, "secret") != NULL ||
           strcasestr(k, "key") != NULL;
}

static const struct kafka_owned *kafka_owned_find(const char *key, unsigned dir)
{
    for (const struct kafka_owned *o = kafka_owned; o->key != NULL; o++) {
        if ((o->dirs & dir) && strcmp(o->key, key) == 0) {
            return o;
        }
    }
    return NULL;
}

char *jn_kafka__bootstrap(const void *vconf)
{
    const struct jn_strlist *l = &((const struct kafka_conf *)vconf)->brokers;
    struct jn_buf b = JN_BUF_INIT;

    for (size_t i = 0; i < l->n; i++) {
        if ((i > 0 && jn_buf_putc(&b, ',') != 0) || jn_buf_puts(&b, l->v[i]) != 0) {
            jn_buf_reset(&b);
            return NULL;
        }
    }
    return jn_buf_steal(&b);
}

/* One rd_kafka_conf_set; a failure fills err without quoting a secret value. */
static int kafka_set(rd_kafka_conf_t *kc, const char *k, const char *v, struct jn_err *err)
{
    char errstr[KAFKA_ERRSTR];
    rd_kafka_conf_res_t r = rd_kafka_conf_set(kc, k, v, errstr, sizeof(errstr));

    if (r == RD_KAFKA_CONF_OK) {
        return 0;
    }
    if (r == RD_KAFKA_CONF_INVALID && kafka_secret_key(k)) {
        /* librdkafka's message quotes the value. */
        return jn_err_set(err, JN_EINVAL, "%s: invalid value (not shown: secret)", k);
    }
    return jn_err_set(err, JN_EINVAL, "%s", errstr);
}

/* The librdkafka properties the tls: and sasl: blocks set; properties: may not set them too. */
static const char *const kafka_tls_keys[] = {
    "security.protocol", "ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
    "ssl.key.password", "ssl.cipher.suites", "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm", NULL,
};
static const char *const kafka_sasl_keys[] = {
    "security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
    NULL,
};

static bool kafka_in_list(const char *const *l, const char *k)
{
    for (; *l != NULL; l++) {
        if (strcmp(*l, k) == 0) {
            return true;
        }
    }
    return false;
}

/* The tls: and sasl: blocks onto kc (after properties: they win). */
static int kafka_security_set(rd_kafka_conf_t *kc, const struct kafka_conf *c,
                              struct jn_err *err)
{
    const struct jn_tls_conf *t = &c->tls;
    int tls = jn_tls_on(t), sasl = c->sasl.username != NULL;
    int verify = t->verify_peer != JN_TLS_VERIFY_FALSE;
    int rc = 0;

    if (tls || sasl) {
        rc = kafka_set(kc, "security.protocol",
                       tls && sasl ? "SASL_SSL" : tls ? "SSL" : "SASL_PLAINTEXT", err);
    }
    if (rc == 0 && tls && t->ca != NULL) {
        rc = kafka_set(kc, "ssl.ca.location", t->ca, err);
    }
    if (rc == 0 && tls && t->cert != NULL) {
        rc = kafka_set(kc, "ssl.certificate.location", t->cert, err);
        if (rc == 0) {
            rc = kafka_set(kc, "ssl.key.location", t->key != NULL ? t->key : t->cert, err);
        }
        if (rc == 0 && t->key_password != NULL) {
            rc = kafka_set(kc, "ssl.key.password", t->key_password, err);
        }
    }
    if (rc == 0 && tls && t->ciphers != NULL) {
        rc = kafka_set(kc, "ssl.cipher.suites", t->ciphers, err);
    }
    if (rc == 0 && tls) {
        rc = kafka_set(kc, "enable.ssl.certificate.verification", verify ? "true" : "false",
                       err);
    }
    if (rc == 0 && tls) {
        rc = kafka_set(kc, "ssl.endpoint.identification.algorithm", verify ? "https" : "none",
                       err);
    }
    if (rc == 0 && sasl) {
        rc = kafka_set(kc, "sasl.mechanisms", kafka_sasl_names[c->sasl.mechanism], err);
        if (rc == 0) {
            rc = kafka_set(kc, "sasl.username", c->sasl.username, err);
        }
        if (rc == 0) {
            rc = kafka_set(kc, "sasl.password", c->sasl.password ? c->sasl.password : "", err);
        }
    }
    return rc;
}

/*
 * Builds the librdkafka configuration: junction's defaults, then `properties` (which may
 * override a default but not an owned key: check refused those), then what junction owns.
 * NULL with err on failure.
 */
rd_kafka_conf_t *jn_kafka__conf_build(struct jn_channel *ch, unsigned dir, struct jn_err *err)
{
    const struct kafka_conf *c = ch->conf;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char *servers = jn_kafka__bootstrap(c);
    char num[32];
    int rc = 0;

    if (kc == NULL || servers == NULL) {
        jn_free(servers);
        if (kc != NULL) {
            rd_kafka_conf_destroy(kc);
        }
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    rc = kafka_set(kc, "client.id", "junction", err);
    if (rc == 0 && dir == JN_DIR_IN) {
        /* A new group starts at the beginning: a broker trusted with data does not skip what
         * was written before it first joined. */
        rc = kafka_set(kc, "auto.offset.reset", "earliest", err);
        /* librdkafka prefetches up to 64 MiB by default; the journal is the buffer here, so
         * 16 MiB is plenty and keeps the heap small (properties: may raise it again). */
        if (rc == 0) {
            rc = kafka_set(kc, "queued.max.messages.kbytes", "16384", err);
        }
    }
    for (size_t i = 0; rc == 0 && i < c->properties.n; i++) {
        rc = kafka_set(kc, c->properties.k[i], c->properties.v[i] ? c->properties.v[i] : "",
                       err);
    }
    if (rc == 0) {
        rc = kafka_security_set(kc, c, err);
    }
    if (rc == 0) {
        rc = kafka_set(kc, "bootstrap.servers", servers, err);
    }
    if (rc == 0 && dir == JN_DIR_IN) {
        snprintf(num, sizeof(num), "%lld", c->commit_interval);
        rc = kafka_set(kc, "group.id", c->group != NULL ? c->group : "", err);
        if (rc == 0) {
            rc = kafka_set(kc, "enable.auto.offset.store", "false", err);
        }
        if (rc == 0) {
            rc = kafka_set(kc, "enable.auto.commit", "true", err);
        }
        if (rc == 0) {
            rc = kafka_set(kc, "auto.commit.interval.ms", num, err);
        }
    }
    if (rc == 0 && dir == JN_DIR_OUT) {
        snprintf(num, sizeof(num), "%lld", c->timeout);
        rc = kafka_set(kc, "enable.idempotence", "true", err);
        if (rc == 0) {
            rc = kafka_set(kc, "acks", "all", err);
        }
        if (rc == 0) {
            rc = kafka_set(kc, "message.timeout.ms", num, err);
        }
    }
    jn_free(servers);
    if (rc != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_conf_set_opaque(kc, ch);
    rd_kafka_conf_set_log_cb(kc, jn_kafka__log_cb);
    rd_kafka_conf_set_error_cb(kc, jn_kafka__error_cb);
    return kc;
}

static int kafka_syslog_to_jn(int level)
{
    /* librdkafka reports a refused connection at LOG_ERR; for a broker that retries by
     * itself that is a warning, not an error of junction's. */
    if (level <= 4) {
        return JN_LOG_WARN;
    }
    if (level == 5) {
        return JN_LOG_INFO;
    }
    return JN_LOG_DEBUG;
}

/* Called on librdkafka's threads: one jn_log_print, which is one write(2). */
void jn_kafka__log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const struct jn_channel *ch = rd_kafka_opaque(rk);
    int lvl = kafka_syslog_to_jn(level);

    if (ch != NULL) {
        jn_log_p(lvl, ch->log_prefix, "librdkafka %s: %s", fac, buf);
    }
}


/* librdkafka thread: its queue went from empty to non-empty. */
void jn_kafka__qev_cb(rd_kafka_t *rk, void *arg)
{
    (void)rk;
    event_active((struct event *)arg, EV_READ, 0);
}

void jn_kafka__error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct jn_channel *ch = opaque;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[KAFKA_ERRSTR];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        jn_ch_error(ch, "fatal error: %s: %s", rd_kafka_err2name(orig), buf);
        return;
    }
    jn_ch_warn(ch, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* ---- check ---- */

static bool kafka_header_name_ok(const char *s)
{
    if (s == NULL || *s == '\0') {
        return false;
    }
    for (; *s; s++) {
        if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127 || *s == ':') {
            return false;
        }
    }
    return true;
}

/* tls: through jn_tls_check (files loaded, key and password checked), minus what librdkafka
 * has no property for; sasl: needs its username and password. */
static int kafka_security_check(const struct kafka_conf *c, const struct jn_node *node,
                                struct jn_diag *d)
{
    const struct jn_node *tn = jn_node_get(node, "tls");
    const struct jn_node *sn = jn_node_get(node, "sasl");
    int errs = jn_tls_check(&c->tls, JN_TLS_CLIENT, jn_tls_on(&c->tls), node, "tls", "kafka", d);

    if (tn != NULL && jn_tls_on(&c->tls)) {
        static const char *const no[] = {"allowed_peers", "server_name", "ciphersuites", NULL};
        for (size_t i = 0; no[i] != NULL; i++) {
            if (jn_node_get(tn, no[i]) != NULL) {
                jn_diag_add(d, jn_node_pos(tn, no[i]), "kafka: tls: %s is not available for "
                            "Kafka (librdkafka has no setting for it): remove it", no[i]);
                errs++;
            }
        }
        if (c->tls.min_version == JN_TLS_V13) {
            jn_diag_add(d, jn_node_pos(tn, "min_version"), "kafka: tls: min_version 1.3 is "
                        "not available for Kafka (librdkafka has no setting for it)");
            errs++;
        }
    }
    if (sn != NULL) {
        if (c->sasl.username == NULL || c->sasl.username[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "sasl"), "kafka: sasl: username is required");
            errs++;
        }
        if (c->sasl.password == NULL || c->sasl.password[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "sasl"), "kafka: sasl: password is required "
                        "(an empty variable or file?)");
            errs++;
        }
        if (errs == 0 && !jn_tls_on(&c->tls)) {
            jn_diag_warn(d, jn_node_pos(node, "sasl"), "kafka: sasl: without tls: the "
                         "password crosses the network in the clear (SASL_PLAINTEXT)");
        }
    }
    return errs;
}

static int kafka_check(const void *vconf, unsigned dir, const struct jn_node *node,
                       struct jn_diag *d)
{
    const struct kafka_conf *c = vconf;
    const struct jn_node *pmap = jn_node_get(node, "properties");
    const struct jn_node *hmap = jn_node_get(node, "headers");
    rd_kafka_conf_t *kc;
    struct jn_err err;
    int errs = 0;

    for (size_t i = 0; i < c->brokers.n; i++) {
        if (c->brokers.v[i] == NULL || c->brokers.v[i][0] == '\0' ||
            strpbrk(c->brokers.v[i], ", \t") != NULL) {
            jn_diag_add(d, jn_node_pos(node, "brokers"),
                        "kafka: brokers: '%s' is not host:port (separate several with commas "
                        "or give a list)",
                        c->brokers.v[i] ? c->brokers.v[i] : "");
            errs++;
        }
    }
    if (c->brokers.n == 0) {
        jn_diag_add(d, jn_node_pos(node, "brokers"), "kafka: brokers: at least one host:port");
        errs++;
    }
    /* Each property on a scratch conf, so a typo is reported at its own line, not at start. */
    kc = rd_kafka_conf_new();
    for (size_t i = 0; kc != NULL && i < c->properties.n; i++) {
        const char *k = c->properties.k[i];
        const struct kafka_owned *o = kafka_owned_find(k, dir);
        const struct jn_pos *pos = pmap != NULL ? jn_node_pos(pmap, k)
                                                : jn_node_pos(node, "properties");
        if (o != NULL) {
            jn_diag_add(d, pos, "kafka: properties: %s is set by junction: %s", k, o->why);
            errs++;
            continue;
        }
        if ((jn_tls_on(&c->tls) && kafka_in_list(kafka_tls_keys, k)) ||
            (c->sasl.username != NULL && kafka_in_list(kafka_sasl_keys, k))) {
            jn_diag_add(d, pos, "kafka: properties: %s is set by the channel's %s: block; set "
                        "it there, not in both", k,
                        kafka_in_list(kafka_tls_keys, k) && jn_tls_on(&c->tls) ? "tls" : "sasl");
            errs++;
            continue;
        }
        jn_err_clear(&err);
        if (kafka_set(kc, k, c->properties.v[i] ? c->properties.v[i] : "", &err) != 0) {
            jn_diag_add(d, pos, "kafka: properties: %s", err.msg);
            errs++;
        }
    }
    if (kc != NULL) {
        rd_kafka_conf_destroy(kc);
    }
    errs += kafka_security_check(c, node, d);
    if (dir == JN_DIR_IN) {
        if (c->topics.n == 0) {
            jn_diag_add(d, jn_node_pos(node, "topics"), "kafka: topics: at least one topic");
            errs++;
        }
        for (size_t i = 0; i < c->topics.n; i++) {
            if (c->topics.v[i] == NULL || c->topics.v[i][0] == '\0') {
                jn_diag_add(d, jn_node_pos(node, "topics"), "kafka: topics: an empty topic name");
                errs++;
            }
        }
        if (c->group == NULL || c->group[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "group"), "kafka: group: must not be empty");
            errs++;
        }
        if (c->header_prefix != NULL && c->header_prefix[0] != '\0' &&
            !kafka_header_name_ok(c->header_prefix)) {
            jn_diag_add(d, jn_node_pos(node, "header_prefix"),
                        "kafka: header_prefix: '%s' can't start a header name",
                        c->header_prefix);
            errs++;
        }
        return errs;
    }
    jn_err_clear(&err);
    if (c->topic == NULL || c->topic[0] == '\0') {
        jn_diag_add(d, jn_node_pos(node, "topic"), "kafka: topic: must not be empty");
        errs++;
    } else if (jn_template_check(c->topic, &err) != 0) {
        jn_diag_add(d, jn_node_pos(node, "topic"), "kafka: topic: %s", err.msg);
        errs++;
    }
    jn_err_clear(&err);
    if (c->key != NULL && jn_template_check(c->key, &err) != 0) {
        jn_diag_add(d, jn_node_pos(node, "key"), "kafka: key: %s", err.msg);
        errs++;
    }
    for (size_t i = 0; i < c->headers.n; i++) {
        const struct jn_pos *pos = hmap != NULL ? jn_node_pos(hmap, c->headers.k[i])
                                                : jn_node_pos(node, "headers");
        jn_err_clear(&err);
        if (!kafka_header_name_ok(c->headers.k[i])) {
            jn_diag_add(d, pos, "kafka: headers: '%s' is not a valid header name",
                        c->headers.k[i]);
            errs++;
        } else if (jn_template_check(c->headers.v[i] ? c->headers.v[i] : "", &err) != 0) {
            jn_diag_add(d, pos, "kafka: headers: %s: %s", c->headers.k[i], err.msg);
            errs++;
        }
    }
    if (c->id_header != NULL && c->id_header[0] != '\0' &&
        !kafka_header_name_ok(c->id_header)) {
        jn_diag_add(d, jn_node_pos(node, "id_header"), "kafka: id_header: '%s' is not a valid "
                    "header name", c->id_header);
        errs++;
    }
    return errs;
}

/* ================================ the def ================================ */

const struct jn_channel_def jn_channel_kafka = {
    .name = "kafka",
    .desc = "Kafka: a consumer group member (in) and an idempotent producer (out), librdkafka",
    .opts = kafka_opts,
    .conf_size = sizeof(struct kafka_conf),
    .check = kafka_check, /* properties on a scratch conf; owned keys; templates */
    .in = &jn_kafka__in,
    .out = &jn_kafka__out,
};
