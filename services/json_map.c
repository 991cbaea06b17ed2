/*
 * json-map: reshape a JSON object payload by path: copy, rename, set, set_json, then remove.
 *
 *   services:
 *     order-fields:
 *       type: json-map
 *       copy: {id: order_id}
 *       rename: {customer.name: customer_name}
 *       set: {source: "{channel}"}
 *       set_json: {meta.v: "2"}
 *       remove: [debug]
 *
 * Modelled on Fluent Bit's modify / nest filters (a fixed list of edits applied in a fixed
 * order, every path compiled at load) and JSON Patch (RFC 6902) for what an array index may
 * do: an index equal to the array's length appends, anything further is an error.
 *
 * Paths: dot-separated member names with [N] array indexes: `customer.name`, `items[0].sku`,
 * `tags[2]`. A path starts with a name, so the payload must be a JSON object. '\' takes the
 * next character literally, for names holding '.', '[', ']' or '\'.
 *
 * prune_empty (default on): an object a rename or remove emptied is removed at the end of the
 * message, and each object above it on the path that held only it, so moving the only member
 * out of `customer` does not leave `"customer":{}`. Only objects that lost a member are noted
 * (a reference of ours, compared by identity at the end), so `{}` from the input, from set_json
 * or copy, or one that replaced the emptied object stays. The walk stops at arrays: removing an
 * element would renumber the ones after it.
 *
 * JSON is parsed with jansson (objects keep insertion order; its parser stops at 2048 levels).
 * The result is written by our own compact serializer instead of json_dumps(): jansson prints
 * reals with 17 significant digits, so 19.99 would leave as 19.989999999999998. We print the
 * shortest text that reads back as the same double, so numbers pass through as written.
 *
 * Threads: init builds read-only state; transform only reads it (set_json literals are
 * deep-copied per message, never shared into a message's tree).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "jn_template.h"

/* An index has at most 9 digits, so parsing it cannot overflow. */
#define JM_MAX_INDEX_DIGITS 9
/* The serializer recurses once per level. jansson's parser stops at 2048; paths and set_json
 * literals can add more, so allow twice that before refusing instead of exhausting the stack. */
#define JM_MAX_DEPTH 4096

struct json_map_conf {
    struct jn_strmap copy;
    struct jn_strmap rename;
    struct jn_strmap set;
    struct jn_strmap set_json;
    struct jn_strlist remove;
    bool strict;
    bool prune_empty;
};


/* One step of a path: an object member (key != NULL) or an array element (idx). */
struct jm_seg {
    const char *key; /* unescaped, NUL-terminated; NULL for an index */
    size_t idx;
    size_t end;      /* offset in the path text just past this step, to name prefixes */
};

struct jm_path {
    const char *text;   /* as written; borrowed from the conf, which outlives the state */
    struct jm_seg *seg; /* one allocation: the steps, then their unescaped names */
    size_t n;
};

enum jm_kind {
    JM_COPY,
    JM_RENAME,
    JM_SET,
    JM_SET_JSON,
    JM_REMOVE,
};

static const char *const jm_kind_names[] = {"copy", "rename", "set", "set_json", "remove"};

struct jm_op {
    enum jm_kind kind;
    struct jm_path src; /* copy, rename */
    struct jm_path dst; /* the path written (copy, rename, set, set_json) or removed */
    const char *tmpl;   /* set; borrowed from the conf */
    json_t *lit;        /* set_json; parsed once, deep-copied per message */
};

struct jm_state {
    struct jm_op *ops;
    size_t n;
    size_t ndel; /* rename and remove ops: each deletes at most one value per message */
    bool strict;
    bool prune_empty;
};

/* An object a rename or remove took a member from (a reference of ours), and the path of that
 * member; pruned at the end of the message if it is still there and still empty. */
struct jm_emptied {
    json_t *obj;
    const struct jm_path *p;
};

/* The objects one message's deletions emptied, in the order of the deletions. */
struct jm_prune {
    struct jm_emptied *v; /* room for the state's ndel, or NULL when not pruning */
    size_t n;
};

/* ---- paths ---- */

/* 1 when s[0..n) is UTF-8 as jansson accepts it (no overlong forms, surrogates or code points
 * above U+10FFFF): every member name and string we hand it must be. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i], cp;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len) {
            return 0;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0;
        }
        i += len;
    }
    return 1;
}

/* The 1-based character (not byte) position of offset i in s, for messages. */
static size_t char_pos(const char *s, size_t i)
{
    size_t n = 1;

    for (size_t k = 0; k < i; k++) {
        n += ((unsigned char)s[k] & 0xC0) != 0x80;
    }
    return n;
}

