/*
 * mllp channel: HL7 v2 over MLLP/TCP. IN is a listener that acknowledges each message once the
 * broker has it durable; OUT keeps connections open to one peer and waits for its ACK.
 *
 * This file holds the option table, the cross-field check, the def and the helpers both sides
 * use. The sides are channels/mllp_in.c (the listener and its connections), mllp_in_msg.c
 * (each frame as a message: the duplicate window, the ingest, the ACK) and mllp_out.c (the
 * sender); what they share is in mllp_int.h.
 *
 * Modelled on what Mirth Connect's LLP listener and sender do, on libevent bufferevents. The
 * wire framing, MSH reading and ACK building are in mllp_proto.c (no sockets, fuzzed alone).
 *
 * Threads: everything runs on the broker's loop.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/util.h>
#include <sys/socket.h>

#include "jn_channel.h"
#include "mllp_int.h"

static const char *const mllp_ack_names[] = {"commit", "delivered", NULL};
static const char *const mllp_outcome_names[] = {"delivered", "retry", "reject", NULL};

static const struct jn_opt mllp_opts[] = {
    JN_OPT_STR("listen", "127.0.0.1:2575", JN_OPT_IN, struct mllp_conf, listen,
               "Address and port to listen on, ip:port ([::1]:2575 for IPv6)."),
    JN_OPT_SIZE("max_message", "1MiB", 64, 1LL << 30, JN_OPT_IN, struct mllp_conf, max_message,
                "Largest message accepted; a larger frame is read to its end and answered AR."),
    JN_OPT_DURATION("idle_timeout", "5m", 100, 86400000LL, JN_OPT_IN | JN_OPT_RELOADABLE,
                    struct mllp_conf, idle_timeout,
                    "A connection silent this long is closed; a frame left unfinished this "
                    "long is answered AR first."),
    JN_OPT_ENUM("ack", "commit", mllp_ack_names, JN_OPT_IN, struct mllp_conf, ack,
                "commit: ACK once the message is durable. delivered: ACK with the route's "
                "outcome: AA once delivered everywhere (or the downstream MLLP ACK passed "
                "back), AR when dead-lettered, AE after delivered_timeout (docs/hl7.md)."),
    JN_OPT_DURATION("delivered_timeout", "30s", 1, 86400000LL, JN_OPT_IN | JN_OPT_RELOADABLE,
                    struct mllp_conf, delivered_timeout,
                    "ack: delivered: when the outcome has not come this long after the message "
                    "is durable, answer AE \"not delivered yet\"; it stays queued and is "
                    "delivered later."),
    JN_OPT_BOOL("strict", "false", JN_OPT_IN, struct mllp_conf, strict,
                "Refuse (AR) segments ending in LF or CRLF and <FS> without <CR>; "
                "default: accept them."),
    JN_OPT_DURATION("duplicate_window", "10m", 0, 7 * 86400000LL, JN_OPT_IN, struct mllp_conf,
                    dup_window,
                    "A message whose MSH-10 (with MSH-3, MSH-4) was accepted this recently is "
                    "ACKed again and not routed twice; 0 turns it off. Kept in the journal, "
                    "so it holds across restarts."),
    JN_OPT_INT("duplicate_max", "100000", 1, 10000000, JN_OPT_IN, struct mllp_conf, dup_max,
               "Most control ids remembered for duplicate_window; the oldest go first."),
    JN_OPT_INT("max_connections", "256", 1, 65536, JN_OPT_IN, struct mllp_conf,
               max_connections, "Connections at once; more are closed at accept with a log line. "
               "net.max_connections, when set, is the same setting."),
    JN_OPT_SUB("net", jn_net_opts, struct jn_net_conf, JN_OPT_IN, struct mllp_conf, net,
               "Listener options shared with the other listening channels (docs/channels.md)."),
    JN_OPT_SUB("tls", jn_tls_opts, struct jn_tls_conf, 0, struct mllp_conf, tls,
               "MLLP over TLS (docs/security.md). IN: tls.cert and tls.key make the listener "
               "TLS; tls.verify_peer: true requires client certificates. OUT: tls.enabled (or "
               "a tls.cert) connects with TLS and checks the peer's certificate."),
    JN_OPT_STR("connect", NULL, JN_OPT_OUT | JN_OPT_REQUIRED, struct mllp_conf, connect,
               "The peer to send to, host:port."),
    JN_OPT_DURATION("timeout", "30s", 1, 3600000LL, JN_OPT_OUT | JN_OPT_RELOADABLE,
                    struct mllp_conf, ack_timeout,
                    "How long to wait for the ACK; then the connection is closed and the "
                    "message retried.", .alias = "ack_timeout"),
    JN_OPT_DURATION("connect_timeout", "10s", 1, 3600000LL, JN_OPT_OUT | JN_OPT_RELOADABLE,
                    struct mllp_conf,
                    connect_timeout, "How long a connection attempt may take (then: retry)."),
    JN_OPT_ENUM("on_error", "retry", mllp_outcome_names, JN_OPT_OUT | JN_OPT_RELOADABLE,
                struct mllp_conf, on_error,
                "What an AE or CE answer means: delivered, retry or reject (dead-letter)."),
    JN_OPT_ENUM("on_reject", "reject", mllp_outcome_names, JN_OPT_OUT | JN_OPT_RELOADABLE,
                struct mllp_conf, on_reject,
                "What an AR or CR answer means: delivered, retry or reject (dead-letter)."),
    JN_OPT_END,
};

/* ---- helpers ---- */

