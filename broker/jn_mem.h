/*
 * jn_mem: the one allocator every part of junction goes through.
 *
 * Modelled on Fluent Bit's flb_malloc and Mosquitto's mosquitto__malloc: a thin wrapper over
 * the libc allocator, so tests can make the Nth allocation fail and check that each failure
 * becomes a clean JN_ENOMEM instead of a crash or a leak.
 */
#ifndef JN_MEM_H
#define JN_MEM_H

#include <stddef.h>

void *jn_malloc(size_t n);
void *jn_calloc(size_t n, size_t size);
void *jn_realloc(void *p, size_t n);
void jn_free(void *p);          /* NULL is a no-op */
char *jn_strdup(const char *s); /* NULL in, NULL out */
char *jn_strndup(const char *s, size_t n);

/* Test hook: after n more successful allocations, every allocation fails until reset with
 * n < 0. Thread-safe (atomic). Default: never fail. */
void jn_mem_fail_after(long n);
/* Number of allocations that failed on purpose since the last jn_mem_fail_after(). */
long jn_mem_failed(void);

#endif
