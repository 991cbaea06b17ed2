/*
 * Unit tests for the HL7 v2 codec (adapters/hl7.h): the corpus in tests/data/hl7 parses,
 * serializes back byte for byte, converts to the expected JSON (<name>.json beside it) and back
 * to the same bytes; paths, escapes, nulls, batches, strict mode, every parse error's text, and
 * allocation failure.
 *
 * JN_HL7_REGEN=1 rewrites the expected .json files (then review the diff).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_test.h"

#define DATA "tests/data/hl7/"

static const char *const corpus[] = {
    "adt_a01", "separators", "escapes", "utf8", "zsegments", "nulls",
    "batch", "crlf", "lf", "mixed_ends", "v27_trunc",
};
/* Those whose segment ends are CR only, so strict mode takes them. */
static const char *const strict_ok[] = {
    "adt_a01", "separators", "escapes", "utf8", "zsegments", "nulls", "batch", "v27_trunc",
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct jn_buf b = JN_BUF_INIT;
    char tmp[4096];
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        jn_buf_append(&b, tmp, n);
    }
    fclose(f);
    *len = b.len;
    return jn_buf_steal(&b);
}

static int in_list(const char *name, const char *const *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

static char *to_json_text(const struct jn_hl7_msg *m)
{
    json_t *j = jn_hl7_to_json(m);
    char *s, *r;

    if (j == NULL) {
        return NULL;
    }
    s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL) {
        return NULL;
    }
    r = jn_strdup(s);
    free(s);
    return r;
}

static void test_corpus(void)
{
    int regen = getenv("JN_HL7_REGEN") != NULL;

    for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        char path[256];
        size_t len = 0, jlen = 0;
        char *data, *want, *got;
        struct jn_hl7_msg *m = NULL;
        struct jn_buf out = JN_BUF_INIT;
        struct jn_err err;
        json_t *j;
        json_error_t je;
        int strict;

        snprintf(path, sizeof(path), DATA "%s.hl7", corpus[i]);
        data = slurp(path, &len);
        CHECK(data != NULL);
        if (data == NULL) {
            continue;
        }
        CHECK_INT(jn_hl7_parse(data, len, 0, &m, &err), 0);
        if (m == NULL) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
            jn_free(data);
            continue;
        }
        /* Byte for byte back. */
        CHECK_INT(jn_hl7_write(m, &out), 0);
        CHECK(out.len == len && memcmp(out.p, data, len) == 0);
        jn_buf_reset(&out);

        /* The expected JSON. */
        got = to_json_text(m);
        CHECK(got != NULL);
        snprintf(path, sizeof(path), DATA "%s.json", corpus[i]);
        if (regen && got) {
            FILE *f = fopen(path, "wb");
            fprintf(f, "%s\n", got);
            fclose(f);
        }
        want = slurp(path, &jlen);
        if (want && jlen > 0 && want[jlen - 1] == '\n') {
            want[jlen - 1] = '\0';
        }
        if (got && want && strcmp(got, want) != 0) {
            fprintf(stderr, "%s differs:\n  got:  %s\n  want: %s\n", path, got, want);
        }
        CHECK(got && want && strcmp(got, want) == 0);

        /* And JSON -> HL7 gives the input back. */
        j = got ? json_loads(got, JSON_ALLOW_NUL, &je) : NULL;
        CHECK(j != NULL);
        if (j) {
            CHECK_INT(jn_hl7_from_json(j, &out, &err), 0);
            if (!(out.len == len && memcmp(out.p, data, len) == 0)) {
                fprintf(stderr, "%s: json -> hl7 differs: %s\n", corpus[i], out.p);
            }
            CHECK(out.len == len && memcmp(out.p, data, len) == 0);
            json_decref(j);
        }
        jn_buf_reset(&out);
        jn_free(got);
        jn_free(want);
        jn_hl7_free(m);

        /* Strict mode takes CR-only messages and refuses the others. */
        strict = in_list(corpus[i], strict_ok, sizeof(strict_ok) / sizeof(strict_ok[0]));
        m = NULL;
        CHECK_INT(jn_hl7_parse(data, len, JN_HL7_STRICT, &m, &err), strict ? 0 : JN_EPROTO);
        jn_hl7_free(m);
        jn_free(data);
    }
}

