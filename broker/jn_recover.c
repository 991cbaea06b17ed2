/*
 * jn_recover: what a start does with the journal before channels start: queues are paged in
 * (each reads its first window when its pump runs), destinations no longer in the config are
 * named (their records stay), and inbox records (accepted, not routed: from an older journal
 * or a dlq replay) are routed.
 *
 * Model: Mosquitto's persist_read (restore, then carry on as if never stopped), reading by
 * seeks, not whole scans, where it can. Loop thread, before jn_broker_run dispatches.
 */
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_store.h"

/* ---- recovery ---- */

struct jn_channel *jn_broker__find_chan(struct jn_broker *b, const char *name, unsigned dir)
{
    for (size_t i = 0; i < b->nchans; i++) {
        if (b->chans[i]->dir == dir && !b->chans[i]->gone &&
            strcmp(b->chans[i]->name, name) == 0) {
            return b->chans[i];
        }
    }
    return NULL;
}

/* The first queue key at or after a start key. */
struct first_key {
    unsigned char k[JN_STORE_DEST_MAX + 9];
    size_t kl;
};

static int visit_first(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct first_key *f = arg;

    (void)v;
    (void)vl;
    f->kl = kl < sizeof(f->k) ? kl : sizeof(f->k);
    memcpy(f->k, k, f->kl);
    return 1;
}

/* Names each destination in the queue that is no longer an OUT channel: one seek per
 * destination, not a read of the queue. Returns how many there are, or -1. */
static long warn_orphans(struct jn_broker *b)
{
    struct first_key f;
    unsigned char start[JN_STORE_DEST_MAX + 10];
    size_t slen = 0;
    long n = 0;

    for (;;) {
        const unsigned char *nul;
        char dest[JN_STORE_DEST_MAX];
        f.kl = 0;
        if (jn_journal_scan_from(b->journal, JN_JDB_QUEUE, start, slen, visit_first, &f) != 0) {
            return -1;
        }
        if (f.kl == 0) {
            return n;
        }
        nul = memchr(f.k, '\0', f.kl);
        if (nul == NULL || (size_t)(nul - f.k) >= sizeof(dest)) {
            /* Not a destination key: the next key after it. */
            memcpy(start, f.k, f.kl);
            start[f.kl] = '\0';
            slen = f.kl + 1;
            continue;
        }
        memcpy(dest, f.k, (size_t)(nul - f.k));
        dest[nul - f.k] = '\0';
        if (jn_broker__find_chan(b, dest, JN_DIR_OUT) == NULL) {
            jn_log(JN_LOG_WARN, "journal: deliveries queued for '%s', which is no longer an OUT "
                   "channel in the config, stay in the journal", dest);
            n++;
        }
        /* Past every key of this destination: dest \0 ... < dest \1. */
        slen = (size_t)(nul - f.k);
        memcpy(start, f.k, slen);
        start[slen++] = 1;
    }
}

struct inbox_item {
    struct inbox_item *next;
    struct jn_msg *m;
    uint64_t seq;
};

struct inbox_ctx {
    struct inbox_item *head, **tail;
    size_t bad;
};

static int recover_inbox(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct inbox_ctx *c = arg;
    struct inbox_item *it;
    struct jn_err err;
    struct jn_msg *m;

    if (kl != 8 || jn_msg_decode(v, vl, &m, &err) != 0) {
        c->bad++;
        jn_log(JN_LOG_ERROR, "journal: inbox entry cannot be decoded (%s); left in place",
               kl != 8 ? "bad key" : err.msg);
        return 0;
    }
    it = jn_calloc(1, sizeof(*it));
    if (it == NULL) {
        jn_msg_unref(&m);
        return 1;
    }
    it->m = m;
    it->seq = jn_get_be64(k);
    *c->tail = it;
    c->tail = &it->next;
    return 0;
}

/* Marks every queue as paged (its pump reads the first window of what was queued before the
 * last stop), then routes what was accepted but not routed. */
int jn_recover__run(struct jn_broker *b)
{
    struct inbox_ctx ic = {NULL, &ic.head, 0};
    size_t queued = jn_journal_count(b->journal, JN_JDB_QUEUE);
    size_t routed = 0;
    long orphaned = queued ? warn_orphans(b) : 0;

    if (orphaned < 0 ||
        jn_journal_scan(b->journal, JN_JDB_INBOX, NULL, 0, recover_inbox, &ic) != 0) {
        jn_log(JN_LOG_ERROR, "journal: cannot read %s", b->cfg->core.data_dir);
        return -1;
    }
    for (size_t i = 0; queued && i < b->nchans; i++) {
        if (b->queues[i]) {
            jn_queue_page_in(b->queues[i]);
        }
    }
    /* Routing writes to the journal, so it happens after the read transaction is closed. */
    while (ic.head) {
        struct inbox_item *it = ic.head;
        ic.head = it->next;
        jn_route__inbox(b, jn_broker__find_chan(b, it->m->channel, JN_DIR_IN), it->m, it->seq);
        jn_msg_unref(&it->m);
        jn_free(it);
        routed++;
    }
    if (queued || routed || ic.bad) {
        jn_log(JN_LOG_INFO, "journal: recovered %zu queued deliveries and %zu accepted "
               "message(s) to route", queued, routed);
    }
    if (ic.bad) {
        jn_log(JN_LOG_ERROR, "journal: %zu inbox record(s) could not be decoded; they stay in "
               "the journal untouched", ic.bad);
    }
    return 0;
}
