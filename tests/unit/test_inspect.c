/* Unit tests of jn_inspect: the times that junction log --since/--until take (issue 12). */
#include <stdint.h>

#include "jn_err.h"
#include "jn_inspect.h"
#include "jn_test.h"

#define NOW 1764000000000000LL /* 2025-11-24T16:00:00Z in µs */
#define MIN 60000000LL

static int64_t when(const char *s)
{
    int64_t us = 42;

    return jn_parse_when(s, NOW, &us) == 0 ? us : -1;
}

static void test_ago(void)
{
    /* The form the help shows, and the same without "ago". */
    CHECK_INT(when("10m ago"), NOW - 10 * MIN);
    CHECK_INT(when("10m"), NOW - 10 * MIN);
    CHECK_INT(when("10 m ago"), NOW - 10 * MIN);
    CHECK_INT(when("10m   ago"), NOW - 10 * MIN);
    CHECK_INT(when("2h ago"), NOW - 120 * MIN);
    CHECK_INT(when("7d"), NOW - 7 * 1440 * MIN);
    CHECK_INT(when("90s ago"), NOW - 90000000LL);
    CHECK_INT(when("250ms"), NOW - 250000);
    CHECK_INT(when("1.5h ago"), NOW - 90 * MIN);
    CHECK_INT(when("0s ago"), NOW);
    /* Longer ago than 1970: everything. */
    CHECK_INT(when("100000d ago"), 0);
    CHECK_INT(when("99999999999999d"), -1); /* out of the duration range */
}

static void test_utc(void)
{
    CHECK_INT(when("2025-11-24T15:50:00"), NOW - 10 * MIN);
    CHECK_INT(when("2025-11-24T15:50:00Z"), NOW - 10 * MIN);
    CHECK_INT(when("1970-01-01T00:00:00"), 0);
}

static void test_bad(void)
{
    static const char *const bad[] = {
        "", "10", "ago", " ago", "m ago", "10m ago ago", "10 minutes", "10 minutes ago",
        "-5m", "yesterday", "now", "2025-13-01T00:00:00", "2025-11-24", "2025-11-24T15:50:00+01",
        "2025-11-24T15:50:00ZZ", "10m ago.", "10x ago",
    };
    int64_t us = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = jn_parse_when(bad[i], NOW, &us);
        if (rc != JN_EINVAL) {
            fprintf(stderr, "accepted: '%s'\n", bad[i]);
        }
        CHECK_INT(rc, JN_EINVAL);
    }
    CHECK_INT(us, 42); /* untouched on errors */
}

int main(void)
{
    test_ago();
    test_utc();
    test_bad();
    TEST_MAIN_END();
}
