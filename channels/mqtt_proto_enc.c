/*
 * mqtt_proto_enc: MQTT 3.1.1 and 5.0 encoding and comparing over buffers, the writing half of
 * mqtt_proto.c (see mqtt_proto.h for the model, ownership and the reason codes).
 *
 * The property table (mqtt_proto_int.h) that drives reading drives writing and comparing
 * properties too, so the three cannot drift apart. Encoding runs the same writer twice: once
 * counting (to learn the remaining length, which comes first on the wire), once writing into
 * room reserved in the jn_buf, so a packet is written in place with one allocation at most and
 * no memmove. The encoder applies the decoder's rules to what it is given, so what it writes
 * decodes.
 */
#include "mqtt_proto.h"
#include "mqtt_proto_int.h"

#include <string.h>

/* ---- encoding ---- */

/* p NULL: only count. */
struct wr {
    unsigned char *p;
    size_t len;
};

static void w_u8(struct wr *w, uint8_t v)
{
    if (w->p) {
        w->p[w->len] = v;
    }
    w->len++;
}

static void w_u16(struct wr *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v >> 8));
    w_u8(w, (uint8_t)v);
}

static void w_u32(struct wr *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v >> 16));
    w_u16(w, (uint16_t)v);
}

static void w_vbi(struct wr *w, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        w_u8(w, v ? (uint8_t)(b | 0x80) : b);
    } while (v);
}

static void w_raw(struct wr *w, const void *s, size_t n)
{
    if (w->p && n) {
        memcpy(w->p + w->len, s, n);
    }
    w->len += n;
}

static int w_bin(struct wr *w, struct jn_mqtt_str s, const char *what, struct jn_mqtt_err *e)
{
    if (s.len > 65535) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                "the %s is %zu bytes (at most 65535)", what, s.len);
    }
    if (s.len && s.p == NULL) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "the %s has no bytes",
                                what);
    }
    w_u16(w, (uint16_t)s.len);
    w_raw(w, s.p, s.len);
    return 0;
}

static int w_str(struct wr *w, struct jn_mqtt_str s, const char *what, struct jn_mqtt_err *e)
{
    if (w->p == NULL && (s.len == 0 || s.p != NULL) && s.len <= 65535 &&
        mqtt_proto__utf8_check(s, what, JN_EINVAL, e) != 0) {
        return JN_EINVAL;
    }
    return w_bin(w, s, what, e);
}

static int w_subids(struct wr *w, const struct jn_mqtt_props *pr, unsigned where,
                    struct jn_mqtt_err *e)
{
    const struct prop_def *d = mqtt_proto__prop_find(JN_MQTT_P_SUBSCRIPTION_ID);
    size_t it = 0, n = 0;
    uint32_t sid;

    while (jn_mqtt_subid_next(pr, &it, &sid)) {
        if ((d->where & where) == 0 || (where == C_SUBSCRIBE && n > 0)) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                    "Subscription Identifier not "
                                    "allowed (or more than one) in this packet");
        }
        if (mqtt_proto__prop_value_check(d, sid, JN_EINVAL, e) != 0) {
            return JN_EINVAL;
        }
        w_u8(w, JN_MQTT_P_SUBSCRIPTION_ID);
        w_vbi(w, sid);
        n++;
    }
    return 0;
}

static int w_users(struct wr *w, const struct jn_mqtt_props *pr, struct jn_mqtt_err *e)
{
    struct jn_mqtt_userprop u;
    size_t it = 0;

    while (jn_mqtt_user_next(pr, &it, &u)) {
        w_u8(w, JN_MQTT_P_USER);
        if (w_str(w, u.name, "User Property name", e) != 0 ||
            w_str(w, u.value, "User Property value", e) != 0) {
            return JN_EINVAL;
        }
    }
    return 0;
}

/* In table (identifier) order; the repeating ones at their place, in their own order. */
static int w_props_body(struct wr *w, const struct jn_mqtt_props *pr, unsigned where,
                        struct jn_mqtt_err *e)
{
    struct jn_mqtt_props *mp = (struct jn_mqtt_props *)pr; /* mqtt_proto__prop_str() reads only */

