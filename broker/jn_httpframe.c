/*
 * jn_httpframe: the framing guard in front of evhttp (contract in jn_httpframe.h). Modelled on
 * nginx's request reading (the head read whole into one buffer and checked before the body,
 * large_client_header_buffers, 413/414/431/501 answered by the server itself) and RFC 9112's
 * list of what a server must refuse (sections 2.2, 3, 5, 6.3, 7.1).
 *
 * evhttp keeps its own bufferevent (so its writes and closes are as without the guard): a
 * callback on the bufferevent's input takes each read's bytes out before evhttp's read
 * callback runs, into a hold buffer, and puts back what may pass.
 *
 * Lines are found with evbuffer_search_eol from where the previous look stopped, so a peer
 * that trickles a long line a byte at a time costs one pass over it, and each line is copied
 * once to be checked. The head stays in the input until it is complete; only then is it moved
 * to evhttp's side, so a refused request has nothing of it there. Bodies move chain by chain
 * without a copy (evbuffer_remove_buffer).
 */
#include "jn_httpframe.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jn_mem.h"

enum {
    HF_LINE = 0, /* before a request line */
    HF_HEAD,     /* header lines, held */
    HF_BODY,     /* Content-Length bytes to pass */
    HF_CSIZE,    /* a chunk size line */
    HF_CDATA,    /* chunk bytes to pass */
    HF_CEND,     /* the line end after a chunk */
    HF_TRAILER,  /* trailer lines */
    HF_REFUSED,  /* everything else is discarded */
};

enum { L_HOLD, L_PASS, L_DROP, L_REFUSE };

#define HF_CHUNK_LINE_MAX 32 /* a chunk size line: hex digits (leading zeros allowed) */

struct hf_refusal {
    int code;
    char why[240];
};

void jn_httpframe_init(struct jn_httpframe *f, unsigned long long max_body, size_t max_head)
{
    memset(f, 0, sizeof(*f));
    f->max_body = max_body;
    f->max_head = max_head;
}

