/*
 * validate: let a message pass only when it meets a contract: JSON against a JSON Schema
 * subset (services/json_schema.h), or HL7 v2 against a profile of required segments and
 * fields.
 *
 *   services:
 *     order-contract:
 *       type: validate
 *       schema: schemas/order.json      # or schema_inline: | ... (JSON or YAML)
 *     adt-profile:
 *       type: validate
 *       hl7:
 *         segments: [MSH, PID, PV1]
 *         required: [MSH-9, MSH-10, PID-3, PID-5]
 *
 * A message that passes goes on unchanged (by reference). One that does not is an error, so
 * the broker dead-letters it; the reason lists every violation, path and why
 * ("validate: 2 violations: $.age: 130 is more than the maximum 120; $.name: is required but
 * missing"), as many as the reason's 512 bytes hold, then "(and N more)", and then the whole
 * list goes to the broker's log (warn lines "msg=ID N violations (1): ...", (2) ...). The schema is read
 * and compiled once at load; `junction check` reports its errors at their file:line:col (in
 * the schema file, or inside the config for schema_inline). Modelled on Mirth's HL7 message
 * filters and the allErrors mode of JSON Schema validators (Ajv), kept to a subset we check
 * in full.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "json_schema.h"

struct validate_hl7_conf {
    struct jn_strlist segments;
    struct jn_strlist required;
};

struct validate_conf {
    char *schema;
    char *schema_inline;
    struct validate_hl7_conf hl7;
};

struct validate_state {
    struct jn_schema *schema;           /* JSON mode */
    char (*segs)[4];                    /* HL7 mode */
    size_t nsegs;
    struct jn_hl7_path *paths;
    size_t npaths;
};

static const struct jn_opt validate_hl7_opts[] = {
    JN_OPT_STRLIST("segments", NULL, JN_OPT_COMMAS, struct validate_hl7_conf, segments,
                   "Segments the message must have, e.g. [MSH, PID, PV1]"),
    JN_OPT_STRLIST("required", NULL, JN_OPT_COMMAS, struct validate_hl7_conf, required,
                   "Fields (HL7 paths, docs/hl7.md) that must be present and not empty, e.g. "
                   "[MSH-9, PID-3, PID-5.1]"),
    JN_OPT_END
};

static const struct jn_opt validate_opts[] = {
    JN_OPT_PATH("schema", NULL, 0, struct validate_conf, schema,
                "A JSON Schema file (JSON or YAML) the JSON payload must meet; keywords: type, "
                "required, properties, items, enum, pattern (POSIX ERE), minimum, maximum, "
                "exclusiveMinimum, exclusiveMaximum, minLength, maxLength, "
                "additionalProperties: false"),
    JN_OPT_STR("schema_inline", NULL, 0, struct validate_conf, schema_inline,
               "The schema as text in the config (JSON or YAML, e.g. after |), instead of "
               "schema:"),
    JN_OPT_SUB("hl7", validate_hl7_opts, struct validate_hl7_conf, 0, struct validate_conf, hl7,
               "An HL7 v2 profile instead of a schema: segments and required fields"),
    JN_OPT_END
};

/* ---- where an inline schema's positions are in the config ---- */

struct inline_map {
    const char *file;  /* the config file */
    int line, col;     /* where the value starts */
    int block;         /* a | or > block scalar: the text starts on the next line */
    int indent;        /* of a block's lines, in the config */
    int quoted;
};

/* Reads line `want` (1-based) of path into buf; 0 or -1. */
static int read_line(const char *path, int want, char *buf, size_t cap)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    int line = 1, rc = -1;

    if (f == NULL) {
        return -1;
    }
    while (fgets(buf, (int)cap, f) != NULL) {
        size_t n = strlen(buf);
        if (line == want) {
            rc = 0;
            break;
        }
        if (n > 0 && buf[n - 1] == '\n') {
            line++;
        }
    }
    fclose(f);
    return rc;
}

static void inline_map_init(struct inline_map *im, const struct jn_node *v)
{
    char text[1024];

    memset(im, 0, sizeof(*im));
    im->file = v->pos.file;
    im->line = v->pos.line;
    im->col = v->pos.col;
    im->quoted = !v->plain;
    if (v->pos.line > 0 && v->pos.col > 0 &&
        read_line(v->pos.file, v->pos.line, text, sizeof(text)) == 0 &&
        (size_t)v->pos.col <= strlen(text) &&
        (text[v->pos.col - 1] == '|' || text[v->pos.col - 1] == '>')) {
        /* Text line k is config line pos.line + k (leading blank lines are kept in a block);
         * every line has the indentation of the first that is not blank. */
        im->block = 1;
        for (int l = v->pos.line + 1; read_line(v->pos.file, l, text, sizeof(text)) == 0; l++) {
            size_t sp = strspn(text, " ");
            if (text[sp] != '\n' && text[sp] != '\0') {
                im->indent = (int)sp;
                break;
            }
        }
    }
}

