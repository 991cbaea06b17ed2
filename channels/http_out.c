/*
 * http_out: the HTTP OUT client of the http channel (POST or PUT each message to one URL).
 *
 * Why libevent's evhttp client and not libcurl: evhttp runs on the broker's own event loop, so a
 * send is just more events on ch->base, with no extra thread, no hand-off back to the loop and
 * no new dependency (libevent already serves HTTP IN). It keeps connections alive between
 * requests, applies a timeout to every request (evhttp_connection_set_timeout_tv), and speaks
 * TLS through bufferevent_openssl with our own SSL_CTX, so peer verification, SNI and the host
 * name check stay in our hands. What we give up is HTTP/2, proxies and following redirects
 * (which we would refuse anyway: a moved endpoint is for a person to confirm).
 *
 * Shape: a pool of up to ch->concurrency slots, each with at most one keep-alive connection
 * (created lazily) and at most one request in flight. evhttp could queue several requests on
 * one connection, but they would only wait behind each other (no pipelining), so each delivery
 * gets a connection of its own instead.
 *
 * The one rule everything here serves: every delivery the core hands to send() is finished with
 * exactly one jn_delivery_done(). A slot's `d` is the single owner of the delivery: whoever
 * takes it out (and sets it to NULL) finishes it, and nobody touches it afterwards. libevent
 * callbacks that fire once the slot is empty (after destroy, or after a synchronous failure)
 * find d == NULL and do nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/keyvalq_struct.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "http_int.h"
#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_time.h"

/* Same prefix as the rest of the http check in http.c. */
#define OUT_WHAT "http"
/* The start of a 4xx body goes into the reason, the log line and the dead letter. */
#define OUT_BODY_MAX 200
/* A peer's response headers; bigger is an attack or a broken peer, not a real answer. */
#define OUT_MAX_HEADERS (64 * 1024)
#define OUT_REASON_MAX 512
/* evhttp's connect timeout when none is set (HTTP_CONNECT_TIMEOUT in libevent's http.c). */
#define OUT_CONNECT_TIMEOUT_MS 45000

/* The most of a response body handed back to a waiting caller (respond: from:); a larger one
 * is cut there and the reply says so (X-Junction-Truncated). */
#define OUT_REPLY_MAX (4u << 20)

struct out_state;

/* One pool slot: a connection (or none yet) and the delivery in flight on it. */
struct out_conn {
    struct out_state *st;
    struct evhttp_connection *evcon; /* NULL until first used, or after being retired */
    struct jn_delivery *d;           /* in flight; NULL when idle */
    int err;                         /* 1 + enum evhttp_request_error, 0 if none came */
    int err_errno;
    int closed;                      /* TLS: closed or failed; the next one gets a fresh SSL */
    int tls_up;                      /* TLS: this send's handshake finished (info callback) */
    int tls_alert;                   /* TLS: the last alert the server sent (1 + its value) */
    long long start_ms;              /* when the request was started (monotonic) */
    unsigned gen;                    /* counts sends, to tell ours from a later one */
    size_t body_len;
    char body[OUT_BODY_MAX];         /* the start of the response body */
    int want_reply;                  /* an IN channel waits for this answer (respond: from:) */
    struct jn_buf reply;             /* then the whole body, up to OUT_REPLY_MAX */
};

struct out_url {
    int https;
    int host_is_ip;
    unsigned short port;
    char *host;     /* to connect to and to check the certificate against: no brackets */
    char *host_hdr; /* the Host header: "[::1]:8080", "example.com" */
    char *target;   /* "/path?query" */
};

struct out_state {
    struct jn_channel *ch;
    const struct http_conf *conf;
    struct out_url url;
    enum evhttp_cmd_type method;
    struct timeval timeout;
    int has_timeout;
    struct jn_tls *tls; /* https: the client context (tls: options, jn_tls.h) */
    struct evdns_base *dns; /* only for a host name; an IP literal needs no resolver */
    struct out_conn *conns;
    size_t nconns;
    /* Idle slots, used as a stack: the most recently used connection, the one most likely
     * still open, goes out first. */
    struct out_conn **idle;
    size_t nidle;
    /* Connections to free from the loop, never from inside one of their own callbacks. */
    struct evhttp_connection **grave;
    size_t ngrave, capgrave;
    struct event *reaper;
    int stopping;
};

/* ---- URL ---- */

static void out_url_free(struct out_url *u)
{
    jn_free(u->host);
    jn_free(u->host_hdr);
    jn_free(u->target);
    memset(u, 0, sizeof(*u));
}

static int is_ip_literal(const char *host)
{
    unsigned char a[16];

    return evutil_inet_pton(AF_INET, host, a) == 1 || evutil_inet_pton(AF_INET6, host, a) == 1;
}

/*
 * Parses an OUT url into u (which the caller frees with out_url_free, also on error).
 * Returns 0, JN_EINVAL with the reason in err, or JN_ENOMEM.
 */
