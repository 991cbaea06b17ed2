/*
 * mqtt_proto: MQTT 3.1.1 and 5.0 framing, decoding and encoding over buffers (see
 * mqtt_proto.h for the model, ownership and the reason codes).
 *
 * One property table (2.2.2.2: identifier, data type, which packets may carry it, where it
 * lives in struct jn_mqtt_props) drives reading, writing and comparing properties, so the
 * three cannot drift apart. Encoding runs the same writer twice: once counting (to learn the
 * remaining length, which comes first on the wire), once writing into room reserved in the
 * jn_buf, so a packet is written in place with one allocation at most and no memmove.
 * The encoder applies the decoder's rules to what it is given, so what it writes decodes.
 */
#include "mqtt_proto.h"

#include "jn_utf8.h"
#include "mqtt_proto_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- errors ---- */

int mqtt_proto__fail(struct jn_mqtt_err *e, int code, uint8_t rc, const char *fmt, ...)
{
    char msg[JN_ERR_MSG_MAX];
    va_list ap;

    if (e == NULL) {
        return code;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e->rc = rc;
    return jn_err_set(&e->err, code, "%s", msg);
}

#define MALFORMED(e, ...) mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_MALFORMED, __VA_ARGS__)
#define PROTOCOL(e, ...) mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_PROTOCOL, __VA_ARGS__)

/* ---- names and small checks ---- */

const char *jn_mqtt_type_name(int type)
{
    static const char *const names[] = {
        "?", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
        "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT",
        "AUTH"};
    return type >= 1 && type <= 15 ? names[type] : "?";
}

uint8_t jn_mqtt_v4_connack_rc(uint8_t rc5)
{
    switch (rc5) {
    case JN_MQTT_RC_SUCCESS: return 0;
    case JN_MQTT_RC_BAD_VERSION: return 1;
    case JN_MQTT_RC_BAD_CLIENT_ID: return 2;
    case JN_MQTT_RC_BAD_LOGIN: return 4;
    case JN_MQTT_RC_NOT_AUTHORIZED: return 5;
    default: return 3;
    }
}

int jn_mqtt_utf8_valid(const void *s, size_t len, int nul_ok)
{
    return jn_utf8_valid(s, len) && (nul_ok || memchr(s, '\0', len) == NULL);
}

int jn_mqtt_topic_name_valid(const char *s, size_t len)
{
    return len > 0 && memchr(s, '+', len) == NULL && memchr(s, '#', len) == NULL;
}

int jn_mqtt_topic_filter_valid(const char *s, size_t len)
{
    if (len == 0) {
        return 0;
    }
    /* $share/{ShareName}/{filter} (4.8.2): a non-empty name without '/', '+' or '#'. */
    if (len >= 7 && memcmp(s, "$share/", 7) == 0) {
        const char *name = s + 7, *slash = memchr(name, '/', len - 7);
        if (slash == NULL || slash == name) {
            return 0;
        }
        for (const char *q = name; q < slash; q++) {
            if (*q == '+' || *q == '#') {
                return 0;
            }
        }
        len -= (size_t)(slash + 1 - s);
        s = slash + 1;
        if (len == 0) {
            return 0;
        }
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            if ((i > 0 && s[i - 1] != '/') || (i + 1 < len && s[i + 1] != '/')) {
                return 0;
            }
        } else if (s[i] == '#') {
            if ((i > 0 && s[i - 1] != '/') || i + 1 != len) {
                return 0;
            }
        }
    }
    return 1;
}

int mqtt_proto__is_shared(struct jn_mqtt_str f)
{
    return f.len >= 7 && memcmp(f.p, "$share/", 7) == 0;
}

static int in_set(uint8_t v, const uint8_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i] == v) {
            return 1;
        }
    }
    return 0;
}

#define SET(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

/* The reason codes each packet defines (3.x.2.1 of each packet). 1 when v is one of them. */
int mqtt_proto__rc_known(int type, int version, uint8_t v)
{
    switch (type) {
    case JN_MQTT_CONNACK:
        if (version == JN_MQTT_V311) {
            return v <= 5;
        }
        return in_set(v, SET(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                             0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F));
    case JN_MQTT_PUBACK:
    case JN_MQTT_PUBREC:
        return in_set(v, SET(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99));
    case JN_MQTT_PUBREL:
    case JN_MQTT_PUBCOMP:
        return v == 0x00 || v == 0x92;
    case JN_MQTT_SUBACK:
        if (version == JN_MQTT_V311) {
            return in_set(v, SET(0x00, 0x01, 0x02, 0x80));
        }
        return in_set(v, SET(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                             0xA2));
    case JN_MQTT_UNSUBACK:
        return in_set(v, SET(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91));
    case JN_MQTT_DISCONNECT:
        return in_set(v, SET(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
                             0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B,
                             0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2));
    case JN_MQTT_AUTH:
        return v == 0x00 || v == 0x18 || v == 0x19;
    default:
        return 0;
    }
}

/* ---- the property table ---- */

/* Its types (T_*, C_*, struct prop_def) are in mqtt_proto_int.h. */
#define OFF(f) offsetof(struct jn_mqtt_props, f)
#define ALL_REASON (C_CONNACK | C_ACK | C_SUBACK | C_UNSUBACK | C_DISCONNECT | C_AUTH)

