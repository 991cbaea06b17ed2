/*
 * jn_reload: the config generations and the hot reload (docs/operations.md, "Changing the
 * config live").
 *
 * A reload runs on the loop, inside one callback (SIGHUP or the admin API's POST
 * /api/v1/reload): the reloader (cli's, jn_broker_set_reloader) loads the file again and
 * config/'s jn_config_reloadable says whether it can replace the running one, what changes,
 * and puts its channels in the running order. Then the new services are started; if one
 * fails, nothing changed. Then the broker switches: b->cfg and b->svcs are the new
 * generation's, and
 *   - messages routed on the loop from now on (channels whose routes have no services, in
 *     their ingest transaction) are routed by the new routes;
 *   - messages received from now on carry the new generation to the routing worker; those
 *     received before (waiting for their commit or for the worker) finish under the old one
 *     (theirs), so no message sees a mix of both;
 *   - channels the new config adds are made and started before the switch (a failure there
 *     changes nothing); removed ones stop (an OUT one once idle) and keep their slot, an OUT
 *     one its queue, for a later reload that adds the name again;
 *   - which channels are routed after the acknowledgement, flow control's feeds and the
 *     per-route counts follow the new routes; reloadable channel options apply at once.
 * Channels that did not change are not touched: no connection is dropped, no listener
 * closed. A channel changed beyond its reloadable options is restarted with its new block
 * (chan_restart): an IN one at once (its listener and connections closed and opened again),
 * an OUT one once its sends in flight are done, its queue held meanwhile and kept. The old
 * generation's services are destroyed with its last job; its config lives as long as the
 * broker, since queued deliveries and channels borrow names from it (a few KiB a reload).
 *
 * Model: nginx's reload (check first, the old config serves until the new one is in place),
 * without its new worker processes: one loop switches between two messages.
 */
#include <string.h>

#include <event2/event.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_queue.h"
#include "jn_rate.h"
#include "jn_store.h"
#include "jn_time.h"

/* An OUT channel a reload restarts once its sends in flight are done (its queue held). */
struct jn_restart {
    struct jn_restart *next;
    size_t chan;
    struct jn_cfg_channel *cc;  /* its new block, in the config now running; NULL: removed
                                 * (stopped for good once idle, its queue kept) */
    struct jn_cfg_channel *old; /* the block it runs, in the config before */
    long long deadline_ms;      /* past this (shutdown_timeout), sends still in flight are
                                 * cut short: they are retried, as at a stop */
};

#define RESTART_CHECK_MS 20

void jn_reload__free(struct jn_broker *b)
{
    while (b->restarts != NULL) {
        struct jn_restart *r = b->restarts;
        b->restarts = r->next;
        jn_free(r);
    }
    if (b->restart_timer != NULL) {
        event_free(b->restart_timer);
        b->restart_timer = NULL;
    }
}

void jn_reload__chan_setup(struct jn_broker *b, struct jn_channel *ch,
                           const struct jn_cfg_channel *cc)
{
    ch->def = cc->def;
    ch->name = cc->name;
    snprintf(ch->log_prefix, sizeof(ch->log_prefix), "%s.%s", cc->def->name, cc->name);
    ch->dir = cc->dir;
    ch->conf = cc->conf;
    ch->state = NULL;
    ch->broker = b;
    ch->base = b->base;
    ch->retry = cc->common.retry;
    ch->concurrency = cc->common.concurrency > 0 ? cc->common.concurrency : 1;
    ch->ordered = cc->common.ordered;
    ch->ordered_key = cc->common.ordered_key;
    ch->max_queued = cc->common.max_queued;
    ch->when_full = cc->common.when_full;
    jn_rate__init(ch, &cc->common.rate_limit);
}

void jn_reload__note_config(struct jn_broker *b)
{
    const struct jn_config *cfg = b->cfg;
    struct jn_buf old = JN_BUF_INIT;
    struct jn_configrec r;
    struct jn_err e;
    int64_t now = jn_now_us(), first = now;
    struct jn_jtxn *t;

    if (cfg->text == NULL) {
        return;
    }
    if (jn_journal_get(b->journal, JN_JDB_CONFIGS, cfg->hash, strlen(cfg->hash), &old) == 0 &&
        jn_store_config_decode(old.p, old.len, &r, &e) == 0) {
        first = r.first_us;
    }
    jn_buf_reset(&old);
    t = jn_jtxn_new();
    if (t == NULL ||
        jn_store_config_put(t, cfg->hash, first, now, cfg->text, cfg->text_len) != 0) {
        jn_jtxn_free(t);
        jn_log(JN_LOG_WARN, "config %s: out of memory keeping its text for ctl config history",
               cfg->hash);
        return;
    }
    jn_journal_submit(b->journal, t, 0, NULL, NULL);
}

