/*
 * libFuzzer target for the Kafka header mapping (channels/kafka_int.h): the fuzz input is one
 * consumed record's metadata, key and record headers, which jn_kafka__map_headers() turns into
 * junction headers; the OUT rendering (jn_kafka__out_render) then runs over that message.
 *
 * Input layout (every field optional: a short input ends early and the rest is empty):
 *   byte 0   flags: 1 has key, 2 has timestamp, 4 log-append, 8|16 prefix (0 "kafka-header-",
 *            1 "", 2 "x-", 3 the next field), 32 walk an allocation failure too
 *   4 bytes  partition, 8 bytes offset, 8 bytes timestamp (little endian)
 *   fields   u16 length (little endian) + bytes: topic, key, [prefix], then name, value pairs;
 *            a value length of 0xffff is a null value. Names, topic and prefix are cut at their
 *            first NUL, as librdkafka hands them over as C strings; keys and values are not.
 *
 * Checks: the headers come out in the documented order and number; every name is a non-empty
 * C string; a key or value with a NUL byte comes as NAME-base64 whose padded base64 decodes to
 * exactly the original bytes, and as NAME with exactly the bytes otherwise; with prefix ""
 * nothing named empty or kafka-* gets through. OUT: the topic is a non-empty C string equal to
 * the header it was rendered from, the key and each record header are exactly what the
 * templates name. With flag 32 the mapping runs again with the Nth allocation failing: the
 * answer is JN_ENOMEM or 0, never a crash or a leak.
 *
 *   ./build-fuzz/fuzz_kafka_headers -max_total_time=60 tests/fuzz/corpus/kafka_headers
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jn_mem.h"
#include "jn_msg.h"
#include "kafka_int.h"

#define MAX_HDRS 64

struct in {
    const uint8_t *p;
    size_t n;
};

static uint64_t take_le(struct in *in, size_t bytes)
{
    uint64_t v = 0;

    for (size_t i = 0; i < bytes; i++) {
        if (in->n > 0) {
            v |= (uint64_t)in->p[0] << (8 * i);
            in->p++;
            in->n--;
        }
    }
    return v;
}

/* A field: *len bytes at the returned pointer (never NULL); *null when the length was 0xffff. */
static const uint8_t *take_field(struct in *in, size_t *len, int *null)
{
    size_t want = (size_t)take_le(in, 2);
    const uint8_t *p = in->p;

    *null = want == 0xffff;
    if (*null) {
        want = 0;
    }
    *len = want < in->n ? want : in->n;
    in->p += *len;
    in->n -= *len;
    return p;
}

/* A C string from a field, cut at its first NUL. Caller frees. */
static char *cstr(const uint8_t *p, size_t n)
{
    const uint8_t *z = memchr(p, 0, n);
    size_t l = z != NULL ? (size_t)(z - p) : n;
    char *s = malloc(l + 1);

    if (s == NULL) {
        abort();
    }
    memcpy(s, p, l);
    s[l] = '\0';
    return s;
}

static int b64v(char c)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *q = c != '\0' ? strchr(tab, c) : NULL;

    return q != NULL ? (int)(q - tab) : -1;
}

/* 1 when s is the padded base64 of exactly n bytes at p (an independent decoder). */
static int b64_is(const char *s, const uint8_t *p, size_t n)
{
    size_t sl = strlen(s), o = 0;

    if (sl != 4 * ((n + 2) / 3)) {
        return 0;
    }
    for (size_t i = 0; i < sl; i += 4) {
        int v[4], cnt;
        unsigned w;
        for (int k = 0; k < 4; k++) {
            v[k] = s[i + k] == '=' ? -2 : b64v(s[i + k]);
            if (v[k] == -1) {
                return 0;
            }
        }
        /* '=' only as the last one or two characters of the last group */
        if (v[0] < 0 || v[1] < 0 || (v[2] == -2 && v[3] != -2) ||
            ((v[2] == -2 || v[3] == -2) && i + 4 != sl)) {
            return 0;
        }
        w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)(v[2] < 0 ? 0 : v[2]) << 6 |
            (unsigned)(v[3] < 0 ? 0 : v[3]);
        cnt = v[2] == -2 ? 1 : v[3] == -2 ? 2 : 3;
        if ((cnt == 1 && (w & 0xffff) != 0) || (cnt == 2 && (w & 0xff) != 0)) {
            return 0; /* not canonical: bits set past the end */
        }
        for (int k = 0; k < cnt; k++) {
            if (o >= n || (uint8_t)(w >> (16 - 8 * k)) != p[o++]) {
                return 0;
            }
        }
    }
    return o == n;
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_kafka_headers: %s\n", what);
    abort();
}