/*
 * One pass over a path. With seg == NULL it only validates and counts the steps and the bytes
 * their names need; with seg (room for *nseg steps) and pool (*nbytes bytes) it fills them.
 * JN_EINVAL with why on a syntax error.
 */
static int path_scan(const char *s, struct jm_seg *seg, char *pool, size_t *nseg, size_t *nbytes,
                     char *why, size_t wn)
{
    size_t i = 0, n = 0, used = 0;

    if (*s == '\0') {
        snprintf(why, wn, "the path is empty");
        return JN_EINVAL;
    }
    if (!utf8_valid((const unsigned char *)s, strlen(s))) {
        snprintf(why, wn, "the path is not valid UTF-8");
        return JN_EINVAL;
    }
    for (;;) {
        char *k = pool ? pool + used : NULL;
        size_t len = 0;

        /* A member name runs to '.', '[', ']' or the end; '\' takes the next byte as it is. */
        while (s[i] != '\0' && s[i] != '.' && s[i] != '[' && s[i] != ']') {
            if (s[i] == '\\') {
                if (s[i + 1] == '\0') {
                    snprintf(why, wn, "it ends with a lone '\\'");
                    return JN_EINVAL;
                }
                i++;
            }
            if (k) {
                k[len] = s[i];
            }
            len++;
            i++;
        }
        if (len == 0) {
            if (s[i] == '[') {
                snprintf(why, wn, "expected a member name before '[' at character %zu",
                         char_pos(s, i));
            } else if (s[i] == ']') {
                snprintf(why, wn, "unmatched ']' at character %zu", char_pos(s, i));
            } else if (s[i] == '\0') {
                snprintf(why, wn, "it ends with '.', expected a member name after it");
            } else {
                snprintf(why, wn, "empty member name at character %zu", char_pos(s, i));
            }
            return JN_EINVAL;
        }
        if (seg) {
            k[len] = '\0';
            seg[n].key = k;
            seg[n].idx = 0;
            seg[n].end = i;
        }
        used += len + 1;
        n++;

        /* Then any number of [N]. */
        while (s[i] == '[') {
            size_t open = i, v = 0, nd = 0;
            i++;
            while (s[i] >= '0' && s[i] <= '9') {
                if (nd == JM_MAX_INDEX_DIGITS) {
                    snprintf(why, wn, "the index at character %zu is too large (at most %d "
                             "digits)", char_pos(s, open), JM_MAX_INDEX_DIGITS);
                    return JN_EINVAL;
                }
                v = v * 10 + (size_t)(s[i] - '0');
                nd++;
                i++;
            }
            if (s[i] != ']') {
                const char *close = strchr(s + open, ']');
                if (close == NULL) {
                    snprintf(why, wn, "unclosed '[' at character %zu", char_pos(s, open));
                } else {
                    snprintf(why, wn, "index '%.*s' at character %zu is not a number, expected "
                             "digits", (int)(close - (s + open) - 1), s + open + 1,
                             char_pos(s, open));
                }
                return JN_EINVAL;
            }
            if (nd == 0) {
                snprintf(why, wn, "empty index '[]' at character %zu", char_pos(s, open));
                return JN_EINVAL;
            }
            i++;
            if (seg) {
                seg[n].key = NULL;
                seg[n].idx = v;
                seg[n].end = i;
            }
            n++;
        }
        if (s[i] == '\0') {
            break;
        }
        if (s[i] == ']') {
            snprintf(why, wn, "unmatched ']' at character %zu", char_pos(s, i));
            return JN_EINVAL;
        }
        if (s[i] != '.') {
            snprintf(why, wn, "expected '.' or '[' after ']' at character %zu", char_pos(s, i));
            return JN_EINVAL;
        }
        i++;
    }
    *nseg = n;
    *nbytes = used;
    return 0;
}

/* Compiles text into p, or only validates it when p is NULL. 0, JN_EINVAL with why, or
 * JN_ENOMEM. p->text borrows text. */
static int path_parse(const char *text, struct jm_path *p, char *why, size_t wn)
{
    size_t nseg = 0, nbytes = 0;
    int rc = path_scan(text, NULL, NULL, &nseg, &nbytes, why, wn);
    struct jm_seg *seg;

    if (rc != 0 || p == NULL) {
        return rc;
    }
    seg = jn_malloc(nseg * sizeof(*seg) + nbytes);
    if (seg == NULL) {
        snprintf(why, wn, "out of memory");
        return JN_ENOMEM;
    }
    path_scan(text, seg, (char *)(seg + nseg), &nseg, &nbytes, why, wn);
    p->text = text;
    p->seg = seg;
    p->n = nseg;
    return 0;
}

