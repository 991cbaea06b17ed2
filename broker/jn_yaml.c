/* jn_yaml: libyaml events to a positioned node tree, with ${ENV} and ${file:/path} substitution
 * (see jn_yaml.h). */
#include "jn_yaml.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "jn_buf.h"
#include "jn_mem.h"

#define MAX_DEPTH 64

struct builder {
    struct jn_diag *d;
    const char *file;
    const char *dir;  /* node->dir of every node; NULL for a buffer */
    const char *buf; /* the text being parsed, for hints about a syntax error */
    size_t len;
    struct jn_node *stack[MAX_DEPTH];
    int depth;
    struct jn_node *root;
    int failed;
};

static struct jn_node *node_new(struct builder *b, enum jn_node_kind kind, const yaml_mark_t *m)
{
    struct jn_node *n = jn_calloc(1, sizeof(*n));

    if (n == NULL) {
        return NULL;
    }
    n->kind = kind;
    n->dir = b->dir;
    n->pos.file = b->file;
    n->pos.line = (int)m->line + 1;
    n->pos.col = (int)m->column + 1;
    return n;
}

void jn_node_free(struct jn_node *n)
{
    if (n == NULL) {
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        if (n->keys) {
            jn_node_free(n->keys[i]);
        }
        jn_node_free(n->vals[i]);
    }
    jn_free(n->keys);
    jn_free(n->vals);
    jn_free(n->str);
    jn_free(n);
}

#define FILE_VALUE_MAX (64 * 1024)

/*
 * ${file:/path}: the file's content with one trailing newline (LF or CRLF) removed, appended
 * to out; a relative path is taken from the config file's folder. The content is never put
 * into a message (it is usually a secret); the path is. 0, or -1 with the error in b->d.
 */
static int file_value(struct builder *b, const char *p, size_t n, const struct jn_pos *pos,
                      struct jn_buf *out)
{
    char path[PATH_MAX], buf[FILE_VALUE_MAX + 1];
    size_t len = 0;
    FILE *f;
    int e;

    if (n == 0 || (p[0] != '/' && b->dir == NULL && n >= sizeof(path)) ||
        snprintf(path, sizeof(path), "%s%s%.*s", p[0] == '/' || b->dir == NULL ? "" : b->dir,
                 p[0] == '/' || b->dir == NULL ? "" : "/", (int)n, p) >= (int)sizeof(path)) {
        jn_diag_add(b->d, pos, "bad file name in '${file:...}', expected '${file:/path}'");
        return -1;
    }
    f = fopen(path, "rb");
    if (f == NULL) {
        e = errno;
        jn_diag_add(b->d, pos, "cannot read %s for ${file:%.*s}: %s", path, (int)n, p,
                    strerror(e));
        return -1;
    }
    len = fread(buf, 1, sizeof(buf), f);
    e = ferror(f) ? errno : 0;
    fclose(f);
    if (e != 0 || len > FILE_VALUE_MAX) {
        jn_diag_add(b->d, pos, "cannot read %s for ${file:%.*s}: %s", path, (int)n, p,
                    e ? strerror(e) : "larger than 64 KiB");
        return -1;
    }
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r') {
            len--;
        }
    }
    if (memchr(buf, '\0', len) != NULL) {
        jn_diag_add(b->d, pos, "%s for ${file:%.*s} holds a NUL byte, expected text", path,
                    (int)n, p);
        return -1;
    }
    e = jn_buf_append(out, buf, len);
    /* The value may be a secret: leave no copy on the stack. */
    explicit_bzero(buf, len);
    return e == 0 ? 0 : -1;
}

