/*
 * mqtt IN as a listener (`listen:` instead of `url:`): devices connect to junction and publish;
 * junction is the MQTT server for them (3.1.1 and 5), on the codec of channels/mqtt_proto.h
 * and the shared listener of broker/jn_listener (bind, max_connections, per-IP limit, the
 * EMFILE pause, TLS with the `tls:` block). Delivering to subscribers is not built: this side
 * only takes messages in.
 *
 * Per connection:
 *   CONNECT         checked (version 4 or 5, the codec's checks), then the `auth:` methods of
 *                   broker/jn_auth (basic: the user name and password as a Basic credential,
 *                   mtls: the client certificate); CONNACK 0, or a refusal code and close.
 *   PUBLISH QoS 0   jn_ingest(); nothing is answered.
 *   PUBLISH QoS 1   jn_ingest(); PUBACK from the accept callback, after the group commit.
 *   PUBLISH QoS 2   jn_ingest(); PUBREC after the commit and the identifier marked; a PUBLISH
 *                   with a marked identifier is answered PUBREC again and not taken twice;
 *                   PUBREL clears the mark and gets PUBCOMP. Marks live with the connection.
 *   refused         nothing is written for that packet; reading stops, and once every
 *                   pending commit of the connection has answered it is closed (MQTT 5:
 *                   DISCONNECT 0x89 Server busy), so the device sends it again on its next
 *                   connection.
 *   rate_limit      a publish that finds the channel's bucket empty is held (not journaled,
 *                   not acknowledged) and reading stops; the held ones go to the broker in
 *                   order as tokens come (pub_hold, rate_cb), then are acknowledged as above.
 *   SUBSCRIBE       SUBACK with 0x80 (failure) for each filter; UNSUBSCRIBE -> UNSUBACK.
 *   PINGREQ         PINGRESP. DISCONNECT: closed, no will (MQTT 5 reason 0x04: with will).
 *   keep-alive      a connection silent for 1.5 x its keep-alive is closed (a paused one is
 *                   not judged: libevent's read timeout runs only while reading).
 *   bad bytes       CONNECT refusals get CONNACK with the reason (3.1.1: the return code
 *                   where one exists), later errors DISCONNECT with the reason (MQTT 5), then
 *                   the connection closes; counted in the channel's protocol error line.
 *   will            a will message is ingested (headers mqtt-will: true) when the connection
 *                   ends without DISCONNECT.
 *
 * A connection's pending commits keep it (c->pending): it is freed when the last answers.
 * Everything runs on the loop thread.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "jn_auth.h"
#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_listener.h"
#include "jn_mem.h"
#include "jn_rate.h"
#include "jn_time.h"
#include "jn_tls.h"
#include "mqtt_int.h"
#include "mqtt_proto.h"

/* How long a closing connection may take to flush its last packet. */
#define ML_FLUSH_MS 2000
/* Bytes read from a device per loop turn (libevent's default is 16 KiB): a device with many
 * messages in flight sends them back to back; 64 KiB takes 60 of 1 KB in one read. */
#define ML_READ_MAX (64 * 1024)

struct ml;

struct ml_conn {
    struct ml_conn *prev, *next; /* ml->conns */
    struct ml *ml;
    struct bufferevent *bev;     /* NULL once released */
    struct jn_listener_ip *ip;
    char peer[64];
    char *tls_peer;
    char *client_id;
    char *user;                  /* the identity auth accepted, or NULL */
    int version;                 /* 0 until CONNECT */
    int connected;               /* CONNACK 0 sent */
    int closing;                 /* no more reading; freed once flushed and pending is 0 */
    int in_read;
    int reading;
    int busy;                    /* a QoS 1/2 publish was refused: close when pending is 0 */
    /* rate_limit: publishes waiting for a token, in arrival order (counted in pending and
     * open; not read on meanwhile), and the timer that hands them over */
    struct ml_pub *held, *held_tail;
    struct event *rate_ev;
    size_t pending;              /* ingests without their callback yet */
    size_t open;                 /* of those, counted against the window */
    long long keepalive;         /* ms, 0: none */
    /* QoS 2 identifiers committed and PUBREC'd, PUBREL not seen */
    uint16_t *rec;
    size_t nrec, caprec;
    /* the will, copied from CONNECT */
    int has_will;
    char *will_topic;
    char *will_payload;
    size_t will_len;
    uint8_t will_qos;
    int will_retain;
};

/* One ingest waiting for its accept callback (a will has c NULL). */
struct ml_pub {
    struct ml_pub *prev, *next; /* ml->pubs */
    struct ml *ml;
    struct ml_conn *c;
    struct jn_ticket *t;
    struct jn_msg *m;           /* held (rate_limit): the message, not yet handed over */
    uint16_t id;
    uint8_t qos;
};

struct ml {
    struct jn_channel *ch;
    const struct mqtt_conf *conf;
    struct jn_listener *lst;
    struct jn_tls *tls;
    struct jn_auth *auth;
    struct ml_conn *conns;
    size_t nconns;
    struct ml_pub *pubs;
    struct jn_buf out; /* encoding scratch */
    int stopping;
    unsigned long long n_proto; /* connections closed for a protocol error */
    unsigned long long n_login; /* CONNECTs refused by auth */
    long long log_win_ms;
    unsigned log_lines;
};

