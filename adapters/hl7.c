/*
 * hl7: the HL7 v2 ER7 codec (see hl7.h for the model and the contracts).
 *
 * Two ways in, on purpose:
 *  - jn_hl7_lookup scans raw bytes for one path and allocates nothing. Route conditions run it
 *    per message on any thread, and the MLLP channel uses it to read MSH-10 from a message that
 *    is broken further on, which a full parse would refuse.
 *  - jn_hl7_parse validates the whole message and builds a tree of spans into one copy of the
 *    bytes, for the services that walk every value (JSON, split). It counts first and then
 *    fills one block, like Mosquitto's packets "allocated once at final size": a message of
 *    any shape costs two allocations.
 * Values are never decoded in place; the tree keeps wire bytes, so writing it back out is the
 * input byte for byte.
 */
#include "hl7.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jn_mem.h"

/* MLLP's frame bytes: never data, so a message holding them could not be sent on. */
#define HL7_VT 0x0b
#define HL7_FS 0x1c

static int is_header_id(const char *s)
{
    return memcmp(s, "MSH", 3) == 0 || memcmp(s, "FHS", 3) == 0 || memcmp(s, "BHS", 3) == 0;
}

static int is_id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_alnum(char c)
{
    return is_id_char(c) || (c >= 'a' && c <= 'z');
}

/* A printable rendering of one byte for messages. */
static const char *show_byte(char c, char buf[8])
{
    unsigned char u = (unsigned char)c;

    if (u >= 0x21 && u < 0x7f) {
        snprintf(buf, 8, "'%c'", c);
    } else {
        snprintf(buf, 8, "0x%02x", u);
    }
    return buf;
}

int jn_hl7_delims_read(const void *vbuf, size_t len, struct jn_hl7_delims *d, struct jn_err *err)
{
    const char *b = vbuf;
    char enc[6];
    size_t n = 0;
    char sb[8];

    if (len < 3 || !is_header_id(b)) {
        return jn_err_set(err, JN_EPROTO, "the message does not start with MSH (or FHS/BHS for "
                          "a batch)");
    }
    if (len < 4 || b[3] == '\r' || b[3] == '\n') {
        return jn_err_set(err, JN_EPROTO, "%.3s is truncated: no field separator (MSH-1)", b);
    }
    enc[0] = b[3];
    for (size_t i = 4; i < len && b[i] != b[3] && b[i] != '\r' && b[i] != '\n'; i++) {
        if (n == 5) {
            return jn_err_set(err, JN_EPROTO, "%.3s-2 has more than 5 encoding characters", b);
        }
        enc[1 + n++] = b[i];
    }
    if (n < 4) {
        return jn_err_set(err, JN_EPROTO, "%.3s-2 has %zu encoding characters, expected 4 "
                          "(such as ^~\\&)", b, n);
    }
    for (size_t i = 0; i <= n; i++) {
        char c = enc[i];
        /* Printable ASCII only: a delimiter is one byte in any character set, and the JSON
         * shape carries it as a string. */
        if (is_alnum(c) || (unsigned char)c <= 0x20 || (unsigned char)c >= 0x7f) {
            return jn_err_set(err, JN_EPROTO, "%.3s-%d: %s cannot be a delimiter", b,
                              i == 0 ? 1 : 2, show_byte(c, sb));
        }
        for (size_t k = 0; k < i; k++) {
            if (enc[k] == c) {
                return jn_err_set(err, JN_EPROTO, "%.3s-1/%.3s-2: the delimiter %s is used "
                                  "twice", b, b, show_byte(c, sb));
            }
        }
    }
    d->field = enc[0];
    d->comp = enc[1];
    d->rep = enc[2];
    d->esc = enc[3];
    d->sub = enc[4];
    d->trunc = n == 5 ? enc[5] : 0;
    return 0;
}

/* ---- paths ---- */

static int path_num(const char *s, size_t len, size_t *i, int *out)
{
    long v = 0;
    size_t start = *i;

    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        v = v * 10 + (s[*i] - '0');
        if (v > 99999) {
            *i = start; /* errors point at the number */
            return -1;
        }
        (*i)++;
    }
    if (*i == start || v < 1) {
        *i = start;
        return -1;
    }
    *out = (int)v;
    return 0;
}

