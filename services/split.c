/*
 * split: one message into one per element of a JSON array, per line of NDJSON or per row of
 * a CSV, so that each is routed, delivered and retried on its own.
 *
 *   services:
 *     orders:
 *       type: split
 *       format: csv          # json-array | ndjson | csv
 *       csv_as: object       # each row as a JSON object named by the header row
 *
 * Each part is a new message (the broker gives it an id of its own) with the input's headers
 * and split-id (the input's id), split-index (1-based) and split-count. JSON parts are the
 * element's bytes as written (not re-encoded: numbers keep their digits), with content-type
 * application/json. An input with nothing in it ([] or no line) gives no message: it is
 * filtered. Input that does not parse is an error naming the element, line or row, and no part
 * is sent. HL7 batches are hl7-split's. Modelled on Redpanda Connect's unarchive/split
 * processors and Camel's splitter, with the whole input checked before any part goes out.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv_int.h"
#include "jn_mem.h"
#include "jn_services.h"

enum { SPLIT_JSON_ARRAY, SPLIT_NDJSON, SPLIT_CSV };
enum { CSV_AS_OBJECT, CSV_AS_ROW };

static const char *const split_formats[] = {"json-array", "ndjson", "csv", NULL};
static const char *const split_csv_as[] = {"object", "row", NULL};

struct split_conf {
    int format;
    int csv_as;
    char *delimiter;
    bool header;
    bool ragged;
    long long max_parts;
};

static const struct jn_opt split_opts[] = {
    JN_OPT_ENUM("format", NULL, split_formats, JN_OPT_REQUIRED, struct split_conf, format,
                "json-array: one message per element of a JSON array; ndjson: one per non-empty "
                "line (each a JSON value); csv: one per row"),
    JN_OPT_ENUM("csv_as", "object", split_csv_as, 0, struct split_conf, csv_as,
                "csv: object: each row as a JSON object named by the header row (an array of "
                "strings with header: false); row: the row's bytes as written (text/csv), the "
                "header row in the split-csv-header header of every part"),
    JN_OPT_STR("delimiter", ",", 0, struct split_conf, delimiter,
               "csv: the field separator, one character"),
    JN_OPT_BOOL("header", "true", 0, struct split_conf, header,
                "csv: the first row names the fields and is not a part of its own"),
    JN_OPT_BOOL("ragged", "false", 0, struct split_conf, ragged,
                "csv: accept rows with another number of fields than the header (missing ones "
                "are absent, extra ones dropped); false: such a row is an error"),
    JN_OPT_INT("max_parts", "100000", 1, 10000000, 0, struct split_conf, max_parts,
               "More parts than this fail the message (a runaway input is not fanned out)"),
    JN_OPT_END
};

static int split_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    static const char *const csv_only[] = {"csv_as", "delimiter", "header", "ragged", NULL};
    const struct split_conf *c = conf;
    int errs = 0;

    for (size_t i = 0; c->format != SPLIT_CSV && csv_only[i]; i++) {
        const struct jn_node *k = node ? jn_node_key(node, csv_only[i]) : NULL;
        if (k != NULL) {
            /* Said for nothing, it would hide a format that is not the one meant. */
            jn_diag_add(d, &k->pos, "split: %s is for format: csv (format is %s)", csv_only[i],
                        split_formats[c->format]);
            errs++;
        }
    }
    if (strlen(c->delimiter) != 1 || c->delimiter[0] == '"' || c->delimiter[0] == '\n' ||
        c->delimiter[0] == '\r') {
        jn_diag_add(d, jn_node_pos(node, "delimiter"), "split: delimiter: one character, not a "
                    "quote or a line break (got '%s')", c->delimiter);
        errs++;
    }
    return errs;
}

/* One message being split: the input, the parts so far (in out from base on). */
struct split {
    const struct split_conf *c;
    const struct jn_msg *in;
    struct jn_msg_list *out;
    size_t base;
    const char *ctype;
    struct jn_err *err;
};

