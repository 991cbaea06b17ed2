/*
 * mllp IN: a listener that acknowledges each message once the broker has it durable. This
 * file holds the connections (accept, read, idle and write timeouts, close) and sends the ACKs;
 * what each frame becomes (the checks, the duplicate window, the ingest, the ACK) is
 * channels/mllp_in_msg.c.
 *
 * Modelled on what Mirth Connect's LLP listener does, on libevent bufferevents.
 *
 * Per connection: bytes -> framer -> one *slot* per frame, queued in arrival order. A slot
 * is ready when its ACK is known (mllp_in_msg.c says when). Ready slots leave the head of the
 * queue in order, each ACK in one write (one send() straight away on an idle plain socket,
 * else one bufferevent_write; python3-hl7's mllp_send reads each ACK with one recv). A slot
 * whose ingest is still out when its connection goes away is kept (orphaned) until the
 * callback comes, so the duplicate window learns the outcome either way; so is one answered
 * AE at delivered_timeout whose outcome is still to come (duplicates of it wait for that
 * outcome).
 *
 * Threads: everything runs on the broker's loop.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <sys/socket.h>

#include "jn_channel.h"
#include "jn_listener.h"
#include "jn_mem.h"
#include "mllp_int.h"
#include "mllp_proto.h"

/* Frames of one connection whose ACK is not sent yet; past this we stop reading from it. */
#define MLLP_MAX_PIPELINE 64

static int conn_flush(struct conn *c);
static void conn_free(struct conn *c);

/* ---- connections ---- */

static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)conn_flush(arg);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (c->closing && c->head == NULL) {
        conn_free(c);
    }
}

/*
 * One ACK onto the connection. On a plain socket with nothing queued before it, one send()
 * now: bufferevent_write would arm EPOLLOUT, wait a loop turn for it, write, and disarm it,
 * which is 2 epoll_ctl and a loop turn per message (issue 20, docs/performance.md). What
 * send() does not take (a full socket buffer), an error (the bufferevent meets it again on its
 * own write and reports it as before), TLS and anything behind queued output go through the
 * bufferevent as before, in order. 0, or -1 when the bufferevent refused the bytes.
 */
static int ack_write(struct conn *c, const char *p, size_t n)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
        bufferevent_openssl_get_ssl(c->bev) == NULL && bufferevent_getfd(c->bev) >= 0) {
        ssize_t w = send(bufferevent_getfd(c->bev), p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            jn_ch_debug(c->in->ch, "peer %s: sending an ACK: %s", c->peer, strerror(errno));
        }
    }
    return n > 0 ? bufferevent_write(c->bev, p, n) : 0;
}

/* Sends the ready ACKs at the head of the queue, in order; closes when asked and done.
 * Returns 1 when c was freed. */
static int conn_flush(struct conn *c)
{
    while (c->head && c->head->ready) {
        struct slot *s = c->head;
        c->head = s->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->nslots--;
        if (s->ack.len && !c->dead) {
            /* One call, so one write on an idle socket: an ACK never leaves in pieces. */
            if (ack_write(c, s->ack.p, s->ack.len) != 0) {
                c->closing = 1;
            }
        }
        if (s->ticket) {
            /* Answered AE at delivered_timeout, outcome still to come: kept (orphaned) for
             * the duplicate window until it does. */
            s->next = NULL;
            s->c = NULL;
        } else {
            jn_mllp__slot_free(s);
        }
    }
    if (c->paused && c->nslots < MLLP_MAX_PIPELINE / 2 && !c->closing) {
        c->paused = 0;
        bufferevent_enable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            /* Frames read before the pause wait in the input buffer, and once the peer has
             * sent its last byte no read event brings them: run the read callback for them
             * (deferred: we may be inside it). Found by test_mllp_ack_backlog. */
            bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
        }
    }
    if (c->closing && c->head == NULL) {
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            if (c->in_cb) {
                c->dead = 1;
            } else {
                conn_free(c);
                return 1;
            }
        }
        /* else conn_write_cb frees it once the output has drained */
    }
    return 0;
}

