/*
 * websocket channel: WebSocket (RFC 6455) on libwebsockets. IN listens and answers each
 * message with an ack frame once the broker has it durable; OUT keeps a connection open to
 * one server and counts a delivery when the server acks it (or once written). docs/websocket.md.
 *
 * This file holds the option table, the cross-field check, the def and the helpers both sides
 * use (UTF-8, ws:// urls). The sides are channels/ws_in.c and ws_out.c; both run over a link
 * (channels/ws_link.c: lws on its own service thread); what they share is in ws_int.h.
 *
 * Threads: everything here runs on the broker's loop (the UTF-8 check also on the link thread:
 * it has no state).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>
#include <event2/util.h>
#include <sys/socket.h>

#include "jn_channel.h"
#include "jn_time.h"
#include "ws_int.h"

static const char *const ws_ack_names[] = {"commit", "none", NULL};

static const struct jn_opt ws_opts[] = {
    JN_OPT_STR("listen", "127.0.0.1:8765", JN_OPT_IN, struct ws_conf, l.listen,
               "Address and port to listen on, ip:port (0.0.0.0:8765 for every address)."),
    JN_OPT_STR("path", "/", JN_OPT_IN, struct ws_conf, l.path,
               "The request path a client connects to; a handshake for another path is "
               "refused."),
    JN_OPT_SIZE("max_message", "1MiB", 1, 1LL << 30, JN_OPT_IN, struct ws_conf,
                l.max_message,
                "Largest message (after fragments are joined); a larger one closes the "
                "connection with 1009 and nothing of it is journaled."),
    JN_OPT_INT("max_connections", "1024", 1, 65536, JN_OPT_IN, struct ws_conf,
               l.max_connections,
               "Connections at once; a handshake beyond that is refused."),
    JN_OPT_DURATION("ping_interval", "30s", 0, 3600000LL, JN_OPT_IN, struct ws_conf,
                    l.ping_interval,
                    "A connection idle this long is pinged; one silent for two intervals is "
                    "closed. 0: no pings. Whole seconds (rounded up)."),
    JN_OPT_ENUM("ack", "commit", ws_ack_names, JN_OPT_IN, struct ws_conf, ack,
                "commit: answer each message with a text frame {\"ack\":\"<id>\"} once it is "
                "durable (or {\"nack\":\"<reason>\",\"retry_after\":1} when refused), in the "
                "order the messages came. none: answer nothing."),
    JN_OPT_SUBLIST("auth", jn_auth_opts, struct jn_auth_conf, JN_OPT_IN, struct ws_conf,
                   l.auth,
                   "Authentication of the handshake (docs/websocket.md#auth): bearer, basic "
                   "(the Authorization header) or mtls (the client certificate), any one "
                   "suffices; a connection none accepts is closed with 1008 before any of its "
                   "messages is journaled. Empty: none."),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct ws_conf, tls,
               "IN: tls.cert and tls.key make the listener wss:// (lws builds its context "
               "from the same files); tls.verify_peer: true requires client certificates. "
               "OUT: the client context for wss:// urls (CA, client certificate, "
               "verify_peer, allowed_peers)."),
    JN_OPT_STR("url", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct ws_conf, url,
               "The server to send to: ws://host:port/path or wss://host:port/path."),
    JN_OPT_BOOL("await_ack", "true", JN_OPT_OUT | JN_OPT_RELOADABLE, struct ws_conf, await_ack,
                "true: a delivery counts when the server answers a text frame "
                "{\"ack\":...}; acks are matched to frames in the order they were sent, and "
                "{\"nack\":...} retries. false: a frame written to the socket counts."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT | JN_OPT_RELOADABLE,
                    struct ws_conf, timeout,
                    "How long a message may wait for the connection and its ack; then it is "
                    "retried (and the connection is closed, since later acks would be "
                    "matched to the wrong frames)."),
    JN_OPT_DURATION("reconnect_backoff", "100ms", 1, 3600000LL, JN_OPT_OUT, struct ws_conf,
                    reconnect_backoff,
                    "The first reconnect waits up to this (full jitter); it doubles with "
                    "each failed attempt."),
    JN_OPT_DURATION("reconnect_max_backoff", "30s", 1, 86400000LL, JN_OPT_OUT, struct ws_conf,
                    reconnect_max_backoff, "The cap of the reconnect wait."),
    JN_OPT_END,
};

int jn_ws__url_parse(const char *url, struct ws_url *u)
{
    struct evhttp_uri *uri = url != NULL ? evhttp_uri_parse(url) : NULL;
    const char *scheme, *host, *path, *query;
    int rc = -1;

    memset(u, 0, sizeof(*u));
    if (uri == NULL) {
        return -1;
    }
    scheme = evhttp_uri_get_scheme(uri);
    host = evhttp_uri_get_host(uri);
    path = evhttp_uri_get_path(uri);
    query = evhttp_uri_get_query(uri);
    if (scheme != NULL && host != NULL && host[0] != '\0' &&
        (strcmp(scheme, "ws") == 0 || strcmp(scheme, "wss") == 0) &&
        evhttp_uri_get_fragment(uri) == NULL && strlen(host) < sizeof(u->host)) {
        u->tls = strcmp(scheme, "wss") == 0;
        u->port = evhttp_uri_get_port(uri);
        if (u->port == -1) {
            u->port = u->tls ? 443 : 80;
        }
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
            /* An IPv6 literal: lws wants it without its brackets. */
            snprintf(u->host, sizeof(u->host), "%.*s", (int)strlen(host) - 2, host + 1);
        } else {
            snprintf(u->host, sizeof(u->host), "%s", host);
        }
        snprintf(u->path, sizeof(u->path), "%s%s%s", path && path[0] ? path : "/",
                 query ? "?" : "", query ? query : "");
        rc = u->port >= 1 && u->port <= 65535 ? 0 : -1;
    }
    evhttp_uri_free(uri);
    return rc;
}