int jn_hl7_path_parse(const char *s, size_t len, struct jn_hl7_path *p, struct jn_err *err)
{
    static const char want[] = "expected a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5";
    size_t i = 3;

    memset(p, 0, sizeof(*p));
    p->occ = 1;
    p->rep = 1;
    if (len < 3 || !is_id_char(s[0]) || !is_id_char(s[1]) || !is_id_char(s[2])) {
        return jn_err_set(err, JN_EINVAL, "'%.*s' does not start with a segment id (three of "
                          "A-Z, 0-9); %s", (int)(len > 40 ? 40 : len), s, want);
    }
    memcpy(p->seg, s, 3);
    if (i < len && s[i] == '[') {
        i++;
        if (path_num(s, len, &i, &p->occ) < 0 || i >= len || s[i] != ']') {
            goto bad;
        }
        i++;
    }
    if (i >= len || s[i] != '-') {
        goto bad;
    }
    i++;
    if (path_num(s, len, &i, &p->field) < 0) {
        goto bad;
    }
    if (i < len && s[i] == '[') {
        i++;
        if (path_num(s, len, &i, &p->rep) < 0 || i >= len || s[i] != ']') {
            goto bad;
        }
        i++;
    }
    if (i < len && s[i] == '.') {
        i++;
        if (path_num(s, len, &i, &p->comp) < 0) {
            goto bad;
        }
        if (i < len && s[i] == '.') {
            i++;
            if (path_num(s, len, &i, &p->sub) < 0) {
                goto bad;
            }
        }
    }
    if (i == len) {
        return 0;
    }
bad:
    return jn_err_set(err, JN_EINVAL, "'%.*s' is not a valid HL7 path at character %zu; %s",
                      (int)(len > 40 ? 40 : len), s, i + 1, want);
}

/* ---- lookup on raw bytes ---- */

/* The n-th (1-based) piece of [s, s + len) split on c; 0 when there are fewer pieces. */
static int piece(const char *s, size_t len, char c, int n, struct jn_hl7_span *out)
{
    size_t start = 0;
    int k = 1;

    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == c) {
            if (k == n) {
                out->p = s + start;
                out->len = i - start;
                return 1;
            }
            k++;
            start = i + 1;
        }
    }
    return 0;
}

int jn_hl7_lookup(const void *vbuf, size_t len, const struct jn_hl7_path *p,
                  struct jn_hl7_span *out)
{
    const char *b = vbuf;
    struct jn_hl7_delims d;
    struct jn_hl7_span seg = {NULL, 0}, f;
    size_t pos = 0;
    int occ = 0, header, k;

    out->p = b;
    out->len = 0;
    if (jn_hl7_delims_read(b, len, &d, NULL) != 0) {
        return JN_EPROTO;
    }
    while (pos < len) {
        size_t s = pos;
        while (pos < len && b[pos] != '\r' && b[pos] != '\n') {
            pos++;
        }
        if (pos - s >= 3 && memcmp(b + s, p->seg, 3) == 0 && (pos - s == 3 ||
                                                              b[s + 3] == d.field)) {
            if (++occ == p->occ) {
                seg.p = b + s;
                seg.len = pos - s;
                break;
            }
        }
        while (pos < len && (b[pos] == '\r' || b[pos] == '\n')) {
            pos++;
        }
    }
    if (seg.p == NULL) {
        return 0;
    }
    header = is_header_id(seg.p);
    if (header && p->field <= 2) {
        /* MSH-1 and MSH-2 are the delimiters themselves: one piece each, never split. */
        if (seg.len < 4 || p->rep > 1 || p->comp > 1 || p->sub > 1) {
            return 0;
        }
        if (p->field == 1) {
            f.p = seg.p + 3;
            f.len = 1;
        } else {
            f.p = seg.p + 4;
            f.len = 0;
            while (4 + f.len < seg.len && f.p[f.len] != d.field) {
                f.len++;
            }
        }
        *out = f;
        return 1;
    }
    /* Field k starts after the k-th field separator; in a header segment the separator at
     * offset 3 is MSH-1 itself, so MSH-k starts after the (k-1)-th. */
    k = header ? p->field - 1 : p->field;
    if (!piece(seg.p, seg.len, d.field, k + 1, &f)) {
        return 0;
    }
    if (!piece(f.p, f.len, d.rep, p->rep, &f)) {
        return 0;
    }
    if (p->comp > 0 && !piece(f.p, f.len, d.comp, p->comp, &f)) {
        return 0;
    }
    if (p->comp > 0 && p->sub > 0 && !piece(f.p, f.len, d.sub, p->sub, &f)) {
        return 0;
    }
    *out = f;
    return 1;
}