static int out_url_parse(const char *url, struct out_url *u, struct jn_err *err)
{
    struct evhttp_uri *uri;
    const char *scheme, *host, *path, *query;
    int port, rc = 0;
    size_t hl;
    struct jn_buf b = JN_BUF_INIT;

    memset(u, 0, sizeof(*u));
    uri = evhttp_uri_parse(url);
    if (uri == NULL) {
        return jn_err_set(err, JN_EINVAL, "'%s' is not a valid URL", url);
    }
    scheme = evhttp_uri_get_scheme(uri);
    host = evhttp_uri_get_host(uri);
    port = evhttp_uri_get_port(uri);
    path = evhttp_uri_get_path(uri);
    query = evhttp_uri_get_query(uri);
    if (scheme == NULL || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        rc = jn_err_set(err, JN_EINVAL, "'%s': the scheme must be http or https", url);
        goto out;
    }
    if (host == NULL || host[0] == '\0') {
        rc = jn_err_set(err, JN_EINVAL, "'%s' has no host", url);
        goto out;
    }
    /* Credentials in a URL end up in logs (this message would be the first), so the URL is
     * not quoted here; put them in an Authorization header instead. */
    if (evhttp_uri_get_userinfo(uri) != NULL) {
        rc = jn_err_set(err, JN_EINVAL,
                        "user:password@ is not supported; set an Authorization header");
        goto out;
    }
    if (evhttp_uri_get_fragment(uri) != NULL) {
        rc = jn_err_set(err, JN_EINVAL, "'%s': a #fragment is never sent to the server", url);
        goto out;
    }
    if (port == 0 || port > 65535) {
        rc = jn_err_set(err, JN_EINVAL, "'%s': port %d is out of range 1..65535", url, port);
        goto out;
    }
    u->https = strcasecmp(scheme, "https") == 0;
    u->port = (unsigned short)(port > 0 ? port : (u->https ? 443 : 80));
    /* evhttp keeps the brackets of an IPv6 literal; connect() and certificates want none. */
    hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        u->host = jn_strndup(host + 1, hl - 2);
    } else {
        u->host = jn_strdup(host);
    }
    if (u->host == NULL) {
        rc = JN_ENOMEM;
        goto out;
    }
    u->host_is_ip = is_ip_literal(u->host);
    if (port > 0 && port != (u->https ? 443 : 80)) {
        rc = jn_buf_printf(&b, "%s:%d", host, port);
    } else {
        rc = jn_buf_puts(&b, host);
    }
    if (rc != 0 || (u->host_hdr = jn_buf_steal(&b)) == NULL) {
        rc = JN_ENOMEM;
        goto out;
    }
    rc = jn_buf_puts(&b, path != NULL && path[0] != '\0' ? path : "/");
    if (rc == 0 && query != NULL) {
        rc = jn_buf_printf(&b, "?%s", query);
    }
    if (rc != 0 || (u->target = jn_buf_steal(&b)) == NULL) {
        rc = JN_ENOMEM;
        goto out;
    }
out:
    jn_buf_reset(&b);
    evhttp_uri_free(uri);
    return rc;
}

/* RFC 9110 token: what a header name may be made of. */
static int is_token(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch) != NULL) {
            return 0;
        }
    }
    return 1;
}

/* ---- check ---- */

static const struct jn_pos *pos_of(const struct jn_node *map, const char *key)
{
    const struct jn_node *n = jn_node_get(map, key);

    if (n != NULL) {
        return &n->pos;
    }
    return map != NULL ? &map->pos : NULL;
}

int jn_http__out_check(const struct http_conf *c, const struct jn_node *node, struct jn_diag *d)
{
    int nerr = 0;
    struct jn_err err;
    const struct jn_node *hmap = jn_node_get(node, "headers");

    if (c->url == NULL || c->url[0] == '\0') {
        jn_diag_add(d, pos_of(node, "url"), OUT_WHAT ": url: required for direction: out");
        nerr++;
    } else {
        struct out_url u;
        int rc = out_url_parse(c->url, &u, &err);
        out_url_free(&u);
        if (rc == JN_ENOMEM) {
            jn_diag_add(d, pos_of(node, "url"), OUT_WHAT ": url: out of memory");
            nerr++;
        } else if (rc != 0) {
            jn_diag_add(d, pos_of(node, "url"), OUT_WHAT ": url: %s", err.msg);
            nerr++;
        }
    }
    if (jn_node_get(node, "sign") != NULL) {
        unsigned char key[64];
        if (c->sign.secret == NULL || jn_auth_sw_key(c->sign.secret, key) < 16) {
            jn_diag_add(d, pos_of(node, "sign"), OUT_WHAT ": sign: secret: %s",
                        c->sign.secret == NULL ? "required, whsec_<base64>"
                                               : "not whsec_<base64 of 16 to 64 bytes>");
            nerr++;
        }
        OPENSSL_cleanse(key, sizeof(key));
    }
    /* method is checked in http.c, next to its option. */
    for (size_t i = 0; i < c->headers.n; i++) {
        const char *name = c->headers.k[i];
        const struct jn_pos *pos = hmap != NULL ? pos_of(hmap, name) : pos_of(node, "headers");
        if (!is_token(name)) {
            jn_diag_add(d, pos, OUT_WHAT ": headers: '%s' is not a valid header name", name);
            nerr++;
            continue;
        }
        /* These frame the body on a keep-alive connection: a wrong value desynchronises every
         * request after it, so they are always ours. */
        if (strcasecmp(name, "Content-Length") == 0 ||
            strcasecmp(name, "Transfer-Encoding") == 0) {
            jn_diag_add(d, pos, OUT_WHAT ": headers: %s is set by junction and can't be changed",
                        name);
            nerr++;
            continue;
        }
        jn_err_clear(&err);
        if (jn_template_check(c->headers.v[i] != NULL ? c->headers.v[i] : "", &err) != 0) {
            jn_diag_add(d, pos, OUT_WHAT ": headers: %s: %s", name, err.msg);
            nerr++;
        }
    }
    return nerr;
}