/* ${NAME}, ${NAME:-default} and ${file:/path}; "$${" stays a literal "${". */
static char *substitute(struct builder *b, const char *s, size_t len, const struct jn_pos *pos)
{
    struct jn_buf out = JN_BUF_INIT;
    size_t i = 0;

    while (i < len) {
        if (s[i] == '$' && i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
            jn_buf_puts(&out, "${");
            i += 3;
            continue;
        }
        if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
            const char *close = memchr(s + i + 2, '}', len - i - 2);
            const char *name = s + i + 2;
            const char *def = NULL;
            size_t nlen, dlen = 0;
            char var[256];
            const char *val;

            if (close == NULL) {
                jn_diag_add(b->d, pos, "unterminated '${' in value, expected '${NAME}'");
                jn_buf_reset(&out);
                return NULL;
            }
            nlen = (size_t)(close - name);
            if (nlen > 5 && memcmp(name, "file:", 5) == 0) {
                if (file_value(b, name + 5, nlen - 5, pos, &out) != 0) {
                    jn_buf_reset(&out);
                    return NULL;
                }
                i = (size_t)(close - s) + 1;
                continue;
            }
            for (size_t k = 0; k + 1 < nlen; k++) {
                if (name[k] == ':' && name[k + 1] == '-') {
                    def = name + k + 2;
                    dlen = nlen - k - 2;
                    nlen = k;
                    break;
                }
            }
            if (nlen == 0 || nlen >= sizeof(var)) {
                jn_diag_add(b->d, pos, "bad variable name in '${...}'");
                jn_buf_reset(&out);
                return NULL;
            }
            for (size_t k = 0; k < nlen; k++) {
                char c = name[k];
                if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                      (k > 0 && c >= '0' && c <= '9'))) {
                    jn_diag_add(b->d, pos, "bad variable name '%.*s' in '${...}'", (int)nlen, name);
                    jn_buf_reset(&out);
                    return NULL;
                }
            }
            memcpy(var, name, nlen);
            var[nlen] = '\0';
            val = getenv(var);
            if (val != NULL && (val[0] != '\0' || def == NULL)) {
                jn_buf_puts(&out, val);
            } else if (def != NULL) {
                jn_buf_append(&out, def, dlen);
            } else {
                jn_diag_add(b->d, pos,
                            "environment variable %s is not set, expected it set or a default "
                            "as ${%s:-default}", var, var);
                jn_buf_reset(&out);
                return NULL;
            }
            i = (size_t)(close - s) + 1;
            continue;
        }
        jn_buf_putc(&out, s[i]);
        i++;
    }
    return jn_buf_steal(&out);
}

static int attach(struct builder *b, struct jn_node *n)
{
    struct jn_node *p;

    if (b->depth == 0) {
        if (b->root != NULL) {
            jn_diag_add(b->d, &n->pos, "more than one YAML document, expected one");
            jn_node_free(n);
            return -1;
        }
        b->root = n;
        return 0;
    }
    p = b->stack[b->depth - 1];
    if (p->kind == JN_NODE_SEQ) {
        struct jn_node **v = jn_realloc(p->vals, (p->n + 1) * sizeof(*v));
        if (v == NULL) {
            jn_node_free(n);
            return -1;
        }
        p->vals = v;
        p->vals[p->n++] = n;
        return 0;
    }
    /* A map collects key, value, key, value...: keys[n] set with vals[n] NULL means "awaiting
     * the value". */
    if (p->keys == NULL || p->n == 0 || p->vals[p->n - 1] != NULL) {
        struct jn_node **k, **v;
        if (n->kind != JN_NODE_SCALAR) {
            jn_diag_add(b->d, &n->pos, "a map key must be a plain value, not a %s",
                        jn_node_kind_name(n));
            jn_node_free(n);
            return -1;
        }
        for (size_t i = 0; i < p->n; i++) {
            if (strcmp(p->keys[i]->str, n->str) == 0) {
                jn_diag_add(b->d, &n->pos, "duplicate key '%s' (first at line %d), expected "
                            "each name once", n->str, p->keys[i]->pos.line);
                jn_node_free(n);
                return -1;
            }
        }
        k = jn_realloc(p->keys, (p->n + 1) * sizeof(*k));
        if (k == NULL) {
            jn_node_free(n);
            return -1;
        }
        p->keys = k;
        v = jn_realloc(p->vals, (p->n + 1) * sizeof(*v));
        if (v == NULL) {
            jn_node_free(n);
            return -1;
        }
        p->vals = v;
        p->keys[p->n] = n;
        p->vals[p->n] = NULL;
        p->n++;
        return 0;
    }
    p->vals[p->n - 1] = n;
    return 0;
}

