/*
 * jn_route: what becomes of a message the journal has: its routes are matched and their
 * services run (by cfg->router, routes/jn_router.c, through jn_spec.h's ops table), and the outputs become queue records, dead letters and
 * action log entries in a journal transaction.
 *
 * Two paths, chosen per IN channel when the broker is made:
 *   - A channel none of whose routes has services is routed inside its ingest transaction
 *     (jn_route__build from jn_ingest): one commit makes the message durable and queues it,
 *     and the acknowledgement waits for nothing more.
 *   - A channel with a route through services is routed after the acknowledgement: the
 *     ingest commit holds an inbox record, the sender is answered, and the message is posted
 *     to the routing worker (jn_worker), whose thread runs the conditions and services, off
 *     the loop, one message after another in the order they were accepted (or several at
 *     once, when a service asks for more threads: jn_service_def.parallel, http-lookup's
 *     concurrency; a reorder window then commits them in that order all the same). Back on
 *     the loop, the outputs are written with the deletion of the inbox record in one later
 *     transaction, so a crash between the two commits routes the message again from the inbox
 *     at the next start (jn_recover.c, through jn_route__inbox: the same path). A slow service
 *     delays its own messages, never another sender's acknowledgement.
 *
 * Threads: everything here runs on the loop except route_run, on the worker's threads, which
 * reads the job it was given and the config and services of the job's generation (jn_gen:
 * fixed once made; a reload makes a new one for the jobs posted after it, so a message is
 * routed under exactly one config). The loop does not touch a job's message while the worker
 * has it. Services run on those threads only (never on the loop); with more than one thread
 * a service's transform runs for several messages at once, which jn_service.h allows (state
 * shared between calls is under the service's own lock: the lua state, the lookup cache).
 *
 * Model: Fluent Bit's filters before the storage and NiFi's "commit, then process" session;
 * Mosquitto's db__ for the module__verb names.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_store.h"
#include "jn_time.h"
#include "jn_worker.h"

/* m's encoding: the caller's (menv) when it has one, else encoded once into own. NULL when out
 * of memory. */
static const struct jn_buf *envelope_of(const struct jn_msg *m, const struct jn_buf *menv,
                                        struct jn_buf *own)
{
    if (menv != NULL && menv->p != NULL) {
        return menv;
    }
    if (own->p == NULL && jn_msg_encode(m, own) != 0) {
        jn_buf_reset(own);
        return NULL;
    }
    return own;
}

/* How often, at most, a channel's unrouted messages are logged (each is in the action log). */
#define UNROUTED_NOTE_US (60 * 1000000LL)

/*
 * Counts a message from src (index ci) that no route took and, the first time and then at most
 * once a minute per channel, says so with the reason: which routes read from src and the
 * conditions that did not hold.
 */
static void unrouted_note(struct jn_broker *b, struct jn_channel *src, size_t ci,
                          const struct jn_msg *m, int level, const char *outcome)
{
    const struct jn_config *cfg = b->cfg;
    struct jn_buf why = JN_BUF_INIT;
    int64_t now = jn_now_us();
    size_t n = 0;

    src->n_unrouted++;
    if (src->unrouted_noted_us != 0 && now - src->unrouted_noted_us < UNROUTED_NOTE_US) {
        return;
    }
    src->unrouted_noted_us = now;
    n = cfg->router->explain(cfg->routes, cfg->nroutes, ci, &why);
    jn_log(level, "channel '%s': msg=%s matched no route (%s%s), %s; %llu unrouted from '%s' "
           "so far (said at most once a minute)", src->name, m->id,
           n ? "no condition held: " : "no route reads from it", why.p ? why.p : "", outcome,
           (unsigned long long)src->n_unrouted, src->name);
    jn_buf_reset(&why);
}

struct route_ctx {
    struct jn_broker *b;
    const struct jn_config *cfg; /* the config it is routed under (a generation's) */
    struct jn_jtxn *t;
    struct jn_msg *m;
    const struct jn_buf *menv;
    struct jn_buf *own;
    struct jn_ticket *track;
    int keep;             /* the most the routes that took it keep (enum jn_keep) */
    struct jn_buf routes; /* their names, comma-separated */
    struct jn_buf outs;   /* what services made of it: [route, envelope] pairs (jn_store.h) */
    size_t nouts;
};

