/*
 * mllp IN: each frame as a message. The frame's checks, the duplicate window, the ingest and
 * its outcome, and the ACK each slot gets (built here, or the downstream's passed back);
 * channels/mllp_in.c owns the sockets and sends the ready ACKs in order.
 *
 * A slot is ready when its ACK is known: at once for a refused frame, from the jn_ingest
 * callback for an accepted one (`ack: commit`), from the route's outcome or delivered_timeout
 * (`ack: delivered`, through jn_ingest_outcome), from the first copy's answer for a duplicate.
 * A slot orphaned by its connection's close (mllp_in.c) gets its callbacks all the same, and
 * is freed by them.
 *
 * Duplicates: MSH-10 with MSH-3 and MSH-4 is remembered for `duplicate_window`. A duplicate is
 * answered with the very ACK the first copy got and is not ingested; one that arrives while the
 * first copy is being committed waits for its outcome. The live window is in memory; the
 * journal keeps a copy for the next start (jn_msg_set_dedup, jn_dedup_load in jn_channel.h):
 * each entry is written in the ingest's own commit, with the ACK built before the ingest
 * (`ack: commit`: the AA the sender then gets), or without an answer, set by jn_dedup_answer
 * once the outcome has come (`ack: delivered`). The journal entry's answer is the framed ACK
 * bytes as sent (empty when MSH-15 asked for none).
 *
 * Modelled on what Mirth Connect's LLP listener does. Threads: everything runs on the broker's
 * loop.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "mllp_int.h"
#include "mllp_proto.h"

#define MLLP_CONTENT_TYPE "x-application/hl7-v2+er7"

/* ---- helpers ---- */

/* MSH-7 of our ACKs: this second in UTC, formatted once a second per channel. */
static void now_ts(struct mllp_in *in, char out[32])
{
    time_t t = time(NULL);
    struct tm tm;

    if (t != in->ts_sec) {
        gmtime_r(&t, &tm);
        strftime(in->ts, sizeof(in->ts), "%Y%m%d%H%M%S+0000", &tm);
        in->ts_sec = t;
    }
    memcpy(out, in->ts, sizeof(in->ts));
}

/* An ACK's own MSH-10: the first 20 characters of a fresh message id (48 bits of time, 50
 * random), because MSH-10 is 20 characters long up to v2.6. */
static void ack_id(struct jn_channel *ch, char out[JN_ID_LEN + 1])
{
    jn_idgen_next(jn_broker_idgen(ch->broker), out);
    out[20] = '\0';
}

/* ---- duplicates ---- */

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void jn_mllp__dup_unlink(struct mllp_in *in, struct dup *e)
{
    struct dup **pp = &in->buckets[e->h & (in->nbuckets - 1)];

    while (*pp && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp) {
        *pp = e->hnext;
    }
    if (e->older) {
        e->older->newer = e->newer;
    } else {
        in->oldest = e->newer;
    }
    if (e->newer) {
        e->newer->older = e->older;
    } else {
        in->newest = e->older;
    }
    in->ndup--;
}

void jn_mllp__dup_free(struct dup *e)
{
    jn_buf_reset(&e->ack);
    jn_free(e->key);
    jn_free(e);
}

/* Forgets entries past the window or the count. One being committed stays (it is young). */
static void dup_expire(struct mllp_in *in)
{
    long long now = jn_mono_ms();

    while (in->oldest && in->oldest->done &&
           (now - in->oldest->t_ms > in->conf->dup_window ||
            in->ndup > (size_t)in->conf->dup_max)) {
        struct dup *e = in->oldest;
        jn_mllp__dup_unlink(in, e);
        jn_mllp__dup_free(e);
    }
}

static struct dup *dup_find(struct mllp_in *in, const char *key, size_t klen, uint64_t h)
{
    struct dup *e;

