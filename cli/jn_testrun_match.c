/*
 * jn_testrun_match: the checks `junction test` makes on one message a destination received
 * (jn_testrun_int.h), each saying what differs in words a person reads: the JSON path with the
 * expected and actual values, the HL7 path, the header, or a short unified diff of a payload.
 *
 * HL7 values are read with the project's codec (adapters/hl7.h: jn_hl7_lookup and
 * jn_hl7_text), the way `hl7("PID-5.1")` in a route condition and the Lua helper's h:get
 * read them: escapes decoded, MSH-1 and MSH-2 as written. JSON is jansson's. The payload diff is
 * a longest-common-subsequence diff by lines, the layout of `diff -u` with two lines of context.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_testrun_int.h"

/* The differences one check found; lines past JN_TESTRUN_MAX_DIFFS are counted, not written. */
struct diffs {
    struct jn_buf *out;
    const char *prefix;
    int n;
};

static void diff_add(struct diffs *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void diff_add(struct diffs *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (++c->n > JN_TESTRUN_MAX_DIFFS) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    jn_buf_printf(c->out, "%s%s\n", c->prefix, line);
}

static int diff_end(struct diffs *c)
{
    if (c->n > JN_TESTRUN_MAX_DIFFS) {
        jn_buf_printf(c->out, "%s... and %d more difference(s)\n", c->prefix,
                      c->n - JN_TESTRUN_MAX_DIFFS);
    }
    return c->n;
}

/* Length of the UTF-8 sequence at p (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;

    if (p[0] >= 0xf5 || len == 0 || len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return len;
}

/* p readable (see jn_testrun__quote); quotes and backslashes escaped only when quote is set. */
static void escape(struct jn_buf *out, const void *vp, size_t n, size_t max, int quote)
{
    const unsigned char *p = vp;
    size_t i = 0;

    while (i < n && i < max) {
        unsigned char ch = p[i];
        size_t u;
        if (quote && (ch == '"' || ch == '\\')) {
            jn_buf_putc(out, '\\');
            jn_buf_putc(out, (char)ch);
        } else if (ch == '\r' || ch == '\n' || ch == '\t') {
            jn_buf_puts(out, ch == '\r' ? "\\r" : ch == '\n' ? "\\n" : "\\t");
        } else if (ch >= 0x20 && ch < 0x7f) {
            jn_buf_putc(out, (char)ch);
        } else if (ch >= 0x80 && (u = utf8_len(p + i, n - i)) > 0) {
            jn_buf_append(out, p + i, u);
            i += u;
            continue;
        } else {
            jn_buf_printf(out, "\\x%02x", ch);
        }
        i++;
    }
    if (i < n) {
        jn_buf_printf(out, "%s... (%zu bytes)", quote ? "\"" : "", n);
    } else if (quote) {
        jn_buf_putc(out, '"');
    }
}

void jn_testrun__quote(struct jn_buf *out, const void *p, size_t n, size_t max)
{
    jn_buf_putc(out, '"');
    escape(out, p, n, max, 1);
}

/* quote into a fresh string for a diff line (the caller resets b). */
static const char *quoted(struct jn_buf *b, const void *p, size_t n)
{
    jn_buf_reset(b);
    jn_testrun__quote(b, p, n, 300);
    return b->p ? b->p : "\"\"";
}

/* ---- payload ---- */

struct line {
    const char *p;
    size_t len;
};

/* Splits s into lines on CR LF, CR or LF (HL7 ends segments with CR). *n lines; a final line
 * end does not start an empty line. NULL when out of memory. */
static struct line *split_lines(const char *s, size_t len, size_t *n)
{
    size_t cap = 1, k = 0, start = 0;
    struct line *v;

    for (size_t i = 0; i < len; i++) {
        cap += s[i] == '\n' || s[i] == '\r';
    }
    v = jn_calloc(cap, sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r' || s[i] == '\n') {
            v[k++] = (struct line){s + start, i - start};
            if (s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') {
                i++;
            }
            start = i + 1;
        }
    }
    if (start < len) {
        v[k++] = (struct line){s + start, len - start};
    }
    *n = k;
    return v;
}

static int line_eq(const struct line *a, const struct line *b)
{
    return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}

/* Diff lines: ' ' both, '-' expected only, '+' actual only. */
struct op {
    char kind;
    size_t a, b; /* line indexes before this op, in each side */
};

