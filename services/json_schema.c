/*
 * json_schema: the JSON Schema subset of the validate service (see json_schema.h).
 *
 * One compiled node per schema object: a bitmask of types, the required names, the properties
 * as a small array searched linearly (schemas name few), items, the enum as jansson values
 * compared with json_equal, a vetted regex and the bounds. Checking walks the document once
 * and keeps going after a violation, so a dead letter lists all it can, as Ajv's allErrors
 * does. Modelled on what JSON Schema's core and validation vocabularies say of these keywords;
 * no code of a validator library was used.
 */
#include "json_schema.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_cond.h"
#include "jn_mem.h"

enum {
    T_NULL = 1 << 0,
    T_BOOL = 1 << 1,
    T_INT = 1 << 2,
    T_NUM = 1 << 3, /* includes integers */
    T_STR = 1 << 4,
    T_ARR = 1 << 5,
    T_OBJ = 1 << 6,
};

static const char *const type_names[] = {"null", "boolean", "integer", "number", "string",
                                         "array", "object"};
#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

/* Nesting of schemas in schemas; deeper input is refused at load (it is read recursively). */
#define SCHEMA_MAX_DEPTH 64
/* Nesting of the checked document; a deeper part is one violation, not a deep recursion. */
#define DOC_MAX_DEPTH 128

struct jn_schema {
    unsigned types; /* 0: any */
    char types_text[80];
    char **req;
    size_t nreq;
    char **pname;
    struct jn_schema **prop;
    size_t nprop;
    struct jn_schema *items;
    json_t *enums;  /* an array, or NULL */
    char enum_text[96];
    regex_t *re;
    char *pattern;
    bool has_min, has_max, has_xmin, has_xmax;
    double min, max, xmin, xmax;
    long long min_len, max_len; /* -1: unset */
    bool no_additional;
};

/* ---- compiling ---- */

struct cctx {
    struct jn_diag *d;
    jn_schema_pos_fn map;
    void *arg;
    int errs;
};

static void cerr(struct cctx *c, const struct jn_node *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cerr(struct cctx *c, const struct jn_node *n, const char *where, const char *fmt, ...)
{
    char msg[400];
    struct jn_pos p = n->pos;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->map) {
        c->map(c->arg, &n->pos, &p);
    }
    jn_diag_add(c->d, &p, "schema: %s%s%s", where[0] ? where : "", where[0] ? ": " : "", msg);
    c->errs++;
}

/* The JSON value a YAML scalar stands for: plain null/true/false/numbers as such, anything
 * quoted a string. NULL on no memory. */
static json_t *scalar_json(const struct jn_node *n)
{
    const char *s = n->str;
    char *end;

    if (n->plain) {
        if (jn_node_is_null(n)) {
            return json_null();
        }
        if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
            return json_true();
        }
        if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
            return json_false();
        }
        if (s[0] != '\0' && strspn(s + (s[0] == '-'), "0123456789") == strlen(s + (s[0] == '-'))
            && s[s[0] == '-'] != '\0') {
            long long v;
            errno = 0;
            v = strtoll(s, &end, 10);
            if (errno == 0 && *end == '\0') {
                return json_integer(v);
            }
        }
        if (s[0] != '\0' && strpbrk(s, "0123456789") != NULL) {
            double dv;
            errno = 0;
            dv = strtod(s, &end);
            if (*end == '\0' && errno == 0 && isfinite(dv) && strpbrk(s, "xXpP") == NULL) {
                return json_real(dv);
            }
        }
    }
    return json_string(s);
}

static json_t *node_json(const struct jn_node *n, int depth)
{
    json_t *v;

    if (depth > SCHEMA_MAX_DEPTH) {
        return NULL;
    }
    if (n->kind == JN_NODE_SCALAR) {
        return scalar_json(n);
    }
    v = n->kind == JN_NODE_MAP ? json_object() : json_array();
    for (size_t i = 0; v && i < n->n; i++) {
        json_t *e = node_json(n->vals[i], depth + 1);
        int rc = e == NULL ? -1
                 : n->kind == JN_NODE_MAP ? json_object_set_new(v, n->keys[i]->str, e)
                                          : json_array_append_new(v, e);
        if (rc != 0) {
            json_decref(v);
            v = NULL;
        }
    }
    return v;
}

