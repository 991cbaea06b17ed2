/*
 * ws link: one libwebsockets context on its own service thread, as a listener (IN) or a
 * client that dials out (OUT, and the bridge later), with the hand-off to and from the loop
 * that ws_int.h describes.
 *
 * Why a thread: Debian's libwebsockets 4.1.6 is built without its libevent plugin and without
 * external poll (shared/stack.md 5), so it cannot share the broker's event_base. lws is not
 * thread-safe except for lws_cancel_service(): every lws call below happens on the link
 * thread (or, once the thread has been joined, on the loop in jn_ws__link_free).
 *
 * Per connection the link thread keeps a struct wconn (the wsi's opaque user data, and in a
 * small hash by number): the message being joined from its fragments, and the frames queued
 * by the loop, written one per WRITEABLE callback. Limits checked here, before anything
 * reaches the loop: max_message (close 1009, also for a message still arriving in fragments),
 * UTF-8 of text messages (close 1007; lws's own check is not used, so the code is ours).
 *
 * TLS: a listener's TLS is built by lws from the same cert/key/ca files our jn_tls would use
 * (lws makes its own server SSL_CTX per vhost); a client is handed our own jn_tls client
 * context (provided_client_ssl_ctx: its CA and client certificate). lws sets a verify
 * callback of its own on every SSL, so ours never runs: allowed_peers is checked here instead,
 * in the verification callbacks lws passes on (both roles).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_net.h"
#include "jn_utf8.h"
#include "ws_int.h"

#define WS_BUCKETS 256

struct frame {
    struct frame *next;
    uint64_t tag;
    int binary;
    size_t len;
    unsigned char buf[]; /* LWS_PRE + len */
};

struct wconn {
    struct wconn *hnext;
    struct ws_link *l;
    uint64_t id;
    struct lws *wsi;
    struct jn_buf rx;      /* the message being joined */
    int rx_binary;
    int rx_started;
    struct frame *qhead, *qtail;
    int closing;           /* close after the queued frames */
    int close_code;        /* sent or received */
    char close_reason[124];
    int in_connect;        /* inside lws_client_connect_via_info */
    int reported;          /* CLOSED posted */
};

enum cmd_kind { CMD_CONNECT, CMD_SEND, CMD_CLOSE, CMD_PAUSE, CMD_CERT };

struct ws_cmd {
    struct ws_cmd *next;
    enum cmd_kind kind;
    uint64_t conn;
    int code;              /* CLOSE: the code; PAUSE: 1 pause, 0 resume */
    int insecure;          /* CONNECT */
    struct frame *f;       /* SEND */
    struct ws_url u;       /* CONNECT */
    char name[256];        /* CONNECT: SNI and checked name */
    char reason[124];      /* CLOSE */
    SSL_CTX *cert_from;    /* CERT: a reloaded context of ours (a reference) */
};

struct ws_link {
    char prefix[160];
    struct ws_link_conf lc;
    char path[1024];
    char host[256];
    int port;
    ws_event_fn fn;
    void *arg;
    struct jn_worker *wake; /* link -> loop */
    struct lws_context *ctx;
    SSL_CTX *client_ctx;    /* our reference */
    /* Listener certificate reload: lws builds the vhost's server SSL_CTX from the files once;
     * srv_tls is our own context of the same files, which jn_tls reloads on SIGHUP and when
     * they change (refusing a bad one with an error line). cert_ev looks every
     * JN_TLS_WATCH_MS whether it has a new context and sends its certificate, chain and key to
     * the link thread (CMD_CERT), which puts them into vh_ctx for the handshakes to come. */
    struct jn_tls *srv_tls;
    SSL_CTX *srv_seen;      /* the srv_tls context last sent (compared, not dereferenced) */
    struct event *cert_ev;
    SSL_CTX *vh_ctx;        /* lws's vhost server context (link thread after start) */
    lws_retry_bo_t retry;
    struct lws_protocols protos[2];
    pthread_t th;
    int th_started;

    pthread_mutex_t mu;     /* cmds, stop, next_id */
    struct ws_cmd *cmds, *cmds_tail;
    int stop;
    uint64_t next_id;

