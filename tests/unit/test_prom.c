/* jn_prom: the Prometheus text format's escaping and number spelling. */
#include <math.h>
#include <string.h>

#include "jn_buf.h"
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

int main(void)
{
    test_family_and_labels();
    test_numbers();
    TEST_MAIN_END();
}
