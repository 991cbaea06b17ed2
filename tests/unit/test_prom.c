/* jn_prom: the Prometheus text format's escaping and number spelling. */
#include <math.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_err.h"
#include "jn_prom.h"
#include "jn_test.h"

static void test_family_and_labels(void)
{
    struct jn_buf b = JN_BUF_INIT;
    const char *lab[] = {"channel", "a\"b\\c\nd", "kind", "retry"};

    CHECK_INT(jn_prom_family(&b, "x_total", "counter", "Help with \\ and\nnewline and \"q\"."),
              0);
    CHECK_INT(jn_prom_sample_u(&b, "x_total", NULL, lab, 2, 18446744073709551615ULL), 0);
    CHECK_INT(jn_prom_sample_u(&b, "x", "_count", NULL, 0, 0), 0);
    CHECK_STR(b.p, "# HELP x_total Help with \\\\ and\\nnewline and \"q\".\n"
                   "# TYPE x_total counter\n"
                   "x_total{channel=\"a\\\"b\\\\c\\nd\",kind=\"retry\"} 18446744073709551615\n"
                   "x_count 0\n");
    jn_buf_reset(&b);
}

static void test_numbers(void)
{
    struct jn_buf b = JN_BUF_INIT;

    CHECK_INT(jn_prom_sample(&b, "a", NULL, NULL, 0, 0.25), 0);
    CHECK_INT(jn_prom_sample(&b, "b", NULL, NULL, 0, INFINITY), 0);
    CHECK_INT(jn_prom_sample(&b, "c", NULL, NULL, 0, -INFINITY), 0);
    CHECK_INT(jn_prom_sample(&b, "d", NULL, NULL, 0, NAN), 0);
    CHECK_INT(jn_prom_sample(&b, "e", "_sum", NULL, 0, 1796626001.5), 0);
    CHECK_STR(b.p, "a 0.25\nb +Inf\nc -Inf\nd NaN\ne_sum 1796626001.5\n");
    jn_buf_reset(&b);
}

/* jn_hist's buckets, rendered cumulative with +Inf, _sum and _count. */
static void test_histogram(void)
{
    struct jn_buf b = JN_BUF_INIT;
    struct jn_hist h;
    const char *lab[] = {"channel", "out"};

    memset(&h, 0, sizeof(h));
    jn_hist_add_us(&h, 300);        /* 0.0003 s: le 0.0005 */
    jn_hist_add_us(&h, 500);        /* exactly on a bound: le 0.0005 */
    jn_hist_add_us(&h, 2000);       /* le 0.0025 */
    jn_hist_add_us(&h, -5);         /* a clock step: 0 */
    jn_hist_add_us(&h, 61000000);   /* past 60 s: +Inf only */
    CHECK_INT(jn_prom_histogram(&b, "d_seconds", lab, 1, &h), 0);
    CHECK(strstr(b.p, "d_seconds_bucket{channel=\"out\",le=\"0.0005\"} 3\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_bucket{channel=\"out\",le=\"0.001\"} 3\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_bucket{channel=\"out\",le=\"0.0025\"} 4\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_bucket{channel=\"out\",le=\"60\"} 4\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_bucket{channel=\"out\",le=\"+Inf\"} 5\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_sum{channel=\"out\"} 61.0028\n") != NULL);
    CHECK(strstr(b.p, "d_seconds_count{channel=\"out\"} 5\n") != NULL);
    CHECK_INT(jn_prom_histogram(&b, "d", lab, JN_PROM_HIST_LABELS + 1, &h), JN_EINVAL);
    jn_buf_reset(&b);
}

int main(void)
{
    test_family_and_labels();
    test_numbers();
    test_histogram();
    TEST_MAIN_END();
}
