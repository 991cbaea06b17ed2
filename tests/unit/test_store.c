/* Unit tests of the journal (group commit, scans, refusal when full, format check) and of the
 * broker's record formats (jn_store), with golden v1 records kept byte for byte. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jn_journal.h"
#include "jn_mem.h"
#include "jn_qcount.h"
#include "jn_store.h"
#include "jn_test.h"

static char dir[256];

static void rm_dir(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
}

static struct jn_msg *sample(void)
{
    struct jn_msg *m = jn_msg_new("in", "payload", 7);

    strcpy(m->id, "01M82PAY3YE94KJ51TD9G02G5M");
    m->recv_us = 1763850000000000LL;
    jn_msg_header_add(m, "k", "v");
    return m;
}

static void test_queue_record(void)
{
    struct jn_jtxn *t = jn_jtxn_new();
    struct jn_msg *m = sample();
    struct jn_qrec r;
    struct jn_err err;
    unsigned char key[JN_STORE_DEST_MAX + 9];
    size_t kl = jn_store_queue_key(key, "out", 0x0102030405060708ULL);

    CHECK_INT(kl, 12);
    CHECK(memcmp(key, "out\0\x01\x02\x03\x04\x05\x06\x07\x08", 12) == 0);
    CHECK_INT(jn_store_queue_key(key, "", 1), 9);
    {
        char longname[JN_STORE_DEST_MAX + 1];
        memset(longname, 'x', sizeof(longname) - 1);
        longname[JN_STORE_DEST_MAX] = '\0';
        CHECK_INT(jn_store_queue_key(key, longname, 1), 0);
    }
    CHECK_INT(jn_store_queue_put(t, "out", 7, m, "r1", 3, "HTTP 503"), 0);
    jn_jtxn_free(t);

    /* Golden v1 queue record: [1, attempt 3, "r1", "HTTP 503", bin(envelope v1)]. */
    {
        static const unsigned char env[] = {
            0x96, 0x01, 0xba, '0', '1', 'M', '8', '2', 'P', 'A', 'Y', '3', 'Y', 'E', '9', '4',
            'K', 'J', '5', '1', 'T', 'D', '9', 'G', '0', '2', 'G', '5', 'M', 0xa2, 'i', 'n',
            0xcf, 0x00, 0x06, 0x44, 0x36, 0x54, 0xaf, 0xe4, 0x00, 0x91, 0x92, 0xa1, 'k', 0xa1,
            'v', 0xc4, 0x07, 'p', 'a', 'y', 'l', 'o', 'a', 'd',
        };
        unsigned char rec[128];
        size_t n = 0;
        rec[n++] = 0x95;
        rec[n++] = 0x01;
        rec[n++] = 0x03;
        rec[n++] = 0xa2;
        rec[n++] = 'r';
        rec[n++] = '1';
        rec[n++] = 0xa8;
        memcpy(rec + n, "HTTP 503", 8);
        n += 8;
        rec[n++] = 0xc4;
        rec[n++] = (unsigned char)sizeof(env);
        memcpy(rec + n, env, sizeof(env));
        n += sizeof(env);
        CHECK_INT(jn_store_queue_decode(rec, n, &r, &err), 0);
        CHECK_INT(r.attempt, 3);
        CHECK_STR(r.route, "r1");
        CHECK_STR(r.error, "HTTP 503");
        CHECK(r.msg != NULL && strcmp(r.msg->id, m->id) == 0 && r.msg->len == 7 &&
              r.msg->recv_us == m->recv_us);
        jn_qrec_clear(&r);
        /* Every truncation is refused with a reason. */
        for (size_t cut = 0; cut < n; cut++) {
            CHECK(jn_store_queue_decode(rec, cut, &r, &err) != 0);
        }
        rec[1] = 2;
        CHECK(jn_store_queue_decode(rec, n, &r, &err) == JN_EPROTO);
        CHECK_STR(err.msg, "queue record version 2 is newer than this build");
    }
    jn_msg_unref(&m);
}

struct collect {
    int n;
    char last[64];
};

static int collect(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct collect *c = arg;

    c->n++;
    snprintf(c->last, sizeof(c->last), "%.*s", (int)vl, (const char *)v);
    return 0;
}

static int done_calls, done_rc;

static void on_done(void *arg, int rc)
{
    (void)arg;
    done_calls++;
    done_rc = rc;
}

static void run_until(struct event_base *base, int calls)
{
    for (int i = 0; i < 500 && done_calls < calls; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(2000);
    }
}

