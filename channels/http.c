/*
 * http channel: IN is an HTTP server on libevent's evhttp (POST body -> one message, answered
 * 202 once the broker has committed it); OUT is in http_out.c.
 *
 * The evhttp server reads a whole request (bounded by max_message; libevent answers 413 itself
 * when the body or its Content-Length is larger) and calls us once. We hand the body to
 * jn_ingest() and answer when the commit stage calls back. If the client goes away first, the
 * connection's close callback forgets the ticket, so we never touch a freed request.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http_int.h"
#include "jn_buf.h"
#include "jn_mem.h"

static const struct jn_opt http_opts[] = {
    JN_OPT_STR("listen", "127.0.0.1:8080", JN_OPT_IN, struct http_conf, listen,
               "Address and port to listen on, host:port."),
    JN_OPT_STR("path", "/ingest", JN_OPT_IN, struct http_conf, path,
               "The one path that accepts POST; others answer 404."),
    JN_OPT_SIZE("max_message", "1MiB", 1, 1LL << 32, JN_OPT_IN, struct http_conf, max_message,
                "Largest body accepted; larger ones are answered 413."),
    JN_OPT_DURATION("read_timeout", "30s", 1000, 3600000LL, JN_OPT_IN, struct http_conf,
                    read_timeout,
                    "A connection idle or sending this slowly is closed (whole seconds)."),
    JN_OPT_STR("url", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct http_conf, url,
               "Where to send, http://host[:port]/path[?query] or https://..."),
    JN_OPT_STR("method", "POST", JN_OPT_OUT, struct http_conf, method, "POST or PUT."),
    JN_OPT_STRMAP("headers", JN_OPT_OUT, struct http_conf, headers,
                  "Extra request headers, name: template ({id}, {channel}, {header.NAME}...)."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT, struct http_conf, timeout,
                    "Per request; a timeout counts as a failed attempt (retried)."),
    JN_OPT_STR("sign_secret", NULL, JN_OPT_OUT | JN_OPT_SECRET, struct http_conf, sign_secret,
               "When set, each request carries X-Junction-Signature: t=<unix time>,v1=<hex "
               "HMAC-SHA256 of \"<t>.\" + body> (docs/channels.md)."),
    JN_OPT_END,
};

/* One request waiting for the commit stage. */
struct pending {
    struct pending *prev, *next;
    struct http_in *in;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct jn_ticket *ticket;
};

struct http_in {
    struct jn_channel *ch;
    struct evhttp *http;
    struct pending *pend; /* doubly linked */
    int stopped;
};

/* host:port -> parts; 0 or JN_EINVAL. */
static int split_listen(const char *s, char *host, size_t hlen, int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long p;
    size_t n;

    if (colon == NULL || colon == s) {
        return JN_EINVAL;
    }
    n = (size_t)(colon - s);
    if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n >= hlen) {
        return JN_EINVAL;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        return JN_EINVAL;
    }
    *port = (int)p;
    return 0;
}

