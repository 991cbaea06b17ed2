/*
 * jn_queue: one OUT channel's delivery queue (paging, retries, ordering); see jn_queue.h.
 *
 * Model: Mosquitto's inflight/queued lists per client over its persistent store, and Fluent
 * Bit's output retries; the owner (jn_broker) is reached only through jn_queue_env, so the
 * queue can be tested alone with a fake OUT channel and a fake clock (tests/unit/test_queue.c).
 *
 * Invariant of paging: every unfinished queue record with seq <= loaded_upto is in memory, and
 * none above it is. So a destination that is down for a million messages costs a window of
 * memory, and a start reads a window per destination, not the queue.
 *
 * Ownership: a delivery owns its message reference, route and reply until it is freed; the
 * queue owns its deliveries (ready list, busy slots), a batch's owner those not committed yet.
 */
#include "jn_queue.h"

#include <event2/event.h>
#include <string.h>

#include "jn_journal.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_qcount.h"
#include "jn_store.h"
#include "jn_time.h"

struct jn_delivery {
    struct jn_delivery *next;
    struct jn_queue *q;
    struct jn_msg *msg;
    char *route;           /* owned */
    uint64_t qseq;         /* queue key: destination \0 qseq */
    int attempt;           /* 1-based, of the send in progress or next */
    int64_t queued_us;     /* when it entered the queue durable (wall clock; paged in: the
                            * receive time, the best the record tells) */
    struct event *timer;   /* backoff */
    int64_t due_ms;        /* waiting for a retry: when it may go (env->now_ms); else 0 */
    int waiting;           /* holds its slot until due_ms */
    int sending;
    int held;              /* linked into its queue (counted in held_bytes) */
    void *tag;             /* the owner's outcome tracker, or NULL (the usual case) */
    void *reply;           /* owned, only with tag: jn_delivery_reply of this attempt */
    size_t reply_len;
};

struct jn_queue {
    const struct jn_queue_env *env;
    struct jn_channel *ch;
    struct jn_delivery *head, *tail; /* ready, not yet sent */
    size_t ready;
    size_t busy;                     /* slots taken: sending or waiting for a retry */
    struct event *pump;
    struct jn_delivery **busy_list;  /* the deliveries holding slots */
    size_t window;                   /* most deliveries held in memory */
    size_t held_bytes;               /* their payloads' bytes */
    int spilled;                     /* records above loaded_upto may be in the journal */
    int stopping;                    /* no new sends */
    int paused;                      /* held by the operator: no sends, retries wait */
    int freeing;                     /* a RETRY is a send cut short */
    uint64_t loaded_upto;            /* highest seq held in memory so far */
    uint64_t written_upto;           /* highest seq written for this queue in this run */
    uint64_t bad_reported;           /* highest foreign seq reported (each is logged once) */
    const struct jn_qcount *qc;      /* its records in the journal, counted by the journal */
    int full;                        /* past max_queued, not yet below 90 % of it */
    char full_why[200];              /* why, while full */
};

static void queue__pump_cb(evutil_socket_t fd, short what, void *arg);
static void delivery_settle(struct jn_delivery *d, enum jn_send_result r, const char *reason);

struct jn_queue *jn_queue_new(struct jn_channel *ch, const struct jn_queue_env *env)
{
    struct jn_queue *q = jn_calloc(1, sizeof(*q));

    if (q == NULL) {
        return NULL;
    }
    q->env = env;
    q->ch = ch;
    q->pump = event_new(env->base, -1, 0, queue__pump_cb, q);
    q->busy_list = jn_calloc((size_t)ch->concurrency, sizeof(*q->busy_list));
    q->window = JN_QUEUE_WINDOW > 2 * (size_t)ch->concurrency ? JN_QUEUE_WINDOW
                                                              : 2 * (size_t)ch->concurrency;
    q->qc = env->journal ? jn_journal_qcount(env->journal, ch->name) : NULL;
    if (q->pump == NULL || q->busy_list == NULL || (env->journal && q->qc == NULL)) {
        jn_queue_free(q);
        return NULL;
    }
    return q;
}

