/*
 * Unit tests for channels/mllp_proto: the framer on every split of its input and on each way
 * framing goes wrong, MSH reading, ACKs byte for byte (original and enhanced mode, before and
 * from v2.5, MSH-15 rules, the 4 KiB cap), and reading ACKs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_test.h"
#include "mllp_proto.h"

#define ADT "MSH|^~\\&|LAB|HOSP|EHR|WARD|20240301||ADT^A01^ADT_A01|C1|P|2.5\rPID|1\r"

/* Feeds data in pieces of `step` bytes; records events as "KIND:len:total:data" lines. */
static void run(const char *data, size_t len, size_t step, size_t max, unsigned flags, int end,
                struct jn_buf *log)
{
    struct jn_mllp_framer f;
    static const char *const names[] = {"NONE", "FRAME", "OVERSIZE", "UNTERMINATED", "BAD_END",
                                        "GARBAGE"};

    jn_mllp_framer_init(&f, max, flags);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < step ? len - off : step;
        size_t done = 0;
        while (done < n) {
            struct jn_mllp_event ev;
            size_t used = 0;
            CHECK_INT(jn_mllp_feed(&f, data + off + done, n - done, &used, &ev), 0);
            done += used;
            if (ev.kind != JN_MLLP_EV_NONE) {
                jn_buf_printf(log, "%s:%zu:%zu:%.*s\n", names[ev.kind], ev.len, ev.total,
                              (int)ev.len, ev.data);
            } else {
                CHECK(used == n - (done - used));
            }
        }
        off += n;
    }
    if (end) {
        struct jn_mllp_event ev;
        jn_mllp_framer_end(&f, &ev);
        if (ev.kind != JN_MLLP_EV_NONE) {
            jn_buf_printf(log, "%s:%zu:%zu:%.*s\n", names[ev.kind], ev.len, ev.total,
                          (int)ev.len, ev.data);
        }
    }
    jn_mllp_framer_free(&f);
}

/* The same events whatever the split: checks every step from 1 to the whole. */
/* Feeds data in steps of every size; the framer's events must be `want` for each. */
static void framer_case(const char *data, size_t len, size_t max, unsigned flags,
                        const char *want)
{
    int same = 1;

    for (size_t step = 1; step <= len && same; step++) {
        struct jn_buf log = JN_BUF_INIT;
        run(data, len, step, max, flags, 1, &log);
        same = strcmp(log.p ? log.p : "", want) == 0;
        if (!same) {
            fprintf(stderr, "step %zu:\n  got:  %s\n  want: %s\n", step, log.p ? log.p : "",
                    want);
        }
        jn_buf_reset(&log);
    }
    CHECK(same);
}

#define S(lit) lit, sizeof(lit) - 1

