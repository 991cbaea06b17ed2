/* Unit tests of the message envelope: ids, headers, msgpack encoding (jn_msg). */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_test.h"

static void test_ids(void)
{
    struct jn_idgen g;
    char prev[JN_ID_LEN + 1] = "";
    char id[JN_ID_LEN + 1];
    int64_t now_ms = jn_now_us() / 1000;

    jn_idgen_init(&g);
    for (int i = 0; i < 10000; i++) {
        jn_idgen_next(&g, id);
        CHECK_INT(strlen(id), JN_ID_LEN);
        /* Strictly increasing as strings: time-ordered and unique. */
        if (strcmp(prev, id) >= 0) {
            CHECK(strcmp(prev, id) < 0);
            break;
        }
        strcpy(prev, id);
    }
    CHECK(jn_id_time_ms(id) >= now_ms && jn_id_time_ms(id) <= now_ms + 5000);
    CHECK_INT(jn_id_time_ms("short"), -1);
    CHECK_INT(jn_id_time_ms("01M82PAY3YE94KJ51TD9G02G5!"), -1);
    CHECK(strspn(id, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == JN_ID_LEN);
    jn_idgen_destroy(&g);
}

static void test_headers(void)
{
    struct jn_msg *m = jn_msg_new("in", "abc", 3);
    struct jn_msg *c;

    CHECK(m != NULL);
    CHECK_INT(m->len, 3);
    CHECK_STR((char *)m->payload, "abc");
    CHECK_INT(jn_msg_header_add(m, "Content-Type", "text/plain"), 0);
    CHECK_INT(jn_msg_header_add(m, "X-A", "1"), 0);
    CHECK_INT(jn_msg_header_add(m, "x-a", "2"), 0);
    CHECK_STR(jn_msg_header_get(m, "content-type"), "text/plain");
    CHECK_STR(jn_msg_header_get(m, "X-A"), "1");
    CHECK_INT(jn_msg_header_set(m, "X-a", "3"), 0);
    CHECK_STR(jn_msg_header_get(m, "x-A"), "3");
    CHECK_INT(m->nhdrs, 3);
    CHECK_INT(jn_msg_header_del(m, "X-A"), 2);
    CHECK(jn_msg_header_get(m, "X-A") == NULL);
    CHECK_INT(m->nhdrs, 1);

    c = jn_msg_copy(m);
    CHECK(c != NULL && c != m);
    CHECK_STR(c->channel, "in");
    CHECK_STR(jn_msg_header_get(c, "Content-Type"), "text/plain");
    jn_msg_set_payload(c, jn_strdup("xyz!"), 4);
    CHECK_STR((char *)c->payload, "xyz!");
    CHECK_STR((char *)m->payload, "abc");

    /* Refcount: the last unref frees; the pointer is cleared every time. */
    CHECK(jn_msg_ref(m) == m);
    {
        struct jn_msg *m2 = m;
        jn_msg_unref(&m2);
        CHECK(m2 == NULL);
        CHECK_INT(atomic_load(&m->refs), 1);
    }
    jn_msg_unref(&m);
    CHECK(m == NULL);
    jn_msg_unref(&c);
    CHECK(c == NULL);
    jn_msg_unref(&c); /* NULL is a no-op */
}

static void test_encode_roundtrip(void)
{
    struct jn_idgen g;
    struct jn_msg *m = jn_msg_new("orders-in", "\0bin\xff", 5);
    struct jn_msg *d = NULL;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err;

    jn_idgen_init(&g);
    jn_idgen_next(&g, m->id);
    jn_msg_header_add(m, "Content-Type", "application/json");
    jn_msg_header_add(m, "X-Empty", "");
    CHECK_INT(jn_msg_encode(m, &b), 0);
    CHECK_INT(jn_msg_decode(b.p, b.len, &d, &err), 0);
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->id, m->id);
        CHECK_STR(d->channel, "orders-in");
        CHECK_INT(d->recv_us, m->recv_us);
        CHECK_INT(d->len, 5);
        CHECK(memcmp(d->payload, "\0bin\xff", 5) == 0);
        CHECK_INT(d->nhdrs, 2);
        CHECK_STR(jn_msg_header_get(d, "content-type"), "application/json");
        CHECK_STR(jn_msg_header_get(d, "X-Empty"), "");
    }
    jn_msg_unref(&d);

    /* Every truncation is refused with a reason, never a crash. */
    for (size_t n = 0; n < b.len; n++) {
        jn_err_clear(&err);
        CHECK_INT(jn_msg_decode(b.p, n, &d, &err), JN_EPROTO);
        CHECK(d == NULL);
        CHECK(err.msg[0] != '\0');
    }
    /* Trailing bytes and a newer version are refused. */
    jn_buf_putc(&b, 0);
    CHECK_INT(jn_msg_decode(b.p, b.len, &d, &err), JN_EPROTO);
    CHECK_STR(err.msg, "1 trailing bytes after the record");
    b.p[1] = 2; /* fixarray(6) then version: positive fixint 2 */
    CHECK_INT(jn_msg_decode(b.p, b.len - 1, &d, &err), JN_EPROTO);
    CHECK_STR(err.msg, "record format version 2 is newer than this build");
    CHECK_INT(jn_msg_decode("\x93\x01\x02\x03", 4, &d, &err), JN_EPROTO);
    CHECK_STR(err.msg, "v1 record has 3 fields, expected 6");
    /* test_issue_fuzz_nul_in_id: a NUL inside the 26 id bytes made a shorter id string. */
    {
        static const char rec[] = "\x96\x01\xba\x01" "\x00M82PAY3YE94KJ51TD9G02G5M\xa2in\x01\x90\xc4\x00";
        CHECK_INT(jn_msg_decode(rec, sizeof(rec) - 1, &d, &err), JN_EPROTO);
        CHECK_STR(err.msg, "field 1 (id) is not a 26-character id");
    }
    jn_buf_reset(&b);
    jn_msg_unref(&m);
    jn_idgen_destroy(&g);
}

