/*
 * jn_broker: the loop, ingest and the life cycle. The commit stage is jn_commit.c, routing
 * jn_route.c (the matcher itself is the config's router ops, routes/jn_router.c), the
 * per-destination queues jn_queue's; outcome tracking is jn_track.c, callbacks and dead
 * letters jn_notify.c, recovery at start jn_recover.c (all sharing jn_broker_int.h).
 *
 * Shape taken from Redis's single loop with work batched before sleeping, and from Fluent
 * Bit's engine (inputs and outputs as plugins over one engine). Everything here runs on the
 * loop thread; the journal's writer thread does the disk work (jn_journal.h).
 *
 * Durability: jn_ingest() routes the message into one journal transaction (one queue entry
 * per destination, the action log) and acknowledges only in its commit callback; only then do
 * its deliveries enter their queues in memory (every queue record's delivery waits for its
 * commit: jn_queue_commit). A delivery's end deletes (or rewrites, or moves to the dead-letter
 * queue) its entry. On start, the queues are paged in from the journal and inbox entries (from
 * older journals, or dlq replay) are routed, so a crash at any point loses nothing that was
 * acknowledged; it may deliver twice (at-least-once).
 *
 * Ownership: a ticket owns its message reference until its commit callback; the router takes
 * a reference per destination (fan-out is N refs of one message in memory; N records on
 * disk); a delivery owns its reference until it is finished.
 */
#include "jn_broker_int.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_journal.h"
#include "jn_log.h"
#include "jn_tls.h"
#include "jn_mem.h"
#include "jn_priv.h"
#include "jn_queue.h"
#include "jn_rate.h"
#include "jn_sdnotify.h"
#include "jn_store.h"
#include "jn_time.h"


struct jn_idgen *jn_broker_idgen(struct jn_broker *b)
{
    return &b->ids;
}

const char *jn_broker_data_dir(const struct jn_broker *b)
{
    return b->cfg->core.data_dir;
}

/*
 * The loop's event base, with libevent's epoll change list: the event changes made on one fd
 * within a loop turn are merged into at most one epoll_ctl, applied before the next
 * epoll_wait. A keep-alive HTTP request costs evhttp four changes (read off when the request
 * is in, write on for the answer, write off and read on when it is out); measured at 64
 * connections (docs/performance.md, issue 20) the loop made 4.0 epoll_ctl calls a request
 * without the list and 3.0 with it, and a syscall is dear in this VM. libevent's one caveat:
 * the list is wrong for fds that are dup()s of one another, because epoll tracks the open
 * file, not the number; nothing in junction hands libevent a dup()ed fd (checked when this
 * was added: no dup, dup2, dup3 or F_DUPFD in broker/, channels/, services/, routes/,
 * admin/, adapters/, cli/). Falls back to a plain base if that one cannot be made.
 */
static struct event_base *loop_base_new(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *base = NULL;

    if (ec != NULL && event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0) {
        base = event_base_new_with_config(ec);
    }
    if (ec != NULL) {
        event_config_free(ec);
    }
    return base != NULL ? base : event_base_new();
}

/* ---- what the queues reach the broker through (jn_queue_env) ---- */

static void broker__submit(void *arg, struct jn_jtxn *t)
{
    jn_commit__submit(arg, t);
}

static int64_t broker__now_ms(void *arg)
{
    (void)arg;
    return jn_mono_ms();
}

static long long broker__backoff_ms(void *arg, long long base, long long cap, int attempt)
{
    (void)arg;
    return jn_backoff_ms(base, cap, attempt);
}

/* ---- ingest and the commit stage ---- */

static void ticket_refuse(struct jn_ticket *t, int rc, const char *why)
{
    struct jn_err e;

    if (t->tracked) {
        jn_track__detach(t); /* refused: no outcome */
    }
    t->ch->n_refused++;
    jn_channel_note_error(t->ch, why, jn_now_us());
    jn_err_set(&e, rc, "%s", why);
    if (t->cb) {
        t->cb(t->arg, rc, t->msg, &e);
    }
}