static struct timeval tv_ms(long long ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* At most 20 warn lines per 10 s for what peers do wrong; the rest at debug. */
#define ml_peer_warn(ml, ...)                                                                  \
    do {                                                                                       \
        if (ml_log_ok(ml)) {                                                                   \
            jn_ch_warn((ml)->ch, __VA_ARGS__);                                                 \
        } else {                                                                               \
            jn_ch_debug((ml)->ch, __VA_ARGS__);                                                \
        }                                                                                      \
    } while (0)

static int ml_log_ok(struct ml *ml)
{
    long long now = jn_mono_ms();

    if (now - ml->log_win_ms >= 10000) {
        ml->log_win_ms = now;
        ml->log_lines = 0;
    }
    return ml->log_lines++ < 20;
}

/* ---- connection life ---- */

static void conn_read(struct ml_conn *c);

static void conn_free_now(struct ml_conn *c)
{
    jn_free(c->rec);
    jn_free(c->tls_peer);
    jn_free(c->client_id);
    jn_free(c->user);
    jn_free(c->will_topic);
    jn_free(c->will_payload);
    jn_free(c);
}

static void will_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err);

/* The will of a connection that ended without DISCONNECT: a message like any other. */
static void ingest_will(struct ml_conn *c)
{
    struct ml *ml = c->ml;
    struct jn_msg *m;
    struct ml_pub *p;

    c->has_will = 0;
    if (ml->stopping) {
        return;
    }
    m = jn_msg_new(ml->ch->name, c->will_payload, c->will_len);
    p = m != NULL ? jn_calloc(1, sizeof(*p)) : NULL;
    if (p == NULL ||
        jn_mqtt__map_headers(m, c->will_topic, 0, c->will_qos, c->will_retain) != 0 ||
        jn_msg_header_set(m, "mqtt-will", "true") != 0 ||
        jn_msg_header_set(m, "mqtt-client-id", c->client_id) != 0) {
        jn_msg_unref(&m);
        jn_free(p);
        jn_ch_warn(ml->ch, "client %s: out of memory taking its will; lost", c->client_id);
        return;
    }
    p->ml = ml;
    p->next = ml->pubs;
    if (ml->pubs != NULL) {
        ml->pubs->prev = p;
    }
    ml->pubs = p;
    p->t = jn_ingest(ml->ch, m, will_accepted, p);
    if (p->t == NULL) {
        ml->pubs = p->next;
        if (ml->pubs != NULL) {
            ml->pubs->prev = NULL;
        }
        jn_free(p);
        jn_ch_warn(ml->ch, "client %s: out of memory taking its will; lost", c->client_id);
    }
}

/* Held publishes of a connection that closes are dropped unacknowledged: the device sends
 * them again on its next connection. */
static void held_drop(struct ml_conn *c)
{
    while (c->held != NULL) {
        struct ml_pub *p = c->held;
        c->held = p->next;
        jn_msg_unref(&p->m);
        jn_free(p);
        c->pending--;
        c->open--;
    }
    c->held_tail = NULL;
    if (c->rate_ev != NULL) {
        event_free(c->rate_ev);
        c->rate_ev = NULL;
    }
}

/* The bufferevent goes, the listener is told; c itself stays while commits are pending. */
static void conn_release(struct ml_conn *c)
{
    struct ml *ml = c->ml;

    if (c->bev == NULL) {
        return;
    }
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        ml->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    ml->nconns--;
    if (ml->lst != NULL) {
        jn_listener_closed(ml->lst, c->ip);
    }
    c->ip = NULL;
    held_drop(c);
    if (c->has_will) {
        ingest_will(c);
    }
    jn_ch_debug(ml->ch, "peer %s: connection closed", c->peer);
    if (c->pending == 0 && !c->in_read) {
        conn_free_now(c);
    }
}

static void flushed_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_release(arg);
}

static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_release(arg);
}

/* Stops reading and closes once what is queued has left (at most ML_FLUSH_MS). will: whether
 * the will is sent. */
static void conn_close(struct ml_conn *c, int will)
{
    struct timeval tv = tv_ms(ML_FLUSH_MS);

    if (c->closing || c->bev == NULL) {
        return;
    }
    c->closing = 1;
    held_drop(c); /* no acknowledgement can follow now */
    if (!will) {
        c->has_will = 0;
    }
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_release(c);
        return;
    }
    bufferevent_setcb(c->bev, NULL, flushed_cb, closing_event_cb, c);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

/* Encodes p and queues it. 0, or -1: the connection is closing, and outside conn_read it
 * may have been freed (do not touch c then). */
static int conn_send(struct ml_conn *c, const struct jn_mqtt_packet *p)
{
    struct ml *ml = c->ml;
    struct jn_mqtt_err e;
    int rc;

    if (c->bev == NULL) {
        return -1;
    }
    ml->out.len = 0;
    rc = jn_mqtt_encode(p, &ml->out, &e);
    if (rc != 0 || bufferevent_write(c->bev, ml->out.p, ml->out.len) != 0) {
        jn_ch_warn(ml->ch, "peer %s: cannot send %s: %s; closing", c->peer,
                   jn_mqtt_type_name(p->type), rc == JN_EINVAL ? e.err.msg : "out of memory");
        conn_close(c, 1);
        return -1;
    }
    return 0;
}

static int send_ack(struct ml_conn *c, int type, uint16_t id, uint8_t rc)
{
    struct jn_mqtt_packet p;

    jn_mqtt_packet_init(&p, type, c->version);
    p.packet_id = id;
    p.reason_code = c->version == JN_MQTT_V5 ? rc : 0;
    return conn_send(c, &p);
}

/* A protocol failure: counted, logged, answered (CONNACK before the connection is up,
 * DISCONNECT in MQTT 5 after), closed. version: what to answer in (0: nothing can be). */