struct timeval jn_mllp__tv_ms(long long ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* Printable text of up to max bytes of peer data, for log lines. */
void jn_mllp__shown(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        }
    }
    if (o + 4 < cap && n > 0 && o >= cap - 7) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* ---- checks ---- */

static int mllp_check(const void *vconf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct mllp_conf *c = vconf;
    char host[256];
    int port;
    const struct jn_node *n;

    if (dir == JN_DIR_IN) {
        int errs = 0;
        struct sockaddr_storage ss;
        int sl = sizeof(ss);
        n = jn_node_get(node, "listen");
        if (c->listen == NULL ||
            evutil_parse_sockaddr_port(c->listen, (struct sockaddr *)&ss, &sl) != 0 ||
            jn_split_hostport(c->listen, host, sizeof(host), &port, 1) != 0) {
            jn_diag_add(d, n ? &n->pos : &node->pos, "mllp: listen: '%s' is not ip:port, "
                        "expected e.g. 127.0.0.1:2575", c->listen ? c->listen : "");
            errs++;
        }
        return errs + jn_tls_check(&c->tls, JN_TLS_SERVER, jn_tls_on(&c->tls), node, "tls", "mllp", d);
    }
    if (jn_tls_check(&c->tls, JN_TLS_CLIENT, jn_tls_on(&c->tls), node, "tls", "mllp", d) != 0) {
        return 1;
    }
    if (c->connect == NULL) {
        jn_diag_add(d, &node->pos, "mllp: missing required option 'connect' for direction: out "
                    "(e.g. connect: 127.0.0.1:2576)");
        return 1;
    }
    if (jn_split_hostport(c->connect, host, sizeof(host), &port, 1) != 0) {
        n = jn_node_get(node, "connect");
        jn_diag_add(d, n ? &n->pos : &node->pos, "mllp: connect: '%s' is not host:port, "
                    "expected e.g. 127.0.0.1:2576", c->connect);
        return 1;
    }
    return 0;
}

/* ---- the def ---- */

const struct jn_channel_def jn_channel_mllp = {
    .name = "mllp",
    .desc = "HL7 v2 over MLLP/TCP: IN listens and ACKs once durable, OUT sends and waits for "
            "the ACK",
    .opts = mllp_opts,
    .conf_size = sizeof(struct mllp_conf),
    .check = mllp_check,
    .in = &jn_mllp__in,
    .out = &jn_mllp__out,
};
