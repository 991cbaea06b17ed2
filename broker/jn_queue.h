/*
 * jn_queue: one OUT channel's delivery queue: paging against the journal, retries with
 * backoff, and the order sends keep (none, fifo, per key).
 *
 * Model: Mosquitto's per-client inflight/queued lists (a window in memory, the rest in the
 * store) and Fluent Bit's output retry scheduler, with LMDB-style contracts per call. The
 * queue owns its deliveries (struct jn_delivery) and their queue records' changes; what an
 * attempt means beyond its queue record (action log, callbacks, dead letters, outcome
 * trackers) is its owner's, reached through struct jn_queue_env. Everything runs on the loop
 * thread.
 *
 * Paging: the journal holds the whole queue; memory holds at most a window of it (ready +
 * busy deliveries, and about JN_QUEUE_WINDOW_BYTES of payload), the oldest ones. While the
 * queue is longer than its window (spilled), new records stay on disk only, and the pump reads
 * the next ones in seq order when memory falls to half the window.
 *
 * Ordering: a delivery waiting for its retry keeps its slot, so with fifo (or concurrency 1)
 * the queue stays in order (head-of-line) and with ordered: key no later delivery of its key
 * passes it.
 *
 * Clock: retry times come from env->now_ms and env->backoff_ms (jn_mono_ms and jn_backoff_ms
 * in the broker), so a test can drive retries with a fake clock and jn_queue_pump.
 */
#ifndef JN_QUEUE_H
#define JN_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "jn_channel.h"

struct event_base;
struct jn_journal;
struct jn_jtxn;
struct jn_queue;

/* Deliveries per queue held in memory at most (or twice the concurrency, if more), and
 * payload bytes at most (a single larger message is still held when it is the only one). */
#define JN_QUEUE_WINDOW 1024
#define JN_QUEUE_WINDOW_BYTES (8u << 20)

/* How an attempt ended, as the owner hears it (jn_queue_env.ended). */
enum jn_queue_end {
    JN_QUEUE_DELIVERED,       /* sent; its queue record is deleted in t */
    JN_QUEUE_RETRY_SCHEDULED, /* failed; retried later; the record's rewrite follows in t */
    JN_QUEUE_FAILED,          /* rejected or out of attempts; record deleted; dead-letter it */
};

struct jn_queue_event {
    enum jn_queue_end end;
    const struct jn_msg *msg;
    const char *route;
    const char *dest;     /* the channel's name */
    const char *log_prefix; /* the channel's */
    int attempt;          /* of the attempt that ended */
    const char *reason;   /* the channel's, may be NULL */
    const char *why;      /* JN_QUEUE_FAILED: the dead letter's reason */
};

/*
 * What a queue needs from its owner. Borrowed; must outlive the queue. A delivery may carry a
 * tag (an outcome tracker, opaque here): the queue tells the owner when a tagged delivery is
 * final (settle) and asks whether anybody wants a reply (wants_reply).
 */
struct jn_queue_env {
    struct event_base *base;
    struct jn_journal *journal;
    void *arg;
    /* Adds the owner's records for ev to t (t may be NULL: out of memory). */
    void (*ended)(void *arg, struct jn_jtxn *t, const struct jn_queue_event *ev);
    /* t (may be NULL) is complete: the owner submits it to the journal. */
    void (*submit)(void *arg, struct jn_jtxn *t);
    /* Tag bookkeeping (all optional when no delivery is tagged). */
    void (*tag_hold)(void *arg, void *tag);
    void (*tag_note)(void *arg, void *tag, enum jn_send_result r, const char *reason);
    void (*tag_settle)(void *arg, void *tag, enum jn_send_result r, const char *reason,
                       const void *reply, size_t reply_len);
    int (*tag_wants_reply)(void *arg, void *tag, const struct jn_channel *ch);
    /* The clock of retries. */
    int64_t (*now_ms)(void *arg);
    long long (*backoff_ms)(void *arg, long long base, long long cap, int attempt);
    /* Counted by the queue: how many of the owner's queues are spilled. May be NULL. */
    size_t *nspilled;
};

