/*
 * jn_testrun: `junction test` (jn_testrun.h): test files read at file:line:col, each case's
 * message routed offline, the outputs compared, a line per case and JUnit XML.
 *
 * What a case's message becomes is what the broker makes of the router's answer
 * (broker/jn_route.c, route_taken and route_unmatched), without the journal: a route whose
 * services failed dead-letters with the service's reason, a route through services that gave
 * nothing back filtered it, every other output goes to each of the route's `to:` channels, and
 * a message no route took follows `unrouted:` (dead letter, drop, or that channel). The routing
 * itself is cfg->router->route over the instances of jn_services_init, the broker's own code.
 * What this does not see: a destination's queue limits (max_queued, when_full) and the
 * channels' own headers (an HTTP IN's request headers are the case's `headers:`).
 *
 * The YAML trees of the test files stay loaded while the cases run: a case's strings and
 * expected values are borrowed from them.
 */
#include <errno.h>
#include <glob.h>
#include <libgen.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_testrun.h"
#include "jn_testrun_int.h"
#include "jn_yaml.h"

/* ---- a test file, as read ---- */

/* The checks on one message. */
struct msg_check {
    const char *payload; /* NULL: not checked */
    size_t plen;
    char *payload_owned; /* from payload_file */
    const struct jn_node *json, *hl7, *headers;
    regex_t re;
    int has_re;
};

/* What one destination should have received. */
struct dest_check {
    size_t chan;
    const char *name;
    long long count;        /* -1: not given */
    int list;               /* a list of checks, one per message (count = n) */
    struct msg_check *each; /* list: n of them; else one, for every message */
    size_t n;
};

struct tcase {
    const char *name;
    struct jn_pos pos;
    size_t src;
    const char *channel;
    const struct jn_node *headers; /* NULL or a map */
    const char *payload;
    size_t plen;
    char *payload_owned;
    struct dest_check *dests;
    size_t ndests;
    int only;
    int filtered; /* -1: not checked */
    regex_t dl;
    int has_dl;
    const char *dl_src;
};

struct tfile {
    const char *path;
    struct jn_node *root;
    struct tcase *cases;
    size_t n;
};

struct loader {
    const struct jn_config *cfg;
    struct jn_diag *d;
};

static const char *const case_keys[] = {"name", "input", "expect"};
static const char *const input_keys[] = {"channel", "headers", "payload", "payload_file"};
static const char *const check_keys[] = {"count", "payload", "payload_file", "json", "hl7",
                                         "headers", "regex"};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

/* Reports every key of map m not in keys[0..n). Returns the number reported. */
static int unknown_keys(struct loader *L, const struct jn_node *m, const char *what,
                        const char *const *keys, size_t n)
{
    int bad = 0;

    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->keys[i]->str, *near;
        size_t j = 0;
        while (j < n && strcmp(keys[j], k) != 0) {
            j++;
        }
        if (j < n) {
            continue;
        }
        near = jn_nearest(k, keys, n);
        jn_diag_add(L->d, &m->keys[i]->pos, "%s: unknown key '%s'%s%s%s", what, k,
                    near ? ", did you mean '" : "", near ? near : "", near ? "'?" : "");
        bad++;
    }
    return bad;
}

/* A map's value for key that must be a scalar (NULL when absent; reported when not a scalar). */
static const struct jn_node *scalar_at(struct loader *L, const struct jn_node *m, const char *key,
                                       const char *what)
{
    const struct jn_node *v = jn_node_get(m, key);

    if (v != NULL && v->kind != JN_NODE_SCALAR) {
        jn_diag_add(L->d, &v->pos, "%s: %s: expected a scalar, got a %s", what, key,
                    jn_node_kind_name(v));
        return NULL;
    }
    return v;
}

static int bool_at(struct loader *L, const struct jn_node *m, const char *key, const char *what,
                   int dflt)
{
    const struct jn_node *v = scalar_at(L, m, key, what);

    if (v == NULL) {
        return dflt;
    }
    if (v->plain && strcmp(v->str, "true") == 0) {
        return 1;
    }
    if (v->plain && strcmp(v->str, "false") == 0) {
        return 0;
    }
    jn_diag_add(L->d, &v->pos, "%s: %s: '%s' is not a bool, expected true or false", what, key,
                v->str);
    return dflt;
}

