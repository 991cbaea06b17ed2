/* Unit tests of jn_queue (broker/jn_queue.h) alone: a fake OUT channel that records its sends,
 * a fake clock and backoff, and a real journal in a temp dir for the queue records. Covers
 * paging (spill and refill bounds), retry scheduling, fifo and per-key order while a retry
 * waits, and attempts exhausted or a reject ending as a dead letter. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jn_journal.h"
#include "jn_mem.h"
#include "jn_queue.h"
#include "jn_store.h"
#include "jn_test.h"

static char dir[256];

/* ---- the fake channel: every send is recorded and answered by the test ---- */

#define MAX_SENT 64

static struct jn_delivery *sent[MAX_SENT];
static int sent_attempt[MAX_SENT];
static char sent_payload[MAX_SENT][16];
static size_t nsent;

static void fake_send(struct jn_channel *ch, struct jn_delivery *d)
{
    const struct jn_msg *m = jn_delivery_msg(d);

    (void)ch;
    if (nsent < MAX_SENT) {
        sent[nsent] = d;
        sent_attempt[nsent] = jn_delivery_attempt(d);
        snprintf(sent_payload[nsent], sizeof(sent_payload[nsent]), "%.*s",
                 m->len < 15 ? (int)m->len : 15, (const char *)m->payload);
    }
    nsent++;
}

static const struct jn_out_def fake_out = {.send = fake_send};
static const struct jn_channel_def fake_def = {.name = "fake", .out = &fake_out};

/* ---- the fake owner ---- */

static struct jn_journal *journal;
static int64_t fake_now;
static size_t nspilled;
static int last_backoff_attempt;
static struct jn_queue_event last_ev;
static char last_why[JN_ERR_MSG_MAX];
static int n_delivered, n_retry, n_failed;

static void fake_ended(void *arg, struct jn_jtxn *t, const struct jn_queue_event *ev)
{
    (void)arg;
    (void)t;
    last_ev = *ev;
    snprintf(last_why, sizeof(last_why), "%s", ev->why ? ev->why : "");
    last_ev.why = last_why;
    n_delivered += ev->end == JN_QUEUE_DELIVERED;
    n_retry += ev->end == JN_QUEUE_RETRY_SCHEDULED;
    n_failed += ev->end == JN_QUEUE_FAILED;
}

static void fake_submit(void *arg, struct jn_jtxn *t)
{
    (void)arg;
    if (t != NULL) {
        CHECK_INT(jn_journal_write_now(journal, t), 0);
    }
}

static int64_t fake_now_ms(void *arg)
{
    (void)arg;
    return fake_now;
}

/* Deterministic: the full-jitter ceiling itself, min(cap, base * 2^(attempt-1)). */
static long long fake_backoff(void *arg, long long base, long long cap, int attempt)
{
    long long w = base;

    (void)arg;
    last_backoff_attempt = attempt;
    for (int i = 1; i < attempt && w < cap; i++) {
        w *= 2;
    }
    return w < cap ? w : cap;
}

static struct event_base *base;
static struct jn_queue_env env;

static struct jn_channel ch;

static struct jn_queue *setup(long long concurrency, int ordered, long long attempts)
{
    char cmd[300];
    struct jn_err err;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 256ull << 20, .high_water_pct = 95,
                                 .warn_pct = 90};

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    CHECK_INT(jn_journal_open(&journal, &jc, NULL, &err), 0);
    memset(&ch, 0, sizeof(ch));
    ch.def = &fake_def;
    ch.name = "out";
    snprintf(ch.log_prefix, sizeof(ch.log_prefix), "fake.out");
    ch.dir = JN_DIR_OUT;
    ch.concurrency = concurrency;
    ch.ordered = ordered;
    ch.ordered_key = "k";
    ch.retry = (struct jn_retry_conf){.attempts = attempts, .backoff = 100, .max_backoff = 250};
    nsent = 0;
    nspilled = 0;
    n_delivered = n_retry = n_failed = 0;
    fake_now = 1000;
    env = (struct jn_queue_env){.base = base, .journal = journal, .ended = fake_ended,
                                .submit = fake_submit, .now_ms = fake_now_ms,
                                .backoff_ms = fake_backoff, .nspilled = &nspilled};
    return jn_queue_new(&ch, &env);
}

static void teardown(struct jn_queue *q)
{
    jn_queue_stop(q, 1);
    jn_queue_release(q);
    jn_queue_free(q);
    jn_journal_close(journal);
    journal = NULL;
}

/* Writes n queue records (payloads "<tag><i>", header k from keys[i] if given) in one
 * transaction, then hands them to the queue as one committed batch. */
