/*
 * mqtt IN: subscribe to topic filters on an outside MQTT broker and hand what arrives to the
 * journal, as a client of junction's own: the codec of channels/mqtt_proto.h on a libevent
 * bufferevent on the broker's loop (TCP, or TLS through broker/jn_tls for ssl:// and mqtts://).
 * MQTT 5 by default (protocol_version), 3.1.1 on request.
 *
 * Why not paho, as OUT still uses: paho 1.3 writes PUBACK (QoS 1) and PUBCOMP (QoS 2) before
 * the application sees a message and has no manual acknowledgement, so a receiver on it either
 * acknowledges what is not yet durable or holds one message at a time (docs/mqtt.md has the
 * history and the numbers). Here the acknowledgement is ours to write:
 *
 *   PUBLISH QoS 0   jn_ingest(); nothing is ever answered.
 *   PUBLISH QoS 1   jn_ingest(); PUBACK is written in the accept callback with rc 0, that is
 *                   after the group commit that made the message durable.
 *   PUBLISH QoS 2   jn_ingest(); PUBREC after the commit, and the packet identifier is marked
 *                   "received" (rec[]); a PUBLISH resent with that identifier (DUP, after a
 *                   reconnect that lost our PUBREC) is answered PUBREC again, not taken again.
 *                   PUBREL clears the mark and is answered PUBCOMP. The marks live in memory:
 *                   across a crash QoS 2 is at least once, like QoS 1.
 *   refused (rc<0)  nothing is written for that packet: the broker still counts it in flight
 *                   and sends it again on the next connection. Reading stops; after a backoff
 *                   (reconnect_backoff doubling up to reconnect_max_backoff while refusals go
 *                   on) the connection is dropped and made again, so the broker resends.
 *
 * Many messages are in flight at once: up to receive_maximum (MQTT 5 tells the broker so in
 * CONNECT's Receive Maximum; with 3.1.1, and as a backstop with 5, the socket is not read while
 * that many are open). A connection that drops while accepts are pending bumps the generation
 * counter: an accept that comes later for an older generation writes nothing (the broker will
 * resend that message: at least once, the journal has it already); a QoS 2 one still marks its
 * identifier, unless the broker has lost the session since (epoch).
 *
 * Modelled on Mosquitto's client side (one connection state machine, packets read whole and
 * handled by type) and on channels/mllp_out.c for the libevent and TLS plumbing. Everything runs
 * on the loop thread; no threads of our own.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_net.h"
#include "jn_time.h"
#include "jn_tls.h"
#include "mqtt_int.h"
#include "mqtt_proto.h"

/* A refusal streak waits this long at least before the connection is made again. */
#define IN_REFUSE_MIN_MS 100
/* A connection up this long that is lost is made again at once, not after a backoff. */
#define IN_STABLE_MS 1000
/* The packet identifier of our one SUBSCRIBE (nothing else we send carries one). */
#define IN_SUB_ID 1
/* Bytes read from the broker per loop turn (libevent's default is 16 KiB). One connection
 * carries every message of the channel: with 1 KB messages a full window of 1024 is 1 MB, and
 * 16 KiB reads take it in 64 loop turns, each with its epoll round and timer checks. */
#define IN_READ_MAX (256 * 1024)

enum in_conn_state {
    CONN_IDLE = 0,    /* no connection; the reconnect timer may be armed */
    CONN_OPENING = 1, /* TCP (and TLS) under way */
    CONN_CONNACK = 2, /* CONNECT sent */
    CONN_UP = 3,      /* CONNACK 0 received */
};

struct mqtt_in;

/* One PUBLISH handed to jn_ingest(), waiting for its accept callback. */
struct in_pub {
    struct in_pub *prev, *next; /* in->pubs */
    struct mqtt_in *in;
    struct jn_ticket *t;
    unsigned gen;   /* the connection it came on */
    unsigned epoch; /* the broker session it belongs to */
    uint16_t id;
    uint8_t qos;
};

struct mqtt_in {
    struct jn_channel *ch;
    const struct mqtt_conf *conf;
    char *client_id;
    char host[256];
    int port;
    struct sockaddr_storage sa;
    int salen; /* 0: host is a name, resolved through dns */
    struct evdns_base *dns;
    struct jn_tls *tls; /* ssl:// or mqtts:// */
    int version;        /* JN_MQTT_V5 or JN_MQTT_V311 */
    size_t max_packet;
    long long keepalive; /* ms; the broker's Server Keep Alive may replace it */

