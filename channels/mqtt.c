/*
 * mqtt: subscribe to topic filters on an outside MQTT broker (IN) and publish to it (OUT), with
 * paho-mqtt-c's MQTTAsync client over MQTT 3.1.1.
 *
 * Threads. paho runs its own send and receive threads (shared by every client in the process)
 * and calls us only on them. Nothing here touches the loop from a paho thread: each callback
 * posts an event to a jn_worker hand-off (jn_worker.h: a locked list and event_active(); the
 * broker called evthread_use_pthreads()). The loop does the rest: jn_ingest, jn_delivery_done,
 * reconnecting, subscribing. The one decision taken on paho's thread is messageArrived's return
 * value, from state shared under the same mutex. Lock order: paho's own mutex (held while it
 * calls us) before st->mu; the loop never holds st->mu while calling into paho.
 *
 * What paho 1.3.11 does with an incoming PUBLISH (MQTTProtocolClient.c, MQTTAsyncUtils.c):
 *   QoS 0: messageArrived, nothing to acknowledge.
 *   QoS 1: PUBACK is written to the socket first, then messageArrived ("send puback before
 *          processing the publications"). The broker forgets the message at that moment.
 *   QoS 2: the PUBLISH is stored (in paho's file persistence as "r-<id>", when there is one)
 *          and PUBREC sent; on PUBREL, PUBCOMP is written first, then messageArrived, then the
 *          stored copy is removed. So PUBREC..PUBREL is covered by paho's persistence, and the
 *          last step has the same shape as QoS 1: acknowledged before we see it.
 *   messageArrived returning 0: paho keeps the message at the head of its per-client queue,
 *          writes it to its persistence ("q-<seq>") and offers it again later, on the receive
 *          thread's next pass with traffic for that client. Queued entries are read back by
 *          MQTTAsync_createWithOptions after a restart. Every later message queues behind it.
 * Nothing in paho's API delays PUBACK, PUBREC or PUBCOMP until we say so.
 *
 * So `handoff: durable` (the default) answers 0 until the message is committed in our journal:
 * the copy paho wrote to its persistence covers a crash in between, and the loss window shrinks
 * to the moment between paho writing the acknowledgement and writing that copy. paho offers the
 * head again only when the socket has something for it, so after each commit we cause a
 * round trip: an UNSUBSCRIBE of a topic nobody subscribes to (its UNSUBACK is the traffic).
 * One message per channel is in flight, which bounds throughput (docs/mqtt.md has numbers).
 * `handoff: immediate` copies the message, answers 1 at once and commits it a moment later:
 * faster, but a crash loses what was acknowledged and not yet committed.
 *
 * OUT publishes each message with MQTTAsync_sendMessage; onSuccess (PUBACK for QoS 1, PUBCOMP
 * for QoS 2, written for QoS 0) is JN_SEND_OK. paho runs OUT without persistence and with a clean
 * session: the journal is what redelivers, and a message paho would resend on its own after a
 * reconnect would be a second copy next to our retry.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <MQTTAsync.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_fs.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "jn_worker.h"
#include "mqtt_int.h"

/* MQTT's largest packet is 256 MiB - 1 (remaining length); topic and header share it. */
#define MQTT_MAX_PACKET 268435455ULL
#define MQTT_MAX_TOPIC JN_MQTT_MAX_TOPIC
/* The topic whose UNSUBACK wakes paho's receive thread (see the top of the file). */
#define MQTT_NUDGE_PREFIX "junction/nudge/"
/* A refused ingest (full journal, stopping) is tried again after this, doubling up to MAX. */
#define MQTT_HOLD_MIN_MS 100
#define MQTT_HOLD_MAX_MS 5000
/* How often OUT looks for publishes that got no answer within `timeout`. */
#define MQTT_SWEEP_MS 1000

enum {
    HANDOFF_DURABLE = 0,
    HANDOFF_IMMEDIATE = 1,
};

static const char *const handoff_names[] = {"durable", "immediate", NULL};

struct mqtt_conf {
    char *url;
    char *client_id;
    char *username;
    char *password;
    char *ca_file;
    char *cert_file;
    char *key_file;
    char *key_password;
    bool verify;
    long long keepalive;        /* ms */
    long long connect_timeout;  /* ms */
    long long reconnect_min;    /* ms */
    long long reconnect_max;    /* ms */
    long long qos;
    /* IN */
    struct jn_strlist topics;
    bool clean_session;
    int handoff;                /* HANDOFF_* */
    char *state_dir;
    /* OUT */
    char *topic;                /* template */
    bool retain;
    long long timeout;          /* ms */
    long long max_inflight;
};

static const struct jn_opt mqtt_opts[] = {
    JN_OPT_STR("url", NULL, JN_OPT_REQUIRED, struct mqtt_conf, url,
               "The broker: tcp://host:port or mqtt://host:port; ssl://host:port or "
               "mqtts://host:port for TLS."),
    JN_OPT_STR("client_id", "", 0, struct mqtt_conf, client_id,
               "MQTT client id; empty: junction-<channel name>. Keep it stable (IN: the broker "
               "keeps the session under it) and unique on the broker."),
    JN_OPT_STR("username", NULL, 0, struct mqtt_conf, username, "User name, if the broker asks."),
    JN_OPT_STR("password", NULL, JN_OPT_SECRET, struct mqtt_conf, password,
               "Password; never logged."),
    JN_OPT_PATH("ca_file", NULL, 0, struct mqtt_conf, ca_file,
                "TLS: PEM file of the CAs that sign the broker's certificate (default: the "
                "system's)."),
    JN_OPT_PATH("cert_file", NULL, 0, struct mqtt_conf, cert_file,
                "TLS: PEM client certificate (chain), for brokers that ask for one."),
    JN_OPT_PATH("key_file", NULL, 0, struct mqtt_conf, key_file,
                "TLS: PEM private key of cert_file (default: in cert_file)."),
    JN_OPT_STR("key_password", NULL, JN_OPT_SECRET, struct mqtt_conf, key_password,
               "TLS: password of key_file; never logged."),
    JN_OPT_BOOL("verify", "true", 0, struct mqtt_conf, verify,
                "TLS: check the broker's certificate and that it names the url's host."),
    JN_OPT_DURATION("keepalive", "30s", 1000, 65535000LL, 0, struct mqtt_conf, keepalive,
                    "MQTT keep-alive (whole seconds); a silent broker is found dead after "
                    "about 1.5 times this."),
    JN_OPT_DURATION("connect_timeout", "10s", 1000, 3600000LL, 0, struct mqtt_conf,
                    connect_timeout, "Time allowed for TCP, TLS and CONNACK (whole seconds)."),
    JN_OPT_DURATION("reconnect_backoff", "500ms", 10, 3600000LL, 0, struct mqtt_conf,
                    reconnect_min,
                    "First wait before reconnecting; doubles per failure, with jitter."),
    JN_OPT_DURATION("reconnect_max_backoff", "30s", 10, 86400000LL, 0, struct mqtt_conf,
                    reconnect_max, "Cap of the reconnect wait."),
    JN_OPT_INT("qos", "2", 0, 2, 0, struct mqtt_conf, qos,
               "IN: the QoS asked for in the subscription (the broker sends each message at "
               "the lower of this and its publisher's QoS). OUT: the QoS of each PUBLISH; "
               "delivered means PUBACK (1), PUBCOMP (2), or written to the socket (0). "
               "docs/mqtt.md gives the guarantee of each."),
    JN_OPT_STRLIST("topics", NULL, JN_OPT_IN | JN_OPT_REQUIRED, struct mqtt_conf, topics,
                   "Topic filters to subscribe to (+ and # wildcards, $share/group/filter)."),
    JN_OPT_BOOL("clean_session", "false", JN_OPT_IN, struct mqtt_conf, clean_session,
                "false: the broker keeps the subscription and queues QoS 1/2 messages while "
                "junction is away; true: each connection starts empty."),
    JN_OPT_ENUM("handoff", "durable", handoff_names, JN_OPT_IN, struct mqtt_conf, handoff,
                "durable: paho keeps each message (in memory and in state_dir) until it is "
                "committed in the journal, one at a time; immediate: faster, but a crash "
                "loses what paho acknowledged and junction had not committed (docs/mqtt.md)."),
    JN_OPT_PATH("state_dir", "", JN_OPT_IN, struct mqtt_conf, state_dir,
                "Folder for paho's persistence (one subfolder per client id and broker); "
                "empty: <data_dir>/mqtt."),
    JN_OPT_STR("topic", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct mqtt_conf, topic,
               "Topic template: {id} {channel} {date} {time} {ts} {header.NAME}; a rendered "
               "topic that is empty or has + or # is rejected (dead-lettered)."),
    JN_OPT_BOOL("retain", "false", JN_OPT_OUT, struct mqtt_conf, retain,
                "Publish with the retain flag."),
    JN_OPT_DURATION("timeout", "30s", 1000, 3600000LL, JN_OPT_OUT, struct mqtt_conf, timeout,
                    "A publish not acknowledged in this time is retried."),
    JN_OPT_INT("max_inflight", "65535", 1, 65535, JN_OPT_OUT, struct mqtt_conf, max_inflight,
               "paho's maxInflight. Keep it above concurrency: paho 1.3.11 stalls to 10 "
               "messages/s when a burst reaches it."),
    JN_OPT_END,
};

