/*
 * libFuzzer target for file OUT's HL7 batch helpers (channels/file_name.c): any bytes as a
 * payload (jn_file__hl7_norm, jn_file__hl7_clean) and as a leftover batch file
 * (jn_file__hl7_scan, fed in pieces whose size comes from the first byte). A normalized record
 * is at most len + 1 bytes, ends in CR and holds no LF, and is clean; a clean payload
 * normalizes to itself; the scan's count and BTS offset do not depend on how the bytes were cut.
 *
 *   ./build-fuzz/fuzz_file_hl7 -max_total_time=60 tests/fuzz/corpus/file_hl7
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "file_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_file_hl7_scan whole = JN_FILE_HL7_SCAN_INIT, cut = JN_FILE_HL7_SCAN_INIT;
    unsigned char *out = malloc(size + 1);
    size_t n, step;

    if (out == NULL) {
        return 0;
    }
    n = jn_file__hl7_norm(data, size, out);
    if (n > size + 1 || n == 0 || out[n - 1] != '\r' || memchr(out, '\n', n) != NULL ||
        !jn_file__hl7_clean(out, n)) {
        abort();
    }
    if (jn_file__hl7_clean(data, size) && (n != size || memcmp(out, data, n) != 0)) {
        abort();
    }
    free(out);

    jn_file__hl7_scan(&whole, data, size, 0);
    step = size > 0 ? (size_t)data[0] % 17 + 1 : 1;
    for (size_t off = 0; off < size; off += step) {
        size_t len = size - off < step ? size - off : step;
        jn_file__hl7_scan(&cut, data + off, len, off);
    }
    if (whole.msgs != cut.msgs || whole.bts != cut.bts ||
        (whole.bts >= 0 && ((size_t)whole.bts + 3 > size ||
                            memcmp(data + whole.bts, "BTS", 3) != 0))) {
        abort();
    }
    return 0;
}
