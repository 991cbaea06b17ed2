/*
 * jn_journal: LMDB environment and the group-commit writer thread (see jn_journal.h).
 *
 * The writer is a jn_worker (jn_worker.h): the loop thread posts jtxns; the writer thread
 * takes every pending one as a batch, applies the batch in one write transaction and commits
 * (LMDB's default full sync); the loop then runs each jtxn's callback, in submit order. The
 * jtxns are the only state the two threads share, and the worker hands them over.
 */
#include "jn_journal.h"

#include <errno.h>
#include <stdio.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <time.h>

#include "jn_buf.h"
#include "jn_fs.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_qcount.h"
#include "jn_time.h"
#include "jn_worker.h"

#define JN_JOURNAL_FORMAT 1

static const char *const db_names[JN_JDB__COUNT] = {"meta", "inbox", "queue", "dlq", "log",
                                                   "log_id", "dedup", "dedup_exp", "qcount",
                                                   "kept", "kept_id", "configs"};

/* jop.del: a put, a delete, or a delete if the key still holds the op's value. */
enum { JOP_PUT = 0, JOP_DEL = 1, JOP_DEL_IF = 2 };

struct jop {
    unsigned char db;
    unsigned char del;
    size_t off;     /* of the key in the jtxn's data; the value follows it */
    size_t kl, vl;
};

/* The ops of the usual jtxn (an ingest routed to one destination: 5; with a dedup entry, as
 * an MLLP IN's: 7) fit in the jtxn itself, and every key and value is appended to one buffer:
 * building a jtxn costs a few allocations, not one per op. */
#define JTXN_INLINE_OPS 8

struct jn_jtxn {
    struct jn_job job;    /* in the writer's batch (jn_worker) */
    struct jn_jtxn *next; /* in the loop thread's cache of free jtxns */
    struct jop *ops;      /* inline, or allocated past JTXN_INLINE_OPS */
    size_t n, cap;
    struct jn_buf data;   /* keys and values, back to back */
    int open;             /* a put_begin waits for its put_end */
    int refusable;
    int rc;
    jn_journal_cb cb;
    void *arg;
    struct jop inline_ops[JTXN_INLINE_OPS];
};

/* The largest key the writer has put into a database, to tell when a put may append (see
 * apply). Longer keys (none today: queue keys are at most 265 bytes) are not remembered. */
#define JLAST_KEY_MAX 272

struct jlast {
    size_t len;  /* 0: none known */
    unsigned char key[JLAST_KEY_MAX];
};

struct jn_journal {
    MDB_env *env;
    int lock_fd;  /* data_dir/junction.lock, flock'd by the one process that writes */
    MDB_dbi dbi[JN_JDB__COUNT];
    unsigned char absent[JN_JDB__COUNT]; /* read-only open of an older journal: reads as empty */
    struct jn_journal_conf conf;
    struct jn_worker *writer; /* NULL without a loop (read-only tools) */
    atomic_uint_least64_t seq;
    int64_t last_warn_ms; /* writer thread */
    int64_t last_drop_ms; /* writer thread */
    void *map;            /* LMDB's map (found at open; NULL if not), for drop_map_pages */
    size_t map_len;
    struct jlast last[JN_JDB__COUNT]; /* writer thread */
    struct jn_qcounts qc; /* per destination: its queue records (the writer counts) */
};

/*
 * Freed jtxns are kept for reuse, with their data buffer, by the thread that frees them: the
 * loop thread, which also makes them (three per message). Otherwise every jtxn and its ~2 KiB
 * buffer would go through malloc's slow path: a batch of them outruns malloc's per-thread
 * cache, and requests of 1 KiB and more make it consolidate its free chunks first. Bounded:
 * JTXN_CACHE_MAX jtxns whose buffers are at most JTXN_CACHE_BUF bytes (about 530 KiB at
 * worst, 150 KiB with 1 KiB messages). A thread's cache lasts as long as the thread;
 * jn_jtxn_cache_clear empties it.
 */
#define JTXN_CACHE_MAX 64
#define JTXN_CACHE_BUF 8192

static _Thread_local struct jn_jtxn *jtxn_cache;
static _Thread_local unsigned jtxn_ncache;

struct jn_jtxn *jn_jtxn_new(void)
{
    struct jn_jtxn *t = jtxn_cache;
    struct jn_buf data = JN_BUF_INIT;

