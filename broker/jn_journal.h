/*
 * jn_journal: the LMDB environment in data_dir and its group-commit writer thread.
 *
 * Everything the broker must not lose goes through here: accepted messages (the inbox), one
 * queue entry per destination, dead letters and the action log. The broker builds a jn_jtxn
 * (puts and deletes on named databases) and submits it; one writer thread takes every pending
 * jn_jtxn at once, applies them in submission order in ONE LMDB write transaction with LMDB's
 * full sync, and only then hands each one's callback back to the loop thread. So a message is
 * acknowledged only once it is on disk, and a burst of N messages costs one fsync, not N
 * (stack.md §8: ~2.9k synced commits/s versus ~164k puts/s at 100 puts per commit).
 *
 * Full store: a jn_jtxn submitted as refusable (new input) is refused with JN_EFULL when the
 * map is above the high-water mark or a commit fails for space (MDB_MAP_FULL, ENOSPC); the
 * rest of the batch (deliveries, deletes) is retried without it, so draining goes on and
 * intake resumes by itself when space returns.
 *
 * Threads: submit, the callbacks and jn_journal_read_* run on the loop thread; the writer is
 * the only thread that writes. Modelled on LMDB's own contract (one writer, MVCC readers).
 */
#ifndef JN_JOURNAL_H
#define JN_JOURNAL_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_be.h"
#include "jn_buf.h"
#include "jn_err.h"

struct event_base;
struct jn_journal;
struct jn_jtxn;

enum jn_jdb {
    JN_JDB_META,   /* "format" -> version */
    JN_JDB_INBOX,  /* seq -> envelope: accepted, not yet routed */
    JN_JDB_QUEUE,  /* destination \0 seq -> queue record: routed, not yet delivered */
    JN_JDB_DLQ,    /* seq -> dead-letter record */
    JN_JDB_LOG,    /* time_us seq -> action record */
    JN_JDB_LOGID,  /* id time_us seq -> (empty): the action log by message id */
    JN_JDB_DEDUP,  /* channel \0 key -> dedup record: a channel's duplicate window */
    JN_JDB_DEDUP_EXP, /* expires_us channel \0 key -> (empty): the window by expiry, to prune */
    JN_JDB_QCOUNT, /* destination -> messages, bytes of its queue records (jn_qcount.h) */
    JN_JDB_KEPT,   /* recv_us seq -> kept message: what retention keeps after routing */
    JN_JDB_KEPTID, /* id -> recv_us seq: the kept messages by id */
    JN_JDB_CONFIGS, /* config hash -> its text and load times (jn_store.h) */
    JN_JDB__COUNT,
};

/* The first database a journal written by an older build may lack (added since format 1 without
 * a new format: older builds ignore it). A writer creates it; a read-only open finds it absent
 * and reads it as empty. */
#define JN_JDB_FIRST_OPTIONAL JN_JDB_DEDUP

struct jn_journal_conf {
    const char *dir;          /* created if missing */
    unsigned long long map_size;
    int high_water_pct;       /* refuse new input above this use of the map (e.g. 90) */
    int warn_pct;             /* log a warning above this (e.g. 80) */
    int readonly;             /* tools: no writer, no creation; reads only */
};

/* Called on the loop thread after the jtxn's commit: rc 0, JN_EFULL (refused for space, only
 * for refusable jtxns) or JN_EIO (the commit failed). */
typedef void (*jn_journal_cb)(void *arg, int rc);

/* base NULL: no writer thread (tools that read, or write with jn_journal_write_now). */
int jn_journal_open(struct jn_journal **out, const struct jn_journal_conf *c,
                    struct event_base *base, struct jn_err *err);
/* Applies t in its own transaction at once, on the calling thread (tools, without a writer).
 * Takes ownership of t. 0, JN_EFULL or JN_EIO. */
int jn_journal_write_now(struct jn_journal *j, struct jn_jtxn *t);
/* Commits everything submitted, stops the writer, runs the last callbacks, closes. */
void jn_journal_close(struct jn_journal *j);

