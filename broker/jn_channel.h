/*
 * jn_channel: the interface every protocol implements, and what the core offers channels.
 *
 * A channel *def* is the kind ("http", "file"): a const struct with a name, one option table
 * and a def per direction (struct jn_in_def, struct jn_out_def: the callbacks of that side),
 * listed in channels/registry.c. A channel *instance* (struct jn_channel) is one
 * block under `channels:` in the config. Modelled on Fluent Bit's input/output plugins.
 *
 * Threads: every callback runs on the broker's event loop thread, and must never block on disk
 * or network; a channel that needs its own thread (paho, librdkafka) hands work back to the
 * loop. The life of an instance: init -> start -> (stop) -> destroy.
 */
#ifndef JN_CHANNEL_H
#define JN_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "jn_auth.h"
#include "jn_err.h"
#include "jn_hist.h"
#include "jn_log.h"
#include "jn_msg.h"
#include "jn_net.h"
#include "jn_opt.h"
#include "jn_template.h"

struct event_base;
struct jn_broker;
struct jn_channel;
struct jn_delivery;

enum {
    JN_DIR_IN = 1 << 0,
    JN_DIR_OUT = 1 << 1,
};

/* One peer node as a hub knows it (the bridge's per-edge rows, docs/bridge.md#monitoring). */
struct jn_link_row {
    const char *node;      /* its name (the edge's node:, bridge-origin) */
    const char *peer;      /* ip:port of its latest link */
    int up;                /* a link of it is up now */
    int64_t since_us;      /* when it last went up or down (wall clock) */
    uint64_t received;     /* messages of it committed */
    uint64_t duplicates;   /* resent ones acked without a second copy */
    int64_t last_msg_us;   /* its latest message (0: none) */
    int64_t last_ack_us;   /* the latest ack sent to it (0: none) */
    int has_status;        /* it has reported its status (an older edge does not) */
    uint64_t queued;       /* its queue's depth, as it last reported */
    uint64_t in_flight;    /* its envelopes in flight, as it last reported */
    int64_t status_us;     /* when it last reported (0: never) */
};

/* What an OUT channel's send came to. */
enum jn_send_result {
    JN_SEND_OK = 0,     /* the peer has it: delivered */
    JN_SEND_RETRY = 1,  /* not now (peer down, 5xx, timeout): back off and try again */
    JN_SEND_REJECT = 2, /* the peer refused it (4xx, AR): dead-letter at once */
};

/*
 * The IN side of a channel type: takes messages from a peer and hands them to jn_ingest*().
 * Every callback is optional.
 */
struct jn_in_def {
    /* Allocate instance state (ch->state) from ch->conf; no sockets yet. 0 or JN_E* with err. */
    int (*init)(struct jn_channel *ch, struct jn_err *err);
    /* Bind / connect / schedule on ch->base. Never blocks. 0 or JN_E* with err. */
    int (*start)(struct jn_channel *ch, struct jn_err *err);
    /* Stop intake and start nothing new. In-flight work may still finish. */
    void (*stop)(struct jn_channel *ch);
    /* Free everything; after stop. */
    void (*destroy)(struct jn_channel *ch);
};

/* The OUT side of a channel type: sends what the broker's queue hands it. send is required. */
struct jn_out_def {
    /* Allocate instance state (ch->state) from ch->conf; no sockets yet. 0 or JN_E* with err.
     * Optional. */
    int (*init)(struct jn_channel *ch, struct jn_err *err);
    /* Connect / schedule on ch->base. Never blocks. 0 or JN_E* with err. Optional. */
    int (*start)(struct jn_channel *ch, struct jn_err *err);
    /*
     * Send one message. Asynchronous: the channel finishes every delivery it accepted with
     * exactly one jn_delivery_done(d, JN_SEND_*, reason), possibly before returning. The message
     * is d's (jn_delivery_msg); keep your own jn_msg_ref() if you need it after done.
     */
    void (*send)(struct jn_channel *ch, struct jn_delivery *d);
    /* Start nothing new. In-flight work may still finish. Optional. */
    void (*stop)(struct jn_channel *ch);
    /* Free everything; after stop. In-flight deliveries have finished or been finished with
     * JN_SEND_RETRY by the channel. Optional. */
    void (*destroy)(struct jn_channel *ch);
};