/* ---- state ---- */

enum ev_kind {
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_MESSAGE,
    EV_PUB_OK,
    EV_PUB_FAILED,
    EV_SUB_OK,
    EV_SUB_FAILED,
};

struct mqtt_state;

/* One received message. IN durable: lives in st->ims from messageArrived until paho has been
 * told 1 (the paho thread unlinks and frees it then, after the loop set `done`). */
struct in_msg {
    struct in_msg *next;  /* st->ims (under st->mu) */
    struct in_msg *hnext; /* st->held (loop only) */
    struct mqtt_state *st;
    const void *key;      /* paho's MQTTAsync_message: the same each time paho offers it */
    char *topic;          /* owned copies, until committed */
    size_t topic_len;     /* may hold a NUL byte (then topic is cut there for logs) */
    unsigned char *payload;
    size_t len;
    int qos;
    int retained;
    int done;             /* committed (under st->mu) */
    struct jn_ticket *t;  /* loop only */
};

struct pub_ctx;

struct ev {
    struct jn_job job;    /* in st->wake */
    enum ev_kind kind;
    int code;
    int flag;             /* CONNECTED: session present */
    struct pub_ctx *pub;  /* PUB_* */
    struct in_msg *im;    /* MESSAGE */
    char text[200];
};

/* The context paho hands back with a publish's answer. paho's token is its packet id, reused
 * once a publish completes, so it cannot tell a late answer (after our timeout) from a current
 * one; this can. Written before MQTTAsync_sendMessage and only read on paho's side; freed by
 * the loop when the answer's event is handled, or at destroy. */
struct pub_ctx {
    struct pub_ctx *prev, *next; /* st->pubs (loop only) */
    struct mqtt_state *st;
    size_t slot;
    unsigned gen;
};

/* An OUT publish in flight. */
struct out_slot {
    struct jn_delivery *d; /* NULL when free */
    unsigned gen;          /* counts uses, so a late paho answer is told from a current one */
    int64_t start_ms;
    char id[JN_ID_LEN + 1];
};

struct mqtt_state {
    struct jn_channel *ch;
    const struct mqtt_conf *conf;
    MQTTAsync cli;
    int tls;
    MQTTAsync_SSLOptions ssl;
    char *client_id;
    char *nudge_topic;
    char *persist_dir;

    pthread_mutex_t mu; /* ims, stopping */
    struct in_msg *ims;
    int stopping;
    struct jn_worker *wake; /* the hand-off of struct ev to the loop; set before paho runs */

    /* loop only */
    struct event *reconnect;
    struct event *hold_timer;
    struct event *sweep;
    struct event *tick;    /* IN durable: the backstop nudge */
    int connected;
    int connecting;
    int ever_connected;    /* subscribe on the first connect of a run, whatever the session */
    int failures;          /* connect attempts failed in a row */
    struct in_msg *held, *held_tail;
    long long hold_ms;
    struct out_slot *slots;
    size_t nslots;
    size_t *free_slots;
    size_t nfree;
    struct pub_ctx *pubs;  /* sent, answer not handled yet */
    char **filters;        /* IN: the topics as paho wants them */
    int *qoss;
};

static pthread_once_t paho_once = PTHREAD_ONCE_INIT;

/* ---- checks ---- */

/* 1 for ssl:// or mqtts://, 0 for tcp:// or mqtt://, -1 for anything else. */
static int url_tls(const char *url)
{
    if (url == NULL) {
        return -1;
    }
    if (strncasecmp(url, "ssl://", 6) == 0 || strncasecmp(url, "mqtts://", 8) == 0) {
        return 1;
    }
    if (strncasecmp(url, "tcp://", 6) == 0 || strncasecmp(url, "mqtt://", 7) == 0) {
        return 0;
    }
    return -1;
}

/* ---- outside input (mqtt_int.h: no paho types, fuzzed alone) ---- */

const char *jn_mqtt__filter_error(const char *f)
{
    size_t n = strlen(f);

    if (n == 0) {
        return "is empty";
    }
    if (n > MQTT_MAX_TOPIC) {
        return "is longer than 65535 bytes";
    }
    for (const char *lvl = f;;) {
        const char *end = strchr(lvl, '/');
        size_t ln = end != NULL ? (size_t)(end - lvl) : strlen(lvl);
        if (memchr(lvl, '#', ln) != NULL && (ln != 1 || end != NULL)) {
            return "has '#' other than as the whole last level";
        }
        if (memchr(lvl, '+', ln) != NULL && ln != 1) {
            return "has '+' other than as a whole level";
        }
        if (end == NULL) {
            break;
        }
        lvl = end + 1;
    }
    return NULL;
}

