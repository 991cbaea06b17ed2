/*
 * jn_admin_link: what the admin API shows of channels that keep links to other nodes (the
 * bridge, docs/bridge.md#monitoring): a "link" object on their row of /api/v1/channels and the
 * junction_link_* metric families; for a hub, one row per edge it knows by name ("edges" in
 * the link object, junction_link_edge_* with an edge label). The figures are the channel's own
 * (struct jn_channel's links_up, link_in_flight, ..., and its link_row rows), read through
 * jn_broker_channel_stats and jn_broker_link_row like every other row.
 *
 * Threads: the loop thread (the admin listener's).
 */
#include "jn_admin_int.h"
#include "jn_channel.h"
#include "jn_prom.h"
#include "jn_stats.h"

static json_t *time_or_null(int64_t us)
{
    char t[80];

    if (us == 0) {
        return json_null();
    }
    jn_admin__iso_time(us, t, sizeof(t));
    return json_string(t);
}

static json_t *edge_json(const struct jn_link_row *r)
{
    return json_pack("{s:s,s:s,s:b,s:o,s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "node", r->node, "peer",
                     r->peer, "up", r->up, "since", time_or_null(r->since_us), "received",
                     (json_int_t)r->received, "duplicates", (json_int_t)r->duplicates,
                     "last_message", time_or_null(r->last_msg_us), "last_ack",
                     time_or_null(r->last_ack_us), "queued",
                     r->has_status ? json_integer((json_int_t)r->queued) : json_null(),
                     "in_flight",
                     r->has_status ? json_integer((json_int_t)r->in_flight) : json_null(),
                     "status_time", time_or_null(r->status_us));
}

void jn_admin__link_json(struct jn_admin *a, size_t i, const struct jn_channel_stats *cs,
                         json_t *o)
{
    json_t *l;

    if (!cs->links) {
        return;
    }
    l = json_pack("{s:b,s:o,s:I,s:I,s:o,s:I,s:I}", "up", cs->links_up > 0, "since",
                  time_or_null(cs->link_since_us), "links_up", (json_int_t)cs->links_up,
                  "in_flight", (json_int_t)cs->link_in_flight, "last_ack",
                  time_or_null(cs->link_last_ack_us), "duplicates",
                  (json_int_t)cs->link_duplicates, "lost", (json_int_t)cs->link_lost);
    if (l != NULL && cs->out) {
        json_object_set_new(l, "queued", json_integer((json_int_t)cs->depth));
    }
    if (l != NULL && cs->link_rows) {
        json_t *edges = json_array();
        struct jn_link_row r;
        for (size_t k = 0; edges != NULL && jn_broker_link_row(a->b, i, k, &r) == 0; k++) {
            json_array_append_new(edges, edge_json(&r));
        }
        json_object_set_new(l, "edges", edges != NULL ? edges : json_null());
    }
    json_object_set_new(o, "link", l != NULL ? l : json_null());
}

struct fam {
    const char *name, *type, *help;
};

static const struct fam fams[] = {
    {"junction_link_up", "gauge",
     "Links up now of a channel that keeps links to other nodes (bridge edge: 0 or 1; hub: "
     "edges connected)."},
    {"junction_link_in_flight", "gauge",
     "Bridge edge: envelopes sent and not yet acknowledged by the hub; hub: envelopes being "
     "committed."},
    {"junction_link_last_ack_seconds", "gauge",
     "When the latest acknowledgement was received (edge) or sent (hub), seconds since the "
     "epoch; 0: none yet."},
    {"junction_link_duplicates_total", "counter",
     "Bridge hub: envelopes acknowledged again without a second copy (the dedup window)."},
    {"junction_link_lost_total", "counter", "Links that dropped."},
};

/* Per edge of a hub (label edge: its node name). */
enum { E_UP, E_SINCE, E_RECEIVED, E_DUPS, E_LAST_MSG, E_LAST_ACK, E_QUEUED, E_IN_FLIGHT, E__N };