/* The decoded value at path in the corpus file name, or "(absent)". */
static const char *val(const char *name, const char *path)
{
    static char out[1024];
    char file[256];
    size_t len;
    char *data;
    struct jn_hl7_path p;
    struct jn_hl7_span s;
    struct jn_hl7_delims d;
    struct jn_err err;

    snprintf(file, sizeof(file), DATA "%s.hl7", name);
    data = slurp(file, &len);
    if (data == NULL) {
        return "(no file)";
    }
    if (jn_hl7_path_parse(path, strlen(path), &p, &err) != 0) {
        jn_free(data);
        return "(bad path)";
    }
    if (jn_hl7_lookup(data, len, &p, &s) != 1) {
        jn_free(data);
        return "(absent)";
    }
    jn_hl7_delims_read(data, len, &d, NULL);
    jn_hl7_unescape(&d, s.p, s.len, out, sizeof(out));
    jn_free(data);
    return out;
}

static void test_paths(void)
{
    CHECK_STR(val("adt_a01", "MSH-9.1"), "ADT");
    CHECK_STR(val("adt_a01", "MSH-9.2"), "A01");
    CHECK_STR(val("adt_a01", "MSH-9"), "ADT^A01^ADT_A01");
    CHECK_STR(val("adt_a01", "MSH-1"), "|");
    CHECK_STR(val("adt_a01", "MSH-2"), "^~\\&");
    CHECK_STR(val("adt_a01", "MSH-10"), "MSG00001");
    CHECK_STR(val("adt_a01", "PID-3[2].1"), "123456789");
    CHECK_STR(val("adt_a01", "PID-3[2].4"), "USSSA");
    CHECK_STR(val("adt_a01", "PID-3.5"), "MR");
    CHECK_STR(val("adt_a01", "PID-3[3]"), "(absent)");
    CHECK_STR(val("adt_a01", "PID[1]-5.2"), "ADAM");
    CHECK_STR(val("adt_a01", "PID[2]-5"), "(absent)");
    CHECK_STR(val("adt_a01", "PV1-3.2"), "2012");
    CHECK_STR(val("adt_a01", "PV1-15"), "A0");
    CHECK_STR(val("adt_a01", "PV1-16"), "");
    CHECK_STR(val("adt_a01", "PV1-17"), "(absent)");
    CHECK_STR(val("adt_a01", "PV1-3.2.1"), "2012");
    CHECK_STR(val("adt_a01", "PV1-3.2.2"), "(absent)");
    CHECK_STR(val("adt_a01", "ZZZ-1"), "(absent)");
    /* Other delimiters: # * @ ! $ */
    CHECK_STR(val("separators", "MSH-1"), "#");
    CHECK_STR(val("separators", "MSH-2"), "*@!$");
    CHECK_STR(val("separators", "MSH-9.2"), "R01");
    CHECK_STR(val("separators", "PID-3.2"), "*");
    CHECK_STR(val("separators", "PID-3[2]"), "88");
    CHECK_STR(val("separators", "PID-4"), "|pipe is data|");
    CHECK_STR(val("separators", "PID-5.2.2"), "MARIE");
    CHECK_STR(val("separators", "OBX-5"), "5#6 with $ and @ and !");
    /* Every escape. */
    CHECK_STR(val("escapes", "OBX[1]-5"), "a|b^c&d~e\\f");
    CHECK_STR(val("escapes", "OBX[2]-5"), "line one\nline two");
    CHECK_STR(val("escapes", "OBX[3]-5"), "hex \r\n and A and \\xzz\\ kept");
    CHECK_STR(val("escapes", "OBX[4]-5"), "\\H\\bold\\N\\ \\Zcustom\\ \\.sp\\ \\Cxxyy\\ end");
    CHECK_STR(val("escapes", "OBX[5]-5"), "unterminated \\F");
    CHECK_STR(val("v27_trunc", "PID-6"), "#literal hash");
    CHECK_STR(val("v27_trunc", "MSH-2"), "^~\\&#");
    CHECK_STR(val("utf8", "PID-5.1"), "Müller");
    CHECK_STR(val("utf8", "MSH-18"), "UNICODE UTF-8");
    CHECK_STR(val("utf8", "NTE-3"), "日本語のメモ 🙂");
    CHECK_STR(val("nulls", "PID-5"), "\"\"");
    CHECK_STR(val("nulls", "PID-6.1"), "\"\"");
    CHECK_STR(val("zsegments", "ZPI-2.2.2"), "flag");
    CHECK_STR(val("zsegments", "ZPI-3[2]"), "repeat");
    CHECK_STR(val("zsegments", "Z01-1"), "x");
    CHECK_STR(val("lf", "PID-5.1"), "EVERYMAN");
    CHECK_STR(val("crlf", "PV1-2"), "I");
    CHECK_STR(val("mixed_ends", "NTE-3"), "last, no end");
    CHECK_STR(val("batch", "MSH[3]-10"), "B3");
    CHECK_STR(val("batch", "OBX[2]-5"), "6");
    CHECK_STR(val("batch", "BTS-1"), "3");
    CHECK(jn_hl7_is_null("\"\"", 2));
    CHECK(!jn_hl7_is_null("\"", 1));
    CHECK(!jn_hl7_is_null("", 0));
}