const char *jn_mqtt__topic_error(const char *t, size_t n)
{
    if (n == 0) {
        return "the rendered topic is empty";
    }
    if (n > MQTT_MAX_TOPIC) {
        return "the rendered topic is longer than 65535 bytes";
    }
    /* Headers are C strings, so a rendered topic has no NUL; paho would cut it there. */
    if (memchr(t, '\0', n) != NULL) {
        return "the rendered topic has a NUL byte";
    }
    if (memchr(t, '+', n) != NULL || memchr(t, '#', n) != NULL) {
        return "the rendered topic has a wildcard (+ or #)";
    }
    return NULL;
}

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
        /* paho's topic is NUL-terminated at topic_len too, but do not rely on it. */
        char *t = jn_strndup(topic, tl);
        rc = t != NULL ? jn_msg_header_set(m, "mqtt-topic", t) : JN_ENOMEM;
        jn_free(t);
    }
    /* Decimal, not '0' + qos: a QoS paho did not check (3 is a protocol error) must not turn
     * into some other character. */
    snprintf(num, sizeof(num), "%d", qos);
    if (rc == 0) {
        rc = jn_msg_header_set(m, "mqtt-qos", num);
    }
    if (rc == 0) {
        rc = jn_msg_header_set(m, "mqtt-retain", retained ? "true" : "false");
    }
    return rc;
}

static int mqtt_check(const void *conf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct mqtt_conf *c = conf;
    int errors = 0;
    int tls = url_tls(c->url);

    if (tls < 0) {
        jn_diag_add(d, jn_node_pos(node, "url"),
                    "mqtt: url: '%s' must start with tcp://, mqtt://, ssl:// or mqtts://",
                    c->url != NULL ? c->url : "");
        errors++;
    } else if (strchr(strstr(c->url, "://") + 3, '/') != NULL) {
        jn_diag_add(d, jn_node_pos(node, "url"),
                    "mqtt: url: '%s' has a path; MQTT has none (the topic is a separate option)",
                    c->url);
        errors++;
    }
    if (tls == 0) {
        static const char *const tls_keys[] = {"ca_file", "cert_file", "key_file",
                                               "key_password", NULL};
        for (size_t i = 0; tls_keys[i] != NULL; i++) {
            if (jn_node_get(node, tls_keys[i]) != NULL) {
                jn_diag_add(d, jn_node_pos(node, tls_keys[i]),
                            "mqtt: %s: TLS options need an ssl:// or mqtts:// url", tls_keys[i]);
                errors++;
            }
        }
    }
    if (c->key_file != NULL && c->cert_file == NULL) {
        jn_diag_add(d, jn_node_pos(node, "key_file"), "mqtt: key_file: needs cert_file");
        errors++;
    }
    if (c->password != NULL && c->username == NULL) {
        jn_diag_add(d, jn_node_pos(node, "password"), "mqtt: password: needs username");
        errors++;
    }
    if (c->reconnect_max < c->reconnect_min) {
        jn_diag_add(d, jn_node_pos(node, "reconnect_max_backoff"),
                    "mqtt: reconnect_max_backoff: must be at least reconnect_backoff");
        errors++;
    }
    if (dir & JN_DIR_IN) {
        const struct jn_node *tn = jn_node_get(node, "topics");
        if (c->topics.n == 0 && tn != NULL) {
            jn_diag_add(d, &tn->pos, "mqtt: topics: needs at least one topic filter");
            errors++;
        }
        for (size_t i = 0; i < c->topics.n; i++) {
            const char *why = jn_mqtt__filter_error(c->topics.v[i]);
            const struct jn_pos *pos = &node->pos;
            if (tn != NULL && tn->kind == JN_NODE_SEQ && i < tn->n) {
                pos = &tn->vals[i]->pos;
            } else if (tn != NULL) {
                pos = &tn->pos;
            }
            if (why != NULL) {
                jn_diag_add(d, pos, "mqtt: topics: '%s' %s", c->topics.v[i], why);
                errors++;
            } else if (strncmp(c->topics.v[i], MQTT_NUDGE_PREFIX,
                               strlen(MQTT_NUDGE_PREFIX)) == 0) {
                jn_diag_add(d, pos, "mqtt: topics: '%s': " MQTT_NUDGE_PREFIX "... is junction's",
                            c->topics.v[i]);
                errors++;
            }
        }
    }
    if (dir & JN_DIR_OUT) {
        struct jn_err err;
        jn_err_clear(&err);
        if (c->topic == NULL || c->topic[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "topic"), "mqtt: topic: must not be empty");
            errors++;
        } else if (jn_template_check(c->topic, &err) != 0) {
            jn_diag_add(d, jn_node_pos(node, "topic"), "mqtt: topic: %s", err.msg);
            errors++;
        }
    }
    return errors;
}

/* ---- hand-off to the loop ---- */

static void in_msg_free(struct in_msg *im)
{
    if (im == NULL) {
        return;
    }
    jn_free(im->topic);
    jn_free(im->payload);
    jn_free(im);
}

/* Any thread. Takes ownership of e. */
static void ev_push(struct mqtt_state *st, struct ev *e)
{
    if (jn_worker_post(st->wake, &e->job) == 0) {
        return;
    }
    /* Stopped (not while paho runs: state_free destroys the client first). */
    if (e->kind == EV_MESSAGE && e->im != NULL && e->im->key == NULL) {
        in_msg_free(e->im);
    }
    jn_free(e);
}

/* Any thread. Out of memory drops the event: each kind has a backstop (the reconnect loop,
 * the OUT timeout sweep, paho offering a message again), and it is logged. */
static void ev_post(struct mqtt_state *st, enum ev_kind kind, int code, int flag,
                    struct pub_ctx *pub, const char *text)
{
    struct ev *e = jn_calloc(1, sizeof(*e));

    if (e == NULL) {
        jn_ch_error(st->ch, "out of memory: a paho event (%d) is lost", (int)kind);
        return;
    }
    e->kind = kind;
    e->code = code;
    e->flag = flag;
    e->pub = pub;
    if (text != NULL) {
        snprintf(e->text, sizeof(e->text), "%s", text);
    }
    ev_push(st, e);
}

/* ---- paho callbacks (paho's threads) ---- */

static void paho_free(char *topic, MQTTAsync_message *msg)
{
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
}

/* Causes traffic on the client's socket, so paho's receive thread offers its queue head again.
 * Any thread but never under st->mu. */
static void nudge(struct mqtt_state *st)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;

    (void)MQTTAsync_unsubscribe(st->cli, st->nudge_topic, &ro);
}

/* A copy of what paho hands us, for the loop. NULL when out of memory. */
static struct in_msg *in_msg_new(struct mqtt_state *st, const char *topic, int topic_len,
                                 const MQTTAsync_message *msg)
{
    struct in_msg *im = jn_calloc(1, sizeof(*im));
    size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t pl = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;

    if (im == NULL) {
        return NULL;
    }
    im->st = st;
    im->key = msg;
    im->topic = jn_strndup(topic, tl);
    im->topic_len = tl;
    im->payload = jn_malloc(pl + 1);
    if (im->topic == NULL || im->payload == NULL) {
        in_msg_free(im);
        return NULL;
    }
    if (pl > 0) {
        memcpy(im->payload, msg->payload, pl);
    }
    im->payload[pl] = '\0';
    im->len = pl;
    im->qos = msg->qos;
    im->retained = msg->retained;
    return im;
}