#define DIFF_CONTEXT 2
#define DIFF_MAX_LINES 40
#define DIFF_MAX_CELLS (4u * 1024 * 1024) /* LCS table cells: about 16 MiB at most */

/* The edit script from want to got, by their longest common subsequence. NULL (no memory, or
 * too large to diff) leaves the caller to say less. */
static struct op *edit_script(const struct line *a, size_t na, const struct line *b, size_t nb,
                              size_t *nops)
{
    uint32_t *L;
    struct op *ops;
    size_t w = nb + 1, i = 0, j = 0, k = 0;

    if ((na + 1) * w > DIFF_MAX_CELLS) {
        return NULL;
    }
    L = jn_calloc((na + 1) * w, sizeof(*L));
    ops = jn_calloc(na + nb + 1, sizeof(*ops));
    if (L == NULL || ops == NULL) {
        jn_free(L);
        jn_free(ops);
        return NULL;
    }
    for (size_t x = na; x-- > 0;) {
        for (size_t y = nb; y-- > 0;) {
            uint32_t down = L[(x + 1) * w + y], right = L[x * w + y + 1];
            L[x * w + y] = line_eq(&a[x], &b[y]) ? L[(x + 1) * w + y + 1] + 1
                                                  : down > right ? down : right;
        }
    }
    while (i < na || j < nb) {
        ops[k].a = i;
        ops[k].b = j;
        if (i < na && j < nb && line_eq(&a[i], &b[j])) {
            ops[k++].kind = ' ';
            i++;
            j++;
        } else if (j == nb || (i < na && L[(i + 1) * w + j] >= L[i * w + j + 1])) {
            ops[k++].kind = '-';
            i++;
        } else {
            ops[k++].kind = '+';
            j++;
        }
    }
    jn_free(L);
    *nops = k;
    return ops;
}

/* Appends the hunks of ops, `diff -u` style, each line after indent. */
static void print_hunks(struct jn_buf *out, const char *indent, const struct op *ops, size_t n,
                        const struct line *a, const struct line *b)
{
    size_t shown = 0, k = 0;

    jn_buf_printf(out, "%s--- expected\n%s+++ actual\n", indent, indent);
    while (k < n) {
        size_t s, e, la = 0, lb = 0;
        /* The next change, and the hunk around it: changes closer than 2 * context merge. */
        while (k < n && ops[k].kind == ' ') {
            k++;
        }
        if (k == n) {
            break;
        }
        s = k >= DIFF_CONTEXT ? k - DIFF_CONTEXT : 0;
        e = k;
        for (size_t q = k; q < n; q++) {
            if (ops[q].kind != ' ') {
                e = q;
            } else if (q - e > 2 * DIFF_CONTEXT) {
                break;
            }
        }
        e = e + DIFF_CONTEXT + 1 < n ? e + DIFF_CONTEXT + 1 : n;
        for (size_t q = s; q < e; q++) {
            la += ops[q].kind != '+';
            lb += ops[q].kind != '-';
        }
        jn_buf_printf(out, "%s@@ -%zu,%zu +%zu,%zu @@\n", indent, ops[s].a + (la > 0), la,
                      ops[s].b + (lb > 0), lb);
        for (size_t q = s; q < e; q++, shown++) {
            const struct line *l = ops[q].kind == '+' ? &b[ops[q].b] : &a[ops[q].a];
            if (shown == DIFF_MAX_LINES) {
                jn_buf_printf(out, "%s... (the diff goes on)\n", indent);
                return;
            }
            /* The line as it is, control bytes aside (a diff line needs no quotes). */
            jn_buf_printf(out, "%s%c", indent, ops[q].kind);
            escape(out, l->p, l->len, 300, 0);
            jn_buf_putc(out, '\n');
        }
        k = e;
    }
}

int jn_testrun__payload(const char *want, size_t wlen, const struct jn_msg *m, const char *prefix,
                     struct jn_buf *out)
{
    const char *got = (const char *)m->payload;
    size_t glen = m->len, na = 0, nb = 0, nops = 0, at = 0, lead = strspn(prefix, " ");
    char indent[64];
    struct line *a, *b;
    struct op *ops = NULL;
    int changed = 0;