static void test_journal(void)
{
    struct event_base *base = event_base_new();
    struct jn_journal *j = NULL, *j2 = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 4 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct collect c = {0, ""};

    CHECK_INT(jn_journal_open(&j, &jc, base, &err), 0);
    if (j == NULL) {
        event_base_free(base);
        return;
    }
    /* A second writer on the same data_dir is refused: the lock. */
    CHECK_INT(jn_journal_open(&j2, &jc, NULL, &err), JN_EAGAIN);
    CHECK(strstr(err.msg, "is using data_dir") != NULL);
    done_calls = 0;
    for (int i = 0; i < 3; i++) {
        struct jn_jtxn *t = jn_jtxn_new();
        unsigned char k[8];
        char v[16];
        jn_be64(k, jn_journal_seq(j));
        snprintf(v, sizeof(v), "value-%d", i);
        jn_jtxn_put(t, JN_JDB_INBOX, k, 8, v, strlen(v));
        jn_journal_submit(j, t, 1, on_done, NULL);
    }
    CHECK_INT(done_calls, 0); /* never from inside submit */
    run_until(base, 3);
    CHECK_INT(done_calls, 3);
    CHECK_INT(done_rc, 0);
    CHECK_INT(jn_journal_count(j, JN_JDB_INBOX), 3);
    jn_journal_scan(j, JN_JDB_INBOX, NULL, 0, collect, &c);
    CHECK_INT(c.n, 3);
    CHECK_STR(c.last, "value-2");
    CHECK(jn_journal_used_pct(j) >= 0 && jn_journal_used_pct(j) < 50);

    /* Full: a refusable write bigger than the map is refused, the journal stays usable. */
    {
        size_t big = 5 << 20;
        char *v = jn_calloc(1, big);
        struct jn_jtxn *t = jn_jtxn_new();
        unsigned char k[8];
        jn_be64(k, jn_journal_seq(j));
        jn_jtxn_put(t, JN_JDB_INBOX, k, 8, v, big);
        jn_free(v);
        done_calls = 0;
        jn_journal_submit(j, t, 1, on_done, NULL);
        run_until(base, 1);
        CHECK_INT(done_calls, 1);
        CHECK_INT(done_rc, JN_EFULL);
        t = jn_jtxn_new();
        jn_jtxn_del(t, JN_JDB_INBOX, k, 8); /* deleting what is not there is fine */
        done_calls = 0;
        jn_journal_submit(j, t, 0, on_done, NULL);
        run_until(base, 1);
        CHECK_INT(done_rc, 0);
    }
    jn_journal_close(j);
    j = NULL;

    /* Sequence numbers go on after a reopen. */
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j) {
        CHECK(jn_journal_seq(j) > 4);
        jn_journal_close(j);
    }
    /* Read-only open of a journal that does not exist says so. */
    {
        struct jn_journal_conf ro = jc;
        char none[300];
        snprintf(none, sizeof(none), "%s/none", dir);
        ro.dir = none;
        ro.readonly = 1;
        CHECK_INT(jn_journal_open(&j, &ro, NULL, &err), JN_ENOENT);
        CHECK(strstr(err.msg, "no journal in") != NULL);
    }
    event_base_free(base);
}

/* Values of test_journal_order: the key, then filler up to 1300 bytes (two records a page, so
 * leaves split often), or "again" for an overwritten key. */
struct order {
    size_t n;
    unsigned char prev[64];
    size_t prevl;
    int bad, again;
};

static int check_order(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct order *o = arg;
    size_t m = kl < o->prevl ? kl : o->prevl;
    int c = memcmp(k, o->prev, m);

    if (o->n > 0 && (c < 0 || (c == 0 && kl <= o->prevl))) {
        o->bad++; /* not in increasing order */
    }
    if (vl == 5 && memcmp(v, "again", 5) == 0) {
        o->again++;
    } else if (vl != 1300 || kl > sizeof(o->prev) || memcmp(v, k, kl) != 0) {
        o->bad++;
    }
    memcpy(o->prev, k, kl < sizeof(o->prev) ? kl : sizeof(o->prev));
    o->prevl = kl;
    o->n++;
    return 0;
}

static void order_put(struct jn_journal *j, enum jn_jdb db, const char *dest, uint64_t seq)
{
    unsigned char k[16], v[1300];
    size_t kl = 8;
    struct jn_jtxn *t = jn_jtxn_new();

    if (dest != NULL) {
        kl = jn_store_queue_key(k, dest, seq);
    } else {
        jn_be64(k, seq);
    }
    memset(v, 'v', sizeof(v));
    memcpy(v, k, kl);
    CHECK_INT(jn_jtxn_put(t, db, k, kl, v, sizeof(v)), 0);
    jn_journal_submit(j, t, 0, on_done, NULL);
}

/* The writer tries MDB_APPEND for keys after the largest it has put: keys in any order, a
 * reopened journal whose largest key the writer does not know, and overwrites all end as with
 * plain puts. */
static void test_journal_order(void)
{
    struct event_base *base = event_base_new();
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 8 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct order o;

    rm_dir();
    CHECK_INT(jn_journal_open(&j, &jc, base, &err), 0);
    if (j == NULL) {
        event_base_free(base);
        return;
    }
    done_calls = 0;
    for (uint64_t i = 0; i < 150; i++) {
        order_put(j, JN_JDB_QUEUE, i % 3 == 0 ? "b" : "a", 1000 + i); /* two destinations */
        order_put(j, JN_JDB_INBOX, NULL, 5000 - i);                    /* decreasing */
        order_put(j, JN_JDB_INBOX, NULL, 6000 + i);                    /* increasing */
    }
    {
        struct jn_jtxn *t = jn_jtxn_new();
        unsigned char k[8];
        jn_be64(k, 6050);
        CHECK_INT(jn_jtxn_put(t, JN_JDB_INBOX, k, 8, "again", 5), 0);
        jn_journal_submit(j, t, 0, on_done, NULL);
    }
    run_until(base, 451);
    CHECK_INT(done_calls, 451);
    CHECK_INT(done_rc, 0);
    jn_journal_close(j);
    j = NULL;

    /* Reopened: the writer's first key (10) is below the database's last one (6149). 20 is
     * after 10, so it is tried as an append, which LMDB refuses; 7000 is a true append. */
    CHECK_INT(jn_journal_open(&j, &jc, base, &err), 0);
    if (j == NULL) {
        event_base_free(base);
        return;
    }
    done_calls = 0;
    order_put(j, JN_JDB_INBOX, NULL, 10);
    order_put(j, JN_JDB_INBOX, NULL, 20);
    order_put(j, JN_JDB_INBOX, NULL, 7000);
    run_until(base, 3);
    CHECK_INT(done_calls, 3);
    CHECK_INT(done_rc, 0);

    memset(&o, 0, sizeof(o));
    CHECK_INT(jn_journal_scan(j, JN_JDB_INBOX, NULL, 0, check_order, &o), 0);
    CHECK_INT(o.n, 303);
    CHECK_INT(o.bad, 0);
    CHECK_INT(o.again, 1);
    memset(&o, 0, sizeof(o));
    CHECK_INT(jn_journal_scan(j, JN_JDB_QUEUE, NULL, 0, check_order, &o), 0);
    CHECK_INT(o.n, 150);
    CHECK_INT(o.bad, 0);
    memset(&o, 0, sizeof(o));
    CHECK_INT(jn_journal_scan(j, JN_JDB_QUEUE, "b", 2, check_order, &o), 0);
    CHECK_INT(o.n, 50);
    jn_journal_close(j);
    event_base_free(base);
}

