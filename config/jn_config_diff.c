/*
 * jn_config_diff: may a newly loaded config replace the running one while the broker runs, and
 * what changes if it does (the hot reload of docs/operations.md, "Changing the config live").
 *
 * What a reload changes live: routes and services (added, removed, changed: the broker swaps
 * them between two messages), `unrouted:`, and the options marked JN_OPT_RELOADABLE (the
 * "reloadable" column of docs/config-reference.md) of the core settings and of the channels
 * (their common options, and their own numbers, durations, sizes, booleans and enums). A
 * channel changed in any other option is restarted with its new options (jn_cfg_channel's
 * restart). What it does not (yet): adding or removing a channel, changing one's direction or
 * concurrency, the admin listener, the data dir; such a file is refused with a line for each
 * difference, and the old config keeps running until a restart.
 *
 * Everything is compared through the option tables (jn_opt_same), so an option added to a
 * table is compared without a line here.
 */
#include <string.h>

#include "jn_config.h"
#include "jn_mem.h"

static long chan_find(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nchannels; i++) {
        if (strcmp(c->channels[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* The channels: the same set with the same direction and concurrency (the queue's slots are
 * made for it). One that differs beyond its reloadable options is restarted (restart set); each
 * difference that needs the broker restarted is a reason in why. */
static void diff_channels(const struct jn_config *cur, struct jn_config *next,
                          struct jn_diag *why, struct jn_diag *changes)
{
    char where[128];

    for (size_t i = 0; i < next->nchannels; i++) {
        struct jn_cfg_channel *n = &next->channels[i];
        long k = chan_find(cur, n->name);
        const struct jn_cfg_channel *o = k >= 0 ? &cur->channels[k] : NULL;
        const char *what = strncmp(n->name, "notify:", 7) == 0 ? "the callback channel of route"
                                                                 : "channel";
        const char *nm = strncmp(n->name, "notify:", 7) == 0 ? n->name + 7 : n->name;

        n->restart = 0;
        if (o == NULL) {
            jn_diag_add(why, &n->pos, "%s '%s' is new: adding a channel needs a restart", what,
                        nm);
        } else if (o->dir != n->dir) {
            jn_diag_add(why, &n->pos, "%s '%s': its direction changed: needs a restart", what,
                        nm);
        } else if (o->common.concurrency != n->common.concurrency) {
            jn_diag_add(why, &n->pos, "%s '%s': concurrency changed: needs a restart", what, nm);
        } else if (o->def != n->def ||
                   !jn_opt_same(jn_chan_common_opts, &o->common, &n->common, JN_OPT_RELOADABLE,
                                where, sizeof(where)) ||
                   !jn_opt_same(n->def->opts, o->conf, n->conf, JN_OPT_RELOADABLE, where,
                                sizeof(where)) ||
                   jn_opt_reload(n->def->opts, o->conf, n->conf, 0, where, sizeof(where))) {
            n->restart = 1;
            jn_diag_add(changes, &n->pos, "%s '%s': %s changed: the channel restarts (%s)", what,
                        nm, o->def != n->def ? "type" : where,
                        n->dir == JN_DIR_IN ? "its listener and connections are closed and "
                                              "opened again"
                                            : "once its sends in flight are done; its queue "
                                              "stays");
        } else if (!jn_opt_same(jn_chan_common_opts, &o->common, &n->common, 0, where,
                                sizeof(where)) ||
                   !jn_opt_same(n->def->opts, o->conf, n->conf, 0, where, sizeof(where))) {
            jn_diag_add(changes, &n->pos, "%s '%s': %s changed (applied live)", what, nm,
                        where);
        }
    }
    for (size_t i = 0; i < cur->nchannels; i++) {
        const struct jn_cfg_channel *o = &cur->channels[i];
        if (chan_find(next, o->name) < 0) {
            int cb = strncmp(o->name, "notify:", 7) == 0;
            jn_diag_add(why, NULL, "%s '%s' was removed: removing a channel needs a restart",
                        cb ? "the callback channel of route" : "channel", o->name + (cb ? 7 : 0));
        }
    }
}

/* next's channels put in cur's order (they are the same set), and every index into them
 * (routes' from, to and callback channel, unrouted:) remapped: the broker's channels keep
 * their places. 0 or JN_ENOMEM. */
static int reorder_channels(const struct jn_config *cur, struct jn_config *next)
{
    size_t n = next->nchannels;
    size_t *perm = jn_calloc(n + 1, sizeof(*perm)); /* next's index -> cur's */
    struct jn_cfg_channel *chans = jn_calloc(n + 1, sizeof(*chans));

    if (perm == NULL || chans == NULL) {
        jn_free(perm);
        jn_free(chans);
        return JN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        perm[i] = (size_t)chan_find(cur, next->channels[i].name);
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

    if (!jn_opt_same(jn_core_opts, &cur->core, &next->core, JN_OPT_RELOADABLE, where,
                     sizeof(where))) {
        jn_diag_add(why, NULL, "junction.%s changed: changing this option needs a restart",
                    where);
    } else if (!jn_opt_same(jn_core_opts, &cur->core, &next->core, 0, where, sizeof(where))) {
        jn_diag_add(changes, NULL, "junction.%s changed (applied live)", where);
    }
    diff_channels(cur, next, why, changes);
    if (why->nerr > nerr) {
        return JN_EINVAL;
    }
    if (reorder_channels(cur, next) != 0) {
        jn_diag_add(why, NULL, "out of memory");
        return JN_ENOMEM;
    }
    diff_flow(cur, next, changes);
    return 0;
}