/* The header at *i must be name (+ "-base64" when bytes hold a NUL) carrying bytes. */
static void expect_bytes(const struct jn_msg *m, size_t *i, const char *name, const uint8_t *v,
                         size_t n)
{
    const struct jn_header *h;
    size_t nl = strlen(name);

    if (*i >= m->nhdrs) {
        fail("a header is missing");
    }
    h = &m->hdrs[(*i)++];
    if (n > 0 && memchr(v, 0, n) != NULL) {
        if (strncmp(h->name, name, nl) != 0 || strcmp(h->name + nl, "-base64") != 0) {
            fail("bytes with a NUL not under NAME-base64");
        }
        if (!b64_is(h->value, v, n)) {
            fail("base64 does not decode to the original bytes");
        }
    } else if (strcmp(h->name, name) != 0 || strlen(h->value) != n ||
               (n > 0 && memcmp(h->value, v, n) != 0)) {
        fail("a header is not name = exact bytes");
    }
}

static void expect_str(const struct jn_msg *m, size_t *i, const char *name, const char *v)
{
    expect_bytes(m, i, name, (const uint8_t *)v, strlen(v));
}

/* ---- OUT ---- */

struct added {
    size_t n;
    const char *names[8];
    char *vals[8];
    size_t lens[8];
};

static int on_add(void *arg, const char *name, const void *value, size_t len)
{
    struct added *a = arg;
    char *c;

    if (a->n >= 8 || name == NULL || value == NULL || (c = malloc(len + 1)) == NULL) {
        fail("add() called with bad arguments or too often");
        return -1;
    }
    memcpy(c, value, len);
    c[len] = '\0';
    a->names[a->n] = name;
    a->vals[a->n] = c;
    a->lens[a->n] = len;
    a->n++;
    return 0;
}

static const char *hv(const struct jn_msg *m, const char *name)
{
    const char *v = jn_msg_header_get(m, name);

    return v != NULL ? v : "";
}

