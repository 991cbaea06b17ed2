/*
 * bridge hub (IN): a listener (a link, channels/ws_link.c) that many edges dial. Each binary
 * frame is one envelope (bridge_env.c); its message is ingested with the id the edge gave it,
 * the header bridge-origin (the edge's node name) and bridge-first-received (when the edge
 * received it, microseconds since the epoch), and acknowledged by id once committed. Acks that
 * are ready in the same loop turn leave in one frame per link.
 *
 * Duplicates: an edge resends what it had in flight when a link dropped, so an id may come
 * twice. The window is the journal's (jn_msg_set_dedup writes each id with its message, in the
 * same commit; jn_dedup_find reads it back): an id it holds is acknowledged again without a
 * second copy, for dedup_window. An id whose first copy is still being committed (on this link
 * or another) waits for that commit's answer: the table of those (pending) is the only one in
 * memory, bounded by what is in flight.
 *
 * Refusals: a link that auth does not accept is closed with 1008 at its opening, before any
 * envelope (jn_ws__authorize); an envelope that does not decode closes the link with 1002 (a
 * text frame: 1003) and nothing of it is journaled; what the broker refuses (journal full,
 * stopping) is nacked, and the edge retries it.
 *
 * Threads: the broker's loop; lws runs on the link's thread.
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "bridge_int.h"
#include "jn_mem.h"

#define HUB_PEND_BUCKETS 4096
#define HUB_MAX_PENDING 2048 /* per link: past it the link is not read until half answered */
#define HUB_MAX_ROWS 4096    /* edges known by name; more are served but not shown */

struct hconn {
    struct ws_sconn sc;      /* first: id, peer, user, refused (ws_int.h) */
    struct hconn *dnext;     /* in the dirty list */
    struct hub *h;
    int dirty;
    int paused;
    size_t pending;          /* its envelopes being committed */
    struct jn_buf acks;      /* ids to ack (JN_ID_LEN each) */
    struct jn_buf nacks;     /* ids to nack */
    char nack_why[160];
    char origin[JN_BRIDGE_ORIGIN_MAX];
    struct erow *row;        /* its edge's row, once the origin is known */
};

/* One edge by its origin name (the per-edge rows, docs/bridge.md#monitoring). Rows live as
 * long as the hub (a link points at its row; pends too), at most HUB_MAX_ROWS of them; a link
 * finds its row once, when its edge is named, so the linear search is not per envelope. */
struct erow {
    struct jn_link_row r;    /* r.node, r.peer point into the two below */
    char node[JN_BRIDGE_ORIGIN_MAX];
    char peer[80];
    unsigned links;          /* its links up now */
};

/* One id being committed, and the links waiting for its answer (the sender first). */
struct pend {
    struct pend *hnext;
    struct hub *h;
    struct erow *row;        /* the sender's edge, counted at the commit (NULL: none) */
    struct jn_ticket *ticket;
    char id[JN_ID_LEN + 1];
    uint64_t *waiters;
    size_t nwaiters, capwaiters;
    uint64_t first[1];
};

struct hub {
    struct jn_channel *ch;
    const struct bridge_conf *conf;
    struct ws_server srv;    /* the listener, auth:, the links (ws_side.c) */
    struct pend *pend[HUB_PEND_BUCKETS];
    size_t npend;
    struct hconn *dirty;
    struct event *flush_ev;
    struct jn_buf frame;
    struct erow **rows;      /* in the order they were made (the API's row i is rows[i]) */
    size_t nrows, caprows;
    int rows_full_noted;
};

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- per-edge rows ---- */

/* The channel's links up (and since when it had none, or some). */
static void links_add(struct hub *h, int d)
{
    unsigned was = h->ch->links_up;

    if (d < 0 && was == 0) {
        return;
    }
    h->ch->links_up = d < 0 ? was - 1 : was + 1;
    if ((was == 0) != (h->ch->links_up == 0)) {
        h->ch->link_since_us = jn_now_us();
    }
}

static struct erow *row_get(struct hub *h, const char *node)
{
    struct erow *r;