struct jn_channel *jn_queue_channel(const struct jn_queue *q)
{
    return q->ch;
}

static void delivery_free(struct jn_delivery *d)
{
    const struct jn_queue_env *env = d->q->env;

    if (d->tag) {
        /* Not final (stopping, or no retry could be scheduled): the journal keeps it. */
        env->tag_settle(env->arg, d->tag, JN_SEND_RETRY, "broker is stopping", NULL, 0);
        d->tag = NULL;
    }
    jn_free(d->reply);
    if (d->timer) {
        event_free(d->timer);
    }
    if (d->held && d->msg) {
        d->q->held_bytes -= d->msg->len;
    }
    jn_msg_unref(&d->msg);
    jn_free(d->route);
    jn_free(d);
}

static void busy_add(struct jn_queue *q, struct jn_delivery *d)
{
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        if (q->busy_list[i] == NULL) {
            q->busy_list[i] = d;
            q->busy++;
            return;
        }
    }
}

static void busy_del(struct jn_queue *q, struct jn_delivery *d)
{
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        if (q->busy_list[i] == d) {
            q->busy_list[i] = NULL;
            q->busy--;
            return;
        }
    }
}

/* A delivery of q's queue record qseq, not in the queue yet. Takes m's reference, also on
 * failure (NULL: out of memory; the record is on disk, so a restart delivers it). */
static struct jn_delivery *delivery_new(struct jn_queue *q, struct jn_msg *m, const char *route,
                                        uint64_t qseq, int attempt)
{
    struct jn_delivery *d = jn_calloc(1, sizeof(*d));

    if (d == NULL || (d->route = jn_strdup(route ? route : "")) == NULL) {
        jn_log_p(JN_LOG_ERROR, q->ch->log_prefix, "msg=%s out of memory queueing; it stays in "
                 "the journal for the next start", m->id);
        jn_free(d);
        jn_msg_unref(&m);
        return NULL;
    }
    d->q = q;
    d->msg = m;
    d->qseq = qseq;
    d->attempt = attempt > 0 ? attempt : 1;
    d->queued_us = m->recv_us;
    return d;
}

/* Puts d at the tail of its queue in memory. */
static void queue_link(struct jn_delivery *d)
{
    struct jn_queue *q = d->q;

    q->held_bytes += d->msg->len;
    d->held = 1;
    if (q->tail) {
        q->tail->next = d;
    } else {
        q->head = d;
    }
    q->tail = d;
    q->ready++;
    jn_queue_kick(q);
}

static void spill_set(struct jn_queue *q, int on)
{
    if (q->spilled == on) {
        return;
    }
    q->spilled = on;
    if (q->env->nspilled) {
        *q->env->nspilled += on ? 1 : (size_t)-1;
    }
}

static void spill(struct jn_queue *q)
{
    if (!q->spilled) {
        spill_set(q, 1);
        jn_log_p(JN_LOG_DEBUG, q->ch->log_prefix, "queue longer than its window (%zu): the "
                 "rest waits in the journal", q->window);
    }
}

/* Memory holds as much of q as it may. */
static int queue_full(const struct jn_queue *q)
{
    size_t held = q->ready + q->busy;

    return held >= q->window || (held > 0 && q->held_bytes >= JN_QUEUE_WINDOW_BYTES);
}

/* Memory holds little enough of q to read more from the journal. */
static int queue_low(const struct jn_queue *q)
{
    return q->ready + q->busy <= q->window / 2 && q->held_bytes <= JN_QUEUE_WINDOW_BYTES / 2;
}

void jn_queue_add(struct jn_queue *q, struct jn_queue_batch *batch, struct jn_msg *m,
                  const char *route, uint64_t qseq)
{
    struct jn_delivery *d = delivery_new(q, m, route, qseq, 1);

    q->written_upto = qseq;
    if (d == NULL) {
        return;
    }
    if (batch->tail) {
        batch->tail->next = d;
    } else {
        batch->head = d;
    }
    batch->tail = d;
}