void jn_broker_set_reloader(struct jn_broker *b, jn_reload_load_fn load,
                            void (*free_cfg)(struct jn_config *), void *arg)
{
    b->reload_load = load;
    b->reload_free = free_cfg;
    b->reload_arg = arg;
}

const char *jn_reload_status_name(enum jn_reload_status s)
{
    switch (s) {
    case JN_RELOAD_APPLIED: return "reloaded";
    case JN_RELOAD_UNCHANGED: return "unchanged";
    case JN_RELOAD_INVALID: return "invalid";
    case JN_RELOAD_REFUSED: return "refused";
    case JN_RELOAD_FAILED: return "failed";
    }
    return "failed";
}

void jn_reload_report_free(struct jn_reload_report *rep)
{
    jn_diag_free(&rep->msgs);
}

/* The reloadable channel options: the common ones (read anew by the queue for each attempt and
 * by flow control for each ingest) and the channel's own (copied into its running conf; the
 * loader refused any it could not copy). */
static void channels_apply(struct jn_broker *b)
{
    for (size_t i = 0; i < b->nchans; i++) {
        const struct jn_cfg_channel *cc = &b->cfg->channels[i];
        struct jn_channel *ch = b->chans[i];
        if (cc->gone || ch->gone) {
            continue;
        }
        ch->retry = cc->common.retry;
        ch->max_queued = cc->common.max_queued;
        ch->when_full = cc->common.when_full;
        if (ch->conf != cc->conf && !cc->restart) {
            jn_opt_reload(ch->def->opts, ch->conf, cc->conf, 1, NULL, 0);
        }
    }
}

/*
 * Restarts channel i with its new block cc: the old instance is stopped and destroyed (an IN
 * one closes its listener and connections; an OUT one's sends still in flight end as RETRY),
 * the new one made and started. When the new one fails, the old block is started again and the
 * two blocks trade places between the configs, so the running config says what runs and the
 * next reload tries again. 0: the new one runs; 1: the old one runs again; -1: neither could
 * start: the channel is down (broken) until junction restarts.
 */
static int chan_restart(struct jn_broker *b, size_t i, struct jn_cfg_channel *cc,
                        struct jn_cfg_channel *old)
{
    struct jn_channel *ch = b->chans[i];
    char why[JN_ERR_MSG_MAX] = "";
    struct jn_err err;

    if (!ch->broken) {
        jn_channel_stop(ch);
        jn_channel_destroy(ch);
    }
    ch->up = 0;
    ch->listens = 0;
    ch->broken = 0;
    for (int k = 0; k < 2; k++) {
        jn_reload__chan_setup(b, ch, k == 0 ? cc : old);
        jn_err_clear(&err);
        if (jn_channel_init(ch, &err) == 0) {
            if (jn_channel_start(ch, &err) == 0) {
                ch->up = 1;
                if (k == 0) {
                    jn_log_p(JN_LOG_INFO, ch->log_prefix, "restarted with its new options");
                    return 0;
                }
                {
                    struct jn_cfg_channel t = *cc;
                    *cc = *old;
                    *old = t;
                }
                jn_log_p(JN_LOG_WARN, ch->log_prefix, "its new options failed (%s): it runs "
                         "its old ones again", why);
                return 1;
            }
            jn_channel_destroy(ch);
        }
        if (k == 0) {
            snprintf(why, sizeof(why), "%s", err.msg[0] ? err.msg : jn_strerror(err.code));
        }
        jn_log_p(JN_LOG_ERROR, ch->log_prefix, "cannot start %s: %s",
                 k == 0 ? "with its new options" : "again with its old options",
                 err.msg[0] ? err.msg : jn_strerror(err.code));
    }
    ch->broken = 1;
    jn_log_p(JN_LOG_ERROR, ch->log_prefix, "down until junction restarts (its queue, if any, "
             "is kept)");
    return -1;
}

/* A channel the reload removed: stopped and destroyed; its slot stays, nothing calls into it,
 * and an OUT one's queue stays held (its records in the journal) until it comes back. */
