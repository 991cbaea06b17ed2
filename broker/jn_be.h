/*
 * jn_be: big-endian 8-byte integers, the journal's key and counter encoding (LMDB compares
 * keys as bytes, so big-endian numbers sort as numbers). Model: LMDB's own MDB_INTEGERKEY
 * advice, done portably.
 */
#ifndef JN_BE_H
#define JN_BE_H

#include <stdint.h>

/* Big-endian 8-byte keys sort as numbers. */
static inline void jn_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static inline uint64_t jn_get_be64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

#endif
