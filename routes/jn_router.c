/*
 * jn_router: the route compiler (linking a parsed route to channels and services) and the
 * matcher (which routes take a message, and their services' outputs). See jn_router.h.
 *
 * Model: Fluent Bit's router (names resolved once at load, routes evaluated in order per
 * record). Ownership: a compiled route's index arrays and condition are the route's (freed by
 * jn_config_free); the matcher's outputs are its own until the callback returns.
 */
#include "jn_router.h"

#include <stdio.h>
#include <string.h>

#include "jn_channel.h"
#include "jn_cond.h"
#include "jn_diag.h"
#include "jn_mem.h"
#include "jn_yaml.h"

/* ---- the compiler ---- */

/* Position of element i of a list option (or of the scalar when it was one value). */
static const struct jn_pos *elem_pos(const struct jn_node *v, const char *key, size_t i)
{
    const struct jn_node *n = jn_node_get(v, key);

    if (n == NULL) {
        return &v->pos;
    }
    if (n->kind == JN_NODE_SEQ && i < n->n) {
        return &n->vals[i]->pos;
    }
    return &n->pos;
}

static long find_channel(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nchannels; i++) {
        if (strcmp(c->channels[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static long find_service(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nservices; i++) {
        if (strcmp(c->services[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static void unknown_name(struct jn_diag *d, const struct jn_pos *pos, const char *what,
                         const char *key, const char *name, const struct jn_config *c, int svc)
{
    const char *names[256] = {NULL};
    size_t n = 0;
    const char *near;

    if (svc) {
        for (size_t i = 0; i < c->nservices && n < 256; i++) {
            names[n++] = c->services[i].name;
        }
    } else {
        for (size_t i = 0; i < c->nchannels && n < 256; i++) {
            names[n++] = c->channels[i].name;
        }
    }
    near = jn_nearest(name, names, n);
    jn_diag_add(d, pos, "%s: %s: unknown %s '%s'%s%s%s, expected the name of one defined under "
                "'%s:'", what, key, svc ? "service" : "channel", name,
                near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "",
                svc ? "services" : "channels");
}

int jn_router_compile(struct jn_cfg_route *r, const struct jn_config *c, const struct jn_node *k,
                      const struct jn_node *v, const char *what, struct jn_diag *d)
{
    int errs = 0;

    r->from = jn_calloc(r->rc.from.n + 1, sizeof(size_t));
    r->via = jn_calloc(r->rc.via.n + 1, sizeof(size_t));
    r->to = jn_calloc(r->rc.to.n + 1, sizeof(size_t));
    if (!r->from || !r->via || !r->to) {
        jn_diag_add(d, &k->pos, "out of memory");
        return errs + 1;
    }
    /* A channel whose type or direction failed has dir 0: it was reported where it is
     * defined, and saying here that it is of the wrong direction would be a false second
     * error. The load fails on the first one anyway. */
    for (size_t i = 0; i < r->rc.from.n; i++) {
        long idx = find_channel(c, r->rc.from.v[i]);
        if (idx < 0) {
            unknown_name(d, elem_pos(v, "from", i), what, "from", r->rc.from.v[i], c, 0);
            errs++;
        } else if (c->channels[idx].dir == 0) {
            errs++;
        } else if (c->channels[idx].dir != JN_DIR_IN) {
            jn_diag_add(d, elem_pos(v, "from", i), "%s: from: '%s' is an OUT channel, expected "
                        "an IN channel (direction: in)", what, r->rc.from.v[i]);
            errs++;
        } else {
            r->from[i] = (size_t)idx;
        }
    }
    for (size_t i = 0; i < r->rc.via.n; i++) {
        long idx = find_service(c, r->rc.via.v[i]);
        if (idx < 0) {
            unknown_name(d, elem_pos(v, "via", i), what, "via", r->rc.via.v[i], c, 1);
            errs++;
        } else {
            r->via[i] = (size_t)idx;
        }
    }
    if (jn_node_get(v, "to") != NULL && r->rc.to.n == 0) {
        jn_diag_add(d, elem_pos(v, "to", 0), "%s: to: the list is empty, expected at least one "
                    "OUT channel", what);
        errs++;
    }
    if (jn_node_get(v, "from") != NULL && r->rc.from.n == 0) {
        jn_diag_add(d, elem_pos(v, "from", 0), "%s: from: the list is empty, expected at least "
                    "one IN channel", what);
        errs++;
    }
    for (size_t i = 0; i < r->rc.to.n; i++) {
        long idx = find_channel(c, r->rc.to.v[i]);
        if (idx < 0) {
            unknown_name(d, elem_pos(v, "to", i), what, "to", r->rc.to.v[i], c, 0);
            errs++;
        } else if (c->channels[idx].dir == 0) {
            errs++;
        } else if (c->channels[idx].dir != JN_DIR_OUT) {
            jn_diag_add(d, elem_pos(v, "to", i), "%s: to: '%s' is an IN channel and cannot be a "
                        "destination, expected an OUT channel (direction: out)", what,
                        r->rc.to.v[i]);
            errs++;
        } else {
            for (size_t j = 0; j < i; j++) {
                /* By name: r->to[j] is unset (0) when destination j was refused above. */
                if (strcmp(r->rc.to.v[j], r->rc.to.v[i]) == 0) {
                    jn_diag_add(d, elem_pos(v, "to", i), "%s: to: '%s' is listed twice, "
                                "expected each destination once", what, r->rc.to.v[i]);
                    errs++;
                }
            }
            r->to[i] = (size_t)idx;
        }
    }
    r->notify_chan = -1;
    r->notify_mask = JN_NOTIFY_DELIVERED | JN_NOTIFY_FAILED | JN_NOTIFY_DEAD;
    if (r->rc.notify_on.n) {
        r->notify_mask = 0;
        for (size_t i = 0; i < r->rc.notify_on.n; i++) {
            const char *e = r->rc.notify_on.v[i];
            if (strcmp(e, "delivered") == 0) {
                r->notify_mask |= JN_NOTIFY_DELIVERED;
            } else if (strcmp(e, "failed") == 0) {
                r->notify_mask |= JN_NOTIFY_FAILED;
            } else if (strcmp(e, "dead-lettered") == 0) {
                r->notify_mask |= JN_NOTIFY_DEAD;
            } else {
                jn_diag_add(d, elem_pos(v, "notify_on", i), "%s: notify_on: '%s' is not an "
                            "event, expected delivered, failed or dead-lettered", what, e);
                errs++;
            }
        }
    }
    if ((r->rc.notify_secret || r->rc.notify_on.n) && r->rc.notify == NULL) {
        jn_diag_add(d, &k->pos, "%s: notify_secret and notify_on need notify: <callback URL>",
                    what);
        errs++;
    }
    if (r->rc.when != NULL) {
        const struct jn_node *w = jn_node_get(v, "when");
        struct jn_pos p = w->pos;
        if (!w->plain) {
            p.col++; /* the opening quote */
        }
        r->cond = jn_cond_compile(r->rc.when, &p, d);
        if (r->cond == NULL) {
            errs++;
        }
    }
    return errs;
}


/* ---- the matcher ---- */

int jn_router_reads_from(const struct jn_cfg_route *r, size_t src)
{
    for (size_t k = 0; k < r->rc.from.n; k++) {
        if (r->from[k] == src) {
            return 1;
        }
    }
    return 0;
}

/* Runs a route's services; outputs in out, and in stages[i] (when not NULL: via.n - 1 lists)
 * those of service i but the last. 0, or JN_E* with the reason in err (then stages are
 * emptied). */
static int run_chain(const struct jn_cfg_route *r, struct jn_msg *m,
                     const struct jn_service *svcs, struct jn_idgen *ids,
                     struct jn_msg_list *out, struct jn_msg_list *stages, struct jn_err *err)
{
    struct jn_msg_list cur = {0};

    if (jn_msg_list_push(&cur, jn_msg_ref(m)) != 0) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->rc.via.n; i++) {
        const struct jn_service *s = &svcs[r->via[i]];
        struct jn_msg_list next = {0};
        for (size_t k = 0; k < cur.n; k++) {
            struct jn_err e;
            int rc;
            jn_err_clear(&e);
            rc = s->def->transform(s, cur.v[k], &next, &e);
            if (rc != 0) {
                jn_err_set(err, rc, "service '%s' (%s): %s", s->name, s->def->name,
                           e.msg[0] ? e.msg : jn_strerror(rc));
                jn_msg_list_clear(&next);
                jn_msg_list_clear(&cur);
                for (size_t t = 0; stages != NULL && t < i; t++) {
                    jn_msg_list_clear(&stages[t]);
                }
                return rc;
            }
        }
        jn_msg_list_clear(&cur);
        cur = next;
        if (stages != NULL && i + 1 < r->rc.via.n) {
            /* Created messages get their ids here, so a stage's and the end's agree. */
            for (size_t k = 0; k < cur.n; k++) {
                if (cur.v[k]->id[0] == '\0') {
                    jn_idgen_next(ids, cur.v[k]->id);
                }
                if (jn_msg_list_push(&stages[i], jn_msg_ref(cur.v[k])) != 0) {
                    break; /* a stage is for showing: a missing one loses nothing */
                }
            }
        }
    }
    /* A service may create messages of its own; they get ids of their own. */
    for (size_t k = 0; k < cur.n; k++) {
        if (cur.v[k]->id[0] == '\0') {
            jn_idgen_next(ids, cur.v[k]->id);
        }
    }
    *out = cur;
    return 0;
}

size_t jn_router_route(const struct jn_cfg_route *routes, size_t n, size_t src, struct jn_msg *m,
                       const struct jn_service *svcs, struct jn_idgen *ids, jn_route_fn fn,
                       void *arg)
{
    size_t matched = 0;

    for (size_t i = 0; i < n; i++) {
        const struct jn_cfg_route *r = &routes[i];
        struct jn_msg_list outs = {0}, *stages = NULL;
        struct jn_err err;

        if (!jn_router_reads_from(r, src) || (r->cond && !jn_cond_eval(r->cond, m))) {
            continue;
        }
        matched++;
        jn_err_clear(&err);
        if (r->rc.via.n > 1) {
            stages = jn_calloc(r->rc.via.n - 1, sizeof(*stages)); /* NULL: none shown */
        }
        if (run_chain(r, m, svcs, ids, &outs, stages, &err) != 0) {
            fn(arg, r, NULL, NULL, &err);
        } else {
            fn(arg, r, &outs, stages, NULL);
            jn_msg_list_clear(&outs);
        }
        for (size_t t = 0; stages != NULL && t + 1 < r->rc.via.n; t++) {
            jn_msg_list_clear(&stages[t]);
        }
        jn_free(stages);
    }
    return matched;
}

size_t jn_router_explain(const struct jn_cfg_route *routes, size_t n, size_t src,
                         struct jn_buf *why)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++) {
        const struct jn_cfg_route *r = &routes[i];
        if (jn_router_reads_from(r, src)) {
            jn_buf_printf(why, "%sroute '%s' when: %s", count++ ? "; " : "", r->name,
                          r->rc.when ? r->rc.when : "(none)");
        }
    }
    return count;
}

const struct jn_router_ops jn_router_ops = {
    .route = jn_router_route,
    .explain = jn_router_explain,
};
