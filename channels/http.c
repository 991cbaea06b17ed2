/*
 * http channel: IN is an HTTP server on libevent's evhttp (POST body -> one message, answered
 * 202 once the broker has committed it); OUT is in http_out.c.
 *
 * The evhttp server reads a whole request and calls us once. We hand the body to jn_ingest()
 * and answer when the commit stage calls back. If the client goes away first, the
 * connection's close callback forgets the ticket, so we never touch a freed request.
 *
 * Every connection's bytes pass the framing guard first (broker/jn_httpframe.h): a body over
 * max_message, headers over max_headers, a request line or header evhttp could not parse, a
 * broken chunked body... are answered here in our JSON error form (413, 431, 400, ...), never
 * with libevent's HTML pages. evhttp's own limits sit above the guard's so that they never apply.
 *
 * Hostile peers (modelled on nginx's worker_connections and client_header/body_timeout):
 * - max_connections: the engine's listener (jn_listener) binds the socket and evhttp accepts
 *   on it (evhttp_bind_listener: libevent 2.1 has no public call that hands evhttp an accepted
 *   socket). evhttp_set_bevcb tells us of every accept and we report it to the listener. Past
 *   the limit HTTP_REFUSE_SLOTS more are still taken and marked: their first request is
 *   answered 503 (junction's JSON error, Retry-After, Connection: close) and they close; past
 *   those the listener pauses (JN_LISTENER_WAIT) and peers wait in the kernel's backlog. The
 *   listener also rests on EMFILE. A slot of a pool made at start holds each connection, so
 *   accepting one never allocates on our side and cannot fail half-way.
 *   net.max_connections_per_ip is checked at the hook below, where the connection's socket is
 *   known; a peer over it is answered 503 the same way.
 * - rate_limit is the broker's (jn_rate.h): a message it refuses comes back as JN_ELIMIT and is
 *   answered 429 with Retry-After.
 * - request_timeout: evhttp's timeout only closes connections that are *idle*; a slowloris that
 *   sends a byte a second never is. Each connection has a deadline timer, armed when it opens
 *   and again after each answer, cleared when a whole request has arrived: a peer that has not
 *   finished its request by then is disconnected.
 * - evhttp gives no hook with the connection at accept time. The bevcb only sees the event
 *   base, so it makes the bufferevent itself and, on the same loop turn (before any byte of the
 *   connection can be read), finds the connection as the bufferevent's callback argument, which
 *   evhttp sets to its evhttp_connection (libevent 2.0 to 2.2; we check that it points back to
 *   the bufferevent). From then on the connection's one close callback both forgets its
 *   pending requests and frees its slot.
 *
 * TLS (tls.cert): the bevcb makes an OpenSSL bufferevent in accepting state from the channel's
 * server context (jn_listener_tls_bev) and evhttp drives the handshake as it reads; allowed_peers
 * is checked inside the handshake (jn_tls.c). A connection that closes before its handshake has
 * finished is logged with OpenSSL's reason. A request over TLS with a client certificate gets a
 * tls-peer header (jn_tls_peer_id); a tls-peer header the client sent itself is always dropped.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "http_int.h"
#include "jn_buf.h"
#include "jn_httpframe.h"
#include "jn_mem.h"
#include "jn_time.h"

/* Connections past max_connections still taken, so each is answered 503 before it closes;
 * past these the listener pauses and peers wait in the kernel's backlog. */
#define HTTP_REFUSE_SLOTS 32

static const char *const http_sign_schemes[] = {"standard-webhooks", NULL};

static const struct jn_opt http_sign_opts[] = {
    JN_OPT_ENUM("scheme", "standard-webhooks", http_sign_schemes, 0, struct http_sign_conf,
                scheme, "The signature scheme: Standard Webhooks (webhook-id, webhook-timestamp, "
                "webhook-signature)."),
    JN_OPT_STR("secret", NULL, JN_OPT_SECRET, struct http_sign_conf, secret,
               "The signing secret, whsec_<base64 of 24 to 64 bytes> (the receiver's)."),
    JN_OPT_END,
};

static const struct jn_opt http_respond_opts[] = {
    JN_OPT_STR("from", NULL, 0, struct http_respond_conf, from,
               "The OUT channel whose answer is the caller's: its status, headers and body, once "
               "its delivery of the message is final (a route from this channel must feed it)."),
    JN_OPT_DURATION("timeout", "30s", 100, 3600000LL, 0, struct http_respond_conf, timeout,
                    "How long the caller waits; then 504 with the message id (the message stays "
                    "accepted and is delivered as usual)."),
    JN_OPT_STRLIST("response_via", NULL, 0, struct http_respond_conf, response_via,
                   "Services (names under `services:`) the answer goes through before it is "
                   "returned, as a message: payload = body, headers = the answer's plus "
                   "http-status; off the loop. One that fails or drops it: 502 naming it."),
    JN_OPT_END,
};