/*
 * Commit callbacks run in submission order, which is seq order, so every queue gets its
 * records in order. A record at or below loaded_upto was read by a refill between the commit
 * and this callback: it is in memory already.
 */
void jn_queue_commit(struct jn_delivery *list, int rc, void *tag)
{
    while (list) {
        struct jn_delivery *d = list;
        struct jn_queue *q = d->q;
        const struct jn_queue_env *env = q->env;
        list = d->next;
        d->next = NULL;
        if (rc != 0 || d->qseq <= q->loaded_upto) {
            delivery_free(d);
            continue;
        }
        if (q->spilled || queue_full(q)) {
            spill(q);
            if (tag) {
                env->tag_note(env->arg, tag, JN_SEND_RETRY, "queued behind a backlog; it is "
                              "delivered later");
            }
            delivery_free(d);
            continue;
        }
        q->loaded_upto = d->qseq;
        d->queued_us = jn_now_us();
        if (tag) {
            d->tag = tag;
            env->tag_hold(env->arg, tag);
        }
        queue_link(d);
    }
}

struct refill_ctx {
    struct jn_queue *q;
    unsigned char start[JN_STORE_DEST_MAX + 9];
    size_t plen;        /* destination \0 */
    int more;           /* stopped with the window full, not at the end of the records */
    uint64_t last;      /* highest seq read */
    uint64_t issued;    /* every seq the journal gave out is below this */
};

static int visit_refill(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct refill_ctx *c = arg;
    struct jn_queue *q = c->q;
    const unsigned char *key = k;
    struct jn_delivery *d;
    struct jn_qrec r;
    struct jn_err err;
    uint64_t seq;

    if (kl != c->plen + 8 || memcmp(key, c->start, c->plen) != 0) {
        return 1; /* past this destination's records */
    }
    if (queue_full(q)) {
        c->more = 1;
        return 1;
    }
    seq = jn_get_be64(key + c->plen);
    if (seq >= c->issued) {
        /* Not a key junction wrote: taking it would put loaded_upto above every new record.
         * Skipped (reported once), left in place. */
        if (seq > q->bad_reported) {
            q->bad_reported = seq;
            jn_log(JN_LOG_ERROR, "journal: queue entry %s/%llu has a sequence number this "
                   "journal never issued; left in place", q->ch->name, (unsigned long long)seq);
        }
        return 0;
    }
    c->last = seq;
    if (jn_store_queue_decode(v, vl, &r, &err) != 0) {
        jn_log(JN_LOG_ERROR, "journal: queue entry %s/%llu cannot be decoded (%s); left in "
               "place", q->ch->name, (unsigned long long)seq, err.msg);
        return 0;
    }
    d = delivery_new(q, r.msg, r.route, seq, r.attempt);
    r.msg = NULL;
    jn_qrec_clear(&r);
    if (d != NULL) {
        queue_link(d);
    }
    return 0;
}

/* Reads q's next records from the journal into memory, up to its window. When the journal has
 * no more of them and every record written in this run is read, q is in memory again. */
static void refill(struct jn_queue *q)
{
    struct refill_ctx c;
    size_t klen;

    memset(&c, 0, sizeof(c));
    c.q = q;
    c.last = q->loaded_upto;
    c.issued = jn_journal_seq_next(q->env->journal);
    klen = jn_store_queue_key(c.start, q->ch->name, q->loaded_upto + 1);
    if (klen == 0 || queue_full(q)) {
        return;
    }
    c.plen = klen - 8;
    if (jn_journal_scan_from(q->env->journal, JN_JDB_QUEUE, c.start, klen, visit_refill, &c) !=
        0) {
        jn_log_p(JN_LOG_ERROR, q->ch->log_prefix, "cannot read the queue from the journal; "
                 "trying again at the next delivery");
        return;
    }
    q->loaded_upto = c.last;
    if (!c.more && q->written_upto <= q->loaded_upto) {
        spill_set(q, 0);
        jn_log_p(JN_LOG_DEBUG, q->ch->log_prefix, "queue within its window again");
    }
}