    if (in->buckets == NULL) {
        return NULL;
    }
    dup_expire(in);
    for (e = in->buckets[h & (in->nbuckets - 1)]; e; e = e->hnext) {
        if (e->h == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            if (e->done && jn_mono_ms() - e->t_ms > in->conf->dup_window) {
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

static struct dup *dup_add(struct mllp_in *in, const char *key, size_t klen, uint64_t h)
{
    struct dup *e;
    size_t b;

    if (in->buckets == NULL) {
        return NULL;
    }
    e = jn_calloc(1, sizeof(*e));
    if (e == NULL || (e->key = jn_malloc(klen ? klen : 1)) == NULL) {
        jn_free(e);
        return NULL;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->h = h;
    e->t_ms = jn_mono_ms();
    b = h & (in->nbuckets - 1);
    e->hnext = in->buckets[b];
    in->buckets[b] = e;
    e->older = in->newest;
    if (in->newest) {
        in->newest->newer = e;
    } else {
        in->oldest = e;
    }
    in->newest = e;
    in->ndup++;
    return e;
}

/* ---- slots, frames and their answers ---- */

void jn_mllp__flight_unlink(struct slot *s)
{
    if (s->fprev) {
        s->fprev->fnext = s->fnext;
    } else if (s->in->flight == s) {
        s->in->flight = s->fnext;
    }
    if (s->fnext) {
        s->fnext->fprev = s->fprev;
    }
    s->fprev = s->fnext = NULL;
}

static void waiter_unlink(struct slot *s)
{
    if (!s->waiter || s->dup == NULL) {
        return;
    }
    if (s->wprev) {
        s->wprev->wnext = s->wnext;
    } else {
        s->dup->waiters = s->wnext;
    }
    if (s->wnext) {
        s->wnext->wprev = s->wprev;
    }
    s->wprev = s->wnext = NULL;
    s->dup = NULL;
}

void jn_mllp__slot_free(struct slot *s)
{
    waiter_unlink(s);
    if (!s->waiter && s->dup && s->dup->owner == s) {
        s->dup->owner = NULL;
    }
    if (s->timer) {
        event_free(s->timer);
    }
    jn_buf_reset(&s->ack);
    jn_free(s->msh);
    jn_free(s);
}

/* A new slot at the tail of c's queue, keeping a copy of the message's first segment. */
static struct slot *slot_new(struct conn *c, const char *data, size_t len)
{
    struct slot *s = jn_calloc(1, sizeof(*s));
    size_t n = 0;

    if (s == NULL) {
        return NULL;
    }
    while (n < len && data[n] != '\r' && data[n] != '\n') {
        n++;
    }
    s->msh = jn_malloc(n + 1);
    if (s->msh == NULL) {
        jn_free(s);
        return NULL;
    }
    memcpy(s->msh, data, n);
    s->msh[n] = '\0';
    s->msh_len = n;
    s->c = c;
    s->in = c->in;
    if (c->tail) {
        c->tail->next = s;
    } else {
        c->head = s;
    }
    c->tail = s;
    c->nslots++;
    return s;
}

/* Puts in out (emptied first) our ACK for s's message; nothing when MSH-15 says no accept ACK
 * for this outcome. 0 or JN_ENOMEM. */
static int build_ack(const struct slot *s, char code, int err_code, const char *reason,
                     struct jn_buf *out)
{
    struct jn_mllp_msh m;
    char id[JN_ID_LEN + 1], ts[32];

    jn_mllp_msh_read(s->msh, s->msh_len, &m);
    out->len = 0;
    if (!jn_mllp_ack_wanted(&m, code)) {
        return 0;
    }
    ack_id(s->in->ch, id);
    now_ts(s->in, ts);
    return jn_mllp_ack_build(&m, code, err_code, reason, id, ts, out);
}

/* Fills s->ack with an ACK for its message. */
static void slot_answer(struct slot *s, char code, int err_code, const char *reason)
{
    s->ready = 1;
    if (build_ack(s, code, err_code, reason, &s->ack) != 0) {
        jn_ch_error(s->in->ch, "out of memory building an ACK; closing the connection");
        s->ack.len = 0;
        if (s->c) {
            s->c->closing = 1;
        }
    }
}

/* Answers a frame we will not ingest: AR/CR when its control id can be read (then the
 * connection goes on, unless close), else a log line and the connection is closed. */
static void refuse_frame(struct conn *c, const char *data, size_t len, int err_code,
                         const char *reason, int close)
{
    struct mllp_in *in = c->in;
    struct jn_mllp_msh m;
    struct slot *s;
    char ctl[64];

    if (!jn_mllp_msh_read(data, len, &m)) {
        char head[160];
        jn_mllp__shown(data, len < 40 ? len : 40, head, sizeof(head));
        jn_ch_warn(in->ch, "peer %s: %s; no control id can be read (frame starts \"%s\"): "
                   "closing the connection", c->peer, reason, head);
        c->closing = 1;
        return;
    }
    jn_mllp__shown(m.ctlid.p, m.ctlid.len < 40 ? m.ctlid.len : 40, ctl, sizeof(ctl));
    jn_ch_warn(in->ch, "peer %s: message %s refused (%cR): %s", c->peer, ctl,
               m.enhanced ? 'C' : 'A', reason);
    in->ch->n_refused++;
    s = slot_new(c, data, len);
    if (s == NULL) {
        c->closing = 1;
        return;
    }
    slot_answer(s, 'R', err_code, reason);
    if (close) {
        c->closing = 1;
    }
}

/* The first copy's (s's) answer is known: the duplicates waiting for it get the same bytes;
 * the entry remembers them (remember), or is forgotten so that a resend is a first try. */
static void dup_settle(struct slot *s, const struct jn_buf *ack, int remember)
{
    struct dup *e = s->dup;
    struct mllp_in *in = s->in;
    struct slot *w;

    if (e == NULL || s->waiter) {
        return;
    }
    w = e->waiters;
    while (w) {
        struct slot *next = w->wnext;
        w->dup = NULL;
        w->wprev = w->wnext = NULL;
        w->ready = 1;
        w->ack.len = 0;
        if (w->timer) {
            evtimer_del(w->timer);
        }
        if (ack->len && jn_buf_append(&w->ack, ack->p, ack->len) != 0) {
            w->ack.len = 0;
        }
        if (w->c) {
            event_active(w->c->kick, EV_WRITE, 0);
        }
        w = next;
    }
    e->waiters = NULL;
    e->owner = NULL;
    s->dup = NULL;
    if (remember && e->journal_pending) {
        /* The outcome came after the commit: the journal's entry gets the same answer. */
        int rc = jn_dedup_answer(in->ch, e->key, e->klen, s->id, ack->p ? ack->p : "",
                                 ack->len);
        if (rc != 0) {
            jn_ch_debug(in->ch, "msg=%s duplicate window: answer not kept in the journal: %s",
                        s->id, jn_strerror(rc));
        }
        e->journal_pending = 0;
    }
    if (remember) {
        e->done = 1;
        e->t_ms = jn_mono_ms();
        e->ack.len = 0;
        if (jn_buf_append(&e->ack, ack->p ? ack->p : "", ack->len) != 0) {
            /* Cannot remember the ACK: forget the entry rather than answer wrongly. */
            jn_mllp__dup_unlink(in, e);
            jn_mllp__dup_free(e);
        }
    } else {
        jn_mllp__dup_unlink(in, e);
        jn_mllp__dup_free(e);
    }
}

/* The broker's answer for an ingest: ACK now (commit mode), record the outcome for
 * duplicates, answer those waiting on it. With ack: delivered an accepted message waits for
 * its outcome (delivered()) or delivered_timeout instead. */
static void accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct slot *s = arg;
    struct mllp_in *in = s->in;
    char why[JN_ERR_MSG_MAX + 32];

    if (msg) {
        memcpy(s->id, msg->id, sizeof(s->id));
        if (rc == 0 && s->dup && !s->waiter) {
            memcpy(s->dup->id, msg->id, sizeof(s->dup->id));
        }
    }
    if (rc == 0 && in->conf->ack == ACK_DELIVERED) {
        /* The ticket stays: it now awaits the outcome. */
        if (s->timer) {
            struct timeval tv = jn_mllp__tv_ms(in->conf->delivered_timeout);
            evtimer_add(s->timer, &tv);
        }
        return;
    }
    s->ticket = NULL;
    jn_mllp__flight_unlink(s);
    if (rc == 0 && s->prebuilt) {
        s->ready = 1; /* the AA the journal's dedup entry holds */
    } else if (rc == 0) {
        slot_answer(s, 'A', 0, NULL);
    } else {
        snprintf(why, sizeof(why), "not accepted, send again later: %s",
                 err && err->msg[0] ? err->msg : jn_strerror(rc));
        jn_ch_warn(in->ch, "msg=%s refused by the broker (AE): %s", msg ? msg->id : "-", why);
        slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, why);
    }
    /* Remembered when accepted; when not, a resend is a first try, not a duplicate. */
    dup_settle(s, &s->ack, rc == 0);
    if (s->c == NULL) {
        jn_mllp__slot_free(s); /* orphaned: its connection is gone */
        return;
    }
    /* Not flushed from here: flushing may free connections and slots this loop still walks
     * (an original and its duplicate can share a connection). */
    event_active(s->c->kick, EV_WRITE, 0);
}

/*
 * The downstream system's ACK (reply, as its MLLP OUT received it, unframed) as the answer to
 * s's message, when it can be: it reads as an ACK whose MSA-1 says what the outcome says
 * (code: 'A' for AA/CA, 'R' for AR/CR), its MSH-1 and MSH-2 equal the message's (so the
 * control id can be put in without re-escaping), it has an MSA-2, and framed it fits in
 * JN_MLLP_ACK_MAX. Its bytes are passed as they came (the downstream's MSH, its MSH-10, ERR and
 * any other segments, its segment ends), except MSA-2, which is set to the message's MSH-10 as
 * the sender wrote it (a service on the route may have changed the control id). Then out holds
 * the framed ACK (or nothing when MSH-15 asks for no ACK) and 0 is returned; else -1, and
 * junction builds its own ACK.
 */
static int passthrough_ack(const struct slot *s, char code, const char *reply, size_t len,
                           struct jn_buf *out)
{
    struct jn_mllp_msh m;
    struct jn_mllp_ack a;
    struct jn_err err;
    const char *p;
    size_t hdr, start = 0;
    char fs;

    out->len = 0;
    if (!jn_mllp_msh_read(s->msh, s->msh_len, &m) || s->msh_len < 5 ||
        jn_mllp_ack_read(reply, len, &a, &err) != 0 || a.code[1] != code) {
        return -1;
    }
    fs = s->msh[3];
    p = memchr(s->msh + 4, fs, s->msh_len - 4);
    hdr = p ? (size_t)(p - s->msh) + 1 : 0; /* "MSH|^~\&|" */
    if (hdr == 0 || len < hdr || memcmp(reply, s->msh, hdr) != 0) {
        return -1;
    }
    while (start < len) {
        size_t end = start, f2, f2end;
        while (end < len && reply[end] != '\r' && reply[end] != '\n') {
            end++;
        }
        if (end - start > 4 && memcmp(reply + start, "MSA", 3) == 0 && reply[start + 3] == fs) {
            p = memchr(reply + start + 4, fs, end - start - 4);
            if (p == NULL) {
                return -1;
            }
            f2 = (size_t)(p - reply) + 1;
            p = memchr(reply + f2, fs, end - f2);
            f2end = p ? (size_t)(p - reply) : end;
            if (!jn_mllp_ack_wanted(&m, code)) {
                return 0; /* MSH-15 says no ACK for this outcome, as for our own */
            }
            if (jn_buf_append(out, "\x0b", 1) != 0 || jn_buf_append(out, reply, f2) != 0 ||
                jn_buf_append(out, m.ctlid.p, m.ctlid.len) != 0 ||
                jn_buf_append(out, reply + f2end, len - f2end) != 0 ||
                jn_buf_append(out, "\x1c\r", 2) != 0 || out->len > JN_MLLP_ACK_MAX) {
                out->len = 0;
                return -1;
            }
            return 0;
        }
        start = end + 1;
    }
    return -1;
}

/* ack: delivered: the route's outcome for s's message (jn_ingest_outcome). */
static void delivered(void *arg, enum jn_send_result r, const char *reason, const void *reply,
                      size_t reply_len)
{
    struct slot *s = arg;
    struct mllp_in *in = s->in;
    struct jn_buf ack = JN_BUF_INIT;
    char code = r == JN_SEND_OK ? 'A' : r == JN_SEND_REJECT ? 'R' : 'E';
    char why[JN_ERR_MSG_MAX + 96];
    int rc = 0;

    s->ticket = NULL;
    jn_mllp__flight_unlink(s);
    if (s->timer) {
        evtimer_del(s->timer);
    }
    if (reply && passthrough_ack(s, code, reply, reply_len, &ack) == 0) {
        jn_ch_debug(in->ch, "msg=%s outcome %c: passing back the downstream ACK", s->id, code);
    } else {
        if (code == 'R') {
            snprintf(why, sizeof(why), "not delivered: %s", reason ? reason : "rejected");
        } else if (code == 'E') {
            snprintf(why, sizeof(why), "not delivered yet: %s; the message stays queued and "
                     "is delivered later", reason ? reason : "retrying");
        }
        if (code != 'A') {
            jn_ch_warn(in->ch, "msg=%s answered A%c: %s", s->id, code, why);
        }
        rc = build_ack(s, code, JN_HL7_ERR_INTERNAL, code == 'A' ? NULL : why, &ack);
    }
    if (rc != 0) {
        jn_ch_error(in->ch, "msg=%s out of memory building an ACK", s->id);
        ack.len = 0;
    }
    if (!s->ready) {
        s->ready = 1;
        s->ack.len = 0;
        if (ack.len && jn_buf_append(&s->ack, ack.p, ack.len) != 0) {
            s->ack.len = 0;
        }
        if ((rc != 0 || (ack.len && s->ack.len == 0)) && s->c) {
            s->c->closing = 1; /* no ACK for it: the sender must not wait for one */
        }
    }
    /* An AE is no final answer: a resend then is a first try. */
    dup_settle(s, &ack, code != 'E' && rc == 0);
    jn_buf_reset(&ack);
    if (s->c == NULL) {
        jn_mllp__slot_free(s); /* its connection is gone, or its AE went out at delivered_timeout */
        return;
    }
    event_active(s->c->kick, EV_WRITE, 0);
}

/* ack: delivered: no outcome within delivered_timeout (for a first copy, counted from its
 * acceptance; for a duplicate waiting for it, from its arrival). */
static void slot_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct slot *s = arg;
    char why[200];

    if (s->ready || s->c == NULL) {
        return;
    }
    waiter_unlink(s); /* a duplicate stops waiting for its first copy */
    snprintf(why, sizeof(why), "not delivered yet within delivered_timeout (%lld ms); the "
             "message stays queued and is delivered later", s->in->conf->delivered_timeout);
    jn_ch_info(s->in->ch, "msg=%s peer %s: answered AE: %s", s->id[0] ? s->id : "-",
               s->c->peer, why);
    slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, why);
    event_active(s->c->kick, EV_WRITE, 0);
}

static int add_headers(struct jn_msg *msg, const struct jn_mllp_msh *m, const char *peer,
                       const char *tls_peer)
{
    const struct jn_hl7_span type = m->msgtype; /* MSH-9, empty when missing */
    char *v;
    int rc;

    if (jn_msg_header_set(msg, "Content-Type", MLLP_CONTENT_TYPE) != 0 ||
        jn_msg_header_set(msg, "mllp-peer", peer) != 0 ||
        (tls_peer && jn_msg_header_set(msg, "tls-peer", tls_peer) != 0)) {
        return JN_ENOMEM;
    }
    v = jn_strndup(m->ctlid.p, m->ctlid.len);
    rc = v ? jn_msg_header_set(msg, "hl7-control-id", v) : JN_ENOMEM;
    jn_free(v);
    if (rc != 0) {
        return rc;
    }
    v = jn_strndup(type.p, type.len);
    rc = v ? jn_msg_header_set(msg, "hl7-message-type", v) : JN_ENOMEM;
    jn_free(v);
    return rc;
}

/* The duplicate window's entry for s's message (e), written to the journal with the message.
 * ack: commit: the AA is built now, so the journal holds the very ACK the sender is going to
 * get; ack: delivered: the answer follows with the outcome (dup_settle). Out of memory, or a key
 * over JN_DEDUP_KEY_MAX: the entry stays in memory only. */
static void journal_dup(struct slot *s, struct dup *e, struct jn_msg *msg)
{
    const struct mllp_conf *conf = s->in->conf;
    int rc;

    if (e->klen > JN_DEDUP_KEY_MAX) {
        jn_ch_debug(s->in->ch, "duplicate window: a key of %zu bytes is kept in memory only "
                    "(the journal takes %d)", e->klen, JN_DEDUP_KEY_MAX);
        return;
    }
    if (conf->ack == ACK_DELIVERED) {
        if (jn_msg_set_dedup(msg, e->key, e->klen, conf->dup_window, NULL, 0) == 0) {
            e->journal_pending = 1;
        }
        return;
    }
    rc = build_ack(s, 'A', 0, NULL, &s->ack);
    if (rc == 0) {
        s->prebuilt = 1;
        rc = jn_msg_set_dedup(msg, e->key, e->klen, conf->dup_window, s->ack.p ? s->ack.p : "",
                              s->ack.len);
    }
    if (rc != 0) {
        jn_ch_debug(s->in->ch, "duplicate window: out of memory; this entry is kept in memory "
                    "only");
    }
}

static void handle_frame(struct conn *c, const char *data, size_t len)
{
    struct mllp_in *in = c->in;
    const struct mllp_conf *conf = in->conf;
    struct jn_mllp_msh m;
    struct jn_err err;
    struct jn_msg *msg;
    struct slot *s;
    struct dup *e = NULL;
    struct jn_buf key = JN_BUF_INIT;
    uint64_t hash = 0;

    if (!jn_mllp_msh_read(data, len, &m)) {
        struct jn_hl7_delims d;
        const char *why = "MSH is truncated before MSH-10 (the control id)";
        if (len == 0) {
            why = "empty frame";
        } else if (len >= 3 && (memcmp(data, "FHS", 3) == 0 || memcmp(data, "BHS", 3) == 0)) {
            why = "a batch (FHS/BHS) over MLLP is not taken; send its messages one per frame";
        } else if (len < 3 || memcmp(data, "MSH", 3) != 0) {
            why = "the frame does not start with an MSH segment";
        } else if (jn_hl7_delims_read(data, len, &d, &err) != 0) {
            why = err.msg;
        }
        refuse_frame(c, data, len, JN_HL7_ERR_REQUIRED, why, 1);
        return;
    }
    jn_err_clear(&err);
    /* The checks of a parse, without building the parsed message (nothing here reads it). */
    if (jn_hl7_check(data, len, conf->strict ? JN_HL7_STRICT : 0, &err) != 0) {
        refuse_frame(c, data, len, JN_HL7_ERR_DATA, err.msg, 0);
        return;
    }
    if (m.type.len == 0) {
        refuse_frame(c, data, len, JN_HL7_ERR_REQUIRED, "MSH-9 (message type) is empty", 0);
        return;
    }
    if (m.ctlid.len == 0) {
        refuse_frame(c, data, len, JN_HL7_ERR_REQUIRED, "MSH-10 (message control id) is empty",
                     0);
        return;
    }
    s = slot_new(c, data, len);
    if (s == NULL) {
        jn_ch_error(in->ch, "peer %s: out of memory; closing the connection", c->peer);
        c->closing = 1;
        return;
    }
    if (conf->ack == ACK_DELIVERED) {
        s->timer = evtimer_new(in->ch->base, slot_timeout_cb, s);
        if (s->timer == NULL) {
            slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, "out of memory; send again later");
            return;
        }
    }
    if (in->buckets) {
        static const char us = 0x1f;
        if (jn_buf_append(&key, m.ctlid.p, m.ctlid.len) == 0 && jn_buf_append(&key, &us, 1) == 0 &&
            jn_buf_append(&key, m.send_app.p, m.send_app.len) == 0 &&
            jn_buf_append(&key, &us, 1) == 0 &&
            jn_buf_append(&key, m.send_fac.p, m.send_fac.len) == 0) {
            hash = fnv(key.p, key.len);
            e = dup_find(in, key.p, key.len, hash);
            if (e) {
                char ctl[64], idp[JN_ID_LEN + 6] = "";
                jn_mllp__shown(m.ctlid.p, m.ctlid.len < 40 ? m.ctlid.len : 40, ctl, sizeof(ctl));
                if (e->id[0]) {
                    snprintf(idp, sizeof(idp), "msg=%s ", e->id);
                }
                jn_ch_info(in->ch, "%speer %s: duplicate of message %s within duplicate_window: "
                           "ACKed again, not routed", idp, c->peer, ctl);
                if (e->restored) {
                    /* Accepted before the restart, its answer not kept (its outcome had not
                     * come): answered from what is known, and not routed again. */
                    if (conf->ack == ACK_DELIVERED) {
                        slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, "not delivered yet: accepted "
                                    "before a restart, its outcome is not known here; the "
                                    "message stays queued and is delivered later");
                    } else {
                        slot_answer(s, 'A', 0, NULL);
                    }
                } else if (e->done) {
                    s->ready = 1;
                    if (jn_buf_append(&s->ack, e->ack.p ? e->ack.p : "", e->ack.len) != 0) {
                        s->ack.len = 0;
                    }
                } else {
                    s->waiter = 1;
                    s->dup = e;
                    s->wnext = e->waiters;
                    if (e->waiters) {
                        e->waiters->wprev = s;
                    }
                    e->waiters = s;
                    if (s->timer) {
                        struct timeval tv = jn_mllp__tv_ms(conf->delivered_timeout);
                        evtimer_add(s->timer, &tv);
                    }
                }
                jn_buf_reset(&key);
                return;
            }
            e = dup_add(in, key.p, key.len, hash);
        }
        /* Out of memory for the key or entry: the message still goes in, unguarded. */
        jn_buf_reset(&key);
    }
    msg = jn_msg_new(in->ch->name, data, len);
    if (msg == NULL || add_headers(msg, &m, c->peer, c->tls_peer) != 0) {
        jn_msg_unref(&msg);
        if (e) {
            jn_mllp__dup_unlink(in, e);
            jn_mllp__dup_free(e);
        }
        slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, "out of memory; send again later");
        return;
    }
    if (e) {
        e->owner = s;
        s->dup = e;
        if (in->journal) {
            journal_dup(s, e, msg);
        }
    }
    s->fnext = in->flight;
    if (in->flight) {
        in->flight->fprev = s;
    }
    in->flight = s;
    if (conf->ack == ACK_DELIVERED) {
        s->ticket = jn_ingest_outcome(in->ch, msg, accepted, delivered, s);
    } else {
        s->ticket = jn_ingest(in->ch, msg, accepted, s);
    }
    if (s->ticket == NULL) {
        jn_mllp__flight_unlink(s);
        if (e) {
            jn_mllp__dup_unlink(in, e);
            jn_mllp__dup_free(e);
            s->dup = NULL;
        }
        slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, "out of memory; send again later");
    }
}