/* The journal has the message (rc 0) or refused it: acknowledge, then route. */
static void ingest_committed(void *arg, int rc)
{
    struct jn_ticket *t = arg;
    struct jn_broker *b = t->b;
    int routed = 0;

    b->ingests_in_flight--;
    if (rc != 0) {
        ticket_refuse(t, rc, rc == JN_EFULL ? "the journal is full; try again later"
                                            : "the journal could not store the message");
    } else {
        t->ch->n_in++;
        jn_hist_add_us(&b->commit_lat, jn_now_us() - t->msg->recv_us);
        jn_log_p(JN_LOG_DEBUG, t->ch->log_prefix, "msg=%s received (%zu bytes)", t->msg->id,
                 t->msg->len);
        t->accepted = 1;
        if (t->tracked) {
            memcpy(t->id, t->msg->id, sizeof(t->id));
        }
        if (t->cb) {
            t->cb(t->arg, 0, t->msg, NULL);
        }
        routed = !b->freeing;
        if (routed && t->deferred) {
            /* Routed after the acknowledgement: the router takes the message over (the loop
             * leaves it alone until the router is done with it). */
            struct jn_msg *m = t->msg;
            t->msg = NULL;
            jn_route__later(b, t->ch, m, t->inbox_seq, t->tracked ? t : NULL, t->gen);
            t->gen = NULL;
            jn_commit__paged(b, rc);
            if (!t->tracked) {
                jn_commit__ticket_done(t, 1);
            }
            return;
        }
    }
    if (t->gen != NULL) {
        jn_gen__release(b, t->gen); /* not routed here: the next start routes it */
        t->gen = NULL;
    }
    /* Its deliveries enter their queues now (while the broker is being freed, they stay in
     * the journal for the next start). */
    jn_queue_commit(t->adds, rc != 0 || b->freeing ? JN_ESTOPPED : 0, t->tracked ? t : NULL);
    t->adds = NULL;
    jn_commit__paged(b, rc);
    jn_commit__ticket_done(t, routed);
}

/* Certificates replaced on disk are taken up without a signal (jn_tls_reload_changed): open
 * connections keep theirs, a bad new file is refused with an error line. */
static void tls_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct timeval tv = {JN_TLS_WATCH_MS / 1000, (JN_TLS_WATCH_MS % 1000) * 1000};

    (void)fd;
    if (what != 0) {
        jn_tls_reload_changed();
    }
    evtimer_add(b->tls_timer, &tv);
}

struct jn_ticket *jn_ingest(struct jn_channel *ch, struct jn_msg *msg, jn_accept_fn cb, void *arg)
{
    struct jn_broker *b = ch->broker;
    struct jn_ticket *t = jn_calloc(1, sizeof(*t));
    struct jn_jtxn *jt = NULL;

    if (t == NULL) {
        /* No ticket to defer a callback with: NULL tells the channel to refuse itself. */
        jn_msg_unref(&msg);
        return NULL;
    }
    t->b = b;
    t->ch = ch;
    t->msg = msg;
    t->cb = cb;
    t->arg = arg;
    if (b->stopping) {
        t->refusal = JN_ESTOPPED;
    } else if (ch->paused) {
        t->refusal = JN_EAGAIN;
    } else if ((t->why = jn_flow__blocked(b, ch)) != NULL) {
        t->refusal = JN_EFULL;
        b->n_blocked++;
    } else if ((t->why = jn_rate__take(ch, jn_now_us())) != NULL) {
        t->refusal = JN_ELIMIT;
    } else {
        if (msg->id[0] == '\0') {
            jn_idgen_next(&b->ids, msg->id);
        }
        jt = jn_jtxn_new();
        /* The message's dedup entry (jn_msg_set_dedup) is durable in the same commit. */
        if (jt == NULL || jn_msg_encode(msg, &t->env) != 0 ||
            jn_store_log_peer(jt, jn_journal_seq(b->journal), msg->id, "received", NULL,
                              ch->name, 0, NULL, b->cfg->hash,
                              jn_msg_header_get(msg, "tls-peer")) != 0 ||
            jn_store_dedup_put_msg(jt, ch->name, msg) != 0) {
            jn_jtxn_free(jt);
            t->refusal = JN_ENOMEM;
        } else if (jn_route__deferred(b, ch)) {
            /* Its routes have services: the commit holds it in the inbox, the sender is
             * answered, and the routing follows (jn_route.c). */
            t->deferred = 1;
            t->inbox_seq = jn_journal_seq(b->journal);
            if (jn_store_inbox_put_env(jt, t->inbox_seq, t->env.p, t->env.len) != 0) {
                jn_jtxn_free(jt);
                t->refusal = JN_ENOMEM;
            } else {
                /* Routed under the config it was received under, even if a reload comes
                 * before its commit (a channel the new config removed is still routed). */
                t->gen = b->gen;
                t->gen->jobs++;
            }
            jn_buf_reset(&t->env);
        } else {
            /* Routed in the same transaction: the commit that makes the message durable
             * also queues it, and the acknowledgement waits for nothing more. */
            jn_route__build(b, jt, ch, msg, &t->env, t);
            t->adds = jn_commit__take_adds(b);
            jn_buf_reset(&t->env);
        }
        jn_msg_clear_dedup(msg);
    }
    if (t->refusal) {
        /* Refused before the journal: answer on the next loop turn, never from in here. */
        if (b->pend_tail) {
            b->pend_tail->next = t;
        } else {
            b->pend_head = t;
        }
        b->pend_tail = t;
        event_active(b->commit_ev, EV_WRITE, 0);
        return t;
    }
    b->ingests_in_flight++;
    jn_journal_submit(b->journal, jt, 1, ingest_committed, t);
    return t;
}

