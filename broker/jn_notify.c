/*
 * jn_notify: how a delivery's end is reported beyond its queue: callbacks to a route's
 * notify: URL and dead letters (both are records in the same journal transaction as the
 * outcome they report, so they are as durable as it). Dead letters live here, not in
 * jn_queue, because a route (unrouted, service errors) dead-letters too, not only a queue.
 *
 * Model: Fluent Bit's engine callbacks on a chunk's end; the broker's struct is shared
 * through jn_broker_int.h. Loop thread only.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_store.h"

/* ---- callbacks (notify:) ---- */

static const struct jn_cfg_route *find_route(const struct jn_broker *b, const char *name)
{
    for (size_t i = 0; name && i < b->cfg->nroutes; i++) {
        if (strcmp(b->cfg->routes[i].name, name) == 0) {
            return &b->cfg->routes[i];
        }
    }
    return NULL;
}

/*
 * Queues a callback for the route's notify: URL, in the same journal transaction as the
 * event it reports, so the callback is as durable as the outcome. Callbacks are deliveries of
 * the route's "notify:<route>" channel (route "(notify)", which has no callbacks itself).
 */
static void notify_callback(struct jn_broker *b, struct jn_jtxn *t, const char *route,
                            const struct jn_msg *m, const char *dest, unsigned event, int attempts,
                            const char *error)
{
    const struct jn_cfg_route *r = find_route(b, route);
    const char *status = event == JN_NOTIFY_DELIVERED ? "delivered"
                         : event == JN_NOTIFY_FAILED  ? "failed"
                                                      : "dead-lettered";
    struct jn_channel *qch;
    struct jn_msg *n;
    json_t *o;
    char *body, when[40];
    int64_t now = jn_now_us();
    time_t secs = (time_t)(now / 1000000);
    struct tm tm;
    uint64_t qseq;

    if (t == NULL || r == NULL || r->notify_chan < 0 || !(r->notify_mask & event)) {
        return;
    }
    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%03dZ",
             (int)(now / 1000 % 1000));
    o = json_pack("{s:s, s:s, s:s?, s:s, s:i, s:s?, s:s}", "id", m->id, "route", r->name,
                  "destination", dest, "status", status, "attempts", attempts, "error", error,
                  "time", when);
    body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    qch = b->chans[r->notify_chan];
    n = body ? jn_msg_new(qch->name, body, strlen(body)) : NULL;
    free(body); /* jansson allocates with malloc */
    if (n == NULL || jn_msg_header_set(n, "Content-Type", "application/json") != 0 ||
        jn_msg_header_set(n, "X-Junction-Event", status) != 0) {
        jn_log(JN_LOG_ERROR, "msg=%s callback '%s' lost: out of memory", m->id, status);
        jn_msg_unref(&n);
        return;
    }
    jn_idgen_next(&b->ids, n->id);
    qseq = jn_journal_seq(b->journal);
    if (jn_store_queue_put(t, qch->name, qseq, n, "(notify)", 1, NULL) != 0) {
        jn_log(JN_LOG_ERROR, "msg=%s callback '%s' lost: out of memory", m->id, status);
        jn_msg_unref(&n);
        return;
    }
    jn_queue_add(b->queues[r->notify_chan], &b->adds, n, "(notify)", qseq);
}

/* ---- dead letters ---- */

/* Writes the dead letter (with its last error and attempt count) and the action into t, and
 * logs it at level with prefix (a channel's, or NULL). */
void jn_notify__dead_letter(struct jn_broker *b, struct jn_jtxn *t, const struct jn_msg *m,
                            const char *route, const char *dest, int attempts, const char *reason,
                            int level, const char *prefix)
{
    b->n_dead++;
    jn_log_p(level, prefix, "msg=%s dead-lettered route=%s destination=%s attempts=%d: %s",
             m->id, route ? route : "-", dest ? dest : "-", attempts, reason);
    if (t == NULL || jn_store_dlq_put(t, jn_journal_seq(b->journal), dest ? dest : "",
                                      route ? route : "", attempts, reason, m) != 0) {
        jn_log(JN_LOG_ERROR, "msg=%s could not be written to the dead-letter queue", m->id);
        return;
    }
    jn_commit__log(b, t, m, "dead-lettered", route, dest, attempts, reason);
    notify_callback(b, t, route, m, dest, JN_NOTIFY_DEAD, attempts, reason);
}

void jn_notify__ended(void *arg, struct jn_jtxn *t, const struct jn_queue_event *ev)
{
    struct jn_broker *b = arg;

    switch (ev->end) {
    case JN_QUEUE_DELIVERED:
        jn_commit__log(b, t, ev->msg, "delivered", ev->route, ev->dest, ev->attempt, NULL);
        notify_callback(b, t, ev->route, ev->msg, ev->dest, JN_NOTIFY_DELIVERED, ev->attempt, NULL);
        break;
    case JN_QUEUE_RETRY_SCHEDULED:
        jn_commit__log(b, t, ev->msg, "retry-scheduled", ev->route, ev->dest, ev->attempt,
                       ev->reason);
        notify_callback(b, t, ev->route, ev->msg, ev->dest, JN_NOTIFY_FAILED, ev->attempt,
                        ev->reason);
        break;
    case JN_QUEUE_FAILED:
        jn_commit__log(b, t, ev->msg, "failed", ev->route, ev->dest, ev->attempt, ev->reason);
        jn_notify__dead_letter(b, t, ev->msg, ev->route, ev->dest, ev->attempt, ev->why,
                               JN_LOG_WARN, ev->log_prefix);
        break;
    }
}
