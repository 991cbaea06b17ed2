/*
 * libFuzzer target for the HTTP framing guard (broker/jn_httpframe.c): the input's first two
 * bytes choose the limits and how the rest is cut into reads; the pieces are fed one by one
 * through jn_httpframe_filter, as a connection's reads would be. Checked: the guard never
 * passes more bytes than it was given plus the one refusal it may add, and after a refusal
 * it passes nothing more.
 */
#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "jn_httpframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_httpframe f;
    struct evbuffer *src, *dst;
    size_t fed = 0, passed = 0, cut, at_refusal = 0;
    int refused = 0;

    if (size < 2) {
        return 0;
    }
    jn_httpframe_init(&f, 16u + (data[0] & 0x3f) * 64u, 64u + (data[0] >> 6) * 256u);
    cut = 1u + data[1];
    data += 2;
    size -= 2;
    src = evbuffer_new();
    dst = evbuffer_new();
    if (src == NULL || dst == NULL) {
        abort();
    }
    while (fed < size) {
        size_t n = size - fed < cut ? size - fed : cut;
        evbuffer_add(src, data + fed, n);
        fed += n;
        jn_httpframe_filter(src, dst, -1, BEV_NORMAL, &f);
        passed += evbuffer_get_length(dst);
        evbuffer_drain(dst, evbuffer_get_length(dst));
        if (f.refuse_at != 0 && !refused) {
            refused = 1;
            at_refusal = passed;
        } else if (refused && passed != at_refusal) {
            abort(); /* something passed after the refusal */
        }
        if (passed > fed + 512) {
            abort(); /* only the refusal (under 512 bytes) is ever added */
        }
        cut = cut * 7 % 251 + 1;
    }
    evbuffer_free(src);
    evbuffer_free(dst);
    return 0;
}
