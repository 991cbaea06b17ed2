/*
 * jn_listener: the engine's network edge for IN channels that take TCP connections (HTTP IN,
 * MLLP IN). One module binds host:port (IPv4 or IPv6, via jn_split_hostport), sets TCP_NODELAY,
 * accepts, enforces max_connections and a per-IP limit, rests on EMFILE/ENFILE instead of
 * spinning, and hands each accepted socket with its peer address to the protocol. The protocol
 * reports each close back, so the counts stay right.
 *
 * Modelled on Fluent Bit's downstream (flb_downstream.c: one listener layer under every server
 * plugin, with the shared net.* options) and nginx's worker_connections/limit_conn.
 *
 * Two ways to use it:
 * - accept here (MLLP): jn_listener_new with an accept callback. We accept, check the limits
 *   (a refused socket is closed at once, counted and logged at most every 10 s), and call
 *   accept(arg, fd, peer, conn); conn is the connection's ticket for jn_listener_closed.
 * - accept by a library that insists on owning the evconnlistener (evhttp in libevent 2.1 has no
 *   public call that takes an accepted socket): jn_listener_new with accept NULL, then give
 *   jn_listener_lev() to the library (evhttp_bind_listener). The library accepts; the protocol
 *   calls jn_listener_opened for each connection it is told of, and jn_listener_closed when it
 *   goes. We still own bind, TCP_NODELAY, backlog and the EMFILE pause.
 *
 * At max_connections the listener is either paused (JN_LISTENER_WAIT: more peers wait in the
 * kernel's backlog until one closes) or keeps accepting and closes the extra sockets at once
 * (MLLP's behaviour). HTTP uses WAIT with refuse_slots: a few connections past the limit are
 * still taken so that each is answered 503 and closed; only past those does the listener
 * pause. Over max_connections_per_ip a socket is refused (closed, or answered by HTTP). Every
 * refusal is counted (jn_listener_stats, and the channel's counters given as conf.refused) and
 * logged at most once a minute per kind.
 *
 * TLS (issue 16): an accept-here listener given a server context (conf.tls, jn_tls.h) and an
 * accept_bev callback runs the handshake itself: the accepted socket is wrapped in an OpenSSL
 * bufferevent, and accept_bev is called only once the handshake (and the allowed_peers check
 * inside it) has passed, with the peer's identity. A failed or slow handshake (not done
 * net.handshake_timeout after the accept: a deadline, so trickling bytes does not extend it) is
 * closed, counted (tls_failed) and logged with OpenSSL's reason; the protocol
 * never sees it. Without tls, accept_bev gets a plain socket bufferevent. evhttp makes its
 * bufferevents itself, so HTTP IN and the admin build theirs in their evhttp_set_bevcb with
 * jn_listener_lib_tls_bev and evhttp drives the handshake; the same deadline applies (tied to
 * the SSL object, since evhttp owns the bufferevent).
 *
 * Loop thread only. Ownership: the listener owns its evconnlistener unless it was handed to a
 * library (accept NULL: the library frees it, e.g. evhttp_free); jn_listener_free must then be
 * called after the library has dropped it or at least before the base is freed.
 */
#ifndef JN_LISTENER_H
#define JN_LISTENER_H

#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_err.h"
#include "jn_net.h"
#include "jn_opt.h"
#include "jn_tls.h"

struct bufferevent;
struct event_base;
struct evconnlistener;
struct sockaddr;
struct jn_listener;
struct jn_listener_ip;

/* The shared `net:` option sub-table of IN channels that listen (docs/channels.md). */
struct jn_net_conf {
    long long max_connections;        /* 0: the channel's own max_connections option */
    long long max_connections_per_ip; /* 0: no per-IP limit */
    long long backlog;                /* listen(2) backlog */
    long long accept_pause;           /* ms to stop accepting after EMFILE/ENFILE */
    long long handshake_timeout;      /* ms a TLS handshake may take */
};
extern const struct jn_opt jn_net_opts[];

enum {
    JN_LISTENER_WAIT = 1 << 0, /* at max_connections pause accepting instead of closing */
};

/*
 * An accepted connection, accept-here listeners. fd is the caller's (close it, or hand it to a
 * bufferevent with BEV_OPT_CLOSE_ON_FREE); peer is "host:port" (borrowed, valid during the
 * call); conn is what jn_listener_closed takes when the connection goes. The callback must call
 * jn_listener_closed itself when it cannot set the connection up.
 */
typedef void (*jn_listener_accept_fn)(void *arg, evutil_socket_t fd, const struct sockaddr *sa,
                                      const char *peer, struct jn_listener_ip *conn);

/*
 * An accepted connection as a bufferevent (accept_bev): plain, or TLS with the handshake done.
 * The callee owns bev (BEV_OPT_CLOSE_ON_FREE; its callbacks are unset, reading and writing
 * disabled); tls_peer is jn_tls_peer_id's string of the client certificate, or NULL (borrowed,
 * valid during the call). Same rules as accept for peer and conn.
 */
typedef void (*jn_listener_bev_fn)(void *arg, struct bufferevent *bev, const char *peer,
                                   const char *tls_peer, struct jn_listener_ip *conn);

