/*
 * csv: the RFC 4180 reader shared by csv-to-json and split (see csv_int.h). It keeps no state
 * but the position, so a service makes one per message on its stack.
 */
#include "csv_int.h"

#include <string.h>

void jn_csv__init(struct jn_csv *c, const void *buf, size_t len, char sep, const char *who)
{
    memset(c, 0, sizeof(*c));
    c->p = buf;
    c->end = c->p + len;
    c->sep = sep;
    c->who = who;
    c->field = (struct jn_buf)JN_BUF_INIT;
}

void jn_csv__done(struct jn_csv *c)
{
    jn_buf_reset(&c->field);
}

/* Reads one field into c->field; returns 1 when a row ends after it (line break or end),
 * 0 when a separator follows, -1 for a quote that never closes. */
static int csv_field(struct jn_csv *c)
{
    c->field.len = 0;
    jn_buf_puts(&c->field, ""); /* never NULL: an empty field is "" */
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end) {
                return -1;
            }
            if (*c->p == '"') {
                if (c->p + 1 < c->end && c->p[1] == '"') {
                    jn_buf_putc(&c->field, '"');
                    c->p += 2;
                    continue;
                }
                c->p++;
                break;
            }
            jn_buf_putc(&c->field, *c->p++);
        }
        /* After the closing quote, up to the separator or the line's end, as written. */
    }
    while (c->p < c->end && *c->p != c->sep && *c->p != '\n' && *c->p != '\r') {
        jn_buf_putc(&c->field, *c->p++);
    }
    if (c->p >= c->end) {
        c->row_end = c->p;
        return 1;
    }
    if (*c->p == c->sep) {
        c->p++;
        return 0;
    }
    c->row_end = c->p;
    if (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n') {
        c->p++;
    }
    c->p++;
    return 1;
}

int jn_csv__next(struct jn_csv *c, json_t *row, struct jn_err *err)
{
    int end;

    json_array_clear(row);
    for (;;) {
        if (c->p >= c->end) {
            return 0;
        }
        c->row++;
        if (*c->p == '\n' || (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n')) {
            c->p += *c->p == '\n' ? 1 : 2; /* an empty line: nothing */
            continue;
        }
        break;
    }
    c->row_start = c->p;
    do {
        json_t *s;
        end = csv_field(c);
        if (end < 0) {
            return jn_err_set(err, JN_EPROTO, "%s: row %ld: a quoted field is not closed",
                              c->who, c->row);
        }
        s = json_stringn(c->field.p, c->field.len);
        if (s == NULL) {
            return jn_err_set(err, JN_EPROTO, "%s: row %ld field %zu is not UTF-8 text",
                              c->who, c->row, json_array_size(row) + 1);
        }
        json_array_append_new(row, s);
    } while (end == 0);
    return 1;
}