    for (size_t i = 0; i < h->nrows; i++) {
        if (strcmp(h->rows[i]->node, node) == 0) {
            return h->rows[i];
        }
    }
    if (h->nrows >= HUB_MAX_ROWS) {
        if (!h->rows_full_noted) {
            h->rows_full_noted = 1;
            jn_ch_warn(h->ch, "more than %d edges by name: edge '%s' and later ones are not "
                       "shown per edge", HUB_MAX_ROWS, node);
        }
        return NULL;
    }
    if (h->nrows == h->caprows) {
        size_t cap = h->caprows ? 2 * h->caprows : 16;
        struct erow **v = jn_realloc(h->rows, cap * sizeof(*v));
        if (v == NULL) {
            return NULL;
        }
        h->rows = v;
        h->caprows = cap;
    }
    r = jn_calloc(1, sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    snprintf(r->node, sizeof(r->node), "%s", node);
    r->r.node = r->node;
    r->r.peer = r->peer;
    h->rows[h->nrows++] = r;
    return r;
}

/* c's link now belongs to the edge named node: its row counts the link up. */
static void row_attach(struct hub *h, struct hconn *c, const char *node)
{
    struct erow *r;

    if (c->row != NULL && strcmp(c->row->node, node) == 0) {
        return;
    }
    r = row_get(h, node);
    if (c->row != NULL && --c->row->links == 0) {
        c->row->r.up = 0;
        c->row->r.since_us = jn_now_us();
    }
    c->row = r;
    if (r != NULL) {
        snprintf(r->peer, sizeof(r->peer), "%s", c->sc.peer);
        if (r->links++ == 0) {
            r->r.up = 1;
            r->r.since_us = jn_now_us();
        }
    }
}

static void row_detach(struct hconn *c)
{
    if (c->row != NULL && --c->row->links == 0) {
        c->row->r.up = 0;
        c->row->r.since_us = jn_now_us();
    }
    c->row = NULL;
}

/* jn_channel.link_row: the rows, in the order the edges were first seen. */
static int hub_link_row(struct jn_channel *ch, size_t i, struct jn_link_row *out)
{
    const struct hub *h = ch->state;

    if (h == NULL || i >= h->nrows) {
        return -1;
    }
    *out = h->rows[i]->r;
    return 0;
}

static struct hconn *conn_find(struct hub *h, uint64_t id)
{
    return (struct hconn *)jn_ws__server_find(&h->srv, id);
}

static void conn_free(struct hconn *c)
{
    struct hub *h = c->h;
    struct hconn **pp;

    jn_ws__server_unlink(&h->srv, &c->sc);
    row_detach(c);
    for (pp = &h->dirty; *pp != NULL; pp = &(*pp)->dnext) {
        if (*pp == c) {
            *pp = c->dnext;
            break;
        }
    }
    if (!c->sc.refused) {
        links_add(h, -1);
    }
    jn_buf_reset(&c->acks);
    jn_buf_reset(&c->nacks);
    jn_free(c);
}

/* ---- answers ---- */

static void mark_dirty(struct hconn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        c->dnext = c->h->dirty;
        c->h->dirty = c;
        event_active(c->h->flush_ev, EV_WRITE, 0);
    }
}

/* The answers of every link with some: one ack frame (and one nack frame) each. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hub *h = arg;

    (void)fd;
    (void)what;
    while (h->dirty != NULL) {
        struct hconn *c = h->dirty;
        h->dirty = c->dnext;
        c->dirty = 0;
        if (c->acks.len > 0 &&
            jn_bridge__ans_encode(c->acks.p, c->acks.len / JN_ID_LEN, NULL, &h->frame) == 0) {
            if (jn_ws__send(h->srv.link, c->sc.id, 1, h->frame.p, h->frame.len, 0) == 0) {
                h->ch->link_last_ack_us = jn_now_us();
                if (c->row != NULL) {
                    c->row->r.last_ack_us = h->ch->link_last_ack_us;
                }
            }
        }
        if (c->nacks.len > 0 &&
            jn_bridge__ans_encode(c->nacks.p, c->nacks.len / JN_ID_LEN, c->nack_why,
                                  &h->frame) == 0) {
            jn_ws__send(h->srv.link, c->sc.id, 1, h->frame.p, h->frame.len, 0);
        }
        /* Out of memory encoding: the edge's timeout retries them; never a wrong answer. */
        c->acks.len = 0;
        c->nacks.len = 0;
        if (c->paused && c->pending < HUB_MAX_PENDING / 2) {
            c->paused = 0;
            jn_ws__pause(h->srv.link, c->sc.id, 0);
        }
    }
}