static void conn_fail(struct ml_conn *c, int version, uint8_t rc, const char *why)
{
    struct ml *ml = c->ml;
    struct jn_mqtt_packet p;
    char line[300];

    ml->n_proto++;
    snprintf(line, sizeof(line), "peer %s: %s (0x%02x); closing the connection", c->peer, why,
             rc);
    ml_peer_warn(ml, "%s", line);
    jn_channel_note_error(ml->ch, line, jn_now_us());
    if (!c->connected && version != 0) {
        uint8_t code = version == JN_MQTT_V5 ? rc : jn_mqtt_v4_connack_rc(rc);
        if (version == JN_MQTT_V5 || rc == JN_MQTT_RC_BAD_VERSION ||
            rc == JN_MQTT_RC_BAD_CLIENT_ID) {
            jn_mqtt_packet_init(&p, JN_MQTT_CONNACK, version);
            p.reason_code = code;
            c->version = version;
            (void)conn_send(c, &p);
        }
    } else if (c->connected && c->version == JN_MQTT_V5) {
        jn_mqtt_packet_init(&p, JN_MQTT_DISCONNECT, JN_MQTT_V5);
        p.reason_code = rc;
        (void)conn_send(c, &p);
    }
    conn_close(c, 1);
}

/* ---- what a device sends ---- */

static int rec_find(const struct ml_conn *c, uint16_t id)
{
    for (size_t i = 0; i < c->nrec; i++) {
        if (c->rec[i] == id) {
            return (int)i;
        }
    }
    return -1;
}

/* MQTT 4.7: does topic name t (n bytes) match filter f? A '$' topic matches no wildcard
 * first level. */
static int topic_matches(const char *f, const char *t, size_t n)
{
    size_t i = 0;

    if (n > 0 && t[0] == '$' && (f[0] == '+' || f[0] == '#')) {
        return 0;
    }
    for (;;) {
        if (f[0] == '#') {
            return 1;
        }
        if (f[0] == '+') {
            while (i < n && t[i] != '/') {
                i++;
            }
            f++;
        } else {
            while (*f != '\0' && *f != '/') {
                if (i >= n || t[i] != *f) {
                    return 0;
                }
                i++;
                f++;
            }
            if (i < n && t[i] != '/') {
                return 0;
            }
        }
        /* both at a level's end */
        if (*f == '\0') {
            return i == n;
        }
        if (i == n) {
            return f[1] == '#' && f[2] == '\0'; /* "a/#" matches "a" */
        }
        f++;
        i++;
    }
}

static int topic_allowed(const struct mqtt_conf *conf, const struct jn_mqtt_str *t)
{
    if (conf->allowed_topics.n == 0) {
        return 1;
    }
    for (size_t i = 0; i < conf->allowed_topics.n; i++) {
        if (topic_matches(conf->allowed_topics.v[i], t->p, t->len)) {
            return 1;
        }
    }
    return 0;
}

static void set_reading(struct ml_conn *c, int on)
{
    if (c->bev == NULL || c->closing || c->reading == on) {
        return;
    }
    c->reading = on;
    if (on) {
        bufferevent_enable(c->bev, EV_READ);
    } else {
        bufferevent_disable(c->bev, EV_READ);
    }
}

static void pub_unlink(struct ml *ml, struct ml_pub *p)
{
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        ml->pubs = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
}

static void will_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct ml_pub *p = arg;
    struct ml *ml = p->ml;

    pub_unlink(ml, p);
    jn_free(p);
    if (rc != 0) {
        jn_ch_warn(ml->ch, "a will message was refused by the journal (%s) and is lost",
                   err != NULL && err->msg[0] ? err->msg : jn_strerror(rc));
    } else {
        jn_ch_debug(ml->ch, "msg=%s will accepted", msg->id);
    }
}

static void pub_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct ml_pub *p = arg;
    struct ml *ml = p->ml;
    struct ml_conn *c = p->c;
    uint16_t id = p->id;
    int qos = p->qos;

    pub_unlink(ml, p);
    jn_free(p);
    c->pending--;
    c->open--;
    if (c->bev == NULL || c->closing) {
        if (c->bev == NULL && c->pending == 0 && !c->in_read) {
            conn_free_now(c);
        }
        return; /* the device sends it again on its next connection */
    }
    if (rc != 0) {
        const char *why = err != NULL && err->msg[0] ? err->msg : jn_strerror(rc);
        if (qos == 0) {
            ml_peer_warn(ml, "client %s: a QoS 0 message was refused by the journal (%s) and "
                         "is lost", c->client_id, why);
        } else {
            if (!c->busy) {
                ml_peer_warn(ml, "client %s: msg=%s refused by the journal (%s); not "
                             "acknowledged, the connection closes so the device sends it "
                             "again", c->client_id, msg != NULL ? msg->id : "?", why);
            }
            c->busy = 1;
            set_reading(c, 0);
        }
    } else if (qos == 1) {
        if (send_ack(c, JN_MQTT_PUBACK, id, 0) != 0) {
            return;
        }
    } else if (qos == 2) {
        if (rec_find(c, id) < 0) {
            if (c->nrec == c->caprec) {
                size_t cap = c->caprec ? c->caprec * 2 : 16;
                uint16_t *r = jn_realloc(c->rec, cap * sizeof(*r));
                if (r == NULL) {
                    /* Not marked: a resend would be taken twice; at least once still. */
                    jn_ch_warn(ml->ch, "client %s: out of memory marking QoS 2 packet %u",
                               c->client_id, id);
                    goto ack2;
                }
                c->rec = r;
                c->caprec = cap;
            }
            c->rec[c->nrec++] = id;
        }
    ack2:
        if (send_ack(c, JN_MQTT_PUBREC, id, 0) != 0) {
            return;
        }
    }
    if (c->busy) {
        if (c->pending == 0) {
            struct jn_mqtt_packet d;
            if (c->version == JN_MQTT_V5) {
                jn_mqtt_packet_init(&d, JN_MQTT_DISCONNECT, JN_MQTT_V5);
                d.reason_code = 0x89; /* Server busy */
                if (conn_send(c, &d) != 0) {
                    return; /* closed (and maybe freed) already */
                }
            }
            conn_close(c, 0);
        }
        return;
    }
    if (!c->reading && !c->in_read && c->open < (size_t)ml->conf->receive_max &&
        c->held == NULL) {
        set_reading(c, 1);
        conn_read(c); /* what is buffered already gets no new read event */
    }
}

