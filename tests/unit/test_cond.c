/*
 * Unit tests for jn_cond, the route condition language: operators, precedence, values,
 * the exact text and position of each class of error, limits, and allocation failure.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_cond.h"
#include "jn_diag.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_test.h"

/* The expression text starts at junction.yaml line 12, column 11. */
static const struct jn_pos P = {"junction.yaml", 12, 11};

static struct jn_msg *msg;      /* the usual message, see make_msg() */
static struct jn_msg *msg_nul;  /* payload "ab\0cd" */
static struct jn_msg *msg_bare; /* no headers, no id, empty payload */

static struct jn_msg *make_msg(void)
{
    static const char body[] = "{\"type\":\"order\",\"total\":5}";
    struct jn_msg *m = jn_msg_new("orders-in", body, sizeof(body) - 1);

    if (m == NULL) {
        abort();
    }
    strcpy(m->id, "01J9ZQ4X5YB7M2K8N3P6R1T0VW");
    if (jn_msg_header_add(m, "Content-Type", "application/json; charset=utf-8") != 0 ||
        jn_msg_header_add(m, "X-Empty", "") != 0 || jn_msg_header_add(m, "X-Dup", "first") != 0 ||
        jn_msg_header_add(m, "x-dup", "second") != 0) {
        abort();
    }
    return m;
}

/* 1 or 0 from evaluating expr against m; -1 if it did not compile (the errors are printed). */
static int ev(const char *expr, const struct jn_msg *m)
{
    struct jn_diag d;
    struct jn_cond *c;
    int r;

    jn_diag_init(&d);
    c = jn_cond_compile(expr, &P, &d);
    if (c == NULL) {
        fprintf(stderr, "did not compile: %s\n", expr);
        jn_diag_print(&d, stderr);
        jn_diag_free(&d);
        return -1;
    }
    r = jn_cond_eval(c, m);
    if (d.n != 0) {
        r = -2; /* a compiled condition must not leave messages behind */
    }
    jn_cond_free(c);
    jn_diag_free(&d);
    return r;
}

/* The one error message compiling expr gives at pos, or a description of what went wrong
 * instead ("<compiled>", "<2 messages>"). */
static const char *err_at(const char *expr, const struct jn_pos *pos)
{
    static char out[1024];
    struct jn_diag d;
    struct jn_cond *c;

    jn_diag_init(&d);
    c = jn_cond_compile(expr, pos, &d);
    if (c != NULL) {
        snprintf(out, sizeof(out), "<compiled>");
        jn_cond_free(c);
    } else if (d.n != 1) {
        snprintf(out, sizeof(out), "<%zu messages>", d.n);
    } else {
        snprintf(out, sizeof(out), "%s", d.msgs[0]);
    }
    jn_diag_free(&d);
    return out;
}

static const char *err(const char *expr)
{
    return err_at(expr, &P);
}

static void test_equality(void)
{
    CHECK_INT(ev("channel == \"orders-in\"", msg), 1);
    CHECK_INT(ev("channel == 'orders-in'", msg), 1);
    CHECK_INT(ev("channel == \"orders\"", msg), 0);
    CHECK_INT(ev("channel == \"orders-in-x\"", msg), 0);
    CHECK_INT(ev("channel != \"orders\"", msg), 1);
    CHECK_INT(ev("channel != \"orders-in\"", msg), 0);
    CHECK_INT(ev("\"orders-in\" == channel", msg), 1);
    CHECK_INT(ev("id == \"01J9ZQ4X5YB7M2K8N3P6R1T0VW\"", msg), 1);
    CHECK_INT(ev("payload == '{\"type\":\"order\",\"total\":5}'", msg), 1);
    CHECK_INT(ev("payload != \"\"", msg), 1);
    CHECK_INT(ev("header(\"X-Dup\") == \"first\"", msg), 1);
    CHECK_INT(ev("\"a\" == \"a\"", msg), 1);
    CHECK_INT(ev("\"a\" == \"b\"", msg), 0);
    CHECK_INT(ev("channel==\"orders-in\"", msg), 1); /* no spaces needed */
    CHECK_INT(ev("  channel\t==\n\"orders-in\"\r\n", msg), 1);
    /* Two values of the message against each other. */
    CHECK_INT(ev("header(\"X-Empty\") == header(\"X-Missing\")", msg), 1);
    CHECK_INT(ev("channel == id", msg), 0);
}