/*
 * paho's receive thread. Returns 1 when paho may forget the message, 0 to have it kept (queued
 * and written to its persistence) and offered again later.
 */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct mqtt_state *st = ctx;
    struct in_msg *im, **pp;
    struct ev *e;
    int durable = st->conf->handoff == HANDOFF_DURABLE;

    if (st->ch->dir != JN_DIR_IN) {
        paho_free(topic, msg);
        return 1;
    }
    pthread_mutex_lock(&st->mu);
    for (pp = &st->ims; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->key == msg) {
            break;
        }
    }
    im = *pp;
    if (im != NULL) {
        int done = im->done;
        if (done) {
            *pp = im->next;
        }
        pthread_mutex_unlock(&st->mu);
        if (!done) {
            return 0;
        }
        /* Committed: paho may let go, and the next one in its queue should come up. */
        in_msg_free(im);
        paho_free(topic, msg);
        nudge(st);
        return 1;
    }
    if (st->stopping) {
        /* Not taken: it stays in paho's queue and persistence for the next start. */
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
    pthread_mutex_unlock(&st->mu);
    im = in_msg_new(st, topic, topic_len, msg);
    e = im != NULL ? jn_calloc(1, sizeof(*e)) : NULL;
    if (e == NULL) {
        in_msg_free(im);
        jn_ch_warn(st->ch, "out of memory taking a message on %.*s; paho keeps it", topic_len,
                   topic);
        return 0;
    }
    e->kind = EV_MESSAGE;
    e->im = im;
    if (durable) {
        pthread_mutex_lock(&st->mu);
        im->next = st->ims;
        st->ims = im;
        pthread_mutex_unlock(&st->mu);
        ev_push(st, e);
        return 0;
    }
    im->key = NULL;
    ev_push(st, e);
    paho_free(topic, msg);
    return 1;
}

static void on_lost(void *ctx, char *cause)
{
    ev_post(ctx, EV_LOST, 0, 0, NULL, cause != NULL ? cause : "connection lost");
    MQTTAsync_free(cause);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *r)
{
    ev_post(ctx, EV_CONNECTED, 0, r != NULL ? r->alt.connect.sessionPresent : 0, NULL, NULL);
}

static const char *connack_name(int code)
{
    switch (code) {
    case 1: return "the broker refused the protocol version";
    case 2: return "the broker refused the client id";
    case 3: return "the broker is unavailable";
    case 4: return "bad user name or password";
    case 5: return "not authorized";
    default: return NULL;
    }
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *r)
{
    char text[200];
    int code = r != NULL ? r->code : MQTTASYNC_FAILURE;
    const char *name = connack_name(code);

    if (name != NULL) {
        snprintf(text, sizeof(text), "%s (CONNACK %d)", name, code);
    } else if (r != NULL && r->message != NULL) {
        snprintf(text, sizeof(text), "%s (%d)", r->message, code);
    } else {
        snprintf(text, sizeof(text), "connect failed (%d)", code);
    }
    ev_post(ctx, EV_CONNECT_FAILED, code, 0, NULL, text);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    struct mqtt_state *st = ctx;
    int refused = 0;

    /* 3.1.1: one granted QoS per filter, 0x80 for a refusal. paho calls onFailure only when a
     * single filter is refused. */
    if (r != NULL && st->conf->topics.n > 1 && r->alt.qosList != NULL) {
        for (size_t i = 0; i < st->conf->topics.n; i++) {
            if (r->alt.qosList[i] == 0x80) {
                refused = 1;
                jn_ch_error(st->ch, "the broker refused the subscription to '%s'",
                            st->conf->topics.v[i]);
            }
        }
    }
    ev_post(st, refused ? EV_SUB_FAILED : EV_SUB_OK, 0, 0, NULL,
            refused ? "some topic filters were refused" : NULL);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
    char text[200];

    snprintf(text, sizeof(text), "subscribe failed (%d%s%s)", r != NULL ? r->code : -1,
             r != NULL && r->message != NULL ? ": " : "",
             r != NULL && r->message != NULL ? r->message : "");
    ev_post(ctx, EV_SUB_FAILED, r != NULL ? r->code : -1, 0, NULL, text);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *r)
{
    struct pub_ctx *pc = ctx;

    (void)r;
    ev_post(pc->st, EV_PUB_OK, 0, 0, pc, NULL);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
    struct pub_ctx *pc = ctx;
    char text[200];

    snprintf(text, sizeof(text), "publish failed (%d%s%s)", r != NULL ? r->code : -1,
             r != NULL && r->message != NULL ? ": " : "",
             r != NULL && r->message != NULL ? r->message : "");
    ev_post(pc->st, EV_PUB_FAILED, r != NULL ? r->code : -1, 0, pc, text);
}

static void on_trace(enum MQTTASYNC_TRACE_LEVELS level, char *message)
{
    (void)level;
    jn_log_p(JN_LOG_DEBUG, "mqtt.paho", "%s", message);
}

static void paho_init(void)
{
    MQTTAsync_init_options io = MQTTAsync_init_options_initializer;

    /* OpenSSL 3 initialises itself, and the rest of junction shares it. */
    io.do_openssl_init = 0;
    MQTTAsync_global_init(&io);
    MQTTAsync_setTraceCallback(on_trace);
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
}

/* ---- connecting (loop) ---- */

static void connect_now(struct mqtt_state *st);

