/*
 * jn_admin: the operator's listener (issue 14): health, readiness, Prometheus metrics and the
 * JSON API under /api/v1/, all read from the broker's jn_stats view.
 *
 * It runs on the broker's loop: every answer is built from counters in memory and a few
 * journal statistics (one read transaction each), never a scan, so a request costs
 * microseconds and a slow client only fills its own socket buffer (evhttp writes without
 * blocking). Bound through broker/jn_listener like every listener (TCP_NODELAY, backlog, the
 * EMFILE pause); the TLS seam is the same as HTTP IN's (evhttp_set_bevcb, issue 16).
 *
 * Security: off loopback it does not start without a token; with a token, every request needs
 * `Authorization: Bearer <token>` (compared in constant time), else 401.
 *
 * Endpoints (docs/admin-api.md): GET /health, GET /ready, GET /metrics, GET /api/v1/status,
 * GET /api/v1/channels, POST /api/v1/channels/{name}/pause and /resume, GET /api/v1/queues,
 * GET /api/v1/routes, GET /api/v1/messages and /api/v1/messages/{id} (jn_admin_msg.c).
 * Errors are JSON {"error": "..."} with 400, 401, 404, 405, 409.
 *
 * Model: Prometheus's own exposition rules, Kubernetes' liveness/readiness split, and
 * Redis's INFO (a snapshot, not a registry). Loop thread only.
 */
#ifndef JN_ADMIN_H
#define JN_ADMIN_H

#include "jn_err.h"
#include "jn_tls.h"

struct jn_broker;
struct jn_admin;

struct jn_admin_conf {
    const char *listen;   /* host:port; NULL: the default 127.0.0.1:8081, optional (a taken
                           * port is a warning, not an error); "off": no listener */
    const char *token;    /* NULL or "": none (refused off loopback) */
    const char *version;  /* for status and junction_build_info */
    const struct jn_tls_conf *tls; /* NULL or TLS off: plain http; else https */
};

/*
 * Starts the listener on the broker's loop. Returns 0 with *out set (NULL when the admin is
 * off, or the default port was taken: logged), or JN_E* with err: a bad address, a bind
 * failure of an address that was asked for, a non-loopback address without a token.
 */
int jn_admin_start(struct jn_broker *b, const struct jn_admin_conf *conf, struct jn_admin **out,
                   struct jn_err *err);
/* The bound port (for tests with port 0). */
int jn_admin_port(const struct jn_admin *a);
/* Stops and frees (NULL: nothing). Before the broker is freed. */
void jn_admin_free(struct jn_admin *a);

#endif
