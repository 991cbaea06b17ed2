/*
 * jn_config_diff: may a newly loaded config replace the running one while the broker runs, and
 * what changes if it does (the hot reload of docs/operations.md, "Changing the config live").
 *
 * What a reload changes live: routes and services (added, removed, changed: the broker swaps
 * them between two messages), `unrouted:`, and the options marked JN_OPT_RELOADABLE (the
 * "reloadable" column of docs/config-reference.md) of the core settings and of the channels
 * (their common options, and their own numbers, durations, sizes, booleans and enums).
 * Channels may be added and removed (the broker's slots keep their order: layout_channels), and
 * a channel changed in any other option is restarted with its new options (jn_cfg_channel's
 * restart). What it does not: changing a channel's direction or concurrency, the admin
 * listener, the data dir and the other core options that are not reloadable; such a file is
 * refused with a line for each difference, and the old config keeps running until a restart.
 *
 * Everything is compared through the option tables (jn_opt_same), so an option added to a
 * table is compared without a line here.
 */
#include <string.h>

#include "jn_config.h"
#include "jn_mem.h"

/* Its slot in cur, in use or a placeholder (a channel an earlier reload removed), or -1. */
static long slot_find(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nchannels; i++) {
        if (strcmp(c->channels[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static int is_cb(const char *name)
{
    return strncmp(name, "notify:", 7) == 0;
}

#define WHAT(name) (is_cb(name) ? "the callback channel of route" : "channel")
#define NAME(name) ((name) + (is_cb(name) ? 7 : 0))

/* A channel in both: the same direction and concurrency (the queue's slots are made for it).
 * One that differs beyond its reloadable options is restarted (n->restart). */
static void diff_channel(const struct jn_cfg_channel *o, struct jn_cfg_channel *n,
                         struct jn_diag *why, struct jn_diag *changes)
{
    char where[128];

    if (o->dir != n->dir) {
        jn_diag_add(why, &n->pos, "%s '%s': its direction changed: needs a restart",
                    WHAT(n->name), NAME(n->name));
    } else if (o->common.concurrency != n->common.concurrency) {
        jn_diag_add(why, &n->pos, "%s '%s': concurrency changed: needs a restart",
                    WHAT(n->name), NAME(n->name));
    } else if (o->def != n->def ||
               !jn_opt_same(jn_chan_common_opts, &o->common, &n->common, JN_OPT_RELOADABLE,
                            where, sizeof(where)) ||
               !jn_opt_same(n->def->opts, o->conf, n->conf, JN_OPT_RELOADABLE, where,
                            sizeof(where)) ||
               jn_opt_reload(n->def->opts, o->conf, n->conf, 0, where, sizeof(where))) {
        n->restart = 1;
        jn_diag_add(changes, &n->pos, "%s '%s': %s changed: the channel restarts (%s)",
                    WHAT(n->name), NAME(n->name), o->def != n->def ? "type" : where,
                    n->dir == JN_DIR_IN ? "its listener and connections are closed and opened "
                                          "again"
                                        : "once its sends in flight are done; its queue stays");
    } else if (!jn_opt_same(jn_chan_common_opts, &o->common, &n->common, 0, where,
                            sizeof(where)) ||
               !jn_opt_same(n->def->opts, o->conf, n->conf, 0, where, sizeof(where))) {
        jn_diag_add(changes, &n->pos, "%s '%s': %s changed (applied live)", WHAT(n->name),
                    NAME(n->name), where);
    }
}

/*
 * next's channels laid out in the broker's slots, which are cur's: slot i of cur holds next's
 * channel of that name, or a placeholder (gone: the fields of cur's block, borrowed, not
 * freed with next) for one next removed (the broker keeps the slot: an OUT channel's queue is
 * kept there, and a channel of that name that comes back takes it again); channels new in next
 * follow. Every index into next's channels (routes' from and to, callback channels,
 * unrouted:) is remapped. Each thing that needs a restart of junction is a reason in why.
 * 0, JN_EINVAL (reasons given) or JN_ENOMEM.
 */
static int layout_channels(const struct jn_config *cur, struct jn_config *next,
                           struct jn_diag *why, struct jn_diag *changes)
{
    size_t nerr = why->nerr, n = next->nchannels, total = cur->nchannels;
    size_t *perm = jn_calloc(n + 1, sizeof(*perm)); /* next's index -> its slot */
    struct jn_cfg_channel *chans;

    if (perm == NULL) {
        return JN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct jn_cfg_channel *nc = &next->channels[i];
        long k = slot_find(cur, nc->name);
        nc->restart = 0;
        nc->gone = 0;
        if (k < 0) {
            perm[i] = total++;
            jn_diag_add(changes, &nc->pos, "%s '%s' added", WHAT(nc->name), NAME(nc->name));
        } else if (cur->channels[k].gone) {
            perm[i] = (size_t)k;
            if (cur->channels[k].dir != nc->dir) {
                jn_diag_add(why, &nc->pos, "%s '%s' comes back with another direction: needs a "
                            "restart", WHAT(nc->name), NAME(nc->name));
            } else {
                jn_diag_add(changes, &nc->pos, "%s '%s' added again%s", WHAT(nc->name),
                            NAME(nc->name), nc->dir == JN_DIR_OUT ? " (what its queue kept "
                            "goes on)" : "");
            }
        } else {
            perm[i] = (size_t)k;
            diff_channel(&cur->channels[k], nc, why, changes);
        }
    }
    for (size_t i = 0; i < cur->nchannels; i++) {
        const struct jn_cfg_channel *o = &cur->channels[i];
        if (!o->gone && slot_find(next, o->name) < 0) {
            jn_diag_add(changes, NULL, "%s '%s' removed: %s", WHAT(o->name), NAME(o->name),
                        o->dir == JN_DIR_IN ? "it stops taking messages (its listener closes)"
                                            : "it stops once its sends in flight are done; its "
                                              "queue is kept (and sent if it comes back)");
        }
    }
    if (why->nerr > nerr) {
        jn_free(perm);
        return JN_EINVAL;
    }
    chans = jn_calloc(total + 1, sizeof(*chans));
    if (chans == NULL) {
        jn_free(perm);
        return JN_ENOMEM;
    }
    for (size_t i = 0; i < cur->nchannels; i++) {
        chans[i] = cur->channels[i]; /* a placeholder until next's takes the slot */
        chans[i].gone = 1;
        chans[i].restart = 0;
    }
    for (size_t i = 0; i < n; i++) {
        chans[perm[i]] = next->channels[i];
    }
    for (size_t r = 0; r < next->nroutes; r++) {
        struct jn_cfg_route *rt = &next->routes[r];
        for (size_t k = 0; k < rt->rc.from.n; k++) {
            rt->from[k] = perm[rt->from[k]];
        }
        for (size_t k = 0; k < rt->rc.to.n; k++) {
            rt->to[k] = perm[rt->to[k]];
        }
        if (rt->notify_chan >= 0) {
            rt->notify_chan = (long)perm[rt->notify_chan];
        }
    }
    if (next->unrouted == JN_UNROUTED_CHANNEL) {
        next->unrouted_channel = perm[next->unrouted_channel];
    }
    jn_free(next->channels);
    next->channels = chans;
    next->nchannels = total;
    jn_free(perm);
    return 0;
}

static const struct jn_cfg_service *svc_find(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nservices; i++) {
        if (strcmp(c->services[i].name, name) == 0) {
            return &c->services[i];
        }
    }
    return NULL;
}

static const struct jn_cfg_route *route_find(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        if (strcmp(c->routes[i].name, name) == 0) {
            return &c->routes[i];
        }
    }
    return NULL;
}

/* Services and routes are swapped whole: what changed is only said. */
static void diff_flow(const struct jn_config *cur, const struct jn_config *next,
                      struct jn_diag *changes)
{
    char where[128];

    for (size_t i = 0; i < next->nservices; i++) {
        const struct jn_cfg_service *n = &next->services[i];
        const struct jn_cfg_service *o = svc_find(cur, n->name);
        if (o == NULL) {
            jn_diag_add(changes, &n->pos, "service '%s' added", n->name);
        } else if (o->def != n->def) {
            jn_diag_add(changes, &n->pos, "service '%s': type changed to %s", n->name,
                        n->def->name);
        } else if (!jn_opt_same(n->def->opts, o->conf, n->conf, 0, where, sizeof(where))) {
            jn_diag_add(changes, &n->pos, "service '%s': %s changed", n->name, where);
        }
    }
    for (size_t i = 0; i < cur->nservices; i++) {
        if (svc_find(next, cur->services[i].name) == NULL) {
            jn_diag_add(changes, NULL, "service '%s' removed", cur->services[i].name);
        }
    }
    for (size_t i = 0; i < next->nroutes; i++) {
        const struct jn_cfg_route *n = &next->routes[i];
        const struct jn_cfg_route *o = route_find(cur, n->name);
        if (o == NULL) {
            jn_diag_add(changes, &n->pos, "route '%s' added", n->name);
        } else if (!jn_opt_same(jn_route_opts, &o->rc, &n->rc, 0, where, sizeof(where))) {
            jn_diag_add(changes, &n->pos, "route '%s': %s changed", n->name, where);
        } else if ((size_t)(o - cur->routes) != i) {
            jn_diag_add(changes, &n->pos, "route '%s' moved (routes are matched in order)",
                        n->name);
        }
    }
    for (size_t i = 0; i < cur->nroutes; i++) {
        if (route_find(next, cur->routes[i].name) == NULL) {
            jn_diag_add(changes, NULL, "route '%s' removed", cur->routes[i].name);
        }
    }
    if (cur->unrouted != next->unrouted ||
        (next->unrouted == JN_UNROUTED_CHANNEL &&
         strcmp(cur->channels[cur->unrouted_channel].name,
                next->channels[next->unrouted_channel].name) != 0)) {
        jn_diag_add(changes, NULL, "unrouted: changed");
    }
}

int jn_config_reloadable(const struct jn_config *cur, struct jn_config *next,
                         struct jn_diag *why, struct jn_diag *changes)
{
    char where[128];
    size_t nerr = why->nerr;
    int rc;

    if (!jn_opt_same(jn_core_opts, &cur->core, &next->core, JN_OPT_RELOADABLE, where,
                     sizeof(where))) {
        jn_diag_add(why, NULL, "junction.%s changed: changing this option needs a restart",
                    where);
    } else if (!jn_opt_same(jn_core_opts, &cur->core, &next->core, 0, where, sizeof(where))) {
        jn_diag_add(changes, NULL, "junction.%s changed (applied live)", where);
    }
    if (why->nerr > nerr) {
        return JN_EINVAL;
    }
    rc = layout_channels(cur, next, why, changes);
    if (rc == JN_ENOMEM) {
        jn_diag_add(why, NULL, "out of memory");
    }
    if (rc != 0) {
        return rc;
    }
    diff_flow(cur, next, changes);
    return 0;
}
