/*
 * jn_spec: what the broker runs, as plain data: the core settings, the channels (each its def
 * and parsed conf), the services, and the compiled route table with the matcher that goes
 * with it. The broker reads it and owns none of it.
 *
 * The loader (config/jn_config.c) fills it from YAML and owns it; the route compiler and
 * matcher are routes/'s (jn_router), reached only through the ops table `router`, so the
 * engine calls nothing above itself. Model: Fluent Bit's flb_config, a plain struct handed to
 * the engine, and its plugins' callback tables for jn_router_ops.
 */
#ifndef JN_SPEC_H
#define JN_SPEC_H

#include <stddef.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_diag.h"
#include "jn_msg.h"
#include "jn_opt.h"
#include "jn_service.h"
#include "jn_tls.h"

struct jn_cond; /* a compiled `when:` (adapters/jn_cond.h) */
struct jn_router_ops;

struct jn_actlog_conf {
    long long retention;          /* ms */
    unsigned long long max_size;  /* bytes */
};

/* junction.retention: how long kept messages (jn_store.h) and actions are kept, and their
 * joint budget. */
struct jn_retention_conf {
    long long keep;               /* ms */
    unsigned long long max_bytes; /* kept messages + action log */
};

struct jn_core_conf {
    char *data_dir;
    int log_level; /* enum jn_log_level */
    int log_format; /* enum jn_log_format */
    long long shutdown_timeout; /* ms */
    unsigned long long max_size; /* bytes: the LMDB map */
    long long high_water;        /* percent of max_size above which new input is refused */
    unsigned long long min_free_disk; /* bytes: below this free on data_dir's disk, refuse */
    struct jn_actlog_conf action_log;
    struct jn_retention_conf retention;
    char *admin;       /* host:port, "off", or NULL: the default 127.0.0.1:8081 (optional) */
    char *admin_token; /* secret, or NULL */
    struct jn_tls_conf admin_tls; /* admin_tls: https for the admin listener (jn_tls.h) */
    char *user;        /* run as this user after binding (jn_priv.h), or NULL */
};

struct jn_chan_common {
    char *type;
    int direction; /* index into {"in", "out"} */
    struct jn_retry_conf retry;
    long long concurrency;
    int ordered;       /* JN_ORDERED_* */
    char *ordered_key; /* header name, with JN_ORDERED_KEY */
    struct jn_queue_limit_conf max_queued;
    int when_full;     /* enum jn_when_full */
    struct jn_rate_conf rate_limit; /* IN */
};

struct jn_cfg_channel {
    char *name;
    const struct jn_channel_def *def;
    unsigned dir;   /* JN_DIR_IN or JN_DIR_OUT; 0 while loading when its type or direction failed */
    void *conf;     /* def->conf_size, filled by def->opts */
    struct jn_chan_common common;
    struct jn_pos pos;
    /* Hot reload (jn_config_reloadable): this channel differs from the running one beyond its
     * reloadable options, so the broker restarts it with this conf (jn_reload.c). */
    int restart;
    /* Hot reload: a placeholder for a channel this config removed while the broker keeps its
     * slot (its queue); the fields are an older config's, borrowed: not freed with this one,
     * and nothing routes to it. */
    int gone;
};

struct jn_cfg_service {
    char *name;
    const struct jn_service_def *def;
    void *conf;
    struct jn_pos pos;
};

struct jn_route_conf {
    struct jn_strlist from;
    char *when;
    struct jn_strlist via;
    struct jn_strlist to;
    char *notify;               /* callback URL */
    char *notify_secret;        /* HMAC key for X-Junction-Signature */
    char *notify_webhook_secret; /* whsec_...: callbacks also signed as Standard Webhooks */
    struct jn_strlist notify_on; /* delivered | failed | dead-lettered; empty = all */
    int keep;                    /* enum jn_keep (jn_store.h): kept after routing */
};

enum {
    JN_NOTIFY_DELIVERED = 1 << 0,
    JN_NOTIFY_FAILED = 1 << 1,       /* an attempt failed and will be retried */
    JN_NOTIFY_DEAD = 1 << 2,         /* dead-lettered: rejected, attempts exhausted, errors */
};

struct jn_cfg_route {
    char *name;
    struct jn_route_conf rc;
    struct jn_cond *cond; /* NULL: always */
    size_t *from;         /* indexes into channels */
    size_t *via;          /* indexes into services */
    size_t *to;           /* indexes into channels */
    long notify_chan;     /* index of the route's callback channel, or -1 */
    unsigned notify_mask; /* JN_NOTIFY_* */
    struct jn_pos pos;
};

enum jn_unrouted {
    JN_UNROUTED_DEAD_LETTER,
    JN_UNROUTED_DROP,
    JN_UNROUTED_CHANNEL,
};

#define JN_CONFIG_HASH_LEN 16

struct jn_config {
    struct jn_diag names; /* owns the file names positions point at */
    char hash[JN_CONFIG_HASH_LEN + 1]; /* the text's SHA-256, its first 16 hex digits */
    char *text;      /* the config's text as written (${...} not substituted), owned */
    size_t text_len;
    struct jn_core_conf core;
    struct jn_cfg_channel *channels;
    size_t nchannels;
    struct jn_cfg_service *services;
    size_t nservices;
    struct jn_cfg_route *routes;
    size_t nroutes;
    const struct jn_router_ops *router; /* matches and explains routes[] */
    enum jn_unrouted unrouted;
    size_t unrouted_channel; /* with JN_UNROUTED_CHANNEL */
};

/*
 * One route that took the message: outs are its outputs (borrowed for the call; each a
 * reference the callee may jn_msg_ref), or NULL with err when one of its services failed.
 * stages: with two or more services and outs given, r->rc.via.n - 1 lists, the outputs of
 * each service but the last (whose are outs), borrowed the same way; else NULL.
 */
typedef void (*jn_route_fn)(void *arg, const struct jn_cfg_route *r,
                            const struct jn_msg_list *outs, const struct jn_msg_list *stages,
                            const struct jn_err *err);

struct jn_router_ops {
    /* Matches m (from channel index src) against routes[0..n) in order: for each route that
     * reads from src and whose condition holds, runs its services (svcs; messages a service
     * creates get ids from ids) and calls fn. Returns how many routes took m (0: unrouted). */
    size_t (*route)(const struct jn_cfg_route *routes, size_t n, size_t src, struct jn_msg *m,
                    const struct jn_service *svcs, struct jn_idgen *ids, jn_route_fn fn,
                    void *arg);
    /* Why nothing from src was taken: appends "route 'x' when: <cond>" (joined by "; ") for
     * each route reading from src to why. Returns how many routes read from src. */
    size_t (*explain)(const struct jn_cfg_route *routes, size_t n, size_t src,
                      struct jn_buf *why);
};

#endif