/* A new, empty group of operations; NULL when out of memory. */
struct jn_jtxn *jn_jtxn_new(void);
/* Frees t; NULL is a no-op. The calling thread keeps a few freed jtxns for its next
 * jn_jtxn_new (a bounded cache, see jn_journal.c); jn_jtxn_cache_clear frees that thread's.
 * jn_journal_close clears the cache of the thread that calls it. */
void jn_jtxn_free(struct jn_jtxn *t);
void jn_jtxn_cache_clear(void);
/* Copies key and value. 0 or JN_ENOMEM; on failure the op is not added and the jtxn is as
 * it was (the caller may still submit what it holds, or free it). */
int jn_jtxn_put(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl, const void *v,
                size_t vl);
int jn_jtxn_del(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl);
/* A delete decided on what was read, that a put made since must win over: when t is applied,
 * k is deleted only if it still holds exactly the vl bytes of v. 0 or JN_ENOMEM. */
int jn_jtxn_del_if(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl, const void *v,
                   size_t vl);
/* A put whose value the caller writes in place (an encoder's output, without a buffer and a
 * copy of its own). put_begin copies the key and returns the buffer to append the value to
 * (NULL when out of memory); append to it only, and add no other op, until put_end. put_end
 * takes the encoder's result: 0 adds the op; non-zero drops it (the jtxn is as it was before
 * put_begin) and is returned. JN_EINVAL without a put_begin. */
struct jn_buf *jn_jtxn_put_begin(struct jn_jtxn *t, enum jn_jdb db, const void *k, size_t kl);
int jn_jtxn_put_end(struct jn_jtxn *t, int rc);
/* Takes ownership of t. cb may be NULL. Never calls cb from inside submit. */
void jn_journal_submit(struct jn_journal *j, struct jn_jtxn *t, int refusable, jn_journal_cb cb,
                       void *arg);

/* A sequence number for keys, unique and increasing for the life of the data_dir. */
uint64_t jn_journal_seq(struct jn_journal *j);
/* The seq the next jn_journal_seq returns: every key written so far is below it. */
uint64_t jn_journal_seq_next(struct jn_journal *j);

/* Reading (loop thread, or any thread of a process that only reads). visit returns 0 to go
 * on, non-zero to stop. Key and value are borrowed for the call only. prefix may be NULL. */
typedef int (*jn_journal_visit_fn)(void *arg, const void *k, size_t kl, const void *v, size_t vl);
int jn_journal_scan(struct jn_journal *j, enum jn_jdb db, const void *prefix, size_t plen,
                    jn_journal_visit_fn visit, void *arg);
/* Same, from the first key >= start to the end (no prefix match). */
int jn_journal_scan_from(struct jn_journal *j, enum jn_jdb db, const void *start, size_t slen,
                         jn_journal_visit_fn visit, void *arg);
/* The value of one key, copied into out (emptied first). 0, JN_ENOENT (no such key), JN_ENOMEM
 * or JN_EIO. */
int jn_journal_get(struct jn_journal *j, enum jn_jdb db, const void *k, size_t kl,
                   struct jn_buf *out);
/* The committed count of destination dest's queue records and their bytes (jn_qcount.h),
 * kept by the writer: read with jn_qcount_msgs / jn_qcount_bytes, any thread. The pointer lasts
 * as long as the journal. NULL when out of memory. */
struct jn_qcount;
const struct jn_qcount *jn_journal_qcount(struct jn_journal *j, const char *dest);

/* Number of entries in a database, and the bytes of its pages. */
size_t jn_journal_count(struct jn_journal *j, enum jn_jdb db);
unsigned long long jn_journal_bytes(struct jn_journal *j, enum jn_jdb db);
/* Used share of the map, in percent (an estimate counting free pages as free). */
int jn_journal_used_pct(struct jn_journal *j);

#endif
