/*
 * jn_worker: a worker thread (or several, jn_worker_set_threads) with its pending and finished
 * lists, and the hand-off back to the loop (see jn_worker.h).
 *
 * One mutex guards both lists and the state; the threads sleep on one condition variable.
 * A thread takes the whole pending list (or batch_max jobs of it) as a batch, runs it
 * unlocked, splices it onto the finished list and makes the done event active. The loop's
 * event callback takes the whole finished list and calls done per job, unlocked. So each side
 * holds the lock only for a splice, and the threads never wait on each other's work.
 */
#include "jn_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "jn_err.h"
#include "jn_log.h"
#include "jn_mem.h"

enum { W_RUNNING = 0, W_STOPPING = 1, W_STOPPED = 2 };

struct jn_worker {
    jn_worker_run_fn run;
    jn_worker_done_fn done;
    void *arg;
    struct event *done_ev;
    pthread_t *threads;                      /* nthreads of them, loop only */
    size_t nthreads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct jn_job *pending, *pending_tail;   /* under lock */
    struct jn_job *finished, *finished_tail; /* under lock */
    int state;                               /* W_*, under lock */
    int drain;                               /* under lock: JN_WORKER_DRAIN was asked */
    size_t batch_max;                        /* jobs per batch, 0: all pending; under lock */
    char name[16];                           /* the threads' name */
};

/* Appends the list first..last to the list at head, tail. */
static void splice(struct jn_job **head, struct jn_job **tail, struct jn_job *first,
                   struct jn_job *last)
{
    if (*tail != NULL) {
        (*tail)->next = first;
    } else {
        *head = first;
    }
    *tail = last;
}

static void *worker_main(void *arg)
{
    struct jn_worker *w = arg;

    for (;;) {
        struct jn_job *batch, *last;
        pthread_mutex_lock(&w->lock);
        while (w->pending == NULL && w->state == W_RUNNING) {
            pthread_cond_wait(&w->cond, &w->lock);
        }
        /* Stopping: with drain, until nothing is pending; without, after this batch (jobs
         * posted since are jn_worker_stop()'s to give back). */
        if (w->pending == NULL || (w->state != W_RUNNING && !w->drain)) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        batch = w->pending;
        last = w->pending_tail;
        if (w->batch_max != 0) {
            struct jn_job *j = batch;
            for (size_t n = 1; n < w->batch_max && j->next != NULL; n++) {
                j = j->next;
            }
            last = j;
        }
        w->pending = last->next;
        if (w->pending == NULL) {
            w->pending_tail = NULL;
        }
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);

        w->run(w->arg, batch);

        pthread_mutex_lock(&w->lock);
        splice(&w->finished, &w->finished_tail, batch, last);
        pthread_mutex_unlock(&w->lock);
        event_active(w->done_ev, EV_READ, 0);
    }
    return NULL;
}

/* Loop: done for every finished job (for a hand-off: every queued one). */
static void run_finished(struct jn_worker *w)
{
    struct jn_job *list;

    pthread_mutex_lock(&w->lock);
    list = w->finished;
    w->finished = w->finished_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (list != NULL) {
        struct jn_job *next = list->next;
        w->done(w->arg, list);
        list = next;
    }
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_finished(arg);
}

struct jn_worker *jn_worker_new(struct event_base *base, const char *name, jn_worker_run_fn run,
                                jn_worker_done_fn done, void *arg)
{
    struct jn_worker *w = jn_calloc(1, sizeof(*w));
    int rc;

    if (w == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    w->run = run;
    w->done = done;
    w->arg = arg;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->done_ev = event_new(base, -1, 0, done_cb, w);
    if (w->done_ev == NULL) {
        jn_worker_free(w);
        errno = ENOMEM;
        return NULL;
    }
    snprintf(w->name, sizeof(w->name), "%s", name != NULL ? name : "");
    if (run != NULL && (rc = jn_worker_set_threads(w, 1)) != 0) {
        jn_worker_free(w);
        errno = rc;
        return NULL;
    }
    return w;
}

int jn_worker_set_threads(struct jn_worker *w, size_t n)
{
    pthread_t *grown;

    if (w->run == NULL || n <= w->nthreads) {
        return 0;
    }
    grown = jn_realloc(w->threads, n * sizeof(*grown));
    if (grown == NULL) {
        return ENOMEM;
    }
    w->threads = grown;
    while (w->nthreads < n) {
        int rc = pthread_create(&w->threads[w->nthreads], NULL, worker_main, w);
        if (rc != 0) {
            return rc;
        }
        if (w->name[0] != '\0') {
            (void)pthread_setname_np(w->threads[w->nthreads], w->name);
        }
        w->nthreads++;
    }
    return 0;
}

void jn_worker_set_batch_max(struct jn_worker *w, size_t n)
{
    pthread_mutex_lock(&w->lock);
    w->batch_max = n;
    pthread_mutex_unlock(&w->lock);
}

int jn_worker_post(struct jn_worker *w, struct jn_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->state == W_STOPPED) {
        pthread_mutex_unlock(&w->lock);
        return JN_ESTOPPED;
    }
    if (w->run == NULL && w->state == W_RUNNING) {
        splice(&w->finished, &w->finished_tail, job, job);
        /* Under the lock, so jn_worker_stop() (which takes it) cannot pass a post that is
         * still to wake the loop, and free the event under it. libevent runs callbacks
         * without its own lock held, so done_cb taking ours cannot deadlock with this. */
        event_active(w->done_ev, EV_READ, 0);
    } else {
        /* Stopping: kept for jn_worker_stop()'s answer (or its drain). */
        splice(&w->pending, &w->pending_tail, job, job);
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

struct jn_job *jn_worker_stop(struct jn_worker *w, unsigned flags)
{
    struct jn_job *rest = NULL, *rest_tail = NULL;

    pthread_mutex_lock(&w->lock);
    if (w->state == W_STOPPED) {
        pthread_mutex_unlock(&w->lock);
        return NULL;
    }
    w->state = W_STOPPING;
    w->drain = (flags & JN_WORKER_DRAIN) != 0;
    if (!w->drain) {
        /* Not started: taken back. For a hand-off, "started" is done having it. */
        struct jn_job **head = w->run != NULL ? &w->pending : &w->finished;
        struct jn_job **tail = w->run != NULL ? &w->pending_tail : &w->finished_tail;
        rest = *head;
        rest_tail = *tail;
        *head = *tail = NULL;
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < w->nthreads; i++) {
        pthread_join(w->threads[i], NULL);
    }
    w->nthreads = 0;
    run_finished(w);
    pthread_mutex_lock(&w->lock);
    w->state = W_STOPPED;
    if (w->pending != NULL) {
        splice(&rest, &rest_tail, w->pending, w->pending_tail);
        w->pending = w->pending_tail = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    return rest;
}

void jn_worker_free(struct jn_worker *w)
{
    if (w == NULL) {
        return;
    }
    if (jn_worker_stop(w, JN_WORKER_DRAIN) != NULL) {
        jn_log(JN_LOG_ERROR, "worker freed while running: jobs posted during its stop are "
               "left unfreed");
    }
    if (w->done_ev != NULL) {
        event_free(w->done_ev);
    }
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    jn_free(w->threads);
    jn_free(w);
}