static void inline_pos(void *arg, const struct jn_pos *in, struct jn_pos *out)
{
    const struct inline_map *im = arg;

    out->file = im->file;
    if (in->line <= 0) {
        out->line = im->line;
        out->col = im->col;
    } else if (im->block) {
        out->line = im->line + in->line;
        out->col = im->indent + in->col;
    } else if (in->line == 1) {
        out->line = im->line;
        out->col = im->col + im->quoted + in->col - 1;
    } else {
        out->line = im->line; /* a quoted value over several lines: its start */
        out->col = im->col;
    }
}

/* Moves the messages of src (positions in the inline text) into d at their config positions. */
static void diag_move(struct jn_diag *d, const struct jn_diag *src, const struct inline_map *im)
{
    for (size_t i = 0; i < src->n; i++) {
        const char *m = src->msgs[i];
        struct jn_pos p;
        int skip = 0, l = 0, c = 0;
        if (sscanf(m, "schema_inline:%d:%d: %n", &l, &c, &skip) >= 2 && skip > 0) {
            struct jn_pos in = {NULL, l, c};
            inline_pos((void *)im, &in, &p);
            m += skip;
        } else {
            struct jn_pos in = {NULL, 0, 0};
            inline_pos((void *)im, &in, &p);
            if (strncmp(m, "schema_inline: ", 15) == 0) {
                m += 15;
            }
        }
        jn_diag_add(d, &p, "validate: schema_inline: %s", m);
    }
    if (src->oom) {
        d->oom = 1;
    }
}

/* The compiled schema from a file or the inline text; errors in d (positions in the schema
 * file, or mapped into the config through im). NULL on error. */
static struct jn_schema *schema_load(const struct validate_conf *c, const struct inline_map *im,
                                     struct jn_diag *d)
{
    struct jn_schema *s = NULL;
    struct jn_node *root;

    if (c->schema != NULL) {
        struct jn_diag fd;
        jn_diag_init(&fd);
        root = jn_yaml_load_file(c->schema, &fd, NULL);
        if (root != NULL) {
            s = jn_schema_compile(root, NULL, NULL, &fd);
            jn_node_free(root);
        }
        /* At the schema file's own positions. */
        jn_diag_take(d, &fd, "validate: ");
        jn_diag_free(&fd);
        return s;
    }
    struct jn_diag td;
    jn_diag_init(&td);
    root = jn_yaml_load_buf("schema_inline", c->schema_inline, strlen(c->schema_inline), &td);
    if (root != NULL) {
        s = jn_schema_compile(root, NULL, NULL, &td);
        jn_node_free(root);
    }
    diag_move(d, &td, im);
    jn_diag_free(&td);
    return s;
}

static int seg_ok(const char *s)
{
    if (strlen(s) != 3) {
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9'))) {
            return 0;
        }
    }
    return 1;
}

static int validate_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct validate_conf *c = conf;
    const struct jn_node *h = node ? jn_node_get(node, "hl7") : NULL;
    const struct jn_pos *at = node ? &node->pos : NULL;
    int given = (c->schema != NULL) + (c->schema_inline != NULL) + (h != NULL);
    int errs = 0;

    if (given != 1) {
        jn_diag_add(d, at, "validate: give exactly one of schema, schema_inline or hl7 (%s)",
                    given ? "more than one is set" : "none is set");
        return 1;
    }
    if (h != NULL) {
        if (c->hl7.segments.n == 0 && c->hl7.required.n == 0) {
            jn_diag_add(d, &h->pos, "validate: hl7: give segments, required or both");
            return 1;
        }
        for (size_t i = 0; i < c->hl7.segments.n; i++) {
            if (!seg_ok(c->hl7.segments.v[i])) {
                jn_diag_add(d, jn_node_entry_pos(h, "segments", c->hl7.segments.v[i], 0),
                            "validate: hl7: segments: '%s' is not a segment id (three of A-Z, "
                            "0-9, such as PID)", c->hl7.segments.v[i]);
                errs++;
            }
        }
        for (size_t i = 0; i < c->hl7.required.n; i++) {
            struct jn_hl7_path p;
            struct jn_err e;
            const char *s = c->hl7.required.v[i];
            if (jn_hl7_path_parse(s, strlen(s), &p, &e) != 0) {
                jn_diag_add(d, jn_node_entry_pos(h, "required", s, 0),
                            "validate: hl7: required: '%s': %s", s, e.msg);
                errs++;
            }
        }
        return errs;
    }
    struct inline_map im;
    const struct jn_node *v = node ? jn_node_get(node, "schema_inline") : NULL;
    struct jn_schema *s;
    size_t before = d->nerr;
    if (v != NULL) {
        inline_map_init(&im, v);
    } else {
        memset(&im, 0, sizeof(im));
        if (at) {
            im.file = at->file;
            im.line = at->line;
            im.col = at->col;
        }
    }
    s = schema_load(c, &im, d);
    if (s == NULL) {
        if (d->nerr == before) {
            jn_diag_add(d, at, "validate: out of memory compiling the schema");
        }
        return (int)(d->nerr - before) > 0 ? (int)(d->nerr - before) : 1;
    }
    jn_schema_free(s);
    return 0;
}

