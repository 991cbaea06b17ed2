/*
 * libFuzzer target for what the MQTT channel takes from outside (channels/mqtt_int.h): a
 * received PUBLISH's topic, QoS and retain flag mapped to junction headers
 * (jn_mqtt__map_headers), the OUT topic rendered from a template over those headers and
 * checked (jn_mqtt__topic_error) and the topic as a subscription filter
 * (jn_mqtt__filter_error).
 *
 * Input layout:
 *   byte 0   flags: 1 retained, 2|4 QoS (0, 1, 2, or 3: a 4-byte int follows, any value),
 *            8 pass the topic's length as 0 when it has no NUL (paho's topicLen convention),
 *            16 walk an allocation failure too
 *   [4 bytes QoS, little endian]
 *   2 bytes  topic length (little endian), then the topic bytes (may hold NUL); the rest is
 *            a payload
 *
 * Checks: exactly three headers, all non-empty NUL-free names; mqtt-topic is the topic's exact
 * bytes, or, for a topic with a NUL byte, mqtt-topic-base64 decodes to them; mqtt-qos is the
 * QoS in decimal; mqtt-retain true/false. A rendered OUT topic is accepted only when it is
 * 1..65535 bytes with no NUL, + or #, and refused when it has a wildcard. An accepted filter
 * has '#' only as the whole last level and '+' only as whole levels.
 *
 *   ./build-fuzz/fuzz_mqtt_headers -max_total_time=60 tests/fuzz/corpus/mqtt_headers
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "mqtt_int.h"

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_mqtt_headers: %s\n", what);
    abort();
}

static int b64v(char c)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *q = c != '\0' ? strchr(tab, c) : NULL;

    return q != NULL ? (int)(q - tab) : -1;
}

/* 1 when s is the canonical padded base64 of exactly n bytes at p (an independent decoder). */
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
        if (v[0] < 0 || v[1] < 0 || (v[2] == -2 && v[3] != -2) ||
            ((v[2] == -2 || v[3] == -2) && i + 4 != sl)) {
            return 0;
        }
        w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)(v[2] < 0 ? 0 : v[2]) << 6 |
            (unsigned)(v[3] < 0 ? 0 : v[3]);
        cnt = v[2] == -2 ? 1 : v[3] == -2 ? 2 : 3;
        if ((cnt == 1 && (w & 0xffff) != 0) || (cnt == 2 && (w & 0xff) != 0)) {
            return 0;
        }
        for (int k = 0; k < cnt; k++) {
            if (o >= n || (uint8_t)(w >> (16 - 8 * k)) != p[o++]) {
                return 0;
            }
        }
    }
    return o == n;
}

/* MQTT 3.1.1 4.7.1, written independently of the channel's check. */
static int filter_valid(const char *f)
{
    size_t n = strlen(f), start = 0;

    if (n == 0 || n > JN_MQTT_MAX_TOPIC) {
        return 0;
    }
    for (size_t i = 0; i <= n; i++) {
        if (i == n || f[i] == '/') {
            size_t ln = i - start;
            const char *lvl = f + start;
            if (memchr(lvl, '#', ln) != NULL && (ln != 1 || i != n)) {
                return 0;
            }
            if (memchr(lvl, '+', ln) != NULL && ln != 1) {
                return 0;
            }
            start = i + 1;
        }
    }
    return 1;
}

static void check_headers(const struct jn_msg *m, const uint8_t *topic, size_t tl, int qos,
                          int retained)
{
    const char *t = jn_msg_header_get(m, "mqtt-topic");
    const char *t64 = jn_msg_header_get(m, "mqtt-topic-base64");
    const char *q = jn_msg_header_get(m, "mqtt-qos");
    const char *r = jn_msg_header_get(m, "mqtt-retain");
    char num[16];

    if (m->nhdrs != 3) {
        fail("not exactly three headers");
    }
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (m->hdrs[i].name == NULL || m->hdrs[i].name[0] == '\0' || m->hdrs[i].value == NULL) {
            fail("a header with no name or value");
        }
    }
    if (memchr(topic, 0, tl) != NULL) {
        if (t != NULL || t64 == NULL || !b64_is(t64, topic, tl)) {
            fail("a topic with a NUL is not mqtt-topic-base64 of its bytes");
        }
    } else if (t64 != NULL || t == NULL || strlen(t) != tl || memcmp(t, topic, tl) != 0) {
        fail("mqtt-topic is not the topic's exact bytes");
    }
    snprintf(num, sizeof(num), "%d", qos);
    if (q == NULL || strcmp(q, num) != 0) {
        fail("mqtt-qos is not the QoS in decimal");
    }
    if (r == NULL || strcmp(r, retained ? "true" : "false") != 0) {
        fail("mqtt-retain is not true/false");
    }
}

