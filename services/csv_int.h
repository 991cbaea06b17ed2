/*
 * csv_int: the RFC 4180 reader that csv-to-json and split (format: csv) share: quoted fields,
 * "" inside quotes, CRLF or LF, line breaks inside quotes, empty lines skipped. Internal to
 * services/ (hence the jn_csv__ prefix).
 */
#ifndef JN_CSV_INT_H
#define JN_CSV_INT_H

#include <jansson.h>

#include "jn_buf.h"
#include "jn_err.h"

/* The reader's position over borrowed bytes; start it with jn_csv__init, end with
 * jn_csv__done. */
struct jn_csv {
    const char *p, *end;
    char sep;
    const char *who; /* the service named in errors: "csv-to-json" */
    long row;        /* 1-based number of the row last read (empty lines count) */
    const char *row_start, *row_end; /* the last row's bytes as written, without its end */
    struct jn_buf field;
};

void jn_csv__init(struct jn_csv *c, const void *buf, size_t len, char sep, const char *who);
/* Reads the next row's fields as JSON strings into row (cleared first). Returns 1 for a row,
 * 0 at the end of the input, or JN_EPROTO with err ("<who>: row 3: a quoted field is not
 * closed", "... field 2 is not UTF-8 text"). */
int jn_csv__next(struct jn_csv *c, json_t *row, struct jn_err *err);
void jn_csv__done(struct jn_csv *c);

#endif
