/* jn_mem: allocation wrappers with failure injection for tests (see jn_mem.h). */
#include "jn_mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Process-wide test knob: -1 = off. Allowed global state: it lives in broker/. */
static atomic_long fail_countdown = -1;
static atomic_long failed_count = 0;

void jn_mem_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
    atomic_store(&failed_count, 0);
}

long jn_mem_failed(void)
{
    return atomic_load(&failed_count);
}

static int should_fail(void)
{
    long c = atomic_load(&fail_countdown);
    while (c >= 0) {
        if (c == 0) {
            atomic_fetch_add(&failed_count, 1);
            return 1;
        }
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) {
            return 0;
        }
    }
    return 0;
}

void *jn_malloc(size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(n ? n : 1);
}

void *jn_calloc(size_t n, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return calloc(n ? n : 1, size ? size : 1);
}

void *jn_realloc(void *p, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, n ? n : 1);
}

void jn_free(void *p)
{
    free(p);
}

char *jn_strndup(const char *s, size_t n)
{
    char *d;

    if (s == NULL) {
        return NULL;
    }
    d = jn_malloc(n + 1);
    if (d == NULL) {
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *jn_strdup(const char *s)
{
    return s ? jn_strndup(s, strlen(s)) : NULL;
}
