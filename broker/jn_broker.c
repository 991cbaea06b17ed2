/*
 * jn_broker: the loop, the commit stage, the router and the delivery workers.
 *
 * Shape taken from Redis's single loop with work batched before sleeping, and from Fluent
 * Bit's engine (inputs and outputs as plugins over one engine). Everything here runs on the
 * loop thread; nothing blocks it except the file channel's small disk writes (to be moved).
 *
 * Ownership: a ticket owns its message reference until the commit stage; the router takes a
 * reference per destination (fan-out is N refs of one message, never N copies); a delivery
 * owns its reference until it is finished.
 */
#include "jn_broker.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_log.h"
#include "jn_mem.h"

struct jn_ticket {
    struct jn_ticket *next;
    struct jn_channel *ch;
    struct jn_msg *msg;
    jn_accept_fn cb;
    void *arg;
    int refusal; /* 0, or the JN_E* the ingest is refused with */
};

struct jn_delivery {
    struct jn_delivery *next;
    struct outq *q;
    struct jn_msg *msg;
    char *route;           /* borrowed from the config */
    int attempt;           /* 1-based, of the send in progress or next */
    struct event *timer;   /* backoff */
    int sending;
};

/* One OUT channel's queue. A delivery waiting for its retry keeps its slot, so with
 * concurrency 1 the queue stays in order (head-of-line) and a down peer is not hammered. */
struct outq {
    struct jn_broker *b;
    struct jn_channel *ch;
    struct jn_delivery *head, *tail; /* ready, not yet sent */
    size_t ready;
    size_t busy;                     /* slots taken: sending or waiting for a retry */
    struct event *pump;
    struct jn_delivery **busy_list;  /* for shutdown: the deliveries holding slots */
};

struct jn_broker {
    const struct jn_config *cfg;
    struct event_base *base;
    struct jn_idgen ids;
    struct jn_channel *chans;
    size_t nchans;
    struct jn_service *svcs;
    size_t nsvcs;
    struct outq *queues;             /* one per channel; used for OUT ones */
    struct jn_ticket *pend_head, *pend_tail;
    struct event *commit_ev;
    struct event *sig_term, *sig_int;
    struct event *drain_timer;
    int stopping;   /* intake closed, queues draining */
    int freeing;    /* jn_broker_free: no more retries */
    long long stop_deadline_ms;
    int started;
    uint64_t n_dead, n_unrouted_dropped;
};

static long long now_ms(void)
{
    return jn_now_us() / 1000;
}

struct jn_idgen *jn_broker_idgen(struct jn_broker *b)
{
    return &b->ids;
}

/* ---- dead letters ---- */

/* Today a dead letter is a log line and a count; the durability issue gives it a durable
 * queue that can be listed and replayed. */
static void dead_letter(struct jn_broker *b, const struct jn_msg *m, const char *route,
                        const char *dest, int attempts, const char *reason)
{
    b->n_dead++;
    jn_log(JN_LOG_WARN, "msg=%s dead-lettered route=%s destination=%s attempts=%d: %s", m->id,
           route ? route : "-", dest ? dest : "-", attempts, reason);
}

/* ---- delivery ---- */

static void pump_cb(evutil_socket_t fd, short what, void *arg);

static void delivery_free(struct jn_delivery *d)
{
    if (d->timer) {
        event_free(d->timer);
    }
    jn_msg_unref(&d->msg);
    jn_free(d);
}

static void busy_add(struct outq *q, struct jn_delivery *d)
{
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        if (q->busy_list[i] == NULL) {
            q->busy_list[i] = d;
            q->busy++;
            return;
        }
    }
}

static void busy_del(struct outq *q, struct jn_delivery *d)
{
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        if (q->busy_list[i] == d) {
            q->busy_list[i] = NULL;
            q->busy--;
            return;
        }
    }
}

static void enqueue(struct outq *q, struct jn_msg *m, const char *route)
{
    struct jn_delivery *d = jn_calloc(1, sizeof(*d));

    if (d == NULL) {
        dead_letter(q->b, m, route, q->ch->name, 0, "out of memory queueing the message");
        jn_msg_unref(&m);
        return;
    }
    d->q = q;
    d->msg = m;
    d->route = (char *)route;
    d->attempt = 1;
    if (q->tail) {
        q->tail->next = d;
    } else {
        q->head = d;
    }
    q->tail = d;
    q->ready++;
    event_active(q->pump, EV_WRITE, 0);
}