static void path_free(struct jm_path *p)
{
    jn_free(p->seg);
    p->seg = NULL;
    p->n = 0;
}

/* ---- set_json literals ---- */

/* Parses a set_json value; NULL with why (and *oom for out of memory) when it is not JSON. */
static json_t *literal_parse(const char *text, int *oom, char *why, size_t wn)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);

    *oom = 0;
    if (v == NULL) {
        unsigned char c = (unsigned char)text[strspn(text, " \t\r\n")];
        if (json_error_code(&e) == json_error_out_of_memory) {
            *oom = 1;
            snprintf(why, wn, "out of memory");
            return NULL;
        }
        /* YAML takes the quotes off "Ann": say so, it is the usual mistake. */
        snprintf(why, wn, "'%s' is not valid JSON: %s at line %d column %d%s", text, e.text,
                 e.line, e.column,
                 (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                     ? " (a JSON string keeps its quotes inside the YAML value: '\"text\"')"
                     : "");
    }
    return v;
}

/* ---- check (load time) ---- */

/* Hooks of the options (jn_opt validate), run at load once an option parsed: each error at the
 * entry's own key or value. what is "service 'x' (json-map): copy". Called only when every
 * entry parsed, so map entry i is node's pair i. */
static int json_map__path(const char *text, const struct jn_node *at, const char *what,
                          struct jn_diag *d)
{
    char why[200];

    if (path_parse(text, NULL, why, sizeof(why)) != 0) {
        jn_diag_add(d, &at->pos, "%s: bad path '%s': %s", what, text, why);
        return 1;
    }
    return 0;
}

/* copy, rename: path -> path. */
static int json_map__check_moves(const void *value, const struct jn_node *node, const char *what,
                                 struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    int errs = 0;

    for (size_t i = 0; i < m->n && i < node->n; i++) {
        errs += json_map__path(m->k[i], node->keys[i], what, d);
        errs += json_map__path(m->v[i], node->vals[i], what, d);
    }
    return errs;
}

/* set: path -> template. */
static int json_map__check_set(const void *value, const struct jn_node *node, const char *what,
                               struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    int errs = 0;

    for (size_t i = 0; i < m->n && i < node->n; i++) {
        struct jn_err e;
        errs += json_map__path(m->k[i], node->keys[i], what, d);
        if (jn_template_check(m->v[i], &e) != 0) {
            jn_diag_add(d, &node->vals[i]->pos, "%s.%s: %s", what, m->k[i], e.msg);
            errs++;
        }
    }
    return errs;
}

/* set_json: path -> JSON text. */
static int json_map__check_set_json(const void *value, const struct jn_node *node,
                                    const char *what, struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    int errs = 0;

    for (size_t i = 0; i < m->n && i < node->n; i++) {
        char why[400];
        int oom;
        json_t *v;
        errs += json_map__path(m->k[i], node->keys[i], what, d);
        v = literal_parse(m->v[i], &oom, why, sizeof(why));
        if (v == NULL) {
            jn_diag_add(d, &node->vals[i]->pos, "%s.%s: %s", what, m->k[i], why);
            errs++;
        }
        json_decref(v);
    }
    return errs;
}

/* remove: a path or a list of them. */
static int json_map__check_remove(const void *value, const struct jn_node *node, const char *what,
                                  struct jn_diag *d)
{
    const struct jn_strlist *l = value;
    int errs = 0;

    for (size_t i = 0; i < l->n; i++) {
        errs += json_map__path(l->v[i], node->kind == JN_NODE_SEQ && i < node->n ? node->vals[i]
                                                                              : node, what, d);
    }
    return errs;
}

static const struct jn_opt json_map_opts[] = {
    JN_OPT_STRMAP("copy", 0, struct json_map_conf, copy,
                  "Source path -> destination path: copies the value. Applied first, then "
                  "rename, set, set_json and remove, each in the order written",
                  .validate = json_map__check_moves),
    JN_OPT_STRMAP("rename", 0, struct json_map_conf, rename,
                  "Source path -> destination path: moves the value, which goes last in its "
                  "new object. Applied second",
                  .validate = json_map__check_moves),
    JN_OPT_STRMAP("set", 0, struct json_map_conf, set,
                  "Path -> template ({id}, {channel}, {date}, {time}, {ts}, {header.NAME}): "
                  "sets a JSON string. Applied third",
                  .validate = json_map__check_set),
    JN_OPT_STRMAP("set_json", 0, struct json_map_conf, set_json,
                  "Path -> JSON text, checked at load: 42, true, null, '\"text\"' (a JSON string "
                  "keeps its quotes), '{\"a\": 1}'. Sets that value. Applied fourth",
                  .validate = json_map__check_set_json),
    JN_OPT_STRLIST("remove", NULL, 0, struct json_map_conf, remove,
                   "Paths to delete; removing an array element shifts the later ones down. "
                   "Applied last",
                  .validate = json_map__check_remove),
    JN_OPT_BOOL("strict", "false", 0, struct json_map_conf, strict,
                "When true, a copy, rename or remove whose source path is missing fails the "
                "message; when false it is skipped"),
    JN_OPT_BOOL("prune_empty", "true", 0, struct json_map_conf, prune_empty,
                "When true, an object left empty because rename or remove took its last member "
                "is removed too, and so on up the path; objects empty in the input, written "
                "empty (set_json, copy) or held in an array stay. When false, {} stays"),
    JN_OPT_END
};

