/*
 * ws_int.h: what channels/ws_conf.c (options, checks, the def), ws_link.c (libwebsockets on
 * its own service thread), ws_side.c (the client and the server above a link), ws_in.c (the
 * listener) and ws_out.c (the client) share (house style: module__verb, shared inside one
 * module only); the bridge (bridge_*.c) builds on the same link and sides. A link is a
 * WebSocket endpoint (a listener, or a client that dials out) whose connections the loop
 * names by number, with no lws type in sight.
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

#include <event2/util.h>

#include "jn_channel.h"
#include "jn_tls.h"
#include "jn_worker.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct x509_st X509;

enum { WS_ACK_COMMIT = 0, WS_ACK_NONE = 1 };

/* What every listener on a link is configured with (websocket IN, bridge hub): one struct
 * both confs embed, so one check and one start serve both (ws_side.c). */
struct ws_listen_conf {
    char *listen;
    char *path;
    unsigned long long max_message;
    long long max_connections;
    long long ping_interval; /* ms (the bridge's edge uses it too) */
    struct jn_sublist auth;  /* auth: struct jn_auth_conf methods (jn_auth.h) */
};

struct ws_conf {
    /* IN */
    struct ws_listen_conf l;
    int ack;                 /* WS_ACK_* */
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


/* ---- what the sides on a link share (ws_side.c) ----
 *
 * The websocket channel (ws_in.c, ws_out.c) and the bridge (bridge_hub.c, bridge_edge.c) are
 * the same two shapes over a link: a client that dials one url, keeps the connection and
 * remakes it with backoff and full jitter, carrying deliveries in slots; and a server that
 * accepts connections, checks auth: on each, and reads their messages. What is the same in
 * both is here, once; each side keeps only its own protocol (acks by order or by id, the
 * envelope, the window, the duplicate window). Threads: the broker's loop, all of it.
 */

/* A delivery in flight on a client, as the side's own slot struct begins (its first member). */
enum { WS_SLOT_FREE = 0, WS_SLOT_WAITING = 1, WS_SLOT_SENT = 2 };

struct ws_slot {
    struct ws_slot *prev, *next; /* in waiting or sent */
    struct jn_delivery *d;
    struct event *timer;         /* the side's timeout */
    int state;                   /* WS_SLOT_* */
    void *owner;                 /* the side's state */
};

struct ws_slots {
    struct ws_slot *head, *tail;
    size_t n;
};

void jn_ws__slots_push(struct ws_slots *l, struct ws_slot *s);
void jn_ws__slots_del(struct ws_slots *l, struct ws_slot *s);
/* Takes s off the list its state names, stops its timer, marks it free. Returns its delivery
 * (NULL when none) for the caller to finish with jn_delivery_done. */
struct jn_delivery *jn_ws__slot_release(struct ws_slot *s, struct ws_slots *waiting,
                                        struct ws_slots *sent);

/* n slots of size bytes each (struct ws_slot first), zeroed, each with a timer on base that
 * calls cb(fd, what, slot). NULL on out of memory (nothing left allocated). */
void *jn_ws__slots_new(struct event_base *base, size_t n, size_t size,
                       void (*cb)(evutil_socket_t, short, void *), void *owner);
void jn_ws__slots_free(void *v, size_t n, size_t size);
/* A free slot (no delivery) of the n, or NULL. */
struct ws_slot *jn_ws__slot_take(void *v, size_t n, size_t size);

/* The client: one url, one connection at a time (being made or up). */
struct ws_client {
    struct jn_channel *ch;
    const char *url_text;        /* the conf's, borrowed */
    const char *peer_word;       /* in log lines: "" or "the hub " */
    const char *down_note;       /* appended to the first "cannot reach" line, "" or more */
    const struct jn_tls_conf *tls_conf;
    struct ws_url url;
    struct jn_tls *tls;
    struct ws_link *link;
    uint64_t conn;               /* the connection (being made or up), 0: none */
    int connected;
    int failures;                /* connects failed in a row */
    int stopped;
    long long backoff, max_backoff; /* ms */
    struct event *reconnect;
};

/* Loop, at init: parses url (err: "url: '...' is not a ws:// or wss:// url") and makes the
 * reconnect timer. 0 or JN_E* with err; jn_ws__client_fini frees what it made either way. */
int jn_ws__client_init(struct ws_client *c, struct jn_channel *ch, const char *url,
                       const struct jn_tls_conf *tls, long long backoff, long long max_backoff,
                       struct jn_err *err);
/* Loop, at start: the TLS client context (wss://) and the client link (the server's answers
 * up to 1 MiB, text ones UTF-8; ping_interval ms, 0: none; authorization: the handshake's
 * Authorization value, NULL: none, borrowed for the link's life). No connect yet: the side
 * calls jn_ws__client_connect. 0 or JN_E* with err. */
int jn_ws__client_start(struct ws_client *c, long long ping_interval, const char *authorization,
                        ws_event_fn fn, void *arg, struct jn_err *err);
/* Dials now unless stopped or a connection is there. 0; or JN_ENOMEM / JN_ESTOPPED: counted
 * as a failed connect and the next attempt scheduled (the caller fails what waits if it
 * should). */
int jn_ws__client_connect(struct ws_client *c);
/* Schedules the next connect: at once after a link that was up, else with backoff and full
 * jitter; logs the first failure at warn, later ones at debug. */
void jn_ws__client_retry(struct ws_client *c, const char *why);
/* 1 when e is of the current connection; 0: of one dropped (free it, ignore it). */
int jn_ws__client_owns(const struct ws_client *c, const struct ws_ev *e);
/* At WS_EV_OPEN of the current connection. */
void jn_ws__client_opened(struct ws_client *c);
/* At WS_EV_CLOSED of the current connection: forgets it, counts a failed connect when it was
 * never up, and writes why (n bytes). Returns 1 when it was up (a link lost), else 0. */
int jn_ws__client_closed(struct ws_client *c, const struct ws_ev *e, char *why, size_t n);
/* Closes the current connection with code (our choice: a late frame on it is not trusted). */
void jn_ws__client_drop(struct ws_client *c, int code, const char *why);
/* Loop, at stop: nothing new is dialled. */
void jn_ws__client_stop(struct ws_client *c);
/* Loop, at destroy: the link first (no event after it), then the timer and TLS. */
void jn_ws__client_free_link(struct ws_client *c);
void jn_ws__client_fini(struct ws_client *c);

/* The server: a listener link with its auth: methods and its connections by number. A side's
 * connection struct begins with struct ws_sconn. */
#define WS_SERVER_BUCKETS 256

struct ws_sconn {
    struct ws_sconn *hnext;
    uint64_t id;
    int refused;                 /* auth (or the side) refused it: drop what follows */
    char peer[80];
    char user[JN_AUTH_USER_MAX]; /* auth: the identity accepted, "" without auth */
};

struct ws_server {
    struct jn_channel *ch;
    struct ws_link *link;
    struct jn_auth *auth;        /* NULL: no auth: */
    struct ws_auth_log auth_log;
    struct ws_sconn *buckets[WS_SERVER_BUCKETS];
    size_t nconns;
    size_t conn_size;            /* the side's connection struct */
    int stopped;
};

/* Loop, at start: the auth: verifier and the listener link. 0 or JN_E* with err. */
int jn_ws__server_start(struct ws_server *s, struct jn_channel *ch, size_t conn_size,
                        const struct ws_listen_conf *c, const struct jn_tls_conf *tls,
                        ws_event_fn fn, void *arg, struct jn_err *err);
/* Loop, at WS_EV_OPEN: a new zeroed connection of conn_size bytes (id, peer set; user set by
 * auth), known by number. NULL: closed at once (stopping: 1001; out of memory: 1001). With
 * auth: that refuses it, the connection is returned with refused set (closing with 1008). */
struct ws_sconn *jn_ws__server_open(struct ws_server *s, const struct ws_ev *e);
struct ws_sconn *jn_ws__server_find(const struct ws_server *s, uint64_t id);
/* Forgets c (the side frees it). */
void jn_ws__server_unlink(struct ws_server *s, struct ws_sconn *c);
/* Any connection still known, or NULL (to free them all at destroy). */
struct ws_sconn *jn_ws__server_any(const struct ws_server *s);
/* Loop, at destroy: the link first (no event after it), then auth. */
void jn_ws__server_free(struct ws_server *s);

/* ---- conf checks both channels make (ws_conf.c) ---- */

/* A listener's listen, path, auth: and tls: (what: "websocket", "bridge"; example: a listen
 * value for the message). Returns the errors reported. */
int jn_ws__check_listener(const struct ws_listen_conf *c, const struct jn_tls_conf *tls,
                          const struct jn_node *node, const char *what, const char *example,
                          struct jn_diag *d);
/* A client's url, backoff pair and tls:. Returns the errors reported (1 at the first). */
int jn_ws__check_client(const char *url, long long backoff, long long max_backoff,
                        const struct jn_tls_conf *tls, const struct jn_node *node,
                        const char *what, const char *example, struct jn_diag *d);

#endif
