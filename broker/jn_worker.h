/*
 * jn_worker: one thread that does blocking work for the loop, and the hand-off back to it.
 *
 * The loop must never block, yet some work does: an LMDB commit with its fsync (the journal's
 * group commit), writing and syncing files (the file channel), and libraries that call us on
 * threads of their own (paho). A worker is the one place that pattern lives: a mutex, a
 * condition variable, a list of pending jobs, a list of finished ones and an event made active
 * on the loop (libevent must be thread-enabled: evthread_use_pthreads() before the base is
 * made, as the broker does).
 *
 *     loop thread                     worker thread
 *     jn_worker_post(job) ──pending──> run(arg, batch)     every pending job at once
 *     done(arg, job) <─────finished─── event_active()      one wake-up per batch
 *
 * Jobs are intrusive: embed a struct jn_job in your own struct and get back to it with
 * JN_JOB_OF(). A post costs no allocation, and the worker never frees a job: it only moves it
 * between its lists. Who owns a job: the caller until jn_worker_post() returns 0, the worker
 * from then until it hands the job to done (or returns it from jn_worker_stop()), the caller
 * again after that.
 *
 * Batches are what the users want: the journal applies a batch in one LMDB transaction and
 * the file channel syncs a batch of files with one syncfs(). run sees every job posted since
 * the previous batch began (or the first jn_worker_set_batch_max() of them), in post order;
 * done sees each job once, in the same order.
 *
 * A worker made without run is a hand-off only: no thread, jn_worker_post() from any thread
 * queues the job straight for done on the loop (paho's callbacks use it that way).
 *
 * The model is the journal writer this replaced, which has Redis's bio.c shape (a job list
 * under a mutex, a condition variable, one thread per kind of work), with libevent's
 * event_active() from another thread as the way back; the contracts are written LMDB's way:
 * calling thread, ownership, every return.
 */
#ifndef JN_WORKER_H
#define JN_WORKER_H

#include <stddef.h>

struct event_base;

/* Embed in a job. next links the batch handed to run: read it, never write it. */
struct jn_job {
    struct jn_job *next;
};

/* The struct of type `type` whose member `member` is the struct jn_job at p. */
#define JN_JOB_OF(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/*
 * Worker thread. batch: the jobs posted since the previous batch began, linked by next, in
 * post order, NULL-terminated; never NULL or empty. Borrowed until run returns: run may change
 * the jobs' own fields (results) but not the links, and must not free a job or call any
 * jn_worker_* function on this worker. Nothing else runs on the thread.
 */
typedef void (*jn_worker_run_fn)(void *arg, struct jn_job *batch);

/*
 * Loop thread (the thread that runs base), once per job, in post order, after run has run
 * over its batch. Takes ownership of job (free it or keep it). May call jn_worker_post() on
 * the same worker (the job goes into a later batch), but not jn_worker_stop() or
 * jn_worker_free().
 */
typedef void (*jn_worker_done_fn)(void *arg, struct jn_job *job);

enum {
    /* jn_worker_stop: run every job still pending before the thread ends (the journal: what
     * was submitted is committed). Without it, jobs not yet in a batch are given back. */
    JN_WORKER_DRAIN = 1,
};

struct jn_worker;

/*
 * Loop thread (or before the loop runs). Makes the done event on base and, if run is not
 * NULL, starts the thread (its signals are those of the caller). run may be NULL: a hand-off
 * only (see above). done must not be NULL. arg is passed to both, borrowed: it must outlive the
 * worker. name (borrowed, copied) names the thread for ps/top, at most 15 characters are kept.
 * Returns the worker, or NULL when out of memory or when the thread could not be started
 * (errno says why); nothing is left behind then.
 */
struct jn_worker *jn_worker_new(struct event_base *base, const char *name, jn_worker_run_fn run,
                                jn_worker_done_fn done, void *arg);

/*
 * Loop thread. At most n jobs per batch (0, the default: every pending job). For work whose
 * jobs take long each (the routing thread's services): done then sees each job soon after it
 * ran instead of after the whole batch, at the cost of one wake-up of the loop per batch.
 */
void jn_worker_set_batch_max(struct jn_worker *w, size_t n);

/*
 * Loop thread. Runs run on n threads (more are started; never fewer than now: 0 and a smaller
 * n change nothing), for work whose jobs wait on something else (the routing thread's
 * lookups). Each thread takes its own batch, so batches run at the same time and run must be
 * safe for that; done then sees the jobs in the order their batches finish, not in post
 * order (a caller that needs the order restores it: jn_route.c's reorder window). A hand-off
 * has no threads: 0. Returns 0, or an errno (ENOMEM, pthread_create's): the threads started
 * so far stay.
 */
int jn_worker_set_threads(struct jn_worker *w, size_t n);

/*
 * Any thread. Queues job (its next is overwritten) at the end of the pending list and wakes
 * the thread (a hand-off: queues it for done and wakes the loop). Never blocks for longer
 * than the lock is held by the other side (a list splice), never allocates.
 * Returns 0: the worker owns job until done gets it; or JN_ESTOPPED once jn_worker_stop() has
 * returned: the caller keeps job. Posts made while jn_worker_stop() runs (from done
 * callbacks, or other threads) are accepted: run and done if the thread is still draining,
 * else given back by jn_worker_stop(). A hand-off's posters on other threads must have
 * stopped posting before jn_worker_free() (paho: after MQTTAsync_destroy()).
 */
int jn_worker_post(struct jn_worker *w, struct jn_job *job);

/*
 * Loop thread, never from run or done. Stops the worker and returns what it did not finish.
 *   1. The thread finishes the batch it is running; with JN_WORKER_DRAIN it then runs batches
 *      until nothing is pending, without it the jobs not yet in a batch are taken back.
 *   2. The thread is joined; done is called here for every job that was run (for a hand-off:
 *      with JN_WORKER_DRAIN, for every job queued; without it, for none).
 *   3. Returns the jobs that were not run, in post order, linked by next, or NULL: those taken
 *      back in 1 (without JN_WORKER_DRAIN), then those posted while this ran. Owned by the
 *      caller. Later posts return JN_ESTOPPED.
 * Calling it again returns NULL. The done event stays until jn_worker_free().
 */
struct jn_job *jn_worker_stop(struct jn_worker *w, unsigned flags);

/*
 * Loop thread. Frees w (NULL: nothing). w should be stopped; a worker still running is stopped
 * here with JN_WORKER_DRAIN, and jobs that stop would have returned cannot be given to anyone:
 * they are left alone (not freed) and an error is logged.
 */
void jn_worker_free(struct jn_worker *w);

#endif