static int json_map_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct json_map_conf *c = conf;

    if (c->copy.n + c->rename.n + c->set.n + c->set_json.n + c->remove.n == 0) {
        jn_diag_add(d, node ? &node->pos : NULL, "json-map: nothing to do, expected at least "
                    "one of: copy, rename, set, set_json, remove");
        return 1;
    }
    return 0;
}

/* ---- init / destroy ---- */

static void state_free(struct jm_state *st)
{
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->n; i++) {
        path_free(&st->ops[i].src);
        path_free(&st->ops[i].dst);
        json_decref(st->ops[i].lit);
    }
    jn_free(st->ops);
    jn_free(st);
}

static int compile_path(const char *opt, const char *text, struct jm_path *p, struct jn_err *err)
{
    char why[200];
    int rc = path_parse(text, p, why, sizeof(why));

    if (rc == JN_ENOMEM) {
        return jn_err_set(err, rc, "json-map: out of memory");
    }
    if (rc != 0) {
        return jn_err_set(err, rc, "json-map: %s: bad path '%s': %s", opt, text, why);
    }
    return 0;
}

/* Compiles one option's entries into ops, appending to st (st->n counts the ops begun, so
 * state_free releases a half-built one too). */
static int compile_map(struct jm_state *st, enum jm_kind kind, const struct jn_strmap *m,
                       struct jn_err *err)
{
    const char *opt = jm_kind_names[kind];