    if (t != NULL) {
        jtxn_cache = t->next;
        jtxn_ncache--;
        data = t->data;
        data.len = 0;
    } else {
        t = jn_malloc(sizeof(*t));
        if (t == NULL) {
            return NULL;
        }
    }
    /* Only the header is cleared; the inline ops are written before they are read. */
    memset(t, 0, offsetof(struct jn_jtxn, inline_ops));
    t->ops = t->inline_ops;
    t->cap = JTXN_INLINE_OPS;
    t->data = data;
    return t;
}

void jn_jtxn_free(struct jn_jtxn *t)
{
    if (t == NULL) {
        return;
    }
    if (t->ops != t->inline_ops) {
        jn_free(t->ops);
        t->ops = t->inline_ops;
    }
    if (jtxn_ncache < JTXN_CACHE_MAX && t->data.cap <= JTXN_CACHE_BUF) {
        t->next = jtxn_cache;
        jtxn_cache = t;
        jtxn_ncache++;
        return;
    }
    jn_buf_reset(&t->data);
    jn_free(t);
}

void jn_jtxn_cache_clear(void)
{
    while (jtxn_cache != NULL) {
        struct jn_jtxn *t = jtxn_cache;
        jtxn_cache = t->next;
        jn_buf_reset(&t->data);
        jn_free(t);
    }
    jtxn_ncache = 0;
}

/* Room for one more op; 0 or JN_ENOMEM. */
static int op_slot(struct jn_jtxn *t)
{
    struct jop *ops;
    size_t cap;

    if (t->n < t->cap) {
        return 0;
    }
    cap = t->cap * 2;
    if (t->ops == t->inline_ops) {
        ops = jn_malloc(cap * sizeof(*ops));
        if (ops != NULL) {
            memcpy(ops, t->inline_ops, t->n * sizeof(*ops));
        }
    } else {
        ops = jn_realloc(t->ops, cap * sizeof(*ops));
    }
    if (ops == NULL) {
        return JN_ENOMEM;
    }
    t->ops = ops;
    t->cap = cap;
    return 0;
}

/* Appends to the data; the first time with room for a typical jtxn (an envelope of about a
 * KiB and the action log), so it seldom grows. */
static int data_add(struct jn_jtxn *t, const void *p, size_t n)
{
    if (t->data.cap == 0 && jn_buf_reserve(&t->data, n > 2000 ? n : 2000) != 0) {
        return JN_ENOMEM;
    }
    return jn_buf_append(&t->data, p, n);
}

static int add_op(struct jn_jtxn *t, enum jn_jdb db, int del, const void *k, size_t kl,
                  const void *v, size_t vl)
{
    size_t off = t->data.len;
    struct jop *op;

    if (t->open || op_slot(t) != 0) {
        return JN_ENOMEM;
    }
    if (data_add(t, k, kl) != 0 || (vl && data_add(t, v, vl) != 0)) {
        t->data.len = off; /* as before */
        return JN_ENOMEM;
    }
    op = &t->ops[t->n];
    op->db = (unsigned char)db;
    op->del = (unsigned char)del;
    op->off = off;
    op->kl = kl;
    op->vl = vl;
    t->n++;
    return 0;
}

int jn_jtxn_put(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl, const void *v,
                size_t vl)
{
    return add_op(t, db, 0, k, kl, v, vl);
}

int jn_jtxn_del(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl)
{
    return add_op(t, db, 1, k, kl, NULL, 0);
}

int jn_jtxn_del_if(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl, const void *v,
                   size_t vl)
{
    return add_op(t, db, JOP_DEL_IF, k, kl, v, vl);
}

struct jn_buf *jn_jtxn_put_begin(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl)
{
    if (add_op(t, db, 0, k, kl, NULL, 0) != 0) {
        return NULL;
    }
    t->open = 1;
    return &t->data;
}

int jn_jtxn_put_end(struct jn_jtxn *t, int rc)
{
    struct jop *op;

    if (!t->open) {
        return JN_EINVAL;
    }
    t->open = 0;
    op = &t->ops[t->n - 1];
    if (rc != 0) {
        /* Dropped whole: the jtxn is as it was before put_begin. */
        t->n--;
        t->data.len = op->off;
        if (t->data.p) {
            t->data.p[t->data.len] = '\0';
        }
        return rc;
    }
    op->vl = t->data.len - op->off - op->kl;
    return 0;
}

