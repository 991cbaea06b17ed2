/*
 * bridge edge (OUT): one link to the hub (a client link, channels/ws_link.c), carrying up to
 * `window` envelopes (the channel's concurrency) that the hub has not acknowledged yet.
 *
 * A delivery counts (JN_SEND_OK) only when the hub's ack names its message id: the hub sends
 * it after its own commit (or for an id its duplicate window already holds). Acks name ids, so
 * they may come in any order and one frame may hold many.
 *
 * The link down: deliveries the queue hands over wait for it (no timeout runs while it is
 * down, so an outage spends no attempts); what was sent on a link that dropped is finished
 * with JN_SEND_RETRY and goes through the queue's retry (backoff with jitter, counted as a
 * retry). When the link is back, what waits is sent oldest first (by message id, which sorts
 * by receive time). The link is remade with exponential backoff and full jitter
 * (reconnect_backoff, reconnect_max_backoff), at once after one that was up drops.
 *
 * Threads: the broker's loop; lws runs on the link's thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "bridge_int.h"
#include "jn_mem.h"
#include "jn_stats.h"
#include "jn_time.h"

struct eslot {
    struct ws_slot s;          /* first: the shared part (ws_int.h) */
    struct eslot *hnext;       /* WS_SLOT_SENT: in the ids' hash */
    char id[JN_ID_LEN + 1];
};

struct edge {
    struct jn_channel *ch;
    const struct bridge_conf *conf;
    struct ws_client cl;     /* the hub's url, the link, the reconnects (ws_side.c) */
    char auth[1100];         /* "Bearer <token>" (never logged) */
    char node[JN_BRIDGE_ORIGIN_MAX];
    struct eslot *slots;
    size_t nslots;
    struct eslot **hash;
    size_t nhash;
    struct ws_slots waiting, sent;
    struct jn_buf env;       /* the envelope being encoded */
    struct jn_buf st;        /* the status frame being encoded */
    struct event *status_ev; /* every second while linked: the status to the hub */
    int no_status;           /* the hub is older and refuses status frames (1002) */
};

/* ---- the ids' hash ---- */

static size_t id_hash(const struct edge *o, const char *id)
{
    uint64_t h = 1469598103934665603ULL;

    /* The last characters vary most (random, or incremented within a millisecond). */
    for (size_t i = 10; i < JN_ID_LEN; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ULL;
    }
    return (size_t)(h % o->nhash);
}

static void hash_del(struct edge *o, struct eslot *s)
{
    struct eslot **pp = &o->hash[id_hash(o, s->id)];

    while (*pp != NULL && *pp != s) {
        pp = &(*pp)->hnext;
    }
    if (*pp == s) {
        *pp = s->hnext;
    }
    s->hnext = NULL;
}

static struct eslot *hash_find(struct edge *o, const char *id)
{
    struct eslot *s = o->hash[id_hash(o, id)];

    while (s != NULL && memcmp(s->id, id, JN_ID_LEN) != 0) {
        s = s->hnext;
    }
    return s;
}

/* ---- deliveries ---- */

static void finish(struct eslot *s, enum jn_send_result r, const char *reason)
{
    struct edge *o = s->s.owner;
    struct jn_delivery *d;

    if (s->s.state == WS_SLOT_SENT) {
        hash_del(o, s);
    }
    d = jn_ws__slot_release(&s->s, &o->waiting, &o->sent);
    o->ch->link_in_flight = o->sent.n;
    if (d != NULL) {
        jn_delivery_done(d, r, reason);
    }
}

static void finish_all(struct ws_slots *l, enum jn_send_result r, const char *reason)
{
    while (l->head != NULL) {
        finish((struct eslot *)l->head, r, reason);
    }
}

/* The link is gone (or given up): what was sent on it is retried through the queue. */
static void lost(struct edge *o, int was_up, const char *why)
{
    if (was_up) {
        o->ch->links_up = 0;
        o->ch->n_link_lost++;
        o->ch->link_since_us = jn_now_us();
    }
    finish_all(&o->sent, JN_SEND_RETRY, why);
    jn_ws__client_retry(&o->cl, why);
}

static void transmit(struct eslot *s)
{
    struct edge *o = s->s.owner;
    const struct jn_msg *m = jn_delivery_msg(s->s.d);
    struct timeval tv = {(time_t)(o->conf->timeout / 1000),
                         (suseconds_t)((o->conf->timeout % 1000) * 1000)};
    int rc;

    rc = jn_bridge__env_encode(m, o->node, &o->env);
    if (rc == 0) {
        rc = jn_ws__send(o->cl.link, o->cl.conn, 1, o->env.p, o->env.len, 0);
    }
    if (rc != 0) {
        finish(s, JN_SEND_RETRY, rc == JN_ENOMEM ? "out of memory" : "stopping");
        return;
    }
    memcpy(s->id, m->id, sizeof(s->id));
    s->s.state = WS_SLOT_SENT;
    jn_ws__slots_push(&o->sent, &s->s);
    s->hnext = o->hash[id_hash(o, s->id)];
    o->hash[id_hash(o, s->id)] = s;
    o->ch->link_in_flight = o->sent.n;
    evtimer_add(s->s.timer, &tv);
}