static void send_one(struct jn_delivery *d)
{
    struct jn_channel *ch = d->q->ch;

    d->sending = 1;
    jn_log_p(JN_LOG_DEBUG, ch->log_prefix, "msg=%s send attempt %d", d->msg->id, d->attempt);
    ch->def->send(ch, d);
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    struct outq *q = arg;

    while (q->head && q->busy < (size_t)q->ch->concurrency) {
        struct jn_delivery *d = q->head;
        q->head = d->next;
        if (q->head == NULL) {
            q->tail = NULL;
        }
        d->next = NULL;
        q->ready--;
        busy_add(q, d);
        send_one(d);
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_delivery *d = arg;

    send_one(d);
}

/* Full jitter: a random wait in 0..min(cap, base * 2^(attempt-1)) (AWS architecture blog). */
static long long backoff_ms(const struct jn_retry_conf *r, int attempt)
{
    long long ceiling = r->backoff;
    unsigned long long rnd;

    for (int i = 1; i < attempt && ceiling < r->max_backoff; i++) {
        ceiling *= 2;
    }
    if (ceiling > r->max_backoff) {
        ceiling = r->max_backoff;
    }
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        rnd = (unsigned long long)jn_now_us();
    }
    return ceiling > 0 ? (long long)(rnd % (unsigned long long)(ceiling + 1)) : 0;
}

struct jn_msg *jn_delivery_msg(const struct jn_delivery *d)
{
    return d->msg;
}

int jn_delivery_attempt(const struct jn_delivery *d)
{
    return d->attempt;
}

void jn_delivery_done(struct jn_delivery *d, enum jn_send_result r, const char *reason)
{
    struct outq *q = d->q;
    struct jn_channel *ch = q->ch;

    d->sending = 0;
    if (r == JN_SEND_OK) {
        ch->n_sent++;
        jn_log_p(JN_LOG_DEBUG, ch->log_prefix, "msg=%s delivered (attempt %d)", d->msg->id,
                 d->attempt);
    } else if (r == JN_SEND_RETRY && d->attempt < ch->retry.attempts && !q->b->freeing) {
        long long wait = backoff_ms(&ch->retry, d->attempt);
        struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
        ch->n_retried++;
        jn_log_p(JN_LOG_INFO, ch->log_prefix, "msg=%s attempt %d failed, retry in %lld ms: %s",
                 d->msg->id, d->attempt, wait, reason ? reason : "");
        d->attempt++;
        if (d->timer == NULL) {
            d->timer = evtimer_new(q->b->base, retry_cb, d);
        }
        if (d->timer != NULL && evtimer_add(d->timer, &tv) == 0) {
            return; /* keeps its slot */
        }
        dead_letter(q->b, d->msg, d->route, ch->name, d->attempt, "cannot schedule a retry");
    } else if (r == JN_SEND_RETRY && q->b->freeing) {
        /* Stopping: no retry timers; the message is dropped with a loud line until the
         * durable queue keeps it across the restart. */
        jn_log_p(JN_LOG_WARN, ch->log_prefix, "msg=%s not delivered before stop (attempt %d): %s",
                 d->msg->id, d->attempt, reason ? reason : "");
        ch->n_failed++;
    } else {
        ch->n_failed++;
        if (r == JN_SEND_REJECT) {
            jn_log_p(JN_LOG_WARN, ch->log_prefix, "msg=%s rejected: %s", d->msg->id,
                     reason ? reason : "");
        }
        dead_letter(q->b, d->msg, d->route, ch->name, d->attempt,
                    r == JN_SEND_REJECT ? (reason ? reason : "rejected")
                                        : "retry attempts exhausted");
    }
    busy_del(q, d);
    delivery_free(d);
    event_active(q->pump, EV_WRITE, 0);
}

/* ---- routing ---- */

static size_t chan_index(struct jn_broker *b, const struct jn_channel *ch)
{
    return (size_t)(ch - b->chans);
}

/* Runs a route's services; outputs in out. 0, or JN_E* with the reason in err. */
static int run_chain(struct jn_broker *b, const struct jn_cfg_route *r, struct jn_msg *m,
                     struct jn_msg_list *out, struct jn_err *err)
{
    struct jn_msg_list cur = {0};

