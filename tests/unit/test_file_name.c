/* Unit tests of file OUT's pure helpers (channels/file_name.c): rendered names, separator
 * escapes, numbered final names, where a torn tail starts. */
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
    TEST_MAIN_END();
}
