/*
 * mqtt_proto_int.h: what the MQTT codec's two files share (channels/mqtt_proto.c: errors,
 * small checks, the property table, reading, framing, decoding; mqtt_proto_enc.c: encoding and
 * comparing); internal to them, declarations only.
 */
#ifndef JN_MQTT_PROTO_INT_H
#define JN_MQTT_PROTO_INT_H

#include <stddef.h>
#include <stdint.h>

#include "mqtt_proto.h"

/* ---- errors ---- */

/* Fills e (may be NULL) with the sentence and the reason code rc; returns code. */
int mqtt_proto__fail(struct jn_mqtt_err *e, int code, uint8_t rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- names and small checks ---- */

/* 1 when the filter f is a shared subscription ($share/...). */
int mqtt_proto__is_shared(struct jn_mqtt_str f);
/* The reason codes each packet defines (3.x.2.1 of each packet). 1 when v is one of them. */
int mqtt_proto__rc_known(int type, int version, uint8_t v);

/* ---- the property table ---- */

/* A property's data type (T_*) and where it may appear (C_*). */
enum { T_BYTE, T_U16, T_U32, T_VBI, T_STR, T_BIN, T_PAIR };

/* Where a property may appear: one bit per packet kind (the will counts as one). */
enum {
    C_CONNECT = 1 << 0,
    C_CONNACK = 1 << 1,
    C_PUBLISH = 1 << 2,
    C_ACK = 1 << 3, /* PUBACK, PUBREC, PUBREL, PUBCOMP */
    C_SUBSCRIBE = 1 << 4,
    C_SUBACK = 1 << 5,
    C_UNSUBSCRIBE = 1 << 6,
    C_UNSUBACK = 1 << 7,
    C_DISCONNECT = 1 << 8,
    C_AUTH = 1 << 9,
    C_WILL = 1 << 10,
};

struct prop_def {
    uint8_t id, type;
    uint16_t where;
    size_t off; /* of the field in struct jn_mqtt_props (not used for USER, SUBSCRIPTION_ID) */
    const char *name;
};

/* In identifier order: the encoder writes properties in this order. */
extern const struct prop_def mqtt_proto__props[];
extern const size_t mqtt_proto__n_props;

const struct prop_def *mqtt_proto__prop_find(uint32_t id);
/* A numeric property's value (T_BYTE, T_U16, T_U32) / a string or binary one's field. */
uint32_t mqtt_proto__prop_num(const struct jn_mqtt_props *pr, const struct prop_def *d);
struct jn_mqtt_str *mqtt_proto__prop_str(struct jn_mqtt_props *pr, const struct prop_def *d);
/* Value rules beyond the data type: 0/1 flags, and the values the spec calls a Protocol Error
 * (3.1.2.11, 3.2.2.3, 3.3.2.3). code: JN_EPROTO decoding, JN_EINVAL encoding. */
int mqtt_proto__prop_value_check(const struct prop_def *d, uint32_t v, int code,
                                 struct jn_mqtt_err *e);

/* ---- reading ---- */

/* Bytes a variable byte integer of value v takes (1.5.5). */
size_t mqtt_proto__vbi_size(uint32_t v);
/* The UTF-8 string rules (1.5.4: well-formed, no U+0000); code: JN_EPROTO or JN_EINVAL. */
int mqtt_proto__utf8_check(struct jn_mqtt_str s, const char *what, int code,
                           struct jn_mqtt_err *e);
/* Rules across properties or on a string's content (both directions). */
int mqtt_proto__props_rules(const struct jn_mqtt_props *pr, int code, struct jn_mqtt_err *e);

/* ---- decoding ---- */

/* A topic name (4.7, 3.3.2.1); code: JN_EPROTO or JN_EINVAL. */
int mqtt_proto__topic_check(struct jn_mqtt_str t, int alias_ok, const char *what, int code,
                            struct jn_mqtt_err *e);
/* Payload Format Indicator 1 means the payload is UTF-8 (3.3.2.3.2); code as above. */
int mqtt_proto__payload_check(const struct jn_mqtt_props *pr, struct jn_mqtt_str pl, int code,
                              struct jn_mqtt_err *e);

#endif