struct jn_ticket *jn_ingest_outcome(struct jn_channel *ch, struct jn_msg *msg,
                                    jn_accept_fn accepted, jn_outcome_fn outcome, void *arg)
{
    struct jn_broker *b = ch->broker;
    struct jn_ticket *t = jn_ingest(ch, msg, accepted, arg);

    /* jn_ingest never calls back from inside itself, so the tracking can be set up after. */
    if (t == NULL) {
        return NULL;
    }
    t->tracked = 1;
    t->pending = 1; /* the routing */
    if (outcome != NULL) {
        t->outcome = outcome;
        t->onext = b->outcomes;
        if (b->outcomes) {
            b->outcomes->oprev = t;
        }
        b->outcomes = t;
    }
    return t;
}

void jn_ingest_forget(struct jn_ticket *t)
{
    if (t) {
        t->cb = NULL;
        /* A tracked ticket is never freed here: pending is at least 1 while it is awaited. */
        jn_track__detach(t);
    }
}

/* ---- duplicate windows in the journal (jn_channel.h; records in jn_store.h) ---- */

int jn_dedup_load(struct jn_channel *ch, size_t max, jn_dedup_visit_fn visit, void *arg)
{
    return jn_store_dedup_load(ch->broker->journal, ch->name, jn_now_us(), max, visit, arg);
}

int jn_dedup_answer(struct jn_channel *ch, const void *key, size_t klen, const char *id,
                    const void *answer, size_t alen)
{
    struct jn_broker *b = ch->broker;
    struct jn_jtxn *t = b->journal ? jn_jtxn_new() : NULL;
    int rc = t ? jn_store_dedup_answer(b->journal, t, ch->name, key, klen, id, answer, alen)
               : b->journal ? JN_ENOMEM : JN_ESTOPPED;

    if (rc == 0) {
        jn_journal_submit(b->journal, t, 0, NULL, NULL);
    } else {
        jn_jtxn_free(t);
    }
    return rc;
}

/* Answers the ingests refused before they reached the journal. */
static void refuse_pending(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct jn_ticket *t = b->pend_head;

    b->pend_head = b->pend_tail = NULL;
    while (t) {
        struct jn_ticket *next = t->next;
        ticket_refuse(t, t->refusal,
                      t->refusal == JN_ESTOPPED ? "broker is stopping"
                      : t->refusal == JN_EAGAIN ? "the channel is paused by the operator; try "
                                                  "again later"
                      : (t->refusal == JN_EFULL || t->refusal == JN_ELIMIT) && t->why ? t->why
                                                         : "out of memory");
        jn_commit__ticket_done(t, 0);
        t = next;
    }
}

/* ---- life cycle ---- */

static size_t sends_in_flight(struct jn_broker *b)
{
    size_t n = 0;

    for (size_t i = 0; i < b->nchans; i++) {
        n += b->queues[i] ? jn_queue_in_flight(b->queues[i]) : 0;
    }
    return n;
}

