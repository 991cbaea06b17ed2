/*
 * kafka: a consumer in a consumer group (IN) and an idempotent producer (OUT), on librdkafka.
 *
 * IN subscribes to `topics` as member of `group`. Offsets are stored by hand
 * (enable.auto.offset.store=false): the offset after a message is stored only once the broker
 * has made that message durable (the jn_ingest() callback with rc 0), and only when every
 * earlier message of its partition is durable too; librdkafka's auto-commit then commits what
 * was stored. So a crash, a kill -9 or a rebalance can make a message come again, never go
 * missing. When the journal refuses input (JN_EFULL: full disk) the partition is paused at the
 * first refused offset, and after `pause_retry` it is sought back there and resumed: nothing
 * is skipped. Modelled on Fluent Bit's in_kafka (poll on the engine, rebalance handled by us)
 * and Redpanda Connect's kafka_franz input (commit only what the pipeline acknowledged).
 *
 * OUT produces each message with enable.idempotence=true and acks=all; topic, key and headers
 * come from templates. A delivery is finished by librdkafka's delivery report: success is
 * JN_SEND_OK, and the error table in kout_map() says which failures are retried (the network,
 * timeouts, a leader moving) and which are dead-lettered at once (a message the cluster will
 * never take: too large, invalid, not authorised, an unknown topic).
 *
 * Threads: librdkafka runs its own threads (one per broker connection, a main thread, timers).
 * Nothing of ours runs on them except two trivial callbacks: the queue event callback, which
 * only calls event_active() on our wake event (the broker turned evthread_use_pthreads() on),
 * and the log callback, which writes one line with jn_log_print() (one write(2), thread-safe).
 * Everything else, consumer_poll with timeout 0, the rebalance callback, delivery reports,
 * offset stores, pause/seek/resume, runs on the broker's loop thread. A 100 ms timer polls as
 * well, so a wake-up that librdkafka does not signal (its callback fires only when a queue goes
 * from empty to non-empty) costs at most 100 ms, never a stall.
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

/* The safety-net poll: bounds the cost of a wake-up librdkafka did not signal. */
#define KAFKA_TICK_MS 100
/* Messages or reports handled per loop turn before the loop gets a turn of its own. */
#define KAFKA_POLL_BUDGET 500
/* librdkafka's error strings are short; this also bounds a reason we log. */
#define KAFKA_ERRSTR 512

struct kafka_conf {
    struct jn_strlist brokers;
    struct jn_strmap properties;
    /* IN */
    struct jn_strlist topics;
    char *group;
    char *header_prefix;
    long long max_in_flight;
    long long pause_retry;       /* ms */
    long long commit_interval;   /* ms */
    /* OUT */
    char *topic;                 /* template */
    char *key;                   /* template; NULL or renders empty: no key */
    struct jn_strmap headers;    /* name -> template */
    char *id_header;             /* "" = none */
    long long timeout;           /* ms: message.timeout.ms */
};