    /* link thread only (then the loop, in free) */
    struct wconn *buckets[WS_BUCKETS];
    long long nconns;
};

/* ---- events (link thread -> loop) ---- */

void jn_ws__ev_free(struct ws_ev *e)
{
    if (e != NULL) {
        jn_free(e->data);
        X509_free(e->peer_cert);
        jn_free(e);
    }
}

static void wake_done(void *arg, struct jn_job *job)
{
    struct ws_link *l = arg;

    l->fn(l->arg, JN_JOB_OF(job, struct ws_ev, job));
}

static struct ws_ev *ev_new(enum ws_ev_kind kind, uint64_t conn)
{
    struct ws_ev *e = jn_calloc(1, sizeof(*e));

    if (e != NULL) {
        e->kind = kind;
        e->conn = conn;
    }
    return e;
}

/* Out of memory loses the event: logged. A lost CLOSED leaves the loop's record of the
 * connection until the link is freed; a lost MESSAGE was never acknowledged. */
static void ev_post(struct ws_link *l, struct ws_ev *e)
{
    if (e == NULL) {
        jn_log_p(JN_LOG_ERROR, l->prefix, "out of memory: a WebSocket event is lost");
        return;
    }
    if (jn_worker_post(l->wake, &e->job) != 0) {
        jn_ws__ev_free(e);
    }
}

/* ---- connections (link thread) ---- */

static struct wconn *conn_find(struct ws_link *l, uint64_t id)
{
    struct wconn *c = l->buckets[id % WS_BUCKETS];

    while (c != NULL && c->id != id) {
        c = c->hnext;
    }
    return c;
}

static void conn_insert(struct ws_link *l, struct wconn *c)
{
    c->hnext = l->buckets[c->id % WS_BUCKETS];
    l->buckets[c->id % WS_BUCKETS] = c;
    l->nconns++;
}

static void conn_free(struct wconn *c)
{
    struct ws_link *l = c->l;
    struct wconn **pp = &l->buckets[c->id % WS_BUCKETS];

    while (*pp != NULL && *pp != c) {
        pp = &(*pp)->hnext;
    }
    if (*pp == c) {
        *pp = c->hnext;
        l->nconns--;
    }
    while (c->qhead != NULL) {
        struct frame *f = c->qhead;
        c->qhead = f->next;
        jn_free(f);
    }
    if (c->wsi != NULL) {
        lws_set_opaque_user_data(c->wsi, NULL);
    }
    jn_buf_reset(&c->rx);
    jn_free(c);
}

static void post_closed(struct wconn *c, const char *why)
{
    struct ws_ev *e;

    if (c->reported) {
        return;
    }
    c->reported = 1;
    e = ev_new(WS_EV_CLOSED, c->id);
    if (e != NULL) {
        e->code = c->close_code;
        snprintf(e->text, sizeof(e->text), "%s", why);
    }
    ev_post(c->l, e);
}

static void peer_name(struct lws *wsi, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    int fd = lws_get_socket_fd(wsi);

    snprintf(out, n, "?");
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) {
        return;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    }
}

static void hdr(struct lws *wsi, enum lws_token_indexes t, char *out, size_t n)
{
    if (lws_hdr_copy(wsi, out, (int)n, t) < 0) {
        out[0] = '\0';
    }
}

/* The request path without its query. */
static void req_path(struct lws *wsi, char *out, size_t n)
{
    char *q;

    hdr(wsi, WSI_TOKEN_GET_URI, out, n);
    q = strchr(out, '?');
    if (q != NULL) {
        *q = '\0';
    }
}

static int refuse(struct wconn *c, int code, const char *why)
{
    c->close_code = code;
    lws_close_reason(c->wsi, (enum lws_close_status)code, (unsigned char *)(uintptr_t)why,
                     strlen(why));
    post_closed(c, why);
    return -1;
}