static void test_framer(void)
{
    framer_case(S("\x0b" "abc\x1c\r"), 100, 0, "FRAME:3:3:abc\n");
    framer_case(S("\x0b" "a\x1c\r\x0b" "b\x1c\r"), 100, 0, "FRAME:1:1:a\nFRAME:1:1:b\n");
    /* CR/LF and blanks between frames are skipped. */
    framer_case(S("\r\n \t\x0b" "a\x1c\r\n\n\x0b" "b\x1c\r\r"), 100, 0,
                "FRAME:1:1:a\nFRAME:1:1:b\n");
    framer_case(S("\x0b\x1c\r"), 100, 0, "FRAME:0:0:\n");
    /* Oversize: the start is kept, the rest counted. */
    framer_case(S("\x0b" "0123456789\x1c\r\x0b" "ok\x1c\r"), 4, 0,
                "OVERSIZE:4:10:0123\nFRAME:2:2:ok\n");
    /* A new <VT> before the end. */
    framer_case(S("\x0b" "abc\x0b" "def\x1c\r"), 100, 0, "UNTERMINATED:3:3:abc\nFRAME:3:3:def\n");
    /* The connection ends in a frame. */
    framer_case(S("\x0b" "abc"), 100, 0, "UNTERMINATED:3:3:abc\n");
    /* <FS> without <CR>: loose takes it, strict refuses. */
    framer_case(S("\x0b" "abc\x1cX"), 100, 0, "FRAME:3:3:abc\nGARBAGE:1:1:X\n");
    framer_case(S("\x0b" "abc\x1c\x0b" "d\x1c\r"), 100, 0, "FRAME:3:3:abc\nFRAME:1:1:d\n");
    framer_case(S("\x0b" "abc\x1c\x0b" "d\x1c\r"), 100, JN_MLLP_STRICT,
                "BAD_END:3:3:abc\nFRAME:1:1:d\n");
    framer_case(S("\x0b" "abc\x1c"), 100, 0, "FRAME:3:3:abc\n");
    framer_case(S("\x0b" "abc\x1c"), 100, JN_MLLP_STRICT, "BAD_END:3:3:abc\n");
    /* Garbage outside frames, up to a line end or <VT>. */
    framer_case(S("hello\r\x0b" "a\x1c\r"), 100, 0, "GARBAGE:5:5:hello\nFRAME:1:1:a\n");
    framer_case(S("MSH|x\x0b" "a\x1c\r"), 100, 0, "GARBAGE:5:5:MSH|x\nFRAME:1:1:a\n");
    framer_case(S("junk"), 100, 0, "GARBAGE:4:4:junk\n");
    framer_case(S("\x1c\r"), 100, 0, "GARBAGE:1:1:\x1c\n");
}

static void test_garbage_cap(void)
{
    char *big = jn_malloc(3000);
    struct jn_buf log = JN_BUF_INIT;

    memset(big, 'x', 3000);
    run(big, 3000, 3000, 100, 0, 1, &log);
    /* 1024 + 1024 + 952 */
    CHECK(strstr(log.p, "GARBAGE:1024:1024:") == log.p);
    CHECK(strstr(log.p, "GARBAGE:952:952:") != NULL);
    jn_buf_reset(&log);
    jn_free(big);
}