/* At most 48 printable bytes of s, for a reason that quotes the peer. */
static const char *safe(const char *s, size_t n, char out[52])
{
    size_t i, k = 0;

    for (i = 0; i < n && k < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        out[k++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    if (i < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

static int refuse(struct hf_refusal *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct hf_refusal *r, int code, const char *fmt, ...)
{
    va_list ap;

    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
    return L_REFUSE;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The methods evhttp knows; bodyless: HEAD and TRACE (evhttp reads no body for them). */
static int method_known(const char *m, size_t n, unsigned char *bodyless)
{
    static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                                        "TRACE", "PATCH", NULL};

    for (size_t i = 0; names[i]; i++) {
        if (strlen(names[i]) == n && memcmp(names[i], m, n) == 0) {
            *bodyless = i == 2 || i == 6;
            return 1;
        }
    }
    return 0;
}

static int request_line(struct jn_httpframe *f, char *s, size_t n, struct hf_refusal *r)
{
    char *sp1, *sp2, *v, q[52];
    size_t vn;
    struct evhttp_uri *u;

    sp1 = memchr(s, ' ', n);
    if (sp1 == NULL || sp1 == s) {
        return refuse(r, 400, "malformed request line \"%s\": expected METHOD /target HTTP/1.1",
                      safe(s, n, q));
    }
    for (char *p = s; p < sp1; p++) {
        if (!is_tchar((unsigned char)*p)) {
            return refuse(r, 400, "malformed request line \"%s\": the method is not a token",
                          safe(s, n, q));
        }
    }
    sp2 = memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - s));
    if (sp2 == NULL || sp2 == sp1 + 1) {
        return refuse(r, 400, "malformed request line \"%s\": expected METHOD /target HTTP/1.1",
                      safe(s, n, q));
    }
    v = sp2 + 1;
    vn = n - (size_t)(v - s);
    if (vn == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        f->http11 = v[7] == '1';
    } else if (vn == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' &&
               v[6] == '.' && v[7] >= '0' && v[7] <= '9') {
        return refuse(r, 505, "HTTP version %s is not supported (HTTP/1.0 and HTTP/1.1 are)",
                      safe(v, vn, q));
    } else {
        return refuse(r, 400, "malformed request line \"%s\": bad HTTP version",
                      safe(s, n, q));
    }
    if (!method_known(s, (size_t)(sp1 - s), &f->bodyless)) {
        return refuse(r, 501, "method %s is not implemented", safe(s, (size_t)(sp1 - s), q));
    }
    for (char *p = sp1 + 1; p < sp2; p++) {
        if ((unsigned char)*p > 0x7e) {
            return refuse(r, 400, "request target \"%s\" has a byte that is not ASCII",
                          safe(sp1 + 1, (size_t)(sp2 - sp1 - 1), q));
        }
    }
    /* evhttp parses the target the same way; a target it cannot read is refused here. */
    *sp2 = '\0';
    u = evhttp_uri_parse_with_flags(sp1 + 1, EVHTTP_URI_NONCONFORMANT);
    *sp2 = ' ';
    if (u == NULL) {
        return refuse(r, 400, "request target \"%s\" cannot be parsed",
                      safe(sp1 + 1, (size_t)(sp2 - sp1 - 1), q));
    }
    evhttp_uri_free(u);
    f->st = HF_HEAD;
    return L_HOLD;
}

/* s[0..n) without leading spaces (as evhttp strips them) and trailing SP/HTAB. */
static void trim(const char **s, size_t *n)
{
    while (*n && **s == ' ') {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) {
        (*n)--;
    }
}

/* The end of the head: the cross-field rules, then where the body goes. */
static int head_end(struct jn_httpframe *f, struct hf_refusal *r)
{
    if (f->n_cl > 1) {
        return refuse(r, 400, "Content-Length is given more than once");
    }
    if (f->n_te > 1) {
        return refuse(r, 400, "Transfer-Encoding is given more than once");
    }
    if (f->n_cl && f->n_te) {
        return refuse(r, 400, "both Content-Length and Transfer-Encoding are given");
    }
    if (f->bodyless && (f->chunked || f->cl > 0)) {
        return refuse(r, 400, "a HEAD or TRACE request has no body");
    }
    if (f->http11 && f->expect_other && (f->chunked || f->cl > 0)) {
        return refuse(r, 417, "only Expect: 100-continue is supported");
    }
    if (f->cl > f->max_body) {
        return refuse(r, 413, "body of %llu bytes is over the limit of %llu bytes", f->cl,
                      f->max_body);
    }
    if (f->chunked && f->no_chunked) {
        return refuse(r, 411, "a chunked body is not accepted here; send Content-Length");
    }
    f->n_heads++;
    if (f->chunked) {
        f->st = HF_CSIZE;
    } else if (f->cl > 0) {
        f->st = HF_BODY;
        f->left = f->cl;
    } else {
        f->st = HF_LINE;
    }
    return L_PASS;
}

static int header_line(struct jn_httpframe *f, const char *s, size_t n, struct hf_refusal *r)
{
    const char *colon, *v;
    size_t nn, vn;
    char q[52];
    int trailer = f->st == HF_TRAILER;

    if (n == 0) {
        if (trailer) {
            f->st = HF_LINE;
            return L_PASS;
        }
        return head_end(f, r);
    }
    if (s[0] == ' ' || s[0] == '\t') {
        return refuse(r, 400, "obsolete line folding in the %s", trailer ? "trailer" : "headers");
    }
    colon = memchr(s, ':', n);
    nn = colon ? (size_t)(colon - s) : 0;
    for (size_t i = 0; i < nn; i++) {
        if (!is_tchar((unsigned char)s[i])) {
            nn = 0;
            break;
        }
    }
    if (nn == 0) {
        return refuse(r, 400, "malformed %s line \"%s\": expected Name: value",
                      trailer ? "trailer" : "header", safe(s, n, q));
    }
    v = colon + 1;
    vn = n - nn - 1;
    for (size_t i = 0; i < vn; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return refuse(r, 400, "control byte 0x%02x in header %s", c, safe(s, nn, q));
        }
    }
    if (nn == sizeof(JN_HTTPFRAME_HEADER) - 1 && strncasecmp(s, JN_HTTPFRAME_HEADER, nn) == 0) {
        return refuse(r, 400, "header %s is junction's own", JN_HTTPFRAME_HEADER);
    }
    trim(&v, &vn);
    if (nn == 14 && strncasecmp(s, "Content-Length", 14) == 0) {
        unsigned long long x = 0;
        if (trailer) {
            return refuse(r, 400, "Content-Length in the trailer");
        }
        if (vn == 0) {
            return refuse(r, 400, "empty Content-Length");
        }
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9') {
                return refuse(r, 400, "Content-Length \"%s\" is not a number of bytes",
                              safe(v, vn, q));
            }
            x = x > (~0ULL - 9) / 10 ? ~0ULL : x * 10 + (unsigned)(v[i] - '0');
        }
        f->cl = x;
        f->n_cl++;
    } else if (nn == 17 && strncasecmp(s, "Transfer-Encoding", 17) == 0) {
        if (trailer) {
            return refuse(r, 400, "Transfer-Encoding in the trailer");
        }
        if (vn != 7 || strncasecmp(v, "chunked", 7) != 0) {
            return refuse(r, 501, "Transfer-Encoding \"%s\" is not supported (only chunked)",
                          safe(v, vn, q));
        }
        f->chunked = 1;
        f->n_te++;
    } else if (!trailer && nn == 6 && strncasecmp(s, "Expect", 6) == 0) {
        f->expect_other |= !(vn == 12 && strncasecmp(v, "100-continue", 12) == 0);
    }
    return trailer ? L_PASS : L_HOLD;
}

