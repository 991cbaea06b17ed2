/*
 * websocket OUT: one connection kept open to the server of `url` (a client link,
 * channels/ws_link.c), carrying up to ch->concurrency frames at once.
 *
 * The ack protocol (docs/websocket.md): each message goes as one frame holding its payload,
 * nothing added (binary when its ws-opcode header says so or it is not UTF-8, else text), so
 * any WebSocket server can take it. With await_ack the server answers every frame, in the order
 * it got them, with a text frame {"ack":...} (what the value says is not checked: junction's
 * own IN answers with its new id) or {"nack":"<reason>"}; answers are matched to frames by
 * order, the head of the sent list first. So a frame whose ack does not come within timeout
 * closes the connection: a late ack on it would be taken for the next frame's. Without
 * await_ack a frame handed to the socket counts.
 *
 * Deliveries wait for the connection (up to timeout) while it is being made; a connect that
 * fails retries those waiting. The connection is remade with exponential backoff and full
 * jitter (reconnect_backoff, reconnect_max_backoff), at once after one that was up drops.
 *
 * Threads: everything here runs on the broker's loop; lws is on the link's thread.
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "jn_utf8.h"
#include "ws_int.h"

struct oslot {
    struct ws_slot s;  /* first: the shared part (ws_int.h) */
    uint64_t tag;
};

struct ws_out {
    struct jn_channel *ch;
    const struct ws_conf *conf;
    struct ws_client cl;  /* the url, the connection, the reconnects (ws_side.c) */
    struct oslot *slots;
    size_t nslots;
    struct ws_slots waiting, sent;
    uint64_t next_tag;
};

/* ---- deliveries ---- */

static void finish(struct oslot *s, enum jn_send_result r, const char *reason)
{
    struct ws_out *o = s->s.owner;
    struct jn_delivery *d = jn_ws__slot_release(&s->s, &o->waiting, &o->sent);

    if (d != NULL) {
        jn_delivery_done(d, r, reason);
    }
}

static void finish_all(struct ws_slots *l, enum jn_send_result r, const char *reason)
{
    while (l->head != NULL) {
        finish((struct oslot *)l->head, r, reason);
    }
}

/* Drops the connection (a late ack on it would answer the wrong frame): what was sent on it
 * is retried; what waits stays for the next one. */
static void drop_conn(struct ws_out *o, const char *why)
{
    jn_ws__client_drop(&o->cl, 1000, why);
    finish_all(&o->sent, JN_SEND_RETRY, why);
    jn_ws__client_retry(&o->cl, why);
}

static int frame_binary(const struct jn_msg *m)
{
    const char *op = jn_msg_header_get(m, "ws-opcode");

    if (op != NULL && strcmp(op, "binary") == 0) {
        return 1;
    }
    if (op != NULL && strcmp(op, "text") == 0 &&
        jn_utf8_valid(m->payload, m->len)) {
        return 0;
    }
    return !jn_utf8_valid(m->payload, m->len);
}

static void transmit(struct oslot *s)
{
    struct ws_out *o = s->s.owner;
    const struct jn_msg *m = jn_delivery_msg(s->s.d);
    int rc;

    s->tag = ++o->next_tag;
    rc = jn_ws__send(o->cl.link, o->cl.conn, frame_binary(m), m->payload, m->len, s->tag);
    if (rc != 0) {
        finish(s, JN_SEND_RETRY, rc == JN_ENOMEM ? "out of memory" : "stopping");
        return;
    }
    s->s.state = WS_SLOT_SENT;
    jn_ws__slots_push(&o->sent, &s->s);
}

static void slot_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct oslot *s = arg;
    struct ws_out *o = s->s.owner;
    char why[120];

    (void)fd;
    (void)what;
    if (s->s.state == WS_SLOT_WAITING) {
        snprintf(why, sizeof(why), "not connected to the server within %lld ms",
                 o->conf->timeout);
        finish(s, JN_SEND_RETRY, why);
        return;
    }
    snprintf(why, sizeof(why), "no ack within %lld ms", o->conf->timeout);
    finish(s, JN_SEND_RETRY, why);
    jn_ch_warn(o->ch, "%s: closing the connection (later acks would be taken for the wrong "
               "frames)", why);
    o->cl.failures = 0;
    drop_conn(o, "an earlier frame's ack timed out");
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct ws_out *o = ch->state;
    struct oslot *s = (struct oslot *)jn_ws__slot_take(o->slots, o->nslots, sizeof(*s));
    struct timeval tv = {(time_t)(o->conf->timeout / 1000),
                         (suseconds_t)((o->conf->timeout % 1000) * 1000)};

    if (s == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "more deliveries than concurrency");
        return;
    }
    s->s.d = d;
    evtimer_add(s->s.timer, &tv);
    if (o->cl.connected) {
        transmit(s);
        return;
    }
    s->s.state = WS_SLOT_WAITING;
    jn_ws__slots_push(&o->waiting, &s->s);
    if (o->cl.conn == 0 && !evtimer_pending(o->cl.reconnect, NULL) &&
        jn_ws__client_connect(&o->cl) != 0) {
        finish_all(&o->waiting, JN_SEND_RETRY, "cannot connect: out of memory");
    }
}