/* A fragment (or a whole frame's worth) of a message: joined; a whole one goes to the loop. */
static int on_receive(struct wconn *c, const void *in, size_t len)
{
    struct ws_link *l = c->l;
    struct ws_ev *e;

    if (!c->rx_started) {
        c->rx_started = 1;
        c->rx_binary = lws_frame_is_binary(c->wsi);
        c->rx.len = 0;
    }
    if (len > l->lc.max_message || c->rx.len > l->lc.max_message - len) {
        jn_log_p(JN_LOG_WARN, l->prefix, "conn %llu: message over max_message (%zu bytes): "
                 "closing with 1009", (unsigned long long)c->id, l->lc.max_message);
        return refuse(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too big");
    }
    if (len > 0 && jn_buf_append(&c->rx, in, len) != 0) {
        return refuse(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
    }
    if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi) != 0) {
        return 0;
    }
    c->rx_started = 0;
    if (!c->rx_binary && l->lc.check_utf8 &&
        !jn_utf8_valid(c->rx.p, c->rx.len)) {
        jn_log_p(JN_LOG_WARN, l->prefix, "conn %llu: text message is not UTF-8: closing with "
                 "1007", (unsigned long long)c->id);
        return refuse(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "text is not UTF-8");
    }
    e = ev_new(WS_EV_MESSAGE, c->id);
    if (e == NULL) {
        return refuse(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
    }
    e->binary = c->rx_binary;
    e->len = c->rx.len;
    if (c->rx.p == NULL && jn_buf_reserve(&c->rx, 1) != 0) {
        jn_free(e);
        return refuse(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
    }
    e->data = (unsigned char *)jn_buf_steal(&c->rx);
    ev_post(l, e);
    return 0;
}

static int on_writeable(struct wconn *c)
{
    struct frame *f = c->qhead;

    if (f != NULL) {
        int n;
        c->qhead = f->next;
        if (c->qhead == NULL) {
            c->qtail = NULL;
        }
        n = lws_write(c->wsi, f->buf + LWS_PRE, f->len,
                      f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        if (n < 0 || (size_t)n < f->len) {
            jn_free(f);
            post_closed(c, "write failed");
            return -1;
        }
        if (f->tag != 0) {
            struct ws_ev *e = ev_new(WS_EV_WRITTEN, c->id);
            if (e != NULL) {
                e->tag = f->tag;
            }
            ev_post(c->l, e);
        }
        jn_free(f);
    }
    if (c->qhead != NULL) {
        lws_callback_on_writable(c->wsi);
    } else if (c->closing) {
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                         (unsigned char *)c->close_reason, strlen(c->close_reason));
        post_closed(c, c->close_reason[0] ? c->close_reason : "closed by us");
        return -1;
    }
    return 0;
}

static void do_connect(struct ws_link *l, struct ws_cmd *cmd)
{
    struct lws_client_connect_info ci;
    struct wconn *c = jn_calloc(1, sizeof(*c));
    struct lws *w;
    struct ws_ev *e;

    if (c == NULL) {
        e = ev_new(WS_EV_CLOSED, cmd->conn);
        if (e != NULL) {
            snprintf(e->text, sizeof(e->text), "out of memory");
        }
        ev_post(l, e);
        return;
    }
    c->l = l;
    c->id = cmd->conn;
    conn_insert(l, c);
    memset(&ci, 0, sizeof(ci));
    ci.context = l->ctx;
    ci.address = cmd->u.host;
    ci.port = cmd->u.port;
    ci.path = cmd->u.path;
    ci.host = cmd->name;
    ci.origin = cmd->name;
    ci.ssl_connection = cmd->u.tls ? LCCSCF_USE_SSL : 0;
    if (cmd->u.tls && cmd->insecure) {
        ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                             LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
    }
    ci.local_protocol_name = l->protos[0].name;
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    if (l->lc.ping_interval > 0) {
        ci.retry_and_idle_policy = &l->retry;
    }
    c->in_connect = 1;
    w = lws_client_connect_via_info(&ci);
    c->in_connect = 0;
    if (w == NULL || c->reported) {
        post_closed(c, "connect failed");
        c->wsi = NULL; /* lws frees a wsi that failed inside the call */
        conn_free(c);
    }
}

/* Link thread: the reloaded certificate, its chain and key into lws's vhost context, which
 * only new handshakes read; open connections keep theirs. from was checked by jn_tls (the key
 * matches the certificate), so a failure here is out of memory only. */
static void cert_apply(struct ws_link *l, SSL_CTX *from)
{
    X509 *cert = SSL_CTX_get0_certificate(from);
    EVP_PKEY *key = SSL_CTX_get0_privatekey(from);
    STACK_OF(X509) *chain = NULL;

    if (l->vh_ctx == NULL || cert == NULL || key == NULL) {
        return;
    }
    SSL_CTX_get0_chain_certs(from, &chain);
    if (SSL_CTX_use_certificate(l->vh_ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey(l->vh_ctx, key) != 1 ||
        SSL_CTX_set1_chain(l->vh_ctx, chain) != 1) {
        jn_log_p(JN_LOG_ERROR, l->prefix, "tls: cannot use the reloaded certificate: %s",
                 "out of memory");
        return;
    }
    jn_log_p(JN_LOG_INFO, l->prefix, "tls: new connections get the reloaded certificate");
}

static void do_commands(struct ws_link *l)
{
    struct ws_cmd *cmd;

    pthread_mutex_lock(&l->mu);
    cmd = l->cmds;
    l->cmds = l->cmds_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (cmd != NULL) {
        struct ws_cmd *next = cmd->next;
        struct wconn *c = cmd->kind == CMD_CONNECT ? NULL : conn_find(l, cmd->conn);
        switch (cmd->kind) {
        case CMD_CONNECT:
            do_connect(l, cmd);
            break;
        case CMD_SEND:
            if (c != NULL && !c->closing && !c->reported) {
                if (c->qtail != NULL) {
                    c->qtail->next = cmd->f;
                } else {
                    c->qhead = cmd->f;
                }
                c->qtail = cmd->f;
                cmd->f = NULL;
                lws_callback_on_writable(c->wsi);
            }
            break;
        case CMD_CLOSE:
            if (c != NULL && !c->closing) {
                c->closing = 1;
                c->close_code = cmd->code;
                snprintf(c->close_reason, sizeof(c->close_reason), "%s", cmd->reason);
                lws_callback_on_writable(c->wsi);
            }
            break;
        case CMD_PAUSE:
            if (c != NULL) {
                lws_rx_flow_control(c->wsi, cmd->code ? 0 : 1);
            }
            break;
        case CMD_CERT:
            cert_apply(l, cmd->cert_from);
            break;
        }
        if (cmd->cert_from != NULL) {
            SSL_CTX_free(cmd->cert_from);
        }
        jn_free(cmd->f);
        jn_free(cmd);
        cmd = next;
    }
}

/* The one protocol callback: link thread (and the loop in lws_context_destroy). */
static int ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len)
{
    struct ws_link *l = lws_context_user(lws_get_context(wsi));
    struct wconn *c = lws_get_opaque_user_data(wsi);
    struct ws_ev *e;

    (void)user;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        do_commands(l);
        return 0;
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* In lws_create_context (the loop, before the link thread): the vhost's context. */
        if (l != NULL) {
            l->vh_ctx = user;
        }
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char path[1024];
        req_path(wsi, path, sizeof(path));
        if (l->path[0] != '\0' && strcmp(path, l->path) != 0) {
            jn_log_p(JN_LOG_DEBUG, l->prefix, "handshake for %s refused: not %s", path,
                     l->path);
            return 1;
        }
        if (l->nconns >= l->lc.max_connections) {
            char peer[80];
            peer_name(wsi, peer, sizeof(peer));
            jn_log_p(JN_LOG_WARN, l->prefix, "peer %s refused: max_connections (%lld) reached",
                     peer, l->lc.max_connections);
            return 1;
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        c = jn_calloc(1, sizeof(*c));
        e = ev_new(WS_EV_OPEN, 0);
        if (c == NULL || e == NULL) {
            jn_free(c);
            jn_free(e);
            jn_log_p(JN_LOG_ERROR, l->prefix, "out of memory: connection refused");
            return -1;
        }
        c->l = l;
        c->wsi = wsi;
        pthread_mutex_lock(&l->mu);
        c->id = ++l->next_id;
        pthread_mutex_unlock(&l->mu);
        conn_insert(l, c);
        lws_set_opaque_user_data(wsi, c);
        e->conn = c->id;
        peer_name(wsi, e->peer, sizeof(e->peer));
        req_path(wsi, e->path, sizeof(e->path));
        hdr(wsi, WSI_TOKEN_ORIGIN, e->origin, sizeof(e->origin));
        hdr(wsi, WSI_TOKEN_HTTP_USER_AGENT, e->user_agent, sizeof(e->user_agent));
        hdr(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, e->authorization, sizeof(e->authorization));
        {
            /* The client certificate, when TLS verified one: for auth's mtls (on the loop). */
            SSL *ssl = lws_get_ssl(wsi);
            if (ssl != NULL && SSL_get_verify_result(ssl) == X509_V_OK &&
                jn_tls_peer_id(ssl, e->peer_id, sizeof(e->peer_id)) == 1) {
                e->peer_cert = SSL_get1_peer_certificate(ssl);
            } else {
                e->peer_id[0] = '\0';
            }
        }
        ev_post(l, e);
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c == NULL) {
            return -1;
        }
        e = ev_new(WS_EV_OPEN, c->id);
        if (e != NULL) {
            peer_name(wsi, e->peer, sizeof(e->peer));
        }
        ev_post(l, e);
        return 0;
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (l->lc.authorization != NULL && l->lc.authorization[0] != '\0') {
            unsigned char **p = (unsigned char **)in;
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                             (const unsigned char *)l->lc.authorization,
                                             (int)strlen(l->lc.authorization), p,
                                             *p + len) != 0) {
                return -1;
            }
        }
        return 0;
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        /* After our close frame lws waits for the peer's; frames still arriving are
         * discarded (0), not answered with -1: closing then, with them unread, resets the
         * connection and the peer may lose our close frame (it sees 1006, not our code). */
        if (c != NULL && c->reported) {
            return 0;
        }
        return c != NULL ? on_receive(c, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        /* Once our close is under way, lws writes the close frame and waits for the peer's
         * itself: a -1 here then would kill the connection at once, possibly with the peer's
         * frames unread, and the reset may lose our close frame at the peer (1006). */
        return c != NULL && !c->reported ? on_writeable(c) : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c != NULL && len >= 2) {
            const unsigned char *p = in;
            c->close_code = (p[0] << 8) | p[1];
        }
        return 0;
    case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: {
        /* lws puts its own verify callback on each SSL (so the one of our jn_tls context does
         * not run) and asks us here, per certificate of the chain: user is the X509_STORE_CTX,
         * len OpenSSL's verdict so far. Non-zero fails the handshake. */
        X509_STORE_CTX *xs = user;
        X509 *cert = xs != NULL ? X509_STORE_CTX_get_current_cert(xs) : NULL;
        const struct jn_strlist *ap = l->lc.allowed_peers;
        if (len != 0 && ap != NULL && ap->n > 0 && xs != NULL &&
            X509_STORE_CTX_get_error_depth(xs) == 0 &&
            (cert == NULL || !jn_tls_peer_allowed(cert, ap))) {
            jn_log_p(JN_LOG_WARN, l->prefix, "TLS peer refused: its certificate is not in "
                     "tls.allowed_peers");
            X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
            return 1;
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c != NULL) {
            char why[200];
            if (in != NULL && len > 0) {
                snprintf(why, sizeof(why), "connect failed: %.*s", (int)len, (const char *)in);
            } else {
                snprintf(why, sizeof(why), "connect failed: %s", in ? (const char *)in : "?");
            }
            post_closed(c, why);
            if (!c->in_connect) {
                c->wsi = NULL;
                conn_free(c);
            }
            lws_set_opaque_user_data(wsi, NULL);
        }
        return 0;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c != NULL) {
            post_closed(c, "connection closed");
            c->wsi = NULL;
            lws_set_opaque_user_data(wsi, NULL);
            conn_free(c);
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static void *link_main(void *arg)
{
    struct ws_link *l = arg;

    for (;;) {
        int stop;
        pthread_mutex_lock(&l->mu);
        stop = l->stop;
        pthread_mutex_unlock(&l->mu);
        if (stop || lws_service(l->ctx, 0) < 0) {
            break;
        }
    }
    return NULL;
}

/* ---- lws's log lines, through ours ---- */

static void lws_emit(int level, const char *line)
{
    size_t n = strlen(line);

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        n--;
    }
    jn_log_p(level == LLL_ERR ? JN_LOG_WARN : JN_LOG_DEBUG, "websocket.lws", "%.*s", (int)n,
             line);
}

static pthread_once_t lws_log_once = PTHREAD_ONCE_INIT;

static void lws_log_init(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_emit);
}