/*
 * A channel type: its name, its one option table (shared by both directions; each option says
 * which direction it belongs to) and the def of each direction it has (NULL when it lacks one).
 */
struct jn_channel_def {
    const char *name; /* the `type:` value */
    const char *desc;
    long long default_concurrency; /* OUT: when the config does not say; 0 = the common 1 */
    const struct jn_opt *opts;
    size_t conf_size;
    /* Cross-field checks after the table has been applied; report in d at the option's
     * position (node is the channel's map), each message starting "<type>: " (the loader
     * replaces that with "channel 'x' (type): "). Returns the number of errors. Optional. */
    int (*check)(const void *conf, unsigned dir, const struct jn_node *node, struct jn_diag *d);
    /* OUT: the concurrency the type's own options set (bridge: window), taken when the config
     * gives no `concurrency:` (after check passed). Optional. */
    long long (*concurrency_of)(const void *conf);
    const struct jn_in_def *in;   /* NULL: no IN side */
    const struct jn_out_def *out; /* NULL: no OUT side */
};

/* OUT ordering: none (concurrency sends at once, any order), fifo (one at a time, queue
 * order), key (queue order among messages with the same value of a header; up to concurrency
 * different keys at once). A message waiting for its retry holds its place in all three. */
enum {
    JN_ORDERED_NONE = 0,
    JN_ORDERED_FIFO = 1,
    JN_ORDERED_KEY = 2,
};

/* Delivery options every OUT channel has (the `retry:` block). */
struct jn_retry_conf {
    long long attempts;    /* total tries before dead-lettering */
    long long backoff;     /* ms; first retry waits up to this (full jitter) */
    long long max_backoff; /* ms; the cap of the exponential growth */
};

/* An OUT channel's queue budget (`max_queued`): past either figure (0: none) the queue is
 * full until it is below 90 % of both again; when_full says what then. */
enum jn_when_full {
    JN_FULL_BLOCK,       /* intake of the routes that feed it is refused (the default) */
    JN_FULL_REJECT,      /* taken; for this destination dead-lettered at once */
    JN_FULL_DROP_OLDEST, /* taken and queued; the oldest queued one is dead-lettered */
};
struct jn_queue_limit_conf {
    long long messages;
    unsigned long long bytes; /* of its records in the journal (payload, headers, envelope) */
};

/* An IN channel's `rate_limit:` (a token bucket in jn_ingest, jn_rate.h). */
struct jn_rate_conf {
    char *rate;       /* "N/s", "N/m" or "N/h"; NULL: no limit */
    long long burst;  /* tokens the bucket holds; 0: one second's worth (at least 1) */
};

