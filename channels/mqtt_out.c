/*
 * mqtt OUT: publish each message to an outside MQTT broker, on the paho client of
 * channels/mqtt_client.c (its opening comment has the threads).
 *
 * OUT publishes each message with MQTTAsync_sendMessage; onSuccess (PUBACK for QoS 1, PUBCOMP
 * for QoS 2, written for QoS 0) is JN_SEND_OK. paho runs OUT without persistence and with a clean
 * session: the journal is what redelivers, and a message paho would resend on its own after a
 * reconnect would be a second copy next to our retry. Up to `concurrency` publishes are in
 * flight, one slot each; a publish with no answer within `timeout` is retried, and a lost
 * connection retries every publish in flight.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <MQTTAsync.h>
#include <event2/event.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "mqtt_int.h"

/* How often OUT looks for publishes that got no answer within `timeout`. */
#define MQTT_SWEEP_MS 1000

/* The context paho hands back with a publish's answer. paho's token is its packet id, reused
 * once a publish completes, so it cannot tell a late answer (after our timeout) from a current
 * one; this can. Written before MQTTAsync_sendMessage and only read on paho's side; freed by
 * the loop when the answer's event is handled, or at destroy. */
struct pub_ctx {
    struct pub_ctx *prev, *next; /* st->pubs (loop only) */
    struct mqtt_state *st;
    size_t slot;
    unsigned gen;
};

/* An OUT publish in flight. */
struct out_slot {
    struct jn_delivery *d; /* NULL when free */
    unsigned gen;          /* counts uses, so a late paho answer is told from a current one */
    int64_t start_ms;
    char id[JN_ID_LEN + 1];
};

/* ---- outside input (mqtt_int.h: no paho types, fuzzed alone) ---- */

const char *jn_mqtt__topic_error(const char *t, size_t n)
{
    if (n == 0) {
        return "the rendered topic is empty";
    }
    if (n > MQTT_MAX_TOPIC) {
        return "the rendered topic is longer than 65535 bytes";
    }
    /* Headers are C strings, so a rendered topic has no NUL; paho would cut it there. */
    if (memchr(t, '\0', n) != NULL) {
        return "the rendered topic has a NUL byte";
    }
    if (memchr(t, '+', n) != NULL || memchr(t, '#', n) != NULL) {
        return "the rendered topic has a wildcard (+ or #)";
    }
    return NULL;
}

/* ---- paho callbacks (paho's threads) ---- */

static void on_pub_ok(void *ctx, MQTTAsync_successData *r)
{
    struct pub_ctx *pc = ctx;

    (void)r;
    jn_mqtt__ev_post(pc->st, EV_PUB_OK, 0, 0, pc, NULL);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
    struct pub_ctx *pc = ctx;
    char text[200];

    snprintf(text, sizeof(text), "publish failed (%d%s%s)", r != NULL ? r->code : -1,
             r != NULL && r->message != NULL ? ": " : "",
             r != NULL && r->message != NULL ? r->message : "");
    jn_mqtt__ev_post(pc->st, EV_PUB_FAILED, r != NULL ? r->code : -1, 0, pc, text);
}

/* ---- OUT (loop) ---- */

static void out_finish(struct mqtt_state *st, struct out_slot *s, enum jn_send_result r,
                       const char *reason)
{
    struct jn_delivery *d = s->d;
    char id[JN_ID_LEN + 1];

    memcpy(id, s->id, sizeof(id));
    s->d = NULL;
    s->gen++;
    st->free_slots[st->nfree++] = (size_t)(s - st->slots);
    if (r == JN_SEND_OK) {
        jn_ch_debug(st->ch, "msg=%s published", id);
    }
    jn_delivery_done(d, r, reason); /* the broker logs a failed attempt */
}

static void out_fail_all(struct mqtt_state *st, const char *reason)
{
    for (size_t i = 0; i < st->nslots; i++) {
        if (st->slots[i].d != NULL) {
            out_finish(st, &st->slots[i], JN_SEND_RETRY, reason);
        }
    }
}

static void pub_unlink(struct mqtt_state *st, struct pub_ctx *pc)
{
    if (pc->prev != NULL) {
        pc->prev->next = pc->next;
    } else {
        st->pubs = pc->next;
    }
    if (pc->next != NULL) {
        pc->next->prev = pc->prev;
    }
}

