/*
 * jn_service: the transform interface. One message in, zero or more messages out, or an error
 * with a reason.
 *
 * A service *def* is the kind ("json-map"), listed in services/registry.c; an instance is one
 * block under `services:`. init compiles the conf into read-only state, so transform may later
 * run on several threads at once: transform must not change svc.
 *
 * Ownership: transform never frees or changes its input (it is shared by reference). To change
 * a message it makes a jn_msg_copy() (same id), edits the copy and pushes it to out. Passing the
 * input through unchanged is jn_msg_list_push(out, jn_msg_ref(in)). Pushing nothing drops the
 * message (a filter). On error, transform returns JN_E* with err set, and whatever it pushed is
 * released by the caller.
 */
#ifndef JN_SERVICE_H
#define JN_SERVICE_H

#include <stdatomic.h>
#include <stddef.h>

#include "jn_err.h"
#include "jn_msg.h"
#include "jn_opt.h"

struct jn_service;

struct jn_service_def {
    const char *name;
    const char *desc;
    const struct jn_opt *opts;
    size_t conf_size;
    /* Cross-field checks; report in d at the option's position, each message starting
     * "<type>: " (the loader names the instance). Returns the number of errors. */
    int (*check)(const void *conf, const struct jn_node *node, struct jn_diag *d);
    /* Compile conf into svc->state. 0 or JN_E* with err. Optional. */
    int (*init)(struct jn_service *svc, struct jn_err *err);
    int (*transform)(const struct jn_service *svc, struct jn_msg *in, struct jn_msg_list *out,
                     struct jn_err *err);
    void (*destroy)(struct jn_service *svc); /* frees state; optional */
    /* Optional: how many messages at once the instance can make use of, because its
     * transform mostly waits (http-lookup's concurrency). The broker routes on as many
     * threads as the largest of these asks (jn_route.c), 1 without any. */
    size_t (*parallel)(const struct jn_service *svc);
};

struct jn_service {
    const struct jn_service_def *def;
    char *name;
    char log_prefix[160]; /* "json-map.order-fields" */
    void *conf;
    void *state;
    /* Set (non-zero) when the broker stops: a transform that waits long (a lookup, a retry's
     * pause) may poll it and give up with JN_ESTOPPED; its message is then routed again at
     * the next start. NULL outside the broker (junction test). Set by the broker. */
    const atomic_int *abort;
};

/*
 * The instances of a config's services: svcs[i] is cs[i] (its def, name, conf and log prefix
 * "<type>.<name>"), its def's init run. svcs has room for n and is zeroed by the caller; names
 * and confs are borrowed from cs, which must outlive svcs. Returns 0, or the failing init's
 * JN_E* with err: then that instance and those after it are left with def NULL, so
 * jn_services_destroy(svcs, n) is right in both cases. The broker (jn_broker_new) and the
 * offline `junction test` (cli/jn_testrun.c) make their services with it, so both run the same
 * instances. Implemented in broker/jn_service_inst.c.
 */
struct jn_cfg_service;
int jn_services_init(struct jn_service *svcs, const struct jn_cfg_service *cs, size_t n,
                     struct jn_err *err);
/* Destroys the initialised ones (def not NULL) among svcs[0..n); the array is the caller's. */
void jn_services_destroy(struct jn_service *svcs, size_t n);

const struct jn_service_def *jn_service_def_find(const char *name);
extern const struct jn_service_def *const jn_service_defs[];

#endif
