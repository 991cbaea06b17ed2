/*
 * mqtt_int.h: what channels/mqtt_conf.c (options, check, the def), mqtt_in.c (subscribe, on
 * junction's own client over channels/mqtt_proto), mqtt_client.c (the paho client OUT runs on)
 * and mqtt_out.c (publish) share (house style: module__verb, shared inside one module and its
 * tests only).
 *
 * The first part has no paho type in sight, so tests/fuzz/fuzz_mqtt_headers.c can drive it
 * alone: the parts that read outside input. IN: what a PUBLISH brings (topic, QoS, retain)
 * becomes junction headers. OUT: a topic rendered from the channel's template over a message's
 * headers is checked before it is published. Topic filters from the config are checked at
 * load. No shared state; allocations only through jn_malloc (jn_mem_fail_after() reaches them).
 *
 * The second part is the conf, and the state and paho client of the OUT side (still no paho
 * type: paho's MQTTAsync handle is a void *).
 */
#ifndef JN_MQTT_INT_H
#define JN_MQTT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_channel.h"
#include "jn_listener.h"
#include "jn_msg.h"
#include "jn_tls.h"
#include "jn_worker.h"

/* MQTT 3.1.1 1.5.3: a UTF-8 string (a topic, a filter) is at most 65535 bytes. */
#define JN_MQTT_MAX_TOPIC 65535

/*
 * Adds mqtt-topic, mqtt-qos and mqtt-retain for one received message to m (set: replacing any
 * present). topic is topic_len bytes (0 means NUL-terminated). A topic with a
 * NUL byte in it (MQTT forbids U+0000, but not every broker checks) cannot be a junction
 * header: it goes base64-encoded as mqtt-topic-base64 instead, like Kafka's keys. mqtt-qos is
 * qos in decimal; mqtt-retain is "true" for any nonzero retained.
 * Returns 0 or JN_ENOMEM.
 */
int jn_mqtt__map_headers(struct jn_msg *m, const char *topic, size_t topic_len, int qos,
                         int retained);

struct jn_mqtt_props;
/* MQTT 5 properties of a received PUBLISH: content type as mqtt-content-type, each user
 * property as mqtt-user-<name> (mqtt_in.c; IN and the listener). 0 or JN_ENOMEM. */
int jn_mqtt__map_props(struct jn_msg *m, const struct jn_mqtt_props *pr);

/* Why a topic filter is not valid (MQTT 3.1.1 4.7), or NULL. f is NUL-terminated. */
const char *jn_mqtt__filter_error(const char *f);

/* Why a rendered topic name (n bytes at t, NUL-terminated) cannot be published to, or NULL:
 * empty, longer than 65535 bytes, a NUL byte inside, a wildcard (+ or #). UTF-8 validity is
 * paho's check (MQTTASYNC_BAD_UTF8_STRING at send). */
const char *jn_mqtt__topic_error(const char *t, size_t n);

/* ---- the channel (mqtt_conf.c, mqtt_in.c, mqtt_client.c, mqtt_out.c) ---- */

/* MQTT's largest packet is 256 MiB - 1 (remaining length); topic and header share it. */
#define MQTT_MAX_PACKET 268435455ULL
#define MQTT_MAX_TOPIC JN_MQTT_MAX_TOPIC

enum {
    MQTT_PROTO_5 = 0,
    MQTT_PROTO_311 = 1,
};

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
    /* IN (mqtt_in.c: our own client on the codec, not paho) */
    struct jn_strlist topics;
    bool clean_session;
    int protocol;               /* MQTT_PROTO_* */
    long long receive_max;      /* messages in flight between the broker and the commit */
    long long session_expiry;   /* ms (MQTT 5; whole seconds on the wire) */
    unsigned long long max_packet;
    /* IN as a listener (mqtt_listen.c): listen instead of url */
    char *listen;
    long long max_connections;
    struct jn_net_conf net;
    struct jn_tls_conf tls;
    struct jn_sublist auth;     /* struct jn_auth_conf methods (jn_auth.h) */
    struct jn_strlist allowed_topics;
    char *handoff;              /* deprecated, ignored */
    char *state_dir;            /* deprecated, ignored */
    /* OUT */
    char *topic;                /* template */
    bool retain;
    long long timeout;          /* ms */
    long long max_inflight;
};

/* The sides of jn_channel_mqtt: IN as a client (url: mqtt_in.c) or as a listener (listen:
 * mqtt_listen.c), chosen per instance in mqtt_conf.c; OUT (mqtt_out.c). */