static void test_escapes(void)
{
    struct jn_msg *m = jn_msg_new("c", "a\"b'c\\d\ne\tf\rg", 13);

    CHECK(m != NULL);
    CHECK_INT(ev("payload == \"a\\\"b'c\\\\d\\ne\\tf\\rg\"", m), 1);
    CHECK_INT(ev("payload == 'a\"b\\'c\\\\d\\ne\\tf\\rg'", m), 1);
    CHECK_INT(ev("payload == 'a\"b\\'c\\\\d\\ne\\tf\\r'", m), 0);
    /* Other backslash pairs stay as written, for regexes. */
    CHECK_INT(ev("'a\\.b' == \"a\\\\.b\"", m), 1);
    CHECK_INT(ev("'v1.2' =~ '^v1\\.2$'", m), 1);
    CHECK_INT(ev("'v1x2' =~ '^v1\\.2$'", m), 0);
    /* \' does not end a string, so here the first one runs on to the third quote. */
    CHECK_STR(err("'a\\' == 'a\\\\'"),
              "junction.yaml:12:20: unexpected 'a' at column 10, expected an operator (==, !=, "
              "=~, !~, &&, ||) or the end of the condition");
    jn_msg_unref(&m);
}

static void test_regex(void)
{
    CHECK_INT(ev("header(\"Content-Type\") =~ \"^application/json\"", msg), 1);
    CHECK_INT(ev("header(\"Content-Type\") =~ \"^text/\"", msg), 0);
    CHECK_INT(ev("header(\"Content-Type\") !~ \"^text/\"", msg), 1);
    CHECK_INT(ev("header(\"Content-Type\") !~ \"json\"", msg), 0);
    CHECK_INT(ev("channel =~ '^orders-(in|out)$'", msg), 1);
    CHECK_INT(ev("channel =~ '^ORDERS'", msg), 0); /* case-sensitive */
    CHECK_INT(ev("payload =~ '\"total\":[0-9]+'", msg), 1);
    CHECK_INT(ev("id =~ '^[0-9A-HJKMNP-TV-Z]{26}$'", msg), 1);
    CHECK_INT(ev("\"abc\" =~ \"b\"", msg), 1);
    CHECK_INT(ev("header(\"X-Missing\") =~ \"^$\"", msg), 1);
    CHECK_INT(ev("channel =~ \"\"", msg), 1); /* the empty pattern matches anything */
}

static void test_payload_with_nul(void)
{
    /* Comparisons use the payload's length ... */
    CHECK_INT(ev("payload == \"ab\"", msg_nul), 0);
    CHECK_INT(ev("payload != \"ab\"", msg_nul), 1);
    CHECK_INT(ev("payload", msg_nul), 1);
    /* ... regexes read it as a C string, which ends at the first NUL. */
    CHECK_INT(ev("payload =~ \"^ab$\"", msg_nul), 1);
    CHECK_INT(ev("payload =~ \"cd\"", msg_nul), 0);
}

static void test_headers(void)
{
    CHECK_INT(ev("header(\"content-type\") =~ \"json\"", msg), 1);
    CHECK_INT(ev("header(\"CONTENT-TYPE\") =~ \"json\"", msg), 1);
    CHECK_INT(ev("header('Content-Type') =~ \"json\"", msg), 1);
    CHECK_INT(ev("header ( \"Content-Type\" ) =~ \"json\"", msg), 1);
    /* Absent is the empty string. */
    CHECK_INT(ev("header(\"X-Missing\") == \"\"", msg), 1);
    CHECK_INT(ev("header(\"X-Missing\") != \"\"", msg), 0);
    CHECK_INT(ev("header(\"X-Missing\")", msg), 0);
    CHECK_INT(ev("!header(\"X-Missing\")", msg), 1);
    /* The first of repeated headers counts. */
    CHECK_INT(ev("header(\"x-DUP\") == \"first\"", msg), 1);
    CHECK_INT(ev("header(\"Content-Type\") == \"application/json\"", msg_bare), 0);
}

static void test_truthiness(void)
{
    CHECK_INT(ev("channel", msg), 1);
    CHECK_INT(ev("id", msg), 1);
    CHECK_INT(ev("payload", msg), 1);
    CHECK_INT(ev("header(\"Content-Type\")", msg), 1);
    CHECK_INT(ev("header(\"X-Empty\")", msg), 0);
    CHECK_INT(ev("\"x\"", msg), 1);
    CHECK_INT(ev("\"\"", msg), 0);
    CHECK_INT(ev("''", msg), 0);
    CHECK_INT(ev("id", msg_bare), 0); /* no id assigned yet */
    CHECK_INT(ev("payload", msg_bare), 0);
    CHECK_INT(ev("channel", msg_bare), 1);
    CHECK_INT(ev("!payload", msg_bare), 1);
    CHECK_INT(ev("payload && channel", msg_bare), 0);
    CHECK_INT(ev("payload || channel", msg_bare), 1);
}

