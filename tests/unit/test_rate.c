/* jn_rate: the rate syntax and the token bucket of rate_limit (refill, burst, Retry-After). */
#include <string.h>

#include "jn_channel.h"
#include "jn_err.h"
#include "jn_rate.h"
#include "jn_test.h"

static void test_parse(void)
{
    double r = 0;

    CHECK_INT(jn_rate_parse("1000/s", &r), 0);
    CHECK(r == 1000);
    CHECK_INT(jn_rate_parse(" 120 / m ", &r), 0);
    CHECK(r == 2);
    CHECK_INT(jn_rate_parse("3600/h", &r), 0);
    CHECK(r == 1);
    CHECK_INT(jn_rate_parse("0.5/s", &r), 0);
    CHECK(r == 0.5);
    CHECK_INT(jn_rate_parse("fast", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("10", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("10/d", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("0/s", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("-5/s", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("10/s x", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("inf/s", &r), JN_EINVAL);
    CHECK_INT(jn_rate_parse("", &r), JN_EINVAL);
}

static void test_bucket(void)
{
    struct jn_channel ch;
    struct jn_rate_conf c = {"10/s", 3};
    int64_t t0 = 1000000000;

    memset(&ch, 0, sizeof(ch));
    ch.name = "in";
    jn_rate__init(&ch, &c);
    /* Full at start: burst 3 at once, then refused. */
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK(jn_rate__take(&ch, t0) != NULL);
    CHECK(strstr(ch.rate_why, "rate limit") != NULL);
    CHECK_INT(ch.rate_retry_s, 1);
    CHECK_INT(ch.n_rate_limited, 1);
    /* 100 ms later one token has come back (10/s), not two. */
    CHECK(jn_rate__take(&ch, t0 + 100000) == NULL);
    CHECK(jn_rate__take(&ch, t0 + 100000) != NULL);
    /* A long pause refills up to burst only. */
    for (int i = 0; i < 3; i++) {
        CHECK(jn_rate__take(&ch, t0 + 60000000) == NULL);
    }
    CHECK(jn_rate__take(&ch, t0 + 60000000) != NULL);
    CHECK_INT(ch.n_rate_limited, 3);

    /* 2/m, burst unset: one token (a second's worth is less than one); Retry-After 30 s. */
    c.rate = "2/m";
    c.burst = 0;
    jn_rate__init(&ch, &c);
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK(jn_rate__take(&ch, t0) != NULL);
    CHECK_INT(ch.rate_retry_s, 30);

    /* 500/s, burst unset: 500 at once. */
    c.rate = "500/s";
    jn_rate__init(&ch, &c);
    for (int i = 0; i < 500; i++) {
        CHECK(jn_rate__take(&ch, t0) == NULL);
    }
    CHECK(jn_rate__take(&ch, t0) != NULL);

    /* No rate: never refused. */
    c.rate = NULL;
    jn_rate__init(&ch, &c);
    for (int i = 0; i < 1000; i++) {
        CHECK(jn_rate__take(&ch, t0) == NULL);
    }
}

/* jn_rate__wait_ms: how long until a token, without taking one or counting. */
static void test_wait(void)
{
    struct jn_channel ch;
    struct jn_rate_conf c = {"4/s", 2};
    int64_t t0 = 1000000000;

    memset(&ch, 0, sizeof(ch));
    ch.name = "in";
    jn_rate__init(&ch, &c);
    CHECK_INT(jn_rate__wait_ms(&ch, t0), 0); /* full */
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK(jn_rate__take(&ch, t0) == NULL);
    CHECK_INT(jn_rate__wait_ms(&ch, t0), 250); /* 4/s: one token a quarter second */
    CHECK_INT(jn_rate__wait_ms(&ch, t0 + 100000), 150);
    CHECK_INT(ch.n_rate_limited, 0);               /* asking is not a refusal */
    CHECK_INT(jn_rate__wait_ms(&ch, t0 + 250000), 0);
    CHECK(jn_rate__take(&ch, t0 + 250000) == NULL); /* a 0 means the take succeeds */
    CHECK_INT(jn_rate__wait_ms(&ch, t0 + 250001), 250); /* rounded up, never 0 when empty */
    c.rate = NULL;
    jn_rate__init(&ch, &c);
    CHECK_INT(jn_rate__wait_ms(&ch, t0), 0);
}

int main(void)
{
    test_parse();
    test_bucket();
    test_wait();
    TEST_MAIN_END();
}