static void schedule_reconnect(struct mqtt_state *st, const char *why)
{
    const struct mqtt_conf *c = st->conf;
    long long wait;
    struct timeval tv;

    if (st->stopping) {
        return;
    }
    /* The broker's retry wait (full jitter): channels that lost one broker together spread
     * their reconnects over the whole window instead of its upper half. */
    wait = jn_backoff_ms(c->reconnect_min, c->reconnect_max, st->failures);
    if (st->failures == 1) {
        jn_ch_warn(st->ch, "cannot reach %s: %s; retrying in %lld ms (then with backoff)",
                   c->url, why, wait);
    } else {
        jn_ch_debug(st->ch, "cannot reach %s: %s (attempt %d); retrying in %lld ms", c->url,
                    why, st->failures, wait);
    }
    tv.tv_sec = (time_t)(wait / 1000);
    tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
    evtimer_add(st->reconnect, &tv);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

static void connect_now(struct mqtt_state *st)
{
    const struct mqtt_conf *c = st->conf;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    int rc;

    if (st->stopping || st->connected || st->connecting) {
        return;
    }
    co.keepAliveInterval = (int)(c->keepalive / 1000);
    co.cleansession = st->ch->dir == JN_DIR_IN ? c->clean_session : 1;
    co.maxInflight = st->ch->dir == JN_DIR_OUT ? (int)c->max_inflight : 65535;
    co.username = c->username;
    co.password = c->password;
    co.connectTimeout = (int)(c->connect_timeout / 1000);
    co.retryInterval = 0;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.automaticReconnect = 0; /* ours: logged, with our backoff, and OUT fails in-flight sends */
    co.onSuccess = on_connect_ok;
    co.onFailure = on_connect_fail;
    co.context = st;
    co.ssl = st->tls ? &st->ssl : NULL;
    st->connecting = 1;
    rc = MQTTAsync_connect(st->cli, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        char why[64];
        st->connecting = 0;
        st->failures++;
        snprintf(why, sizeof(why), "connect refused by paho (%d)", rc);
        schedule_reconnect(st, why);
    }
}

/* Without its subscriptions an IN channel would sit connected and idle: drop the connection
 * and come back through the reconnect path, which subscribes on its first connect. */
static void resubscribe_later(struct mqtt_state *st, const char *why)
{
    jn_ch_error(st->ch, "%s; reconnecting to subscribe again", why);
    st->ever_connected = 0;
    st->connected = 0;
    (void)MQTTAsync_disconnect(st->cli, NULL);
    st->failures++;
    schedule_reconnect(st, why);
}

static void subscribe_now(struct mqtt_state *st)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc;

    ro.onSuccess = on_sub_ok;
    ro.onFailure = on_sub_fail;
    ro.context = st;
    rc = MQTTAsync_subscribeMany(st->cli, (int)st->conf->topics.n, st->filters, st->qoss, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        char why[64];
        snprintf(why, sizeof(why), "cannot subscribe (paho %d)", rc);
        resubscribe_later(st, why);
    }
}

/* ---- IN (loop) ---- */

static void in_ingest(struct mqtt_state *st, struct in_msg *im);

/* A nudge can be lost: paho refuses an UNSUBSCRIBE while it has not yet marked the connection
 * up (the head is offered just before the CONNACK is handled), and then nothing offers the head
 * again until other traffic comes. The crash test saw such a stall of several seconds after a
 * restart. So a durable IN nudges once a second anyway while connected. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_state *st = arg;

    (void)fd;
    (void)what;
    if (st->connected) {
        nudge(st);
    }
}

static void hold(struct mqtt_state *st, struct in_msg *im)
{
    struct timeval tv;

    im->hnext = NULL;
    if (st->held_tail != NULL) {
        st->held_tail->hnext = im;
    } else {
        st->held = im;
    }
    st->held_tail = im;
    if (!evtimer_pending(st->hold_timer, NULL)) {
        st->hold_ms = st->hold_ms == 0 ? MQTT_HOLD_MIN_MS : st->hold_ms * 2;
        if (st->hold_ms > MQTT_HOLD_MAX_MS) {
            st->hold_ms = MQTT_HOLD_MAX_MS;
        }
        tv.tv_sec = (time_t)(st->hold_ms / 1000);
        tv.tv_usec = (suseconds_t)((st->hold_ms % 1000) * 1000);
        evtimer_add(st->hold_timer, &tv);
    }
}

static void hold_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_state *st = arg;
    struct in_msg *im = st->held;

    (void)fd;
    (void)what;
    st->held = st->held_tail = NULL;
    while (im != NULL) {
        struct in_msg *next = im->hnext;
        in_ingest(st, im);
        im = next;
    }
}

static void in_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct in_msg *im = arg;
    struct mqtt_state *st = im->st;

    im->t = NULL;
    if (rc != 0) {
        /* Not durable, so not let go of: try again after a backoff. paho (durable) or we
         * (immediate) still hold it. */
        jn_ch_warn(st->ch, "msg=%s on %s refused by the journal (%s); trying again",
                   msg != NULL ? msg->id : "?", im->topic,
                   err != NULL && err->msg[0] ? err->msg : jn_strerror(rc));
        hold(st, im);
        return;
    }
    st->hold_ms = 0;
    jn_ch_debug(st->ch, "msg=%s accepted from %s (qos %d%s)", msg->id, im->topic, im->qos,
                im->retained ? ", retained" : "");
    if (im->key == NULL) {
        in_msg_free(im);
        return;
    }
    /* Durable: tell paho's side it may let go; the paho thread frees im after that, so im
     * is not touched here once done is set. */
    jn_free(im->topic);
    jn_free(im->payload);
    im->topic = NULL;
    im->payload = NULL;
    pthread_mutex_lock(&st->mu);
    im->done = 1;
    pthread_mutex_unlock(&st->mu);
    nudge(st);
}

static void in_ingest(struct mqtt_state *st, struct in_msg *im)
{
    struct jn_channel *ch = st->ch;
    struct jn_msg *m = jn_msg_new(ch->name, im->payload, im->len);

    if (m == NULL ||
        jn_mqtt__map_headers(m, im->topic, im->topic_len, im->qos, im->retained) != 0) {
        jn_msg_unref(&m);
        jn_ch_warn(ch, "out of memory taking a message on %s; trying again", im->topic);
        hold(st, im);
        return;
    }
    im->t = jn_ingest(ch, m, in_accepted, im);
    if (im->t == NULL) {
        jn_ch_warn(ch, "out of memory handing a message on %s over; trying again", im->topic);
        hold(st, im);
    }
}

/* ---- OUT (loop) ---- */

static void out_finish(struct mqtt_state *st, struct out_slot *s, enum jn_send_result r,
                       const char *reason)
{
    struct jn_delivery *d = s->d;
    char id[JN_ID_LEN + 1];

    memcpy(id, s->id, sizeof(id));
    s->d = NULL;
    s->gen++;
    st->free_slots[st->nfree++] = (size_t)(s - st->slots);
    if (r == JN_SEND_OK) {
        jn_ch_debug(st->ch, "msg=%s published", id);
    }
    jn_delivery_done(d, r, reason); /* the broker logs a failed attempt */
}

static void out_fail_all(struct mqtt_state *st, const char *reason)
{
    for (size_t i = 0; i < st->nslots; i++) {
        if (st->slots[i].d != NULL) {
            out_finish(st, &st->slots[i], JN_SEND_RETRY, reason);
        }
    }
}

static void pub_unlink(struct mqtt_state *st, struct pub_ctx *pc)
{
    if (pc->prev != NULL) {
        pc->prev->next = pc->next;
    } else {
        st->pubs = pc->next;
    }
    if (pc->next != NULL) {
        pc->next->prev = pc->prev;
    }
}

/* The slot a publish's answer is for, or NULL when the answer is late (the slot was finished
 * by the timeout or a lost connection, and maybe reused). Frees pc. */
static struct out_slot *out_slot_of(struct mqtt_state *st, struct pub_ctx *pc)
{
    struct out_slot *s = &st->slots[pc->slot];
    int current = s->d != NULL && s->gen == pc->gen;

    pub_unlink(st, pc);
    jn_free(pc);
    return current ? s : NULL;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqtt_state *st = arg;
    int64_t now = jn_mono_ms();
    char reason[96];

