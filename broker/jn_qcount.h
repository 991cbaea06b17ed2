/*
 * jn_qcount: how many queue records each destination has in the journal, and their bytes,
 * kept exact by the journal itself (the qcount database: destination -> messages, bytes).
 *
 * The journal's writer counts every change of the queue database as it applies it (a put of a
 * new key +1, a rewrite its change of size, a delete of a key that was there -1), whoever
 * wrote it: the broker, a replay, `junction dlq replay`. At the end of a batch it writes each
 * touched destination's counts in the same LMDB transaction, so they are as durable and as
 * atomic as the records they count; after the commit it publishes them to the loop (atomics,
 * no lock on a read). So the counts are those of committed records: a queue's depth without a
 * scan, after a restart too, for back-pressure (max_queued) and the operator's figures.
 *
 * At open the writer checks that the counts add up to the queue database's number of entries
 * (a journal from a build before the counts, or one an older build wrote to since, fails the
 * check) and, if not, counts once by a scan of the queue database.
 *
 * Model: the counters LMDB keeps in its own tree headers (ms_entries, at no read cost), kept
 * here per key prefix; Kafka's log-end offsets read without scanning the log.
 *
 * Threads: the list of destinations is under a mutex (found or made by the loop once per
 * queue, by the writer once per destination and batch); the figures are atomics written by
 * the writer only.
 */
#ifndef JN_QCOUNT_H
#define JN_QCOUNT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* One destination's figures. */
struct jn_qcount {
    struct jn_qcount *next;
    atomic_uint_least64_t msgs, bytes; /* committed */
    int64_t dmsgs, dbytes;             /* writer: the batch's change, not committed yet */
    int touched;                       /* writer: dmsgs/dbytes may be non-zero */
    size_t nl;
    char name[];                       /* the destination, NUL-terminated */
};

struct jn_qcounts {
    pthread_mutex_t lock;
    struct jn_qcount *head;
};

void jn_qcounts_init(struct jn_qcounts *q);
void jn_qcounts_destroy(struct jn_qcounts *q);

/* The figures of destination name (made, at 0, when unknown). NULL when out of memory. The
 * pointer stays valid until jn_qcounts_destroy. Any thread. */
struct jn_qcount *jn_qcounts_get(struct jn_qcounts *q, const char *name, size_t nl);

/* Committed figures of c. Any thread. */
static inline uint64_t jn_qcount_msgs(const struct jn_qcount *c)
{
    return atomic_load(&c->msgs);
}
static inline uint64_t jn_qcount_bytes(const struct jn_qcount *c)
{
    return atomic_load(&c->bytes);
}

/* ---- the writer's side (jn_journal.c) ---- */

/* A change of the queue record with key k (destination \0 seq): dmsgs -1, 0 or +1, dbytes the
 * change of its value's size. 0, or JN_ENOMEM (the batch must then fail). */
int jn_qcounts__note(struct jn_qcounts *q, const void *k, size_t kl, int dmsgs, int64_t dbytes);
/* Writes the touched destinations' figures into dbi (in txn, before its commit). 0 or an
 * LMDB error. */
int jn_qcounts__write(struct jn_qcounts *q, MDB_txn *txn, MDB_dbi dbi);
/* After the commit (ok 1): the batch's changes become the committed figures; after an abort
 * (ok 0) they are dropped. */
void jn_qcounts__end(struct jn_qcounts *q, int ok);
/* At open: reads the figures from count_dbi; if they do not add up to queue_dbi's entries and
 * txn may write, counts queue_dbi once and rewrites count_dbi. 0 or an LMDB error / ENOMEM.
 * *recounted says whether it counted. */
int jn_qcounts__load(struct jn_qcounts *q, MDB_txn *txn, MDB_dbi count_dbi, MDB_dbi queue_dbi,
                     int writable, int *recounted);

#endif