    for (size_t i = 0; i < mqtt_proto__n_props; i++) {
        const struct prop_def *d = &mqtt_proto__props[i];
        if (d->id == JN_MQTT_P_SUBSCRIPTION_ID) {
            if (w_subids(w, pr, where, e) != 0) {
                return JN_EINVAL;
            }
            continue;
        }
        if (d->id == JN_MQTT_P_USER) {
            if (w_users(w, pr, e) != 0) {
                return JN_EINVAL;
            }
            continue;
        }
        if (!JN_MQTT_HAS(pr, d->id)) {
            continue;
        }
        if ((d->where & where) == 0) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                    "the %s property is not allowed in this packet", d->name);
        }
        w_u8(w, d->id);
        switch (d->type) {
        case T_BYTE: w_u8(w, (uint8_t)mqtt_proto__prop_num(pr, d)); break;
        case T_U16: w_u16(w, (uint16_t)mqtt_proto__prop_num(pr, d)); break;
        case T_U32: w_u32(w, mqtt_proto__prop_num(pr, d)); break;
        case T_STR:
            if (w_str(w, *mqtt_proto__prop_str(mp, d), d->name, e) != 0) {
                return JN_EINVAL;
            }
            break;
        default: /* T_BIN */
            if (w_bin(w, *mqtt_proto__prop_str(mp, d), d->name, e) != 0) {
                return JN_EINVAL;
            }
            break;
        }
        if (d->type != T_STR && d->type != T_BIN &&
            mqtt_proto__prop_value_check(d, mqtt_proto__prop_num(pr, d), JN_EINVAL, e) != 0) {
            return JN_EINVAL;
        }
    }
    return mqtt_proto__props_rules(pr, JN_EINVAL, e);
}

static int w_props(struct wr *w, const struct jn_mqtt_props *pr, unsigned where,
                   struct jn_mqtt_err *e)
{
    struct wr count = {NULL, 0};

    if (w_props_body(&count, pr, where, e) != 0) {
        return JN_EINVAL;
    }
    if (count.len > JN_MQTT_MAX_REMAINING) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_TOO_LARGE, "properties too long");
    }
    w_vbi(w, (uint32_t)count.len);
    return w_props_body(w, pr, where, e);
}

static int props_empty(const struct jn_mqtt_props *pr)
{
    size_t it = 0;
    struct jn_mqtt_userprop u;
    uint32_t sid;
    uint64_t lists = ((uint64_t)1 << JN_MQTT_P_USER) | ((uint64_t)1 << JN_MQTT_P_SUBSCRIPTION_ID);

    if ((pr->has & ~lists) != 0 || jn_mqtt_user_next(pr, &it, &u)) {
        return 0;
    }
    it = 0;
    return !jn_mqtt_subid_next(pr, &it, &sid);
}

static int enc_reason(const struct jn_mqtt_packet *p, uint8_t v, struct jn_mqtt_err *e)
{
    if (!mqtt_proto__rc_known(p->type, p->version, v)) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                "%s reason code 0x%02X is not defined for it",
                                jn_mqtt_type_name(p->type), v);
    }
    return 0;
}

static int enc_packet_id(const struct jn_mqtt_packet *p, struct wr *w, struct jn_mqtt_err *e)
{
    if (p->packet_id == 0) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_PROTOCOL,
                                "%s needs a packet identifier (not 0)", jn_mqtt_type_name(p->type));
    }
    w_u16(w, p->packet_id);
    return 0;
}

#define TRY(x)                                                                                    \
    do {                                                                                          \
        if ((x) != 0) {                                                                           \
            return JN_EINVAL;                                                                     \
        }                                                                                         \
    } while (0)

