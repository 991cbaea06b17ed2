/*
 * hl7_json: HL7 v2 <-> the JSON shape of hl7.h (and docs/hl7.md), for the hl7-to-json and
 * json-to-hl7 services.
 *
 * The one promise: hl7 -> json -> hl7 gives the input back byte for byte. Values are decoded
 * for people (a JSON consumer should read "Smith & Sons", not "Smith \T\ Sons"); where the
 * decoded text would not encode back to the same wire bytes (\X41\ for "A", \H\ highlighting,
 * non-UTF-8 bytes), the leaf carries the wire form too. Compact where HL7 is simple: a field
 * with one repetition, one component and one subcomponent is just a string.
 *
 * jansson allocates with its own (libc) allocator, as in json_map.c.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_utf8.h"

/* ---- hl7 -> json ---- */

static json_t *str_or_hex(const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    json_t *o, *v;
    char *h;

    if (jn_utf8_valid(p, n)) {
        return json_stringn_nocheck(p, n);
    }
    h = jn_malloc(n * 2 + 1);
    if (h == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        h[2 * i] = hex[(unsigned char)p[i] >> 4];
        h[2 * i + 1] = hex[(unsigned char)p[i] & 15];
    }
    v = json_stringn_nocheck(h, n * 2);
    jn_free(h);
    o = json_object();
    if (o == NULL || v == NULL || json_object_set_new(o, "raw_hex", v) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Nothing to decode and nothing the encoder would escape: the common case, exact by
 * construction (every delimiter in a value would have split it). */
static int plain(const struct jn_hl7_delims *d, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == d->esc || (d->trunc && p[i] == d->trunc) ||
            ((unsigned char)p[i] < 0x20 && p[i] != '\t')) {
            return 0;
        }
    }
    return 1;
}