static int http_check(const void *vconf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct http_conf *c = vconf;
    int errs = 0;

    if (dir == JN_DIR_IN) {
        char host[256];
        int port;
        const struct jn_node *n = jn_node_get(node, "listen");
        if (split_listen(c->listen, host, sizeof(host), &port) != 0) {
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
        return errs;
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

static void reply(struct evhttp_request *req, int code, const char *reason, const char *json)
{
    struct evbuffer *body = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Type", "application/json");
    if (body) {
        evbuffer_add(body, json, strlen(json));
        evbuffer_add(body, "\n", 1);
    }
    evhttp_send_reply(req, code, reason, body);
    if (body) {
        evbuffer_free(body);
    }
}

/* JSON string escaping for error texts in bodies. */
static void reply_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
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
    reply(req, code, reason, b.p ? b.p : "{}");
    jn_buf_reset(&b);
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

static void accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct pending *p = arg;

    pending_unlink(p);
    if (rc == 0) {
        char body[64];
        snprintf(body, sizeof(body), "{\"id\":\"%s\"}", msg->id);
        reply(p->req, 202, "Accepted", body);
    } else {
        evhttp_add_header(evhttp_request_get_output_headers(p->req), "Retry-After", "1");
        reply_error(p->req, 503, "Service Unavailable",
                    err && err->msg[0] ? err->msg : jn_strerror(rc));
    }
    jn_free(p);
}

/* The client closed its connection: forget its requests still waiting for the commit. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct http_in *in = arg;
    struct pending *p = in->pend;

    while (p) {
        struct pending *next = p->next;
        if (p->evcon == evcon) {
            jn_ch_debug(in->ch, "client closed before the answer; the message stays accepted");
            jn_ingest_forget(p->ticket);
            pending_unlink(p);
            jn_free(p);
        }
        p = next;
    }
}

static int add_headers(struct jn_msg *m, struct evhttp_request *req)
{
    struct evkeyvalq *hs = evhttp_request_get_input_headers(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct evkeyval *kv;
    const char *q;
    char *peer = NULL;
    ev_uint16_t port = 0;
    char peerbuf[300];

    for (kv = hs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (jn_msg_header_add(m, kv->key, kv->value) != 0) {
            return JN_ENOMEM;
        }
    }
    if (jn_msg_header_set(m, "http-path", evhttp_uri_get_path(uri)) != 0) {
        return JN_ENOMEM;
    }
    q = evhttp_uri_get_query(uri);
    if (q && jn_msg_header_set(m, "http-query", q) != 0) {
        return JN_ENOMEM;
    }
    if (evcon) {
        evhttp_connection_get_peer(evcon, &peer, &port);
        snprintf(peerbuf, sizeof(peerbuf), "%s:%u", peer ? peer : "?", (unsigned)port);
        if (jn_msg_header_set(m, "http-peer", peerbuf) != 0) {
            return JN_ENOMEM;
        }
    }
    return 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct http_in *in = arg;
    struct jn_channel *ch = in->ch;
    const struct http_conf *c = ch->conf;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    struct jn_msg *m;
    struct pending *p;
    unsigned char *data;
    char why[512];

    if (path == NULL || strcmp(path, c->path) != 0) {
        snprintf(why, sizeof(why), "no such path: %.300s, expected POST %s", path ? path : "",
                 c->path);
        reply_error(req, 404, "Not Found", why);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        snprintf(why, sizeof(why), "method not allowed on %s, expected POST", c->path);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_error(req, 405, "Method Not Allowed", why);
        return;
    }
    if (in->stopped) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_error(req, 503, "Service Unavailable", "broker is stopping");
        return;
    }
    data = jn_malloc(len + 1);
    if (data == NULL || (len && evbuffer_copyout(body, data, len) != (ev_ssize_t)len)) {
        jn_free(data);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_error(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    m = jn_msg_new_take(ch->name, data, len);
    p = jn_calloc(1, sizeof(*p));
    if (m == NULL || p == NULL || add_headers(m, req) != 0) {
        jn_msg_unref(&m);
        jn_free(p);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_error(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    p->in = in;
    p->req = req;
    p->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(p->evcon, conn_closed, in);
    p->next = in->pend;
    if (in->pend) {
        in->pend->prev = p;
    }
    in->pend = p;
    p->ticket = jn_ingest(ch, m, accepted, p);
    if (p->ticket == NULL) {
        pending_unlink(p);
        jn_free(p);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_error(req, 503, "Service Unavailable", "out of memory");
    }
}

static int http_init(struct jn_channel *ch, struct jn_err *err)
{
    struct http_in *in;

    if (ch->dir == JN_DIR_OUT) {
        return jn_http__out_init(ch, err);
    }
    in = jn_calloc(1, sizeof(*in));
    if (in == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    in->ch = ch;
    ch->state = in;
    return 0;
}

static int http_start(struct jn_channel *ch, struct jn_err *err)
{
    struct http_in *in = ch->state;
    const struct http_conf *c = ch->conf;
    struct evhttp_bound_socket *bs;
    char host[256];
    int port, one = 1;

    if (ch->dir == JN_DIR_OUT) {
        return jn_http__out_start(ch, err);
    }
    if (split_listen(c->listen, host, sizeof(host), &port) != 0) {
        return jn_err_set(err, JN_EINVAL, "listen: '%s' is not host:port", c->listen);
    }
    in->http = evhttp_new(ch->base);
    if (in->http == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot create the HTTP server");
    }
    evhttp_set_max_body_size(in->http, (ev_ssize_t)c->max_message);
    evhttp_set_max_headers_size(in->http, 64 * 1024);
    evhttp_set_timeout(in->http, (int)((c->read_timeout + 999) / 1000));
    /* Every method reaches our handler, so the answer is our 405 with a reason. */
    evhttp_set_allowed_methods(in->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                             EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(in->http, handle, in);
    bs = evhttp_bind_socket_with_handle(in->http, host, (ev_uint16_t)port);
    if (bs == NULL) {
        return jn_err_set(err, JN_EIO, "cannot listen on %s: %s", c->listen,
                          evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    /* Accepted sockets inherit TCP_NODELAY on Linux: no Nagle/delayed-ACK stalls (stack.md §6). */
    if (setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one,
                   sizeof(one)) != 0) {
        jn_ch_warn(ch, "cannot set TCP_NODELAY on %s", c->listen);
    }
    jn_ch_info(ch, "listening on http://%s%s", c->listen, c->path);
    return 0;
}

static void http_send(struct jn_channel *ch, struct jn_delivery *d)
{
    jn_http__out_send(ch, d);
}

static void http_stop(struct jn_channel *ch)
{
    struct http_in *in = ch->state;

    if (ch->dir == JN_DIR_OUT) {
        jn_http__out_stop(ch);
        return;
    }
    /* Keep the listener so requests in flight are answered; new POSTs get 503. */
    in->stopped = 1;
}

static void http_destroy(struct jn_channel *ch)
{
    struct http_in *in = ch->state;

    if (ch->dir == JN_DIR_OUT) {
        jn_http__out_destroy(ch);
        return;
    }
    if (in == NULL) {
        return;
    }
    while (in->pend) {
        struct pending *p = in->pend;
        jn_ingest_forget(p->ticket);
        in->pend = p->next;
        jn_free(p);
    }
    if (in->http) {
        evhttp_free(in->http);
    }
    jn_free(in);
    ch->state = NULL;
}

const struct jn_channel_def jn_channel_http = {
    .name = "http",
    .desc = "HTTP: IN is a server taking POST bodies, OUT posts to a URL",
    .dirs = JN_DIR_IN | JN_DIR_OUT,
    .opts = http_opts,
    .conf_size = sizeof(struct http_conf),
    .check = http_check,
    .init = http_init,
    .start = http_start,
    .send = http_send,
    .stop = http_stop,
    .destroy = http_destroy,
};
