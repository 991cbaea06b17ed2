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
#include "jn_time.h"

enum { S_FREE = 0, S_WAITING = 1, S_SENT = 2 };

struct eslot {
    struct eslot *prev, *next; /* in waiting or sent */
    struct eslot *hnext;       /* S_SENT: in the ids' hash */
    struct edge *o;
    struct jn_delivery *d;
    struct event *timer;       /* S_SENT: the ack's timeout */
    int state;
    char id[JN_ID_LEN + 1];
};

struct elist {
    struct eslot *head, *tail;
    size_t n;
};

struct edge {
    struct jn_channel *ch;
    const struct bridge_conf *conf;
    struct ws_url url;
    struct jn_tls *tls;
    struct ws_link *link;
    char auth[1100];         /* "Bearer <token>" (never logged) */
    char node[JN_BRIDGE_ORIGIN_MAX];
    uint64_t conn;           /* the connection (being made or up), 0: none */
    int connected;
    int failures;            /* connects failed in a row */
    int stopped;
    struct event *reconnect;
    struct eslot *slots;
    size_t nslots;
    struct eslot **hash;
    size_t nhash;
    struct elist waiting, sent;
    struct jn_buf env;       /* the envelope being encoded */
};

static void connect_now(struct edge *o);

/* ---- lists and the ids' hash ---- */

static void list_push(struct elist *l, struct eslot *s)
{
    s->next = NULL;
    s->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = s;
    } else {
        l->head = s;
    }
    l->tail = s;
    l->n++;
}

static void list_del(struct elist *l, struct eslot *s)
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
    l->n--;
}

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
    struct edge *o = s->o;
    struct jn_delivery *d = s->d;

    evtimer_del(s->timer);
    if (s->state == S_WAITING) {
        list_del(&o->waiting, s);
    } else if (s->state == S_SENT) {
        list_del(&o->sent, s);
        hash_del(o, s);
    }
    s->state = S_FREE;
    s->d = NULL;
    o->ch->link_in_flight = o->sent.n;
    if (d != NULL) {
        jn_delivery_done(d, r, reason);
    }
}

static void finish_all(struct elist *l, enum jn_send_result r, const char *reason)
{
    while (l->head != NULL) {
        finish(l->head, r, reason);
    }
}

static void schedule_reconnect(struct edge *o, const char *why)
{
    long long wait;
    struct timeval tv;

    if (o->stopped) {
        return;
    }
    wait = o->failures == 0 ? 0 : jn_backoff_ms(o->conf->reconnect_backoff,
                                                o->conf->reconnect_max_backoff, o->failures);
    if (o->failures == 1) {
        jn_ch_warn(o->ch, "cannot reach the hub %s: %s; retrying in %lld ms (then with "
                   "backoff); messages wait in the queue", o->conf->url, why, wait);
    } else if (o->failures > 1) {
        jn_ch_debug(o->ch, "cannot reach the hub %s: %s (attempt %d); retrying in %lld ms",
                    o->conf->url, why, o->failures, wait);
    }
    tv.tv_sec = (time_t)(wait / 1000);
    tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
    evtimer_add(o->reconnect, &tv);
}

/* The link is gone (or given up): what was sent on it is retried through the queue. */
static void lost(struct edge *o, const char *why)
{
    if (o->connected) {
        o->ch->links_up = 0;
        o->ch->n_link_lost++;
    }
    o->conn = 0;
    o->connected = 0;
    finish_all(&o->sent, JN_SEND_RETRY, why);
    schedule_reconnect(o, why);
}

static void transmit(struct eslot *s)
{
    struct edge *o = s->o;
    const struct jn_msg *m = jn_delivery_msg(s->d);
    struct timeval tv = {(time_t)(o->conf->timeout / 1000),
                         (suseconds_t)((o->conf->timeout % 1000) * 1000)};
    int rc;

    rc = jn_bridge__env_encode(m, o->node, &o->env);
    if (rc == 0) {
        rc = jn_ws__send(o->link, o->conn, 1, o->env.p, o->env.len, 0);
    }
    if (rc != 0) {
        finish(s, JN_SEND_RETRY, rc == JN_ENOMEM ? "out of memory" : "stopping");
        return;
    }
    memcpy(s->id, m->id, sizeof(s->id));
    s->state = S_SENT;
    list_push(&o->sent, s);
    s->hnext = o->hash[id_hash(o, s->id)];
    o->hash[id_hash(o, s->id)] = s;
    o->ch->link_in_flight = o->sent.n;
    evtimer_add(s->timer, &tv);
}