/* Stopping waits for what is in the air: ingests being committed (so their senders get an
 * answer), the routing under way (the router finishes the message it has begun and skips the
 * rest: they stay in the inbox) and sends in flight (so their outcome is recorded). Queued messages need no wait:
 * they are in the journal and the next start delivers them. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct timeval tv = {0, 10000};
    int idle = b->ingests_in_flight == 0 && b->pend_head == NULL && b->routing_in_flight == 0 &&
               b->replies_in_flight == 0 && sends_in_flight(b) == 0;

    if (idle || jn_mono_ms() >= b->stop_deadline_ms) {
        size_t told;
        if (!idle) {
            jn_log(JN_LOG_WARN, "stop: shutdown_timeout reached with %zu send(s) in flight; "
                   "they stay queued and are sent again at the next start",
                   sends_in_flight(b));
        }
        /* Outcomes still awaited will not come in this run: say so, and give the channels a
         * few loop turns (100 ms) to write those answers before the loop ends. */
        told = jn_track__stop_all(b);
        if (told) {
            struct timeval grace = {0, 100000};
            jn_log(JN_LOG_INFO, "stop: %zu message(s) still being delivered answered 'not "
                   "delivered yet'; they stay queued", told);
            event_base_loopexit(b->base, &grace);
        } else {
            event_base_loopexit(b->base, NULL);
        }
        return;
    }
    evtimer_add(b->drain_timer, &tv);
}

/* systemd's STATUS= line (jn_sdnotify.h): short counts, read on the loop. */
static void broker__status(void *arg, char *buf, size_t n)
{
    struct jn_broker *b = arg;
    unsigned long long in = 0;
    size_t up = 0;

    for (size_t i = 0; i < b->nchans; i++) {
        in += b->chans[i]->n_in;
        up += b->chans[i]->up != 0;
    }
    snprintf(buf, n, "ready; %zu/%zu channels up; %llu received; %zu queued; %llu dead-lettered",
             up, b->nchans, in, b->journal ? jn_journal_count(b->journal, JN_JDB_QUEUE) : 0,
             (unsigned long long)b->n_dead);
}

void jn_broker_stop(struct jn_broker *b)
{
    struct timeval tv = {0, 0};
    char status[128];

    if (b->stopping) {
        return;
    }
    b->stopping = 1;
    snprintf(status, sizeof(status), "stopping; %zu send(s) in flight", sends_in_flight(b));
    jn_sdnotify_stopping(b->sdn, status);
    jn_route__stop(b);
    for (size_t i = 0; i < b->nchans; i++) {
        if (b->queues[i]) {
            jn_queue_stop(b->queues[i], 0);
        }
    }
    /* Counted in the journal: a paged queue is mostly there, not in memory. */
    jn_log(JN_LOG_INFO, "stopping: intake closed; %zu send(s) in flight; %zu queued message(s) "
           "stay in the journal", sends_in_flight(b),
           jn_journal_count(b->journal, JN_JDB_QUEUE));
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        if (ch->dir == JN_DIR_IN && !ch->broken) {
            jn_channel_stop(ch);
            ch->up = 0;
        }
    }
    b->stop_deadline_ms = jn_mono_ms() + b->cfg->core.shutdown_timeout;
    evtimer_add(b->drain_timer, &tv);
}

/* SIGHUP: the config is read again and applied live (jn_reload.c; a file that cannot be is
 * refused, logged, and the running one stays), and TLS certificate files are read again (new
 * connections use them, open ones keep theirs, a bad file keeps the old one). */