static const struct jn_opt kafka_opts[] = {
    JN_OPT_STRLIST("brokers", NULL, JN_OPT_REQUIRED | JN_OPT_COMMAS, struct kafka_conf,
                   brokers, "Bootstrap servers, host:port: a list, or one string with commas "
                   "as librdkafka's bootstrap.servers takes it (a:9092,b:9092)"),
    JN_OPT_STRMAP("properties", 0, struct kafka_conf, properties,
                  "librdkafka properties passed to rd_kafka_conf_set as they are (SASL, SSL, "
                  "tuning), checked at load; values of keys containing password, secret or key "
                  "are never logged. Keys junction sets itself are refused (see docs/kafka.md)"),
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

/* ---- shared ---- */

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

/*
 * Builds the librdkafka configuration: junction's defaults, then `properties` (which may
 * override a default but not an owned key: check refused those), then what junction owns.
 * NULL with err on failure.
 */
static rd_kafka_conf_t *kafka_conf_build(const struct kafka_conf *c, unsigned dir,
                                         struct jn_err *err)
{
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
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const struct jn_channel *ch = rd_kafka_opaque(rk);
    int lvl = kafka_syslog_to_jn(level);

    if (ch != NULL) {
        jn_log_p(lvl, ch->log_prefix, "librdkafka %s: %s", fac, buf);
    }
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
        jn_err_clear(&err);
        if (kafka_set(kc, k, c->properties.v[i] ? c->properties.v[i] : "", &err) != 0) {
            jn_diag_add(d, pos, "kafka: properties: %s", err.msg);
            errs++;
        }
    }
    if (kc != NULL) {
        rd_kafka_conf_destroy(kc);
    }
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

/* ================================ IN ================================ */

enum { KIN_PENDING = 0, KIN_DONE = 1, KIN_REFUSED = 2 };

struct kin_part;

/* One message handed to jn_ingest(); its address is the callback argument. */
struct kin_rec {
    struct kin_rec *next;     /* in its partition's list, in offset order */
    struct kin_part *p;
    struct jn_ticket *t;      /* NULL once answered */
    int64_t offset;
    int state;                /* KIN_* */
};

/* One partition we were assigned. Kept after a revoke until its last record is answered. */
struct kin_part {
    struct kin_part *next;
    struct kin_state *st;
    char *topic;
    int32_t partition;
    struct kin_rec *head, *tail;
    size_t inflight;
    int64_t rewind;           /* -1, or the first refused offset: nothing at or past it is
                               * stored, and consumption restarts there */
    int64_t to_store;         /* -1, or the next offset to hand to rd_kafka_offsets_store */
    bool paused;
    bool revoked;
};

struct kin_state {
    struct jn_channel *ch;
    const struct kafka_conf *conf;
    rd_kafka_conf_t *kconf;   /* built by init, consumed by start */
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    struct event *wake;       /* librdkafka's queue has something: poll */
    struct event *tick;       /* the safety-net poll */
    struct event *store_ev;   /* offsets to store */
    struct event *resume_timer;
    struct kin_part *parts;
    size_t inflight;
    /* Records allowed in flight: max_in_flight, cut to 1 by a refusal and doubled by each
     * durable record after it (TCP's slow start). The journal commits a group at once and
     * refuses all of it when it does not fit, so resuming with a whole fetch could be refused
     * forever where one record at a time gets through. */
    size_t window;
    bool stopping;
    bool closing;             /* destroy: the rebalance callback only unassigns */
    bool cooperative;
    uint64_t n_refused_logged;
};

/* ---- headers (kafka_int.h: no librdkafka types, fuzzed alone) ---- */

int jn_kafka__b64(struct jn_buf *b, const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        char q[4];
        if (i + 1 < n) {
            v |= (unsigned)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        if (jn_buf_append(b, q, 4) != 0) {
            return JN_ENOMEM;
        }
    }
    return 0;
}

/*
 * Adds name = bytes as a header. Junction headers are strings: bytes with a NUL in them would
 * be cut, so they go base64-encoded under name + "-base64" instead.
 */
static int kin_hdr_bytes(struct jn_msg *m, const char *name, const void *v, size_t n)
{
    struct jn_buf b = JN_BUF_INIT;
    int rc;

    if (v == NULL) {
        n = 0;
    }
    if (n > 0 && memchr(v, '\0', n) != NULL) {
        rc = jn_buf_printf(&b, "%s-base64", name);
        if (rc == 0) {
            char *hname = jn_buf_steal(&b);
            rc = hname != NULL ? jn_kafka__b64(&b, v, n) : JN_ENOMEM;
            if (rc == 0) {
                rc = jn_msg_header_add(m, hname, b.p != NULL ? b.p : "");
            }
            jn_free(hname);
        }
    } else {
        rc = jn_buf_append(&b, n > 0 ? v : "", n);
        if (rc == 0) {
            rc = jn_msg_header_add(m, name, b.p != NULL ? b.p : "");
        }
    }
    jn_buf_reset(&b);
    return rc;
}

static int kin_hdr_num(struct jn_msg *m, const char *name, long long v)
{
    char s[32];

    snprintf(s, sizeof(s), "%lld", v);
    return jn_msg_header_add(m, name, s);
}

int jn_kafka__map_headers(struct jn_msg *m, const char *prefix, const struct jn_kafka_rec *rec,
                          const struct jn_kafka_hdr *hdrs, size_t n)
{
    struct jn_buf hn = JN_BUF_INIT;
    int rc;

    if (prefix == NULL) {
        prefix = "";
    }
    rc = jn_msg_header_add(m, "kafka-topic", rec->topic != NULL ? rec->topic : "");
    if (rc == 0) {
        rc = kin_hdr_num(m, "kafka-partition", rec->partition);
    }
    if (rc == 0) {
        rc = kin_hdr_num(m, "kafka-offset", (long long)rec->offset);
    }
    if (rc == 0 && rec->key != NULL) {
        rc = kin_hdr_bytes(m, "kafka-key", rec->key, rec->keylen);
    }
    if (rc == 0 && rec->ts >= 0) {
        rc = kin_hdr_num(m, "kafka-timestamp", (long long)rec->ts);
        if (rc == 0) {
            rc = jn_msg_header_add(m, "kafka-timestamp-type",
                                   rec->ts_log_append ? "log-append" : "create");
        }
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *name = hdrs[i].name != NULL ? hdrs[i].name : "";
        /* Without a prefix a record could pose as our own kafka-* headers; and a header
         * with no name at all could not be named by a template. */
        if (prefix[0] == '\0' && (name[0] == '\0' || strncasecmp(name, "kafka-", 6) == 0)) {
            continue;
        }
        hn.len = 0;
        rc = jn_buf_printf(&hn, "%s%s", prefix, name);
        if (rc == 0) {
            rc = kin_hdr_bytes(m, hn.p, hdrs[i].value, hdrs[i].len);
        }
    }
    jn_buf_reset(&hn);
    return rc;
}

/* The record's headers as librdkafka holds them: a borrowed view, or NULL with *n = 0 when
 * there are none. NULL with *n > 0 when out of memory. */
static struct jn_kafka_hdr *kin_hdrs(const rd_kafka_message_t *rkm, size_t *n)
{
    rd_kafka_headers_t *hdrs = NULL;
    struct jn_kafka_hdr *v;
    size_t cnt;

    *n = 0;
    /* The headers stay owned by the message: rd_kafka_message_headers() lends them. */
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        (cnt = rd_kafka_header_cnt(hdrs)) == 0) {
        return NULL;
    }
    *n = cnt;
    v = jn_calloc(cnt, sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < cnt; i++) {
        if (rd_kafka_header_get_all(hdrs, i, &v[i].name, &v[i].value, &v[i].len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            *n = i;
            break;
        }
    }
    return v;
}

/* The junction message for a Kafka record; NULL when out of memory. */
static struct jn_msg *kin_msg(struct kin_state *st, const rd_kafka_message_t *rkm)
{
    struct jn_msg *m = jn_msg_new(st->ch->name, rkm->payload != NULL ? rkm->payload : "",
                                  rkm->payload != NULL ? rkm->len : 0);
    rd_kafka_timestamp_type_t tstype;
    struct jn_kafka_rec rec;
    struct jn_kafka_hdr *hdrs;
    size_t n;
    int rc;

    if (m == NULL) {
        return NULL;
    }
    rec.topic = rd_kafka_topic_name(rkm->rkt);
    rec.partition = rkm->partition;
    rec.offset = rkm->offset;
    rec.key = rkm->key;
    rec.keylen = rkm->key_len;
    rec.ts = rd_kafka_message_timestamp(rkm, &tstype);
    rec.ts_log_append = tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME;
    hdrs = kin_hdrs(rkm, &n);
    rc = hdrs == NULL && n > 0 ? JN_ENOMEM
                               : jn_kafka__map_headers(m, st->conf->header_prefix, &rec, hdrs, n);
    jn_free(hdrs);
    if (rc != 0) {
        jn_msg_unref(&m);
    }
    return m;
}

/* ---- partitions and offsets ---- */

static struct kin_part *kin_part_find(struct kin_state *st, const char *topic, int32_t part)
{
    for (struct kin_part *p = st->parts; p != NULL; p = p->next) {
        if (!p->revoked && p->partition == part && strcmp(p->topic, topic) == 0) {
            return p;
        }
    }
    return NULL;
}

static void kin_part_free(struct kin_state *st, struct kin_part *p)
{
    for (struct kin_part **pp = &st->parts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    while (p->head != NULL) {
        struct kin_rec *r = p->head;
        p->head = r->next;
        if (r->t != NULL) {
            jn_ingest_forget(r->t);
        }
        jn_free(r);
    }
    jn_free(p->topic);
    jn_free(p);
}

/* Hands every pending offset to librdkafka, in one call. */
static void kin_store_flush(struct kin_state *st)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t err;

    for (struct kin_part *p = st->parts; p != NULL; p = p->next) {
        if (p->to_store < 0) {
            continue;
        }
        if (!p->revoked && st->rk != NULL) {
            if (l == NULL && (l = rd_kafka_topic_partition_list_new(4)) == NULL) {
                /* Not stored now: a later store covers it (offsets only grow). */
                return;
            }
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->to_store;
        }
        p->to_store = -1;
    }
    if (l == NULL) {
        return;
    }
    err = rd_kafka_offsets_store(st->rk, l);
    for (int i = 0; i < l->cnt; i++) {
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* Not assigned any more: the next owner consumes it again (at-least-once). */
            jn_ch_debug(st->ch, "offset %" PRId64 " of %s[%" PRId32 "] not stored: %s",
                        l->elems[i].offset, l->elems[i].topic, l->elems[i].partition,
                        rd_kafka_err2str(l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR
                                         ? l->elems[i].err : err));
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void kin_store_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kin_store_flush(arg);
}

/*
 * Drops the answered records at the head of p's list. Each durable one below the rewind point
 * moves the offset to store to just after it; a refused one (or anything at or past the
 * rewind point) moves nothing, so an offset is never stored past a message that is not
 * durable. A record still pending stops the walk: what follows it waits for it.
 */
static void kin_part_advance(struct kin_state *st, struct kin_part *p)
{
    bool stored = false;

    while (p->head != NULL && p->head->state != KIN_PENDING) {
        struct kin_rec *r = p->head;
        if (r->state == KIN_DONE && (p->rewind < 0 || r->offset < p->rewind)) {
            p->to_store = r->offset + 1;
            stored = true;
        }
        p->head = r->next;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        jn_free(r);
    }
    if (stored && !p->revoked) {
        event_active(st->store_ev, EV_WRITE, 0);
    }
}

static rd_kafka_topic_partition_list_t *kin_one(struct kin_part *p, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    if (l != NULL) {
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = offset;
    }
    return l;
}

static void kin_arm_resume(struct kin_state *st)
{
    struct timeval tv = {(time_t)(st->conf->pause_retry / 1000),
                         (suseconds_t)((st->conf->pause_retry % 1000) * 1000)};

    if (!evtimer_pending(st->resume_timer, NULL)) {
        evtimer_add(st->resume_timer, &tv);
    }
}

/* A message of p was refused: stop storing at its offset and pause p until resume. */
static void kin_part_refused(struct kin_state *st, struct kin_part *p, int64_t offset, int rc,
                             const char *why)
{
    if (p->rewind < 0 || offset < p->rewind) {
        p->rewind = offset;
    }
    if (p->revoked || st->rk == NULL) {
        return;
    }
    if (!p->paused) {
        rd_kafka_topic_partition_list_t *l = kin_one(p, offset);
        if (l != NULL) {
            rd_kafka_pause_partitions(st->rk, l);
            rd_kafka_topic_partition_list_destroy(l);
        }
        p->paused = true;
        if (rc == JN_ESTOPPED) {
            jn_ch_debug(st->ch, "%s[%" PRId32 "] paused at offset %" PRId64 ": %s", p->topic,
                        p->partition, offset, why);
        } else {
            jn_ch_warn(st->ch, "%s[%" PRId32 "] paused at offset %" PRId64 ": %s; trying "
                       "again every %lld ms", p->topic, p->partition, offset, why,
                       st->conf->pause_retry);
        }
    }
    if (rc != JN_ESTOPPED) {
        kin_arm_resume(st);
    }
}

/* Seeks each paused partition back to its first refused offset and resumes it, once every
 * record of it has been answered (so no late answer can store past the seek). */
static void kin_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kin_state *st = arg;
    bool again = false;

    (void)fd;
    (void)what;
    if (st->stopping || st->rk == NULL) {
        return;
    }
    for (struct kin_part *p = st->parts; p != NULL; p = p->next) {
        rd_kafka_topic_partition_list_t *l;
        rd_kafka_error_t *e;
        if (p->revoked || p->rewind < 0) {
            continue;
        }
        if (p->head != NULL) {
            again = true;
            continue;
        }
        l = kin_one(p, p->rewind);
        if (l == NULL) {
            again = true;
            continue;
        }
        /* Seek first: it drops what was fetched past the refused offset, and resume then
         * fetches from the sought position. 0 = asynchronous, never blocks the loop. */
        e = rd_kafka_seek_partitions(st->rk, l, 0);
        if (e != NULL) {
            jn_ch_warn(st->ch, "%s[%" PRId32 "] seek to %" PRId64 " failed: %s; trying again",
                       p->topic, p->partition, p->rewind, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rd_kafka_topic_partition_list_destroy(l);
            again = true;
            continue;
        }
        rd_kafka_resume_partitions(st->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        jn_ch_info(st->ch, "%s[%" PRId32 "] resumed at offset %" PRId64, p->topic,
                   p->partition, p->rewind);
        p->rewind = -1;
        p->paused = false;
    }
    if (again) {
        kin_arm_resume(st);
    }
}

/* The broker's answer for one record (loop thread). */
static void kin_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct kin_rec *r = arg;
    struct kin_part *p = r->p;
    struct kin_state *st = p->st;
    bool was_full = st->inflight >= st->window;

    (void)msg;
    r->t = NULL;
    p->inflight--;
    st->inflight--;
    if (rc == 0) {
        r->state = KIN_DONE;
        if (st->window < (size_t)st->conf->max_in_flight) {
            st->window = st->window * 2 < (size_t)st->conf->max_in_flight
                             ? st->window * 2 : (size_t)st->conf->max_in_flight;
        }
    } else {
        r->state = KIN_REFUSED;
        st->window = 1;
        kin_part_refused(st, p, r->offset, rc,
                         err != NULL && err->msg[0] ? err->msg : jn_strerror(rc));
    }
    kin_part_advance(st, p);
    if (p->revoked && p->inflight == 0) {
        kin_part_free(st, p);
    }
    if (was_full && st->wake != NULL) {
        event_active(st->wake, EV_READ, 0);
    }
}

/* One record from the consumer: hand it to the broker, unless its partition is rewinding. */
static void kin_record(struct kin_state *st, rd_kafka_message_t *rkm)
{
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    struct kin_part *p = kin_part_find(st, topic, rkm->partition);
    struct kin_rec *r;
    struct jn_msg *m;

    if (p == NULL) {
        jn_ch_debug(st->ch, "%s[%" PRId32 "]@%" PRId64 " dropped: partition not assigned",
                    topic, rkm->partition, rkm->offset);
        return;
    }
    if (p->rewind >= 0) {
        /* Fetched before the pause took effect; it comes again after the seek. */
        return;
    }
    r = jn_calloc(1, sizeof(*r));
    m = r != NULL ? kin_msg(st, rkm) : NULL;
    if (r == NULL || m == NULL) {
        jn_free(r);
        kin_part_refused(st, p, rkm->offset, JN_ENOMEM, "out of memory");
        return;
    }
    r->p = p;
    r->offset = rkm->offset;
    if (p->tail != NULL) {
        p->tail->next = r;
    } else {
        p->head = r;
    }
    p->tail = r;
    p->inflight++;
    st->inflight++;
    jn_ch_debug(st->ch, "%s[%" PRId32 "]@%" PRId64 ": %zu bytes", topic, rkm->partition,
                rkm->offset, rkm->len);
    r->t = jn_ingest(st->ch, m, kin_accepted, r);
    if (r->t == NULL) {
        /* No callback will come: answer it as a refusal ourselves. */
        struct jn_err e;
        jn_err_set(&e, JN_ENOMEM, "out of memory");
        kin_accepted(r, JN_ENOMEM, NULL, &e);
    }
}

static void kin_poll(struct kin_state *st)
{
    for (int n = 0; n < KAFKA_POLL_BUDGET; n++) {
        rd_kafka_message_t *rkm;
        if (st->stopping || st->rk == NULL || st->inflight >= st->window) {
            return;
        }
        rkm = rd_kafka_consumer_poll(st->rk, 0);
        if (rkm == NULL) {
            return;
        }
        if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            kin_record(st, rkm);
        } else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            jn_ch_warn(st->ch, "consumer: %s%s%s", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "",
                       rkm->rkt ? ": " : "", rd_kafka_message_errstr(rkm));
        }
        rd_kafka_message_destroy(rkm);
    }
    /* Budget spent with more to come: continue on the next loop turn. */
    event_active(st->wake, EV_READ, 0);
}

