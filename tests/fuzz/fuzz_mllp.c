/*
 * libFuzzer target for the MLLP framer and ACK code (channels/mllp_proto.h): any bytes as what
 * a peer sends, fed in pieces whose size comes from the first byte. Every event's data stays
 * within max_message; every frame or garbage run gets its MSH read and, when a control id is
 * there, an ACK built, which must fit in JN_MLLP_ACK_MAX and carry no frame byte inside; every
 * frame is also read as an ACK (the OUT side). The HL7 parse of each frame runs too.
 *
 *   ./build-fuzz/fuzz_mllp -max_total_time=60 tests/fuzz/corpus/mllp
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_mem.h"
#include "mllp_proto.h"

#define MAX 512

static void on_event(const struct jn_mllp_event *ev)
{
    struct jn_mllp_msh m;
    struct jn_mllp_ack a;
    struct jn_hl7_msg *h = NULL;

    if (ev->len > MAX && ev->kind != JN_MLLP_EV_GARBAGE) {
        abort();
    }
    if (ev->kind == JN_MLLP_EV_GARBAGE && (ev->len == 0 || ev->len > JN_MLLP_GARBAGE_MAX)) {
        abort();
    }
    if (jn_mllp_msh_read(ev->data, ev->len, &m)) {
        struct jn_buf b = JN_BUF_INIT;
        static const char codes[] = "AER";
        for (int i = 0; i < 3; i++) {
            b.len = 0;
            if (jn_mllp_ack_build(&m, codes[i], 102, "reason | with ^ delimiters\r\x0b",
                                  "01J9ZQ4X5YB7M2K8N3P6", "20240101000000+0000", &b) != 0) {
                continue;
            }
            if (b.len > JN_MLLP_ACK_MAX || b.p[0] != JN_MLLP_VT ||
                memchr(b.p + 1, JN_MLLP_VT, b.len - 1) != NULL ||
                memchr(b.p, JN_MLLP_FS, b.len - 2) != NULL) {
                abort();
            }
            /* What we build, we can read back. */
            if (jn_mllp_ack_read(b.p + 1, b.len - 3, &a, NULL) != 0 ||
                a.code[1] != codes[i]) {
                abort();
            }
        }
        jn_buf_reset(&b);
    }
    jn_mllp_ack_read(ev->data, ev->len, &a, NULL);
    if (jn_hl7_parse(ev->data, ev->len, 0, &h, NULL) == 0) {
        jn_hl7_free(h);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_mllp_framer f;
    struct jn_mllp_event ev;
    size_t step, off;

    if (size == 0) {
        return 0;
    }
    step = (size_t)(data[0] % 16) + 1;
    data++;
    size--;
    jn_mllp_framer_init(&f, MAX, (step & 1) ? JN_MLLP_STRICT : 0);
    off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step, done = 0;
        while (done < n) {
            size_t used = 0;
            if (jn_mllp_feed(&f, data + off + done, n - done, &used, &ev) != 0) {
                abort();
            }
            if (used > n - done) {
                abort();
            }
            done += used;
            if (ev.kind != JN_MLLP_EV_NONE) {
                on_event(&ev);
            } else if (done != n) {
                abort(); /* no event: everything was consumed */
            }
        }
        off += n;
    }
    jn_mllp_framer_end(&f, &ev);
    if (ev.kind != JN_MLLP_EV_NONE) {
        on_event(&ev);
    }
    jn_mllp_framer_free(&f);
    return 0;
}