    struct bufferevent *bev;
    enum in_conn_state state;
    unsigned gen;   /* bumped by each connect and each drop */
    unsigned epoch; /* bumped when the broker has no session for us any more */
    int failures;   /* connects failed in a row (the reconnect backoff) */
    int refuse_rounds; /* reconnects forced by refusals in a row */
    int stopping;
    int subscribed; /* this run has subscribed once (the first connect always does) */
    int reading;    /* EV_READ enabled */
    int in_read;    /* inside read handling: a drop there waits for it to unwind */
    size_t window;  /* receive_maximum */
    size_t open;    /* this connection: handed over and not answered, refused ones included */
    size_t refused; /* this connection: QoS 1/2 refused, to come again after a reconnect */
    int ping_out;
    int64_t ping_sent;
    int64_t up_since; /* CONNACK 0 of this connection */
    struct in_pub *pubs; /* every pending accept, of any generation */
    struct jn_buf out;   /* encoding scratch */
    struct event *reconnect, *conn_timer, *ping_timer, *refuse_timer;
    uint8_t rec[65536 / 8];   /* QoS 2 identifiers committed and PUBREC'd, PUBREL not seen */
};

/* ---- outside input (mqtt_int.h: no paho types, fuzzed alone) ---- */

int jn_mqtt__map_headers(struct jn_msg *m, const char *topic, size_t topic_len, int qos,
                         int retained)
{
    size_t tl = topic_len > 0 ? topic_len : strlen(topic);
    char num[16];
    int rc;

    if (memchr(topic, '\0', tl) != NULL) {
        /* OpenSSL's base64 (padded, no line breaks); an MQTT string is at most 64 KiB. */
        char *b = tl <= MQTT_MAX_PACKET ? jn_malloc(4 * ((tl + 2) / 3) + 1) : NULL;
        if (b != NULL) {
            EVP_EncodeBlock((unsigned char *)b, (const unsigned char *)topic, (int)tl);
        }
        rc = b != NULL ? jn_msg_header_set(m, "mqtt-topic-base64", b) : JN_ENOMEM;
        jn_free(b);
    } else {
        char *t = jn_strndup(topic, tl);
        rc = t != NULL ? jn_msg_header_set(m, "mqtt-topic", t) : JN_ENOMEM;
        jn_free(t);
    }
    /* Decimal, not '0' + qos: a QoS out of range must not turn into some other character. */
    snprintf(num, sizeof(num), "%d", qos);
    if (rc == 0) {
        rc = jn_msg_header_set(m, "mqtt-qos", num);
    }
    if (rc == 0) {
        rc = jn_msg_header_set(m, "mqtt-retain", retained ? "true" : "false");
    }
    return rc;
}

/* MQTT 5: content type as mqtt-content-type, each user property as mqtt-user-<name> (in
 * order; a name given twice gives two headers). The codec has checked both are UTF-8 without
 * U+0000, so they are header strings as they are. 0 or JN_ENOMEM. (mqtt_int.h) */
int jn_mqtt__map_props(struct jn_msg *m, const struct jn_mqtt_props *pr)
{
    struct jn_buf n = JN_BUF_INIT, v = JN_BUF_INIT;
    struct jn_mqtt_userprop u;
    size_t it = 0;
    int rc = 0;

    if (JN_MQTT_HAS(pr, JN_MQTT_P_CONTENT_TYPE)) {
        rc = jn_buf_append(&v, pr->content_type.p, pr->content_type.len);
        rc = rc == 0 ? jn_buf_append(&v, "", 1) : rc;
        rc = rc == 0 ? jn_msg_header_set(m, "mqtt-content-type", v.p) : rc;
    }
    while (rc == 0 && jn_mqtt_user_next(pr, &it, &u)) {
        n.len = 0;
        v.len = 0;
        rc = jn_buf_printf(&n, "mqtt-user-%.*s", (int)u.name.len, u.name.p);
        rc = rc == 0 ? jn_buf_append(&v, u.value.p, u.value.len) : rc;
        rc = rc == 0 ? jn_buf_append(&v, "", 1) : rc;
        rc = rc == 0 ? jn_msg_header_add(m, n.p, v.p) : rc;
    }
    jn_buf_reset(&n);
    jn_buf_reset(&v);
    return rc;
}

/* ---- the connection (loop) ---- */

static void in_connect(struct mqtt_in *in);
static void in_read(struct mqtt_in *in);