static int chunk_line(struct jn_httpframe *f, const char *s, size_t n, struct hf_refusal *r)
{
    unsigned long long x = 0;
    size_t i = 0;
    char q[52];

    if (f->st == HF_CEND) {
        if (n != 0) {
            return refuse(r, 400, "chunk data is not followed by CRLF");
        }
        f->st = HF_CSIZE;
        return L_PASS;
    }
    while (i < n && s[i] == '0') {
        i++;
    }
    if (n == 0 || memchr(s, ';', n) != NULL) {
        return refuse(r, 400, n ? "chunk extensions are not supported" : "empty chunk size line");
    }
    if (n - i > 15) {
        return refuse(r, 413, "chunked body is over the limit of %llu bytes", f->max_body);
    }
    for (; i < n; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
        if (d == 16) {
            return refuse(r, 400, "chunk size line \"%s\" is not hex digits", safe(s, n, q));
        }
        x = x * 16 + d;
    }
    if (x > f->max_body - f->body) {
        return refuse(r, 413, "chunked body is over the limit of %llu bytes", f->max_body);
    }
    f->body += x;
    if (x == 0) {
        f->st = HF_TRAILER;
    } else {
        f->st = HF_CDATA;
        f->left = x;
    }
    return L_PASS;
}

/* One complete line s[0..n) (n + eol bytes of input); s has room for a NUL at s[n]. */
static int one_line(struct jn_httpframe *f, char *s, size_t n, size_t eol,
                    struct hf_refusal *r)
{
    int head = f->st == HF_LINE || f->st == HF_HEAD || f->st == HF_TRAILER;

    if (f->st == HF_LINE) {
        if (n == 0) {
            return L_DROP;
        }
        f->head = 0;
        f->bodyless = f->http11 = f->chunked = f->expect_other = 0;
        f->n_cl = f->n_te = 0;
        f->cl = f->body = 0;
    }
    if (head) {
        f->head += n + eol;
        if (f->head > f->max_head) {
            return refuse(r, f->st == HF_LINE ? 414 : 431,
                          f->st == HF_LINE ? "request line is over the limit of %zu bytes"
                                           : "request headers are over the limit of %zu bytes",
                          f->max_head);
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\0' || c == '\r' || (f->st == HF_LINE && (c < 0x20 || c == 0x7f))) {
                return refuse(r, 400, "%s byte 0x%02x in the request %s",
                              c == '\r' ? "bare CR" : "control", c,
                              f->st == HF_LINE ? "line" : "headers");
            }
        }
        return f->st == HF_LINE ? request_line(f, s, n, r) : header_line(f, s, n, r);
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0' || s[i] == '\r') {
            return refuse(r, 400, "bad byte 0x%02x in a chunk line", (unsigned char)s[i]);
        }
    }
    return chunk_line(f, s, n, r);
}