static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct jn_reload_report rep;

    (void)sig;
    (void)what;
    jn_log(JN_LOG_INFO, "SIGHUP received: reloading the config and the TLS certificates");
    jn_broker_reload(b, &rep);
    jn_reload_report_free(&rep);
    jn_tls_reload_all();
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
    b->qenv = (struct jn_queue_env){
        .arg = b,
        .ended = jn_notify__ended,
        .submit = broker__submit,
        .tag_hold = jn_track__q_hold,
        .tag_note = jn_track__q_note,
        .tag_settle = jn_track__q_settle,
        .tag_wants_reply = jn_track__q_wants_reply,
        .now_ms = broker__now_ms,
        .backoff_ms = broker__backoff_ms,
        .nspilled = &b->nspilled,
    };
    /* Threads of later channels (paho, librdkafka) wake the loop with event_active. */
    evthread_use_pthreads();
    b->base = loop_base_new();
    b->qenv.base = b->base;
    b->chans = jn_calloc(cfg->nchannels + 1, sizeof(*b->chans));
    b->queues = jn_calloc(cfg->nchannels + 1, sizeof(*b->queues));
    if (b->base == NULL || b->chans == NULL || b->queues == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    b->commit_ev = event_new(b->base, -1, 0, refuse_pending, b);
    b->drain_timer = evtimer_new(b->base, drain_cb, b);
    b->prune_timer = evtimer_new(b->base, jn_retain__prune_cb, b);
    b->tls_timer = evtimer_new(b->base, tls_watch_cb, b);
    b->sig_term = evsignal_new(b->base, SIGTERM, signal_cb, b);
    b->sig_int = evsignal_new(b->base, SIGINT, signal_cb, b);
    b->sig_hup = evsignal_new(b->base, SIGHUP, sighup_cb, b);
    /* A write to a peer that has gone must fail with EPIPE, not kill the process: libevent
     * (writev) and OpenSSL's socket BIO (write) do not pass MSG_NOSIGNAL. Found with a TLS
     * peer that refuses our certificate and closes while a request is being written. */
    signal(SIGPIPE, SIG_IGN);
    if (!b->commit_ev || !b->drain_timer || !b->prune_timer || !b->tls_timer || !b->sig_term ||
        !b->sig_int ||
        !b->sig_hup) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    /* Caught from here on, not only once the channels are up: a SIGHUP that came while the
     * listeners were opening killed junction (the default action) in crash_reload, whose
     * first SIGHUP follows the IN port's opening at once. One that comes before the loop runs
     * is handled on its first turn (a reload of the same file changes nothing; SIGTERM stops). */
    evsignal_add(b->sig_term, NULL);
    evsignal_add(b->sig_int, NULL);
    evsignal_add(b->sig_hup, NULL);
    {
        struct jn_journal_conf jc = {
            .dir = cfg->core.data_dir,
            .map_size = cfg->core.max_size,
            .high_water_pct = (int)cfg->core.high_water,
            .warn_pct = (int)cfg->core.high_water - 10,
        };
        if (jn_journal_open(&b->journal, &jc, b->base, err) != 0) {
            goto fail;
        }
        b->qenv.journal = b->journal;
        jn_log(JN_LOG_INFO, "journal in %s (max_size %llu MiB)", cfg->core.data_dir,
               (unsigned long long)(cfg->core.max_size >> 20));
    }
    if (jn_gen__first(b, err) != 0) {
        goto fail;
    }
    jn_reload__note_config(b);
    for (size_t i = 0; i < cfg->nchannels; i++) {
        const struct jn_cfg_channel *cc = &cfg->channels[i];
        struct jn_channel *ch = jn_calloc(1, sizeof(*ch));
        if (ch == NULL) {
            jn_err_set(err, JN_ENOMEM, "out of memory");
            goto fail;
        }
        b->chans[i] = ch;
        ch->slot = i;
        jn_reload__chan_setup(b, ch, cc);
        b->nchans = i + 1;
        if (ch->dir == JN_DIR_OUT) {
            b->queues[i] = jn_queue_new(ch, &b->qenv);
            if (b->queues[i] == NULL) {
                jn_err_set(err, JN_ENOMEM, "out of memory");
                ch->def = NULL;
                goto fail;
            }
        }
        if (jn_channel_init(ch, err) != 0) {
            char why[JN_ERR_MSG_MAX];
            snprintf(why, sizeof(why), "%s", err->msg);
            jn_err_set(err, err->code, "channel '%s' (%s): %s", ch->name, ch->def->name, why);
            ch->def = NULL;
            goto fail;
        }
    }
    if (jn_route__init(b, err) != 0 || jn_flow__init(b, err) != 0) {
        goto fail;
    }
    return b;
fail:
    jn_broker_free(b);
    return NULL;
}

void jn_broker_set_user(struct jn_broker *b, const char *user)
{
    b->run_user = user;
}