static void kin_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kin_poll(arg);
}

/* librdkafka thread: its queue went from empty to non-empty. */
static void kafka_qev_cb(rd_kafka_t *rk, void *arg)
{
    (void)rk;
    event_active((struct event *)arg, EV_READ, 0);
}

static void kin_log_list(struct kin_state *st, const char *what,
                         const rd_kafka_topic_partition_list_t *l)
{
    struct jn_buf b = JN_BUF_INIT;

    for (int i = 0; i < l->cnt; i++) {
        if (jn_buf_printf(&b, "%s%s[%" PRId32 "]", i ? " " : "", l->elems[i].topic,
                          l->elems[i].partition) != 0) {
            break;
        }
    }
    jn_ch_info(st->ch, "%s %d partition(s)%s%s", what, l->cnt, l->cnt ? ": " : "",
               b.p != NULL ? b.p : "");
    jn_buf_reset(&b);
}

/* Forgets partitions; each is freed once its last record has been answered. */
static void kin_revoke(struct kin_state *st, const rd_kafka_topic_partition_list_t *l)
{
    struct kin_part *p = st->parts;

    while (p != NULL) {
        struct kin_part *next = p->next;
        bool hit = l == NULL;
        for (int i = 0; l != NULL && i < l->cnt && !hit; i++) {
            hit = l->elems[i].partition == p->partition && strcmp(l->elems[i].topic,
                                                                  p->topic) == 0;
        }
        if (hit && !p->revoked) {
            p->revoked = true;
            if (p->inflight == 0) {
                kin_part_free(st, p);
            }
        }
        p = next;
    }
}

