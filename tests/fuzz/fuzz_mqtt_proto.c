/*
 * libFuzzer target for the MQTT codec (channels/mqtt_proto.h): any bytes as a stream a peer
 * sends. The first byte picks the version (bit 0: 3.1.1 or 5.0) and a max_packet_size; the
 * framer cuts the rest into packets, each of which is decoded. What decodes is re-encoded, and
 * that must decode again to an equal packet and re-encode to the very same bytes (the encoder
 * writes one canonical form). A refusal must carry a reason code and a sentence. The framer's
 * answers must stay within the buffer and the limit.
 *
 *   ./build-fuzz/fuzz_mqtt_proto -max_total_time=60 tests/fuzz/corpus/mqtt_proto
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "mqtt_proto.h"

static void one(const uint8_t *d, size_t n, int version)
{
    struct jn_mqtt_packet p, q;
    struct jn_mqtt_err e;
    struct jn_buf a = JN_BUF_INIT, b = JN_BUF_INIT;
    int rc = jn_mqtt_decode(d, n, version, &p, &e);

    if (rc != 0) {
        if (rc != JN_EPROTO || e.rc < 0x80 || e.err.msg[0] == '\0') {
            abort();
        }
        return;
    }
    if (p.type == JN_MQTT_CONNECT ? (p.version != 4 && p.version != 5) : p.version != version) {
        abort();
    }
    if (jn_mqtt_encode(&p, &a, &e) != 0) {
        abort(); /* what decodes, encodes */
    }
    if (jn_mqtt_decode(a.p, a.len, p.version, &q, &e) != 0 || !jn_mqtt_packet_equal(&p, &q)) {
        abort();
    }
    if (jn_mqtt_encode(&q, &b, &e) != 0 || a.len != b.len || memcmp(a.p, b.p, a.len) != 0) {
        abort();
    }
    /* The framer sees the re-encoded packet whole. */
    {
        size_t m = 0;
        if (jn_mqtt_frame(a.p, a.len, 0, &m, &e) != JN_MQTT_FRAME_PACKET || m != a.len) {
            abort();
        }
    }
    jn_buf_reset(&a);
    jn_buf_reset(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {0, 64, 1024, 65536};
    size_t max, off = 0;
    int version;

    if (size == 0) {
        return 0;
    }
    version = (data[0] & 1) ? JN_MQTT_V5 : JN_MQTT_V311;
    max = limits[(data[0] >> 1) & 3];
    data++;
    size--;
    while (off < size) {
        struct jn_mqtt_err e;
        size_t n = 0;
        enum jn_mqtt_frame_res fr = jn_mqtt_frame(data + off, size - off, max, &n, &e);
        if (fr == JN_MQTT_FRAME_BAD) {
            if (e.rc != JN_MQTT_RC_MALFORMED && e.rc != JN_MQTT_RC_TOO_LARGE) {
                abort();
            }
            break;
        }
        if (fr == JN_MQTT_FRAME_MORE) {
            if (n <= size - off) {
                abort();
            }
            /* Whatever is left, decoded alone, is refused as cut short. */
            struct jn_mqtt_packet p;
            if (jn_mqtt_decode(data + off, size - off, version, &p, &e) != JN_EPROTO ||
                e.rc != JN_MQTT_RC_MALFORMED) {
                abort();
            }
            break;
        }
        if (n == 0 || n > size - off || (max && n > max)) {
            abort();
        }
        one(data + off, n, version);
        off += n;
    }
    return 0;
}