static void test_log_record(void)
{
    struct jn_jtxn *t = jn_jtxn_new();
    static const unsigned char rec[] = {
        0x98, 0x01, 0xcf, 0x00, 0x06, 0x44, 0x36, 0x54, 0xaf, 0xe4, 0x00, 0xba, '0', '1', 'M',
        '8', '2', 'P', 'A', 'Y', '3', 'Y', 'E', '9', '4', 'K', 'J', '5', '1', 'T', 'D', '9', 'G',
        '0', '2', 'G', '5', 'M', 0xa9, 'd', 'e', 'l', 'i', 'v', 'e', 'r', 'e', 'd', 0xa1, 'r',
        0xa3, 'o', 'u', 't', 0x02, 0xa0,
    };
    struct jn_logrec r;
    struct jn_err err;

    CHECK_INT(jn_store_log(t, 1, "01M82PAY3YE94KJ51TD9G02G5M", "delivered", "r", "out", 2, NULL),
              0);
    jn_jtxn_free(t);
    CHECK_INT(jn_store_log_decode(rec, sizeof(rec), &r, &err), 0);
    CHECK_STR(r.id, "01M82PAY3YE94KJ51TD9G02G5M");
    CHECK_STR(r.event, "delivered");
    CHECK_STR(r.route, "r");
    CHECK_STR(r.channel, "out");
    CHECK_INT(r.attempt, 2);
    CHECK_STR(r.error, "");
    CHECK_INT(r.time_us, 1763850000000000LL);
    CHECK_STR(r.config, ""); /* written before the config field */
    {
        /* the same with the config hash as its ninth field */
        unsigned char rec9[sizeof(rec) + 17];
        memcpy(rec9, rec, sizeof(rec));
        rec9[0] = 0x99;
        rec9[sizeof(rec)] = 0xb0;
        memcpy(rec9 + sizeof(rec) + 1, "3f9a0c1be27d4410", 16);
        CHECK_INT(jn_store_log_decode(rec9, sizeof(rec9), &r, &err), 0);
        CHECK_STR(r.config, "3f9a0c1be27d4410");
        CHECK_STR(r.event, "delivered");
        CHECK_STR(r.peer, ""); /* nine fields: no peer */
        /* and the TLS peer as its tenth (a received record over TLS) */
        {
            static const char peer[] = "CN=client1 sha256:3f2a";
            unsigned char rec10[sizeof(rec9) + 1 + sizeof(peer) - 1];
            memcpy(rec10, rec9, sizeof(rec9));
            rec10[0] = 0x9a;
            rec10[sizeof(rec9)] = (unsigned char)(0xa0 | (sizeof(peer) - 1));
            memcpy(rec10 + sizeof(rec9) + 1, peer, sizeof(peer) - 1);
            CHECK_INT(jn_store_log_decode(rec10, sizeof(rec10), &r, &err), 0);
            CHECK_STR(r.peer, peer);
            CHECK_STR(r.config, "3f9a0c1be27d4410");
            rec10[0] = 0x9b; /* claims eleven: refused, not read past its end */
            CHECK(jn_store_log_decode(rec10, sizeof(rec10), &r, &err) != 0);
        }
    }
    /* the writer takes a peer or none (what it writes is read back end to end in
     * tests/integration/test_ctl_tls.py) */
    t = jn_jtxn_new();
    CHECK_INT(jn_store_log_peer(t, 1, "01M82PAY3YE94KJ51TD9G02G5M", "received", NULL, "web", 0,
                                NULL, "3f9a0c1be27d4410", "CN=c sha256:00"), 0);
    CHECK_INT(jn_store_log_peer(t, 2, "01M82PAY3YE94KJ51TD9G02G5M", "received", NULL, "web", 0,
                                NULL, "3f9a0c1be27d4410", ""), 0);
    jn_jtxn_free(t);
}

/* Records whose strings are empty: msgpack-c 4.0 gives an empty string a NULL pointer when no
 * other string came before it in the buffer, so an unrouted dead letter (destination "") and a
 * queue record with no route or error must still decode (issue 12, item 1). */