/* ---- auth on listeners (ws_int.h) ---- */

int jn_ws__auth_check(const struct jn_sublist *auth, const struct jn_tls_conf *tls,
                      const struct jn_node *node, const char *what, struct jn_diag *d)
{
    int mtls_ok = jn_tls_on(tls) && (tls->verify_peer == JN_TLS_VERIFY_TRUE ||
                                     (tls->verify_peer == JN_TLS_VERIFY_AUTO &&
                                      tls->allowed_peers.n > 0));
    int errs = jn_auth_check(auth, mtls_ok, node, "auth", what, d);

    for (size_t i = 0; i < auth->n; i++) {
        if (((const struct jn_auth_conf *)auth->v)[i].type == JN_AUTH_HMAC) {
            const struct jn_node *n = jn_node_get(node, "auth");
            jn_diag_add(d, n ? &n->pos : &node->pos, "%s: auth: hmac signs an HTTP body and "
                        "a WebSocket handshake has none; use bearer, basic or mtls", what);
            errs++;
        }
    }
    return errs;
}

struct jn_auth *jn_ws__auth_new(struct jn_channel *ch, const struct jn_sublist *list,
                                struct jn_err *err)
{
    struct jn_auth *a;

    jn_err_clear(err);
    if (list->n == 0) {
        return NULL;
    }
    a = jn_auth_new(list, ch->log_prefix, err);
    if (a != NULL) {
        ch->auth_methods = 1u << JN_AUTH_NONE;
        for (size_t i = 0; i < list->n; i++) {
            ch->auth_methods |= 1u << ((const struct jn_auth_conf *)list->v)[i].type;
        }
    }
    return a;
}