static void slot_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct eslot *s = arg;
    const struct edge *o = s->s.owner;
    char why[120];

    (void)fd;
    (void)what;
    snprintf(why, sizeof(why), "no ack from the hub within %lld ms", o->conf->timeout);
    finish(s, JN_SEND_RETRY, why);
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct edge *o = ch->state;
    struct eslot *s = (struct eslot *)jn_ws__slot_take(o->slots, o->nslots, sizeof(*s));

    if (s == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "more deliveries than the window");
        return;
    }
    s->s.d = d;
    if (o->cl.connected) {
        transmit(s);
        return;
    }
    /* No timer while waiting for the link: an outage spends no attempts. */
    s->s.state = WS_SLOT_WAITING;
    jn_ws__slots_push(&o->waiting, &s->s);
    if (o->cl.conn == 0 && !evtimer_pending(o->cl.reconnect, NULL)) {
        jn_ws__client_connect(&o->cl);
    }
}

/* ---- the hub's answers ---- */

struct ans_ctx {
    struct edge *o;
    int nack;
    const char *reason;
    size_t n;
};

static void on_ack_id(void *arg, const char *id)
{
    struct ans_ctx *a = arg;
    struct eslot *s = hash_find(a->o, id);

    if (s == NULL) {
        return; /* an ack for an attempt already retried, or already acked */
    }
    a->n++;
    if (a->nack) {
        char why[260];
        snprintf(why, sizeof(why), "the hub refused it for now: %s", a->reason);
        finish(s, JN_SEND_RETRY, why);
    } else {
        finish(s, JN_SEND_OK, NULL);
    }
}

static void on_answer(struct edge *o, const struct ws_ev *e)
{
    char reason[200];
    struct ans_ctx a = {o, 0, reason, 0};

    if (!e->binary || jn_bridge__ans_decode(e->data, e->len, &a.nack, reason, on_ack_id, &a)) {
        jn_ch_warn(o->ch, "a %zu-byte frame from the hub that is no bridge answer (version "
                   "%d): closing the link", e->len, JN_BRIDGE_VERSION);
        jn_ws__client_drop(&o->cl, 1002, "not a bridge answer");
        lost(o, 1, "the hub sent a frame that is no bridge answer");
        return;
    }
    if (!a.nack) {
        o->ch->link_last_ack_us = jn_now_us();
    } else {
        jn_ch_warn(o->ch, "the hub refused %zu message(s) for now: %s", a.n, reason);
    }
}

/* Waiting slots by message id: oldest first. */
static int by_id(const void *a, const void *b)
{
    const struct eslot *x = *(struct eslot *const *)a, *y = *(struct eslot *const *)b;

    return strcmp(jn_delivery_msg(x->s.d)->id, jn_delivery_msg(y->s.d)->id);
}

static void send_waiting(struct edge *o)
{
    struct eslot **v = o->waiting.n ? jn_malloc(o->waiting.n * sizeof(*v)) : NULL;
    size_t n = 0;

    while (o->waiting.head != NULL) {
        struct eslot *s = (struct eslot *)o->waiting.head;
        jn_ws__slots_del(&o->waiting, &s->s);
        s->s.state = WS_SLOT_FREE;
        if (v != NULL) {
            v[n++] = s;
        } else {
            transmit(s); /* out of memory: in the order they came */
        }
    }
    if (v != NULL) {
        qsort(v, n, sizeof(*v), by_id);
        for (size_t i = 0; i < n && o->cl.connected; i++) {
            transmit(v[i]);
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i]->s.state == WS_SLOT_FREE && v[i]->s.d != NULL) {
                v[i]->s.state = WS_SLOT_WAITING; /* the link dropped meanwhile */
                jn_ws__slots_push(&o->waiting, &v[i]->s);
            }
        }
        jn_free(v);
    }
}

/* ---- the status (the hub's per-edge row) ---- */

/* Our queue's depth (the journal's count, as /api/v1/channels shows it) and what is in flight
 * on the link, to the hub: at link up, then every second while linked. */
static void send_status(struct edge *o)
{
    struct jn_channel_stats cs;
    uint64_t queued = 0;

    if (o->no_status || !o->cl.connected) {
        return;
    }
    if (jn_broker_channel_stats(o->ch->broker, o->ch->slot, &cs) == 0) {
        queued = cs.depth;
    }
    if (jn_bridge__status_encode(o->node, queued, o->sent.n, &o->st) == 0) {
        (void)jn_ws__send(o->cl.link, o->cl.conn, 1, o->st.p, o->st.len, 0);
    }
}

static void status_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_status(arg);
}