static void test_empty_strings(void)
{
    static const unsigned char env[] = {
        0x96, 0x01, 0xba, '0', '1', 'M', '8', '2', 'P', 'A', 'Y', '3', 'Y', 'E', '9', '4',
        'K', 'J', '5', '1', 'T', 'D', '9', 'G', '0', '2', 'G', '5', 'M', 0xa0,
        0xcf, 0x00, 0x06, 0x44, 0x36, 0x54, 0xaf, 0xe4, 0x00, 0x91, 0x92, 0xa1, 'k', 0xa0,
        0xc4, 0x01, 'p',
    };
    unsigned char rec[128];
    struct jn_qrec r;
    struct jn_logrec l;
    struct jn_err err;
    size_t n = 0;

    /* dlq: [1, "", "", 0, "", time_us 5, bin(envelope)] */
    rec[n++] = 0x97;
    rec[n++] = 0x01;
    rec[n++] = 0xa0;
    rec[n++] = 0xa0;
    rec[n++] = 0x00;
    rec[n++] = 0xa0;
    rec[n++] = 0x05;
    rec[n++] = 0xc4;
    rec[n++] = (unsigned char)sizeof(env);
    memcpy(rec + n, env, sizeof(env));
    n += sizeof(env);
    memset(&r, 0, sizeof(r));
    CHECK_INT(jn_store_dlq_decode(rec, n, &r, &err), 0);
    CHECK(r.dest != NULL && strcmp(r.dest, "") == 0);
    CHECK(r.route != NULL && strcmp(r.route, "") == 0);
    CHECK(r.error != NULL && strcmp(r.error, "") == 0);
    CHECK_INT(r.time_us, 5);
    CHECK(r.msg != NULL && strcmp(r.msg->channel, "") == 0 && r.msg->len == 1);
    if (r.msg != NULL) {
        const char *v = jn_msg_header_get(r.msg, "k");
        CHECK(v != NULL && strcmp(v, "") == 0);
    }
    jn_qrec_clear(&r);

    /* queue: [1, 1, "", "", bin(envelope)] */
    n = 0;
    rec[n++] = 0x95;
    rec[n++] = 0x01;
    rec[n++] = 0x01;
    rec[n++] = 0xa0;
    rec[n++] = 0xa0;
    rec[n++] = 0xc4;
    rec[n++] = (unsigned char)sizeof(env);
    memcpy(rec + n, env, sizeof(env));
    n += sizeof(env);
    memset(&r, 0, sizeof(r));
    CHECK_INT(jn_store_queue_decode(rec, n, &r, &err), 0);
    CHECK(r.route != NULL && strcmp(r.route, "") == 0);
    CHECK(r.error != NULL && strcmp(r.error, "") == 0);
    jn_qrec_clear(&r);

    /* log: [1, time_us 5, "", "", "", "", 0, ""] */
    n = 0;
    rec[n++] = 0x98;
    rec[n++] = 0x01;
    rec[n++] = 0x05;
    for (int i = 0; i < 4; i++) {
        rec[n++] = 0xa0;
    }
    rec[n++] = 0x00;
    rec[n++] = 0xa0;
    CHECK_INT(jn_store_log_decode(rec, n, &l, &err), 0);
    CHECK_STR(l.event, "");
    CHECK_STR(l.error, "");
}

static void test_alloc_failures(void)
{
    struct jn_msg *m = sample();

    long first_ok = -1;

    /* Each failure is a clean JN_ENOMEM (ASan/valgrind report any leak); walk until none. */
    for (long n = 0; n < 200 && first_ok < 0; n++) {
        struct jn_jtxn *t;
        int bad = 0;
        jn_jtxn_cache_clear(); /* so jn_jtxn_new allocates: the walk goes through it too */
        jn_mem_fail_after(n);
        t = jn_jtxn_new();
        if (t == NULL) {
            bad = 1;
        } else {
            int rc[4] = {jn_store_queue_put(t, "out", 1, m, "r", 1, "e"),
                         jn_store_dlq_put(t, 2, "out", "r", 1, "e", m),
                         jn_store_log(t, 3, m->id, "x", "r", "c", 1, "e"),
                         jn_store_inbox_put(t, 4, m)};
            for (int i = 0; i < 4; i++) {
                CHECK(rc[i] == 0 || rc[i] == JN_ENOMEM);
                bad |= rc[i] != 0;
            }
        }
        CHECK_INT(bad, jn_mem_failed() > 0);
        jn_mem_fail_after(-1);
        jn_jtxn_free(t);
        if (!bad) {
            first_ok = n;
        }
    }
    /* The walk went through every allocation before succeeding: the jtxn, its one buffer of
     * keys and values, and the envelope of each of the three records that hold one. */
    CHECK(first_ok >= 5);
    jn_msg_unref(&m);
}

/* ---- duplicate windows (dedup, dedup_exp) ---- */

static const char GOLDEN_ID[] = "01M82PAY3YE94KJ51TD9G02G5M";

/* A golden v1 dedup record: [1, id, time_us, expires_us, answered 1, bin("ACK")]. */
static const unsigned char dedup_v1[] = {
    0x96, 0x01, 0xba, '0', '1', 'M', '8', '2', 'P', 'A', 'Y', '3', 'Y', 'E', '9', '4', 'K', 'J',
    '5', '1', 'T', 'D', '9', 'G', '0', '2', 'G', '5', 'M', 0xcf, 0x00, 0x06, 0x44, 0x36, 0x54,
    0xaf, 0xe4, 0x00, 0xcf, 0x00, 0x06, 0x44, 0x36, 0x78, 0x73, 0x2a, 0x00, 0x01, 0xc4, 0x03,
    'A', 'C', 'K',
};

