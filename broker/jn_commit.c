/*
 * jn_commit: the engine's commit stage: a journal transaction that may not be refused is
 * submitted with the deliveries jn_queue_add gave it (they enter their queues at its commit),
 * and what ends with the commit is ended there: the routing part of a tracked ticket, the
 * routing in flight, a caller's callback. Also the action-log helper every part uses.
 *
 * It calls nothing back in the files that use it (jn_broker.c, jn_route.c, jn_notify.c,
 * jn_replay.c): the engine's files form no circle. Model: Redis's call path (one place that
 * ends a command's side effects) and LMDB's ownership rules per call. Loop thread only.
 */
#include "jn_broker_int.h"

#include "jn_log.h"
#include "jn_mem.h"
#include "jn_store.h"

/* A commit while some queue is paged: records it wrote for such a queue are readable now, so
 * its pump may load them (it does when its memory is low). */
static void paged_committed(void *arg, int rc)
{
    struct jn_broker *b = arg;

    (void)rc;
    for (size_t i = 0; b->nspilled && i < b->nchans; i++) {
        if (b->queues[i] && jn_queue_spilled(b->queues[i])) {
            jn_queue_kick(b->queues[i]);
        }
    }
}

struct jn_delivery *jn_commit__take_adds(struct jn_broker *b)
{
    struct jn_delivery *l = b->adds.head;

    b->adds.head = b->adds.tail = NULL;
    return l;
}

struct commit {
    struct jn_broker *b;
    struct jn_delivery *adds;
    int routing;               /* one of b->routing_in_flight */
    struct jn_ticket *track;   /* its routing part ends here, or NULL */
    void (*cb)(void *, int);   /* then this, or NULL */
    void *cb_arg;
};

static void committed(void *arg, int rc)
{
    struct commit *c = arg;
    struct jn_broker *b = c->b;

    jn_queue_commit(c->adds, rc != 0 || b->freeing ? JN_ESTOPPED : 0, c->track);
    if (c->routing) {
        b->routing_in_flight--;
    }
    if (c->track) {
        jn_commit__ticket_done(c->track, rc == 0 && !b->freeing);
    }
    if (c->cb) {
        c->cb(c->cb_arg, rc);
    }
    jn_free(c);
    paged_committed(b, rc);
}

/* Submits a jtxn that may not be refused, with the deliveries queue_add gave it since the last
 * submit. A failure is logged by the journal (the inbox or queue entry it would have replaced
 * stays, so a restart redoes the step). */
static void submit(struct jn_broker *b, struct jn_jtxn *t, int routing, struct jn_ticket *track,
                   void (*cb)(void *, int), void *cb_arg)
{
    struct jn_delivery *adds = jn_commit__take_adds(b);
    int need = adds != NULL || routing || track != NULL || cb != NULL;
    struct commit *c = need ? jn_malloc(sizeof(*c)) : NULL;

    if (t == NULL || (need && c == NULL)) {
        if (t != NULL) {
            jn_log(JN_LOG_ERROR, "msg=%s out of memory: what was queued with it is sent after "
                   "a restart", adds ? jn_delivery_msg(adds)->id : "-");
            jn_journal_submit(b->journal, t, 0, NULL, NULL);
        }
        jn_queue_commit(adds, JN_ENOMEM, track);
        jn_free(c);
        if (routing) {
            b->routing_in_flight--;
        }
        if (track) {
            jn_commit__ticket_done(track, 0);
        }
        if (cb) {
            cb(cb_arg, JN_ENOMEM);
        }
        return;
    }
    if (c == NULL) {
        jn_journal_submit(b->journal, t, 0, b->nspilled ? paged_committed : NULL, b);
        return;
    }
    c->b = b;
    c->adds = adds;
    c->routing = routing;
    c->track = track;
    c->cb = cb;
    c->cb_arg = cb_arg;
    jn_journal_submit(b->journal, t, 0, committed, c);
}

void jn_commit__submit(struct jn_broker *b, struct jn_jtxn *t)
{
    submit(b, t, 0, NULL, NULL, NULL);
}

void jn_commit__submit_cb(struct jn_broker *b, struct jn_jtxn *t, void (*cb)(void *, int),
                          void *arg)
{
    submit(b, t, 0, NULL, cb, arg);
}

void jn_commit__submit_routing(struct jn_broker *b, struct jn_jtxn *t, struct jn_ticket *track)
{
    submit(b, t, 1, track, NULL, NULL);
}

void jn_commit__log(struct jn_broker *b, struct jn_jtxn *t, const struct jn_msg *m,
                    const char *event, const char *route, const char *channel, int attempt,
                    const char *error)
{
    if (t == NULL || jn_store_log_cfg(t, jn_journal_seq(b->journal), m->id, event, route,
                                      channel, attempt, error,
                                      (b->routing_cfg ? b->routing_cfg : b->cfg)->hash) != 0) {
        jn_log(JN_LOG_WARN, "msg=%s action log entry '%s' lost: out of memory", m->id, event);
    }
}


/* The ingest's own part is over: a plain ticket is freed; a tracked one lives on while its
 * deliveries are pending (routed: its routing part is final and neutral; else, refused or cut
 * by the stop, what is left is answered "stopping" unless forgotten or refused). */
void jn_commit__ticket_done(struct jn_ticket *t, int routed)
{
    jn_buf_reset(&t->env);
    jn_msg_unref(&t->msg);
    if (!t->tracked) {
        jn_free(t->reason); /* routing notes it whether tracked or not */
        jn_free(t);
        return;
    }
    if (routed) {
        jn_track__settle(t, JN_SEND_OK, NULL, NULL, 0);
    } else {
        jn_track__settle(t, JN_SEND_RETRY, "broker is stopping", NULL, 0);
    }
}


void jn_commit__paged(struct jn_broker *b, int rc)
{
    paged_committed(b, rc);
}
