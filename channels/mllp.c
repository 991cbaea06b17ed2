/*
 * mllp channel: HL7 v2 over MLLP/TCP. IN is a listener that acknowledges each message once the
 * broker has it durable; OUT keeps connections open to one peer and waits for its ACK.
 *
 * Modelled on what Mirth Connect's LLP listener and sender do, on libevent bufferevents. The
 * wire framing, MSH reading and ACK building are in mllp_proto.c (no sockets, fuzzed alone).
 *
 * IN, per connection: bytes -> framer -> one *slot* per frame, queued in arrival order. A slot
 * is ready when its ACK is known: at once for a refused frame, from the jn_ingest callback for
 * an accepted one (`ack: commit`), from the route's outcome or delivered_timeout (`ack:
 * delivered`, through jn_ingest_outcome), from the first copy's answer for a duplicate. Ready slots
 * leave the head of the queue in order, each ACK in one bufferevent_write (one write() on an
 * idle socket; python3-hl7's mllp_send reads each ACK with one recv). A slot whose ingest is
 * still out when its connection goes away is kept (orphaned) until the callback comes, so the
 * duplicate window learns the outcome either way; so is one answered AE at delivered_timeout
 * whose outcome is still to come (duplicates of it wait for that outcome).
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
 * OUT: ch->concurrency connection slots, each carrying one message at a time: <VT>msg<FS><CR>,
 * then the ACK within ack_timeout, whose MSA-2 must be the MSH-10 we sent; that ACK is handed
 * to the broker (jn_delivery_reply) for an IN channel passing it back. After a timeout or
 * a mismatch the connection is closed, because a late ACK on it would answer the wrong message.
 *
 * Threads: everything runs on the broker's loop.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_listener.h"
#include "jn_mem.h"
#include "jn_time.h"
#include "mllp_proto.h"

/* Frames of one connection whose ACK is not sent yet; past this we stop reading from it. */
#define MLLP_MAX_PIPELINE 64
/* Largest ACK frame accepted from an OUT peer. */
#define MLLP_OUT_MAX_ACK (1024 * 1024)
#define MLLP_CONTENT_TYPE "x-application/hl7-v2+er7"

enum { ACK_COMMIT = 0, ACK_DELIVERED = 1 };
enum { OUTCOME_DELIVERED = 0, OUTCOME_RETRY = 1, OUTCOME_REJECT = 2 };

static const char *const mllp_ack_names[] = {"commit", "delivered", NULL};
static const char *const mllp_outcome_names[] = {"delivered", "retry", "reject", NULL};

struct mllp_conf {
    /* IN */
    char *listen;
    unsigned long long max_message;
    long long idle_timeout;
    int ack;
    long long delivered_timeout;
    bool strict;
    long long dup_window;
    long long dup_max;
    long long max_connections;
    struct jn_net_conf net; /* net: the listener options (jn_listener.h) */
    /* OUT */
    char *connect;
    long long ack_timeout;
    long long connect_timeout;
    int on_error;
    int on_reject;
};

