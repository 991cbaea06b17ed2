/*
 * jn_stats: what a running broker tells its operator: readiness, counts per channel and route,
 * the journal's use; and the one thing the operator may change, pausing a channel. A view for
 * the admin listener (admin/), which renders it as JSON and Prometheus text; the broker keeps
 * no second set of counters for it.
 *
 * Threads: the counters are written on the loop thread only (each by its one writer, no lock on
 * the hot path), so these are called on the loop thread too: the admin listener runs there.
 * Model: Redis's INFO (one snapshot call per section, no registry) and the counters Mosquitto
 * keeps in its db struct for $SYS.
 */
#ifndef JN_STATS_H
#define JN_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "jn_hist.h"
#include "jn_msg.h"

struct jn_broker;
struct event_base;
struct jn_err;
struct jn_journal;

struct jn_broker_stats {
    int journal_open;       /* the journal is open */
    int started;            /* every channel has started */
    int stopping;           /* a stop is under way */
    int disk_low;           /* the disk has less than min_free_disk free: intake refused */
    uint64_t blocked;       /* ingests refused by flow control since the start */
    int64_t started_us;     /* wall clock, when jn_broker_run started the channels (0: not yet) */
    size_t nchannels, nroutes;
    uint64_t dead_letters;  /* written since the start (unrouted ones included) */
    uint64_t unrouted_dropped;
    size_t queued;          /* queue records in the journal: routed, not delivered yet */
    size_t inbox;           /* accepted, not routed yet (waiting for their services) */
    size_t dead_stored;     /* dead letters in the journal */
    size_t kept;            /* kept messages (retention, jn_store.h) */
    unsigned long long kept_bytes;  /* their pages (and their index's) */
    unsigned long long log_bytes;   /* the action log's pages (and its index's) */
    unsigned long long retention_budget; /* what both may take together (junction.retention) */
    uint64_t pruned_kept, pruned_actions; /* deleted by retention since the start */
    unsigned long long journal_bytes;     /* bytes of the journal's pages in use */
    unsigned long long journal_map_bytes; /* the map (max_size) */
    int journal_used_pct;
    size_t routing_in_flight;
    const char *config_hash;          /* of the config text it runs (borrowed) */
    int64_t config_loaded_us;         /* wall clock, when that config started running */
    uint64_t reloads;                 /* configs applied by hot reload since the start */
    const struct jn_hist *commit_lat; /* received -> durable (borrowed; loop thread) */
};

struct jn_channel_stats {
    const char *name;       /* borrowed from the broker */
    const char *type;
    int out;                /* 1: an OUT channel */
    int up;                 /* started and not stopped */
    int paused;             /* held by the operator (jn_broker_pause) */
    int removed;            /* a reload removed it: stopped; an OUT one's queue is kept */
    uint64_t received;      /* IN: accepted (durable) */
    uint64_t refused;       /* IN: refused (journal full, stopping, out of memory) */
    uint64_t unrouted;      /* IN: taken by no route */
    uint64_t delivered;     /* OUT */
    uint64_t retried;       /* OUT: attempts that failed and were scheduled again */
    uint64_t failed;        /* OUT: rejected or out of attempts: dead-lettered */
    size_t in_memory;       /* OUT: deliveries held in memory (the queue's window) */
    size_t in_flight;       /* OUT: sends under way */
    size_t waiting;         /* OUT: deliveries waiting for their retry */
    int depth_exact;        /* OUT: in_memory is the whole queue (else the journal holds more) */
    int64_t oldest_us;      /* OUT: receive time of the oldest queued message, 0: empty */
    const struct jn_hist *delivery_lat; /* OUT: queued (durable) -> delivered (borrowed) */
    const char *last_error; /* the latest failure noted on it (borrowed), "" when none */
    int64_t last_error_us;  /* its wall-clock time, 0 when none */
    uint64_t depth;         /* OUT: its queue records in the journal (committed; exact) */
    uint64_t depth_bytes;   /* OUT: their bytes */
    int full;               /* OUT: past max_queued (not yet below 90 %) */
    const char *blocked;    /* IN: why flow control refuses its intake now, or NULL */
    const uint64_t *auth_failed; /* IN: JN_AUTH__COUNT refusals by method (borrowed) */
    unsigned auth_methods;  /* IN: the bits 1 << JN_AUTH_* it counts; 0: no auth */
    int rate_limited_on;    /* IN: has a rate_limit */
    uint64_t rate_limited;  /* IN: messages refused by it (also counted in refused) */
    int listens;            /* IN: takes connections (HTTP, MLLP): conn_refused applies */
    uint64_t conn_refused_max;    /* connections refused over max_connections */
    uint64_t conn_refused_per_ip; /* over max_connections_per_ip */
    int links;              /* keeps links to other nodes (bridge): the link_* below apply */
    unsigned links_up;      /* links up now (edge: 0 or 1; hub: edges connected) */
    uint64_t link_in_flight; /* edge: envelopes sent, not acked; hub: being committed */
    int64_t link_last_ack_us; /* wall clock of the latest ack, 0: none */
    uint64_t link_duplicates; /* hub: envelopes acked again without a second copy */
    uint64_t link_lost;     /* links that dropped */
    int64_t link_since_us;  /* when links_up last went from or to 0 (0: never) */
    int link_rows;          /* has per-peer rows (a bridge hub): jn_broker_link_row */
};