static struct timeval tv_ms(long long ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

static void set_reading(struct mqtt_in *in, int on)
{
    if (in->bev == NULL || in->reading == on) {
        return;
    }
    in->reading = on;
    if (on) {
        bufferevent_enable(in->bev, EV_READ);
    } else {
        bufferevent_disable(in->bev, EV_READ);
    }
}

/* Arms the reconnect timer with the backoff of in->failures; the first failure is a warn line,
 * the next ones debug (as the paho side logs it). */
static void schedule_reconnect(struct mqtt_in *in, const char *why)
{
    long long wait;
    struct timeval tv;

    if (in->stopping) {
        return;
    }
    wait = jn_backoff_ms(in->conf->reconnect_min, in->conf->reconnect_max, in->failures);
    if (in->failures <= 1) {
        jn_ch_warn(in->ch, "cannot reach %s: %s; retrying in %lld ms (then with backoff)",
                   in->conf->url, why, wait);
    } else {
        jn_ch_debug(in->ch, "cannot reach %s: %s (attempt %d); retrying in %lld ms",
                    in->conf->url, why, in->failures, wait);
    }
    tv = tv_ms(wait);
    evtimer_add(in->reconnect, &tv);
}

/* Closes the connection. Pending accepts stay: they are of an older generation now, and write
 * nothing. */
static void in_close(struct mqtt_in *in)
{
    if (in->bev != NULL) {
        bufferevent_free(in->bev);
        in->bev = NULL;
    }
    in->state = CONN_IDLE;
    in->gen++;
    in->open = 0;
    in->refused = 0;
    in->reading = 0;
    in->ping_out = 0;
    evtimer_del(in->conn_timer);
    evtimer_del(in->ping_timer);
    evtimer_del(in->refuse_timer);
}

/* The connection failed or must go: close it and come back, at once after a connection that
 * was up for a while (IN_STABLE_MS), else with backoff (a broker that takes the connection and
 * drops it again is not hammered). */
static void in_drop(struct mqtt_in *in, const char *why)
{
    int was_up = in->state == CONN_UP && jn_mono_ms() - in->up_since >= IN_STABLE_MS;

    in_close(in);
    if (in->stopping) {
        return;
    }
    if (was_up) {
        jn_ch_warn(in->ch, "connection to %s lost: %s; reconnecting", in->conf->url, why);
        in->failures = 0;
        in_connect(in);
        return;
    }
    in->failures++;
    schedule_reconnect(in, why);
}

/* Encodes p and queues it on the connection. 0, or -1 (the connection was dropped). */
static int in_send(struct mqtt_in *in, const struct jn_mqtt_packet *p)
{
    struct jn_mqtt_err e;
    int rc;

    in->out.len = 0;
    rc = jn_mqtt_encode(p, &in->out, &e);
    if (rc != 0 || bufferevent_write(in->bev, in->out.p, in->out.len) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "cannot send %s: %.200s", jn_mqtt_type_name(p->type),
                 rc == JN_EINVAL ? e.err.msg : "out of memory");
        in_drop(in, why);
        return -1;
    }
    return 0;
}

static int send_ack(struct mqtt_in *in, int type, uint16_t id)
{
    struct jn_mqtt_packet p;

    jn_mqtt_packet_init(&p, type, in->version);
    p.packet_id = id;
    return in_send(in, &p);
}

static void send_connect(struct mqtt_in *in)
{
    const struct mqtt_conf *c = in->conf;
    struct jn_mqtt_packet p;

    jn_mqtt_packet_init(&p, JN_MQTT_CONNECT, in->version);
    p.connect.client_id = (struct jn_mqtt_str){in->client_id, strlen(in->client_id)};
    p.connect.keep_alive = (uint16_t)(c->keepalive / 1000);
    p.connect.clean_start = c->clean_session;
    if (c->username != NULL) {
        p.connect.has_username = true;
        p.connect.username = (struct jn_mqtt_str){c->username, strlen(c->username)};
    }
    if (c->password != NULL) {
        p.connect.has_password = true;
        p.connect.password = (struct jn_mqtt_str){c->password, strlen(c->password)};
    }
    if (in->version == JN_MQTT_V5) {
        p.props.has |= (uint64_t)1 << JN_MQTT_P_RECEIVE_MAX;
        p.props.receive_max = (uint16_t)in->window;
        p.props.has |= (uint64_t)1 << JN_MQTT_P_MAX_PACKET_SIZE;
        p.props.max_packet_size = (uint32_t)in->max_packet;
        if (!c->clean_session) {
            p.props.has |= (uint64_t)1 << JN_MQTT_P_SESSION_EXPIRY;
            p.props.session_expiry = (uint32_t)(c->session_expiry / 1000);
        }
    }
    if (in_send(in, &p) == 0) {
        in->state = CONN_CONNACK;
    }
}

static void send_subscribe(struct mqtt_in *in)
{
    const struct mqtt_conf *c = in->conf;
    struct jn_mqtt_sub *subs = jn_calloc(c->topics.n, sizeof(*subs));
    struct jn_mqtt_packet p;

    if (subs == NULL) {
        in_drop(in, "out of memory subscribing");
        return;
    }
    jn_mqtt_packet_init(&p, JN_MQTT_SUBSCRIBE, in->version);
    p.packet_id = IN_SUB_ID;
    for (size_t i = 0; i < c->topics.n; i++) {
        subs[i].filter = (struct jn_mqtt_str){c->topics.v[i], strlen(c->topics.v[i])};
        subs[i].options = (uint8_t)c->qos;
    }
    p.subs = subs;
    p.n_subs = c->topics.n;
    (void)in_send(in, &p);
    jn_free(subs);
}