static void kin_assign(struct kin_state *st, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++) {
        struct kin_part *p;
        if (kin_part_find(st, l->elems[i].topic, l->elems[i].partition) != NULL) {
            continue;
        }
        p = jn_calloc(1, sizeof(*p));
        if (p == NULL || (p->topic = jn_strdup(l->elems[i].topic)) == NULL) {
            /* Its records are dropped as unassigned, and so never stored: they come again
             * with the next rebalance. Say so loudly. */
            jn_ch_error(st->ch, "out of memory tracking %s[%" PRId32 "]: its messages are "
                        "skipped until the next rebalance", l->elems[i].topic,
                        l->elems[i].partition);
            jn_free(p);
            continue;
        }
        p->st = st;
        p->partition = l->elems[i].partition;
        p->rewind = -1;
        p->to_store = -1;
        p->next = st->parts;
        st->parts = p;
    }
}

/*
 * Rebalance (loop thread, inside consumer_poll; or inside consumer_close at destroy). Before
 * partitions go, every offset already earned is handed to librdkafka, which commits stored
 * offsets of revoked partitions itself (enable.auto.commit). Records still in the journal's
 * hands when their partition goes are durable soon but their offsets are not stored: the next
 * owner consumes them again. That is the price of not holding up the group: at-least-once.
 */