/* ---- the loop's side ---- */

/* One wake-up per batch: when the list was not empty, the push that made it so has woken the
 * link thread, which has not taken the list yet (it takes it under mu), so it takes this
 * command with the others. Saves a pipe write per frame when the loop sends many at once. */
static int cmd_push(struct ws_link *l, struct ws_cmd *cmd)
{
    int wake;

    pthread_mutex_lock(&l->mu);
    if (l->stop) {
        pthread_mutex_unlock(&l->mu);
        jn_free(cmd->f);
        jn_free(cmd);
        return JN_ESTOPPED;
    }
    wake = l->cmds == NULL;
    if (l->cmds_tail != NULL) {
        l->cmds_tail->next = cmd;
    } else {
        l->cmds = cmd;
    }
    l->cmds_tail = cmd;
    pthread_mutex_unlock(&l->mu);
    if (wake) {
        lws_cancel_service(l->ctx);
    }
    return 0;
}

int jn_ws__connect(struct ws_link *l, const struct ws_url *u, const char *server_name,
                   int insecure, uint64_t *conn)
{
    struct ws_cmd *cmd = jn_calloc(1, sizeof(*cmd));

    if (cmd == NULL) {
        return JN_ENOMEM;
    }
    cmd->kind = CMD_CONNECT;
    cmd->u = *u;
    cmd->insecure = insecure;
    snprintf(cmd->name, sizeof(cmd->name), "%s",
             server_name != NULL && server_name[0] ? server_name : u->host);
    pthread_mutex_lock(&l->mu);
    cmd->conn = ++l->next_id;
    pthread_mutex_unlock(&l->mu);
    *conn = cmd->conn;
    return cmd_push(l, cmd);
}

