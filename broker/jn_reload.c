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
 *   - routing jobs posted from now on carry the new generation; jobs the worker was already
 *     given finish under the old one (theirs), so no message sees a mix of both;
 *   - which channels are routed after the acknowledgement, flow control's feeds and the
 *     per-route counts follow the new routes; reloadable channel options apply at once.
 * Channels are not touched: no connection is dropped, no listener closed. The old
 * generation's services are destroyed with its last job; its config lives as long as the
 * broker, since queued deliveries and channels borrow names from it (a few KiB a reload).
 *
 * Model: nginx's reload (check first, the old config serves until the new one is in place),
 * without its new worker processes: one loop switches between two messages.
 */
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_store.h"
#include "jn_time.h"

static struct jn_gen *gen_new(const struct jn_config *cfg, struct jn_err *err)
{
    struct jn_gen *g = jn_calloc(1, sizeof(*g));

    if (g == NULL || (g->svcs = jn_calloc(cfg->nservices + 1, sizeof(*g->svcs))) == NULL) {
        jn_free(g);
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    g->cfg = cfg;
    g->nsvcs = cfg->nservices;
    if (jn_services_init(g->svcs, cfg->services, cfg->nservices, err) != 0) {
        jn_services_destroy(g->svcs, g->nsvcs);
        jn_free(g->svcs);
        jn_free(g);
        return NULL;
    }
    return g;
}

static void gen_services_free(struct jn_gen *g)
{
    if (g->svcs != NULL) {
        jn_services_destroy(g->svcs, g->nsvcs);
        jn_free(g->svcs);
        g->svcs = NULL;
    }
}

/* b runs g from now on. */
static void gen_use(struct jn_broker *b, struct jn_gen *g)
{
    b->gen = g;
    b->cfg = g->cfg;
    b->svcs = g->svcs;
    b->nsvcs = g->nsvcs;
    b->loaded_us = jn_now_us();
}

int jn_reload__first(struct jn_broker *b, struct jn_err *err)
{
    struct jn_gen *g = gen_new(b->cfg, err);

    if (g == NULL) {
        return err->code ? err->code : JN_ENOMEM;
    }
    gen_use(b, g);
    return 0;
}

void jn_reload__gen_release(struct jn_broker *b, struct jn_gen *g)
{
    g->jobs--;
    if (g != b->gen && g->jobs == 0) {
        gen_services_free(g);
    }
}

void jn_reload__free(struct jn_broker *b)
{
    while (b->gen != NULL) {
        struct jn_gen *g = b->gen;
        b->gen = g->older;
        gen_services_free(g);
        if (g->owned != NULL && b->reload_free != NULL) {
            b->reload_free(g->owned);
        }
        jn_free(g);
    }
    b->cfg = NULL;
    b->svcs = NULL;
    b->nsvcs = 0;
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
        struct jn_channel *ch = &b->chans[i];
        ch->retry = cc->common.retry;
        ch->max_queued = cc->common.max_queued;
        ch->when_full = cc->common.when_full;
        if (ch->conf != cc->conf) {
            jn_opt_reload(ch->def->opts, ch->conf, cc->conf, 1, NULL, 0);
        }
    }
}

/* Switches to the new config next (checked, its channels in our order): 0, or JN_E* with
 * err and nothing changed. */
static int apply(struct jn_broker *b, struct jn_config *next, struct jn_err *err)
{
    struct jn_gen *old = b->gen;
    struct jn_gen *g = gen_new(next, err);

    if (g == NULL) {
        return err->code ? err->code : JN_ENOMEM;
    }
    g->owned = next;
    g->older = old;
    b->cfg = next;
    if (jn_flow__reconfig(b) != 0) {
        b->cfg = old->cfg;
        g->owned = NULL;
        gen_services_free(g);
        jn_free(g);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (jn_route__reconfig(b, old->cfg, err) != 0) {
        b->cfg = old->cfg;
        jn_flow__reconfig(b); /* the old feeds again (best effort: it only frees on failure) */
        g->owned = NULL;
        gen_services_free(g);
        jn_free(g);
        return err->code;
    }
    gen_use(b, g);
    channels_apply(b);
    jn_log_level = next->core.log_level;
    if (old->jobs == 0) {
        gen_services_free(old);
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
    if (b->reload_load == NULL || b->stopping) {
        rep->status = JN_RELOAD_FAILED;
        jn_diag_add(&rep->msgs, NULL, "%s", b->stopping ? "the broker is stopping"
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
    jn_log(JN_LOG_INFO, "config reloaded: %s -> %s (%zu change(s)); channels untouched",
           rep->from, rep->hash, rep->msgs.n);
    for (size_t i = 0; i < rep->msgs.n; i++) {
        jn_log(JN_LOG_INFO, "config reload: %s", rep->msgs.msgs[i]);
    }
    return 0;
}