static const char *connack_name(int version, uint8_t rc)
{
    if (version == JN_MQTT_V311) {
        switch (rc) {
        case 1: return "the broker refused the protocol version";
        case 2: return "the broker refused the client id";
        case 3: return "the broker is unavailable";
        case 4: return "bad user name or password";
        case 5: return "not authorized";
        default: return "refused";
        }
    }
    switch (rc) {
    case 0x84: return "the broker refused the protocol version (try protocol_version: 3.1.1)";
    case 0x85: return "the broker refused the client id";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "the broker is unavailable";
    case 0x89: return "the broker is busy";
    case 0x8A: return "banned";
    case 0x95: return "packet too large";
    case 0x97: return "quota exceeded";
    case 0x9C: case 0x9D: return "the broker points to another server";
    default: return "refused";
    }
}

/* ---- what the broker sends (loop) ---- */

static void in_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err);

static void pub_unlink(struct mqtt_in *in, struct in_pub *p)
{
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        in->pubs = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
}

static int rec_has(const struct mqtt_in *in, uint16_t id)
{
    return (in->rec[id / 8] >> (id % 8)) & 1;
}

/* A refusal on the current connection: stop reading, and after the backoff make the
 * connection again so the broker resends what it still holds for us. */
static void refused_now(struct mqtt_in *in)
{
    set_reading(in, 0);
    if (!in->stopping && !evtimer_pending(in->refuse_timer, NULL)) {
        long long wait = jn_backoff_ms(in->conf->reconnect_min, in->conf->reconnect_max,
                                       in->refuse_rounds + 1);
        struct timeval tv = tv_ms(wait < IN_REFUSE_MIN_MS ? IN_REFUSE_MIN_MS : wait);
        evtimer_add(in->refuse_timer, &tv);
    }
}

static void on_publish(struct mqtt_in *in, const struct jn_mqtt_packet *p)
{
    struct jn_channel *ch = in->ch;
    struct jn_msg *m;
    struct in_pub *ip;

    if (p->qos == 2 && rec_has(in, p->packet_id)) {
        /* Committed already; our PUBREC was lost with a connection. */
        jn_ch_debug(ch, "QoS 2 packet %u sent again: already committed, PUBREC again",
                    p->packet_id);
        (void)send_ack(in, JN_MQTT_PUBREC, p->packet_id);
        return;
    }
    if (JN_MQTT_HAS(&p->props, JN_MQTT_P_TOPIC_ALIAS)) {
        /* We offer no Topic Alias Maximum, so the broker may not use one (3.3.2.3.4). */
        jn_ch_error(ch, "the broker used a topic alias junction did not allow; closing the "
                    "connection");
        in_drop(in, "protocol error: topic alias");
        return;
    }
    m = jn_msg_new(ch->name, p->payload.p, p->payload.len);
    ip = m != NULL ? jn_calloc(1, sizeof(*ip)) : NULL;
    if (ip == NULL ||
        jn_mqtt__map_headers(m, p->topic.p, p->topic.len, p->qos, p->retain) != 0 ||
        (in->version == JN_MQTT_V5 && jn_mqtt__map_props(m, &p->props) != 0)) {
        jn_msg_unref(&m);
        jn_free(ip);
        jn_ch_warn(ch, "out of memory taking a message on %.*s; it comes again after a "
                   "reconnect", (int)p->topic.len, p->topic.p);
        in->open++;
        if (p->qos > 0) {
            in->refused++;
        }
        refused_now(in);
        return;
    }
    ip->in = in;
    ip->gen = in->gen;
    ip->epoch = in->epoch;
    ip->id = p->packet_id;
    ip->qos = p->qos;
    ip->next = in->pubs;
    if (in->pubs != NULL) {
        in->pubs->prev = ip;
    }
    in->pubs = ip;
    in->open++;
    ip->t = jn_ingest(ch, m, in_accepted, ip);
    if (ip->t == NULL) {
        /* No callback comes: the same as a refusal. */
        pub_unlink(in, ip);
        jn_free(ip);
        jn_ch_warn(ch, "out of memory handing a message over; it comes again after a "
                   "reconnect");
        if (p->qos > 0) {
            in->refused++;
        }
        refused_now(in);
    }
}

static void on_connack(struct mqtt_in *in, const struct jn_mqtt_packet *p)
{
    char why[200];
    struct timeval tv;

    if (p->reason_code != 0) {
        snprintf(why, sizeof(why), "%s (CONNACK 0x%02x)", connack_name(in->version,
                 p->reason_code), p->reason_code);
        if (JN_MQTT_HAS(&p->props, JN_MQTT_P_REASON_STRING)) {
            size_t l = strlen(why);
            snprintf(why + l, sizeof(why) - l, ": %.*s", (int)p->props.reason_string.len,
                     p->props.reason_string.p);
        }
        in_drop(in, why);
        return;
    }
    in->state = CONN_UP;
    in->up_since = jn_mono_ms();
    evtimer_del(in->conn_timer);
    if (!p->session_present) {
        /* A new session: QoS 2 identifiers of the old one mean nothing now. */
        in->epoch++;
        memset(in->rec, 0, sizeof(in->rec));
    }
    in->keepalive = in->conf->keepalive;
    if (JN_MQTT_HAS(&p->props, JN_MQTT_P_SERVER_KEEP_ALIVE)) {
        in->keepalive = (long long)p->props.server_keep_alive * 1000;
    }
    jn_ch_info(in->ch, "connected to %s as %s (MQTT %s, session present: %s)", in->conf->url,
               in->client_id, in->version == JN_MQTT_V5 ? "5" : "3.1.1",
               p->session_present ? "yes" : "no");
    if (in->keepalive > 0) {
        tv = tv_ms(in->keepalive / 2 > 0 ? in->keepalive / 2 : 1);
        event_add(in->ping_timer, &tv);
    }
    /* A session the broker kept has our subscriptions; subscribing again would have it resend
     * every retained message. The first connect of a run subscribes anyway, as the topics in
     * the config may have changed. */
    if (!p->session_present || !in->subscribed) {
        send_subscribe(in);
    }
}

