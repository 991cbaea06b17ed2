/* jn_utf8: the UTF-8 check (see jn_utf8.h). */
#include "jn_utf8.h"

#include <stdint.h>

int jn_utf8_valid(const void *pv, size_t n)
{
    const unsigned char *p = pv;
    size_t i = 0;

    while (i < n) {
        unsigned c = p[i];
        size_t k;
        uint32_t cp, min;

        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k) {
            return 0;
        }
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += k + 1;
    }
    return 1;
}
