/*
 * mqtt client: the paho MQTTAsync client and the connection channels/mqtt_out.c runs on: the
 * channel's state, paho's global init, the hand-off of paho's callbacks to the loop,
 * connecting and reconnecting with backoff, and the life cycle (init, start, stop, destroy) the
 * side builds on; the side adds its own part through struct mqtt_side (mqtt_int.h). The IN
 * side does not use paho any more (channels/mqtt_in.c: its own client on mqtt_proto).
 *
 * Threads. paho runs its own send and receive threads (shared by every client in the process)
 * and calls us only on them. Nothing here touches the loop from a paho thread: each callback
 * posts an event to a jn_worker hand-off (jn_worker.h: a locked list and event_active(); the
 * broker called evthread_use_pthreads()). The loop does the rest: jn_delivery_done,
 * reconnecting. Lock order: paho's own mutex (held while it calls us) before st->mu; the loop
 * never holds st->mu while calling into paho.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <MQTTAsync.h>
#include <event2/event.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "jn_worker.h"
#include "mqtt_int.h"

/* The state, with the part that names a paho type beside it in one allocation, so mqtt_int.h
 * names none. */
struct mqtt_client {
    struct mqtt_state st;
    MQTTAsync_SSLOptions ssl;
};

#define CLIENT_OF(s) \
    ((struct mqtt_client *)(void *)((char *)(s) - offsetof(struct mqtt_client, st)))

static pthread_once_t paho_once = PTHREAD_ONCE_INIT;

/* ---- hand-off to the loop ---- */

int jn_mqtt__post(struct mqtt_state *st, struct ev *e)
{
    /* Fails only once stopped (never while paho runs: state_free destroys the client first). */
    return jn_worker_post(st->wake, &e->job) == 0 ? 0 : -1;
}

/* Any thread. Out of memory drops the event: each kind has a backstop (the reconnect loop,
 * the OUT timeout sweep), and it is logged. */
void jn_mqtt__ev_post(struct mqtt_state *st, enum ev_kind kind, int code, int flag,
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
    if (jn_mqtt__post(st, e) != 0) {
        jn_free(e);
    }
}

/* ---- paho callbacks (paho's threads) ---- */

/* paho's receive thread: OUT subscribes to nothing, so nothing arrives; let it go. */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    (void)ctx;
    (void)topic_len;
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_lost(void *ctx, char *cause)
{
    jn_mqtt__ev_post(ctx, EV_LOST, 0, 0, NULL, cause != NULL ? cause : "connection lost");
    MQTTAsync_free(cause);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *r)
{
    jn_mqtt__ev_post(ctx, EV_CONNECTED, 0, r != NULL ? r->alt.connect.sessionPresent : 0, NULL,
                     NULL);
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
    jn_mqtt__ev_post(ctx, EV_CONNECT_FAILED, code, 0, NULL, text);
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

void jn_mqtt__schedule_reconnect(struct mqtt_state *st, const char *why)
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
    jn_mqtt__connect(arg);
}

void jn_mqtt__connect(struct mqtt_state *st)
{
    const struct mqtt_conf *c = st->conf;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    int rc;

    if (st->stopping || st->connected || st->connecting) {
        return;
    }
    co.keepAliveInterval = (int)(c->keepalive / 1000);
    co.cleansession = st->clean_session;
    co.maxInflight = st->max_inflight;
    co.username = c->username;
    co.password = c->password;
    co.connectTimeout = (int)(c->connect_timeout / 1000);
    co.retryInterval = 0;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.automaticReconnect = 0; /* ours: logged, with our backoff, and OUT fails in-flight sends */
    co.onSuccess = on_connect_ok;
    co.onFailure = on_connect_fail;
    co.context = st;
    co.ssl = st->tls ? &CLIENT_OF(st)->ssl : NULL;
    st->connecting = 1;
    rc = MQTTAsync_connect(st->cli, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        char why[64];
        st->connecting = 0;
        st->failures++;
        snprintf(why, sizeof(why), "connect refused by paho (%d)", rc);
        jn_mqtt__schedule_reconnect(st, why);
    }
}

/* ---- events (loop) ---- */