/* In identifier order: the encoder writes properties in this order. */
const struct prop_def mqtt_proto__props[] = {
    {0x01, T_BYTE, C_PUBLISH | C_WILL, OFF(payload_format), "Payload Format Indicator"},
    {0x02, T_U32, C_PUBLISH | C_WILL, OFF(message_expiry), "Message Expiry Interval"},
    {0x03, T_STR, C_PUBLISH | C_WILL, OFF(content_type), "Content Type"},
    {0x08, T_STR, C_PUBLISH | C_WILL, OFF(response_topic), "Response Topic"},
    {0x09, T_BIN, C_PUBLISH | C_WILL, OFF(correlation_data), "Correlation Data"},
    {0x0B, T_VBI, C_PUBLISH | C_SUBSCRIBE, 0, "Subscription Identifier"},
    {0x11, T_U32, C_CONNECT | C_CONNACK | C_DISCONNECT, OFF(session_expiry),
     "Session Expiry Interval"},
    {0x12, T_STR, C_CONNACK, OFF(assigned_client_id), "Assigned Client Identifier"},
    {0x13, T_U16, C_CONNACK, OFF(server_keep_alive), "Server Keep Alive"},
    {0x15, T_STR, C_CONNECT | C_CONNACK | C_AUTH, OFF(auth_method), "Authentication Method"},
    {0x16, T_BIN, C_CONNECT | C_CONNACK | C_AUTH, OFF(auth_data), "Authentication Data"},
    {0x17, T_BYTE, C_CONNECT, OFF(request_problem_info), "Request Problem Information"},
    {0x18, T_U32, C_WILL, OFF(will_delay), "Will Delay Interval"},
    {0x19, T_BYTE, C_CONNECT, OFF(request_response_info), "Request Response Information"},
    {0x1A, T_STR, C_CONNACK, OFF(response_info), "Response Information"},
    {0x1C, T_STR, C_CONNACK | C_DISCONNECT, OFF(server_reference), "Server Reference"},
    {0x1F, T_STR, ALL_REASON, OFF(reason_string), "Reason String"},
    {0x21, T_U16, C_CONNECT | C_CONNACK, OFF(receive_max), "Receive Maximum"},
    {0x22, T_U16, C_CONNECT | C_CONNACK, OFF(topic_alias_max), "Topic Alias Maximum"},
    {0x23, T_U16, C_PUBLISH, OFF(topic_alias), "Topic Alias"},
    {0x24, T_BYTE, C_CONNACK, OFF(max_qos), "Maximum QoS"},
    {0x25, T_BYTE, C_CONNACK, OFF(retain_available), "Retain Available"},
    {0x26, T_PAIR, 0x7ff, 0, "User Property"},
    {0x27, T_U32, C_CONNECT | C_CONNACK, OFF(max_packet_size), "Maximum Packet Size"},
    {0x28, T_BYTE, C_CONNACK, OFF(wildcard_sub), "Wildcard Subscription Available"},
    {0x29, T_BYTE, C_CONNACK, OFF(subid_available), "Subscription Identifier Available"},
    {0x2A, T_BYTE, C_CONNACK, OFF(shared_sub), "Shared Subscription Available"},
};
#define N_PROPS (sizeof(mqtt_proto__props) / sizeof(mqtt_proto__props[0]))
const size_t mqtt_proto__n_props = N_PROPS;

const struct prop_def *mqtt_proto__prop_find(uint32_t id)
{
    for (size_t i = 0; i < N_PROPS; i++) {
        if (mqtt_proto__props[i].id == id) {
            return &mqtt_proto__props[i];
        }
    }
    return NULL;
}

uint32_t mqtt_proto__prop_num(const struct jn_mqtt_props *pr, const struct prop_def *d)
{
    const char *f = (const char *)pr + d->off;
    switch (d->type) {
    case T_BYTE: return *(const uint8_t *)(const void *)f;
    case T_U16: return *(const uint16_t *)(const void *)f;
    default: return *(const uint32_t *)(const void *)f;
    }
}

static void prop_set_num(struct jn_mqtt_props *pr, const struct prop_def *d, uint32_t v)
{
    char *f = (char *)pr + d->off;
    switch (d->type) {
    case T_BYTE: *(uint8_t *)(void *)f = (uint8_t)v; break;
    case T_U16: *(uint16_t *)(void *)f = (uint16_t)v; break;
    default: *(uint32_t *)(void *)f = v; break;
    }
}

struct jn_mqtt_str *mqtt_proto__prop_str(struct jn_mqtt_props *pr, const struct prop_def *d)
{
    return (struct jn_mqtt_str *)(void *)((char *)pr + d->off);
}

/* Value rules beyond the data type: 0/1 flags, and the values the spec calls a Protocol Error
 * (3.1.2.11, 3.2.2.3, 3.3.2.3). code: JN_EPROTO decoding, JN_EINVAL encoding. */