/* An output of r's service number stage, kept with the message when r keeps all. */
static void note_output(struct route_ctx *c, const struct jn_cfg_route *r, size_t stage,
                        const struct jn_buf *env)
{
    if (r->rc.via.n == 0 || r->rc.keep != JN_KEEP_ALL || env == NULL ||
        c->nouts == JN_KEPT_OUTS_MAX) {
        return;
    }
    if (jn_mp_array(&c->outs, 3) == 0 && jn_mp_cstr(&c->outs, r->name) == 0 &&
        jn_mp_cstr(&c->outs, r->rc.via.v[stage]) == 0 &&
        jn_mp_bin(&c->outs, env->p, env->len) == 0) {
        c->nouts++;
    }
}

/* The outputs of each service of r but the last (jn_route_fn's stages), kept as above. */
static void note_stages(struct route_ctx *c, const struct jn_cfg_route *r,
                        const struct jn_msg_list *stages)
{
    if (stages == NULL || r->rc.keep != JN_KEEP_ALL) {
        return;
    }
    for (size_t i = 0; i + 1 < r->rc.via.n; i++) {
        for (size_t k = 0; k < stages[i].n; k++) {
            struct jn_buf env = JN_BUF_INIT;
            if (jn_msg_encode(stages[i].v[k], &env) == 0) {
                note_output(c, r, i, &env);
            }
            jn_buf_reset(&env);
        }
    }
}

/* A route took the message: it is kept as much as the most that any of its routes keeps. */
static void note_kept(struct route_ctx *c, const char *route, int keep)
{
    if (keep > c->keep) {
        c->keep = keep;
    }
    if (keep != JN_KEEP_NONE) {
        jn_buf_printf(&c->routes, "%s%s", c->routes.len ? "," : "", route);
    }
}

/* After routing: the kept record, in the routing transaction (jn_store.h). */
static void put_kept(struct route_ctx *c)
{
    const struct jn_buf *env;

    if (c->keep == JN_KEEP_NONE || c->t == NULL) {
        return;
    }
    env = c->keep == JN_KEEP_ALL ? envelope_of(c->m, c->menv, c->own) : NULL;
    if (jn_store_kept_put(c->t, jn_journal_seq(c->b->journal), c->m, env, c->keep,
                          c->routes.p ? c->routes.p : "", &c->outs, c->nouts) != 0) {
        jn_log(JN_LOG_WARN, "msg=%s out of memory keeping it: not kept after delivery",
               c->m->id);
    }
}

/* A route took c->m (the router's route): one queue record per output and destination, or a dead
 * letter when its services failed. */