uint64_t jn_journal_seq(struct jn_journal *j)
{
    return atomic_fetch_add(&j->seq, 1);
}

uint64_t jn_journal_seq_next(struct jn_journal *j)
{
    return atomic_load(&j->seq);
}

/* ---- space accounting ---- */

/* Pages of the map in use and in all, counting LMDB's free list as free once the map is past
 * warn_pct (below that the scan is not worth it). Needs a read transaction: LMDB refuses a
 * cursor on the free list (dbi 0) in a write one. */
static void space(struct jn_journal *j, size_t *used, size_t *total, size_t *psize)
{
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t freepages = 0;

    mdb_env_info(j->env, &info);
    mdb_env_stat(j->env, &st);
    *psize = st.ms_psize;
    *total = info.me_mapsize / st.ms_psize;
    *used = info.me_last_pgno + 1;
    if (*total == 0 || *used * 100 / *total < (size_t)j->conf.warn_pct) {
        return;
    }
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0) {
        return;
    }
    /* Each free-list record holds a page count followed by the page numbers. */
    if (mdb_cursor_open(txn, 0, &cur) == 0) {
        while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
            if (v.mv_size >= sizeof(size_t)) {
                size_t n;
                memcpy(&n, v.mv_data, sizeof(n));
                freepages += n;
            }
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    *used = *used > freepages ? *used - freepages : 0;
}

int jn_journal_used_pct(struct jn_journal *j)
{
    size_t used, total, psize;

    space(j, &used, &total, &psize);
    return total ? (int)(used * 100 / total) : 100;
}

/* Pages a jtxn of new input may take: its bytes twice (routing writes about as much again as
 * queue entries), plus a page of copy-on-write slack. An estimate that errs high. */
static size_t est_pages(const struct jn_jtxn *t, size_t psize)
{
    size_t bytes = 0;

    for (size_t i = 0; i < t->n; i++) {
        bytes += t->ops[i].kl + t->ops[i].vl + 32;
    }
    return 2 * ((bytes + psize - 1) / psize) + 1;
}

/* ---- the writer ---- */

static int is_space_error(int rc)
{
    return rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT || rc == MDB_TXN_FULL;
}

/* LMDB turns a short write into EIO; on a full filesystem that is what a commit returns. Ask
 * the filesystem: under 1 MiB free (or unknown) counts as full. */
static int disk_full(const char *dir, unsigned long long *avail)
{
    struct statvfs st;

    if (statvfs(dir, &st) != 0) {
        *avail = 0;
        return 0;
    }
    *avail = (unsigned long long)st.f_bavail * st.f_frsize;
    return *avail < (1ULL << 20);
}

/* Records the sequence in txn: the next open starts above every seq given out before this
 * commit (also by a tool's jn_journal_write_now, whose keys a broker must not reuse). */
static int put_seq(struct jn_journal *j, MDB_txn *txn)
{
    unsigned char seqv[8];
    MDB_val k = {3, "seq"}, v = {8, seqv};

    jn_be64(seqv, atomic_load(&j->seq));
    return mdb_put(txn, j->dbi[JN_JDB_META], &k, &v, 0);
}

/* In LMDB's default order (memcmp, then the shorter first), is k after l's key? */
static int after_last(const struct jlast *l, const MDB_val *k)
{
    size_t n = l->len < k->mv_size ? l->len : k->mv_size;
    int c;

    if (l->len == 0) {
        return 0;
    }
    c = memcmp(k->mv_data, l->key, n);
    return c > 0 || (c == 0 && k->mv_size > l->len);
}

/*
 * Applies t's ops. last: the writer's largest keys, or NULL (jn_journal_write_now).
 *
 * Most keys grow: inbox keys are sequence numbers, log keys times then sequence numbers, queue
 * keys sequence numbers within one destination, log_id keys start with a time-ordered id. A put
 * whose key is after the largest key the writer has put into that database is tried with
 * MDB_APPEND, which skips the search down the tree and splits a full leaf without moving half
 * of it. LMDB itself compares the key with the database's last key and answers MDB_KEYEXIST,
 * changing nothing, when it is not after it (a larger key from before a restart, another
 * destination's queue, the clock stepping back); the put is then made the ordinary way. So the
 * outcome is the same with or without the hint; only the cost differs.
 */
