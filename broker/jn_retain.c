/*
 * jn_retain: action-log retention: a timer prunes the action log by age and size (and the
 * duplicate windows by expiry) in batches, so one pass never holds the loop for long. Model:
 * Redis's active expire cycle (a bounded amount of work per timer turn, sooner again when
 * there is more). Loop thread only.
 */
#include <event2/event.h>
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_store.h"
#include "jn_time.h"

#define PRUNE_BATCH 20000

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

/* Deletes actions past retention or over the size limit, a batch at a time. */
void jn_retain__prune_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    const struct jn_actlog_conf *ac = &b->cfg->core.action_log;
    struct prune_ctx c = {jn_jtxn_new(), jn_now_us() - ac->retention * 1000, 0, 0};
    unsigned long long bytes = jn_journal_bytes(b->journal, JN_JDB_LOG) +
                               jn_journal_bytes(b->journal, JN_JDB_LOGID);
    /* The log may take a quarter of the journal at most, whatever max_size says: on a small
     * journal, retry entries alone would otherwise keep it above high_water. */
    unsigned long long cap = ac->max_size < b->cfg->core.max_size / 4 ? ac->max_size
                                                                      : b->cfg->core.max_size / 4;
    struct timeval tv = {10, 0};
    size_t dedup;

    if (c.t == NULL) {
        evtimer_add(b->prune_timer, &tv);
        return;
    }
    if (bytes > cap) {
        size_t n = jn_journal_count(b->journal, JN_JDB_LOG);
        /* Down to 90% of the limit, so the next action does not trigger it again. */
        c.extra = (size_t)((double)n * (1.0 - 0.9 * (double)cap / (double)bytes)) + 1;
    }
    jn_journal_scan(b->journal, JN_JDB_LOG, NULL, 0, visit_prune, &c);
    if (c.n) {
        jn_log(JN_LOG_DEBUG, "action log: deleting %zu old action(s)", c.n);
    }
    /* The channels' duplicate windows expire on the same timer. */
    dedup = jn_store_dedup_prune(b->journal, c.t, jn_now_us(), PRUNE_BATCH);
    if (dedup) {
        jn_log(JN_LOG_DEBUG, "duplicate window: deleting %zu expired entr%s", dedup,
               dedup == 1 ? "y" : "ies");
    }
    if (c.n || dedup) {
        jn_journal_submit(b->journal, c.t, 0, NULL, NULL);
    } else {
        jn_jtxn_free(c.t);
    }
    if (c.n >= PRUNE_BATCH || dedup >= PRUNE_BATCH) {
        tv.tv_sec = 1; /* more to do: come back soon */
    }
    evtimer_add(b->prune_timer, &tv);
}

