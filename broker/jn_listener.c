/*
 * jn_listener: bind, accept and connection limits for listening IN channels (contract in
 * jn_listener.h). Modelled on Fluent Bit's flb_downstream.c (one listener layer, shared net.*
 * options) and nginx's limit_conn (per-address counts in a small hash).
 *
 * Per-IP counts live in a hash of entries, one per address with connections open; an entry is
 * freed when its count drops to 0, so the table holds at most max_connections entries.
 *
 * EMFILE/ENFILE: the pending connection stays in the kernel backlog and a level-triggered
 * listener would wake at once again, so the listener is disabled for net.accept_pause and one
 * warning is logged per 10 s. libevent 2.1 passes the listener's error callback the callback
 * argument, which evhttp owns once the listener is bound to it; so for library-accepted
 * listeners we find ourselves by the evconnlistener in a loop-thread list kept here (the one
 * place that knows about every such listener).
 */
#include "jn_listener.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "jn_channel.h"
#include "jn_log.h"
#include "jn_mem.h"

const struct jn_opt jn_net_opts[] = {
    JN_OPT_INT("max_connections", NULL, 0, 65536, JN_OPT_IN, struct jn_net_conf,
               max_connections,
               "Open connections at most; unset or 0: the channel's max_connections option "
               "(the same setting under its older name)."),
    JN_OPT_INT("max_connections_per_ip", "0", 0, 65536, JN_OPT_IN, struct jn_net_conf,
               max_connections_per_ip,
               "Open connections from one peer address at most; more are closed at once. 0: "
               "no per-address limit."),
    JN_OPT_INT("backlog", "128", 1, 65535, JN_OPT_IN, struct jn_net_conf, backlog,
               "Length of the kernel's queue of connections not yet accepted (listen(2); "
               "capped by net.core.somaxconn)."),
    JN_OPT_DURATION("accept_pause", "250ms", 10, 60000, JN_OPT_IN, struct jn_net_conf,
                    accept_pause,
                    "When accept fails for lack of file descriptors (EMFILE/ENFILE), stop "
                    "accepting for this long, then try again."),
    JN_OPT_DURATION("handshake_timeout", "10s", 100, 300000, JN_OPT_IN, struct jn_net_conf,
                    handshake_timeout,
                    "With tls: a client that has not finished the TLS handshake this long after "
                    "connecting is disconnected, however it trickles its bytes (MLLP, HTTP IN, "
                    "MQTT listener)."),
    JN_OPT_END,
};

#define LISTENER_WARN_US (10 * 1000000LL)
#define LISTENER_REFUSED_WARN_US (60 * 1000000LL) /* refusals: at most one line a minute */

struct jn_listener_ip {
    struct jn_listener_ip *next;
    int family;
    unsigned char addr[16];
    size_t n;
};

struct jn_listener {
    struct jn_listener *next_lib;  /* library-accepted listeners, for the error callback */
    struct event_base *base;
    struct evconnlistener *lev;
    struct event *resume_ev;
    char *prefix;
    const struct jn_net_conf *net;
    long long max;
    unsigned flags;
    jn_listener_accept_fn accept;
    void *arg;
    struct jn_listener_ip **ips;
    size_t ipmask;
    size_t open;
    unsigned long long accepted, refused_max, refused_per_ip, accept_errors, tls_failed;
    long long warned_err_us, warned_max_us, warned_ip_us;
    jn_listener_bev_fn accept_bev;
    uint64_t *refused_ext;  /* conf.refused, or NULL */
    long long cap;          /* open connections at most: max + refuse_slots */
    struct jn_tls *tls;
    struct listener_hs *hs; /* TLS handshakes under way */
    int port;
    int paused_full;  /* disabled at max_connections (JN_LISTENER_WAIT) */
    int paused_err;   /* disabled after an accept error, resume_ev pending */
    int stopped;
};

/* One TLS handshake under way (accept-here listeners with tls). */
struct listener_hs {
    struct listener_hs *prev, *next;
    struct jn_listener *l;
    struct bufferevent *bev;
    struct jn_listener_ip *conn;
    /* net.handshake_timeout from the accept: a deadline, not an idle timeout, so a client
     * that trickles its handshake a byte at a time is cut off all the same */
    struct event *deadline;
    char peer[64];
};

/* Loop thread only; see the opening comment. */
static struct jn_listener *listener__lib;