static void add_n(struct jn_queue *q, const char *tag, size_t n, size_t len, const char **keys)
{
    struct jn_jtxn *t = jn_jtxn_new();
    struct jn_queue_batch batch = {NULL, NULL};
    char *payload = jn_calloc(1, len + 16);

    for (size_t i = 0; i < n; i++) {
        uint64_t qseq = jn_journal_seq(journal);
        struct jn_msg *m;
        int w = snprintf(payload, 16, "%s%zu", tag, i);
        m = jn_msg_new("in", payload, len > (size_t)w ? len : (size_t)w);
        /* A valid id (26 characters of Crockford base32): the queue record checks it. */
        snprintf(m->id, sizeof(m->id), "01M82PAY3YE94KJ51TD9G%05zu", i);
        if (keys) {
            jn_msg_header_set(m, "k", keys[i]);
        }
        CHECK_INT(jn_store_queue_put(t, "out", qseq, m, "r", 1, NULL), 0);
        jn_queue_add(q, &batch, m, "r", qseq);
    }
    jn_free(payload);
    CHECK_INT(jn_journal_write_now(journal, t), 0);
    jn_queue_commit(batch.head, 0, NULL);
}

static void loop_turn(void)
{
    event_base_loop(base, EVLOOP_NONBLOCK);
}

/* The byte window: 1 MiB messages, so memory holds 8 of them (JN_QUEUE_WINDOW_BYTES); the rest
 * wait in the journal and are read back, in order, when memory falls to half. */
static void test_paging_bytes(void)
{
    struct jn_queue *q = setup(1, 0, 3);
    const size_t mib = 1u << 20, total = 20;
    size_t max_held;

    add_n(q, "p", total, mib, NULL);
    max_held = jn_queue_held(q);
    CHECK_INT(max_held, JN_QUEUE_WINDOW_BYTES / mib);
    CHECK(jn_queue_spilled(q));
    CHECK_INT(nspilled, 1);
    loop_turn();
    CHECK_INT(nsent, 1);
    for (size_t i = 0; i < total && i < nsent; i++) {
        char want[16];
        snprintf(want, sizeof(want), "p%zu", i);
        CHECK(strncmp(sent_payload[i], want, strlen(want)) == 0 &&
              sent_payload[i][strlen(want)] == '\0');
        jn_delivery_done(sent[i], JN_SEND_OK, NULL);
        loop_turn();
        if (jn_queue_held(q) > max_held) {
            max_held = jn_queue_held(q);
        }
        /* Refilled only once memory is at half the window: never below 4 held until the
         * journal is empty (or above the window). */
        CHECK(jn_queue_held(q) <= 8);
        CHECK(jn_queue_held(q) >= 4 || !jn_queue_spilled(q));
    }
    CHECK_INT(nsent, total);
    CHECK_INT(n_delivered, total);
    CHECK_INT(max_held, 8);
    CHECK_INT(jn_queue_held(q), 0);
    CHECK(!jn_queue_spilled(q));
    CHECK_INT(nspilled, 0);
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), 0);
    teardown(q);
}

/* The count window: JN_QUEUE_WINDOW deliveries in memory, the rest in the journal. */
static void test_paging_count(void)
{
    struct jn_queue *q = setup(1, 0, 3);
    size_t n = JN_QUEUE_WINDOW + 10;

    add_n(q, "c", n, 1, NULL);
    CHECK_INT(jn_queue_held(q), JN_QUEUE_WINDOW);
    CHECK(jn_queue_spilled(q));
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), n);
    teardown(q);
    CHECK_INT(nspilled, 0);
}

/* Retries wait for the fake clock: backoff grows per attempt and caps; after the last attempt
 * the delivery ends as a dead letter and its record goes. */
static void test_retry_then_dead_letter(void)
{
    struct jn_queue *q = setup(1, 0, 3);

    add_n(q, "a", 1, 1, NULL);
    jn_queue_pump(q);
    CHECK_INT(nsent, 1);
    CHECK_INT(sent_attempt[0], 1);
    jn_delivery_done(sent[0], JN_SEND_RETRY, "HTTP 503");
    CHECK_INT(n_retry, 1);
    CHECK_INT(last_backoff_attempt, 1);
    CHECK_INT(last_ev.attempt, 1);
    CHECK_INT(jn_queue_held(q), 1); /* keeps its slot */
    CHECK_INT(jn_queue_in_flight(q), 0);
    fake_now = 1099;
    jn_queue_pump(q);
    CHECK_INT(nsent, 1); /* not due yet */
    fake_now = 1100;
    jn_queue_pump(q);
    CHECK_INT(nsent, 2);
    CHECK_INT(sent_attempt[1], 2);
    jn_delivery_done(sent[1], JN_SEND_RETRY, "HTTP 503");
    CHECK_INT(last_backoff_attempt, 2);
    fake_now = 1299;
    jn_queue_pump(q);
    CHECK_INT(nsent, 2); /* 200 ms this time */
    fake_now = 1300;
    jn_queue_pump(q);
    CHECK_INT(nsent, 3);
    CHECK_INT(sent_attempt[2], 3);
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), 1);
    jn_delivery_done(sent[2], JN_SEND_RETRY, "HTTP 502");
    CHECK_INT(n_failed, 1);
    CHECK_INT(last_ev.end, JN_QUEUE_FAILED);
    CHECK_INT(last_ev.attempt, 3);
    CHECK_STR(last_ev.why, "retry attempts exhausted (3), last error: HTTP 502");
    CHECK_INT(jn_queue_held(q), 0);
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), 0);
    CHECK_INT(ch.n_retried, 2);
    CHECK_INT(ch.n_failed, 1);
    teardown(q);
}