/* A new part holding len bytes at p, with the input's headers. 0 or JN_E* with err. */
static int part_add(struct split *s, const void *p, size_t len)
{
    struct jn_msg *m;
    int rc = 0;

    if (s->out->n - s->base >= (size_t)s->c->max_parts) {
        return jn_err_set(s->err, JN_EINVAL, "split: more than %lld parts (max_parts)",
                          s->c->max_parts);
    }
    m = jn_msg_new(s->in->channel, p, len);
    if (m == NULL) {
        return jn_err_set(s->err, JN_ENOMEM, "split: out of memory");
    }
    m->recv_us = s->in->recv_us;
    for (size_t k = 0; rc == 0 && k < s->in->nhdrs; k++) {
        rc = jn_msg_header_add(m, s->in->hdrs[k].name, s->in->hdrs[k].value);
    }
    if (rc == 0) {
        rc = jn_msg_header_set(m, "content-type", s->ctype);
    }
    if (rc != 0) {
        jn_msg_unref(&m);
    } else {
        rc = jn_msg_list_push(s->out, m);
    }
    return rc ? jn_err_set(s->err, JN_ENOMEM, "split: out of memory") : 0;
}

/* Checks that len bytes at p are one JSON value: 0, or JN_EPROTO with "split: <what> is not
 * JSON: <why>". */
static int json_valid(struct split *s, const char *p, size_t len, const char *what, size_t n)
{
    json_error_t je;
    json_t *v = json_loadb(p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);

    if (v == NULL) {
        return jn_err_set(s->err, JN_EPROTO, "split: %s %zu is not JSON: %s (column %d)", what,
                          n, je.text, je.column);
    }
    json_decref(v);
    return 0;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* The end of the JSON value that starts at p, found by its brackets and strings only (the
 * value is checked by jansson afterwards). NULL when the input ends first. */
static const char *value_end(const char *p, const char *end)
{
    size_t depth = 0;

    while (p < end) {
        char ch = *p;
        if (ch == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\') {
                    p++;
                }
            }
            if (p >= end) {
                return NULL;
            }
            p++;
        } else if (ch == '[' || ch == '{') {
            depth++;
            p++;
        } else if (ch == ']' || ch == '}') {
            if (depth == 0) {
                return p;
            }
            depth--;
            p++;
        } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' ||
                                  ch == '\r')) {
            return p;
        } else {
            p++;
        }
        if (depth == 0 && (ch == '"' || ch == ']' || ch == '}')) {
            return p;
        }
    }
    return depth == 0 ? p : NULL;
}

static int split_json_array(struct split *s)
{
    const char *p = (const char *)s->in->payload, *end = p + s->in->len;
    size_t n = 0;
    int rc;

    p = skip_ws(p, end);
    if (p >= end || *p != '[') {
        return jn_err_set(s->err, JN_EPROTO, "split: the payload is %s, expected a JSON array "
                          "(format: json-array)", p >= end ? "empty" : *p == '{' ?
                          "a JSON object" : "not a JSON array");
    }
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') {
        p++;
    } else {
        for (;;) {
            const char *v = p, *e = value_end(p, end);
            n++;
            if (e == NULL || e == v) {
                return jn_err_set(s->err, JN_EPROTO, "split: element %zu: %s", n, e == NULL ?
                                  "the array is not closed" : "a value is missing");
            }
            if ((rc = json_valid(s, v, (size_t)(e - v), "element", n)) != 0 ||
                (rc = part_add(s, v, (size_t)(e - v))) != 0) {
                return rc;
            }
            p = skip_ws(e, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == ']') {
                p++;
                break;
            }
            return jn_err_set(s->err, JN_EPROTO, "split: after element %zu: expected ',' or "
                              "']'%s", n, p >= end ? ", the array is not closed" : "");
        }
    }
    if (skip_ws(p, end) != end) {
        return jn_err_set(s->err, JN_EPROTO, "split: text after the JSON array");
    }
    return 0;
}

