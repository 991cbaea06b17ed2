/*
 * mllp OUT: keeps connections open to one peer and waits for its ACK.
 *
 * ch->concurrency connection slots, each carrying one message at a time: <VT>msg<FS><CR>,
 * then the ACK within ack_timeout, whose MSA-2 must be the MSH-10 we sent; that ACK is handed
 * to the broker (jn_delivery_reply) for an IN channel passing it back. After a timeout or
 * a mismatch the connection is closed, because a late ACK on it would answer the wrong message.
 *
 * With tls (tls.enabled or tls.cert) each connection is an OpenSSL bufferevent made from the
 * channel's client context (jn_tls.h): the frame waits in its output buffer until the handshake
 * is done, and a handshake that fails (wrong CA, wrong name, refused client certificate) is a
 * failed attempt whose reason is OpenSSL's (retried, then dead-lettered as any other).
 *
 * Modelled on what Mirth Connect's LLP sender does, on libevent bufferevents. Threads:
 * everything runs on the broker's loop.
 */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "mllp_int.h"
#include "mllp_proto.h"

/* Largest ACK frame accepted from an OUT peer. */
#define MLLP_OUT_MAX_ACK (1024 * 1024)

/* ---- state ---- */

struct oslot {
    struct mllp_out *o;
    struct bufferevent *bev;
    int connected;
    struct jn_delivery *d;
    char id[JN_ID_LEN + 1];
    char *ctlid;
    size_t ctlid_len;
    struct event *timer;
    struct jn_mllp_framer fr;
    int in_cb;
    int drop; /* close the connection at the end of the callback */
};

struct mllp_out {
    struct jn_channel *ch;
    const struct mllp_conf *conf;
    struct sockaddr_storage sa;
    int salen; /* 0: a host name, resolved through dns */
    char host[256];
    int port;
    struct evdns_base *dns;
    struct jn_tls *tls; /* client context with tls, or NULL */
    struct oslot *slots;
    size_t nslots;
};

/* ---- sending ---- */

static void out_close(struct oslot *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    s->connected = 0;
    jn_mllp_framer_free(&s->fr);
    jn_mllp_framer_init(&s->fr, MLLP_OUT_MAX_ACK, 0);
}

/* Finishes the delivery in flight, if any; d is NULL afterwards. */
static void out_finish(struct oslot *s, enum jn_send_result r, const char *reason)
{
    struct jn_delivery *d = s->d;

    if (d == NULL) {
        return;
    }
    s->d = NULL;
    if (s->timer) {
        evtimer_del(s->timer);
    }
    jn_free(s->ctlid);
    s->ctlid = NULL;
    jn_delivery_done(d, r, reason); /* the broker logs a failed attempt */
}

static enum jn_send_result outcome(int v)
{
    return v == OUTCOME_DELIVERED ? JN_SEND_OK : v == OUTCOME_RETRY ? JN_SEND_RETRY
                                                                    : JN_SEND_REJECT;
}

