/*
 * jn_track: outcome tracking for jn_ingest_outcome: a ticket outlives its commit and folds
 * the results of the routing and of every delivery of its message into one answer for the IN
 * channel (an MLLP ACK after delivery, an HTTP sync reply).
 *
 * Model: Mosquitto's refcounted stored message (pending counts what is not final), with the
 * worst result winning (REJECT > RETRY > OK). Loop thread only.
 */
#include <string.h>

#include "jn_broker_int.h"
#include "jn_mem.h"

/* ---- outcome tracking (jn_ingest_outcome) ---- */

void jn_track__free(struct jn_ticket *t)
{
    jn_msg_unref(&t->msg);
    jn_free(t->reason);
    jn_free(t->reply);
    jn_free(t);
}

/* Stops waiting for t's outcome: it will not be called. */
void jn_track__detach(struct jn_ticket *t)
{
    if (t->outcome == NULL) {
        return;
    }
    t->outcome = NULL;
    if (t->oprev) {
        t->oprev->onext = t->onext;
    } else {
        t->b->outcomes = t->onext;
    }
    if (t->onext) {
        t->onext->oprev = t->oprev;
    }
    t->oprev = t->onext = NULL;
}

/* Folds one result into t's outcome: the worst wins, with the first reason given for it; a
 * reply is kept when it is the first from a delivery that ended in the (new) worst result. */
void jn_track__note(struct jn_ticket *t, enum jn_send_result r, const char *reason,
                    const void *reply, size_t reply_len)
{
    if (r > t->result || (r == t->result && t->reason == NULL)) {
        jn_free(t->reason);
        t->reason = reason ? jn_strdup(reason) : NULL;
        t->result = r;
    }
    if (reply != NULL && (t->reply == NULL || r > t->reply_r)) {
        void *copy = jn_malloc(reply_len ? reply_len : 1);
        if (copy != NULL) {
            memcpy(copy, reply, reply_len);
            jn_free(t->reply);
            t->reply = copy;
            t->reply_len = reply_len;
            t->reply_r = r;
        }
    }
}

/* Calls t's outcome now with what it says (or with r/reason given, for a stop), then frees t
 * if nothing points to it any more. */
static void track_fire(struct jn_ticket *t, int stopping)
{
    jn_outcome_fn fn = t->outcome;

    if (fn != NULL) {
        enum jn_send_result r = stopping ? JN_SEND_RETRY : t->result;
        const char *why = stopping ? "broker is stopping" : t->reason;
        int with_reply = !stopping && t->reply != NULL && t->reply_r == r;
        if (with_reply && t->reply_via != NULL && t->reply_via->n > 0 && !t->via_busy) {
            int rc = jn_reply__post(t);
            if (rc == 0) {
                return; /* the job answers, and holds t (pending) until then */
            }
            jn_track__detach(t);
            fn(t->arg, rc == JN_ESTOPPED ? JN_SEND_RETRY : JN_SEND_REJECT,
               rc == JN_ESTOPPED ? "broker is stopping" : "response_via: out of memory", NULL,
               0);
            if (t->pending == 0) {
                jn_track__free(t);
            }
            return;
        }
        jn_track__detach(t);
        fn(t->arg, r, why, with_reply ? t->reply : NULL, with_reply ? t->reply_len : 0);
    }
    if (t->pending == 0) {
        jn_track__free(t);
    }
}

/* One of t's pending parts (the routing, or a delivery) is final with r. */
void jn_track__settle(struct jn_ticket *t, enum jn_send_result r, const char *reason,
                      const void *reply, size_t reply_len)
{
    jn_track__note(t, r, reason, reply, reply_len);
    if (--t->pending == 0) {
        track_fire(t, 0);
    }
}

/* Broker stopping: every outcome still awaited for an accepted message is answered
 * JN_SEND_RETRY (one not accepted yet gets its accept callback first, or is forgotten).
 * Rescans from the head after each call, since an outcome callback may forget other tickets.
 * Returns how many were answered. */
size_t jn_track__stop_all(struct jn_broker *b)
{
    size_t n = 0;

    for (;;) {
        struct jn_ticket *t = b->outcomes;
        while (t && !t->accepted) {
            t = t->onext;
        }
        if (t == NULL) {
            return n;
        }
        track_fire(t, 1);
        n++;
    }
}

void jn_track__q_hold(void *arg, void *tag)
{
    struct jn_ticket *t = tag;

    (void)arg;
    t->pending++;
}

void jn_track__q_note(void *arg, void *tag, enum jn_send_result r, const char *reason)
{
    (void)arg;
    jn_track__note(tag, r, reason, NULL, 0);
}

void jn_track__q_settle(void *arg, void *tag, enum jn_send_result r, const char *reason,
                        const void *reply, size_t reply_len)
{
    (void)arg;
    jn_track__settle(tag, r, reason, reply, reply_len);
}

int jn_track__q_wants_reply(void *arg, void *tag, const struct jn_channel *ch)
{
    const struct jn_ticket *t = tag;

    (void)arg;
    return t->outcome != NULL &&
           (t->reply_from == NULL || strcmp(t->reply_from, ch->name) == 0);
}

void jn_ingest_reply_via(struct jn_ticket *t, const struct jn_strlist *services)
{
    if (t != NULL && services != NULL && services->n > 0) {
        t->reply_via = services;
    }
}

void jn_ingest_reply_from(struct jn_ticket *t, const char *out_channel)
{
    if (t != NULL) {
        t->reply_from = out_channel;
    }
}
