/*
 * hl7: the HL7 v2 (ER7, "pipe and hat") codec.
 *
 * Used by the MLLP channel (to read MSH and build ACKs), the hl7-to-json / json-to-hl7 /
 * hl7-split services and `hl7("PID-3[2].1")` in route conditions. Modelled on what HAPI's
 * PipeParser and Mirth's ER7 reader accept, with LMDB-style contracts: every function says who
 * owns what, and returns 0 or a negative JN_E* (reason in struct jn_err where people read it).
 *
 * The model, from the wire up:
 *   message      = segment { eol segment } [ eol ]
 *   segment      = id { F field }                 id: 3 of [A-Z0-9], e.g. MSH, PID, ZPI
 *   field        = repetition { R repetition }
 *   repetition   = component { C component }
 *   component    = subcomponent { S subcomponent }
 * F C R E S (field, component, repetition, escape, subcomponent) come from MSH-1 and MSH-2 (or
 * FHS/BHS for batches): any characters, not only |^~\&. A fifth MSH-2 character (v2.7's
 * truncation character, usually #) is kept and escaped as \P\.
 *
 * Segment ends: CR, as the standard says. Unless JN_HL7_STRICT is given, LF and CRLF are
 * accepted too, and so is any run of them (blank lines between segments). The exact bytes of
 * each end are kept, so an unchanged message serializes back byte for byte (jn_hl7_write).
 *
 * Values are kept as they are on the wire (escaped). jn_hl7_unescape decodes:
 *   \F\ \S\ \T\ \R\ \E\   the field, component, subcomponent, repetition and escape characters
 *   \P\                   the truncation character (only when MSH-2 has one)
 *   \Xhhhh..\             the bytes given in hex (an even number of digits)
 *   \.br\                 a line break, decoded as "\n"
 * Anything else between escape characters (\H\ \N\ \Cxxyy\ \Mxxyyzz\ \Zxx\ \.sp\ ...) and an
 * escape character with no closing one are kept as written. jn_hl7_escape is the inverse for
 * what the decoder produces: the delimiters as above, "\n" as \.br\ (\X0A\ when the escape
 * character is '.'), other control characters
 * but TAB as \Xhh\ (CR is \X0D\), and the value "" (two double quotes, which would read as a
 * null) as \X2222\.
 *
 * The explicit null: a value that is exactly "" (two double quote characters) on the wire
 * means "delete this value" and is different from an empty one; jn_hl7_is_null tells them
 * apart, and the JSON shape keeps them apart (null vs "").
 *
 * Threads: everything here is reentrant; a parsed message is read-only and may be shared.
 */
#ifndef JN_HL7_H
#define JN_HL7_H

#include <stddef.h>

#include "jn_buf.h"
#include "jn_err.h"

/* Parse flags. */
#define JN_HL7_STRICT (1u << 0) /* segments end with CR only; LF anywhere is an error */

/* Limits, because a message is input: deeper or wider input is refused, not crashed on. */
#define JN_HL7_MAX_SEGMENTS 100000

struct jn_hl7_delims {
    char field; /* F: MSH-1 */
    char comp;  /* C */
    char rep;   /* R */
    char esc;   /* E */
    char sub;   /* S */
    char trunc; /* v2.7 truncation character, or 0 when MSH-2 has four characters */
};

/* A run of bytes inside a message, as on the wire (escaped). Borrowed from the message. */
struct jn_hl7_span {
    const char *p;
    size_t len;
};

/*
 * Reads the delimiters from the header segment (MSH, FHS or BHS) that starts buf. 0, or
 * JN_EPROTO with the reason in err (may be NULL).
 */
int jn_hl7_delims_read(const void *buf, size_t len, struct jn_hl7_delims *d, struct jn_err *err);

/* ---- paths ---- */

/*
 * A path: SEG[occ]-field[rep].component.subcomponent, e.g. MSH-9.1, PID-3[2].1, OBX[3]-5,
 * ZPI-2.1.3. occ and rep are 1-based and default to 1; component and subcomponent may be
 * left out to address the whole repetition or component. MSH-1 is the field separator itself
 * and MSH-2 the encoding characters (also FHS and BHS), neither split nor decoded.
 */
