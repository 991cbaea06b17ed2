/*
 * jn_broker_int: what the files of the engine share (jn_broker.c, jn_commit.c, jn_route.c,
 * jn_track.c, jn_notify.c, jn_recover.c, jn_replay.c, jn_retain.c, jn_stats.c): struct jn_broker, the ingest ticket, and the
 * module-internal functions
 * (module__verb, as Mosquitto's db__/log__). Internal: channels, services and routes/ never
 * include it; they see jn_channel.h.
 *
 * Everything here runs on the loop thread.
 */
#ifndef JN_BROKER_INT_H
#define JN_BROKER_INT_H

#include "jn_broker.h"

#include <event2/event.h>
#include <stdatomic.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_journal.h"
#include "jn_queue.h"
#include "jn_reload.h"

struct jn_ticket {
    struct jn_ticket *next;
    struct jn_broker *b;
    struct jn_channel *ch;
    struct jn_msg *msg;
    jn_accept_fn cb;
    void *arg;
    int refusal;   /* 0, or the JN_E* the ingest is refused with before the journal */
    const char *why; /* with refusal JN_EFULL or JN_ELIMIT: flow control's or the rate
                      * limit's reason (borrowed) */
    int deferred;  /* routed after the acknowledgement (jn_route.c): inbox_seq holds it */
    struct jn_gen *gen; /* deferred: the config it is routed under (held), until posted */
    uint64_t inbox_seq;
    struct jn_buf env; /* msg encoded once, for every queue record of it; freed after routing */
    struct jn_delivery *adds; /* deliveries of its queue records, until the commit */
    /*
     * jn_ingest_outcome only: the ticket outlives its commit and is the message's outcome
     * tracker, pointed to by its deliveries. pending counts what is not final yet: the routing
     * (1 from the ingest until its commit callback is done) and each delivery. The ticket is
     * freed when pending is 0 and outcome has run or was forgotten.
     */
    int tracked;
    int accepted;                 /* its accept callback said rc 0 */
    jn_outcome_fn outcome;        /* NULL once run or forgotten */
    size_t pending;
    enum jn_send_result result;   /* the worst so far: REJECT > RETRY > OK */
    char *reason;                 /* owned: the first reason of that worst result */
    const char *reply_from;       /* only this OUT channel's deliveries hand over their reply
                                   * (jn_ingest_reply_from; borrowed), or NULL: any */
    void *reply;                  /* owned: the first reply of a delivery that ended in... */
    size_t reply_len;
    enum jn_send_result reply_r;  /* ...this result */
    const struct jn_strlist *reply_via; /* services the reply goes through before outcome
                                         * (jn_ingest_reply_via; borrowed), or NULL */
    int via_busy;                 /* a reply job has it (jn_reply.c): pending holds 1 for it */
    char id[JN_ID_LEN + 1];       /* tracked: the message's id, once accepted */
    struct jn_ticket *oprev, *onext; /* b->outcomes while outcome is awaited */
};

/*
 * One config the broker runs or has run, with its services made running (jn_reload.c). Each
 * routing job holds the generation it was posted under, so the worker routes it under that
 * one config; a reload makes a new current one. A generation's services are destroyed once it
 * is not current and no job holds it; its config lives as long as the broker (channels and
 * queued deliveries borrow names from it).
 */
struct jn_gen {
    struct jn_gen *older;
    const struct jn_config *cfg;
    struct jn_service *svcs;   /* cfg's services, made running (owned; NULL once destroyed) */
    size_t nsvcs;
    size_t jobs;               /* routing jobs posted under it and not back yet */
    struct jn_config *owned;   /* cfg, when the broker owns it (a reloaded one), else NULL */
};