static void out_ack(struct oslot *s, const char *data, size_t len)
{
    struct jn_mllp_ack a;
    struct jn_err err;
    char why[600], got[96], want[96];
    const struct mllp_conf *conf = s->o->conf;

    if (s->d == NULL) {
        jn_ch_warn(s->o->ch, "%s sent a frame while no message was waiting for an ACK: closing "
                   "the connection", conf->connect);
        s->drop = 1;
        return;
    }
    if (jn_mllp_ack_read(data, len, &a, &err) != 0) {
        s->drop = 1;
        out_finish(s, JN_SEND_RETRY, err.msg);
        return;
    }
    if (a.ctlid.len != s->ctlid_len || memcmp(a.ctlid.p, s->ctlid, s->ctlid_len) != 0) {
        jn_mllp__shown(a.ctlid.p, a.ctlid.len < 60 ? a.ctlid.len : 60, got, sizeof(got));
        jn_mllp__shown(s->ctlid, s->ctlid_len < 60 ? s->ctlid_len : 60, want, sizeof(want));
        snprintf(why, sizeof(why), "ACK is for control id '%s', expected '%s' (MSA-2 must "
                 "echo MSH-10): closing the connection", got, want);
        s->drop = 1;
        out_finish(s, JN_SEND_RETRY, why);
        return;
    }
    /* The ACK answers our message: an IN channel with ack: delivered may pass it back. */
    jn_delivery_reply(s->d, data, len);
    if (strcmp(a.code, "AA") == 0 || strcmp(a.code, "CA") == 0) {
        out_finish(s, JN_SEND_OK, NULL);
        return;
    }
    snprintf(why, sizeof(why), "peer answered %s%s%s", a.code, a.reason[0] ? ": " : "",
             a.reason);
    if (strcmp(a.code, "AE") == 0 || strcmp(a.code, "CE") == 0) {
        out_finish(s, outcome(conf->on_error), why);
    } else if (strcmp(a.code, "AR") == 0 || strcmp(a.code, "CR") == 0) {
        out_finish(s, outcome(conf->on_reject), why);
    } else {
        snprintf(why, sizeof(why), "peer answered with an unknown MSA-1 code '%.2s'", a.code);
        out_finish(s, JN_SEND_RETRY, why);
    }
}

static void out_read_cb(struct bufferevent *bev, void *arg)
{
    struct oslot *s = arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    char tmp[16384];

    s->in_cb = 1;
    while (!s->drop && evbuffer_get_length(input) > 0) {
        ev_ssize_t n = evbuffer_copyout(input, tmp, sizeof(tmp));
        size_t off = 0;
        while (n > 0 && off < (size_t)n && !s->drop) {
            struct jn_mllp_event ev;
            size_t used = 0;
            if (jn_mllp_feed(&s->fr, tmp + off, (size_t)n - off, &used, &ev) != 0) {
                s->drop = 1;
                out_finish(s, JN_SEND_RETRY, "out of memory reading the ACK");
                break;
            }
            off += used;
            if (ev.kind == JN_MLLP_EV_FRAME) {
                out_ack(s, ev.data, ev.len);
            } else if (ev.kind != JN_MLLP_EV_NONE) {
                char why[200];
                snprintf(why, sizeof(why), "%s answered with %s: closing the connection",
                         s->o->conf->connect,
                         ev.kind == JN_MLLP_EV_OVERSIZE ? "an ACK over 1 MiB"
                         : ev.kind == JN_MLLP_EV_GARBAGE ? "bytes outside an MLLP frame"
                                                         : "a broken MLLP frame");
                s->drop = 1;
                if (s->d) {
                    out_finish(s, JN_SEND_RETRY, why);
                } else {
                    jn_ch_warn(s->o->ch, "%s", why);
                }
            }
        }
        if (n <= 0) {
            break;
        }
        evbuffer_drain(input, off);
    }
    s->in_cb = 0;
    if (s->drop) {
        s->drop = 0;
        out_close(s);
    }
}

static void out_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct oslot *s = arg;
    char why[400];
    struct timeval tv = jn_mllp__tv_ms(s->o->conf->ack_timeout);

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        s->connected = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (s->d) {
            evtimer_add(s->timer, &tv); /* the message is on its way: now wait for the ACK */
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        int e = EVUTIL_SOCKET_ERROR();
        int dnserr = bufferevent_socket_get_dns_error(bev);
        char tls_why[300] = "";
        if (s->o->tls != NULL && !dnserr) {
            unsigned long te = bufferevent_get_openssl_error(bev);
            jn_tls_reason(bufferevent_openssl_get_ssl(bev), te, tls_why, sizeof(tls_why));
            while (bufferevent_get_openssl_error(bev) != 0) {
            }
        }
        if (!s->connected && tls_why[0]) {
            snprintf(why, sizeof(why), "cannot connect to %s: %s", s->o->conf->connect, tls_why);
        } else if (!s->connected) {
            snprintf(why, sizeof(why), "cannot connect to %s: %s", s->o->conf->connect,
                     dnserr ? evutil_gai_strerror(dnserr)
                            : (what & BEV_EVENT_ERROR) ? evutil_socket_error_to_string(e)
                                                       : "connection closed");
        } else {
            snprintf(why, sizeof(why), "connection to %s %s while waiting for the ACK",
                     s->o->conf->connect, (what & BEV_EVENT_EOF) ? "closed by the peer"
                                                                : "failed");
        }
        out_close(s);
        out_finish(s, JN_SEND_RETRY, why);
    }
}