static const struct jn_opt mllp_opts[] = {
    JN_OPT_STR("listen", "127.0.0.1:2575", JN_OPT_IN, struct mllp_conf, listen,
               "Address and port to listen on, ip:port ([::1]:2575 for IPv6)."),
    JN_OPT_SIZE("max_message", "1MiB", 64, 1LL << 30, JN_OPT_IN, struct mllp_conf, max_message,
                "Largest message accepted; a larger frame is read to its end and answered AR."),
    JN_OPT_DURATION("idle_timeout", "5m", 100, 86400000LL, JN_OPT_IN, struct mllp_conf,
                    idle_timeout,
                    "A connection silent this long is closed; a frame left unfinished this "
                    "long is answered AR first."),
    JN_OPT_ENUM("ack", "commit", mllp_ack_names, JN_OPT_IN, struct mllp_conf, ack,
                "commit: ACK once the message is durable. delivered: ACK with the route's "
                "outcome: AA once delivered everywhere (or the downstream MLLP ACK passed "
                "back), AR when dead-lettered, AE after delivered_timeout (docs/hl7.md)."),
    JN_OPT_DURATION("delivered_timeout", "30s", 1, 86400000LL, JN_OPT_IN, struct mllp_conf,
                    delivered_timeout,
                    "ack: delivered: when the outcome has not come this long after the message "
                    "is durable, answer AE \"not delivered yet\"; it stays queued and is "
                    "delivered later."),
    JN_OPT_BOOL("strict", "false", JN_OPT_IN, struct mllp_conf, strict,
                "Refuse (AR) segments ending in LF or CRLF and <FS> without <CR>; "
                "default: accept them."),
    JN_OPT_DURATION("duplicate_window", "10m", 0, 7 * 86400000LL, JN_OPT_IN, struct mllp_conf,
                    dup_window,
                    "A message whose MSH-10 (with MSH-3, MSH-4) was accepted this recently is "
                    "ACKed again and not routed twice; 0 turns it off. Kept in the journal, "
                    "so it holds across restarts."),
    JN_OPT_INT("duplicate_max", "100000", 1, 10000000, JN_OPT_IN, struct mllp_conf, dup_max,
               "Most control ids remembered for duplicate_window; the oldest go first."),
    JN_OPT_INT("max_connections", "256", 1, 65536, JN_OPT_IN, struct mllp_conf,
               max_connections, "Connections at once; more are closed at accept with a log line. "
               "net.max_connections, when set, is the same setting."),
    JN_OPT_SUB("net", jn_net_opts, struct jn_net_conf, JN_OPT_IN, struct mllp_conf, net,
               "Listener options shared with the other listening channels (docs/channels.md)."),
    JN_OPT_STR("connect", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct mllp_conf, connect,
               "The peer to send to, host:port."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT, struct mllp_conf,
                    ack_timeout,
                    "How long to wait for the ACK; then the connection is closed and the "
                    "message retried.", .alias = "ack_timeout"),
    JN_OPT_DURATION("connect_timeout", "10s", 1, 3600000LL, JN_OPT_OUT, struct mllp_conf,
                    connect_timeout, "How long a connection attempt may take (then: retry)."),
    JN_OPT_ENUM("on_error", "retry", mllp_outcome_names, JN_OPT_OUT, struct mllp_conf, on_error,
                "What an AE or CE answer means: delivered, retry or reject (dead-letter)."),
    JN_OPT_ENUM("on_reject", "reject", mllp_outcome_names, JN_OPT_OUT, struct mllp_conf,
                on_reject,
                "What an AR or CR answer means: delivered, retry or reject (dead-letter)."),
    JN_OPT_END,
};

/* ---- IN state ---- */

struct conn;
struct dup;

struct slot {
    struct slot *next;          /* the connection's queue */
    struct slot *fprev, *fnext; /* in->flight, while the ingest is out */
    struct slot *wprev, *wnext; /* a dup entry's waiters */
    struct conn *c;             /* NULL once orphaned */
    struct mllp_in *in;
    struct jn_ticket *ticket;
    struct dup *dup;            /* owned entry (ingesting) or awaited entry (waiter) */
    int waiter;
    char *msh;                  /* the message's first segment, to build the ACK */
    size_t msh_len;
    char id[JN_ID_LEN + 1];     /* the message's id, once accepted (for log lines) */
    struct event *timer;        /* ack: delivered: delivered_timeout; NULL otherwise */
    int ready;
    int prebuilt;               /* ack holds the AA built before the ingest (journaled) */
    struct jn_buf ack;          /* framed; empty: nothing to send */
};

struct conn {
    struct conn *prev, *next;
    struct mllp_in *in;
    struct bufferevent *bev;
    struct event *kick;     /* runs conn_flush on the next loop turn */
    struct jn_mllp_framer fr;
    char peer[80];
    struct jn_listener_ip *ip; /* the listener's per-IP ticket */
    struct slot *head, *tail;
    size_t nslots;
    int closing;  /* send what is queued, then close */
    int in_cb;    /* inside a callback: free at its end */
    int dead;
    int paused;   /* reading stopped for MLLP_MAX_PIPELINE */
};

