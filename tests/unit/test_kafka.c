/*
 * Unit tests of the kafka channel's config: the bootstrap.servers value librdkafka is given for
 * each way of writing `brokers`, and the errors for a brokers value that is not a list of
 * host:port. No network: the config is only loaded and checked.
 */
#include <stdio.h>
#include <string.h>

#include "jn_config.h"
#include "jn_mem.h"
#include "jn_test.h"
#include "kafka_int.h"

/* Loads an OUT kafka channel whose brokers: line is `brokers`. Returns the bootstrap string in
 * out (or "ERR " and the first error) and the number of errors. */
static int bootstrap(const char *brokers, char *out, size_t n)
{
    char yaml[512];
    struct jn_diag d;
    struct jn_config *c;
    int errs;

    snprintf(yaml, sizeof(yaml),
             "channels:\n"
             "  k:\n"
             "    type: kafka\n"
             "    direction: out\n"
             "    %s\n"
             "    topic: t\n", brokers);
    jn_diag_init(&d);
    c = jn_config_load_buf("k.yaml", yaml, strlen(yaml), &d);
    errs = (int)d.nerr; /* warnings (an OUT channel no route uses) do not count */
    if (c != NULL && c->nchannels == 1) {
        char *s = jn_kafka__bootstrap(c->channels[0].conf);
        snprintf(out, n, "%s", s ? s : "(out of memory)");
        jn_free(s);
    } else {
        snprintf(out, n, "ERR %s", d.n ? d.msgs[0] : "(no message)");
    }
    jn_config_free(c);
    jn_diag_free(&d);
    return errs;
}

/* test_issue_12_brokers_comma_string: librdkafka's own "a:9092,b:9092" form was refused. */
static void test_issue_12_brokers_comma_string(void)
{
    static const char *const same[] = {
        "brokers: [a:9092, b:9092]",
        "brokers:\n      - a:9092\n      - b:9092",
        "brokers: a:9092,b:9092",
        "brokers: \"a:9092,b:9092\"",
        "brokers: ' a:9092 ,\tb:9092 '",
        "brokers: [\"a:9092,b:9092\"]",
    };
    char got[512];

    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        CHECK_INT(bootstrap(same[i], got, sizeof(got)), 0);
        CHECK_STR(got, "a:9092,b:9092");
    }
    CHECK_INT(bootstrap("brokers: a:9092", got, sizeof(got)), 0);
    CHECK_STR(got, "a:9092");
    CHECK_INT(bootstrap("brokers: [\"a:9092, b:9092\", c:9092]", got, sizeof(got)), 0);
    CHECK_STR(got, "a:9092,b:9092,c:9092");

    /* Empty items are errors at the value's file:line:col. */
    CHECK_INT(bootstrap("brokers: \"a:9092,,b:9092\"", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:14: channel 'k' (kafka): brokers: item 2 of 'a:9092,,b:9092' "
                   "is empty, expected values separated by commas");
    CHECK_INT(bootstrap("brokers: a:9092,", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:14: channel 'k' (kafka): brokers: item 2 of 'a:9092,' is "
                   "empty, expected values separated by commas");
    CHECK_INT(bootstrap("brokers: [a:9092, ' , b:9092']", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:23: channel 'k' (kafka): brokers: item 1 of ' , b:9092' is "
                   "empty, expected values separated by commas");
    CHECK_INT(bootstrap("brokers: ''", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:14: channel 'k' (kafka): brokers: item 1 of '' is empty, "
                   "expected values separated by commas");
    /* A blank is not a separator. */
    CHECK_INT(bootstrap("brokers: a:9092 b:9092", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:14: channel 'k' (kafka): brokers: 'a:9092 b:9092' is not "
                   "host:port (separate several with commas or give a list)");
    CHECK_INT(bootstrap("brokers: []", got, sizeof(got)), 1);
    CHECK_STR(got, "ERR k.yaml:5:14: channel 'k' (kafka): brokers: at least one host:port");
}

int main(void)
{
    test_issue_12_brokers_comma_string();
    TEST_MAIN_END();
}
