/*
 * ws_int.h: what channels/ws_conf.c (options, check, the def), ws_link.c (libwebsockets on its
 * own service thread), ws_in.c (the listener) and ws_out.c (the client) share (house style:
 * module__verb, shared inside one module only). The bridge (issue 19, part 2) is meant to
 * build on the link part alone: a link is a WebSocket endpoint (a listener, or a client that
 * dials out) whose connections the loop names by number, with no lws type in sight.
 *
 * Threads. Debian's libwebsockets 4.1.6 has no libevent plugin (shared/stack.md 5), so each
 * link runs lws_service() on a thread of its own and every lws callback runs there. The two
 * directions of the hand-off:
 *   - link -> loop: struct ws_ev through a jn_worker hand-off (jn_worker.h): opened, message,
 *     written, closed; the side's event function gets them on the loop, in the order the
 *     link thread posted them (for one connection: opened, messages..., closed).
 *   - loop -> link: struct ws_cmd on a locked list, then lws_cancel_service(); the link thread
 *     takes the list in LWS_CALLBACK_EVENT_WAIT_CANCELLED (connect, send, close, pause).
 * A connection is a number (uint64_t, never reused in a link's life) on both sides: the loop
 * never holds a struct lws *, and a command for a connection that has gone is dropped.
 */
#ifndef JN_WS_INT_H
#define JN_WS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_channel.h"
#include "jn_tls.h"
#include "jn_worker.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct x509_st X509;

enum { WS_ACK_COMMIT = 0, WS_ACK_NONE = 1 };

struct ws_conf {
    /* IN */
    char *listen;
    char *path;
    unsigned long long max_message;
    long long max_connections;
    long long ping_interval; /* ms */
    int ack;                 /* WS_ACK_* */
    struct jn_sublist auth;  /* auth: struct jn_auth_conf methods (jn_auth.h) */
    /* both */
    struct jn_tls_conf tls;
    /* OUT */
    char *url;
    bool await_ack;
    long long timeout;       /* ms */
    long long reconnect_backoff;     /* ms */
    long long reconnect_max_backoff; /* ms */
};

extern const struct jn_in_def jn_ws__in;
extern const struct jn_out_def jn_ws__out;


/* A parsed ws:// or wss:// url: 0, or -1 when it is not one (ws_conf.c). */
struct ws_url {
    int tls;
    char host[256];
    int port;
    char path[1024];
};
int jn_ws__url_parse(const char *url, struct ws_url *u);

/* ---- the link (ws_link.c) ---- */

enum ws_ev_kind {
    WS_EV_OPEN,    /* a connection is up (IN: accepted; OUT: the handshake is done) */
    WS_EV_MESSAGE, /* a whole message (fragments joined): data, len, binary */
    WS_EV_WRITTEN, /* the frame sent with tag was handed to the socket */
    WS_EV_CLOSED,  /* the connection is gone (OUT: also a connect that failed); code, text */
};

/* One event for the loop. Owned by the side's event function (free with jn_ws__ev_free). */
struct ws_ev {
    struct jn_job job;
    enum ws_ev_kind kind;
    uint64_t conn;
    int binary;            /* MESSAGE */
    int code;              /* CLOSED: the close code received or sent, 0 when none */
    uint64_t tag;          /* WRITTEN */
    unsigned char *data;   /* MESSAGE: len bytes (jn_malloc'd, owned by the event) */
    size_t len;
    char peer[80];         /* OPEN: ip:port */
    char path[256];        /* OPEN (IN): the request's path */
    char origin[256];      /* OPEN (IN): handshake headers, "" when absent */
    char user_agent[256];
    char authorization[1024]; /* OPEN (IN): the Authorization header, "" when absent (loop:
                               * checked by jn_ws__authorize, never logged) */
    char peer_id[JN_TLS_PEER_ID_MAX]; /* OPEN (IN, TLS): jn_tls_peer_id of a verified client
                                       * certificate, "" when none */
    X509 *peer_cert;       /* OPEN (IN, TLS): that certificate (a reference the event owns) */
    char text[200];        /* CLOSED: why */
};
void jn_ws__ev_free(struct ws_ev *e);

/* Loop: the side's handler; takes ownership of e. */
typedef void (*ws_event_fn)(void *arg, struct ws_ev *e);