/* The slot a publish's answer is for, or NULL when the answer is late (the slot was finished
 * by the timeout or a lost connection, and maybe reused). Frees pc. */
static struct out_slot *out_slot_of(struct mqtt_state *st, struct pub_ctx *pc)
{
    struct out_slot *s = &st->slots[pc->slot];
    int current = s->d != NULL && s->gen == pc->gen;

    pub_unlink(st, pc);
    jn_free(pc);
    return current ? s : NULL;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_state *st = arg;
    int64_t now = jn_mono_ms();
    char reason[96];

    (void)fd;
    (void)what;
    snprintf(reason, sizeof(reason), "no acknowledgement from the broker within %lld ms",
             st->conf->timeout);
    for (size_t i = 0; i < st->nslots; i++) {
        struct out_slot *s = &st->slots[i];
        if (s->d != NULL && now - s->start_ms >= st->conf->timeout) {
            out_finish(st, s, JN_SEND_RETRY, reason);
        }
    }
}

static void mqtt_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct mqtt_state *st = ch->state;
    const struct mqtt_conf *c = st->conf;
    struct jn_msg *m = jn_delivery_msg(d);
    MQTTAsync_message pm = MQTTAsync_message_initializer;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    struct jn_buf topic = JN_BUF_INIT;
    struct jn_err err;
    struct out_slot *s;
    struct pub_ctx *pc;
    size_t idx;
    const char *why;
    char reason[256];
    int rc;

    if (st->stopping) {
        jn_delivery_done(d, JN_SEND_RETRY, "stopping");
        return;
    }
    jn_err_clear(&err);
    rc = jn_template_render(c->topic, m, &topic, &err);
    if (rc != 0) {
        jn_buf_reset(&topic);
        snprintf(reason, sizeof(reason), "topic: %s", rc == JN_ENOMEM ? "out of memory" : err.msg);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, rc == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT, reason);
        return;
    }
    why = jn_mqtt__topic_error(topic.p != NULL ? topic.p : "", topic.len);
    if (why == NULL && (unsigned long long)m->len + topic.len + 4 > MQTT_MAX_PACKET) {
        why = "the message is larger than an MQTT packet can carry (256 MiB)";
    }
    if (why != NULL) {
        snprintf(reason, sizeof(reason), "%s%s%.100s%s", why, topic.len ? " ('" : "",
                 topic.len ? topic.p : "", topic.len ? "')" : "");
        jn_buf_reset(&topic);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    if (!st->connected) {
        jn_buf_reset(&topic);
        snprintf(reason, sizeof(reason), "not connected to %s", c->url);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, JN_SEND_RETRY, reason);
        return;
    }
    if (st->nfree == 0) {
        jn_buf_reset(&topic);
        jn_delivery_done(d, JN_SEND_RETRY, "all publish slots are busy");
        return;
    }
    pc = jn_calloc(1, sizeof(*pc));
    if (pc == NULL) {
        jn_buf_reset(&topic);
        jn_delivery_done(d, JN_SEND_RETRY, "out of memory");
        return;
    }
    idx = st->free_slots[--st->nfree];
    s = &st->slots[idx];
    s->d = d;
    s->start_ms = jn_mono_ms();
    memcpy(s->id, m->id, sizeof(s->id));
    pc->st = st;
    pc->slot = idx;
    pc->gen = s->gen;
    /* paho copies topic and payload into its command before returning. */
    pm.payload = m->payload;
    pm.payloadlen = (int)m->len;
    pm.qos = (int)c->qos;
    pm.retained = c->retain;
    ro.onSuccess = on_pub_ok;
    ro.onFailure = on_pub_fail;
    ro.context = pc;
    rc = MQTTAsync_sendMessage(st->cli, topic.p, &pm, &ro);
    jn_buf_reset(&topic);
    if (rc != MQTTASYNC_SUCCESS) {
        int bad = rc == MQTTASYNC_BAD_UTF8_STRING || rc == MQTTASYNC_BAD_QOS ||
                  rc == MQTTASYNC_BAD_STRUCTURE || rc == MQTTASYNC_NULL_PARAMETER;
        snprintf(reason, sizeof(reason), "%s (paho %d)",
                 rc == MQTTASYNC_BAD_UTF8_STRING ? "the rendered topic is not valid UTF-8"
                 : rc == MQTTASYNC_DISCONNECTED  ? "not connected"
                 : bad                           ? "paho refused the message"
                                                 : "paho could not queue the publish",
                 rc);
        /* paho did not take it, so no answer will come for pc. */
        jn_free(pc);
        out_finish(st, s, bad ? JN_SEND_REJECT : JN_SEND_RETRY, reason);
        return;
    }
    pc->next = st->pubs;
    if (st->pubs != NULL) {
        st->pubs->prev = pc;
    }
    st->pubs = pc;
}