static void test_logic(void)
{
    CHECK_INT(ev("\"\" || \"\"", msg), 0);
    CHECK_INT(ev("\"\" || \"x\"", msg), 1);
    CHECK_INT(ev("\"x\" || \"\"", msg), 1);
    CHECK_INT(ev("\"x\" && \"x\"", msg), 1);
    CHECK_INT(ev("\"x\" && \"\"", msg), 0);
    CHECK_INT(ev("\"\" && \"x\"", msg), 0);
    CHECK_INT(ev("!\"x\"", msg), 0);
    CHECK_INT(ev("!\"\"", msg), 1);
    CHECK_INT(ev("!!\"x\"", msg), 1);
    CHECK_INT(ev("!!!\"x\"", msg), 0);
    CHECK_INT(ev("! ! \"\"", msg), 0);
    /* Long chains are one n-ary node. */
    CHECK_INT(ev("\"\" || \"\" || \"\" || \"\" || \"x\"", msg), 1);
    CHECK_INT(ev("\"x\" && \"x\" && \"x\" && \"x\" && \"\"", msg), 0);
    CHECK_INT(ev("channel == \"orders-in\" && header(\"Content-Type\") =~ "
                 "\"^application/json\"", msg), 1);
}

static void test_precedence(void)
{
    /* a || b && c is a || (b && c). With a true, b false: (a || b) && c would differ when c
     * is false. */
    CHECK_INT(ev("\"x\" || \"\" && \"\"", msg), 1);
    CHECK_INT(ev("(\"x\" || \"\") && \"\"", msg), 0);
    CHECK_INT(ev("\"\" && \"\" || \"x\"", msg), 1);
    CHECK_INT(ev("\"\" && (\"\" || \"x\")", msg), 0);
    /* ! binds tighter than && and ||, looser than comparisons. */
    CHECK_INT(ev("!channel == \"orders-in\"", msg), 0);
    CHECK_INT(ev("!channel == \"other\"", msg), 1);
    CHECK_INT(ev("!\"\" && \"\"", msg), 0);
    CHECK_INT(ev("!(\"\" && \"\")", msg), 1);
    CHECK_INT(ev("!\"x\" || \"x\"", msg), 1);
    CHECK_INT(ev("!(\"x\" || \"x\")", msg), 0);
    /* Comparisons bind tighter than && and ||. */
    CHECK_INT(ev("channel == \"x\" || channel == \"orders-in\"", msg), 1);
    CHECK_INT(ev("channel == \"orders-in\" && id == \"nope\"", msg), 0);
    CHECK_INT(ev("channel == \"orders-in\" && (id == \"nope\" || payload)", msg), 1);
    CHECK_INT(ev("((((channel))))", msg), 1);
    CHECK_INT(ev("(channel == \"x\" || (\"\" || !(\"\" && \"x\"))) && id", msg), 1);
}