int mqtt_proto__prop_value_check(const struct prop_def *d, uint32_t v, int code,
                            struct jn_mqtt_err *e)
{
    switch (d->id) {
    case JN_MQTT_P_PAYLOAD_FORMAT:
    case JN_MQTT_P_REQUEST_PROBLEM_INFO:
    case JN_MQTT_P_REQUEST_RESPONSE_INFO:
    case JN_MQTT_P_MAX_QOS:
    case JN_MQTT_P_RETAIN_AVAILABLE:
    case JN_MQTT_P_WILDCARD_SUB:
    case JN_MQTT_P_SUBID_AVAILABLE:
    case JN_MQTT_P_SHARED_SUB:
        if (v > 1) {
            return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL, "%s is %u (0 or 1)", d->name, v);
        }
        break;
    case JN_MQTT_P_RECEIVE_MAX:
    case JN_MQTT_P_MAX_PACKET_SIZE:
    case JN_MQTT_P_SUBSCRIPTION_ID:
        if (v == 0) {
            return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL, "%s is 0", d->name);
        }
        if (d->id == JN_MQTT_P_SUBSCRIPTION_ID && v > JN_MQTT_MAX_REMAINING) {
            return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL, "%s %u is too big", d->name, v);
        }
        break;
    case JN_MQTT_P_TOPIC_ALIAS:
        if (v == 0) {
            return mqtt_proto__fail(e, code, JN_MQTT_RC_TOPIC_ALIAS, "Topic Alias is 0");
        }
        break;
    default:
        break;
    }
    return 0;
}

/* ---- reading ---- */

size_t mqtt_proto__vbi_size(uint32_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}


struct rd {
    const unsigned char *p;
    size_t len, off;
    int version;
};

static size_t rd_left(const struct rd *r)
{
    return r->len - r->off;
}

static int rd_need(struct rd *r, size_t n, const char *what, struct jn_mqtt_err *e)
{
    if (rd_left(r) < n) {
        return MALFORMED(e, "the packet ends inside the %s", what);
    }
    return 0;
}

static int rd_u8(struct rd *r, uint8_t *v, const char *what, struct jn_mqtt_err *e)
{
    if (rd_need(r, 1, what, e) != 0) {
        return JN_EPROTO;
    }
    *v = r->p[r->off++];
    return 0;
}

static int rd_u16(struct rd *r, uint16_t *v, const char *what, struct jn_mqtt_err *e)
{
    if (rd_need(r, 2, what, e) != 0) {
        return JN_EPROTO;
    }
    *v = (uint16_t)((r->p[r->off] << 8) | r->p[r->off + 1]);
    r->off += 2;
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what, struct jn_mqtt_err *e)
{
    if (rd_need(r, 4, what, e) != 0) {
        return JN_EPROTO;
    }
    *v = ((uint32_t)r->p[r->off] << 24) | ((uint32_t)r->p[r->off + 1] << 16) |
         ((uint32_t)r->p[r->off + 2] << 8) | r->p[r->off + 3];
    r->off += 4;
    return 0;
}

/* A variable byte integer (1.5.5): at most 4 bytes; v5 requires the shortest form. Returns 0,
 * 1 when the bytes ran out first (no error set), or JN_EPROTO. */
static int vbi_parse(const unsigned char *p, size_t len, int version, uint32_t *v, size_t *used,
                     const char *what, struct jn_mqtt_err *e)
{
    uint32_t x = 0;

    for (size_t i = 0; i < 4; i++) {
        if (i >= len) {
            return 1;
        }
        x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            if (i > 0 && p[i] == 0 && version == JN_MQTT_V5) {
                return MALFORMED(e, "the %s is not in its shortest form", what);
            }
            *v = x;
            *used = i + 1;
            return 0;
        }
    }
    return MALFORMED(e, "the %s is longer than 4 bytes", what);
}

static int rd_vbi(struct rd *r, uint32_t *v, const char *what, struct jn_mqtt_err *e)
{
    size_t used = 0;
    int rc = vbi_parse(r->p + r->off, rd_left(r), r->version, v, &used, what, e);

    if (rc == 1) {
        return MALFORMED(e, "the packet ends inside the %s", what);
    }
    if (rc == 0) {
        r->off += used;
    }
    return rc;
}

static int rd_bin(struct rd *r, struct jn_mqtt_str *s, const char *what, struct jn_mqtt_err *e)
{
    uint16_t n;

    if (rd_u16(r, &n, what, e) != 0 || rd_need(r, n, what, e) != 0) {
        return JN_EPROTO;
    }
    s->p = (const char *)r->p + r->off;
    s->len = n;
    r->off += n;
    return 0;
}

int mqtt_proto__utf8_check(struct jn_mqtt_str s, const char *what, int code, struct jn_mqtt_err *e)
{
    if (!jn_mqtt_utf8_valid(s.p, s.len, 0)) {
        return mqtt_proto__fail(e, code, JN_MQTT_RC_MALFORMED,
                                "the %s is not well-formed UTF-8 or holds U+0000", what);
    }
    return 0;
}

static int rd_str(struct rd *r, struct jn_mqtt_str *s, const char *what, struct jn_mqtt_err *e)
{
    if (rd_bin(r, s, what, e) != 0) {
        return JN_EPROTO;
    }
    return mqtt_proto__utf8_check(*s, what, JN_EPROTO, e);
}

