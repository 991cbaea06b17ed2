/* jn_opt: table-driven option parsing, validation and description (see jn_opt.h). */
#include "jn_opt.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "jn_buf.h"
#include "jn_err.h"
#include "jn_mem.h"

static const char *type_name(const struct jn_opt *o)
{
    switch (o->type) {
    case JN_OPT_T_STR: return "string";
    case JN_OPT_T_PATH: return "path";
    case JN_OPT_T_INT: return "integer";
    case JN_OPT_T_SIZE: return "size";
    case JN_OPT_T_DURATION: return "duration";
    case JN_OPT_T_BOOL: return "bool";
    case JN_OPT_T_ENUM: return "enum";
    case JN_OPT_T_STRLIST:
        return o->flags & JN_OPT_COMMAS ? "list or comma-separated string" : "list of strings";
    case JN_OPT_T_STRMAP: return "map of strings";
    case JN_OPT_T_SUB: return "map";
    case JN_OPT_T_SUBLIST: return "list of maps";
    }
    return "?";
}

int jn_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};

    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return JN_EINVAL;
}

/* A non-negative decimal number with an optional fraction, then a unit suffix. */
static int number_unit(const char *s, double *num, const char **unit)
{
    char *end;

    if (s[0] < '0' || s[0] > '9') {
        return JN_EINVAL;
    }
    errno = 0;
    *num = strtod(s, &end);
    if (errno != 0 || end == s) {
        return JN_EINVAL;
    }
    while (*end == ' ') {
        end++;
    }
    *unit = end;
    return 0;
}

int jn_parse_size(const char *s, unsigned long long *out)
{
    static const struct { const char *u; double mul; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
        {"TiB", 1099511627776.0}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
        {"K", 1024.0}, {"M", 1048576.0}, {"G", 1073741824.0},
    };
    double num, v;
    const char *unit;

    if (number_unit(s, &num, &unit) != 0) {
        return JN_EINVAL;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(unit, units[i].u) == 0) {
            v = num * units[i].mul;
            if (v > 1.8e19) {
                return JN_EINVAL;
            }
            *out = (unsigned long long)v;
            return 0;
        }
    }
    return JN_EINVAL;
}

int jn_parse_duration_ms(const char *s, long long *out)
{
    static const struct { const char *u; double mul; } units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    double num, v;
    const char *unit;

    if (number_unit(s, &num, &unit) != 0) {
        return JN_EINVAL;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(unit, units[i].u) == 0) {
            v = num * units[i].mul;
            if (v > 9.2e18) {
                return JN_EINVAL;
            }
            *out = (long long)v;
            return 0;
        }
    }
    return JN_EINVAL;
}

static void free_strlist(struct jn_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        jn_free(l->v[i]);
    }
    jn_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void free_strmap(struct jn_strmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        jn_free(m->k[i]);
        jn_free(m->v[i]);
    }
    jn_free(m->k);
    jn_free(m->v);
    m->k = m->v = NULL;
    m->n = 0;
}

static void free_sublist(const struct jn_opt *o, struct jn_sublist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        jn_opt_free(o->sub, (char *)l->v + i * o->elsize);
    }
    jn_free(l->v);
    l->v = NULL;
    l->n = 0;
}

void jn_opt_free(const struct jn_opt *tab, void *conf)
{
    for (const struct jn_opt *o = tab; o->name; o++) {
        void *f = (char *)conf + o->off;
        switch (o->type) {
        case JN_OPT_T_STR:
        case JN_OPT_T_PATH:
            jn_free(*(char **)f);
            *(char **)f = NULL;
            break;
        case JN_OPT_T_STRLIST:
            free_strlist(f);
            break;
        case JN_OPT_T_STRMAP:
            free_strmap(f);
            break;
        case JN_OPT_T_SUB:
            jn_opt_free(o->sub, f);
            break;
        case JN_OPT_T_SUBLIST:
            free_sublist(o, f);
            break;
        default:
            break;
        }
    }
}