static void test_syntax_errors(void)
{
    /* The diag column is P.col (11) plus the offset; "at column" counts inside the text. */
    CHECK_STR(err("channel == \"a\" && )"),
              "junction.yaml:12:29: unexpected ')' at column 19, expected a value (\"...\", "
              "channel, id, payload, header(\"...\")) or '('");
    CHECK_STR(err(""), "junction.yaml:12:11: empty condition, expected an expression such as "
                       "channel == \"orders-in\"");
    CHECK_STR(err("   "), "junction.yaml:12:11: empty condition, expected an expression such as "
                          "channel == \"orders-in\"");
    CHECK_STR(err("channel == \"orders-in"),
              "junction.yaml:12:22: unterminated string starting at column 12, expected a "
              "closing \" before the end of the condition");
    CHECK_STR(err("channel == 'a\\'"),
              "junction.yaml:12:22: unterminated string starting at column 12, expected a "
              "closing ' before the end of the condition");
    CHECK_STR(err("channel == \"a\\"),
              "junction.yaml:12:22: unterminated string starting at column 12, expected a "
              "closing \" before the end of the condition");
    CHECK_STR(err("channel = \"a\""),
              "junction.yaml:12:19: unexpected '=' at column 9; did you mean '=='?");
    CHECK_STR(err("channel == \"a\" & id"),
              "junction.yaml:12:26: unexpected '&' at column 16; did you mean '&&'?");
    CHECK_STR(err("channel == \"a\" | id"),
              "junction.yaml:12:26: unexpected '|' at column 16; did you mean '||'?");
    CHECK_STR(err("channel == \"a\" == \"b\""),
              "junction.yaml:12:26: unexpected '==' at column 16, expected '&&', '||' or the end "
              "of the condition (comparisons do not chain: join them with && or ||)");
    CHECK_STR(err("(channel) == \"a\""),
              "junction.yaml:12:21: unexpected '==' at column 11, expected '&&', '||' or the end "
              "of the condition (only values can be compared, not a condition in parentheses)");
    CHECK_STR(err("(channel == \"a\""),
              "junction.yaml:12:26: unexpected end of condition at column 16, expected '&&', "
              "'||' or ')' to close '(' at column 1");
    CHECK_STR(err("(channel"),
              "junction.yaml:12:19: unexpected end of condition at column 9, expected an "
              "operator (==, !=, =~, !~, &&, ||) or ')' to close '(' at column 1");
    CHECK_STR(err("channel \"a\""),
              "junction.yaml:12:19: unexpected string \"a\" at column 9, expected an operator "
              "(==, !=, =~, !~, &&, ||) or the end of the condition");
    CHECK_STR(err("channel == \"a\")"),
              "junction.yaml:12:25: unexpected ')' at column 15, expected '&&', '||' or the end "
              "of the condition");
    CHECK_STR(err("channel =="),
              "junction.yaml:12:21: unexpected end of condition at column 11, expected a value "
              "(\"...\", channel, id, payload, header(\"...\"))");
    CHECK_STR(err("channel == (id)"),
              "junction.yaml:12:22: unexpected '(' at column 12, expected a value (\"...\", "
              "channel, id, payload, header(\"...\"))");
    CHECK_STR(err("!"),
              "junction.yaml:12:12: unexpected end of condition at column 2, expected a value "
              "(\"...\", channel, id, payload, header(\"...\")) or '('");
    CHECK_STR(err("channel && && id"),
              "junction.yaml:12:22: unexpected '&&' at column 12, expected a value (\"...\", "
              "channel, id, payload, header(\"...\")) or '('");
    CHECK_STR(err("channel == 5"),
              "junction.yaml:12:22: unexpected '5' at column 12, expected a value (\"...\", "
              "channel, id, payload, header(\"...\"))");
    CHECK_STR(err("channel ## x"),
              "junction.yaml:12:19: unexpected '#' at column 9, expected an operator (==, !=, "
              "=~, !~, &&, ||) or the end of the condition");
    CHECK_STR(err("channel == \"a\" and id"),
              "junction.yaml:12:26: unexpected 'and' at column 16, expected '&&', '||' or the "
              "end of the condition");
    /* Control bytes are shown escaped. */
    CHECK_STR(err("channel \x01"),
              "junction.yaml:12:19: unexpected '\\x01' at column 9, expected an operator (==, "
              "!=, =~, !~, &&, ||) or the end of the condition");
    /* Long tokens are cut in messages. */
    CHECK_STR(err("channel \"abcdefghijklmnopqrstuvwxyz0123456789\""),
              "junction.yaml:12:19: unexpected string \"abcdefghijklmnopqrstuvw... at column 9, "
              "expected an operator (==, !=, =~, !~, &&, ||) or the end of the condition");
}

