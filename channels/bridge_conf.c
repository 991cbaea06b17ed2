/*
 * bridge channel: junction to junction over WebSocket (issue 19, part 2). An edge
 * (`direction: out`) dials the hub and sends its queue in envelopes, each removed from the
 * queue only when the hub says it has committed it; a hub (`direction: in`) takes many edges
 * and keeps each message's original id, with a duplicate window in the journal. docs/bridge.md.
 *
 * This file holds the option table, the cross-field check and the def; the sides are
 * channels/bridge_edge.c and bridge_hub.c, the wire envelope bridge_env.c, all on a link of
 * channels/ws_link.c. Modelled on the store-and-forward of mosquitto's bridges, without their
 * QoS-0-while-offline losses: the edge's queue is the journal's.
 *
 * Threads: the broker's loop.
 */
#include <stdio.h>
#include <string.h>

#include "bridge_int.h"
#include "jn_channel.h"

static const struct jn_opt bridge_opts[] = {
    /* hub */
    JN_OPT_STR("listen", "127.0.0.1:8443", JN_OPT_IN, struct bridge_conf, l.listen,
               "Hub: address and port to listen on for edges, ip:port (0.0.0.0:8443 for "
               "every address)."),
    JN_OPT_STR("path", "/bridge", JN_OPT_IN, struct bridge_conf, l.path,
               "Hub: the request path edges connect to; a handshake for another path is "
               "refused."),
    JN_OPT_INT("max_connections", "256", 1, 65536, JN_OPT_IN, struct bridge_conf,
               l.max_connections, "Hub: edges connected at once; more are refused at the "
               "handshake."),
    JN_OPT_SIZE("max_message", "16MiB", 1024, 1LL << 30, JN_OPT_IN, struct bridge_conf,
                l.max_message,
                "Hub: largest envelope; a larger one closes the link with 1009 and nothing "
                "of it is journaled."),
    JN_OPT_DURATION("ping_interval", "30s", 0, 3600000LL, 0, struct bridge_conf,
                    l.ping_interval,
                    "A link idle this long is pinged; one silent for two intervals is closed "
                    "(and, on the edge, made again). 0: no pings. Whole seconds."),
    JN_OPT_DURATION("dedup_window", "10m", 1000, 7 * 86400000LL, JN_OPT_IN, struct bridge_conf,
                    dedup_window,
                    "Hub: a message id seen within this long is acknowledged again without a "
                    "second copy (an edge resends what it had in flight when a link drops). "
                    "Kept in the journal (a restart remembers it), not in memory."),
    JN_OPT_SUBLIST("auth", jn_auth_opts, struct jn_auth_conf, JN_OPT_IN, struct bridge_conf,
                   l.auth,
                   "Hub: authentication of the edges' handshakes (docs/websocket.md#auth): "
                   "bearer (an edge's token:), basic, or mtls (client certificates); a link "
                   "none accepts is closed with 1008 before any envelope is journaled. Empty: "
                   "none."),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct bridge_conf, tls,
               "Hub: tls.cert and tls.key make the listener wss:// (tls.verify_peer: true "
               "requires edge certificates). Edge: the client context for a wss:// url (CA, "
               "client certificate, server_name, allowed_peers)."),
    /* edge */
    JN_OPT_STR("url", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct bridge_conf, url,
               "Edge: the hub, ws://host:port/bridge or wss://host:port/bridge."),
    JN_OPT_STR("token", NULL, JN_OPT_OUT | JN_OPT_SECRET, struct bridge_conf, token,
               "Edge: sent in each handshake as Authorization: Bearer <token> (the hub's "
               "auth: bearer). A secret: use ${file:/path} or ${ENV}; never logged."),
    JN_OPT_STR("node", NULL, JN_OPT_OUT, struct bridge_conf, node,
               "Edge: this node's name, sent with each message (the hub's bridge-origin "
               "header). Default: the host name."),
    JN_OPT_INT("window", "256", 1, 1024, JN_OPT_OUT, struct bridge_conf, window,
               "Edge: envelopes in flight (sent, not yet acknowledged by the hub) at most. "
               "It is the channel's concurrency; give one of the two."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT, struct bridge_conf, timeout,
                    "Edge: an envelope the hub has not acknowledged within this long is "
                    "retried (through the queue's retry). Waiting for the link to come back "
                    "does not count: while it is down nothing is sent and nothing times out."),
    JN_OPT_DURATION("reconnect_backoff", "100ms", 1, 3600000LL, JN_OPT_OUT, struct bridge_conf,
                    reconnect_backoff,
                    "Edge: the first reconnect waits up to this (full jitter); it doubles with "
                    "each failed attempt."),
    JN_OPT_DURATION("reconnect_max_backoff", "10s", 1, 86400000LL, JN_OPT_OUT,
                    struct bridge_conf, reconnect_max_backoff,
                    "Edge: the cap of the reconnect wait."),
    JN_OPT_END,
};

static int bridge_check(const void *vconf, unsigned dir, const struct jn_node *node,
                        struct jn_diag *d)
{
    const struct bridge_conf *c = vconf;
    const struct jn_node *n;

    if (dir == JN_DIR_IN) {
        return jn_ws__check_listener(&c->l, &c->tls, node, "bridge", "0.0.0.0:8443", d);
    }
    if (jn_node_get(node, "window") != NULL && jn_node_get(node, "concurrency") != NULL) {
        n = jn_node_get(node, "concurrency");
        jn_diag_add(d, &n->pos, "bridge: window and concurrency say the same (envelopes in "
                    "flight): give one of them");
        return 1;
    }
    if (c->node != NULL && (c->node[0] == '\0' || strlen(c->node) >= JN_BRIDGE_ORIGIN_MAX)) {
        n = jn_node_get(node, "node");
        jn_diag_add(d, n ? &n->pos : &node->pos, "bridge: node: must be 1..%d bytes",
                    JN_BRIDGE_ORIGIN_MAX - 1);
        return 1;
    }
    return jn_ws__check_client(c->url, c->reconnect_backoff, c->reconnect_max_backoff, &c->tls,
                               node, "bridge", "wss://hub.example:8443/bridge", d);
}

/* The edge's in-flight cap is its window: the queue hands it that many at once. */
static long long bridge_concurrency(const void *vconf)
{
    return ((const struct bridge_conf *)vconf)->window;
}

const struct jn_channel_def jn_channel_bridge = {
    .name = "bridge",
    .desc = "junction to junction over WebSocket: an edge sends its queue to a hub, each "
            "message removed only once the hub has committed it",
    .opts = bridge_opts,
    .conf_size = sizeof(struct bridge_conf),
    .check = bridge_check,
    .concurrency_of = bridge_concurrency,
    .in = &jn_bridge__hub,
    .out = &jn_bridge__edge,
};