static void kin_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct jn_channel *ch = opaque;
    struct kin_state *st = ch->state;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && !st->closing) {
        kin_log_list(st, "assigned", parts);
        kin_assign(st, parts);
        if (st->cooperative) {
            e = rd_kafka_incremental_assign(rk, parts);
        } else {
            r = rd_kafka_assign(rk, parts);
        }
    } else {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
            kin_log_list(st, rd_kafka_assignment_lost(rk) ? "lost" : "revoked", parts);
        } else if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
            jn_ch_warn(st->ch, "rebalance failed: %s", rd_kafka_err2str(err));
        }
        kin_store_flush(st);
        kin_revoke(st, err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? parts : NULL);
        if (st->cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
            e = rd_kafka_incremental_unassign(rk, parts);
        } else {
            r = rd_kafka_assign(rk, NULL);
        }
    }
    if (e != NULL) {
        jn_ch_warn(st->ch, "rebalance: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (r != RD_KAFKA_RESP_ERR_NO_ERROR) {
        jn_ch_warn(st->ch, "rebalance: %s", rd_kafka_err2str(r));
    }
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
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

static void kin_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kin_state *st = arg;

    (void)fd;
    (void)what;
    kin_poll(st);
}

static int kin_init(struct jn_channel *ch, struct jn_err *err)
{
    struct kin_state *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    st->conf = ch->conf;
    st->window = (size_t)st->conf->max_in_flight;
    st->kconf = kafka_conf_build(st->conf, JN_DIR_IN, err);
    if (st->kconf == NULL) {
        jn_free(st);
        return err->code != 0 ? err->code : JN_EINVAL;
    }
    rd_kafka_conf_set_opaque(st->kconf, ch);
    rd_kafka_conf_set_log_cb(st->kconf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(st->kconf, kafka_error_cb);
    rd_kafka_conf_set_rebalance_cb(st->kconf, kin_rebalance_cb);
    ch->state = st;
    return 0;
}

static int kin_start(struct jn_channel *ch, struct jn_err *err)
{
    struct kin_state *st = ch->state;
    const struct kafka_conf *c = st->conf;
    char errstr[KAFKA_ERRSTR];
    struct timeval tick = {0, KAFKA_TICK_MS * 1000};
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t r;

    st->wake = event_new(ch->base, -1, 0, kin_wake_cb, st);
    st->tick = event_new(ch->base, -1, EV_PERSIST, kin_tick_cb, st);
    st->store_ev = event_new(ch->base, -1, 0, kin_store_cb, st);
    st->resume_timer = evtimer_new(ch->base, kin_resume_cb, st);
    if (st->wake == NULL || st->tick == NULL || st->store_ev == NULL ||
        st->resume_timer == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    /* rd_kafka_new takes the conf only on success. */
    st->rk = rd_kafka_new(RD_KAFKA_CONSUMER, st->kconf, errstr, sizeof(errstr));
    if (st->rk == NULL) {
        return jn_err_set(err, JN_EINVAL, "cannot create the consumer: %s", errstr);
    }
    st->kconf = NULL;
    st->cooperative = strcmp(rd_kafka_rebalance_protocol(st->rk), "COOPERATIVE") == 0;
    /* Everything (rebalances, errors, logs routed to the queue) arrives on the consumer
     * queue, served by consumer_poll on the loop. */
    rd_kafka_poll_set_consumer(st->rk);
    st->q = rd_kafka_queue_get_consumer(st->rk);
    if (st->q == NULL) {
        return jn_err_set(err, JN_EIO, "no consumer queue");
    }
    rd_kafka_queue_cb_event_enable(st->q, kafka_qev_cb, st->wake);
    topics = rd_kafka_topic_partition_list_new((int)c->topics.n);
    if (topics == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < c->topics.n; i++) {
        rd_kafka_topic_partition_list_add(topics, c->topics.v[i], RD_KAFKA_PARTITION_UA);
    }
    r = rd_kafka_subscribe(st->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (r != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return jn_err_set(err, JN_EINVAL, "cannot subscribe: %s", rd_kafka_err2str(r));
    }
    evtimer_add(st->tick, &tick);
    jn_ch_info(ch, "consuming %zu topic(s) as group '%s'%s", c->topics.n, c->group,
               st->cooperative ? " (cooperative rebalancing)" : "");
    return 0;
}

/* No new records; answers that still come store their offsets (destroy commits them). */
static void kin_stop(struct jn_channel *ch)
{
    struct kin_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopping = true;
    if (st->tick != NULL) {
        evtimer_del(st->tick);
    }
    if (st->resume_timer != NULL) {
        evtimer_del(st->resume_timer);
    }
}

static void kin_destroy(struct jn_channel *ch)
{
    struct kin_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopping = true;
    if (st->rk != NULL) {
        rd_kafka_resp_err_t r;
        kin_store_flush(st);
        /* Blocks, but the loop has stopped: commit what was earned, then leave the group so
         * the partitions move to the other members at once instead of after the session
         * timeout. close() runs the rebalance callback, which only unassigns now. */
        r = rd_kafka_commit(st->rk, NULL, 0);
        if (r != RD_KAFKA_RESP_ERR_NO_ERROR && r != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            jn_ch_warn(ch, "final commit: %s (those messages will be consumed again)",
                       rd_kafka_err2str(r));
        }
        st->closing = true;
        r = rd_kafka_consumer_close(st->rk);
        if (r != RD_KAFKA_RESP_ERR_NO_ERROR) {
            jn_ch_warn(ch, "closing the consumer: %s", rd_kafka_err2str(r));
        }
    }
    if (st->q != NULL) {
        rd_kafka_queue_cb_event_enable(st->q, NULL, NULL);
        rd_kafka_queue_destroy(st->q);
    }
    if (st->rk != NULL) {
        rd_kafka_destroy(st->rk);
    }
    if (st->kconf != NULL) {
        rd_kafka_conf_destroy(st->kconf);
    }
    while (st->parts != NULL) {
        kin_part_free(st, st->parts);
    }
    if (st->wake != NULL) {
        event_free(st->wake);
    }
    if (st->tick != NULL) {
        event_free(st->tick);
    }
    if (st->store_ev != NULL) {
        event_free(st->store_ev);
    }
    if (st->resume_timer != NULL) {
        event_free(st->resume_timer);
    }
    jn_free(st);
    ch->state = NULL;
}

/* ================================ OUT ================================ */

/* One produce in flight; the librdkafka message's opaque. */
struct kout_rec {
    struct kout_rec *prev, *next;
    struct jn_delivery *d;    /* NULL once finished (destroy) */
    struct jn_msg *msg;       /* our reference: librdkafka points into its payload */
};

struct kout_state {
    struct jn_channel *ch;
    const struct kafka_conf *conf;
    rd_kafka_conf_t *kconf;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    struct event *wake;
    struct event *tick;
    struct kout_rec *recs;
    bool stopping;
};

/*
 * The outcome of a librdkafka error, for a delivery report or a failed produce call.
 *
 *   REJECT (dead-letter now; the same message would fail the same way):
 *     MSG_SIZE_TOO_LARGE (local or broker), INVALID_MSG / CORRUPT_MESSAGE, INVALID_MSG_SIZE,
 *     RECORD_LIST_TOO_LARGE, INVALID_RECORD, TOPIC_EXCEPTION (an invalid topic name),
 *     TOPIC_AUTHORIZATION_FAILED, _UNKNOWN_TOPIC and UNKNOWN_TOPIC_OR_PART (the topic does not
 *     exist and the cluster will not create it), _UNKNOWN_PARTITION, _INVALID_ARG,
 *     UNSUPPORTED_FOR_MESSAGE_FORMAT (headers to a pre-0.11 broker), POLICY_VIOLATION.
 *   RETRY (back off, try again): everything else: the network (_TRANSPORT, _ALL_BROKERS_DOWN),
 *     _MSG_TIMED_OUT, _QUEUE_FULL, leader changes, NOT_ENOUGH_REPLICAS, _FATAL (the producer
 *     is restarted), _PURGE_*, and authentication and cluster authorisation failures, which a
 *     person fixes for the whole channel, so its messages wait instead of all dead-lettering.
 */
static enum jn_send_result kout_map(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return JN_SEND_OK;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return JN_SEND_REJECT;
    default:
        return JN_SEND_RETRY;
    }
}

/* Finishes d with librdkafka's answer (the broker logs a failed attempt). */
static void kout_finish(struct jn_delivery *d, rd_kafka_resp_err_t kerr, const char *what)
{
    enum jn_send_result r = kout_map(kerr);
    char reason[KAFKA_ERRSTR];

    if (r == JN_SEND_OK) {
        jn_delivery_done(d, JN_SEND_OK, NULL);
        return;
    }
    snprintf(reason, sizeof(reason), "%s%s%s: %s", what ? what : "", what ? ": " : "",
             rd_kafka_err2name(kerr), rd_kafka_err2str(kerr));
    jn_delivery_done(d, r, reason);
}

static void kout_unlink(struct kout_state *st, struct kout_rec *r)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        st->recs = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    r->prev = r->next = NULL;
}

/* Delivery report (loop thread, from rd_kafka_poll). */
static void kout_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    struct jn_channel *ch = opaque;
    struct kout_state *st = ch->state;
    struct kout_rec *r = rkm->_private;
    struct jn_delivery *d;
    char id[JN_ID_LEN + 1];

    (void)rk;
    if (r == NULL) {
        return;
    }
    kout_unlink(st, r);
    d = r->d;
    memcpy(id, r->msg->id, sizeof(id));
    if (d != NULL && rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        jn_ch_debug(ch, "msg=%s -> %s[%" PRId32 "]@%" PRId64, id, rd_kafka_topic_name(rkm->rkt),
                    rkm->partition, rkm->offset);
    }
    jn_msg_unref(&r->msg);
    jn_free(r);
    /* Last: done() may send the next message from in here. */
    if (d != NULL) {
        kout_finish(d, rkm->err, NULL);
    }
}