static int str_same(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* One option's values at fa and fb (of type o->type): 1 when equal. */
static int field_same(const struct jn_opt *o, const void *fa, const void *fb, unsigned skip,
                      char *where, size_t wlen)
{
    switch (o->type) {
    case JN_OPT_T_STR:
    case JN_OPT_T_PATH:
        return str_same(*(char *const *)fa, *(char *const *)fb);
    case JN_OPT_T_INT:
    case JN_OPT_T_DURATION:
        return *(const long long *)fa == *(const long long *)fb;
    case JN_OPT_T_SIZE:
        return *(const unsigned long long *)fa == *(const unsigned long long *)fb;
    case JN_OPT_T_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case JN_OPT_T_ENUM:
        return *(const int *)fa == *(const int *)fb;
    case JN_OPT_T_STRLIST: {
        const struct jn_strlist *a = fa, *b = fb;
        if (a->n != b->n) {
            return 0;
        }
        for (size_t i = 0; i < a->n; i++) {
            if (!str_same(a->v[i], b->v[i])) {
                return 0;
            }
        }
        return 1;
    }
    case JN_OPT_T_STRMAP: {
        const struct jn_strmap *a = fa, *b = fb;
        if (a->n != b->n) {
            return 0;
        }
        for (size_t i = 0; i < a->n; i++) {
            if (!str_same(a->k[i], b->k[i]) || !str_same(a->v[i], b->v[i])) {
                return 0;
            }
        }
        return 1;
    }
    case JN_OPT_T_SUB:
        return jn_opt_same(o->sub, fa, fb, skip, where, wlen);
    case JN_OPT_T_SUBLIST: {
        const struct jn_sublist *a = fa, *b = fb;
        if (a->n != b->n) {
            return 0;
        }
        for (size_t i = 0; i < a->n; i++) {
            if (!jn_opt_same(o->sub, (const char *)a->v + i * o->elsize,
                             (const char *)b->v + i * o->elsize, skip, where, wlen)) {
                return 0;
            }
        }
        return 1;
    }
    }
    return 0;
}

int jn_opt_same(const struct jn_opt *tab, const void *a, const void *b, unsigned skip,
                char *where, size_t wlen)
{
    for (const struct jn_opt *o = tab; o->name; o++) {
        if (o->flags & skip) {
            continue;
        }
        if (where != NULL && wlen > 0) {
            where[0] = '\0';
        }
        if (!field_same(o, (const char *)a + o->off, (const char *)b + o->off, skip, where,
                        wlen)) {
            if (where != NULL && wlen > 0) {
                /* The outermost name first: "tls.cert" (a nested table wrote "cert"). */
                char inner[128];
                snprintf(inner, sizeof(inner), "%s", where);
                if (inner[0] != '\0') {
                    snprintf(where, wlen, "%s.%s", o->name, inner);
                } else {
                    snprintf(where, wlen, "%s", o->name);
                }
            }
            return 0;
        }
    }
    return 1;
}

static size_t scalar_size(enum jn_opt_type t)
{
    switch (t) {
    case JN_OPT_T_INT:
    case JN_OPT_T_DURATION:
        return sizeof(long long);
    case JN_OPT_T_SIZE:
        return sizeof(unsigned long long);
    case JN_OPT_T_BOOL:
        return sizeof(bool);
    case JN_OPT_T_ENUM:
        return sizeof(int);
    default:
        return 0;
    }
}

int jn_opt_reload(const struct jn_opt *tab, void *dst, const void *src, int apply, char *where,
                  size_t wlen)
{
    int stuck = 0;

    for (const struct jn_opt *o = tab; o->name; o++) {
        char *fd = (char *)dst + o->off;
        const char *fs = (const char *)src + o->off;
        size_t sz = scalar_size(o->type);
        if (o->type == JN_OPT_T_SUB && !(o->flags & JN_OPT_RELOADABLE)) {
            stuck += jn_opt_reload(o->sub, fd, fs, apply, where, wlen);
            continue;
        }
        if (!(o->flags & JN_OPT_RELOADABLE) ||
            field_same(o, fd, fs, 0, NULL, 0)) {
            continue;
        }
        if (sz == 0) {
            /* A string or list: the running conf owns its memory (freed with its config). */
            if (stuck++ == 0 && where != NULL && wlen > 0) {
                snprintf(where, wlen, "%s", o->name);
            }
        } else if (apply) {
            memcpy(fd, fs, sz);
        }
    }
    return stuck;
}

/* 90000 -> "90s", 3600000 -> "1h": the largest unit that divides evenly. */
static void fmt_dur(long long ms, char *buf, size_t n)
{
    static const struct { const char *u; long long mul; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000},
    };

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].mul == 0) {
            snprintf(buf, n, "%lld%s", ms / units[i].mul, units[i].u);
            return;
        }
    }
    snprintf(buf, n, "%lldms", ms);
}