static void on_event(void *arg, struct ws_ev *e)
{
    struct edge *o = arg;
    char why[260];
    int was_up;

    if (!jn_ws__client_owns(&o->cl, e)) {
        jn_ws__ev_free(e); /* of a connection we dropped */
        return;
    }
    switch (e->kind) {
    case WS_EV_OPEN:
        jn_ws__client_opened(&o->cl);
        o->ch->links_up = 1;
        o->ch->link_since_us = jn_now_us();
        send_status(o);
        jn_ch_info(o->ch, "link to the hub %s up (node %s); %zu message(s) waiting",
                   o->conf->url, o->node, o->waiting.n);
        send_waiting(o);
        break;
    case WS_EV_MESSAGE:
        on_answer(o, e);
        break;
    case WS_EV_WRITTEN:
        break;
    case WS_EV_CLOSED:
        was_up = jn_ws__client_closed(&o->cl, e, why, sizeof(why));
        if (was_up && e->code == 1002 && !o->no_status) {
            /* A hub older than the status frame closes at the first one: none to it again
             * (a real envelope fault would recur and is logged by the hub). */
            o->no_status = 1;
            jn_ch_warn(o->ch, "the hub closed the link with 1002 (an older hub that takes no "
                       "status frames?): sending it no status from now on");
        }
        if (was_up) {
            jn_ch_warn(o->ch, "link to the hub %s lost: %s; %zu unacknowledged retried, "
                       "reconnecting", o->conf->url, why, o->sent.n);
        }
        lost(o, was_up, why);
        break;
    }
    jn_ws__ev_free(e);
}

/* ---- life cycle ---- */

static void out_destroy(struct jn_channel *ch);

/* A failed init is not destroyed by the broker: it frees what it made itself. */
static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    struct edge *o = jn_calloc(1, sizeof(*o));
    int rc = 0;

    if (o == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->ch = ch;
    o->conf = ch->conf;
    ch->state = o;
    ch->links = 1;
    o->cl.peer_word = "the hub ";
    o->cl.down_note = "; messages wait in the queue";
    rc = jn_ws__client_init(&o->cl, ch, o->conf->url, &o->conf->tls, o->conf->reconnect_backoff,
                            o->conf->reconnect_max_backoff, err);
    if (rc != 0) {
        goto fail;
    }
    if (o->conf->node != NULL) {
        snprintf(o->node, sizeof(o->node), "%s", o->conf->node);
    } else if (gethostname(o->node, sizeof(o->node) - 1) != 0 || o->node[0] == '\0') {
        snprintf(o->node, sizeof(o->node), "edge");
    }
    if (o->conf->token != NULL) {
        if (strlen(o->conf->token) > sizeof(o->auth) - 8) {
            rc = jn_err_set(err, JN_EINVAL, "token: longer than %zu bytes", sizeof(o->auth) - 8);
            goto fail;
        }
        snprintf(o->auth, sizeof(o->auth), "Bearer %s", o->conf->token);
    }
    o->nslots = ch->concurrency > 0 ? (size_t)ch->concurrency : 1;
    o->nhash = 2 * o->nslots + 1;
    o->slots = jn_ws__slots_new(ch->base, o->nslots, sizeof(*o->slots), slot_timeout, o);
    o->hash = jn_calloc(o->nhash, sizeof(*o->hash));
    o->status_ev = event_new(ch->base, -1, EV_PERSIST, status_cb, o);
    if (o->slots == NULL || o->hash == NULL || o->status_ev == NULL) {
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
    struct edge *o = ch->state;
    int rc = jn_ws__client_start(&o->cl, o->conf->l.ping_interval, o->auth[0] ? o->auth : NULL,
                                 on_event, o, err);

    if (rc != 0) {
        return rc;
    }
    jn_ch_info(ch, "edge %s: linking to the hub %s (window %lld)", o->node, o->conf->url,
               ch->concurrency);
    {
        struct timeval second = {1, 0};
        evtimer_add(o->status_ev, &second);
    }
    jn_ws__client_connect(&o->cl);
    return 0;
}

static void out_stop(struct jn_channel *ch)
{
    struct edge *o = ch->state;

    /* What is in flight still finishes (an ack, or its timeout); what waits is retried. */
    jn_ws__client_stop(&o->cl);
    evtimer_del(o->status_ev);
    finish_all(&o->waiting, JN_SEND_RETRY, "stopping");
}

static void out_destroy(struct jn_channel *ch)
{
    struct edge *o = ch->state;

    if (o == NULL) {
        return;
    }
    jn_ws__client_free_link(&o->cl); /* no event after this */
    finish_all(&o->waiting, JN_SEND_RETRY, "stopping");
    finish_all(&o->sent, JN_SEND_RETRY, "stopping");
    jn_ws__slots_free(o->slots, o->nslots, sizeof(*o->slots));
    jn_free(o->hash);
    if (o->status_ev != NULL) {
        event_free(o->status_ev);
    }
    jn_buf_reset(&o->env);
    jn_buf_reset(&o->st);
    jn_ws__client_fini(&o->cl);
    jn_free(o);
    ch->state = NULL;
    ch->links_up = 0;
}

const struct jn_out_def jn_bridge__edge = {
    .init = out_init,
    .start = out_start,
    .send = out_send,
    .stop = out_stop,
    .destroy = out_destroy,
};