static void kout_poll(struct kout_state *st)
{
    for (int n = 0; n < KAFKA_POLL_BUDGET && st->rk != NULL; n++) {
        if (rd_kafka_poll(st->rk, 0) == 0) {
            return;
        }
    }
    if (st->rk != NULL) {
        event_active(st->wake, EV_READ, 0);
    }
}

static void kout_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kout_poll(arg);
}

/* Renders a template into b (reset first); 0, or the result to finish with (reason filled). */
static enum jn_send_result kout_render(const char *tmpl, const struct jn_msg *m,
                                       struct jn_buf *b, const char *what, char *reason,
                                       size_t n)
{
    struct jn_err err;
    int rc;

    jn_buf_reset(b);
    jn_err_clear(&err);
    rc = jn_template_render(tmpl, m, b, &err);
    if (rc != 0) {
        snprintf(reason, n, "%s: %s", what, err.msg[0] ? err.msg : jn_strerror(rc));
        return rc == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT;
    }
    return JN_SEND_OK;
}

enum jn_send_result jn_kafka__out_render(const char *topic_tmpl, const char *key_tmpl,
                                         const struct jn_strmap *headers, const char *id_header,
                                         const struct jn_msg *m, struct jn_buf *topic,
                                         struct jn_buf *key, jn_kafka_hdr_fn add, void *arg,
                                         char *reason, size_t n)
{
    struct jn_buf val = JN_BUF_INIT;
    enum jn_send_result res;

    jn_buf_reset(key);
    res = kout_render(topic_tmpl, m, topic, "topic", reason, n);
    if (res == JN_SEND_OK && (topic->p == NULL || topic->p[0] == '\0')) {
        snprintf(reason, n, "topic: '%s' renders empty", topic_tmpl);
        res = JN_SEND_REJECT;
    }
    if (res == JN_SEND_OK && key_tmpl != NULL) {
        res = kout_render(key_tmpl, m, key, "key", reason, n);
    }
    for (size_t i = 0; res == JN_SEND_OK && headers != NULL && i < headers->n; i++) {
        res = kout_render(headers->v[i] ? headers->v[i] : "", m, &val, headers->k[i], reason,
                          n);
        if (res == JN_SEND_OK && add(arg, headers->k[i], val.p ? val.p : "", val.len) != 0) {
            snprintf(reason, n, "out of memory");
            res = JN_SEND_RETRY;
        }
    }
    if (res == JN_SEND_OK && id_header != NULL && id_header[0] != '\0' &&
        add(arg, id_header, m->id, strlen(m->id)) != 0) {
        snprintf(reason, n, "out of memory");
        res = JN_SEND_RETRY;
    }
    jn_buf_reset(&val);
    return res;
}

