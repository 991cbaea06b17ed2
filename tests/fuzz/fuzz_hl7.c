/*
 * libFuzzer target for the HL7 v2 codec (adapters/hl7.h): any bytes as a message. Whatever
 * parses must serialize back byte for byte, convert to JSON and back to the same bytes, split
 * into messages that lie inside it; path lookups must stay inside the buffer; and decoding what
 * the encoder wrote must give the text back. Modelled on Fluent Bit's tests/internal/fuzzers.
 *
 *   ./build-fuzz/fuzz_hl7 -max_total_time=60 tests/fuzz/corpus/hl7
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_mem.h"

static const char *const paths[] = {
    "MSH-9.1", "MSH-10", "MSH-1", "MSH-2", "PID-3[2].1", "OBX[3]-5", "PID-5.1.2", "ZPI-1",
    "BHS-2", "FHS-1", "EVN-1[2]", "MSH[2]-12.1.1",
};

static void check_roundtrip(const uint8_t *data, size_t size, unsigned flags)
{
    struct jn_hl7_msg *m = NULL;
    struct jn_buf out = JN_BUF_INIT;
    struct jn_hl7_span *parts = NULL;
    size_t n = 0;
    json_t *j;

    if (jn_hl7_parse(data, size, flags, &m, NULL) != 0) {
        return;
    }
    if (jn_hl7_write(m, &out) != 0 || out.len != size || memcmp(out.p, data, size) != 0) {
        abort(); /* an unchanged message serializes back byte for byte */
    }
    jn_buf_reset(&out);
    j = jn_hl7_to_json(m);
    if (j == NULL) {
        abort();
    }
    if (jn_hl7_from_json(j, &out, NULL) != 0 || out.len != size ||
        memcmp(out.p, data, size) != 0) {
        abort(); /* hl7 -> json -> hl7 is exact */
    }
    json_decref(j);
    jn_buf_reset(&out);
    /* The named shape loses order and trailing empties, but what it writes is HL7. */
    j = jn_hl7_to_json_named(m);
    if (j == NULL || jn_hl7_from_json(j, &out, NULL) != 0 ||
        jn_hl7_check(out.p, out.len, 0, NULL) != 0) {
        abort();
    }
    json_decref(j);
    jn_buf_reset(&out);
    if (jn_hl7_split(m, &parts, &n) != 0) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (parts[i].p < m->buf || parts[i].p + parts[i].len > m->buf + m->len ||
            memcmp(parts[i].p, "MSH", 3) != 0) {
            abort();
        }
    }
    jn_free(parts);
    jn_hl7_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_hl7_delims d = {'|', '^', '~', '\\', '&', '#'};
    struct jn_buf enc = JN_BUF_INIT;
    char *dec;

    check_roundtrip(data, size, 0);
    check_roundtrip(data, size, JN_HL7_STRICT);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct jn_hl7_path p;
        struct jn_hl7_span s;
        if (jn_hl7_path_parse(paths[i], strlen(paths[i]), &p, NULL) != 0) {
            abort();
        }
        if (jn_hl7_lookup(data, size, &p, &s) == 1 &&
            ((const uint8_t *)s.p < data || (const uint8_t *)s.p + s.len > data + size)) {
            abort();
        }
    }
    /* The input as a path, too. */
    {
        struct jn_hl7_path p;
        struct jn_hl7_span s;
        if (jn_hl7_path_parse((const char *)data, size < 40 ? size : 40, &p, NULL) == 0) {
            jn_hl7_lookup(data, size, &p, &s);
        }
    }
    /* unescape(escape(t)) == t for any text t. */
    if (jn_hl7_delims_read(data, size, &d, NULL) != 0) {
        d.trunc = size % 2 ? '#' : 0;
    }
    if (jn_hl7_escape(&d, (const char *)data, size, &enc) == 0) {
        dec = jn_malloc(enc.len + 1);
        if (dec) {
            size_t n = jn_hl7_unescape(&d, enc.p ? enc.p : "", enc.len, dec, enc.len + 1);
            if (n != size || memcmp(dec, data, size) != 0) {
                abort();
            }
            jn_free(dec);
        }
    }
    jn_buf_reset(&enc);
    /* And decoding raw input never writes past the buffer nor grows the text. */
    dec = jn_malloc(size + 1);
    if (dec) {
        if (jn_hl7_unescape(&d, (const char *)data, size, dec, size + 1) > size) {
            abort();
        }
        jn_free(dec);
    }
    return 0;
}