static void fmt_size(long long v, char *buf, size_t n)
{
    static const struct { const char *u; long long mul; } units[] = {
        {"TiB", 1LL << 40}, {"GiB", 1LL << 30}, {"MiB", 1LL << 20}, {"KiB", 1LL << 10},
    };

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (v != 0 && v % units[i].mul == 0) {
            snprintf(buf, n, "%lld%s", v / units[i].mul, units[i].u);
            return;
        }
    }
    snprintf(buf, n, "%lld", v);
}

static void range_text(const struct jn_opt *o, char *buf, size_t n)
{
    char a[40], b[40];

    buf[0] = '\0';
    if (o->min == 0 && o->max == 0) {
        return;
    }
    if (o->type == JN_OPT_T_DURATION) {
        fmt_dur(o->min, a, sizeof(a));
        fmt_dur(o->max, b, sizeof(b));
    } else if (o->type == JN_OPT_T_SIZE) {
        fmt_size(o->min, a, sizeof(a));
        fmt_size(o->max, b, sizeof(b));
    } else if (o->type == JN_OPT_T_INT) {
        snprintf(a, sizeof(a), "%lld", o->min);
        snprintf(b, sizeof(b), "%lld", o->max);
    } else {
        return;
    }
    snprintf(buf, n, "%s..%s", a, b);
}

static void enum_list(const struct jn_opt *o, struct jn_buf *b)
{
    for (size_t i = 0; o->enums && o->enums[i]; i++) {
        jn_buf_printf(b, "%s%s", i ? " | " : "", o->enums[i]);
    }
}

/* Appends a copy of s[0..len) to the array v of *n strings. */
static int add_strn(char ***v, size_t *n, const char *s, size_t len)
{
    char **nv = jn_realloc(*v, (*n + 1) * sizeof(**v));
    char *c;

    if (nv == NULL) {
        return JN_ENOMEM;
    }
    *v = nv;
    c = jn_strndup(s, len);
    if (c == NULL) {
        return JN_ENOMEM;
    }
    (*v)[(*n)++] = c;
    return 0;
}

static int add_str(char ***v, size_t *n, const char *s)
{
    return add_strn(v, n, s, strlen(s));
}

struct pctx {
    const char *what;
    const struct jn_pos *pos;
    const char *dir; /* folder relative paths resolve against; NULL: leave them relative */
    struct jn_diag *d;
    int errors;
};

#define PERR(c, ...)                                                                              \
    do {                                                                                          \
        jn_diag_add((c)->d, (c)->pos, __VA_ARGS__);                                               \
        (c)->errors++;                                                                            \
    } while (0)

/* s made absolute against dir (see JN_OPT_PATH): "./out" in /etc/x -> "/etc/x/out". Leading
 * "./" are dropped so messages and logs show a tidy path; ".." is kept as written. */
static char *resolve_path(const char *dir, const char *s)
{
    struct jn_buf b = JN_BUF_INIT;
    size_t dl;

    if (dir == NULL || s[0] == '\0' || s[0] == '/') {
        return jn_strdup(s);
    }
    while (s[0] == '.' && s[1] == '/') {
        s += 2;
        while (s[0] == '/') {
            s++;
        }
    }
    if (strcmp(s, ".") == 0) {
        s = "";
    }
    dl = strlen(dir);
    if (jn_buf_append(&b, dir, dl) != 0 ||
        (s[0] != '\0' && dl > 0 && dir[dl - 1] != '/' && jn_buf_putc(&b, '/') != 0) ||
        jn_buf_puts(&b, s) != 0) {
        jn_buf_reset(&b);
        return NULL;
    }
    return jn_buf_steal(&b);
}

/*
 * Appends the value s to the list l: as it is, or with JN_OPT_COMMAS as the items between its
 * commas, blanks around each trimmed. An empty item is an error at c->pos (the value's).
 */