/* What the request so far is replaced by, so that evhttp hands the refusal to the handler. */
static void emit_refusal(struct jn_httpframe *f, struct evbuffer *dst, const struct hf_refusal *r)
{
    if (f->st == HF_LINE || f->st == HF_HEAD) {
        evbuffer_add_printf(dst, "GET / HTTP/1.1\r\n%s: %d %s\r\nConnection: close\r\n\r\n",
                            JN_HTTPFRAME_HEADER, r->code, r->why);
        f->n_heads++;
    } else {
        /* Inside a chunked body evhttp is at a chunk boundary (or in the trailer): the body
         * ends here, and the handler knows this request by its number (libevent 2.1 does not
         * give the handler trailers, so no header can say it). */
        evbuffer_add(dst, f->st == HF_TRAILER ? "\r\n" : "0\r\n\r\n",
                     f->st == HF_TRAILER ? 2 : 5);
    }
    f->refuse_at = f->n_heads;
    f->code = r->code;
    snprintf(f->why, sizeof(f->why), "%s", r->why);
    f->st = HF_REFUSED;
}

/* Bytes a line may still take, line end included. */
static size_t line_budget(const struct jn_httpframe *f)
{
    if (f->st == HF_LINE) {
        return f->max_head;
    }
    if (f->st == HF_HEAD || f->st == HF_TRAILER) {
        return f->head < f->max_head ? f->max_head - f->head : 0;
    }
    return HF_CHUNK_LINE_MAX + 2;
}

enum bufferevent_filter_result jn_httpframe_filter(struct evbuffer *src, struct evbuffer *dst,
                                                   ev_ssize_t dst_limit,
                                                   enum bufferevent_flush_mode mode, void *ctx)
{
    struct jn_httpframe *f = ctx;
    int out = 0;

    (void)dst_limit;
    (void)mode;
    for (;;) {
        size_t avail = evbuffer_get_length(src), eol = 0, ll, budget;
        struct evbuffer_ptr start, e;
        struct hf_refusal r;
        char small[1025], *line;
        int act;

        if (f->st == HF_REFUSED) {
            evbuffer_drain(src, avail);
            break;
        }
        if (avail <= f->held) {
            break;
        }
        if (f->st == HF_BODY || f->st == HF_CDATA) {
            size_t n = avail < f->left ? avail : (size_t)f->left;
            evbuffer_remove_buffer(src, dst, n);
            f->left -= n;
            out = 1;
            if (f->left == 0) {
                f->st = f->st == HF_BODY ? HF_LINE : HF_CEND;
            }
            continue;
        }
        budget = line_budget(f);
        evbuffer_ptr_set(src, &start, f->scan > f->held ? f->scan : f->held, EVBUFFER_PTR_SET);
        e = evbuffer_search_eol(src, &start, &eol, EVBUFFER_EOL_CRLF);
        ll = e.pos < 0 ? avail - f->held : (size_t)e.pos - f->held;
        if (e.pos < 0 && ll <= budget) {
            /* Not complete yet; next time look from the last byte on (it may be the CR). */
            f->scan = avail - 1;
            break;
        }
        if (ll + eol > budget) {
            if (f->st == HF_HEAD || f->st == HF_TRAILER) {
                refuse(&r, 431, "request headers are over the limit of %zu bytes", f->max_head);
            } else if (f->st == HF_LINE) {
                refuse(&r, 414, "request line is over the limit of %zu bytes", f->max_head);
            } else {
                refuse(&r, 400, "chunk size line is over %d bytes", HF_CHUNK_LINE_MAX);
            }
            emit_refusal(f, dst, &r);
            out = 1;
            continue;
        }
        f->scan = 0;
        evbuffer_ptr_set(src, &start, f->held, EVBUFFER_PTR_SET);
        line = ll < sizeof(small) ? small : jn_malloc(ll + 1);
        if (line == NULL) {
            refuse(&r, 503, "out of memory");
            emit_refusal(f, dst, &r);
            out = 1;
            continue;
        }
        evbuffer_copyout_from(src, &start, line, ll);
        line[ll] = '\0';
        act = one_line(f, line, ll, eol, &r);
        if (line != small) {
            jn_free(line);
        }
        switch (act) {
        case L_HOLD:
            f->held += ll + eol;
            break;
        case L_DROP:
            evbuffer_drain(src, ll + eol);
            break;
        case L_PASS:
            evbuffer_remove_buffer(src, dst, f->held + ll + eol);
            f->held = 0;
            out = 1;
            break;
        default:
            emit_refusal(f, dst, &r);
            out = 1;
            break;
        }
    }
    return out ? BEV_OK : BEV_NEED_MORE;
}