/* The number a plain scalar holds, or an error. */
static int num_at(struct cctx *c, const struct jn_node *n, const char *where, const char *kw,
                  double *out)
{
    json_t *v = n->kind == JN_NODE_SCALAR ? scalar_json(n) : NULL;

    if (v == NULL || !json_is_number(v)) {
        cerr(c, n, where, "%s: expected a number", kw);
        json_decref(v);
        return -1;
    }
    *out = json_number_value(v);
    json_decref(v);
    return 0;
}

static int count_at(struct cctx *c, const struct jn_node *n, const char *where, const char *kw,
                    long long *out)
{
    json_t *v = n->kind == JN_NODE_SCALAR ? scalar_json(n) : NULL;

    if (v == NULL || !json_is_integer(v) || json_integer_value(v) < 0) {
        cerr(c, n, where, "%s: expected a whole number of 0 or more", kw);
        json_decref(v);
        return -1;
    }
    *out = json_integer_value(v);
    json_decref(v);
    return 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = jn_malloc(n);

    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

static int add_type(struct cctx *c, struct jn_schema *s, const struct jn_node *n,
                    const char *where)
{
    if (n->kind == JN_NODE_SCALAR) {
        for (size_t i = 0; i < NTYPES; i++) {
            if (strcmp(n->str, type_names[i]) == 0) {
                size_t l = strlen(s->types_text);
                s->types |= 1u << i;
                snprintf(s->types_text + l, sizeof(s->types_text) - l, "%s%s", l ? " or " : "",
                         type_names[i]);
                return 0;
            }
        }
    }
    cerr(c, n, where, "type: '%s' is not a type (null, boolean, integer, number, string, "
         "array, object)", n->kind == JN_NODE_SCALAR ? n->str : jn_node_kind_name(n));
    return -1;
}

static struct jn_schema *compile(struct cctx *c, const struct jn_node *n, const char *where,
                                 int depth);

/* One keyword of schema s; where is the schema's own path ("" at the root). */
static void keyword(struct cctx *c, struct jn_schema *s, const struct jn_node *k,
                    const struct jn_node *v, const char *where, int depth)
{
    static const char *const ignored[] = {"$schema", "$id", "$comment", "title", "description",
                                          "default", "examples", "format", NULL};
    const char *kw = k->str;
    char sub[256];

    for (size_t i = 0; ignored[i]; i++) {
        if (strcmp(kw, ignored[i]) == 0) {
            return;
        }
    }
    if (strcmp(kw, "type") == 0) {
        if (v->kind == JN_NODE_SEQ && v->n > 0) {
            for (size_t i = 0; i < v->n; i++) {
                add_type(c, s, v->vals[i], where);
            }
        } else {
            add_type(c, s, v, where);
        }
    } else if (strcmp(kw, "required") == 0) {
        if (v->kind != JN_NODE_SEQ) {
            cerr(c, v, where, "required: expected a list of member names");
            return;
        }
        if ((s->req = jn_calloc(v->n ? v->n : 1, sizeof(*s->req))) == NULL) {
            c->d->oom = 1;
            c->errs++;
            return;
        }
        for (size_t i = 0; i < v->n; i++) {
            if (v->vals[i]->kind != JN_NODE_SCALAR) {
                cerr(c, v->vals[i], where, "required: expected a member name");
            } else if ((s->req[s->nreq] = dup_str(v->vals[i]->str)) == NULL) {
                c->d->oom = 1;
                c->errs++;
            } else {
                s->nreq++;
            }
        }
    } else if (strcmp(kw, "properties") == 0) {
        if (v->kind != JN_NODE_MAP) {
            cerr(c, v, where, "properties: expected a map of member name to schema");
            return;
        }
        s->pname = jn_calloc(v->n ? v->n : 1, sizeof(*s->pname));
        s->prop = jn_calloc(v->n ? v->n : 1, sizeof(*s->prop));
        if (s->pname == NULL || s->prop == NULL) {
            c->d->oom = 1;
            c->errs++;
            return;
        }
        for (size_t i = 0; i < v->n; i++) {
            struct jn_schema *p;
            snprintf(sub, sizeof(sub), "%s%sproperties.%s", where, where[0] ? "." : "",
                     v->keys[i]->str);
            p = compile(c, v->vals[i], sub, depth + 1);
            if (p == NULL) {
                continue;
            }
            if ((s->pname[s->nprop] = dup_str(v->keys[i]->str)) == NULL) {
                jn_schema_free(p);
                c->d->oom = 1;
                c->errs++;
                continue;
            }
            s->prop[s->nprop++] = p;
        }
    } else if (strcmp(kw, "items") == 0) {
        snprintf(sub, sizeof(sub), "%s%sitems", where, where[0] ? "." : "");
        if (v->kind != JN_NODE_MAP) {
            cerr(c, v, where, "items: expected one schema (a map); lists of schemas (tuples) "
                 "are not supported");
            return;
        }
        s->items = compile(c, v, sub, depth + 1);
    } else if (strcmp(kw, "enum") == 0) {
        if (v->kind != JN_NODE_SEQ || v->n == 0) {
            cerr(c, v, where, "enum: expected a list of one or more values");
            return;
        }
        if ((s->enums = node_json(v, depth)) == NULL) {
            cerr(c, v, where, "enum: nested too deep or out of memory");
            return;
        }
        char *t = json_dumps(s->enums, JSON_COMPACT | JSON_ENCODE_ANY);
        if (t != NULL) {
            snprintf(s->enum_text, sizeof(s->enum_text), "%s", t);
            if (strlen(t) >= sizeof(s->enum_text)) {
                memcpy(s->enum_text + sizeof(s->enum_text) - 5, "...]", 5);
            }
            free(t);
        }
    } else if (strcmp(kw, "pattern") == 0) {
        struct jn_err e;
        if (v->kind != JN_NODE_SCALAR) {
            cerr(c, v, where, "pattern: expected a regex (a string)");
            return;
        }
        if ((s->re = jn_cond_regex_new(v->str, &e)) == NULL) {
            cerr(c, v, where, "pattern: %s", e.msg);
            return;
        }
        if ((s->pattern = dup_str(v->str)) == NULL) {
            c->d->oom = 1;
            c->errs++;
        }
    } else if (strcmp(kw, "minimum") == 0) {
        s->has_min = num_at(c, v, where, kw, &s->min) == 0;
    } else if (strcmp(kw, "maximum") == 0) {
        s->has_max = num_at(c, v, where, kw, &s->max) == 0;
    } else if (strcmp(kw, "exclusiveMinimum") == 0) {
        s->has_xmin = num_at(c, v, where, kw, &s->xmin) == 0;
    } else if (strcmp(kw, "exclusiveMaximum") == 0) {
        s->has_xmax = num_at(c, v, where, kw, &s->xmax) == 0;
    } else if (strcmp(kw, "minLength") == 0) {
        count_at(c, v, where, kw, &s->min_len);
    } else if (strcmp(kw, "maxLength") == 0) {
        count_at(c, v, where, kw, &s->max_len);
    } else if (strcmp(kw, "additionalProperties") == 0) {
        json_t *b = v->kind == JN_NODE_SCALAR ? scalar_json(v) : NULL;
        if (b == NULL || !json_is_boolean(b)) {
            cerr(c, v, where, "additionalProperties: only true or false is supported, not a "
                 "schema");
        } else {
            s->no_additional = json_is_false(b);
        }
        json_decref(b);
    } else {
        cerr(c, k, where, "'%s' is not supported by this validator (supported: type, required, "
             "properties, items, enum, pattern, minimum, maximum, exclusiveMinimum, "
             "exclusiveMaximum, minLength, maxLength, additionalProperties)", kw);
    }
}

static struct jn_schema *compile(struct cctx *c, const struct jn_node *n, const char *where,
                                 int depth)
{
    struct jn_schema *s;

    if (depth > SCHEMA_MAX_DEPTH) {
        cerr(c, n, where, "schemas nested more than %d deep", SCHEMA_MAX_DEPTH);
        return NULL;
    }
    if (n->kind != JN_NODE_MAP) {
        cerr(c, n, where, "expected a schema (a map of keywords), got %s",
             n->kind == JN_NODE_SCALAR ? "a scalar" : "a list");
        return NULL;
    }
    if ((s = jn_calloc(1, sizeof(*s))) == NULL) {
        c->d->oom = 1;
        c->errs++;
        return NULL;
    }
    s->min_len = -1;
    s->max_len = -1;
    for (size_t i = 0; i < n->n; i++) {
        keyword(c, s, n->keys[i], n->vals[i], where, depth);
    }
    if (s->min_len >= 0 && s->max_len >= 0 && s->min_len > s->max_len) {
        cerr(c, n, where, "minLength %lld is more than maxLength %lld", s->min_len, s->max_len);
    }
    return s;
}

struct jn_schema *jn_schema_compile(const struct jn_node *root, jn_schema_pos_fn map, void *arg,
                                    struct jn_diag *d)
{
    struct cctx c = {d, map, arg, 0};
    struct jn_schema *s = compile(&c, root, "", 0);

    if (c.errs > 0 || d->oom) {
        jn_schema_free(s);
        return NULL;
    }
    return s;
}

void jn_schema_free(struct jn_schema *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->nreq; i++) {
        jn_free(s->req[i]);
    }
    jn_free(s->req);
    for (size_t i = 0; i < s->nprop; i++) {
        jn_free(s->pname[i]);
        jn_schema_free(s->prop[i]);
    }
    jn_free(s->pname);
    jn_free(s->prop);
    jn_schema_free(s->items);
    json_decref(s->enums);
    jn_cond_regex_free(s->re);
    jn_free(s->pattern);
    jn_free(s);
}