    if (jn_msg_list_push(&cur, jn_msg_ref(m)) != 0) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->rc.via.n; i++) {
        const struct jn_service *s = &b->svcs[r->via[i]];
        struct jn_msg_list next = {0};
        for (size_t k = 0; k < cur.n; k++) {
            struct jn_err e;
            int rc;
            jn_err_clear(&e);
            rc = s->def->transform(s, cur.v[k], &next, &e);
            if (rc != 0) {
                jn_err_set(err, rc, "service '%s' (%s): %s", s->name, s->def->name,
                           e.msg[0] ? e.msg : jn_strerror(rc));
                jn_msg_list_clear(&next);
                jn_msg_list_clear(&cur);
                return rc;
            }
        }
        jn_msg_list_clear(&cur);
        cur = next;
    }
    /* A service may create messages of its own; they get ids of their own. */
    for (size_t k = 0; k < cur.n; k++) {
        if (cur.v[k]->id[0] == '\0') {
            jn_idgen_next(&b->ids, cur.v[k]->id);
        }
    }
    *out = cur;
    return 0;
}

static void route_msg(struct jn_broker *b, struct jn_channel *src, struct jn_msg *m)
{
    const struct jn_config *cfg = b->cfg;
    size_t ci = chan_index(b, src);
    int matched = 0;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct jn_cfg_route *r = &cfg->routes[i];
        struct jn_msg_list outs = {0};
        struct jn_err err;
        int from = 0;

        for (size_t k = 0; k < r->rc.from.n; k++) {
            from |= r->from[k] == ci;
        }
        if (!from || (r->cond && !jn_cond_eval(r->cond, m))) {
            continue;
        }
        matched = 1;
        jn_err_clear(&err);
        if (run_chain(b, r, m, &outs, &err) != 0) {
            dead_letter(b, m, r->name, NULL, 0, err.msg);
            continue;
        }
        jn_log(JN_LOG_DEBUG, "msg=%s route=%s matched: %zu message(s) to %zu destination(s)",
               m->id, r->name, outs.n, r->rc.to.n);
        for (size_t k = 0; k < outs.n; k++) {
            for (size_t t = 0; t < r->rc.to.n; t++) {
                enqueue(&b->queues[r->to[t]], jn_msg_ref(outs.v[k]), r->name);
            }
        }
        jn_msg_list_clear(&outs);
    }
    if (matched) {
        return;
    }
    switch (cfg->unrouted) {
    case JN_UNROUTED_DEAD_LETTER:
        dead_letter(b, m, NULL, NULL, 0, "unrouted: no route took the message");
        break;
    case JN_UNROUTED_DROP:
        b->n_unrouted_dropped++;
        jn_log(JN_LOG_INFO, "msg=%s unrouted from %s: dropped (unrouted: drop)", m->id, src->name);
        break;
    case JN_UNROUTED_CHANNEL:
        enqueue(&b->queues[cfg->unrouted_channel], jn_msg_ref(m), "(unrouted)");
        break;
    }
}

/* ---- ingest and the commit stage ---- */

struct jn_ticket *jn_ingest(struct jn_channel *ch, struct jn_msg *msg, jn_accept_fn cb, void *arg)
{
    struct jn_broker *b = ch->broker;
    struct jn_ticket *t = jn_calloc(1, sizeof(*t));

    if (t == NULL) {
        /* The contract says cb is never called from inside jn_ingest, and we have no ticket
         * to defer it with: refuse by returning NULL, which channels treat as JN_ENOMEM. */
        jn_msg_unref(&msg);
        return NULL;
    }
    t->ch = ch;
    t->msg = msg;
    t->cb = cb;
    t->arg = arg;
    if (b->stopping) {
        t->refusal = JN_ESTOPPED;
    } else if (msg->id[0] == '\0') {
        jn_idgen_next(&b->ids, msg->id);
    }
    if (b->pend_tail) {
        b->pend_tail->next = t;
    } else {
        b->pend_head = t;
    }
    b->pend_tail = t;
    event_active(b->commit_ev, EV_WRITE, 0);
    return t;
}

void jn_ingest_forget(struct jn_ticket *t)
{
    if (t) {
        t->cb = NULL;
    }
}

/*
 * The commit stage: takes every pending ingest at once (a group), makes the group durable,
 * then acknowledges all of it and routes it. Today "durable" is in memory: the LMDB journal
 * and its writer thread replace this function.
 */