/* jn_kafka_hdr_fn onto librdkafka's header list (which copies name and value). */
static int kout_hdr_add(void *arg, const char *name, const void *value, size_t len)
{
    /* Fails only for a NULL name, which the conf cannot give: as before, not checked. */
    (void)rd_kafka_header_add(arg, name, -1, value, (ssize_t)len);
    return 0;
}

static void kout_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct kout_state *st = ch->state;
    const struct kafka_conf *c = st->conf;
    struct jn_msg *m = jn_delivery_msg(d);
    struct jn_buf topic = JN_BUF_INIT, key = JN_BUF_INIT;
    rd_kafka_headers_t *hdrs = NULL;
    struct kout_rec *r = NULL;
    char reason[KAFKA_ERRSTR];
    enum jn_send_result res = JN_SEND_OK;
    rd_kafka_resp_err_t kerr;
    const char *kp;

    reason[0] = '\0';
    if (st->stopping || st->rk == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "stopping");
        return;
    }
    hdrs = rd_kafka_headers_new(c->headers.n + 1);
    if (hdrs == NULL) {
        snprintf(reason, sizeof(reason), "out of memory");
        res = JN_SEND_RETRY;
    }
    if (res == JN_SEND_OK) {
        res = jn_kafka__out_render(c->topic, c->key, &c->headers, c->id_header, m, &topic, &key,
                                   kout_hdr_add, hdrs, reason, sizeof(reason));
    }
    if (res == JN_SEND_OK && (r = jn_calloc(1, sizeof(*r))) == NULL) {
        snprintf(reason, sizeof(reason), "out of memory");
        res = JN_SEND_RETRY;
    }
    if (res != JN_SEND_OK) {
        if (hdrs != NULL) {
            rd_kafka_headers_destroy(hdrs);
        }
        jn_buf_reset(&topic);
        jn_buf_reset(&key);
        jn_delivery_done(d, res, reason);
        return;
    }
    r->d = d;
    r->msg = jn_msg_ref(m);
    r->next = st->recs;
    if (st->recs != NULL) {
        st->recs->prev = r;
    }
    st->recs = r;
    /* The value is not copied: the message is immutable and r holds a reference until the
     * report (or until after rd_kafka_destroy). The key and topic are copied by librdkafka. */
    /* librdkafka's V_ macros cast their argument unparenthesised: pass plain variables. */
    kp = key.len > 0 ? key.p : NULL;
    kerr = rd_kafka_producev(st->rk, RD_KAFKA_V_TOPIC(topic.p),
                             RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(kp, key.len),
                             RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* Not taken: the headers are still ours, and no report will come. */
        rd_kafka_headers_destroy(hdrs);
        kout_unlink(st, r);
        jn_msg_unref(&r->msg);
        jn_free(r);
        kout_finish(d, kerr, "produce");
    }
    jn_buf_reset(&topic);
    jn_buf_reset(&key);
}