/* Accepts here (accept or accept_bev), rather than handed to a library. */
static int listener__here(const struct jn_listener *l)
{
    return l->accept != NULL || l->accept_bev != NULL;
}

static void listener__update(struct jn_listener *l)
{
    int want = !l->stopped && !l->paused_full && !l->paused_err;

    if (l->lev == NULL) {
        return;
    }
    if (want) {
        evconnlistener_enable(l->lev);
    } else {
        evconnlistener_disable(l->lev);
    }
}

static int listener__key(const struct sockaddr *sa, int *family, unsigned char addr[16])
{
    memset(addr, 0, 16);
    if (sa == NULL) {
        return -1;
    }
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else {
        return -1;
    }
    *family = sa->sa_family;
    return 0;
}

static size_t listener__hash(const struct jn_listener *l, const unsigned char addr[16])
{
    uint64_t h = 1469598103934665603ULL;

    for (int i = 0; i < 16; i++) {
        h = (h ^ addr[i]) * 1099511628211ULL;
    }
    return (size_t)h & l->ipmask;
}

static void listener__peer(const struct sockaddr *sa, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        snprintf(out, n, "%s:%d", host, port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        snprintf(out, n, "[%s]:%d", host, port);
    } else {
        snprintf(out, n, "?");
    }
}

static int listener__warn_every(long long *last, long long every_us)
{
    long long now = jn_now_us();

    if (*last == 0 || now - *last >= every_us) {
        *last = now;
        return 1;
    }
    return 0;
}

static int listener__warn_due(long long *last)
{
    return listener__warn_every(last, LISTENER_WARN_US);
}

static void listener__count_refused(struct jn_listener *l, int why)
{
    if (l->refused_ext != NULL) {
        l->refused_ext[why]++;
    }
}

/* The total check; counts the connection when it passes (or takes a refuse slot). */
static int listener__open_total(struct jn_listener *l, const struct sockaddr *sa)
{
    if (l->open >= (size_t)l->max) {
        char peer[64];
        int slot = l->open < (size_t)l->cap;
        l->refused_max++;
        listener__count_refused(l, JN_CONN_REFUSED_MAX);
        if (listener__warn_every(&l->warned_max_us, LISTENER_REFUSED_WARN_US)) {
            listener__peer(sa, peer, sizeof(peer));
            jn_log_p(JN_LOG_WARN, l->prefix, "peer %s: max_connections (%lld) reached: "
                     "connection %s (%llu so far; logged at most once a minute)", peer,
                     l->max, slot ? "answered busy and closed" : "closed at once",
                     l->refused_max);
        }
        if (!slot) {
            return JN_EFULL;
        }
        l->open++;
        if (l->open >= (size_t)l->cap) {
            l->paused_full = 1;
            listener__update(l);
        }
        return JN_ELIMIT;
    }
    l->open++;
    l->accepted++;
    if ((l->flags & JN_LISTENER_WAIT) && l->open >= (size_t)l->cap) {
        if (listener__warn_due(&l->warned_max_us)) {
            jn_log_p(JN_LOG_WARN, l->prefix, "max_connections (%lld) reached; new connections "
                     "wait until one closes", l->max);
        }
        l->paused_full = 1;
        listener__update(l);
    }
    return 0;
}

int jn_listener_opened_ip(struct jn_listener *l, const struct sockaddr *sa,
                          struct jn_listener_ip **conn)
{
    struct jn_listener_ip *e;
    unsigned char addr[16];
    int family = 0;
    size_t h;

    *conn = NULL;
    if (l->net->max_connections_per_ip <= 0 || listener__key(sa, &family, addr) != 0) {
        return 0;
    }
    h = listener__hash(l, addr);
    for (e = l->ips[h]; e != NULL; e = e->next) {
        if (e->family == family && memcmp(e->addr, addr, 16) == 0) {
            break;
        }
    }
    if (e && e->n >= (size_t)l->net->max_connections_per_ip) {
        char peer[64];
        l->refused_per_ip++;
        listener__count_refused(l, JN_CONN_REFUSED_PER_IP);
        if (listener__warn_every(&l->warned_ip_us, LISTENER_REFUSED_WARN_US)) {
            listener__peer(sa, peer, sizeof(peer));
            jn_log_p(JN_LOG_WARN, l->prefix, "peer %s: max_connections_per_ip (%lld) reached: "
                     "connection refused (%llu so far; logged at most once a minute)", peer,
                     l->net->max_connections_per_ip, l->refused_per_ip);
        }
        return JN_EFULL;
    }
    if (e == NULL) {
        e = jn_calloc(1, sizeof(*e));
        if (e == NULL) {
            return JN_ENOMEM;
        }
        e->family = family;
        memcpy(e->addr, addr, 16);
        e->next = l->ips[h];
        l->ips[h] = e;
    }
    e->n++;
    *conn = e;
    return 0;
}

