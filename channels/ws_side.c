/*
 * ws side: what a client and a server over a link (channels/ws_link.c) do the same in the
 * websocket channel (ws_out.c, ws_in.c) and the bridge (bridge_edge.c, bridge_hub.c): dialling
 * one url and remaking the connection with backoff and full jitter, the slots of deliveries in
 * flight, accepting connections and checking auth: on each. ws_int.h has the contract; each
 * side keeps its own protocol (acks by order or by id, the envelope, the window, dedup).
 *
 * Modelled on Fluent Bit's upstream/downstream pair that its plugins share instead of each
 * plugin dialling and accepting on its own.
 *
 * Threads: the broker's loop, all of it; lws runs on the link's thread.
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "ws_int.h"

/* ---- slots ---- */

void jn_ws__slots_push(struct ws_slots *l, struct ws_slot *s)
{
    s->next = NULL;
    s->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = s;
    } else {
        l->head = s;
    }
    l->tail = s;
    l->n++;
}

void jn_ws__slots_del(struct ws_slots *l, struct ws_slot *s)
{
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        l->head = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    } else {
        l->tail = s->prev;
    }
    s->prev = s->next = NULL;
    l->n--;
}

struct jn_delivery *jn_ws__slot_release(struct ws_slot *s, struct ws_slots *waiting,
                                        struct ws_slots *sent)
{
    struct jn_delivery *d = s->d;

    evtimer_del(s->timer);
    if (s->state == WS_SLOT_WAITING) {
        jn_ws__slots_del(waiting, s);
    } else if (s->state == WS_SLOT_SENT) {
        jn_ws__slots_del(sent, s);
    }
    s->state = WS_SLOT_FREE;
    s->d = NULL;
    return d;
}

static struct ws_slot *slot_at(void *v, size_t i, size_t size)
{
    return (struct ws_slot *)(void *)((char *)v + i * size);
}

void *jn_ws__slots_new(struct event_base *base, size_t n, size_t size,
                       void (*cb)(evutil_socket_t, short, void *), void *owner)
{
    void *v = n > 0 ? jn_calloc(n, size) : NULL;

    for (size_t i = 0; v != NULL && i < n; i++) {
        struct ws_slot *s = slot_at(v, i, size);
        s->owner = owner;
        s->timer = evtimer_new(base, cb, s);
        if (s->timer == NULL) {
            jn_ws__slots_free(v, n, size);
            return NULL;
        }
    }
    return v;
}

void jn_ws__slots_free(void *v, size_t n, size_t size)
{
    for (size_t i = 0; v != NULL && i < n; i++) {
        struct ws_slot *s = slot_at(v, i, size);
        if (s->timer != NULL) {
            event_free(s->timer);
        }
    }
    jn_free(v);
}

struct ws_slot *jn_ws__slot_take(void *v, size_t n, size_t size)
{
    for (size_t i = 0; i < n; i++) {
        struct ws_slot *s = slot_at(v, i, size);
        if (s->state == WS_SLOT_FREE && s->d == NULL) {
            return s;
        }
    }
    return NULL;
}

/* ---- the client ---- */

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    jn_ws__client_connect(arg);
}