static void out_check(struct jn_msg *m)
{
    static char *hk[] = {"h-key", "h-b64", "h-first"};
    static char *hvt[] = {"{header.kafka-key}", "{header.kafka-key-base64}",
                          "{header.kafka-header-a}<{header.a}>"};
    const struct jn_strmap headers = {hk, hvt, 3};
    struct jn_buf topic = JN_BUF_INIT, key = JN_BUF_INIT, want = JN_BUF_INIT;
    struct added a;
    char reason[256];
    enum jn_send_result r;

    memset(&a, 0, sizeof(a));
    memcpy(m->id, "01J9ZQ4X5YB7M2K8N3P6R0S1T2", JN_ID_LEN + 1);
    r = jn_kafka__out_render("{header.kafka-key}", "{header.kafka-header-a}/{header.kafka-topic}",
                             &headers, "junction-id", m, &topic, &key, on_add, &a, reason,
                             sizeof(reason));
    if (hv(m, "kafka-key")[0] == '\0') {
        if (r != JN_SEND_REJECT || strstr(reason, "renders empty") == NULL || a.n != 0) {
            fail("an empty topic is not rejected");
        }
    } else {
        if (r != JN_SEND_OK) {
            fail("a good record is not rendered");
        }
        if (topic.p == NULL || strlen(topic.p) != topic.len ||
            strcmp(topic.p, hv(m, "kafka-key")) != 0) {
            fail("the topic is not the C string it was rendered from");
        }
        if (jn_buf_printf(&want, "%s/%s", hv(m, "kafka-header-a"), hv(m, "kafka-topic")) != 0) {
            abort();
        }
        if (key.len != want.len || memcmp(key.p, want.p, want.len) != 0) {
            fail("the key is not what the template names");
        }
        if (a.n != 4 || strcmp(a.names[3], "junction-id") != 0 ||
            strcmp(a.vals[3], m->id) != 0) {
            fail("headers or id header missing");
        }
        for (size_t i = 0; i < 2; i++) {
            const char *src = i == 0 ? "kafka-key" : "kafka-key-base64";
            if (strcmp(a.names[i], hk[i]) != 0 || strcmp(a.vals[i], hv(m, src)) != 0 ||
                a.lens[i] != strlen(a.vals[i])) {
                fail("a record header is not what its template names");
            }
        }
        want.len = 0;
        if (jn_buf_printf(&want, "%s<%s>", hv(m, "kafka-header-a"), hv(m, "a")) != 0 ||
            strcmp(a.vals[2], want.p) != 0) {
            fail("the third record header is not what its template names");
        }
    }
    for (size_t i = 0; i < a.n; i++) {
        free(a.vals[i]);
    }
    jn_buf_reset(&topic);
    jn_buf_reset(&key);
    jn_buf_reset(&want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    unsigned flags = (unsigned)take_le(&in, 1);
    struct jn_kafka_rec rec;
    struct jn_kafka_hdr hdrs[MAX_HDRS];
    char *names[MAX_HDRS];
    const char *prefix;
    char *topic, *own_prefix = NULL;
    const uint8_t *keyp, *fp;
    size_t keylen, fl, n = 0, i = 0;
    struct jn_msg *m;
    int null;

    memset(&rec, 0, sizeof(rec));
    rec.partition = (int32_t)(uint32_t)take_le(&in, 4);
    rec.offset = (int64_t)take_le(&in, 8);
    rec.ts = (int64_t)take_le(&in, 8);
    if (!(flags & 2)) {
        rec.ts = -1;
    }
    rec.ts_log_append = (flags & 4) != 0;
    fp = take_field(&in, &fl, &null);
    topic = cstr(fp, fl);
    rec.topic = topic;
    keyp = take_field(&in, &keylen, &null);
    if (flags & 1) {
        rec.key = keyp;
        rec.keylen = keylen;
    }
    switch ((flags >> 3) & 3) {
    case 0: prefix = "kafka-header-"; break;
    case 1: prefix = ""; break;
    case 2: prefix = "x-"; break;
    default:
        fp = take_field(&in, &fl, &null);
        prefix = own_prefix = cstr(fp, fl);
        break;
    }
    while (in.n > 0 && n < MAX_HDRS) {
        fp = take_field(&in, &fl, &null);
        names[n] = cstr(fp, fl);
        hdrs[n].name = names[n];
        hdrs[n].value = take_field(&in, &hdrs[n].len, &null);
        if (null) {
            hdrs[n].value = NULL;
        }
        n++;
    }

    m = jn_msg_new("fuzz", "", 0);
    if (m == NULL) {
        abort();
    }
    if (jn_kafka__map_headers(m, prefix, &rec, hdrs, n) != 0) {
        fail("mapping failed without an allocation failure");
    }
    for (size_t k = 0; k < m->nhdrs; k++) {
        if (m->hdrs[k].name == NULL || m->hdrs[k].value == NULL || m->hdrs[k].name[0] == '\0') {
            fail("a header with no name or no value");
        }
    }
    /* The documented order: metadata, then the record's headers. */
    {
        char num[32];
        expect_str(m, &i, "kafka-topic", topic);
        snprintf(num, sizeof(num), "%" PRId32, rec.partition);
        expect_str(m, &i, "kafka-partition", num);
        snprintf(num, sizeof(num), "%" PRId64, rec.offset);
        expect_str(m, &i, "kafka-offset", num);
        if (rec.key != NULL) {
            expect_bytes(m, &i, "kafka-key", keyp, keylen);
        }
        if (rec.ts >= 0) {
            snprintf(num, sizeof(num), "%" PRId64, rec.ts);
            expect_str(m, &i, "kafka-timestamp", num);
            expect_str(m, &i, "kafka-timestamp-type", rec.ts_log_append ? "log-append" : "create");
        }
    }
    for (size_t k = 0; k < n; k++) {
        struct jn_buf name = JN_BUF_INIT;
        if (prefix[0] == '\0' && (names[k][0] == '\0' || strncasecmp(names[k], "kafka-", 6) == 0)) {
            continue;
        }
        if (jn_buf_printf(&name, "%s%s", prefix, names[k]) != 0) {
            abort();
        }
        expect_bytes(m, &i, name.p, hdrs[k].value != NULL ? hdrs[k].value : (const uint8_t *)"",
                     hdrs[k].value != NULL ? hdrs[k].len : 0);
        jn_buf_reset(&name);
    }
    if (i != m->nhdrs) {
        fail("more headers than the record has");
    }
    out_check(m);
    jn_msg_unref(&m);

    /* The same with the Nth allocation failing: a clean JN_ENOMEM, no leak, no crash. */
    if (flags & 32) {
        long nth = (long)((uint64_t)rec.offset % 64);
        int rc;
        m = jn_msg_new("fuzz", "", 0);
        if (m == NULL) {
            abort();
        }
        jn_mem_fail_after(nth);
        rc = jn_kafka__map_headers(m, prefix, &rec, hdrs, n);
        jn_mem_fail_after(-1);
        if (rc != 0 && rc != JN_ENOMEM) {
            fail("an allocation failure is not JN_ENOMEM");
        }
        jn_msg_unref(&m);
    }

    for (size_t k = 0; k < n; k++) {
        free(names[k]);
    }
    free(topic);
    free(own_prefix);
    return 0;
}
