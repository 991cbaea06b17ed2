/*
 * Unit tests of the worker thread and the hand-off (jn_worker): run off the loop thread, done
 * on it, post order kept through batches, posts from other threads, and both ways of stopping
 * with jobs still pending.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "jn_err.h"
#include "jn_mem.h"
#include "jn_test.h"
#include "jn_time.h"
#include "jn_worker.h"

struct tjob {
    int n;
    int result;           /* set by run */
    int ran_off_loop;     /* set by run */
    struct jn_job job;    /* not first, so JN_JOB_OF is exercised */
};

struct tstate {
    pthread_t loop;
    /* run side (worker thread) */
    int runs, batches, run_order_bad, last_run, biggest;
    /* done side (loop) */
    int dones, done_order_bad, last_done, done_off_loop, done_unrun, result_bad;
    /* a gate that holds run in the job numbered gate_n until opened */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int gate_n, gate_open, gate_reached;
    /* done posts one more job when it sees job number repost_at */
    struct jn_worker *w;
    int repost_at;
    int expect_run;       /* threaded: done must only see jobs that ran */
    struct tjob *reposted;
};

static struct tjob *tjob_new(int n)
{
    struct tjob *j = calloc(1, sizeof(*j));

    j->n = n;
    return j;
}

static void t_run(void *arg, struct jn_job *batch)
{
    struct tstate *s = arg;

    int size = 0;

    s->batches++;
    for (struct jn_job *p = batch; p != NULL; p = p->next) {
        size++;
    }
    s->biggest = size > s->biggest ? size : s->biggest;
    for (struct jn_job *p = batch; p != NULL; p = p->next) {
        struct tjob *j = JN_JOB_OF(p, struct tjob, job);
        pthread_mutex_lock(&s->mu);
        if (j->n == s->gate_n) {
            s->gate_reached = 1;
            pthread_cond_broadcast(&s->cv);
            while (!s->gate_open) {
                pthread_cond_wait(&s->cv, &s->mu);
            }
        }
        pthread_mutex_unlock(&s->mu);
        j->ran_off_loop = !pthread_equal(pthread_self(), s->loop);
        j->result = j->n * 3;
        s->run_order_bad += j->n <= s->last_run;
        s->last_run = j->n;
        s->runs++;
    }
}

static void t_done(void *arg, struct jn_job *p)
{
    struct tstate *s = arg;
    struct tjob *j = JN_JOB_OF(p, struct tjob, job);

    s->done_off_loop += !pthread_equal(pthread_self(), s->loop);
    s->done_order_bad += j->n <= s->last_done;
    s->last_done = j->n;
    s->done_unrun += s->expect_run && !j->ran_off_loop;
    s->result_bad += j->result != j->n * 3;
    s->dones++;
    if (j->n == s->repost_at && s->w != NULL) {
        s->reposted = tjob_new(1000000);
        CHECK_INT(jn_worker_post(s->w, &s->reposted->job), 0);
    }
    free(j);
}