/* The backoff is capped: attempt 3 waits 250 (not 400). A reject dead-letters at once. */
static void test_cap_and_reject(void)
{
    struct jn_queue *q = setup(1, 0, 5);

    add_n(q, "r", 2, 1, NULL);
    jn_queue_pump(q);
    jn_delivery_done(sent[0], JN_SEND_RETRY, "down");
    fake_now += 100;
    jn_queue_pump(q);
    jn_delivery_done(sent[1], JN_SEND_RETRY, "down");
    fake_now += 200;
    jn_queue_pump(q);
    CHECK_INT(nsent, 3);
    jn_delivery_done(sent[2], JN_SEND_RETRY, "down");
    fake_now += 249;
    jn_queue_pump(q);
    CHECK_INT(nsent, 3);
    fake_now += 1;
    jn_queue_pump(q);
    CHECK_INT(nsent, 4);
    CHECK_INT(sent_attempt[3], 4);
    jn_delivery_done(sent[3], JN_SEND_REJECT, "AR: bad segment");
    CHECK_INT(last_ev.end, JN_QUEUE_FAILED);
    CHECK_STR(last_ev.why, "AR: bad segment");
    jn_queue_pump(q);
    CHECK_INT(nsent, 5);
    CHECK_STR(sent_payload[4], "r1");
    CHECK_INT(sent_attempt[4], 1);
    jn_delivery_done(sent[4], JN_SEND_OK, NULL);
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), 0);
    teardown(q);
}

/* fifo: one at a time even with concurrency 2; a retry holds the head of the line. */
static void test_fifo_holds_place(void)
{
    struct jn_queue *q = setup(2, JN_ORDERED_FIFO, 3);

    add_n(q, "f", 2, 1, NULL);
    jn_queue_pump(q);
    CHECK_INT(nsent, 1);
    CHECK_STR(sent_payload[0], "f0");
    jn_delivery_done(sent[0], JN_SEND_RETRY, "busy");
    jn_queue_pump(q);
    CHECK_INT(nsent, 1); /* f1 waits behind the retry of f0 */
    fake_now += 100;
    jn_queue_pump(q);
    CHECK_INT(nsent, 2);
    CHECK_STR(sent_payload[1], "f0");
    jn_delivery_done(sent[1], JN_SEND_OK, NULL);
    jn_queue_pump(q);
    CHECK_INT(nsent, 3);
    CHECK_STR(sent_payload[2], "f1");
    jn_delivery_done(sent[2], JN_SEND_OK, NULL);
    teardown(q);
}

/* ordered: key: other keys pass a retry; its own key waits for it. */
static void test_key_holds_place(void)
{
    struct jn_queue *q = setup(2, JN_ORDERED_KEY, 3);
    const char *keys[] = {"x", "x", "y"};

    add_n(q, "k", 3, 1, keys);
    jn_queue_pump(q);
    CHECK_INT(nsent, 2);
    CHECK_STR(sent_payload[0], "k0");
    CHECK_STR(sent_payload[1], "k2"); /* k1 has k0's key, in flight */
    jn_delivery_done(sent[0], JN_SEND_RETRY, "busy");
    jn_delivery_done(sent[1], JN_SEND_OK, NULL);
    jn_queue_pump(q);
    CHECK_INT(nsent, 2); /* a slot is free, but k1 waits for k0's retry */
    fake_now += 100;
    jn_queue_pump(q);
    CHECK_INT(nsent, 3);
    CHECK_STR(sent_payload[2], "k0");
    CHECK_INT(sent_attempt[2], 2);
    jn_delivery_done(sent[2], JN_SEND_OK, NULL);
    jn_queue_pump(q);
    CHECK_INT(nsent, 4);
    CHECK_STR(sent_payload[3], "k1");
    jn_delivery_done(sent[3], JN_SEND_OK, NULL);
    CHECK_INT(n_delivered, 3);
    teardown(q);
}

/* Freeing: a RETRY is a send cut short (no attempt counted), the record stays as it was. */
static void test_cut_short(void)
{
    struct jn_queue *q = setup(1, 0, 3);

    add_n(q, "s", 1, 1, NULL);
    jn_queue_pump(q);
    jn_queue_stop(q, 1);
    jn_delivery_done(sent[0], JN_SEND_RETRY, "stopping");
    CHECK_INT(n_retry, 0);
    CHECK_INT(ch.n_retried, 0);
    CHECK_INT(jn_queue_held(q), 0);
    CHECK_INT(jn_journal_count(journal, JN_JDB_QUEUE), 1);
    teardown(q);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/jn-test-queue-%d", (int)getpid());
    base = event_base_new();
    test_paging_bytes();
    test_paging_count();
    test_retry_then_dead_letter();
    test_cap_and_reject();
    test_fifo_holds_place();
    test_key_holds_place();
    test_cut_short();
    event_base_free(base);
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    }
    TEST_MAIN_END();
}
