/*
 * libFuzzer target for the envelope decoder: records read back from disk are outside input
 * (a torn write, a bad disk, an older or newer build). Any bytes must decode to a message or
 * to JN_EPROTO with a reason; a decoded message must encode back to a record that decodes to
 * the same message.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_msg *m = NULL, *m2 = NULL;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err;
    int rc;

    jn_err_clear(&err);
    rc = jn_msg_decode(data, size, &m, &err);
    if (rc != 0) {
        if (m != NULL || err.msg[0] == '\0') {
            __builtin_trap();
        }
        return 0;
    }
    if (jn_msg_encode(m, &b) != 0 || jn_msg_decode(b.p, b.len, &m2, &err) != 0) {
        __builtin_trap();
    }
    if (strcmp(m->id, m2->id) != 0 || m->len != m2->len || m->nhdrs != m2->nhdrs ||
        memcmp(m->payload, m2->payload, m->len) != 0 || m->recv_us != m2->recv_us) {
        __builtin_trap();
    }
    jn_buf_reset(&b);
    jn_msg_unref(&m);
    jn_msg_unref(&m2);
    return 0;
}
