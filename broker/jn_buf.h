/*
 * jn_buf: a growable byte buffer, always NUL-terminated so it can be used as a string.
 * The buffer owns its bytes; jn_buf_steal() hands them to the caller.
 */
#ifndef JN_BUF_H
#define JN_BUF_H

#include <stddef.h>

struct jn_buf {
    char *p;
    size_t len;
    size_t cap;
};

#define JN_BUF_INIT {NULL, 0, 0}

/* Room for extra more bytes and the NUL. 0 or JN_ENOMEM. Inline when there is room already
 * (the usual case on the hot path); jn_buf__grow does the rest. */
int jn_buf__grow(struct jn_buf *b, size_t extra);
static inline int jn_buf_reserve(struct jn_buf *b, size_t extra)
{
    return b->cap > b->len && extra < b->cap - b->len ? 0 : jn_buf__grow(b, extra);
}
int jn_buf_append(struct jn_buf *b, const void *p, size_t n);
int jn_buf_puts(struct jn_buf *b, const char *s);
int jn_buf_putc(struct jn_buf *b, char c);
int jn_buf_printf(struct jn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns the bytes (NUL-terminated, never NULL unless out of memory); b is empty after. */
char *jn_buf_steal(struct jn_buf *b);
void jn_buf_reset(struct jn_buf *b); /* frees */

#endif