static void test_name_errors(void)
{
    CHECK_STR(err("chanel == \"a\""),
              "junction.yaml:12:11: unknown name 'chanel' at column 1, expected channel, id, "
              "payload or header(\"...\"); did you mean 'channel'?");
    CHECK_STR(err("id == \"a\" || Payload"),
              "junction.yaml:12:24: unknown name 'Payload' at column 14, expected channel, id, "
              "payload or header(\"...\"); did you mean 'payload'?");
    CHECK_STR(err("topic == \"a\""),
              "junction.yaml:12:11: unknown name 'topic' at column 1, expected channel, id, "
              "payload or header(\"...\")");
    CHECK_STR(err("headers(\"X\") == \"a\""),
              "junction.yaml:12:11: unknown function 'headers()' at column 1, expected channel, "
              "id, payload or header(\"...\"); did you mean 'header(\"...\")'?");
    CHECK_STR(err("lower(channel) == \"a\""),
              "junction.yaml:12:11: unknown function 'lower()' at column 1, expected channel, id, "
              "payload or header(\"...\")");
    /* hl7() is available: a bad path is the error now, at the path's column. */
    CHECK_STR(err("hl7(\"MSH9\") == \"ADT^A01\""),
              "junction.yaml:12:15: hl7() at column 5: 'MSH9' is not a valid HL7 path at "
              "character 4; expected a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(err("hl7(MSH-9) == \"ADT\""),
              "junction.yaml:12:15: unexpected 'MSH' at column 5, expected an HL7 path in "
              "quotes, as in hl7(\"MSH-9.1\")");
    CHECK_STR(err("hl7(\"MSH-9\" == \"ADT\""),
              "junction.yaml:12:23: unexpected '==' at column 13, expected ')' to close hl7( at "
              "column 1");
    CHECK_STR(err("channel == \"a\" && json(\"$.type\") == \"order\""),
              "junction.yaml:12:29: 'json' at column 19 is not available yet: json() arrives "
              "with the JSON codec");
    CHECK_STR(err("channel() == \"a\""),
              "junction.yaml:12:18: unexpected '(' at column 8: channel is not a function, "
              "write it without parentheses");
    CHECK_STR(err("header == \"a\""),
              "junction.yaml:12:18: unexpected '==' at column 8, expected '(' after header, as "
              "in header(\"Content-Type\")");
    CHECK_STR(err("header(X) == \"a\""),
              "junction.yaml:12:18: unexpected 'X' at column 8, expected a header name in "
              "quotes, as in header(\"Content-Type\")");
    CHECK_STR(err("header(\"X\" == \"a\""),
              "junction.yaml:12:22: unexpected '==' at column 12, expected ')' to close header( "
              "at column 1");
    CHECK_STR(err("header(\"\")"),
              "junction.yaml:12:18: empty header name at column 8, expected a name such as "
              "header(\"Content-Type\")");
}

static void test_regex_errors(void)
{
    CHECK_STR(err("channel =~ \"(\""),
              "junction.yaml:12:22: invalid regex \"(\" at column 12: Unmatched ( or \\(");
    CHECK_STR(err("channel !~ 'a{2,1}'"),
              "junction.yaml:12:22: invalid regex 'a{2,1}' at column 12: Invalid content of "
              "\\{\\}");
    CHECK_STR(err("channel =~ header(\"X\")"),
              "junction.yaml:12:22: unexpected 'header' at column 12, expected a regex in "
              "quotes after '=~' (patterns are compiled when the config loads)");
    CHECK_STR(err("channel !~ channel"),
              "junction.yaml:12:22: unexpected 'channel' at column 12, expected a regex in "
              "quotes after '!~' (patterns are compiled when the config loads)");
}

#define UNROLLED                                                                                  \
    "once its repetitions are unrolled (at most about 1000 repeated characters, as in a{0,1000})"

/* Patterns that would make regcomp use gigabytes or regexec take exponential time are refused
 * before regcomp sees them. */