/* ---- the side's part of the client (loop) ---- */

static void out_lost(struct mqtt_state *st, const char *cause)
{
    char reason[256];

    snprintf(reason, sizeof(reason), "connection lost before the broker acknowledged (%s)",
             cause);
    out_fail_all(st, reason);
}

static void out_event(struct mqtt_state *st, struct ev *e)
{
    struct out_slot *s;

    switch (e->kind) {
    case EV_PUB_OK:
        s = out_slot_of(st, e->pub);
        if (s != NULL) {
            out_finish(st, s, JN_SEND_OK, NULL);
        }
        break;
    case EV_PUB_FAILED:
        s = out_slot_of(st, e->pub);
        if (s != NULL) {
            out_finish(st, s, JN_SEND_RETRY, e->text);
        }
        break;
    default:
        break;
    }
}

static void out_release(struct mqtt_state *st)
{
    /* Answers that never came, or came as events freed unhandled. */
    while (st->pubs != NULL) {
        struct pub_ctx *pc = st->pubs;
        st->pubs = pc->next;
        jn_free(pc);
    }
    if (st->sweep != NULL) {
        event_free(st->sweep);
    }
    jn_free(st->slots);
    jn_free(st->free_slots);
}

static const struct mqtt_side out_side = {
    .lost = out_lost,
    .event = out_event,
    .release = out_release,
};

/* ---- life cycle ---- */

static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct mqtt_conf *c = ch->conf;
    struct mqtt_state *st = jn_mqtt__state_new(ch, &out_side, err);

    if (st == NULL) {
        return JN_ENOMEM; /* err says so */
    }
    st->clean_session = 1;
    st->max_inflight = (int)c->max_inflight;
    st->nslots = ch->concurrency >= 1 ? (size_t)ch->concurrency : 1;
    st->slots = jn_calloc(st->nslots, sizeof(*st->slots));
    st->free_slots = jn_calloc(st->nslots, sizeof(*st->free_slots));
    if (st->slots == NULL || st->free_slots == NULL) {
        jn_mqtt__state_free(st);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < st->nslots; i++) {
        st->free_slots[st->nfree++] = st->nslots - 1 - i;
    }
    ch->state = st;
    return 0;
}

static int out_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mqtt_state *st = ch->state;
    const struct mqtt_conf *c = st->conf;
    struct timeval tv = {MQTT_SWEEP_MS / 1000, (MQTT_SWEEP_MS % 1000) * 1000};
    int rc = jn_mqtt__start(ch, err);

    if (rc == 0) {
        rc = jn_mqtt__create(st, err);
    }
    if (rc != 0) {
        return rc;
    }
    st->sweep = event_new(ch->base, -1, EV_PERSIST, sweep_cb, st);
    if (st->sweep == NULL || event_add(st->sweep, &tv) != 0) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_ch_info(ch, "publishing to %s as topic %s at qos %lld", c->url, c->topic, c->qos);
    jn_mqtt__connect(st);
    return 0;
}

static void out_destroy(struct jn_channel *ch)
{
    struct mqtt_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    jn_mqtt__halt(st);
    for (size_t i = 0; i < st->nslots; i++) {
        if (st->slots[i].d != NULL) {
            out_finish(st, &st->slots[i], JN_SEND_RETRY, "stopping");
        }
    }
    ch->state = NULL;
    jn_mqtt__state_free(st);
}

const struct jn_out_def jn_mqtt__out = {
    .init = out_init,   /* client id, OUT slots; no paho yet */
    .start = out_start, /* paho client, first connect */
    .send = mqtt_send,  /* async; done on PUBACK/PUBCOMP, a failure or the timeout */
    .stop = jn_mqtt__stop,
    .destroy = out_destroy,
};