    (void)fd;
    (void)what;
    snprintf(reason, sizeof(reason), "no acknowledgement from the broker within %lld ms",
             st->conf->timeout);
    for (size_t i = 0; i < st->nslots; i++) {
        struct out_slot *s = &st->slots[i];
        if (s->d != NULL && now - s->start_ms >= st->conf->timeout) {
            out_finish(st, s, JN_SEND_RETRY, reason);
        }
    }
}

static void mqtt_send(struct jn_channel *ch, struct jn_delivery *d)
{
    struct mqtt_state *st = ch->state;
    const struct mqtt_conf *c = st->conf;
    struct jn_msg *m = jn_delivery_msg(d);
    MQTTAsync_message pm = MQTTAsync_message_initializer;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    struct jn_buf topic = JN_BUF_INIT;
    struct jn_err err;
    struct out_slot *s;
    struct pub_ctx *pc;
    size_t idx;
    const char *why;
    char reason[256];
    int rc;

    if (st->stopping) {
        jn_delivery_done(d, JN_SEND_RETRY, "stopping");
        return;
    }
    jn_err_clear(&err);
    rc = jn_template_render(c->topic, m, &topic, &err);
    if (rc != 0) {
        jn_buf_reset(&topic);
        snprintf(reason, sizeof(reason), "topic: %s", rc == JN_ENOMEM ? "out of memory" : err.msg);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, rc == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT, reason);
        return;
    }
    why = jn_mqtt__topic_error(topic.p != NULL ? topic.p : "", topic.len);
    if (why == NULL && (unsigned long long)m->len + topic.len + 4 > MQTT_MAX_PACKET) {
        why = "the message is larger than an MQTT packet can carry (256 MiB)";
    }
    if (why != NULL) {
        snprintf(reason, sizeof(reason), "%s%s%.100s%s", why, topic.len ? " ('" : "",
                 topic.len ? topic.p : "", topic.len ? "')" : "");
        jn_buf_reset(&topic);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    if (!st->connected) {
        jn_buf_reset(&topic);
        snprintf(reason, sizeof(reason), "not connected to %s", c->url);
        jn_ch_warn(ch, "msg=%s %s", m->id, reason);
        jn_delivery_done(d, JN_SEND_RETRY, reason);
        return;
    }
    if (st->nfree == 0) {
        jn_buf_reset(&topic);
        jn_delivery_done(d, JN_SEND_RETRY, "all publish slots are busy");
        return;
    }
    pc = jn_calloc(1, sizeof(*pc));
    if (pc == NULL) {
        jn_buf_reset(&topic);
        jn_delivery_done(d, JN_SEND_RETRY, "out of memory");
        return;
    }
    idx = st->free_slots[--st->nfree];
    s = &st->slots[idx];
    s->d = d;
    s->start_ms = jn_mono_ms();
    memcpy(s->id, m->id, sizeof(s->id));
    pc->st = st;
    pc->slot = idx;
    pc->gen = s->gen;
    /* paho copies topic and payload into its command before returning. */
    pm.payload = m->payload;
    pm.payloadlen = (int)m->len;
    pm.qos = (int)c->qos;
    pm.retained = c->retain;
    ro.onSuccess = on_pub_ok;
    ro.onFailure = on_pub_fail;
    ro.context = pc;
    rc = MQTTAsync_sendMessage(st->cli, topic.p, &pm, &ro);
    jn_buf_reset(&topic);
    if (rc != MQTTASYNC_SUCCESS) {
        int bad = rc == MQTTASYNC_BAD_UTF8_STRING || rc == MQTTASYNC_BAD_QOS ||
                  rc == MQTTASYNC_BAD_STRUCTURE || rc == MQTTASYNC_NULL_PARAMETER;
        snprintf(reason, sizeof(reason), "%s (paho %d)",
                 rc == MQTTASYNC_BAD_UTF8_STRING ? "the rendered topic is not valid UTF-8"
                 : rc == MQTTASYNC_DISCONNECTED  ? "not connected"
                 : bad                           ? "paho refused the message"
                                                 : "paho could not queue the publish",
                 rc);
        /* paho did not take it, so no answer will come for pc. */
        jn_free(pc);
        out_finish(st, s, bad ? JN_SEND_REJECT : JN_SEND_RETRY, reason);
        return;
    }
    pc->next = st->pubs;
    if (st->pubs != NULL) {
        st->pubs->prev = pc;
    }
    st->pubs = pc;
}

/* ---- events (loop) ---- */

static void handle(struct mqtt_state *st, struct ev *e)
{
    struct jn_channel *ch = st->ch;
    struct out_slot *s;
    char reason[256];

    switch (e->kind) {
    case EV_CONNECTED:
        st->connecting = 0;
        st->connected = 1;
        st->failures = 0;
        jn_ch_info(ch, "connected to %s as %s (session present: %s)", st->conf->url,
                   st->client_id, e->flag ? "yes" : "no");
        if (ch->dir == JN_DIR_IN) {
            /* A session the broker kept has our subscriptions; subscribing again would have
             * it resend every retained message. The first connect of a run subscribes anyway,
             * as the topics in the config may have changed. */
            if (!e->flag || !st->ever_connected) {
                subscribe_now(st);
            }
            /* paho offers what it restored or kept only when the socket is busy. */
            nudge(st);
        }
        st->ever_connected = 1;
        break;
    case EV_CONNECT_FAILED:
        st->connecting = 0;
        st->failures++;
        schedule_reconnect(st, e->text);
        break;
    case EV_LOST:
        st->connected = 0;
        st->connecting = 0;
        jn_ch_warn(ch, "connection to %s lost: %s; reconnecting", st->conf->url, e->text);
        snprintf(reason, sizeof(reason), "connection lost before the broker acknowledged (%s)",
                 e->text);
        out_fail_all(st, reason);
        st->failures = 0;
        connect_now(st);
        break;
    case EV_MESSAGE:
        in_ingest(st, e->im);
        break;
    case EV_PUB_OK:
        s = out_slot_of(st, e->pub);
        if (s != NULL) {
            out_finish(st, s, JN_SEND_OK, NULL);
        }
        break;
    case EV_PUB_FAILED:
        s = out_slot_of(st, e->pub);
        if (s != NULL) {
            out_finish(st, s, JN_SEND_RETRY, e->text);
        }
        break;
    case EV_SUB_OK:
        jn_ch_info(ch, "subscribed to %zu topic filter(s) at qos %lld", st->conf->topics.n,
                   st->conf->qos);
        break;
    case EV_SUB_FAILED:
        resubscribe_later(st, e->text);
        break;
    }
}

/* Loop: one paho event, in the order paho's threads posted them. */
static void wake_done(void *arg, struct jn_job *job)
{
    struct ev *e = JN_JOB_OF(job, struct ev, job);

    handle(arg, e);
    jn_free(e);
}

/* ---- life cycle ---- */

