/*
 * Unit tests of the kafka channel's config: the bootstrap.servers value librdkafka is given for
 * each way of writing `brokers`, and the errors for a brokers value that is not a list of
 * host:port; the librdkafka properties the tls: and sasl: blocks set (issue 16). No network:
 * the config is only loaded and checked, and the librdkafka conf built and read back.
 */
#include <librdkafka/rdkafka.h>
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

/* Loads an OUT kafka channel with the given extra lines and builds its librdkafka conf;
 * returns it (NULL on a config error, errs set) for kprop to read. */
static rd_kafka_conf_t *kconf(const char *extra, int *errs, char *first, size_t n)
{
    static char yaml[1024];
    struct jn_diag d;
    struct jn_config *c;
    rd_kafka_conf_t *kc = NULL;
    struct jn_err err = {0};

    snprintf(yaml, sizeof(yaml),
             "channels:\n"
             "  k:\n"
             "    type: kafka\n"
             "    direction: out\n"
             "    brokers: [b1:9093]\n"
             "    topic: t\n"
             "%s", extra);
    jn_diag_init(&d);
    c = jn_config_load_buf("k.yaml", yaml, strlen(yaml), &d);
    *errs = (int)d.nerr;
    snprintf(first, n, "%s", d.n ? d.msgs[0] : "");
    if (c != NULL && c->nchannels == 1 && d.nerr == 0) {
        struct jn_channel ch;
        memset(&ch, 0, sizeof(ch));
        ch.name = "k";
        ch.dir = JN_DIR_OUT;
        ch.conf = c->channels[0].conf;
        kc = jn_kafka__conf_build(&ch, JN_DIR_OUT, &err);
        if (kc != NULL) {
            rd_kafka_conf_set_opaque(kc, NULL); /* ch is gone after this call */
        }
    }
    jn_config_free(c);
    jn_diag_free(&d);
    return kc;
}

static const char *kprop(rd_kafka_conf_t *kc, const char *k)
{
    static char v[512];
    size_t n = sizeof(v);

    if (kc == NULL || rd_kafka_conf_get(kc, k, v, &n) != RD_KAFKA_CONF_OK) {
        return "(unset)";
    }
    return v;
}

static void test_security_mapping(void)
{
    rd_kafka_conf_t *kc;
    char first[512];
    int errs;

    /* No block: librdkafka's own default. */
    kc = kconf("", &errs, first, sizeof(first));
    CHECK_INT(errs, 0);
    CHECK_STR(kprop(kc, "security.protocol"), "plaintext");
    rd_kafka_conf_destroy(kc);

    /* tls without files (system CAs): SSL, verified, the name checked, junction's ciphers. */
    kc = kconf("    tls: { enabled: true }\n", &errs, first, sizeof(first));
    CHECK_INT(errs, 0);
    CHECK_STR(kprop(kc, "security.protocol"), "ssl");
    CHECK_STR(kprop(kc, "enable.ssl.certificate.verification"), "true");
    CHECK_STR(kprop(kc, "ssl.endpoint.identification.algorithm"), "https");
    CHECK_STR(kprop(kc, "ssl.cipher.suites"), JN_TLS_DEFAULT_CIPHERS);
    rd_kafka_conf_destroy(kc);

    kc = kconf("    tls: { enabled: true, verify_peer: false }\n", &errs, first, sizeof(first));
    CHECK_STR(kprop(kc, "enable.ssl.certificate.verification"), "false");
    CHECK_STR(kprop(kc, "ssl.endpoint.identification.algorithm"), "none");
    rd_kafka_conf_destroy(kc);

    /* sasl alone: SASL_PLAINTEXT (with a check warning, not an error). */
    kc = kconf("    sasl: { mechanism: SCRAM-SHA-256, username: jn, password: pw-0123456789 }\n",
               &errs, first, sizeof(first));
    CHECK_INT(errs, 0);
    CHECK_STR(kprop(kc, "security.protocol"), "sasl_plaintext");
    CHECK_STR(kprop(kc, "sasl.mechanisms"), "SCRAM-SHA-256");
    CHECK_STR(kprop(kc, "sasl.username"), "jn");
    CHECK_STR(kprop(kc, "sasl.password"), "pw-0123456789");
    rd_kafka_conf_destroy(kc);

    /* both: SASL_SSL; mechanism defaults to SCRAM-SHA-512. */
    kc = kconf("    tls: { enabled: true }\n    sasl: { username: jn, password: pw-0123456789 }\n",
               &errs, first, sizeof(first));
    CHECK_INT(errs, 0);
    CHECK_STR(kprop(kc, "security.protocol"), "sasl_ssl");
    CHECK_STR(kprop(kc, "sasl.mechanisms"), "SCRAM-SHA-512");
    rd_kafka_conf_destroy(kc);

    /* Refused at load. */
    CHECK(kconf("    sasl: { username: jn }\n", &errs, first, sizeof(first)) == NULL);
    CHECK(errs >= 1 && strstr(first, "password is required") != NULL);
    CHECK(kconf("    tls: { enabled: true, server_name: b1 }\n", &errs, first,
                sizeof(first)) == NULL);
    CHECK(errs >= 1 && strstr(first, "server_name is not available for Kafka") != NULL);
    CHECK(kconf("    tls: { enabled: true, min_version: \"1.3\" }\n", &errs, first,
                sizeof(first)) == NULL);
    CHECK(errs >= 1 && strstr(first, "min_version 1.3") != NULL);
    CHECK(kconf("    tls: { enabled: true }\n    properties: { security.protocol: plaintext }\n",
                &errs, first, sizeof(first)) == NULL);
    CHECK(errs >= 1 && strstr(first, "set by the channel's tls: block") != NULL);
    /* Without the blocks, properties may still say it all themselves. */
    kc = kconf("    properties: { security.protocol: SASL_SSL, sasl.mechanisms: PLAIN, "
               "sasl.username: u, sasl.password: p }\n", &errs, first, sizeof(first));
    CHECK_INT(errs, 0);
    CHECK_STR(kprop(kc, "security.protocol"), "sasl_ssl");
    rd_kafka_conf_destroy(kc);
}

int main(void)
{
    test_issue_12_brokers_comma_string();
    test_security_mapping();
    TEST_MAIN_END();
}