/* ---- connections ---- */

static void out_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct out_state *st = arg;

    (void)fd;
    (void)what;
    while (st->ngrave > 0) {
        evhttp_connection_free(st->grave[--st->ngrave]);
    }
}

/* Takes a slot's connection away and frees it from the loop later: we may be inside one of its
 * callbacks (a done() that re-enters send), where freeing it would pull the floor out from
 * under libevent. */
static void out_retire(struct out_conn *c)
{
    struct out_state *st = c->st;

    if (c->evcon == NULL || st->reaper == NULL) {
        return;
    }
    if (st->ngrave == st->capgrave) {
        size_t cap = st->capgrave ? st->capgrave * 2 : 8;
        void *p = jn_realloc(st->grave, cap * sizeof(*st->grave));
        if (p == NULL) {
            /* Keep using the connection rather than free it at a bad moment: evhttp
             * reconnects it (for TLS with the old SSL object, which 2.1.12 resets). */
            return;
        }
        st->grave = p;
        st->capgrave = cap;
    }
    st->grave[st->ngrave++] = c->evcon;
    c->evcon = NULL;
    c->closed = 0;
    event_active(st->reaper, EV_TIMEOUT, 1);
}

static void out_close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct out_conn *c = arg;

    (void)evcon;
    c->closed = 1;
}

/* OpenSSL's info callback on our SSLs: evhttp resets an SSL before it tells us of a failure,
 * so what the handshake got to is noted as it happens. */
static void out_tls_info_cb(const SSL *ssl, int where, int ret)
{
    struct out_conn *c = SSL_get_app_data(ssl);

    if (c == NULL) {
        return;
    }
    if (where & SSL_CB_HANDSHAKE_DONE) {
        c->tls_up = 1;
    }
    if ((where & SSL_CB_READ_ALERT) && (ret & 0xff) != SSL_AD_CLOSE_NOTIFY) {
        c->tls_alert = 1 + (ret & 0xff);
    }
}

static struct evhttp_connection *out_conn_new(struct out_conn *c, struct jn_err *err)
{
    struct out_state *st = c->st;
    struct event_base *base = st->ch->base;
    struct evhttp_connection *evcon;

    if (st->url.https) {
        struct bufferevent *bev;
        /* SNI and the name checked: tls.server_name, else the url's host (an IP literal is
         * checked as an IP and sends no SNI). */
        SSL *ssl = jn_tls_client_ssl(st->tls, st->url.host);
        if (ssl == NULL) {
            jn_err_set(err, JN_ENOMEM, "cannot set up TLS for %s", st->url.host);
            return NULL;
        }
        SSL_set_app_data(ssl, c);
        SSL_set_info_callback(ssl, out_tls_info_cb);
        /* Deferred callbacks, as in libevent's own https-client sample: evhttp is then
         * called from the loop, not from inside the TLS bufferevent's read/write path. */
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (bev == NULL) {
            SSL_free(ssl);
            jn_err_set(err, JN_ENOMEM, "cannot create a TLS bufferevent");
            return NULL;
        }
        /* Many servers close without close_notify. A truncation could only cut a body that
         * is delimited by the close, and of a body we only keep the start for a reason. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        evcon = evhttp_connection_base_bufferevent_new(base, st->dns, bev, st->url.host,
                                                       st->url.port);
        if (evcon == NULL) {
            bufferevent_free(bev);
        }
    } else {
        evcon = evhttp_connection_base_new(base, st->dns, st->url.host, st->url.port);
    }
    if (evcon == NULL) {
        jn_err_set(err, JN_ENOMEM, "cannot create a connection to %s", st->url.host_hdr);
        return NULL;
    }
    /* evhttp applies it to the connect and to every read and write: a peer silent for that
     * long fails the request (EVREQ_HTTP_TIMEOUT); one that keeps sending bytes does not. */
    if (st->has_timeout) {
        evhttp_connection_set_timeout_tv(evcon, &st->timeout);
    }
    evhttp_connection_set_max_headers_size(evcon, OUT_MAX_HEADERS);
    /* We do the retrying (the core's backoff); evhttp's own retries would hide failures. */
    evhttp_connection_set_retries(evcon, 0);
    if (st->url.https) {
        evhttp_connection_set_closecb(evcon, out_close_cb, c);
    }
    return evcon;
}

/* ---- results ---- */

static const char *evreq_error_name(int e)
{
    switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF: return "connection closed";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid response header";
    case EVREQ_HTTP_BUFFER_ERROR: return "read or write error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "request cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "response too large";
    default: return "request failed";
    }
}