static int enc_connect(const struct jn_mqtt_packet *p, struct wr *w, struct jn_mqtt_err *e)
{
    const struct jn_mqtt_connect *c = &p->connect;
    int v5 = p->version == JN_MQTT_V5;
    uint8_t fl = 0;

    if (c->will_qos > 2 || (!c->will && (c->will_qos || c->will_retain))) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_MALFORMED,
                                "will QoS %u / retain without a will", c->will_qos);
    }
    if (!v5 && c->has_password && !c->has_username) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_MALFORMED,
                                "3.1.1: a password needs a user name");
    }
    if (!v5 && c->client_id.len == 0 && !c->clean_start) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_BAD_CLIENT_ID, "3.1.1: an empty client "
                    "identifier needs clean session");
    }
    fl = (uint8_t)((c->clean_start ? 0x02 : 0) | (c->will ? 0x04 : 0) | (c->will_qos << 3) |
                   (c->will_retain ? 0x20 : 0) | (c->has_password ? 0x40 : 0) |
                   (c->has_username ? 0x80 : 0));
    w_u16(w, 4);
    w_raw(w, "MQTT", 4);
    w_u8(w, p->version);
    w_u8(w, fl);
    w_u16(w, c->keep_alive);
    if (v5) {
        TRY(w_props(w, &p->props, C_CONNECT, e));
    }
    TRY(w_str(w, c->client_id, "client identifier", e));
    if (c->will) {
        if (v5) {
            TRY(w_props(w, &c->will_props, C_WILL, e));
        }
        TRY(mqtt_proto__topic_check(c->will_topic, 0, "will topic", JN_EINVAL, e));
        TRY(mqtt_proto__payload_check(&c->will_props, c->will_payload, JN_EINVAL, e));
        TRY(w_str(w, c->will_topic, "will topic", e));
        TRY(w_bin(w, c->will_payload, "will payload", e));
    }
    if (c->has_username) {
        TRY(w_str(w, c->username, "user name", e));
    }
    if (c->has_password) {
        TRY(w_bin(w, c->password, "password", e));
    }
    return 0;
}

static int enc_subs(const struct jn_mqtt_packet *p, struct wr *w, struct jn_mqtt_err *e)
{
    int sub = p->type == JN_MQTT_SUBSCRIBE;
    struct jn_mqtt_sub s;
    size_t it = 0, n = 0;

    TRY(enc_packet_id(p, w, e));
    if (p->version == JN_MQTT_V5) {
        TRY(w_props(w, &p->props, sub ? C_SUBSCRIBE : C_UNSUBSCRIBE, e));
    }
    while (jn_mqtt_subs_next(p, &it, &s)) {
        uint8_t o = s.options;
        if (!jn_mqtt_topic_filter_valid(s.filter.p, s.filter.len)) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_TOPIC_FILTER,
                                    "topic filter '%.*s' is not valid",
                                    (int)(s.filter.len > 200 ? 200 : s.filter.len), s.filter.p);
        }
        TRY(w_str(w, s.filter, "topic filter", e));
        if (sub) {
            if (JN_MQTT_SUB_QOS(o) == 3 || (p->version == JN_MQTT_V311 && (o & 0xfc)) ||
                (o & 0xc0) || JN_MQTT_SUB_RETAIN_HANDLING(o) == 3 ||
                ((o & JN_MQTT_SUB_NO_LOCAL) && mqtt_proto__is_shared(s.filter))) {
                return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_MALFORMED,
                                        "subscription options 0x%02X are not valid here", o);
            }
            w_u8(w, o);
        }
        n++;
    }
    if (n == 0) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_PROTOCOL, "%s without a topic filter",
                    jn_mqtt_type_name(p->type));
    }
    return 0;
}