static const struct jn_opt http_opts[] = {
    JN_OPT_STR("listen", "127.0.0.1:8080", JN_OPT_IN, struct http_conf, listen,
               "Address and port to listen on, host:port."),
    JN_OPT_STR("path", "/ingest", JN_OPT_IN, struct http_conf, path,
               "The one path that accepts POST; others answer 404."),
    JN_OPT_SIZE("max_message", "1MiB", 1, 1LL << 32, JN_OPT_IN, struct http_conf, max_message,
                "Largest body accepted; larger ones are answered 413 before they are read "
                "(Content-Length, or the chunks so far)."),
    JN_OPT_SIZE("max_headers", "64KiB", 1024, 1LL << 20, JN_OPT_IN, struct http_conf,
                max_headers,
                "Largest request line + headers (line ends included; trailers count too); "
                "more is answered 431 (a request line alone over it: 414)."),
    JN_OPT_DURATION("read_timeout", "30s", 1000, 3600000LL, JN_OPT_IN, struct http_conf,
                    read_timeout,
                    "A connection that sends or reads nothing for this long is closed (whole "
                    "seconds)."),
    JN_OPT_DURATION("request_timeout", "30s", 100, 3600000LL, JN_OPT_IN, struct http_conf,
                    request_timeout,
                    "A request's headers and body must have arrived this long after the "
                    "connection opened or the previous answer was sent; a slower sender is "
                    "disconnected. Raise it with max_message for large bodies on slow links."),
    JN_OPT_INT("max_connections", "1024", 1, 65536, JN_OPT_IN, struct http_conf,
               max_connections,
               "Open connections at most; more wait in the listen backlog until one closes. "
               "net.max_connections, when set, is the same setting."),
    JN_OPT_SUB("net", jn_net_opts, struct jn_net_conf, JN_OPT_IN, struct http_conf, net,
               "Listener options shared with the other listening channels (docs/channels.md)."),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct http_conf, tls,
               "TLS (docs/security.md). IN: tls.cert and tls.key make the server https; "
               "tls.verify_peer: true requires client certificates (mutual TLS). OUT: used for "
               "https:// urls (ca, a client cert, server_name)."),
    JN_OPT_SUBLIST("auth", jn_auth_opts, struct jn_auth_conf, JN_OPT_IN, struct http_conf, auth,
                   "Inbound authentication (docs/security.md): a list of methods, any one "
                   "suffices; a request none accepts is answered 401 (403: a verified identity "
                   "not allowed) and never reaches the journal. Empty: no authentication."),
    JN_OPT_SUB("respond", http_respond_opts, struct http_respond_conf, JN_OPT_IN,
               struct http_conf, respond,
               "Request-reply (docs/channels.md): hold each request until the message's delivery "
               "to OUT channel `from` is final and answer with what that destination answered."),
    JN_OPT_STR("url", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct http_conf, url,
               "Where to send, http://host[:port]/path[?query] or https://..."),
    JN_OPT_STR("method", "POST", JN_OPT_OUT, struct http_conf, method, "POST or PUT."),
    JN_OPT_STRMAP("headers", JN_OPT_OUT | JN_OPT_RELOADABLE, struct http_conf, headers,
                  "Extra request headers, name: template ({id}, {channel}, {header.NAME}...)."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT, struct http_conf, timeout,
                    "Per request; a timeout counts as a failed attempt (retried)."),
    JN_OPT_STR("sign_secret", NULL, JN_OPT_OUT | JN_OPT_SECRET, struct http_conf, sign_secret,
               "When set, each request carries X-Junction-Signature: t=<unix time>,v1=<hex "
               "HMAC-SHA256 of \"<t>.\" + body> (docs/channels.md)."),
    JN_OPT_SUB("sign", http_sign_opts, struct http_sign_conf, JN_OPT_OUT, struct http_conf, sign,
               "Standard Webhooks signatures (docs/security.md): each request carries "
               "webhook-id (the message id, the same on every retry), webhook-timestamp and "
               "webhook-signature; alongside sign_secret's X-Junction-Signature if both are set."),
    JN_OPT_END,
};

/* One request waiting for the commit stage. */
struct pending {
    struct pending *prev, *next;
    struct http_in *in;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct jn_ticket *ticket;
    char *webhook_id;                /* accepted by auth hmac: forgotten if not taken */
    struct event *wait;              /* respond: accepted, waiting for the answer (timeout) */
    char id[JN_ID_LEN + 1];          /* respond: the message's id, once accepted */
};

enum conn_state {
    CONN_FREE = 0, /* in the free list */
    CONN_NEW,      /* accepted; we hold a reference on bev until the hook runs */
    CONN_OPEN,     /* hooked: evcon known, close callback set, in the hash */
};

/* One accepted connection: a slot of the pool. */
struct conn {
    struct http_in *in;
    struct conn *next;               /* free list, or hash chain when open */
    struct bufferevent *bev;         /* made by our bevcb */
    struct evhttp_connection *evcon; /* once open */
    struct event *ev;                /* the hook (once, active), then the request deadline */
    struct jn_listener_ip *ip;       /* the listener's per-IP ticket, once open */
    enum conn_state state;
    const char *refuse;              /* over a connection limit: its first request gets a 503
                                      * with this reason, then the connection closes */
    struct jn_httpframe frame;       /* the framing guard on bev (jn_httpframe.h) */
};

struct http_in {
    struct jn_channel *ch;
    struct evhttp *http;
    struct jn_listener *lst;  /* its evconnlistener is owned by http once bound */
    struct jn_tls *tls;       /* server context with tls.cert, or NULL */
    struct jn_auth *auth;     /* the auth: methods, or NULL */
    long long auth_win_ms;    /* the current 10 s window of auth refusal log lines */
    unsigned auth_win_lines;  /* lines logged in it */
    unsigned long long auth_unshown; /* refusals not logged since the last line */
    int bound;                /* evhttp_bind_listener done */
    struct pending *pend;     /* doubly linked */
    struct conn *conns;       /* the pool: max_connections slots */
    struct conn *free;
    struct conn **hash;       /* open connections by evcon */
    size_t hmask;             /* hash size - 1 (a power of two) */
    size_t nopen;             /* slots in use */
    size_t nslots;            /* the pool's size: the listener's max_connections */
    struct timeval deadline;  /* request_timeout */
    time_t date_sec;          /* the second date is of (0: none yet) */
    char date[40];            /* the Date header of that second */
    int stopped;
    int freeing;
};