struct jn_channel {
    const struct jn_channel_def *def;
    char *name;            /* the config name, "orders-in" */
    char log_prefix[160];  /* "http.orders-in" */
    unsigned dir;          /* JN_DIR_IN or JN_DIR_OUT */
    void *conf;            /* def->conf_size bytes, filled from def->opts */
    void *state;           /* the def's own */
    struct jn_broker *broker;
    struct event_base *base;
    /* OUT only */
    struct jn_retry_conf retry;
    long long concurrency; /* deliveries in flight at once */
    int ordered;           /* JN_ORDERED_*: what order sends keep */
    const char *ordered_key; /* the header whose value orders, with JN_ORDERED_KEY */
    struct jn_queue_limit_conf max_queued;
    int when_full;         /* enum jn_when_full */
    /* counters (loop thread) */
    uint64_t n_in, n_refused, n_sent, n_retried, n_failed;
    uint64_t n_unrouted;          /* IN: taken by no route */
    /* IN: requests refused by its auth: methods (jn_auth.h), by the method that refused; the
     * bits (1 << JN_AUTH_*) of the methods it has, so only those are exported (0: no auth). */
    uint64_t n_auth_failed[JN_AUTH__COUNT];
    unsigned auth_methods;
    /* IN: rate_limit's bucket (jn_rate.c; rate_per_s 0: none) and its refusals */
    double rate_per_s, rate_tokens, rate_burst;
    int64_t rate_last_us;
    uint64_t n_rate_limited;
    long long rate_retry_s;       /* seconds until a token, at the latest refusal */
    char rate_why[160];           /* the refusal's reason (the peer reads it) */
    /* IN channels that listen: connections their listener refused, by JN_CONN_REFUSED_* */
    uint64_t n_conn_refused[JN_CONN_REFUSED__COUNT];
    int listens;                  /* set by the channel when it has a listener */
    /* Channels with links to other nodes (bridge) set links = 1 and keep these: /api/v1/channels
     * shows them as "link", /metrics as junction_channel_link_*. */
    int links;
    unsigned links_up;            /* connections up now (an edge: 0 or 1; a hub: its edges) */
    uint64_t link_in_flight;      /* edge: envelopes sent, not acked; hub: being committed */
    int64_t link_last_ack_us;     /* wall clock of the latest ack (received / sent), 0: none */
    uint64_t n_link_duplicates;   /* hub: envelopes acked again without a second copy */
    uint64_t n_link_lost;         /* links that dropped (closed other than by us stopping) */
    int64_t link_since_us;        /* wall clock: links_up last went from 0 or to 0 (0: never) */
    /* A hub's rows, one per peer node it knows (jn_link_row); NULL: none. Row i (0..) into
     * out: 0, or -1 past the end. Loop thread; out's strings are borrowed until the next
     * loop turn. */
    int (*link_row)(struct jn_channel *ch, size_t i, struct jn_link_row *out);
    struct jn_hist delivery_lat;  /* OUT: queued (durable) -> delivered */
    int up;                       /* started and not stopped (the broker's, jn_stats.h) */
    int paused;                   /* held by the operator (jn_broker_pause) */
    size_t slot;                  /* its index among the broker's channels (the config's) */
    int restarting;               /* OUT: a reload restarts it once its sends are done */
    int broken;                   /* a reload could not start it again, or removed it: no
                                   * calls into it */
    int gone;                     /* removed by a reload: stopped; its slot and queue kept */
    int64_t unrouted_noted_us;    /* IN: when that was last logged */
    char last_error[200];         /* the latest failure (jn_channel_note_error), or "" */
    int64_t last_error_us;        /* its time (0: none yet) */
};

/* A failure the operator should see on the channel's row (/api/v1/channels, the dashboard):
 * the broker notes refused ingests and failed delivery attempts; a channel may note its own
 * (a lost connection, a bad peer). Loop thread. */
static inline void jn_channel_note_error(struct jn_channel *ch, const char *why,
                                         int64_t now_us)
{
    size_t n = 0;

    for (; why != NULL && why[n] != '\0' && n + 1 < sizeof(ch->last_error); n++) {
        ch->last_error[n] = why[n];
    }
    ch->last_error[n] = '\0';
    ch->last_error_us = now_us;
}

/* JN_DIR_IN | JN_DIR_OUT: the directions a type has. */
static inline unsigned jn_channel_def_dirs(const struct jn_channel_def *def)
{
    return (def->in ? (unsigned)JN_DIR_IN : 0u) | (def->out ? (unsigned)JN_DIR_OUT : 0u);
}

/*
 * The broker's calls into an instance, through the def of its direction (ch->dir; the config
 * loader admits only directions the type has). A callback the def leaves NULL is a no-op
 * returning 0.
 */
static inline int jn_channel_init(struct jn_channel *ch, struct jn_err *err)
{
    int (*fn)(struct jn_channel *, struct jn_err *) =
        ch->dir == JN_DIR_OUT ? ch->def->out->init : ch->def->in->init;
    return fn ? fn(ch, err) : 0;
}

static inline int jn_channel_start(struct jn_channel *ch, struct jn_err *err)
{
    int (*fn)(struct jn_channel *, struct jn_err *) =
        ch->dir == JN_DIR_OUT ? ch->def->out->start : ch->def->in->start;
    return fn ? fn(ch, err) : 0;
}

/* OUT only. */
static inline void jn_channel_send(struct jn_channel *ch, struct jn_delivery *d)
{
    ch->def->out->send(ch, d);
}

static inline void jn_channel_stop(struct jn_channel *ch)
{
    void (*fn)(struct jn_channel *) =
        ch->dir == JN_DIR_OUT ? ch->def->out->stop : ch->def->in->stop;
    if (fn) {
        fn(ch);
    }
}

static inline void jn_channel_destroy(struct jn_channel *ch)
{
    void (*fn)(struct jn_channel *) =
        ch->dir == JN_DIR_OUT ? ch->def->out->destroy : ch->def->in->destroy;
    if (fn) {
        fn(ch);
    }
}

