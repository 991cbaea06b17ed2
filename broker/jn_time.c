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

/* Days since 1970-01-01 to a civil date. The calendar repeats every 400 years (146097 days);
 * counting from 0000-03-01 puts the leap day at the end of each year, so the month follows
 * from the day of the year with one linear formula (153 days per 5 months from March). */
void jn_utc_from_secs(int64_t secs, struct jn_utc *out)
{
    int64_t days = secs / 86400, rem = secs % 86400;
    int64_t z, era, doe, yoe, doy, mp;

    if (rem < 0) {
        rem += 86400;
        days--;
    }
    z = days + 719468; /* 0000-03-01 to 1970-01-01 */
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;                                      /* 0..146096 */
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* 0..365, from March 1 */
    mp = (5 * doy + 2) / 153;                                    /* 0..11, March = 0 */
    out->day = (int)(doy - (153 * mp + 2) / 5 + 1);
    out->mon = (int)(mp < 10 ? mp + 3 : mp - 9);
    out->year = yoe + era * 400 + (out->mon <= 2);
    out->hour = (int)(rem / 3600);
    out->min = (int)(rem / 60 % 60);
    out->sec = (int)(rem % 60);
}