static void on_suback(struct mqtt_in *in, const struct jn_mqtt_packet *p)
{
    const struct mqtt_conf *c = in->conf;
    int refused = 0;

    for (size_t i = 0; i < p->n_codes && i < c->topics.n; i++) {
        if (p->codes[i] >= 0x80) {
            refused++;
            jn_ch_error(in->ch, "the broker refused the subscription to '%s' (0x%02x)",
                        c->topics.v[i], p->codes[i]);
        }
    }
    if (refused > 0 || p->n_codes != c->topics.n) {
        /* Without its subscriptions the channel would sit connected and idle. */
        in->subscribed = 0;
        in_close(in);
        in->failures++;
        schedule_reconnect(in, "some topic filters were refused; subscribing again");
        return;
    }
    in->subscribed = 1;
    jn_ch_info(in->ch, "subscribed to %zu topic filter(s) at qos %lld", c->topics.n, c->qos);
}

/* One whole packet. 0, or -1 when the connection was dropped (in->gen has moved on). */
static int on_packet(struct mqtt_in *in, const struct jn_mqtt_packet *p)
{
    char why[200];

    if (in->state == CONN_CONNACK && p->type != JN_MQTT_CONNACK) {
        snprintf(why, sizeof(why), "protocol error: %s before CONNACK",
                 jn_mqtt_type_name(p->type));
        jn_ch_error(in->ch, "%s; closing the connection", why);
        in_drop(in, why);
        return -1;
    }
    switch (p->type) {
    case JN_MQTT_CONNACK:
        if (in->state != CONN_CONNACK) {
            break;
        }
        on_connack(in, p);
        return 0;
    case JN_MQTT_PUBLISH:
        on_publish(in, p);
        return 0;
    case JN_MQTT_PUBREL:
        in->rec[p->packet_id / 8] &= (uint8_t)~(1u << (p->packet_id % 8));
        /* A PUBREL for an identifier we do not hold (after a restart) is completed too: the
         * message was committed before our PUBREC could have left. */
        return send_ack(in, JN_MQTT_PUBCOMP, p->packet_id);
    case JN_MQTT_SUBACK:
        if (p->packet_id != IN_SUB_ID) {
            break;
        }
        on_suback(in, p);
        return 0;
    case JN_MQTT_PINGRESP:
        in->ping_out = 0;
        return 0;
    case JN_MQTT_DISCONNECT:
        snprintf(why, sizeof(why), "the broker sent DISCONNECT 0x%02x%s%.*s", p->reason_code,
                 JN_MQTT_HAS(&p->props, JN_MQTT_P_REASON_STRING) ? ": " : "",
                 JN_MQTT_HAS(&p->props, JN_MQTT_P_REASON_STRING)
                     ? (int)p->props.reason_string.len : 0,
                 JN_MQTT_HAS(&p->props, JN_MQTT_P_REASON_STRING) ? p->props.reason_string.p
                                                                : "");
        in_drop(in, why);
        return -1;
    default:
        break;
    }
    snprintf(why, sizeof(why), "protocol error: unexpected %s", jn_mqtt_type_name(p->type));
    jn_ch_error(in->ch, "%s from the broker; closing the connection", why);
    in_drop(in, why);
    return -1;
}