static void route_taken(void *arg, const struct jn_cfg_route *r, const struct jn_msg_list *outs,
                        const struct jn_msg_list *stages, const struct jn_err *err)
{
    struct route_ctx *c = arg;
    struct jn_broker *b = c->b;
    struct jn_jtxn *t = c->t;
    struct jn_msg *m = c->m;
    struct jn_ticket *track = c->track;

    /* Kept also when its services failed: the message browser and ctl record show it. */
    note_kept(c, r->name, r->rc.keep);
    if (outs == NULL) {
        jn_notify__dead_letter(b, t, m, r->name, NULL, 0, err->msg, JN_LOG_WARN, NULL);
        if (track) {
            jn_track__note(track, JN_SEND_REJECT, err->msg, NULL, 0);
        }
        return;
    }
    jn_log(JN_LOG_DEBUG, "msg=%s route=%s matched: %zu message(s) to %zu destination(s)", m->id,
           r->name, outs->n, r->rc.to.n);
    if (c->cfg == b->cfg) {
        b->n_routed[r - b->cfg->routes]++;
    }
    /* Services that gave nothing back (a filter, a script's nil) dropped the message on
     * purpose: `filtered`, so the trace does not show it queued forever. */
    jn_commit__log(b, t, m, r->rc.via.n == 0 ? "routed"
                   : outs->n ? "routed+transformed" : "filtered", r->name, NULL, 0, NULL);
    note_stages(c, r, stages);
    for (size_t k = 0; k < outs->n; k++) {
        /* Each output is encoded once for all its destinations; an output that is the
         * accepted message itself reuses the ingest's encoding. */
        struct jn_buf oenv = JN_BUF_INIT;
        const struct jn_buf *env = outs->v[k] == m ? envelope_of(m, c->menv, c->own) : NULL;
        if (env == NULL && jn_msg_encode(outs->v[k], &oenv) == 0) {
            env = &oenv;
        }
        note_output(c, r, r->rc.via.n ? r->rc.via.n - 1 : 0, env);
        for (size_t d = 0; d < r->rc.to.n; d++) {
            struct jn_queue *q = b->queues[r->to[d]];
            const char *dest = jn_queue_channel(q)->name;
            uint64_t qseq;
            if (jn_flow__full_policy(b, q, t, outs->v[k], r->name) != 0) {
                continue; /* dead-lettered for this destination: its queue is full (reject) */
            }
            qseq = jn_journal_seq(b->journal);
            if (env == NULL || jn_store_queue_put_env(t, dest, qseq, env->p, env->len, r->name,
                                                      1, NULL) != 0) {
                jn_log(JN_LOG_ERROR, "msg=%s out of memory queueing for %s", m->id, dest);
                if (track) {
                    jn_track__note(track, JN_SEND_RETRY, "out of memory queueing", NULL, 0);
                }
                continue;
            }
            jn_queue_add(q, &b->adds, jn_msg_ref(outs->v[k]), r->name, qseq);
        }
        jn_buf_reset(&oenv);
    }
}

/* No route took m (src NULL: its channel is gone): what `unrouted:` says is done with it. */
static void route_unmatched(struct route_ctx *c, struct jn_channel *src)
{
    struct jn_broker *b = c->b;
    const struct jn_config *cfg = c->cfg;
    struct jn_jtxn *t = c->t;
    struct jn_msg *m = c->m;
    size_t ci = src ? src->slot : (size_t)-1;

    switch (src ? cfg->unrouted : JN_UNROUTED_DEAD_LETTER) {
    case JN_UNROUTED_DEAD_LETTER:
        /* Per message at debug: the channel's note below says it once a minute. */
        jn_notify__dead_letter(b, t, m, NULL, NULL, 0,
                               src ? "unrouted: no route took the message"
                                   : "unrouted: its source channel is no longer in the config",
                               src ? JN_LOG_DEBUG : JN_LOG_WARN, NULL);
        if (src) {
            unrouted_note(b, src, ci, m, JN_LOG_WARN, "dead-lettered (see junction dlq list)");
        }
        if (c->track) {
            jn_track__note(c->track, JN_SEND_REJECT, "unrouted: no route took the message", NULL,
                           0);
        }
        break;
    case JN_UNROUTED_DROP:
        b->n_unrouted_dropped++;
        jn_log(JN_LOG_DEBUG, "msg=%s unrouted from %s: dropped (unrouted: drop)", m->id,
               src->name);
        unrouted_note(b, src, ci, m, JN_LOG_INFO, "dropped (unrouted: drop)");
        jn_commit__log(b, t, m, "dropped", NULL, src->name, 0, "unrouted: drop");
        break;
    case JN_UNROUTED_CHANNEL: {
        struct jn_queue *q = b->queues[cfg->unrouted_channel];
        uint64_t qseq = jn_journal_seq(b->journal);
        const struct jn_buf *env = envelope_of(m, c->menv, c->own);
        jn_commit__log(b, t, m, "routed", "(unrouted)", NULL, 0, NULL);
        note_kept(c, "(unrouted)", JN_KEEP_ALL);
        if (env != NULL && jn_store_queue_put_env(t, jn_queue_channel(q)->name, qseq, env->p,
                                                  env->len, "(unrouted)", 1, NULL) == 0) {
            jn_queue_add(q, &b->adds, jn_msg_ref(m), "(unrouted)", qseq);
        } else if (c->track) {
            jn_track__note(c->track, JN_SEND_RETRY, "out of memory queueing", NULL, 0);
        }
        break;
    }
    }
}