int jn_ws__client_init(struct ws_client *c, struct jn_channel *ch, const char *url,
                       const struct jn_tls_conf *tls, long long backoff, long long max_backoff,
                       struct jn_err *err)
{
    c->ch = ch;
    c->url_text = url != NULL ? url : "";
    c->peer_word = c->peer_word != NULL ? c->peer_word : "";
    c->down_note = c->down_note != NULL ? c->down_note : "";
    c->tls_conf = tls;
    c->backoff = backoff;
    c->max_backoff = max_backoff;
    if (jn_ws__url_parse(url, &c->url) != 0) {
        return jn_err_set(err, JN_EINVAL, "url: '%s' is not a ws:// or wss:// url",
                          c->url_text);
    }
    c->reconnect = evtimer_new(ch->base, reconnect_cb, c);
    if (c->reconnect == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    return 0;
}

int jn_ws__client_start(struct ws_client *c, long long ping_interval, const char *authorization,
                        ws_event_fn fn, void *arg, struct jn_err *err)
{
    struct ws_link_conf lc = {
        .log_prefix = c->ch->log_prefix,
        .max_message = 1 << 20, /* the server's answers: acks */
        .check_utf8 = 1,
        .ping_interval = ping_interval,
        .authorization = authorization,
    };
    char what[300];

    if (c->url.tls || jn_tls_on(c->tls_conf)) {
        if (!c->url.tls) {
            return jn_err_set(err, JN_EINVAL, "tls: is set but url '%s' is not wss://",
                              c->url_text);
        }
        snprintf(what, sizeof(what), "channel '%s': tls", c->ch->name);
        c->tls = jn_tls_new(c->tls_conf, JN_TLS_CLIENT, what, err);
        if (c->tls == NULL) {
            return err->code;
        }
        lc.client_ctx = jn_tls_ctx(c->tls);
        lc.allowed_peers = &c->tls_conf->allowed_peers;
    }
    c->link = jn_ws__link_new(c->ch->base, &lc, fn, arg, err);
    if (c->link == NULL) {
        return err->code;
    }
    return 0;
}

int jn_ws__client_connect(struct ws_client *c)
{
    int rc;

    if (c->stopped || c->conn != 0) {
        return 0;
    }
    rc = jn_ws__connect(c->link, &c->url, c->tls_conf->server_name,
                        c->tls_conf->verify_peer == JN_TLS_VERIFY_FALSE, &c->conn);
    if (rc != 0) {
        c->conn = 0;
        c->failures++;
        jn_ws__client_retry(c, "out of memory");
    }
    return rc;
}

void jn_ws__client_retry(struct ws_client *c, const char *why)
{
    long long wait;
    struct timeval tv;

    if (c->stopped) {
        return;
    }
    wait = c->failures == 0 ? 0 : jn_backoff_ms(c->backoff, c->max_backoff, c->failures);
    if (c->failures == 1) {
        jn_ch_warn(c->ch, "cannot reach %s%s: %s; retrying in %lld ms (then with backoff)%s",
                   c->peer_word, c->url_text, why, wait, c->down_note);
    } else if (c->failures > 1) {
        jn_ch_debug(c->ch, "cannot reach %s%s: %s (attempt %d); retrying in %lld ms",
                    c->peer_word, c->url_text, why, c->failures, wait);
    }
    tv.tv_sec = (time_t)(wait / 1000);
    tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
    evtimer_add(c->reconnect, &tv);
}

int jn_ws__client_owns(const struct ws_client *c, const struct ws_ev *e)
{
    return c->conn != 0 && e->conn == c->conn;
}

void jn_ws__client_opened(struct ws_client *c)
{
    c->connected = 1;
    c->failures = 0;
}

int jn_ws__client_closed(struct ws_client *c, const struct ws_ev *e, char *why, size_t n)
{
    int was_up = c->connected;

    if (was_up) {
        snprintf(why, n, "connection closed (%d): %s", e->code, e->text);
        c->failures = 0;
    } else {
        snprintf(why, n, "%s%s", e->text,
                 e->code == 1008 ? " (refused our credentials: 1008)" : "");
        c->failures++;
    }
    c->conn = 0;
    c->connected = 0;
    return was_up;
}

void jn_ws__client_drop(struct ws_client *c, int code, const char *why)
{
    if (c->conn != 0) {
        jn_ws__close(c->link, c->conn, code, why);
    }
    c->conn = 0;
    c->connected = 0;
}

void jn_ws__client_stop(struct ws_client *c)
{
    c->stopped = 1;
    if (c->reconnect != NULL) {
        evtimer_del(c->reconnect);
    }
}

void jn_ws__client_free_link(struct ws_client *c)
{
    c->stopped = 1;
    jn_ws__link_free(c->link);
    c->link = NULL;
}

void jn_ws__client_fini(struct ws_client *c)
{
    jn_ws__client_free_link(c);
    if (c->reconnect != NULL) {
        event_free(c->reconnect);
        c->reconnect = NULL;
    }
    jn_tls_free(c->tls);
    c->tls = NULL;
}

/* ---- the server ---- */

int jn_ws__server_start(struct ws_server *s, struct jn_channel *ch, size_t conn_size,
                        const struct ws_listen_conf *c, const struct jn_tls_conf *tls,
                        ws_event_fn fn, void *arg, struct jn_err *err)
{
    struct ws_link_conf lc = {
        .log_prefix = ch->log_prefix,
        .listen = c->listen,
        .path = c->path,
        .tls = tls,
        .max_message = (size_t)c->max_message,
        .check_utf8 = 1,
        .max_connections = c->max_connections,
        .ping_interval = c->ping_interval,
        .allowed_peers = &tls->allowed_peers,
    };

    s->ch = ch;
    s->conn_size = conn_size;
    s->auth = jn_ws__auth_new(ch, &c->auth, err);
    if (s->auth == NULL && err->code != 0) {
        return err->code;
    }
    s->link = jn_ws__link_new(ch->base, &lc, fn, arg, err);
    if (s->link == NULL) {
        return err->code;
    }
    return 0;
}

struct ws_sconn *jn_ws__server_open(struct ws_server *s, const struct ws_ev *e)
{
    struct ws_sconn *c = s->stopped ? NULL : jn_calloc(1, s->conn_size);

    if (c == NULL) {
        jn_ws__close(s->link, e->conn, 1001, s->stopped ? "stopping" : "out of memory");
        return NULL;
    }
    c->id = e->conn;
    snprintf(c->peer, sizeof(c->peer), "%s", e->peer);
    c->hnext = s->buckets[c->id % WS_SERVER_BUCKETS];
    s->buckets[c->id % WS_SERVER_BUCKETS] = c;
    s->nconns++;
    if (s->auth != NULL &&
        !jn_ws__authorize(s->ch, s->auth, s->link, e, &s->auth_log, c->user)) {
        c->refused = 1;
    }
    return c;
}

struct ws_sconn *jn_ws__server_find(const struct ws_server *s, uint64_t id)
{
    struct ws_sconn *c = s->buckets[id % WS_SERVER_BUCKETS];

    while (c != NULL && c->id != id) {
        c = c->hnext;
    }
    return c;
}

void jn_ws__server_unlink(struct ws_server *s, struct ws_sconn *c)
{
    struct ws_sconn **pp = &s->buckets[c->id % WS_SERVER_BUCKETS];

    while (*pp != NULL && *pp != c) {
        pp = &(*pp)->hnext;
    }
    if (*pp == c) {
        *pp = c->hnext;
        s->nconns--;
    }
    c->hnext = NULL;
}

struct ws_sconn *jn_ws__server_any(const struct ws_server *s)
{
    for (size_t i = 0; i < WS_SERVER_BUCKETS; i++) {
        if (s->buckets[i] != NULL) {
            return s->buckets[i];
        }
    }
    return NULL;
}

void jn_ws__server_free(struct ws_server *s)
{
    jn_ws__link_free(s->link); /* no event after this */
    s->link = NULL;
    jn_auth_free(s->auth);
    s->auth = NULL;
}