/* Queues the answer for id on link conn (if it is still there). */
static void answer(struct hub *h, uint64_t conn, const char *id, const char *why)
{
    struct hconn *c = conn_find(h, conn);

    if (c == NULL || c->sc.refused) {
        return;
    }
    if (why == NULL) {
        if (jn_buf_append(&c->acks, id, JN_ID_LEN) != 0) {
            return; /* the edge's timeout retries it; the dedup window answers then */
        }
    } else {
        if (jn_buf_append(&c->nacks, id, JN_ID_LEN) != 0) {
            return;
        }
        snprintf(c->nack_why, sizeof(c->nack_why), "%.159s", why); /* cut to fit */
    }
    mark_dirty(c);
}

/* ---- ids being committed ---- */

static struct pend *pend_find(struct hub *h, const char *id)
{
    struct pend *p = h->pend[fnv(id, JN_ID_LEN) % HUB_PEND_BUCKETS];

    while (p != NULL && memcmp(p->id, id, JN_ID_LEN) != 0) {
        p = p->hnext;
    }
    return p;
}

static void pend_unlink(struct pend *p)
{
    struct hub *h = p->h;
    struct pend **pp = &h->pend[fnv(p->id, JN_ID_LEN) % HUB_PEND_BUCKETS];

    while (*pp != NULL && *pp != p) {
        pp = &(*pp)->hnext;
    }
    if (*pp == p) {
        *pp = p->hnext;
        h->npend--;
    }
    h->ch->link_in_flight = h->npend;
}

static void pend_free(struct pend *p)
{
    if (p->waiters != p->first) {
        jn_free(p->waiters);
    }
    jn_free(p);
}

static int pend_wait(struct pend *p, uint64_t conn)
{
    if (p->nwaiters == p->capwaiters) {
        size_t cap = p->capwaiters * 2;
        uint64_t *v = jn_malloc(cap * sizeof(*v));
        if (v == NULL) {
            return JN_ENOMEM;
        }
        memcpy(v, p->waiters, p->nwaiters * sizeof(*v));
        if (p->waiters != p->first) {
            jn_free(p->waiters);
        }
        p->waiters = v;
        p->capwaiters = cap;
    }
    p->waiters[p->nwaiters++] = conn;
    return 0;
}

static void conn_done(struct hub *h, uint64_t conn)
{
    struct hconn *c = conn_find(h, conn);

    if (c != NULL && c->pending > 0) {
        c->pending--;
    }
}

static void accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct pend *p = arg;
    struct hub *h = p->h;
    const char *why = NULL;

    (void)msg;
    p->ticket = NULL;
    pend_unlink(p);
    if (rc != 0) {
        why = err != NULL && err->msg[0] ? err->msg : jn_strerror(rc);
        jn_ch_warn(h->ch, "msg=%s: refused by the broker (nacked, the edge retries): %s",
                   p->id, why);
    } else if (p->row != NULL) {
        p->row->r.received++;
    }
    for (size_t i = 0; i < p->nwaiters; i++) {
        if (i == 0) {
            conn_done(h, p->waiters[i]);
        }
        answer(h, p->waiters[i], p->id, why);
    }
    pend_free(p);
}

/* ---- envelopes ---- */

static void refuse_conn(struct hub *h, struct hconn *c, int code, const char *why)
{
    jn_ch_warn(h->ch, "peer %s (%s): %s: closing the link with %d; nothing of it journaled",
               c->sc.peer, c->origin[0] ? c->origin : "-", why, code);
    jn_channel_note_error(h->ch, why, jn_now_us());
    if (!c->sc.refused) {
        links_add(h, -1);
    }
    c->sc.refused = 1;
    jn_ws__close(h->srv.link, c->sc.id, code, code == 1003 ? "binary envelopes only"
                                                    : "bad bridge envelope");
}