static int http_check(const void *vconf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct http_conf *c = vconf;
    int errs = 0;

    if (dir == JN_DIR_IN && jn_node_get(node, "respond") != NULL && c->respond.from == NULL) {
        const struct jn_node *r = jn_node_get(node, "respond");
        jn_diag_add(d, &r->pos, "http: respond: needs from: <an OUT channel>");
        errs++;
    }
    if (dir == JN_DIR_IN) {
        char host[256];
        int port;
        const struct jn_node *n = jn_node_get(node, "listen");
        if (jn_split_hostport(c->listen, host, sizeof(host), &port, 0) != 0) {
            jn_diag_add(d, n ? &n->pos : &node->pos, "http: listen: '%s' is not host:port, "
                        "expected e.g. 127.0.0.1:8080", c->listen);
            errs++;
        }
        n = jn_node_get(node, "path");
        if (c->path == NULL || c->path[0] != '/') {
            jn_diag_add(d, n ? &n->pos : &node->pos, "http: path: '%s' must start with '/'",
                        c->path ? c->path : "");
            errs++;
        }
        errs += jn_auth_check(&c->auth, jn_tls_on(&c->tls) &&
                                            (c->tls.verify_peer == JN_TLS_VERIFY_TRUE ||
                                             (c->tls.verify_peer == JN_TLS_VERIFY_AUTO &&
                                              c->tls.allowed_peers.n > 0)),
                              node, "auth", "http", d);
        return errs + jn_tls_check(&c->tls, JN_TLS_SERVER, jn_tls_on(&c->tls), node, "tls", "http", d);
    }
    if (c->url != NULL) {
        int https = strncasecmp(c->url, "https://", 8) == 0;
        if ((jn_tls_on(&c->tls) || jn_node_get(node, "tls") != NULL) && !https) {
            jn_diag_add(d, jn_node_pos(node, "tls"), "http: tls: needs an https:// url (url is "
                        "'%s')", c->url);
            errs++;
        } else {
            errs += jn_tls_check(&c->tls, JN_TLS_CLIENT, https, node, "tls", "http", d);
        }
    }
    if (c->method == NULL || (strcmp(c->method, "POST") != 0 && strcmp(c->method, "PUT") != 0)) {
        const struct jn_node *n = jn_node_get(node, "method");
        jn_diag_add(d, n ? &n->pos : &node->pos, "http: method: '%s' is not allowed, expected "
                    "POST or PUT", c->method ? c->method : "");
        errs++;
    }
    if (c->url == NULL) {
        jn_diag_add(d, &node->pos, "http: missing required option 'url' for direction: out "
                    "(e.g. url: http://127.0.0.1:9000/api)");
        return errs + 1;
    }
    return errs + jn_http__out_check(c, node, d);
}

/* The Date header of this second (RFC 7231 IMF-fixdate). evhttp would format one for every
 * answer (gmtime and a printf each time); one per second per channel is enough. */
static const char *http_date(struct http_in *in)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;

    if (now != in->date_sec && gmtime_r(&now, &tm) != NULL) {
        snprintf(in->date, sizeof(in->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        in->date_sec = now;
    }
    return in->date;
}

/* Decimal digits of v into buf (at least 21 bytes), NUL-terminated; returns buf. */
static const char *u64_str(char *buf, uint64_t v)
{
    char tmp[21];
    size_t n = 0, i = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        buf[i++] = tmp[--n];
    }
    buf[i] = '\0';
    return buf;
}

/* The body goes straight into the request's output buffer, and the Date and Content-Length
 * headers are ours: evhttp would add both with a printf each. */
static void reply(struct http_in *in, struct evhttp_request *req, int code, const char *reason,
                  const char *json)
{
    struct evbuffer *body = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char len[21];

    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Date", http_date(in));
    if (evbuffer_add(body, json, strlen(json)) == 0 && evbuffer_add(body, "\n", 1) == 0 &&
        evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        /* A HEAD answer states no length of ours; evhttp leaves it out for HEAD too. */
        evhttp_add_header(h, "Content-Length", u64_str(len, evbuffer_get_length(body)));
    }
    evhttp_send_reply(req, code, reason, NULL);
}

/* JSON string escaping for error texts in bodies. */
static void reply_error(struct http_in *in, struct evhttp_request *req, int code,
                        const char *reason, const char *msg)
{
    struct jn_buf b = JN_BUF_INIT;

    jn_buf_puts(&b, "{\"error\":\"");
    for (const char *p = msg; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            jn_buf_printf(&b, "\\%c", c);
        } else if (c < 0x20) {
            jn_buf_printf(&b, "\\u%04x", c);
        } else {
            jn_buf_putc(&b, (char)c);
        }
    }
    jn_buf_puts(&b, "\"}");
    reply(in, req, code, reason, b.p ? b.p : "{}");
    jn_buf_reset(&b);
}

static const struct http_conf *in_conf(const struct http_in *in)
{
    return in->ch->conf;
}

static void pending_unlink(struct pending *p)
{
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        p->in->pend = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
}

static void pending_free(struct pending *p)
{
    if (p != NULL) {
        if (p->wait != NULL) {
            event_free(p->wait);
        }
        jn_free(p->webhook_id);
        jn_free(p);
    }
}

/* respond: the answer handed back by HTTP OUT (http_out.c's out_hand_reply): status line,
 * header lines, an empty line, the body. */