struct jn_listener_conf {
    const char *listen;            /* "host:port" */
    const char *log_prefix;        /* e.g. the channel's, "[mllp.lab_in]" */
    const struct jn_net_conf *net; /* borrowed, must outlive the listener */
    long long max_connections;     /* used when net->max_connections is 0 */
    unsigned flags;                /* JN_LISTENER_* */
    jn_listener_accept_fn accept;  /* NULL: handed to a library, see above */
    void *arg;
    jn_listener_bev_fn accept_bev; /* instead of accept: hand over a bufferevent */
    struct jn_tls *tls;            /* borrowed server context, or NULL: plain TCP */
    /* Counters to bump beside the listener's own on each refusal, indexed by
     * JN_CONN_REFUSED_* (jn_net.h): the channel's n_conn_refused; NULL: none. */
    uint64_t *refused;
    /* Library-accepted listeners with JN_LISTENER_WAIT: connections past max_connections that
     * are still taken, so the protocol can answer them (HTTP 503) before closing; the pause
     * comes at max_connections + refuse_slots. 0: pause at max_connections. */
    long long refuse_slots;
};

/* Binds and listens (enabled unless accept is NULL, when the library enables it). Returns the
 * listener, or NULL with err (JN_EINVAL bad address, JN_EIO bind, JN_ENOMEM). */
struct jn_listener *jn_listener_new(struct event_base *base, const struct jn_listener_conf *conf,
                                    struct jn_err *err);
/* The listening evconnlistener, for evhttp_bind_listener (accept NULL only). */
struct evconnlistener *jn_listener_lev(const struct jn_listener *l);
/* The bound port (useful with port 0). */
int jn_listener_port(const struct jn_listener *l);
/* Effective max_connections. */
long long jn_listener_max(const struct jn_listener *l);
/* Connections it may count at once: max_connections plus refuse_slots. */
long long jn_listener_cap(const struct jn_listener *l);

/*
 * Library-accepted listeners: a connection was accepted. sa is its peer (NULL when not known
 * yet: only the total is checked then). Returns 0 with *conn set (a NULL ticket is valid), or
 * JN_EFULL when it is over a limit (refused: counted and logged; close it and do not call
 * jn_listener_closed), or JN_ENOMEM. With JN_LISTENER_WAIT the listener pauses when the total
 * reaches max_connections (+ refuse_slots). JN_ELIMIT: over max_connections but in one of the
 * refuse_slots: counted (open and refused); answer the peer that it is refused, close it and
 * call jn_listener_closed as for any connection.
 */
int jn_listener_opened(struct jn_listener *l, const struct sockaddr *sa,
                       struct jn_listener_ip **conn);
/* Adds the per-IP check to a connection counted with sa NULL; same returns. On JN_EFULL the
 * connection stays counted: answer it if the protocol can, close it and call
 * jn_listener_closed(l, NULL). */
int jn_listener_opened_ip(struct jn_listener *l, const struct sockaddr *sa,
                          struct jn_listener_ip **conn);
/* A counted connection closed (any listener kind); conn is its ticket (may be NULL). */
void jn_listener_closed(struct jn_listener *l, struct jn_listener_ip *conn);

/*
 * A server-side TLS bufferevent in accepting state on fd (-1 for evhttp's bevcb, which sets the
 * fd), made from the listener's current context (conf.tls); NULL when out of memory. For
 * evhttp-driven listeners the handshake runs inside evhttp; failures surface as closes.
 */
struct bufferevent *jn_listener_tls_bev(struct event_base *base, struct jn_tls *tls,
                                        evutil_socket_t fd);

/*
 * For evhttp-driven listeners with tls (HTTP IN, the admin): jn_listener_tls_bev from the
 * listener's context, with net.handshake_timeout as a deadline from now (the accept): a client
 * that has not finished the handshake by then is logged as refused ("no TLS handshake within N
 * ms"), counted (tls_failed) and its socket shut down, so evhttp drops it. The deadline lives
 * with the SSL (freed with it). NULL when out of memory.
 */
struct bufferevent *jn_listener_lib_tls_bev(struct jn_listener *l, struct event_base *base);
/* 1 when ssl's handshake deadline (jn_listener_lib_tls_bev) cut it off (already logged). */
int jn_listener_tls_expired(SSL *ssl);

/* Stop accepting for good; existing connections are untouched and still report closes. */
void jn_listener_stop(struct jn_listener *l);
/* Frees the listener (and its evconnlistener unless handed to a library). NULL is a no-op.
 * Connections still open must not report closes afterwards. */
void jn_listener_free(struct jn_listener *l);

struct jn_listener_stats {
    size_t open;                /* connections counted now */
    unsigned long long accepted;
    unsigned long long refused_max;    /* over max_connections (closed at accept) */
    unsigned long long refused_per_ip; /* over max_connections_per_ip */
    unsigned long long accept_errors;  /* EMFILE/ENFILE and other accept failures */
    unsigned long long tls_failed;     /* handshakes that failed or timed out */
    int paused;                 /* not accepting right now */
};
void jn_listener_stats(const struct jn_listener *l, struct jn_listener_stats *out);

#endif