/*
 * IN: hand a message to the broker.
 *
 * Takes the caller's reference to msg, also on failure. The broker gives it an id (unless
 * msg->id is already set: a message that keeps the id another node gave it, as the bridge hub
 * does; the channel must pass a well-formed id, jn_id_time_ms() >= 0, and keep it unique,
 * e.g. with a duplicate window, since an id is the message's key in the action log and the
 * admin API) and makes it durable; then, on the loop thread, cb(arg, 0, msg, NULL) tells the channel to acknowledge
 * (the message is borrowed for the call). On refusal (JN_EFULL, JN_ESTOPPED, JN_ENOMEM) cb gets
 * rc < 0 and a reason, and the channel must answer with a retryable refusal. cb is called
 * exactly once, never from inside jn_ingest() itself. Returns a ticket that jn_ingest_forget()
 * accepts, so a channel whose peer went away can cancel the callback (not the ingest). Returns
 * NULL when out of memory: then no callback comes, the message is released, and the channel
 * answers with a retryable refusal itself. The broker counts n_in and n_refused.
 */
typedef void (*jn_accept_fn)(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err);
struct jn_ticket;
struct jn_ticket *jn_ingest(struct jn_channel *ch, struct jn_msg *msg, jn_accept_fn cb, void *arg);
void jn_ingest_forget(struct jn_ticket *t);

/*
 * IN, opt-in: jn_ingest() plus the message's outcome, for channels that answer their peer only
 * once the message has gone where it was routed (MLLP `ack: delivered`).
 *
 * accepted is called exactly as jn_ingest() says. When it got rc < 0, outcome never comes.
 * After an accept (rc 0), outcome(arg, r, reason, reply, reply_len) runs exactly once, on the
 * loop, when the route's result is known:
 *   - every delivery the message fanned out to (each output of each matched route, to each
 *     destination, and the unrouted: channel) is final: JN_SEND_OK when all were delivered,
 *     JN_SEND_REJECT when one was dead-lettered (reason: the first dead letter's);
 *   - at routing, when nothing was queued: JN_SEND_REJECT for a dead letter there (unrouted:
 *     dead-letter, a service failed; reason says why), JN_SEND_OK for `unrouted: drop` (the
 *     configuration says such messages are done with) and for routes whose services filtered
 *     every output away; a route that failed and another that queued give REJECT;
 *   - JN_SEND_RETRY "broker is stopping" when the broker stops (or is freed) first, and
 *     JN_SEND_RETRY when a delivery cannot be tracked here (out of memory queueing, a retry
 *     that cannot be scheduled): the message is in the journal and a restart delivers it.
 * A delivery waiting for its retry is not final: there is no broker-side timeout, the channel
 * applies its own. reason may be NULL for OK; reply is the answer of a delivery whose final
 * state is r, handed over with jn_delivery_reply() (the first such one), else NULL; both are
 * borrowed for the call. outcome may run right after accepted, within the same loop turn, and
 * from inside another channel's jn_delivery_done(): it must not block or re-enter the broker
 * other than through jn_ingest*() on other messages.
 *
 * The ticket stays valid until outcome has run (not only until accepted, as with jn_ingest);
 * jn_ingest_forget() before that cancels both callbacks, and the deliveries go on untracked.
 * The tracking lives in memory: deliveries recovered from the journal after a restart have
 * none. An ingest without outcome costs nothing extra on the delivery path.
 */
typedef void (*jn_outcome_fn)(void *arg, enum jn_send_result r, const char *reason,
                              const void *reply, size_t reply_len);
struct jn_ticket *jn_ingest_outcome(struct jn_channel *ch, struct jn_msg *msg,
                                    jn_accept_fn accepted, jn_outcome_fn outcome, void *arg);
/* After jn_ingest_outcome: only deliveries to the OUT channel named out_channel (borrowed: it
 * must outlive the ticket, e.g. the channel's conf) hand over their reply (HTTP IN's `respond:
 * from:`). NULL t is a no-op. */
void jn_ingest_reply_from(struct jn_ticket *t, const char *out_channel);
/* After jn_ingest_outcome: the reply goes through these services (names under `services:`;
 * borrowed, like out_channel) before outcome gets it, on a worker thread (never the loop).
 * The reply is a message: payload = the body, headers = the answer's headers plus
 * http-status; what the last service gives becomes the reply. A service that fails, drops it
 * or gives several, or an unknown name (after a reload): outcome gets JN_SEND_REJECT, no
 * reply, and a reason naming the service. NULL t or an empty list is a no-op. */