static void reply_answer(struct http_in *in, struct evhttp_request *req, const char *id,
                         const char *a, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    const char *end = a + len, *p = a, *nl;
    int code = 0;

    while (p < end && *p >= '0' && *p <= '9' && code < 1000) {
        code = code * 10 + (*p++ - '0');
    }
    if (code < 100 || code > 599 || p >= end || *p != '\n') {
        reply_error(in, req, 502, "Bad Gateway", "the destination's answer could not be read");
        return;
    }
    for (p++; p < end && *p != '\n'; p = nl + 1) {
        const char *colon;
        char name[256], value[1024];
        size_t nlen, vlen;
        nl = memchr(p, '\n', (size_t)(end - p));
        colon = nl ? memchr(p, ':', (size_t)(nl - p)) : NULL;
        if (nl == NULL) {
            break;
        }
        if (colon == NULL || colon == p) {
            continue;
        }
        nlen = (size_t)(colon - p);
        colon++;
        while (colon < nl && *colon == ' ') {
            colon++;
        }
        vlen = (size_t)(nl - colon);
        if (nlen < sizeof(name) && vlen < sizeof(value)) {
            memcpy(name, p, nlen);
            name[nlen] = '\0';
            memcpy(value, colon, vlen);
            value[vlen] = '\0';
            evhttp_add_header(h, name, value);
        }
    }
    if (p < end) {
        p++; /* the empty line */
    }
    evhttp_add_header(h, "X-Junction-Id", id);
    evhttp_add_header(h, "Date", http_date(in));
    evbuffer_add(evhttp_request_get_output_buffer(req), p, (size_t)(end - p));
    evhttp_send_reply(req, code, NULL, NULL);
}

/* respond: the message's delivery to respond.from (and every other one) is final. */
static void responded(void *arg, enum jn_send_result r, const char *reason, const void *answer,
                      size_t alen)
{
    struct pending *p = arg;
    struct http_in *in = p->in;
    struct jn_buf b = JN_BUF_INIT;

    pending_unlink(p);
    if (answer != NULL) {
        reply_answer(in, p->req, p->id, answer, alen);
    } else {
        /* No answer came from `from` (another destination decided, or none was reached). */
        evhttp_add_header(evhttp_request_get_output_headers(p->req), "X-Junction-Id", p->id);
        if (r == JN_SEND_OK) {
            jn_buf_printf(&b, "{\"id\":\"%s\",\"status\":\"delivered\"}", p->id);
            reply(in, p->req, 200, "OK", b.p ? b.p : "{}");
        } else {
            jn_buf_printf(&b, "message %s: %s", p->id, reason ? reason : "not delivered");
            if (r == JN_SEND_RETRY) {
                evhttp_add_header(evhttp_request_get_output_headers(p->req), "Retry-After",
                                  "1");
            }
            reply_error(in, p->req, r == JN_SEND_RETRY ? 503 : 502,
                        r == JN_SEND_RETRY ? "Service Unavailable" : "Bad Gateway",
                        b.p ? b.p : "not delivered");
        }
    }
    jn_buf_reset(&b);
    pending_free(p);
}

static void respond_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    struct http_in *in = p->in;
    char msg[200];

    (void)fd;
    (void)what;
    jn_ingest_forget(p->ticket);
    pending_unlink(p);
    snprintf(msg, sizeof(msg), "no answer from '%s' within %lld ms; message %s stays accepted "
             "and is delivered as usual", in_conf(in)->respond.from,
             in_conf(in)->respond.timeout, p->id);
    evhttp_add_header(evhttp_request_get_output_headers(p->req), "X-Junction-Id", p->id);
    reply_error(in, p->req, 504, "Gateway Timeout", msg);
    pending_free(p);
}

static void accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct pending *p = arg;

    if (rc == 0 && in_conf(p->in)->respond.from != NULL) {
        /* Durable; the caller waits for the destination's answer (responded). */
        struct timeval tv = {in_conf(p->in)->respond.timeout / 1000,
                             (in_conf(p->in)->respond.timeout % 1000) * 1000};
        snprintf(p->id, sizeof(p->id), "%s", msg->id);
        p->wait = evtimer_new(p->in->ch->base, respond_timeout, p);
        if (p->wait != NULL && evtimer_add(p->wait, &tv) == 0) {
            return;
        }
        jn_ingest_forget(p->ticket); /* no timer: answer as without respond */
    }
    pending_unlink(p);
    if (rc == 0) {
        char body[JN_ID_LEN + 10];
        size_t il = strnlen(msg->id, JN_ID_LEN);
        memcpy(body, "{\"id\":\"", 7);
        memcpy(body + 7, msg->id, il);
        memcpy(body + 7 + il, "\"}", 3);
        reply(p->in, p->req, 202, "Accepted", body);
    } else {
        /* Not taken: the sender's retry with the same webhook-id is no replay. */
        jn_auth_forget(p->in->auth, p->webhook_id);
        if (rc == JN_ELIMIT) {
            /* The channel's rate_limit (jn_rate.h): 429, with when a token is due. */
            char ra[24];
            snprintf(ra, sizeof(ra), "%lld", p->in->ch->rate_retry_s);
            evhttp_add_header(evhttp_request_get_output_headers(p->req), "Retry-After", ra);
            reply_error(p->in, p->req, 429, "Too Many Requests",
                        err && err->msg[0] ? err->msg : jn_strerror(rc));
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(p->req), "Retry-After", "1");
            reply_error(p->in, p->req, 503, "Service Unavailable",
                        err && err->msg[0] ? err->msg : jn_strerror(rc));
        }
    }
    pending_free(p);
}

/* ---- connection accounting ---- */

static size_t conn_hash(const struct http_in *in, const struct evhttp_connection *evcon)
{
    /* Multiplicative hashing of the address; its low bits are alignment, so skip them. */
    return (size_t)((((uintptr_t)evcon >> 4) * (uint64_t)0x9E3779B97F4A7C15ULL) >> 20) &
           in->hmask;
}

static struct conn *conn_find(const struct http_in *in, const struct evhttp_connection *evcon)
{
    struct conn *c;