struct jn_route_stats {
    const char *name;
    uint64_t routed;        /* messages this route took */
};

/* Loop thread. The journal, for read-only scans (the admin's message browser reads the action
 * log through jn_store.h); NULL once closed. */
struct jn_journal *jn_broker_journal(struct jn_broker *b);
/* Loop thread. The base the broker runs on (the admin listener's too). */
struct event_base *jn_broker_base(struct jn_broker *b);
/* Loop thread. The broker's figures now (the journal ones read with one read transaction
 * each). */
void jn_broker_stats(struct jn_broker *b, struct jn_broker_stats *out);
/* Loop thread. Channel i (0..nchannels) or route i (0..nroutes): 0, or -1 past the end. */
int jn_broker_channel_stats(struct jn_broker *b, size_t i, struct jn_channel_stats *out);
int jn_broker_route_stats(const struct jn_broker *b, size_t i, struct jn_route_stats *out);
/* Loop thread. Row r of channel i's peers (a bridge hub's edges, struct jn_link_row in
 * jn_channel.h): 0, or -1 past the end (or when it has none). */
struct jn_link_row;
int jn_broker_link_row(struct jn_broker *b, size_t i, size_t r, struct jn_link_row *out);

/*
 * Loop thread. Pauses (on) or resumes channel name. A paused IN channel refuses what it is
 * sent with JN_EAGAIN, "the channel is paused", which each channel answers on its protocol
 * (HTTP 503 with Retry-After, MLLP a negative ACK, a file left in its folder, Kafka partitions
 * paused); a paused OUT channel holds its queue (sends in flight finish, retries that come due
 * wait, new messages are queued). Returns 0; JN_ENOENT: no such channel; JN_EINVAL: it is
 * already in that state (why in err).
 */
int jn_broker_pause(struct jn_broker *b, const char *name, int on, struct jn_err *err);

/* Replaying dead letters, or kept messages, while the broker runs (jn_replay.c). */
#define JN_REPLAY_SAMPLE 20
struct jn_replay_req {
    const char *const *ids; /* these messages' dead letters; nids 0: every dead letter */
    size_t nids;
    /* Filters, each NULL / 0 for none; a dead letter must pass every one given. */
    const char *dest;       /* its destination */
    int64_t since_us, until_us; /* dead-lettered at or after since, at or before until */
    const char *channel;    /* received on this IN channel */
    const char *route;      /* routed by this route */
    const char *header;     /* has this header (any case) ... */
    const char *header_value; /* ... with exactly this value */
    const char *text;       /* its payload contains these bytes */
    /* Where they go: nto 0: each back to its own destination (or routed again when it had
     * none); else into each of these OUT channels instead. */
    const char *const *to;
    size_t nto;
    int dry_run;            /* count, write nothing */
    /* 0: the dead letters; 1: the kept messages (retention, jn_store.h) instead, whatever
     * became of them, each routed again by the current routes (or put into `to`); since and
     * until are then of the receive time, and route matches any route that took it. */
    int from_kept;
};
struct jn_replay_result {
    size_t count;           /* dead letters that match */
    size_t undecodable;     /* records that cannot be read (left alone) */
    size_t headers_only;    /* from_kept: matches kept without their payload (not replayed) */
    char sample[JN_REPLAY_SAMPLE][JN_ID_LEN + 1]; /* the first ids */
    size_t nsample;
    uint64_t job;           /* the job (not a dry run, count > 0), else 0 */
};
struct jn_replay_job {
    uint64_t id;
    size_t matched, written, failed;
    int running;
    int64_t started_us, ended_us;
};
/*
 * Loop thread. Puts the matching dead letters back: each into its destination's queue (or,
 * dead-lettered before it had one, routed again by the current routes), in journal
 * transactions of a few hundred that also delete the dead letter and log "replayed". Returns 0
 * with out filled (the job runs on: jn_broker_replay_job), or JN_EAGAIN (a job is running),
 * JN_ENOENT (a `to` channel is no OUT channel), JN_ESTOPPED, JN_ENOMEM, JN_EIO with err.
 */
int jn_broker_replay(struct jn_broker *b, const struct jn_replay_req *req,
                     struct jn_replay_result *out, struct jn_err *err);
/*
 * Loop thread. Calls visit for each dead letter that passes req's filters (ids, dest, since,
 * until, channel, route, header, text; to and dry_run unused), oldest first, until it returns
 * non-zero. r is borrowed for the call. Returns how many matched (all of them, also past a
 * stop by visit: the count goes on without calls), or -1 when the journal cannot be read.
 */
struct jn_qrec;
long jn_broker_dead_letters(struct jn_broker *b, const struct jn_replay_req *req,
                            int (*visit)(void *arg, const struct jn_qrec *r), void *arg);

/* Loop thread. The job id (the last one only is kept): 0, or JN_ENOENT. */
int jn_broker_replay_job(const struct jn_broker *b, uint64_t id, struct jn_replay_job *out);

#endif