void jn_route__build(struct jn_broker *b, struct jn_jtxn *t, struct jn_channel *src,
                     struct jn_msg *m, const struct jn_buf *menv, struct jn_ticket *track)
{
    const struct jn_config *cfg = b->cfg;
    struct jn_buf own = JN_BUF_INIT; /* m's encoding when the caller has none */
    struct route_ctx rc = {b, cfg, t, m, menv, &own, track, JN_KEEP_NONE, JN_BUF_INIT,
                           JN_BUF_INIT, 0};

    if (src == NULL || cfg->router->route(cfg->routes, cfg->nroutes, src->slot, m, b->svcs,
                                          &b->ids, route_taken, &rc) == 0) {
        route_unmatched(&rc, src);
    }
    put_kept(&rc);
    jn_buf_reset(&rc.routes);
    jn_buf_reset(&rc.outs);
    jn_buf_reset(&own);
}

/* ---- routing after the acknowledgement (the routing worker) ---- */

/* One route that took a job's message, as the worker saw it. */
struct taken {
    struct taken *next;
    const struct jn_cfg_route *r;
    struct jn_msg_list outs; /* references; empty when its services failed */
    struct jn_msg_list *stages; /* the route's jn_route_fn stages, or NULL */
    int failed;
    struct jn_err err;       /* why, when failed */
};

struct route_job {
    struct jn_job job;
    struct jn_broker *b;
    struct jn_channel *src;
    struct jn_gen *gen;        /* routed under its config and services (held: gen->jobs) */
    struct jn_msg *m;          /* owned reference */
    uint64_t inbox_seq;
    uint64_t seq;              /* its place in the acceptance order (the reorder window) */
    struct jn_ticket *track;   /* tracked ticket whose routing part this is, or NULL */
    struct taken *head, **tail;
    size_t matched;
    int ran;                   /* the worker routed it (0: skipped, the broker is stopping) */
    int oom;                   /* a result could not be kept */
};

/* Worker thread: keeps what the router's route gives, with references of its own. */
static void route_collect(void *arg, const struct jn_cfg_route *r, const struct jn_msg_list *outs,
                          const struct jn_msg_list *stages, const struct jn_err *err)
{
    struct route_job *j = arg;
    struct taken *tk = jn_calloc(1, sizeof(*tk));

    if (tk == NULL) {
        j->oom = 1;
        return;
    }
    tk->r = r;
    if (outs == NULL) {
        tk->failed = 1;
        tk->err = *err;
    } else {
        for (size_t k = 0; k < outs->n; k++) {
            if (jn_msg_list_push(&tk->outs, jn_msg_ref(outs->v[k])) != 0) {
                j->oom = 1;
            }
        }
        /* Stages are for showing (kept messages): without memory for them, none. */
        if (stages != NULL && r->rc.keep == JN_KEEP_ALL &&
            (tk->stages = jn_calloc(r->rc.via.n - 1, sizeof(*tk->stages))) != NULL) {
            for (size_t i = 0; i + 1 < r->rc.via.n; i++) {
                for (size_t k = 0; k < stages[i].n; k++) {
                    jn_msg_list_push(&tk->stages[i], jn_msg_ref(stages[i].v[k]));
                }
            }
        }
    }
    *j->tail = tk;
    j->tail = &tk->next;
}

/* Worker thread: routes each job of the batch, unless the broker stops (then they are given
 * back unrouted: their inbox records stay for the next start). */