int jn_hl7_is_null(const char *raw, size_t len)
{
    return len == 2 && raw[0] == '"' && raw[1] == '"';
}

/* ---- escapes ---- */

static int hexval(char c)
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

static void put(char *out, size_t cap, size_t *o, char c)
{
    if (*o + 1 < cap) {
        out[*o] = c;
    }
    (*o)++;
}

/* The decoded byte of a one-letter escape, or -1 when it is not one we decode. */
static int named_escape(const struct jn_hl7_delims *d, char c)
{
    switch (c) {
    case 'F':
        return (unsigned char)d->field;
    case 'S':
        return (unsigned char)d->comp;
    case 'T':
        return (unsigned char)d->sub;
    case 'R':
        return (unsigned char)d->rep;
    case 'E':
        return (unsigned char)d->esc;
    case 'P':
        return d->trunc ? (unsigned char)d->trunc : -1;
    default:
        return -1;
    }
}

size_t jn_hl7_text(const struct jn_hl7_delims *d, const struct jn_hl7_path *p,
                   const struct jn_hl7_span *sp, char *out)
{
    if (p->field <= 2 && (strcmp(p->seg, "MSH") == 0 || strcmp(p->seg, "FHS") == 0 ||
                          strcmp(p->seg, "BHS") == 0)) {
        memcpy(out, sp->p, sp->len);
        out[sp->len] = '\0';
        return sp->len;
    }
    return jn_hl7_unescape(d, sp->p, sp->len, out, sp->len + 1);
}

size_t jn_hl7_unescape(const struct jn_hl7_delims *d, const char *raw, size_t len, char *out,
                       size_t cap)
{
    size_t o = 0, i = 0;

    while (i < len) {
        size_t j, n;
        const char *seq;
        int ok = 0;

        if (raw[i] != d->esc) {
            put(out, cap, &o, raw[i++]);
            continue;
        }
        j = i + 1;
        while (j < len && raw[j] != d->esc) {
            j++;
        }
        if (j >= len) {
            /* No closing escape character: the rest is text as written. */
            while (i < len) {
                put(out, cap, &o, raw[i++]);
            }
            break;
        }
        seq = raw + i + 1;
        n = j - i - 1;
        if (n == 1 && named_escape(d, seq[0]) >= 0) {
            put(out, cap, &o, (char)named_escape(d, seq[0]));
            ok = 1;
        } else if (n >= 3 && seq[0] == 'X' && (n - 1) % 2 == 0) {
            ok = 1;
            for (size_t k = 1; k < n; k++) {
                ok = ok && hexval(seq[k]) >= 0;
            }
            for (size_t k = 1; ok && k < n; k += 2) {
                put(out, cap, &o, (char)(hexval(seq[k]) * 16 + hexval(seq[k + 1])));
            }
        } else if (n == 3 && memcmp(seq, ".br", 3) == 0) {
            put(out, cap, &o, '\n');
            ok = 1;
        }
        if (!ok) {
            /* Formatting (\H\ \.sp\ ...) and unknown escapes stay as written. */
            for (size_t k = i; k <= j; k++) {
                put(out, cap, &o, raw[k]);
            }
        }
        i = j + 1;
    }
    if (cap > 0) {
        out[o < cap ? o : cap - 1] = '\0';
    }
    return o;
}

int jn_hl7_escape(const struct jn_hl7_delims *d, const char *text, size_t len,
                  struct jn_buf *out)
{
    char e = d->esc;