static int split_ndjson(struct split *s)
{
    const char *p = (const char *)s->in->payload, *end = p + s->in->len;
    size_t line = 0;
    int rc;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        line++;
        if (e > p && e[-1] == '\r') {
            e--;
        }
        if (skip_ws(p, e) != e) {
            if ((rc = json_valid(s, p, (size_t)(e - p), "line", line)) != 0 ||
                (rc = part_add(s, p, (size_t)(e - p))) != 0) {
                return rc;
            }
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* Adds the part for one CSV row: its bytes, or an object (names) or array of its fields. */
static int csv_part(struct split *s, const struct jn_csv *r, json_t *names, json_t *row)
{
    json_t *doc = row;
    char *text;
    int rc;

    if (s->c->csv_as == CSV_AS_ROW) {
        return part_add(s, r->row_start, (size_t)(r->row_end - r->row_start));
    }
    if (names != NULL) {
        size_t n = json_array_size(names), k = json_array_size(row);
        if ((doc = json_object()) == NULL) {
            return jn_err_set(s->err, JN_ENOMEM, "split: out of memory");
        }
        for (size_t i = 0; i < n && i < k; i++) {
            json_object_set(doc, json_string_value(json_array_get(names, i)),
                            json_array_get(row, i));
        }
    }
    text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (doc != row) {
        json_decref(doc);
    }
    if (text == NULL) {
        return jn_err_set(s->err, JN_ENOMEM, "split: out of memory");
    }
    rc = part_add(s, text, strlen(text));
    free(text);
    return rc;
}

static int split_csv(struct split *s, struct jn_buf *hdr_row)
{
    struct jn_csv r;
    json_t *names = NULL, *row = json_array();
    int rc = row ? 0 : jn_err_set(s->err, JN_ENOMEM, "split: out of memory");

    jn_csv__init(&r, s->in->payload, s->in->len, s->c->delimiter[0], "split");
    while (rc == 0 && (rc = jn_csv__next(&r, row, s->err)) == 1) {
        rc = 0;
        if (s->c->header && names == NULL) {
            names = json_copy(row);
            if (names == NULL || jn_buf_append(hdr_row, r.row_start,
                                               (size_t)(r.row_end - r.row_start)) != 0 ||
                jn_buf_puts(hdr_row, "") != 0) {
                rc = jn_err_set(s->err, JN_ENOMEM, "split: out of memory");
            } else if (s->c->csv_as == CSV_AS_ROW && strpbrk(hdr_row->p, "\r\n") != NULL) {
                rc = jn_err_set(s->err, JN_EPROTO, "split: the header row holds a line break "
                                "(in quotes), which the split-csv-header header cannot carry");
            }
            continue;
        }
        if (names != NULL && json_array_size(row) != json_array_size(names) && !s->c->ragged) {
            rc = jn_err_set(s->err, JN_EPROTO, "split: row %ld has %zu field(s), the header "
                            "%zu (ragged: true accepts it)", r.row, json_array_size(row),
                            json_array_size(names));
            break;
        }
        rc = csv_part(s, &r, names, row);
    }
    jn_csv__done(&r);
    json_decref(names);
    json_decref(row);
    return rc;
}

static int split_transform(const struct jn_service *svc, struct jn_msg *in,
                           struct jn_msg_list *out, struct jn_err *err)
{
    const struct split_conf *c = svc->conf;
    struct split s = {c, in, out, out->n, "application/json", err};
    struct jn_buf hdr_row = JN_BUF_INIT;
    char num[24];
    size_t n;
    int rc;

    if (c->format == SPLIT_JSON_ARRAY) {
        rc = split_json_array(&s);
    } else if (c->format == SPLIT_NDJSON) {
        rc = split_ndjson(&s);
    } else {
        if (c->csv_as == CSV_AS_ROW) {
            s.ctype = "text/csv";
        }
        rc = split_csv(&s, &hdr_row);
    }
    n = out->n - s.base;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct jn_msg *m = out->v[s.base + i];
        snprintf(num, sizeof(num), "%zu", i + 1);
        rc = jn_msg_header_set(m, "split-id", in->id);
        if (rc == 0) {
            rc = jn_msg_header_set(m, "split-index", num);
        }
        snprintf(num, sizeof(num), "%zu", n);
        if (rc == 0) {
            rc = jn_msg_header_set(m, "split-count", num);
        }
        if (rc == 0 && c->csv_as == CSV_AS_ROW && hdr_row.p != NULL) {
            rc = jn_msg_header_set(m, "split-csv-header", hdr_row.p);
        }
        if (rc != 0) {
            rc = jn_err_set(err, JN_ENOMEM, "split: out of memory");
        }
    }
    jn_buf_reset(&hdr_row);
    return rc;
}

const struct jn_service_def jn_service_split = {
    .name = "split",
    .desc = "One message per element of a JSON array, line of NDJSON or row of a CSV",
    .opts = split_opts,
    .conf_size = sizeof(struct split_conf),
    .check = split_check,
    .transform = split_transform,
};