int jn_ws__send(struct ws_link *l, uint64_t conn, int binary, const void *p, size_t len,
                uint64_t tag)
{
    struct ws_cmd *cmd = jn_calloc(1, sizeof(*cmd));
    struct frame *f = len < SIZE_MAX - sizeof(*f) - LWS_PRE
                          ? jn_malloc(sizeof(*f) + LWS_PRE + len) : NULL;

    if (cmd == NULL || f == NULL) {
        jn_free(cmd);
        jn_free(f);
        return JN_ENOMEM;
    }
    f->next = NULL;
    f->tag = tag;
    f->binary = binary;
    f->len = len;
    if (len > 0) {
        memcpy(f->buf + LWS_PRE, p, len);
    }
    cmd->kind = CMD_SEND;
    cmd->conn = conn;
    cmd->f = f;
    return cmd_push(l, cmd);
}

int jn_ws__close(struct ws_link *l, uint64_t conn, int code, const char *reason)
{
    struct ws_cmd *cmd = jn_calloc(1, sizeof(*cmd));

    if (cmd == NULL) {
        return JN_ENOMEM;
    }
    cmd->kind = CMD_CLOSE;
    cmd->conn = conn;
    cmd->code = code;
    snprintf(cmd->reason, sizeof(cmd->reason), "%s", reason != NULL ? reason : "");
    return cmd_push(l, cmd);
}