    if (jn_hl7_is_null(text, len)) {
        /* Two quotes as text, not the explicit null. */
        char x[] = {e, 'X', '2', '2', '2', '2', e};
        return jn_buf_append(out, x, sizeof(x));
    }
    for (size_t i = 0; i < len; i++) {
        char c = text[i], l = 0;
        int rc;
        if (c == d->field) {
            l = 'F';
        } else if (c == d->comp) {
            l = 'S';
        } else if (c == d->sub) {
            l = 'T';
        } else if (c == d->rep) {
            l = 'R';
        } else if (c == e) {
            l = 'E';
        } else if (d->trunc && c == d->trunc) {
            l = 'P';
        }
        if (l) {
            char x[] = {e, l, e};
            rc = jn_buf_append(out, x, sizeof(x));
        } else if (c == '\n' && e != '.') {
            /* (With '.' as the escape character, \.br\ could not be told apart: hex then.) */
            char x[] = {e, '.', 'b', 'r', e};
            rc = jn_buf_append(out, x, sizeof(x));
        } else if ((unsigned char)c < 0x20 && c != '\t') {
            /* CR would end the segment, 0x0B and 0x1C the MLLP frame: hex for every control
             * character but TAB (and LF, above). */
            static const char hex[] = "0123456789ABCDEF";
            char x[] = {e, 'X', hex[(unsigned char)c >> 4], hex[c & 15], e};
            rc = jn_buf_append(out, x, sizeof(x));
        } else {
            rc = jn_buf_putc(out, c);
        }
        if (rc != 0) {
            return JN_ENOMEM;
        }
    }
    return 0;
}

/* ---- the parsed message ---- */

struct counts {
    size_t segs, fields, reps, comps, subs;
};

/* Where segment i starts and ends: the text up to the first CR or LF, then its end. cr: the
 * next CR at or after the segment (len: none left; SEG_CR_UNKNOWN before the first call). */
struct segpos {
    size_t start, end, eol_end;
    size_t cr;
};

#define SEG_CR_UNKNOWN SIZE_MAX

/* Returns the next segment from *pos, or 0 at the end. Strict: the end is one CR.
 * The end is found with memchr: the next CR (remembered in sp->cr until it is passed, so a
 * message without CRs is not searched again for every segment), then an LF before it. */
static int next_seg(const char *b, size_t len, size_t *pos, unsigned flags, struct segpos *sp)
{
    size_t i = *pos;
    const char *lf;

    if (i >= len) {
        return 0;
    }
    sp->start = i;
    if (sp->cr == SEG_CR_UNKNOWN || sp->cr < i) {
        const char *cr = memchr(b + i, '\r', len - i);
        sp->cr = cr ? (size_t)(cr - b) : len;
    }
    lf = memchr(b + i, '\n', sp->cr - i);
    i = lf ? (size_t)(lf - b) : sp->cr;
    sp->end = i;
    if (flags & JN_HL7_STRICT) {
        if (i < len && b[i] == '\r') {
            i++;
        }
    } else {
        while (i < len && (b[i] == '\r' || b[i] == '\n')) {
            i++;
        }
    }
    sp->eol_end = i;
    *pos = i;
    return 1;
}

/* Validates one segment and, when c is not NULL, adds its element counts to c. idx is
 * 0-based. */
static int check_seg(const char *b, const struct segpos *sp, size_t idx, unsigned flags,
                     const struct jn_hl7_delims *d, struct counts *c, struct jn_err *err)
{
    const char *s = b + sp->start;
    size_t n = sp->end - sp->start;
    size_t from;
    int header;
    char sb[8];

    if (n == 0) {
        return jn_err_set(err, JN_EPROTO, "segment %zu is empty (a CR on its own)", idx + 1);
    }
    if (n < 3 || !is_id_char(s[0]) || !is_id_char(s[1]) || !is_id_char(s[2]) ||
        (n > 3 && s[3] != d->field)) {
        char shown[16];
        size_t k = 0;
        for (size_t i = 0; i < n && i < 3; i++) {
            unsigned char u = (unsigned char)s[i];
            k += (size_t)snprintf(shown + k, sizeof(shown) - k, u >= 0x20 && u < 0x7f ? "%c" :
                                  "\\x%02x", u);
        }
        return jn_err_set(err, JN_EPROTO, "segment %zu: '%s' is not a segment id, expected "
                          "three of A-Z, 0-9 followed by %c", idx + 1, shown, d->field);
    }
    {
        /* The first frame marker, if any (memchr scans a word at a time). */
        const char *vt = memchr(s, HL7_VT, n), *fs = memchr(s, HL7_FS, n);
        const char *at = vt == NULL || (fs != NULL && fs < vt) ? fs : vt;
        if (at != NULL) {
            return jn_err_set(err, JN_EPROTO, "segment %zu (%.3s): byte %s at offset %zu is an "
                              "MLLP frame marker, not data", idx + 1, s, show_byte(*at, sb),
                              sp->start + (size_t)(at - s));
        }
    }
    header = is_header_id(s);
    if (header) {
        struct jn_hl7_delims hd;
        if (jn_hl7_delims_read(s, n, &hd, err) != 0) {
            return JN_EPROTO;
        }
        if (memcmp(&hd, d, sizeof(hd)) != 0) {
            return jn_err_set(err, JN_EPROTO, "segment %zu (%.3s): its delimiters differ from "
                              "the first header's", idx + 1, s);
        }
    }
    if (c == NULL) {
        return 0; /* jn_hl7_check: valid, nothing to count */
    }
    if (header) {
        /* id, MSH-1, MSH-2: one value each. */
        c->fields += 3;
        c->reps += 3;
        c->comps += 3;
        c->subs += 3;
        from = 4;
        while (from < n && s[from] != d->field) {
            from++;
        }
    } else {
        c->fields += 1;
        c->reps += 1;
        c->comps += 1;
        c->subs += 1;
        from = 3;
    }
    for (size_t i = from; i < n; i++) {
        if (s[i] == d->field) {
            c->fields++;
            c->reps++;
            c->comps++;
            c->subs++;
        } else if (s[i] == d->rep) {
            c->reps++;
            c->comps++;
            c->subs++;
        } else if (s[i] == d->comp) {
            c->comps++;
            c->subs++;
        } else if (s[i] == d->sub) {
            c->subs++;
        }
    }
    c->segs++;
    return 0;
}