static const struct fam edge_fams[E__N] = {
    {"junction_link_edge_up", "gauge", "Bridge hub: 1 while a link of this edge is up."},
    {"junction_link_edge_since_seconds", "gauge",
     "Bridge hub: when this edge last went up or down, seconds since the epoch."},
    {"junction_link_edge_received_total", "counter",
     "Bridge hub: messages of this edge committed."},
    {"junction_link_edge_duplicates_total", "counter",
     "Bridge hub: resent messages of this edge acknowledged without a second copy."},
    {"junction_link_edge_last_message_seconds", "gauge",
     "Bridge hub: this edge's latest message, seconds since the epoch; 0: none yet."},
    {"junction_link_edge_last_ack_seconds", "gauge",
     "Bridge hub: the latest ack sent to this edge, seconds since the epoch; 0: none yet."},
    {"junction_link_edge_queued", "gauge",
     "Bridge hub: this edge's queue depth as it last reported it (absent until it has)."},
    {"junction_link_edge_in_flight", "gauge",
     "Bridge hub: this edge's envelopes in flight as it last reported them (absent until it "
     "has)."},
};

static int edge_metrics(struct jn_admin *a, struct jn_buf *b)
{
    struct jn_channel_stats cs;
    struct jn_link_row r;
    int rc = 0;

    for (int f = 0; f < E__N; f++) {
        rc |= jn_prom_family(b, edge_fams[f].name, edge_fams[f].type, edge_fams[f].help);
        for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
            for (size_t k = 0; cs.link_rows && jn_broker_link_row(a->b, i, k, &r) == 0; k++) {
                const char *lab[] = {"channel", cs.name, "edge", r.node};
                const char *n = edge_fams[f].name;
                switch (f) {
                case E_UP:
                    rc |= jn_prom_sample_u(b, n, NULL, lab, 2, (uint64_t)r.up);
                    break;
                case E_SINCE:
                    rc |= jn_prom_sample(b, n, NULL, lab, 2, (double)r.since_us / 1e6);
                    break;
                case E_RECEIVED:
                    rc |= jn_prom_sample_u(b, n, NULL, lab, 2, r.received);
                    break;
                case E_DUPS:
                    rc |= jn_prom_sample_u(b, n, NULL, lab, 2, r.duplicates);
                    break;
                case E_LAST_MSG:
                    rc |= jn_prom_sample(b, n, NULL, lab, 2, (double)r.last_msg_us / 1e6);
                    break;
                case E_LAST_ACK:
                    rc |= jn_prom_sample(b, n, NULL, lab, 2, (double)r.last_ack_us / 1e6);
                    break;
                case E_QUEUED:
                    if (r.has_status) {
                        rc |= jn_prom_sample_u(b, n, NULL, lab, 2, r.queued);
                    }
                    break;
                default:
                    if (r.has_status) {
                        rc |= jn_prom_sample_u(b, n, NULL, lab, 2, r.in_flight);
                    }
                    break;
                }
            }
        }
    }
    return rc;
}

int jn_admin__link_metrics(struct jn_admin *a, struct jn_buf *b)
{
    struct jn_channel_stats cs;
    int rc = 0;

    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        rc |= jn_prom_family(b, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
            const char *lab[] = {"channel", cs.name};
            if (!cs.links) {
                continue;
            }
            if (f == 2) {
                rc |= jn_prom_sample(b, fams[f].name, NULL, lab, 1,
                                     (double)cs.link_last_ack_us / 1e6);
            } else {
                uint64_t v = f == 0 ? cs.links_up : f == 1 ? cs.link_in_flight
                             : f == 3 ? cs.link_duplicates : cs.link_lost;
                rc |= jn_prom_sample_u(b, fams[f].name, NULL, lab, 1, v);
            }
        }
    }
    return rc | edge_metrics(a, b);
}