static void route_run(void *arg, struct jn_job *batch)
{
    struct jn_broker *b = arg;

    for (struct jn_job *jb = batch; jb != NULL; jb = jb->next) {
        struct route_job *j = JN_JOB_OF(jb, struct route_job, job);
        const struct jn_config *cfg = j->gen->cfg;
        if (atomic_load(&b->route_abort)) {
            continue;
        }
        j->matched = cfg->router->route(cfg->routes, cfg->nroutes, j->src->slot, j->m,
                                        j->gen->svcs, &b->ids, route_collect, j);
        /* A stop that came while its services ran may have cut them short (a lookup gives up
         * with JN_ESTOPPED): what they made is not kept, and the message stays in the inbox
         * to be routed again at the next start. */
        j->ran = !atomic_load(&b->route_abort);
    }
}

/* Jobs per batch of the routing thread (jn_worker_set_batch_max). */
#define ROUTE_BATCH_MAX 1
/* The most routing threads, whatever the services ask. */
#define ROUTE_THREADS_MAX 256

static void job_free(struct jn_broker *b, struct route_job *j)
{
    while (j->head) {
        struct taken *tk = j->head;
        j->head = tk->next;
        jn_msg_list_clear(&tk->outs);
        for (size_t i = 0; tk->stages != NULL && i + 1 < tk->r->rc.via.n; i++) {
            jn_msg_list_clear(&tk->stages[i]);
        }
        jn_free(tk->stages);
        jn_free(tk);
    }
    jn_msg_unref(&j->m);
    if (j->gen != NULL) {
        jn_gen__release(b, j->gen);
    }
    jn_free(j);
}

/* A job that is not routed in this run: its inbox record stays, and its ticket's routing part
 * ends undelivered. */
static void job_release(struct jn_broker *b, struct route_job *j)
{
    b->routing_in_flight--;
    if (j->track) {
        jn_commit__ticket_done(j->track, 0);
    }
    job_free(b, j);
}

/* Loop thread: the worker's results become the routing transaction, which also deletes the
 * message's inbox record. */
static void route_finish(struct jn_broker *b, struct route_job *j)
{
    struct jn_buf own = JN_BUF_INIT;
    struct route_ctx rc = {b, j->gen->cfg, NULL, j->m, NULL, &own, j->track, JN_KEEP_NONE,
                           JN_BUF_INIT, JN_BUF_INIT, 0};

    if (!j->ran || b->freeing) {
        job_release(b, j);
        return;
    }
    rc.t = j->oom ? NULL : jn_jtxn_new();
    if (rc.t == NULL || jn_store_inbox_del(rc.t, j->inbox_seq) != 0) {
        jn_jtxn_free(rc.t);
        jn_log(JN_LOG_ERROR, "msg=%s out of memory routing; it stays in the inbox for the next "
               "start", j->m->id);
        job_release(b, j);
        return;
    }
    b->routing_cfg = j->gen->cfg;
    for (struct taken *tk = j->head; tk != NULL; tk = tk->next) {
        route_taken(&rc, tk->r, tk->failed ? NULL : &tk->outs, tk->stages,
                    tk->failed ? &tk->err : NULL);
    }
    if (j->matched == 0) {
        route_unmatched(&rc, j->src);
    }
    b->routing_cfg = NULL;
    put_kept(&rc);
    jn_buf_reset(&rc.routes);
    jn_buf_reset(&rc.outs);
    jn_buf_reset(&own);
    /* The commit ends routing_in_flight and the ticket's routing part. */
    jn_commit__submit_routing(b, rc.t, j->track);
    j->track = NULL;
    job_free(b, j);
}

/*
 * The reorder window: the routing runs on several threads (jn_worker_set_threads), so jobs
 * come back in the order they finish; each is held here until every job posted before it is
 * back, so routings are committed, and reach their queues, in acceptance order. A ring of
 * route_window_cap slots (a power of two), job seq at seq & (cap - 1); it always has room for
 * every job in flight, made at the post (window_room).
 */