/* errno is only worth quoting when it is a network error: evhttp resets the socket (and so
 * errno) on some paths before telling us. */
static int is_net_errno(int e)
{
    return e == ECONNREFUSED || e == ECONNRESET || e == ECONNABORTED || e == ETIMEDOUT ||
           e == EHOSTUNREACH || e == ENETUNREACH || e == EPIPE || e == EADDRNOTAVAIL;
}

/* Why a TLS connection failed, if it was TLS that failed: 1 and the text in out, or 0. */
static int tls_reason(struct out_conn *c, char *out, size_t n)
{
    struct bufferevent *bev;
    SSL *ssl;
    unsigned long e;

    out[0] = '\0';
    if (!c->st->url.https || c->evcon == NULL) {
        return 0;
    }
    bev = evhttp_connection_get_bufferevent(c->evcon);
    ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (ssl == NULL) {
        return 0;
    }
    e = bufferevent_get_openssl_error(bev);
    jn_tls_reason(ssl, e, out, n);
    while (bufferevent_get_openssl_error(bev) != 0) {
        /* drain, so the next connection's failure is reported as its own */
    }
    return out[0] != '\0';
}

/* Whether this send's TLS handshake finished before it failed. */
static int tls_done(const struct out_conn *c)
{
    return c->st->url.https && c->tls_up;
}

/* Printable text for the start of a response body: one line, no control characters. */
static void body_text(const struct out_conn *c, char *out, size_t n)
{
    size_t j = 0;

    for (size_t i = 0; i < c->body_len && j + 1 < n; i++) {
        unsigned char ch = (unsigned char)c->body[i];
        out[j++] = (ch < 32 || ch == 127) ? ' ' : (char)ch;
    }
    while (j > 0 && out[j - 1] == ' ') {
        j--;
    }
    out[j] = '\0';
}

static enum jn_send_result out_map(struct out_conn *c, struct evhttp_request *req, int saved_errno,
                                   char *reason, size_t n)
{
    struct out_state *st = c->st;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    const char *line = req != NULL ? evhttp_request_get_response_code_line(req) : NULL;
    const char *sp;
    char extra[300];

    if (line == NULL) {
        line = "";
    }
    sp = line[0] != '\0' ? " " : "";
    if (code == 0) {
        /* No response: refused, reset, timed out, TLS failed. All worth another try. */
        struct bufferevent *bev = c->evcon ? evhttp_connection_get_bufferevent(c->evcon) : NULL;
        int dns_err = bev != NULL ? bufferevent_socket_get_dns_error(bev) : 0;
        long long took = jn_mono_ms() - c->start_ms;
        long long limit = st->has_timeout ? st->conf->timeout : OUT_CONNECT_TIMEOUT_MS;

        if (dns_err != 0) {
            snprintf(reason, n, "%s: cannot resolve: %s", st->url.host_hdr,
                     evutil_gai_strerror(dns_err));
        } else if (tls_reason(c, extra, sizeof(extra))) {
            snprintf(reason, n, "%s: %s", st->url.host_hdr, extra);
        } else if (st->url.https && c->tls_alert) {
            snprintf(reason, n, "%s: TLS: the server refused with alert \"%s\"",
                     st->url.host_hdr, SSL_alert_desc_string_long(c->tls_alert - 1));
        } else if (c->err != 0) {
            int e = c->err - 1;
            if (e == EVREQ_HTTP_TIMEOUT) {
                snprintf(reason, n, "%s: no answer within %lld ms", st->url.host_hdr, limit);
            } else if (is_net_errno(c->err_errno)) {
                snprintf(reason, n, "%s: %s (%s)", st->url.host_hdr, evreq_error_name(e),
                         strerror(c->err_errno));
            } else {
                snprintf(reason, n, "%s: %s", st->url.host_hdr, evreq_error_name(e));
            }
        } else if (took >= limit) {
            snprintf(reason, n, "%s: cannot connect within %lld ms", st->url.host_hdr, limit);
        } else if (tls_done(c)) {
            /* TLS 1.3: the client's side of the handshake ends before the server has checked
             * our certificate, so its refusal comes as a close (or reset) after it. */
            snprintf(reason, n, "%s: TLS: connection closed by the server after the handshake, "
                     "before an answer (does it require a client certificate? see tls.cert)",
                     st->url.host_hdr);
        } else if (saved_errno == ENOTCONN) {
            /* evhttp takes this path (no error kind) for ECONNREFUSED or a connect timeout,
             * and has shut down the never-connected socket on the way, leaving ENOTCONN. */
            snprintf(reason, n, "%s: cannot connect: connection refused", st->url.host_hdr);
        } else if (saved_errno != 0) {
            snprintf(reason, n, "%s: cannot connect: %s", st->url.host_hdr, strerror(saved_errno));
        } else {
            snprintf(reason, n, "%s: cannot connect", st->url.host_hdr);
        }
        return JN_SEND_RETRY;
    }
    if (code >= 200 && code <= 299) {
        reason[0] = '\0';
        return JN_SEND_OK;
    }
    if (code == 408 || code == 429 || (code >= 500 && code <= 599)) {
        snprintf(reason, n, "HTTP %d%s%s", code, sp, line);
        return JN_SEND_RETRY;
    }
    if (code >= 400 && code <= 499) {
        body_text(c, extra, sizeof(extra));
        snprintf(reason, n, "HTTP %d%s%s%s%s", code, sp, line, extra[0] ? ": " : "", extra);
        return JN_SEND_REJECT;
    }
    if (code >= 300 && code <= 399) {
        const char *loc = evhttp_find_header(evhttp_request_get_input_headers(req), "Location");
        snprintf(reason, n, "HTTP %d%s%s%s%.200s%s: redirects are not followed", code, sp, line,
                 loc ? " (Location: " : "", loc ? loc : "", loc ? ")" : "");
        return JN_SEND_REJECT;
    }
    snprintf(reason, n, "HTTP %d%s%s: unexpected status", code, sp, line);
    return JN_SEND_REJECT;
}