/* ---- the server's answers ---- */

static void on_answer(struct ws_out *o, const struct ws_ev *e)
{
    json_t *j = e->binary ? NULL : json_loadb((const char *)e->data, e->len, 0, NULL);
    json_t *nack = j != NULL ? json_object_get(j, "nack") : NULL;
    struct oslot *s = (struct oslot *)o->sent.head;

    if (j == NULL || !json_is_object(j) || (json_object_get(j, "ack") == NULL && nack == NULL)) {
        jn_ch_debug(o->ch, "a %zu-byte frame from the server that is no ack: ignored", e->len);
    } else if (!o->conf->await_ack) {
        /* Counted when written. */
    } else if (s == NULL) {
        jn_ch_warn(o->ch, "an ack from the server with no frame waiting for one: ignored");
    } else if (nack != NULL) {
        char why[300];
        snprintf(why, sizeof(why), "the server nacked it: %s",
                 json_is_string(nack) ? json_string_value(nack) : "(no reason)");
        finish(s, JN_SEND_RETRY, why);
    } else {
        finish(s, JN_SEND_OK, NULL);
    }
    json_decref(j);
}

static void on_event(void *arg, struct ws_ev *e)
{
    struct ws_out *o = arg;
    struct oslot *head;
    char why[260];

    if (!jn_ws__client_owns(&o->cl, e)) {
        jn_ws__ev_free(e); /* of a connection we dropped */
        return;
    }
    switch (e->kind) {
    case WS_EV_OPEN:
        jn_ws__client_opened(&o->cl);
        jn_ch_info(o->ch, "connected to %s", o->conf->url);
        while (o->waiting.head != NULL) {
            struct oslot *s = (struct oslot *)o->waiting.head;
            jn_ws__slots_del(&o->waiting, &s->s);
            transmit(s);
        }
        break;
    case WS_EV_MESSAGE:
        on_answer(o, e);
        break;
    case WS_EV_WRITTEN:
        head = (struct oslot *)o->sent.head;
        if (!o->conf->await_ack && head != NULL && head->tag == e->tag) {
            finish(head, JN_SEND_OK, NULL);
        }
        break;
    case WS_EV_CLOSED:
        if (jn_ws__client_closed(&o->cl, e, why, sizeof(why))) {
            jn_ch_warn(o->ch, "connection to %s lost: %s; reconnecting", o->conf->url, why);
        } else {
            finish_all(&o->waiting, JN_SEND_RETRY, why);
        }
        finish_all(&o->sent, JN_SEND_RETRY, why);
        jn_ws__client_retry(&o->cl, why);
        break;
    }
    jn_ws__ev_free(e);
}

/* ---- life cycle ---- */

static void out_destroy(struct jn_channel *ch);

/* A failed init is not destroyed by the broker: it frees what it made itself. */
static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    struct ws_out *o = jn_calloc(1, sizeof(*o));
    int rc;

    if (o == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->ch = ch;
    o->conf = ch->conf;
    ch->state = o;
    rc = jn_ws__client_init(&o->cl, ch, o->conf->url, &o->conf->tls, o->conf->reconnect_backoff,
                            o->conf->reconnect_max_backoff, err);
    if (rc != 0) {
        goto fail;
    }
    o->nslots = ch->concurrency > 0 ? (size_t)ch->concurrency : 1;
    o->slots = jn_ws__slots_new(ch->base, o->nslots, sizeof(*o->slots), slot_timeout, o);
    if (o->slots == NULL) {
        rc = jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    return 0;
fail:
    out_destroy(ch);
    return rc;
}

static int out_start(struct jn_channel *ch, struct jn_err *err)
{
    struct ws_out *o = ch->state;
    int rc = jn_ws__client_start(&o->cl, 0, NULL, on_event, o, err);

    if (rc == 0 && jn_ws__client_connect(&o->cl) != 0) {
        finish_all(&o->waiting, JN_SEND_RETRY, "cannot connect: out of memory");
    }
    return rc;
}

static void out_stop(struct jn_channel *ch)
{
    struct ws_out *o = ch->state;

    /* What is in flight still finishes (an ack, or its timeout). */
    jn_ws__client_stop(&o->cl);
}

static void out_destroy(struct jn_channel *ch)
{
    struct ws_out *o = ch->state;

    if (o == NULL) {
        return;
    }
    jn_ws__client_free_link(&o->cl); /* no event after this */
    finish_all(&o->waiting, JN_SEND_RETRY, "stopping");
    finish_all(&o->sent, JN_SEND_RETRY, "stopping");
    jn_ws__slots_free(o->slots, o->nslots, sizeof(*o->slots));
    jn_ws__client_fini(&o->cl);
    jn_free(o);
    ch->state = NULL;
}

const struct jn_out_def jn_ws__out = {
    .init = out_init,
    .start = out_start,
    .send = out_send,
    .stop = out_stop,
    .destroy = out_destroy,
};