/* The bytes of file name (relative to the test file's folder, from node at) into *out. */
static int read_rel(struct loader *L, const struct jn_node *at, const char *what, char **out,
                    size_t *len)
{
    struct jn_buf path = JN_BUF_INIT, b = JN_BUF_INIT;
    char chunk[8192];
    size_t n;
    FILE *f;

    if (at->str[0] != '/' && at->dir != NULL) {
        jn_buf_printf(&path, "%s/%s", at->dir, at->str);
    } else {
        jn_buf_puts(&path, at->str);
    }
    f = path.p ? fopen(path.p, "rb") : NULL;
    if (f == NULL) {
        jn_diag_add(L->d, &at->pos, "%s: payload_file: cannot open %s: %s", what,
                    path.p ? path.p : at->str, strerror(errno));
        jn_buf_reset(&path);
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (jn_buf_append(&b, chunk, n) != 0) {
            break;
        }
    }
    if (ferror(f) || !feof(f)) {
        jn_diag_add(L->d, &at->pos, "%s: payload_file: cannot read %s", what, path.p);
        fclose(f);
        jn_buf_reset(&path);
        jn_buf_reset(&b);
        return -1;
    }
    fclose(f);
    jn_buf_reset(&path);
    *len = b.len;
    *out = b.p ? jn_buf_steal(&b) : jn_strdup("");
    return *out ? 0 : -1;
}

/* `payload:` or `payload_file:` of map m (at most one), into *p / *len (*owned when read). */
static void payload_of(struct loader *L, const struct jn_node *m, const char *what,
                       const char **p, size_t *len, char **owned)
{
    const struct jn_node *v = scalar_at(L, m, "payload", what);
    const struct jn_node *f = scalar_at(L, m, "payload_file", what);

    if (v != NULL && f != NULL) {
        jn_diag_add(L->d, &f->pos, "%s: give payload or payload_file, not both", what);
    } else if (v != NULL) {
        *p = v->str;
        *len = strlen(v->str);
    } else if (f != NULL && read_rel(L, f, what, owned, len) == 0) {
        *p = *owned;
    }
}

static int compile_re(struct loader *L, const struct jn_node *v, const char *what, regex_t *re)
{
    int rc = regcomp(re, v->str, REG_EXTENDED | REG_NOSUB);

    if (rc != 0) {
        char why[256];
        regerror(rc, re, why, sizeof(why));
        jn_diag_add(L->d, &v->pos, "%s: regex /%s/: %s", what, v->str, why);
        return -1;
    }
    return 0;
}

/* A map whose values are scalars (or null), as `hl7:` and `headers:` are. */
static int scalar_map(struct loader *L, const struct jn_node *m, const char *what,
                      const char *key)
{
    if (m->kind != JN_NODE_MAP) {
        jn_diag_add(L->d, &m->pos, "%s: %s: expected a map, got a %s", what, key,
                    jn_node_kind_name(m));
        return -1;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (m->vals[i]->kind != JN_NODE_SCALAR) {
            jn_diag_add(L->d, &m->vals[i]->pos, "%s: %s: %s: expected a scalar, got a %s", what,
                        key, m->keys[i]->str, jn_node_kind_name(m->vals[i]));
            return -1;
        }
    }
    return 0;
}

static void msg_check_read(struct loader *L, const struct jn_node *m, const char *what,
                           struct msg_check *c)
{
    const struct jn_node *re = scalar_at(L, m, "regex", what);

    payload_of(L, m, what, &c->payload, &c->plen, &c->payload_owned);
    c->json = jn_node_get(m, "json");
    c->hl7 = jn_node_get(m, "hl7");
    c->headers = jn_node_get(m, "headers");
    if (c->hl7 != NULL && scalar_map(L, c->hl7, what, "hl7") == 0) {
        for (size_t i = 0; i < c->hl7->n; i++) {
            const char *ps = c->hl7->keys[i]->str;
            struct jn_hl7_path p;
            struct jn_err err;
            jn_err_clear(&err);
            if (jn_hl7_path_parse(ps, strlen(ps), &p, &err) != 0) {
                jn_diag_add(L->d, &c->hl7->keys[i]->pos, "%s: hl7: path '%s': %s", what, ps,
                            err.msg);
            }
        }
    }
    if (c->headers != NULL) {
        scalar_map(L, c->headers, what, "headers");
    }
    if (re != NULL && compile_re(L, re, what, &c->re) == 0) {
        c->has_re = 1;
    }
}

static void msg_check_free(struct msg_check *c)
{
    if (c->has_re) {
        regfree(&c->re);
    }
    jn_free(c->payload_owned);
}

