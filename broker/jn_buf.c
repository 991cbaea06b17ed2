/* jn_buf: growable byte buffer (see jn_buf.h). */
#include "jn_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "jn_err.h"
#include "jn_mem.h"

int jn_buf__grow(struct jn_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap;
    char *p;

    if (need < b->len) {
        return JN_ENOMEM;
    }
    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    p = jn_realloc(b->p, cap);
    if (p == NULL) {
        return JN_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int jn_buf_append(struct jn_buf *b, const void *p, size_t n)
{
    if (jn_buf_reserve(b, n) != 0) {
        return JN_ENOMEM;
    }
    if (n) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int jn_buf_puts(struct jn_buf *b, const char *s)
{
    return jn_buf_append(b, s, strlen(s));
}

int jn_buf_putc(struct jn_buf *b, char c)
{
    return jn_buf_append(b, &c, 1);
}

int jn_buf_printf(struct jn_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || jn_buf_reserve(b, (size_t)n) != 0) {
        return JN_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *jn_buf_steal(struct jn_buf *b)
{
    char *p;

    if (b->p == NULL) {
        if (jn_buf_reserve(b, 0) != 0) {
            return NULL;
        }
        b->p[0] = '\0'; /* an empty buffer is the empty string */
    }
    p = b->p;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void jn_buf_reset(struct jn_buf *b)
{
    jn_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
