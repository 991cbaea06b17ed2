/*
 * Unit tests for the checks of `junction test` (cli/jn_testrun_match.c): the exact lines each
 * check writes for a difference, and that it writes nothing when the check holds. Payload diffs
 * (hunks, context, line ends), the JSON subset (types of YAML scalars, arrays by position,
 * missing keys, not JSON), HL7 paths (escapes decoded, MSH-2 as written, absent), headers, the
 * cap on listed differences, and the quoting of bytes that are not text.
 */
#include <stdlib.h>
#include <string.h>

#include "jn_diag.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_test.h"
#include "jn_testrun_int.h"
#include "jn_yaml.h"

static struct jn_msg *msg_of(const char *payload)
{
    struct jn_msg *m = jn_msg_new("in", payload, strlen(payload));
    if (m == NULL) {
        abort();
    }
    return m;
}

/* The value node of key `v` in the YAML "v: <text>" (the tree is freed by the caller). */
static struct jn_node *yaml(const char *text, const struct jn_node **v, struct jn_diag *d)
{
    struct jn_node *root = jn_yaml_load_buf("t.yaml", text, strlen(text), d);
    if (root == NULL || (*v = jn_node_get(root, "v")) == NULL) {
        jn_diag_print(d, stderr);
        abort();
    }
    return root;
}

enum kind { PAYLOAD, JSON, HL7, HEADERS };

/* Runs one check; returns its output (static buffer) and the count in *n. */
static const char *run(enum kind k, const char *want_yaml, struct jn_msg *m, int *n)
{
    static char text[8192];
    struct jn_buf out = JN_BUF_INIT;
    struct jn_diag d;
    const struct jn_node *v = NULL;
    struct jn_node *root;

    jn_diag_init(&d);
    root = yaml(want_yaml, &v, &d);
    switch (k) {
    case PAYLOAD:
        *n = jn_testrun__payload(v->str, strlen(v->str), m, "  d: ", &out);
        break;
    case JSON:
        *n = jn_testrun__json(v, m, "  d: ", &out);
        break;
    case HL7:
        *n = jn_testrun__hl7(v, m, "  d: ", &out);
        break;
    case HEADERS:
        *n = jn_testrun__headers(v, m, "  d: ", &out);
        break;
    }
    snprintf(text, sizeof(text), "%s", out.p ? out.p : "");
    jn_buf_reset(&out);
    jn_node_free(root);
    jn_diag_free(&d);
    return text;
}

static void test_payload(void)
{
    struct jn_msg *m = msg_of("a\rb\rc\rd\re\rf\rg\rh\ri\rj\r");
    int n;

    CHECK_STR(run(PAYLOAD, "v: \"a\\rb\\rc\\rd\\re\\rf\\rg\\rh\\ri\\rj\\r\"", m, &n), "");
    CHECK_INT(n, 0);
    /* Two changes far apart: two hunks, two lines of context each. */
    CHECK_STR(run(PAYLOAD, "v: \"a\\rB\\rc\\rd\\re\\rf\\rg\\rh\\ri\\rj\\rk\\r\"", m, &n),
              "  d: payload differs (22 bytes expected, 20 received):\n"
              "    --- expected\n"
              "    +++ actual\n"
              "    @@ -1,4 +1,4 @@\n"
              "     a\n"
              "    -B\n"
              "    +b\n"
              "     c\n"
              "     d\n"
              "    @@ -9,3 +9,2 @@\n"
              "     i\n"
              "     j\n"
              "    -k\n");
    CHECK_INT(n, 1);
    jn_msg_unref(&m);

    /* The same lines with other ends; one line each: both in full, and where they part. */
    m = msg_of("x\ny\n");
    CHECK_STR(run(PAYLOAD, "v: \"x\\r\\ny\\r\\n\"", m, &n),
              "  d: payload differs at byte 1 (the lines are the same: their ends differ):\n"
              "    expected \"x\\r\\ny\\r\\n\"\n"
              "    got      \"x\\ny\\n\"\n");
    jn_msg_unref(&m);
    m = msg_of("one \"line\"");
    CHECK_STR(run(PAYLOAD, "v: one line", m, &n),
              "  d: payload differs at byte 4:\n"
              "    expected \"one line\"\n"
              "    got      \"one \\\"line\\\"\"\n");
    jn_msg_unref(&m);
    /* Empty against text: the text is all removed lines. */
    m = msg_of("");
    CHECK_STR(run(PAYLOAD, "v: \"p\\nq\"", m, &n),
              "  d: payload differs (3 bytes expected, 0 received):\n"
              "    --- expected\n"
              "    +++ actual\n"
              "    @@ -1,2 +0,0 @@\n"
              "    -p\n"
              "    -q\n");
    jn_msg_unref(&m);
}