    for (c = in->hash[conn_hash(in, evcon)]; c != NULL; c = c->next) {
        if (c->evcon == evcon) {
            return c;
        }
    }
    return NULL;
}

/* Gives the slot back; the connection itself is evhttp's (or already gone). */
static void conn_release(struct conn *c)
{
    struct http_in *in = c->in;

    event_del(c->ev);
    jn_httpframe_detach(&c->frame);
    if (c->state == CONN_OPEN) {
        struct conn **pp = &in->hash[conn_hash(in, c->evcon)];
        while (*pp != c) {
            pp = &(*pp)->next;
        }
        *pp = c->next;
    }
    c->state = CONN_FREE;
    c->refuse = NULL;
    c->bev = NULL;
    c->evcon = NULL;
    c->next = in->free;
    in->free = c;
    in->nopen--;
    if (in->lst) {
        jn_listener_closed(in->lst, c->ip);
    }
    c->ip = NULL;
}

/* The client closed, or evhttp or we dropped the connection: forget its requests still waiting
 * for the commit, and free its slot. evhttp calls this once per connection. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct http_in *in = c->in;
    struct pending *p = in->pend;

    if (in->tls != NULL && !in->freeing) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
        if (ssl != NULL && !SSL_is_init_finished(ssl) && !jn_listener_tls_expired(ssl)) {
            unsigned long e = bufferevent_get_openssl_error(bev);
            char peerbuf[300];
            char *host = NULL;
            ev_uint16_t port = 0;
            while (bufferevent_get_openssl_error(bev) != 0) {
            }
            evhttp_connection_get_peer(evcon, &host, &port);
            snprintf(peerbuf, sizeof(peerbuf), "%s:%u", host ? host : "?", (unsigned)port);
            jn_tls_refused(in->tls, in->ch->log_prefix, peerbuf, ssl, e, NULL);
        }
    }
    while (p) {
        struct pending *next = p->next;
        if (p->evcon == evcon) {
            jn_ch_debug(in->ch, "client closed before the answer; the message stays accepted");
            jn_ingest_forget(p->ticket);
            pending_unlink(p);
            /* Should evhttp see the peer's EOF or a timeout while we hold the request, it
             * detaches it and leaves it to our reply to free (evhttp_connection_incoming_fail);
             * we will not reply, so free it here. 2.1.12 stops reading once a request is
             * complete, so this is a guard; a request still attached is freed by evhttp with
             * the connection. */
            if (evhttp_request_get_connection(p->req) == NULL) {
                evhttp_request_free(p->req);
            }
            pending_free(p);
        }
        p = next;
    }
    conn_release(c);
}

/* An answer has been written: the next request on this keep-alive connection gets its own
 * deadline. */
static void answered(struct evhttp_request *req, void *arg)
{
    struct conn *c = arg;

    if (c->state == CONN_OPEN && c->evcon == evhttp_request_get_connection(req)) {
        event_add(c->ev, &c->in->deadline);
    }
}

/* Runs once on the accept's loop turn (the hook), then as the request deadline. */
static void conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct http_in *in = c->in;
    struct bufferevent *bev = c->bev;
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;

    if (c->state == CONN_OPEN) {
        jn_ch_debug(in->ch, "a request took longer than request_timeout to arrive; closing "
                    "the connection");
        /* Calls conn_closed, which frees the slot. */
        evhttp_connection_free(c->evcon);
        return;
    }
    /* The event callback, not the read one: evhttp clears that while it writes. */
    bufferevent_getcb(bev, NULL, NULL, &eventcb, &cbarg);
    if (eventcb == NULL || cbarg == NULL ||
        evhttp_connection_get_bufferevent((struct evhttp_connection *)cbarg) != bev) {
        /* evhttp gave up on it already (bufferevent_free clears the callbacks). */
        conn_release(c);
        bufferevent_decref(bev);
        return;
    }
    c->evcon = cbarg;
    c->state = CONN_OPEN;
    c->next = in->hash[conn_hash(in, c->evcon)];
    in->hash[conn_hash(in, c->evcon)] = c;
    evhttp_connection_set_closecb(c->evcon, conn_closed, c);
    bufferevent_decref(bev);
    if (((const struct http_conf *)in->ch->conf)->net.max_connections_per_ip > 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getpeername(bufferevent_getfd(bev), (struct sockaddr *)&ss, &sl) == 0 &&
            jn_listener_opened_ip(in->lst, (struct sockaddr *)&ss, &c->ip) == JN_EFULL) {
            /* Over max_connections_per_ip (counted and logged by the listener): its request
             * is answered 503 and the connection closed (handle()). */
            c->refuse = "too many connections from your address (max_connections_per_ip); "
                        "try again later";
        }
    }
    event_add(c->ev, &in->deadline);
}

/* evhttp's bevcb: called for every accepted connection, before evhttp sets it up. */
static struct bufferevent *conn_new(struct event_base *base, void *arg)
{
    struct http_in *in = arg;
    struct bufferevent *bev = in->tls ? jn_listener_lib_tls_bev(in->lst, base)
                                      : bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct conn *c = in->free;
    struct jn_listener_ip *ip;
    int rc;