/* Hands a publish counted in c's pending and open to the broker (takes m). */
static void pub_ingest(struct ml_conn *c, struct ml_pub *ip, struct jn_msg *m)
{
    struct ml *ml = c->ml;

    ip->prev = NULL;
    ip->next = ml->pubs;
    if (ml->pubs != NULL) {
        ml->pubs->prev = ip;
    }
    ml->pubs = ip;
    ip->t = jn_ingest(ml->ch, m, pub_accepted, ip);
    if (ip->t == NULL) {
        pub_unlink(ml, ip);
        jn_free(ip);
        c->pending--;
        c->open--;
        jn_ch_warn(ml->ch, "client %s: out of memory handing a message over; closing so it "
                   "comes again", c->client_id);
        conn_close(c, 0);
    }
}

/*
 * rate_limit on the MQTT listener: a publish that finds the bucket empty is not refused (MQTT
 * has no "try later" answer a device would wait on) but held, unacknowledged and not yet
 * journaled, and reading stops, so the device's in-flight window and TCP apply the brakes.
 * Once the bucket has a token the held publishes go to the broker in the order they came, and
 * each is acknowledged after its commit as usual. Publishes that come behind a held one wait
 * behind it (the order of one connection is kept).
 */
static void rate_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ml_conn *c = arg;
    struct ml *ml = c->ml;

    (void)fd;
    (void)what;
    c->in_read = 1; /* c stays while we hand over (a failed ingest may close it) */
    while (c->held != NULL && c->bev != NULL && !c->closing) {
        long long wait = jn_rate__wait_ms(ml->ch, jn_now_us());
        struct ml_pub *p = c->held;
        struct jn_msg *m;

        if (wait > 0) {
            struct timeval tv = tv_ms(wait);
            event_add(c->rate_ev, &tv);
            break;
        }
        c->held = p->next;
        if (c->held == NULL) {
            c->held_tail = NULL;
        }
        m = p->m;
        p->m = NULL;
        pub_ingest(c, p, m);
    }
    c->in_read = 0;
    if (c->bev == NULL && c->pending == 0) {
        conn_free_now(c);
        return;
    }
    if (c->held == NULL && c->bev != NULL && !c->closing && !c->busy && !c->reading &&
        c->open < (size_t)ml->conf->receive_max) {
        set_reading(c, 1);
        conn_read(c); /* what is buffered already gets no new read event */
    }
}

/* Holds a publish counted in c's pending and open until the bucket has a token (takes m). */
static void pub_hold(struct ml_conn *c, struct ml_pub *ip, struct jn_msg *m)
{
    struct ml *ml = c->ml;
    struct timeval tv;

    if (c->rate_ev == NULL) {
        c->rate_ev = event_new(ml->ch->base, -1, 0, rate_cb, c);
    }
    if (c->rate_ev == NULL) {
        jn_msg_unref(&m);
        jn_free(ip);
        c->pending--;
        c->open--;
        jn_ch_warn(ml->ch, "client %s: out of memory holding a message for the rate limit; "
                   "closing so it comes again", c->client_id);
        conn_close(c, 0);
        return;
    }
    ip->m = m;
    ip->next = NULL;
    ml->ch->n_rate_limited++; /* each publish that had to wait (junction_rate_limited_total) */
    if (c->held_tail != NULL) {
        c->held_tail->next = ip;
    } else {
        c->held = ip;
        ml_peer_warn(ml, "client %s: rate limit reached (rate_limit %g/s, burst %g); its "
                     "publishes wait unacknowledged for tokens", c->client_id,
                     ml->ch->rate_per_s, ml->ch->rate_burst);
    }
    c->held_tail = ip;
    set_reading(c, 0);
    if (!event_pending(c->rate_ev, EV_TIMEOUT, NULL)) {
        long long wait = jn_rate__wait_ms(ml->ch, jn_now_us());
        tv = tv_ms(wait > 0 ? wait : 1);
        event_add(c->rate_ev, &tv);
    }
}