static int enc_body(const struct jn_mqtt_packet *p, struct wr *w, struct jn_mqtt_err *e)
{
    int v5 = p->version == JN_MQTT_V5;

    if (!v5 && !props_empty(&p->props)) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                "MQTT 3.1.1 has no properties");
    }
    switch (p->type) {
    case JN_MQTT_CONNECT: return enc_connect(p, w, e);
    case JN_MQTT_CONNACK:
        TRY(enc_reason(p, p->reason_code, e));
        if (p->session_present && p->reason_code != 0) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_PROTOCOL,
                                    "session present with a refusal");
        }
        w_u8(w, p->session_present ? 1 : 0);
        w_u8(w, p->reason_code);
        return v5 ? w_props(w, &p->props, C_CONNACK, e) : 0;
    case JN_MQTT_PUBLISH:
        if (p->qos > 2 || (p->dup && p->qos == 0)) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_MALFORMED, "PUBLISH QoS %u%s", p->qos,
                        p->dup ? " with DUP" : "");
        }
        TRY(mqtt_proto__topic_check(p->topic, v5 && JN_MQTT_HAS(&p->props, JN_MQTT_P_TOPIC_ALIAS),
                        "topic name", JN_EINVAL, e));
        TRY(mqtt_proto__payload_check(&p->props, p->payload, JN_EINVAL, e));
        TRY(w_str(w, p->topic, "topic name", e));
        if (p->qos > 0) {
            TRY(enc_packet_id(p, w, e));
        }
        if (v5) {
            TRY(w_props(w, &p->props, C_PUBLISH, e));
        }
        if (p->payload.len && p->payload.p == NULL) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                    "payload without bytes");
        }
        w_raw(w, p->payload.p, p->payload.len);
        return 0;
    case JN_MQTT_PUBACK:
    case JN_MQTT_PUBREC:
    case JN_MQTT_PUBREL:
    case JN_MQTT_PUBCOMP:
        TRY(enc_packet_id(p, w, e));
        if (!v5) {
            return 0;
        }
        TRY(enc_reason(p, p->reason_code, e));
        if (props_empty(&p->props)) {
            if (p->reason_code != 0) {
                w_u8(w, p->reason_code);
            }
            return 0;
        }
        w_u8(w, p->reason_code);
        return w_props(w, &p->props, C_ACK, e);
    case JN_MQTT_SUBSCRIBE:
    case JN_MQTT_UNSUBSCRIBE: return enc_subs(p, w, e);
    case JN_MQTT_SUBACK:
    case JN_MQTT_UNSUBACK:
        TRY(enc_packet_id(p, w, e));
        if (p->type == JN_MQTT_UNSUBACK && !v5) {
            return 0;
        }
        if (v5) {
            TRY(w_props(w, &p->props, p->type == JN_MQTT_SUBACK ? C_SUBACK : C_UNSUBACK, e));
        }
        if (p->n_codes == 0 || p->codes == NULL) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_PROTOCOL, "%s without a reason code",
                        jn_mqtt_type_name(p->type));
        }
        for (size_t i = 0; i < p->n_codes; i++) {
            TRY(enc_reason(p, p->codes[i], e));
        }
        w_raw(w, p->codes, p->n_codes);
        return 0;
    case JN_MQTT_PINGREQ:
    case JN_MQTT_PINGRESP:
        if (!props_empty(&p->props)) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "%s has no properties",
                        jn_mqtt_type_name(p->type));
        }
        return 0;
    case JN_MQTT_DISCONNECT:
    case JN_MQTT_AUTH:
        if (!v5) {
            if (p->type == JN_MQTT_AUTH) {
                return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION,
                                        "AUTH is MQTT 5 only");
            }
            return 0;
        }
        TRY(enc_reason(p, p->reason_code, e));
        if (props_empty(&p->props)) {
            if (p->reason_code == 0) {
                return 0;
            }
            if (p->type == JN_MQTT_DISCONNECT) {
                w_u8(w, p->reason_code);
                return 0;
            }
        }
        if (p->type == JN_MQTT_AUTH && !JN_MQTT_HAS(&p->props, JN_MQTT_P_AUTH_METHOD)) {
            return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_PROTOCOL,
                                    "AUTH without an Authentication Method");
        }
        w_u8(w, p->reason_code);
        return w_props(w, &p->props, p->type == JN_MQTT_AUTH ? C_AUTH : C_DISCONNECT, e);
    default:
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "packet type %u", p->type);
    }
}

int jn_mqtt_encode(const struct jn_mqtt_packet *p, struct jn_buf *out, struct jn_mqtt_err *e)
{
    struct wr count = {NULL, 0}, w;
    uint8_t b0;
    size_t total;
    int rc;

    if (e != NULL) {
        e->rc = 0;
        jn_err_clear(&e->err);
    }
    if (p->version != JN_MQTT_V311 && p->version != JN_MQTT_V5) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "version %u is not 4 or 5",
                    p->version);
    }
    if (enc_body(p, &count, e) != 0) {
        return JN_EINVAL;
    }
    if (count.len > JN_MQTT_MAX_REMAINING) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_TOO_LARGE,
                                "%s of %zu bytes is over MQTT's limit", jn_mqtt_type_name(p->type),
                                count.len);
    }
    b0 = (uint8_t)(p->type << 4);
    if (p->type == JN_MQTT_PUBLISH) {
        b0 |= (uint8_t)((p->dup ? 0x08 : 0) | (p->qos << 1) | (p->retain ? 1 : 0));
    } else if (p->type == JN_MQTT_PUBREL || p->type == JN_MQTT_SUBSCRIBE ||
               p->type == JN_MQTT_UNSUBSCRIBE) {
        b0 |= 0x02;
    }
    total = 1 + mqtt_proto__vbi_size((uint32_t)count.len) + count.len;
    rc = jn_buf_reserve(out, total);
    if (rc != 0) {
        return mqtt_proto__fail(e, JN_ENOMEM, JN_MQTT_RC_IMPLEMENTATION, "out of memory");
    }
    w.p = (unsigned char *)out->p + out->len;
    w.len = 0;
    w_u8(&w, b0);
    w_vbi(&w, (uint32_t)count.len);
    if (enc_body(p, &w, e) != 0 || w.len != total) {
        return mqtt_proto__fail(e, JN_EINVAL, JN_MQTT_RC_IMPLEMENTATION, "internal: sizes differ");
    }
    out->len += total;
    out->p[out->len] = '\0';
    return 0;
}

