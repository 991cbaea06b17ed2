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
 * the cross-references). The result (struct jn_config, broker/jn_spec.h) owns all conf
 * structs; the broker borrows them.
 */
#ifndef JN_CONFIG_H
#define JN_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "jn_spec.h"
#include "jn_yaml.h"

/* Load and validate. On any error returns NULL with every error in d (file:line:col: ...). */
struct jn_config *jn_config_load_file(const char *path, struct jn_diag *d);
struct jn_config *jn_config_load_buf(const char *name, const char *buf, size_t len,
                                     struct jn_diag *d);
void jn_config_free(struct jn_config *c);

/*
 * Hot reload (jn_config_diff.c): 0 when next may replace cur in a running broker: the same
 * channels (names, directions, concurrency) and the same core settings but for the reloadable
 * ones. next's channels are then put in cur's order (indexes into them remapped), a channel
 * that changed beyond its reloadable options is marked restart, and changes gets one line for
 * each thing that changes (routes, services, restarts, options applied live). Else JN_EINVAL
 * with one line in why for each thing that needs a restart of junction (or JN_ENOMEM).
 */
int jn_config_reloadable(const struct jn_config *cur, struct jn_config *next,
                         struct jn_diag *why, struct jn_diag *changes);

/* Option tables of the sections, for describe and the docs generator. */
extern const struct jn_opt jn_core_opts[];
extern const struct jn_opt jn_chan_common_opts[];
extern const struct jn_opt jn_route_opts[];

/* A channel type's directions (jn_channel_def_dirs()) for people: "in", "out" or "in, out". */
const char *jn_config_dirs_text(unsigned dirs);
/* Writes docs/config-reference.md's content. */
void jn_config_reference_md(FILE *out);

#endif