    if (wlen == glen && (wlen == 0 || memcmp(want, got, wlen) == 0)) {
        return 0;
    }
    a = split_lines(want, wlen, &na);
    b = split_lines(got, glen, &nb);
    if (a != NULL && b != NULL && (na > 1 || nb > 1)) {
        ops = edit_script(a, na, b, nb, &nops);
    }
    for (size_t k = 0; k < nops; k++) {
        changed |= ops[k].kind != ' ';
    }
    /* What follows goes under the line that names it, indented two more than that line. */
    snprintf(indent, sizeof(indent), "%*s", (int)(lead + 2 < 60 ? lead + 2 : 60), "");
    if (ops != NULL && changed) {
        jn_buf_printf(out, "%spayload differs (%zu bytes expected, %zu received):\n", prefix,
                      wlen, glen);
        print_hunks(out, indent, ops, nops, a, b);
    } else {
        /* One line each, lines too many to diff, or the same lines with other line ends:
         * both in full (cut), and where they part. */
        struct jn_buf q = JN_BUF_INIT;
        while (at < wlen && at < glen && want[at] == got[at]) {
            at++;
        }
        jn_buf_printf(out, "%spayload differs at byte %zu%s:\n", prefix, at,
                      ops != NULL ? " (the lines are the same: their ends differ)" : "");
        jn_buf_printf(out, "%sexpected %s\n", indent, quoted(&q, want, wlen));
        jn_buf_printf(out, "%sgot      %s\n", indent, quoted(&q, got, glen));
        jn_buf_reset(&q);
    }
    jn_free(ops);
    jn_free(a);
    jn_free(b);
    return 1;
}

/* ---- json ---- */

/* A YAML scalar as the JSON value it stands for (see jn_testrun_int.h). New reference or NULL. */
static json_t *scalar_json(const struct jn_node *n)
{
    const char *s = n->str;
    char *end;

    if (!n->plain) {
        return json_string(s);
    }
    if (jn_node_is_null(n)) {
        return json_null();
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        return json_true();
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        return json_false();
    }
    if (s[0] != '\0' && strspn(s, "+-0123456789") == strlen(s)) {
        long long v = strtoll(s, &end, 10);
        if (*end == '\0') {
            return json_integer(v);
        }
    }
    if (s[0] != '\0' && strspn(s, "+-0123456789.eE") == strlen(s)) {
        double v = strtod(s, &end);
        if (*end == '\0') {
            return json_real(v);
        }
    }
    return json_stringn(s, strlen(s));
}

/* value as compact JSON, cut, into b. */
static const char *dumped(struct jn_buf *b, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    jn_buf_reset(b);
    if (s == NULL) {
        jn_buf_puts(b, "?");
    } else if (strlen(s) > 300) {
        jn_buf_printf(b, "%.300s...", s);
    } else {
        jn_buf_puts(b, s);
    }
    free(s);
    return b->p ? b->p : "?";
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static int json_same(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        return json_number_value(a) == json_number_value(b);
    }
    return json_equal(a, b);
}

/* path: "$" and the keys and indexes down to here (grown and cut back around each level). */
static void json_match(const struct jn_node *want, const json_t *got, struct jn_buf *path,
                       struct diffs *c)
{
    struct jn_buf t = JN_BUF_INIT;
    size_t keep = path->len;

    if (want->kind == JN_NODE_MAP) {
        if (!json_is_object(got)) {
            diff_add(c, "json %s: expected an object, got %s %s", path->p, json_kind(got),
                     dumped(&t, got));
        }
        for (size_t i = 0; json_is_object(got) && i < want->n; i++) {
            const char *key = want->keys[i]->str;
            const json_t *v = json_object_get(got, key);
            jn_buf_printf(path, ".%s", key);
            if (v == NULL) {
                diff_add(c, "json %s: missing", path->p);
            } else {
                json_match(want->vals[i], v, path, c);
            }
            path->len = keep;
            path->p[keep] = '\0';
        }
    } else if (want->kind == JN_NODE_SEQ) {
        if (!json_is_array(got)) {
            diff_add(c, "json %s: expected an array, got %s %s", path->p, json_kind(got),
                     dumped(&t, got));
        } else if (json_array_size(got) != want->n) {
            diff_add(c, "json %s: expected %zu element(s), got %zu: %s", path->p, want->n,
                     json_array_size(got), dumped(&t, got));
        }
        for (size_t i = 0; json_is_array(got) && i < want->n && i < json_array_size(got); i++) {
            jn_buf_printf(path, "[%zu]", i);
            json_match(want->vals[i], json_array_get(got, i), path, c);
            path->len = keep;
            path->p[keep] = '\0';
        }
    } else {
        json_t *w = scalar_json(want);
        if (w == NULL || !json_same(w, got)) {
            struct jn_buf t2 = JN_BUF_INIT;
            diff_add(c, "json %s: expected %s, got %s", path->p, w ? dumped(&t2, w) : "?",
                     dumped(&t, got));
            jn_buf_reset(&t2);
        }
        json_decref(w);
    }
    jn_buf_reset(&t);
}

