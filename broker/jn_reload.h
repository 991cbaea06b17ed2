/*
 * jn_reload: the broker's hot reload (docs/operations.md, "Changing the config live"), for
 * those who trigger it: cli/'s `run` gives the reloader, admin/'s POST /api/v1/reload and
 * SIGHUP apply it.
 *
 * The broker does not read config files itself: the reloader given here loads the config
 * again (from the file the broker was started with), checks it and compares it with the one
 * running (cur). It returns the new config, whose ownership passes to the broker (freed with
 * free_cfg when the broker is freed), or NULL with rep's status and messages set.
 */
#ifndef JN_RELOAD_H
#define JN_RELOAD_H

#include "jn_spec.h"

struct jn_broker;

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