/* ---- checking ---- */

struct vctx {
    struct jn_buf *out;
    size_t max;
    long n;
    size_t listed;
    int full;
    int oom;
    char path[512];
    size_t plen;
};

static void viol(struct vctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void viol(struct vctx *x, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    int rc;

    x->n++;
    if (x->out == NULL || x->full) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* Whole entries only, in order: once one does not fit, the rest are only counted. */
    if (x->out->len + 2 + strlen(x->path) + 2 + strlen(why) > x->max) {
        x->full = 1;
        return;
    }
    rc = jn_buf_printf(x->out, "%s%s: %s", x->out->len ? "; " : "", x->path, why);
    if (rc != 0) {
        x->oom = 1;
    }
    x->listed++;
}

static size_t path_push_key(struct vctx *x, const char *k)
{
    size_t old = x->plen;
    int w = snprintf(x->path + old, sizeof(x->path) - old, ".%s", k);

    x->plen = w < 0 || (size_t)w >= sizeof(x->path) - old ? sizeof(x->path) - 1 : old + (size_t)w;
    return old;
}

static size_t path_push_index(struct vctx *x, size_t i)
{
    size_t old = x->plen;
    int w = snprintf(x->path + old, sizeof(x->path) - old, "[%zu]", i);

    x->plen = w < 0 || (size_t)w >= sizeof(x->path) - old ? sizeof(x->path) - 1 : old + (size_t)w;
    return old;
}

static void path_pop(struct vctx *x, size_t old)
{
    x->plen = old;
    x->path[old] = '\0';
}

static unsigned kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return T_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOL;
    case JSON_INTEGER:
        return T_INT;
    case JSON_REAL: {
        double d = json_real_value(v);
        /* 1.0 is an integer to JSON Schema; no libm: the cast is exact in this range. */
        return d > -9.0e18 && d < 9.0e18 && (double)(long long)d == d ? T_INT : T_NUM;
    }
    case JSON_STRING:
        return T_STR;
    case JSON_ARRAY:
        return T_ARR;
    default:
        return T_OBJ;
    }
}