static void list_add(const struct jn_opt *o, struct jn_strlist *l, const char *s, struct pctx *c)
{
    static const char blanks[] = " \t\r\n";
    const char *p = s;

    if (!(o->flags & JN_OPT_COMMAS)) {
        if (add_str(&l->v, &l->n, s) != 0) {
            PERR(c, "%s: out of memory", c->what);
        }
        return;
    }
    for (size_t item = 1;; item++) {
        size_t len = strcspn(p, ",");
        const char *next = p + len;
        while (len > 0 && strchr(blanks, *p) != NULL) {
            p++;
            len--;
        }
        while (len > 0 && strchr(blanks, p[len - 1]) != NULL) {
            len--;
        }
        if (len == 0) {
            PERR(c, "%s: %s: item %zu of '%s' is empty, expected values separated by commas",
                 c->what, o->name, item, s);
            return;
        }
        if (add_strn(&l->v, &l->n, p, len) != 0) {
            PERR(c, "%s: out of memory", c->what);
            return;
        }
        if (*next == '\0') {
            return;
        }
        p = next + 1;
    }
}

/* Parse one scalar string into the field; used for defaults (pos NULL) and user values. */
static void set_scalar(const struct jn_opt *o, const char *s, void *f, struct pctx *c)
{
    char range[96];

    range_text(o, range, sizeof(range));
    switch (o->type) {
    case JN_OPT_T_STR:
    case JN_OPT_T_PATH: {
        char *v = o->type == JN_OPT_T_PATH ? resolve_path(c->dir, s) : jn_strdup(s);
        if (v == NULL) {
            PERR(c, "%s: out of memory", c->what);
            return;
        }
        jn_free(*(char **)f);
        *(char **)f = v;
        return;
    }
    case JN_OPT_T_INT: {
        char *end;
        long long v;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end) {
            PERR(c, "%s: %s: '%s' is not an integer, expected a whole number%s%s", c->what,
                 o->name, s, range[0] ? " in " : "", range);
            return;
        }
        if ((o->min || o->max) && (v < o->min || v > o->max)) {
            PERR(c, "%s: %s: %lld is out of range %s", c->what, o->name, v, range);
            return;
        }
        *(long long *)f = v;
        return;
    }
    case JN_OPT_T_SIZE: {
        unsigned long long v;
        if (jn_parse_size(s, &v) != 0) {
            PERR(c, "%s: %s: '%s' is not a size, expected a number with an optional unit "
                 "(B, KiB, MiB, GiB, KB, MB, GB)", c->what, o->name, s);
            return;
        }
        if ((o->min || o->max) &&
            (v < (unsigned long long)o->min || v > (unsigned long long)o->max)) {
            PERR(c, "%s: %s: %s (%llu bytes) is out of range %s bytes", c->what, o->name, s, v,
                 range);
            return;
        }
        *(unsigned long long *)f = v;
        return;
    }
    case JN_OPT_T_DURATION: {
        long long v;
        if (jn_parse_duration_ms(s, &v) != 0) {
            PERR(c, "%s: %s: '%s' is not a duration, expected a number with a unit "
                 "(ms, s, m, h, d)", c->what, o->name, s);
            return;
        }
        if ((o->min || o->max) && (v < o->min || v > o->max)) {
            PERR(c, "%s: %s: %s is out of range %s", c->what, o->name, s, range);
            return;
        }
        *(long long *)f = v;
        return;
    }
    case JN_OPT_T_BOOL:
        if (jn_parse_bool(s, (bool *)f) != 0) {
            PERR(c, "%s: %s: '%s' is not a bool, expected true or false", c->what, o->name, s);
        }
        return;
    case JN_OPT_T_ENUM:
        for (int i = 0; o->enums[i]; i++) {
            if (strcmp(o->enums[i], s) == 0) {
                *(int *)f = i;
                return;
            }
        }
        {
            struct jn_buf b = JN_BUF_INIT;
            size_t n = 0;
            const char *near;
            enum_list(o, &b);
            while (o->enums[n]) {
                n++;
            }
            near = jn_nearest(s, o->enums, n);
            PERR(c, "%s: %s: '%s' is not allowed, expected one of: %s%s%s%s", c->what, o->name,
                 s, b.p ? b.p : "", near ? " (did you mean '" : "", near ? near : "",
                 near ? "'?)" : "");
            jn_buf_reset(&b);
        }
        return;
    case JN_OPT_T_STRLIST: {
        struct jn_strlist *l = f;
        free_strlist(l);
        list_add(o, l, s, c);
        return;
    }
    default:
        PERR(c, "%s: %s: expected a %s, not a single value", c->what, o->name, type_name(o));
        return;
    }
}

