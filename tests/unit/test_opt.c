/* Unit tests of option-table features: warnings in a diag, aliases (deprecated names), the
 * per-option validate hook and the RELOADABLE flag in describe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_config.h"
#include "jn_diag.h"
#include "jn_mem.h"
#include "jn_opt.h"
#include "jn_test.h"
#include "jn_yaml.h"

struct oconf {
    long long timeout;
    char *word;
    long long plain;
    long long need;
};

static int validate_calls;

/* word must not contain an 'x'. */
static int validate_word(const void *value, const struct jn_node *node, const char *what,
                         struct jn_diag *d)
{
    const char *s = *(char *const *)value;

    validate_calls++;
    if (strchr(s, 'x') != NULL) {
        jn_diag_add(d, &node->pos, "%s: '%s' holds an x", what, s);
        return 1;
    }
    return 0;
}

static const struct jn_opt oopts[] = {
    JN_OPT_DURATION("timeout", "10s", 1, 60000, JN_OPT_RELOADABLE, struct oconf, timeout,
                    "how long to wait", .alias = "ack_timeout"),
    JN_OPT_STR("word", "plain", 0, struct oconf, word, "a word", .validate = validate_word),
    JN_OPT_INT("plain", "1", 0, 9, 0, struct oconf, plain, "not reloadable"),
    JN_OPT_INT("need", NULL, 0, 9, JN_OPT_REQUIRED, struct oconf, need, "required",
               .alias = "old_need"),
    JN_OPT_END,
};

struct res {
    int errs;
    size_t nerr, n;
    char msg[2][256];
};

static void parse(const char *text, struct oconf *c, struct res *r)
{
    struct jn_diag d;
    struct jn_node *root;

    memset(c, 0, sizeof(*c));
    memset(r, 0, sizeof(*r));
    jn_diag_init(&d);
    root = jn_yaml_load_buf("t.yaml", text, strlen(text), &d);
    CHECK(root != NULL);
    r->errs = root ? jn_opt_parse(oopts, root, c, "thing", 0, NULL, root, &d) : -1;
    r->nerr = d.nerr;
    r->n = d.n;
    for (size_t i = 0; i < d.n && i < 2; i++) {
        snprintf(r->msg[i], sizeof(r->msg[i]), "%s", d.msgs[i]);
    }
    jn_node_free(root);
    jn_opt_free(oopts, c);
    jn_diag_free(&d);
}

static void test_diag_warn(void)
{
    struct jn_diag d;
    struct jn_pos p = {"f.yaml", 3, 5};
    char *buf = NULL;
    size_t len = 0;
    FILE *out;

    jn_diag_init(&d);
    jn_diag_warn(&d, &p, "a %s", "warning");
    CHECK_INT(d.n, 1);
    CHECK_INT(d.nerr, 0);
    CHECK_STR(d.msgs[0], "f.yaml:3:5: warning: a warning");
    jn_diag_add(&d, &(struct jn_pos){"f.yaml", 1, 1}, "an error");
    CHECK_INT(d.n, 2);
    CHECK_INT(d.nerr, 1);
    out = open_memstream(&buf, &len);
    jn_diag_print(&d, out);
    fclose(out);
    CHECK_STR(buf, "f.yaml:1:1: an error\nf.yaml:3:5: warning: a warning\n");
    free(buf);
    jn_diag_free(&d);
}

static void test_alias(void)
{
    struct oconf c;
    struct res r;

    /* The new name: no warning. */
    parse("timeout: 2s\nneed: 1\n", &c, &r);
    CHECK_INT(r.errs, 0);
    CHECK_INT(r.n, 0);

    /* The old name: accepted, with a warning at its key, and the value is set. */
    memset(&c, 0, sizeof(c));
    {
        struct jn_diag d;
        const char *text = "need: 1\nack_timeout: 3s\n";
        struct jn_node *root;
        jn_diag_init(&d);
        root = jn_yaml_load_buf("t.yaml", text, strlen(text), &d);
        CHECK_INT(jn_opt_parse(oopts, root, &c, "thing", 0, NULL, root, &d), 0);
        CHECK_INT(c.timeout, 3000);
        CHECK_INT(d.nerr, 0);
        CHECK_INT(d.n, 1);
        CHECK_STR(d.n ? d.msgs[0] : "",
                  "t.yaml:2:1: warning: thing: `ack_timeout` is deprecated, use `timeout`");
        jn_node_free(root);
        jn_opt_free(oopts, &c);
        jn_diag_free(&d);
    }

    /* Both names: an error at the old one. */
    parse("timeout: 2s\nneed: 1\nack_timeout: 3s\n", &c, &r);
    CHECK_INT(r.errs, 1);
    CHECK_INT(r.nerr, 1);
    CHECK_STR(r.msg[0], "t.yaml:3:1: thing: 'ack_timeout' and 'timeout' are the same option "
                        "('ack_timeout' is its deprecated name), give only 'timeout'");

    /* A required option given by its old name is given. */
    parse("old_need: 4\n", &c, &r);
    CHECK_INT(r.errs, 0);
    CHECK_INT(r.nerr, 0);
    CHECK_INT(r.n, 1);
    CHECK_STR(r.msg[0], "t.yaml:1:1: warning: thing: `old_need` is deprecated, use `need`");

    /* The old name goes through the same bounds check. */
    parse("need: 1\nack_timeout: 2m\n", &c, &r);
    CHECK_INT(r.errs, 1);
    CHECK_STR(r.msg[1], "t.yaml:2:14: thing: timeout: 2m is out of range 1ms..1m");
}