static void send_one(struct jn_delivery *d)
{
    struct jn_channel *ch = d->q->ch;

    d->waiting = 0;
    d->due_ms = 0;
    d->sending = 1;
    jn_log_p(JN_LOG_DEBUG, ch->log_prefix, "msg=%s send attempt %d", d->msg->id, d->attempt);
    jn_channel_send(ch, d);
}

static const char *order_key(const struct jn_delivery *d)
{
    const char *v = jn_msg_header_get(d->msg, d->q->ch->ordered_key);

    return v ? v : "";
}

/* With ordered: key, a delivery may go only when no earlier one of its key holds a slot. */
static int key_busy(const struct jn_queue *q, const char *key)
{
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        if (q->busy_list[i] && strcmp(order_key(q->busy_list[i]), key) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Starts the retries whose time has come (their timers may not have fired yet). Like the
 * timer, this does not look at stopping: a retry holds its slot and goes when due. */
static void queue__due_retries(struct jn_queue *q)
{
    int64_t now = 0;
    int have_now = 0;

    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        struct jn_delivery *d = q->busy_list[i];
        if (d == NULL || !d->waiting) {
            continue;
        }
        if (!have_now) {
            now = q->env->now_ms(q->env->arg);
            have_now = 1;
        }
        if (d->due_ms <= now) {
            evtimer_del(d->timer);
            send_one(d);
        }
    }
}

/* How far down the ready list to look for a free key: bounds the work per turn. */
#define KEY_SCAN_MAX 1024

void jn_queue_pump(struct jn_queue *q)
{
    size_t limit = q->ch->ordered == JN_ORDERED_FIFO ? 1 : (size_t)q->ch->concurrency;

    if (q->spilled && !q->stopping && queue_low(q)) {
        refill(q);
    }
    if (q->busy && !q->paused) {
        queue__due_retries(q);
    }
    while (q->head && q->busy < limit && !q->stopping && !q->paused) {
        struct jn_delivery *d = q->head, *prev = NULL;
        if (q->ch->ordered == JN_ORDERED_KEY) {
            /* The first ready delivery whose key is not in flight. Every delivery skipped has
             * a key in flight, so none of them shares d's key: order per key holds. */
            size_t scanned = 0;
            while (d && key_busy(q, order_key(d))) {
                if (++scanned >= KEY_SCAN_MAX) {
                    d = NULL;
                    break;
                }
                prev = d;
                d = d->next;
            }
            if (d == NULL) {
                break;
            }
        }
        if (prev) {
            prev->next = d->next;
        } else {
            q->head = d->next;
        }
        if (q->tail == d) {
            q->tail = prev;
        }
        d->next = NULL;
        q->ready--;
        busy_add(q, d);
        send_one(d);
    }
}

static void queue__pump_cb(evutil_socket_t fd, short what, void *arg)
{
    jn_queue_pump(arg);
}

void jn_queue_kick(struct jn_queue *q)
{
    if (q->pump) {
        event_active(q->pump, EV_WRITE, 0);
    }
}

/* Arms d's timer for what is left of its wait. 0, or -1 (the retry cannot be scheduled). */
static int retry_arm(struct jn_delivery *d, long long wait)
{
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};

    return d->timer != NULL && evtimer_add(d->timer, &tv) == 0 ? 0 : -1;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_delivery *d = arg;
    int64_t now = d->q->env->now_ms(d->q->env->arg);

    if (!d->waiting || d->q->paused) {
        return; /* paused: jn_queue_pause(q, 0) sends it when due */
    }
    if (now < d->due_ms && retry_arm(d, d->due_ms - now) == 0) {
        return; /* the clock is behind the timer's: wait the rest */
    }
    send_one(d);
}

void jn_queue_look(const struct jn_queue *q, struct jn_queue_look *out)
{
    int64_t oldest = 0;

    if (q->head != NULL) {
        oldest = q->head->msg->recv_us;
    }
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        const struct jn_delivery *d = q->busy_list[i];
        if (d != NULL && (oldest == 0 || d->msg->recv_us < oldest)) {
            oldest = d->msg->recv_us;
        }
    }
    out->held = q->ready + q->busy;
    out->exact = !q->spilled;
    out->depth = q->qc ? jn_qcount_msgs(q->qc) : 0;
    out->depth_bytes = q->qc ? jn_qcount_bytes(q->qc) : 0;
    out->full = q->full;
    out->oldest_us = oldest;
    out->waiting = 0;
    for (size_t i = 0; i < (size_t)q->ch->concurrency; i++) {
        out->waiting += q->busy_list[i] != NULL && q->busy_list[i]->waiting;
    }
}