static void set_node(const struct jn_opt *o, const struct jn_node *v, void *f, struct pctx *c,
                     unsigned dirmask)
{
    struct pctx sub = *c;

    sub.pos = &v->pos;
    sub.dir = v->dir;
    if (o->type == JN_OPT_T_SUB) {
        if (v->kind != JN_NODE_MAP) {
            PERR(&sub, "%s: %s: expected a map, found a %s", c->what, o->name,
                 jn_node_kind_name(v));
        } else {
            char what[256];
            snprintf(what, sizeof(what), "%s: %s", c->what, o->name);
            sub.errors += jn_opt_parse(o->sub, v, f, what, dirmask & ~JN_OPT_LENIENT, NULL, v,
                                       c->d);
        }
    } else if (o->type == JN_OPT_T_SUBLIST) {
        struct jn_sublist *l = f;
        free_sublist(o, l);
        if (v->kind != JN_NODE_SEQ) {
            PERR(&sub, "%s: %s: expected a list of maps, found a %s", c->what, o->name,
                 jn_node_kind_name(v));
        } else if (v->n > 0 && (l->v = jn_calloc(v->n, o->elsize)) == NULL) {
            PERR(&sub, "%s: out of memory", c->what);
        }
        for (size_t i = 0; l->v != NULL && i < v->n; i++) {
            const struct jn_node *item = v->vals[i];
            char what[256];
            snprintf(what, sizeof(what), "%s: %s[%zu]", c->what, o->name, i);
            l->n = i + 1;
            if (item->kind != JN_NODE_MAP) {
                struct pctx ic = sub;
                ic.pos = &item->pos;
                PERR(&ic, "%s: expected a map, found a %s", what, jn_node_kind_name(item));
                sub.errors = ic.errors;
                continue;
            }
            sub.errors += jn_opt_parse(o->sub, item, (char *)l->v + i * o->elsize, what,
                                       dirmask & ~JN_OPT_LENIENT, NULL, item, c->d);
        }
    } else if (o->type == JN_OPT_T_STRLIST && v->kind == JN_NODE_SEQ) {
        struct jn_strlist *l = f;
        free_strlist(l);
        for (size_t i = 0; i < v->n; i++) {
            struct pctx ic = sub;
            ic.pos = &v->vals[i]->pos;
            if (v->vals[i]->kind != JN_NODE_SCALAR) {
                PERR(&ic, "%s: %s: list items must be values, found a %s", c->what, o->name,
                     jn_node_kind_name(v->vals[i]));
            } else {
                list_add(o, l, v->vals[i]->str, &ic);
            }
            sub.errors = ic.errors; /* ic started from sub.errors */
        }
    } else if (o->type == JN_OPT_T_STRMAP) {
        struct jn_strmap *m = f;
        if (v->kind != JN_NODE_MAP) {
            PERR(&sub, "%s: %s: expected a map of name: value, found a %s", c->what, o->name,
                 jn_node_kind_name(v));
        } else {
            free_strmap(m);
            for (size_t i = 0; i < v->n; i++) {
                struct pctx ic = sub;
                ic.pos = &v->vals[i]->pos;
                if (v->vals[i]->kind != JN_NODE_SCALAR) {
                    PERR(&ic, "%s: %s.%s: expected a value, found a %s", c->what, o->name,
                         v->keys[i]->str, jn_node_kind_name(v->vals[i]));
                } else {
                    size_t n = m->n;
                    if (add_str(&m->k, &n, v->keys[i]->str) != 0 ||
                        add_str(&m->v, &m->n, v->vals[i]->str) != 0) {
                        PERR(&ic, "%s: out of memory", c->what);
                        if (n != m->n) {
                            jn_free(m->k[n - 1]);
                        }
                        break;
                    }
                }
                sub.errors = ic.errors; /* ic started from sub.errors */
            }
        }
    } else if (v->kind != JN_NODE_SCALAR) {
        PERR(&sub, "%s: %s: expected a %s, found a %s", c->what, o->name, type_name(o),
             jn_node_kind_name(v));
    } else {
        set_scalar(o, v->str, f, &sub);
    }
    if (o->validate != NULL && sub.errors == c->errors) {
        char what[256];
        snprintf(what, sizeof(what), "%s: %s", c->what, o->name);
        sub.errors += o->validate(f, v, what, c->d);
    }
    c->errors = sub.errors;
}

