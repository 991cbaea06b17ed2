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

enum { S_FREE = 0, S_WAITING = 1, S_SENT = 2 };

struct oslot {
    struct oslot *prev, *next; /* in waiting or sent */
    struct ws_out *o;
    struct jn_delivery *d;
    struct event *timer;
    int state;
    uint64_t tag;
};

struct olist {
    struct oslot *head, *tail;
};

struct ws_out {
    struct jn_channel *ch;
    const struct ws_conf *conf;
    struct ws_url url;
    struct jn_tls *tls;
    struct ws_link *link;
    uint64_t conn;   /* the connection (being made or up), 0: none */
    int connected;
    int failures;    /* connects failed in a row */
    int stopped;
    struct event *reconnect;
    struct oslot *slots;
    size_t nslots;
    struct olist waiting, sent;
    uint64_t next_tag;
};

static void connect_now(struct ws_out *o);

/* ---- lists ---- */

static void list_push(struct olist *l, struct oslot *s)
{
    s->next = NULL;
    s->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = s;
    } else {
        l->head = s;
    }
    l->tail = s;
}

static void list_del(struct olist *l, struct oslot *s)
{
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        l->head = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    } else {
        l->tail = s->prev;
    }
    s->prev = s->next = NULL;
}

/* ---- deliveries ---- */

static void finish(struct oslot *s, enum jn_send_result r, const char *reason)
{
    struct ws_out *o = s->o;
    struct jn_delivery *d = s->d;

    evtimer_del(s->timer);
    if (s->state == S_WAITING) {
        list_del(&o->waiting, s);
    } else if (s->state == S_SENT) {
        list_del(&o->sent, s);
    }
    s->state = S_FREE;
    s->d = NULL;
    if (d != NULL) {
        jn_delivery_done(d, r, reason);
    }
}

static void finish_all(struct olist *l, enum jn_send_result r, const char *reason)
{
    while (l->head != NULL) {
        finish(l->head, r, reason);
    }
}

static void schedule_reconnect(struct ws_out *o, const char *why)
{
    long long wait;
    struct timeval tv;

    if (o->stopped) {
        return;
    }
    wait = o->failures == 0 ? 0 : jn_backoff_ms(o->conf->reconnect_backoff,
                                                o->conf->reconnect_max_backoff, o->failures);
    if (o->failures == 1) {
        jn_ch_warn(o->ch, "cannot reach %s: %s; retrying in %lld ms (then with backoff)",
                   o->conf->url, why, wait);
    } else if (o->failures > 1) {
        jn_ch_debug(o->ch, "cannot reach %s: %s (attempt %d); retrying in %lld ms",
                    o->conf->url, why, o->failures, wait);
    }
    tv.tv_sec = (time_t)(wait / 1000);
    tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
    evtimer_add(o->reconnect, &tv);
}

/* Drops the connection (a late ack on it would answer the wrong frame): what was sent on it
 * is retried; what waits stays for the next one. */
static void drop_conn(struct ws_out *o, const char *why)
{
    if (o->conn != 0) {
        jn_ws__close(o->link, o->conn, 1000, why);
    }
    o->conn = 0;
    o->connected = 0;
    finish_all(&o->sent, JN_SEND_RETRY, why);
    schedule_reconnect(o, why);
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
    struct ws_out *o = s->o;
    const struct jn_msg *m = jn_delivery_msg(s->d);
    int rc;

    s->tag = ++o->next_tag;
    rc = jn_ws__send(o->link, o->conn, frame_binary(m), m->payload, m->len, s->tag);
    if (rc != 0) {
        finish(s, JN_SEND_RETRY, rc == JN_ENOMEM ? "out of memory" : "stopping");
        return;
    }
    s->state = S_SENT;
    list_push(&o->sent, s);
}

static void slot_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct oslot *s = arg;
    struct ws_out *o = s->o;
    char why[120];

    (void)fd;
    (void)what;
    if (s->state == S_WAITING) {
        snprintf(why, sizeof(why), "not connected to the server within %lld ms",
                 o->conf->timeout);
        finish(s, JN_SEND_RETRY, why);
        return;
    }
    snprintf(why, sizeof(why), "no ack within %lld ms", o->conf->timeout);
    finish(s, JN_SEND_RETRY, why);
    jn_ch_warn(o->ch, "%s: closing the connection (later acks would be taken for the wrong "
               "frames)", why);
    o->failures = 0;
    drop_conn(o, "an earlier frame's ack timed out");
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct ws_out *o = ch->state;
    struct oslot *s = NULL;
    struct timeval tv = {(time_t)(o->conf->timeout / 1000),
                         (suseconds_t)((o->conf->timeout % 1000) * 1000)};

    for (size_t i = 0; i < o->nslots; i++) {
        if (o->slots[i].state == S_FREE && o->slots[i].d == NULL) {
            s = &o->slots[i];
            break;
        }
    }
    if (s == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "more deliveries than concurrency");
        return;
    }
    s->d = d;
    evtimer_add(s->timer, &tv);
    if (o->connected) {
        transmit(s);
        return;
    }
    s->state = S_WAITING;
    list_push(&o->waiting, s);
    if (o->conn == 0 && !evtimer_pending(o->reconnect, NULL)) {
        connect_now(o);
    }
}

/* ---- the server's answers ---- */

