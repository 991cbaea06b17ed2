/* Unit tests of file OUT's pure helpers (channels/file_name.c): rendered names, separator
 * escapes, numbered final names, where a torn tail starts, HL7 batch records and the count of
 * a leftover batch file. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "file_int.h"
#include "jn_test.h"

static int name_ok(const char *n)
{
    char why[128];

    return jn_file__name_check(n, why, sizeof(why)) == 0;
}

static const char *sep(const char *s, size_t *len)
{
    static unsigned char out[16];
    static char why[128];

    if (jn_file__sep_decode(s, out, sizeof(out), len, why, sizeof(why)) != 0) {
        return why;
    }
    return (const char *)out;
}

static size_t cut(const char *buf, const char *s)
{
    return jn_file__cut_torn((const unsigned char *)buf, strlen(buf), (const unsigned char *)s,
                             strlen(s));
}

/* jn_file__hl7_norm of s, as a string (static). */
static const char *norm(const char *s)
{
    static unsigned char out[128];
    size_t n = jn_file__hl7_norm((const unsigned char *)s, strlen(s), out);

    out[n] = '\0';
    return (const char *)out;
}

/* Scans s in chunks of step bytes (a segment name across a seam). */
static struct jn_file_hl7_scan scan(const char *s, size_t step)
{
    struct jn_file_hl7_scan sc = JN_FILE_HL7_SCAN_INIT;
    size_t len = strlen(s);

    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        jn_file__hl7_scan(&sc, (const unsigned char *)s + off, n, off);
    }
    return sc;
}

int main(void)
{
    char out[64], lng[NAME_MAX + 8];
    size_t len = 0;
    const char *r;

    /* Names: relative, no empty, "." or ".." parts, parts short enough for ".<part>.part". */
    CHECK(name_ok("a.msg"));
    CHECK(name_ok("2026-12-07/11.ndjson"));
    CHECK(name_ok("a/b/c/.hidden"));
    CHECK(name_ok("..a/b..")); /* only a whole ".." part is refused */
    CHECK(!name_ok(""));
    CHECK(!name_ok("/etc/passwd"));
    CHECK(!name_ok("a//b"));
    CHECK(!name_ok("a/"));
    CHECK(!name_ok("."));
    CHECK(!name_ok(".."));
    CHECK(!name_ok("a/../../b"));
    CHECK(!name_ok("a/./b"));
    memset(lng, 'x', NAME_MAX - JN_FILE__PART_EXTRA);
    lng[NAME_MAX - JN_FILE__PART_EXTRA] = '\0';
    CHECK(name_ok(lng));
    strcat(lng, "y");
    CHECK(!name_ok(lng));
    {
        char why[128];
        CHECK_INT(jn_file__name_check("a/../b", why, sizeof(why)), -1);
        CHECK_STR(why, "has a '..' part; names stay inside dir");
    }

    /* Separators. */
    r = sep("\\n", &len);
    CHECK_INT(len, 1);
    CHECK(r[0] == '\n');
    r = sep("\\r\\n--\\r\\n", &len);
    CHECK_INT(len, 6);
    CHECK(memcmp(r, "\r\n--\r\n", 6) == 0);
    r = sep("\\x00\\x1c\\\\|", &len);
    CHECK_INT(len, 4);
    CHECK(memcmp(r, "\0\x1c\\|", 4) == 0);
    r = sep("\n", &len); /* a real newline (YAML decoded it) stays */
    CHECK_INT(len, 1);
    CHECK(r[0] == '\n');
    CHECK_STR(sep("a\\q", &len), "unknown escape '\\q' (known: \\n \\r \\t \\0 \\\\ \\xHH)");
    CHECK_STR(sep("\\x4", &len), "\\x at offset 0 needs two hex digits");
    CHECK_STR(sep("ab\\", &len), "ends with a lone '\\'");
    CHECK_STR(sep("", &len), "must not be empty (records could not be told apart)");
    CHECK_STR(sep("0123456789abcdefg", &len), "is longer than 16 bytes");

    /* Numbered final names. */
    CHECK_INT(jn_file__numbered("11.ndjson", 0, out, sizeof(out)), 0);
    CHECK_STR(out, "11.ndjson");
    CHECK_INT(jn_file__numbered("11.ndjson", 3, out, sizeof(out)), 0);
    CHECK_STR(out, "11.3.ndjson");
    CHECK_INT(jn_file__numbered("a.tar.gz", 12, out, sizeof(out)), 0);
    CHECK_STR(out, "a.tar.12.gz");
    CHECK_INT(jn_file__numbered("log", 2, out, sizeof(out)), 0);
    CHECK_STR(out, "log.2");
    CHECK_INT(jn_file__numbered(".rc", 2, out, sizeof(out)), 0);
    CHECK_STR(out, ".rc.2");
    CHECK_INT(jn_file__numbered("11.ndjson", 3, out, 8), -1);

    /* Torn tails: the length up to and including the last separator. */
    CHECK_INT(cut("a\nb\n", "\n"), 4);
    CHECK_INT(cut("a\nb\ntor", "\n"), 4);
    CHECK_INT(cut("torn", "\n"), 0);
    CHECK_INT(cut("", "\n"), 0);
    CHECK_INT(cut("a\r\n--\r\nb\r\n-", "\r\n--\r\n"), 7);
    CHECK_INT(cut("a||b|", "||"), 3);

    /* HL7 batch records: every segment ends in CR, LF and CRLF become CR. */
    CHECK_STR(norm("MSH|a\rPID|b\r"), "MSH|a\rPID|b\r");
    CHECK_STR(norm("MSH|a\nPID|b"), "MSH|a\rPID|b\r");
    CHECK_STR(norm("MSH|a\r\nPID|b\r\n"), "MSH|a\rPID|b\r");
    CHECK_STR(norm("\n"), "\r");
    CHECK_STR(norm(""), "\r");
    CHECK(jn_file__hl7_clean((const unsigned char *)"MSH|a\r", 6));
    CHECK(!jn_file__hl7_clean((const unsigned char *)"MSH|a", 5));
    CHECK(!jn_file__hl7_clean((const unsigned char *)"MSH|a\n\r", 7));
    CHECK(!jn_file__hl7_clean((const unsigned char *)"", 0));

    /* A leftover batch: MSH segments before the first BTS, and where that BTS starts. */
    {
        const char *f = "FHS|^~\\&\rBHS|^~\\&\rMSH|1\rPID|MSH\rMSH|2\rBTS|2\rFTS|1\r";
        const char *bts = strstr(f, "BTS");
        for (size_t step = 1; step <= 8; step++) {
            struct jn_file_hl7_scan sc = scan(f, step);
            CHECK_INT((int)sc.msgs, 2);
            CHECK_INT((int)sc.bts, (int)(bts - f));
        }
        struct jn_file_hl7_scan sc = scan("FHS|\rBHS|\rMSH|1\rMSH|2\rMS", 5);
        CHECK_INT((int)sc.msgs, 2);
        CHECK_INT((int)sc.bts, -1);
        sc = scan("FHS|\rBHS|\r", 3);
        CHECK_INT((int)sc.msgs, 0);
    }
    TEST_MAIN_END();
}