/* Reads whole packets while the window has room. */
static void in_read(struct mqtt_in *in)
{
    in->in_read = 1;
    while (in->bev != NULL) {
        struct evbuffer *input = bufferevent_get_input(in->bev);
        size_t len = evbuffer_get_length(input), head, n = 0;
        struct jn_mqtt_packet p;
        struct jn_mqtt_err e;
        enum jn_mqtt_frame_res fr;
        unsigned char *data;
        char why[300];

        if (len == 0) {
            break;
        }
        if (in->state == CONN_UP &&
            (in->open >= in->window || in->refused > 0 || in->stopping)) {
            set_reading(in, 0); /* the window is full, or refusals wait for the reconnect */
            break;
        }
        head = len < 5 ? len : 5;
        data = evbuffer_pullup(input, (ev_ssize_t)head);
        fr = jn_mqtt_frame(data, head, in->max_packet, &n, &e);
        if (fr == JN_MQTT_FRAME_MORE && n <= len) {
            data = evbuffer_pullup(input, (ev_ssize_t)n);
            fr = jn_mqtt_frame(data, n, in->max_packet, &n, &e);
        }
        if (fr == JN_MQTT_FRAME_MORE) {
            break;
        }
        if (fr == JN_MQTT_FRAME_PACKET && data != NULL &&
            jn_mqtt_decode(data, n, in->version, &p, &e) == 0) {
            unsigned gen = in->gen;
            /* A drop in there may have made a new connection already: its input is not ours
             * to drain. */
            if (on_packet(in, &p) != 0 || in->gen != gen) {
                break;
            }
            evbuffer_drain(input, n);
            continue;
        }
        if (fr == JN_MQTT_FRAME_PACKET && data == NULL) {
            in_drop(in, "out of memory reading");
            break;
        }
        snprintf(why, sizeof(why), "bad packet from the broker (0x%02x): %.200s", e.rc,
                 e.err.msg);
        jn_ch_error(in->ch, "%s; closing the connection", why);
        in_drop(in, why);
        break;
    }
    in->in_read = 0;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    in_read(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct mqtt_in *in = arg;
    char why[400];

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        send_connect(in);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        int e = EVUTIL_SOCKET_ERROR();
        int dnserr = bufferevent_socket_get_dns_error(bev);
        char tls_why[300] = "";
        if (in->tls != NULL && !dnserr) {
            unsigned long te = bufferevent_get_openssl_error(bev);
            jn_tls_reason(bufferevent_openssl_get_ssl(bev), te, tls_why, sizeof(tls_why));
            while (bufferevent_get_openssl_error(bev) != 0) {
            }
        }
        if (tls_why[0] && in->state == CONN_OPENING) {
            snprintf(why, sizeof(why), "TLS: %s", tls_why);
        } else if (dnserr) {
            snprintf(why, sizeof(why), "%s", evutil_gai_strerror(dnserr));
        } else if (what & BEV_EVENT_EOF) {
            snprintf(why, sizeof(why), "connection closed by the broker");
        } else {
            snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(e));
        }
        in_drop(in, why);
    }
}

static void in_connect(struct mqtt_in *in)
{
    struct jn_channel *ch = in->ch;
    struct timeval tv;
    int rc;

    if (in->stopping || in->bev != NULL) {
        return;
    }
    if (in->tls != NULL) {
        SSL *ssl = jn_tls_client_ssl(in->tls, in->host);
        in->bev = ssl != NULL ? bufferevent_openssl_socket_new(ch->base, -1, ssl,
                                                               BUFFEREVENT_SSL_CONNECTING,
                                                               BEV_OPT_CLOSE_ON_FREE)
                              : NULL;
        if (in->bev == NULL) {
            SSL_free(ssl);
        }
    } else {
        in->bev = bufferevent_socket_new(ch->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (in->bev == NULL) {
        in->failures++;
        schedule_reconnect(in, "out of memory");
        return;
    }
    in->gen++;
    in->state = CONN_OPENING;
    in->reading = 1;
    in->open = 0;
    in->refused = 0;
    bufferevent_setcb(in->bev, read_cb, NULL, event_cb, in);
    (void)bufferevent_set_max_single_read(in->bev, IN_READ_MAX); /* only fails on < 0 */
    bufferevent_enable(in->bev, EV_READ | EV_WRITE);
    tv = tv_ms(in->conf->connect_timeout);
    evtimer_add(in->conn_timer, &tv);
    if (in->salen > 0) {
        rc = bufferevent_socket_connect(in->bev, (struct sockaddr *)&in->sa, in->salen);
    } else {
        rc = bufferevent_socket_connect_hostname(in->bev, in->dns, AF_UNSPEC, in->host,
                                                 in->port);
    }
    if (rc != 0 && in->bev != NULL && in->state == CONN_OPENING) {
        in_drop(in, "cannot start connecting");
    }
}

/* ---- the accept callback: the acknowledgement after the commit ---- */

static void in_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct in_pub *p = arg;
    struct mqtt_in *in = p->in;
    int current = p->gen == in->gen && in->state == CONN_UP;
    uint16_t id = p->id;
    int qos = p->qos;

    pub_unlink(in, p);
    if (rc == 0 && qos == 2 && p->epoch == in->epoch) {
        in->rec[id / 8] |= (uint8_t)(1u << (id % 8));
    }
    jn_free(p);
    if (rc != 0) {
        const char *why = err != NULL && err->msg[0] ? err->msg : jn_strerror(rc);
        if (qos == 0) {
            jn_ch_warn(in->ch, "a QoS 0 message was refused by the journal (%s) and is lost",
                       why);
        } else if (current && in->refused == 0) {
            jn_ch_warn(in->ch, "msg=%s refused by the journal (%s); not acknowledged, the "
                       "broker sends it again after a reconnect", msg != NULL ? msg->id : "?",
                       why);
        } else {
            jn_ch_debug(in->ch, "msg=%s refused by the journal (%s)",
                        msg != NULL ? msg->id : "?", why);
        }
        if (current) {
            if (qos > 0) {
                in->refused++;
            } else {
                in->open--;
            }
            refused_now(in);
        }
        return;
    }
    in->refuse_rounds = 0;
    jn_ch_debug(in->ch, "msg=%s accepted (qos %d)", msg->id, qos);
    if (!current) {
        return; /* the broker sends it again on the new connection: a duplicate */
    }
    in->open--;
    if (qos == 1 && send_ack(in, JN_MQTT_PUBACK, id) != 0) {
        return;
    }
    if (qos == 2 && send_ack(in, JN_MQTT_PUBREC, id) != 0) {
        return;
    }
    if (!in->reading && !in->stopping && in->refused == 0 && in->open < in->window &&
        !in->in_read) {
        set_reading(in, 1);
        in_read(in); /* what is buffered already gets no new read event */
    }
}

/* ---- timers (loop) ---- */

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    in_connect(arg);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_in *in = arg;
    char why[100];

    (void)fd;
    (void)what;
    snprintf(why, sizeof(why), "no CONNACK within connect_timeout (%lld ms)",
             in->conf->connect_timeout);
    in_drop(in, why);
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_in *in = arg;
    int64_t now = jn_mono_ms();
    struct jn_mqtt_packet p;
    struct timeval tv;

    (void)fd;
    (void)what;
    if (in->state != CONN_UP) {
        return;
    }
    /* Not read while paused: a PINGRESP could be waiting unread, so only judge when reading. */
    if (in->ping_out && in->reading && now - in->ping_sent > in->keepalive) {
        in_drop(in, "no PINGRESP within the keep-alive");
        return;
    }
    if (!in->ping_out) {
        jn_mqtt_packet_init(&p, JN_MQTT_PINGREQ, in->version);
        if (in_send(in, &p) != 0) {
            return;
        }
        in->ping_out = 1;
        in->ping_sent = now;
    }
    tv = tv_ms(in->keepalive / 2 > 0 ? in->keepalive / 2 : 1);
    event_add(in->ping_timer, &tv);
}