static int window_room(struct jn_broker *b)
{
    size_t need = (size_t)(b->route_seq_post - b->route_seq_done) + 1, cap;
    void **grown;

    if (need <= b->route_window_cap) {
        return 0;
    }
    cap = b->route_window_cap ? b->route_window_cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    grown = jn_calloc(cap, sizeof(*grown));
    if (grown == NULL) {
        return JN_ENOMEM;
    }
    for (uint64_t s = b->route_seq_done; s < b->route_seq_post && b->route_window_cap; s++) {
        grown[s & (cap - 1)] = b->route_window[s & (b->route_window_cap - 1)];
    }
    jn_free(b->route_window);
    b->route_window = grown;
    b->route_window_cap = cap;
    return 0;
}

/* Loop thread: a job is back from the worker; it and those after it that are back are
 * finished in order. */
static void route_done(void *arg, struct jn_job *jb)
{
    struct jn_broker *b = arg;
    struct route_job *j = JN_JOB_OF(jb, struct route_job, job);

    if (b->freeing) {
        job_release(b, j); /* nothing is committed any more: order does not matter */
        return;
    }
    b->route_window[j->seq & (b->route_window_cap - 1)] = j;
    for (;;) {
        void **slot = &b->route_window[b->route_seq_done & (b->route_window_cap - 1)];
        if (b->route_seq_done == b->route_seq_post || *slot == NULL) {
            break;
        }
        j = *slot;
        *slot = NULL;
        b->route_seq_done++;
        route_finish(b, j);
    }
}

/* How many threads the routing of gen's services wants: the largest parallel() among them. */
static size_t route_threads(const struct jn_gen *gen)
{
    size_t n = 1;

    for (size_t i = 0; gen != NULL && gen->svcs != NULL && i < gen->nsvcs; i++) {
        const struct jn_service *s = &gen->svcs[i];
        if (s->def != NULL && s->def->parallel != NULL && s->def->parallel(s) > n) {
            n = s->def->parallel(s);
        }
    }
    return n > ROUTE_THREADS_MAX ? ROUTE_THREADS_MAX : n;
}

/* Marks in deferred (one byte per channel) the channels cfg routes after the acknowledgement:
 * those a route with services reads from. Returns how many. */
static size_t mark_deferred(const struct jn_config *cfg, unsigned char *deferred, size_t nchans)
{
    size_t any = 0;

    memset(deferred, 0, nchans);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct jn_cfg_route *r = &cfg->routes[i];
        for (size_t k = 0; r->rc.via.n > 0 && k < r->rc.from.n; k++) {
            deferred[r->from[k]] = 1;
            any++;
        }
    }
    return any;
}

static int router_start(struct jn_broker *b, struct jn_err *err)
{
    atomic_init(&b->route_abort, 0);
    b->router = jn_worker_new(b->base, "jn-route", route_run, route_done, b);
    if (b->router == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot start the routing thread: %s",
                          strerror(errno));
    }
    /* Each message's routing is committed as soon as its services are done, not after a
     * whole batch of slow ones (a batch is what was posted while the previous one ran). */
    jn_worker_set_batch_max(b->router, ROUTE_BATCH_MAX);
    jn_route__threads(b);
    return 0;
}