/* Bump allocator over the one block. */
struct fill {
    struct jn_hl7_field *fields;
    struct jn_hl7_rep *reps;
    struct jn_hl7_comp *comps;
    struct jn_hl7_span *subs;
};

/* One value that is not split: a field with one repetition, component and subcomponent. */
static void fill_whole(struct fill *f, struct jn_hl7_field *fld, const char *p, size_t n)
{
    fld->reps = f->reps++;
    fld->nreps = 1;
    fld->reps->comps = f->comps++;
    fld->reps->ncomps = 1;
    fld->reps->comps->subs = f->subs++;
    fld->reps->comps->nsubs = 1;
    fld->reps->comps->subs->p = p;
    fld->reps->comps->subs->len = n;
}

/* Splits [p, p + n) into repetitions, components and subcomponents. */
static void fill_field(struct fill *f, const struct jn_hl7_delims *d, struct jn_hl7_field *fld,
                       const char *p, size_t n)
{
    struct jn_hl7_rep *rep;
    struct jn_hl7_comp *comp;
    size_t start = 0;

    fld->reps = f->reps;
    fld->nreps = 1;
    rep = f->reps++;
    rep->comps = f->comps;
    rep->ncomps = 1;
    comp = f->comps++;
    comp->subs = f->subs;
    comp->nsubs = 1;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? p[i] : d->field;
        if (c != d->field && c != d->rep && c != d->comp && c != d->sub) {
            continue;
        }
        f->subs->p = p + start;
        f->subs->len = i - start;
        f->subs++;
        start = i + 1;
        if (i == n) {
            break;
        }
        if (c == d->rep) {
            fld->nreps++;
            rep = f->reps++;
            rep->comps = f->comps;
            rep->ncomps = 1;
            comp = f->comps++;
            comp->subs = f->subs;
            comp->nsubs = 1;
        } else if (c == d->comp) {
            rep->ncomps++;
            comp = f->comps++;
            comp->subs = f->subs;
            comp->nsubs = 1;
        } else {
            comp->nsubs++;
        }
    }
}

static void fill_seg(struct fill *f, const struct jn_hl7_delims *d, struct jn_hl7_seg *seg,
                     const char *b, const struct segpos *sp)
{
    const char *s = b + sp->start;
    size_t n = sp->end - sp->start;
    size_t i, start;

    memcpy(seg->id, s, 3);
    seg->id[3] = '\0';
    seg->header = is_header_id(s);
    seg->text.p = s;
    seg->text.len = n;
    seg->eol.p = b + sp->end;
    seg->eol.len = sp->eol_end - sp->end;
    seg->fields = f->fields;
    seg->nfields = 1;
    fill_whole(f, f->fields++, s, 3);
    if (n == 3) {
        return;
    }
    if (seg->header) {
        fill_whole(f, f->fields++, s + 3, 1);
        for (i = 4; i < n && s[i] != d->field; i++) {
        }
        fill_whole(f, f->fields++, s + 4, i - 4);
        seg->nfields = 3;
    } else {
        i = 3;
    }
    /* i is at a field separator (or the end): each one starts a field. */
    while (i < n) {
        start = ++i;
        while (i < n && s[i] != d->field) {
            i++;
        }
        fill_field(f, d, f->fields++, s + start, i - start);
        seg->nfields++;
    }
}