    if (bev == NULL || c == NULL || ((rc = jn_listener_opened(in->lst, NULL, &ip)) != 0 &&
                                     rc != JN_ELIMIT)) {
        /* Out of libevent memory (evhttp then drops the connection), or a slot missing, which
         * the listener's pause at max_connections + refuse slots rules out; such a connection
         * is answered 503 by handle(). */
        return bev;
    }
    /* Everything the peer sends passes the framing guard (jn_httpframe.h) first. */
    if (jn_httpframe_attach(&c->frame, bev, ((const struct http_conf *)in->ch->conf)->max_message,
                            (size_t)((const struct http_conf *)in->ch->conf)->max_headers) != 0) {
        /* Out of memory: not one of ours, so handle() refuses its request. */
        jn_listener_closed(in->lst, ip);
        return bev;
    }
    /* Past max_connections, in a refuse slot: answered 503 and closed (handle()). */
    c->refuse = rc == JN_ELIMIT ? "too many connections (max_connections); try again later"
                                : NULL;
    in->free = c->next;
    c->next = NULL;
    c->bev = bev;
    c->evcon = NULL;
    c->state = CONN_NEW;
    in->nopen++;
    /* Keep bev alive until the hook has looked at it, even if evhttp frees it first. */
    bufferevent_incref(bev);
    event_active(c->ev, EV_TIMEOUT, 1);
    return bev;
}

/* ---- requests ---- */

int jn_http__build_msg(const char *channel, struct evbuffer *body, const struct evkeyvalq *headers,
                       const char *path, const char *query, const char *peer, struct jn_msg **out)
{
    size_t len = evbuffer_get_length(body);
    unsigned char *data = jn_malloc(len + 1);
    const struct evkeyval *kv;
    struct jn_msg *m;

    *out = NULL;
    if (data == NULL) {
        return JN_ENOMEM;
    }
    if (len && evbuffer_copyout(body, data, len) != (ev_ssize_t)len) {
        jn_free(data);
        return JN_ENOMEM;
    }
    m = jn_msg_new_take(channel, data, len);
    if (m == NULL) {
        return JN_ENOMEM;
    }
    for (kv = headers->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (jn_msg_header_add(m, kv->key, kv->value) != 0) {
            goto nomem;
        }
    }
    if (jn_msg_header_set(m, "http-path", path ? path : "") != 0 ||
        (query && jn_msg_header_set(m, "http-query", query) != 0) ||
        (peer && jn_msg_header_set(m, "http-peer", peer) != 0)) {
        goto nomem;
    }
    *out = m;
    return 0;
nomem:
    jn_msg_unref(&m);
    return JN_ENOMEM;
}

static void reply_busy(struct http_in *in, struct evhttp_request *req, const char *why)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply_error(in, req, 503, "Service Unavailable", why);
}

/* Over max_connections or max_connections_per_ip: 503, then close. */
static void reply_refused(struct http_in *in, struct evhttp_request *req, const char *why)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    reply_busy(in, req, why);
}

/* A 503 after auth accepted the request: an hmac webhook-id is forgotten again. */
static void busy_forget(struct http_in *in, struct evhttp_request *req,
                        const struct jn_auth_result *ares)
{
    if (in->auth != NULL && ares->method == JN_AUTH_HMAC) {
        jn_auth_forget(in->auth, evhttp_find_header(evhttp_request_get_input_headers(req),
                                                    "webhook-id"));
    }
    reply_busy(in, req, "out of memory");
}

/*
 * Checks the request against the channel's auth: methods. Returns 1 with *res filled when one
 * accepts; else counts and logs the refusal (at most 20 lines per 10 s; the next line says how
 * many were not shown), answers 401 (with WWW-Authenticate) or 403 and returns 0.
 */
