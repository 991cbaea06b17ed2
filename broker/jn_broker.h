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

#endif