struct jn_broker {
    /* The current config and its services: gen's (jn_reload.c switches all three). */
    const struct jn_config *cfg;
    struct jn_gen *gen;
    struct event_base *base;
    struct jn_idgen ids;
    /* The channel slots, each its own allocation (channels, queues, tickets and jobs hold
     * pointers to them): chans[i] is the config's channels[i] (jn_config_reloadable keeps that
     * order across reloads). Slots are never reused for another name; a reload appends. */
    struct jn_channel **chans;
    size_t nchans;
    struct jn_service *svcs;
    size_t nsvcs;
    struct jn_queue **queues;        /* one per channel; NULL for IN ones */
    struct jn_queue_env qenv;        /* what the queues reach the broker through */
    struct jn_journal *journal;
    struct jn_ticket *pend_head, *pend_tail; /* refused before the journal */
    struct jn_ticket *outcomes;      /* tickets whose outcome is awaited (jn_ingest_outcome) */
    struct event *commit_ev;
    size_t ingests_in_flight;        /* submitted to the journal, callback not yet run */
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *drain_timer;
    struct event *prune_timer;
    struct event *tls_timer;         /* certificate files changed on disk (jn_tls) */
    int stopping;   /* intake closed, queues draining */
    int freeing;    /* jn_broker_free: no more retries */
    long long stop_deadline_ms;
    int started;
    size_t nspilled;  /* queues paged from the journal */
    struct jn_queue_batch adds;      /* jn_queue_add since the last submit */
    unsigned char *deferred;         /* per channel: routed after the acknowledgement */
    struct jn_worker *router;        /* runs conditions and services for those (or NULL) */
    atomic_int route_abort;          /* stopping: the router skips what it has not begun */
    const char *run_user;            /* jn_broker_set_user, or NULL */
    size_t routing_in_flight;        /* posted to the router, routing not yet committed */
    uint64_t route_seq_post;         /* the next routing job's place in acceptance order */
    uint64_t route_seq_done;         /* the next one to finish (jn_route.c's reorder window) */
    void **route_window;             /* route_window_cap jobs back, waiting for those before */
    size_t route_window_cap;
    struct jn_worker *replier;       /* runs response_via services on answers (or NULL) */
    size_t replies_in_flight;        /* posted to the replier, not back yet */
    uint64_t *n_routed;              /* per route: messages it took (jn_stats.h) */
    int64_t started_us;              /* wall clock when the channels had started */
    struct jn_replay *replay;        /* the replay job under way or last done (jn_replay.c) */
    uint64_t n_dead, n_unrouted_dropped;
    struct jn_hist commit_lat;       /* received -> durable, every IN channel (jn_stats.h) */
    size_t nfeeds;                   /* feeds' length (nchans when made) */
    size_t **feeds;                  /* per IN channel: the OUT channel indexes its routes feed,
                                      * ending with (size_t)-1 (jn_flow.c) */
    struct event *disk_timer;        /* min_free_disk's check */
    int disk_low;                    /* the disk had less than min_free_disk free */
    char disk_why[160];
    uint64_t n_blocked;              /* ingests refused by flow control */
    uint64_t n_pruned_actions;       /* deleted by retention (jn_retain.c) */
    uint64_t n_pruned_kept;
    struct jn_sdnotify *sdn;         /* systemd's notify socket (jn_sdnotify.h), or NULL */
    jn_reload_load_fn reload_load;   /* jn_broker_set_reloader, or NULL: reload not offered */
    void (*reload_free)(struct jn_config *);
    void *reload_arg;
    uint64_t n_reloads;              /* applied since the start */
    /* While a routing job's records are written (jn_route.c's route_done): the config it was
     * routed under, which its action log records name (jn_commit__log); else NULL (b->cfg). */
    const struct jn_config *routing_cfg;
    struct jn_restart *restarts;     /* OUT channels a reload restarts once idle (jn_reload.c) */
    struct event *restart_timer;
    int64_t loaded_us;               /* when the current config started running */
};

/* jn_commit.c: the commit stage (calls nothing back in the other files) */
/* Adds an action log entry to t (NULL: out of memory, logged). */
void jn_commit__log(struct jn_broker *b, struct jn_jtxn *t, const struct jn_msg *m,
                    const char *event, const char *route, const char *channel, int attempt,
                    const char *error);
/* The deliveries jn_queue_add gave since the last submit (b->adds, emptied). */
struct jn_delivery *jn_commit__take_adds(struct jn_broker *b);
/* After any commit: queues paged from the journal may load what it wrote. */
void jn_commit__paged(struct jn_broker *b, int rc);
/* Submits t, which may not be refused, with the deliveries jn_queue_add gave it since the
 * last submit (they enter their queues at its commit). */
void jn_commit__submit(struct jn_broker *b, struct jn_jtxn *t);
/* The same for a routing transaction of jn_route.c: its commit also ends one of
 * routing_in_flight and, when track is not NULL, the routing part of that ticket. */