struct dup {
    struct dup *hnext;
    struct dup *older, *newer;
    uint64_t h;
    long long t_ms;
    char *key;
    size_t klen;
    int done;
    struct jn_buf ack;
    struct slot *owner;
    struct slot *waiters;
    char id[JN_ID_LEN + 1];  /* the first copy's message id, once accepted ("" before) */
    int journal_pending;     /* in the journal without its answer: jn_dedup_answer it */
    int restored;            /* loaded at start without an answer: outcome unknown here */
};

struct mllp_in {
    struct jn_channel *ch;
    const struct mllp_conf *conf;
    time_t ts_sec;        /* the second ts is of (0: none yet) */
    char ts[32];          /* MSH-7 of our ACKs in that second */
    struct jn_listener *lst; /* accepts and counts for us; told of every close */
    struct conn *conns;
    size_t nconns;
    struct slot *flight;
    int stopped;
    /* duplicates */
    int journal;          /* the window is kept in the journal too */
    int load_failed;      /* out of memory loading it at start */
    struct dup **buckets;
    size_t nbuckets;
    size_t ndup;
    struct dup *oldest, *newest;
};

/* ---- OUT state ---- */

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
    struct oslot *slots;
    size_t nslots;
};

/* ---- helpers ---- */

static struct timeval tv_ms(long long ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}


/* Printable text of up to max bytes of peer data, for log lines. */
static void shown(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        }
    }
    if (o + 4 < cap && n > 0 && o >= cap - 7) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

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

/* ---- checks ---- */

static int mllp_check(const void *vconf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct mllp_conf *c = vconf;
    char host[256];
    int port;
    const struct jn_node *n;

    if (dir == JN_DIR_IN) {
        int errs = 0;
        struct sockaddr_storage ss;
        int sl = sizeof(ss);
        n = jn_node_get(node, "listen");
        if (c->listen == NULL ||
            evutil_parse_sockaddr_port(c->listen, (struct sockaddr *)&ss, &sl) != 0 ||
            jn_split_hostport(c->listen, host, sizeof(host), &port, 1) != 0) {
            jn_diag_add(d, n ? &n->pos : &node->pos, "mllp: listen: '%s' is not ip:port, "
                        "expected e.g. 127.0.0.1:2575", c->listen ? c->listen : "");
            errs++;
        }
        return errs;
    }
    if (c->connect == NULL) {
        jn_diag_add(d, &node->pos, "mllp: missing required option 'connect' for direction: out "
                    "(e.g. connect: 127.0.0.1:2576)");
        return 1;
    }
    if (jn_split_hostport(c->connect, host, sizeof(host), &port, 1) != 0) {
        n = jn_node_get(node, "connect");
        jn_diag_add(d, n ? &n->pos : &node->pos, "mllp: connect: '%s' is not host:port, "
                    "expected e.g. 127.0.0.1:2576", c->connect);
        return 1;
    }
    return 0;
}

/* ---- IN: duplicates ---- */

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void dup_unlink(struct mllp_in *in, struct dup *e)
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

static void dup_free(struct dup *e)
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
        dup_unlink(in, e);
        dup_free(e);
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

/* ---- IN: slots and connections ---- */

static int conn_flush(struct conn *c);
static void conn_free(struct conn *c);

static void flight_unlink(struct slot *s)
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

