/*
 * mqtt IN: subscribe to topic filters on an outside MQTT broker and hand what arrives to the
 * journal, on the paho client of channels/mqtt_client.c (its opening comment has the threads).
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
 * The IN side runs paho with its file persistence (state_dir) and the session the config asks
 * for (clean_session), and subscribes on connecting (mqtt_int.h's struct mqtt_side).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_fs.h"
#include "jn_mem.h"
#include "mqtt_int.h"

/* A refused ingest (full journal, stopping) is tried again after this, doubling up to MAX. */
#define MQTT_HOLD_MIN_MS 100
#define MQTT_HOLD_MAX_MS 5000

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
/* Any thread. Takes ownership of e (an EV_MESSAGE). */
static void in_push(struct mqtt_state *st, struct ev *e)
{
    if (jn_mqtt__post(st, e) == 0) {
        return;
    }
    /* Stopped (not while paho runs: state_free destroys the client first). */
    if (e->im != NULL && e->im->key == NULL) {
        in_msg_free(e->im);
    }
    jn_free(e);
}

/* ---- paho callbacks (paho's threads) ---- */

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
static int in_arrived(struct mqtt_state *st, char *topic, int topic_len, void *pmsg)
{
    MQTTAsync_message *msg = pmsg;
    struct in_msg *im, **pp;
    struct ev *e;
    int durable = st->conf->handoff == HANDOFF_DURABLE;

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
        jn_mqtt__paho_free(topic, msg);
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
        in_push(st, e);
        return 0;
    }
    im->key = NULL;
    in_push(st, e);
    jn_mqtt__paho_free(topic, msg);
    return 1;
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
    jn_mqtt__ev_post(st, refused ? EV_SUB_FAILED : EV_SUB_OK, 0, 0, NULL,
                     refused ? "some topic filters were refused" : NULL);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
    char text[200];

    snprintf(text, sizeof(text), "subscribe failed (%d%s%s)", r != NULL ? r->code : -1,
             r != NULL && r->message != NULL ? ": " : "",
             r != NULL && r->message != NULL ? r->message : "");
    jn_mqtt__ev_post(ctx, EV_SUB_FAILED, r != NULL ? r->code : -1, 0, NULL, text);
}

/* ---- subscribing (loop) ---- */

/* Without its subscriptions an IN channel would sit connected and idle: drop the connection
 * and come back through the reconnect path, which subscribes on its first connect. */
static void resubscribe_later(struct mqtt_state *st, const char *why)
{
    jn_ch_error(st->ch, "%s; reconnecting to subscribe again", why);
    st->ever_connected = 0;
    st->connected = 0;
    (void)MQTTAsync_disconnect(st->cli, NULL);
    st->failures++;
    jn_mqtt__schedule_reconnect(st, why);
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

/* ---- the side's part of the client (loop) ---- */

static void in_connected(struct mqtt_state *st, int session_present)
{
    /* A session the broker kept has our subscriptions; subscribing again would have it resend
     * every retained message. The first connect of a run subscribes anyway, as the topics in
     * the config may have changed. */
    if (!session_present || !st->ever_connected) {
        subscribe_now(st);
    }
    /* paho offers what it restored or kept only when the socket is busy. */
    nudge(st);
}

static void in_event(struct mqtt_state *st, struct ev *e)
{
    switch (e->kind) {
    case EV_MESSAGE:
        in_ingest(st, e->im);
        break;
    case EV_SUB_OK:
        jn_ch_info(st->ch, "subscribed to %zu topic filter(s) at qos %lld", st->conf->topics.n,
                   st->conf->qos);
        break;
    case EV_SUB_FAILED:
        resubscribe_later(st, e->text);
        break;
    default:
        break;
    }
}

/* Events not handled: their messages were never given to the journal. In durable mode paho
 * keeps them (persistence); in immediate mode they were acknowledged and are lost. */
static void in_drop(struct mqtt_state *st, struct ev *e)
{
    if (e->kind == EV_MESSAGE && e->im != NULL && e->im->key == NULL) {
        jn_ch_error(st->ch, "stopping: a message on %s acknowledged to the broker and not "
                    "yet committed is lost (handoff: immediate)", e->im->topic);
        in_msg_free(e->im);
    }
}

static void in_release(struct mqtt_state *st)
{
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
    if (st->hold_timer != NULL) {
        event_free(st->hold_timer);
    }
    if (st->tick != NULL) {
        event_free(st->tick);
    }
    jn_free(st->filters);
    jn_free(st->qoss);
    jn_free(st->persist_dir);
}

static const struct mqtt_side in_side = {
    .arrived = in_arrived,
    .connected = in_connected,
    .event = in_event,
    .drop = in_drop,
    .release = in_release,
};

/* ---- paho's persistence after a crash ---- */

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

/* ---- life cycle ---- */

static int in_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct mqtt_conf *c = ch->conf;
    struct mqtt_state *st = jn_mqtt__state_new(ch, &in_side, err);

    if (st == NULL) {
        return JN_ENOMEM; /* err says so */
    }
    st->clean_session = c->clean_session;
    st->max_inflight = 65535;
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
    ch->state = st;
    return 0;
nomem:
    jn_mqtt__state_free(st);
    return jn_err_set(err, JN_ENOMEM, "out of memory");
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mqtt_state *st = ch->state;
    struct timeval tv = {1, 0};
    int rc = jn_mqtt__start(ch, err);

    if (rc != 0) {
        return rc;
    }
    st->hold_timer = evtimer_new(ch->base, hold_cb, st);
    if (st->hold_timer == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    /* paho reads back what it kept (messages we had not taken, QoS 2 halfway) here. */
    if (jn_fs_mkdir_p(st->persist_dir, 0700) != 0) {
        return jn_err_set(err, JN_EIO, "state_dir: cannot create %s: %s", st->persist_dir,
                          strerror(errno));
    }
    state_sanitize(st);
    rc = jn_mqtt__create(st, st->persist_dir, err);
    if (rc != 0) {
        return rc;
    }
    if (st->conf->handoff == HANDOFF_DURABLE) {
        st->tick = event_new(ch->base, -1, EV_PERSIST, tick_cb, st);
        if (st->tick == NULL || event_add(st->tick, &tv) != 0) {
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
    }
    jn_mqtt__connect(st);
    return 0;
}

static void in_destroy(struct jn_channel *ch)
{
    struct mqtt_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    jn_mqtt__halt(st);
    ch->state = NULL;
    jn_mqtt__state_free(st);
}

const struct jn_in_def jn_mqtt__in = {
    .init = in_init,   /* client id, filters; no paho yet */
    .start = in_start, /* paho client (restores its persistence), first connect */
    .stop = jn_mqtt__stop,
    .destroy = in_destroy,
};
