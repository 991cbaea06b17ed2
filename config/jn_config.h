/*
 * jn_config: the whole configuration, loaded, validated and cross-checked.
 *
 *   junction: { data_dir, log_level, shutdown_timeout }
 *   channels: name -> { type, direction, [retry, concurrency for out], ...type options }
 *   services: name -> { type, ...type options }
 *   routes:   name -> { from, when, via, to }
 *   unrouted: dead-letter | drop | <an OUT channel>
 *
 * Loading reports every error it finds at file:line:col (Mosquitto's config__check pass for
 * the cross-references). The result owns all conf structs; the broker borrows them.
 */
#ifndef JN_CONFIG_H
#define JN_CONFIG_H

#include <stddef.h>

#include "jn_channel.h"
#include "jn_cond.h"
#include "jn_diag.h"
#include "jn_opt.h"
#include "jn_service.h"
#include "jn_tls.h"
#include "jn_yaml.h"

struct jn_actlog_conf {
    long long retention;          /* ms */
    unsigned long long max_size;  /* bytes */
};

struct jn_core_conf {
    char *data_dir;
    int log_level; /* enum jn_log_level */
    long long shutdown_timeout; /* ms */
    unsigned long long max_size; /* bytes: the LMDB map */
    long long high_water;        /* percent of max_size above which new input is refused */
    struct jn_actlog_conf action_log;
    char *admin;       /* host:port, "off", or NULL: the default 127.0.0.1:8081 (optional) */
    char *admin_token; /* secret, or NULL */
    struct jn_tls_conf admin_tls; /* admin_tls: https for the admin listener (jn_tls.h) */
};

struct jn_chan_common {
    char *type;
    int direction; /* index into {"in", "out"} */
    struct jn_retry_conf retry;
    long long concurrency;
    int ordered;       /* JN_ORDERED_* */
    char *ordered_key; /* header name, with JN_ORDERED_KEY */
};

struct jn_cfg_channel {
    char *name;
    const struct jn_channel_def *def;
    unsigned dir;   /* JN_DIR_IN or JN_DIR_OUT; 0 while loading when its type or direction failed */
    void *conf;     /* def->conf_size, filled by def->opts */
    struct jn_chan_common common;
    struct jn_pos pos;
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
    struct jn_strlist notify_on; /* delivered | failed | dead-lettered; empty = all */
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

struct jn_config {
    struct jn_diag names; /* owns the file names positions point at */
    struct jn_core_conf core;
    struct jn_cfg_channel *channels;
    size_t nchannels;
    struct jn_cfg_service *services;
    size_t nservices;
    struct jn_cfg_route *routes;
    size_t nroutes;
    enum jn_unrouted unrouted;
    size_t unrouted_channel; /* with JN_UNROUTED_CHANNEL */
};

/* Load and validate. On any error returns NULL with every error in d (file:line:col: ...). */
struct jn_config *jn_config_load_file(const char *path, struct jn_diag *d);
struct jn_config *jn_config_load_buf(const char *name, const char *buf, size_t len,
                                     struct jn_diag *d);
void jn_config_free(struct jn_config *c);

/* Option tables of the sections, for describe and the docs generator. */
extern const struct jn_opt jn_core_opts[];
extern const struct jn_opt jn_chan_common_opts[];
extern const struct jn_opt jn_route_opts[];

/* A channel type's directions (jn_channel_def_dirs()) for people: "in", "out" or "in, out". */
const char *jn_config_dirs_text(unsigned dirs);
/* Writes docs/config-reference.md's content. */
void jn_config_reference_md(FILE *out);

#endif