/*
 * The input's callback: runs as soon as the bufferevent has added what it read (before it calls
 * evhttp's read callback), and moves those bytes from the input to hold, then what may pass
 * back. What evhttp has not read yet of earlier passes stays in front.
 */
static void input_cb(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct jn_httpframe *f = arg;
    size_t keep;

    if (f->busy || info->n_added == 0) {
        return;
    }
    f->busy = 1;
    keep = evbuffer_get_length(in) - info->n_added;
    if (keep > 0) {
        evbuffer_remove_buffer(in, f->tmp, keep);
    }
    evbuffer_add_buffer(f->hold, in);
    if (keep > 0) {
        evbuffer_add_buffer(in, f->tmp);
    }
    jn_httpframe_filter(f->hold, in, -1, BEV_NORMAL, f);
    f->busy = 0;
}

int jn_httpframe_attach(struct jn_httpframe *f, struct bufferevent *bev,
                        unsigned long long max_body, size_t max_head)
{
    jn_httpframe_init(f, max_body, max_head);
    f->in = bufferevent_get_input(bev);
    f->hold = evbuffer_new();
    f->tmp = evbuffer_new();
    f->cbent = f->hold && f->tmp ? evbuffer_add_cb(f->in, input_cb, f) : NULL;
    if (f->cbent == NULL) {
        jn_httpframe_detach(f);
        return -1;
    }
    return 0;
}

void jn_httpframe_detach(struct jn_httpframe *f)
{
    if (f->cbent != NULL) {
        evbuffer_remove_cb_entry(f->in, f->cbent);
    }
    if (f->hold != NULL) {
        evbuffer_free(f->hold);
    }
    if (f->tmp != NULL) {
        evbuffer_free(f->tmp);
    }
    f->cbent = NULL;
    f->hold = f->tmp = NULL;
    f->in = NULL;
}

int jn_httpframe_refusal(struct jn_httpframe *f, struct evhttp_request *req, int *code,
                         const char **phrase, const char **why)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       JN_HTTPFRAME_HEADER);
    char *end;
    long c;

    if (f != NULL && ++f->n_seen == f->refuse_at) {
        *code = f->code;
        *why = f->why;
    } else if (v != NULL) {
        c = strtol(v, &end, 10);
        *code = c >= 400 && c <= 599 ? (int)c : 400;
        *why = *end == ' ' ? end + 1 : end;
    } else {
        return 0;
    }
    switch (*code) {
    case 411: *phrase = "Length Required"; break;
    case 413: *phrase = "Content Too Large"; break;
    case 414: *phrase = "URI Too Long"; break;
    case 417: *phrase = "Expectation Failed"; break;
    case 431: *phrase = "Request Header Fields Too Large"; break;
    case 501: *phrase = "Not Implemented"; break;
    case 503: *phrase = "Service Unavailable"; break;
    case 505: *phrase = "HTTP Version Not Supported"; break;
    default: *phrase = "Bad Request"; break;
    }
    return 1;
}