/* Finishes d (the broker logs the outcome). Nothing may touch d (or, as done() may re-enter the
 * channel, anything else) after this. */
static void out_finish(struct jn_delivery *d, enum jn_send_result r, const char *reason)
{
    jn_delivery_done(d, r, r == JN_SEND_OK ? NULL : reason);
}

static void out_error_cb(enum evhttp_request_error e, void *arg)
{
    struct out_conn *c = arg;

    /* evhttp restores errno for us on this path. The request callback (req == NULL) follows
     * and finishes the delivery. */
    c->err_errno = errno;
    c->err = 1 + (int)e;
}

/* Keeps the start of the body for a reject reason and lets evhttp drop the rest, so a large
 * response never sits in memory (and never fails a 2xx on size). */
static void out_chunk_cb(struct evhttp_request *req, void *arg)
{
    struct out_conn *c = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);

    if (c->d != NULL && c->body_len < sizeof(c->body)) {
        ev_ssize_t got = evbuffer_copyout(in, c->body + c->body_len,
                                          sizeof(c->body) - c->body_len);
        if (got > 0) {
            c->body_len += (size_t)got;
        }
    }
    if (c->d != NULL && c->want_reply && c->reply.len <= OUT_REPLY_MAX) {
        size_t n = evbuffer_get_length(in);
        size_t room = OUT_REPLY_MAX + 1 - c->reply.len; /* one past: "truncated" */
        if (n > room) {
            n = room;
        }
        if (n > 0 && jn_buf_reserve(&c->reply, n) == 0) {
            ev_ssize_t got = evbuffer_copyout(in, c->reply.p + c->reply.len, n);
            if (got > 0) {
                c->reply.len += (size_t)got;
            }
        }
    }
}

/* The answer for a caller waiting on this delivery (jn_delivery_reply), in the form HTTP IN's
 * `respond:` reads back (jn_http__reply_parse): the status code on the first line, then the
 * response headers as "Name: value" lines (those of this hop only left out), an empty line and
 * the body. */
static void out_hand_reply(struct out_conn *c, struct evhttp_request *req)
{
    static const char *const hop[] = {"connection", "keep-alive", "transfer-encoding",
                                      "content-length", "date", "server", NULL};
    struct jn_buf b = JN_BUF_INIT;
    struct evkeyval *h;
    int truncated = c->reply.len > OUT_REPLY_MAX;

    jn_buf_printf(&b, "%d\n", evhttp_request_get_response_code(req));
    for (h = evhttp_request_get_input_headers(req)->tqh_first; h != NULL;
         h = h->next.tqe_next) {
        int skip = 0;
        for (size_t i = 0; hop[i] != NULL; i++) {
            skip |= strcasecmp(h->key, hop[i]) == 0;
        }
        if (!skip && strchr(h->key, '\n') == NULL && strchr(h->value, '\n') == NULL) {
            jn_buf_printf(&b, "%s: %s\n", h->key, h->value);
        }
    }
    if (truncated) {
        jn_buf_printf(&b, "X-Junction-Truncated: %u\n", OUT_REPLY_MAX);
    }
    jn_buf_puts(&b, "\n");
    jn_buf_append(&b, c->reply.p ? c->reply.p : "", truncated ? OUT_REPLY_MAX : c->reply.len);
    if (b.p != NULL) {
        jn_delivery_reply(c->d, b.p, b.len);
    }
    jn_buf_reset(&b);
    jn_buf_reset(&c->reply);
}