static void test_regex_limits(void)
{
    char pat[256];

    /* Found by fuzz_cond: each '+' doubles what glibc unrolls. */
    memset(pat, 0, sizeof(pat));
    memcpy(pat, "channel =~ \"A", 13);
    memset(pat + 13, '+', 120);
    pat[133] = '"';
    CHECK_STR(err(pat), "junction.yaml:12:22: regex \"A++++++++++++++++++++++... at column 12 is "
                        "too large " UNROLLED);
    CHECK_STR(err("id =~ 'a{0,5000}'"),
              "junction.yaml:12:17: regex 'a{0,5000}' at column 7 is too large " UNROLLED);
    CHECK_STR(err("id =~ '((a?){100}){100}'"),
              "junction.yaml:12:17: regex '((a?){100}){100}' at column 7 is too large " UNROLLED);
    CHECK_STR(err("id =~ 'x{,2000}'"),
              "junction.yaml:12:17: regex 'x{,2000}' at column 7 is too large " UNROLLED);
    CHECK_STR(err("id =~ '(a*)\\1'"),
              "junction.yaml:12:17: regex '(a*)\\1' at column 7 uses a backreference (\\1), "
              "which is not supported: matching with one can take exponential time");
    memset(pat, 0, sizeof(pat));
    memcpy(pat, "id =~ '", 7);
    memset(pat + 7, '(', 65);
    pat[72] = '\'';
    CHECK_STR(err(pat), "junction.yaml:12:17: regex '(((((((((((((((((((((((... at column 7 "
                        "nests groups more than 64 deep");
    /* Unbounded repetition of what can match the empty string: found by fuzz_cond, this one
     * alone kept regcomp busy for 80 s. */
    CHECK_STR(err("id =~ 'a?????++++++++'"),
              "junction.yaml:12:17: regex 'a?????++++++++' at column 7 repeats without limit "
              "something that can match the empty string (as in (a?)+ or (a*)*); write it "
              "without the inner ?, * or empty alternative");
    CHECK(strstr(err("id =~ '(a?)+'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ '(a*|b)*'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ '(|b)*'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ '(a?b*){2,}'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ '(^)*'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ '((a?)?)+'"), "repeats without limit") != NULL);
    CHECK(strstr(err("id =~ 'a**'"), "repeats without limit") != NULL);
    /* Bounded repetition of those is fine, and so is unbounded repetition of the rest. */
    CHECK_INT(ev("'aab' =~ '^(a?){0,3}b$'", msg), 1);
    CHECK_INT(ev("'abab' =~ '^(a*b)+$'", msg), 1);
    CHECK_INT(ev("'abab' =~ '^(a|b)*$'", msg), 1);
    CHECK_INT(ev("'abab' =~ '^(a?b)+$'", msg), 1);
    CHECK_INT(ev("'ab' =~ '^a*?b$'", msg), 1);
    /* Ordinary patterns, including the edges of the limit, still work. */
    CHECK_INT(ev("id =~ 'A{0,1000}'", msg), 1);
    CHECK_STR(err("id =~ 'A{0,1000}B'"),
              "junction.yaml:12:17: regex 'A{0,1000}B' at column 7 is too large " UNROLLED);
    CHECK_INT(ev("channel =~ '^[a-z]{1,255}-(in|out)$'", msg), 1);
    CHECK_INT(ev("'10.0.0.1' =~ '^[0-9]{1,3}([.][0-9]{1,3}){3}$'", msg), 1);
    CHECK_INT(ev("'a]b' =~ '^a[]x]b$'", msg), 1);     /* ']' first in a bracket is literal */
    CHECK_INT(ev("'a(b' =~ '^a[(]b$'", msg), 1);      /* '(' in a bracket opens no group */
    CHECK_INT(ev("'ab' =~ '^[[:alpha:]]+$'", msg), 1); /* "[:" ... ":]" inside a bracket */
    CHECK_INT(ev("'a\\1' =~ '[\\1]'", msg), 1);     /* a backslash in brackets is literal */
    CHECK_INT(ev("'a+b' =~ 'a\\+b'", msg), 1);        /* an escaped '+' repeats nothing */
    CHECK_INT(ev("'{x' =~ '^[{]x'", msg), 1);
    CHECK_INT(ev("channel =~ '(o|r|d|e|s)+-in'", msg), 1);
    CHECK_STR(err("id =~ 'a{2,1}'"),
              "junction.yaml:12:17: invalid regex 'a{2,1}' at column 7: Invalid content of "
              "\\{\\}");
}

static void test_positions(void)
{
    struct jn_pos nocol = {"routes.yaml", 3, 0};
    struct jn_pos noline = {"routes.yaml", 0, 0};

    /* Without a position the text still names the column. */
    CHECK_STR(err_at("channel = \"a\"", NULL), "unexpected '=' at column 9; did you mean '=='?");
    /* An unknown column stays unknown rather than becoming the offset. */
    CHECK_STR(err_at("channel = \"a\"", &nocol),
              "routes.yaml:3:0: unexpected '=' at column 9; did you mean '=='?");
    CHECK_STR(err_at("channel = \"a\"", &noline),
              "routes.yaml: unexpected '=' at column 9; did you mean '=='?");
    /* A NULL diag is allowed: the caller only wants to know whether it compiles. */
    CHECK(jn_cond_compile("channel = \"a\"", &P, NULL) == NULL);
}

static void test_limits(void)
{
    char *s = malloc(4200);
    size_t n = 0;

    CHECK(s != NULL);
    if (s == NULL) {
        return;
    }
    /* Exactly the limit compiles; one more byte does not. */
    for (int i = 0; i < 1000; i++) {
        memcpy(s + n, "\"\"||", 4);
        n += 4;
    }
    memcpy(s + n, "id", 2);
    n += 2;
    while (n < 4096) {
        s[n++] = ' ';
    }
    s[n] = '\0';
    CHECK_INT(strlen(s), 4096);
    CHECK_INT(ev(s, msg), 1);
    s[n++] = ' ';
    s[n] = '\0';
    CHECK_STR(err(s), "junction.yaml:12:11: condition is too long (more than 4096 bytes); split "
                      "it across routes");

    /* 64 levels of parentheses are fine, 65 are not. */
    n = 0;
    for (int i = 0; i < 64; i++) {
        s[n++] = '(';
    }
    memcpy(s + n, "id", 2);
    n += 2;
    for (int i = 0; i < 64; i++) {
        s[n++] = ')';
    }
    s[n] = '\0';
    CHECK_INT(ev(s, msg), 1);
    n = 0;
    for (int i = 0; i < 65; i++) {
        s[n++] = '(';
    }
    s[n++] = 'x';
    s[n] = '\0';
    CHECK_STR(err(s), "junction.yaml:12:75: condition nests too deeply at column 65 (more than "
                      "64 levels of parentheses)");
    /* Hostile input: thousands of '(' stop at the limit, not the stack. */
    memset(s, '(', 4000);
    s[4000] = '\0';
    CHECK_STR(err(s), "junction.yaml:12:75: condition nests too deeply at column 65 (more than "
                      "64 levels of parentheses)");
    /* A run of '!' is a loop, not recursion; 4001 of them negate once. */
    memset(s, '!', 4001);
    memcpy(s + 4001, "id", 3);
    CHECK_INT(ev(s, msg), 0);
    /* Many alternatives under one n-ary node. */
    n = 0;
    for (int i = 0; i < 800; i++) {
        memcpy(s + n, "\"\"||", 4);
        n += 4;
    }
    memcpy(s + n, "!id", 4);
    CHECK_INT(ev(s, msg), 0);
    free(s);
}