/*
 * An op on the queue database, counted per destination as it is applied (jn_qcount.h): so the
 * counts follow what the database holds, whoever wrote it. A put of a new key is +1 and its
 * size, a rewrite the change of size, a delete of a key that was there -1 and its size. A put
 * after the largest key is tried with MDB_APPEND as in apply: when LMDB takes it, the key is
 * new without a search.
 */
static int apply_queue(struct jn_journal *j, MDB_txn *txn, const struct jop *op, MDB_val *k,
                       unsigned char *data, struct jlast *l)
{
    MDB_dbi dbi = j->dbi[JN_JDB_QUEUE];
    MDB_val cur;
    int rc;

    if (!op->del && l != NULL && after_last(l, k)) {
        MDB_val v = {op->vl, data + op->kl};
        rc = mdb_put(txn, dbi, k, &v, MDB_APPEND);
        if (rc == 0) {
            if (k->mv_size <= JLAST_KEY_MAX) {
                memcpy(l->key, k->mv_data, k->mv_size);
                l->len = k->mv_size;
            }
            return jn_qcounts__note(&j->qc, k->mv_data, k->mv_size, 1, (int64_t)op->vl)
                       ? ENOMEM : 0;
        }
        if (rc != MDB_KEYEXIST) {
            return rc;
        }
    }
    rc = mdb_get(txn, dbi, k, &cur);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    if (op->del) {
        if (rc == MDB_NOTFOUND || (op->del == JOP_DEL_IF && (cur.mv_size != op->vl ||
                                   memcmp(cur.mv_data, data + op->kl, op->vl) != 0))) {
            return 0; /* gone already, or put again since: kept */
        }
        rc = mdb_del(txn, dbi, k, NULL);
        return rc ? rc : jn_qcounts__note(&j->qc, k->mv_data, k->mv_size, -1,
                                          -(int64_t)cur.mv_size) ? ENOMEM : 0;
    }
    {
        MDB_val v = {op->vl, data + op->kl};
        int was = rc == 0;
        int64_t dbytes = (int64_t)op->vl - (was ? (int64_t)cur.mv_size : 0);
        rc = mdb_put(txn, dbi, k, &v, 0);
        if (rc == 0 && l != NULL && l->len == 0 && k->mv_size <= JLAST_KEY_MAX) {
            memcpy(l->key, k->mv_data, k->mv_size);
            l->len = k->mv_size;
        }
        return rc ? rc : jn_qcounts__note(&j->qc, k->mv_data, k->mv_size, was ? 0 : 1, dbytes)
                             ? ENOMEM : 0;
    }
}

