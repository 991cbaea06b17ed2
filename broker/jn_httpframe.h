/*
 * jn_httpframe: a framing guard in front of libevent's evhttp, so that junction, not evhttp,
 * answers every request evhttp would refuse with its own HTML page (issue 16).
 *
 * evhttp 2.1 answers some bad requests itself (413 for a body over its max_body_size, 400 for a
 * request line or header it cannot parse or headers over max_headers_size, 400/413 for a broken
 * chunked body, 417 for an unknown Expect, 501 for an unknown method) with
 * "<HTML><HEAD><TITLE>400 Bad Request..." and gives the program no hook (2.1 has no error
 * callback, and a server request is not the program's until it is complete). So every
 * connection's bytes pass through a filter bufferevent first (jn_httpframe_bev), which reads
 * HTTP/1.1 framing the way evhttp does, but stricter, and hands evhttp only requests it will
 * take: the whole head at once when it is complete and well-formed, then the body as it comes
 * (Content-Length counted, chunked read chunk by chunk).
 *
 * A request the guard refuses never reaches evhttp as sent. In its place evhttp gets a request
 * it can take, and the handler answers it with jn_httpframe_refusal() in the channel's own JSON
 * error form and closes the connection; what else the peer sends is discarded. Refused in the
 * head, that request is "GET / HTTP/1.1" carrying the refusal in a header of ours
 * (JN_HTTPFRAME_HEADER: "413 body of 2000000 bytes is over the limit of 1048576 bytes"; a
 * client that sends that header itself is refused, 400). Refused inside a chunked body (whose
 * head evhttp already has), the body is ended with a last chunk and the guard remembers the
 * request's number, which jn_httpframe_refusal matches. So the answer stays in order after
 * answers to requests pipelined before it, and evhttp closes the connection after writing it.
 *
 * Refused (status, and the reason in the answer):
 * - 400: request line not METHOD SP target SP HTTP/x.y; target not evhttp-parsable or with
 *   control bytes; header line without a token name and ':' (also space before ':'); obsolete
 *   line folding; NUL, bare CR or another control byte in the head; Content-Length not digits,
 *   given twice, or beside Transfer-Encoding; Transfer-Encoding twice; HEAD/TRACE with a body;
 *   a chunk size line not hex digits (extensions included), a chunk not followed by CRLF.
 * - 413: Content-Length, or the chunks so far, over max_body (before any of the body is read).
 * - 414: the request line alone over max_head; 431: request line and headers (and trailers)
 *   over max_head.
 * - 417: Expect other than 100-continue on an HTTP/1.1 request with a body.
 * - 411: a chunked body where the handler asked for none (no_chunked).
 * - 501: a method evhttp does not know, CONNECT, a Transfer-Encoding other than chunked.
 * - 505: a version other than HTTP/1.0 or HTTP/1.1.
 * Leading empty lines before a request line are dropped (RFC 9112 2.2).
 *
 * Keep evhttp's own limits above the guard's (JN_HTTPFRAME_SLACK), so that they never apply.
 *
 * Loop thread only (the filter runs inside the connection's bufferevent).
 */
#ifndef JN_HTTPFRAME_H
#define JN_HTTPFRAME_H

#include <event2/bufferevent.h>
#include <stddef.h>

struct evbuffer;
struct evbuffer_cb_entry;
struct evhttp_request;

/* The header that carries a refusal to the handler. */
#define JN_HTTPFRAME_HEADER "Junction-Refused"
/* Give evhttp limits at least this much above the guard's (its header count includes ours). */
#define JN_HTTPFRAME_SLACK 4096

/* One connection's state: jn_httpframe_attach (or, for fuzz targets, jn_httpframe_init and
 * then jn_httpframe_filter). Private fields below the limits. */
struct jn_httpframe {
    unsigned long long max_body; /* bytes */
    size_t max_head;             /* request line + headers (+ trailers), bytes with line ends */
    struct evbuffer *in;         /* jn_httpframe_attach: the bufferevent's input */
    struct evbuffer *hold;       /* what arrived and was not passed yet */
    struct evbuffer *tmp;
    struct evbuffer_cb_entry *cbent;
    int busy;                    /* inside our own input callback */
    int st;
    unsigned long long left;     /* body or chunk bytes still to pass */
    unsigned long long body;     /* chunked: body bytes so far */
    size_t head;                 /* head (and trailer) bytes of this request so far */
    size_t held;                 /* head bytes validated but not yet passed */
    size_t scan;                 /* where to look for the next line end (from held) */
    unsigned char bodyless, http11, chunked, expect_other;
    unsigned char n_cl, n_te;
    unsigned long long cl;
    unsigned char no_chunked;    /* set after attach: chunked bodies are refused 411 */
    unsigned long long n_heads;  /* request heads passed to evhttp (refusals included) */
    unsigned long long n_seen;   /* requests the handler has seen (jn_httpframe_refusal) */
    unsigned long long refuse_at; /* the number of the refused request, 0: none */
    int code;
    char why[240];
};

void jn_httpframe_init(struct jn_httpframe *f, unsigned long long max_body, size_t max_head);

/*
 * Puts the guard on bev (evhttp's bufferevent for one connection, from its bevcb: a socket or
 * OpenSSL bufferevent) with these limits: a callback on its input takes what each read added
 * and gives evhttp only what may pass. 0, or -1 when out of memory (nothing attached). f must
 * stay until jn_httpframe_detach, which must come before bev is freed or f is reused (e.g. in
 * evhttp's close callback). Idempotent; a detached f may be attached again.
 */
int jn_httpframe_attach(struct jn_httpframe *f, struct bufferevent *bev,
                        unsigned long long max_body, size_t max_head);
void jn_httpframe_detach(struct jn_httpframe *f);

/*
 * The filter itself (a bufferevent_filter_cb; ctx is the struct jn_httpframe), for fuzz
 * targets: moves what may pass from src to dst; BEV_OK when it moved or produced anything,
 * BEV_NEED_MORE otherwise, BEV_ERROR when src is not f's (a stale call).
 */
enum bufferevent_filter_result jn_httpframe_filter(struct evbuffer *src, struct evbuffer *dst,
                                                   ev_ssize_t dst_limit,
                                                   enum bufferevent_flush_mode mode, void *ctx);

/*
 * In the handler, first, for every request: 1 when req is a refusal of the guard, with *code,
 * *phrase (the reason phrase, static) and *why (borrowed from f or req) to answer with
 * "Connection: close"; else 0. f is the connection's guard: with it, a refusal inside a chunked
 * body is known too (its request reaches the handler with the body cut short: never take it);
 * NULL (a handler that cannot find it): only refusals in the head, so set f->no_chunked.
 */
int jn_httpframe_refusal(struct jn_httpframe *f, struct evhttp_request *req, int *code,
                         const char **phrase, const char **why);

#endif