struct jn_hl7_path {
    char seg[4]; /* NUL-terminated segment id */
    int occ;     /* >= 1 */
    int field;   /* >= 1 */
    int rep;     /* >= 1 */
    int comp;    /* 0 = the whole repetition */
    int sub;     /* 0 = the whole component */
};

/* Parses s (len bytes, no NUL needed). 0 or JN_EINVAL with the reason in err (may be NULL). */
int jn_hl7_path_parse(const char *s, size_t len, struct jn_hl7_path *p, struct jn_err *err);

/*
 * Finds the raw (escaped) text at path p in the message in buf, without allocating and
 * without parsing more than it needs: it works on any bytes, so the MLLP channel can read
 * MSH-10 out of a message that is broken further on. Segments are split on CR and LF.
 * Returns 1 and the span (borrowed from buf) when the element exists, 0 when it does not
 * (*out is then empty), JN_EPROTO when buf does not start with a header segment.
 */
int jn_hl7_lookup(const void *buf, size_t len, const struct jn_hl7_path *p,
                  struct jn_hl7_span *out);

/* 1 when the raw value is the explicit null "" (two double quotes). */
int jn_hl7_is_null(const char *raw, size_t len);

/*
 * Decodes the escape sequences in raw (see the top of this file) into out, which has room for
 * cap bytes; always NUL-terminates when cap > 0. Returns the decoded length, which is never
 * more than len, so a buffer of len + 1 bytes always suffices. Never allocates.
 */
size_t jn_hl7_unescape(const struct jn_hl7_delims *d, const char *raw, size_t len, char *out,
                       size_t cap);
/* The text of the element found at p (its raw span sp) as route conditions, scripts and tests
 * read it: escapes decoded, except MSH-1 and MSH-2 (and FHS's, BHS's), the delimiters, which
 * are the bytes as written. out has room for sp->len + 1 bytes; returns the length written
 * (NUL-terminated). */
size_t jn_hl7_text(const struct jn_hl7_delims *d, const struct jn_hl7_path *p,
                   const struct jn_hl7_span *sp, char *out);
/* Appends the escaped form of text to out. 0 or JN_ENOMEM. */
int jn_hl7_escape(const struct jn_hl7_delims *d, const char *text, size_t len,
                  struct jn_buf *out);

/* ---- the parsed message ---- */

struct jn_hl7_comp {
    struct jn_hl7_span *subs; /* raw subcomponents; nsubs >= 1 */
    size_t nsubs;
};

struct jn_hl7_rep {
    struct jn_hl7_comp *comps; /* ncomps >= 1 */
    size_t ncomps;
};

struct jn_hl7_field {
    struct jn_hl7_rep *reps; /* nreps >= 1 */
    size_t nreps;
};

struct jn_hl7_seg {
    char id[4];                  /* "PID" */
    int header;                  /* MSH, FHS or BHS: fields 1 and 2 are the delimiters */
    struct jn_hl7_span text;     /* the segment without its end */
    struct jn_hl7_span eol;      /* its end as received: "\r", "\n", "\r\n", "\r\r"... or "" */
    struct jn_hl7_field *fields; /* fields[0] is the id; fields[i] is SEG-i; nfields >= 1 */
    size_t nfields;
};

struct jn_hl7_msg {
    struct jn_hl7_delims d;
    char *buf;  /* owned copy of the bytes; spans point into it */
    size_t len;
    struct jn_hl7_seg *segs;
    size_t nsegs;
    void *mem;  /* one block holding every array above */
};

/*
 * Parses a message (or a batch: FHS/BHS ... BTS/FTS) into *out. The bytes are copied. Returns
 * 0, JN_EPROTO with the reason and where in err ("segment 3 (OBX): ..."), or JN_ENOMEM. The
 * first segment must be MSH, FHS or BHS; every segment id must be three of [A-Z0-9]; the
 * framing bytes 0x0B and 0x1C may not appear. Free with jn_hl7_free.
 */
int jn_hl7_parse(const void *buf, size_t len, unsigned flags, struct jn_hl7_msg **out,
                 struct jn_err *err);
void jn_hl7_free(struct jn_hl7_msg *m); /* NULL is a no-op */

/* The checks of jn_hl7_parse alone, without building the message: 0, or JN_EPROTO with the
 * same reason jn_hl7_parse gives. Allocates nothing. */
int jn_hl7_check(const void *buf, size_t len, unsigned flags, struct jn_err *err);