    for (size_t i = 0; i < m->n; i++) {
        struct jm_op *op = &st->ops[st->n++];
        int rc;
        op->kind = kind;
        rc = compile_path(opt, m->k[i], kind == JM_COPY || kind == JM_RENAME ? &op->src : &op->dst,
                          err);
        if (rc == 0 && (kind == JM_COPY || kind == JM_RENAME)) {
            rc = compile_path(opt, m->v[i], &op->dst, err);
        }
        if (rc == 0 && kind == JM_SET) {
            struct jn_err e;
            op->tmpl = m->v[i];
            if (jn_template_check(op->tmpl, &e) != 0) {
                rc = jn_err_set(err, JN_EINVAL, "json-map: set.%s: %s", m->k[i], e.msg);
            }
        }
        if (rc == 0 && kind == JM_SET_JSON) {
            char why[400];
            int oom;
            op->lit = literal_parse(m->v[i], &oom, why, sizeof(why));
            if (op->lit == NULL) {
                rc = jn_err_set(err, oom ? JN_ENOMEM : JN_EINVAL, "json-map: set_json.%s: %s",
                                m->k[i], why);
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int json_map_init(struct jn_service *svc, struct jn_err *err)
{
    const struct json_map_conf *c = svc->conf;
    size_t total = c->copy.n + c->rename.n + c->set.n + c->set_json.n + c->remove.n;
    struct jm_state *st = jn_calloc(1, sizeof(*st));
    int rc = 0;

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "json-map: out of memory");
    }
    st->strict = c->strict;
    st->prune_empty = c->prune_empty;
    st->ndel = c->rename.n + c->remove.n;
    st->ops = jn_calloc(total ? total : 1, sizeof(*st->ops));
    if (st->ops == NULL) {
        state_free(st);
        return jn_err_set(err, JN_ENOMEM, "json-map: out of memory");
    }
    /* The order of application is the order of the ops array. */
    rc = compile_map(st, JM_COPY, &c->copy, err);
    if (rc == 0) {
        rc = compile_map(st, JM_RENAME, &c->rename, err);
    }
    if (rc == 0) {
        rc = compile_map(st, JM_SET, &c->set, err);
    }
    if (rc == 0) {
        rc = compile_map(st, JM_SET_JSON, &c->set_json, err);
    }
    for (size_t i = 0; rc == 0 && i < c->remove.n; i++) {
        struct jm_op *op = &st->ops[st->n++];
        op->kind = JM_REMOVE;
        rc = compile_path("remove", c->remove.v[i], &op->dst, err);
    }
    if (rc != 0) {
        state_free(st);
        return rc;
    }
    svc->state = st;
    return 0;
}

static void json_map_destroy(struct jn_service *svc)
{
    state_free(svc->state);
    svc->state = NULL;
}

/* ---- applying paths to a document ---- */

static const char *type_text(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* The first k steps of p as written and quoted, or "the payload" for none. */
static const char *prefix_text(const struct jm_path *p, size_t k, char *buf, size_t n)
{
    if (k == 0) {
        snprintf(buf, n, "the payload");
    } else {
        snprintf(buf, n, "'%.*s'", (int)p->seg[k - 1].end, p->text);
    }
    return buf;
}

/* Step k of p from v: the member or element, or NULL with why. Borrowed. */
static json_t *path_step(json_t *v, const struct jm_path *p, size_t k, char *why, size_t wn)
{
    const struct jm_seg *s = &p->seg[k];
    char pre[160];
    json_t *next;

    if (s->key != NULL) {
        if (!json_is_object(v)) {
            snprintf(why, wn, "%s is %s, not an object", prefix_text(p, k, pre, sizeof(pre)),
                     type_text(v));
            return NULL;
        }
        next = json_object_get(v, s->key);
        if (next == NULL) {
            snprintf(why, wn, "%s has no member '%s'", prefix_text(p, k, pre, sizeof(pre)),
                     s->key);
        }
        return next;
    }
    if (!json_is_array(v)) {
        snprintf(why, wn, "%s is %s, not an array", prefix_text(p, k, pre, sizeof(pre)),
                 type_text(v));
        return NULL;
    }
    if (s->idx >= json_array_size(v)) {
        snprintf(why, wn, "%s has %zu elements, no [%zu]", prefix_text(p, k, pre, sizeof(pre)),
                 json_array_size(v), s->idx);
        return NULL;
    }
    return json_array_get(v, s->idx);
}

/* The value at p, or NULL with why. Borrowed. */
static json_t *path_get(json_t *root, const struct jm_path *p, char *why, size_t wn)
{
    json_t *v = root;

    for (size_t k = 0; k < p->n && v != NULL; k++) {
        v = path_step(v, p, k, why, wn);
    }
    return v;
}

/* Deletes the value at p. 0, or JN_ENOENT with why when there is none. The object or array
 * that held it goes to *holder (borrowed). */
static int path_del(json_t *root, const struct jm_path *p, json_t **holder, char *why, size_t wn)
{
    const struct jm_seg *last = &p->seg[p->n - 1];
    json_t *parent = root;

    for (size_t k = 0; k + 1 < p->n && parent != NULL; k++) {
        parent = path_step(parent, p, k, why, wn);
    }
    if (parent == NULL || path_step(parent, p, p->n - 1, why, wn) == NULL) {
        return JN_ENOENT;
    }
    /* path_step found it, so the parent has the right type and the member or element exists. */
    if (last->key != NULL) {
        json_object_del(parent, last->key);
    } else {
        json_array_remove(parent, last->idx);
    }
    *holder = parent;
    return 0;
}

/* After path_del(p) took a member from holder: remembers holder when it is an object that is
 * not the payload itself and is empty now (arrays stay: see prune_emptied). */
static void prune_note(struct jm_prune *pr, const struct jm_path *p, json_t *holder)
{
    if (pr->v != NULL && p->n >= 2 && json_is_object(holder) && json_object_size(holder) == 0) {
        pr->v[pr->n].obj = json_incref(holder);
        pr->v[pr->n].p = p;
        pr->n++;
    }
}

/*
 * Removes e->obj if it is still where e->p says and still empty, and with it each object above
 * it on the path whose only member that was. Objects empty in the input never lost a member,
 * so they are never noted; the walk stops at an array (removing an element would shift the
 * later ones) and at the payload. One pass down the path: the removal starts at the topmost
 * object of the run of prunable ones that ends at e->obj.
 */
static void prune_emptied(json_t *root, const struct jm_emptied *e)
{
    const struct jm_path *p = e->p;
    json_t *v = root, *cut_holder = NULL;
    const char *cut_key = NULL;
    char why[1]; /* path_step's reason is not needed */

    for (size_t k = 0; k + 1 < p->n; k++) {
        const struct jm_seg *s = &p->seg[k];
        json_t *next = path_step(v, p, k, why, sizeof(why));
        int deepest = k + 2 == p->n;
        if (next == NULL || (deepest && next != e->obj)) {
            return;
        }
        if (s->key != NULL && json_is_object(next) &&
            json_object_size(next) == (deepest ? 0 : 1)) {
            if (cut_holder == NULL) {
                cut_holder = v;
                cut_key = s->key;
            }
        } else {
            cut_holder = NULL;
        }
        v = next;
    }
    if (cut_holder != NULL) {
        json_object_del(cut_holder, cut_key);
    }
}

/*
 * Stores val at p, creating missing objects on the way (or an array when the next step is an
 * index). An index may be at most the array's length: equal appends. Takes val, also on
 * failure. 0, JN_EINVAL with why, or JN_ENOMEM.
 */
static int path_put(json_t *root, const struct jm_path *p, json_t *val, char *why, size_t wn)
{
    json_t *v = root;
    char pre[160];

    /* The reason for every JN_ENOMEM below; the JN_EINVAL ones write their own. */
    snprintf(why, wn, "out of memory");
    for (size_t k = 0; k < p->n; k++) {
        const struct jm_seg *s = &p->seg[k];
        int last = k + 1 == p->n;
        json_t *next;

        if (s->key != NULL) {
            if (!json_is_object(v)) {
                snprintf(why, wn, "%s is %s, not an object", prefix_text(p, k, pre, sizeof(pre)),
                         type_text(v));
                json_decref(val);
                return JN_EINVAL;
            }
            if (last) {
                /* Steals val even on failure; names were checked for UTF-8 at load. */
                return json_object_set_new_nocheck(v, s->key, val) == 0 ? 0 : JN_ENOMEM;
            }
            next = json_object_get(v, s->key);
            if (next == NULL) {
                next = p->seg[k + 1].key ? json_object() : json_array();
                if (next == NULL || json_object_set_new_nocheck(v, s->key, next) != 0) {
                    json_decref(val);
                    return JN_ENOMEM;
                }
            }
        } else {
            size_t size;
            if (!json_is_array(v)) {
                snprintf(why, wn, "%s is %s, not an array", prefix_text(p, k, pre, sizeof(pre)),
                         type_text(v));
                json_decref(val);
                return JN_EINVAL;
            }
            size = json_array_size(v);
            if (s->idx > size) {
                snprintf(why, wn, "%s has %zu elements: [%zu] is past the end ([%zu] appends)",
                         prefix_text(p, k, pre, sizeof(pre)), size, s->idx, size);
                json_decref(val);
                return JN_EINVAL;
            }
            if (last) {
                int rc = s->idx == size ? json_array_append_new(v, val)
                                        : json_array_set_new(v, s->idx, val);
                return rc == 0 ? 0 : JN_ENOMEM;
            }
            if (s->idx < size) {
                next = json_array_get(v, s->idx);
            } else {
                next = p->seg[k + 1].key ? json_object() : json_array();
                if (next == NULL || json_array_append_new(v, next) != 0) {
                    json_decref(val);
                    return JN_ENOMEM;
                }
            }
        }
        v = next;
    }
    /* Unreachable: a path has at least one step and the last one returns. */
    json_decref(val);
    return JN_EINVAL;
}

/* "copy 'a' -> 'b'" or "set 'a'", to start error messages with. */
static const char *op_text(const struct jm_op *op, char *buf, size_t n)
{
    if (op->kind == JM_COPY || op->kind == JM_RENAME) {
        snprintf(buf, n, "%s '%s' -> '%s'", jm_kind_names[op->kind], op->src.text,
                 op->dst.text);
    } else {
        snprintf(buf, n, "%s '%s'", jm_kind_names[op->kind], op->dst.text);
    }
    return buf;
}

/* Makes the value a set op writes: a JSON string of the rendered template. */
static int render_string(const struct jm_op *op, const struct jn_msg *in, struct jn_buf *tmp,
                         json_t **out, char *why, size_t wn)
{
    struct jn_err e;
    int rc;

    jn_buf_reset(tmp);
    rc = jn_template_render(op->tmpl, in, tmp, &e);
    if (rc != 0) {
        snprintf(why, wn, "%s", e.msg);
        return rc;
    }
    if (!utf8_valid((const unsigned char *)(tmp->p ? tmp->p : ""), tmp->len)) {
        /* A header or channel name with other bytes: JSON strings must be UTF-8. */
        snprintf(why, wn, "the rendered value is not valid UTF-8");
        return JN_EINVAL;
    }
    *out = json_stringn_nocheck(tmp->p ? tmp->p : "", tmp->len);
    if (*out == NULL) {
        snprintf(why, wn, "out of memory");
        return JN_ENOMEM;
    }
    return 0;
}

static int apply(const struct jm_state *st, const struct jm_op *op, json_t *root,
                 const struct jn_msg *in, struct jn_buf *tmp, struct jm_prune *pr,
                 struct jn_err *err)
{
    char why[JN_ERR_MSG_MAX], what[400];
    json_t *v = NULL, *holder = NULL;
    int rc = 0;

    switch (op->kind) {
    case JM_COPY:
    case JM_RENAME:
        v = path_get(root, &op->src, why, sizeof(why));
        if (v == NULL) {
            if (!st->strict) {
                return 0;
            }
            return jn_err_set(err, JN_EINVAL, "json-map: %s: source not found: %s",
                              op_text(op, what, sizeof(what)), why);
        }
        if (op->kind == JM_COPY) {
            /* A copy, not a second reference: a later op editing one must not edit both. */
            v = json_deep_copy(v);
            if (v == NULL) {
                snprintf(why, sizeof(why), "out of memory");
                rc = JN_ENOMEM;
            }
        } else if (strcmp(op->src.text, op->dst.text) == 0) {
            return 0;
        } else {
            /* Detach first, so a destination inside the source cannot make a cycle. */
            json_incref(v);
            path_del(root, &op->src, &holder, why, sizeof(why));
            prune_note(pr, &op->src, holder);
        }
        break;
    case JM_SET:
        rc = render_string(op, in, tmp, &v, why, sizeof(why));
        break;
    case JM_SET_JSON:
        v = json_deep_copy(op->lit);
        if (v == NULL) {
            snprintf(why, sizeof(why), "out of memory");
            rc = JN_ENOMEM;
        }
        break;
    case JM_REMOVE:
        rc = path_del(root, &op->dst, &holder, why, sizeof(why));
        if (rc == JN_ENOENT) {
            if (!st->strict) {
                return 0;
            }
            return jn_err_set(err, JN_EINVAL, "json-map: %s: not found: %s",
                              op_text(op, what, sizeof(what)), why);
        }
        prune_note(pr, &op->dst, holder);
        return 0;
    }
    if (rc == 0) {
        rc = path_put(root, &op->dst, v, why, sizeof(why));
    }
    if (rc != 0) {
        return jn_err_set(err, rc, "json-map: %s: %s", op_text(op, what, sizeof(what)), why);
    }
    return 0;
}

/* ---- serializing ---- */

static int dump_str(struct jn_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;

    if (jn_buf_putc(b, '"') != 0) {
        return JN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
            break;
        }
        if (jn_buf_append(b, s + start, i - start) != 0 || jn_buf_append(b, esc, el) != 0) {
            return JN_ENOMEM;
        }
        start = i + 1;
    }
    if (jn_buf_append(b, s + start, n - start) != 0 || jn_buf_putc(b, '"') != 0) {
        return JN_ENOMEM;
    }
    return 0;
}

/* The shortest of %.15g, %.16g, %.17g that reads back as d: any double that came from 15 or
 * fewer significant digits prints as it was written, and 17 always round-trips. */
static void real_text(double d, char *buf, size_t n)
{
    char *comma;

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            break;
        }
    }
    /* %g follows LC_NUMERIC; JSON wants '.'. */
    comma = strchr(buf, ',');
    if (comma != NULL) {
        *comma = '.';
    }
    /* Keep it a real for the next reader, as jansson does: 1.0, not 1. */
    if (strpbrk(buf, ".eE") == NULL && strlen(buf) + 3 <= n) {
        strcat(buf, ".0");
    }
}