static void state_free(struct mqtt_state *st)
{
    struct jn_job *rest = NULL;

    if (st == NULL) {
        return;
    }
    if (st->cli != NULL) {
        /* No paho callback runs after this returns. */
        MQTTAsync_destroy(&st->cli);
    }
    /* Events not handled: their messages were never given to the journal. In durable mode
     * paho keeps them (persistence); in immediate mode they were acknowledged and are lost. */
    if (st->wake != NULL) {
        rest = jn_worker_stop(st->wake, 0);
    }
    while (rest != NULL) {
        struct ev *e = JN_JOB_OF(rest, struct ev, job);
        rest = rest->next;
        if (e->kind == EV_MESSAGE && e->im != NULL && e->im->key == NULL) {
            jn_ch_error(st->ch, "stopping: a message on %s acknowledged to the broker and not "
                        "yet committed is lost (handoff: immediate)", e->im->topic);
            in_msg_free(e->im);
        }
        jn_free(e);
    }
    /* Answers that never came, or came as events freed above. */
    while (st->pubs != NULL) {
        struct pub_ctx *pc = st->pubs;
        st->pubs = pc->next;
        jn_free(pc);
    }
    while (st->held != NULL) {
        struct in_msg *im = st->held;
        st->held = im->hnext;
        if (im->key == NULL) {
            jn_ch_error(st->ch, "stopping: a message on %s refused by the journal is lost "
                        "(handoff: immediate)", im->topic);
            in_msg_free(im);
        }
    }
    while (st->ims != NULL) {
        struct in_msg *im = st->ims;
        st->ims = im->next;
        if (im->t != NULL) {
            jn_ingest_forget(im->t);
        }
        in_msg_free(im);
    }
    jn_worker_free(st->wake);
    if (st->reconnect != NULL) {
        event_free(st->reconnect);
    }
    if (st->hold_timer != NULL) {
        event_free(st->hold_timer);
    }
    if (st->sweep != NULL) {
        event_free(st->sweep);
    }
    if (st->tick != NULL) {
        event_free(st->tick);
    }
    pthread_mutex_destroy(&st->mu);
    jn_free(st->slots);
    jn_free(st->free_slots);
    jn_free(st->filters);
    jn_free(st->qoss);
    jn_free(st->client_id);
    jn_free(st->nudge_topic);
    jn_free(st->persist_dir);
    jn_free(st);
}

static int mqtt_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct mqtt_conf *c = ch->conf;
    struct mqtt_state *st = jn_calloc(1, sizeof(*st));
    struct jn_buf b = JN_BUF_INIT;

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    st->conf = c;
    pthread_mutex_init(&st->mu, NULL);
    if (c->client_id != NULL && c->client_id[0] != '\0') {
        st->client_id = jn_strdup(c->client_id);
    } else if (jn_buf_printf(&b, "junction-%s", ch->name) == 0) {
        st->client_id = jn_buf_steal(&b);
    }
    jn_buf_reset(&b);
    if (st->client_id == NULL || jn_buf_printf(&b, MQTT_NUDGE_PREFIX "%s", st->client_id) != 0 ||
        (st->nudge_topic = jn_buf_steal(&b)) == NULL) {
        goto nomem;
    }
    st->tls = url_tls(c->url) == 1;
    if (st->tls) {
        MQTTAsync_SSLOptions so = MQTTAsync_SSLOptions_initializer;
        so.trustStore = c->ca_file;
        so.keyStore = c->cert_file;
        so.privateKey = c->key_file;
        so.privateKeyPassword = c->key_password;
        so.enableServerCertAuth = c->verify;
        so.verify = c->verify;
        so.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
        st->ssl = so;
    }
    if (ch->dir == JN_DIR_IN) {
        st->filters = jn_calloc(c->topics.n, sizeof(*st->filters));
        st->qoss = jn_calloc(c->topics.n, sizeof(*st->qoss));
        if (st->filters == NULL || st->qoss == NULL) {
            goto nomem;
        }
        for (size_t i = 0; i < c->topics.n; i++) {
            st->filters[i] = c->topics.v[i];
            st->qoss[i] = (int)c->qos;
        }
        if (c->state_dir != NULL && c->state_dir[0] != '\0') {
            st->persist_dir = jn_strdup(c->state_dir);
        } else {
            /* Paho's files belong with the journal: they hold messages not yet committed. */
            struct jn_buf pd = JN_BUF_INIT;
            jn_buf_printf(&pd, "%s/mqtt", jn_broker_data_dir(ch->broker));
            st->persist_dir = jn_buf_steal(&pd);
        }
        if (st->persist_dir == NULL) {
            goto nomem;
        }
    } else {
        st->nslots = ch->concurrency >= 1 ? (size_t)ch->concurrency : 1;
        st->slots = jn_calloc(st->nslots, sizeof(*st->slots));
        st->free_slots = jn_calloc(st->nslots, sizeof(*st->free_slots));
        if (st->slots == NULL || st->free_slots == NULL) {
            goto nomem;
        }
        for (size_t i = 0; i < st->nslots; i++) {
            st->free_slots[st->nfree++] = st->nslots - 1 - i;
        }
    }
    ch->state = st;
    return 0;
nomem:
    jn_buf_reset(&b);
    state_free(st);
    return jn_err_set(err, JN_ENOMEM, "out of memory");
}

int jn_mqtt__queue_entry_ok(const unsigned char *buf, size_t size)
{
    int plen;
    size_t rest, tl;

    if (size < 6 * sizeof(int) + 1 || size > MQTT_MAX_PACKET + 64) {
        return 0;
    }
    memcpy(&plen, buf, sizeof(int));
    if (plen < 0 || (size_t)plen > size - 6 * sizeof(int) - 1) {
        return 0;
    }
    rest = size - sizeof(int) - (size_t)plen - 4 * sizeof(int);
    /* topic, its NUL, then an int: the NUL must sit right before the last int */
    if (rest < sizeof(int) + 1) {
        return 0;
    }
    tl = rest - sizeof(int) - 1;
    return buf[sizeof(int) + (size_t)plen + 4 * sizeof(int) + tl] == '\0' &&
           memchr(buf + sizeof(int) + (size_t)plen + 4 * sizeof(int), '\0', tl) == NULL;
}

/* 1 when the paho queue entry at path is whole (jn_mqtt__queue_entry_ok). paho writes it in
 * place with no length of its own, so a kill during the write leaves a short file that paho
 * would read past. */
static int queue_entry_ok(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    int ok = 0;

    if (f == NULL) {
        return 1; /* gone or unreadable: paho will say so itself */
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        size < (long)(6 * sizeof(int) + 1) || size > (long)MQTT_MAX_PACKET + 64) {
        goto out;
    }
    buf = jn_malloc((size_t)size);
    if (buf == NULL) {
        ok = 1; /* cannot tell; leave it to paho */
        goto out;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        goto out;
    }
    ok = jn_mqtt__queue_entry_ok(buf, (size_t)size);
out:
    jn_free(buf);
    fclose(f);
    return ok;
}