static void conn_free(struct conn *c)
{
    struct mllp_in *in = c->in;
    struct slot *s = c->head;

    if (c->in_cb) {
        c->dead = 1;
        return;
    }
    while (s) {
        struct slot *next = s->next;
        s->next = NULL;
        if (s->ticket) {
            /* The ingest is out: keep the slot until its callback, which updates the
             * duplicate window; it will not write anywhere. */
            s->c = NULL;
        } else {
            jn_mllp__slot_free(s);
        }
        s = next;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        in->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    in->nconns--;
    if (in->lst) {
        jn_listener_closed(in->lst, c->ip);
    }
    c->ip = NULL;
    jn_mllp_framer_free(&c->fr);
    event_free(c->kick);
    bufferevent_free(c->bev);
    jn_free(c->tls_peer);
    jn_ch_debug(in->ch, "peer %s: connection closed", c->peer);
    jn_free(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    char tmp[16384];

    c->in_cb = 1;
    while (!c->closing && !c->paused && evbuffer_get_length(input) > 0) {
        ev_ssize_t n = evbuffer_copyout(input, tmp, sizeof(tmp));
        size_t off = 0;
        if (n <= 0) {
            break;
        }
        while (off < (size_t)n && !c->closing) {
            struct jn_mllp_event ev;
            size_t used = 0;
            if (jn_mllp_feed(&c->fr, tmp + off, (size_t)n - off, &used, &ev) != 0) {
                jn_ch_error(c->in->ch, "peer %s: out of memory reading a frame; closing",
                            c->peer);
                c->closing = 1;
                break;
            }
            off += used;
            if (ev.kind != JN_MLLP_EV_NONE) {
                jn_mllp__handle_event(c, &ev, 0);
                if (c->nslots >= MLLP_MAX_PIPELINE) {
                    /* The peer sends faster than we answer: stop reading until we catch up. */
                    c->paused = 1;
                    bufferevent_disable(bev, EV_READ);
                    break;
                }
            }
        }
        evbuffer_drain(input, off);
    }
    c->in_cb = 0;
    if (conn_flush(c)) {
        return;
    }
    if (c->dead) {
        c->dead = 0;
        conn_free(c);
    }
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    struct mllp_in *in = c->in;
    struct jn_mllp_event ev;

    c->in_cb = 1;
    if (what & BEV_EVENT_ERROR) {
        int e = EVUTIL_SOCKET_ERROR();
        if (jn_mllp_framer_busy(&c->fr)) {
            jn_ch_warn(in->ch, "peer %s: connection error in the middle of a frame: %s",
                       c->peer, evutil_socket_error_to_string(e));
        } else {
            jn_ch_debug(in->ch, "peer %s: connection error: %s", c->peer,
                        evutil_socket_error_to_string(e));
        }
        c->dead = 1;
    } else if (what & BEV_EVENT_EOF) {
        jn_mllp_framer_end(&c->fr, &ev);
        if (ev.kind != JN_MLLP_EV_NONE) {
            /* The peer may have only shut its sending side and still read: answer if we can. */
            jn_mllp__handle_event(c, &ev, 1);
        }
        c->closing = 1;
    } else if (what & BEV_EVENT_TIMEOUT) {
        if (what & BEV_EVENT_WRITING) {
            jn_ch_warn(in->ch, "peer %s: does not read its ACKs (write timeout): closing",
                       c->peer);
            c->dead = 1;
        } else if (jn_mllp_framer_busy(&c->fr)) {
            jn_mllp_framer_end(&c->fr, &ev);
            jn_mllp__handle_event(c, &ev, 1);
            c->closing = 1;
        } else if (c->head) {
            bufferevent_enable(bev, EV_READ); /* waiting for our own ACKs: not idle */
        } else {
            jn_ch_debug(in->ch, "peer %s: idle for %lld ms: closing", c->peer,
                        in->conf->idle_timeout);
            c->dead = 1;
        }
    }
    c->in_cb = 0;
    if (!c->dead && conn_flush(c)) {
        return;
    }
    if (c->dead) {
        c->dead = 0;
        conn_free(c);
    }
}

/* The listener checked max_connections and the per-IP limit (and with tls ran the handshake);
 * the bufferevent is ours. */
static void accept_cb(void *arg, struct bufferevent *bev, const char *peer, const char *tls_peer,
                      struct jn_listener_ip *ip)
{
    struct mllp_in *in = arg;
    struct conn *c;
    struct timeval tv = jn_mllp__tv_ms(in->conf->idle_timeout);

    c = jn_calloc(1, sizeof(*c));
    if (c != NULL) {
        c->bev = bev;
        c->kick = event_new(in->ch->base, -1, 0, conn_kick_cb, c);
        c->tls_peer = tls_peer ? jn_strdup(tls_peer) : NULL;
    }
    if (c == NULL || c->kick == NULL || (tls_peer != NULL && c->tls_peer == NULL)) {
        jn_ch_error(in->ch, "peer %s: out of memory: connection closed", peer);
        bufferevent_free(bev);
        if (c) {
            if (c->kick) {
                event_free(c->kick);
            }
            jn_free(c->tls_peer);
            jn_free(c);
        }
        jn_listener_closed(in->lst, ip);
        return;
    }
    c->in = in;
    c->ip = ip;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    jn_mllp_framer_init(&c->fr, (size_t)in->conf->max_message,
                        in->conf->strict ? JN_MLLP_STRICT : 0);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = in->conns;
    if (in->conns) {
        in->conns->prev = c;
    }
    in->conns = c;
    in->nconns++;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        /* Bytes that came with the end of the TLS handshake, before our callbacks were set:
         * no new read event would bring them. */
        conn_read_cb(c->bev, c);
    }
    jn_ch_debug(in->ch, "peer %s: connected%s%s", c->peer, tls_peer ? " over TLS as " : "",
                tls_peer ? tls_peer : "");
}

/* ---- life cycle ---- */

static int in_init(struct jn_channel *ch, struct jn_err *err)
{
    struct mllp_in *in = jn_calloc(1, sizeof(*in));

    if (in == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    in->ch = ch;
    in->conf = ch->conf;
    if (in->conf->dup_window > 0) {
        size_t nb = 64;
        while (nb < (size_t)in->conf->dup_max / 4 && nb < ((size_t)1 << 20)) {
            nb *= 2;
        }
        in->buckets = jn_calloc(nb, sizeof(*in->buckets));
        if (in->buckets == NULL) {
            jn_free(in);
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        in->nbuckets = nb;
    }
    ch->state = in;
    return 0;
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mllp_in *in = ch->state;
    /* Bind, TCP_NODELAY (an ACK leaves at once), limits and the EMFILE pause: jn_listener. */
    struct jn_listener_conf lc = {in->conf->listen, ch->log_prefix, &in->conf->net,
                                  in->conf->max_connections, 0, NULL, in, accept_cb, NULL,
                                  ch->n_conn_refused, 0};
    char what[300];

    if (jn_mllp__dup_load(in, err) != 0) {
        return err->code;
    }
    if (jn_tls_on(&in->conf->tls)) {
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        in->tls = jn_tls_new(&in->conf->tls, JN_TLS_SERVER, what, err);
        if (in->tls == NULL) {
            return err->code;
        }
        lc.tls = in->tls;
    }
    in->lst = jn_listener_new(ch->base, &lc, err);
    if (in->lst == NULL) {
        return err->code;
    }
    ch->listens = 1;
    if (in->conf->ack == ACK_DELIVERED) {
        jn_ch_info(ch, "listening on mllp%s://%s (ack: delivered, delivered_timeout: %lld ms, "
                   "duplicate_window: %lld ms)", in->tls ? "+tls" : "", in->conf->listen,
                   in->conf->delivered_timeout,
                   in->conf->dup_window);
    } else {
        jn_ch_info(ch, "listening on mllp%s://%s (ack: commit, duplicate_window: %lld ms)",
                   in->tls ? "+tls" : "", in->conf->listen, in->conf->dup_window);
    }
    return 0;
}

static void in_stop(struct jn_channel *ch)
{
    struct mllp_in *in = ch->state;

    /* Open connections are still answered (new messages with AE: the broker is stopping);
     * no new ones are taken. */
    in->stopped = 1;
    jn_listener_stop(in->lst);
}

static void in_destroy(struct jn_channel *ch)
{
    struct mllp_in *in = ch->state;

    if (in == NULL) {
        return;
    }
    /* The counts end with us: the listener goes first, so the closes below report nothing. */
    jn_listener_free(in->lst);
    in->lst = NULL;
    while (in->conns) {
        in->conns->in_cb = 0;
        conn_free(in->conns);
    }
    while (in->flight) {
        struct slot *s = in->flight;
        jn_mllp__flight_unlink(s);
        jn_ingest_forget(s->ticket);
        s->ticket = NULL;
        jn_mllp__slot_free(s);
    }
    while (in->oldest) {
        struct dup *e = in->oldest;
        jn_mllp__dup_unlink(in, e);
        jn_mllp__dup_free(e);
    }
    jn_free(in->buckets);
    jn_tls_free(in->tls);
    jn_free(in);
    ch->state = NULL;
}

const struct jn_in_def jn_mllp__in = {
    .init = in_init,
    .start = in_start,
    .stop = in_stop,
    .destroy = in_destroy,
};