static void kout_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kout_poll(arg);
}

static int kout_init(struct jn_channel *ch, struct jn_err *err)
{
    struct kout_state *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    st->conf = ch->conf;
    st->kconf = kafka_conf_build(st->conf, JN_DIR_OUT, err);
    if (st->kconf == NULL) {
        jn_free(st);
        return err->code != 0 ? err->code : JN_EINVAL;
    }
    rd_kafka_conf_set_opaque(st->kconf, ch);
    rd_kafka_conf_set_log_cb(st->kconf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(st->kconf, kafka_error_cb);
    rd_kafka_conf_set_dr_msg_cb(st->kconf, kout_dr_cb);
    ch->state = st;
    return 0;
}

static int kout_start(struct jn_channel *ch, struct jn_err *err)
{
    struct kout_state *st = ch->state;
    char errstr[KAFKA_ERRSTR];
    struct timeval tick = {0, KAFKA_TICK_MS * 1000};

    st->wake = event_new(ch->base, -1, 0, kout_wake_cb, st);
    st->tick = event_new(ch->base, -1, EV_PERSIST, kout_tick_cb, st);
    if (st->wake == NULL || st->tick == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->rk = rd_kafka_new(RD_KAFKA_PRODUCER, st->kconf, errstr, sizeof(errstr));
    if (st->rk == NULL) {
        return jn_err_set(err, JN_EINVAL, "cannot create the producer: %s", errstr);
    }
    st->kconf = NULL;
    st->q = rd_kafka_queue_get_main(st->rk);
    if (st->q == NULL) {
        return jn_err_set(err, JN_EIO, "no main queue");
    }
    rd_kafka_queue_cb_event_enable(st->q, kafka_qev_cb, st->wake);
    evtimer_add(st->tick, &tick);
    jn_ch_info(ch, "producing to topic %s via %s%s", st->conf->topic, st->conf->brokers.v[0],
               st->conf->brokers.n > 1 ? " and the other brokers listed" : "");
    return 0;
}

static void kout_stop(struct jn_channel *ch)
{
    struct kout_state *st = ch->state;

    if (st != NULL) {
        st->stopping = true;
    }
}

static void kout_destroy(struct jn_channel *ch)
{
    struct kout_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopping = true;
    /* The core's contract: what is in flight is finished with RETRY by us. Each record is
     * emptied first, so a report served below finds nothing to finish. */
    for (struct kout_rec *r = st->recs; r != NULL; r = r->next) {
        struct jn_delivery *d = r->d;
        if (d != NULL) {
            r->d = NULL;
            jn_delivery_done(d, JN_SEND_RETRY, "stopping");
        }
    }
    if (st->rk != NULL) {
        /* Drop what has not gone out; what is on the wire may still land (the retry at the
         * next start makes it a duplicate, never a loss). The short flush serves the purge
         * reports, which free their records. */
        rd_kafka_purge(st->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(st->rk, 500);
    }
    if (st->q != NULL) {
        rd_kafka_queue_cb_event_enable(st->q, NULL, NULL);
        rd_kafka_queue_destroy(st->q);
    }
    if (st->rk != NULL) {
        rd_kafka_destroy(st->rk);
    }
    if (st->kconf != NULL) {
        rd_kafka_conf_destroy(st->kconf);
    }
    /* librdkafka is gone, and with it every pointer into our payloads. */
    while (st->recs != NULL) {
        struct kout_rec *r = st->recs;
        kout_unlink(st, r);
        jn_msg_unref(&r->msg);
        jn_free(r);
    }
    if (st->wake != NULL) {
        event_free(st->wake);
    }
    if (st->tick != NULL) {
        event_free(st->tick);
    }
    jn_free(st);
    ch->state = NULL;
}

/* ================================ the def ================================ */

static const struct jn_in_def kafka_in = {
    .init = kin_init,       /* builds the librdkafka conf; no handle, no sockets */
    .start = kin_start,     /* creates the consumer, subscribes, arms the poll */
    .stop = kin_stop,
    .destroy = kin_destroy, /* commit, leave the group */
};

static const struct jn_out_def kafka_out = {
    .init = kout_init,       /* builds the librdkafka conf; no handle, no sockets */
    .start = kout_start,     /* creates the producer, arms the poll */
    .send = kout_send,       /* producev; the delivery report finishes it */
    .stop = kout_stop,
    .destroy = kout_destroy, /* in-flight -> RETRY */
};

const struct jn_channel_def jn_channel_kafka = {
    .name = "kafka",
    .desc = "Kafka: a consumer group member (in) and an idempotent producer (out), librdkafka",
    .opts = kafka_opts,
    .conf_size = sizeof(struct kafka_conf),
    .check = kafka_check, /* properties on a scratch conf; owned keys; templates */
    .in = &kafka_in,
    .out = &kafka_out,
};
