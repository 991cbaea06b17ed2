/*
 * mllp_proto: MLLP framing and HL7 ACKs, with no sockets (see mllp_proto.h).
 *
 * The framer follows the MLLP release 2 description (HL7 v2.x Transport Specification): a
 * frame is <VT> data <FS><CR>. What real senders get wrong, and what we do about it:
 *  - CR/LF (and blanks) between frames: skipped silently, many senders add a line end;
 *  - anything else outside a frame: reported as garbage, up to the next line end, so the
 *    channel can read an unframed MSH and say why it is refused before closing;
 *  - a <VT> inside a frame: the frame so far is reported as cut short and a new one starts;
 *  - <FS> not followed by <CR>: taken as the end, unless strict;
 *  - a frame over max_message: its start is kept (for MSH-10), the rest counted and dropped,
 *    and it is reported when its end arrives, so the ACK comes in order.
 */
#include "mllp_proto.h"

#include <stdio.h>
#include <string.h>

#include "jn_mem.h"

enum {
    ST_OUT = 0, /* between frames */
    ST_IN,      /* inside a frame */
    ST_FS,      /* inside a frame, just after <FS> */
    ST_GARB,    /* in a run of garbage outside a frame */
};

void jn_mllp_framer_init(struct jn_mllp_framer *f, size_t max_message, unsigned flags)
{
    memset(f, 0, sizeof(*f));
    f->max = max_message;
    f->flags = flags;
}

void jn_mllp_framer_free(struct jn_mllp_framer *f)
{
    jn_buf_reset(&f->buf);
    f->state = ST_OUT;
}

int jn_mllp_framer_busy(const struct jn_mllp_framer *f)
{
    return f->state != ST_OUT;
}

static void emit(struct jn_mllp_framer *f, struct jn_mllp_event *ev, enum jn_mllp_ev_kind k)
{
    ev->kind = k;
    ev->data = f->buf.p ? f->buf.p : "";
    ev->len = f->buf.len;
    ev->total = f->total;
    f->state = ST_OUT;
    f->reset = 1;
}

static void clear(struct jn_mllp_framer *f)
{
    f->buf.len = 0;
    if (f->buf.p) {
        f->buf.p[0] = '\0';
    }
    f->total = 0;
}

int jn_mllp_feed(struct jn_mllp_framer *f, const void *data, size_t len, size_t *used,
                 struct jn_mllp_event *ev)
{
    const unsigned char *d = data;
    size_t i = 0;

    ev->kind = JN_MLLP_EV_NONE;
    ev->data = NULL;
    ev->len = 0;
    ev->total = 0;
    if (f->reset) {
        clear(f);
        f->reset = 0;
    }
    while (i < len) {
        unsigned char c = d[i];
        switch (f->state) {
        case ST_OUT:
            if (c == JN_MLLP_VT) {
                clear(f);
                f->state = ST_IN;
                i++;
            } else if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
                i++;
            } else {
                clear(f);
                f->state = ST_GARB;
            }
            break;
        case ST_GARB:
            if (c == JN_MLLP_VT || c == '\r' || c == '\n' || f->buf.len >= JN_MLLP_GARBAGE_MAX) {
                emit(f, ev, JN_MLLP_EV_GARBAGE);
                *used = i;
                return 0;
            }
            if (jn_buf_putc(&f->buf, (char)c) != 0) {
                *used = i;
                return JN_ENOMEM;
            }
            f->total++;
            i++;
            break;
        case ST_IN: {
            size_t j = i, keep;
            while (j < len && d[j] != JN_MLLP_VT && d[j] != JN_MLLP_FS) {
                j++;
            }
            keep = j - i;
            if (f->buf.len + keep > f->max) {
                keep = f->buf.len < f->max ? f->max - f->buf.len : 0;
            }
            if (keep && jn_buf_append(&f->buf, d + i, keep) != 0) {
                *used = i;
                return JN_ENOMEM;
            }
            f->total += j - i;
            i = j;
            if (i < len && d[i] == JN_MLLP_VT) {
                /* Not consumed: it starts the next frame once this event is handled. */
                emit(f, ev, JN_MLLP_EV_UNTERMINATED);
                *used = i;
                return 0;
            }
            if (i < len) {
                f->state = ST_FS;
                i++;
            }
            break;
        }
        case ST_FS:
            if (c == JN_MLLP_CR) {
                i++;
            } else if (f->flags & JN_MLLP_STRICT) {
                emit(f, ev, JN_MLLP_EV_BAD_END);
                *used = i;
                return 0;
            }
            emit(f, ev, f->total > f->max ? JN_MLLP_EV_OVERSIZE : JN_MLLP_EV_FRAME);
            *used = i;
            return 0;
        }
    }
    *used = i;
    return 0;
}