/* Rules across properties or on a string's content (both directions). */
int mqtt_proto__props_rules(const struct jn_mqtt_props *pr, int code, struct jn_mqtt_err *e)
{
    if (JN_MQTT_HAS(pr, JN_MQTT_P_AUTH_DATA) && !JN_MQTT_HAS(pr, JN_MQTT_P_AUTH_METHOD)) {
        return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL, "Authentication Data without an "
                    "Authentication Method");
    }
    /* 3.3.2.3.5: a Response Topic is a topic name, never a filter. */
    if (JN_MQTT_HAS(pr, JN_MQTT_P_RESPONSE_TOPIC) &&
        !jn_mqtt_topic_name_valid(pr->response_topic.p, pr->response_topic.len)) {
        return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL,
                                "the Response Topic is empty or has a wildcard");
    }
    return 0;
}

/* Properties (2.2.2): the length, then identifier + value pairs, all within the packet. */
static int rd_props(struct rd *r, unsigned where, struct jn_mqtt_props *pr,
                    struct jn_mqtt_err *e)
{
    uint32_t plen;
    struct rd s;

    if (rd_vbi(r, &plen, "property length", e) != 0) {
        return JN_EPROTO;
    }
    if (plen > rd_left(r)) {
        return MALFORMED(e, "the property length %u goes past the packet's end", plen);
    }
    pr->raw.p = (const char *)r->p + r->off;
    pr->raw.len = plen;
    s.p = r->p + r->off;
    s.len = plen;
    s.off = 0;
    s.version = r->version;
    r->off += plen;
    while (rd_left(&s) > 0) {
        uint32_t id, v = 0;
        const struct prop_def *d;
        if (rd_vbi(&s, &id, "property identifier", e) != 0) {
            return JN_EPROTO;
        }
        d = mqtt_proto__prop_find(id);
        if (d == NULL) {
            return MALFORMED(e, "unknown property 0x%02X", id);
        }
        if ((d->where & where) == 0) {
            return MALFORMED(e, "the %s property is not allowed in this packet", d->name);
        }
        if (JN_MQTT_HAS(pr, id) && id != JN_MQTT_P_USER &&
            !(id == JN_MQTT_P_SUBSCRIPTION_ID && where == C_PUBLISH)) {
            return PROTOCOL(e, "the %s property appears more than once", d->name);
        }
        pr->has |= (uint64_t)1 << id;
        switch (d->type) {
        case T_BYTE: {
            uint8_t b;
            if (rd_u8(&s, &b, d->name, e) != 0) {
                return JN_EPROTO;
            }
            v = b;
            break;
        }
        case T_U16: {
            uint16_t w;
            if (rd_u16(&s, &w, d->name, e) != 0) {
                return JN_EPROTO;
            }
            v = w;
            break;
        }
        case T_U32:
            if (rd_u32(&s, &v, d->name, e) != 0) {
                return JN_EPROTO;
            }
            break;
        case T_VBI:
            if (rd_vbi(&s, &v, d->name, e) != 0) {
                return JN_EPROTO;
            }
            break;
        case T_STR:
            if (rd_str(&s, mqtt_proto__prop_str(pr, d), d->name, e) != 0) {
                return JN_EPROTO;
            }
            break;
        case T_BIN:
            if (rd_bin(&s, mqtt_proto__prop_str(pr, d), d->name, e) != 0) {
                return JN_EPROTO;
            }
            break;
        case T_PAIR: {
            struct jn_mqtt_str k, val;
            if (rd_str(&s, &k, "User Property name", e) != 0 ||
                rd_str(&s, &val, "User Property value", e) != 0) {
                return JN_EPROTO;
            }
            pr->n_user++;
            break;
        }
        }
        if (d->type != T_STR && d->type != T_BIN && d->type != T_PAIR) {
            if (mqtt_proto__prop_value_check(d, v, JN_EPROTO, e) != 0) {
                return JN_EPROTO;
            }
            if (id == JN_MQTT_P_SUBSCRIPTION_ID) {
                pr->n_subid++;
            } else {
                prop_set_num(pr, d, v);
            }
        }
    }
    return mqtt_proto__props_rules(pr, JN_EPROTO, e);
}

/* Walks a property span to the next property with identifier want; 1 with its value bytes
 * (span after the identifier) or 0. Tolerates any bytes: stops at the first inconsistency. */