struct ws_link_conf {
    const char *log_prefix;
    /* A listener: listen ("ip:port") and path ("/x": a handshake for another path gets 404);
     * NULL listen: a client link (connects only). */
    const char *listen;
    const char *path;
    const struct jn_tls_conf *tls; /* listener with TLS: its files (NULL or off: plain) */
    SSL_CTX *client_ctx;           /* client with wss: our context (jn_tls), up-ref'd here */
    /* The peer certificates accepted (CN, SAN or sha256:, jn_tls_peer_allowed), checked in the
     * handshake: the server's for a client, a client's for a listener with verify_peer. NULL
     * or empty: any the CA signed. Borrowed: must outlive the link (the channel's conf). */
    const struct jn_strlist *allowed_peers;
    size_t max_message;            /* larger: closed with 1009 */
    int check_utf8;                /* text messages that are not UTF-8: closed with 1007 */
    long long max_connections;     /* listener: more are refused at the handshake (503) */
    long long ping_interval;       /* ms, 0: none; a peer silent 2 intervals is closed */
    /* A client: the Authorization header value sent in every handshake (a bridge edge's
     * "Bearer <token>"), NULL: none. Borrowed: must outlive the link. */
    const char *authorization;
};

struct ws_link;

/* Loop: makes the lws context (and listener) and starts its thread. NULL with err. */
struct ws_link *jn_ws__link_new(struct event_base *base, const struct ws_link_conf *lc,
                                ws_event_fn fn, void *arg, struct jn_err *err);
/* Loop: stops the thread, closes every connection (no event reaches fn after this), frees.
 * NULL is a no-op. */
void jn_ws__link_free(struct ws_link *l);

/*
 * Loop: the commands. Each returns 0 (queued for the link thread), JN_ENOMEM or JN_ESTOPPED.
 * connect: a client connection to u (its number in *conn); WS_EV_OPEN or WS_EV_CLOSED follows;
 *   server_name (NULL: u's host) is the SNI and the name checked; insecure: no certificate check.
 * send: one frame of len bytes (copied); with tag != 0 WS_EV_WRITTEN follows once written.
 * close: a close frame with code (and reason) after the frames queued before it.
 * pause: stop (1) or resume (0) reading from conn.
 */
int jn_ws__connect(struct ws_link *l, const struct ws_url *u, const char *server_name,
                   int insecure, uint64_t *conn);
int jn_ws__send(struct ws_link *l, uint64_t conn, int binary, const void *p, size_t len,
                uint64_t tag);
int jn_ws__close(struct ws_link *l, uint64_t conn, int code, const char *reason);
int jn_ws__pause(struct ws_link *l, uint64_t conn, int paused);

/* ---- auth: on listeners (ws_conf.c) ---- */

/* The auth: list's cross-field check for a listener (websocket IN, bridge hub): jn_auth_check,
 * and hmac refused (a handshake has no body to sign). Returns the errors reported. */
int jn_ws__auth_check(const struct jn_sublist *auth, const struct jn_tls_conf *tls,
                      const struct jn_node *node, const char *what, struct jn_diag *d);

/*
 * Loop, at WS_EV_OPEN of a listener with auth: methods (a, jn_auth.h): checks the handshake's
 * Authorization header and TLS client certificate (e). Returns 1 when allowed (the identity in
 * user, JN_AUTH_USER_MAX bytes, may be NULL); else counts the refusal on ch (n_auth_failed),
 * logs it without any secret (at most 20 lines per 10 s, *win_ms / *lines / *unshown are the
 * caller's rate state), closes the connection with 1008 and returns 0: the link's events are
 * in order, so no message of the connection has reached the loop yet; drop what follows.
 */
struct ws_auth_log {
    long long win_ms;
    unsigned lines;
    unsigned long long unshown;
};
int jn_ws__authorize(struct jn_channel *ch, struct jn_auth *a, struct ws_link *l,
                     const struct ws_ev *e, struct ws_auth_log *lg, char *user);
/* Loop, at start: the auth: list's verifier (NULL with err->code 0: none) and ch's counted
 * methods. */
struct jn_auth *jn_ws__auth_new(struct jn_channel *ch, const struct jn_sublist *list,
                                struct jn_err *err);

#endif