int jn_listener_opened(struct jn_listener *l, const struct sockaddr *sa,
                       struct jn_listener_ip **conn)
{
    int rc;

    *conn = NULL;
    rc = listener__open_total(l, sa);
    if (rc != 0) {
        return rc;
    }
    rc = jn_listener_opened_ip(l, sa, conn);
    if (rc != 0) {
        jn_listener_closed(l, NULL);
    }
    return rc;
}

void jn_listener_closed(struct jn_listener *l, struct jn_listener_ip *conn)
{
    if (conn != NULL && --conn->n == 0) {
        struct jn_listener_ip **pp = &l->ips[listener__hash(l, conn->addr)];
        while (*pp != conn) {
            pp = &(*pp)->next;
        }
        *pp = conn->next;
        jn_free(conn);
    }
    if (l->open > 0) {
        l->open--;
    }
    if (l->paused_full && l->open < (size_t)l->cap) {
        l->paused_full = 0;
        listener__update(l);
    }
}

/*
 * The handshake deadline of evhttp-driven listeners (jn_listener_lib_tls_bev). evhttp owns the
 * bufferevent and its callbacks, so the deadline is tied to the SSL object instead: ex_data on
 * the SSL holds it, and OpenSSL's free callback for that slot frees it when the connection's
 * SSL goes, whenever evhttp frees it. At the deadline an unfinished handshake is logged as
 * refused and the socket shut down; evhttp then reads the end and frees the connection.
 */
struct listener_hsd {
    struct jn_listener *l;
    struct event *ev;
    SSL *ssl;
    int expired;
};

static int listener__hsd_idx = -1; /* loop thread; set once */

static void listener__hsd_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                               void *argp)
{
    struct listener_hsd *d = ptr;

    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (d != NULL) {
        event_free(d->ev);
        jn_free(d);
    }
}

static void listener__hsd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener_hsd *d = arg;
    struct jn_listener *l = d->l;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char why[300], peer[64] = "?";
    int sfd = SSL_get_fd(d->ssl);

    (void)fd;
    (void)what;
    if (SSL_is_init_finished(d->ssl) || sfd < 0) {
        return;
    }
    if (getpeername(sfd, (struct sockaddr *)&ss, &sl) == 0) {
        listener__peer((struct sockaddr *)&ss, peer, sizeof(peer));
    }
    d->expired = 1;
    l->tls_failed++;
    snprintf(why, sizeof(why), "no TLS handshake within %lld ms", l->net->handshake_timeout);
    jn_tls_refused(l->tls, l->prefix, peer, NULL, 0, why);
    shutdown(sfd, SHUT_RDWR);
}

/* One TLS record an answer: evhttp puts an answer's head and its body in separate chains of
 * the output buffer, and bufferevent_openssl writes each chain with its own SSL_write, so
 * every HTTPS answer went out as two records in two write() calls (strace: 2.1 writes a
 * request against 1 writev in plain HTTP). An output of at most one record's 16 KiB is made
 * one chain as it grows: a copy of the small answer for a record and a system call less. A
 * write OpenSSL has to retry after a pullup is retried with the same bytes first and more
 * after them, which it allows (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, set by libevent). */
static void listener__tls_coalesce(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                                   void *arg)
{
    (void)arg;
    if (info->n_added > 0 && evbuffer_get_length(buf) <= 16384 &&
        evbuffer_peek(buf, -1, NULL, NULL, 0) > 1) {
        evbuffer_pullup(buf, -1);
    }
}

struct bufferevent *jn_listener_lib_tls_bev(struct jn_listener *l, struct event_base *base)
{
    struct bufferevent *bev = jn_listener_tls_bev(base, l->tls, -1);
    struct timeval tv = {(time_t)(l->net->handshake_timeout / 1000),
                         (suseconds_t)(l->net->handshake_timeout % 1000 * 1000)};
    struct listener_hsd *d;