/* The link's edge is named (by an envelope or a status): logged once, its row attached. */
static void edge_named(struct hub *h, struct hconn *c, const char *origin)
{
    if (strcmp(c->origin, origin) != 0) {
        if (c->origin[0] == '\0') {
            jn_ch_info(h->ch, "peer %s: edge '%s' linked%s%s", c->sc.peer, origin,
                       c->sc.user[0] ? " as " : "", c->sc.user);
        }
        snprintf(c->origin, sizeof(c->origin), "%s", origin);
    }
    row_attach(h, c, origin);
}

static void on_envelope(struct hub *h, struct hconn *c, struct ws_ev *e)
{
    struct bridge_status st;
    struct bridge_env env;
    struct jn_err err;
    struct pend *p;
    char us[32];
    int rc;

    if (!e->binary) {
        refuse_conn(h, c, 1003, "a text frame (a bridge speaks binary envelopes)");
        return;
    }
    jn_err_clear(&err);
    rc = jn_bridge__status_decode(e->data, e->len, &st, &err);
    if (rc == 0) {
        edge_named(h, c, st.origin);
        if (c->row != NULL) {
            c->row->r.has_status = 1;
            c->row->r.queued = st.queued;
            c->row->r.in_flight = st.in_flight;
            c->row->r.status_us = jn_now_us();
        }
        return;
    }
    if (rc == 1) {
        jn_err_clear(&err);
        rc = jn_bridge__env_decode(e->data, e->len, h->ch->name, &env, &err);
    }
    if (rc == JN_ENOMEM) {
        jn_ch_error(h->ch, "peer %s: out of memory decoding an envelope: closing", c->sc.peer);
        jn_ws__close(h->srv.link, c->sc.id, 1011, "out of memory");
        return;
    }
    if (rc != 0) {
        char why[JN_ERR_MSG_MAX + 40];
        snprintf(why, sizeof(why), "bad envelope: %s", err.msg);
        refuse_conn(h, c, 1002, why);
        return;
    }
    edge_named(h, c, env.origin);
    if (c->row != NULL) {
        c->row->r.last_msg_us = jn_now_us();
    }
    /* Being committed (this link or another): wait for that commit's answer. */
    p = pend_find(h, env.msg->id);
    if (p != NULL) {
        h->ch->n_link_duplicates++;
        if (c->row != NULL) {
            c->row->r.duplicates++;
        }
        if (pend_wait(p, c->sc.id) != 0) {
            answer(h, c->sc.id, env.msg->id, "out of memory");
        }
        jn_msg_unref(&env.msg);
        return;
    }
    /* Committed within the window: acked again, no second copy. */
    if (jn_dedup_find(h->ch, env.msg->id, JN_ID_LEN, NULL) == 0) {
        h->ch->n_link_duplicates++;
        if (c->row != NULL) {
            c->row->r.duplicates++;
        }
        jn_ch_debug(h->ch, "msg=%s from %s: a duplicate within dedup_window: acked again",
                    env.msg->id, env.origin);
        answer(h, c->sc.id, env.msg->id, NULL);
        jn_msg_unref(&env.msg);
        return;
    }
    snprintf(us, sizeof(us), "%lld", (long long)env.first_us);
    p = jn_calloc(1, sizeof(*p));
    if (p == NULL || jn_msg_header_set(env.msg, "bridge-origin", env.origin) != 0 ||
        jn_msg_header_set(env.msg, "bridge-first-received", us) != 0 ||
        (c->sc.user[0] && jn_msg_header_set(env.msg, "bridge-auth-user", c->sc.user) != 0) ||
        jn_msg_set_dedup(env.msg, env.msg->id, JN_ID_LEN, h->conf->dedup_window, "", 0) != 0) {
        answer(h, c->sc.id, env.msg->id, "out of memory");
        jn_msg_unref(&env.msg);
        jn_free(p);
        return;
    }
    p->h = h;
    p->row = c->row;
    memcpy(p->id, env.msg->id, sizeof(p->id));
    p->waiters = p->first;
    p->capwaiters = 1;
    p->waiters[p->nwaiters++] = c->sc.id;
    p->ticket = jn_ingest(h->ch, env.msg, accepted, p);
    if (p->ticket == NULL) {
        answer(h, c->sc.id, p->id, "out of memory");
        pend_free(p);
        return;
    }
    p->hnext = h->pend[fnv(p->id, JN_ID_LEN) % HUB_PEND_BUCKETS];
    h->pend[fnv(p->id, JN_ID_LEN) % HUB_PEND_BUCKETS] = p;
    h->npend++;
    h->ch->link_in_flight = h->npend;
    c->pending++;
    if (!c->paused && c->pending >= HUB_MAX_PENDING) {
        c->paused = 1;
        jn_ws__pause(h->srv.link, c->sc.id, 1);
    }
}