static int apply(struct jn_journal *j, MDB_txn *txn, struct jn_jtxn *t, struct jlast *last)
{
    for (size_t i = 0; i < t->n; i++) {
        struct jop *op = &t->ops[i];
        unsigned char *data = (unsigned char *)t->data.p + op->off;
        MDB_val k = {op->kl, data};
        int rc;
        if (op->db == JN_JDB_QUEUE) {
            rc = apply_queue(j, txn, op, &k, data, last ? &last[op->db] : NULL);
        } else if (op->del == JOP_DEL_IF) {
            MDB_val cur;
            rc = mdb_get(txn, j->dbi[op->db], &k, &cur);
            if (rc == 0 && cur.mv_size == op->vl &&
                memcmp(cur.mv_data, data + op->kl, op->vl) == 0) {
                rc = mdb_del(txn, j->dbi[op->db], &k, NULL);
            }
            if (rc == 0 || rc == MDB_NOTFOUND) {
                rc = 0; /* deleted, gone already, or put again since: kept */
            }
        } else if (op->del) {
            rc = mdb_del(txn, j->dbi[op->db], &k, NULL);
            if (rc == MDB_NOTFOUND) {
                rc = 0;
            }
        } else {
            MDB_val v = {op->vl, data + op->kl};
            struct jlast *l = last ? &last[op->db] : NULL;
            int after = l != NULL && after_last(l, &k);
            rc = MDB_KEYEXIST;
            if (after) {
                rc = mdb_put(txn, j->dbi[op->db], &k, &v, MDB_APPEND);
            }
            if (rc == MDB_KEYEXIST) {
                rc = mdb_put(txn, j->dbi[op->db], &k, &v, 0);
            }
            if (rc == 0 && l != NULL && (after || l->len == 0) && k.mv_size <= JLAST_KEY_MAX) {
                memcpy(l->key, k.mv_data, k.mv_size);
                l->len = k.mv_size;
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* The next jtxn of a writer batch, or NULL. */
static struct jn_jtxn *jtxn_next(struct jn_jtxn *t)
{
    return t->job.next != NULL ? JN_JOB_OF(t->job.next, struct jn_jtxn, job) : NULL;
}

/* Applies a batch in one transaction. Space trouble: refuse the refusable jtxns and retry the
 * rest once; anything else fails the batch with JN_EIO (logged). */
static void write_batch(struct jn_journal *j, struct jn_jtxn *list)
{
    int refuse = 0;
    int any_refusable = 0;
    unsigned long long avail = 0;

    for (struct jn_jtxn *t = list; t; t = jtxn_next(t)) {
        any_refusable |= t->refusable;
        t->rc = 0;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        MDB_txn *txn = NULL;
        int rc;

        if (any_refusable && !refuse) {
            /* New input may fill the map up to high_water, counted jtxn by jtxn, so one large
             * group cannot jump from below the mark to a full map (where even deletes fail). */
            size_t used, total, psize, budget;
            int64_t now = jn_mono_ms();
            space(j, &used, &total, &psize);
            budget = total * (size_t)j->conf.high_water_pct / 100;
            budget = budget > used ? budget - used : 0;
            for (struct jn_jtxn *t = list; t; t = jtxn_next(t)) {
                size_t need;
                if (!t->refusable) {
                    continue;
                }
                need = est_pages(t, psize);
                if (need > budget) {
                    t->rc = JN_EFULL;
                    budget = 0; /* keep the order: nothing after a refusal gets in */
                } else {
                    budget -= need;
                }
            }
            if (total && used * 100 / total >= (size_t)j->conf.warn_pct &&
                now - j->last_warn_ms > 10000) {
                j->last_warn_ms = now;
                jn_log(JN_LOG_WARN, "journal %s is %zu%% full (map %llu bytes); new input is "
                       "refused at %d%%", j->conf.dir, used * 100 / total, j->conf.map_size,
                       j->conf.high_water_pct);
            }
        }
        rc = mdb_txn_begin(j->env, NULL, 0, &txn);
        for (struct jn_jtxn *t = list; rc == 0 && t; t = jtxn_next(t)) {
            if (t->refusable && (refuse || t->rc == JN_EFULL)) {
                t->rc = JN_EFULL;
                continue;
            }
            rc = apply(j, txn, t, j->last);
        }
        if (rc == 0) {
            rc = jn_qcounts__write(&j->qc, txn, j->dbi[JN_JDB_QCOUNT]);
        }
        if (rc == 0) {
            rc = put_seq(j, txn);
        }
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
        } else if (txn) {
            mdb_txn_abort(txn);
        }
        txn = NULL;
        jn_qcounts__end(&j->qc, rc == 0);
        if (rc == 0) {
            return;
        }
        if (rc == EIO && disk_full(j->conf.dir, &avail)) {
            jn_log(JN_LOG_WARN, "journal: the disk holding %s is full (%llu bytes free)",
                   j->conf.dir, avail);
            rc = ENOSPC;
        }
        if (is_space_error(rc) && !refuse && any_refusable) {
            jn_log(JN_LOG_WARN, "journal full (%s): refusing new input until space returns",
                   mdb_strerror(rc));
            refuse = 1;
            for (struct jn_jtxn *t = list; t; t = jtxn_next(t)) {
                t->rc = 0;
            }
            continue;
        }
        jn_log(JN_LOG_ERROR, "journal commit failed: %s; %s", mdb_strerror(rc),
               is_space_error(rc) ? "the store is full even without new input"
                                  : "the batch is not durable");
        for (struct jn_jtxn *t = list; t; t = jtxn_next(t)) {
            t->rc = t->refusable && refuse ? JN_EFULL : JN_EIO;
        }
        return;
    }
}

/*
 * A commit reads the right edge of each tree through LMDB's map, and the kernel maps up to 16
 * cached neighbours per page fault, so the map's pages pile up in junction's RSS (2 GB after a
 * million queued messages) though they are page cache the kernel may drop, not junction's
 * memory. Once a second the writer unmaps them: MADV_DONTNEED on a shared file mapping drops
 * the mapping, never the data (a dirty page keeps its dirty state in the page cache); a later
 * read maps the page again.
 */
static void drop_map_pages(struct jn_journal *j)
{
    int64_t now = jn_mono_ms();

    if (j->map == NULL || now - j->last_drop_ms < 1000) {
        return;
    }
    j->last_drop_ms = now;
    madvise(j->map, j->map_len, MADV_DONTNEED);
}

/* LMDB does not tell where its map is (mdb_env_info gives an address only with MDB_FIXEDMAP):
 * a value read outside a write transaction points into it, and /proc/self/maps has the
 * mapping around that pointer. */
static void find_map(struct jn_journal *j)
{
    MDB_txn *txn;
    MDB_val k = {6, "format"}, v;
    uintptr_t p = 0;
    unsigned long lo, hi;
    char line[512];
    FILE *f;

    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0) {
        return;
    }
    if (mdb_get(txn, j->dbi[JN_JDB_META], &k, &v) == 0) {
        p = (uintptr_t)v.mv_data;
    }
    mdb_txn_abort(txn);
    f = p ? fopen("/proc/self/maps", "r") : NULL;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && p >= lo && p < hi) {
            j->map = (void *)lo;
            j->map_len = hi - lo;
            jn_log(JN_LOG_DEBUG, "journal: map of %zu bytes found", j->map_len);
            break;
        }
    }
    if (f) {
        fclose(f);
    }
}

