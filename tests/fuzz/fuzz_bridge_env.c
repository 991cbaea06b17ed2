/*
 * libFuzzer target for the bridge's envelope decoders (channels/bridge_env.c): a hub decodes
 * what any edge that passed auth sends, an edge decodes the hub's answers. Any bytes must
 * decode to a message or to JN_EPROTO with a reason; a decoded message must encode back (with
 * its origin) to an envelope that decodes to the same id, origin, time, headers and payload.
 * The answer decoder must only ever hand over well-formed ids. The status decoder (the
 * edge's queue depth for the hub's per-edge row) must say 0 with a non-empty origin, 1 (no
 * status) or JN_EPROTO with a reason, and a decoded status must encode back to the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bridge_int.h"

static void on_id(void *arg, const char *id)
{
    (void)arg;
    if (!jn_bridge__id_ok(id, strlen(id))) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bridge_env e, e2;
    struct bridge_status st, st2;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err;
    char reason[200];
    int nack, rc;

    (void)jn_bridge__ans_decode(data, size, &nack, reason, on_id, NULL);
    jn_err_clear(&err);
    rc = jn_bridge__status_decode(data, size, &st, &err);
    if (rc == 0) {
        if (st.origin[0] == '\0' || jn_bridge__status_encode(st.origin, st.queued, st.in_flight,
                                                               &b) != 0 ||
            jn_bridge__status_decode(b.p, b.len, &st2, &err) != 0 ||
            strcmp(st.origin, st2.origin) != 0 || st.queued != st2.queued ||
            st.in_flight != st2.in_flight) {
            __builtin_trap();
        }
    } else if (rc != 1 && (rc != JN_EPROTO || err.msg[0] == '\0')) {
        __builtin_trap();
    }
    jn_buf_reset(&b);
    jn_err_clear(&err);
    rc = jn_bridge__env_decode(data, size, "hub", &e, &err);
    if (rc != 0) {
        if (e.msg != NULL || err.msg[0] == '\0') {
            __builtin_trap();
        }
        return 0;
    }
    if (jn_bridge__env_encode(e.msg, e.origin, &b) != 0) {
        __builtin_trap();
    }
    if (jn_bridge__env_decode(b.p, b.len, "hub", &e2, &err) != 0) {
        __builtin_trap();
    }
    if (strcmp(e.msg->id, e2.msg->id) != 0 || strcmp(e.origin, e2.origin) != 0 ||
        e.msg->len != e2.msg->len || e.msg->nhdrs != e2.msg->nhdrs ||
        memcmp(e.msg->payload, e2.msg->payload, e.msg->len) != 0) {
        __builtin_trap();
    }
    jn_buf_reset(&b);
    jn_msg_unref(&e.msg);
    jn_msg_unref(&e2.msg);
    return 0;
}