void jn_mllp_framer_end(struct jn_mllp_framer *f, struct jn_mllp_event *ev)
{
    ev->kind = JN_MLLP_EV_NONE;
    ev->data = NULL;
    ev->len = 0;
    ev->total = 0;
    switch (f->state) {
    case ST_IN:
        emit(f, ev, JN_MLLP_EV_UNTERMINATED);
        break;
    case ST_FS:
        emit(f, ev, (f->flags & JN_MLLP_STRICT) ? JN_MLLP_EV_BAD_END
                    : f->total > f->max           ? JN_MLLP_EV_OVERSIZE
                                                  : JN_MLLP_EV_FRAME);
        break;
    case ST_GARB:
        emit(f, ev, JN_MLLP_EV_GARBAGE);
        break;
    default:
        break;
    }
}

int jn_mllp_frame(const void *data, size_t len, struct jn_buf *out)
{
    static const char end[2] = {JN_MLLP_FS, JN_MLLP_CR};

    if (jn_buf_putc(out, JN_MLLP_VT) != 0 || jn_buf_append(out, data, len) != 0 ||
        jn_buf_append(out, end, 2) != 0) {
        return JN_ENOMEM;
    }
    return 0;
}

/* ---- MSH ---- */

/* MSH-1 .. MSH-16 of the first segment: field k is piece k of the segment split on the field
 * separator (piece 1 is "MSH", piece 2 the encoding characters). */
#define MSH_FIELDS 16

struct msh_fields {
    const char *base;                     /* the message: where missing values point */
    const struct jn_hl7_delims *d;
    struct jn_hl7_span f[MSH_FIELDS + 1]; /* f[k] is piece k; f[0] unused */
    int n;                                /* pieces found, at most MSH_FIELDS */
};

/* Splits the first segment (up to the first CR or LF) once. */
static void msh_split(const char *b, size_t len, const struct jn_hl7_delims *d,
                      struct msh_fields *mf)
{
    size_t start = 0;

    mf->base = b;
    mf->d = d;
    mf->n = 0;
    for (size_t i = 0; mf->n < MSH_FIELDS; i++) {
        if (i == len || b[i] == '\r' || b[i] == '\n' || b[i] == d->field) {
            mf->n++;
            mf->f[mf->n].p = b + start;
            mf->f[mf->n].len = i - start;
            if (i == len || b[i] != d->field) {
                break;
            }
            start = i + 1;
        }
    }
}

/* MSH-field, first repetition, then component comp (0: all of it): what jn_hl7_lookup gives
 * for that path, without reading the segment again. 1, or 0 with *out empty. */
static int look(const struct msh_fields *mf, int field, int comp, struct jn_hl7_span *out)
{
    struct jn_hl7_span v;
    size_t i, start = 0;
    int k = 1;

    out->p = mf->base;
    out->len = 0;
    if (field > mf->n) {
        return 0;
    }
    v = mf->f[field];
    for (i = 0; i < v.len && v.p[i] != mf->d->rep; i++) {
    }
    v.len = i;
    if (comp > 0) {
        for (i = 0; i <= v.len; i++) {
            if (i == v.len || v.p[i] == mf->d->comp) {
                if (k == comp) {
                    break;
                }
                k++;
                start = i + 1;
            }
        }
        if (k != comp || i > v.len) {
            return 0;
        }
        v.p += start;
        v.len = i - start;
    }
    *out = v;
    return 1;
}

int jn_mllp_msh_read(const void *data, size_t len, struct jn_mllp_msh *m)
{
    struct jn_hl7_span v, app;
    struct msh_fields mf;

    memset(m, 0, sizeof(*m));
    m->d.field = '|';
    m->d.comp = '^';
    m->d.rep = '~';
    m->d.esc = '\\';
    m->d.sub = '&';
    if (len < 3 || memcmp(data, "MSH", 3) != 0 || jn_hl7_delims_read(data, len, &m->d, NULL) != 0) {
        return 0;
    }
    m->has_delims = 1;
    msh_split(data, len, &m->d, &mf);
    look(&mf, 3, 0, &m->send_app);
    look(&mf, 4, 0, &m->send_fac);
    look(&mf, 5, 0, &m->recv_app);
    look(&mf, 6, 0, &m->recv_fac);
    look(&mf, 9, 0, &m->msgtype);
    look(&mf, 9, 1, &m->type);
    look(&mf, 9, 2, &m->trigger);
    look(&mf, 11, 0, &m->proc);
    look(&mf, 12, 0, &m->version);
    if (look(&mf, 12, 1, &v) && v.len >= 3 && v.p[0] == '2' && v.p[1] == '.') {
        for (size_t i = 2; i < v.len && v.p[i] >= '0' && v.p[i] <= '9' && i < 6; i++) {
            m->version_minor = m->version_minor * 10 + (v.p[i] - '0');
        }
    }
    if (look(&mf, 15, 0, &app) && app.len > 0) {
        m->enhanced = 1;
        if (app.len == 2) {
            memcpy(m->accept_ack, app.p, 2);
        }
    }
    if (look(&mf, 16, 0, &app) && app.len > 0) {
        m->enhanced = 1;
    }
    m->has_ctlid = look(&mf, 10, 0, &m->ctlid);
    return m->has_ctlid;
}

