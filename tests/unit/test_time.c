/* Unit tests of the shared clock and backoff (jn_time): bounds, cap, attempt 1, spread; the
 * UTC calendar against gmtime_r. */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "jn_test.h"
#include "jn_time.h"

static void test_mono(void)
{
    int64_t a = jn_mono_ms();
    struct timespec ts = {0, 20 * 1000000};
    int64_t b;

    nanosleep(&ts, NULL);
    b = jn_mono_ms();
    CHECK(a > 0);
    CHECK(b - a >= 20);
    CHECK(b - a < 5000);
}

/* Retry n waits in 0..min(cap, base * 2^(n-1)), for every n, and reaches near both ends. */
static void test_backoff_bounds(void)
{
    const long long base = 100, cap = 30000;

    for (int attempt = 1; attempt <= 40; attempt++) {
        long long ceiling = base;
        long long lo = -1, hi = -1;
        for (int i = 1; i < attempt && ceiling < cap; i++) {
            ceiling = ceiling * 2 > cap ? cap : ceiling * 2;
        }
        for (int k = 0; k < 2000; k++) {
            long long w = jn_backoff_ms(base, cap, attempt);
            if (w < 0 || w > ceiling) {
                CHECK(w >= 0 && w <= ceiling);
                break;
            }
            lo = lo < 0 || w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
        /* Full jitter: uniform over the whole range, so 2000 draws come near both ends. */
        CHECK(lo <= ceiling / 10);
        CHECK(hi >= ceiling - ceiling / 10);
    }
}

static void test_backoff_cap(void)
{
    long long max = 0;

    /* Large attempt numbers saturate at the cap instead of overflowing. */
    for (int k = 0; k < 5000; k++) {
        long long w = jn_backoff_ms(500, 2000, 1000000 + k);
        CHECK(w >= 0 && w <= 2000);
        max = w > max ? w : max;
    }
    CHECK(max > 1800);
    /* A huge cap: the doubling must not overflow either. */
    for (int k = 0; k < 100; k++) {
        long long w = jn_backoff_ms(1000, INT64_MAX, 200);
        CHECK(w >= 0);
    }
    /* cap below base: the cap wins. */
    for (int k = 0; k < 1000; k++) {
        long long w = jn_backoff_ms(1000, 50, 1);
        CHECK(w >= 0 && w <= 50);
    }
}

static void test_backoff_first(void)
{
    long long sum = 0, max = 0;
    int zero_or_one = 0;

    for (int k = 0; k < 4000; k++) {
        long long w = jn_backoff_ms(100, 30000, 1);
        CHECK(w >= 0 && w <= 100);
        sum += w;
        max = w > max ? w : max;
        zero_or_one += w <= 1;
    }
    /* Mean of uniform 0..100 is 50; 4000 draws keep it well inside 40..60. */
    CHECK(sum / 4000 >= 40 && sum / 4000 <= 60);
    CHECK(max >= 95);
    CHECK(zero_or_one > 0); /* full, not equal, jitter: the low end is reachable */
    /* attempt 0 or negative counts as the first. */
    for (int k = 0; k < 500; k++) {
        long long a = jn_backoff_ms(100, 30000, 0), b = jn_backoff_ms(100, 30000, -5);
        CHECK(a >= 0 && a <= 100);
        CHECK(b >= 0 && b <= 100);
    }
    CHECK_INT(jn_backoff_ms(0, 1000, 3), 0);
    CHECK_INT(jn_backoff_ms(-5, 1000, 3), 0);
}

/* jn_utc_from_secs agrees with gmtime_r: the calendar's edges (epoch, leap days in 2000 and
 * 2024, the non-leap 1900 and 2100, 9999-12-31, before 1970) and a walk over 1 - 3000 CE in
 * steps that hit every hour, weekday and day of the month. */
static int utc_matches(int64_t secs)
{
    time_t t = (time_t)secs;
    struct tm tm;
    struct jn_utc u;

    if (gmtime_r(&t, &tm) == NULL) {
        return 1; /* out of gmtime's range: nothing to compare */
    }
    jn_utc_from_secs(secs, &u);
    if (u.year != (int64_t)tm.tm_year + 1900 || u.mon != tm.tm_mon + 1 || u.day != tm.tm_mday ||
        u.hour != tm.tm_hour || u.min != tm.tm_min || u.sec != tm.tm_sec) {
        fprintf(stderr, "utc %lld: got %lld-%d-%d %d:%d:%d, gmtime %d-%d-%d %d:%d:%d\n",
                (long long)secs, (long long)u.year, u.mon, u.day, u.hour, u.min, u.sec,
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        return 0;
    }
    return 1;
}

static void test_utc(void)
{
    static const int64_t edges[] = {
        0, -1, 1, 86399, 86400, -86400, -86401,
        951782400,   /* 2000-02-29 00:00:00 */
        951868799,   /* 2000-02-29 23:59:59 */
        -2203891200, /* 1900-03-01: 1900 is not a leap year */
        4107456000,  /* 2100-02-28 */
        4107542400,  /* 2100-03-01 */
        1709164800,  /* 2024-02-29 */
        253402300799, /* 9999-12-31 23:59:59 */
        -62135596800, /* 0001-01-01 */
    };
    struct jn_utc u;
    int bad = 0;

    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        bad += !utc_matches(edges[i]);
    }
    for (int64_t s = -62135596800; s < 32503680000 && bad < 5; s += 86400 * 3 + 3607) {
        bad += !utc_matches(s);
    }
    CHECK_INT(bad, 0);
    jn_utc_from_secs(951782400 + 13 * 3600 + 5 * 60 + 9, &u);
    CHECK_INT(u.year, 2000);
    CHECK_INT(u.mon, 2);
    CHECK_INT(u.day, 29);
    CHECK_INT(u.hour, 13);
    CHECK_INT(u.min, 5);
    CHECK_INT(u.sec, 9);
}

int main(void)
{
    test_mono();
    test_backoff_bounds();
    test_backoff_cap();
    test_backoff_first();
    test_utc();
    TEST_MAIN_END();
}