static const char *path_err(const char *s)
{
    static struct jn_err err;
    struct jn_hl7_path p;

    jn_err_clear(&err);
    if (jn_hl7_path_parse(s, strlen(s), &p, &err) == 0) {
        return "(ok)";
    }
    return err.msg;
}

static void test_path_parse(void)
{
    struct jn_hl7_path p;

    CHECK_INT(jn_hl7_path_parse("OBX[3]-5[2].1.4", 15, &p, NULL), 0);
    CHECK_STR(p.seg, "OBX");
    CHECK_INT(p.occ, 3);
    CHECK_INT(p.field, 5);
    CHECK_INT(p.rep, 2);
    CHECK_INT(p.comp, 1);
    CHECK_INT(p.sub, 4);
    CHECK_INT(jn_hl7_path_parse("MSH-9", 5, &p, NULL), 0);
    CHECK_INT(p.occ, 1);
    CHECK_INT(p.rep, 1);
    CHECK_INT(p.comp, 0);
    CHECK_STR(path_err("MSH"), "'MSH' is not a valid HL7 path at character 4; expected a path "
                               "such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(path_err("msh-9"), "'msh-9' does not start with a segment id (three of A-Z, 0-9); "
                                 "expected a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(path_err("PID-0"), "'PID-0' is not a valid HL7 path at character 5; expected a "
                                 "path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(path_err("PID-3[0]"), "'PID-3[0]' is not a valid HL7 path at character 7; "
                                    "expected a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(path_err("PID-3.1.2.3"), "'PID-3.1.2.3' is not a valid HL7 path at character 10; "
                                       "expected a path such as MSH-9.1, PID-3[2].1 or "
                                       "OBX[3]-5");
    CHECK_STR(path_err("PID-999999"), "'PID-999999' is not a valid HL7 path at character 5; "
                                      "expected a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(path_err("PID[2-3"), "'PID[2-3' is not a valid HL7 path at character 6; expected "
                                   "a path such as MSH-9.1, PID-3[2].1 or OBX[3]-5");
}

/* The parse's error, or "(ok)"; jn_hl7_check must give the same answer. */
static const char *parse_err(const char *s, unsigned flags)
{
    static struct jn_err err;
    struct jn_err cerr;
    struct jn_hl7_msg *m = NULL;
    int rc, crc;

    jn_err_clear(&err);
    jn_err_clear(&cerr);
    rc = jn_hl7_parse(s, strlen(s), flags, &m, &err);
    crc = jn_hl7_check(s, strlen(s), flags, &cerr);
    CHECK_INT(crc, rc);
    CHECK_STR(cerr.msg, err.msg);
    if (rc == 0) {
        jn_hl7_free(m);
        return "(ok)";
    }
    return err.msg;
}

static void test_parse_errors(void)
{
    CHECK_STR(parse_err("", 0), "the message does not start with MSH (or FHS/BHS for a batch)");
    CHECK_STR(parse_err("PID|1\r", 0),
              "the message does not start with MSH (or FHS/BHS for a batch)");
    CHECK_STR(parse_err("MSH", 0), "MSH is truncated: no field separator (MSH-1)");
    CHECK_STR(parse_err("MSH|^~", 0), "MSH-2 has 2 encoding characters, expected 4 (such as "
                                      "^~\\&)");
    CHECK_STR(parse_err("MSH|^~\\&$%|", 0), "MSH-2 has more than 5 encoding characters");
    CHECK_STR(parse_err("MSH|^~\\^|", 0), "MSH-1/MSH-2: the delimiter '^' is used twice");
    CHECK_STR(parse_err("MSHA^~\\&", 0), "MSH-1: 'A' cannot be a delimiter");
    /* Found by fuzz_hl7: a delimiter that is not ASCII could not be carried in JSON. */
    CHECK_STR(parse_err("MSH|^\xfc\\&|I^|H^||N|\r", 0), "MSH-2: 0xfc cannot be a delimiter");
    CHECK_STR(parse_err("MSH ^~\\&", 0), "MSH-1: 0x20 cannot be a delimiter");
    CHECK_STR(parse_err("MSH|^~\\&|\rpid|1\r", 0), "segment 2: 'pid' is not a segment id, "
                                                   "expected three of A-Z, 0-9 followed by |");
    CHECK_STR(parse_err("MSH|^~\\&|\rPID^1\r", 0), "segment 2: 'PID' is not a segment id, "
                                                   "expected three of A-Z, 0-9 followed by |");
    CHECK_STR(parse_err("MSH|^~\\&|\rP\r", 0), "segment 2: 'P' is not a segment id, expected "
                                               "three of A-Z, 0-9 followed by |");
    CHECK_STR(parse_err("MSH|^~\\&|\rPID|\x1c\r", 0), "segment 2 (PID): byte 0x1c at offset "
                                                      "14 is an MLLP frame marker, not data");
    /* The first marker of the two kinds is the one named. */
    CHECK_STR(parse_err("MSH|^~\\&|\rPID|a\x0b" "b\x1c\r", 0), "segment 2 (PID): byte 0x0b at "
              "offset 15 is an MLLP frame marker, not data");
    CHECK_STR(parse_err("MSH|^~\\&|\rPID|a\x1c" "b\x0b\r", 0), "segment 2 (PID): byte 0x1c at "
              "offset 15 is an MLLP frame marker, not data");
    CHECK_STR(parse_err("MSH|^~\\&|\r\rPID|1\r", JN_HL7_STRICT), "segment 2 is empty (a CR on "
                                                                 "its own)");
    CHECK_STR(parse_err("MSH|^~\\&|\r\nPID|1\r", JN_HL7_STRICT),
              "LF at offset 10 (a CRLF); strict mode takes CR only as the segment end");
    CHECK_STR(parse_err("MSH|^~\\&|\nPID|1\r", JN_HL7_STRICT),
              "LF at offset 9; strict mode takes CR only as the segment end");
    CHECK_STR(parse_err("MSH|^~\\&|\r\nPID|1\r\n\r\n", 0), "(ok)");
    CHECK_STR(parse_err("MSH|^~\\&|\rMSH|^~\\&#|\r", 0), "segment 2 (MSH): its delimiters "
                                                         "differ from the first header's");
    CHECK_STR(parse_err("MSH|^~\\&", 0), "(ok)");
    CHECK_STR(parse_err("FHS|^~\\&|\rBHS|^~\\&|\rBTS|0\rFTS|1", 0), "(ok)");
}

static void test_escape_roundtrip(void)
{
    struct jn_hl7_delims d = {'|', '^', '~', '\\', '&', 0};
    struct jn_buf b = JN_BUF_INIT;
    char out[64];
    static const char text[] = "a|b^c~d\\e&f\ng\rh\"\x01";
    size_t n;

    CHECK_INT(jn_hl7_escape(&d, text, sizeof(text) - 1, &b), 0);
    CHECK_STR(b.p, "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\.br\\g\\X0D\\h\"\\X01\\");
    n = jn_hl7_unescape(&d, b.p, b.len, out, sizeof(out));
    CHECK_INT(n, sizeof(text) - 1);
    CHECK(memcmp(out, text, n) == 0);
    jn_buf_reset(&b);
    /* Found by fuzz_hl7: with '.' as the escape character, a line break goes as hex. */
    {
        struct jn_hl7_delims dot = {'|', '^', '\\', '.', '#', 0};
        CHECK_INT(jn_hl7_escape(&dot, "a\nb.", 4, &b), 0);
        CHECK_STR(b.p, "a.X0A.b.E.");
        n = jn_hl7_unescape(&dot, b.p, b.len, out, sizeof(out));
        CHECK_INT(n, 4);
        CHECK(memcmp(out, "a\nb.", 4) == 0);
        jn_buf_reset(&b);
    }
    /* Two quotes as text are not the null. */
    CHECK_INT(jn_hl7_escape(&d, "\"\"", 2, &b), 0);
    CHECK_STR(b.p, "\\X2222\\");
    jn_buf_reset(&b);
    /* The decoded length never exceeds the raw one, and a short buffer is cut, terminated. */
    n = jn_hl7_unescape(&d, "abc\\F\\def", 9, out, 4);
    CHECK_INT(n, 7);
    CHECK_STR(out, "abc");
    n = jn_hl7_unescape(&d, "\\X\\ \\X4\\ \\X4G\\", 14, out, sizeof(out));
    CHECK_STR(out, "\\X\\ \\X4\\ \\X4G\\");
    CHECK_INT(n, 14);
}

static void test_batch_split(void)
{
    size_t len, n = 0;
    char *data = slurp(DATA "batch.hl7", &len);
    struct jn_hl7_msg *m = NULL;
    struct jn_hl7_span *parts = NULL;

    CHECK(data != NULL);
    if (data == NULL) {
        return;
    }
    CHECK_INT(jn_hl7_parse(data, len, 0, &m, NULL), 0);
    CHECK_INT(jn_hl7_split(m, &parts, &n), 0);
    CHECK_INT(n, 3);
    for (size_t i = 0; i < n && i < 3; i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500||ORU^R01^ORU_R01|B%zu|P|2.5\r"
                 "PID|1||%zu^^^MR\rOBX|1|NM|GLU||%zu\r", i + 1, i + 1, i + 5);
        CHECK(parts[i].len == strlen(want) && memcmp(parts[i].p, want, parts[i].len) == 0);
    }
    jn_free(parts);
    jn_hl7_free(m);
    jn_free(data);
}

