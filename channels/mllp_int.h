/*
 * mllp_int.h: what channels/mllp_conf.c (the option table, check and the def), mllp_in.c (the
 * listener and its connections), mllp_in_msg.c (each frame as a message: the duplicate
 * window, the ingest, the ACK) and mllp_out.c (the sender) share (house style: module__verb,
 * shared inside one module only). The wire framing, MSH reading and ACK building are in
 * mllp_proto.h.
 *
 * Threads: everything runs on the broker's loop.
 */
#ifndef JN_MLLP_INT_H
#define JN_MLLP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_listener.h"
#include "mllp_proto.h"

enum { ACK_COMMIT = 0, ACK_DELIVERED = 1 };
enum { OUTCOME_DELIVERED = 0, OUTCOME_RETRY = 1, OUTCOME_REJECT = 2 };

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
    /* both */
    struct jn_tls_conf tls; /* tls: (jn_tls.h) */
    /* OUT */
    char *connect;
    long long ack_timeout;
    long long connect_timeout;
    int on_error;
    int on_reject;
};

/* ---- IN state (mllp_in.c and mllp_in_msg.c) ---- */

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
    char *tls_peer;            /* jn_tls_peer_id of the client certificate, or NULL */
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
    struct jn_tls *tls;      /* server context with tls, or NULL */
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

/* The two sides (jn_channel_mllp's in and out): mllp_in.c, mllp_out.c. */
extern const struct jn_in_def jn_mllp__in;
extern const struct jn_out_def jn_mllp__out;

/* ---- both sides (mllp_conf.c) ---- */

/* ms as a struct timeval, for libevent's timeouts. */
struct timeval jn_mllp__tv_ms(long long ms);
/* Printable text of up to n bytes of peer data at p in out[cap], for log lines. */
void jn_mllp__shown(const char *p, size_t n, char *out, size_t cap);

/* ---- IN: mllp_in_msg.c, for mllp_in.c ---- */

/* One framer event of c's: a frame is checked and ingested, or refused (at_end: the
 * connection ended or went idle with a frame unfinished). */
void jn_mllp__handle_event(struct conn *c, const struct jn_mllp_event *ev, int at_end);
/* Frees a slot, unhooking it from the duplicate entry it owns or waits on. */
void jn_mllp__slot_free(struct slot *s);
/* Takes s off in->flight (the slots whose ingest is out). */
void jn_mllp__flight_unlink(struct slot *s);
/* Takes e out of the duplicate window; jn_mllp__dup_free frees it. */
void jn_mllp__dup_unlink(struct mllp_in *in, struct dup *e);
void jn_mllp__dup_free(struct dup *e);
/* At start: loads the duplicate window the journal keeps. 0, or an error set in err. */
int jn_mllp__dup_load(struct mllp_in *in, struct jn_err *err);

#endif