static int authorize(struct http_in *in, struct evhttp_request *req, SSL *ssl,
                     const char *peer_id, const char *peer, struct jn_auth_result *res)
{
    const struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    struct jn_auth_req r = {
        .authorization = evhttp_find_header(h, "Authorization"),
        .webhook_id = evhttp_find_header(h, "webhook-id"),
        .webhook_timestamp = evhttp_find_header(h, "webhook-timestamp"),
        .webhook_signature = evhttp_find_header(h, "webhook-signature"),
        .len = evbuffer_get_length(body),
        .peer_cert = cert != NULL && SSL_get_verify_result(ssl) == X509_V_OK ? cert : NULL,
        .peer_id = peer_id,
        .now_s = (int64_t)time(NULL),
    };
    long long now_ms = jn_mono_ms();
    char why[300];

    if (r.webhook_id || r.webhook_timestamp || r.webhook_signature) {
        r.body = r.len ? (const void *)evbuffer_pullup(body, -1) : (const void *)"";
    }
    if (jn_auth_verify(in->auth, &r, res) == 0) {
        return 1;
    }
    in->ch->n_auth_failed[res->method]++;
    if (now_ms - in->auth_win_ms >= 10000) {
        in->auth_win_ms = now_ms;
        in->auth_win_lines = 0;
    }
    if (in->auth_win_lines++ < 20) {
        jn_ch_warn(in->ch, "peer %s: refused %d (auth %s): %s%s", peer, res->status,
                   jn_auth_method_name(res->method), res->reason,
                   in->auth_unshown ? " (and earlier refusals not shown)" : "");
        in->auth_unshown = 0;
    } else {
        in->auth_unshown++;
    }
    snprintf(why, sizeof(why), "%s: %s", res->status == 403 ? "forbidden" : "unauthorized",
             res->reason);
    if (res->status == 403) {
        reply_error(in, req, 403, "Forbidden", why);
        return 0;
    }
    if (res->challenges & JN_AUTH_CHALLENGE_BEARER) {
        evhttp_add_header(oh, "WWW-Authenticate", res->bearer_invalid
                              ? "Bearer realm=\"junction\", error=\"invalid_token\""
                              : "Bearer realm=\"junction\"");
    }
    if (res->challenges & JN_AUTH_CHALLENGE_BASIC) {
        evhttp_add_header(oh, "WWW-Authenticate", "Basic realm=\"junction\", charset=\"UTF-8\"");
    }
    reply_error(in, req, 401, "Unauthorized", why);
    return 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct http_in *in = arg;
    struct jn_channel *ch = in->ch;
    const struct http_conf *c = ch->conf;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri);
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *conn = conn_find(in, evcon);
    struct jn_msg *m;
    struct pending *p;
    char why[512], peerbuf[300], id[JN_TLS_PEER_ID_MAX];
    char *peer = NULL;
    ev_uint16_t port = 0;
    SSL *ssl = NULL;
    int have_id = 0;
    struct jn_auth_result ares;

    if (conn == NULL) {
        /* Not one of our connections (conn_new could not take it): no close callback would
         * guard a pending request, so refuse and close. */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_busy(in, req, "too many connections");
        return;
    }
    if (conn->refuse != NULL) {
        reply_refused(in, req, conn->refuse);
        return;
    }
    {
        /* The framing guard refused what the peer sent (jn_httpframe.h); never journaled. */
        int code;
        const char *phrase, *fwhy;
        if (jn_httpframe_refusal(&conn->frame, req, &code, &phrase, &fwhy)) {
            event_del(conn->ev);
            jn_ch_debug(ch, "refused %d: %s", code, fwhy);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
            reply_error(in, req, code, phrase, fwhy);
            return;
        }
    }
    /* The request is complete: no deadline while we answer; answered() sets the next one. */
    event_del(conn->ev);
    evhttp_request_set_on_complete_cb(req, answered, conn);
    if (path == NULL || strcmp(path, c->path) != 0) {
        snprintf(why, sizeof(why), "no such path: %.300s, expected POST %s", path ? path : "",
                 c->path);
        reply_error(in, req, 404, "Not Found", why);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        snprintf(why, sizeof(why), "method not allowed on %s, expected POST", c->path);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_error(in, req, 405, "Method Not Allowed", why);
        return;
    }
    if (in->stopped) {
        reply_busy(in, req, "broker is stopping");
        return;
    }
    evhttp_connection_get_peer(evcon, &peer, &port);
    snprintf(peerbuf, sizeof(peerbuf), "%s:%u", peer ? peer : "?", (unsigned)port);
    if (in->tls != NULL) {
        ssl = bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(evcon));
        have_id = jn_tls_peer_id(ssl, id, sizeof(id));
    }
    if (in->auth != NULL && !authorize(in, req, ssl, have_id ? id : NULL, peerbuf, &ares)) {
        return;
    }
    p = jn_calloc(1, sizeof(*p));
    if (p == NULL || jn_http__build_msg(ch->name, evhttp_request_get_input_buffer(req),
                                        evhttp_request_get_input_headers(req), path,
                                        evhttp_uri_get_query(uri), peerbuf, &m) != 0) {
        jn_free(p);
        busy_forget(in, req, &ares);
        return;
    }
    /* tls-peer and auth-user are ours to say: never the client's own headers. The
     * credentials themselves stay out of the journal. */
    jn_msg_header_del(m, "tls-peer");
    if (in->auth != NULL) {
        jn_msg_header_del(m, "auth-user");
        jn_msg_header_del(m, "Authorization");
    }
    if ((have_id && jn_msg_header_set(m, "tls-peer", id) != 0) ||
        (in->auth != NULL && jn_msg_header_set(m, "auth-user", ares.user) != 0) ||
        (ares.method == JN_AUTH_HMAC && (p->webhook_id = jn_strdup(evhttp_find_header(
             evhttp_request_get_input_headers(req), "webhook-id"))) == NULL)) {
        jn_msg_unref(&m);
        pending_free(p);
        busy_forget(in, req, &ares);
        return;
    }
    p->in = in;
    p->req = req;
    p->evcon = evcon;
    p->next = in->pend;
    if (in->pend) {
        in->pend->prev = p;
    }
    in->pend = p;
    if (in_conf(in)->respond.from != NULL) {
        p->ticket = jn_ingest_outcome(ch, m, accepted, responded, p);
        jn_ingest_reply_from(p->ticket, in_conf(in)->respond.from);
        jn_ingest_reply_via(p->ticket, &in_conf(in)->respond.response_via);
    } else {
        p->ticket = jn_ingest(ch, m, accepted, p);
    }
    if (p->ticket == NULL) {
        pending_unlink(p);
        pending_free(p);
        busy_forget(in, req, &ares);
    }
}

/* ---- life cycle ---- */