static void chan_remove(struct jn_channel *ch)
{
    if (!ch->broken) {
        jn_channel_stop(ch);
        jn_channel_destroy(ch);
    }
    ch->state = NULL;
    ch->up = 0;
    ch->broken = 1;
    ch->gone = 1;
    jn_log_p(JN_LOG_INFO, ch->log_prefix, "removed by the reload: stopped%s",
             ch->dir == JN_DIR_OUT ? "; its queue is kept" : "");
}

/* The restart timer: OUT channels whose sends in flight are done (or whose time is up) are
 * restarted and their queues let go. */
static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct jn_restart **pp = &b->restarts;
    long long now = jn_mono_ms();

    (void)fd;
    (void)what;
    while (*pp != NULL) {
        struct jn_restart *r = *pp;
        struct jn_channel *ch = b->chans[r->chan];
        struct jn_queue *q = b->queues[r->chan];
        if (!b->stopping && jn_queue_in_flight(q) > 0 && now < r->deadline_ms) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        ch->restarting = 0;
        if (r->cc == NULL) {
            chan_remove(ch);
        } else if (!b->stopping && chan_restart(b, r->chan, r->cc, r->old) >= 0) {
            jn_queue_pause(q, ch->paused);
        }
        jn_free(r);
    }
    if (b->restarts != NULL) {
        struct timeval tv = {0, RESTART_CHECK_MS * 1000};
        evtimer_add(b->restart_timer, &tv);
    }
}

/* The channels next restarts: IN ones now; OUT ones once their sends are done (their queues
 * held until then). prev: the config that ran before. */
static void channels_restart(struct jn_broker *b, struct jn_config *next,
                             const struct jn_config *prev)
{
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_cfg_channel *cc = &next->channels[i];
        struct jn_cfg_channel *old;
        struct jn_restart *r;
        int remove = cc->gone && !b->chans[i]->gone;
        if (!cc->restart && !remove) {
            continue;
        }
        /* The block it runs: prev's (the same slot: jn_config_reloadable); written only by
         * chan_restart's trade when the new one fails. */
        old = (struct jn_cfg_channel *)&prev->channels[i];
        if (b->queues[i] == NULL) {
            if (remove) {
                chan_remove(b->chans[i]);
            } else {
                chan_restart(b, i, cc, old);
            }
            continue;
        }
        r = jn_calloc(1, sizeof(*r));
        if (b->restart_timer == NULL) {
            b->restart_timer = evtimer_new(b->base, restart_cb, b);
        }
        if (r == NULL || b->restart_timer == NULL) {
            jn_free(r);
            jn_log_p(JN_LOG_ERROR, b->chans[i]->log_prefix, "out of memory: %s at once, its "
                     "sends in flight retried", remove ? "stopped" : "restarted");
            if (remove) {
                jn_queue_pause(b->queues[i], 1);
                chan_remove(b->chans[i]);
            } else {
                chan_restart(b, i, cc, old);
            }
            continue;
        }
        r->chan = i;
        r->cc = remove ? NULL : cc;
        r->old = old;
        r->deadline_ms = jn_mono_ms() + next->core.shutdown_timeout;
        r->next = b->restarts;
        b->restarts = r;
        b->chans[i]->restarting = 1;
        jn_queue_pause(b->queues[i], 1);
        jn_log_p(JN_LOG_INFO, b->chans[i]->log_prefix, "%s once its %zu send(s) in flight are "
                 "done", remove ? "stopping (removed)" : "restarting with its new options",
                 jn_queue_in_flight(b->queues[i]));
    }
    if (b->restarts != NULL) {
        restart_cb(-1, 0, b);
    }
}

/* Grows the per-channel arrays to n slots (new ones zeroed). 0 or JN_ENOMEM. */
static int slots_grow(struct jn_broker *b, size_t n)
{
    struct jn_channel **chans = jn_realloc(b->chans, (n + 1) * sizeof(*chans));
    struct jn_queue **queues;
    unsigned char *deferred;

    if (chans == NULL) {
        return JN_ENOMEM;
    }
    b->chans = chans;
    queues = jn_realloc(b->queues, (n + 1) * sizeof(*queues));
    if (queues == NULL) {
        return JN_ENOMEM;
    }
    b->queues = queues;
    deferred = jn_realloc(b->deferred, n + 1);
    if (deferred == NULL) {
        return JN_ENOMEM;
    }
    b->deferred = deferred;
    for (size_t i = b->nchans; i <= n; i++) {
        b->chans[i] = NULL;
        b->queues[i] = NULL;
        b->deferred[i] = 0;
    }
    return 0;
}