static void validate_destroy(struct jn_service *svc)
{
    struct validate_state *st = svc->state;

    if (st == NULL) {
        return;
    }
    jn_schema_free(st->schema);
    jn_free(st->segs);
    jn_free(st->paths);
    jn_free(st);
    svc->state = NULL;
}

static int validate_init(struct jn_service *svc, struct jn_err *err)
{
    const struct validate_conf *c = svc->conf;
    struct validate_state *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "validate: out of memory");
    }
    svc->state = st;
    if (c->schema != NULL || c->schema_inline != NULL) {
        struct jn_diag d;
        struct inline_map im;
        memset(&im, 0, sizeof(im));
        jn_diag_init(&d);
        st->schema = schema_load(c, &im, &d);
        if (st->schema == NULL) {
            int rc = d.n ? jn_err_set(err, JN_EINVAL, "validate: %s", d.msgs[0])
                         : jn_err_set(err, JN_ENOMEM, "validate: out of memory");
            jn_diag_free(&d);
            validate_destroy(svc);
            return rc;
        }
        jn_diag_free(&d);
        return 0;
    }
    st->segs = jn_calloc(c->hl7.segments.n + 1, sizeof(*st->segs));
    st->paths = jn_calloc(c->hl7.required.n + 1, sizeof(*st->paths));
    if (st->segs == NULL || st->paths == NULL) {
        validate_destroy(svc);
        return jn_err_set(err, JN_ENOMEM, "validate: out of memory");
    }
    for (size_t i = 0; i < c->hl7.segments.n; i++) {
        if (!seg_ok(c->hl7.segments.v[i])) {
            validate_destroy(svc);
            return jn_err_set(err, JN_EINVAL, "validate: hl7: segments: '%s' is not a segment "
                              "id", c->hl7.segments.v[i]);
        }
        memcpy(st->segs[i], c->hl7.segments.v[i], 4);
    }
    st->nsegs = c->hl7.segments.n;
    for (size_t i = 0; i < c->hl7.required.n; i++) {
        const char *s = c->hl7.required.v[i];
        struct jn_err e;
        if (jn_hl7_path_parse(s, strlen(s), &st->paths[i], &e) != 0) {
            validate_destroy(svc);
            return jn_err_set(err, JN_EINVAL, "validate: hl7: required: '%s': %s", s, e.msg);
        }
    }
    st->npaths = c->hl7.required.n;
    return 0;
}

/* Room for the violations in a reason, leaving space for the head and "(and N more)". */
#define REASON_ROOM (JN_ERR_MSG_MAX - 64)

/* The violations found so far, as jn_schema_check keeps them: whole entries while they fit. */
struct found {
    struct jn_buf text;
    long n;
    size_t listed;
    int full, oom;
    size_t room; /* 0: REASON_ROOM */
};

static void found_add(struct found *f, const char *what, const char *why)
{
    f->n++;
    if (f->full) {
        return;
    }
    size_t room = f->room ? f->room : REASON_ROOM;

    if (f->text.len > 0 && f->text.len + 2 + strlen(what) + 2 + strlen(why) > room) {
        f->full = 1;
        return;
    }
    /* The first entry is always listed, cut to the room if it must be. */
    if (jn_buf_printf(&f->text, "%s%s: %.*s", f->text.len ? "; " : "", what,
                      (int)(REASON_ROOM / 2), why) != 0) {
        f->oom = 1;
    }
    f->listed++;
}