static void test_validate(void)
{
    struct oconf c;
    struct res r;

    /* Not run on defaults. */
    validate_calls = 0;
    parse("need: 1\n", &c, &r);
    CHECK_INT(r.errs, 0);
    CHECK_INT(validate_calls, 0);

    /* Run on a given value; a good one passes. */
    parse("need: 1\nword: fine\n", &c, &r);
    CHECK_INT(r.errs, 0);
    CHECK_INT(validate_calls, 1);

    /* A bad one: the error is at the value's own line:column and counted. */
    parse("need: 1\nword:   boxes\n", &c, &r);
    CHECK_INT(r.errs, 1);
    CHECK_INT(r.nerr, 1);
    CHECK_STR(r.msg[0], "t.yaml:2:9: thing: word: 'boxes' holds an x");

    /* Not run when the type check failed already. */
    validate_calls = 0;
    parse("need: 1\nword: [a, x]\n", &c, &r);
    CHECK_INT(r.errs, 1);
    CHECK_INT(validate_calls, 0);
}

__attribute__((noinline)) static char *describe(int md)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);

    if (md) {
        jn_opt_describe_md(oopts, "x.", out);
    } else {
        jn_opt_describe_text(oopts, "x.", out);
    }
    fclose(out);
    return buf;
}

static void test_describe(void)
{
    char *md = describe(1);
    char *text = describe(0);
    const char *line;

    CHECK(strstr(md, "| option | type | default | allowed | reloadable | description |\n") !=
          NULL);
    line = strstr(md, "| `x.timeout` |");
    CHECK(line != NULL && strstr(line, "| yes | how long to wait |") != NULL &&
          strstr(line, "| yes |") < strchr(line, '\n'));
    line = strstr(md, "| `x.plain` |");
    CHECK(line != NULL && strstr(line, "|  | not reloadable |") == strstr(line, "|  |"));
    CHECK(strstr(md, "| `x.ack_timeout` | | | | | Deprecated: the old name of `timeout`. |") !=
          NULL);

    line = strstr(text, "x.timeout");
    CHECK(line != NULL && strstr(line, "Reloadable.") != NULL &&
          strstr(line, "Reloadable.") < strchr(line, '\n'));
    line = strstr(text, "x.plain");
    CHECK(line != NULL && (strstr(line, "Reloadable.") == NULL ||
                           strstr(line, "Reloadable.") > strchr(line, '\n')));
    CHECK(strstr(text, "x.ack_timeout") != NULL &&
          strstr(text, "Deprecated: the old name of `timeout`.") != NULL);
    free(md);
    free(text);
}

/* A whole config with mllp's old name ack_timeout loads, with one warning at that key; the new
 * name timeout sets the same field. */
static void test_mllp_ack_timeout_alias(void)
{
    static const char old[] = "channels:\n"
                              "  lab_out:\n"
                              "    type: mllp\n"
                              "    direction: out\n"
                              "    connect: 127.0.0.1:2575\n"
                              "    ack_timeout: 2s\n"
                              /* used by a route: check warns about an OUT nothing sends to */
                              "  in: {type: http, direction: in}\n"
                              "routes:\n"
                              "  r: {from: [in], to: [lab_out]}\n";
    static const char both[] = "channels:\n"
                               "  lab_out:\n"
                               "    type: mllp\n"
                               "    direction: out\n"
                               "    connect: 127.0.0.1:2575\n"
                               "    timeout: 2s\n"
                               "    ack_timeout: 2s\n";
    struct jn_diag d;
    struct jn_config *c;

    jn_diag_init(&d);
    c = jn_config_load_buf("j.yaml", old, strlen(old), &d);
    CHECK(c != NULL);
    CHECK_INT(d.nerr, 0);
    CHECK_INT(d.n, 1);
    CHECK_STR(d.n ? d.msgs[0] : "", "j.yaml:6:5: warning: channel 'lab_out' (mllp): "
                                    "`ack_timeout` is deprecated, use `timeout`");
    jn_config_free(c);
    jn_diag_free(&d);

    jn_diag_init(&d);
    c = jn_config_load_buf("j.yaml", both, strlen(both), &d);
    CHECK(c == NULL);
    CHECK_INT(d.nerr, 1);
    CHECK_STR(d.n ? d.msgs[0] : "", "j.yaml:7:5: channel 'lab_out' (mllp): 'ack_timeout' and "
                                    "'timeout' are the same option ('ack_timeout' is its "
                                    "deprecated name), give only 'timeout'");
    jn_config_free(c);
    jn_diag_free(&d);
}

int main(void)
{
    test_diag_warn();
    test_alias();
    test_validate();
    test_describe();
    test_mllp_ack_timeout_alias();
    TEST_MAIN_END();
}