static const char *ack(const char *msg, char code, int err, const char *reason)
{
    static char out[8192];
    struct jn_mllp_msh m;
    struct jn_buf b = JN_BUF_INIT;

    jn_mllp_msh_read(msg, strlen(msg), &m);
    CHECK_INT(jn_mllp_ack_build(&m, code, err, reason, "ACK1", "20240301120000+0000", &b), 0);
    /* Unframe, and show CR as \r for readable expectations. */
    CHECK(b.len >= 3 && b.p[0] == 0x0b && b.p[b.len - 2] == 0x1c && b.p[b.len - 1] == '\r');
    CHECK(b.len <= JN_MLLP_ACK_MAX);
    size_t o = 0;
    for (size_t i = 1; i + 2 < b.len && o + 3 < sizeof(out); i++) {
        if (b.p[i] == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else {
            out[o++] = b.p[i];
        }
    }
    out[o] = '\0';
    jn_buf_reset(&b);
    return out;
}

static void test_ack_build(void)
{
    struct jn_mllp_msh m;

    CHECK_INT(jn_mllp_msh_read(S(ADT), &m), 1);
    CHECK_INT(m.enhanced, 0);
    CHECK_INT(m.version_minor, 5);
    CHECK_STR(ack(ADT, 'A', 0, NULL),
              "MSH|^~\\&|EHR|WARD|LAB|HOSP|20240301120000+0000||ACK^A01^ACK|ACK1|P|2.5\\r"
              "MSA|AA|C1\\r");
    CHECK_STR(ack(ADT, 'R', 102, "bad | thing\nhere"),
              "MSH|^~\\&|EHR|WARD|LAB|HOSP|20240301120000+0000||ACK^A01^ACK|ACK1|P|2.5\\r"
              "MSA|AR|C1|bad \\F\\ thing here\\r"
              "ERR|||102^Data type error^HL70357|E||||bad \\F\\ thing here\\r");
    /* v2.3: ERR-1 carries the code; no MSH-9.3. */
    CHECK_STR(ack("MSH|^~\\&|A|B|C|D|2024||ORU^R01|X9|P|2.3\r", 'E', 207, "journal full"),
              "MSH|^~\\&|C|D|A|B|20240301120000+0000||ACK^R01|ACK1|P|2.3\\r"
              "MSA|AE|X9|journal full\\r"
              "ERR|^^^207&Application internal error&HL70357\\r");
    /* Enhanced mode (MSH-15/16 set): CA/CE/CR; other delimiters kept. */
    CHECK_STR(ack("MSH#*@!$#A#B#C#D#2024##ADT*A04#E1#P#2.5###AL#NE\r", 'A', 0, NULL),
              "MSH#*@!$#C#D#A#B#20240301120000+0000##ACK*A04*ACK#ACK1#P#2.5\\rMSA#CA#E1\\r");
    CHECK_STR(ack("MSH|^~\\&|A|B|C|D|2024||ADT|E2|P|2.6|||ER\r", 'R', 101, "x"),
              "MSH|^~\\&|C|D|A|B|20240301120000+0000||ACK|ACK1|P|2.6\\rMSA|CR|E2|x\\r"
              "ERR|||101^Required field missing^HL70357|E||||x\\r");
    /* Truncated MSH: no control id, but an ACK can still be built with defaults. */
    CHECK_INT(jn_mllp_msh_read(S("MSH|^~\\&|A|B|C\r"), &m), 0);
    CHECK_INT(jn_mllp_msh_read(S("PID|1\r"), &m), 0);
    CHECK_INT(jn_mllp_msh_read(S("MSH|^~\\&|||||||ADT^A01|\r"), &m), 1);
    CHECK_INT((int)m.ctlid.len, 0);
    CHECK_INT((int)m.msgtype.len, 7); /* MSH-9 whole: ADT^A01 */
    CHECK(memcmp(m.msgtype.p, "ADT^A01", 7) == 0);
    /* Only the first repetition, and fields on the first segment only. */
    CHECK_INT(jn_mllp_msh_read(S("MSH|^~\\&|A||||||ORU^R01~ADT^A01|C9\rPID|1|2|3|4|5|6|7|8\r"),
                               &m), 1);
    CHECK_INT((int)m.msgtype.len, 7);
    CHECK(memcmp(m.msgtype.p, "ORU^R01", 7) == 0);
    CHECK(m.trigger.len == 3 && memcmp(m.trigger.p, "R01", 3) == 0);
    CHECK(m.ctlid.len == 2 && memcmp(m.ctlid.p, "C9", 2) == 0);
    CHECK_INT(jn_mllp_msh_read(S("MSH|^~\\&|A||||||ORU^R01\rPID|1|2|3|4|5|6|7|8|9|10\r"), &m),
              0);
    CHECK_INT((int)m.proc.len, 0);
    /* Control bytes from the peer never reach the ACK. */
    CHECK_STR(ack("MSH|^~\\&|A\x0b|B|C|D|2024||ADT^A01|I\x1c" "D|P|2.5\r", 'A', 0, NULL),
              "MSH|^~\\&|C|D|A|B|20240301120000+0000||ACK^A01^ACK|ACK1|P|2.5\\rMSA|AA|ID\\r");
}

static void test_ack_wanted(void)
{
    struct jn_mllp_msh m;

    jn_mllp_msh_read(S("MSH|^~\\&|A|B|C|D|2024||ADT|E2|P|2.6|||NE\r"), &m);
    CHECK(!jn_mllp_ack_wanted(&m, 'A') && !jn_mllp_ack_wanted(&m, 'R'));
    jn_mllp_msh_read(S("MSH|^~\\&|A|B|C|D|2024||ADT|E2|P|2.6|||ER\r"), &m);
    CHECK(!jn_mllp_ack_wanted(&m, 'A') && jn_mllp_ack_wanted(&m, 'E'));
    jn_mllp_msh_read(S("MSH|^~\\&|A|B|C|D|2024||ADT|E2|P|2.6|||SU\r"), &m);
    CHECK(jn_mllp_ack_wanted(&m, 'A') && !jn_mllp_ack_wanted(&m, 'R'));
    jn_mllp_msh_read(S("MSH|^~\\&|A|B|C|D|2024||ADT|E2|P|2.6|||AL\r"), &m);
    CHECK(jn_mllp_ack_wanted(&m, 'A') && jn_mllp_ack_wanted(&m, 'R'));
    jn_mllp_msh_read(S(ADT), &m);
    CHECK(jn_mllp_ack_wanted(&m, 'A') && jn_mllp_ack_wanted(&m, 'R'));
}

/* The largest possible ACK still fits in one 4 KiB read. */
static void test_ack_cap(void)
{
    struct jn_buf msg = JN_BUF_INIT, b = JN_BUF_INIT, reason = JN_BUF_INIT;
    struct jn_mllp_msh m;

    jn_buf_puts(&msg, "MSH|^~\\&");
    for (int f = 3; f <= 12; f++) {
        jn_buf_putc(&msg, '|');
        for (int i = 0; i < 5000; i++) {
            jn_buf_putc(&msg, f == 9 ? 'T' : 'x');
        }
    }
    jn_buf_putc(&msg, '\r');
    for (int i = 0; i < 5000; i++) {
        jn_buf_puts(&reason, "\xc3\xa9");
    }
    CHECK_INT(jn_mllp_msh_read(msg.p, msg.len, &m), 1);
    CHECK_INT(jn_mllp_ack_build(&m, 'R', 102, reason.p, "ID", "TS", &b), 0);
    CHECK(b.len <= JN_MLLP_ACK_MAX);
    jn_buf_reset(&msg);
    jn_buf_reset(&b);
    jn_buf_reset(&reason);
}

static void test_ack_read(void)
{
    struct jn_mllp_ack a;
    struct jn_err err;

    CHECK_INT(jn_mllp_ack_read(S("MSH|^~\\&|B|B|A|A|2024||ACK|9|P|2.5\rMSA|AA|C1\r"), &a, &err),
              0);
    CHECK_STR(a.code, "AA");
    CHECK(a.ctlid.len == 2 && memcmp(a.ctlid.p, "C1", 2) == 0);
    CHECK_STR(a.reason, "");
    CHECK_INT(jn_mllp_ack_read(S("MSH|^~\\&|B|B|A|A|2024||ACK|9|P|2.5\rMSA|AE|C1|old\r"
                                 "ERR|||207^Application internal error^HL70357|E||||disk \\T\\ "
                                 "full\r"), &a, &err), 0);
    CHECK_STR(a.code, "AE");
    CHECK_STR(a.reason, "disk & full");
    CHECK_INT(jn_mllp_ack_read(S("MSH|^~\\&|B|B|A|A|2024||ACK|9|P|2.3\rMSA|AR|C1|why\r"), &a,
                               &err), 0);
    CHECK_STR(a.reason, "why");
    CHECK_INT(jn_mllp_ack_read(S("MSH|^~\\&|B|B|A|A|2024||ACK|9|P|2.3\rMSA|AR|C1\r"
                                 "ERR|^^^101&Required field missing&HL70357\r"), &a, &err), 0);
    CHECK_STR(a.reason, "Required field missing");
    CHECK_INT(jn_mllp_ack_read(S("MSH|^~\\&|B|B|A|A|2024||ACK|9|P|2.5\r"), &a, &err), JN_EPROTO);
    CHECK_STR(err.msg, "the reply has no MSA segment with an MSA-1 code");
    CHECK_INT(jn_mllp_ack_read(S("hello"), &a, &err), JN_EPROTO);
    CHECK_STR(err.msg, "the reply is not HL7: the message does not start with MSH (or FHS/BHS "
                       "for a batch)");
}

int main(void)
{
    test_framer();
    test_garbage_cap();
    test_ack_build();
    test_ack_wanted();
    test_ack_cap();
    test_ack_read();
    TEST_MAIN_END();
}