int jn_ws__pause(struct ws_link *l, uint64_t conn, int paused)
{
    struct ws_cmd *cmd = jn_calloc(1, sizeof(*cmd));

    if (cmd == NULL) {
        return JN_ENOMEM;
    }
    cmd->kind = CMD_PAUSE;
    cmd->conn = conn;
    cmd->code = paused;
    return cmd_push(l, cmd);
}

/* Loop: every JN_TLS_WATCH_MS, a context jn_tls reloaded goes to the link thread. */
static void cert_watch(evutil_socket_t fd, short what, void *arg)
{
    struct ws_link *l = arg;
    SSL_CTX *now = jn_tls_ctx(l->srv_tls);
    struct ws_cmd *cmd;

    (void)fd;
    (void)what;
    if (now == l->srv_seen) {
        return;
    }
    cmd = jn_calloc(1, sizeof(*cmd));
    if (cmd == NULL) {
        return; /* tried again at the next look */
    }
    cmd->kind = CMD_CERT;
    SSL_CTX_up_ref(now);
    cmd->cert_from = now;
    l->srv_seen = now;
    if (cmd_push(l, cmd) != 0) {
        SSL_CTX_free(now); /* stopping: cmd_push freed cmd */
    }
}

struct ws_link *jn_ws__link_new(struct event_base *base, const struct ws_link_conf *lc,
                                ws_event_fn fn, void *arg, struct jn_err *err)
{
    struct ws_link *l = jn_calloc(1, sizeof(*l));
    struct lws_context_creation_info info;
    const struct jn_tls_conf *tls = lc->tls != NULL && jn_tls_on(lc->tls) ? lc->tls : NULL;

    if (l == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_once(&lws_log_once, lws_log_init);
    pthread_mutex_init(&l->mu, NULL);
    snprintf(l->prefix, sizeof(l->prefix), "%s", lc->log_prefix);
    l->lc = *lc;
    l->lc.log_prefix = l->prefix;
    l->fn = fn;
    l->arg = arg;
    snprintf(l->path, sizeof(l->path), "%s", lc->path != NULL ? lc->path : "");
    l->lc.path = l->path;
    l->wake = jn_worker_new(base, NULL, NULL, wake_done, l);
    if (l->wake == NULL) {
        jn_ws__link_free(l);
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    l->protos[0].name = "junction-ws";
    l->protos[0].callback = ws_cb;
    l->protos[0].rx_buffer_size = 65536;
    l->retry.secs_since_valid_ping =
        (uint16_t)(lc->ping_interval > 0 ? (lc->ping_interval + 999) / 1000 : 0);
    l->retry.secs_since_valid_hangup = (uint16_t)(2 * l->retry.secs_since_valid_ping);

    memset(&info, 0, sizeof(info));
    info.protocols = l->protos;
    info.user = l;
    /* TLS only when this link speaks it: without it lws makes no SSL_CTX at all (with it, a
     * listener also gets a client context loaded with the system's CA store). */
    if (tls != NULL || lc->client_ctx != NULL) {
        info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    }
    if (lc->ping_interval > 0) {
        info.retry_and_idle_policy = &l->retry;
    }
    if (lc->listen != NULL) {
        if (jn_split_hostport(lc->listen, l->host, sizeof(l->host), &l->port, 1) != 0) {
            jn_ws__link_free(l);
            jn_err_set(err, JN_EINVAL, "listen: '%s' is not ip:port", lc->listen);
            return NULL;
        }
        info.port = l->port;
        if (strcmp(l->host, "0.0.0.0") != 0 && strcmp(l->host, "::") != 0 && l->host[0]) {
            info.iface = l->host;
        }
        if (strchr(l->host, ':') == NULL) {
            info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
        }
        info.fd_limit_per_thread = (unsigned)(lc->max_connections + 32);
        info.vhost_name = "junction";
        if (tls != NULL) {
            info.ssl_cert_filepath = tls->cert;
            info.ssl_private_key_filepath = tls->key != NULL ? tls->key : tls->cert;
            info.ssl_private_key_password = tls->key_password;
            info.ssl_ca_filepath = tls->ca;
            info.ssl_cipher_list = tls->ciphers;
            info.tls1_3_plus_cipher_list = tls->ciphersuites;
            info.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
            if (tls->min_version >= JN_TLS_V13) {
                info.ssl_options_set |= SSL_OP_NO_TLSv1_2;
            }
            /* A listener never dials out, but lws would still make it a client SSL_CTX
             * loaded with the system's CA store (and, with two such links, not free it):
             * an empty one of ours instead. */
            l->client_ctx = SSL_CTX_new(TLS_client_method());
            if (l->client_ctx == NULL) {
                jn_ws__link_free(l);
                jn_err_set(err, JN_ENOMEM, "out of memory");
                return NULL;
            }
            info.provided_client_ssl_ctx = l->client_ctx;
            if (tls->verify_peer == JN_TLS_VERIFY_TRUE ||
                (tls->verify_peer == JN_TLS_VERIFY_AUTO && tls->allowed_peers.n > 0)) {
                info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
            }
        }
    } else {
        info.port = CONTEXT_PORT_NO_LISTEN;
        info.fd_limit_per_thread = 64;
        if (lc->client_ctx != NULL) {
            SSL_CTX_up_ref(lc->client_ctx);
            l->client_ctx = lc->client_ctx;
            info.provided_client_ssl_ctx = lc->client_ctx;
        }
    }
    l->ctx = lws_create_context(&info);
    if (l->ctx == NULL) {
        jn_ws__link_free(l);
        jn_err_set(err, JN_EIO, lc->listen != NULL
                   ? "cannot listen on %s (in use, or the TLS files did not load)"
                   : "cannot make the WebSocket client context%s", lc->listen ? lc->listen : "");
        return NULL;
    }
    if (tls != NULL && lc->listen != NULL) {
        /* Our own context of the same files, for reloads (see struct ws_link). */
        char what[200];
        struct timeval tv = {JN_TLS_WATCH_MS / 1000, JN_TLS_WATCH_MS % 1000 * 1000};
        snprintf(what, sizeof(what), "%s: tls", l->prefix);
        l->srv_tls = jn_tls_new(tls, JN_TLS_SERVER, what, err);
        if (l->srv_tls == NULL) {
            jn_ws__link_free(l);
            return NULL;
        }
        l->srv_seen = jn_tls_ctx(l->srv_tls);
        l->cert_ev = event_new(base, -1, EV_PERSIST, cert_watch, l);
        if (l->cert_ev == NULL || event_add(l->cert_ev, &tv) != 0) {
            jn_ws__link_free(l);
            jn_err_set(err, JN_ENOMEM, "out of memory");
            return NULL;
        }
    }
    if (pthread_create(&l->th, NULL, link_main, l) != 0) {
        jn_ws__link_free(l);
        jn_err_set(err, JN_EIO, "cannot start the WebSocket thread");
        return NULL;
    }
    l->th_started = 1;
    return l;
}

void jn_ws__link_free(struct ws_link *l)
{
    struct jn_job *rest = NULL;
    struct ws_cmd *cmd;

    if (l == NULL) {
        return;
    }
    if (l->cert_ev != NULL) {
        event_free(l->cert_ev);
    }
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    cmd = l->cmds;
    l->cmds = l->cmds_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    if (l->th_started) {
        lws_cancel_service(l->ctx);
        pthread_join(l->th, NULL);
    }
    while (cmd != NULL) {
        struct ws_cmd *next = cmd->next;
        if (cmd->cert_from != NULL) {
            SSL_CTX_free(cmd->cert_from);
        }
        jn_free(cmd->f);
        jn_free(cmd);
        cmd = next;
    }
    jn_tls_free(l->srv_tls);
    if (l->ctx != NULL) {
        /* Closes every connection; their CLOSED callbacks run here, on the loop, and post
         * events that the stop below takes back unseen. */
        lws_context_destroy(l->ctx);
    }
    for (size_t i = 0; i < WS_BUCKETS; i++) {
        while (l->buckets[i] != NULL) {
            struct wconn *c = l->buckets[i];
            c->wsi = NULL;
            conn_free(c);
        }
    }
    if (l->wake != NULL) {
        rest = jn_worker_stop(l->wake, 0);
    }
    while (rest != NULL) {
        struct jn_job *next = rest->next;
        jn_ws__ev_free(JN_JOB_OF(rest, struct ws_ev, job));
        rest = next;
    }
    jn_worker_free(l->wake);
    if (l->client_ctx != NULL) {
        SSL_CTX_free(l->client_ctx);
    }
    pthread_mutex_destroy(&l->mu);
    jn_free(l);
}