void jn_commit__submit_routing(struct jn_broker *b, struct jn_jtxn *t, struct jn_ticket *track);
/* The same as jn_commit__submit, and cb(arg, rc) once t is committed (rc 0) or failed, after
 * its deliveries entered their queues. cb is called exactly once (also when out of memory:
 * rc JN_ENOMEM, t not written). */
void jn_commit__submit_cb(struct jn_broker *b, struct jn_jtxn *t, void (*cb)(void *, int),
                          void *arg);
/* The ingest's own part of t is over (routed: its routing is final; else it ended undelivered,
 * e.g. by the stop). A plain ticket is freed; a tracked one lives while deliveries pend. */
void jn_commit__ticket_done(struct jn_ticket *t, int routed);

/* jn_flow.c: flow control (max_queued, when_full, min_free_disk; docs/flow-control.md) */
/* Which queues each IN channel's routes feed, and the disk check. 0 or JN_E*. */
int jn_flow__init(struct jn_broker *b, struct jn_err *err);
void jn_flow__start(struct jn_broker *b);
void jn_flow__free(struct jn_broker *b);
/* Reload: which queues each IN channel's routes feed, anew from b->cfg; the disk check
 * started or stopped as min_free_disk says. 0 or JN_ENOMEM (the old feeds kept). */
int jn_flow__reconfig(struct jn_broker *b);
/* Why intake on src is refused now (a queue its routes feed is full with when_full: block,
 * or the disk is short of min_free_disk), or NULL. */
const char *jn_flow__blocked(struct jn_broker *b, const struct jn_channel *src);
/* Before m is queued for q by route: with q full, reject dead-letters m for q in t (returns 1:
 * do not queue it); drop-oldest dead-letters q's oldest (or, with none to drop, m: 1). 0:
 * queue it. */
int jn_flow__full_policy(struct jn_broker *b, struct jn_queue *q, struct jn_jtxn *t,
                         const struct jn_msg *m, const char *route);

/* jn_gen.c: the config generations */
/* A generation for cfg, its services made running: NULL with err. */
struct jn_gen *jn_gen__new(const struct jn_config *cfg, struct jn_err *err);
/* Destroys g's services (once; its config stays). */
void jn_gen__services_free(struct jn_gen *g);
/* b runs g from now on (b->cfg, b->svcs, loaded_us). */
void jn_gen__use(struct jn_broker *b, struct jn_gen *g);
/* The broker's first generation: cfg (the caller's) with its services made running. */
int jn_gen__first(struct jn_broker *b, struct jn_err *err);
/* A message or job let go of g: destroys a retired generation's services with its last hold. */
void jn_gen__release(struct jn_broker *b, struct jn_gen *g);
/* Freeing the broker, last: every generation (services, owned configs). */
void jn_gen__free_all(struct jn_broker *b);

/* jn_reload.c */
/* Freeing the broker: the restarts still waiting. */
void jn_reload__free(struct jn_broker *b);
/* The current config's text under its hash (jn_store.h's configs), with its first and latest
 * load, so `junction ctl config history / show` can name and print the version a trace names.
 * Written with the next commit; a failure is logged and changes nothing else. */
void jn_reload__note_config(struct jn_broker *b);
/* What the broker copies from a channel's config block into its instance (before
 * jn_channel_init; again when a reload restarts it with a new block). */
void jn_reload__chan_setup(struct jn_broker *b, struct jn_channel *ch,
                           const struct jn_cfg_channel *cc);

/* jn_route.c: routing (see its opening comment for the two paths) */
/* Which channels are routed after the acknowledgement, and their worker. 0 or JN_E*. */
int jn_route__init(struct jn_broker *b, struct jn_err *err);
/* src's messages are routed after the acknowledgement (a route from it has services). */
int jn_route__deferred(const struct jn_broker *b, const struct jn_channel *src);
/* Routes m (from src, NULL: its channel is gone) into t now: queue records in b->adds,
 * dead letters, the action log. menv: m's encoding, or NULL. track: the ticket what ends here
 * is noted in, or NULL. */
void jn_route__build(struct jn_broker *b, struct jn_jtxn *t, struct jn_channel *src,
                     struct jn_msg *m, const struct jn_buf *menv, struct jn_ticket *track);
/* Routes m (a reference it takes), whose inbox record is inbox_seq, on the router; the routing
 * transaction deletes the record. track: as above; its routing part ends with that commit.
 * gen: the config generation to route it under, whose hold it takes over (the ingest's); NULL:
 * the current one. */