/* The first pass of jn_hl7_parse: the delimiters, then every segment validated and, when c
 * is not NULL, its elements counted. */
static int scan_msg(const void *buf, size_t len, unsigned flags, struct jn_hl7_delims *d,
                    struct counts *c, struct jn_err *err)
{
    struct segpos sp = {.cr = SEG_CR_UNKNOWN};
    size_t pos = 0, nsegs = 0;
    int rc;

    rc = jn_hl7_delims_read(buf, len, d, err);
    if (rc != 0) {
        return rc;
    }
    if (flags & JN_HL7_STRICT) {
        const char *lf = memchr(buf, '\n', len);
        if (lf != NULL) {
            size_t at = (size_t)(lf - (const char *)buf);
            return jn_err_set(err, JN_EPROTO, "LF at offset %zu%s; strict mode takes CR only as "
                              "the segment end", at, at > 0 && lf[-1] == '\r' ? " (a CRLF)" : "");
        }
    }
    while (next_seg(buf, len, &pos, flags, &sp)) {
        if (nsegs == JN_HL7_MAX_SEGMENTS) {
            return jn_err_set(err, JN_EPROTO, "more than %d segments", JN_HL7_MAX_SEGMENTS);
        }
        rc = check_seg(buf, &sp, nsegs, flags, d, c, err);
        if (rc != 0) {
            return rc;
        }
        nsegs++;
    }
    return 0;
}

int jn_hl7_check(const void *buf, size_t len, unsigned flags, struct jn_err *err)
{
    struct jn_hl7_delims d;

    return scan_msg(buf, len, flags, &d, NULL, err);
}

int jn_hl7_parse(const void *buf, size_t len, unsigned flags, struct jn_hl7_msg **out,
                 struct jn_err *err)
{
    struct jn_hl7_delims d;
    struct counts c = {0};
    struct segpos sp;
    struct jn_hl7_msg *m;
    struct fill f;
    size_t pos = 0, total, si = 0;
    char *mem;
    int rc;

    *out = NULL;
    rc = scan_msg(buf, len, flags, &d, &c, err);
    if (rc != 0) {
        return rc;
    }
    /* Each count is at most len + 3 per segment, so these sums cannot overflow a size_t for
     * any buffer that fits in memory; check anyway, cheaply. */
    if (c.subs > SIZE_MAX / 4 / sizeof(struct jn_hl7_span)) {
        return jn_err_set(err, JN_ENOMEM, "message too large");
    }
    total = c.segs * sizeof(struct jn_hl7_seg) + c.fields * sizeof(struct jn_hl7_field) +
            c.reps * sizeof(struct jn_hl7_rep) + c.comps * sizeof(struct jn_hl7_comp) +
            c.subs * sizeof(struct jn_hl7_span);
    m = jn_calloc(1, sizeof(*m));
    mem = jn_malloc(total + len + 1);
    if (m == NULL || mem == NULL) {
        jn_free(m);
        jn_free(mem);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    /* Largest alignment first: every struct here holds pointers and size_t only. */
    m->mem = mem;
    m->d = d;
    m->segs = (struct jn_hl7_seg *)mem;
    m->nsegs = c.segs;
    f.fields = (struct jn_hl7_field *)(m->segs + c.segs);
    f.reps = (struct jn_hl7_rep *)(f.fields + c.fields);
    f.comps = (struct jn_hl7_comp *)(f.reps + c.reps);
    f.subs = (struct jn_hl7_span *)(f.comps + c.comps);
    m->buf = (char *)(f.subs + c.subs);
    m->len = len;
    memcpy(m->buf, buf, len);
    m->buf[len] = '\0';
    pos = 0;
    sp.cr = SEG_CR_UNKNOWN;
    while (next_seg(m->buf, len, &pos, flags, &sp)) {
        fill_seg(&f, &d, &m->segs[si++], m->buf, &sp);
    }
    *out = m;
    return 0;
}

void jn_hl7_free(struct jn_hl7_msg *m)
{
    if (m == NULL) {
        return;
    }
    jn_free(m->mem);
    jn_free(m);
}

static int write_field(const struct jn_hl7_delims *d, const struct jn_hl7_field *f,
                       struct jn_buf *out)
{
    int rc = 0;