static void slot_free(struct slot *s)
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
        shown(data, len < 40 ? len : 40, head, sizeof(head));
        jn_ch_warn(in->ch, "peer %s: %s; no control id can be read (frame starts \"%s\"): "
                   "closing the connection", c->peer, reason, head);
        c->closing = 1;
        return;
    }
    shown(m.ctlid.p, m.ctlid.len < 40 ? m.ctlid.len : 40, ctl, sizeof(ctl));
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
            dup_unlink(in, e);
            dup_free(e);
        }
    } else {
        dup_unlink(in, e);
        dup_free(e);
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
            struct timeval tv = tv_ms(in->conf->delivered_timeout);
            evtimer_add(s->timer, &tv);
        }
        return;
    }
    s->ticket = NULL;
    flight_unlink(s);
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
        slot_free(s); /* orphaned: its connection is gone */
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
    flight_unlink(s);
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
        slot_free(s); /* its connection is gone, or its AE went out at delivered_timeout */
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

static int add_headers(struct jn_msg *msg, const struct jn_mllp_msh *m, const char *peer)
{
    const struct jn_hl7_span type = m->msgtype; /* MSH-9, empty when missing */
    char *v;
    int rc;

    if (jn_msg_header_set(msg, "Content-Type", MLLP_CONTENT_TYPE) != 0 ||
        jn_msg_header_set(msg, "mllp-peer", peer) != 0) {
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
                shown(m.ctlid.p, m.ctlid.len < 40 ? m.ctlid.len : 40, ctl, sizeof(ctl));
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
                        struct timeval tv = tv_ms(conf->delivered_timeout);
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
    if (msg == NULL || add_headers(msg, &m, c->peer) != 0) {
        jn_msg_unref(&msg);
        if (e) {
            dup_unlink(in, e);
            dup_free(e);
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
        flight_unlink(s);
        if (e) {
            dup_unlink(in, e);
            dup_free(e);
            s->dup = NULL;
        }
        slot_answer(s, 'E', JN_HL7_ERR_INTERNAL, "out of memory; send again later");
    }
}

static void handle_event(struct conn *c, const struct jn_mllp_event *ev, int at_end)
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
            shown(ev->data, ev->len < 40 ? ev->len : 40, head, sizeof(head));
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
            /* One call, so one write() on an idle socket: an ACK never leaves in pieces. */
            if (bufferevent_write(c->bev, s->ack.p, s->ack.len) != 0) {
                c->closing = 1;
            }
        }
        if (s->ticket) {
            /* Answered AE at delivered_timeout, outcome still to come: kept (orphaned) for
             * the duplicate window until it does. */
            s->next = NULL;
            s->c = NULL;
        } else {
            slot_free(s);
        }
    }
    if (c->paused && c->nslots < MLLP_MAX_PIPELINE / 2 && !c->closing) {
        c->paused = 0;
        bufferevent_enable(c->bev, EV_READ);
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
            slot_free(s);
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
                handle_event(c, &ev, 0);
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
            handle_event(c, &ev, 1);
        }
        c->closing = 1;
    } else if (what & BEV_EVENT_TIMEOUT) {
        if (what & BEV_EVENT_WRITING) {
            jn_ch_warn(in->ch, "peer %s: does not read its ACKs (write timeout): closing",
                       c->peer);
            c->dead = 1;
        } else if (jn_mllp_framer_busy(&c->fr)) {
            jn_mllp_framer_end(&c->fr, &ev);
            handle_event(c, &ev, 1);
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

/* The listener checked max_connections and the per-IP limit; the socket is ours. */
static void accept_cb(void *arg, evutil_socket_t fd, const struct sockaddr *sa, const char *peer,
                      struct jn_listener_ip *ip)
{
    struct mllp_in *in = arg;
    struct conn *c;
    struct timeval tv = tv_ms(in->conf->idle_timeout);

    (void)sa;
    c = jn_calloc(1, sizeof(*c));
    if (c == NULL) {
        jn_ch_error(in->ch, "peer %s: out of memory: connection closed", peer);
        evutil_closesocket(fd);
        jn_listener_closed(in->lst, ip);
        return;
    }
    c->in = in;
    c->ip = ip;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    jn_mllp_framer_init(&c->fr, (size_t)in->conf->max_message,
                        in->conf->strict ? JN_MLLP_STRICT : 0);
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(in->ch->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->kick = event_new(in->ch->base, -1, 0, conn_kick_cb, c);
    if (c->bev == NULL || c->kick == NULL) {
        jn_ch_error(in->ch, "peer %s: cannot set up the connection: closed", c->peer);
        if (c->bev) {
            bufferevent_free(c->bev);
        } else {
            evutil_closesocket(fd);
        }
        if (c->kick) {
            event_free(c->kick);
        }
        jn_free(c);
        jn_listener_closed(in->lst, ip);
        return;
    }
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = in->conns;
    if (in->conns) {
        in->conns->prev = c;
    }
    in->conns = c;
    in->nconns++;
    jn_ch_debug(in->ch, "peer %s: connected", c->peer);
}

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
        dup_unlink(in, e);
        dup_free(e);
        in->load_failed = 1;
        return 1;
    }
    return 0;
}

/* Loads what the journal keeps of the window: the entries of the last duplicate_window, at
 * most duplicate_max, the newest. */
static int dup_load(struct mllp_in *in, struct jn_err *err)
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

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct mllp_in *in = ch->state;
    /* Bind, TCP_NODELAY (an ACK leaves at once), limits and the EMFILE pause: jn_listener. */
    struct jn_listener_conf lc = {in->conf->listen, ch->log_prefix, &in->conf->net,
                                  in->conf->max_connections, 0, accept_cb, in};

    if (dup_load(in, err) != 0) {
        return err->code;
    }
    in->lst = jn_listener_new(ch->base, &lc, err);
    if (in->lst == NULL) {
        return err->code;
    }
    if (in->conf->ack == ACK_DELIVERED) {
        jn_ch_info(ch, "listening on mllp://%s (ack: delivered, delivered_timeout: %lld ms, "
                   "duplicate_window: %lld ms)", in->conf->listen, in->conf->delivered_timeout,
                   in->conf->dup_window);
    } else {
        jn_ch_info(ch, "listening on mllp://%s (ack: commit, duplicate_window: %lld ms)",
                   in->conf->listen, in->conf->dup_window);
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
        flight_unlink(s);
        jn_ingest_forget(s->ticket);
        s->ticket = NULL;
        slot_free(s);
    }
    while (in->oldest) {
        struct dup *e = in->oldest;
        dup_unlink(in, e);
        dup_free(e);
    }
    jn_free(in->buckets);
    jn_free(in);
    ch->state = NULL;
}