static void test_dedup_record(void)
{
    struct jn_dedup_rec r;
    struct jn_buf answer = JN_BUF_INIT;
    struct jn_err err;
    unsigned char k[JN_STORE_DEST_MAX + 1 + JN_DEDUP_KEY_MAX], rec[sizeof(dedup_v1)];
    char longkey[JN_DEDUP_KEY_MAX + 1];

    CHECK_INT(jn_store_dedup_decode(dedup_v1, sizeof(dedup_v1), &r, &answer, &err), 0);
    CHECK_STR(r.id, GOLDEN_ID);
    CHECK_INT(r.time_us, 1763850000000000LL);
    CHECK_INT(r.expires_us, 1763850600000000LL);
    CHECK_INT(r.answered, 1);
    CHECK(answer.len == 3 && memcmp(answer.p, "ACK", 3) == 0);
    for (size_t cut = 0; cut < sizeof(dedup_v1); cut++) {
        CHECK(jn_store_dedup_decode(dedup_v1, cut, &r, &answer, &err) != 0);
    }
    memcpy(rec, dedup_v1, sizeof(rec));
    rec[1] = 2;
    CHECK_INT(jn_store_dedup_decode(rec, sizeof(rec), &r, &answer, &err), JN_EPROTO);
    CHECK_STR(err.msg, "dedup record version 2 is newer than this build");
    jn_buf_reset(&answer);

    /* Keys: channel \0 key; too long a name or key is refused. */
    CHECK_INT(jn_store_dedup_key(k, "in", "MSG1", 4), 7);
    CHECK(memcmp(k, "in\0MSG1", 7) == 0);
    CHECK_INT(jn_store_dedup_key(k, "in", "", 0), 0);
    memset(longkey, 'k', sizeof(longkey));
    CHECK_INT(jn_store_dedup_key(k, "in", longkey, JN_DEDUP_KEY_MAX), 3 + JN_DEDUP_KEY_MAX);
    CHECK_INT(jn_store_dedup_key(k, "in", longkey, JN_DEDUP_KEY_MAX + 1), 0);
}

struct seen {
    int n;
    char keys[8][16];
    char answers[8][16];
    int answered[8];
};

static int seen_visit(void *arg, const struct jn_dedup_entry *e)
{
    struct seen *s = arg;

    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%.*s", (int)e->klen, (const char *)e->key);
        snprintf(s->answers[s->n], sizeof(s->answers[0]), "%.*s", (int)e->alen,
                 (const char *)e->answer);
        s->answered[s->n] = e->answered;
    }
    s->n++;
    return 0;
}

static void dedup_put(struct jn_journal *j, const char *ch, const char *key, const char *id,
                      int64_t time_us, int64_t expires_us, const char *answer)
{
    struct jn_jtxn *t = jn_jtxn_new();
    struct jn_dedup_rec r;

    snprintf(r.id, sizeof(r.id), "%s", id);
    r.time_us = time_us;
    r.expires_us = expires_us;
    r.answered = answer != NULL;
    CHECK_INT(jn_store_dedup_put(t, ch, key, strlen(key), &r, answer, answer ? strlen(answer)
                                                                             : 0), 0);
    CHECK_INT(jn_journal_write_now(j, t), 0);
}

/* Put, load (the newest max, oldest first, only the channel's, not expired), answer, and the
 * prune (expired only; an entry put again since keeps, even against a prune read before). */