static void on_event(void *arg, struct ws_ev *e)
{
    struct hub *h = arg;
    struct hconn *c;

    switch (e->kind) {
    case WS_EV_OPEN:
        c = (struct hconn *)jn_ws__server_open(&h->srv, e);
        if (c == NULL) {
            break;
        }
        c->h = h;
        if (c->sc.refused) {
            break;
        }
        links_add(h, 1);
        jn_ch_debug(h->ch, "peer %s: link opened", c->sc.peer);
        break;
    case WS_EV_MESSAGE:
        c = conn_find(h, e->conn);
        if (c != NULL && !c->sc.refused) {
            on_envelope(h, c, e);
        }
        break;
    case WS_EV_CLOSED:
        c = conn_find(h, e->conn);
        if (c != NULL) {
            if (!c->sc.refused) {
                h->ch->n_link_lost++;
                jn_ch_info(h->ch, "peer %s: edge '%s' unlinked (%d): %s; %zu being committed",
                           c->sc.peer, c->origin[0] ? c->origin : "-", e->code, e->text,
                           c->pending);
            }
            conn_free(c);
        }
        break;
    case WS_EV_WRITTEN:
        break;
    }
    jn_ws__ev_free(e);
}

/* ---- life cycle ---- */

static int in_init(struct jn_channel *ch, struct jn_err *err)
{
    struct hub *h = jn_calloc(1, sizeof(*h));

    if (h == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    h->ch = ch;
    h->conf = ch->conf;
    ch->state = h;
    ch->links = 1;
    ch->link_row = hub_link_row;
    h->flush_ev = event_new(ch->base, -1, 0, flush_cb, h);
    if (h->flush_ev == NULL) {
        jn_free(h);
        ch->state = NULL;
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    return 0;
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct hub *h = ch->state;
    const struct bridge_conf *c = h->conf;

    int rc = jn_ws__server_start(&h->srv, ch, sizeof(struct hconn), &c->l, &c->tls, on_event,
                                 h, err);

    if (rc != 0) {
        return rc;
    }
    jn_ch_info(ch, "hub listening on %s://%s%s (dedup_window %lld s%s)",
               jn_tls_on(&c->tls) ? "wss" : "ws", c->l.listen, c->l.path, c->dedup_window / 1000,
               h->srv.auth != NULL ? ", auth" : "");
    return 0;
}

static void in_stop(struct jn_channel *ch)
{
    struct hub *h = ch->state;

    /* Open links are still answered (new envelopes nacked: the broker is stopping); new
     * ones are closed with 1001. */
    h->srv.stopped = 1;
}

static void in_destroy(struct jn_channel *ch)
{
    struct hub *h = ch->state;

    if (h == NULL) {
        return;
    }
    jn_ws__server_free(&h->srv); /* the link first: no event after it */
    for (size_t i = 0; i < HUB_PEND_BUCKETS; i++) {
        while (h->pend[i] != NULL) {
            struct pend *p = h->pend[i];
            h->pend[i] = p->hnext;
            jn_ingest_forget(p->ticket);
            pend_free(p);
        }
    }
    while (jn_ws__server_any(&h->srv) != NULL) {
        conn_free((struct hconn *)jn_ws__server_any(&h->srv));
    }
    for (size_t i = 0; i < h->nrows; i++) {
        jn_free(h->rows[i]);
    }
    jn_free(h->rows);
    event_free(h->flush_ev);
    jn_buf_reset(&h->frame);
    jn_free(h);
    ch->state = NULL;
    ch->link_row = NULL;
    ch->links_up = 0;
}

const struct jn_in_def jn_bridge__hub = {
    .init = in_init,
    .start = in_start,
    .stop = in_stop,
    .destroy = in_destroy,
};