static long chan_find(const struct jn_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nchannels; i++) {
        if (strcmp(cfg->channels[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* "unknown channel 'x', did you mean 'y'?" among the channels of direction dir. */
static void chan_unknown(struct loader *L, const struct jn_node *at, const char *what,
                         const char *name, unsigned dir)
{
    const char **names = jn_calloc(L->cfg->nchannels + 1, sizeof(*names));
    const char *near = NULL;
    size_t n = 0;
    long i = chan_find(L->cfg, name);

    for (size_t k = 0; names != NULL && k < L->cfg->nchannels; k++) {
        if (L->cfg->channels[k].dir == dir) {
            names[n++] = L->cfg->channels[k].name;
        }
    }
    near = names ? jn_nearest(name, names, n) : NULL;
    jn_diag_add(L->d, &at->pos, "%s: %s '%s' %s%s%s%s", what,
                dir == JN_DIR_IN ? "channel" : "destination", name,
                i >= 0 ? (dir == JN_DIR_IN ? "is not an IN channel" : "is not an OUT channel")
                       : "is not a channel of the config",
                near ? ", did you mean '" : "", near ? near : "", near ? "'?" : "");
    jn_free(names);
}

static void dest_read(struct loader *L, const struct jn_node *k, const struct jn_node *v,
                      const char *what, struct dest_check *dc)
{
    char sub[400];
    long ci = chan_find(L->cfg, k->str);

    dc->name = k->str;
    dc->count = -1;
    if (ci < 0 || L->cfg->channels[ci].dir != JN_DIR_OUT) {
        chan_unknown(L, k, what, k->str, JN_DIR_OUT);
        return;
    }
    dc->chan = (size_t)ci;
    snprintf(sub, sizeof(sub), "%s: %s", what, k->str);
    if (v->kind == JN_NODE_SEQ) {
        dc->list = 1;
        dc->n = v->n;
        dc->each = jn_calloc(v->n + 1, sizeof(*dc->each));
        for (size_t i = 0; dc->each != NULL && i < v->n; i++) {
            char sub2[440];
            snprintf(sub2, sizeof(sub2), "%s[%zu]", sub, i);
            if (v->vals[i]->kind != JN_NODE_MAP) {
                jn_diag_add(L->d, &v->vals[i]->pos, "%s: expected a map of checks, got a %s",
                            sub2, jn_node_kind_name(v->vals[i]));
                continue;
            }
            unknown_keys(L, v->vals[i], sub2, check_keys + 1, NKEYS(check_keys) - 1);
            msg_check_read(L, v->vals[i], sub2, &dc->each[i]);
        }
        return;
    }
    if (v->kind != JN_NODE_MAP) {
        jn_diag_add(L->d, &v->pos, "%s: expected a map of checks or a list of them (one per "
                    "message), got a %s", sub, jn_node_kind_name(v));
        return;
    }
    dc->n = 1;
    dc->each = jn_calloc(1, sizeof(*dc->each));
    if (dc->each == NULL) {
        return;
    }
    unknown_keys(L, v, sub, check_keys, NKEYS(check_keys));
    {
        const struct jn_node *c = scalar_at(L, v, "count", sub);
        char *end = NULL;
        if (c != NULL) {
            dc->count = strtoll(c->str, &end, 10);
            if (!c->plain || c->str[0] == '\0' || *end != '\0' || dc->count < 0) {
                jn_diag_add(L->d, &c->pos, "%s: count: '%s' is not a count (0, 1, 2 ...)", sub,
                            c->str);
                dc->count = -1;
            }
        }
    }
    msg_check_read(L, v, sub, &dc->each[0]);
}

static void case_read(struct loader *L, const struct jn_node *m, size_t idx, struct tcase *tc)
{
    char what[300];
    const struct jn_node *name = scalar_at(L, m, "name", "case"), *in, *ex, *ch;

    tc->filtered = -1;
    tc->pos = m->pos;
    tc->name = name ? name->str : NULL;
    if (tc->name == NULL) {
        jn_diag_add(L->d, &m->pos, "case %zu: name: missing", idx + 1);
    }
    if (tc->name != NULL) {
        snprintf(what, sizeof(what), "case '%s'", tc->name);
    } else {
        snprintf(what, sizeof(what), "case %zu", idx + 1);
    }
    unknown_keys(L, m, what, case_keys, NKEYS(case_keys));
    in = jn_node_get(m, "input");
    ex = jn_node_get(m, "expect");
    if (in == NULL || in->kind != JN_NODE_MAP) {
        jn_diag_add(L->d, in ? &in->pos : &m->pos, "%s: input: %s", what,
                    in ? "expected a map (channel, headers, payload)" : "missing");
        in = NULL;
    }
    if (ex == NULL || ex->kind != JN_NODE_MAP) {
        jn_diag_add(L->d, ex ? &ex->pos : &m->pos, "%s: expect: %s", what,
                    ex ? "expected a map (destinations, dead_letter, filtered, only)"
                       : "missing");
        ex = NULL;
    }
    if (in != NULL) {
        char iw[320];
        snprintf(iw, sizeof(iw), "%s: input", what);
        unknown_keys(L, in, iw, input_keys, NKEYS(input_keys));
        ch = scalar_at(L, in, "channel", iw);
        if (ch == NULL) {
            jn_diag_add(L->d, &in->pos, "%s: channel: missing", iw);
        } else {
            long ci = chan_find(L->cfg, ch->str);
            if (ci < 0 || L->cfg->channels[ci].dir != JN_DIR_IN) {
                chan_unknown(L, ch, iw, ch->str, JN_DIR_IN);
            } else {
                tc->src = (size_t)ci;
                tc->channel = ch->str;
            }
        }
        tc->headers = jn_node_get(in, "headers");
        if (tc->headers != NULL && tc->headers->kind != JN_NODE_MAP) {
            jn_diag_add(L->d, &tc->headers->pos, "%s: headers: expected a map, got a %s", iw,
                        jn_node_kind_name(tc->headers));
            tc->headers = NULL;
        }
        for (size_t i = 0; tc->headers != NULL && i < tc->headers->n; i++) {
            const struct jn_node *hv = tc->headers->vals[i];
            int ok = hv->kind == JN_NODE_SCALAR;
            for (size_t k = 0; hv->kind == JN_NODE_SEQ && k < hv->n; k++) {
                ok = hv->vals[k]->kind == JN_NODE_SCALAR;
            }
            if (!ok) {
                jn_diag_add(L->d, &hv->pos, "%s: headers: %s: expected a value or a list of "
                            "values", iw, tc->headers->keys[i]->str);
            }
        }
        tc->payload = "";
        payload_of(L, in, iw, &tc->payload, &tc->plen, &tc->payload_owned);
    }
    if (ex == NULL) {
        return;
    }
    tc->dests = jn_calloc(ex->n + 1, sizeof(*tc->dests));
    for (size_t i = 0; tc->dests != NULL && i < ex->n; i++) {
        const char *k = ex->keys[i]->str;
        char ew[340];
        snprintf(ew, sizeof(ew), "%s: expect", what);
        if (strcmp(k, "dead_letter") == 0) {
            const struct jn_node *v = scalar_at(L, ex, k, ew);
            if (v != NULL && compile_re(L, v, ew, &tc->dl) == 0) {
                tc->has_dl = 1;
                tc->dl_src = v->str;
            }
        } else if (strcmp(k, "filtered") == 0) {
            tc->filtered = bool_at(L, ex, k, ew, -1);
        } else if (strcmp(k, "only") == 0) {
            tc->only = bool_at(L, ex, k, ew, 0);
        } else {
            dest_read(L, ex->keys[i], ex->vals[i], ew, &tc->dests[tc->ndests++]);
        }
    }
}

static void case_free(struct tcase *tc)
{
    for (size_t i = 0; i < tc->ndests; i++) {
        for (size_t k = 0; tc->dests[i].each != NULL && k < tc->dests[i].n; k++) {
            msg_check_free(&tc->dests[i].each[k]);
        }
        jn_free(tc->dests[i].each);
    }
    jn_free(tc->dests);
    jn_free(tc->payload_owned);
    if (tc->has_dl) {
        regfree(&tc->dl);
    }
}

static void file_read(struct loader *L, const char *path, struct tfile *f)
{
    const struct jn_node *cases;

    f->path = path;
    f->root = jn_yaml_load_file(path, L->d, NULL);
    if (f->root == NULL) {
        return;
    }
    if (f->root->kind != JN_NODE_MAP) {
        jn_diag_add(L->d, &f->root->pos, "a test file is a map with `cases:`, got a %s",
                    jn_node_kind_name(f->root));
        return;
    }
    {
        static const char *const top[] = {"cases"};
        unknown_keys(L, f->root, "test file", top, 1);
    }
    cases = jn_node_get(f->root, "cases");
    if (cases == NULL || cases->kind != JN_NODE_SEQ) {
        jn_diag_add(L->d, cases ? &cases->pos : &f->root->pos, "cases: %s",
                    cases ? "expected a list of cases" : "missing");
        return;
    }
    f->cases = jn_calloc(cases->n + 1, sizeof(*f->cases));
    for (size_t i = 0; f->cases != NULL && i < cases->n; i++) {
        if (cases->vals[i]->kind != JN_NODE_MAP) {
            jn_diag_add(L->d, &cases->vals[i]->pos, "case %zu: expected a map (name, input, "
                        "expect), got a %s", i + 1, jn_node_kind_name(cases->vals[i]));
            continue;
        }
        case_read(L, cases->vals[i], i, &f->cases[f->n++]);
    }
}

static void file_free(struct tfile *f)
{
    for (size_t i = 0; i < f->n; i++) {
        case_free(&f->cases[i]);
    }
    jn_free(f->cases);
    jn_node_free(f->root);
}

/* ---- running a case ---- */

static void add_dead(struct jn_testrun_outcome *o, const char *route, const char *reason)
{
    if (o->ndead == o->capdead) {
        size_t cap = o->capdead ? 2 * o->capdead : 4;
        struct jn_testrun_dead *v = jn_realloc(o->dead, cap * sizeof(*v));
        if (v == NULL) {
            o->oom = 1;
            return;
        }
        o->dead = v;
        o->capdead = cap;
    }
    snprintf(o->dead[o->ndead].route, sizeof(o->dead[0].route), "%s", route ? route : "");
    snprintf(o->dead[o->ndead].reason, sizeof(o->dead[0].reason), "%s", reason);
    o->ndead++;
}

/* The router's callback: what broker/jn_route.c's route_taken makes of a route's outputs. */
static void collect(void *arg, const struct jn_cfg_route *r, const struct jn_msg_list *outs,
                    const struct jn_msg_list *stages, const struct jn_err *err)
{
    (void)stages;
    struct jn_testrun_outcome *o = arg;

    if (outs == NULL) {
        add_dead(o, r->name, err->msg);
        return;
    }
    if (r->rc.via.n > 0 && outs->n == 0) {
        if (o->nfiltered < sizeof(o->filtered) / sizeof(o->filtered[0])) {
            o->filtered[o->nfiltered] = r->name;
        }
        o->nfiltered++;
        return;
    }
    for (size_t k = 0; k < outs->n; k++) {
        for (size_t d = 0; d < r->rc.to.n; d++) {
            if (jn_msg_list_push(&o->got[r->to[d]], jn_msg_ref(outs->v[k])) != 0) {
                o->oom = 1;
            }
        }
    }
}

int jn_testrun__route(const struct jn_config *cfg, const struct jn_service *svcs,
                      struct jn_idgen *ids, size_t src, struct jn_msg *m,
                      struct jn_testrun_outcome *o)
{
    size_t matched = cfg->router->route(cfg->routes, cfg->nroutes, src, m, svcs, ids, collect, o);

    if (matched == 0) {
        switch (cfg->unrouted) {
        case JN_UNROUTED_DEAD_LETTER:
            add_dead(o, NULL, "unrouted: no route took the message");
            break;
        case JN_UNROUTED_DROP:
            o->dropped = 1;
            break;
        case JN_UNROUTED_CHANNEL:
            if (jn_msg_list_push(&o->got[cfg->unrouted_channel], jn_msg_ref(m)) != 0) {
                o->oom = 1;
            }
            break;
        }
    }
    return o->oom ? JN_ENOMEM : 0;
}

/* Routes the case's message as the broker would; 0, or JN_ENOMEM. */
static int route_case(const struct jn_config *cfg, const struct jn_service *svcs,
                      struct jn_idgen *ids, const struct tcase *tc, struct jn_testrun_outcome *o)
{
    struct jn_msg *m = jn_msg_new(tc->channel, tc->payload, tc->plen);
    int rc;

    if (m == NULL) {
        return JN_ENOMEM;
    }
    for (size_t i = 0; tc->headers != NULL && i < tc->headers->n; i++) {
        const struct jn_node *hv = tc->headers->vals[i];
        const char *name = tc->headers->keys[i]->str;
        for (size_t k = 0; k < (hv->kind == JN_NODE_SEQ ? hv->n : 1); k++) {
            const char *v = hv->kind == JN_NODE_SEQ ? hv->vals[k]->str : hv->str;
            if (jn_msg_header_add(m, name, v) != 0) {
                jn_msg_unref(&m);
                return JN_ENOMEM;
            }
        }
    }
    jn_idgen_next(ids, m->id); /* as jn_ingest gives it one */
    rc = jn_testrun__route(cfg, svcs, ids, tc->src, m, o);
    jn_msg_unref(&m);
    return rc;
}

/* The checks of c on m; differences appended to out. Returns their number. */
static int check_msg(const struct msg_check *c, const struct jn_msg *m, const char *prefix,
                     struct jn_buf *out)
{
    int n = 0;

    if (c->payload != NULL) {
        n += jn_testrun__payload(c->payload, c->plen, m, prefix, out);
    }
    if (c->has_re && regexec(&c->re, (const char *)m->payload, 0, NULL, 0) != 0) {
        struct jn_buf q = JN_BUF_INIT;
        jn_testrun__quote(&q, m->payload, m->len, 200);
        jn_buf_printf(out, "%sregex: no match in the payload %s\n", prefix, q.p ? q.p : "");
        jn_buf_reset(&q);
        n++;
    }
    if (c->json != NULL) {
        n += jn_testrun__json(c->json, m, prefix, out);
    }
    if (c->hl7 != NULL) {
        n += jn_testrun__hl7(c->hl7, m, prefix, out);
    }
    if (c->headers != NULL) {
        n += jn_testrun__headers(c->headers, m, prefix, out);
    }
    return n;
}

/* One line with what happened to the message, for a failed case. */
static void what_happened(const struct jn_testrun_outcome *o, struct jn_buf *out)
{
    const struct jn_config *cfg = o->cfg;
    const char *sep = "";

    jn_buf_puts(out, "    what happened: ");
    for (size_t i = 0; i < cfg->nchannels; i++) {
        if (o->got[i].n > 0) {
            jn_buf_printf(out, "%s%zu to %s", sep, o->got[i].n, cfg->channels[i].name);
            sep = ", ";
        }
    }
    for (size_t i = 0; i < o->ndead; i++) {
        const char *r = o->dead[i].route;
        jn_buf_printf(out, "%sdead-lettered%s%s%s: %s", sep, r[0] ? " by route '" : "", r,
                      r[0] ? "'" : "", o->dead[i].reason);
        sep = "; ";
    }
    for (size_t i = 0; i < o->nfiltered && i < sizeof(o->filtered) / sizeof(o->filtered[0]); i++) {
        jn_buf_printf(out, "%sfiltered by route '%s'", sep, o->filtered[i]);
        sep = ", ";
    }
    if (o->dropped) {
        jn_buf_printf(out, "%sdropped (unrouted: drop)", sep);
        sep = ", ";
    }
    jn_buf_puts(out, sep[0] ? "\n" : "nothing was sent anywhere\n");
}

/* Compares the outcome with the case's expectations; the differences go to out. Returns how
 * many there were (0: the case passes). */
static int judge(const struct tcase *tc, const struct jn_testrun_outcome *o, struct jn_buf *out)
{
    const struct jn_config *cfg = o->cfg;
    int bad = 0;

    for (size_t i = 0; i < tc->ndests; i++) {
        const struct dest_check *dc = &tc->dests[i];
        const struct jn_msg_list *got = &o->got[dc->chan];
        long long want = dc->list ? (long long)dc->n : dc->count;
        if (want >= 0 ? (long long)got->n != want : got->n == 0) {
            jn_buf_printf(out, "    %s: expected %s%lld message(s), got %zu\n", dc->name,
                          want >= 0 ? "" : "at least ", want >= 0 ? want : 1, got->n);
            bad++;
        }
        for (size_t k = 0; dc->each != NULL && k < got->n && (!dc->list || k < dc->n); k++) {
            char prefix[300];
            snprintf(prefix, sizeof(prefix), "    %s[%zu]: ", dc->name, k);
            bad += check_msg(&dc->each[dc->list ? k : 0], got->v[k], prefix, out);
        }
    }
    for (size_t c = 0; tc->only && c < cfg->nchannels; c++) {
        size_t i = 0;
        while (i < tc->ndests && tc->dests[i].chan != c) {
            i++;
        }
        if (i == tc->ndests && o->got[c].n > 0) {
            jn_buf_printf(out, "    %s: expected nothing (only: true), got %zu message(s)\n",
                          cfg->channels[c].name, o->got[c].n);
            bad++;
        }
    }
    if (tc->has_dl) {
        size_t i = 0;
        while (i < o->ndead && regexec(&tc->dl, o->dead[i].reason, 0, NULL, 0) != 0) {
            i++;
        }
        if (i == o->ndead) {
            jn_buf_printf(out, "    dead_letter: expected a dead letter whose reason matches "
                          "/%s/, %s\n", tc->dl_src, o->ndead ? "got other reasons" : "got none");
            bad++;
        }
    } else {
        /* A dead letter is never what a case silently accepts. */
        for (size_t i = 0; i < o->ndead; i++) {
            jn_buf_printf(out, "    dead-lettered%s%s%s (not expected): %s\n",
                          o->dead[i].route[0] ? " by route '" : "", o->dead[i].route,
                          o->dead[i].route[0] ? "'" : "", o->dead[i].reason);
            bad++;
        }
    }
    if (tc->filtered >= 0 && (o->nfiltered > 0) != tc->filtered) {
        jn_buf_printf(out, "    filtered: expected %s, %s\n", tc->filtered ? "true" : "false",
                      o->nfiltered ? "a route's services dropped it"
                                   : "no route's services dropped it");
        bad++;
    }
    if (bad) {
        what_happened(o, out);
    }
    return bad;
}

/* ---- reports ---- */

struct result {
    const struct tfile *file;
    const struct tcase *tc;
    int failed;
    char *details; /* owned; NULL when it passed */
    double secs;
};

static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '&') {
            fputs("&amp;", f);
        } else if (c == '<') {
            fputs("&lt;", f);
        } else if (c == '>') {
            fputs("&gt;", f);
        } else if (c == '"') {
            fputs("&quot;", f);
        } else if (c < 0x20 && c != '\n' && c != '\t') {
            fprintf(f, "\\x%02x", c); /* not allowed in XML 1.0, even as a reference */
        } else {
            fputc(c, f);
        }
    }
}

/* JUnit XML: one testsuite per test file, one testcase per case, a failure with the details. */
static int write_junit(const char *path, const struct tfile *files, size_t nfiles,
                       const struct result *res, size_t nres, FILE *err)
{
    FILE *f = fopen(path, "w");
    size_t k = 0, nfail = 0;

    if (f == NULL) {
        fprintf(err, "junction test: --junit %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < nres; i++) {
        nfail += res[i].failed;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"junction test\" "
            "tests=\"%zu\" failures=\"%zu\" errors=\"0\">\n", nres, nfail);
    for (size_t fi = 0; fi < nfiles; fi++) {
        size_t n = 0, nf = 0;
        double secs = 0;
        for (size_t i = k; i < nres && res[i].file == &files[fi]; i++, n++) {
            nf += res[i].failed;
            secs += res[i].secs;
        }
        fputs("  <testsuite name=\"", f);
        xml_text(f, files[fi].path);
        fprintf(f, "\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" skipped=\"0\" "
                "time=\"%.6f\">\n", n, nf, secs);
        for (; k < nres && res[k].file == &files[fi]; k++) {
            fputs("    <testcase classname=\"", f);
            xml_text(f, files[fi].path);
            fputs("\" name=\"", f);
            xml_text(f, res[k].tc->name);
            fprintf(f, "\" time=\"%.6f\"", res[k].secs);
            if (!res[k].failed) {
                fputs("/>\n", f);
                continue;
            }
            fputs(">\n      <failure message=\"", f);
            {
                /* The first difference, as the message; all of them as the text. */
                const char *d = res[k].details ? res[k].details : "";
                size_t len = strcspn(d, "\n");
                char *first = jn_strndup(d, len);
                const char *s = first ? first : "";
                xml_text(f, s + strspn(s, " "));
                jn_free(first);
            }
            fputs("\" type=\"junction.test\">", f);
            xml_text(f, res[k].details);
            fputs("</failure>\n    </testcase>\n", f);
        }
        fputs("  </testsuite>\n", f);
    }
    fputs("</testsuites>\n", f);
    if (fclose(f) != 0) {
        fprintf(err, "junction test: --junit %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the command ---- */

/* The default files: the .yaml files in <config folder>/tests/. Fills *g (globfree it). 0 or 2. */
static int default_files(const struct jn_testrun_opts *o, glob_t *g, FILE *err)
{
    char *copy;
    struct jn_buf pat = JN_BUF_INIT;
    int rc;

    if (o->config_path == NULL) {
        fprintf(err, "junction test: no test files given, and the embedded config has no folder "
                "to look in: give FILE.yaml or -c CONFIG\n");
        return 2;
    }
    copy = jn_strdup(o->config_path);
    if (copy == NULL || jn_buf_printf(&pat, "%s/tests/*.yaml", dirname(copy)) != 0) {
        jn_free(copy);
        fprintf(err, "junction test: out of memory\n");
        return 2;
    }
    jn_free(copy);
    rc = glob(pat.p, 0, NULL, g); /* sorted by name */
    if (rc != 0) {
        fprintf(err, "junction test: no test files: %s matches nothing (give FILE.yaml, or put "
                "them there)\n", pat.p);
        jn_buf_reset(&pat);
        return 2;
    }
    jn_buf_reset(&pat);
    return 0;
}

int jn_testrun_main(const struct jn_testrun_opts *o, FILE *out, FILE *err)
{
    const struct jn_config *cfg = o->cfg;
    struct loader L;
    struct jn_diag d;
    glob_t g = {0};
    int use_glob = o->nfiles == 0, rc = 0;
    size_t nfiles = use_glob ? 0 : (size_t)o->nfiles, ncases = 0, nres = 0, nfail = 0;
    struct tfile *files = NULL;
    struct result *res = NULL;
    struct jn_service *svcs = NULL;
    struct jn_msg_list *got = NULL;
    struct jn_idgen ids;
    struct jn_err e;

    if (use_glob) {
        if ((rc = default_files(o, &g, err)) != 0) {
            return rc;
        }
        nfiles = g.gl_pathc;
    }
    jn_diag_init(&d);
    L = (struct loader){cfg, &d};
    files = jn_calloc(nfiles + 1, sizeof(*files));
    for (size_t i = 0; files != NULL && i < nfiles; i++) {
        file_read(&L, use_glob ? g.gl_pathv[i] : o->files[i], &files[i]);
        ncases += files[i].n;
    }
    if (files == NULL || d.nerr > 0 || d.oom) {
        jn_diag_print(&d, err);
        fprintf(err, "junction test: %zu error(s) in the test files; nothing was run\n",
                d.nerr ? d.nerr : 1);
        rc = 2;
        goto out;
    }
    jn_diag_print(&d, err); /* warnings */
    jn_err_clear(&e);
    jn_idgen_init(&ids);
    svcs = jn_calloc(cfg->nservices + 1, sizeof(*svcs));
    got = jn_calloc(cfg->nchannels + 1, sizeof(*got));
    res = jn_calloc(ncases + 1, sizeof(*res));
    if (svcs == NULL || got == NULL || res == NULL ||
        jn_services_init(svcs, cfg->services, cfg->nservices, &e) != 0) {
        fprintf(err, "junction test: cannot start the services: %s\n",
                e.msg[0] ? e.msg : "out of memory");
        rc = 2;
        goto out_services;
    }
    for (size_t fi = 0; fi < nfiles; fi++) {
        for (size_t ci = 0; ci < files[fi].n; ci++) {
            const struct tcase *tc = &files[fi].cases[ci];
            struct jn_testrun_outcome oc = {.cfg = cfg, .got = got};
            struct jn_buf det = JN_BUF_INIT;
            struct result *r = &res[nres++];
            double t0 = now_s();
            r->file = &files[fi];
            r->tc = tc;
            if (route_case(cfg, svcs, &ids, tc, &oc) != 0) {
                jn_buf_puts(&det, "    out of memory routing the message\n");
                r->failed = 1;
            } else {
                r->failed = judge(tc, &oc, &det) > 0;
            }
            r->secs = now_s() - t0;
            fprintf(out, "%s %s", r->failed ? "FAIL" : "PASS", tc->name);
            if (r->failed) {
                fprintf(out, "  (%s:%d)\n%s", tc->pos.file, tc->pos.line, det.p ? det.p : "");
                r->details = jn_buf_steal(&det);
                nfail++;
            } else {
                fputc('\n', out);
            }
            jn_buf_reset(&det);
            for (size_t k = 0; k < cfg->nchannels; k++) {
                jn_msg_list_clear(&got[k]);
            }
            jn_free(oc.dead);
        }
    }
    fprintf(out, "%zu passed, %zu failed (%zu case(s) in %zu file(s))\n", nres - nfail, nfail,
            nres, nfiles);
    rc = nfail ? 1 : 0;
    if (o->junit != NULL && write_junit(o->junit, files, nfiles, res, nres, err) != 0) {
        rc = 2;
    }
out_services:
    if (svcs != NULL) {
        jn_services_destroy(svcs, cfg->nservices);
    }
    jn_free(svcs);
    jn_free(got);
    for (size_t i = 0; i < nres; i++) {
        jn_free(res[i].details);
    }
    jn_free(res);
    jn_idgen_destroy(&ids);
out:
    for (size_t i = 0; files != NULL && i < nfiles; i++) {
        file_free(&files[i]);
    }
    jn_free(files);
    jn_diag_free(&d);
    if (use_glob) {
        globfree(&g);
    }
    return rc;
}