static void test_msgpack_check(void)
{
    struct jn_msg *d = NULL;
    struct jn_err err;

    /* test_issue_fuzz_huge_array: an array32 header announcing 2^32 elements in 5 bytes. */
    CHECK_INT(jn_msgpack_check("\xdd\xff\xff\xff\xff", 5), JN_EPROTO);
    CHECK_INT(jn_msg_decode("\xdd\xff\xff\xff\xff", 5, &d, &err), JN_EPROTO);
    CHECK(d == NULL);
    CHECK_INT(jn_msgpack_check("\xdf\x00\x00\x00\x02\x01\x02", 7), JN_EPROTO); /* map: 4 */
    CHECK_INT(jn_msgpack_check("\x92\x01\xa3" "abc", 6), 0);
    CHECK_INT(jn_msgpack_check("\x92\x01\xa3" "ab", 5), JN_EPROTO); /* string cut short */
    CHECK_INT(jn_msgpack_check("\xc1", 1), JN_EPROTO);
    CHECK_INT(jn_msgpack_check("", 0), JN_EPROTO);
    CHECK_INT(jn_msgpack_check("\xc4\x02hi", 4), 0);
    CHECK_INT(jn_msgpack_check("\xd6\x01\x00\x00\x00\x00", 6), 0); /* fixext4 */
}

static int mp_ref_write(void *data, const char *buf, size_t len)
{
    return jn_buf_append(data, buf, len) == 0 ? 0 : -1;
}

static void test_mp_writer(void)
{
    /* Our msgpack writer gives the bytes msgpack-c's packer gives, at every size boundary. */
    static const int64_t ints[] = {
        0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX, -1, -32,
        -33, -128, -129, -32768, -32769, -2147483648LL, -2147483649LL, INT64_MIN,
    };
    static const size_t lens[] = {0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000};
    char *big = calloc(1, 70000);
    struct jn_buf ours = JN_BUF_INIT, ref = JN_BUF_INIT;
    msgpack_packer pk;

    CHECK(big != NULL);
    if (big == NULL) {
        return;
    }
    memset(big, 'x', 70000);
    msgpack_packer_init(&pk, &ref, mp_ref_write);
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        CHECK_INT(jn_mp_int(&ours, ints[i]), 0);
        msgpack_pack_int64(&pk, ints[i]);
    }
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        CHECK_INT(jn_mp_str(&ours, big, lens[i]), 0);
        msgpack_pack_str(&pk, lens[i]);
        msgpack_pack_str_body(&pk, big, lens[i]);
        CHECK_INT(jn_mp_bin(&ours, big, lens[i]), 0);
        msgpack_pack_bin(&pk, lens[i]);
        msgpack_pack_bin_body(&pk, big, lens[i]);
        CHECK_INT(jn_mp_array(&ours, lens[i]), 0);
        msgpack_pack_array(&pk, lens[i]);
    }
    CHECK_INT(jn_mp_cstr(&ours, NULL), 0);
    msgpack_pack_str(&pk, 0);
    CHECK_INT(ours.len, ref.len);
    CHECK(ours.len == ref.len && memcmp(ours.p, ref.p, ref.len) == 0);
    CHECK(ours.p != NULL && ours.p[ours.len] == '\0');
    jn_buf_reset(&ours);
    jn_buf_reset(&ref);
    free(big);
}