static void out_request_cb(struct evhttp_request *req, void *arg)
{
    struct out_conn *c = arg;
    struct out_state *st = c->st;
    struct jn_delivery *d = c->d;
    int saved_errno = errno;
    char reason[OUT_REASON_MAX];
    enum jn_send_result r;

    if (d == NULL) {
        /* Already finished (destroy, or a failure before evhttp_make_request returned). */
        return;
    }
    r = out_map(c, req, saved_errno, reason, sizeof(reason));
    if (c->want_reply && req != NULL && evhttp_request_get_response_code(req) != 0) {
        out_hand_reply(c, req);
    }
    jn_buf_reset(&c->reply);
    if (r == JN_SEND_RETRY && (req == NULL || evhttp_request_get_response_code(req) == 0) &&
        st->url.https) {
        c->closed = 1;
    }
    c->d = NULL;
    if (st->stopping) {
        /* Nothing new comes after stop: close instead of keeping the connection warm, so it
         * doesn't hold the loop open. */
        out_retire(c);
    }
    st->idle[st->nidle++] = c;
    out_finish(d, r, reason);
}

static void out_msg_cleanup(const void *data, size_t len, void *arg)
{
    struct jn_msg *m = arg;

    (void)data;
    (void)len;
    jn_msg_unref(&m);
}

/* Adds the request headers; JN_SEND_OK, or the result to finish with (reason filled). */
static enum jn_send_result out_headers(struct out_state *st, struct evhttp_request *req,
                                       const struct jn_msg *m, char *reason, size_t n)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    const char *ctype = jn_msg_header_get(m, "Content-Type");
    char len[32];
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err;

    snprintf(len, sizeof(len), "%zu", m->len);
    if (evhttp_add_header(h, "Host", st->url.host_hdr) != 0 ||
        evhttp_add_header(h, "Content-Length", len) != 0 ||
        evhttp_add_header(h, "X-Junction-Id", m->id) != 0) {
        snprintf(reason, n, "cannot build the request: out of memory");
        return JN_SEND_RETRY;
    }
    /* A Content-Type that can't go on one header line (a message from elsewhere may carry
     * anything) is not passed on: the default is sent instead. */
    if (ctype == NULL || ctype[0] == '\0' || strpbrk(ctype, "\r\n") != NULL) {
        ctype = "application/octet-stream";
    }
    if (evhttp_add_header(h, "Content-Type", ctype) != 0) {
        snprintf(reason, n, "cannot build the request: out of memory");
        return JN_SEND_RETRY;
    }
    for (size_t i = 0; i < st->conf->headers.n; i++) {
        const char *name = st->conf->headers.k[i];
        const char *tmpl = st->conf->headers.v[i] != NULL ? st->conf->headers.v[i] : "";
        const char *v;
        int rc;
        jn_err_clear(&err);
        rc = jn_template_render(tmpl, m, &b, &err);
        if (rc != 0) {
            jn_buf_reset(&b);
            snprintf(reason, n, "header %s: %s", name, err.msg[0] ? err.msg : jn_strerror(rc));
            return rc == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT;
        }
        v = b.p != NULL ? b.p : "";
        /* evhttp would let CR LF + space through (obsolete line folding), which receivers may
         * read as a second header: refuse. This message renders it so on every attempt. */
        if (strpbrk(v, "\r\n") != NULL) {
            jn_buf_reset(&b);
            snprintf(reason, n, "header %s: the rendered value contains CR or LF", name);
            return JN_SEND_REJECT;
        }
        evhttp_remove_header(h, name);
        rc = evhttp_add_header(h, name, v);
        jn_buf_reset(&b);
        if (rc != 0) {
            snprintf(reason, n, "cannot build the request: out of memory");
            return JN_SEND_RETRY;
        }
    }
    if (st->conf->sign_secret != NULL && st->conf->sign_secret[0] != '\0') {
        char sig[128];
        jn_http_sign(st->conf->sign_secret, (long long)time(NULL), m->payload, m->len, sig,
                     sizeof(sig));
        evhttp_remove_header(h, "X-Junction-Signature");
        if (evhttp_add_header(h, "X-Junction-Signature", sig) != 0) {
            snprintf(reason, n, "cannot build the request: out of memory");
            return JN_SEND_RETRY;
        }
    }
    if (st->conf->sign.secret != NULL) {
        /* Standard Webhooks: the id is the message's, so a retry is recognisably the same
         * webhook; the timestamp and signature are of this attempt. */
        unsigned char key[64], mac[32];
        char sig[64], ts[24];
        long long now = (long long)time(NULL);
        long kl = jn_auth_sw_key(st->conf->sign.secret, key);
        int rc = kl > 0 ? jn_auth_sw_mac(key, (size_t)kl, m->id, now, m->payload, m->len, mac)
                        : JN_EINVAL;
        OPENSSL_cleanse(key, sizeof(key));
        if (rc != 0) {
            snprintf(reason, n, "cannot sign the request: %s", jn_strerror(rc));
            return JN_SEND_RETRY;
        }
        jn_auth_sw_header(mac, sig, sizeof(sig));
        snprintf(ts, sizeof(ts), "%lld", now);
        evhttp_remove_header(h, "webhook-id");
        evhttp_remove_header(h, "webhook-timestamp");
        evhttp_remove_header(h, "webhook-signature");
        if (evhttp_add_header(h, "webhook-id", m->id) != 0 ||
            evhttp_add_header(h, "webhook-timestamp", ts) != 0 ||
            evhttp_add_header(h, "webhook-signature", sig) != 0) {
            snprintf(reason, n, "cannot build the request: out of memory");
            return JN_SEND_RETRY;
        }
    }
    return JN_SEND_OK;
}

