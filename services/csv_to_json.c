/*
 * csv-to-json: a CSV payload (RFC 4180: quoted fields, "" inside quotes, CRLF or LF, line breaks
 * inside quotes) as a JSON array: of objects named by the header row, or of arrays of strings.
 *
 *   services:
 *     orders-csv:
 *       type: csv-to-json
 *       delimiter: ";"
 *       header: true        # the first row names the fields
 *
 * Every value is a JSON string (CSV has no types; a json-map after it converts what it needs).
 * A row with another number of fields than the header is an error naming the row, unless
 * `ragged: true` (then missing fields are absent, extra ones dropped). Model: Redpanda
 * Connect's csv scanner and Camel's CSV data format, reduced to one message in, one out. The
 * reader is csv.c, shared with split (format: csv).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "csv_int.h"
#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_services.h"

struct csv_conf {
    char *delimiter;
    bool header;
    bool ragged;
};

static int csv_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct csv_conf *c = conf;

    if (strlen(c->delimiter) != 1 || c->delimiter[0] == '"' || c->delimiter[0] == '\n' ||
        c->delimiter[0] == '\r') {
        jn_diag_add(d, jn_node_pos(node, "delimiter"), "csv-to-json: delimiter: one character, "
                    "not a quote or a line break (got '%s')", c->delimiter);
        return 1;
    }
    return 0;
}

static const struct jn_opt csv_opts[] = {
    JN_OPT_STR("delimiter", ",", 0, struct csv_conf, delimiter,
               "The field separator: one character (\",\", \";\", \"\\t\", \"|\")."),
    JN_OPT_BOOL("header", "true", 0, struct csv_conf, header,
                "true: the first row names the fields and each later row becomes an object; "
                "false: each row becomes an array of strings."),
    JN_OPT_BOOL("ragged", "false", 0, struct csv_conf, ragged,
                "With header: true, accept rows with fewer or more fields than the header "
                "(missing ones are absent, extra ones dropped); false: such a row is an error."),
    JN_OPT_END,
};

static int csv_transform(const struct jn_service *svc, struct jn_msg *in, struct jn_msg_list *out,
                         struct jn_err *err)
{
    const struct csv_conf *cf = svc->conf;
    struct jn_csv c;
    json_t *doc = json_array(), *names = NULL, *row = json_array();
    struct jn_msg *m = NULL;
    char *text = NULL;
    int rc = 0;

    jn_csv__init(&c, in->payload, in->len, cf->delimiter[0], "csv-to-json");
    if (doc == NULL || row == NULL) {
        rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
    }
    while (rc == 0) {
        int got = jn_csv__next(&c, row, err);
        if (got <= 0) {
            rc = got;
            break;
        }
        if (!cf->header) {
            json_array_append(doc, row);
            json_decref(row);
            row = json_array();
        } else if (names == NULL) {
            names = row;
            row = json_array();
        } else {
            json_t *obj = json_object();
            size_t n = json_array_size(names), k = json_array_size(row);
            if (k != n && !cf->ragged) {
                json_decref(obj);
                rc = jn_err_set(err, JN_EPROTO, "csv-to-json: row %ld has %zu field(s), the "
                                "header %zu (ragged: true accepts it)", c.row, k, n);
                break;
            }
            for (size_t i = 0; i < n && i < k; i++) {
                json_object_set(obj, json_string_value(json_array_get(names, i)),
                                json_array_get(row, i));
            }
            json_array_append_new(doc, obj);
        }
        if (row == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
        }
    }
    if (rc == 0 && (text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
    }
    if (rc == 0 && ((m = jn_msg_copy(in)) == NULL ||
                    jn_msg_header_set(m, "content-type", "application/json") != 0)) {
        rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
    }
    if (rc == 0) {
        size_t len = strlen(text);
        char *p = jn_malloc(len + 1);
        if (p == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
        } else {
            memcpy(p, text, len + 1);
            jn_msg_set_payload(m, p, len);
            if (jn_msg_list_push(out, m) != 0) {
                rc = jn_err_set(err, JN_ENOMEM, "csv-to-json: out of memory");
            }
            m = NULL;
        }
    }
    jn_msg_unref(&m);
    free(text);
    json_decref(doc);
    json_decref(names);
    json_decref(row);
    jn_csv__done(&c);
    return rc;
}

const struct jn_service_def jn_service_csv_to_json = {
    .name = "csv-to-json",
    .desc = "A CSV payload as a JSON array of objects (named by the header row) or of arrays",
    .opts = csv_opts,
    .conf_size = sizeof(struct csv_conf),
    .check = csv_check,
    .transform = csv_transform,
};