static void commit_batch(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct jn_ticket *t = b->pend_head;

    b->pend_head = b->pend_tail = NULL;
    while (t) {
        struct jn_ticket *next = t->next;
        if (t->refusal) {
            struct jn_err e;
            t->ch->n_refused++;
            jn_err_set(&e, t->refusal, "%s", t->refusal == JN_ESTOPPED ? "broker is stopping"
                                                                        : jn_strerror(t->refusal));
            if (t->cb) {
                t->cb(t->arg, t->refusal, t->msg, &e);
            }
        } else {
            t->ch->n_in++;
            jn_log_p(JN_LOG_DEBUG, t->ch->log_prefix, "msg=%s received (%zu bytes)", t->msg->id,
                     t->msg->len);
            if (t->cb) {
                t->cb(t->arg, 0, t->msg, NULL);
            }
            route_msg(b, t->ch, t->msg);
        }
        jn_msg_unref(&t->msg);
        jn_free(t);
        t = next;
    }
}

/* ---- life cycle ---- */

static size_t queued_total(struct jn_broker *b)
{
    size_t n = 0;

    for (size_t i = 0; i < b->nchans; i++) {
        n += b->queues[i].ready + b->queues[i].busy;
    }
    return n;
}

static void finish_stop(struct jn_broker *b)
{
    size_t left = queued_total(b);

    if (left) {
        jn_log(JN_LOG_WARN, "stop: %zu message(s) still queued or in flight after "
               "shutdown_timeout; they are lost until queues are durable", left);
    }
    event_base_loopexit(b->base, NULL);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct timeval tv = {0, 20000};

    if ((queued_total(b) == 0 && b->pend_head == NULL) || now_ms() >= b->stop_deadline_ms) {
        finish_stop(b);
        return;
    }
    evtimer_add(b->drain_timer, &tv);
}

void jn_broker_stop(struct jn_broker *b)
{
    struct timeval tv = {0, 0};

    if (b->stopping) {
        return;
    }
    b->stopping = 1;
    jn_log(JN_LOG_INFO, "stopping: intake closed, draining %zu queued message(s)",
           queued_total(b));
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = &b->chans[i];
        if (ch->dir == JN_DIR_IN && ch->def->stop) {
            ch->def->stop(ch);
        }
    }
    b->stop_deadline_ms = now_ms() + b->cfg->core.shutdown_timeout;
    evtimer_add(b->drain_timer, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct jn_broker *b = arg;

    if (b->stopping) {
        jn_log(JN_LOG_WARN, "second signal %d: exiting now", (int)sig);
        b->stop_deadline_ms = 0;
        return;
    }
    jn_log(JN_LOG_INFO, "signal %d received", (int)sig);
    jn_broker_stop(b);
}

struct jn_broker *jn_broker_new(const struct jn_config *cfg, struct jn_err *err)
{
    struct jn_broker *b = jn_calloc(1, sizeof(*b));

