/*
 * websocket IN: a listener (a link, channels/ws_link.c) whose every text or binary message is a
 * message for the broker, answered once durable with a text frame {"ack":"<id>"}, or
 * {"nack":"<reason>","retry_after":1} when the broker refuses it (the journal is full, the
 * broker is stopping), in the order the messages came on that connection.
 *
 * Per connection (by the link's number) a queue of slots, one per message, as MLLP IN keeps:
 * a slot is ready when its ingest has answered; ready slots leave the head in order, each as
 * one frame. A connection with WS_IN_MAX_PENDING unanswered messages is paused (the link stops
 * reading it) until half have been answered. A connection that closes with ingests out forgets
 * their callbacks (jn_ingest_forget): the messages still go where they were routed, and nothing
 * touches the connection after it has gone.
 *
 * Threads: everything here runs on the broker's loop; lws is on the link's thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jn_channel.h"
#include "jn_mem.h"
#include "ws_int.h"

#define WS_IN_MAX_PENDING 256

struct iconn;

struct islot {
    struct islot *next;
    struct iconn *c;
    struct jn_ticket *ticket;
    int ready;
    char *answer; /* the frame to send (malloc'd by jansson), or NULL: nothing */
};

struct iconn {
    struct ws_sconn sc;          /* first: id, peer, user, refused (ws_int.h) */
    struct ws_in *in;
    struct islot *head, *tail;
    size_t nslots;
    int paused;
    char path[256];
    char origin[256];
    char user_agent[256];
};

struct ws_in {
    struct jn_channel *ch;
    const struct ws_conf *conf;
    struct ws_server srv;        /* the listener, auth:, the connections (ws_side.c) */
};

static struct iconn *conn_find(struct ws_in *in, uint64_t id)
{
    return (struct iconn *)jn_ws__server_find(&in->srv, id);
}

static void slot_free(struct islot *s)
{
    if (s->ticket != NULL) {
        jn_ingest_forget(s->ticket);
    }
    free(s->answer);
    jn_free(s);
}

static void conn_free(struct iconn *c)
{
    jn_ws__server_unlink(&c->in->srv, &c->sc);
    while (c->head != NULL) {
        struct islot *s = c->head;
        c->head = s->next;
        slot_free(s);
    }
    jn_free(c);
}

/* Sends the answers at the head of c's queue that are known, in order. */
static void conn_flush(struct iconn *c)
{
    struct ws_in *in = c->in;

    while (c->head != NULL && c->head->ready) {
        struct islot *s = c->head;
        c->head = s->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->nslots--;
        if (s->answer != NULL &&
            jn_ws__send(in->srv.link, c->sc.id, 0, s->answer, strlen(s->answer), 0) == JN_ENOMEM) {
            jn_ch_error(in->ch, "peer %s: out of memory sending an ack: closing", c->sc.peer);
            jn_ws__close(in->srv.link, c->sc.id, 1011, "out of memory");
        }
        slot_free(s);
    }
    if (c->paused && c->nslots < WS_IN_MAX_PENDING / 2) {
        c->paused = 0;
        jn_ws__pause(in->srv.link, c->sc.id, 0);
    }
}

static char *nack_text(const char *reason)
{
    json_t *o = json_pack("{s:s, s:i}", "nack", reason, "retry_after", 1);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

    json_decref(o);
    return s;
}

static void accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct islot *s = arg;
    struct iconn *c = s->c;
    struct ws_in *in = c->in;

    s->ticket = NULL;
    s->ready = 1;
    if (rc == 0) {
        if (in->conf->ack == WS_ACK_COMMIT) {
            json_t *o = json_pack("{s:s}", "ack", msg->id);
            s->answer = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
            json_decref(o);
        }
    } else {
        const char *why = err != NULL && err->msg[0] ? err->msg : jn_strerror(rc);
        jn_ch_warn(in->ch, "peer %s: message refused by the broker (nack): %s", c->sc.peer, why);
        s->answer = nack_text(why);
    }
    conn_flush(c);
}

static int add_headers(struct jn_msg *m, const struct iconn *c, int binary)
{
    if (jn_msg_header_set(m, "ws-peer", c->sc.peer) != 0 ||
        jn_msg_header_set(m, "ws-path", c->path) != 0 ||
        jn_msg_header_set(m, "ws-opcode", binary ? "binary" : "text") != 0 ||
        (c->origin[0] && jn_msg_header_set(m, "Origin", c->origin) != 0) ||
        (c->user_agent[0] && jn_msg_header_set(m, "User-Agent", c->user_agent) != 0) ||
        (c->sc.user[0] && jn_msg_header_set(m, "auth-user", c->sc.user) != 0)) {
        return JN_ENOMEM;
    }
    return 0;
}