static void test_from_json_errors(void)
{
    static const struct {
        const char *json;
        const char *err;
    } cases[] = {
        {"[]", "expected an object with a non-empty \"segments\" array"},
        {"{\"segments\":[[\"PID\",\"1\"]]}", "segments[0]: the first segment must be MSH, FHS or "
                                             "BHS, not PID"},
        {"{\"segments\":[[\"MSH\",\"|\"]]}", "segments[0]: a header segment needs its field "
                                             "separator (1 character) and encoding characters (4 "
                                             "or 5) as elements 1 and 2"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\^\"]]}", "segments[0]: MSH-1/MSH-2: the "
                                                        "delimiter '^' is used twice"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\"],[\"pid\"]]}", "segments[1]: expected an "
                                                                   "array starting with a "
                                                                   "segment id (three of A-Z, "
                                                                   "0-9)"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\",5]]}", "segments[0][3]: expected a string, "
                                                          "null, {\"raw\": ...} or "
                                                          "{\"raw_hex\": ...}"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\",{\"raw\":\"a|b\"}]]}",
         "segments[0][3]: \"raw\" holds a delimiter or a line end"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\",[[[\"x\"]]]]]}",
         "segments[0][3]: arrays nest too deep (a subcomponent is a string or null)"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\",{\"repeat\":[]}]]}",
         "segments[0][3]: \"repeat\" must be a non-empty array"},
        {"{\"segments\":[[\"MSH\",\"|\",\"^~\\\\&\"]],\"eol\":\"x\"}",
         "segments[0]: a segment end may hold only CR and LF"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t je;
        json_t *j = json_loads(cases[i].json, 0, &je);
        struct jn_buf b = JN_BUF_INIT;
        struct jn_err err;
        CHECK(j != NULL);
        jn_err_clear(&err);
        CHECK_INT(jn_hl7_from_json(j, &b, &err), JN_EINVAL);
        CHECK_STR(err.msg, cases[i].err);
        jn_buf_reset(&b);
        json_decref(j);
    }
}

/* Every allocation in parse and split fails in turn: a clean JN_ENOMEM, never a crash. */
static void test_out_of_memory(void)
{
    size_t len;
    char *data = slurp(DATA "batch.hl7", &len);
    int ok = 0;

    CHECK(data != NULL);
    for (long n = 0; data && n < 20 && !ok; n++) {
        struct jn_hl7_msg *m = NULL;
        struct jn_hl7_span *parts = NULL;
        size_t np = 0;
        int rc;
        jn_mem_fail_after(n);
        rc = jn_hl7_parse(data, len, 0, &m, NULL);
        if (rc == 0) {
            rc = jn_hl7_split(m, &parts, &np);
            json_decref(jn_hl7_to_json(m));
        }
        jn_mem_fail_after(-1);
        CHECK(rc == 0 || rc == JN_ENOMEM);
        ok = rc == 0;
        jn_free(parts);
        jn_hl7_free(m);
    }
    CHECK(ok);
    jn_free(data);
}

int main(void)
{
    test_corpus();
    test_paths();
    test_path_parse();
    test_parse_errors();
    test_escape_roundtrip();
    test_batch_split();
    test_from_json_errors();
    test_out_of_memory();
    TEST_MAIN_END();
}