static void test_dedup_journal(void)
{
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 4 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct jn_buf v = JN_BUF_INIT;
    struct seen s;
    const int64_t now = 1763860000000000LL; /* after the golden record expired */
    const char *id1 = "01M82PAY3YE94KJ51TD9G02G51", *id2 = "01M82PAY3YE94KJ51TD9G02G52";

    rm_dir();
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j == NULL) {
        return;
    }
    /* The golden record is what put writes. */
    dedup_put(j, "in", "G", GOLDEN_ID, 1763850000000000LL, 1763850600000000LL, "ACK");
    CHECK_INT(jn_journal_get(j, JN_JDB_DEDUP, "in\0G", 4, &v), 0);
    CHECK(v.len == sizeof(dedup_v1) && memcmp(v.p, dedup_v1, v.len) == 0);
    CHECK_INT(jn_journal_get(j, JN_JDB_DEDUP, "in\0H", 4, &v), JN_ENOENT);

    dedup_put(j, "in", "c", id1, now - 3000, now + 3000, "ack-c");
    dedup_put(j, "in", "a", id1, now - 5000, now + 1000, "ack-a");
    dedup_put(j, "in", "b", id1, now - 4000, now + 2000, NULL);
    dedup_put(j, "in", "x", id1, now - 9000, now - 1, "expired");
    dedup_put(j, "in2", "a", id1, now - 1000, now + 9000, "other channel");
    memset(&s, 0, sizeof(s));
    CHECK_INT(jn_store_dedup_load(j, "in", now, 10, seen_visit, &s), 0);
    CHECK_INT(s.n, 3);
    CHECK_STR(s.keys[0], "a");
    CHECK_STR(s.keys[1], "b");
    CHECK_STR(s.keys[2], "c");
    CHECK_STR(s.answers[0], "ack-a");
    CHECK_INT(s.answered[1], 0);
    memset(&s, 0, sizeof(s));
    CHECK_INT(jn_store_dedup_load(j, "in", now, 2, seen_visit, &s), 0);
    CHECK_INT(s.n, 2);
    CHECK_STR(s.keys[0], "b");
    CHECK_STR(s.keys[1], "c");

    /* The answer of b comes: only for the message it was written with. */
    {
        struct jn_jtxn *t = jn_jtxn_new();
        CHECK_INT(jn_store_dedup_answer(j, t, "in", "b", 1, id2, "no", 2), JN_ENOENT);
        CHECK_INT(jn_store_dedup_answer(j, t, "in", "z", 1, id1, "no", 2), JN_ENOENT);
        CHECK_INT(jn_store_dedup_answer(j, t, "in", "b", 1, id1, "ack-b", 5), 0);
        CHECK_INT(jn_journal_write_now(j, t), 0);
    }
    memset(&s, 0, sizeof(s));
    CHECK_INT(jn_store_dedup_load(j, "in", now, 10, seen_visit, &s), 0);
    CHECK_INT(s.answered[1], 1);
    CHECK_STR(s.answers[1], "ack-b");

    /* The prune at now + 1500: "G" (long expired), "x" and "a" go, with their index entries. */
    {
        struct jn_jtxn *t = jn_jtxn_new();
        CHECK_INT(jn_store_dedup_prune(j, t, now + 1500, 100), 3);
        CHECK_INT(jn_journal_write_now(j, t), 0);
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP), 3);
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP_EXP), 3);
        t = jn_jtxn_new();
        CHECK_INT(jn_store_dedup_prune(j, t, now + 1500, 100), 0);
        jn_jtxn_free(t);
    }
    /* "b" put again (a new ingest after its window) between the prune's read and its commit:
     * the prune deletes the old index entry, never the new entry. */
    {
        struct jn_jtxn *t = jn_jtxn_new();
        CHECK_INT(jn_store_dedup_prune(j, t, now + 2500, 100), 1);
        dedup_put(j, "in", "b", id2, now + 2400, now + 9000, "ack-b2");
        CHECK_INT(jn_journal_write_now(j, t), 0);
        CHECK_INT(jn_journal_get(j, JN_JDB_DEDUP, "in\0b", 4, &v), 0);
        memset(&s, 0, sizeof(s));
        CHECK_INT(jn_store_dedup_load(j, "in", now + 2500, 10, seen_visit, &s), 0);
        CHECK_INT(s.n, 2);
        CHECK_STR(s.keys[0], "c");
        CHECK_STR(s.keys[1], "b");
        CHECK_STR(s.answers[1], "ack-b2");
        /* Its stale index entry is gone, the new one stays until now + 9000. */
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP_EXP), 3);
        t = jn_jtxn_new();
        CHECK_INT(jn_store_dedup_prune(j, t, now + 9000, 100), 3);
        CHECK_INT(jn_journal_write_now(j, t), 0);
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP), 0);
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP_EXP), 0);
    }
    /* A channel name too long for a key. */
    {
        char name[JN_STORE_DEST_MAX + 1];
        memset(name, 'n', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        CHECK_INT(jn_store_dedup_load(j, name, now, 10, seen_visit, &s), JN_EINVAL);
    }
    jn_buf_reset(&v);
    jn_journal_close(j);
}

/* del_if: deletes only what still holds the bytes it was read with. */
static void test_del_if(void)
{
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 4 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct jn_buf v = JN_BUF_INIT;
    struct jn_jtxn *t;

    rm_dir();
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j == NULL) {
        return;
    }
    t = jn_jtxn_new();
    jn_jtxn_put(t, JN_JDB_INBOX, "k", 1, "new", 3);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    t = jn_jtxn_new();
    CHECK_INT(jn_jtxn_del_if(t, JN_JDB_INBOX, "k", 1, "old", 3), 0);
    CHECK_INT(jn_jtxn_del_if(t, JN_JDB_INBOX, "k", 1, "ne", 2), 0);
    CHECK_INT(jn_jtxn_del_if(t, JN_JDB_INBOX, "none", 4, "x", 1), 0);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_journal_get(j, JN_JDB_INBOX, "k", 1, &v), 0);
    CHECK(v.len == 3 && memcmp(v.p, "new", 3) == 0);
    t = jn_jtxn_new();
    CHECK_INT(jn_jtxn_del_if(t, JN_JDB_INBOX, "k", 1, "new", 3), 0);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_journal_get(j, JN_JDB_INBOX, "k", 1, &v), JN_ENOENT);
    jn_buf_reset(&v);
    jn_journal_close(j);
}

/* A journal written before the dedup databases (format 1 with the first six only) opens: read
 * only, they read as empty; to write, they are created and the old records stay. */
static void test_journal_without_dedup(void)
{
    static const char *const old_dbs[] = {"meta", "inbox", "queue", "dlq", "log", "log_id"};
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 4 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct jn_buf v = JN_BUF_INIT;
    struct seen s;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi[6];
    int rc;

    rm_dir();
    CHECK_INT(mkdir(dir, 0755), 0);
    rc = mdb_env_create(&env);
    rc = rc ? rc : mdb_env_set_maxdbs(env, 8);
    rc = rc ? rc : mdb_env_open(env, dir, 0, 0644);
    rc = rc ? rc : mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < 6; i++) {
        rc = mdb_dbi_open(txn, old_dbs[i], MDB_CREATE, &dbi[i]);
    }
    if (rc == 0) {
        unsigned char ver[8];
        MDB_val k = {6, "format"}, val = {8, ver}, ik = {8, "\0\0\0\0\0\0\0\1"},
                iv = {3, "old"};
        jn_be64(ver, 1);
        rc = mdb_put(txn, dbi[0], &k, &val, 0);
        rc = rc ? rc : mdb_put(txn, dbi[1], &ik, &iv, 0);
        rc = rc ? rc : mdb_txn_commit(txn);
    }
    CHECK_INT(rc, 0);
    mdb_env_close(env);

    jc.readonly = 1;
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j != NULL) {
        memset(&s, 0, sizeof(s));
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP), 0);
        CHECK_INT(jn_journal_bytes(j, JN_JDB_DEDUP_EXP), 0);
        CHECK_INT(jn_store_dedup_load(j, "in", 0, 10, seen_visit, &s), 0);
        CHECK_INT(s.n, 0);
        CHECK_INT(jn_journal_get(j, JN_JDB_DEDUP, "in\0a", 4, &v), JN_ENOENT);
        CHECK_INT(jn_journal_count(j, JN_JDB_INBOX), 1);
        jn_journal_close(j);
        j = NULL;
    }
    jc.readonly = 0;
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j != NULL) {
        dedup_put(j, "in", "a", GOLDEN_ID, 1, 2, "ack");
        CHECK_INT(jn_journal_count(j, JN_JDB_DEDUP), 1);
        CHECK_INT(jn_journal_count(j, JN_JDB_INBOX), 1);
        jn_journal_close(j);
    }
    jn_buf_reset(&v);
}

