/*
 * kafka OUT: an idempotent producer, on librdkafka.
 *
 * Produces each message with enable.idempotence=true and acks=all; topic, key and headers
 * come from templates. A delivery is finished by librdkafka's delivery report: success is
 * JN_SEND_OK, and the error table in kout_map() says which failures are retried (the network,
 * timeouts, a leader moving) and which are dead-lettered at once (a message the cluster will
 * never take: too large, invalid, not authorised, an unknown topic). Modelled on Fluent Bit's
 * out_kafka.
 *
 * Threads: librdkafka runs its own threads; nothing of ours runs on them except the queue event
 * and log callbacks (kafka_conf.c). Delivery reports are served by polls on the broker's loop
 * thread, woken by the queue event and by a 100 ms timer.
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
    st->kconf = jn_kafka__conf_build(ch, JN_DIR_OUT, err);
    if (st->kconf == NULL) {
        jn_free(st);
        return err->code != 0 ? err->code : JN_EINVAL;
    }
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
    rd_kafka_queue_cb_event_enable(st->q, jn_kafka__qev_cb, st->wake);
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

const struct jn_out_def jn_kafka__out = {
    .init = kout_init,       /* builds the librdkafka conf; no handle, no sockets */
    .start = kout_start,     /* creates the producer, arms the poll */
    .send = kout_send,       /* producev; the delivery report finishes it */
    .stop = kout_stop,
    .destroy = kout_destroy, /* in-flight -> RETRY */
};