/* A leaf: null, the decoded string, or {"raw", "text"} / {"raw_hex"} when decoding loses. */
static json_t *leaf_json(const struct jn_hl7_delims *d, const struct jn_hl7_span *s)
{
    struct jn_buf enc = JN_BUF_INIT;
    char small[256];
    char *txt = small;
    size_t n;
    json_t *o = NULL, *v;
    int same;

    if (jn_hl7_is_null(s->p, s->len)) {
        return json_null();
    }
    if (plain(d, s->p, s->len)) {
        return str_or_hex(s->p, s->len);
    }
    if (s->len >= sizeof(small)) {
        txt = jn_malloc(s->len + 1);
        if (txt == NULL) {
            return NULL;
        }
    }
    n = jn_hl7_unescape(d, s->p, s->len, txt, s->len + 1);
    if (jn_hl7_escape(d, txt, n, &enc) != 0) {
        goto out;
    }
    same = enc.len == s->len && memcmp(enc.p, s->p, s->len) == 0;
    if (same && jn_utf8_valid(txt, n)) {
        o = json_stringn_nocheck(txt, n);
        goto out;
    }
    if (!jn_utf8_valid(s->p, s->len)) {
        o = str_or_hex(s->p, s->len);
        goto out;
    }
    o = json_object();
    v = json_stringn_nocheck(s->p, s->len);
    if (o == NULL || v == NULL || json_object_set_new(o, "raw", v) != 0) {
        json_decref(o);
        o = NULL;
        goto out;
    }
    if (jn_utf8_valid(txt, n)) {
        v = json_stringn_nocheck(txt, n);
        if (v == NULL || json_object_set_new(o, "text", v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
out:
    jn_buf_reset(&enc);
    if (txt != small) {
        jn_free(txt);
    }
    return o;
}

static json_t *comp_json(const struct jn_hl7_delims *d, const struct jn_hl7_comp *c)
{
    json_t *a;

    if (c->nsubs == 1) {
        return leaf_json(d, &c->subs[0]);
    }
    a = json_array();
    for (size_t i = 0; a && i < c->nsubs; i++) {
        if (json_array_append_new(a, leaf_json(d, &c->subs[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

static json_t *rep_json(const struct jn_hl7_delims *d, const struct jn_hl7_rep *r)
{
    json_t *a;

    /* One component that is one leaf collapses to the leaf; one component with
     * subcomponents stays [[...]] so it cannot be read as a list of components. */
    if (r->ncomps == 1 && r->comps[0].nsubs == 1) {
        return leaf_json(d, &r->comps[0].subs[0]);
    }
    a = json_array();
    for (size_t i = 0; a && i < r->ncomps; i++) {
        if (json_array_append_new(a, comp_json(d, &r->comps[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

static json_t *field_json(const struct jn_hl7_delims *d, const struct jn_hl7_field *f)
{
    json_t *o, *a;

    if (f->nreps == 1) {
        return rep_json(d, &f->reps[0]);
    }
    a = json_array();
    for (size_t i = 0; a && i < f->nreps; i++) {
        if (json_array_append_new(a, rep_json(d, &f->reps[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    o = json_object();
    if (o == NULL || a == NULL || json_object_set_new(o, "repeat", a) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void *jn_hl7_to_json(const struct jn_hl7_msg *m)
{
    json_t *root = json_object(), *segs = json_array(), *eols = json_object();
    const struct jn_hl7_span *eol0 = m->nsegs ? &m->segs[0].eol : NULL;
    int ok = root && segs && eols;

    for (size_t i = 0; ok && i < m->nsegs; i++) {
        const struct jn_hl7_seg *s = &m->segs[i];
        json_t *a = json_array();
        ok = a != NULL;
        for (size_t k = 0; ok && k < s->nfields; k++) {
            json_t *v;
            if (k == 0 || (s->header && k <= 2)) {
                /* The id and the delimiters: as written, never decoded. */
                const struct jn_hl7_span *x = &s->fields[k].reps[0].comps[0].subs[0];
                v = str_or_hex(x->p, x->len);
            } else {
                v = field_json(&m->d, &s->fields[k]);
            }
            ok = json_array_append_new(a, v) == 0;
        }
        ok = ok && json_array_append_new(segs, a) == 0;
        if (ok && (s->eol.len != eol0->len || memcmp(s->eol.p, eol0->p, eol0->len) != 0)) {
            char key[24];
            snprintf(key, sizeof(key), "%zu", i);
            ok = json_object_set_new(eols, key, json_stringn_nocheck(s->eol.p, s->eol.len)) == 0;
        }
    }
    if (ok) {
        ok = json_object_set(root, "segments", segs) == 0 &&
             json_object_set_new(root, "eol", eol0 ? json_stringn_nocheck(eol0->p, eol0->len)
                                                   : json_string("\r")) == 0;
    }
    if (ok && json_object_size(eols) > 0) {
        ok = json_object_set(root, "eols", eols) == 0;
    }
    json_decref(segs);
    json_decref(eols);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- hl7 -> json, the named shape ---- */

static int sub_empty(const struct jn_hl7_span *s)
{
    return s->len == 0;
}

static int comp_empty(const struct jn_hl7_comp *c)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        if (!sub_empty(&c->subs[i])) {
            return 0;
        }
    }
    return 1;
}

static int rep_empty(const struct jn_hl7_rep *r)
{
    for (size_t i = 0; i < r->ncomps; i++) {
        if (!comp_empty(&r->comps[i])) {
            return 0;
        }
    }
    return 1;
}

/* Sets o[pos] = v (v taken, also on failure). */
static int set_pos(json_t *o, size_t pos, json_t *v)
{
    char key[24];

    snprintf(key, sizeof(key), "%zu", pos);
    return v == NULL || json_object_set_new(o, key, v) != 0 ? -1 : 0;
}

/* A component: its leaf, or {"1": leaf, "3": leaf} by subcomponent position (empty ones left
 * out) when it has subcomponents. */
static json_t *named_comp(const struct jn_hl7_delims *d, const struct jn_hl7_comp *c)
{
    json_t *o;

    if (c->nsubs == 1) {
        return leaf_json(d, &c->subs[0]);
    }
    o = json_object();
    for (size_t i = 0; o && i < c->nsubs; i++) {
        if (!sub_empty(&c->subs[i]) && set_pos(o, i + 1, leaf_json(d, &c->subs[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* A repetition: {"1": component, "2": component} by position, empty ones left out. */
static json_t *named_rep(const struct jn_hl7_delims *d, const struct jn_hl7_rep *r)
{
    json_t *o = json_object();

    for (size_t i = 0; o && i < r->ncomps; i++) {
        if (!comp_empty(&r->comps[i]) && set_pos(o, i + 1, named_comp(d, &r->comps[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

void *jn_hl7_to_json_named(const struct jn_hl7_msg *m)
{
    json_t *root = json_object();
    int ok = root != NULL;

    for (size_t i = 0; ok && i < m->nsegs; i++) {
        const struct jn_hl7_seg *s = &m->segs[i];
        json_t *occs = json_object_get(root, s->id), *seg = json_object();
        if (occs == NULL) {
            occs = json_array();
            ok = occs != NULL && json_object_set_new(root, s->id, occs) == 0;
        }
        ok = ok && seg != NULL && json_array_append_new(occs, seg) == 0;
        for (size_t k = 1; ok && k < s->nfields; k++) {
            const struct jn_hl7_field *f = &s->fields[k];
            json_t *reps;
            if (s->header && k <= 2) {
                /* The delimiters: as written, never decoded. */
                const struct jn_hl7_span *x = &f->reps[0].comps[0].subs[0];
                ok = set_pos(seg, k, str_or_hex(x->p, x->len)) == 0;
                continue;
            }
            if (f->nreps == 1 && rep_empty(&f->reps[0])) {
                continue; /* an empty field is left out */
            }
            reps = json_array();
            for (size_t r = 0; reps && r < f->nreps; r++) {
                if (json_array_append_new(reps, named_rep(&m->d, &f->reps[r])) != 0) {
                    json_decref(reps);
                    reps = NULL;
                }
            }
            ok = set_pos(seg, k, reps) == 0;
        }
    }
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- json -> hl7 ---- */

struct jctx {
    struct jn_hl7_delims d;
    struct jn_buf *out;
    struct jn_err *err;
    char where[64]; /* "segments[3][5]" */
};

static int hexv(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Raw bytes from the JSON must not be able to change the structure. */
static int raw_ok(const struct jctx *x, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == x->d.field || c == x->d.comp || c == x->d.rep || c == x->d.sub || c == '\r' ||
            c == '\n' || c == 0x0b || c == 0x1c) {
            return 0;
        }
    }
    return 1;
}

static int write_leaf(struct jctx *x, json_t *v)
{
    if (json_is_null(v)) {
        return jn_buf_append(x->out, "\"\"", 2);
    }
    if (json_is_string(v)) {
        return jn_hl7_escape(&x->d, json_string_value(v), json_string_length(v), x->out);
    }
    if (json_is_object(v)) {
        json_t *raw = json_object_get(v, "raw");
        json_t *hex = json_object_get(v, "raw_hex");
        if (json_is_string(raw)) {
            const char *p = json_string_value(raw);
            size_t n = json_string_length(raw);
            if (!raw_ok(x, p, n)) {
                return jn_err_set(x->err, JN_EINVAL, "%s: \"raw\" holds a delimiter or a line "
                                  "end", x->where);
            }
            return jn_buf_append(x->out, p, n);
        }
        if (json_is_string(hex)) {
            const char *p = json_string_value(hex);
            size_t n = json_string_length(hex);
            size_t start = x->out->len;
            if (n % 2 != 0) {
                return jn_err_set(x->err, JN_EINVAL, "%s: \"raw_hex\" has an odd number of "
                                  "digits", x->where);
            }
            for (size_t i = 0; i < n; i += 2) {
                int a = hexv(p[i]), b = hexv(p[i + 1]);
                if (a < 0 || b < 0) {
                    return jn_err_set(x->err, JN_EINVAL, "%s: \"raw_hex\" is not hexadecimal",
                                      x->where);
                }
                if (jn_buf_putc(x->out, (char)(a * 16 + b)) != 0) {
                    return JN_ENOMEM;
                }
            }
            if (!raw_ok(x, x->out->p + start, x->out->len - start)) {
                return jn_err_set(x->err, JN_EINVAL, "%s: \"raw_hex\" holds a delimiter or a "
                                  "line end", x->where);
            }
            return 0;
        }
    }
    return jn_err_set(x->err, JN_EINVAL, "%s: expected a string, null, {\"raw\": ...} or "
                      "{\"raw_hex\": ...}", x->where);
}

static int write_comp(struct jctx *x, json_t *v)
{
    int rc = 0;

    if (!json_is_array(v)) {
        return write_leaf(x, v);
    }
    if (json_array_size(v) == 0) {
        return jn_err_set(x->err, JN_EINVAL, "%s: an empty array", x->where);
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
        if (i > 0) {
            rc = jn_buf_putc(x->out, x->d.sub);
        }
        if (rc == 0 && json_is_array(json_array_get(v, i))) {
            return jn_err_set(x->err, JN_EINVAL, "%s: arrays nest too deep (a subcomponent "
                              "is a string or null)", x->where);
        }
        if (rc == 0) {
            rc = write_leaf(x, json_array_get(v, i));
        }
    }
    return rc;
}

static int write_rep(struct jctx *x, json_t *v)
{
    int rc = 0;

    if (!json_is_array(v)) {
        return write_leaf(x, v);
    }
    if (json_array_size(v) == 0) {
        return jn_err_set(x->err, JN_EINVAL, "%s: an empty array", x->where);
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
        if (i > 0) {
            rc = jn_buf_putc(x->out, x->d.comp);
        }
        if (rc == 0) {
            rc = write_comp(x, json_array_get(v, i));
        }
    }
    return rc;
}

static int write_field(struct jctx *x, json_t *v)
{
    json_t *reps = json_is_object(v) ? json_object_get(v, "repeat") : NULL;
    int rc = 0;

    if (reps == NULL) {
        return write_rep(x, v);
    }
    if (!json_is_array(reps) || json_array_size(reps) == 0) {
        return jn_err_set(x->err, JN_EINVAL, "%s: \"repeat\" must be a non-empty array",
                          x->where);
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(reps); i++) {
        if (i > 0) {
            rc = jn_buf_putc(x->out, x->d.rep);
        }
        if (rc == 0) {
            rc = write_rep(x, json_array_get(reps, i));
        }
    }
    return rc;
}

static int id_ok(json_t *v)
{
    const char *s = json_string_value(v);

    if (s == NULL || json_string_length(v) != 3) {
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9'))) {
            return 0;
        }
    }
    return 1;
}

static int is_hdr(const char *s)
{
    return strcmp(s, "MSH") == 0 || strcmp(s, "FHS") == 0 || strcmp(s, "BHS") == 0;
}

/* The delimiters from a header segment's elements 1 and 2. */
static int header_delims(struct jctx *x, json_t *seg, struct jn_hl7_delims *d)
{
    json_t *f1 = json_array_get(seg, 1), *f2 = json_array_get(seg, 2);
    char hdr[16];
    struct jn_err e;

    if (!json_is_string(f1) || !json_is_string(f2) || json_string_length(f1) != 1 ||
        json_string_length(f2) < 4 || json_string_length(f2) > 5) {
        return jn_err_set(x->err, JN_EINVAL, "%s: a header segment needs its field separator "
                          "(1 character) and encoding characters (4 or 5) as elements 1 and 2",
                          x->where);
    }
    snprintf(hdr, sizeof(hdr), "MSH%s%s", json_string_value(f1), json_string_value(f2));
    if (jn_hl7_delims_read(hdr, strlen(hdr), d, &e) != 0) {
        return jn_err_set(x->err, JN_EINVAL, "%s: %s", x->where, e.msg);
    }
    return 0;
}

/* ---- json -> hl7, the named shape ---- */

/* A position key: 1..99999, digits only, no leading zero. */
static int pos_key(const char *k, size_t *pos)
{
    size_t n = strlen(k), v = 0;

    if (n == 0 || n > 5 || k[0] == '0' || strspn(k, "0123456789") != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (size_t)(k[i] - '0');
    }
    *pos = v;
    return 1;
}

/* The largest position among o's keys; every key must be one. */
static int max_pos(struct jctx *x, json_t *o, size_t *max)
{
    const char *k;
    json_t *v;

    *max = 0;
    json_object_foreach(o, k, v) {
        size_t p;
        if (!pos_key(k, &p)) {
            return jn_err_set(x->err, JN_EINVAL, "%s: '%s' is not a position (1, 2, ...)",
                              x->where, k);
        }
        if (p > *max) {
            *max = p;
        }
    }
    return 0;
}

static int is_leaf_object(json_t *v)
{
    return json_object_get(v, "raw") != NULL || json_object_get(v, "raw_hex") != NULL;
}

static int named_write_comp(struct jctx *x, json_t *v)
{
    size_t max;
    int rc;

    if (!json_is_object(v) || is_leaf_object(v)) {
        return write_leaf(x, v);
    }
    if ((rc = max_pos(x, v, &max)) != 0) {
        return rc;
    }
    for (size_t i = 1; rc == 0 && i <= max; i++) {
        char key[24];
        json_t *e;
        snprintf(key, sizeof(key), "%zu", i);
        e = json_object_get(v, key);
        rc = i > 1 ? jn_buf_putc(x->out, x->d.sub) : 0;
        if (rc == 0 && e != NULL) {
            if (json_is_object(e) && !is_leaf_object(e)) {
                return jn_err_set(x->err, JN_EINVAL, "%s: objects nest too deep (a "
                                  "subcomponent is a string or null)", x->where);
            }
            rc = write_leaf(x, e);
        }
    }
    return rc;
}

static int named_write_rep(struct jctx *x, json_t *v)
{
    size_t max;
    int rc;

    if (!json_is_object(v)) {
        return jn_err_set(x->err, JN_EINVAL, "%s: a repetition is an object of components by "
                          "position ({\"1\": ...})", x->where);
    }
    if ((rc = max_pos(x, v, &max)) != 0) {
        return rc;
    }
    for (size_t i = 1; rc == 0 && i <= max; i++) {
        char key[24];
        json_t *e;
        snprintf(key, sizeof(key), "%zu", i);
        e = json_object_get(v, key);
        rc = i > 1 ? jn_buf_putc(x->out, x->d.comp) : 0;
        if (rc == 0 && e != NULL) {
            rc = named_write_comp(x, e);
        }
    }
    return rc;
}

static int named_write_field(struct jctx *x, json_t *v)
{
    int rc = 0;

    if (!json_is_array(v) || json_array_size(v) == 0) {
        return jn_err_set(x->err, JN_EINVAL, "%s: a field is a non-empty list of repetitions",
                          x->where);
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
        rc = i > 0 ? jn_buf_putc(x->out, x->d.rep) : 0;
        if (rc == 0) {
            rc = named_write_rep(x, json_array_get(v, i));
        }
    }
    return rc;
}

/* The delimiters of a header occurrence of the named shape: its "1" and "2". */
static int named_delims(struct jctx *x, json_t *occ, struct jn_hl7_delims *d)
{
    json_t *seg = json_array();
    int rc;

    if (seg == NULL || json_array_append_new(seg, json_string("MSH")) != 0 ||
        json_array_append(seg, json_object_get(occ, "1")) != 0 ||
        json_array_append(seg, json_object_get(occ, "2")) != 0) {
        json_decref(seg);
        return jn_err_set(x->err, JN_EINVAL, "%s: a header segment needs its field separator "
                          "\"1\" and encoding characters \"2\"", x->where);
    }
    rc = header_delims(x, seg, d);
    json_decref(seg);
    return rc;
}

static int from_named(json_t *root, struct jn_buf *out, struct jn_err *err)
{
    struct jctx x;
    const char *id;
    json_t *occs;
    int rc = 0, first = 1;

    memset(&x, 0, sizeof(x));
    x.out = out;
    x.err = err;
    json_object_foreach(root, id, occs) {
        json_t *idv = json_string(id);
        int ok = idv != NULL && id_ok(idv);
        json_decref(idv);
        snprintf(x.where, sizeof(x.where), "%.8s", id);
        if (!ok) {
            return jn_err_set(err, JN_EINVAL, "'%.16s' is not a segment id (three of A-Z, 0-9)",
                              id);
        }
        if (first && !is_hdr(id)) {
            return jn_err_set(err, JN_EINVAL, "%s: the first segment must be MSH, FHS or BHS",
                              id);
        }
        if (!json_is_array(occs) || json_array_size(occs) == 0) {
            return jn_err_set(err, JN_EINVAL, "%s: expected a non-empty list of occurrences",
                              id);
        }
        for (size_t o = 0; rc == 0 && o < json_array_size(occs); o++) {
            json_t *occ = json_array_get(occs, o);
            size_t max;
            snprintf(x.where, sizeof(x.where), "%s[%zu]", id, o);
            if (!json_is_object(occ)) {
                return jn_err_set(err, JN_EINVAL, "%s: an occurrence is an object of fields by "
                                  "position", x.where);
            }
            if ((rc = max_pos(&x, occ, &max)) != 0) {
                return rc;
            }
            if (is_hdr(id)) {
                struct jn_hl7_delims d;
                if (named_delims(&x, occ, &d) != 0) {
                    return JN_EINVAL;
                }
                if (!first && memcmp(&d, &x.d, sizeof(d)) != 0) {
                    return jn_err_set(err, JN_EINVAL, "%s: its delimiters differ from the "
                                      "first header's", x.where);
                }
                x.d = d;
            }
            first = 0;
            rc = jn_buf_puts(out, id);
            for (size_t k = 1; rc == 0 && k <= max; k++) {
                char key[24];
                json_t *f;
                snprintf(key, sizeof(key), "%zu", k);
                f = json_object_get(occ, key);
                snprintf(x.where, sizeof(x.where), "%s[%zu].%zu", id, o, k);
                if (is_hdr(id) && k <= 2) {
                    rc = jn_buf_puts(out, json_string_value(f));
                    continue;
                }
                rc = jn_buf_putc(out, x.d.field);
                if (rc == 0 && f != NULL) {
                    rc = named_write_field(&x, f);
                }
            }
            if (rc == 0) {
                rc = jn_buf_putc(out, '\r');
            }
        }
    }
    return rc;
}

int jn_hl7_from_json(const void *json, struct jn_buf *out, struct jn_err *err)
{
    if (json_is_object((json_t *)json) && json_object_get((json_t *)json, "segments") == NULL &&
        json_object_size((json_t *)json) > 0) {
        return from_named((json_t *)json, out, err); /* the named shape */
    }
    json_t *root = (json_t *)json;
    json_t *segs = json_object_get(root, "segments");
    json_t *eol = json_object_get(root, "eol");
    json_t *eols = json_object_get(root, "eols");
    struct jctx x;
    int rc = 0;

    memset(&x, 0, sizeof(x));
    x.out = out;
    x.err = err;
    if (!json_is_object(root) || !json_is_array(segs) || json_array_size(segs) == 0) {
        return jn_err_set(err, JN_EINVAL, "expected an object with a non-empty \"segments\" "
                          "array");
    }
    if (eol != NULL && !json_is_string(eol)) {
        return jn_err_set(err, JN_EINVAL, "\"eol\" must be a string");
    }
    if (eols != NULL && !json_is_object(eols)) {
        return jn_err_set(err, JN_EINVAL, "\"eols\" must be an object");
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(segs); i++) {
        json_t *seg = json_array_get(segs, i), *e;
        const char *id;
        char key[24];
        snprintf(x.where, sizeof(x.where), "segments[%zu]", i);
        if (!json_is_array(seg) || json_array_size(seg) == 0 || !id_ok(json_array_get(seg, 0))) {
            return jn_err_set(err, JN_EINVAL, "%s: expected an array starting with a segment id "
                              "(three of A-Z, 0-9)", x.where);
        }
        id = json_string_value(json_array_get(seg, 0));
        if (is_hdr(id)) {
            struct jn_hl7_delims d;
            if (header_delims(&x, seg, &d) != 0) {
                return JN_EINVAL;
            }
            if (i > 0 && memcmp(&d, &x.d, sizeof(d)) != 0) {
                return jn_err_set(err, JN_EINVAL, "%s: its delimiters differ from the first "
                                  "header's", x.where);
            }
            x.d = d;
        } else if (i == 0) {
            return jn_err_set(err, JN_EINVAL, "segments[0]: the first segment must be MSH, FHS "
                              "or BHS, not %s", id);
        }
        rc = jn_buf_puts(out, id);
        for (size_t k = 1; rc == 0 && k < json_array_size(seg); k++) {
            snprintf(x.where, sizeof(x.where), "segments[%zu][%zu]", i, k);
            if (is_hdr(id) && k <= 2) {
                rc = jn_buf_puts(out, json_string_value(json_array_get(seg, k)));
                continue;
            }
            rc = jn_buf_putc(out, x.d.field);
            if (rc == 0) {
                rc = write_field(&x, json_array_get(seg, k));
            }
        }
        snprintf(key, sizeof(key), "%zu", i);
        e = eols ? json_object_get(eols, key) : NULL;
        if (e == NULL) {
            e = eol;
        }
        if (rc == 0 && e != NULL) {
            const char *s = json_string_value(e);
            size_t n = json_string_length(e);
            for (size_t k = 0; s && k < n; k++) {
                if (s[k] != '\r' && s[k] != '\n') {
                    return jn_err_set(err, JN_EINVAL, "segments[%zu]: a segment end may hold "
                                      "only CR and LF", i);
                }
            }
            if (s == NULL || (n == 0 && i + 1 < json_array_size(segs))) {
                return jn_err_set(err, JN_EINVAL, "segments[%zu]: the segment end must be a "
                                  "non-empty string of CR and LF (\"\" only for the last)", i);
            }
            rc = jn_buf_append(out, s, n);
        } else if (rc == 0) {
            rc = jn_buf_putc(out, '\r');
        }
    }
    return rc;
}
