/*
 * libFuzzer target for the journal's record decoders (jn_store.h): queue, dead-letter, log,
 * dedup and kept records are read back from disk, outside input (a torn write, a bad disk, an
 * older or newer build). Any bytes must decode or give JN_EPROTO with a reason, and a kept
 * record that decodes must encode back to one that decodes to the same message.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_journal.h"
#include "jn_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_qrec q;
    struct jn_logrec l;
    struct jn_dedup_rec d;
    struct jn_keptrec k, k2;
    struct jn_buf answer = JN_BUF_INIT;
    struct jn_err err;

    jn_err_clear(&err);
    if (jn_store_queue_decode(data, size, &q, &err) == 0) {
        jn_qrec_clear(&q);
    } else if (q.msg != NULL || err.msg[0] == '\0') {
        __builtin_trap();
    }
    jn_err_clear(&err);
    if (jn_store_dlq_decode(data, size, &q, &err) == 0) {
        jn_qrec_clear(&q);
    } else if (q.msg != NULL || err.msg[0] == '\0') {
        __builtin_trap();
    }
    jn_err_clear(&err);
    if (jn_store_log_decode(data, size, &l, &err) != 0 && err.msg[0] == '\0') {
        __builtin_trap();
    }
    jn_err_clear(&err);
    if (jn_store_dedup_decode(data, size, &d, &answer, &err) != 0 && err.msg[0] == '\0') {
        __builtin_trap();
    }
    jn_buf_reset(&answer);
    jn_err_clear(&err);
    if (jn_store_kept_decode(data, size, &k, &err) != 0) {
        if (k.msg != NULL || err.msg[0] == '\0') {
            __builtin_trap();
        }
        return 0;
    }
    if (k.keep == JN_KEEP_ALL) {
        /* Written again (as the routing writes it) and read back: the same message. */
        struct jn_jtxn *t = jn_jtxn_new();
        struct jn_buf env = JN_BUF_INIT;
        if (t != NULL && jn_msg_encode(k.msg, &env) == 0 &&
            jn_store_kept_put(t, 1, k.msg, &env, k.keep, k.routes, NULL, 0) != 0) {
            __builtin_trap();
        }
        jn_buf_reset(&env);
        jn_jtxn_free(t);
        if (jn_msg_encode(k.msg, &env) != 0 || jn_msg_decode(env.p, env.len, &k2.msg, &err) != 0 ||
            k2.msg->len != k.msg->len || memcmp(k2.msg->payload, k.msg->payload, k.msg->len) != 0) {
            __builtin_trap();
        }
        jn_msg_unref(&k2.msg);
        jn_buf_reset(&env);
    }
    jn_keptrec_clear(&k);
    return 0;
}