static void handle(struct mqtt_state *st, struct ev *e)
{
    struct jn_channel *ch = st->ch;

    switch (e->kind) {
    case EV_CONNECTED:
        st->connecting = 0;
        st->connected = 1;
        st->failures = 0;
        jn_ch_info(ch, "connected to %s as %s (session present: %s)", st->conf->url,
                   st->client_id, e->flag ? "yes" : "no");
        if (st->side->connected != NULL) {
            st->side->connected(st, e->flag);
        }
        break;
    case EV_CONNECT_FAILED:
        st->connecting = 0;
        st->failures++;
        jn_mqtt__schedule_reconnect(st, e->text);
        break;
    case EV_LOST:
        st->connected = 0;
        st->connecting = 0;
        jn_ch_warn(ch, "connection to %s lost: %s; reconnecting", st->conf->url, e->text);
        if (st->side->lost != NULL) {
            st->side->lost(st, e->text);
        }
        st->failures = 0;
        jn_mqtt__connect(st);
        break;
    default:
        if (st->side->event != NULL) {
            st->side->event(st, e);
        }
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

void jn_mqtt__state_free(struct mqtt_state *st)
{
    struct jn_job *rest = NULL;

    if (st == NULL) {
        return;
    }
    if (st->cli != NULL) {
        /* No paho callback runs after this returns. */
        MQTTAsync_destroy(&st->cli);
    }
    /* Events not handled: their publishes are finished by the side's release. */
    if (st->wake != NULL) {
        rest = jn_worker_stop(st->wake, 0);
    }
    while (rest != NULL) {
        struct ev *e = JN_JOB_OF(rest, struct ev, job);
        rest = rest->next;
        jn_free(e);
    }
    if (st->side->release != NULL) {
        st->side->release(st);
    }
    jn_worker_free(st->wake);
    if (st->reconnect != NULL) {
        event_free(st->reconnect);
    }
    pthread_mutex_destroy(&st->mu);
    jn_free(st->client_id);
    jn_free(CLIENT_OF(st));
}

struct mqtt_state *jn_mqtt__state_new(struct jn_channel *ch, const struct mqtt_side *side,
                                      struct jn_err *err)
{
    const struct mqtt_conf *c = ch->conf;
    struct mqtt_client *cl = jn_calloc(1, sizeof(*cl));
    struct mqtt_state *st = cl != NULL ? &cl->st : NULL;
    struct jn_buf b = JN_BUF_INIT;

    if (st == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    st->ch = ch;
    st->conf = c;
    st->side = side;
    pthread_mutex_init(&st->mu, NULL);
    if (c->client_id != NULL && c->client_id[0] != '\0') {
        st->client_id = jn_strdup(c->client_id);
    } else if (jn_buf_printf(&b, "junction-%s", ch->name) == 0) {
        st->client_id = jn_buf_steal(&b);
    }
    jn_buf_reset(&b);
    if (st->client_id == NULL) {
        jn_mqtt__state_free(st);
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    st->tls = jn_mqtt__url_tls(c->url) == 1;
    if (st->tls) {
        MQTTAsync_SSLOptions so = MQTTAsync_SSLOptions_initializer;
        if (jn_mqtt__tls_block(c)) {
            /* The tls: block (its strings live as long as the conf, which outlives us). */
            const struct jn_tls_conf *t = &c->tls;
            struct stat sb;
            int verify = t->verify_peer != JN_TLS_VERIFY_FALSE;
            if (t->ca != NULL && stat(t->ca, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                so.CApath = t->ca;
            } else {
                so.trustStore = t->ca;
            }
            so.keyStore = t->cert;
            so.privateKey = t->key;
            so.privateKeyPassword = t->key_password;
            so.enabledCipherSuites = t->ciphers;
            so.enableServerCertAuth = verify;
            so.verify = verify;
        } else {
            so.trustStore = c->ca_file;
            so.keyStore = c->cert_file;
            so.privateKey = c->key_file;
            so.privateKeyPassword = c->key_password;
            so.enableServerCertAuth = c->verify;
            so.verify = c->verify;
        }
        so.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
        cl->ssl = so;
    }
    return st;
}

int jn_mqtt__start(struct jn_channel *ch, struct jn_err *err)
{
    struct mqtt_state *st = ch->state;

    pthread_once(&paho_once, paho_init);
    st->wake = jn_worker_new(ch->base, NULL, NULL, wake_done, st);
    st->reconnect = evtimer_new(ch->base, reconnect_cb, st);
    if (st->wake == NULL || st->reconnect == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    return 0;
}

int jn_mqtt__create(struct mqtt_state *st, struct jn_err *err)
{
    const struct mqtt_conf *c = st->conf;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    int rc;

    co.MQTTVersion = MQTTVERSION_3_1_1;
    rc = MQTTAsync_createWithOptions(&st->cli, c->url, st->client_id,
                                     MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        st->cli = NULL;
        return jn_err_set(err, JN_EINVAL, "cannot create the MQTT client for %s (paho %d)",
                          c->url, rc);
    }
    rc = MQTTAsync_setCallbacks(st->cli, st, on_lost, on_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        return jn_err_set(err, JN_EINVAL, "cannot set the MQTT callbacks (paho %d)", rc);
    }
    return 0;
}

void jn_mqtt__stop(struct jn_channel *ch)
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
    /* The sweep stays, so a publish that is never answered is still finished. */
}

void jn_mqtt__halt(struct mqtt_state *st)
{
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_mutex_unlock(&st->mu);
    if (st->cli != NULL) {
        MQTTAsync_destroy(&st->cli);
    }
}