int jn_route__init(struct jn_broker *b, struct jn_err *err)
{
    b->deferred = jn_calloc(b->nchans + 1, 1);
    b->n_routed = jn_calloc(b->cfg->nroutes + 1, sizeof(*b->n_routed));
    if (b->deferred == NULL || b->n_routed == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (mark_deferred(b->cfg, b->deferred, b->nchans) == 0) {
        return 0;
    }
    return router_start(b, err);
}

int jn_route__reconfig(struct jn_broker *b, const struct jn_config *old, struct jn_err *err)
{
    const struct jn_config *cfg = b->cfg;
    uint64_t *routed = jn_calloc(cfg->nroutes + 1, sizeof(*routed));

    if (routed == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    /* The worker is started before anything changes, and kept when no route needs it any
     * more: jobs posted under the old config may still come. */
    if (b->router == NULL && mark_deferred(cfg, b->deferred, b->nchans) > 0 &&
        router_start(b, err) != 0) {
        mark_deferred(old, b->deferred, b->nchans);
        jn_free(routed);
        return err->code;
    }
    mark_deferred(cfg, b->deferred, b->nchans);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        for (size_t k = 0; k < old->nroutes; k++) {
            if (strcmp(cfg->routes[i].name, old->routes[k].name) == 0) {
                routed[i] = b->n_routed[k];
                break;
            }
        }
    }
    jn_free(b->n_routed);
    b->n_routed = routed;
    return 0;
}

void jn_route__threads(struct jn_broker *b)
{
    size_t n = route_threads(b->gen);
    int rc = b->router != NULL ? jn_worker_set_threads(b->router, n) : 0;

    if (rc != 0) {
        jn_log(JN_LOG_WARN, "routing: could not start %zu threads (%s); fewer route at once",
               n, strerror(rc));
    }
}

int jn_route__deferred(const struct jn_broker *b, const struct jn_channel *src)
{
    return src != NULL && b->deferred != NULL && b->deferred[src->slot];
}

void jn_route__later(struct jn_broker *b, struct jn_channel *src, struct jn_msg *m,
                     uint64_t inbox_seq, struct jn_ticket *track, struct jn_gen *gen)
{
    struct route_job *j = jn_calloc(1, sizeof(*j));

    if (gen == NULL) {
        gen = b->gen;
        gen->jobs++;
    }
    b->routing_in_flight++;
    if (j == NULL) {
        jn_gen__release(b, gen);
        jn_log(JN_LOG_ERROR, "msg=%s out of memory routing; it stays in the inbox for the next "
               "start", m->id);
        jn_msg_unref(&m);
        b->routing_in_flight--;
        if (track) {
            jn_commit__ticket_done(track, 0);
        }
        return;
    }
    j->b = b;
    j->src = src;
    j->gen = gen;
    j->m = m;
    j->inbox_seq = inbox_seq;
    j->track = track;
    j->tail = &j->head;
    if (window_room(b) != 0) {
        jn_log(JN_LOG_ERROR, "msg=%s out of memory routing; it stays in the inbox for the next "
               "start", m->id);
        job_release(b, j);
        return;
    }
    j->seq = b->route_seq_post;
    if (jn_worker_post(b->router, &j->job) != 0) {
        job_release(b, j);
        return;
    }
    b->route_seq_post++;
}

void jn_route__inbox(struct jn_broker *b, struct jn_channel *src, struct jn_msg *m,
                     uint64_t inbox_seq)
{
    struct jn_jtxn *t;

    if (jn_route__deferred(b, src)) {
        jn_route__later(b, src, jn_msg_ref(m), inbox_seq, NULL, NULL);
        return;
    }
    t = jn_jtxn_new();
    if (t == NULL || jn_store_inbox_del(t, inbox_seq) != 0) {
        jn_jtxn_free(t);
        jn_log(JN_LOG_ERROR, "msg=%s out of memory routing; it stays in the inbox for the next "
               "start", m->id);
        return;
    }
    jn_route__build(b, t, src, m, NULL, NULL);
    jn_commit__submit(b, t);
}

void jn_route__stop(struct jn_broker *b)
{
    if (b->router != NULL) {
        atomic_store(&b->route_abort, 1);
    }
}

void jn_route__free(struct jn_broker *b)
{
    if (b->router != NULL) {
        struct jn_job *left;
        atomic_store(&b->route_abort, 1);
        /* Jobs it ran come back through route_done (released: the broker is freeing). */
        left = jn_worker_stop(b->router, 0);
        while (left) {
            struct route_job *j = JN_JOB_OF(left, struct route_job, job);
            left = left->next;
            job_release(b, j);
        }
        jn_worker_free(b->router);
        b->router = NULL;
        /* Back, but behind one that was not: released unrouted (they stay in the inbox). */
        for (size_t i = 0; i < b->route_window_cap; i++) {
            if (b->route_window[i] != NULL) {
                job_release(b, b->route_window[i]);
            }
        }
    }
    jn_free(b->route_window);
    b->route_window = NULL;
    b->route_window_cap = 0;
    jn_free(b->deferred);
    b->deferred = NULL;
    jn_free(b->n_routed);
    b->n_routed = NULL;
}
