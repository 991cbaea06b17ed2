/*
 * jn_stats: the operator's read-only view of the broker (see jn_stats.h).
 */
#include "jn_stats.h"

#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"

struct jn_journal *jn_broker_journal(struct jn_broker *b)
{
    return b->journal;
}

struct event_base *jn_broker_base(struct jn_broker *b)
{
    return b->base;
}

void jn_broker_stats(struct jn_broker *b, struct jn_broker_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->journal_open = b->journal != NULL;
    out->started = b->started;
    out->stopping = b->stopping;
    out->disk_low = b->disk_low;
    out->blocked = b->n_blocked;
    out->started_us = b->started_us;
    out->nchannels = b->nchans;
    out->nroutes = b->cfg->nroutes;
    out->dead_letters = b->n_dead;
    out->unrouted_dropped = b->n_unrouted_dropped;
    out->routing_in_flight = b->routing_in_flight;
    out->journal_map_bytes = b->cfg->core.max_size;
    out->config_hash = b->cfg->hash;
    out->config_loaded_us = b->loaded_us;
    out->reloads = b->n_reloads;
    out->retention_budget = b->cfg->core.retention.max_bytes < b->cfg->core.max_size / 2
                                ? b->cfg->core.retention.max_bytes : b->cfg->core.max_size / 2;
    out->pruned_kept = b->n_pruned_kept;
    out->pruned_actions = b->n_pruned_actions;
    out->commit_lat = &b->commit_lat;
    if (b->journal != NULL) {
        out->queued = jn_journal_count(b->journal, JN_JDB_QUEUE);
        out->inbox = jn_journal_count(b->journal, JN_JDB_INBOX);
        out->dead_stored = jn_journal_count(b->journal, JN_JDB_DLQ);
        out->kept = jn_journal_count(b->journal, JN_JDB_KEPT);
        out->kept_bytes = jn_journal_bytes(b->journal, JN_JDB_KEPT) +
                          jn_journal_bytes(b->journal, JN_JDB_KEPTID);
        out->log_bytes = jn_journal_bytes(b->journal, JN_JDB_LOG) +
                         jn_journal_bytes(b->journal, JN_JDB_LOGID);
        for (int db = 0; db < JN_JDB__COUNT; db++) {
            out->journal_bytes += jn_journal_bytes(b->journal, (enum jn_jdb)db);
        }
        out->journal_used_pct = jn_journal_used_pct(b->journal);
    }
}

int jn_broker_channel_stats(struct jn_broker *b, size_t i, struct jn_channel_stats *out)
{
    const struct jn_channel *ch;

    if (i >= b->nchans) {
        return -1;
    }
    ch = b->chans[i];
    memset(out, 0, sizeof(*out));
    out->name = ch->name;
    out->type = ch->def ? ch->def->name : "";
    out->out = ch->dir == JN_DIR_OUT;
    out->up = ch->up;
    out->paused = ch->paused;
    out->removed = ch->gone;
    out->last_error = ch->last_error;
    out->last_error_us = ch->last_error_us;
    out->received = ch->n_in;
    out->refused = ch->n_refused;
    out->unrouted = ch->n_unrouted;
    out->auth_failed = ch->n_auth_failed;
    out->auth_methods = ch->auth_methods;
    out->rate_limited_on = ch->rate_per_s > 0;
    out->rate_limited = ch->n_rate_limited;
    out->listens = ch->listens;
    out->conn_refused_max = ch->n_conn_refused[JN_CONN_REFUSED_MAX];
    out->conn_refused_per_ip = ch->n_conn_refused[JN_CONN_REFUSED_PER_IP];
    out->links = ch->links;
    out->links_up = ch->links_up;
    out->link_in_flight = ch->link_in_flight;
    out->link_last_ack_us = ch->link_last_ack_us;
    out->link_duplicates = ch->n_link_duplicates;
    out->link_lost = ch->n_link_lost;
    out->link_since_us = ch->link_since_us;
    out->link_rows = ch->link_row != NULL;
    out->delivered = ch->n_sent;
    out->retried = ch->n_retried;
    out->failed = ch->n_failed;
    out->delivery_lat = &ch->delivery_lat;
    if (b->queues[i] != NULL) {
        struct jn_queue_look lk;
        jn_queue_look(b->queues[i], &lk);
        out->in_memory = lk.held;
        out->waiting = lk.waiting;
        out->depth_exact = lk.exact;
        out->oldest_us = lk.oldest_us;
        out->depth = lk.depth;
        out->depth_bytes = lk.depth_bytes;
        out->full = lk.full;
        out->in_flight = jn_queue_in_flight(b->queues[i]);
    }
    if (ch->dir == JN_DIR_IN && b->started && !b->stopping) {
        out->blocked = jn_flow__blocked(b, ch);
    }
    return 0;
}

int jn_broker_link_row(struct jn_broker *b, size_t i, size_t r, struct jn_link_row *out)
{
    struct jn_channel *ch;

    if (i >= b->nchans) {
        return -1;
    }
    ch = b->chans[i];
    if (ch->link_row == NULL || ch->broken) {
        return -1;
    }
    memset(out, 0, sizeof(*out));
    return ch->link_row(ch, r, out);
}

int jn_broker_route_stats(const struct jn_broker *b, size_t i, struct jn_route_stats *out)
{
    if (i >= b->cfg->nroutes) {
        return -1;
    }
    out->name = b->cfg->routes[i].name;
    out->routed = b->n_routed ? b->n_routed[i] : 0;
    return 0;
}

int jn_broker_pause(struct jn_broker *b, const char *name, int on, struct jn_err *err)
{
    for (size_t i = 0; i < b->nchans; i++) {
        struct jn_channel *ch = b->chans[i];
        if (ch->gone || strcmp(ch->name, name) != 0) {
            continue;
        }
        if (ch->paused == (on != 0)) {
            return jn_err_set(err, JN_EINVAL, "channel '%s' is %s", name,
                              on ? "paused already" : "not paused");
        }
        ch->paused = on != 0;
        /* A queue held for a reload's restart is let go by the restart (jn_reload.c). */
        if (b->queues[i] != NULL && !ch->restarting) {
            jn_queue_pause(b->queues[i], on);
        }
        jn_log_p(JN_LOG_INFO, ch->log_prefix, "%s by the operator", on ? "paused" : "resumed");
        return 0;
    }
    return jn_err_set(err, JN_ENOENT, "no channel '%s'", name);
}