static void refuse_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_in *in = arg;
    char why[160];

    (void)fd;
    (void)what;
    if (in->refused == 0) {
        /* Only QoS 0 refusals (lost anyway) or out of memory that passed: read on. */
        if (in->open < in->window) {
            set_reading(in, 1);
            in_read(in);
        }
        return;
    }
    in->refuse_rounds++;
    snprintf(why, sizeof(why), "%zu message(s) refused by the journal, reconnecting so the "
             "broker sends them again", in->refused);
    jn_ch_info(in->ch, "%s (round %d)", why, in->refuse_rounds);
    in_close(in);
    in_connect(in);
}

/* ---- life cycle ---- */

/* host and port from the url (scheme://host[:port]); the default port is 1883, 8883 for TLS. */
static int parse_url(struct mqtt_in *in, struct jn_err *err)
{
    const char *url = in->conf->url, *rest = strstr(url, "://");
    const char *colon;

    rest = rest != NULL ? rest + 3 : url;
    colon = strrchr(rest, ':');
    if (colon == NULL || (rest[0] == '[' && colon < strchr(rest, ']'))) {
        char buf[300];
        snprintf(buf, sizeof(buf), "%s:%d", rest, in->tls != NULL ? 8883 : 1883);
        if (jn_split_hostport(buf, in->host, sizeof(in->host), &in->port, 1) != 0) {
            return jn_err_set(err, JN_EINVAL, "url: '%s' has no valid host", url);
        }
    } else if (jn_split_hostport(rest, in->host, sizeof(in->host), &in->port, 1) != 0) {
        return jn_err_set(err, JN_EINVAL, "url: '%s' is not scheme://host:port", url);
    }
    return 0;
}