static void on_answer(struct ws_out *o, const struct ws_ev *e)
{
    json_t *j = e->binary ? NULL : json_loadb((const char *)e->data, e->len, 0, NULL);
    json_t *nack = j != NULL ? json_object_get(j, "nack") : NULL;
    struct oslot *s = o->sent.head;

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
    char why[260];

    if (e->conn != o->conn || o->conn == 0) {
        jn_ws__ev_free(e); /* of a connection we dropped */
        return;
    }
    switch (e->kind) {
    case WS_EV_OPEN:
        o->connected = 1;
        o->failures = 0;
        jn_ch_info(o->ch, "connected to %s", o->conf->url);
        while (o->waiting.head != NULL) {
            struct oslot *s = o->waiting.head;
            list_del(&o->waiting, s);
            transmit(s);
        }
        break;
    case WS_EV_MESSAGE:
        on_answer(o, e);
        break;
    case WS_EV_WRITTEN:
        if (!o->conf->await_ack && o->sent.head != NULL && o->sent.head->tag == e->tag) {
            finish(o->sent.head, JN_SEND_OK, NULL);
        }
        break;
    case WS_EV_CLOSED:
        if (o->connected) {
            snprintf(why, sizeof(why), "connection closed (%d): %s", e->code, e->text);
            jn_ch_warn(o->ch, "connection to %s lost: %s; reconnecting", o->conf->url, why);
            o->failures = 0;
        } else {
            snprintf(why, sizeof(why), "%s", e->text);
            o->failures++;
            finish_all(&o->waiting, JN_SEND_RETRY, why);
        }
        o->conn = 0;
        o->connected = 0;
        finish_all(&o->sent, JN_SEND_RETRY, why);
        schedule_reconnect(o, why);
        break;
    }
    jn_ws__ev_free(e);
}

static void connect_now(struct ws_out *o)
{
    int rc;

    if (o->stopped || o->conn != 0) {
        return;
    }
    rc = jn_ws__connect(o->link, &o->url, o->conf->tls.server_name,
                        o->conf->tls.verify_peer == JN_TLS_VERIFY_FALSE, &o->conn);
    if (rc != 0) {
        o->conn = 0;
        o->failures++;
        finish_all(&o->waiting, JN_SEND_RETRY, "cannot connect: out of memory");
        schedule_reconnect(o, "out of memory");
    }
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

/* ---- life cycle ---- */

static void out_destroy(struct jn_channel *ch);

/* A failed init is not destroyed by the broker: it frees what it made itself. */
static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    struct ws_out *o = jn_calloc(1, sizeof(*o));
    int rc = 0;

    if (o == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->ch = ch;
    o->conf = ch->conf;
    ch->state = o;
    if (jn_ws__url_parse(o->conf->url, &o->url) != 0) {
        rc = jn_err_set(err, JN_EINVAL, "url: '%s' is not a ws:// or wss:// url",
                        o->conf->url ? o->conf->url : "");
        goto fail;
    }
    o->nslots = ch->concurrency > 0 ? (size_t)ch->concurrency : 1;
    o->slots = jn_calloc(o->nslots, sizeof(*o->slots));
    o->reconnect = evtimer_new(ch->base, reconnect_cb, o);
    if (o->slots == NULL || o->reconnect == NULL) {
        rc = jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < o->nslots; i++) {
        o->slots[i].o = o;
        o->slots[i].timer = evtimer_new(ch->base, slot_timeout, &o->slots[i]);
        if (o->slots[i].timer == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "out of memory");
            goto fail;
        }
    }
    return 0;
fail:
    out_destroy(ch);
    return rc;
}

static int out_start(struct jn_channel *ch, struct jn_err *err)
{
    struct ws_out *o = ch->state;
    struct ws_link_conf lc = {
        .log_prefix = ch->log_prefix,
        .max_message = 1 << 20, /* the server's answers: acks */
        .check_utf8 = 1,
    };
    char what[300];

    if (o->url.tls || jn_tls_on(&o->conf->tls)) {
        if (!o->url.tls) {
            return jn_err_set(err, JN_EINVAL, "tls: is set but url '%s' is not wss://",
                              o->conf->url);
        }
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        o->tls = jn_tls_new(&o->conf->tls, JN_TLS_CLIENT, what, err);
        if (o->tls == NULL) {
            return err->code;
        }
        lc.client_ctx = jn_tls_ctx(o->tls);
        lc.allowed_peers = &o->conf->tls.allowed_peers;
    }
    o->link = jn_ws__link_new(ch->base, &lc, on_event, o, err);
    if (o->link == NULL) {
        return err->code;
    }
    connect_now(o);
    return 0;
}

static void out_stop(struct jn_channel *ch)
{
    struct ws_out *o = ch->state;

    /* What is in flight still finishes (an ack, or its timeout). */
    o->stopped = 1;
    evtimer_del(o->reconnect);
}

static void out_destroy(struct jn_channel *ch)
{
    struct ws_out *o = ch->state;

    if (o == NULL) {
        return;
    }
    o->stopped = 1;
    jn_ws__link_free(o->link); /* no event after this */
    o->link = NULL;
    finish_all(&o->waiting, JN_SEND_RETRY, "stopping");
    finish_all(&o->sent, JN_SEND_RETRY, "stopping");
    for (size_t i = 0; o->slots != NULL && i < o->nslots; i++) {
        if (o->slots[i].timer != NULL) {
            event_free(o->slots[i].timer);
        }
    }
    jn_free(o->slots);
    if (o->reconnect != NULL) {
        event_free(o->reconnect);
    }
    jn_tls_free(o->tls);
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