static int raw_next(const struct jn_mqtt_str *raw, size_t *it, uint32_t want, struct rd *val)
{
    const unsigned char *p = (const unsigned char *)raw->p;

    while (*it < raw->len) {
        uint32_t id;
        size_t used, n;
        const struct prop_def *d;
        if (vbi_parse(p + *it, raw->len - *it, JN_MQTT_V311, &id, &used, "", NULL) != 0) {
            return 0;
        }
        d = mqtt_proto__prop_find(id);
        if (d == NULL) {
            return 0;
        }
        size_t at = *it + used, left = raw->len - at;
        switch (d->type) {
        case T_BYTE: n = 1; break;
        case T_U16: n = 2; break;
        case T_U32: n = 4; break;
        case T_VBI: {
            uint32_t x;
            if (vbi_parse(p + at, left, JN_MQTT_V311, &x, &n, "", NULL) != 0) {
                return 0;
            }
            break;
        }
        case T_STR:
        case T_BIN:
            if (left < 2) {
                return 0;
            }
            n = 2 + (size_t)((p[at] << 8) | p[at + 1]);
            break;
        default: /* T_PAIR */
            if (left < 2) {
                return 0;
            }
            n = 2 + (size_t)((p[at] << 8) | p[at + 1]);
            if (left < n + 2) {
                return 0;
            }
            n += 2 + (size_t)((p[at + n] << 8) | p[at + n + 1]);
            break;
        }
        if (n > left) {
            return 0;
        }
        *it = at + n;
        if (id == want) {
            val->p = p + at;
            val->len = n;
            val->off = 0;
            val->version = JN_MQTT_V311;
            return 1;
        }
    }
    return 0;
}

int jn_mqtt_user_next(const struct jn_mqtt_props *pr, size_t *it, struct jn_mqtt_userprop *out)
{
    struct rd v;

    if (pr->user != NULL) {
        if (*it >= pr->n_user) {
            return 0;
        }
        *out = pr->user[(*it)++];
        return 1;
    }
    if (!raw_next(&pr->raw, it, JN_MQTT_P_USER, &v)) {
        return 0;
    }
    return rd_bin(&v, &out->name, "", NULL) == 0 && rd_bin(&v, &out->value, "", NULL) == 0;
}

int jn_mqtt_subid_next(const struct jn_mqtt_props *pr, size_t *it, uint32_t *out)
{
    struct rd v;

    if (pr->subid != NULL) {
        if (*it >= pr->n_subid) {
            return 0;
        }
        *out = pr->subid[(*it)++];
        return 1;
    }
    if (!raw_next(&pr->raw, it, JN_MQTT_P_SUBSCRIPTION_ID, &v)) {
        return 0;
    }
    return rd_vbi(&v, out, "", NULL) == 0;
}

int jn_mqtt_subs_next(const struct jn_mqtt_packet *p, size_t *it, struct jn_mqtt_sub *out)
{
    struct rd r;

    if (p->subs != NULL) {
        if (*it >= p->n_subs) {
            return 0;
        }
        *out = p->subs[(*it)++];
        return 1;
    }
    r.p = (const unsigned char *)p->subs_raw.p;
    r.len = p->subs_raw.len;
    r.off = *it;
    r.version = p->version;
    if (r.off >= r.len || rd_bin(&r, &out->filter, "", NULL) != 0) {
        return 0;
    }
    out->options = 0;
    if (p->type == JN_MQTT_SUBSCRIBE && rd_u8(&r, &out->options, "", NULL) != 0) {
        return 0;
    }
    *it = r.off;
    return 1;
}

/* ---- framing ---- */

enum jn_mqtt_frame_res jn_mqtt_frame(const void *data, size_t len, size_t max_packet, size_t *n,
                                     struct jn_mqtt_err *e)
{
    const unsigned char *p = data;
    uint32_t rl = 0;
    size_t used = 0, total;
    int rc;

    if (len < 2) {
        *n = 2;
        return JN_MQTT_FRAME_MORE;
    }
    /* The shortest-form rule needs the version; decode applies it. */
    rc = vbi_parse(p + 1, len - 1, JN_MQTT_V311, &rl, &used, "remaining length", e);
    if (rc == 1) {
        *n = len + 1;
        return JN_MQTT_FRAME_MORE;
    }
    if (rc != 0) {
        *n = 0;
        return JN_MQTT_FRAME_BAD;
    }
    total = 1 + used + (size_t)rl;
    if (max_packet != 0 && total > max_packet) {
        *n = total;
        mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_TOO_LARGE,
                         "a packet of %zu bytes is over the maximum of %zu", total, max_packet);
        return JN_MQTT_FRAME_BAD;
    }
    *n = total;
    return len >= total ? JN_MQTT_FRAME_PACKET : JN_MQTT_FRAME_MORE;
}

/* ---- decoding ---- */

static int rd_end(struct rd *r, const char *what, struct jn_mqtt_err *e)
{
    if (rd_left(r) != 0) {
        return MALFORMED(e, "%zu bytes after the end of the %s", rd_left(r), what);
    }
    return 0;
}

static int rd_packet_id(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    if (rd_u16(r, &p->packet_id, "packet identifier", e) != 0) {
        return JN_EPROTO;
    }
    if (p->packet_id == 0) {
        return PROTOCOL(e, "%s with packet identifier 0", jn_mqtt_type_name(p->type));
    }
    return 0;
}

static int rd_reason(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    if (rd_u8(r, &p->reason_code, "reason code", e) != 0) {
        return JN_EPROTO;
    }
    if (!mqtt_proto__rc_known(p->type, p->version, p->reason_code)) {
        return MALFORMED(e, "%s reason code 0x%02X is not defined for it",
                         jn_mqtt_type_name(p->type), p->reason_code);
    }
    return 0;
}