static void on_publish(struct ml_conn *c, const struct jn_mqtt_packet *p)
{
    struct ml *ml = c->ml;
    struct jn_msg *m;
    struct ml_pub *ip;

    if (p->qos == 2 && rec_find(c, p->packet_id) >= 0) {
        jn_ch_debug(ml->ch, "client %s: QoS 2 packet %u sent again: already committed, PUBREC "
                    "again", c->client_id, p->packet_id);
        (void)send_ack(c, JN_MQTT_PUBREC, p->packet_id, 0);
        return;
    }
    if (JN_MQTT_HAS(&p->props, JN_MQTT_P_TOPIC_ALIAS)) {
        /* CONNACK offered no Topic Alias Maximum, so none may be used (3.3.2.3.4). */
        conn_fail(c, c->version, JN_MQTT_RC_TOPIC_ALIAS, "a topic alias junction did not allow");
        return;
    }
    if (!topic_allowed(ml->conf, &p->topic)) {
        ml_peer_warn(ml, "client %s: PUBLISH to '%.*s' refused: not in allowed_topics",
                     c->client_id, (int)(p->topic.len > 200 ? 200 : p->topic.len), p->topic.p);
        if (c->version != JN_MQTT_V5) {
            conn_fail(c, c->version, JN_MQTT_RC_NOT_AUTHORIZED, "topic not allowed");
        } else if (p->qos > 0) {
            (void)send_ack(c, p->qos == 1 ? JN_MQTT_PUBACK : JN_MQTT_PUBREC, p->packet_id,
                           JN_MQTT_RC_NOT_AUTHORIZED);
        }
        return;
    }
    if (p->retain) {
        jn_ch_debug(ml->ch, "client %s: retained flag on '%.*s' ignored (junction keeps no "
                    "retained messages); taken as a message", c->client_id,
                    (int)(p->topic.len > 200 ? 200 : p->topic.len), p->topic.p);
    }
    m = jn_msg_new(ml->ch->name, p->payload.p, p->payload.len);
    ip = m != NULL ? jn_calloc(1, sizeof(*ip)) : NULL;
    if (ip == NULL ||
        jn_mqtt__map_headers(m, p->topic.p, p->topic.len, p->qos, p->retain) != 0 ||
        (c->version == JN_MQTT_V5 && jn_mqtt__map_props(m, &p->props) != 0) ||
        jn_msg_header_set(m, "mqtt-client-id", c->client_id) != 0 ||
        (c->user != NULL && jn_msg_header_set(m, "auth-user", c->user) != 0) ||
        (c->tls_peer != NULL && jn_msg_header_set(m, "tls-peer", c->tls_peer) != 0)) {
        jn_msg_unref(&m);
        jn_free(ip);
        jn_ch_warn(ml->ch, "client %s: out of memory taking a message; closing so it comes "
                   "again", c->client_id);
        conn_close(c, 0);
        return;
    }
    ip->ml = ml;
    ip->c = c;
    ip->id = p->packet_id;
    ip->qos = p->qos;
    c->pending++;
    c->open++;
    if (c->held != NULL || jn_rate__wait_ms(ml->ch, jn_now_us()) > 0) {
        pub_hold(c, ip, m);
    } else {
        pub_ingest(c, ip, m);
    }
}

static char *str_dup(const struct jn_mqtt_str *s)
{
    return jn_strndup(s->p != NULL ? s->p : "", s->len);
}

/* The auth: methods over what CONNECT and the TLS handshake present. 0 allowed (c->user set),
 * else the CONNACK reason code. */
static uint8_t login(struct ml_conn *c, const struct jn_mqtt_connect *cc)
{
    struct ml *ml = c->ml;
    char authz[1100];
    struct jn_auth_req r;
    struct jn_auth_result res;
    SSL *ssl = ml->tls != NULL ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    X509 *cert = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;

    memset(&r, 0, sizeof(r));
    r.peer_cert = cert != NULL && SSL_get_verify_result(ssl) == X509_V_OK ? cert : NULL;
    r.peer_id = c->tls_peer;
    r.now_s = (int64_t)time(NULL);
    if (cc->has_username) {
        /* A Basic credential, the form jn_auth checks (user:password, the first ':' splits,
         * so a user name with ':' cannot log in). */
        char up[520];
        size_t ul = cc->username.len, pl = cc->has_password ? cc->password.len : 0;
        if (ul <= 255 && pl <= 255 && memchr(cc->username.p, ':', ul) == NULL) {
            memcpy(up, cc->username.p, ul);
            up[ul] = ':';
            if (pl > 0) {
                memcpy(up + ul + 1, cc->password.p, pl);
            }
            memcpy(authz, "Basic ", 6);
            EVP_EncodeBlock((unsigned char *)authz + 6, (const unsigned char *)up,
                            (int)(ul + 1 + pl));
            r.authorization = authz;
        }
    }
    if (jn_auth_verify(ml->auth, &r, &res) == 0) {
        c->user = jn_strdup(res.user);
        return c->user != NULL ? 0 : JN_MQTT_RC_UNAVAILABLE;
    }
    ml->ch->n_auth_failed[res.method]++;
    ml->n_login++;
    ml_peer_warn(ml, "peer %s: login refused (auth %s): %s", c->peer,
                 jn_auth_method_name(res.method), res.reason);
    /* No user name at all (and no accepted certificate): not authorized, as mosquitto
     * answers an anonymous client; a wrong one: bad user name or password. */
    return res.status == 403 || !cc->has_username ? JN_MQTT_RC_NOT_AUTHORIZED
                                                  : JN_MQTT_RC_BAD_LOGIN;
}