/* The writer thread: one batch, one transaction. */
static void writer_run(void *arg, struct jn_job *batch)
{
    struct jn_journal *j = arg;

    write_batch(j, JN_JOB_OF(batch, struct jn_jtxn, job));
    drop_map_pages(j);
}

/* The loop: a jtxn is committed (or not): its callback, then it is free. */
static void writer_done(void *arg, struct jn_job *job)
{
    struct jn_jtxn *t = JN_JOB_OF(job, struct jn_jtxn, job);

    (void)arg;
    if (t->cb) {
        t->cb(t->arg, t->rc);
    }
    jn_jtxn_free(t);
}

/* Submitted during close, or to a journal opened without a loop: never written. */
static void drop_unwritten(struct jn_jtxn *t)
{
    jn_log(JN_LOG_WARN, "journal: a write submitted during close was dropped");
    jn_jtxn_free(t);
}

void jn_journal_submit(struct jn_journal *j, struct jn_jtxn *t, int refusable, jn_journal_cb cb,
                       void *arg)
{
    t->refusable = refusable;
    t->cb = cb;
    t->arg = arg;
    if (j->writer == NULL || jn_worker_post(j->writer, &t->job) != 0) {
        drop_unwritten(t);
    }
}

/* ---- open / close ---- */

int jn_journal_open(struct jn_journal **out, const struct jn_journal_conf *c,
                    struct event_base *base, struct jn_err *err)
{
    struct jn_journal *j = jn_calloc(1, sizeof(*j));
    MDB_txn *txn = NULL;
    MDB_val k = {6, "format"}, v;
    int rc;