/* ---- OUT ---- */

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
        shown(a.ctlid.p, a.ctlid.len < 60 ? a.ctlid.len : 60, got, sizeof(got));
        shown(s->ctlid, s->ctlid_len < 60 ? s->ctlid_len : 60, want, sizeof(want));
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
    struct timeval tv = tv_ms(s->o->conf->ack_timeout);

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
        if (!s->connected) {
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

    s->bev = bufferevent_socket_new(o->ch->base, -1, BEV_OPT_CLOSE_ON_FREE);
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
    tv = tv_ms(s->connected ? o->conf->ack_timeout : o->conf->connect_timeout);
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
    jn_ch_info(ch, "sending to mllp://%s (%zu connection(s), ack_timeout %lld ms)",
               o->conf->connect, o->nslots, o->conf->ack_timeout);
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
    jn_free(o);
    ch->state = NULL;
}

/* ---- the def ---- */

static const struct jn_in_def mllp_in = {
    .init = in_init,
    .start = in_start,
    .stop = in_stop,
    .destroy = in_destroy,
};

static const struct jn_out_def mllp_out = {
    .init = out_init,
    .start = out_start,
    .send = out_send,
    .destroy = out_destroy,
};

const struct jn_channel_def jn_channel_mllp = {
    .name = "mllp",
    .desc = "HL7 v2 over MLLP/TCP: IN listens and ACKs once durable, OUT sends and waits for "
            "the ACK",
    .opts = mllp_opts,
    .conf_size = sizeof(struct mllp_conf),
    .check = mllp_check,
    .in = &mllp_in,
    .out = &mllp_out,
};
