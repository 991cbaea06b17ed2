/* Unit tests of jn_template's time placeholders: {date}, {hour} and {time} of a message's
 * receive time give what strftime gives of gmtime_r, which they were rendered with before
 * issue 20 took libc out of that path. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jn_template.h"
#include "jn_test.h"

/* The template rendered for a message received at recv_us, into got (at least 128 bytes). */
static int render_at(const char *tmpl, int64_t recv_us, char *got)
{
    struct jn_msg *m = jn_msg_new("in", "x", 1);
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err = {0};
    int rc;

    got[0] = '\0';
    if (m == NULL) {
        return -1;
    }
    m->recv_us = recv_us;
    rc = jn_template_render(tmpl, m, &b, &err);
    if (rc == 0) {
        snprintf(got, 128, "%s", b.len ? b.p : "");
    }
    jn_buf_reset(&b);
    jn_msg_unref(&m);
    return rc;
}

/* What the placeholders stood for before: strftime of gmtime_r of the whole seconds. */
static void expected_at(int64_t recv_us, char *want)
{
    time_t secs = (time_t)(recv_us / 1000000);
    struct tm tm;
    char d[32], h[8], t[16];

    gmtime_r(&secs, &tm);
    strftime(d, sizeof(d), "%Y-%m-%d", &tm);
    strftime(h, sizeof(h), "%H", &tm);
    strftime(t, sizeof(t), "%H%M%S", &tm);
    snprintf(want, 128, "%s/%s/%s.x", d, h, t);
}

static void test_time_fields(void)
{
    static const int64_t at[] = {
        0, 999999, 1000000, 951868799000000LL, /* 2000-02-29 23:59:59 */
        1709164800123456LL,                    /* 2024-02-29 00:00:00.123456 */
        1765135845000000LL,                    /* 2025-12-07 19:30:45 */
        4107542399000000LL,                    /* 2100-02-28 23:59:59 */
        -1000000, -86400000000LL,              /* before the epoch */
        253402300799000000LL,                  /* 9999-12-31 23:59:59 */
        -30610224000000000LL,                  /* 1000-01-01 */
        -31556995200000000LL,                  /* year 970: %Y unpadded */
    };
    char got[128], want[128];
    int bad = 0;

    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        CHECK_INT(render_at("{date}/{hour}/{time}.x", at[i], got), 0);
        expected_at(at[i], want);
        CHECK_STR(got, want);
    }
    /* Every hour of a few years, a prime step apart so minutes and seconds vary too. */
    for (int64_t us = 1577836800000000LL; us < 1704067200000000LL && bad < 3;
         us += 3601LL * 1000003) {
        render_at("{date}/{hour}/{time}.x", us, got);
        expected_at(us, want);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "at %lld: got %s want %s\n", (long long)us, got, want);
            bad++;
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(render_at("a{{b}}{hour}", 1765135845000000LL, got), 0);
    CHECK_STR(got, "a{b}19");
}

int main(void)
{
    test_time_fields();
    TEST_MAIN_END();
}