    for (size_t r = 0; r < f->nreps && rc == 0; r++) {
        const struct jn_hl7_rep *rep = &f->reps[r];
        if (r > 0) {
            rc = jn_buf_putc(out, d->rep);
        }
        for (size_t c = 0; c < rep->ncomps && rc == 0; c++) {
            const struct jn_hl7_comp *comp = &rep->comps[c];
            if (c > 0) {
                rc = jn_buf_putc(out, d->comp);
            }
            for (size_t s = 0; s < comp->nsubs && rc == 0; s++) {
                if (s > 0) {
                    rc = jn_buf_putc(out, d->sub);
                }
                if (rc == 0) {
                    rc = jn_buf_append(out, comp->subs[s].p, comp->subs[s].len);
                }
            }
        }
    }
    return rc;
}

int jn_hl7_write(const struct jn_hl7_msg *m, struct jn_buf *out)
{
    for (size_t i = 0; i < m->nsegs; i++) {
        const struct jn_hl7_seg *s = &m->segs[i];
        for (size_t k = 0; k < s->nfields; k++) {
            /* No separator before the id, nor before MSH-1 and MSH-2 (MSH-1 is one). */
            if (k > 0 && !(s->header && k <= 2) && jn_buf_putc(out, m->d.field) != 0) {
                return JN_ENOMEM;
            }
            if (write_field(&m->d, &s->fields[k], out) != 0) {
                return JN_ENOMEM;
            }
        }
        if (jn_buf_append(out, s->eol.p, s->eol.len) != 0) {
            return JN_ENOMEM;
        }
    }
    return 0;
}

int jn_hl7_get(const struct jn_hl7_msg *m, const struct jn_hl7_path *p, struct jn_hl7_span *out)
{
    return jn_hl7_lookup(m->buf, m->len, p, out);
}

/* ---- editing ---- */

/* Appends t (len bytes) split on seps[0], with element idx[0] (0-based) replaced by val when
 * n == 1 or by the same edit one level down; missing elements are added empty. */
static int splice(struct jn_buf *out, const char *t, size_t len, const char *seps,
                  const size_t *idx, int n, const char *val, size_t vlen)
{
    size_t i = 0, start = 0;
    int done = 0, rc = 0;

    for (size_t k = 0; k <= len && rc == 0; k++) {
        if (k < len && t[k] != seps[0]) {
            continue;
        }
        if (i > 0) {
            rc = jn_buf_putc(out, seps[0]);
        }
        if (rc == 0 && i == idx[0]) {
            rc = n == 1 ? jn_buf_append(out, val, vlen)
                        : splice(out, t + start, k - start, seps + 1, idx + 1, n - 1, val, vlen);
            done = 1;
        } else if (rc == 0) {
            rc = jn_buf_append(out, t + start, k - start);
        }
        i++;
        start = k + 1;
    }
    for (; !done && rc == 0; i++) {
        rc = jn_buf_putc(out, seps[0]);
        if (rc == 0 && i == idx[0]) {
            rc = n == 1 ? jn_buf_append(out, val, vlen)
                        : splice(out, "", 0, seps + 1, idx + 1, n - 1, val, vlen);
            done = 1;
        }
    }
    return rc;
}

/* The new bytes of m with path p set to the escaped value esc: 0, or JN_EINVAL / JN_ENOMEM
 * with the reason. */
static int hl7_edit(const struct jn_hl7_msg *m, const struct jn_hl7_path *p, const char *esc,
                    size_t elen, struct jn_buf *out, struct jn_err *err)
{
    const struct jn_hl7_delims *d = &m->d;
    const struct jn_hl7_seg *seg = NULL, *last = &m->segs[m->nsegs - 1];
    char seps[4] = {d->field, d->rep, d->comp, d->sub};
    size_t idx[4], count = 0, off, end;
    struct jn_buf s = JN_BUF_INIT;
    int header = strcmp(p->seg, "MSH") == 0 || strcmp(p->seg, "FHS") == 0 ||
                 strcmp(p->seg, "BHS") == 0;
    int n = 0, rc;

    if (header && p->field <= 2) {
        return jn_err_set(err, JN_EINVAL, "%s-%d holds the delimiters and cannot be set",
                          p->seg, p->field);
    }
    for (size_t i = 0; i < m->nsegs && seg == NULL; i++) {
        if (strcmp(m->segs[i].id, p->seg) == 0 && ++count == (size_t)p->occ) {
            seg = &m->segs[i];
        }
    }
    if (seg == NULL && (size_t)p->occ != count + 1) {
        return jn_err_set(err, JN_EINVAL, "%s[%d] does not exist (the message has %zu %s "
                          "segment(s)), and set can add only the next one", p->seg, p->occ,
                          count, p->seg);
    }
    idx[n++] = header ? (size_t)p->field - 1 : (size_t)p->field;
    idx[n++] = (size_t)p->rep - 1;
    if (p->comp > 0) {
        idx[n++] = (size_t)p->comp - 1;
        if (p->sub > 0) {
            idx[n++] = (size_t)p->sub - 1;
        }
    }
    if (seg != NULL) {
        rc = splice(&s, seg->text.p, seg->text.len, seps, idx, n, esc, elen);
        off = (size_t)(seg->text.p - m->buf);
        end = off + seg->text.len;
    } else {
        rc = splice(&s, p->seg, 3, seps, idx, n, esc, elen);
        off = end = m->len;
    }
    if (rc == 0) {
        rc = jn_buf_append(out, m->buf, off);
    }
    if (rc == 0 && seg == NULL && last->eol.len == 0) {
        rc = jn_buf_putc(out, '\r'); /* the last segment had no end; a new one needs it */
    }
    if (rc == 0) {
        rc = jn_buf_append(out, s.p ? s.p : "", s.len);
    }
    if (rc == 0 && seg == NULL) {
        const struct jn_hl7_span *eol = &m->segs[0].eol;
        rc = last->eol.len ? jn_buf_append(out, eol->p, eol->len) : 0;
    }
    if (rc == 0) {
        rc = jn_buf_append(out, m->buf + end, m->len - end);
    }
    jn_buf_reset(&s);
    return rc == 0 ? 0 : jn_err_set(err, JN_ENOMEM, "out of memory");
}

int jn_hl7_set_raw(struct jn_hl7_msg **m, const struct jn_hl7_path *p, const char *raw,
                   size_t len, unsigned flags, struct jn_err *err)
{
    struct jn_buf out = JN_BUF_INIT;
    struct jn_hl7_msg *nm = NULL;
    int rc = hl7_edit(*m, p, raw, len, &out, err);

    if (rc == 0) {
        rc = jn_hl7_parse(out.p, out.len, flags, &nm, err);
    }
    jn_buf_reset(&out);
    if (rc == 0) {
        jn_hl7_free(*m);
        *m = nm;
    }
    return rc;
}

/* ---- batches ---- */

static int ends_message(const char *id)
{
    return strcmp(id, "MSH") == 0 || strcmp(id, "BHS") == 0 || strcmp(id, "BTS") == 0 ||
           strcmp(id, "FHS") == 0 || strcmp(id, "FTS") == 0;
}

int jn_hl7_split(const struct jn_hl7_msg *m, struct jn_hl7_span **spans, size_t *n)
{
    struct jn_hl7_span *v = NULL;
    size_t nv = 0, cap = 0;

    *spans = NULL;
    *n = 0;
    for (size_t i = 0; i < m->nsegs; i++) {
        size_t j;
        const struct jn_hl7_seg *last;
        if (strcmp(m->segs[i].id, "MSH") != 0) {
            continue;
        }
        for (j = i + 1; j < m->nsegs && !ends_message(m->segs[j].id); j++) {
        }
        if (nv == cap) {
            size_t nc = cap ? cap * 2 : 8;
            struct jn_hl7_span *nvv = jn_realloc(v, nc * sizeof(*v));
            if (nvv == NULL) {
                jn_free(v);
                return JN_ENOMEM;
            }
            v = nvv;
            cap = nc;
        }
        last = &m->segs[j - 1];
        v[nv].p = m->segs[i].text.p;
        v[nv].len = (size_t)(last->eol.p + last->eol.len - m->segs[i].text.p);
        nv++;
        i = j - 1;
    }
    *spans = v;
    *n = nv;
    return 0;
}