    if (bev == NULL) {
        return NULL;
    }
    if (listener__hsd_idx < 0) {
        listener__hsd_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, listener__hsd_free);
    }
    d = listener__hsd_idx >= 0 ? jn_calloc(1, sizeof(*d)) : NULL;
    if (d != NULL) {
        d->l = l;
        d->ssl = bufferevent_openssl_get_ssl(bev);
        d->ev = evtimer_new(base, listener__hsd_cb, d);
    }
    if (d == NULL || d->ev == NULL || SSL_set_ex_data(d->ssl, listener__hsd_idx, d) != 1) {
        if (d != NULL && d->ev != NULL) {
            event_free(d->ev);
        }
        jn_free(d);
        bufferevent_free(bev);
        return NULL;
    }
    evtimer_add(d->ev, &tv);
    evbuffer_add_cb(bufferevent_get_output(bev), listener__tls_coalesce, NULL);
    return bev;
}

int jn_listener_tls_expired(SSL *ssl)
{
    struct listener_hsd *d = listener__hsd_idx >= 0 && ssl != NULL
                                 ? SSL_get_ex_data(ssl, listener__hsd_idx) : NULL;

    return d != NULL && d->expired;
}

struct bufferevent *jn_listener_tls_bev(struct event_base *base, struct jn_tls *tls,
                                        evutil_socket_t fd)
{
    SSL *ssl = SSL_new(jn_tls_ctx(tls));
    struct bufferevent *bev;

    if (ssl == NULL) {
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
    }
    return bev;
}

static void listener__hs_free(struct listener_hs *h, int close)
{
    struct jn_listener *l = h->l;

    if (h->prev) {
        h->prev->next = h->next;
    } else {
        l->hs = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    if (h->deadline != NULL) {
        event_free(h->deadline);
    }
    if (close) {
        bufferevent_free(h->bev);
        jn_listener_closed(l, h->conn);
    }
    jn_free(h);
}

static void listener__hs_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener_hs *h = arg;
    struct jn_listener *l = h->l;
    char why[300];

    (void)fd;
    (void)what;
    l->tls_failed++;
    snprintf(why, sizeof(why), "no TLS handshake within %lld ms", l->net->handshake_timeout);
    jn_tls_refused(l->tls, l->prefix, h->peer, NULL, 0, why);
    listener__hs_free(h, 1);
}

static void listener__hs_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct listener_hs *h = arg;
    struct jn_listener *l = h->l;
    char why[300], id[JN_TLS_PEER_ID_MAX];
    struct jn_listener_ip *conn = h->conn;

    if (what & BEV_EVENT_CONNECTED) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        int has_id = jn_tls_peer_id(ssl, id, sizeof(id));
        char peer[64];
        memcpy(peer, h->peer, sizeof(peer));
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        bufferevent_set_timeouts(bev, NULL, NULL);
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        listener__hs_free(h, 0);
        l->accept_bev(l->arg, bev, peer, has_id ? id : NULL, conn);
        return;
    }
    l->tls_failed++;
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(why, sizeof(why), "no TLS handshake within %lld ms", l->net->handshake_timeout);
        jn_tls_refused(l->tls, l->prefix, h->peer, NULL, 0, why);
    } else {
        unsigned long e = bufferevent_get_openssl_error(bev);
        while (bufferevent_get_openssl_error(bev) != 0) {
        }
        jn_tls_refused(l->tls, l->prefix, h->peer, bufferevent_openssl_get_ssl(bev), e,
                       (what & BEV_EVENT_EOF) ? "TLS: connection closed by the peer during the "
                                                "handshake"
                                              : "TLS: connection error during the handshake");
    }
    listener__hs_free(h, 1);
}

/* Hands fd over as a bufferevent: at once when plain, after the handshake with tls. */
static void listener__bev(struct jn_listener *l, evutil_socket_t fd, const char *peer,
                          struct jn_listener_ip *conn)
{
    struct listener_hs *h;
    struct bufferevent *bev;