static const char *kind_name(unsigned k)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (k == 1u << i) {
            return type_names[i];
        }
    }
    return "?";
}

/* A value as it reads in a reason: compact JSON, cut at about 40 bytes. */
static void shown(const json_t *v, char *buf, size_t cap)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    snprintf(buf, cap, "%s", t ? t : "?");
    if (t != NULL && strlen(t) >= cap && cap > 4) {
        memcpy(buf + cap - 4, "...", 4);
    }
    free(t);
}

static size_t code_points(const char *s, size_t n)
{
    size_t cp = 0;

    for (size_t i = 0; i < n; i++) {
        cp += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return cp;
}

static void check(struct vctx *x, const struct jn_schema *s, json_t *v, int depth)
{
    unsigned k = kind_of(v);
    char sv[48];

    if (depth > DOC_MAX_DEPTH) {
        viol(x, "nested more than %d deep", DOC_MAX_DEPTH);
        return;
    }
    if (s->types && !(s->types & k) && !(k == T_INT && (s->types & T_NUM))) {
        viol(x, "is %s, expected %s", kind_name(k), s->types_text);
        return; /* the other keywords would only repeat it */
    }
    if (s->enums) {
        size_t i;
        json_t *e;
        int found = 0;
        json_array_foreach(s->enums, i, e) {
            if (json_equal(v, e) ||
                (json_is_number(v) && json_is_number(e) &&
                 json_number_value(v) == json_number_value(e))) {
                found = 1;
                break;
            }
        }
        if (!found) {
            shown(v, sv, sizeof(sv));
            viol(x, "%s is not one of %s", sv, s->enum_text);
        }
    }
    if (k == T_STR) {
        const char *str = json_string_value(v);
        size_t cp = code_points(str, json_string_length(v));
        if (s->min_len >= 0 && cp < (unsigned long long)s->min_len) {
            viol(x, "%zu characters, fewer than minLength %lld", cp, s->min_len);
        }
        if (s->max_len >= 0 && cp > (unsigned long long)s->max_len) {
            viol(x, "%zu characters, more than maxLength %lld", cp, s->max_len);
        }
        if (s->re && regexec(s->re, str, 0, NULL, 0) != 0) {
            shown(v, sv, sizeof(sv));
            viol(x, "%s does not match the pattern %s", sv, s->pattern);
        }
    }
    if (k == T_INT || k == T_NUM) {
        double d = json_number_value(v);
        int lo = s->has_min && d < s->min, hi = s->has_max && d > s->max;
        int xlo = s->has_xmin && d <= s->xmin, xhi = s->has_xmax && d >= s->xmax;
        if (lo || hi || xlo || xhi) {
            shown(v, sv, sizeof(sv)); /* only for a reason: json_dumps allocates */
        }
        if (lo) {
            viol(x, "%s is less than the minimum %g", sv, s->min);
        }
        if (hi) {
            viol(x, "%s is more than the maximum %g", sv, s->max);
        }
        if (xlo) {
            viol(x, "%s is not more than the exclusiveMinimum %g", sv, s->xmin);
        }
        if (xhi) {
            viol(x, "%s is not less than the exclusiveMaximum %g", sv, s->xmax);
        }
    }
    if (k == T_OBJ) {
        const char *key;
        json_t *mv;
        for (size_t i = 0; i < s->nreq; i++) {
            if (json_object_get(v, s->req[i]) == NULL) {
                size_t old = path_push_key(x, s->req[i]);
                viol(x, "is required but missing");
                path_pop(x, old);
            }
        }
        json_object_foreach(v, key, mv) {
            const struct jn_schema *p = NULL;
            size_t old;
            for (size_t i = 0; i < s->nprop; i++) {
                if (strcmp(s->pname[i], key) == 0) {
                    p = s->prop[i];
                    break;
                }
            }
            if (p == NULL && !s->no_additional) {
                continue;
            }
            old = path_push_key(x, key);
            if (p != NULL) {
                check(x, p, mv, depth + 1);
            } else {
                viol(x, "is not allowed (additionalProperties: false)");
            }
            path_pop(x, old);
        }
    }
    if (k == T_ARR && s->items) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            size_t old = path_push_index(x, i);
            check(x, s->items, e, depth + 1);
            path_pop(x, old);
        }
    }
}

long jn_schema_check(const struct jn_schema *s, json_t *v, struct jn_buf *out, size_t max,
                     size_t *listed)
{
    struct vctx x;

    memset(&x, 0, sizeof(x));
    x.out = out;
    x.max = max;
    x.path[0] = '$';
    x.plen = 1;
    check(&x, s, v, 0);
    if (listed != NULL) {
        *listed = x.listed;
    }
    return x.oom ? JN_ENOMEM : x.n;
}