/* Another connection with this client id is closed (MQTT 3.1.4-2: the new one takes over). */
static void take_over(struct ml_conn *c)
{
    for (struct ml_conn *o = c->ml->conns; o != NULL; o = o->next) {
        if (o != c && o->connected && !o->closing && strcmp(o->client_id, c->client_id) == 0) {
            struct jn_mqtt_packet d;
            jn_ch_info(c->ml->ch, "client %s: connected again from %s; closing its connection "
                       "from %s", c->client_id, c->peer, o->peer);
            if (o->version == JN_MQTT_V5) {
                jn_mqtt_packet_init(&d, JN_MQTT_DISCONNECT, JN_MQTT_V5);
                d.reason_code = 0x8E; /* Session taken over */
                if (conn_send(o, &d) != 0) {
                    return; /* closed (and maybe freed) already */
                }
            }
            conn_close(o, 1);
            return;
        }
    }
}

static void on_connect(struct ml_conn *c, const struct jn_mqtt_packet *p)
{
    struct ml *ml = c->ml;
    const struct jn_mqtt_connect *cc = &p->connect;
    struct jn_mqtt_packet a;
    uint8_t rc;
    int assigned = 0;
    char idbuf[40];

    c->version = p->version;
    if (ml->stopping) {
        conn_fail(c, c->version, JN_MQTT_RC_UNAVAILABLE, "CONNECT while stopping");
        return;
    }
    if (JN_MQTT_HAS(&p->props, JN_MQTT_P_AUTH_METHOD)) {
        conn_fail(c, c->version, 0x8C, "extended authentication is not supported");
        return;
    }
    if (ml->auth != NULL) {
        rc = login(c, cc);
        if (rc != 0) {
            jn_mqtt_packet_init(&a, JN_MQTT_CONNACK, c->version);
            a.reason_code = c->version == JN_MQTT_V5 ? rc : jn_mqtt_v4_connack_rc(rc);
            (void)conn_send(c, &a);
            conn_close(c, 0);
            return;
        }
    }
    if (cc->client_id.len == 0) {
        /* 3.1.1 allows it with clean session only (the codec checked); 5 asks us to assign. */
        snprintf(idbuf, sizeof(idbuf), "junction-%llx-%llx", (unsigned long long)jn_now_us(),
                 (unsigned long long)(uintptr_t)c);
        c->client_id = jn_strdup(idbuf);
        assigned = c->version == JN_MQTT_V5;
    } else {
        c->client_id = str_dup(&cc->client_id);
    }
    if (cc->will) {
        c->will_topic = str_dup(&cc->will_topic);
        c->will_payload = jn_malloc(cc->will_payload.len + 1);
        if (c->will_payload != NULL && cc->will_payload.len > 0) {
            memcpy(c->will_payload, cc->will_payload.p, cc->will_payload.len);
        }
        c->will_len = cc->will_payload.len;
        c->will_qos = cc->will_qos;
        c->will_retain = cc->will_retain;
        c->has_will = c->will_topic != NULL && c->will_payload != NULL;
    }
    if (c->client_id == NULL || (cc->will && !c->has_will)) {
        conn_fail(c, c->version, JN_MQTT_RC_UNAVAILABLE, "out of memory at CONNECT");
        return;
    }
    if (cc->will && !topic_allowed(ml->conf, &cc->will_topic)) {
        c->has_will = 0;
        conn_fail(c, c->version, JN_MQTT_RC_NOT_AUTHORIZED, "will topic not in allowed_topics");
        return;
    }
    take_over(c);
    jn_mqtt_packet_init(&a, JN_MQTT_CONNACK, c->version);
    if (c->version == JN_MQTT_V5) {
        a.props.has |= (uint64_t)1 << JN_MQTT_P_RECEIVE_MAX;
        a.props.receive_max = (uint16_t)ml->conf->receive_max;
        a.props.has |= (uint64_t)1 << JN_MQTT_P_MAX_PACKET_SIZE;
        a.props.max_packet_size = (uint32_t)ml->conf->max_packet;
        a.props.has |= (uint64_t)1 << JN_MQTT_P_WILDCARD_SUB;
        a.props.has |= (uint64_t)1 << JN_MQTT_P_SUBID_AVAILABLE;
        a.props.has |= (uint64_t)1 << JN_MQTT_P_SHARED_SUB;
        if (assigned) {
            a.props.has |= (uint64_t)1 << JN_MQTT_P_ASSIGNED_CLIENT_ID;
            a.props.assigned_client_id = (struct jn_mqtt_str){c->client_id, strlen(c->client_id)};
        }
    }
    if (conn_send(c, &a) != 0) {
        return;
    }
    c->connected = 1;
    c->keepalive = (long long)cc->keep_alive * 1000;
    if (c->keepalive > 0) {
        struct timeval tv = tv_ms(c->keepalive * 3 / 2);
        bufferevent_set_timeouts(c->bev, &tv, NULL);
    } else {
        bufferevent_set_timeouts(c->bev, NULL, NULL);
    }
    jn_ch_debug(ml->ch, "peer %s: client %s connected (MQTT %s%s%s, keep-alive %u s)", c->peer,
                c->client_id, c->version == JN_MQTT_V5 ? "5" : "3.1.1", c->user ? ", as " : "",
                c->user ? c->user : "", cc->keep_alive);
}

static void on_subscribe(struct ml_conn *c, const struct jn_mqtt_packet *p, int unsub)
{
    uint8_t codes[256];
    struct jn_mqtt_packet a;
    size_t n = p->n_subs;

    if (n > sizeof(codes)) {
        conn_fail(c, c->version, JN_MQTT_RC_IMPLEMENTATION, "more than 256 topic filters");
        return;
    }
    /* Delivery to devices is not built: every subscription fails (0x80); unsubscribing
     * finds none (0x11 No subscription existed). */
    memset(codes, unsub ? 0x11 : 0x80, n);
    jn_mqtt_packet_init(&a, unsub ? JN_MQTT_UNSUBACK : JN_MQTT_SUBACK, c->version);
    a.packet_id = p->packet_id;
    if (!unsub || c->version == JN_MQTT_V5) {
        a.codes = codes;
        a.n_codes = n;
    }
    if (!unsub) {
        jn_ch_debug(c->ml->ch, "client %s: SUBSCRIBE refused (0x80): the listener does not "
                    "deliver to devices", c->client_id);
    }
    (void)conn_send(c, &a);
}