/* Undoes channels_add: the slots from old_n on are freed, the revived ones are dead again. */
static void channels_add_undo(struct jn_broker *b, const struct jn_config *cur, size_t old_n)
{
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        int added = i >= old_n;
        if (ch == NULL || (!added && !(ch->gone && !ch->broken))) {
            continue;
        }
        /* an instance made here: gone (revived) or added, and not broken */
        if (ch->up) {
            jn_channel_stop(ch);
        }
        if (ch->def != NULL && ch->state != NULL) {
            jn_channel_destroy(ch);
        }
        ch->up = 0;
        if (added) {
            jn_queue_free(b->queues[i]);
            b->queues[i] = NULL;
            jn_free(ch);
            b->chans[i] = NULL;
        } else {
            jn_reload__chan_setup(b, ch, &cur->channels[i]);
            ch->broken = 1;
        }
    }
    b->nchans = old_n;
}

/*
 * The channels next adds (slots from b->nchans on) and brings back (slots of removed ones):
 * made and started, OUT ones first, before the switch, so a failure changes nothing (and no
 * message can reach them before the switch: all of it runs in this one loop callback). 0, or
 * JN_E* with err (undone).
 */
static int channels_add(struct jn_broker *b, const struct jn_config *cur, struct jn_config *next,
                        struct jn_err *err)
{
    size_t old_n = b->nchans;

    if (next->nchannels > old_n && slots_grow(b, next->nchannels) != 0) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < next->nchannels; i++) {
        struct jn_cfg_channel *cc = &next->channels[i];
        struct jn_channel *ch = i < old_n ? b->chans[i] : NULL;
        if (i < old_n && !(ch->gone && !cc->gone)) {
            continue;
        }
        if (ch == NULL) {
            ch = jn_calloc(1, sizeof(*ch));
            if (ch == NULL) {
                channels_add_undo(b, cur, old_n);
                return jn_err_set(err, JN_ENOMEM, "out of memory");
            }
            ch->slot = i;
            b->chans[i] = ch;
            b->nchans = i + 1;
        }
        jn_reload__chan_setup(b, ch, cc);
        ch->broken = 0; /* a revived slot: made again here */
        if (cc->dir == JN_DIR_OUT && b->queues[i] == NULL &&
            (b->queues[i] = jn_queue_new(ch, &b->qenv)) == NULL) {
            channels_add_undo(b, cur, old_n);
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        if (jn_channel_init(ch, err) != 0) {
            char why[JN_ERR_MSG_MAX];
            snprintf(why, sizeof(why), "%s", err->msg);
            ch->state = NULL;
            ch->def = NULL; /* not initialised: not destroyed */
            channels_add_undo(b, cur, old_n);
            return jn_err_set(err, err->code ? err->code : JN_EINVAL, "channel '%s': %s",
                              cc->name, why);
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < next->nchannels; i++) {
            struct jn_channel *ch = b->chans[i];
            if ((i < old_n && !(ch->gone && !next->channels[i].gone)) ||
                (pass == 0) != (ch->dir == JN_DIR_OUT)) {
                continue;
            }
            if (jn_channel_start(ch, err) != 0) {
                char why[JN_ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err->msg);
                channels_add_undo(b, cur, old_n);
                return jn_err_set(err, err->code ? err->code : JN_EINVAL,
                                  "channel '%s' cannot start: %s", next->channels[i].name, why);
            }
            ch->up = 1;
        }
    }
    return 0;
}

/* After the switch: the revived channels are in use again (an OUT one's kept queue goes on),
 * and the added OUT ones read what the journal may hold for their names (an earlier run's). */
static void channels_added(struct jn_broker *b, size_t old_n)
{
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        if (i < old_n && ch->gone && !b->cfg->channels[i].gone) {
            ch->gone = 0;
            jn_log_p(JN_LOG_INFO, ch->log_prefix, "added again by the reload");
            if (b->queues[i] != NULL) {
                jn_queue_pause(b->queues[i], ch->paused);
            }
        } else if (i >= old_n) {
            jn_log_p(JN_LOG_INFO, ch->log_prefix, "added by the reload");
            if (b->queues[i] != NULL) {
                jn_queue_page_in(b->queues[i]);
            }
        }
    }
}

/* Switches to the new config next (checked, its channels in our slots' order): 0, or JN_E*
 * with err and nothing changed. */
