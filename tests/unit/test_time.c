/* Unit tests of the shared clock and backoff (jn_time): bounds, cap, attempt 1, spread. */
#include <stdint.h>
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

int main(void)
{
    test_mono();
    test_backoff_bounds();
    test_backoff_cap();
    test_backoff_first();
    TEST_MAIN_END();
}