static int handle_event(struct builder *b, yaml_event_t *ev)
{
    struct jn_node *n;

    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        jn_diag_add(b->d, &(struct jn_pos){b->file, (int)ev->start_mark.line + 1,
                                           (int)ev->start_mark.column + 1},
                    "YAML aliases are not supported, expected the value written out");
        return -1;
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor != NULL) {
            goto anchor;
        }
        n = node_new(b, JN_NODE_SCALAR, &ev->start_mark);
        if (n == NULL) {
            return -1;
        }
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE) {
            /* Single quotes mean "exactly this": no substitution. */
            n->str = jn_strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        } else {
            n->str = substitute(b, (const char *)ev->data.scalar.value, ev->data.scalar.length,
                                &n->pos);
        }
        if (n->str == NULL) {
            jn_node_free(n);
            return -1;
        }
        return attach(b, n);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if ((ev->type == YAML_SEQUENCE_START_EVENT && ev->data.sequence_start.anchor) ||
            (ev->type == YAML_MAPPING_START_EVENT && ev->data.mapping_start.anchor)) {
            goto anchor;
        }
        if (b->depth >= MAX_DEPTH) {
            jn_diag_add(b->d, &(struct jn_pos){b->file, (int)ev->start_mark.line + 1,
                                               (int)ev->start_mark.column + 1},
                        "nesting deeper than %d levels", MAX_DEPTH);
            return -1;
        }
        n = node_new(b, ev->type == YAML_SEQUENCE_START_EVENT ? JN_NODE_SEQ : JN_NODE_MAP,
                     &ev->start_mark);
        if (n == NULL) {
            return -1;
        }
        if (attach(b, n) != 0) {
            return -1;
        }
        b->stack[b->depth++] = n;
        return 0;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0) {
            b->depth--;
        }
        return 0;
    default:
        return 0;
    }
anchor:
    jn_diag_add(b->d, &(struct jn_pos){b->file, (int)ev->start_mark.line + 1,
                                       (int)ev->start_mark.column + 1},
                "YAML anchors are not supported, expected the value written out");
    return -1;
}

/*
 * `{ listen: ${LISTEN} }`: in a flow collection the '{' of an unquoted ${...} opens a map, and
 * libyaml stops at it. If the problem is at such a '{', moves pos to the '$' and writes the
 * quoted form (with its key when there is one) into hint; else leaves both alone.
 */
static void env_in_flow_hint(const struct builder *b, const yaml_mark_t *m, struct jn_pos *pos,
                             struct jn_buf *hint)
{
    const char *s = b->buf;
    size_t at = m->index, end, k, kend;

    if (at == 0 || at >= b->len || s[at] != '{' || s[at - 1] != '$' || m->column == 0) {
        return;
    }
    for (end = at; end < b->len && end - at < 128 && s[end] != '}' && s[end] != '\n'; end++) {
    }
    if (end >= b->len || s[end] != '}') {
        return;
    }
    /* The key before it: `key: ${...}` (skipping blanks around the ':'). */
    k = at - 1;
    while (k > 0 && s[k - 1] == ' ') {
        k--;
    }
    kend = k;
    if (k > 0 && s[k - 1] == ':') {
        k--;
        while (k > 0 && s[k - 1] == ' ') {
            k--;
        }
        kend = k;
        while (k > 0 && strchr(" \t\n{[,", s[k - 1]) == NULL) {
            k--;
        }
    }
    jn_buf_puts(hint, "; quote a ${...} inside { } or [ ]: ");
    if (k < kend) {
        jn_buf_append(hint, s + k, kend - k);
        jn_buf_puts(hint, ": ");
    }
    jn_buf_putc(hint, '"');
    jn_buf_append(hint, s + at - 1, end - at + 2);
    jn_buf_putc(hint, '"');
    pos->col--;
}

/*
 * A syntax error, at the position that helps most. A scanner error with an earlier context
 * mark is a token that never ended (an unclosed quote, a key without ':'): it is reported
 * where the token starts, since libyaml notices only much later (at the end of the file for
 * an unclosed quote). Other errors are reported where libyaml noticed them, with the start of
 * the collection being parsed.
 */