int jn_ws__authorize(struct jn_channel *ch, struct jn_auth *a, struct ws_link *l,
                     const struct ws_ev *e, struct ws_auth_log *lg, char *user)
{
    struct jn_auth_req r = {
        .authorization = e->authorization[0] ? e->authorization : NULL,
        .body = "",
        .peer_cert = e->peer_cert,
        .peer_id = e->peer_id[0] ? e->peer_id : NULL,
        .now_s = (int64_t)time(NULL),
    };
    struct jn_auth_result res;
    long long now_ms = jn_mono_ms();

    if (jn_auth_verify(a, &r, &res) == 0) {
        if (user != NULL) {
            snprintf(user, JN_AUTH_USER_MAX, "%s", res.user);
        }
        return 1;
    }
    ch->n_auth_failed[res.method]++;
    if (now_ms - lg->win_ms >= 10000) {
        lg->win_ms = now_ms;
        lg->lines = 0;
    }
    if (lg->lines++ < 20) {
        jn_ch_warn(ch, "peer %s: refused %d (auth %s): %s; closing with 1008%s", e->peer,
                   res.status, jn_auth_method_name(res.method), res.reason,
                   lg->unshown ? " (and earlier refusals not shown)" : "");
        lg->unshown = 0;
    } else {
        lg->unshown++;
    }
    jn_ws__close(l, e->conn, 1008, res.status == 403 ? "forbidden" : "unauthorized");
    return 0;
}

/* ---- checks ---- */

int jn_ws__check_listener(const struct ws_listen_conf *c, const struct jn_tls_conf *tls,
                          const struct jn_node *node, const char *what, const char *example,
                          struct jn_diag *d)
{
    const char *listen = c->listen, *path = c->path;
    const struct jn_node *n = jn_node_get(node, "listen");
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    int errs = 0;

    if (listen == NULL || evutil_parse_sockaddr_port(listen, (struct sockaddr *)&ss, &sl) != 0) {
        jn_diag_add(d, n ? &n->pos : &node->pos, "%s: listen: '%s' is not ip:port, expected "
                    "e.g. %s", what, listen ? listen : "", example);
        errs++;
    }
    if (path == NULL || path[0] != '/') {
        n = jn_node_get(node, "path");
        jn_diag_add(d, n ? &n->pos : &node->pos, "%s: path: '%s' must start with /", what,
                    path ? path : "");
        errs++;
    }
    errs += jn_ws__auth_check(&c->auth, tls, node, what, d);
    return errs + jn_tls_check(tls, JN_TLS_SERVER, jn_tls_on(tls), node, "tls", what, d);
}

int jn_ws__check_client(const char *url, long long backoff, long long max_backoff,
                        const struct jn_tls_conf *tls, const struct jn_node *node,
                        const char *what, const char *example, struct jn_diag *d)
{
    const struct jn_node *n = jn_node_get(node, "url");
    struct ws_url u;

    if (jn_ws__url_parse(url, &u) != 0) {
        jn_diag_add(d, n ? &n->pos : &node->pos, "%s: url: '%s' is not a ws:// or wss:// url "
                    "(e.g. %s)", what, url ? url : "", example);
        return 1;
    }
    if (max_backoff < backoff) {
        n = jn_node_get(node, "reconnect_max_backoff");
        jn_diag_add(d, n ? &n->pos : &node->pos, "%s: reconnect_max_backoff must be at least "
                    "reconnect_backoff", what);
        return 1;
    }
    return jn_tls_check(tls, JN_TLS_CLIENT, u.tls || jn_tls_on(tls), node, "tls", what, d);
}

static int ws_check(const void *vconf, unsigned dir, const struct jn_node *node,
                    struct jn_diag *d)
{
    const struct ws_conf *c = vconf;

    if (dir == JN_DIR_IN) {
        return jn_ws__check_listener(&c->l, &c->tls, node, "websocket", "127.0.0.1:8765", d);
    }
    return jn_ws__check_client(c->url, c->reconnect_backoff, c->reconnect_max_backoff, &c->tls,
                               node, "websocket", "ws://127.0.0.1:8765/", d);
}

/* ---- the def ---- */

const struct jn_channel_def jn_channel_websocket = {
    .name = "websocket",
    .desc = "WebSocket (libwebsockets): IN answers each frame with an ack once durable, OUT "
            "sends frames and waits for the server's ack",
    .opts = ws_opts,
    .conf_size = sizeof(struct ws_conf),
    .check = ws_check,
    .in = &jn_ws__in,
    .out = &jn_ws__out,
};