int jn_mllp_ack_wanted(const struct jn_mllp_msh *m, char code)
{
    if (!m->enhanced) {
        return 1;
    }
    if (strcmp(m->accept_ack, "NE") == 0) {
        return 0;
    }
    if (strcmp(m->accept_ack, "ER") == 0) {
        return code != 'A';
    }
    if (strcmp(m->accept_ack, "SU") == 0) {
        return code == 'A';
    }
    return 1;
}

/* Echoes a raw value from the peer's MSH, without control bytes (an ACK must never carry a
 * frame marker or a segment end) and at most cap bytes. Runs between control bytes are
 * appended whole. */
static int echo(struct jn_buf *b, const struct jn_hl7_span *s, size_t cap)
{
    size_t n = s->len < cap ? s->len : cap, run = 0;

    for (size_t i = 0; i <= n; i++) {
        if (i == n || (unsigned char)s->p[i] < 0x20) {
            if (i > run && jn_buf_append(b, s->p + run, i - run) != 0) {
                return JN_ENOMEM;
            }
            run = i + 1;
        }
    }
    return 0;
}

/* Our own text in a value: delimiters escaped (\F\ ...), control bytes as blanks, cut at max
 * bytes of input (so at most 3 * max out) without splitting a UTF-8 sequence. Runs of plain
 * bytes are appended whole. */
static int text(struct jn_buf *b, const struct jn_hl7_delims *d, const char *s, size_t max)
{
    size_t n = strlen(s), run = 0;
    struct jn_hl7_delims e = *d;

    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    for (size_t i = 0; i <= n; i++) {
        char c;
        int rc = 0;
        if (i < n) {
            c = s[i];
            if ((unsigned char)c >= 0x20 && c != e.field && c != e.comp && c != e.rep &&
                c != e.esc && c != e.sub && !(e.trunc && c == e.trunc)) {
                continue; /* plain: part of the run */
            }
        }
        if (i > run && jn_buf_append(b, s + run, i - run) != 0) {
            return JN_ENOMEM;
        }
        run = i + 1;
        if (i == n) {
            break;
        }
        c = s[i];
        if ((unsigned char)c < 0x20) {
            rc = jn_buf_putc(b, ' ');
        } else {
            rc = jn_hl7_escape(&e, &c, 1, b);
        }
        if (rc != 0) {
            return JN_ENOMEM;
        }
    }
    return 0;
}

static const char *err_text(int code)
{
    switch (code) {
    case JN_HL7_ERR_SEGMENT:
        return "Segment sequence error";
    case JN_HL7_ERR_REQUIRED:
        return "Required field missing";
    case JN_HL7_ERR_DATA:
        return "Data type error";
    case JN_HL7_ERR_TYPE:
        return "Unsupported message type";
    default:
        return "Application internal error";
    }
}

/* Field sizes are capped so that the largest possible ACK fits in JN_MLLP_ACK_MAX:
 * 6 * 200 (echoed MSH fields) + 1000 (control id) + 2 * 3 * 200 (the reason, escaped) + ~250
 * of structure = 3650. */
#define ECHO_MAX 200
#define CTLID_MAX 1000
#define REASON_MAX 200

