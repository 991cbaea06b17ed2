/*
 * jn_retain: retention: a timer prunes the action log and the kept messages (jn_store.h) by age
 * and size (and the duplicate windows by expiry) in batches, so one pass never holds the loop for
 * long; while there is more to delete it comes back every 20 ms, else every second. Model:
 * Redis's active expire cycle (a bounded amount of work per timer turn, sooner again when
 * there is more). Loop thread only.
 */
#include <event2/event.h>
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_store.h"
#include "jn_time.h"

#define PRUNE_BATCH 4000

struct prune_ctx {
    struct jn_jtxn *t;
    int64_t cutoff_us;   /* delete older than this */
    size_t extra;        /* and this many more of the oldest (size limit) */
    size_t n;
};

static int visit_prune(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct prune_ctx *c = arg;
    struct jn_logrec r;
    struct jn_err err;
    unsigned char idkey[JN_ID_LEN + 16];

    if (c->n >= PRUNE_BATCH || kl != 16) {
        return 1;
    }
    if ((int64_t)jn_get_be64(k) >= c->cutoff_us) {
        if (c->extra == 0) {
            return 1;
        }
        c->extra--;
    }
    jn_jtxn_del(c->t, JN_JDB_LOG, k, kl);
    if (jn_store_log_decode(v, vl, &r, &err) == 0 && strlen(r.id) == JN_ID_LEN) {
        memcpy(idkey, r.id, JN_ID_LEN);
        memcpy(idkey + JN_ID_LEN, k, 16);
        jn_jtxn_del(c->t, JN_JDB_LOGID, idkey, sizeof(idkey));
    }
    c->n++;
    return 0;
}

/* Deletes actions and kept messages past retention or over their budgets, a batch at a time. */
void jn_retain__prune_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    const struct jn_actlog_conf *ac = &b->cfg->core.action_log;
    const struct jn_retention_conf *rt = &b->cfg->core.retention;
    int64_t now = jn_now_us();
    long long log_ms = ac->retention < rt->keep ? ac->retention : rt->keep;
    struct prune_ctx c = {jn_jtxn_new(), now - log_ms * 1000, 0, 0};
    unsigned long long log_bytes = jn_journal_bytes(b->journal, JN_JDB_LOG) +
                                   jn_journal_bytes(b->journal, JN_JDB_LOGID);
    unsigned long long kept_bytes = jn_journal_bytes(b->journal, JN_JDB_KEPT) +
                                    jn_journal_bytes(b->journal, JN_JDB_KEPTID);
    /* The log may take a quarter of the journal at most, whatever max_size says: on a small
     * journal, retry entries alone would otherwise keep it above high_water. Kept messages and
     * the log together: half of it at most, so queues always have room. */
    unsigned long long cap = ac->max_size < b->cfg->core.max_size / 4 ? ac->max_size
                                                                      : b->cfg->core.max_size / 4;
    unsigned long long total = rt->max_bytes < b->cfg->core.max_size / 2
                                   ? rt->max_bytes : b->cfg->core.max_size / 2;
    size_t kept_extra = 0, kept = 0, dedup;
    struct timeval tv = {1, 0};

    (void)fd;
    (void)what;
    if (c.t == NULL) {
        evtimer_add(b->prune_timer, &tv);
        return;
    }
    if (log_bytes > cap) {
        size_t n = jn_journal_count(b->journal, JN_JDB_LOG);
        /* Down to 90% of the limit, so the next action does not trigger it again. */
        c.extra = (size_t)((double)n * (1.0 - 0.9 * (double)cap / (double)log_bytes)) + 1;
    }
    if (log_bytes + kept_bytes > total) {
        /* Each down by the same share, to 90% of the joint budget: both are in time order, so
         * that deletes roughly the oldest of the two together. */
        double keep_share = 0.9 * (double)total / (double)(log_bytes + kept_bytes);
        size_t nl = jn_journal_count(b->journal, JN_JDB_LOG);
        size_t nk = jn_journal_count(b->journal, JN_JDB_KEPT);
        size_t le = (size_t)((double)nl * (1.0 - keep_share)) + 1;
        if (le > c.extra) {
            c.extra = le;
        }
        kept_extra = (size_t)((double)nk * (1.0 - keep_share)) + 1;
    }
    jn_journal_scan(b->journal, JN_JDB_LOG, NULL, 0, visit_prune, &c);
    if (c.n) {
        jn_log(JN_LOG_DEBUG, "action log: deleting %zu old action(s)", c.n);
    }
    kept = jn_store_kept_prune(b->journal, c.t, now - rt->keep * 1000, kept_extra, PRUNE_BATCH);
    if (kept) {
        jn_log(JN_LOG_DEBUG, "retention: deleting %zu kept message(s)", kept);
    }
    /* The channels' duplicate windows expire on the same timer. */
    dedup = jn_store_dedup_prune(b->journal, c.t, now, PRUNE_BATCH);
    if (dedup) {
        jn_log(JN_LOG_DEBUG, "duplicate window: deleting %zu expired entr%s", dedup,
               dedup == 1 ? "y" : "ies");
    }
    b->n_pruned_actions += c.n;
    b->n_pruned_kept += kept;
    if (c.n || kept || dedup) {
        jn_journal_submit(b->journal, c.t, 0, NULL, NULL);
    } else {
        jn_jtxn_free(c.t);
    }
    if (c.n >= PRUNE_BATCH || kept >= PRUNE_BATCH || dedup >= PRUNE_BATCH) {
        /* More to do: come back at once after this batch, so deleting keeps pace with a
         * sustained intake (a batch holds the loop for a few ms, never longer). */
        tv.tv_sec = 0;
        tv.tv_usec = 20000;
    }
    evtimer_add(b->prune_timer, &tv);
}