static int dump(json_t *v, struct jn_buf *b, unsigned depth)
{
    char num[64];

    if (depth > JM_MAX_DEPTH) {
        return JN_EINVAL;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        int first = 1;
        if (jn_buf_putc(b, '{') != 0) {
            return JN_ENOMEM;
        }
        for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
            int rc;
            if (!first && jn_buf_putc(b, ',') != 0) {
                return JN_ENOMEM;
            }
            first = 0;
            if (dump_str(b, json_object_iter_key(it), json_object_iter_key_len(it)) != 0 ||
                jn_buf_putc(b, ':') != 0) {
                return JN_ENOMEM;
            }
            rc = dump(json_object_iter_value(it), b, depth + 1);
            if (rc != 0) {
                return rc;
            }
        }
        return jn_buf_putc(b, '}') == 0 ? 0 : JN_ENOMEM;
    }
    case JSON_ARRAY:
        if (jn_buf_putc(b, '[') != 0) {
            return JN_ENOMEM;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rc;
            if (i > 0 && jn_buf_putc(b, ',') != 0) {
                return JN_ENOMEM;
            }
            rc = dump(json_array_get(v, i), b, depth + 1);
            if (rc != 0) {
                return rc;
            }
        }
        return jn_buf_putc(b, ']') == 0 ? 0 : JN_ENOMEM;
    case JSON_STRING:
        return dump_str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        real_text(json_real_value(v), num, sizeof(num));
        break;
    case JSON_TRUE:
        snprintf(num, sizeof(num), "true");
        break;
    case JSON_FALSE:
        snprintf(num, sizeof(num), "false");
        break;
    case JSON_NULL:
        snprintf(num, sizeof(num), "null");
        break;
    }
    return jn_buf_puts(b, num) == 0 ? 0 : JN_ENOMEM;
}