/* ---- the budget (max_queued) ---- */

/* Is q at or past pct percent of either figure of its budget? */
static int over(const struct jn_queue *q, unsigned pct)
{
    const struct jn_queue_limit_conf *l = &q->ch->max_queued;

    return (l->messages > 0 && jn_qcount_msgs(q->qc) * 100 >= (uint64_t)l->messages * pct) ||
           (l->bytes > 0 && jn_qcount_bytes(q->qc) * 100 >= l->bytes * pct);
}

int jn_queue_full(struct jn_queue *q)
{
    const struct jn_queue_limit_conf *l = &q->ch->max_queued;

    if (q->qc == NULL || (l->messages <= 0 && l->bytes == 0)) {
        return 0;
    }
    if (q->full && !over(q, 90)) {
        q->full = 0;
        jn_log_p(JN_LOG_INFO, q->ch->log_prefix, "queue below 90 %% of max_queued again "
                 "(%llu messages, %llu bytes)", (unsigned long long)jn_qcount_msgs(q->qc),
                 (unsigned long long)jn_qcount_bytes(q->qc));
    } else if (!q->full && over(q, 100)) {
        static const char *const what[] = {"intake for the routes that feed it is refused",
                                           "new messages for it are dead-lettered",
                                           "its oldest messages are dead-lettered"};
        int byte_limit = !(l->messages > 0 &&
                           jn_qcount_msgs(q->qc) >= (uint64_t)l->messages);
        q->full = 1;
        if (byte_limit) {
            snprintf(q->full_why, sizeof(q->full_why), "destination '%.64s' is full "
                     "(max_queued bytes %llu); try again later", q->ch->name, l->bytes);
        } else {
            snprintf(q->full_why, sizeof(q->full_why), "destination '%.64s' is full "
                     "(max_queued messages %lld); try again later", q->ch->name, l->messages);
        }
        jn_log_p(JN_LOG_WARN, q->ch->log_prefix, "queue full (%llu messages, %llu bytes): %s "
                 "until it is below 90 %%", (unsigned long long)jn_qcount_msgs(q->qc),
                 (unsigned long long)jn_qcount_bytes(q->qc),
                 what[q->ch->when_full >= 0 && q->ch->when_full <= 2 ? q->ch->when_full : 0]);
    }
    return q->full;
}

const char *jn_queue_full_why(const struct jn_queue *q)
{
    return q->full ? q->full_why : "";
}

int jn_queue_drop_oldest(struct jn_queue *q, const char *why)
{
    const struct jn_queue_env *env = q->env;
    struct jn_delivery *d = q->head;
    struct jn_jtxn *t;
    struct jn_queue_event ev;

    if (d == NULL) {
        return -1; /* nothing ready in memory: all in flight, or not read from the journal */
    }
    t = jn_jtxn_new();
    if (t == NULL) {
        return -1;
    }
    q->head = d->next;
    if (q->tail == d) {
        q->tail = NULL;
    }
    d->next = NULL;
    q->ready--;
    q->ch->n_failed++;
    ev = (struct jn_queue_event){.end = JN_QUEUE_FAILED, .msg = d->msg, .route = d->route,
                                 .dest = q->ch->name, .log_prefix = q->ch->log_prefix,
                                 .attempt = d->attempt - 1, .reason = why, .why = why};
    jn_store_queue_del(t, q->ch->name, d->qseq);
    env->ended(env->arg, t, &ev);
    delivery_settle(d, JN_SEND_REJECT, why);
    env->submit(env->arg, t);
    delivery_free(d);
    return 0;
}

