/*
 * jn_broker: the running broker. One libevent loop thread carries the whole path of a
 * message: IN channels hand messages to jn_ingest(); the commit stage makes a batch durable
 * and acknowledges it; the router matches routes, runs their services and fans out one queue
 * entry per destination; delivery workers send through OUT channels with retries.
 *
 * The commit stage is the seam for the durability work: today a batch is "committed" when the
 * loop turns (in memory); the LMDB journal with a group-commit writer thread replaces
 * commit_batch() without changing the channels' contract.
 */
#ifndef JN_BROKER_H
#define JN_BROKER_H

#include "jn_spec.h"
#include "jn_err.h"

struct jn_broker;

/* Builds channels and services from cfg (borrowed; must outlive the broker). NULL with err. */
struct jn_broker *jn_broker_new(const struct jn_config *cfg, struct jn_err *err);
/* Run as user (borrowed, must outlive the broker; NULL: stay who we are) once jn_broker_run
 * has started every channel (the listeners are bound, the journal is open) and before its
 * loop runs; a failed drop stops jn_broker_run with exit code 1 (jn_priv.h). */
void jn_broker_set_user(struct jn_broker *b, const char *user);
/* Starts every channel and runs the loop until a stop signal has drained the broker.
 * Returns the process exit code (0 after a clean stop). */
int jn_broker_run(struct jn_broker *b);
/* Asks the broker to stop as SIGTERM does; safe from the loop thread only. */
void jn_broker_stop(struct jn_broker *b);
void jn_broker_free(struct jn_broker *b);

/*
 * Hot reload (jn_reload.c, docs/operations.md "Changing the config live").
 *
 * The broker does not read config files itself: the reloader given here loads the config
 * again (from the file the broker was started with), checks it and compares it with the one
 * running (cur). It returns the new config, whose ownership passes to the broker (freed with
 * free_cfg when the broker is freed), or NULL with rep's status and messages set.
 */
enum jn_reload_status {
    JN_RELOAD_APPLIED,   /* the new config runs (rep->msgs: what changed) */
    JN_RELOAD_UNCHANGED, /* the same text and nothing else changed: nothing done */
    JN_RELOAD_INVALID,   /* the file has errors (rep->msgs: file:line:col: ...) */
    JN_RELOAD_REFUSED,   /* valid, but changes what cannot change live (rep->msgs: each) */
    JN_RELOAD_FAILED,    /* could not be applied (a service failed to start, no memory...) */
};

struct jn_reload_report {
    enum jn_reload_status status;
    char hash[JN_CONFIG_HASH_LEN + 1]; /* the config running after the call */
    char from[JN_CONFIG_HASH_LEN + 1]; /* the one before */
    struct jn_diag msgs;               /* owned: jn_reload_report_free */
};

typedef struct jn_config *(*jn_reload_load_fn)(void *arg, const struct jn_config *cur,
                                               struct jn_reload_report *rep);

void jn_broker_set_reloader(struct jn_broker *b, jn_reload_load_fn load,
                            void (*free_cfg)(struct jn_config *), void *arg);
/* Loop thread: reads the config again and applies it: every message is routed under exactly
 * one config (those the routing worker has already been given finish under the old one);
 * channels keep running untouched. Fills rep (init'd here) and logs the outcome; 0 when the
 * new config runs or nothing changed, else JN_EINVAL (invalid, refused) or JN_E*. SIGHUP
 * does the same. */
int jn_broker_reload(struct jn_broker *b, struct jn_reload_report *rep);
void jn_reload_report_free(struct jn_reload_report *rep);
const char *jn_reload_status_name(enum jn_reload_status s);

#endif