int jn_testrun__json(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                  struct jn_buf *out)
{
    struct diffs c = {out, prefix, 0};
    struct jn_buf path = JN_BUF_INIT;
    json_error_t jerr;
    json_t *got = json_loadb((const char *)m->payload, m->len, JSON_DECODE_ANY, &jerr);

    if (got == NULL) {
        diff_add(&c, "json: the payload is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return diff_end(&c);
    }
    if (jn_buf_puts(&path, "$") == 0) {
        json_match(want, got, &path, &c);
    } else {
        c.n++;
    }
    jn_buf_reset(&path);
    json_decref(got);
    return diff_end(&c);
}

/* ---- hl7 ---- */

int jn_testrun__hl7(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                 struct jn_buf *out)
{
    struct diffs c = {out, prefix, 0};
    struct jn_hl7_delims d;
    struct jn_err err;
    struct jn_buf q = JN_BUF_INIT, q2 = JN_BUF_INIT;

    jn_err_clear(&err);
    if (jn_hl7_delims_read(m->payload, m->len, &d, &err) != 0) {
        diff_add(&c, "hl7: the payload is not HL7 v2: %s", err.msg);
        return diff_end(&c);
    }
    for (size_t i = 0; i < want->n; i++) {
        const char *ps = want->keys[i]->str;
        const struct jn_node *v = want->vals[i];
        struct jn_hl7_path p;
        struct jn_hl7_span sp;
        char *text;
        size_t tlen;
        int found;

        if (jn_hl7_path_parse(ps, strlen(ps), &p, NULL) != 0) {
            continue; /* refused at load */
        }
        found = jn_hl7_lookup(m->payload, m->len, &p, &sp) == 1;
        if (jn_node_is_null(v)) {
            if (found) {
                diff_add(&c, "hl7 %s: expected absent, got %s", ps, quoted(&q, sp.p, sp.len));
            }
            continue;
        }
        if (!found) {
            diff_add(&c, "hl7 %s: expected %s, absent", ps, quoted(&q, v->str, strlen(v->str)));
            continue;
        }
        text = jn_malloc(sp.len + 1);
        if (text == NULL) {
            c.n++;
            continue;
        }
        tlen = jn_hl7_text(&d, &p, &sp, text);
        if (tlen != strlen(v->str) || memcmp(text, v->str, tlen) != 0) {
            diff_add(&c, "hl7 %s: expected %s, got %s", ps, quoted(&q, v->str, strlen(v->str)),
                     quoted(&q2, text, tlen));
        }
        jn_free(text);
    }
    jn_buf_reset(&q);
    jn_buf_reset(&q2);
    return diff_end(&c);
}

/* ---- headers ---- */

int jn_testrun__headers(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                     struct jn_buf *out)
{
    struct diffs c = {out, prefix, 0};
    struct jn_buf q = JN_BUF_INIT, q2 = JN_BUF_INIT;

    for (size_t i = 0; i < want->n; i++) {
        const char *name = want->keys[i]->str;
        const struct jn_node *v = want->vals[i];
        const char *got = jn_msg_header_get(m, name);
        if (jn_node_is_null(v)) {
            if (got != NULL) {
                diff_add(&c, "header %s: expected absent, got %s", name,
                         quoted(&q, got, strlen(got)));
            }
        } else if (got == NULL) {
            diff_add(&c, "header %s: expected %s, absent", name,
                     quoted(&q, v->str, strlen(v->str)));
        } else if (strcmp(got, v->str) != 0) {
            diff_add(&c, "header %s: expected %s, got %s", name,
                     quoted(&q, v->str, strlen(v->str)), quoted(&q2, got, strlen(got)));
        }
    }
    jn_buf_reset(&q);
    jn_buf_reset(&q2);
    return diff_end(&c);
}