/* A topic name (4.7, 3.3.2.1); code: JN_EPROTO or JN_EINVAL. */
int mqtt_proto__topic_check(struct jn_mqtt_str t, int alias_ok, const char *what, int code,
                       struct jn_mqtt_err *e)
{
    if (t.len == 0) {
        if (alias_ok) {
            return 0;
        }
        return mqtt_proto__fail(e, code, JN_MQTT_RC_PROTOCOL, "the %s is empty", what);
    }
    if (!jn_mqtt_topic_name_valid(t.p, t.len)) {
        return mqtt_proto__fail(e, code, JN_MQTT_RC_TOPIC_NAME, "the %s '%.*s' has a wildcard",
                                what, (int)(t.len > 200 ? 200 : t.len), t.p);
    }
    return 0;
}

int mqtt_proto__payload_check(const struct jn_mqtt_props *pr, struct jn_mqtt_str pl, int code,
                         struct jn_mqtt_err *e)
{
    if (JN_MQTT_HAS(pr, JN_MQTT_P_PAYLOAD_FORMAT) && pr->payload_format == 1 &&
        !jn_mqtt_utf8_valid(pl.p, pl.len, 1)) {
        return mqtt_proto__fail(e, code, JN_MQTT_RC_PAYLOAD_FORMAT,
                                "payload format 1 (UTF-8) but the "
                                "payload is not well-formed UTF-8");
    }
    return 0;
}

static int dec_connect(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    struct jn_mqtt_connect *c = &p->connect;
    struct jn_mqtt_str name;
    uint8_t level, fl;

    if (rd_bin(r, &name, "protocol name", e) != 0 || rd_u8(r, &level, "protocol level", e) != 0) {
        return JN_EPROTO;
    }
    if (name.len != 4 || memcmp(name.p, "MQTT", 4) != 0 ||
        (level != JN_MQTT_V311 && level != JN_MQTT_V5)) {
        return mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_BAD_VERSION,
                                "unsupported protocol '%.*s' level %u "
                                "(MQTT 3.1.1 is 'MQTT' 4, 5.0 is 'MQTT' 5)",
                                (int)(name.len > 32 ? 32 : name.len), name.p, level);
    }
    p->version = level;
    r->version = level;
    if (rd_u8(r, &fl, "connect flags", e) != 0 ||
        rd_u16(r, &c->keep_alive, "keep alive", e) != 0) {
        return JN_EPROTO;
    }
    if (fl & 0x01) {
        return MALFORMED(e, "CONNECT reserved flag bit 0 is set");
    }
    c->clean_start = (fl & 0x02) != 0;
    c->will = (fl & 0x04) != 0;
    c->will_qos = (fl >> 3) & 3;
    c->will_retain = (fl & 0x20) != 0;
    c->has_password = (fl & 0x40) != 0;
    c->has_username = (fl & 0x80) != 0;
    if (c->will_qos == 3) {
        return MALFORMED(e, "CONNECT will QoS 3");
    }
    if (!c->will && (c->will_qos != 0 || c->will_retain)) {
        return MALFORMED(e, "CONNECT will QoS or retain set without the will flag");
    }
    if (level == JN_MQTT_V311 && c->has_password && !c->has_username) {
        return MALFORMED(e, "CONNECT password flag without the user name flag (3.1.1)");
    }
    if (level == JN_MQTT_V5 && rd_props(r, C_CONNECT, &p->props, e) != 0) {
        return JN_EPROTO;
    }
    if (rd_str(r, &c->client_id, "client identifier", e) != 0) {
        return JN_EPROTO;
    }
    if (level == JN_MQTT_V311 && c->client_id.len == 0 && !c->clean_start) {
        return mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_BAD_CLIENT_ID,
                                "an empty client identifier needs clean session 1 (3.1.1)");
    }
    if (c->will) {
        if (level == JN_MQTT_V5 && rd_props(r, C_WILL, &c->will_props, e) != 0) {
            return JN_EPROTO;
        }
        if (rd_str(r, &c->will_topic, "will topic", e) != 0 ||
            mqtt_proto__topic_check(c->will_topic, 0, "will topic", JN_EPROTO, e) != 0 ||
            rd_bin(r, &c->will_payload, "will payload", e) != 0 ||
            mqtt_proto__payload_check(&c->will_props, c->will_payload, JN_EPROTO, e) != 0) {
            return JN_EPROTO;
        }
    }
    if (c->has_username && rd_str(r, &c->username, "user name", e) != 0) {
        return JN_EPROTO;
    }
    if (c->has_password && rd_bin(r, &c->password, "password", e) != 0) {
        return JN_EPROTO;
    }
    return rd_end(r, "CONNECT", e);
}

static int dec_connack(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    uint8_t fl;

    if (rd_u8(r, &fl, "acknowledge flags", e) != 0) {
        return JN_EPROTO;
    }
    if (fl & 0xfe) {
        return MALFORMED(e, "CONNACK reserved flag bits set (0x%02X)", fl);
    }
    p->session_present = fl & 1;
    if (rd_reason(r, p, e) != 0) {
        return JN_EPROTO;
    }
    if (p->session_present && p->reason_code != 0) {
        return PROTOCOL(e, "CONNACK session present with a refusal (0x%02X)", p->reason_code);
    }
    if (p->version == JN_MQTT_V5 && rd_props(r, C_CONNACK, &p->props, e) != 0) {
        return JN_EPROTO;
    }
    return rd_end(r, "CONNACK", e);
}