void jn_http_sign(const char *secret, long long t, const void *body, size_t len, char *out,
                  size_t n)
{
    /* HMAC-SHA256 over "<t>." + body: the time is signed with the body, so a receiver can
     * refuse old replays (docs/channels.md). */
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0, w;
    char ts[32];
    int tl = snprintf(ts, sizeof(ts), "%lld.", t);
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL ||
        !EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) ||
        !EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tl) ||
        !EVP_MAC_update(ctx, body, len) || !EVP_MAC_final(ctx, md, &mdlen, sizeof(md))) {
        mdlen = 0; /* an empty v1 never verifies: the receiver refuses, we do not send unsigned */
    }
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    w = (size_t)snprintf(out, n, "t=%lld,v1=", t);
    for (size_t i = 0; i < mdlen && w + 2 < n; i++) {
        w += (size_t)snprintf(out + w, n - w, "%02x", md[i]);
    }
}

/* Disables Nagle: a request is headers plus body, and over TLS several records; with Nagle
 * and the peer's delayed ACK each one can wait ~40 ms (see stack.md 6). evhttp creates the
 * socket itself, so this is done once it exists; repeating it on a kept-alive socket is one
 * cheap syscall. */
static void out_nodelay(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    int one = 1;

    if (fd >= 0) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

void jn_http__out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct out_state *st = ch->state;
    struct jn_msg *m = jn_delivery_msg(d);
    struct out_conn *c;
    struct evhttp_request *req;
    struct jn_err err;
    char reason[OUT_REASON_MAX];
    enum jn_send_result r;
    unsigned gen;

    if (st->stopping) {
        out_finish(d, JN_SEND_RETRY, "stopping");
        return;
    }
    if (st->nidle == 0) {
        /* The core keeps at most ch->concurrency in flight; this is a safety net. */
        snprintf(reason, sizeof(reason), "all %zu connections are busy", st->nconns);
        out_finish(d, JN_SEND_RETRY, reason);
        return;
    }
    c = st->idle[st->nidle - 1];
    /* A fresh SSL for every TCP connection: 2.1.12 would reconnect with the old SSL object
     * (and that worked when we tried), but an SSL that saw a close or a fatal alert is not
     * documented as reusable, and SNI and the host check belong to the SSL. */
    if (c->closed) {
        out_retire(c);
    }
    if (c->evcon == NULL) {
        jn_err_clear(&err);
        c->evcon = out_conn_new(c, &err);
        if (c->evcon == NULL) {
            out_finish(d, JN_SEND_RETRY, err.msg);
            return;
        }
    }
    req = evhttp_request_new(out_request_cb, c);
    if (req == NULL) {
        out_finish(d, JN_SEND_RETRY, "cannot build the request: out of memory");
        return;
    }
    evhttp_request_set_error_cb(req, out_error_cb);
    evhttp_request_set_chunked_cb(req, out_chunk_cb);
    r = out_headers(st, req, m, reason, sizeof(reason));
    if (r != JN_SEND_OK) {
        evhttp_request_free(req);
        out_finish(d, r, reason);
        return;
    }
    /* Zero-copy: the message is immutable once accepted, and libevent holds our reference
     * until the bytes are written or the request is freed, which may be after done(). */
    if (m->len > 0) {
        struct evbuffer *out = evhttp_request_get_output_buffer(req);
        struct jn_msg *ref = jn_msg_ref(m);
        if (evbuffer_add_reference(out, m->payload, m->len, out_msg_cleanup, ref) != 0) {
            jn_msg_unref(&ref);
            evhttp_request_free(req);
            out_finish(d, JN_SEND_RETRY, "cannot build the request: out of memory");
            return;
        }
    }
    st->nidle--;
    c->d = d;
    c->err = 0;
    c->err_errno = 0;
    c->tls_up = 0;
    c->tls_alert = 0;
    c->body_len = 0;
    c->want_reply = jn_delivery_wants_reply(d);
    jn_buf_reset(&c->reply);
    c->start_ms = jn_mono_ms();
    gen = ++c->gen;
    /* evhttp may call out_request_cb before this returns (a connect that fails at once); it
     * then finishes d itself and empties the slot, and d must not be looked at again. */
    if (evhttp_make_request(c->evcon, req, st->method, st->url.target) != 0) {
        /* req is gone (freed by libevent), and its callback has not run. */
        if (c->d != NULL && c->gen == gen) {
            c->d = NULL;
            if (st->url.https) {
                c->closed = 1;
            }
            st->idle[st->nidle++] = c;
            out_finish(d, JN_SEND_RETRY, "cannot start the request");
        }
        return;
    }
    if (c->d != NULL && c->gen == gen && c->evcon != NULL) {
        out_nodelay(c->evcon);
    }
}