int jn_mllp_ack_build(const struct jn_mllp_msh *m, char code, int err_code, const char *reason,
                      const char *ack_id, const char *ts, struct jn_buf *out)
{
    const struct jn_hl7_delims *d = &m->d;
    struct jn_buf b = JN_BUF_INIT;
    char F = d->field, C = d->comp;
    char enc[6] = {d->comp, d->rep, d->esc, d->sub, d->trunc, 0};
    int rc = 0;

    /* Room for a usual ACK at once: the echoed fields and 256 bytes of the rest. */
    rc |= jn_buf_reserve(&b, 256 + m->recv_app.len + m->recv_fac.len + m->send_app.len +
                                 m->send_fac.len + m->proc.len + m->version.len + m->ctlid.len);
    rc |= jn_buf_puts(&b, "MSH");
    rc |= jn_buf_putc(&b, F);
    rc |= jn_buf_puts(&b, enc);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->recv_app, ECHO_MAX);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->recv_fac, ECHO_MAX);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->send_app, ECHO_MAX);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->send_fac, ECHO_MAX);
    rc |= jn_buf_putc(&b, F);
    rc |= text(&b, d, ts, 40);
    rc |= jn_buf_putc(&b, F);
    rc |= jn_buf_putc(&b, F);
    rc |= jn_buf_puts(&b, "ACK");
    if (m->trigger.len > 0) {
        rc |= jn_buf_putc(&b, C);
        rc |= echo(&b, &m->trigger, 16);
        if (m->version_minor >= 4) {
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_puts(&b, "ACK");
        }
    }
    rc |= jn_buf_putc(&b, F);
    rc |= text(&b, d, ack_id, 64);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->proc, ECHO_MAX);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->version, ECHO_MAX);
    rc |= jn_buf_putc(&b, '\r');

    rc |= jn_buf_puts(&b, "MSA");
    rc |= jn_buf_putc(&b, F);
    rc |= jn_buf_putc(&b, m->enhanced ? 'C' : 'A');
    rc |= jn_buf_putc(&b, code);
    rc |= jn_buf_putc(&b, F);
    rc |= echo(&b, &m->ctlid, CTLID_MAX);
    if (code != 'A' && reason) {
        rc |= jn_buf_putc(&b, F);
        rc |= text(&b, d, reason, REASON_MAX);
    }
    rc |= jn_buf_putc(&b, '\r');
    if (code != 'A' && reason) {
        char num[16];
        snprintf(num, sizeof(num), "%d", err_code);
        rc |= jn_buf_puts(&b, "ERR");
        rc |= jn_buf_putc(&b, F);
        if (m->version_minor >= 5) {
            /* ERR-3 (CWE) the code, ERR-4 the severity, ERR-8 the user message. */
            rc |= jn_buf_putc(&b, F);
            rc |= jn_buf_putc(&b, F);
            rc |= jn_buf_puts(&b, num);
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_puts(&b, err_text(err_code));
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_puts(&b, "HL70357");
            rc |= jn_buf_putc(&b, F);
            rc |= jn_buf_putc(&b, 'E');
            for (int i = 0; i < 4; i++) {
                rc |= jn_buf_putc(&b, F);
            }
            rc |= text(&b, d, reason, REASON_MAX);
        } else {
            /* Before v2.5: ERR-1 (ELD), its fourth component the code as a CE. */
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_putc(&b, C);
            rc |= jn_buf_puts(&b, num);
            rc |= jn_buf_putc(&b, d->sub);
            rc |= jn_buf_puts(&b, err_text(err_code));
            rc |= jn_buf_putc(&b, d->sub);
            rc |= jn_buf_puts(&b, "HL70357");
        }
        rc |= jn_buf_putc(&b, '\r');
    }
    if (rc == 0) {
        rc = jn_mllp_frame(b.p, b.len, out);
    }
    jn_buf_reset(&b);
    return rc ? JN_ENOMEM : 0;
}

/* ---- reading an ACK ---- */

static int get(const void *data, size_t len, const char *seg, int field, int comp, int sub,
               struct jn_hl7_span *out)
{
    struct jn_hl7_path p;

    memset(&p, 0, sizeof(p));
    memcpy(p.seg, seg, 3);
    p.occ = 1;
    p.field = field;
    p.rep = 1;
    p.comp = comp;
    p.sub = sub;
    return jn_hl7_lookup(data, len, &p, out) == 1 && out->len > 0;
}

int jn_mllp_ack_read(const void *data, size_t len, struct jn_mllp_ack *a, struct jn_err *err)
{
    struct jn_hl7_delims d;
    struct jn_hl7_span s;
    struct jn_err e;

    memset(a, 0, sizeof(*a));
    if (jn_hl7_delims_read(data, len, &d, &e) != 0) {
        return jn_err_set(err, JN_EPROTO, "the reply is not HL7: %s", e.msg);
    }
    if (!get(data, len, "MSA", 1, 0, 0, &s)) {
        return jn_err_set(err, JN_EPROTO, "the reply has no MSA segment with an MSA-1 code");
    }
    memcpy(a->code, s.p, s.len < 2 ? s.len : 2);
    get(data, len, "MSA", 2, 0, 0, &a->ctlid);
    if (get(data, len, "ERR", 8, 0, 0, &s) || get(data, len, "ERR", 3, 2, 0, &s) ||
        get(data, len, "ERR", 1, 4, 2, &s) || get(data, len, "MSA", 3, 0, 0, &s)) {
        char tmp[sizeof(a->reason)];
        size_t n = s.len < sizeof(tmp) - 1 ? s.len : sizeof(tmp) - 1;
        jn_hl7_unescape(&d, s.p, n, tmp, sizeof(tmp));
        /* Shown in logs: no control bytes. */
        for (size_t i = 0; tmp[i]; i++) {
            a->reason[i] = (unsigned char)tmp[i] < 0x20 ? ' ' : tmp[i];
        }
    }
    return 0;
}
