/*
 * jn_router: routes, compiled at load and matched per message.
 *
 * The compiler links one route of the `routes:` section, whose options config/jn_config.c has
 * parsed from YAML into r->rc (jn_route_opts), to the config's channels and services: names
 * become indexes (from IN channels, via services, to OUT channels, each checked and reported
 * at file:line:col with the nearest name), notify_on becomes a mask and `when:` is compiled by
 * jn_cond. The matcher decides which routes take a message from a source channel and runs
 * their services to build the outputs; what the outputs become (queue records, dead letters,
 * the action log) is its caller's, the broker's.
 *
 * Model: Fluent Bit's router (match at load into route bitmasks, evaluate per record) and
 * Redis's command table (look up once, never per message by name). Depends on jn_cond, the
 * services' interface and jn_msg, plus the types of a compiled route (broker/jn_spec.h); the
 * broker calls it only through jn_router_ops, never by name. No state of its own; the
 * caller's thread.
 */
#ifndef JN_ROUTER_H
#define JN_ROUTER_H

#include <stddef.h>

#include "jn_buf.h"
#include "jn_spec.h"
#include "jn_msg.h"
#include "jn_service.h"

struct jn_node;
struct jn_diag;

/*
 * Links route r (r->name and r->rc filled, k its key node, v its map) to c's channels and
 * services, reporting each error in d as "<what>: ...". r owns what it gets (freed with the
 * config). Returns the number of errors (0: r is ready to match).
 */
int jn_router_compile(struct jn_cfg_route *r, const struct jn_config *c, const struct jn_node *k,
                      const struct jn_node *v, const char *what, struct jn_diag *d);

/* Route r reads from channel index src. */
int jn_router_reads_from(const struct jn_cfg_route *r, size_t src);

/* The matcher, for struct jn_config's router: jn_router_route and jn_router_explain. */
extern const struct jn_router_ops jn_router_ops;

/*
 * Matches m (from channel index src) against routes[0..n) in order: for each route that reads
 * from src and whose condition holds, runs its services (svcs; messages a service creates get
 * ids from ids) and calls fn. Returns how many routes took m (0: unrouted).
 */
size_t jn_router_route(const struct jn_cfg_route *routes, size_t n, size_t src, struct jn_msg *m,
                       const struct jn_service *svcs, struct jn_idgen *ids, jn_route_fn fn,
                       void *arg);

/* Why nothing from src was taken: appends "route 'x' when: <cond>" (joined by "; ") for each
 * route reading from src to why. Returns how many routes read from src. */
size_t jn_router_explain(const struct jn_cfg_route *routes, size_t n, size_t src,
                         struct jn_buf *why);

#endif