/* The journal counts each destination's queue records and their bytes as it applies them,
 * keeps the counts across a reopen, and counts again when they do not add up (an older
 * journal). */
static void test_qcount(void)
{
    struct event_base *base = event_base_new();
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 8 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct jn_msg *m = sample();
    const struct jn_qcount *a, *b;
    uint64_t a_bytes;
    unsigned char key[JN_STORE_DEST_MAX + 9];
    size_t kl;

    rm_dir();
    CHECK_INT(jn_journal_open(&j, &jc, base, &err), 0);
    if (j == NULL) {
        jn_msg_unref(&m);
        event_base_free(base);
        return;
    }
    a = jn_journal_qcount(j, "a");
    b = jn_journal_qcount(j, "b");
    CHECK(a != NULL && b != NULL && jn_qcount_msgs(a) == 0 && jn_qcount_bytes(a) == 0);
    {
        /* Three for a, one for b; then a rewrite of a/2 with an error text (bigger) and a
         * delete of a/1 and of a key that is not there. */
        struct jn_jtxn *t = jn_jtxn_new();
        for (uint64_t s = 1; s <= 3; s++) {
            CHECK_INT(jn_store_queue_put(t, "a", s, m, "r", 1, NULL), 0);
        }
        CHECK_INT(jn_store_queue_put(t, "b", 4, m, "r", 1, NULL), 0);
        jn_journal_submit(j, t, 0, on_done, NULL);
        done_calls = 0;
        run_until(base, 1);
        CHECK_INT(done_rc, 0);
    }
    CHECK(jn_qcount_msgs(a) == 3 && jn_qcount_msgs(b) == 1);
    CHECK(jn_qcount_bytes(a) == 3 * jn_qcount_bytes(b) && jn_qcount_bytes(b) > m->len);
    a_bytes = jn_qcount_bytes(a);
    {
        struct jn_jtxn *t = jn_jtxn_new();
        CHECK_INT(jn_store_queue_put(t, "a", 2, m, "r", 2, "HTTP 503 Service Unavailable"), 0);
        CHECK_INT(jn_store_queue_del(t, "a", 1), 0);
        CHECK_INT(jn_store_queue_del(t, "a", 99), 0);
        jn_journal_submit(j, t, 0, on_done, NULL);
        done_calls = 0;
        run_until(base, 1);
        CHECK_INT(done_rc, 0);
    }
    CHECK(jn_qcount_msgs(a) == 2);
    /* One record's bytes gone, the rewrite's error text added (28 bytes and its header). */
    CHECK(jn_qcount_bytes(a) > a_bytes - jn_qcount_bytes(b) &&
          jn_qcount_bytes(a) < a_bytes - jn_qcount_bytes(b) + 40);
    a_bytes = jn_qcount_bytes(a);
    jn_journal_close(j);

    /* Kept across a reopen (no recount needed). */
    CHECK_INT(jn_journal_open(&j, &jc, base, &err), 0);
    if (j == NULL) {
        jn_msg_unref(&m);
        event_base_free(base);
        return;
    }
    a = jn_journal_qcount(j, "a");
    CHECK(jn_qcount_msgs(a) == 2 && jn_qcount_bytes(a) == a_bytes);
    CHECK(jn_qcount_msgs(jn_journal_qcount(j, "b")) == 1);
    {
        /* As an older build leaves it: the counts gone (a put to qcount directly). */
        struct jn_jtxn *t = jn_jtxn_new();
        CHECK_INT(jn_jtxn_del(t, JN_JDB_QCOUNT, "a", 1), 0);
        CHECK_INT(jn_journal_write_now(j, t), 0);
    }
    jn_journal_close(j);
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j != NULL) {
        CHECK(jn_qcount_msgs(jn_journal_qcount(j, "a")) == 2);
        CHECK(jn_qcount_bytes(jn_journal_qcount(j, "a")) == a_bytes);
        CHECK(jn_qcount_msgs(jn_journal_qcount(j, "b")) == 1);
        /* Emptied: the count's record goes. */
        struct jn_jtxn *t = jn_jtxn_new();
        kl = jn_store_queue_key(key, "b", 4);
        CHECK(kl > 0);
        CHECK_INT(jn_jtxn_del(t, JN_JDB_QUEUE, key, kl), 0);
        CHECK_INT(jn_journal_write_now(j, t), 0);
        CHECK(jn_qcount_msgs(jn_journal_qcount(j, "b")) == 0);
        CHECK(jn_qcount_bytes(jn_journal_qcount(j, "b")) == 0);
        CHECK_INT(jn_journal_count(j, JN_JDB_QCOUNT), 1);
        jn_journal_close(j);
    }
    jn_msg_unref(&m);
    event_base_free(base);
}