static void check_out(const struct jn_msg *m)
{
    static const char *const tmpls[] = {"{header.mqtt-topic}", "out/{header.mqtt-topic}/{id}",
                                        "{header.mqtt-qos}/{header.mqtt-topic-base64}"};
    struct jn_buf b = JN_BUF_INIT;
    struct jn_err err;

    for (size_t k = 0; k < sizeof(tmpls) / sizeof(tmpls[0]); k++) {
        const char *why;
        int wild;
        b.len = 0;
        jn_err_clear(&err);
        if (jn_template_render(tmpls[k], m, &b, &err) != 0) {
            fail("a fixed template does not render");
        }
        why = jn_mqtt__topic_error(b.p != NULL ? b.p : "", b.len);
        wild = b.len > 0 && (memchr(b.p, '+', b.len) != NULL || memchr(b.p, '#', b.len) != NULL);
        if (why == NULL && (b.len == 0 || b.len > JN_MQTT_MAX_TOPIC || wild ||
                            strlen(b.p) != b.len)) {
            fail("a topic that cannot be published is accepted");
        }
        if (why == NULL && k == 0 && strcmp(b.p, jn_msg_header_get(m, "mqtt-topic")) != 0) {
            fail("the rendered topic is not the header's value");
        }
        if (wild && why == NULL) {
            fail("a wildcard topic is accepted");
        }
    }
    jn_buf_reset(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t o = 0, tl;
    unsigned flags;
    int qos, retained;
    const uint8_t *topic;
    char *ctopic;
    struct jn_msg *m;
    size_t pass_len;

    if (size < 3) {
        return 0;
    }
    flags = data[o++];
    retained = (flags & 1) != 0;
    qos = (int)((flags >> 1) & 3);
    if (qos == 3) {
        uint32_t u = 0;
        for (int i = 0; i < 4 && o < size; i++) {
            u |= (uint32_t)data[o++] << (8 * i);
        }
        qos = (int)u;
    }
    if (o + 2 > size) {
        return 0;
    }
    tl = (size_t)data[o] | (size_t)data[o + 1] << 8;
    o += 2;
    if (tl > size - o) {
        tl = size - o;
    }
    topic = data + o;
    o += tl;
    /* paho hands a NUL-terminated topic; its length is 0 when there is no NUL inside. */
    ctopic = malloc(tl + 1);
    if (ctopic == NULL) {
        abort();
    }
    memcpy(ctopic, topic, tl);
    ctopic[tl] = '\0';
    pass_len = (flags & 8) && memchr(topic, 0, tl) == NULL ? 0 : tl;

    m = jn_msg_new("fuzz", data + o, size - o);
    if (m == NULL) {
        abort();
    }
    memcpy(m->id, "01J9ZQ4X5YB7M2K8N3P6R0S1T2", JN_ID_LEN + 1);
    if (jn_mqtt__map_headers(m, ctopic, pass_len, qos, retained) != 0) {
        fail("mapping failed without an allocation failure");
    }
    check_headers(m, topic, tl, qos, retained);
    check_out(m);
    jn_msg_unref(&m);

    if (filter_valid(ctopic) != (jn_mqtt__filter_error(ctopic) == NULL)) {
        fail("filter check disagrees with MQTT 3.1.1 4.7.1");
    }
    (void)jn_mqtt__topic_error(ctopic, tl);

    if (flags & 16) {
        int rc;
        m = jn_msg_new("fuzz", "", 0);
        if (m == NULL) {
            abort();
        }
        jn_mem_fail_after((long)(tl % 8));
        rc = jn_mqtt__map_headers(m, ctopic, pass_len, qos, retained);
        jn_mem_fail_after(-1);
        if (rc != 0 && rc != JN_ENOMEM) {
            fail("an allocation failure is not JN_ENOMEM");
        }
        jn_msg_unref(&m);
    }
    free(ctopic);
    return 0;
}