static void test_free_and_null(void)
{
    jn_cond_free(NULL);
    /* No condition matches everything: a route without `when:`. */
    CHECK_INT(jn_cond_eval(NULL, msg), 1);
}

/* Every failed allocation while compiling must give NULL, no crash and no leak. */
static void test_out_of_memory(void)
{
    const char *expr = "(channel == \"orders-in\" || channel =~ '^lab-') && "
                       "header(\"Content-Type\") =~ \"^application/(json|xml)\" && "
                       "!(payload == '' || header('X-Skip') != \"\") && id !~ \"^0+$\"";
    int compiled = 0;
    long n;

    for (n = 0; n < 1000 && !compiled; n++) {
        struct jn_diag d;
        struct jn_cond *c;

        jn_diag_init(&d);
        jn_mem_fail_after(n);
        c = jn_cond_compile(expr, &P, &d);
        jn_mem_fail_after(-1);
        if (c != NULL) {
            compiled = 1;
            CHECK_INT(jn_cond_eval(c, msg), 1);
            CHECK_INT(d.n, 0);
            jn_cond_free(c);
        } else {
            /* The diag may itself have failed to allocate; if it kept a message, it is this. */
            CHECK(d.n <= 1);
            if (d.n == 1) {
                CHECK_STR(d.msgs[0], "junction.yaml:12:11: out of memory while compiling the "
                                     "condition");
            } else {
                CHECK(d.oom);
            }
        }
        jn_diag_free(&d);
    }
    CHECK(compiled);
    CHECK(n > 3); /* several allocation points were actually exercised */
}

struct eval_job {
    const struct jn_cond *c;
    int ok;
};

static void *eval_thread(void *arg)
{
    struct eval_job *j = arg;

    j->ok = 1;
    for (int i = 0; i < 20000; i++) {
        if (jn_cond_eval(j->c, i % 2 ? msg : msg_bare) != (i % 2)) {
            j->ok = 0;
        }
    }
    return NULL;
}