static int http_init(struct jn_channel *ch, struct jn_err *err)
{
    struct http_in *in;

    in = jn_calloc(1, sizeof(*in));
    if (in == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    in->ch = ch;
    ch->state = in;
    return 0;
}

/* The connection pool and its events; on failure destroy() frees what was made. */
static int pool_new(struct http_in *in, struct jn_err *err)
{
    size_t n = (size_t)jn_listener_cap(in->lst), nb = 16;

    while (nb < n) {
        nb <<= 1;
    }
    in->conns = jn_calloc(n, sizeof(*in->conns));
    in->hash = jn_calloc(nb, sizeof(*in->hash));
    if (in->conns == NULL || in->hash == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory for %zu connections", n);
    }
    in->hmask = nb - 1;
    in->nslots = n;
    for (size_t i = n; i-- > 0;) {
        struct conn *cn = &in->conns[i];
        cn->in = in;
        cn->ev = evtimer_new(in->ch->base, conn_timer, cn);
        if (cn->ev == NULL) {
            return jn_err_set(err, JN_ENOMEM, "out of memory for %zu connections", n);
        }
        cn->next = in->free;
        in->free = cn;
    }
    return 0;
}

int jn_http__in_start_on(struct jn_channel *ch, struct jn_listener *lst, struct jn_err *err)
{
    struct http_in *in = ch->state;
    const struct http_conf *c = ch->conf;
    int rc;

    in->lst = lst;
    in->deadline.tv_sec = (time_t)(c->request_timeout / 1000);
    in->deadline.tv_usec = (suseconds_t)(c->request_timeout % 1000 * 1000);
    in->http = evhttp_new(ch->base);
    if (in->http == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot create the HTTP server");
    }
    rc = pool_new(in, err);
    if (rc != 0) {
        return rc;
    }
    /* Above the framing guard's limits, so that evhttp never answers with its own page. */
    evhttp_set_max_body_size(in->http, (ev_ssize_t)(c->max_message + JN_HTTPFRAME_SLACK));
    evhttp_set_max_headers_size(in->http, (ev_ssize_t)(c->max_headers + JN_HTTPFRAME_SLACK));
    evhttp_set_timeout(in->http, (int)((c->read_timeout + 999) / 1000));
    /* Every method reaches our handler, so the answer is our 405 with a reason. */
    evhttp_set_allowed_methods(in->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                             EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(in->http, handle, in);
    evhttp_set_bevcb(in->http, conn_new, in);
    if (evhttp_bind_listener(in->http, jn_listener_lev(lst)) == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot attach the listener");
    }
    in->bound = 1;
    return 0;
}

size_t jn_http__in_open(const struct jn_channel *ch)
{
    const struct http_in *in = ch->state;

    return in ? in->nopen : 0;
}

static int http_start(struct jn_channel *ch, struct jn_err *err)
{
    const struct http_conf *c = ch->conf;
    struct jn_listener_conf lc = {c->listen, ch->log_prefix, &c->net, c->max_connections,
                                  JN_LISTENER_WAIT, NULL, NULL, NULL, NULL,
                                  ch->n_conn_refused, HTTP_REFUSE_SLOTS};
    struct http_in *in = ch->state;
    struct jn_listener *lst;
    struct rlimit rl;
    int rc;

    if (jn_tls_on(&c->tls)) {
        char what[300];
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        in->tls = jn_tls_new(&c->tls, JN_TLS_SERVER, what, err);
        if (in->tls == NULL) {
            return err->code;
        }
        lc.tls = in->tls;
    }
    if (c->auth.n > 0) {
        in->auth = jn_auth_new(&c->auth, ch->log_prefix, err);
        if (in->auth == NULL) {
            return err->code;
        }
        ch->auth_methods = 1u << JN_AUTH_NONE;
        for (size_t i = 0; i < c->auth.n; i++) {
            ch->auth_methods |= 1u << ((const struct jn_auth_conf *)c->auth.v)[i].type;
        }
    }
    lst = jn_listener_new(ch->base, &lc, err);
    if (lst == NULL) {
        return err->code;
    }
    ch->listens = 1;
    rc = jn_http__in_start_on(ch, lst, err);
    if (rc != 0) {
        return rc;
    }
    /* Past the open-file limit accept() fails before max_connections is reached. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (unsigned long long)jn_listener_max(lst) + 64 > (unsigned long long)rl.rlim_cur) {
        jn_ch_warn(ch, "max_connections %lld is close to the open-file limit %llu (ulimit -n)",
                   jn_listener_max(lst), (unsigned long long)rl.rlim_cur);
    }
    jn_ch_info(ch, "listening on %s://%s%s%s%s", in->tls ? "https" : "http", c->listen, c->path,
               in->tls && c->tls.verify_peer == JN_TLS_VERIFY_TRUE
                   ? " (client certificates required)" : "",
               in->auth ? " (auth required)" : "");
    return 0;
}

static void http_stop(struct jn_channel *ch)
{
    struct http_in *in = ch->state;

    /* Keep the listener so requests in flight are answered; new POSTs get 503. */
    in->stopped = 1;
}

static void http_destroy(struct jn_channel *ch)
{
    struct http_in *in = ch->state;

    if (in == NULL) {
        return;
    }
    in->freeing = 1;
    /* The counts end with us: the listener goes first, so the closes below report nothing. */
    if (in->lst && !in->bound) {
        evconnlistener_free(jn_listener_lev(in->lst));
    }
    jn_listener_free(in->lst);
    in->lst = NULL;
    while (in->pend) {
        struct pending *p = in->pend;
        jn_ingest_forget(p->ticket);
        in->pend = p->next;
        pending_free(p);
    }
    if (in->http) {
        /* Frees the listener, then every connection: conn_closed frees the open slots. */
        evhttp_free(in->http);
    }
    if (in->conns) {
        for (size_t i = 0; i < in->nslots; i++) {
            struct conn *c = &in->conns[i];
            if (c->state == CONN_NEW) {
                /* Accepted this very loop turn: evhttp has freed its side; drop ours. */
                struct bufferevent *bev = c->bev;
                conn_release(c);
                bufferevent_decref(bev);
            }
            if (c->ev) {
                event_free(c->ev);
            }
        }
    }
    jn_free(in->conns);
    jn_free(in->hash);
    jn_tls_free(in->tls);
    jn_auth_free(in->auth);
    jn_free(in);
    ch->state = NULL;
}

static const struct jn_in_def http_in_def = {
    .init = http_init,
    .start = http_start,
    .stop = http_stop,
    .destroy = http_destroy,
};

static const struct jn_out_def http_out_def = {
    .init = jn_http__out_init,
    .start = jn_http__out_start,
    .send = jn_http__out_send,
    .stop = jn_http__out_stop,
    .destroy = jn_http__out_destroy,
};

const struct jn_channel_def jn_channel_http = {
    .name = "http",
    .desc = "HTTP: IN is a server taking POST bodies, OUT posts to a URL",
    .opts = http_opts,
    .conf_size = sizeof(struct http_conf),
    .check = http_check,
    .in = &http_in_def,
    .out = &http_out_def,
};