void jn_mllp__handle_event(struct conn *c, const struct jn_mllp_event *ev, int at_end)
{
    struct mllp_in *in = c->in;
    char why[200];

    switch (ev->kind) {
    case JN_MLLP_EV_FRAME:
        handle_frame(c, ev->data, ev->len);
        break;
    case JN_MLLP_EV_OVERSIZE:
        snprintf(why, sizeof(why), "message of %zu bytes is over max_message (%llu bytes)",
                 ev->total, in->conf->max_message);
        refuse_frame(c, ev->data, ev->len, JN_HL7_ERR_DATA, why, 0);
        break;
    case JN_MLLP_EV_UNTERMINATED:
        refuse_frame(c, ev->data, ev->len, JN_HL7_ERR_DATA,
                     at_end ? "frame not finished: no <FS><CR> before the connection ended or "
                              "went idle"
                            : "frame not finished: a new <VT> came before <FS><CR>",
                     at_end);
        break;
    case JN_MLLP_EV_BAD_END:
        refuse_frame(c, ev->data, ev->len, JN_HL7_ERR_DATA,
                     "frame end <FS> not followed by <CR> (strict)", 0);
        break;
    case JN_MLLP_EV_GARBAGE: {
        struct jn_mllp_msh m;
        if (jn_mllp_msh_read(ev->data, ev->len, &m)) {
            refuse_frame(c, ev->data, ev->len, JN_HL7_ERR_DATA,
                         "message not framed: MLLP needs <VT> before it and <FS><CR> after it",
                         1);
        } else {
            char head[160];
            jn_mllp__shown(ev->data, ev->len < 40 ? ev->len : 40, head, sizeof(head));
            jn_ch_warn(in->ch, "peer %s: %zu byte(s) outside a frame, not MLLP (\"%s\"): "
                       "closing the connection", c->peer, ev->len, head);
            c->closing = 1;
        }
        break;
    }
    default:
        break;
    }
}

