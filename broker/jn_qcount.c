/* jn_qcount: see jn_qcount.h. */
#include "jn_qcount.h"

#include <errno.h>
#include <string.h>

#include "jn_be.h"
#include "jn_err.h"
#include "jn_mem.h"

void jn_qcounts_init(struct jn_qcounts *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = NULL;
}

void jn_qcounts_destroy(struct jn_qcounts *q)
{
    while (q->head) {
        struct jn_qcount *c = q->head;
        q->head = c->next;
        jn_free(c);
    }
    pthread_mutex_destroy(&q->lock);
}

struct jn_qcount *jn_qcounts_get(struct jn_qcounts *q, const char *name, size_t nl)
{
    struct jn_qcount *c;

    pthread_mutex_lock(&q->lock);
    for (c = q->head; c != NULL; c = c->next) {
        if (c->nl == nl && memcmp(c->name, name, nl) == 0) {
            break;
        }
    }
    if (c == NULL && (c = jn_calloc(1, sizeof(*c) + nl + 1)) != NULL) {
        atomic_init(&c->msgs, 0);
        atomic_init(&c->bytes, 0);
        memcpy(c->name, name, nl);
        c->name[nl] = '\0';
        c->nl = nl;
        c->next = q->head;
        q->head = c;
    }
    pthread_mutex_unlock(&q->lock);
    return c;
}

/* The destination part of a queue key (up to its NUL); 0 when there is none. */
static size_t dest_len(const void *k, size_t kl)
{
    const unsigned char *nul = memchr(k, '\0', kl);

    return nul != NULL && kl == (size_t)(nul - (const unsigned char *)k) + 9
               ? (size_t)(nul - (const unsigned char *)k)
               : 0;
}

int jn_qcounts__note(struct jn_qcounts *q, const void *k, size_t kl, int dmsgs, int64_t dbytes)
{
    size_t nl = dest_len(k, kl);
    struct jn_qcount *c;

    if (nl == 0) {
        return 0; /* not a key junction writes: not counted (jn_recover names such keys) */
    }
    c = jn_qcounts_get(q, k, nl);
    if (c == NULL) {
        return JN_ENOMEM;
    }
    c->dmsgs += dmsgs;
    c->dbytes += dbytes;
    c->touched = 1;
    return 0;
}

/* Committed figure v changed by d, never below 0. */
static uint64_t moved(uint64_t v, int64_t d)
{
    return d < 0 && (uint64_t)-d > v ? 0 : v + (uint64_t)d;
}

int jn_qcounts__write(struct jn_qcounts *q, MDB_txn *txn, MDB_dbi dbi)
{
    int rc = 0;

    pthread_mutex_lock(&q->lock);
    for (struct jn_qcount *c = q->head; rc == 0 && c != NULL; c = c->next) {
        unsigned char val[16];
        MDB_val k = {c->nl, c->name}, v = {sizeof(val), val};
        uint64_t m, b;
        if (!c->touched) {
            continue;
        }
        m = moved(atomic_load(&c->msgs), c->dmsgs);
        b = moved(atomic_load(&c->bytes), c->dbytes);
        if (m == 0) {
            rc = mdb_del(txn, dbi, &k, NULL);
            rc = rc == MDB_NOTFOUND ? 0 : rc;
        } else {
            jn_be64(val, m);
            jn_be64(val + 8, b);
            rc = mdb_put(txn, dbi, &k, &v, 0);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void jn_qcounts__end(struct jn_qcounts *q, int ok)
{
    pthread_mutex_lock(&q->lock);
    for (struct jn_qcount *c = q->head; c != NULL; c = c->next) {
        if (!c->touched) {
            continue;
        }
        if (ok) {
            uint64_t m = moved(atomic_load(&c->msgs), c->dmsgs);
            atomic_store(&c->msgs, m);
            atomic_store(&c->bytes, m ? moved(atomic_load(&c->bytes), c->dbytes) : 0);
        }
        c->dmsgs = c->dbytes = 0;
        c->touched = 0;
    }
    pthread_mutex_unlock(&q->lock);
}

/* Sets every figure to 0 (before a recount). */
static void zero(struct jn_qcounts *q)
{
    for (struct jn_qcount *c = q->head; c != NULL; c = c->next) {
        atomic_store(&c->msgs, 0);
        atomic_store(&c->bytes, 0);
        c->dmsgs = c->dbytes = 0;
        c->touched = 0;
    }
}

/* Counts every record of queue_dbi into the figures and writes them into count_dbi. */
static int recount(struct jn_qcounts *q, MDB_txn *txn, MDB_dbi count_dbi, MDB_dbi queue_dbi)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_drop(txn, count_dbi, 0);

    zero(q);
    if (rc == 0) {
        rc = mdb_cursor_open(txn, queue_dbi, &cur);
    }
    if (rc != 0) {
        return rc;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (jn_qcounts__note(q, k.mv_data, k.mv_size, 1, (int64_t)v.mv_size) != 0) {
            mdb_cursor_close(cur);
            return ENOMEM;
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        return rc;
    }
    rc = jn_qcounts__write(q, txn, count_dbi);
    jn_qcounts__end(q, rc == 0);
    return rc;
}

int jn_qcounts__load(struct jn_qcounts *q, MDB_txn *txn, MDB_dbi count_dbi, MDB_dbi queue_dbi,
                     int writable, int *recounted)
{
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    uint64_t sum = 0;
    int rc = mdb_stat(txn, queue_dbi, &st);

    *recounted = 0;
    if (rc == 0) {
        rc = mdb_cursor_open(txn, count_dbi, &cur);
    }
    if (rc != 0) {
        return rc;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct jn_qcount *c;
        if (v.mv_size != 16 || k.mv_size == 0 ||
            (c = jn_qcounts_get(q, k.mv_data, k.mv_size)) == NULL) {
            sum = UINT64_MAX; /* malformed (or out of memory): count again */
            continue;
        }
        atomic_store(&c->msgs, jn_get_be64(v.mv_data));
        atomic_store(&c->bytes, jn_get_be64((const unsigned char *)v.mv_data + 8));
        if (sum != UINT64_MAX) {
            sum += jn_get_be64(v.mv_data);
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        return rc;
    }
    if (sum == (uint64_t)st.ms_entries || !writable) {
        return 0;
    }
    *recounted = 1;
    return recount(q, txn, count_dbi, queue_dbi);
}