static int dec_publish(struct rd *r, uint8_t flags, struct jn_mqtt_packet *p,
                       struct jn_mqtt_err *e)
{
    p->dup = (flags & 0x08) != 0;
    p->qos = (flags >> 1) & 3;
    p->retain = (flags & 0x01) != 0;
    if (p->qos == 3) {
        return MALFORMED(e, "PUBLISH with QoS 3");
    }
    if (p->dup && p->qos == 0) {
        return MALFORMED(e, "PUBLISH QoS 0 with the DUP flag");
    }
    if (rd_str(r, &p->topic, "topic name", e) != 0) {
        return JN_EPROTO;
    }
    if (p->qos > 0 && rd_packet_id(r, p, e) != 0) {
        return JN_EPROTO;
    }
    if (p->version == JN_MQTT_V5 && rd_props(r, C_PUBLISH, &p->props, e) != 0) {
        return JN_EPROTO;
    }
    if (mqtt_proto__topic_check(p->topic, JN_MQTT_HAS(&p->props, JN_MQTT_P_TOPIC_ALIAS),
                                "topic name", JN_EPROTO, e) != 0) {
        return JN_EPROTO;
    }
    p->payload.p = (const char *)r->p + r->off;
    p->payload.len = rd_left(r);
    r->off = r->len;
    return mqtt_proto__payload_check(&p->props, p->payload, JN_EPROTO, e);
}

static int dec_ack(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    if (rd_packet_id(r, p, e) != 0) {
        return JN_EPROTO;
    }
    /* v5 3.4.2.1: the reason code and the properties may be left out (0 and none). */
    if (p->version == JN_MQTT_V5 && rd_left(r) > 0) {
        if (rd_reason(r, p, e) != 0) {
            return JN_EPROTO;
        }
        if (rd_left(r) > 0 && rd_props(r, C_ACK, &p->props, e) != 0) {
            return JN_EPROTO;
        }
    }
    return rd_end(r, jn_mqtt_type_name(p->type), e);
}

static int dec_subscribe(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    int sub = p->type == JN_MQTT_SUBSCRIBE;

    if (rd_packet_id(r, p, e) != 0) {
        return JN_EPROTO;
    }
    if (p->version == JN_MQTT_V5 &&
        rd_props(r, sub ? C_SUBSCRIBE : C_UNSUBSCRIBE, &p->props, e) != 0) {
        return JN_EPROTO;
    }
    p->subs_raw.p = (const char *)r->p + r->off;
    p->subs_raw.len = rd_left(r);
    while (rd_left(r) > 0) {
        struct jn_mqtt_str f;
        uint8_t o = 0;
        if (rd_str(r, &f, "topic filter", e) != 0) {
            return JN_EPROTO;
        }
        if (!jn_mqtt_topic_filter_valid(f.p, f.len)) {
            return mqtt_proto__fail(e, JN_EPROTO, JN_MQTT_RC_TOPIC_FILTER,
                                    "topic filter '%.*s' is not valid",
                                    (int)(f.len > 200 ? 200 : f.len), f.p);
        }
        if (sub) {
            if (rd_u8(r, &o, "subscription options", e) != 0) {
                return JN_EPROTO;
            }
            if (JN_MQTT_SUB_QOS(o) == 3) {
                return MALFORMED(e, "subscription QoS 3");
            }
            if (p->version == JN_MQTT_V311 && (o & 0xfc)) {
                return MALFORMED(e, "subscription reserved bits set (0x%02X, 3.1.1)", o);
            }
            if (p->version == JN_MQTT_V5 && (o & 0xc0)) {
                return MALFORMED(e, "subscription reserved bits 6-7 set (0x%02X)", o);
            }
            if (p->version == JN_MQTT_V5 && JN_MQTT_SUB_RETAIN_HANDLING(o) == 3) {
                return PROTOCOL(e, "subscription retain handling 3");
            }
            if (p->version == JN_MQTT_V5 && (o & JN_MQTT_SUB_NO_LOCAL) &&
                mqtt_proto__is_shared(f)) {
                return PROTOCOL(e, "No Local on a shared subscription");
            }
        }
        p->n_subs++;
    }
    if (p->n_subs == 0) {
        return PROTOCOL(e, "%s without a topic filter", jn_mqtt_type_name(p->type));
    }
    return 0;
}

static int dec_suback(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    if (rd_packet_id(r, p, e) != 0) {
        return JN_EPROTO;
    }
    if (p->type == JN_MQTT_UNSUBACK && p->version == JN_MQTT_V311) {
        return rd_end(r, "UNSUBACK", e);
    }
    if (p->version == JN_MQTT_V5 &&
        rd_props(r, p->type == JN_MQTT_SUBACK ? C_SUBACK : C_UNSUBACK, &p->props, e) != 0) {
        return JN_EPROTO;
    }
    p->codes = r->p + r->off;
    p->n_codes = rd_left(r);
    if (p->n_codes == 0) {
        return PROTOCOL(e, "%s without a reason code", jn_mqtt_type_name(p->type));
    }
    for (size_t i = 0; i < p->n_codes; i++) {
        if (!mqtt_proto__rc_known(p->type, p->version, p->codes[i])) {
            return MALFORMED(e, "%s reason code 0x%02X is not defined for it",
                             jn_mqtt_type_name(p->type), p->codes[i]);
        }
    }
    r->off = r->len;
    return 0;
}