/* ---- comparing ---- */

static int str_eq(struct jn_mqtt_str a, struct jn_mqtt_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static int props_equal(const struct jn_mqtt_props *a, const struct jn_mqtt_props *b)
{
    struct jn_mqtt_props *ma = (struct jn_mqtt_props *)a, *mb = (struct jn_mqtt_props *)b;
    uint64_t lists = ((uint64_t)1 << JN_MQTT_P_USER) | ((uint64_t)1 << JN_MQTT_P_SUBSCRIPTION_ID);
    size_t ia = 0, ib = 0;
    int ra, rb;

    if ((a->has & ~lists) != (b->has & ~lists)) {
        return 0;
    }
    for (size_t i = 0; i < mqtt_proto__n_props; i++) {
        const struct prop_def *d = &mqtt_proto__props[i];
        if (d->id == JN_MQTT_P_USER || d->id == JN_MQTT_P_SUBSCRIPTION_ID ||
            !JN_MQTT_HAS(a, d->id)) {
            continue;
        }
        if (d->type == T_STR || d->type == T_BIN) {
            if (!str_eq(*mqtt_proto__prop_str(ma, d), *mqtt_proto__prop_str(mb, d))) {
                return 0;
            }
        } else if (mqtt_proto__prop_num(a, d) != mqtt_proto__prop_num(b, d)) {
            return 0;
        }
    }
    for (;;) {
        struct jn_mqtt_userprop ua, ub;
        ra = jn_mqtt_user_next(a, &ia, &ua);
        rb = jn_mqtt_user_next(b, &ib, &ub);
        if (ra != rb) {
            return 0;
        }
        if (!ra) {
            break;
        }
        if (!str_eq(ua.name, ub.name) || !str_eq(ua.value, ub.value)) {
            return 0;
        }
    }
    ia = ib = 0;
    for (;;) {
        uint32_t sa, sb;
        ra = jn_mqtt_subid_next(a, &ia, &sa);
        rb = jn_mqtt_subid_next(b, &ib, &sb);
        if (ra != rb || (ra && sa != sb)) {
            return 0;
        }
        if (!ra) {
            return 1;
        }
    }
}

int jn_mqtt_packet_equal(const struct jn_mqtt_packet *a, const struct jn_mqtt_packet *b)
{
    const struct jn_mqtt_connect *ca = &a->connect, *cb = &b->connect;
    size_t ia = 0, ib = 0;

    if (a->type != b->type || a->version != b->version || a->dup != b->dup ||
        a->retain != b->retain || a->session_present != b->session_present ||
        a->qos != b->qos || a->reason_code != b->reason_code || a->packet_id != b->packet_id ||
        !str_eq(a->topic, b->topic) || !str_eq(a->payload, b->payload) ||
        !props_equal(&a->props, &b->props) || a->n_codes != b->n_codes ||
        (a->n_codes && memcmp(a->codes, b->codes, a->n_codes) != 0)) {
        return 0;
    }
    if (ca->keep_alive != cb->keep_alive || ca->clean_start != cb->clean_start ||
        ca->will != cb->will || ca->will_retain != cb->will_retain ||
        ca->has_username != cb->has_username || ca->has_password != cb->has_password ||
        ca->will_qos != cb->will_qos || !str_eq(ca->client_id, cb->client_id) ||
        !str_eq(ca->will_topic, cb->will_topic) || !str_eq(ca->will_payload, cb->will_payload) ||
        !str_eq(ca->username, cb->username) || !str_eq(ca->password, cb->password) ||
        !props_equal(&ca->will_props, &cb->will_props)) {
        return 0;
    }
    for (;;) {
        struct jn_mqtt_sub sa, sb;
        int ra = jn_mqtt_subs_next(a, &ia, &sa), rb = jn_mqtt_subs_next(b, &ib, &sb);
        if (ra != rb) {
            return 0;
        }
        if (!ra) {
            return 1;
        }
        if (!str_eq(sa.filter, sb.filter) || sa.options != sb.options) {
            return 0;
        }
    }
}