static int in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list && list[i]; i++) {
        if (strcmp(s, list[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int jn_opt_parse(const struct jn_opt *tab, const struct jn_node *map, void *conf, const char *what,
                 unsigned dirmask, const char *const *skip, const struct jn_node *at,
                 struct jn_diag *d)
{
    struct pctx c = {what, at ? &at->pos : NULL, at ? at->dir : NULL, d, 0};
    const char *names[128];
    size_t nnames = 0;

    /* Defaults first, through the same parser as user values. */
    for (const struct jn_opt *o = tab; o->name; o++) {
        int other_dir = (dirmask & (JN_OPT_IN | JN_OPT_OUT)) &&
                        (o->flags & (JN_OPT_IN | JN_OPT_OUT)) && !(o->flags & dirmask);
        if (nnames < 128 && !other_dir) {
            names[nnames++] = o->name;
        }
        if (o->def != NULL) {
            struct pctx dc = {what, NULL, c.dir, d, 0};
            set_scalar(o, o->def, (char *)conf + o->off, &dc);
            c.errors += dc.errors;
        } else if (o->type == JN_OPT_T_SUB) {
            c.errors += jn_opt_parse(o->sub, NULL, (char *)conf + o->off, what, dirmask, NULL, at,
                                     d);
        }
    }
    if (map != NULL && map->kind != JN_NODE_MAP) {
        c.pos = &map->pos;
        PERR(&c, "%s: expected a map of options, found a %s", what, jn_node_kind_name(map));
        return c.errors;
    }
    for (size_t i = 0; map && i < map->n; i++) {
        const char *key = map->keys[i]->str;
        const struct jn_opt *o = NULL;
        struct pctx kc = c;

        kc.pos = &map->keys[i]->pos;
        if (in_list(key, skip)) {
            continue;
        }
        for (const struct jn_opt *p = tab; p->name; p++) {
            if (strcmp(p->name, key) == 0 || (p->alias && strcmp(p->alias, key) == 0)) {
                o = p;
                break;
            }
        }
        if (o != NULL && strcmp(o->name, key) != 0) {
            if (jn_node_get(map, o->name) != NULL) {
                PERR(&kc, "%s: '%s' and '%s' are the same option ('%s' is its deprecated "
                     "name), give only '%s'", what, key, o->name, key, o->name);
                c.errors = kc.errors;
                continue;
            }
            jn_diag_warn(d, kc.pos, "%s: `%s` is deprecated, use `%s`", what, key, o->name);
        }
        if (o == NULL && (dirmask & JN_OPT_LENIENT)) {
            continue;
        }
        if (o == NULL) {
            struct jn_buf b = JN_BUF_INIT;
            const char *near = jn_nearest(key, names, nnames);
            for (size_t k = 0; skip && skip[k]; k++) {
                jn_buf_printf(&b, "%s%s", b.len ? ", " : "", skip[k]);
            }
            for (size_t k = 0; k < nnames; k++) {
                jn_buf_printf(&b, "%s%s", b.len ? ", " : "", names[k]);
            }
            if (near) {
                PERR(&kc, "%s: unknown option '%s', did you mean '%s'? (expected one of: %s)",
                     what, key, near, b.p ? b.p : "");
            } else {
                PERR(&kc, "%s: unknown option '%s', expected one of: %s", what, key,
                     b.p ? b.p : "");
            }
            jn_buf_reset(&b);
            c.errors = kc.errors;
            continue;
        }
        if (dirmask && (o->flags & (JN_OPT_IN | JN_OPT_OUT)) && !(o->flags & dirmask)) {
            PERR(&kc, "%s: option '%s' applies only to direction: %s", what, key,
                 (o->flags & JN_OPT_IN) ? "in" : "out");
            c.errors = kc.errors;
            continue;
        }
        if (jn_node_is_null(map->vals[i]) && o->type != JN_OPT_T_STR &&
            o->type != JN_OPT_T_PATH) {
            PERR(&kc, "%s: %s: no value given, expected a %s", what, key, type_name(o));
            c.errors = kc.errors;
            continue;
        }
        set_node(o, map->vals[i], (char *)conf + o->off, &kc, dirmask);
        c.errors = kc.errors;
    }
    for (const struct jn_opt *o = tab; o->name; o++) {
        if ((o->flags & JN_OPT_REQUIRED) && !jn_node_get(map, o->name) &&
            !(o->alias && jn_node_get(map, o->alias))) {
            /* Required only in one direction: not when the direction is the other one, nor
             * when it is unknown (dirmask 0: a missing or wrong direction was reported). */
            if ((o->flags & (JN_OPT_IN | JN_OPT_OUT)) && !(o->flags & dirmask)) {
                continue;
            }
            PERR(&c, "%s: missing required option '%s' (%s: %s)", what, o->name, type_name(o),
                 o->doc);
        }
    }
    return c.errors;
}

/* A markdown table cell: '|' would end the cell. */
static void md_cell(FILE *out, const char *s)
{
    fputs(" ", out);
    for (; s && *s; s++) {
        if (*s == '|') {
            fputs("\\|", out);
        } else {
            fputc(*s, out);
        }
    }
    fputs(" |", out);
}

/* "(in) " / "(out) ": the direction an option applies to, in front of its doc in both forms. */
static const char *dir_marks(const struct jn_opt *o)
{
    switch (o->flags & (JN_OPT_IN | JN_OPT_OUT)) {
    case JN_OPT_IN:
        return "(in) ";
    case JN_OPT_OUT:
        return "(out) ";
    case JN_OPT_IN | JN_OPT_OUT:
        return "(in) (out) ";
    default:
        return "";
    }
}

void jn_opt_roff_text(FILE *out, const char *s)
{
    int bol = 1;

    for (; s && *s; s++) {
        if (bol && (*s == '.' || *s == '\'')) {
            fputs("\\&", out); /* a line starting so would be a roff request */
        }
        if (*s == '\\') {
            fputs("\\e", out);
        } else if (*s == '-') {
            fputs("\\-", out); /* a minus, not a hyphen: options copy and paste as typed */
        } else {
            fputc(*s, out);
        }
        bol = *s == '\n';
    }
}

/* md: 0 plain text (describe TYPE), 1 a markdown table row, 2 a roff .TP paragraph (man). */
static void describe_one(const struct jn_opt *o, const char *prefix, FILE *out, int md)
{
    char name[160], range[96], cell[2048];
    struct jn_buf b = JN_BUF_INIT;

    snprintf(name, sizeof(name), "%s%s", prefix ? prefix : "", o->name);
    range_text(o, range, sizeof(range));
    if (o->type == JN_OPT_T_ENUM) {
        enum_list(o, &b);
    }
    if (md == 2) {
        fputs(".TP\n.B ", out);
        jn_opt_roff_text(out, name);
        fprintf(out, "\n\\fI%s\\fR, default ", type_name(o));
        jn_opt_roff_text(out, o->flags & JN_OPT_REQUIRED ? "(required)" : o->def ? o->def : "-");
        snprintf(cell, sizeof(cell), ". %s%s%s%s%s%s%s%s\n", dir_marks(o), o->doc,
                 range[0] ? " Range: " : "", range, b.p ? " One of: " : "", b.p ? b.p : "",
                 o->flags & JN_OPT_RELOADABLE ? " Reloadable." : "",
                 o->flags & JN_OPT_SECRET ? " Secret: never logged." : "");
        jn_opt_roff_text(out, cell);
        if (o->alias) {
            fputs(".TP\n.B ", out);
            jn_opt_roff_text(out, prefix ? prefix : "");
            jn_opt_roff_text(out, o->alias);
            fputs("\nDeprecated: the old name of ", out);
            jn_opt_roff_text(out, o->name);
            fputs(".\n", out);
        }
    } else if (md) {
        fprintf(out, "| `%s` |", name);
        md_cell(out, type_name(o));
        md_cell(out, o->flags & JN_OPT_REQUIRED ? "**required**"
                     : (o->def ? (o->def[0] ? o->def : "\"\"") : "—"));
        snprintf(cell, sizeof(cell), "%s%s", range, b.p ? b.p : "");
        md_cell(out, cell);
        md_cell(out, o->flags & JN_OPT_RELOADABLE ? "yes" : "");
        snprintf(cell, sizeof(cell), "%s%s%s", dir_marks(o), o->doc,
                 o->flags & JN_OPT_SECRET ? " Secret: never logged." : "");
        md_cell(out, cell);
        fputc('\n', out);
        if (o->alias) {
            fprintf(out, "| `%s%s` | | | | | Deprecated: the old name of `%s`. |\n",
                    prefix ? prefix : "", o->alias, o->name);
        }
    } else {
        fprintf(out, "  %-24s %-16s default %-10s %s%s%s%s%s%s%s%s\n", name, type_name(o),
                o->flags & JN_OPT_REQUIRED ? "(required)" : (o->def ? o->def : "-"),
                dir_marks(o), o->doc,
                range[0] ? " Range: " : "", range, b.p ? " One of: " : "", b.p ? b.p : "",
                o->flags & JN_OPT_RELOADABLE ? " Reloadable." : "",
                o->flags & JN_OPT_SECRET ? " Secret: never logged." : "");
        if (o->alias) {
            fprintf(out, "  %s%-*s Deprecated: the old name of `%s`.\n", prefix ? prefix : "",
                    24 - (int)strlen(prefix ? prefix : ""), o->alias, o->name);
        }
    }
    jn_buf_reset(&b);
    if (o->type == JN_OPT_T_SUB || o->type == JN_OPT_T_SUBLIST) {
        snprintf(name, sizeof(name), "%s%s%s.", prefix ? prefix : "", o->name,
                 o->type == JN_OPT_T_SUBLIST ? "[]" : "");
        for (const struct jn_opt *s = o->sub; s->name; s++) {
            describe_one(s, name, out, md);
        }
    }
}

void jn_opt_describe_md(const struct jn_opt *tab, const char *prefix, FILE *out)
{
    fprintf(out, "| option | type | default | allowed | reloadable | description |\n");
    fprintf(out, "|---|---|---|---|---|---|\n");
    for (const struct jn_opt *o = tab; o->name; o++) {
        describe_one(o, prefix, out, 1);
    }
}

void jn_opt_describe_roff(const struct jn_opt *tab, const char *prefix, FILE *out)
{
    for (const struct jn_opt *o = tab; o->name; o++) {
        describe_one(o, prefix, out, 2);
    }
}

void jn_opt_describe_text(const struct jn_opt *tab, const char *prefix, FILE *out)
{
    for (const struct jn_opt *o = tab; o->name; o++) {
        describe_one(o, prefix, out, 0);
    }
}

int jn_parse_when(const char *s, int64_t now_us, int64_t *out_us)
{
    char dur[32];
    size_t n = strlen(s);
    long long ms;
    struct tm tm;
    const char *end;

    /* "10m ago" (the help's form) and "10m" are the same; the unit is required, since a bare
     * number would be milliseconds, which nobody means here. */
    if (n >= 4 && strcmp(s + n - 4, " ago") == 0) {
        n -= 4;
        while (n > 0 && s[n - 1] == ' ') {
            n--;
        }
    }
    if (n > 0 && n < sizeof(dur) && isalpha((unsigned char)s[n - 1])) {
        memcpy(dur, s, n);
        dur[n] = '\0';
        if (jn_parse_duration_ms(dur, &ms) == 0) {
            *out_us = ms > now_us / 1000 ? 0 : now_us - ms * 1000; /* before 1970: from 0 */
            return 0;
        }
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL || (*end != '\0' && strcmp(end, "Z") != 0)) {
        return JN_EINVAL;
    }
    *out_us = (int64_t)timegm(&tm) * 1000000;
    if (*out_us < 0) {
        *out_us = 0;
    }
    return 0;
}