static void test_decode_golden(void)
{
    /* A v1 record written by this format's first version, kept byte for byte: readers of old
     * records must stay (tests/data/journal/ grows the corpus with the journal). */
    static const unsigned char v1[] = {
        0x96, 0x01, 0xba, '0', '1', 'M', '8', '2', 'P', 'A', 'Y', '3', 'Y', 'E', '9', '4', 'K',
        'J', '5', '1', 'T', 'D', '9', 'G', '0', '2', 'G', '5', 'M', 0xa2, 'i', 'n', 0xcf, 0x00,
        0x06, 0x42, 0x3c, 0x1e, 0x2f, 0x2a, 0x40, 0x91, 0x92, 0xa1, 'k', 0xa1, 'v', 0xc4, 0x02,
        'h', 'i',
    };
    struct jn_msg *d = NULL;
    struct jn_err err;

    CHECK_INT(jn_msg_decode(v1, sizeof(v1), &d, &err), 0);
    if (d) {
        CHECK_STR(d->id, "01M82PAY3YE94KJ51TD9G02G5M");
        CHECK_STR(d->channel, "in");
        CHECK_INT(d->recv_us, 0x0006423c1e2f2a40LL);
        CHECK_STR(jn_msg_header_get(d, "k"), "v");
        CHECK_INT(d->len, 2);
        CHECK_STR((char *)d->payload, "hi");
    }
    jn_msg_unref(&d);

    /* And the writer of today writes the same bytes for the same message. */
    d = jn_msg_new("in", "hi", 2);
    CHECK(d != NULL);
    if (d) {
        struct jn_buf b = JN_BUF_INIT;
        memcpy(d->id, "01M82PAY3YE94KJ51TD9G02G5M", JN_ID_LEN + 1);
        d->recv_us = 0x0006423c1e2f2a40LL;
        CHECK_INT(jn_msg_header_add(d, "k", "v"), 0);
        CHECK_INT(jn_msg_encode(d, &b), 0);
        CHECK_INT(b.len, sizeof(v1));
        CHECK(b.len == sizeof(v1) && memcmp(b.p, v1, sizeof(v1)) == 0);
        jn_buf_reset(&b);
    }
    jn_msg_unref(&d);
}

static void test_alloc_failures(void)
{
    /* Walk the Nth allocation over building, copying and encoding a message. */
    for (long n = 0; n < 40; n++) {
        struct jn_msg *m, *c = NULL;
        struct jn_buf b = JN_BUF_INIT;
        int ok = 1;

        jn_mem_fail_after(n);
        m = jn_msg_new("in", "payload", 7);
        if (m) {
            ok &= jn_msg_header_add(m, "a", "b") == 0;
            c = jn_msg_copy(m);
            ok &= c != NULL;
            ok &= jn_msg_encode(m, &b) == 0;
        }
        jn_mem_fail_after(-1);
        if (m && ok) {
            CHECK(n >= 8); /* everything succeeded: we walked past the last allocation */
        }
        jn_buf_reset(&b);
        jn_msg_unref(&c);
        jn_msg_unref(&m);
    }
}

int main(void)
{
    test_ids();
    test_headers();
    test_encode_roundtrip();
    test_decode_golden();
    test_mp_writer();
    test_msgpack_check();
    test_alloc_failures();
    TEST_MAIN_END();
}