    *out = NULL;
    if (j == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_qcounts_init(&j->qc);
    j->conf = *c;
    j->last_warn_ms = -100000;
    j->lock_fd = -1;
    if (c->readonly) {
        struct stat st;
        char data[4200];
        snprintf(data, sizeof(data), "%s/data.mdb", c->dir);
        if (stat(data, &st) != 0) {
            rc = jn_err_set(err, JN_ENOENT, "no journal in %s (%s)", c->dir, strerror(errno));
            goto fail;
        }
    } else if (jn_fs_mkdir_p(c->dir, 0700) != 0) {
        /* Private: the journal holds every message's payload and headers (issue 16). */
        rc = jn_err_set(err, JN_EIO, "cannot create data_dir %s: %s", c->dir, strerror(errno));
        goto fail;
    }
    if (!c->readonly) {
        /* One writing process per data_dir: two brokers on one journal would each deliver
         * the other's queue. The lock dies with the process, also on kill -9. */
        char lp[4200];
        snprintf(lp, sizeof(lp), "%s/junction.lock", c->dir);
        j->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (j->lock_fd < 0) {
            rc = jn_err_set(err, JN_EIO, "cannot create %s: %s", lp, strerror(errno));
            goto fail;
        }
        if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = "?";
            ssize_t n = pread(j->lock_fd, pid, sizeof(pid) - 1, 0);
            pid[n > 0 ? n : 1] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            rc = jn_err_set(err, JN_EAGAIN, "another junction (pid %s) is using data_dir %s",
                            pid, c->dir);
            goto fail;
        }
        {
            char pid[32];
            int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
            if (ftruncate(j->lock_fd, 0) != 0 || pwrite(j->lock_fd, pid, (size_t)n, 0) != n) {
                jn_log(JN_LOG_DEBUG, "cannot write the pid into %s", lp);
            }
        }
    }
    rc = mdb_env_create(&j->env);
    if (rc == 0) {
        rc = mdb_env_set_maxdbs(j->env, JN_JDB__COUNT + 2);
    }
    if (rc == 0) {
        rc = mdb_env_set_mapsize(j->env, (size_t)c->map_size);
    }
    if (rc == 0) {
        /* NOTLS: read transactions are not tied to threads (the loop and tools read). */
        rc = mdb_env_open(j->env, c->dir, MDB_NOTLS | (c->readonly ? MDB_RDONLY : 0), 0600);
    }
    if (rc != 0) {
        rc = jn_err_set(err, JN_EIO, "cannot open the journal in %s: %s", c->dir,
                        mdb_strerror(rc));
        goto fail;
    }
    rc = mdb_txn_begin(j->env, NULL, c->readonly ? MDB_RDONLY : 0, &txn);
    for (int i = 0; rc == 0 && i < JN_JDB__COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], c->readonly ? 0 : MDB_CREATE, &j->dbi[i]);
        if (rc == MDB_NOTFOUND && c->readonly && i >= JN_JDB_FIRST_OPTIONAL) {
            /* Written by a build from before this database (a writer creates it). */
            j->absent[i] = 1;
            rc = 0;
        }
    }
    if (rc == 0) {
        rc = mdb_get(txn, j->dbi[JN_JDB_META], &k, &v);
        if (rc == MDB_NOTFOUND && !c->readonly) {
            unsigned char ver[8];
            jn_be64(ver, JN_JOURNAL_FORMAT);
            v.mv_size = 8;
            v.mv_data = ver;
            rc = mdb_put(txn, j->dbi[JN_JDB_META], &k, &v, 0);
        } else if (rc == 0) {
            uint64_t ver = v.mv_size == 8 ? jn_get_be64(v.mv_data) : 0;
            if (ver != JN_JOURNAL_FORMAT) {
                mdb_txn_abort(txn);
                rc = jn_err_set(err, JN_EPROTO, "journal in %s has format %llu; this build "
                                "reads format %d", c->dir, (unsigned long long)ver,
                                JN_JOURNAL_FORMAT);
                goto fail;
            }
        }
    }
    if (rc == 0 && !j->absent[JN_JDB_QCOUNT]) {
        int recounted = 0;
        rc = jn_qcounts__load(&j->qc, txn, j->dbi[JN_JDB_QCOUNT], j->dbi[JN_JDB_QUEUE],
                              !c->readonly, &recounted);
        if (rc == 0 && recounted) {
            jn_log(JN_LOG_INFO, "journal: counted the queue records per destination (once: "
                   "the journal kept no counts, or they did not add up)");
        }
    }
    if (rc == 0) {
        MDB_val sk = {3, "seq"};
        if (mdb_get(txn, j->dbi[JN_JDB_META], &sk, &v) == 0 && v.mv_size == 8) {
            atomic_store(&j->seq, jn_get_be64(v.mv_data) + 1);
        } else {
            atomic_store(&j->seq, 1);
        }
        rc = mdb_txn_commit(txn);
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc != 0) {
        rc = jn_err_set(err, JN_EIO, "cannot initialise the journal in %s: %s", c->dir,
                        mdb_strerror(rc));
        goto fail;
    }
    if (base != NULL) {
        find_map(j);
        j->writer = jn_worker_new(base, "jn-journal", writer_run, writer_done, j);
        if (j->writer == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "cannot start the journal writer");
            goto fail;
        }
    }
    *out = j;
    return 0;
fail:
    jn_journal_close(j);
    return rc;
}

