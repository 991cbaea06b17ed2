/*
 * kafka IN: a consumer in a consumer group, on librdkafka.
 *
 * Subscribes to `topics` as member of `group`. Offsets are stored by hand
 * (enable.auto.offset.store=false): the offset after a message is stored only once the broker
 * has made that message durable (the jn_ingest() callback with rc 0), and only when every
 * earlier message of its partition is durable too; librdkafka's auto-commit then commits what
 * was stored. So a crash, a kill -9 or a rebalance can make a message come again, never go
 * missing. When the journal refuses input (JN_EFULL: full disk) the partition is paused at the
 * first refused offset, and after `pause_retry` it is sought back there and resumed: nothing
 * is skipped. Modelled on Fluent Bit's in_kafka (poll on the engine, rebalance handled by us)
 * and Redpanda Connect's kafka_franz input (commit only what the pipeline acknowledged).
 *
 * Threads: librdkafka runs its own threads; nothing of ours runs on them except the queue event
 * and log callbacks (kafka_conf.c). consumer_poll with timeout 0, the rebalance callback,
 * offset stores, pause/seek/resume run on the broker's loop thread. A 100 ms timer polls as
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
    st->kconf = jn_kafka__conf_build(ch, JN_DIR_IN, err);
    if (st->kconf == NULL) {
        jn_free(st);
        return err->code != 0 ? err->code : JN_EINVAL;
    }
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
    rd_kafka_queue_cb_event_enable(st->q, jn_kafka__qev_cb, st->wake);
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


const struct jn_in_def jn_kafka__in = {
    .init = kin_init,       /* builds the librdkafka conf; no handle, no sockets */
    .start = kin_start,     /* creates the consumer, subscribes, arms the poll */
    .stop = kin_stop,
    .destroy = kin_destroy, /* commit, leave the group */
};