struct jn_strlist;
void jn_ingest_reply_via(struct jn_ticket *t, const struct jn_strlist *services);

/*
 * IN, opt-in: a duplicate window that survives a restart (MLLP's MSH-10 window; HTTP
 * idempotency keys could use it too). The channel keeps its live window in memory as it likes;
 * the journal keeps what the next start needs:
 *   - jn_msg_set_dedup(msg, key, ttl, answer) before jn_ingest*(): the ingest's journal
 *     transaction writes the entry (this channel and key -> the message's id, its receive time,
 *     its expiry, the answer) with the message, so both are durable in one commit or neither
 *     is (a refused ingest leaves no entry). A later ingest of the same key replaces it.
 *   - jn_dedup_answer() when the answer is known only later (an `ack: delivered` outcome).
 *   - jn_dedup_load() at start: the entries not yet expired, for the channel to remember.
 * The broker deletes expired entries (with the action log's retention, every 10 s).
 *
 * jn_dedup_load calls visit(arg, e) for this channel's entries that have not expired, the max
 * newest of them (by receive time), oldest first; e is borrowed for the call; visit returns
 * non-zero to stop. Call it from start (it reads the journal on the loop thread: at start, not
 * on the message path). 0, JN_EINVAL (a channel name of JN_STORE_DEST_MAX (256) bytes or more:
 * then keep the window in memory only and set no dedup on messages), JN_ENOMEM or JN_EIO.
 *
 * jn_dedup_answer sets the answer of the entry for key written with message id (answered from
 * then on), in a journal write of its own: a crash before that commit leaves the entry without
 * its answer. 0 (submitted), JN_ENOENT (none: expired and pruned, or replaced by a later ingest
 * of the key), JN_ESTOPPED, JN_ENOMEM or JN_EIO. Both: loop thread.
 */
int jn_dedup_load(struct jn_channel *ch, size_t max, jn_dedup_visit_fn visit, void *arg);
/*
 * jn_dedup_find: whether the journal holds an entry of ch's window for key that has not
 * expired (committed ones only: an ingest still being committed is not seen; the channel
 * tracks those itself). For a window too large for memory (the bridge hub's message ids):
 * the lookup reads the journal (one read transaction, no write), so it suits the message path
 * where jn_dedup_load does not. 0 with the entry's message id in id (may be NULL), JN_ENOENT,
 * JN_EINVAL (name or key too long), JN_ESTOPPED (no journal) or JN_EIO. Loop thread.
 */
int jn_dedup_find(struct jn_channel *ch, const void *key, size_t klen, char id[JN_ID_LEN + 1]);
int jn_dedup_answer(struct jn_channel *ch, const void *key, size_t klen, const char *id,
                    const void *answer, size_t alen);

/* OUT: the message to send (borrowed until jn_delivery_done), the attempt (1-based). */
struct jn_msg *jn_delivery_msg(const struct jn_delivery *d);
int jn_delivery_attempt(const struct jn_delivery *d);
/* OUT: 1 when an IN channel waits for this delivery's reply (jn_delivery_reply): then it is
 * worth keeping the peer's whole answer. */
int jn_delivery_wants_reply(const struct jn_delivery *d);
/* OUT: the peer's answer to this attempt (an MLLP ACK frame's message), for an IN channel that
 * asked for the outcome (jn_ingest_outcome). Call before jn_delivery_done; bytes are copied
 * (only when someone waits for the outcome, else ignored), a later call replaces an earlier
 * one, and jn_delivery_done forgets it unless the delivery is final. */
void jn_delivery_reply(struct jn_delivery *d, const void *bytes, size_t len);
/* OUT: finish a delivery; reason is copied (may be NULL for OK). d is invalid afterwards. */
void jn_delivery_done(struct jn_delivery *d, enum jn_send_result r, const char *reason);

/* The broker's id generator and data dir, for channels that need them. */
struct jn_idgen *jn_broker_idgen(struct jn_broker *b);
const char *jn_broker_data_dir(const struct jn_broker *b);

/* Registry (channels/registry.c). */
const struct jn_channel_def *jn_channel_def_find(const char *name);
extern const struct jn_channel_def *const jn_channel_defs[];

#endif