/* ---- life cycle ---- */

static void out_state_free(struct out_state *st)
{
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->nconns; i++) {
        jn_buf_reset(&st->conns[i].reply);
        if (st->conns[i].evcon != NULL) {
            evhttp_connection_free(st->conns[i].evcon);
        }
    }
    if (st->reaper != NULL) {
        out_reap_cb(-1, 0, st);
        event_free(st->reaper);
    }
    if (st->dns != NULL) {
        /* Connections are gone, and with them their lookups: nothing left to fail. */
        evdns_base_free(st->dns, 0);
    }
    jn_tls_free(st->tls);
    out_url_free(&st->url);
    jn_free(st->grave);
    jn_free(st->idle);
    jn_free(st->conns);
    jn_free(st);
}

int jn_http__out_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct http_conf *conf = ch->conf;
    struct out_state *st;
    int rc;

    if (conf->url == NULL) {
        return jn_err_set(err, JN_EINVAL, "url is required for direction: out");
    }
    st = jn_calloc(1, sizeof(*st));
    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    st->conf = conf;
    rc = out_url_parse(conf->url, &st->url, err);
    if (rc != 0) {
        if (rc == JN_ENOMEM) {
            jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        goto fail;
    }
    st->method = (conf->method != NULL && strcasecmp(conf->method, "PUT") == 0)
                     ? EVHTTP_REQ_PUT : EVHTTP_REQ_POST;
    if (conf->timeout > 0) {
        st->has_timeout = 1;
        st->timeout.tv_sec = (time_t)(conf->timeout / 1000);
        st->timeout.tv_usec = (suseconds_t)((conf->timeout % 1000) * 1000);
    }
    st->nconns = ch->concurrency >= 1 ? (size_t)ch->concurrency : 1;
    st->conns = jn_calloc(st->nconns, sizeof(*st->conns));
    st->idle = jn_calloc(st->nconns, sizeof(*st->idle));
    if (st->conns == NULL || st->idle == NULL) {
        rc = jn_err_set(err, JN_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < st->nconns; i++) {
        st->conns[i].st = st;
        /* Reverse, so slot 0 is used first and a quiet channel needs one connection. */
        st->idle[st->nidle++] = &st->conns[st->nconns - 1 - i];
    }
    if (st->url.https) {
        char what[300];
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        st->tls = jn_tls_new(&st->conf->tls, JN_TLS_CLIENT, what, err);
        if (st->tls == NULL) {
            rc = err->code;
            goto fail;
        }
    }
    ch->state = st;
    return 0;
fail:
    out_state_free(st);
    return rc;
}

int jn_http__out_start(struct jn_channel *ch, struct jn_err *err)
{
    struct out_state *st = ch->state;

    st->reaper = event_new(ch->base, -1, 0, out_reap_cb, st);
    if (st->reaper == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (!st->url.host_is_ip) {
        /* Without a dns_base evhttp resolves with a blocking getaddrinfo() on the loop at every
         * (re)connect. DISABLE_WHEN_INACTIVE: an idle resolver must not keep the loop alive. */
        st->dns = evdns_base_new(ch->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                               EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (st->dns == NULL) {
            return jn_err_set(err, JN_EIO, "cannot set up the DNS resolver for %s",
                              st->url.host);
        }
    }
    jn_ch_info(ch, "sending %s %s (concurrency %lld, attempts %lld)", st->conf->method,
               st->conf->url, ch->concurrency, ch->retry.attempts);
    return 0;
}

void jn_http__out_stop(struct jn_channel *ch)
{
    struct out_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopping = 1;
    /* Idle keep-alive connections would hold the loop open; busy ones are closed as their
     * request finishes (out_request_cb). */
    if (st->reaper != NULL) {
        for (size_t i = 0; i < st->nidle; i++) {
            out_retire(st->idle[i]);
        }
    }
}

void jn_http__out_destroy(struct jn_channel *ch)
{
    struct out_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopping = 1;
    /* The core's contract: what is still in flight, we finish with RETRY. Empty each slot
     * before its delivery is finished, so whatever libevent calls back later (freeing a busy
     * connection may run its callbacks) finds nothing to finish. */
    for (size_t i = 0; i < st->nconns; i++) {
        struct out_conn *c = &st->conns[i];
        struct jn_delivery *d = c->d;
        if (d != NULL) {
            c->d = NULL;
            out_finish(d, JN_SEND_RETRY, "stopping");
        }
    }
    ch->state = NULL;
    out_state_free(st);
}