static void syntax_error(struct builder *b, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "unknown problem";
    struct jn_pos at = {b->file, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1};
    struct jn_pos start = {b->file, (int)p->context_mark.line + 1,
                           (int)p->context_mark.column + 1};
    struct jn_buf hint = JN_BUF_INIT;

    if (p->error == YAML_MEMORY_ERROR) {
        jn_diag_add(b->d, &at, "out of memory reading YAML");
        return;
    }
    if (p->context == NULL) {
        jn_diag_add(b->d, &at, "YAML syntax error: %s", problem);
        return;
    }
    if (p->context_mark.index >= p->problem_mark.index) {
        jn_diag_add(b->d, &at, "YAML syntax error: %s (%s)", problem, p->context);
        return;
    }
    if (p->error == YAML_SCANNER_ERROR) {
        jn_diag_add(b->d, &start, "YAML syntax error %s started here: %s at %d:%d", p->context,
                    problem, at.line, at.col);
        return;
    }
    env_in_flow_hint(b, &p->problem_mark, &at, &hint);
    jn_diag_add(b->d, &at, "YAML syntax error: %s (%s started at %d:%d)%s", problem, p->context,
                start.line, start.col, hint.p ? hint.p : "");
    jn_buf_reset(&hint);
}

static struct jn_node *load(struct builder *b, yaml_parser_t *p)
{
    yaml_event_t ev;
    int done = 0;

    while (!done) {
        if (!yaml_parser_parse(p, &ev)) {
            syntax_error(b, p);
            b->failed = 1;
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        if (handle_event(b, &ev) != 0) {
            b->failed = 1;
            yaml_event_delete(&ev);
            break;
        }
        yaml_event_delete(&ev);
    }
    if (b->failed) {
        if (b->d->nerr == 0) {
            jn_diag_add(b->d, &(struct jn_pos){b->file, 0, 0}, "out of memory reading YAML");
        }
        jn_node_free(b->root);
        return NULL;
    }
    if (b->root == NULL || jn_node_is_null(b->root)) {
        jn_node_free(b->root);
        b->root = jn_calloc(1, sizeof(*b->root));
        if (b->root == NULL) {
            jn_diag_add(b->d, NULL, "out of memory reading YAML");
            return NULL;
        }
        b->root->kind = JN_NODE_MAP;
        b->root->dir = b->dir;
        b->root->pos = (struct jn_pos){b->file, 1, 1};
    }
    return b->root;
}

static struct jn_node *load_buf(const char *name, const char *dir, const char *buf, size_t len,
                                struct jn_diag *d)
{
    struct builder b;
    yaml_parser_t p;
    struct jn_node *root;