/*
 * Prepares paho's persistence folder for this client before paho reads it. Two things in it
 * cannot be trusted after a crash:
 *  - "c-N" entries: paho 1.3.11 persists SUBSCRIBE and UNSUBSCRIBE commands too, and on
 *    restoring a SUBSCRIBE its send thread crashes (SIGSEGV, seen in the crash test). IN only
 *    ever queues subscribes and nudges, and subscribes again on its first connect, so they go.
 *  - a "q-N" entry cut short by the kill: moved out of paho's folder, to
 *    <state_dir>/<folder>.q-N.damaged, with an error line. Not inside it: paho lists every file
 *    there as a key, and its restore loop stops at the first key it cannot read, leaving every
 *    later entry on disk and never offered (the crash test found that too).
 * The folder is paho's: <state_dir>/<client id>-<host>-<port> (pstopen in
 * MQTTPersistenceDefault.c).
 */
static void state_sanitize(struct mqtt_state *st)
{
    struct jn_buf b = JN_BUF_INIT;
    const char *hp = strstr(st->conf->url, "://");
    DIR *dir;
    struct dirent *de;
    char *cdir;

    if (hp == NULL || jn_buf_printf(&b, "%s/%s-%s", st->persist_dir, st->client_id, hp + 3) != 0 ||
        (cdir = jn_buf_steal(&b)) == NULL) {
        jn_buf_reset(&b);
        return;
    }
    for (char *p = cdir + strlen(st->persist_dir) + 1; *p; p++) {
        if (*p == ':') {
            *p = '-';
        }
    }
    dir = opendir(cdir);
    while (dir != NULL && (de = readdir(dir)) != NULL) {
        char path[4096], moved[4200];
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 4, ".msg") != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", cdir, de->d_name);
        if (strncmp(de->d_name, "c-", 2) == 0) {
            if (unlink(path) != 0) {
                jn_ch_warn(st->ch, "cannot remove paho's stale command %s: %s", path,
                           strerror(errno));
            }
        } else if (strncmp(de->d_name, "q-", 2) == 0 && !queue_entry_ok(path)) {
            snprintf(moved, sizeof(moved), "%s.%.*s.damaged", cdir, (int)(n - 4), de->d_name);
            jn_ch_error(st->ch, "paho's queue entry %s was cut short by a crash while it was "
                        "written; moved aside to %s (that message is lost)", path, moved);
            if (rename(path, moved) != 0) {
                (void)unlink(path);
            }
        }
    }
    if (dir != NULL) {
        closedir(dir);
    }
    jn_free(cdir);
}

static int mqtt_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mqtt_state *st = ch->state;
    const struct mqtt_conf *c = st->conf;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    int rc;

    pthread_once(&paho_once, paho_init);
    st->wake = jn_worker_new(ch->base, NULL, NULL, wake_done, st);
    st->reconnect = evtimer_new(ch->base, reconnect_cb, st);
    st->hold_timer = evtimer_new(ch->base, hold_cb, st);
    if (st->wake == NULL || st->reconnect == NULL || st->hold_timer == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    co.MQTTVersion = MQTTVERSION_3_1_1;
    if (ch->dir == JN_DIR_IN) {
        /* paho reads back what it kept (messages we had not taken, QoS 2 halfway) here. */
        if (jn_fs_mkdir_p(st->persist_dir, 0700) != 0) {
            return jn_err_set(err, JN_EIO, "state_dir: cannot create %s: %s", st->persist_dir,
                              strerror(errno));
        }
        state_sanitize(st);
        rc = MQTTAsync_createWithOptions(&st->cli, c->url, st->client_id,
                                         MQTTCLIENT_PERSISTENCE_DEFAULT, st->persist_dir, &co);
    } else {
        rc = MQTTAsync_createWithOptions(&st->cli, c->url, st->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    }
    if (rc != MQTTASYNC_SUCCESS) {
        st->cli = NULL;
        return jn_err_set(err, rc == MQTTASYNC_PERSISTENCE_ERROR ? JN_EIO : JN_EINVAL,
                          "cannot create the MQTT client for %s (paho %d%s)", c->url, rc,
                          rc == MQTTASYNC_PERSISTENCE_ERROR ? ": state_dir unreadable?" : "");
    }
    rc = MQTTAsync_setCallbacks(st->cli, st, on_lost, on_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        return jn_err_set(err, JN_EINVAL, "cannot set the MQTT callbacks (paho %d)", rc);
    }
    if (ch->dir == JN_DIR_IN && c->handoff == HANDOFF_DURABLE) {
        struct timeval tv = {1, 0};
        st->tick = event_new(ch->base, -1, EV_PERSIST, tick_cb, st);
        if (st->tick == NULL || event_add(st->tick, &tv) != 0) {
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
    }
    if (ch->dir == JN_DIR_OUT) {
        struct timeval tv = {MQTT_SWEEP_MS / 1000, (MQTT_SWEEP_MS % 1000) * 1000};
        st->sweep = event_new(ch->base, -1, EV_PERSIST, sweep_cb, st);
        if (st->sweep == NULL || event_add(st->sweep, &tv) != 0) {
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        jn_ch_info(ch, "publishing to %s as topic %s at qos %lld", c->url, c->topic, c->qos);
    }
    connect_now(st);
    return 0;
}

static void mqtt_stop(struct jn_channel *ch)
{
    struct mqtt_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_mutex_unlock(&st->mu);
    if (st->reconnect != NULL) {
        evtimer_del(st->reconnect);
    }
    /* IN: the tick stays, so what was committed before the stop is still released to paho.
     * OUT: the sweep stays, so a publish that is never answered is still finished. */
}

static void mqtt_destroy(struct jn_channel *ch)
{
    struct mqtt_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_mutex_unlock(&st->mu);
    if (st->cli != NULL) {
        MQTTAsync_destroy(&st->cli);
    }
    for (size_t i = 0; i < st->nslots; i++) {
        if (st->slots[i].d != NULL) {
            out_finish(st, &st->slots[i], JN_SEND_RETRY, "stopping");
        }
    }
    ch->state = NULL;
    state_free(st);
}

static const struct jn_in_def mqtt_in = {
    .init = mqtt_init,   /* client id, filters; no paho yet */
    .start = mqtt_start, /* paho client (restores its persistence), first connect */
    .stop = mqtt_stop,
    .destroy = mqtt_destroy,
};

static const struct jn_out_def mqtt_out = {
    .init = mqtt_init,   /* client id, OUT slots; no paho yet */
    .start = mqtt_start, /* paho client, first connect */
    .send = mqtt_send,   /* async; done on PUBACK/PUBCOMP, a failure or the timeout */
    .stop = mqtt_stop,
    .destroy = mqtt_destroy,
};

const struct jn_channel_def jn_channel_mqtt = {
    .name = "mqtt",
    .desc = "MQTT 3.1.1 client (paho): subscribe to topic filters (in), publish (out)",
    .opts = mqtt_opts,
    .conf_size = sizeof(struct mqtt_conf),
    .check = mqtt_check, /* url scheme, TLS options, topic filters (in), template (out) */
    .in = &mqtt_in,
    .out = &mqtt_out,
};
