/*
 * jn_admin_link: what the admin API shows of channels that keep links to other nodes (the
 * bridge, docs/bridge.md#monitoring): a "link" object on their row of /api/v1/channels and the
 * junction_link_* metric families. The figures are the channel's own (struct jn_channel's
 * links_up, link_in_flight, ...), read through jn_broker_channel_stats like every other row.
 *
 * Threads: the loop thread (the admin listener's).
 */
#include "jn_admin_int.h"
#include "jn_prom.h"
#include "jn_stats.h"

void jn_admin__link_json(const struct jn_channel_stats *cs, json_t *o)
{
    char t[80];

    if (!cs->links) {
        return;
    }
    jn_admin__iso_time(cs->link_last_ack_us, t, sizeof(t));
    json_object_set_new(o, "link",
                        json_pack("{s:b,s:I,s:I,s:o,s:I,s:I}", "up", cs->links_up > 0,
                                  "links_up", (json_int_t)cs->links_up, "in_flight",
                                  (json_int_t)cs->link_in_flight, "last_ack",
                                  cs->link_last_ack_us ? json_string(t) : json_null(),
                                  "duplicates", (json_int_t)cs->link_duplicates, "lost",
                                  (json_int_t)cs->link_lost));
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
    return rc;
}