extern const struct jn_in_def jn_mqtt__in;
extern const struct jn_in_def jn_mqtt__listen;
extern const struct jn_out_def jn_mqtt__out;

/* 1 for ssl:// or mqtts://, 0 for tcp:// or mqtt://, -1 for anything else (mqtt_conf.c). */
int jn_mqtt__url_tls(const char *url);

/* Whether a client (url:) channel's TLS comes from its `tls:` block (ca, cert, key,
 * key_password, allowed_peers, server_name, verify_peer or enabled given) rather than from the
 * older ca_file, cert_file, key_file, key_password and verify (mqtt_conf.c). */
struct mqtt_conf;
int jn_mqtt__tls_block(const struct mqtt_conf *c);

/* ---- the paho client of the OUT side (mqtt_client.c); IN has its own in mqtt_in.c ---- */

enum ev_kind {
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_PUB_OK,
    EV_PUB_FAILED,
};

struct mqtt_state;
struct pub_ctx; /* mqtt_out.c: the context paho hands back with a publish's answer */
struct out_slot; /* mqtt_out.c: an OUT publish in flight */

/* One paho event for the loop, posted from paho's threads through st->wake. */
struct ev {
    struct jn_job job;    /* in st->wake */
    enum ev_kind kind;
    int code;
    int flag;             /* CONNECTED: session present */
    struct pub_ctx *pub;  /* PUB_* */
    char text[200];
};

/* What one side adds to the shared client. NULL members: nothing to do. */
struct mqtt_side {
    /* Loop: connected (after the shared bookkeeping); session_present is CONNACK's flag. */
    void (*connected)(struct mqtt_state *st, int session_present);
    /* Loop: the connection was lost (cause: paho's words), before reconnecting. */
    void (*lost)(struct mqtt_state *st, const char *cause);
    /* Loop: the side's own events (EV_PUB_*). */
    void (*event)(struct mqtt_state *st, struct ev *e);
    /* At state_free: the side's own state (paho destroyed, events dropped). */
    void (*release)(struct mqtt_state *st);
};

struct mqtt_state {
    struct jn_channel *ch;
    const struct mqtt_conf *conf;
    const struct mqtt_side *side;
    void *cli;             /* paho's MQTTAsync */
    int tls;
    int clean_session;     /* the CONNECT's cleansession (OUT: always) */
    int max_inflight;      /* the CONNECT's maxInflight */
    char *client_id;

    pthread_mutex_t mu; /* stopping */
    int stopping;
    struct jn_worker *wake; /* the hand-off of struct ev to the loop; set before paho runs */

    /* loop only */
    struct event *reconnect;
    struct event *sweep;
    int connected;
    int connecting;
    int failures;          /* connect attempts failed in a row */
    struct out_slot *slots;
    size_t nslots;
    size_t *free_slots;
    size_t nfree;
    struct pub_ctx *pubs;  /* sent, answer not handled yet */
};

/* init: the state OUT starts from (client id, TLS options); no paho yet.
 * The side fills in its own fields; NULL (err: JN_ENOMEM) when out of memory. */
struct mqtt_state *jn_mqtt__state_new(struct jn_channel *ch, const struct mqtt_side *side,
                                      struct jn_err *err);
/* Destroys paho's client (no callback runs after), frees the events not handled, releases
 * the side's state, frees st. NULL is a no-op. */
void jn_mqtt__state_free(struct mqtt_state *st);
/* start, first part: paho's global init, the hand-off and the reconnect timer. */
int jn_mqtt__start(struct jn_channel *ch, struct jn_err *err);
/* start: paho's client (no persistence: the journal redelivers) and its callbacks. */
int jn_mqtt__create(struct mqtt_state *st, struct jn_err *err);
/* The def's stop: no new work, no reconnect. */
void jn_mqtt__stop(struct jn_channel *ch);
/* destroy, first part: stopping set, paho's client destroyed (no callback runs after). */
void jn_mqtt__halt(struct mqtt_state *st);

/* Loop: connect unless connected, connecting or stopping. */
void jn_mqtt__connect(struct mqtt_state *st);
/* Loop: arm the reconnect timer with the backoff of st->failures. */
void jn_mqtt__schedule_reconnect(struct mqtt_state *st, const char *why);
/* Any thread: hands e to the loop. 0, or the caller still owns e (stopped). */
int jn_mqtt__post(struct mqtt_state *st, struct ev *e);
/* Any thread: a new event for the loop; out of memory drops it (logged). */
void jn_mqtt__ev_post(struct mqtt_state *st, enum ev_kind kind, int code, int flag,
                      struct pub_ctx *pub, const char *text);

#endif