    evutil_make_socket_nonblocking(fd);
    if (l->tls == NULL) {
        bev = bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
            jn_log_p(JN_LOG_ERROR, l->prefix, "peer %s: out of memory: connection closed", peer);
            evutil_closesocket(fd);
            jn_listener_closed(l, conn);
            return;
        }
        l->accept_bev(l->arg, bev, peer, NULL, conn);
        return;
    }
    h = jn_calloc(1, sizeof(*h));
    if (h != NULL) {
        h->deadline = evtimer_new(l->base, listener__hs_deadline_cb, h);
    }
    bev = h && h->deadline ? jn_listener_tls_bev(l->base, l->tls, fd) : NULL;
    if (bev == NULL) {
        jn_log_p(JN_LOG_ERROR, l->prefix, "peer %s: out of memory: connection closed", peer);
        if (h != NULL && h->deadline != NULL) {
            event_free(h->deadline);
        }
        jn_free(h);
        evutil_closesocket(fd);
        jn_listener_closed(l, conn);
        return;
    }
    {
        struct timeval tv = {(time_t)(l->net->handshake_timeout / 1000),
                             (suseconds_t)(l->net->handshake_timeout % 1000 * 1000)};
        h->l = l;
        h->bev = bev;
        h->conn = conn;
        snprintf(h->peer, sizeof(h->peer), "%s", peer);
        h->next = l->hs;
        if (l->hs) {
            l->hs->prev = h;
        }
        l->hs = h;
        bufferevent_setcb(bev, NULL, NULL, listener__hs_event_cb, h);
        evtimer_add(h->deadline, &tv);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
    }
}

static void listener__accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
                                struct sockaddr *sa, int salen, void *arg)
{
    struct jn_listener *l = arg;
    struct jn_listener_ip *conn;
    char peer[64];

    (void)lev;
    (void)salen;
    if (l->stopped || jn_listener_opened(l, sa, &conn) != 0) {
        evutil_closesocket(fd);
        return;
    }
    listener__peer(sa, peer, sizeof(peer));
    if (l->accept_bev != NULL) {
        listener__bev(l, fd, peer, conn);
        return;
    }
    l->accept(l->arg, fd, sa, peer, conn);
}

static void listener__resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_listener *l = arg;

    (void)fd;
    (void)what;
    l->paused_err = 0;
    listener__update(l);
}

static void listener__error(struct jn_listener *l)
{
    int e = EVUTIL_SOCKET_ERROR();
    struct timeval tv;

    l->accept_errors++;
    if (listener__warn_due(&l->warned_err_us)) {
        jn_log_p(JN_LOG_WARN, l->prefix, "cannot accept a connection: %s; not accepting for "
                 "%lld ms (%llu accept errors so far)", evutil_socket_error_to_string(e),
                 l->net->accept_pause, l->accept_errors);
    }
    tv.tv_sec = (time_t)(l->net->accept_pause / 1000);
    tv.tv_usec = (suseconds_t)(l->net->accept_pause % 1000 * 1000);
    l->paused_err = 1;
    listener__update(l);
    evtimer_add(l->resume_ev, &tv);
}

static void listener__error_cb(struct evconnlistener *lev, void *arg)
{
    (void)lev;
    listener__error(arg);
}

/* Library-accepted: arg is the library's (evhttp's), so find ourselves by lev. */
static void listener__lib_error_cb(struct evconnlistener *lev, void *arg)
{
    struct jn_listener *l;

    (void)arg;
    for (l = listener__lib; l != NULL && l->lev != lev; l = l->next_lib) {
    }
    if (l != NULL) {
        listener__error(l);
    }
}