void jn_journal_close(struct jn_journal *j)
{
    if (j == NULL) {
        return;
    }
    if (j->writer != NULL) {
        /* What was submitted is written and its callbacks run; what those callbacks submit
         * comes back here, not written. */
        struct jn_job *rest = jn_worker_stop(j->writer, JN_WORKER_DRAIN);
        while (rest != NULL) {
            struct jn_job *next = rest->next;
            drop_unwritten(JN_JOB_OF(rest, struct jn_jtxn, job));
            rest = next;
        }
        jn_worker_free(j->writer);
    }
    if (j->env) {
        mdb_env_close(j->env);
    }
    if (j->lock_fd >= 0) {
        close(j->lock_fd);
    }
    jn_qcounts_destroy(&j->qc);
    jn_free(j);
    jn_jtxn_cache_clear(); /* the loop's jtxns end with the journal */
}

int jn_journal_write_now(struct jn_journal *j, struct jn_jtxn *t)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, 0, &txn);

    if (rc == 0) {
        rc = apply(j, txn, t, NULL);
        if (rc == 0) {
            rc = jn_qcounts__write(&j->qc, txn, j->dbi[JN_JDB_QCOUNT]);
        }
        if (rc == 0) {
            rc = put_seq(j, txn);
        }
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
        jn_qcounts__end(&j->qc, rc == 0);
    }
    jn_jtxn_free(t);
    if (rc == 0) {
        return 0;
    }
    jn_log(JN_LOG_ERROR, "journal write failed: %s", mdb_strerror(rc));
    return is_space_error(rc) ? JN_EFULL : JN_EIO;
}

/* ---- reading ---- */

const struct jn_qcount *jn_journal_qcount(struct jn_journal *j, const char *dest)
{
    return jn_qcounts_get(&j->qc, dest, strlen(dest));
}

static int scan(struct jn_journal *j, enum jn_jdb db, const void *prefix, size_t plen,
                int match_prefix, jn_journal_visit_fn visit, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    MDB_cursor_op op = plen ? MDB_SET_RANGE : MDB_FIRST;
    int rc;

    if (j->absent[db]) {
        return 0;
    }
    rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return JN_EIO;
    }
    rc = mdb_cursor_open(txn, j->dbi[db], &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return JN_EIO;
    }
    while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        if (match_prefix && plen &&
            (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)) {
            break;
        }
        if (visit(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size) != 0) {
            break;
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : JN_EIO;
}

int jn_journal_scan(struct jn_journal *j, enum jn_jdb db, const void *prefix, size_t plen,
                    jn_journal_visit_fn visit, void *arg)
{
    return scan(j, db, prefix, plen, 1, visit, arg);
}

int jn_journal_scan_from(struct jn_journal *j, enum jn_jdb db, const void *start, size_t slen,
                         jn_journal_visit_fn visit, void *arg)
{
    return scan(j, db, start, slen, 0, visit, arg);
}

int jn_journal_get(struct jn_journal *j, enum jn_jdb db, const void *k, size_t kl,
                   struct jn_buf *out)
{
    MDB_txn *txn;
    MDB_val key = {kl, (void *)k}, v;
    int rc;

    out->len = 0;
    if (j->absent[db]) {
        return JN_ENOENT;
    }
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0) {
        return JN_EIO;
    }
    rc = mdb_get(txn, j->dbi[db], &key, &v);
    if (rc == 0) {
        /* Copied before the read transaction ends: LMDB's pointer is valid only until then. */
        rc = jn_buf_append(out, v.mv_data, v.mv_size) == 0 ? 0 : JN_ENOMEM;
    } else {
        rc = rc == MDB_NOTFOUND ? JN_ENOENT : JN_EIO;
    }
    mdb_txn_abort(txn);
    return rc;
}

size_t jn_journal_count(struct jn_journal *j, enum jn_jdb db)
{
    MDB_txn *txn;
    MDB_stat st;
    size_t n = 0;

    if (j->absent[db]) {
        return 0;
    }
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0) {
        return 0;
    }
    if (mdb_stat(txn, j->dbi[db], &st) == 0) {
        n = st.ms_entries;
    }
    mdb_txn_abort(txn);
    return n;
}

unsigned long long jn_journal_bytes(struct jn_journal *j, enum jn_jdb db)
{
    MDB_txn *txn;
    MDB_stat st;
    unsigned long long n = 0;

    if (j->absent[db]) {
        return 0;
    }
    if (mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn) != 0) {
        return 0;
    }
    if (mdb_stat(txn, j->dbi[db], &st) == 0) {
        n = (unsigned long long)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) *
            st.ms_psize;
    }
    mdb_txn_abort(txn);
    return n;
}