    memset(&b, 0, sizeof(b));
    b.d = d;
    b.file = jn_diag_file(d, name);
    b.dir = dir;
    b.buf = buf;
    b.len = len;
    if (!yaml_parser_initialize(&p)) {
        jn_diag_add(d, NULL, "%s: out of memory starting the YAML parser", name);
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    root = load(&b, &p);
    yaml_parser_delete(&p);
    return root;
}

struct jn_node *jn_yaml_load_buf(const char *name, const char *buf, size_t len, struct jn_diag *d)
{
    return load_buf(name, NULL, buf, len, d);
}

/*
 * The absolute folder of a file, interned in d: "/etc/x/junction.yaml" -> "/etc/x",
 * "conf/j.yaml" -> "<cwd>/conf", "j.yaml" -> "<cwd>". Symbolic links are kept as written (the
 * folder the user named). Without a current directory (it was deleted), the relative folder:
 * right for as long as the process does not change directory, which junction never does.
 * NULL when out of memory.
 */
static const char *folder_of(const char *path, struct jn_diag *d)
{
    struct jn_buf b = JN_BUF_INIT;
    const char *slash = strrchr(path, '/');
    const char *dir;
    char cwd[PATH_MAX];
    int oom = d->oom, rc = 0;

    if (path[0] != '/') {
        rc |= jn_buf_puts(&b, getcwd(cwd, sizeof(cwd)) != NULL ? cwd : ".");
    }
    if (slash != NULL) {
        if (b.len > 0 && b.p[b.len - 1] != '/') {
            rc |= jn_buf_putc(&b, '/');
        }
        /* "/j.yaml" -> "/" */
        rc |= jn_buf_append(&b, path, slash == path ? 1 : (size_t)(slash - path));
    }
    if (rc != 0 || b.p == NULL) {
        jn_buf_reset(&b);
        return NULL;
    }
    dir = jn_diag_file(d, b.p);
    jn_buf_reset(&b);
    return d->oom && !oom ? NULL : dir;
}

struct jn_node *jn_yaml_load_file(const char *path, struct jn_diag *d, struct jn_buf *text)
{
    struct jn_buf buf = JN_BUF_INIT;
    struct jn_node *root;
    const char *dir;
    char chunk[8192];
    size_t n;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        jn_diag_add(d, &(struct jn_pos){jn_diag_file(d, path), 0, 0}, "cannot open: %s",
                    strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (jn_buf_append(&buf, chunk, n) != 0) {
            fclose(f);
            jn_buf_reset(&buf);
            jn_diag_add(d, NULL, "%s: out of memory reading the file", path);
            return NULL;
        }
    }
    if (ferror(f)) {
        jn_diag_add(d, &(struct jn_pos){jn_diag_file(d, path), 0, 0}, "read error: %s",
                    strerror(errno));
        fclose(f);
        jn_buf_reset(&buf);
        return NULL;
    }
    fclose(f);
    dir = folder_of(path, d);
    if (dir == NULL) {
        jn_buf_reset(&buf);
        jn_diag_add(d, NULL, "%s: out of memory reading the file", path);
        return NULL;
    }
    root = load_buf(path, dir, buf.p ? buf.p : "", buf.len, d);
    if (text != NULL) {
        *text = buf;
    } else {
        jn_buf_reset(&buf);
    }
    return root;
}

const struct jn_node *jn_node_get(const struct jn_node *map, const char *key)
{
    if (map == NULL || map->kind != JN_NODE_MAP) {
        return NULL;
    }
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->keys[i]->str, key) == 0) {
            return map->vals[i];
        }
    }
    return NULL;
}

const struct jn_node *jn_node_key(const struct jn_node *map, const char *key)
{
    if (map == NULL || map->kind != JN_NODE_MAP) {
        return NULL;
    }
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->keys[i]->str, key) == 0) {
            return map->keys[i];
        }
    }
    return NULL;
}

const struct jn_pos *jn_node_pos(const struct jn_node *map, const char *key)
{
    const struct jn_node *v = jn_node_get(map, key);

    if (map == NULL) {
        return NULL;
    }
    return v != NULL ? &v->pos : &map->pos;
}

const struct jn_pos *jn_node_entry_pos(const struct jn_node *map, const char *opt,
                                       const char *key, int want_value)
{
    const struct jn_node *o = jn_node_get(map, opt);

    if (o == NULL) {
        return jn_node_pos(map, opt);
    }
    for (size_t i = 0; i < o->n; i++) {
        if (o->kind == JN_NODE_MAP && o->keys[i]->str && strcmp(o->keys[i]->str, key) == 0) {
            return want_value ? &o->vals[i]->pos : &o->keys[i]->pos;
        }
        if (o->kind == JN_NODE_SEQ && o->vals[i]->kind == JN_NODE_SCALAR &&
            strcmp(o->vals[i]->str, key) == 0) {
            return &o->vals[i]->pos;
        }
    }
    return &o->pos;
}

int jn_node_is_null(const struct jn_node *n)
{
    if (n == NULL) {
        return 1;
    }
    if (n->kind != JN_NODE_SCALAR || !n->plain) {
        return 0;
    }
    return n->str[0] == '\0' || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

const char *jn_node_kind_name(const struct jn_node *n)
{
    if (n == NULL) {
        return "nothing";
    }
    switch (n->kind) {
    case JN_NODE_SCALAR: return "value";
    case JN_NODE_MAP: return "map";
    case JN_NODE_SEQ: return "list";
    }
    return "?";
}