struct jn_listener *jn_listener_new(struct event_base *base, const struct jn_listener_conf *conf,
                                    struct jn_err *err)
{
    struct evutil_addrinfo hints, *ai = NULL;
    struct jn_listener *l;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], portstr[16];
    size_t nb = 16;
    int port, one = 1, rc;

    if (jn_split_hostport(conf->listen, host, sizeof(host), &port, 0) != 0) {
        jn_err_set(err, JN_EINVAL, "listen: '%s' is not host:port", conf->listen);
        return NULL;
    }
    l = jn_calloc(1, sizeof(*l));
    if (l == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    l->base = base;
    l->net = conf->net;
    l->max = conf->net->max_connections > 0 ? conf->net->max_connections
                                            : conf->max_connections;
    if (l->max <= 0) {
        l->max = 1;
    }
    l->cap = l->max;
    if ((conf->flags & JN_LISTENER_WAIT) && conf->accept == NULL && conf->accept_bev == NULL &&
        conf->refuse_slots > 0) {
        l->cap = l->max + conf->refuse_slots;
    }
    l->refused_ext = conf->refused;
    l->flags = conf->flags;
    l->accept = conf->accept;
    l->arg = conf->arg;
    l->accept_bev = conf->accept_bev;
    l->tls = conf->tls;
    while (nb < (size_t)l->max) {
        nb <<= 1;
    }
    l->ips = jn_calloc(nb, sizeof(*l->ips));
    l->ipmask = nb - 1;
    l->prefix = jn_strdup(conf->log_prefix ? conf->log_prefix : "listener");
    l->resume_ev = evtimer_new(base, listener__resume_cb, l);
    if (l->ips == NULL || l->prefix == NULL || l->resume_ev == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        jn_listener_free(l);
        return NULL;
    }
    /* The first address, the way evhttp_bind_socket resolves. */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = evutil_getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        jn_err_set(err, JN_EIO, "cannot listen on %s: %s", conf->listen,
                   evutil_gai_strerror(rc));
        jn_listener_free(l);
        return NULL;
    }
    l->lev = evconnlistener_new_bind(base, listener__here(l) ? listener__accept_cb : NULL,
                                     listener__here(l) ? l : NULL,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                         LEV_OPT_REUSEABLE,
                                     (int)conf->net->backlog, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (l->lev == NULL) {
        jn_err_set(err, JN_EIO, "cannot listen on %s: %s", conf->listen,
                   evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        jn_listener_free(l);
        return NULL;
    }
    evconnlistener_set_error_cb(l->lev,
                                listener__here(l) ? listener__error_cb : listener__lib_error_cb);
    /* Accepted sockets inherit TCP_NODELAY on Linux: no Nagle/delayed-ACK stalls (stack.md
     * §6). */
    if (setsockopt(evconnlistener_get_fd(l->lev), IPPROTO_TCP, TCP_NODELAY, &one,
                   sizeof(one)) != 0) {
        jn_log_p(JN_LOG_WARN, l->prefix, "cannot set TCP_NODELAY on %s", conf->listen);
    }
    if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    if (!listener__here(l)) {
        l->next_lib = listener__lib;
        listener__lib = l;
    }
    return l;
}

struct evconnlistener *jn_listener_lev(const struct jn_listener *l)
{
    return l->lev;
}

int jn_listener_port(const struct jn_listener *l)
{
    return l->port;
}

long long jn_listener_max(const struct jn_listener *l)
{
    return l->max;
}

long long jn_listener_cap(const struct jn_listener *l)
{
    return l->cap;
}

void jn_listener_stop(struct jn_listener *l)
{
    if (l == NULL) {
        return;
    }
    l->stopped = 1;
    if (l->resume_ev) {
        event_del(l->resume_ev);
    }
    listener__update(l);
}

void jn_listener_free(struct jn_listener *l)
{
    struct jn_listener **pp;

    if (l == NULL) {
        return;
    }
    for (pp = &listener__lib; *pp != NULL; pp = &(*pp)->next_lib) {
        if (*pp == l) {
            *pp = l->next_lib;
            break;
        }
    }
    while (l->hs) {
        struct listener_hs *h = l->hs;
        bufferevent_free(h->bev);
        listener__hs_free(h, 0); /* the counts end with the listener */
    }
    if (l->lev && listener__here(l)) {
        evconnlistener_free(l->lev);
    }
    if (l->resume_ev) {
        event_free(l->resume_ev);
    }
    if (l->ips) {
        for (size_t i = 0; i <= l->ipmask; i++) {
            while (l->ips[i]) {
                struct jn_listener_ip *e = l->ips[i];
                l->ips[i] = e->next;
                jn_free(e);
            }
        }
        jn_free(l->ips);
    }
    jn_free(l->prefix);
    jn_free(l);
}

void jn_listener_stats(const struct jn_listener *l, struct jn_listener_stats *out)
{
    out->open = l->open;
    out->accepted = l->accepted;
    out->refused_max = l->refused_max;
    out->refused_per_ip = l->refused_per_ip;
    out->accept_errors = l->accept_errors;
    out->tls_failed = l->tls_failed;
    out->paused = l->stopped || l->paused_full || l->paused_err;
}