static int in_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct mqtt_conf *c = ch->conf;
    struct mqtt_in *in = jn_calloc(1, sizeof(*in));
    struct jn_buf b = JN_BUF_INIT;

    if (in == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    ch->state = in;
    in->ch = ch;
    in->conf = c;
    in->version = c->protocol == MQTT_PROTO_311 ? JN_MQTT_V311 : JN_MQTT_V5;
    in->window = (size_t)c->receive_max;
    in->max_packet = (size_t)c->max_packet;
    in->keepalive = c->keepalive;
    if (c->client_id != NULL && c->client_id[0] != '\0') {
        in->client_id = jn_strdup(c->client_id);
    } else if (jn_buf_printf(&b, "junction-%s", ch->name) == 0) {
        in->client_id = jn_buf_steal(&b);
    }
    jn_buf_reset(&b);
    if (in->client_id == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (c->handoff != NULL || c->state_dir != NULL) {
        jn_ch_warn(ch, "%s is deprecated and ignored: MQTT IN acknowledges each message "
                   "after its commit and keeps no paho state (docs/mqtt.md)",
                   c->handoff != NULL ? "handoff" : "state_dir");
    }
    return 0;
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mqtt_in *in = ch->state;
    const struct mqtt_conf *c = in->conf;
    int sl = sizeof(in->sa);
    char hp[300];
    int rc;

    if (jn_mqtt__url_tls(c->url) == 1) {
        /* The tls: block, or the channel's older TLS options mapped onto it. */
        struct jn_tls_conf tc;
        char what[300];
        memset(&tc, 0, sizeof(tc));
        if (jn_mqtt__tls_block(c)) {
            tc = c->tls; /* borrowed for jn_tls_new, which copies what it keeps */
        } else {
            tc.cert = c->cert_file;
            tc.key = c->key_file;
            tc.key_password = c->key_password;
            tc.ca = c->ca_file;
            tc.verify_peer = c->verify ? JN_TLS_VERIFY_TRUE : JN_TLS_VERIFY_FALSE;
            tc.min_version = JN_TLS_V12;
        }
        tc.enabled = true;
        snprintf(what, sizeof(what), "channel '%s': tls", ch->name);
        in->tls = jn_tls_new(&tc, JN_TLS_CLIENT, what, err);
        if (in->tls == NULL) {
            return err->code;
        }
    }
    rc = parse_url(in, err);
    if (rc != 0) {
        return rc;
    }
    snprintf(hp, sizeof(hp), strchr(in->host, ':') ? "[%s]:%d" : "%s:%d", in->host, in->port);
    if (evutil_parse_sockaddr_port(hp, (struct sockaddr *)&in->sa, &sl) == 0) {
        in->salen = sl;
    } else {
        in->dns = evdns_base_new(ch->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (in->dns == NULL) {
            return jn_err_set(err, JN_EIO, "cannot set up name resolution for %s", in->host);
        }
    }
    in->reconnect = evtimer_new(ch->base, reconnect_cb, in);
    in->conn_timer = evtimer_new(ch->base, conn_timer_cb, in);
    in->ping_timer = evtimer_new(ch->base, ping_cb, in);
    in->refuse_timer = evtimer_new(ch->base, refuse_cb, in);
    if (in->reconnect == NULL || in->conn_timer == NULL || in->ping_timer == NULL ||
        in->refuse_timer == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    in_connect(in);
    return 0;
}

/* No new messages; the ones being committed are still acknowledged as their commits come. */
static void in_stop(struct jn_channel *ch)
{
    struct mqtt_in *in = ch->state;

    if (in == NULL) {
        return;
    }
    in->stopping = 1;
    if (in->reconnect != NULL) {
        evtimer_del(in->reconnect);
    }
    if (in->refuse_timer != NULL) {
        evtimer_del(in->refuse_timer);
    }
    set_reading(in, 0);
}

static void in_destroy(struct jn_channel *ch)
{
    struct mqtt_in *in = ch->state;

    if (in == NULL) {
        return;
    }
    /* The acknowledgements written since the loop's last turn: one try to get them out
     * (plain TCP; a TLS connection's are dropped, and the broker resends those messages). */
    if (in->bev != NULL && in->tls == NULL && in->state == CONN_UP) {
        struct jn_mqtt_packet p;
        struct jn_mqtt_err e;
        jn_mqtt_packet_init(&p, JN_MQTT_DISCONNECT, in->version);
        in->out.len = 0;
        if (jn_mqtt_encode(&p, &in->out, &e) == 0) {
            bufferevent_write(in->bev, in->out.p, in->out.len);
        }
        (void)evbuffer_write(bufferevent_get_output(in->bev), bufferevent_getfd(in->bev));
    }
    while (in->pubs != NULL) {
        struct in_pub *p = in->pubs;
        in->pubs = p->next;
        jn_ingest_forget(p->t);
        jn_free(p);
    }
    if (in->bev != NULL) {
        bufferevent_free(in->bev);
    }
    if (in->reconnect != NULL) {
        event_free(in->reconnect);
    }
    if (in->conn_timer != NULL) {
        event_free(in->conn_timer);
    }
    if (in->ping_timer != NULL) {
        event_free(in->ping_timer);
    }
    if (in->refuse_timer != NULL) {
        event_free(in->refuse_timer);
    }
    if (in->dns != NULL) {
        evdns_base_free(in->dns, 0);
    }
    jn_tls_free(in->tls);
    jn_buf_reset(&in->out);
    jn_free(in->client_id);
    jn_free(in);
    ch->state = NULL;
}

const struct jn_in_def jn_mqtt__in = {
    .init = in_init,   /* client id, version, window; no socket yet */
    .start = in_start, /* TLS context, address, timers, first connect */
    .stop = in_stop,
    .destroy = in_destroy,
};