int jn_broker_run(struct jn_broker *b)
{
    struct jn_err err;

    if (jn_recover__run(b) != 0) {
        return 1;
    }
    /* OUT channels first, so IN ones never accept what cannot be queued. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < b->nchans; i++) {
            struct jn_channel *ch = b->chans[i];
            if ((pass == 0) != (ch->dir == JN_DIR_OUT)) {
                continue;
            }
            jn_err_clear(&err);
            if (jn_channel_start(ch, &err) != 0) {
                jn_log_p(JN_LOG_ERROR, ch->log_prefix, "cannot start: %s",
                         err.msg[0] ? err.msg : jn_strerror(err.code));
                return 1;
            }
            ch->up = 1;
        }
    }
    if (b->run_user != NULL) {
        jn_err_clear(&err);
        if (jn_priv_drop(b->run_user, &err) != 0) {
            jn_log(JN_LOG_ERROR, "cannot start: %s", err.msg);
            return 1;
        }
        jn_log(JN_LOG_INFO, "running as user %s", b->run_user);
    }
    b->started = 1;
    b->started_us = jn_now_us();
    {
        struct timeval first = {1, 0};
        evtimer_add(b->prune_timer, &first);
        tls_watch_cb(-1, 0, b); /* arms itself */
    }
    jn_flow__start(b);
    jn_log(JN_LOG_INFO, "junction started: %zu channel(s), %zu service(s), %zu route(s)",
           b->nchans, b->nsvcs, b->cfg->nroutes);
    /* Ready as /ready means it: the journal is open and every channel has started (IN ones
     * listen); the admin listener was started before the loop. */
    b->sdn = jn_sdnotify_ready(b->base, broker__status, b);
    event_base_dispatch(b->base);
    {
        uint64_t unrouted = 0;
        for (size_t i = 0; i < b->nchans; i++) {
            unrouted += b->chans[i]->n_unrouted;
        }
        jn_log(JN_LOG_INFO, "junction stopped: %llu dead-lettered, %llu unrouted",
               (unsigned long long)b->n_dead, (unsigned long long)unrouted);
    }
    return 0;
}

void jn_broker_free(struct jn_broker *b)
{
    if (b == NULL) {
        return;
    }
    b->stopping = 1;
    b->freeing = 1;
    for (size_t i = 0; i < b->nchans; i++) {
        if (b->queues[i]) {
            jn_queue_stop(b->queues[i], 1);
        }
    }
    /* While every channel still exists (the loop may never have run, or was cut short). */
    jn_track__stop_all(b);
    jn_reply__free(b);
    jn_route__free(b);
    jn_flow__free(b);
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        if (ch->def && !ch->broken) {
            jn_channel_stop(ch);
        }
    }
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        /* Deliveries waiting for a retry are not with the channel: release them here. Their
         * queue records stay in the journal. */
        if (b->queues[i]) {
            jn_queue_release(b->queues[i]);
        }
        if (ch->def && !ch->broken) {
            jn_channel_destroy(ch); /* finishes sends still in flight with JN_SEND_RETRY */
        }
    }
    /* Flush the journal while channels' memory still exists: the last callbacks run here
     * (tickets were forgotten by the channels' destroy; nothing is routed while freeing). */
    jn_journal_close(b->journal);
    b->journal = NULL;
    jn_replay__free(b);
    for (size_t i = 0; i < b->nchans; i++) {
        jn_queue_free(b->queues[i]);
    }
    while (b->pend_head) {
        struct jn_ticket *t = b->pend_head;
        b->pend_head = t->next;
        jn_track__detach(t); /* never accepted: no outcome (the channel forgot it anyway) */
        jn_commit__ticket_done(t, 0);
    }
    jn_sdnotify_free(b->sdn);
    if (b->commit_ev) {
        event_free(b->commit_ev);
    }
    if (b->drain_timer) {
        event_free(b->drain_timer);
    }
    if (b->tls_timer) {
        event_free(b->tls_timer);
    }
    if (b->prune_timer) {
        event_free(b->prune_timer);
    }
    if (b->sig_term) {
        event_free(b->sig_term);
    }
    if (b->sig_hup) {
        event_free(b->sig_hup);
    }
    if (b->sig_int) {
        event_free(b->sig_int);
    }
    for (size_t i = 0; b->chans != NULL && i < b->nchans; i++) {
        jn_free(b->chans[i]);
    }
    jn_free(b->chans);
    jn_free(b->queues);
    jn_reload__free(b);
    /* Last: channels, queued deliveries and the action log borrowed names from the configs. */
    jn_gen__free_all(b);
    if (b->base) {
        event_base_free(b->base);
    }
    jn_idgen_destroy(&b->ids);
    jn_free(b);
}