static void out_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oslot *s = arg;
    char why[200];

    if (!s->connected) {
        snprintf(why, sizeof(why), "cannot connect to %s: no answer within %lld ms",
                 s->o->conf->connect, s->o->conf->connect_timeout);
    } else {
        snprintf(why, sizeof(why), "no ACK from %s within %lld ms: closing the connection",
                 s->o->conf->connect, s->o->conf->ack_timeout);
    }
    out_close(s);
    out_finish(s, JN_SEND_RETRY, why);
}

static int out_connect(struct oslot *s)
{
    struct mllp_out *o = s->o;
    int rc;

    if (o->tls != NULL) {
        SSL *ssl = jn_tls_client_ssl(o->tls, o->host);
        s->bev = ssl ? bufferevent_openssl_socket_new(o->ch->base, -1, ssl,
                                                      BUFFEREVENT_SSL_CONNECTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (s->bev == NULL) {
            SSL_free(ssl);
            return JN_ENOMEM;
        }
    } else {
        s->bev = bufferevent_socket_new(o->ch->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (s->bev == NULL) {
        return JN_ENOMEM;
    }
    bufferevent_setcb(s->bev, out_read_cb, NULL, out_event_cb, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (o->salen > 0) {
        rc = bufferevent_socket_connect(s->bev, (struct sockaddr *)&o->sa, o->salen);
    } else {
        rc = bufferevent_socket_connect_hostname(s->bev, o->dns, AF_UNSPEC, o->host, o->port);
    }
    if (rc != 0) {
        /* The event callback may have run and closed it already. */
        if (s->bev) {
            out_close(s);
        }
        return JN_EIO;
    }
    return 0;
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct mllp_out *o = ch->state;
    struct jn_msg *msg = jn_delivery_msg(d);
    struct oslot *s = NULL;
    struct jn_mllp_msh m;
    struct jn_buf frame = JN_BUF_INIT;
    struct timeval tv;

    for (size_t i = 0; i < o->nslots; i++) {
        if (o->slots[i].d == NULL) {
            s = &o->slots[i];
            break;
        }
    }
    if (s == NULL) {
        jn_delivery_done(d, JN_SEND_RETRY, "no free connection slot");
        return;
    }
    if (!jn_mllp_msh_read(msg->payload, msg->len, &m)) {
        jn_ch_warn(ch, "msg=%s rejected: the payload is not an HL7 message with MSH-10 (it "
                   "must start with MSH)", msg->id);
        jn_delivery_done(d, JN_SEND_REJECT, "the payload is not an HL7 message with MSH-10 (it "
                         "must start with MSH)");
        return;
    }
    if (memchr(msg->payload, JN_MLLP_VT, msg->len) || memchr(msg->payload, JN_MLLP_FS,
                                                             msg->len)) {
        jn_ch_warn(ch, "msg=%s rejected: the payload holds an MLLP frame byte (0x0B or 0x1C)",
                   msg->id);
        jn_delivery_done(d, JN_SEND_REJECT, "the payload holds an MLLP frame byte (0x0B or "
                         "0x1C)");
        return;
    }
    s->ctlid = jn_malloc(m.ctlid.len + 1);
    if (s->ctlid == NULL || jn_mllp_frame(msg->payload, msg->len, &frame) != 0) {
        jn_free(s->ctlid);
        s->ctlid = NULL;
        jn_buf_reset(&frame);
        jn_delivery_done(d, JN_SEND_RETRY, "out of memory");
        return;
    }
    memcpy(s->ctlid, m.ctlid.p, m.ctlid.len);
    s->ctlid_len = m.ctlid.len;
    memcpy(s->id, msg->id, sizeof(s->id));
    s->d = d;
    if (s->bev == NULL && out_connect(s) != 0) {
        char why[300];
        jn_buf_reset(&frame);
        snprintf(why, sizeof(why), "cannot connect to %s", o->conf->connect);
        out_finish(s, JN_SEND_RETRY, why);
        return;
    }
    if (s->d == NULL) {
        jn_buf_reset(&frame); /* the connect failed at once and finished it */
        return;
    }
    /* One buffer: the frame leaves in one write when the socket takes it. */
    if (bufferevent_write(s->bev, frame.p, frame.len) != 0) {
        jn_buf_reset(&frame);
        out_close(s);
        out_finish(s, JN_SEND_RETRY, "cannot queue the message for sending");
        return;
    }
    jn_buf_reset(&frame);
    tv = jn_mllp__tv_ms(s->connected ? o->conf->ack_timeout : o->conf->connect_timeout);
    evtimer_add(s->timer, &tv);
}

static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    struct mllp_out *o = jn_calloc(1, sizeof(*o));
    size_t n = ch->concurrency > 0 ? (size_t)ch->concurrency : 1;

    if (o == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->ch = ch;
    o->conf = ch->conf;
    ch->state = o;
    if (jn_split_hostport(o->conf->connect, o->host, sizeof(o->host), &o->port, 1) != 0) {
        return jn_err_set(err, JN_EINVAL, "connect: '%s' is not host:port", o->conf->connect);
    }
    o->slots = jn_calloc(n, sizeof(*o->slots));
    if (o->slots == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    o->nslots = n;
    for (size_t i = 0; i < n; i++) {
        o->slots[i].o = o;
        jn_mllp_framer_init(&o->slots[i].fr, MLLP_OUT_MAX_ACK, 0);
    }
    return 0;
}

static int out_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mllp_out *o = ch->state;
    int sl = sizeof(o->sa);

    if (jn_tls_on(&o->conf->tls)) {
        char what[300];
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        o->tls = jn_tls_new(&o->conf->tls, JN_TLS_CLIENT, what, err);
        if (o->tls == NULL) {
            return err->code;
        }
    }
    if (evutil_parse_sockaddr_port(o->conf->connect, (struct sockaddr *)&o->sa, &sl) == 0) {
        o->salen = sl;
    } else {
        o->dns = evdns_base_new(ch->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (o->dns == NULL) {
            return jn_err_set(err, JN_EIO, "cannot set up name resolution for %s",
                              o->conf->connect);
        }
    }
    for (size_t i = 0; i < o->nslots; i++) {
        o->slots[i].timer = evtimer_new(ch->base, out_timer_cb, &o->slots[i]);
        if (o->slots[i].timer == NULL) {
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
    }
    jn_ch_info(ch, "sending to mllp%s://%s (%zu connection(s), ack_timeout %lld ms)",
               o->tls ? "+tls" : "", o->conf->connect, o->nslots, o->conf->ack_timeout);
    return 0;
}

static void out_destroy(struct jn_channel *ch)
{
    struct mllp_out *o = ch->state;

    if (o == NULL) {
        return;
    }
    for (size_t i = 0; i < o->nslots; i++) {
        struct oslot *s = &o->slots[i];
        out_close(s);
        out_finish(s, JN_SEND_RETRY, "the channel is stopping");
        if (s->timer) {
            event_free(s->timer);
        }
        jn_mllp_framer_free(&s->fr);
    }
    if (o->dns) {
        evdns_base_free(o->dns, 0);
    }
    jn_free(o->slots);
    jn_tls_free(o->tls);
    jn_free(o);
    ch->state = NULL;
}

const struct jn_out_def jn_mllp__out = {
    .init = out_init,
    .start = out_start,
    .send = out_send,
    .destroy = out_destroy,
};
