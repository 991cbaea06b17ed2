/*
 * bridge_int.h: what channels/bridge_conf.c (options, check, the def), bridge_env.c (the wire
 * envelope), bridge_edge.c (OUT: dials the hub) and bridge_hub.c (IN: takes edges) share.
 * Both sides run over a WebSocket link (channels/ws_link.c) as the websocket channel's do: the
 * edge is a ws_side.c client, the hub a ws_side.c server (ws_int.h). docs/bridge.md.
 *
 * Threads: everything here runs on the broker's loop; the envelope codec is pure and
 * thread-safe.
 */
#ifndef JN_BRIDGE_INT_H
#define JN_BRIDGE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_tls.h"
#include "ws_int.h"

struct bridge_conf {
    /* hub (IN); l.ping_interval is the edge's too */
    struct ws_listen_conf l;
    long long dedup_window;      /* ms */
    /* both */
    struct jn_tls_conf tls;
    /* edge (OUT) */
    char *url;
    char *token;                 /* secret: sent as Authorization: Bearer <token> */
    char *node;                  /* the origin name sent with each message; NULL: hostname */
    long long window;            /* envelopes in flight (the queue's concurrency) */
    long long timeout;           /* ms */
    long long reconnect_backoff; /* ms */
    long long reconnect_max_backoff;
};

extern const struct jn_in_def jn_bridge__hub;
extern const struct jn_out_def jn_bridge__edge;

/*
 * The envelope (msgpack, written and read with msgpack-c), version 1. One per binary frame:
 *   edge -> hub  [1, "m", id:str, origin:str, first_received_us:int,
 *                 [[name:str, value:str], ...], payload:bin]
 *                [1, "s", origin:str, queued:uint, in_flight:uint]
 *                                                       the edge's status: at link up and
 *                                                       every second (the hub's per-edge row)
 *   hub -> edge  [1, "a", [id:str, ...]]                 committed (or already held): done
 *                [1, "n", [id:str, ...], reason:str]    refused for now: retry later
 * The status is newer than the rest of version 1: a hub that predates it closes the link with
 * 1002 at the first one, and the edge then sends no more to it (docs/bridge.md#compatibility).
 * A reader refuses another version (the link is then closed with 1002): a newer node keeps
 * talking version 1 to older ones until both are upgraded (docs/bridge.md#compatibility).
 */
#define JN_BRIDGE_VERSION 1
#define JN_BRIDGE_ORIGIN_MAX 256

/* The envelope of m from origin into out (emptied first). 0 or JN_ENOMEM. */
int jn_bridge__env_encode(const struct jn_msg *m, const char *origin, struct jn_buf *out);

/* What one decoded envelope holds: a new message (id set, channel `channel`, recv_us now),
 * its origin (NUL-terminated) and first-received time. */
struct bridge_env {
    struct jn_msg *msg;
    char origin[JN_BRIDGE_ORIGIN_MAX];
    int64_t first_us;
};
/* Decodes one edge -> hub envelope. 0 with out->msg owned by the caller, or JN_EPROTO (the
 * reason in err) / JN_ENOMEM. Never trusts the input: any bytes are safe. */
int jn_bridge__env_decode(const void *p, size_t len, const char *channel,
                          struct bridge_env *out, struct jn_err *err);

/* The hub's answer for n ids (each JN_ID_LEN bytes, contiguous) into out: an ack (reason NULL)
 * or a nack. 0 or JN_ENOMEM. */
int jn_bridge__ans_encode(const char *ids, size_t n, const char *reason, struct jn_buf *out);
/* Decodes a hub -> edge answer: calls fn(arg, id) for each id (NUL-terminated, JN_ID_LEN
 * long); *nack is set (and reason filled, 200 bytes) for a nack. 0, or JN_EPROTO. */
int jn_bridge__ans_decode(const void *p, size_t len, int *nack, char reason[200],
                          void (*fn)(void *arg, const char *id), void *arg);

/* The edge's status (origin, its queue's depth, envelopes in flight) into out. 0 or
 * JN_ENOMEM. */
int jn_bridge__status_encode(const char *origin, uint64_t queued, uint64_t in_flight,
                             struct jn_buf *out);
struct bridge_status {
    char origin[JN_BRIDGE_ORIGIN_MAX];
    uint64_t queued, in_flight;
};
/* An edge -> hub frame that is a status: 0 with out filled; 1 when it is no status (decode it
 * as an envelope, whose decoder says what is wrong with it); JN_EPROTO (why in err) for a
 * status that is malformed. Any bytes are safe. */
int jn_bridge__status_decode(const void *p, size_t len, struct bridge_status *out,
                             struct jn_err *err);

/* 1 when s (n bytes) is a well-formed message id (26 Crockford base32, the time in range). */
int jn_bridge__id_ok(const char *s, size_t n);

#endif
