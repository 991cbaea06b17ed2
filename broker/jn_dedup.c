/*
 * jn_dedup: the one lookup of a channel's duplicate window in the journal (jn_dedup_find in
 * jn_channel.h), for channels whose window is too large to hold in memory (the bridge hub:
 * every message id of the last 10 minutes). The entries are the ones jn_msg_set_dedup writes
 * with each ingest and the broker prunes (jn_store.h); this file only reads them.
 *
 * Threads: the loop thread (one LMDB read transaction per call: memory-mapped pages, no
 * write, no fsync; what jn_journal_get costs).
 */
#include <string.h>

#include "jn_broker_int.h"
#include "jn_channel.h"
#include "jn_store.h"

int jn_dedup_find(struct jn_channel *ch, const void *key, size_t klen, char id[JN_ID_LEN + 1])
{
    struct jn_journal *j = ch->broker->journal;
    unsigned char k[JN_STORE_DEST_MAX + 1 + JN_DEDUP_KEY_MAX];
    struct jn_buf v = JN_BUF_INIT, ans = JN_BUF_INIT;
    struct jn_dedup_rec r;
    struct jn_err err;
    size_t kl;
    int rc;

    if (j == NULL) {
        return JN_ESTOPPED;
    }
    kl = jn_store_dedup_key(k, ch->name, key, klen);
    if (kl == 0) {
        return JN_EINVAL;
    }
    rc = jn_journal_get(j, JN_JDB_DEDUP, k, kl, &v);
    if (rc == 0) {
        rc = jn_store_dedup_decode(v.p, v.len, &r, &ans, &err);
        if (rc == 0 && r.expires_us <= jn_now_us()) {
            rc = JN_ENOENT; /* expired, not pruned yet */
        } else if (rc == 0 && id != NULL) {
            memcpy(id, r.id, JN_ID_LEN + 1);
        } else if (rc != 0) {
            rc = JN_EIO;
        }
    }
    jn_buf_reset(&v);
    jn_buf_reset(&ans);
    return rc;
}