void jn_route__later(struct jn_broker *b, struct jn_channel *src, struct jn_msg *m,
                     uint64_t inbox_seq, struct jn_ticket *track, struct jn_gen *gen);
/* Routes an inbox record (seq) of src (NULL: its channel is gone) and deletes it, by the path
 * of src (m is borrowed). */
void jn_route__inbox(struct jn_broker *b, struct jn_channel *src, struct jn_msg *m,
                     uint64_t seq);
/* After a reload's jn_gen__use: the router gets as many threads as the new services ask
 * (jn_service_def.parallel); never fewer than it has. */
void jn_route__threads(struct jn_broker *b);
/* Stopping: the router skips what it has not begun (those stay in the inbox). */
void jn_route__stop(struct jn_broker *b);
/* Freeing: stops the router; nothing more is routed. */
void jn_route__free(struct jn_broker *b);
/* Reload: the current config changed (b->cfg): which channels are routed after the
 * acknowledgement (starting the worker if none ran), and the per-route counts carried over by
 * route name. 0 or JN_E* (nothing changed). */
int jn_route__reconfig(struct jn_broker *b, const struct jn_config *old, struct jn_err *err);

/* jn_notify.c: callbacks (notify:) and dead letters */
/* Writes the dead letter (with its last error and attempt count), its action and callback
 * into t, and logs it at level with prefix (a channel's, or NULL). */
void jn_notify__dead_letter(struct jn_broker *b, struct jn_jtxn *t, const struct jn_msg *m,
                            const char *route, const char *dest, int attempts,
                            const char *reason, int level, const char *prefix);
/* jn_queue_env.ended: the action log entry, callback and dead letter of an attempt's end. */
void jn_notify__ended(void *arg, struct jn_jtxn *t, const struct jn_queue_event *ev);

/* jn_track.c: outcome tracking (jn_ingest_outcome) */
void jn_track__free(struct jn_ticket *t);
/* Stops waiting for t's outcome: it will not be called. */
void jn_track__detach(struct jn_ticket *t);
/* Folds one result into t's outcome (the worst wins, with the first reason given for it). */
void jn_track__note(struct jn_ticket *t, enum jn_send_result r, const char *reason,
                    const void *reply, size_t reply_len);
/* One of t's pending parts (the routing, or a delivery) is final with r. */
void jn_track__settle(struct jn_ticket *t, enum jn_send_result r, const char *reason,
                      const void *reply, size_t reply_len);
/* Broker stopping: answers every outcome still awaited for an accepted message with
 * JN_SEND_RETRY. Returns how many were answered. */
size_t jn_track__stop_all(struct jn_broker *b);
/*
 * jn_reply.c: a tracked ticket's reply through its response_via services. Loop thread. Posts
 * t's reply (t->reply, with t->result) to the reply worker: t->pending is held by the job and
 * outcome runs from the job's done with the services' answer (or a reason naming the one that
 * failed). Returns 0 (posted), or JN_E* and nothing changed (the caller answers itself).
 */
int jn_reply__post(struct jn_ticket *t);
/* Freeing: stops the reply worker; jobs not run release their tickets. */
void jn_reply__free(struct jn_broker *b);

/* The jn_queue_env tag callbacks (the tag is a struct jn_ticket). */
void jn_track__q_hold(void *arg, void *tag);
void jn_track__q_note(void *arg, void *tag, enum jn_send_result r, const char *reason);
void jn_track__q_settle(void *arg, void *tag, enum jn_send_result r, const char *reason,
                        const void *reply, size_t reply_len);
int jn_track__q_wants_reply(void *arg, void *tag, const struct jn_channel *ch);

/* jn_retain.c: the prune timer's callback (arg: the broker). */
void jn_retain__prune_cb(evutil_socket_t fd, short what, void *arg);

/* jn_replay.c: frees the last replay job (after the journal is closed). */
void jn_replay__free(struct jn_broker *b);

/* jn_recover.c */
/* The channel of direction dir named name, or NULL. */
struct jn_channel *jn_broker__find_chan(struct jn_broker *b, const char *name, unsigned dir);
/* At start: marks every queue as paged (its pump reads the first window of what was queued
 * before the last stop), names orphaned destinations, then routes what was accepted but not
 * routed. 0, or -1 (logged) when the journal cannot be read. */
int jn_recover__run(struct jn_broker *b);

#endif