/* One compiled condition, evaluated from several threads at once. */
static void test_threads(void)
{
    struct jn_diag d;
    struct jn_cond *c;
    pthread_t t[4];
    struct eval_job jobs[4];

    jn_diag_init(&d);
    c = jn_cond_compile("header(\"content-type\") =~ \"^application/(json|xml)\" && "
                        "payload =~ '\"total\":[0-9]+' && channel == \"orders-in\"", &P, &d);
    CHECK(c != NULL);
    if (c != NULL) {
        for (int i = 0; i < 4; i++) {
            jobs[i].c = c;
            jobs[i].ok = 0;
            CHECK_INT(pthread_create(&t[i], NULL, eval_thread, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            CHECK(jobs[i].ok);
        }
    }
    jn_cond_free(c);
    jn_diag_free(&d);
}

/* hl7(): paths, decoding, absent values, non-HL7 payloads, long values, threads. */
struct hl7_job {
    struct jn_cond *c;
    const struct jn_msg *m;
    int ok;
};

static void *hl7_thread(void *arg)
{
    struct hl7_job *j = arg;

    j->ok = 1;
    for (int i = 0; i < 2000; i++) {
        j->ok &= jn_cond_eval(j->c, j->m) == 1;
    }
    return NULL;
}

static void test_hl7(void)
{
    static const char adt[] =
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01^ADT_A01|MSG0001|P|2.5\r"
        "PID|1||123^^^MRN~456^^^SSN||Smith\\T\\Jones^Ann||\"\"|\r"
        "OBX|1|ST|a\r"
        "OBX|2|ST|b\r"
        "OBX|3|ST|c^x&y\r";
    struct jn_msg *m = jn_msg_new("adt-in", adt, sizeof(adt) - 1);
    struct jn_msg *big;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_diag d;
    struct jn_cond *c;
    pthread_t t[4];
    struct hl7_job jobs[4];

    CHECK(m != NULL);
    if (m == NULL) {
        return;
    }
    CHECK_INT(ev("hl7(\"MSH-9.1\") == \"ADT\"", m), 1);
    CHECK_INT(ev("hl7(\"MSH-9.1\") == \"ADT\" && hl7(\"MSH-9.2\") =~ \"A0[1-8]\"", m), 1);
    CHECK_INT(ev("hl7(\"MSH-9\") == \"ADT^A01^ADT_A01\"", m), 1);
    CHECK_INT(ev("hl7(\"MSH-10\") == 'MSG0001'", m), 1);
    CHECK_INT(ev("hl7(\"MSH-1\") == '|' && hl7(\"MSH-2\") == '^~\\\\&'", m), 1);
    CHECK_INT(ev("hl7(\"PID-3[2].1\") == \"456\" && hl7(\"PID-3.4\") == \"MRN\"", m), 1);
    CHECK_INT(ev("hl7(\"PID-5.1\") == \"Smith&Jones\"", m), 1); /* \T\ decoded */
    CHECK_INT(ev("hl7(\"PID-7\") == '\"\"'", m), 1);             /* explicit null */
    CHECK_INT(ev("hl7(\"PID-8\") == \"\" && !hl7(\"PID-8\")", m), 1);  /* empty */
    CHECK_INT(ev("hl7(\"PID-99\") == \"\"", m), 1);                   /* absent */
    CHECK_INT(ev("hl7(\"OBX[3]-3.2.2\") == \"y\" && hl7(\"OBX[2]-3\") == \"b\"", m), 1);
    CHECK_INT(ev("hl7(\"OBX[4]-3\")", m), 0);
    CHECK_INT(ev("hl7(\"ZZZ-1\") == \"\"", m), 1);
    /* Not HL7: every hl7() value is empty. */
    CHECK_INT(ev("hl7(\"MSH-9.1\") == \"\"", msg), 1);
    CHECK_INT(ev("hl7(\"MSH-9.1\")", msg_bare), 0);

    /* A value longer than the inline buffer is decoded on the heap. */
    jn_buf_puts(&b, "MSH|^~\\&|||||||ORU^R01|X|P|2.5\rOBX|1|TX|");
    for (int i = 0; i < 3000; i++) {
        jn_buf_puts(&b, i % 100 == 0 ? "\\F\\" : "a");
    }
    jn_buf_puts(&b, "\r");
    big = jn_msg_new("adt-in", b.p, b.len);
    CHECK(big != NULL);
    CHECK_INT(ev("hl7(\"OBX-3\") =~ \"^\\|a{99}\\|\" && hl7(\"OBX-3\") !~ \"F\"", big), 1);
    jn_buf_reset(&b);
    jn_msg_unref(&big);

    jn_diag_init(&d);
    c = jn_cond_compile("hl7(\"MSH-9.1\") == \"ADT\" && hl7(\"PID-3[2].4\") == \"SSN\"", &P,
                        &d);
    CHECK(c != NULL);
    if (c != NULL) {
        for (int i = 0; i < 4; i++) {
            jobs[i].c = c;
            jobs[i].m = m;
            jobs[i].ok = 0;
            CHECK_INT(pthread_create(&t[i], NULL, hl7_thread, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            CHECK(jobs[i].ok);
        }
    }
    jn_cond_free(c);
    jn_diag_free(&d);
    jn_msg_unref(&m);
}

int main(void)
{
    msg = make_msg();
    msg_nul = jn_msg_new("orders-in", "ab\0cd", 5);
    msg_bare = jn_msg_new("lab-in", NULL, 0);
    if (msg_nul == NULL || msg_bare == NULL) {
        abort();
    }

    test_equality();
    test_escapes();
    test_regex();
    test_payload_with_nul();
    test_headers();
    test_truthiness();
    test_logic();
    test_precedence();
    test_syntax_errors();
    test_name_errors();
    test_regex_errors();
    test_regex_limits();
    test_positions();
    test_limits();
    test_free_and_null();
    test_out_of_memory();
    test_threads();
    test_hl7();

    jn_msg_unref(&msg);
    jn_msg_unref(&msg_nul);
    jn_msg_unref(&msg_bare);
    TEST_MAIN_END();
}