static void on_message(struct ws_in *in, struct ws_ev *e)
{
    struct iconn *c = conn_find(in, e->conn);
    struct islot *s;
    struct jn_msg *m;

    if (c == NULL || c->sc.refused) {
        return; /* refused by auth: closing with 1008, nothing of it is ingested */
    }
    s = jn_calloc(1, sizeof(*s));
    if (s == NULL) {
        jn_ch_error(in->ch, "peer %s: out of memory: closing", c->sc.peer);
        jn_ws__close(in->srv.link, c->sc.id, 1011, "out of memory");
        return;
    }
    s->c = c;
    if (c->tail != NULL) {
        c->tail->next = s;
    } else {
        c->head = s;
    }
    c->tail = s;
    c->nslots++;
    m = jn_msg_new_take(in->ch->name, e->data, e->len);
    e->data = NULL;
    if (m == NULL || add_headers(m, c, e->binary) != 0) {
        jn_msg_unref(&m);
        s->ready = 1;
        s->answer = nack_text("out of memory");
    } else {
        s->ticket = jn_ingest(in->ch, m, accepted, s);
        if (s->ticket == NULL) {
            s->ready = 1;
            s->answer = nack_text("out of memory");
        }
    }
    if (s->ready) {
        conn_flush(c);
    }
    if (!c->paused && c->nslots >= WS_IN_MAX_PENDING) {
        /* The client sends faster than the journal answers: stop reading until half caught up. */
        c->paused = 1;
        jn_ws__pause(in->srv.link, c->sc.id, 1);
    }
}

static void on_event(void *arg, struct ws_ev *e)
{
    struct ws_in *in = arg;
    struct iconn *c;

    switch (e->kind) {
    case WS_EV_OPEN:
        c = (struct iconn *)jn_ws__server_open(&in->srv, e);
        if (c == NULL) {
            break;
        }
        c->in = in;
        snprintf(c->path, sizeof(c->path), "%s", e->path);
        snprintf(c->origin, sizeof(c->origin), "%s", e->origin);
        snprintf(c->user_agent, sizeof(c->user_agent), "%s", e->user_agent);
        if (!c->sc.refused) {
            jn_ch_debug(in->ch, "peer %s: connected to %s", c->sc.peer, c->path);
        }
        break;
    case WS_EV_MESSAGE:
        on_message(in, e);
        break;
    case WS_EV_CLOSED:
        c = conn_find(in, e->conn);
        if (c != NULL) {
            jn_ch_debug(in->ch, "peer %s: closed (%d): %s; %zu unanswered", c->sc.peer, e->code,
                        e->text, c->nslots);
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
    struct ws_in *in = jn_calloc(1, sizeof(*in));

    if (in == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    in->ch = ch;
    in->conf = ch->conf;
    ch->state = in;
    return 0;
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct ws_in *in = ch->state;
    const struct ws_conf *c = in->conf;
    int rc = jn_ws__server_start(&in->srv, ch, sizeof(struct iconn), &c->l, &c->tls, on_event,
                                 in, err);

    if (rc != 0) {
        return rc;
    }
    jn_ch_info(ch, "listening on %s://%s%s (ack: %s)", jn_tls_on(&c->tls) ? "wss" : "ws",
               c->l.listen, c->l.path, c->ack == WS_ACK_COMMIT ? "commit" : "none");
    return 0;
}

static void in_stop(struct jn_channel *ch)
{
    struct ws_in *in = ch->state;

    /* Open connections are still answered (new messages with a nack: the broker is
     * stopping); new ones are closed with 1001. */
    in->srv.stopped = 1;
}

static void in_destroy(struct jn_channel *ch)
{
    struct ws_in *in = ch->state;

    if (in == NULL) {
        return;
    }
    /* The link first: no event comes after it is freed. */
    jn_ws__server_free(&in->srv);
    while (jn_ws__server_any(&in->srv) != NULL) {
        conn_free((struct iconn *)jn_ws__server_any(&in->srv));
    }
    jn_free(in);
    ch->state = NULL;
}

const struct jn_in_def jn_ws__in = {
    .init = in_init,
    .start = in_start,
    .stop = in_stop,
    .destroy = in_destroy,
};