static void slot_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct eslot *s = arg;
    char why[120];

    (void)fd;
    (void)what;
    snprintf(why, sizeof(why), "no ack from the hub within %lld ms", s->o->conf->timeout);
    finish(s, JN_SEND_RETRY, why);
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct edge *o = ch->state;
    struct eslot *s = NULL;

    for (size_t i = 0; i < o->nslots; i++) {
        if (o->slots[i].state == S_FREE && o->slots[i].d == NULL) {
            s = &o->slots[i];
            break;
        }
    }
    if (s == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "more deliveries than the window");
        return;
    }
    s->d = d;
    if (o->connected) {
        transmit(s);
        return;
    }
    /* No timer while waiting for the link: an outage spends no attempts. */
    s->state = S_WAITING;
    list_push(&o->waiting, s);
    if (o->conn == 0 && !evtimer_pending(o->reconnect, NULL)) {
        connect_now(o);
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
        jn_ws__close(o->link, o->conn, 1002, "not a bridge answer");
        lost(o, "the hub sent a frame that is no bridge answer");
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

    return strcmp(jn_delivery_msg(x->d)->id, jn_delivery_msg(y->d)->id);
}

static void send_waiting(struct edge *o)
{
    struct eslot **v = o->waiting.n ? jn_malloc(o->waiting.n * sizeof(*v)) : NULL;
    size_t n = 0;

    while (o->waiting.head != NULL) {
        struct eslot *s = o->waiting.head;
        list_del(&o->waiting, s);
        s->state = S_FREE;
        if (v != NULL) {
            v[n++] = s;
        } else {
            transmit(s); /* out of memory: in the order they came */
        }
    }
    if (v != NULL) {
        qsort(v, n, sizeof(*v), by_id);
        for (size_t i = 0; i < n && o->connected; i++) {
            transmit(v[i]);
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i]->state == S_FREE && v[i]->d != NULL) {
                v[i]->state = S_WAITING; /* the link dropped meanwhile */
                list_push(&o->waiting, v[i]);
            }
        }
        jn_free(v);
    }
}

static void on_event(void *arg, struct ws_ev *e)
{
    struct edge *o = arg;
    char why[260];

    if (e->conn != o->conn || o->conn == 0) {
        jn_ws__ev_free(e); /* of a connection we dropped */
        return;
    }
    switch (e->kind) {
    case WS_EV_OPEN:
        o->connected = 1;
        o->failures = 0;
        o->ch->links_up = 1;
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
        if (o->connected) {
            snprintf(why, sizeof(why), "link closed (%d): %s", e->code, e->text);
            jn_ch_warn(o->ch, "link to the hub %s lost: %s; %zu unacknowledged retried, "
                       "reconnecting", o->conf->url, why, o->sent.n);
            o->failures = 0;
        } else {
            snprintf(why, sizeof(why), "%s%s", e->text,
                     e->code == 1008 ? " (the hub refused our credentials: 1008)" : "");
            o->failures++;
        }
        lost(o, why);
        break;
    }
    jn_ws__ev_free(e);
}

static void connect_now(struct edge *o)
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
    struct edge *o = jn_calloc(1, sizeof(*o));
    int rc = 0;

    if (o == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->ch = ch;
    o->conf = ch->conf;
    ch->state = o;
    ch->links = 1;
    if (jn_ws__url_parse(o->conf->url, &o->url) != 0) {
        rc = jn_err_set(err, JN_EINVAL, "url: '%s' is not a ws:// or wss:// url",
                        o->conf->url ? o->conf->url : "");
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
    o->slots = jn_calloc(o->nslots, sizeof(*o->slots));
    o->hash = jn_calloc(o->nhash, sizeof(*o->hash));
    o->reconnect = evtimer_new(ch->base, reconnect_cb, o);
    if (o->slots == NULL || o->hash == NULL || o->reconnect == NULL) {
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
    struct edge *o = ch->state;
    struct ws_link_conf lc = {
        .log_prefix = ch->log_prefix,
        .max_message = 1 << 20, /* the hub's answers */
        .check_utf8 = 1,
        .ping_interval = o->conf->ping_interval,
        .authorization = o->auth[0] ? o->auth : NULL,
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
    jn_ch_info(ch, "edge %s: linking to the hub %s (window %lld)", o->node, o->conf->url,
               ch->concurrency);
    connect_now(o);
    return 0;
}

static void out_stop(struct jn_channel *ch)
{
    struct edge *o = ch->state;

    /* What is in flight still finishes (an ack, or its timeout); what waits is retried. */
    o->stopped = 1;
    evtimer_del(o->reconnect);
    finish_all(&o->waiting, JN_SEND_RETRY, "stopping");
}

static void out_destroy(struct jn_channel *ch)
{
    struct edge *o = ch->state;

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
    jn_free(o->hash);
    if (o->reconnect != NULL) {
        event_free(o->reconnect);
    }
    jn_buf_reset(&o->env);
    jn_tls_free(o->tls);
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