/* ---- transform ---- */

/* jansson quotes the payload near the error; keep control and non-ASCII bytes out of a
 * reason that ends up in logs and HTTP bodies. */
static void sanitize(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c >= 0x7f) {
            *s = '?';
        }
    }
}

static int json_map_transform(const struct jn_service *svc, struct jn_msg *in,
                              struct jn_msg_list *out, struct jn_err *err)
{
    const struct jm_state *st = svc->state;
    struct jn_buf tmp = JN_BUF_INIT, b = JN_BUF_INIT;
    struct jm_emptied local[8];
    struct jm_prune pr = {NULL, 0};
    struct jn_msg *m;
    json_error_t je;
    json_t *root;
    size_t len;
    int rc = 0;

    /* No JSON_ALLOW_NUL: "\u0000" is refused, so every string is a C string too. */
    root = json_loadb((const char *)in->payload, in->len, JSON_DECODE_ANY, &je);
    if (root == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            return jn_err_set(err, JN_ENOMEM, "json-map: out of memory parsing the payload");
        }
        sanitize(je.text);
        return jn_err_set(err, JN_EINVAL, "json-map: payload is not JSON: %s at line %d column %d",
                          je.text, je.line, je.column);
    }
    if (!json_is_object(root)) {
        rc = jn_err_set(err, JN_EINVAL, "json-map: payload is %s, expected a JSON object",
                        type_text(root));
    }
    if (rc == 0 && st->prune_empty && st->ndel > 0) {
        pr.v = st->ndel <= sizeof(local) / sizeof(local[0]) ? local
                                                            : jn_malloc(st->ndel * sizeof(*pr.v));
        if (pr.v == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "json-map: out of memory");
        }
    }
    for (size_t i = 0; rc == 0 && i < st->n; i++) {
        rc = apply(st, &st->ops[i], root, in, &tmp, &pr, err);
    }
    /* Pruned only now, so an object a later op fills again keeps its place. */
    for (size_t i = 0; i < pr.n; i++) {
        if (rc == 0) {
            prune_emptied(root, &pr.v[i]);
        }
        json_decref(pr.v[i].obj);
    }
    if (pr.v != local) {
        jn_free(pr.v);
    }
    jn_buf_reset(&tmp);
    if (rc == 0) {
        /* Most edits change the size a little; start at the input's size. */
        rc = jn_buf_reserve(&b, in->len + 64);
        if (rc == 0) {
            rc = dump(root, &b, 0);
        }
        if (rc == JN_EINVAL) {
            jn_err_set(err, rc, "json-map: the result nests deeper than %d levels",
                       JM_MAX_DEPTH);
        } else if (rc != 0) {
            jn_err_set(err, rc, "json-map: out of memory writing the result");
        }
    }
    json_decref(root);
    if (rc != 0) {
        jn_buf_reset(&b);
        return rc;
    }
    m = jn_msg_copy(in);
    if (m == NULL) {
        jn_buf_reset(&b);
        return jn_err_set(err, JN_ENOMEM, "json-map: out of memory copying the message");
    }
    len = b.len;
    jn_msg_set_payload(m, jn_buf_steal(&b), len);
    if (jn_msg_header_set(m, "Content-Type", "application/json") != 0) {
        jn_msg_unref(&m);
        return jn_err_set(err, JN_ENOMEM, "json-map: out of memory");
    }
    if (jn_msg_list_push(out, m) != 0) {
        return jn_err_set(err, JN_ENOMEM, "json-map: out of memory");
    }
    return 0;
}

const struct jn_service_def jn_service_json_map = {
    .name = "json-map",
    .desc = "Reshape a JSON object payload: copy, rename, set, set_json, then remove, by path. "
            "A path is dot-separated member names with [N] array indexes (customer.name, "
            "items[0].sku); '\\' escapes . [ ] \\ inside a name. Setting a path creates missing "
            "objects; [N] may be the array's length (appends) but not beyond. Objects that "
            "rename or remove left empty are removed (prune_empty). The result is compact JSON "
            "with the key order kept, and Content-Type: application/json",
    .opts = json_map_opts,
    .conf_size = sizeof(struct json_map_conf),
    .check = json_map_check,
    .init = json_map_init,
    .transform = json_map_transform,
    .destroy = json_map_destroy,
};