void jn_queue_pause(struct jn_queue *q, int on)
{
    q->paused = on != 0;
    if (!q->paused) {
        jn_queue_kick(q);
    }
}

void jn_queue_page_in(struct jn_queue *q)
{
    if (!q->spilled) {
        spill_set(q, 1);
        jn_queue_kick(q);
    }
}

int jn_queue_spilled(const struct jn_queue *q)
{
    return q->spilled;
}

size_t jn_queue_in_flight(const struct jn_queue *q)
{
    size_t n = 0;

    for (size_t k = 0; k < (size_t)q->ch->concurrency; k++) {
        n += q->busy_list[k] != NULL && q->busy_list[k]->sending;
    }
    return n;
}

size_t jn_queue_held(const struct jn_queue *q)
{
    return q->ready + q->busy;
}

void jn_queue_stop(struct jn_queue *q, int freeing)
{
    q->stopping = 1;
    q->freeing |= freeing;
}

void jn_queue_release(struct jn_queue *q)
{
    /* Deliveries waiting for a retry are not with the channel: release them here. Their
     * queue records stay in the journal. */
    for (size_t k = 0; k < (size_t)q->ch->concurrency; k++) {
        struct jn_delivery *d = q->busy_list[k];
        if (d && !d->sending) {
            q->busy_list[k] = NULL;
            q->busy--;
            delivery_free(d);
        }
    }
}

void jn_queue_free(struct jn_queue *q)
{
    if (q == NULL) {
        return;
    }
    while (q->head) {
        struct jn_delivery *d = q->head;
        q->head = d->next;
        delivery_free(d);
    }
    for (size_t k = 0; q->busy_list && k < (size_t)q->ch->concurrency; k++) {
        if (q->busy_list[k]) {
            delivery_free(q->busy_list[k]);
        }
    }
    spill_set(q, 0);
    jn_free(q->busy_list);
    if (q->pump) {
        event_free(q->pump);
    }
    jn_free(q);
}

/* ---- the OUT channel's side (jn_channel.h) ---- */

struct jn_msg *jn_delivery_msg(const struct jn_delivery *d)
{
    return d->msg;
}

int jn_delivery_attempt(const struct jn_delivery *d)
{
    return d->attempt;
}

int jn_delivery_wants_reply(const struct jn_delivery *d)
{
    const struct jn_queue_env *env = d->q->env;

    return d->tag != NULL && env->tag_wants_reply != NULL &&
           env->tag_wants_reply(env->arg, d->tag, d->q->ch);
}

void jn_delivery_reply(struct jn_delivery *d, const void *bytes, size_t len)
{
    void *copy;

    if (bytes == NULL || !jn_delivery_wants_reply(d)) {
        return; /* nobody waits for it: no copy */
    }
    copy = jn_malloc(len ? len : 1);
    if (copy == NULL) {
        return; /* the outcome goes without the reply */
    }
    memcpy(copy, bytes, len);
    jn_free(d->reply);
    d->reply = copy;
    d->reply_len = len;
}

/* A delivery is final: its tag (if any) learns it; the reply goes with it. */
static void delivery_settle(struct jn_delivery *d, enum jn_send_result r, const char *reason)
{
    const struct jn_queue_env *env = d->q->env;
    void *tag = d->tag;

    if (tag == NULL) {
        return;
    }
    d->tag = NULL;
    env->tag_settle(env->arg, tag, r, reason, d->reply, d->reply_len);
}