/* One whole packet. */
static void on_packet(struct ml_conn *c, const struct jn_mqtt_packet *p)
{
    char why[100];
    int idx;

    if (!c->connected) {
        if (p->type == JN_MQTT_CONNECT) {
            on_connect(c, p);
            return;
        }
        snprintf(why, sizeof(why), "%s before CONNECT", jn_mqtt_type_name(p->type));
        conn_fail(c, 0, JN_MQTT_RC_PROTOCOL, why);
        return;
    }
    switch (p->type) {
    case JN_MQTT_PUBLISH:
        on_publish(c, p);
        return;
    case JN_MQTT_PUBREL:
        idx = rec_find(c, p->packet_id);
        if (idx >= 0) {
            c->rec[idx] = c->rec[--c->nrec];
        }
        /* Unknown identifier: completed too (it was committed before a PUBREC could leave). */
        (void)send_ack(c, JN_MQTT_PUBCOMP, p->packet_id, 0);
        return;
    case JN_MQTT_SUBSCRIBE:
        on_subscribe(c, p, 0);
        return;
    case JN_MQTT_UNSUBSCRIBE:
        on_subscribe(c, p, 1);
        return;
    case JN_MQTT_PINGREQ: {
        struct jn_mqtt_packet a;
        jn_mqtt_packet_init(&a, JN_MQTT_PINGRESP, c->version);
        (void)conn_send(c, &a);
        return;
    }
    case JN_MQTT_DISCONNECT:
        /* MQTT 5 reason 0x04: Disconnect with Will Message. */
        conn_close(c, c->version == JN_MQTT_V5 && p->reason_code == 0x04);
        return;
    default:
        break;
    }
    snprintf(why, sizeof(why), "unexpected %s", jn_mqtt_type_name(p->type));
    conn_fail(c, c->version, JN_MQTT_RC_PROTOCOL, why);
}

/* The protocol level a CONNECT that failed to decode asked for, to answer in (0: unknown). */
static int connect_level(const unsigned char *d, size_t n)
{
    size_t i = 1;

    if (n < 2 || (d[0] >> 4) != JN_MQTT_CONNECT) {
        return 0;
    }
    while (i < n && i < 5 && (d[i] & 0x80)) {
        i++;
    }
    i++; /* past the remaining length */
    if (i + 7 > n || d[i] != 0 || d[i + 1] != 4 || memcmp(d + i + 2, "MQTT", 4) != 0) {
        return 0;
    }
    return d[i + 6] == JN_MQTT_V5 ? JN_MQTT_V5 : JN_MQTT_V311;
}

static void conn_read(struct ml_conn *c)
{
    struct ml *ml = c->ml;

    c->in_read = 1;
    while (c->bev != NULL && !c->closing) {
        struct evbuffer *input = bufferevent_get_input(c->bev);
        size_t len = evbuffer_get_length(input), head, n = 0;
        struct jn_mqtt_packet p;
        struct jn_mqtt_err e;
        enum jn_mqtt_frame_res fr;
        unsigned char *data;
        char why[300];

        if (len == 0) {
            break;
        }
        if (c->open >= (size_t)ml->conf->receive_max || c->busy || c->held != NULL) {
            /* the window is full, or the rate limit holds publishes: read on as commits
             * answer, or once the held ones are handed over */
            set_reading(c, 0);
            break;
        }
        head = len < 5 ? len : 5;
        data = evbuffer_pullup(input, (ev_ssize_t)head);
        fr = jn_mqtt_frame(data, head, (size_t)ml->conf->max_packet, &n, &e);
        if (fr == JN_MQTT_FRAME_MORE && n <= len) {
            data = evbuffer_pullup(input, (ev_ssize_t)n);
            fr = jn_mqtt_frame(data, n, (size_t)ml->conf->max_packet, &n, &e);
        }
        if (fr == JN_MQTT_FRAME_MORE) {
            break;
        }
        if (fr == JN_MQTT_FRAME_PACKET && data == NULL) {
            conn_close(c, 1);
            break;
        }
        if (fr == JN_MQTT_FRAME_PACKET &&
            jn_mqtt_decode(data, n, c->version ? c->version : JN_MQTT_V5, &p, &e) == 0) {
            on_packet(c, &p);
            if (c->bev != NULL) {
                evbuffer_drain(input, n);
            }
            continue;
        }
        snprintf(why, sizeof(why), "bad packet: %.200s", e.err.msg);
        conn_fail(c, c->connected ? c->version : connect_level(data, fr == JN_MQTT_FRAME_PACKET
                                                                     ? n : head),
                  e.rc, why);
        break;
    }
    c->in_read = 0;
    if (c->bev == NULL && c->pending == 0) {
        conn_free_now(c);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_read(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct ml_conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_TIMEOUT) {
        struct ml *ml = c->ml;
        ml->n_proto++;
        if (c->connected) {
            ml_peer_warn(ml, "client %s: silent for 1.5 x its keep-alive (%lld s); closing",
                         c->client_id, c->keepalive / 1000);
        } else {
            ml_peer_warn(ml, "peer %s: no CONNECT within connect_timeout; closing", c->peer);
        }
        conn_close(c, 1);
        return;
    }
    /* EOF or error: nothing more can be sent. Without DISCONNECT (not closing), the will goes;
     * a closing connection decided that already. */
    c->closing = 1;
    conn_release(c);
}

static void accept_cb(void *arg, struct bufferevent *bev, const char *peer, const char *tls_peer,
                      struct jn_listener_ip *ip)
{
    struct ml *ml = arg;
    struct ml_conn *c = jn_calloc(1, sizeof(*c));
    struct timeval tv = tv_ms(ml->conf->connect_timeout);

    if (c != NULL && tls_peer != NULL) {
        c->tls_peer = jn_strdup(tls_peer);
    }
    if (c == NULL || (tls_peer != NULL && c->tls_peer == NULL) || ml->stopping) {
        if (!ml->stopping) {
            jn_ch_error(ml->ch, "peer %s: out of memory: connection closed", peer);
        }
        bufferevent_free(bev);
        if (c != NULL) {
            jn_free(c->tls_peer);
            jn_free(c);
        }
        jn_listener_closed(ml->lst, ip);
        return;
    }
    c->ml = ml;
    c->bev = bev;
    c->ip = ip;
    c->reading = 1;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->next = ml->conns;
    if (ml->conns != NULL) {
        ml->conns->prev = c;
    }
    ml->conns = c;
    ml->nconns++;
    bufferevent_setcb(bev, read_cb, NULL, event_cb, c);
    (void)bufferevent_set_max_single_read(bev, ML_READ_MAX); /* only fails on < 0 */
    bufferevent_set_timeouts(bev, &tv, NULL); /* CONNECT must come within connect_timeout */
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
        conn_read(c); /* bytes that came with the end of the TLS handshake */
    }
}