/* Serializes m into out (appending). For a message as parsed this is the input, byte for
 * byte. 0 or JN_ENOMEM. */
int jn_hl7_write(const struct jn_hl7_msg *m, struct jn_buf *out);

/* Same as jn_hl7_lookup on m's bytes. */
int jn_hl7_get(const struct jn_hl7_msg *m, const struct jn_hl7_path *p, struct jn_hl7_span *out);

/*
 * Sets the element at p to raw, bytes as on the wire (escape a text with jn_hl7_escape
 * first; a copy of another element's raw span needs none), the way h:set in Lua scripts and
 * the hl7-map service edit messages. Missing fields, repetitions and components are added
 * empty; a missing segment is appended when it is the next occurrence (PID[2] on a message
 * with one PID). The edited bytes are parsed anew with flags and *m is replaced (the old one
 * freed) only on success. Returns 0, JN_EINVAL (MSH-1/MSH-2 and FHS's, BHS's cannot be set;
 * an occurrence past the next one), JN_EPROTO (the result does not parse) or JN_ENOMEM, with
 * err; *m is then unchanged.
 */
int jn_hl7_set_raw(struct jn_hl7_msg **m, const struct jn_hl7_path *p, const char *raw,
                   size_t len, unsigned flags, struct jn_err *err);

/* ---- batches ---- */

/*
 * Splits a batch into its messages: each MSH with the segments after it, up to the next MSH,
 * BHS, BTS, FHS or FTS. A plain message gives itself. Spans (borrowed from m) include the
 * segment ends. *spans is jn_malloc'd (free with jn_free), *n may be 0 for an empty batch.
 * 0 or JN_ENOMEM.
 */
int jn_hl7_split(const struct jn_hl7_msg *m, struct jn_hl7_span **spans, size_t *n);

/* ---- JSON (adapters/hl7_json.c) ---- */

/*
 * The JSON shape (docs/hl7.md has the full description and examples):
 *   {"segments": [["MSH", "|", "^~\\&", "APP", ...], ["PID", "1", "", ["123", "", "", "MR"]]],
 *    "eol": "\r", "eols": {"3": "\n"}}
 * A segment is an array whose element i is field i (element 0 the id). A field is a value, or
 * {"repeat": [value, ...]} when it has more than one repetition. A value is a leaf, or an array
 * of components when it has more than one; a component is a leaf, or an array of leaves
 * (subcomponents). A leaf is a string (decoded), null (the explicit null ""), or, when the
 * decoded text would not encode back to the same bytes, {"raw": "<as on the wire>", "text":
 * "<decoded>"} (text only when it is valid UTF-8); bytes that are not UTF-8 come as
 * {"raw_hex": "..."}. "eol" is the first segment's end; "eols" lists (by 0-based index) the
 * segments whose end differs.
 */
/* Returns a new JSON document (a jansson json_t *, owned by the caller) or NULL when out of
 * memory. */
void *jn_hl7_to_json(const struct jn_hl7_msg *m);
/*
 * The named shape (docs/hl7.md), for mappings rather than round trips:
 *   {"MSH": [{"1": "|", "2": "^~\\&", "3": [{"1": "LAB"}], "9": [{"1": "ADT", "2": "A01"}]}],
 *    "PID": [{"3": [{"1": "42", "4": "MR"}, {"1": "77"}], "5": [{"1": "DOE", "2": "JANE"}]}]}
 * Segments by id, each a list of its occurrences in order; an occurrence is an object of
 * fields by position (MSH-1 and MSH-2 as written strings), a field a list of its repetitions,
 * a repetition an object of components by position, a component a leaf (as in the positional
 * shape) or an object of its subcomponents by position. Empty fields, components and
 * subcomponents are left out (an empty repetition between others is {}), and the order of
 * segments of different ids and the segment ends are not kept. Returns a new jansson json_t *
 * or NULL when out of memory.
 */
void *jn_hl7_to_json_named(const struct jn_hl7_msg *m);
/* Appends the HL7 bytes the JSON document describes to out: the positional shape (an object
 * with "segments"), byte for byte, or the named shape (segments in the order of the object's
 * keys, each ending with CR). 0, JN_EINVAL with the reason (and the JSON path) in err, or
 * JN_ENOMEM. */
int jn_hl7_from_json(const void *json, struct jn_buf *out, struct jn_err *err);

#endif