void jn_delivery_done(struct jn_delivery *d, enum jn_send_result r, const char *reason)
{
    struct jn_queue *q = d->q;
    const struct jn_queue_env *env = q->env;
    struct jn_channel *ch = q->ch;
    struct jn_jtxn *t = jn_jtxn_new();
    struct jn_queue_event ev = {.msg = d->msg, .route = d->route, .dest = ch->name,
                                .log_prefix = ch->log_prefix,
                                .attempt = d->attempt, .reason = reason};
    int keep = 0;

    d->sending = 0;
    if (q->freeing && r == JN_SEND_RETRY) {
        /* Cut short by the stop: not an attempt. The queue record stays as it was. */
        jn_log_p(JN_LOG_DEBUG, ch->log_prefix, "msg=%s send cut short by the stop (%s); it "
                 "stays queued", d->msg->id, reason ? reason : "");
        jn_jtxn_free(t);
        busy_del(q, d);
        delivery_free(d);
        return;
    }
    if (t == NULL) {
        jn_log_p(JN_LOG_ERROR, ch->log_prefix, "msg=%s out of memory recording the outcome; the "
                 "queue entry stays and a restart sends it again", d->msg->id);
    }
    if (r != JN_SEND_OK) {
        jn_channel_note_error(ch, reason ? reason : (r == JN_SEND_RETRY ? "failed, will retry"
                                                                      : "rejected"),
                              jn_now_us());
    }
    if (r == JN_SEND_OK) {
        ch->n_sent++;
        jn_hist_add_us(&ch->delivery_lat, jn_now_us() - d->queued_us);
        /* After failed attempts (each logged), the success is news too. */
        jn_log_p(d->attempt > 1 ? JN_LOG_INFO : JN_LOG_DEBUG, ch->log_prefix,
                 "msg=%s delivered%s (attempt %d)", d->msg->id,
                 d->attempt > 1 ? " after retries" : "", d->attempt);
        if (t) {
            jn_store_queue_del(t, ch->name, d->qseq);
        }
        ev.end = JN_QUEUE_DELIVERED;
        env->ended(env->arg, t, &ev);
        delivery_settle(d, JN_SEND_OK, NULL);
    } else if (r == JN_SEND_RETRY && d->attempt < ch->retry.attempts) {
        long long wait = env->backoff_ms(env->arg, ch->retry.backoff, ch->retry.max_backoff,
                                         d->attempt);
        ch->n_retried++;
        /* The one line per failed attempt: channels leave the logging of outcomes here. */
        jn_log_p(JN_LOG_WARN, ch->log_prefix, "msg=%s attempt %d failed, retry in %lld ms: %s",
                 d->msg->id, d->attempt, wait, reason ? reason : "");
        ev.end = JN_QUEUE_RETRY_SCHEDULED;
        env->ended(env->arg, t, &ev);
        d->attempt++;
        /* The queue record keeps the attempt count and the last error across restarts. */
        if (t) {
            jn_store_queue_put(t, ch->name, d->qseq, d->msg, d->route, d->attempt, reason);
        }
        d->due_ms = env->now_ms(env->arg) + wait;
        if (d->timer == NULL) {
            d->timer = evtimer_new(env->base, retry_cb, d);
        }
        keep = d->timer != NULL && retry_arm(d, wait) == 0;
        d->waiting = keep;
        if (!keep) {
            jn_log_p(JN_LOG_ERROR, ch->log_prefix, "msg=%s cannot schedule a retry; it stays "
                     "queued for the next start", d->msg->id);
            delivery_settle(d, JN_SEND_RETRY, "cannot schedule a retry; it is delivered after "
                            "a restart");
        }
        /* This attempt's answer is not the outcome: the next attempt brings its own. */
        jn_free(d->reply);
        d->reply = NULL;
        d->reply_len = 0;
    } else {
        const char *why = r == JN_SEND_REJECT ? (reason ? reason : "rejected")
                                              : "retry attempts exhausted";
        char full[JN_ERR_MSG_MAX];
        ch->n_failed++;
        if (r != JN_SEND_REJECT) {
            snprintf(full, sizeof(full), "retry attempts exhausted (%d), last error: %s",
                     d->attempt, reason ? reason : "");
            why = full;
        }
        /* The owner logs the failure, then writes the dead letter; the record goes. */
        ev.end = JN_QUEUE_FAILED;
        ev.why = why;
        if (t) {
            jn_store_queue_del(t, ch->name, d->qseq);
        }
        env->ended(env->arg, t, &ev);
        delivery_settle(d, JN_SEND_REJECT, why);
    }
    env->submit(env->arg, t);
    if (keep) {
        return; /* keeps its slot until the retry */
    }
    busy_del(q, d);
    delivery_free(d);
    jn_queue_kick(q);
}