static int check_hl7(const struct validate_state *st, const struct validate_conf *c,
                     const struct jn_msg *in, struct found *f)
{
    struct jn_hl7_msg *m = NULL;
    struct jn_err e;
    int rc;

    rc = jn_hl7_parse(in->payload, in->len, 0, &m, &e);
    if (rc == JN_ENOMEM) {
        return JN_ENOMEM;
    }
    if (rc != 0) {
        /* Nothing else can be checked: one violation, the parser's reason. */
        found_add(f, "the payload is not HL7", e.msg);
        return f->oom ? JN_ENOMEM : 0;
    }
    for (size_t i = 0; i < st->nsegs; i++) {
        size_t k = 0;
        while (k < m->nsegs && strcmp(m->segs[k].id, st->segs[i]) != 0) {
            k++;
        }
        if (k == m->nsegs) {
            found_add(f, st->segs[i], "segment required but missing");
        }
    }
    for (size_t i = 0; i < st->npaths; i++) {
        struct jn_hl7_span sp;
        int got = jn_hl7_get(m, &st->paths[i], &sp);
        const char *why = got != 1 ? "required but missing"
                          : sp.len == 0 ? "required but empty"
                          : jn_hl7_is_null(sp.p, sp.len) ? "required but null (\"\")" : NULL;
        if (why != NULL) {
            found_add(f, c->hl7.required.v[i], why);
        }
    }
    jn_hl7_free(m);
    return f->oom ? JN_ENOMEM : 0;
}

/* A reason holds what fits; the broker's log gets the whole list once (only when the reason
 * was cut, so a failing message costs a second check only then). */
static void log_all(const struct jn_service *svc, const struct validate_state *st,
                    const struct jn_msg *in)
{
    struct found all;
    long n = 0;

    memset(&all, 0, sizeof(all));
    if (st->schema != NULL) {
        json_t *doc = json_loadb((const char *)in->payload, in->len, JSON_DECODE_ANY, NULL);
        n = doc ? jn_schema_check(st->schema, doc, &all.text, SIZE_MAX, NULL) : 0;
        json_decref(doc);
    } else {
        all.room = SIZE_MAX;
        n = check_hl7(st, svc->conf, in, &all) == 0 ? all.n : 0;
    }
    /* A log line holds 2 KiB: the list in lines of whole entries. */
    for (size_t at = 0, part = 1; n > 0 && all.text.p != NULL && at < all.text.len; part++) {
        size_t end = all.text.len;
        if (end - at > 1500) {
            end = at + 1500;
            while (end > at && !(all.text.p[end] == ';' && all.text.p[end + 1] == ' ')) {
                end--;
            }
            if (end == at) {
                end = at + 1500; /* one entry longer than a line: cut it */
            }
        }
        jn_log_p(JN_LOG_WARN, svc->log_prefix, "msg=%s %ld violations (%zu): %.*s", in->id, n,
                 part, (int)(end - at), all.text.p + at);
        at = end;
        while (at < all.text.len && (all.text.p[at] == ';' || all.text.p[at] == ' ')) {
            at++;
        }
    }
    jn_buf_reset(&all.text);
}

static int validate_transform(const struct jn_service *svc, struct jn_msg *in,
                              struct jn_msg_list *out, struct jn_err *err)
{
    const struct validate_state *st = svc->state;
    struct found f;
    int rc = 0;

    memset(&f, 0, sizeof(f));
    if (st->schema != NULL) {
        json_error_t je;
        json_t *doc = json_loadb((const char *)in->payload, in->len, JSON_DECODE_ANY, &je);
        if (doc == NULL) {
            return jn_err_set(err, JN_EPROTO, "validate: the payload is not JSON: %s (line %d "
                              "column %d)", je.text, je.line, je.column);
        }
        f.n = jn_schema_check(st->schema, doc, &f.text, REASON_ROOM, &f.listed);
        json_decref(doc);
        if (f.n < 0) {
            rc = JN_ENOMEM;
        }
    } else {
        rc = check_hl7(st, svc->conf, in, &f);
    }
    if (rc == JN_ENOMEM) {
        jn_buf_reset(&f.text);
        return jn_err_set(err, JN_ENOMEM, "validate: out of memory");
    }
    if (f.n > 0) {
        jn_err_set(err, JN_EINVAL, "validate: %ld violation%s: %.*s", f.n, f.n == 1 ? "" : "s",
                   (int)f.text.len, f.text.p ? f.text.p : "");
        if ((long)f.listed < f.n) {
            size_t l = strlen(err->msg);
            snprintf(err->msg + l, sizeof(err->msg) - l, " (and %ld more)",
                     f.n - (long)f.listed);
            log_all(svc, st, in);
        }
        jn_buf_reset(&f.text);
        return JN_EINVAL;
    }
    jn_buf_reset(&f.text);
    if (jn_msg_list_push(out, jn_msg_ref(in)) != 0) {
        return jn_err_set(err, JN_ENOMEM, "validate: out of memory");
    }
    return 0;
}

const struct jn_service_def jn_service_validate = {
    .name = "validate",
    .desc = "Passes a message that meets a JSON Schema (subset) or an HL7 profile; "
            "dead-letters any other with every violation listed",
    .opts = validate_opts,
    .conf_size = sizeof(struct validate_conf),
    .check = validate_check,
    .init = validate_init,
    .transform = validate_transform,
    .destroy = validate_destroy,
};