/* DISCONNECT and AUTH (v5 3.14.2, 3.15.2): remaining length 0 means success, no properties. */
static int dec_disconnect(struct rd *r, struct jn_mqtt_packet *p, struct jn_mqtt_err *e)
{
    if (p->version == JN_MQTT_V311 || rd_left(r) == 0) {
        return rd_end(r, jn_mqtt_type_name(p->type), e);
    }
    if (rd_reason(r, p, e) != 0) {
        return JN_EPROTO;
    }
    if (p->type == JN_MQTT_AUTH || rd_left(r) > 0) {
        if (rd_props(r, p->type == JN_MQTT_AUTH ? C_AUTH : C_DISCONNECT, &p->props, e) != 0) {
            return JN_EPROTO;
        }
    }
    /* 3.15.2.2.2: an AUTH that is not the bare success form names its method. */
    if (p->type == JN_MQTT_AUTH && !JN_MQTT_HAS(&p->props, JN_MQTT_P_AUTH_METHOD)) {
        return PROTOCOL(e, "AUTH without an Authentication Method");
    }
    return rd_end(r, jn_mqtt_type_name(p->type), e);
}

void jn_mqtt_packet_init(struct jn_mqtt_packet *p, int type, int version)
{
    memset(p, 0, sizeof(*p));
    p->type = (uint8_t)type;
    p->version = (uint8_t)version;
}

int jn_mqtt_decode(const void *data, size_t len, int version, struct jn_mqtt_packet *p,
                   struct jn_mqtt_err *e)
{
    const unsigned char *d = data;
    uint32_t rl;
    size_t used;
    uint8_t type, flags, want;
    struct rd r;
    int rc;

    if (e != NULL) {
        e->rc = 0;
        jn_err_clear(&e->err);
    }
    if (len < 2) {
        return MALFORMED(e, "a packet of %zu bytes is shorter than a fixed header", len);
    }
    type = d[0] >> 4;
    flags = d[0] & 0x0f;
    if (type != JN_MQTT_CONNECT && version != JN_MQTT_V311 && version != JN_MQTT_V5) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "version %d is not 4 or 5",
                                version);
    }
    jn_mqtt_packet_init(p, type, type == JN_MQTT_CONNECT ? JN_MQTT_V311 : version);
    rc = vbi_parse(d + 1, len - 1, p->version, &rl, &used, "remaining length", e);
    if (rc == 1) {
        return MALFORMED(e, "the packet ends inside the remaining length");
    }
    if (rc != 0) {
        return JN_EPROTO;
    }
    if (1 + used + (size_t)rl != len) {
        return MALFORMED(e, "the remaining length %u does not match the %zu bytes given", rl,
                         len - 1 - used);
    }
    if (type == 0 || (type == JN_MQTT_AUTH && version != JN_MQTT_V5)) {
        return MALFORMED(e, "packet type %u is reserved", type);
    }
    /* 2.1.3: PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0010, PUBLISH its own flags, others 0. */
    want = (type == JN_MQTT_PUBREL || type == JN_MQTT_SUBSCRIBE || type == JN_MQTT_UNSUBSCRIBE)
               ? 2 : 0;
    if (type != JN_MQTT_PUBLISH && flags != want) {
        return MALFORMED(e, "%s fixed header flags 0x%X (must be 0x%X)", jn_mqtt_type_name(type),
                         flags, want);
    }
    r.p = d + 1 + used;
    r.len = rl;
    r.off = 0;
    r.version = p->version;
    switch (type) {
    case JN_MQTT_CONNECT:
        rc = dec_connect(&r, p, e);
        if (rc == 0 && p->version == JN_MQTT_V5 && used != mqtt_proto__vbi_size(rl)) {
            return MALFORMED(e, "the remaining length is not in its shortest form");
        }
        return rc;
    case JN_MQTT_CONNACK: return dec_connack(&r, p, e);
    case JN_MQTT_PUBLISH: return dec_publish(&r, flags, p, e);
    case JN_MQTT_PUBACK:
    case JN_MQTT_PUBREC:
    case JN_MQTT_PUBREL:
    case JN_MQTT_PUBCOMP: return dec_ack(&r, p, e);
    case JN_MQTT_SUBSCRIBE:
    case JN_MQTT_UNSUBSCRIBE: return dec_subscribe(&r, p, e);
    case JN_MQTT_SUBACK:
    case JN_MQTT_UNSUBACK: return dec_suback(&r, p, e);
    case JN_MQTT_PINGREQ:
    case JN_MQTT_PINGRESP: return rd_end(&r, jn_mqtt_type_name(type), e);
    default: return dec_disconnect(&r, p, e); /* DISCONNECT, AUTH */
    }
}