static void tstate_init(struct tstate *s)
{
    memset(s, 0, sizeof(*s));
    s->loop = pthread_self();
    s->gate_n = -1;
    s->repost_at = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void tstate_destroy(struct tstate *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Runs the loop until *count reaches want or 10 s pass. */
static void loop_until(struct event_base *base, const int *count, int want)
{
    int64_t end = jn_mono_ms() + 10000;
    struct timespec ts = {0, 1000000};

    while (*count < want && jn_mono_ms() < end) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (*count < want) {
            nanosleep(&ts, NULL);
        }
    }
}

static void test_order_and_threads(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;

    tstate_init(&s);
    s.expect_run = 1;
    w = jn_worker_new(base, "jn-ut-worker", t_run, t_done, &s);
    CHECK(w != NULL);
    for (int i = 1; i <= 2000; i++) {
        struct tjob *j = tjob_new(i);
        CHECK_INT(jn_worker_post(w, &j->job), 0);
    }
    loop_until(base, &s.dones, 2000);
    CHECK_INT(s.runs, 2000);
    CHECK_INT(s.dones, 2000);
    CHECK(s.batches >= 1 && s.batches <= 2000);
    CHECK_INT(s.run_order_bad, 0);
    CHECK_INT(s.done_order_bad, 0);
    CHECK_INT(s.done_off_loop, 0);
    CHECK_INT(s.result_bad, 0);
    CHECK_INT(s.done_unrun, 0);
    CHECK(jn_worker_stop(w, 0) == NULL);
    CHECK(jn_worker_stop(w, 0) == NULL); /* again: nothing */
    jn_worker_free(w);
    tstate_destroy(&s);
}

/* Opens the gate after 200 ms: by then the loop thread is inside jn_worker_stop(). */
/* At most 3 jobs per batch: with 10 pending behind a gate in job 1, the batches are
 * [1] [2 3 4] [5 6 7] [8 9 10], in order, each done after its batch. */
static void test_batch_max(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;

    tstate_init(&s);
    s.expect_run = 1;
    s.gate_n = 1;
    w = jn_worker_new(base, "jn-ut-batch", t_run, t_done, &s);
    CHECK(w != NULL);
    jn_worker_set_batch_max(w, 3);
    for (int i = 1; i <= 10; i++) {
        struct tjob *j = tjob_new(i);
        CHECK_INT(jn_worker_post(w, &j->job), 0);
    }
    pthread_mutex_lock(&s.mu);
    while (!s.gate_reached) {
        pthread_cond_wait(&s.cv, &s.mu);
    }
    s.gate_open = 1;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    loop_until(base, &s.dones, 10);
    CHECK_INT(s.runs, 10);
    CHECK_INT(s.dones, 10);
    CHECK_INT(s.batches, 4);
    CHECK_INT(s.biggest, 3);
    CHECK_INT(s.run_order_bad, 0);
    CHECK_INT(s.done_order_bad, 0);
    CHECK_INT(s.result_bad, 0);
    CHECK(jn_worker_stop(w, 0) == NULL);
    jn_worker_free(w);
    tstate_destroy(&s);
}

static void *open_gate_later(void *arg)
{
    struct tstate *s = arg;
    struct timespec ts = {0, 200 * 1000000};

    nanosleep(&ts, NULL);
    pthread_mutex_lock(&s->mu);
    s->gate_open = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Without drain: the batch being run finishes and gets done; what was pending comes back. */
static void test_stop_gives_back(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;
    struct jn_job *rest;
    struct tjob *late = tjob_new(99);
    pthread_t opener;
    int n = 0, order_bad = 0, ran = 0;

    tstate_init(&s);
    s.gate_n = 1;
    w = jn_worker_new(base, NULL, t_run, t_done, &s);
    CHECK(w != NULL);
    for (int i = 1; i <= 11; i++) {
        struct tjob *j = tjob_new(i);
        CHECK_INT(jn_worker_post(w, &j->job), 0);
        if (i == 1) {
            /* Job 1 is a batch of its own, held in run: 2..11 stay pending. */
            pthread_mutex_lock(&s.mu);
            while (!s.gate_reached) {
                pthread_cond_wait(&s.cv, &s.mu);
            }
            pthread_mutex_unlock(&s.mu);
        }
    }
    CHECK_INT(pthread_create(&opener, NULL, open_gate_later, &s), 0);
    rest = jn_worker_stop(w, 0);
    pthread_join(opener, NULL);
    /* Job 1 was run and is done (called from stop, on this thread); 2..11 come back unrun. */
    CHECK_INT(s.runs, 1);
    CHECK_INT(s.dones, 1);
    CHECK_INT(s.last_done, 1);
    CHECK_INT(s.done_off_loop, 0);
    while (rest != NULL) {
        struct tjob *j = JN_JOB_OF(rest, struct tjob, job);
        rest = rest->next;
        n++;
        order_bad += j->n != n + 1;
        ran += j->ran_off_loop;
        free(j);
    }
    CHECK_INT(n, 10);
    CHECK_INT(order_bad, 0);
    CHECK_INT(ran, 0);
    /* Stopped: a post is refused and the job stays the caller's. */
    CHECK_INT(jn_worker_post(w, &late->job), JN_ESTOPPED);
    free(late);
    jn_worker_free(w);
    tstate_destroy(&s);
}

/* With drain: everything pending is run and done before stop returns; a job that done posts
 * during the stop comes back. */
static void test_stop_drains(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;
    struct jn_job *rest;

    tstate_init(&s);
    s.expect_run = 1;
    w = jn_worker_new(base, "jn-ut-drain", t_run, t_done, &s);
    CHECK(w != NULL);
    s.w = w;
    s.repost_at = 300;
    for (int i = 1; i <= 500; i++) {
        struct tjob *j = tjob_new(i);
        CHECK_INT(jn_worker_post(w, &j->job), 0);
    }
    rest = jn_worker_stop(w, JN_WORKER_DRAIN); /* the loop has not run: all done is here */
    CHECK_INT(s.runs, 500);
    CHECK_INT(s.dones, 500);
    CHECK_INT(s.done_order_bad, 0);
    CHECK_INT(s.run_order_bad, 0);
    CHECK_INT(s.done_off_loop, 0);
    CHECK_INT(s.result_bad, 0);
    CHECK_INT(s.done_unrun, 0);
    CHECK(s.reposted != NULL);
    CHECK(rest == (s.reposted != NULL ? &s.reposted->job : NULL));
    if (rest != NULL) {
        CHECK(rest->next == NULL);
        CHECK_INT(JN_JOB_OF(rest, struct tjob, job)->ran_off_loop, 0);
    }
    free(s.reposted);
    /* The event the thread made active may still be queued: the loop runs it harmlessly. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(s.dones, 500);
    jn_worker_free(w);
    tstate_destroy(&s);
}

/* A hand-off: no thread; posts from another thread reach done on the loop, in order. */
struct poster {
    struct jn_worker *w;
    int from, to;
    int refused; /* counted here, checked by the loop thread (CHECK is not thread-safe) */
};

static void *post_range(void *arg)
{
    struct poster *p = arg;

    for (int i = p->from; i <= p->to; i++) {
        struct tjob *j = tjob_new(i);
        j->result = i * 3;
        if (jn_worker_post(p->w, &j->job) != 0) {
            p->refused++;
            free(j);
        }
    }
    return NULL;
}

static void test_handoff(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;
    struct jn_job *rest;
    struct poster p;
    pthread_t t;
    int n = 0, order_bad = 0;

    tstate_init(&s);
    w = jn_worker_new(base, NULL, NULL, t_done, &s);
    CHECK(w != NULL);
    p.w = w;
    p.from = 1;
    p.to = 1000;
    p.refused = 0;
    CHECK_INT(pthread_create(&t, NULL, post_range, &p), 0);
    loop_until(base, &s.dones, 1000);
    pthread_join(t, NULL);
    CHECK_INT(p.refused, 0);
    CHECK_INT(s.dones, 1000);
    CHECK_INT(s.runs, 0);
    CHECK_INT(s.done_order_bad, 0);
    CHECK_INT(s.done_off_loop, 0);
    CHECK_INT(s.result_bad, 0);
    /* Queued and not yet handled when it stops (without drain): given back, done not called. */
    p.from = 1001;
    p.to = 1005;
    post_range(&p);
    rest = jn_worker_stop(w, 0);
    CHECK_INT(s.dones, 1000);
    while (rest != NULL) {
        struct tjob *j = JN_JOB_OF(rest, struct tjob, job);
        rest = rest->next;
        n++;
        order_bad += j->n != 1000 + n;
        free(j);
    }
    CHECK_INT(n, 5);
    CHECK_INT(order_bad, 0);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the queued wake-up finds nothing */
    CHECK_INT(s.dones, 1000);
    jn_worker_free(w);
    tstate_destroy(&s);

    /* With drain, a hand-off's queue goes to done at stop. */
    tstate_init(&s);
    w = jn_worker_new(base, NULL, NULL, t_done, &s);
    p.w = w;
    p.from = 1;
    p.to = 7;
    post_range(&p);
    CHECK(jn_worker_stop(w, JN_WORKER_DRAIN) == NULL);
    CHECK_INT(s.dones, 7);
    CHECK_INT(s.done_order_bad, 0);
    jn_worker_free(w);
    tstate_destroy(&s);
}

/* Freeing a running worker stops it with drain: nothing is lost, nothing leaks. */
static void test_free_running(struct event_base *base)
{
    struct tstate s;
    struct jn_worker *w;

    tstate_init(&s);
    w = jn_worker_new(base, NULL, t_run, t_done, &s);
    CHECK(w != NULL);
    for (int i = 1; i <= 50; i++) {
        struct tjob *j = tjob_new(i);
        CHECK_INT(jn_worker_post(w, &j->job), 0);
    }
    jn_worker_free(w);
    CHECK_INT(s.runs, 50);
    CHECK_INT(s.dones, 50);
    tstate_destroy(&s);
}

/* Several threads (jn_worker_set_threads): jobs that wait run at the same time, every job is
 * run and done once, done on the loop; a stop joins every thread. */
struct pjob {
    struct jn_job job;
    int ran;
};

struct pstate {
    pthread_mutex_t mu;
    int now, most, dones, unrun;
};

static void p_run(void *arg, struct jn_job *batch)
{
    struct pstate *s = arg;
    struct timespec ts = {0, 20000000};

    for (struct jn_job *p = batch; p != NULL; p = p->next) {
        pthread_mutex_lock(&s->mu);
        s->now++;
        s->most = s->now > s->most ? s->now : s->most;
        pthread_mutex_unlock(&s->mu);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->mu);
        s->now--;
        pthread_mutex_unlock(&s->mu);
        JN_JOB_OF(p, struct pjob, job)->ran = 1;
    }
}

static void p_done(void *arg, struct jn_job *p)
{
    struct pstate *s = arg;
    struct pjob *j = JN_JOB_OF(p, struct pjob, job);

    s->unrun += !j->ran;
    s->dones++;
    free(j);
}

static void test_threads(struct event_base *base)
{
    struct pstate s = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    struct jn_worker *w = jn_worker_new(base, "jn-ut-pool", p_run, p_done, &s);

    CHECK(w != NULL);
    jn_worker_set_batch_max(w, 1);
    CHECK_INT(jn_worker_set_threads(w, 4), 0);
    CHECK_INT(jn_worker_set_threads(w, 2), 0); /* never fewer: nothing changes */
    for (int i = 0; i < 40; i++) {
        struct pjob *j = calloc(1, sizeof(*j));
        CHECK_INT(jn_worker_post(w, &j->job), 0);
    }
    loop_until(base, &s.dones, 40);
    CHECK_INT(s.dones, 40);
    CHECK_INT(s.unrun, 0);
    CHECK(s.most >= 2 && s.most <= 4);
    CHECK(jn_worker_stop(w, 0) == NULL);
    jn_worker_free(w);
    pthread_mutex_destroy(&s.mu);
}

int main(void)
{
    struct event_base *base;

    CHECK_INT(evthread_use_pthreads(), 0);
    base = event_base_new();
    CHECK(base != NULL);
    jn_worker_free(NULL);
    test_order_and_threads(base);
    test_batch_max(base);
    test_stop_gives_back(base);
    test_stop_drains(base);
    test_handoff(base);
    test_free_running(base);
    test_threads(base);
    event_base_free(base);
    TEST_MAIN_END();
}