static int apply(struct jn_broker *b, struct jn_config *next, struct jn_err *err)
{
    struct jn_gen *old = b->gen;
    struct jn_gen *g = jn_gen__new(next, err);
    size_t old_n = b->nchans;

    if (g == NULL) {
        return err->code ? err->code : JN_ENOMEM;
    }
    if (channels_add(b, old->cfg, next, err) != 0) {
        jn_gen__services_free(g);
        jn_free(g);
        return err->code;
    }
    g->owned = next;
    g->older = old;
    b->cfg = next;
    if (jn_flow__reconfig(b) != 0) {
        b->cfg = old->cfg;
        channels_add_undo(b, old->cfg, old_n);
        jn_flow__reconfig(b);
        g->owned = NULL;
        jn_gen__services_free(g);
        jn_free(g);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (jn_route__reconfig(b, old->cfg, err) != 0) {
        b->cfg = old->cfg;
        channels_add_undo(b, old->cfg, old_n);
        jn_flow__reconfig(b); /* the old feeds again (best effort: it only frees on failure) */
        g->owned = NULL;
        jn_gen__services_free(g);
        jn_free(g);
        return err->code;
    }
    jn_gen__use(b, g);
    jn_route__threads(b); /* more routing threads if its services want them */
    channels_added(b, old_n);
    channels_apply(b);
    channels_restart(b, next, old->cfg);
    jn_log_level = next->core.log_level;
    if (old->jobs == 0) {
        jn_gen__services_free(old);
    }
    b->n_reloads++;
    jn_reload__note_config(b);
    return 0;
}

int jn_broker_reload(struct jn_broker *b, struct jn_reload_report *rep)
{
    struct jn_config *next;
    struct jn_err err;

    memset(rep, 0, sizeof(*rep));
    jn_diag_init(&rep->msgs);
    snprintf(rep->from, sizeof(rep->from), "%s", b->cfg->hash);
    snprintf(rep->hash, sizeof(rep->hash), "%s", b->cfg->hash);
    if (b->reload_load == NULL || b->stopping || b->restarts != NULL) {
        rep->status = JN_RELOAD_FAILED;
        jn_diag_add(&rep->msgs, NULL, "%s", b->stopping ? "the broker is stopping"
                    : b->restarts ? "the last reload is still restarting a channel (it waits "
                                    "for its sends in flight): try again in a moment"
                                  : "this broker cannot reload its config");
        jn_log(JN_LOG_WARN, "config reload: %s", rep->msgs.msgs ? rep->msgs.msgs[0] : "refused");
        return JN_EINVAL;
    }
    rep->status = JN_RELOAD_FAILED;
    next = b->reload_load(b->reload_arg, b->cfg, rep);
    if (next == NULL) {
        if (rep->status == JN_RELOAD_UNCHANGED) {
            jn_log(JN_LOG_INFO, "config reload: unchanged (%s); nothing to do", rep->hash);
            return 0;
        }
        jn_log(JN_LOG_WARN, "config reload %s: %zu reason(s); config %s keeps running",
               jn_reload_status_name(rep->status), rep->msgs.n, b->cfg->hash);
        for (size_t i = 0; i < rep->msgs.n; i++) {
            jn_log(JN_LOG_WARN, "config reload: %s", rep->msgs.msgs[i]);
        }
        return JN_EINVAL;
    }
    jn_err_clear(&err);
    if (apply(b, next, &err) != 0) {
        rep->status = JN_RELOAD_FAILED;
        jn_diag_free(&rep->msgs);
        jn_diag_init(&rep->msgs);
        jn_diag_add(&rep->msgs, NULL, "%s", err.msg[0] ? err.msg : jn_strerror(err.code));
        jn_log(JN_LOG_WARN, "config reload failed: %s; config %s keeps running",
               rep->msgs.msgs ? rep->msgs.msgs[0] : "", b->cfg->hash);
        if (b->reload_free != NULL) {
            b->reload_free(next);
        }
        return err.code ? err.code : JN_EINVAL;
    }
    rep->status = JN_RELOAD_APPLIED;
    snprintf(rep->hash, sizeof(rep->hash), "%s", b->cfg->hash);
    {
        size_t nrestart = 0;
        for (size_t i = 0; i < b->cfg->nchannels; i++) {
            nrestart += b->cfg->channels[i].restart != 0;
        }
        jn_log(JN_LOG_INFO, "config reloaded: %s -> %s (%zu change(s)); %s%zu channel(s) "
               "restarted", rep->from, rep->hash, rep->msgs.n, nrestart ? "" : "no channel "
               "touched, ", nrestart);
    }
    for (size_t i = 0; i < rep->msgs.n; i++) {
        jn_log(JN_LOG_INFO, "config reload: %s", rep->msgs.msgs[i]);
    }
    return 0;
}