    if (b == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    b->cfg = cfg;
    jn_idgen_init(&b->ids);
    /* Threads of later channels (paho, librdkafka) wake the loop with event_active. */
    evthread_use_pthreads();
    b->base = event_base_new();
    b->chans = jn_calloc(cfg->nchannels + 1, sizeof(*b->chans));
    b->queues = jn_calloc(cfg->nchannels + 1, sizeof(*b->queues));
    b->svcs = jn_calloc(cfg->nservices + 1, sizeof(*b->svcs));
    if (b->base == NULL || b->chans == NULL || b->queues == NULL || b->svcs == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    b->commit_ev = event_new(b->base, -1, 0, commit_batch, b);
    b->drain_timer = evtimer_new(b->base, drain_cb, b);
    b->sig_term = evsignal_new(b->base, SIGTERM, signal_cb, b);
    b->sig_int = evsignal_new(b->base, SIGINT, signal_cb, b);
    if (!b->commit_ev || !b->drain_timer || !b->sig_term || !b->sig_int) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct jn_cfg_service *cs = &cfg->services[i];
        struct jn_service *s = &b->svcs[i];
        s->def = cs->def;
        s->name = cs->name;
        s->conf = cs->conf;
        snprintf(s->log_prefix, sizeof(s->log_prefix), "%s.%s", cs->def->name, cs->name);
        b->nsvcs = i + 1;
        if (s->def->init && s->def->init(s, err) != 0) {
            s->def = NULL; /* not initialised: no destroy */
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->nchannels; i++) {
        const struct jn_cfg_channel *cc = &cfg->channels[i];
        struct jn_channel *ch = &b->chans[i];
        struct outq *q = &b->queues[i];
        ch->def = cc->def;
        ch->name = cc->name;
        snprintf(ch->log_prefix, sizeof(ch->log_prefix), "%s.%s", cc->def->name, cc->name);
        ch->dir = cc->dir;
        ch->conf = cc->conf;
        ch->broker = b;
        ch->base = b->base;
        ch->retry = cc->common.retry;
        ch->concurrency = cc->common.concurrency > 0 ? cc->common.concurrency : 1;
        q->b = b;
        q->ch = ch;
        b->nchans = i + 1;
        if (ch->dir == JN_DIR_OUT) {
            q->pump = event_new(b->base, -1, 0, pump_cb, q);
            q->busy_list = jn_calloc((size_t)ch->concurrency, sizeof(*q->busy_list));
            if (q->pump == NULL || q->busy_list == NULL) {
                jn_err_set(err, JN_ENOMEM, "out of memory");
                ch->def = NULL;
                goto fail;
            }
        }
        if (ch->def->init && ch->def->init(ch, err) != 0) {
            char why[JN_ERR_MSG_MAX];
            snprintf(why, sizeof(why), "%s", err->msg);
            jn_err_set(err, err->code, "channel '%s' (%s): %s", ch->name, ch->def->name, why);
            ch->def = NULL;
            goto fail;
        }
    }
    return b;
fail:
    jn_broker_free(b);
    return NULL;
}

int jn_broker_run(struct jn_broker *b)
{
    struct jn_err err;

    /* OUT channels first, so IN ones never accept what cannot be queued. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < b->nchans; i++) {
            struct jn_channel *ch = &b->chans[i];
            if ((pass == 0) != (ch->dir == JN_DIR_OUT)) {
                continue;
            }
            jn_err_clear(&err);
            if (ch->def->start && ch->def->start(ch, &err) != 0) {
                jn_log_p(JN_LOG_ERROR, ch->log_prefix, "cannot start: %s",
                         err.msg[0] ? err.msg : jn_strerror(err.code));
                return 1;
            }
        }
    }
    b->started = 1;
    evsignal_add(b->sig_term, NULL);
    evsignal_add(b->sig_int, NULL);
    jn_log(JN_LOG_INFO, "junction started: %zu channel(s), %zu service(s), %zu route(s)",
           b->nchans, b->nsvcs, b->cfg->nroutes);
    event_base_dispatch(b->base);
    jn_log(JN_LOG_INFO, "junction stopped: %llu dead-lettered", (unsigned long long)b->n_dead);
    return 0;
}

void jn_broker_free(struct jn_broker *b)
{
    if (b == NULL) {
        return;
    }
    /* Stop what is running: OUT channels then finish their in-flight deliveries. */
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = &b->chans[i];
        if (ch->def && ch->def->stop && (ch->dir == JN_DIR_OUT || !b->stopping)) {
            ch->def->stop(ch);
        }
    }
    b->stopping = 1;
    b->freeing = 1;
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = &b->chans[i];
        struct outq *q = &b->queues[i];
        /* Deliveries waiting for a retry are not with the channel: reclaim them here. */
        for (size_t k = 0; q->busy_list && k < (size_t)ch->concurrency; k++) {
            struct jn_delivery *d = q->busy_list[k];
            if (d && !d->sending) {
                q->busy_list[k] = NULL;
                q->busy--;
                delivery_free(d);
            }
        }
        if (ch->def && ch->def->destroy) {
            ch->def->destroy(ch); /* finishes any still sending with JN_SEND_RETRY */
        }
        while (q->head) {
            struct jn_delivery *d = q->head;
            q->head = d->next;
            delivery_free(d);
        }
        for (size_t k = 0; q->busy_list && k < (size_t)ch->concurrency; k++) {
            if (q->busy_list[k]) {
                delivery_free(q->busy_list[k]);
            }
        }
        jn_free(q->busy_list);
        if (q->pump) {
            event_free(q->pump);
        }
    }
    while (b->pend_head) {
        struct jn_ticket *t = b->pend_head;
        b->pend_head = t->next;
        jn_msg_unref(&t->msg);
        jn_free(t);
    }
    for (size_t i = 0; i < b->nsvcs; i++) {
        if (b->svcs[i].def && b->svcs[i].def->destroy) {
            b->svcs[i].def->destroy(&b->svcs[i]);
        }
    }
    if (b->commit_ev) {
        event_free(b->commit_ev);
    }
    if (b->drain_timer) {
        event_free(b->drain_timer);
    }
    if (b->sig_term) {
        event_free(b->sig_term);
    }
    if (b->sig_int) {
        event_free(b->sig_int);
    }
    jn_free(b->chans);
    jn_free(b->queues);
    jn_free(b->svcs);
    if (b->base) {
        event_base_free(b->base);
    }
    jn_idgen_destroy(&b->ids);
    jn_free(b);
}
