/*
 * jn_time: the monotonic clock and the full-jitter backoff (see jn_time.h).
 */
#include "jn_time.h"

#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

int64_t jn_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long jn_backoff_ms(long long base, long long cap, int attempt)
{
    long long ceiling = base;
    unsigned long long rnd;

    if (base <= 0) {
        return 0;
    }
    if (cap < ceiling) {
        ceiling = cap > 0 ? cap : 0;
    }
    for (int i = 1; i < attempt && ceiling < cap; i++) {
        ceiling = ceiling <= cap / 2 ? ceiling * 2 : cap;
    }
    if (ceiling <= 0) {
        return 0;
    }
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rnd = (unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (unsigned long long)ts.tv_sec;
    }
    return (long long)(rnd % ((unsigned long long)ceiling + 1));
}