static void test_json(void)
{
    struct jn_msg *m = msg_of("{\"id\": \"42\", \"n\": 2, \"r\": 2.5, \"ok\": true, \"z\": null, "
                              "\"a\": [1, {\"b\": \"x\"}], \"o\": {\"p\": {\"q\": \"deep\"}}}");
    int n;

    CHECK_STR(run(JSON, "v: {id: \"42\", n: 2.0, r: 2.5, ok: true, z: ~, a: [1, {b: x}], "
                  "o: {p: {q: deep}}}", m, &n), "");
    CHECK_INT(n, 0);
    CHECK_STR(run(JSON, "v: {id: 42, n: \"2\", ok: false, a: [1], o: {p: {q: shallow, w: 1}}, "
                  "nope: 1}", m, &n),
              "  d: json $.id: expected 42, got \"42\"\n"
              "  d: json $.n: expected \"2\", got 2\n"
              "  d: json $.ok: expected false, got true\n"
              "  d: json $.a: expected 1 element(s), got 2: [1,{\"b\":\"x\"}]\n"
              "  d: json $.o.p.q: expected \"shallow\", got \"deep\"\n"
              "  d: json $.o.p.w: missing\n"
              "  d: json $.nope: missing\n");
    CHECK_INT(n, 7);
    CHECK_STR(run(JSON, "v: [1]", m, &n),
              "  d: json $: expected an array, got an object {\"id\":\"42\",\"n\":2,\"r\":2.5,"
              "\"ok\":true,\"z\":null,\"a\":[1,{\"b\":\"x\"}],\"o\":{\"p\":{\"q\":\"deep\"}}}\n");
    jn_msg_unref(&m);
    m = msg_of("{oops");
    CHECK_STR(run(JSON, "v: {a: 1}", m, &n),
              "  d: json: the payload is not JSON: string or '}' expected near 'oops' (line 1, "
              "column 5)\n");
    CHECK_INT(n, 1);
    jn_msg_unref(&m);
    /* More differences than are listed: the rest are counted. */
    m = msg_of("[0,0,0,0,0,0,0,0,0,0,0,0]");
    run(JSON, "v: [1,1,1,1,1,1,1,1,1,1,1,1]", m, &n);
    CHECK_INT(n, 12);
    CHECK(strstr(run(JSON, "v: [1,1,1,1,1,1,1,1,1,1,1,1]", m, &n),
                 "  d: json $[9]: expected 1, got 0\n  d: ... and 2 more difference(s)\n") != NULL);
    jn_msg_unref(&m);
}

static void test_hl7(void)
{
    struct jn_msg *m = msg_of("MSH|^~\\&|APP|FAC|EHR|FAC|20240301||ADT^A01|M1|P|2.5\r"
                              "PID|1||42^^^H^MR~99^^^S^SS||DOE\\T\\SONS^JANE\r");
    int n;

    CHECK_STR(run(HL7, "v: {MSH-2: \"^~\\\\&\", MSH-9.2: A01, \"PID-3[2].1\": \"99\", "
                  "PID-5.1: DOE&SONS, PID-5.2: JANE, PID-9: ~, ZZZ-1: ~}", m, &n), "");
    CHECK_INT(n, 0);
    CHECK_STR(run(HL7, "v: {PID-5.1: DOE, PID-3.1: ~, PID-7: \"19610615\"}", m, &n),
              "  d: hl7 PID-5.1: expected \"DOE\", got \"DOE&SONS\"\n"
              "  d: hl7 PID-3.1: expected absent, got \"42\"\n"
              "  d: hl7 PID-7: expected \"19610615\", absent\n");
    CHECK_INT(n, 3);
    jn_msg_unref(&m);
    m = msg_of("{\"not\": \"hl7\"}");
    CHECK_STR(run(HL7, "v: {PID-5.1: DOE}", m, &n),
              "  d: hl7: the payload is not HL7 v2: the message does not start with MSH (or "
              "FHS/BHS for a batch)\n");
    jn_msg_unref(&m);
}

static void test_headers(void)
{
    struct jn_msg *m = msg_of("x");
    int n;

    if (jn_msg_header_add(m, "Content-Type", "application/json") != 0 ||
        jn_msg_header_add(m, "X-Dup", "first") != 0 || jn_msg_header_add(m, "x-dup", "2") != 0) {
        abort();
    }
    CHECK_STR(run(HEADERS, "v: {content-type: application/json, X-DUP: first, x-none: ~}", m,
                  &n), "");
    CHECK_STR(run(HEADERS, "v: {content-type: text/plain, x-dup: ~, x-none: v}", m, &n),
              "  d: header content-type: expected \"text/plain\", got \"application/json\"\n"
              "  d: header x-dup: expected absent, got \"first\"\n"
              "  d: header x-none: expected \"v\", absent\n");
    CHECK_INT(n, 3);
    jn_msg_unref(&m);
}

static void test_quote(void)
{
    struct jn_buf b = JN_BUF_INIT;

    jn_testrun__quote(&b, "caf\xc3\xa9 \x01\xff\t\"\\", 11, 100);
    CHECK_STR(b.p, "\"caf\xc3\xa9 \\x01\\xff\\t\\\"\\\\\"");
    jn_buf_reset(&b);
    jn_testrun__quote(&b, "abcdef", 6, 3);
    CHECK_STR(b.p, "\"abc\"... (6 bytes)");
    jn_buf_reset(&b);
}

int main(void)
{
    test_payload();
    test_json();
    test_hl7();
    test_headers();
    test_quote();
    TEST_MAIN_END();
}