/* ---- life cycle ---- */

static int ml_init(struct jn_channel *ch, struct jn_err *err)
{
    struct ml *ml = jn_calloc(1, sizeof(*ml));

    if (ml == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    ml->ch = ch;
    ml->conf = ch->conf;
    ch->state = ml;
    return 0;
}

static int ml_start(struct jn_channel *ch, struct jn_err *err)
{
    struct ml *ml = ch->state;
    const struct mqtt_conf *c = ml->conf;
    struct jn_listener_conf lc = {c->listen, ch->log_prefix, &c->net, c->max_connections, 0,
                                  NULL, ml, accept_cb, NULL, ch->n_conn_refused, 0};
    char what[300];

    if (jn_tls_on(&c->tls)) {
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        ml->tls = jn_tls_new(&c->tls, JN_TLS_SERVER, what, err);
        if (ml->tls == NULL) {
            return err->code;
        }
        lc.tls = ml->tls;
    }
    if (c->auth.n > 0) {
        ml->auth = jn_auth_new(&c->auth, ch->log_prefix, err);
        if (ml->auth == NULL) {
            return err->code;
        }
        ch->auth_methods = 1u << JN_AUTH_NONE;
        for (size_t i = 0; i < c->auth.n; i++) {
            ch->auth_methods |= 1u << ((const struct jn_auth_conf *)c->auth.v)[i].type;
        }
    }
    ml->lst = jn_listener_new(ch->base, &lc, err);
    if (ml->lst == NULL) {
        return err->code;
    }
    ch->listens = 1;
    jn_ch_info(ch, "listening on mqtt%s://%s (MQTT 5 and 3.1.1, %s, receive_maximum %lld)",
               ml->tls ? "s" : "", c->listen, ml->auth ? "auth on" : "anyone may connect",
               c->receive_max);
    return 0;
}

static void ml_stop(struct jn_channel *ch)
{
    struct ml *ml = ch->state;

    if (ml == NULL) {
        return;
    }
    /* Connections stay until destroy, so commits under way are still acknowledged. */
    ml->stopping = 1;
    jn_listener_stop(ml->lst);
}

static void ml_destroy(struct jn_channel *ch)
{
    struct ml *ml = ch->state;

    if (ml == NULL) {
        return;
    }
    ml->stopping = 1; /* no wills from the closes below */
    jn_listener_free(ml->lst);
    ml->lst = NULL;
    /* The acknowledgements written since the loop's last turn: one try to get them out. */
    for (struct ml_conn *c = ml->conns; c != NULL; c = c->next) {
        if (ml->tls == NULL && c->bev != NULL) {
            (void)evbuffer_write(bufferevent_get_output(c->bev), bufferevent_getfd(c->bev));
        }
        c->has_will = 0;
    }
    while (ml->pubs != NULL) {
        struct ml_pub *p = ml->pubs;
        ml->pubs = p->next;
        jn_ingest_forget(p->t);
        if (p->c != NULL && --p->c->pending == 0 && p->c->bev == NULL) {
            conn_free_now(p->c); /* released already, kept only for this commit */
        }
        jn_free(p);
    }
    while (ml->conns != NULL) {
        struct ml_conn *c = ml->conns;
        c->in_read = 0;
        conn_release(c); /* frees c: nothing is pending now */
    }
    jn_auth_free(ml->auth);
    jn_tls_free(ml->tls);
    jn_buf_reset(&ml->out);
    jn_free(ml);
    ch->state = NULL;
}

const struct jn_in_def jn_mqtt__listen = {
    .init = ml_init,   /* state only */
    .start = ml_start, /* TLS context, auth, the listener */
    .stop = ml_stop,
    .destroy = ml_destroy,
};