/* ---- the duplicate window kept in the journal ---- */

/* One entry of the window kept in the journal, at start (jn_dedup_load: oldest first). */
static int dup_restore(void *arg, const struct jn_dedup_entry *je)
{
    struct mllp_in *in = arg;
    struct dup *e = dup_add(in, je->key, je->klen, fnv(je->key, je->klen));
    long long age_ms = (jn_now_us() - je->time_us) / 1000;

    if (e == NULL) {
        in->load_failed = 1;
        return 1;
    }
    e->done = 1;
    e->t_ms = jn_mono_ms() - (age_ms > 0 ? age_ms : 0);
    memcpy(e->id, je->id, sizeof(e->id) - 1);
    e->id[sizeof(e->id) - 1] = '\0';
    if (!je->answered) {
        e->restored = 1;
    } else if (jn_buf_append(&e->ack, je->answer, je->alen) != 0) {
        jn_mllp__dup_unlink(in, e);
        jn_mllp__dup_free(e);
        in->load_failed = 1;
        return 1;
    }
    return 0;
}

/* Loads what the journal keeps of the window: the entries of the last duplicate_window, at
 * most duplicate_max, the newest. */
int jn_mllp__dup_load(struct mllp_in *in, struct jn_err *err)
{
    int rc;

    if (in->buckets == NULL) {
        return 0;
    }
    rc = jn_dedup_load(in->ch, (size_t)in->conf->dup_max, dup_restore, in);
    if (rc == JN_EINVAL) {
        jn_ch_warn(in->ch, "the channel's name is too long for the journal's keys: the "
                   "duplicate window is kept in memory only (a restart forgets it)");
        return 0;
    }
    if (rc == 0 && in->load_failed) {
        rc = JN_ENOMEM;
    }
    if (rc != 0) {
        return jn_err_set(err, rc, "cannot read the duplicate window from the journal: %s",
                          jn_strerror(rc));
    }
    in->journal = 1;
    if (in->ndup) {
        jn_ch_info(in->ch, "duplicate window: %zu control id(s) from before the start",
                   in->ndup);
    }
    return 0;
}