/* A queue for OUT channel ch (borrowed). NULL when out of memory. */
struct jn_queue *jn_queue_new(struct jn_channel *ch, const struct jn_queue_env *env);
/* Frees q and every delivery it holds (the journal keeps their records); NULL is a no-op.
 * After jn_queue_release and the channel's destroy. */
void jn_queue_free(struct jn_queue *q);
struct jn_channel *jn_queue_channel(const struct jn_queue *q);

/*
 * Deliveries whose queue records are in a jtxn not committed yet, in write order. jn_queue_add
 * appends one (its record for seq qseq of q is written by the caller); jn_queue_commit runs
 * when that jtxn is committed (rc 0) or failed: each enters its queue, or stays in the journal
 * only while the queue is spilled. Commits must be handed in seq order. A tagged delivery
 * (tag non-NULL) is held (env->tag_hold) or, when it stays in the journal, noted as RETRY.
 */
struct jn_queue_batch {
    struct jn_delivery *head, *tail;
};
/* Takes m's reference (also on failure, which is logged: the record is on disk). */
void jn_queue_add(struct jn_queue *q, struct jn_queue_batch *batch, struct jn_msg *m,
                  const char *route, uint64_t qseq);
void jn_queue_commit(struct jn_delivery *list, int rc, void *tag);

/* Sends what may go now (the queue's pump event does this on the loop; a test calls it):
 * reads from the journal when spilled and low, starts retries whose time has come, and fills
 * free slots with ready deliveries in the queue's order. */
void jn_queue_pump(struct jn_queue *q);
/* Schedules a pump on the loop (after a commit, for a spilled queue). */
void jn_queue_kick(struct jn_queue *q);
/* At start: the journal may hold records of q from before; read them as q's memory allows. */
void jn_queue_page_in(struct jn_queue *q);
int jn_queue_spilled(const struct jn_queue *q);
/* What the operator sees of a queue (jn_stats.h). */
struct jn_queue_look {
    size_t held;       /* deliveries in memory: ready, sending, waiting for a retry */
    size_t waiting;    /* of those, waiting for a retry */
    int exact;         /* 1: held is the whole queue; 0: the journal holds more (paged) */
    int64_t oldest_us; /* receive time of the oldest message held (the oldest queued: memory
                        * holds the oldest ones), 0 when empty */
    uint64_t depth;       /* queue records in the journal, committed (jn_qcount.h): exact */
    uint64_t depth_bytes; /* their bytes */
    int full;             /* past max_queued (jn_queue_full), not yet below 90 % */
};
void jn_queue_look(const struct jn_queue *q, struct jn_queue_look *out);

/*
 * The budget (the channel's max_queued, of committed records): 1 while q is full, from when a
 * figure reaches its limit until both are below 90 % of theirs (each call looks again and logs
 * a change). 0 without a limit. jn_queue_full_why: the refusal's reason while full.
 */
int jn_queue_full(struct jn_queue *q);
const char *jn_queue_full_why(const struct jn_queue *q);
/* when_full: drop-oldest: the oldest ready delivery held in memory ends as failed with why (its
 * record deleted, dead-lettered by the owner through env->ended). 0, or -1 when there is none
 * (every held one is in flight or waiting for a retry). */
int jn_queue_drop_oldest(struct jn_queue *q, const char *why);

/* Holds the queue (on: no new sends; retries that come due wait; sends in flight finish) or
 * lets it go again (off: what is ready and due goes at once). The operator's pause. */
void jn_queue_pause(struct jn_queue *q, int on);
/* Sends in flight (not waiting for a retry). */
size_t jn_queue_in_flight(const struct jn_queue *q);
/* Deliveries held in memory (ready + busy). */
size_t jn_queue_held(const struct jn_queue *q);

/* Stopping: no new sends start (those in flight finish, retries go when due). With freeing,
 * from now on a RETRY is a send cut short that leaves its record as it was. */
void jn_queue_stop(struct jn_queue *q, int freeing);
/* Releases the deliveries waiting for a retry (their records stay in the journal). After
 * jn_queue_stop(q, 1), before the channel's destroy. */
void jn_queue_release(struct jn_queue *q);

#endif