/* Kept messages: put (all / headers), get by id (the latest), decode, and the prune by age
 * and by count, which takes the kept_id entry with it unless a later put moved it. */
static void test_kept(void)
{
    struct jn_journal *j = NULL;
    struct jn_journal_conf jc = {.dir = dir, .map_size = 4 << 20, .high_water_pct = 90,
                                 .warn_pct = 80};
    struct jn_err err;
    struct jn_keptrec k;
    struct jn_msg *a = sample(), *b = sample();
    struct jn_buf env = JN_BUF_INIT, outs = JN_BUF_INIT, benv = JN_BUF_INIT;
    struct jn_jtxn *t;

    rm_dir();
    CHECK_INT(jn_journal_open(&j, &jc, NULL, &err), 0);
    if (j == NULL) {
        return;
    }
    strcpy(b->id, "01M82PAY3YE94KJ51TD9G02G5N");
    b->recv_us = a->recv_us + 1000;
    CHECK_INT(jn_msg_encode(a, &env), 0);
    /* one output of r2's services: b's envelope */
    CHECK_INT(jn_mp_array(&outs, 3), 0);
    CHECK_INT(jn_mp_cstr(&outs, "r2"), 0);
    CHECK_INT(jn_mp_cstr(&outs, "svc"), 0);
    CHECK_INT(jn_msg_encode(b, &benv), 0);
    CHECK_INT(jn_mp_bin(&outs, benv.p, benv.len), 0);
    t = jn_jtxn_new();
    CHECK_INT(jn_store_kept_put(t, 1, a, &env, JN_KEEP_ALL, "r1,r2", &outs, 1), 0);
    CHECK_INT(jn_store_kept_put(t, 2, b, NULL, JN_KEEP_HEADERS, "", &outs, 1), 0);
    CHECK_INT(jn_store_kept_put(t, 3, b, NULL, JN_KEEP_NONE, "", NULL, 0), JN_EINVAL);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_store_kept_get(j, a->id, &k, &err), 0);
    CHECK(k.keep == JN_KEEP_ALL && k.bytes == 7 && k.msg->len == 7 &&
          memcmp(k.msg->payload, "payload", 7) == 0 && strcmp(k.routes, "r1,r2") == 0 &&
          k.time_us == a->recv_us && strcmp(jn_msg_header_get(k.msg, "k"), "v") == 0);
    CHECK(k.nouts == 1 && strcmp(k.outs[0].route, "r2") == 0 &&
          strcmp(k.outs[0].service, "svc") == 0 &&
          strcmp(k.outs[0].msg->id, b->id) == 0 && k.outs[0].msg->len == 7);
    jn_keptrec_clear(&k);
    CHECK_INT(jn_store_kept_get(j, b->id, &k, &err), 0);
    CHECK(k.keep == JN_KEEP_HEADERS && k.bytes == 7 && k.msg->len == 0 &&
          strcmp(jn_msg_header_get(k.msg, "k"), "v") == 0 && k.nouts == 0);
    jn_keptrec_clear(&k);
    CHECK_INT(jn_store_kept_get(j, "01M82PAY3YE94KJ51TD9G02G5Z", &k, &err), JN_ENOENT);
    CHECK_INT(jn_store_kept_decode("\x93\x01", 2, &k, &err), JN_EPROTO);
    /* a routed again (seq 4, later time): the index moves to the new record */
    a->recv_us = b->recv_us + 1000;
    t = jn_jtxn_new();
    CHECK_INT(jn_store_kept_put(t, 4, a, NULL, JN_KEEP_ALL, "r3", NULL, 0), 0);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_journal_count(j, JN_JDB_KEPT), 3);
    /* by age: the first record only (older than b); a's index entry stays (it names seq 4) */
    t = jn_jtxn_new();
    CHECK_INT(jn_store_kept_prune(j, t, b->recv_us, 0, 100), 1);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_store_kept_get(j, a->id, &k, &err), 0);
    CHECK(k.msg != NULL && strcmp(k.routes, "r3") == 0);
    jn_keptrec_clear(&k);
    /* by count: one more of the oldest (b's), its index entry with it; at most max */
    t = jn_jtxn_new();
    CHECK_INT(jn_store_kept_prune(j, t, 0, 1, 100), 1);
    CHECK_INT(jn_journal_write_now(j, t), 0);
    CHECK_INT(jn_store_kept_get(j, b->id, &k, &err), JN_ENOENT);
    CHECK_INT(jn_journal_count(j, JN_JDB_KEPTID), 1);
    t = jn_jtxn_new();
    CHECK_INT(jn_store_kept_prune(j, t, INT64_MAX, 0, 0), 0);
    jn_jtxn_free(t);
    CHECK_INT(jn_journal_count(j, JN_JDB_KEPT), 1);
    jn_buf_reset(&env);
    jn_buf_reset(&outs);
    jn_buf_reset(&benv);
    jn_msg_unref(&a);
    jn_msg_unref(&b);
    jn_journal_close(j);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/jn-ut-store-%ld", (long)getpid());
    rm_dir();
    test_queue_record();
    test_journal();
    test_journal_order();
    test_log_record();
    test_empty_strings();
    test_alloc_failures();
    test_dedup_record();
    test_dedup_journal();
    test_del_if();
    test_journal_without_dedup();
    test_qcount();
    test_kept();
    rm_dir();
    TEST_MAIN_END();
}
