/*
 * mqtt_proto: the MQTT wire protocol, 3.1.1 (protocol level 4) and 5.0 (level 5), as pure
 * functions over buffers: no sockets, no state, no hidden allocation. It is the foundation of
 * junction's own MQTT receiving side (MQTT IN as a client on libevent, later a listener for
 * devices), so every packet is both decoded and encoded.
 *
 * Model: the OASIS specifications, MQTT Version 3.1.1 (2014, "v4" below) and MQTT Version 5.0
 * (2019, "v5"). Section numbers in comments are the v5 ones unless marked v4:
 *   1.5      data types (UTF-8 strings 1.5.4, variable byte integers 1.5.5, binary data 1.5.6)
 *   2.1      fixed header (type, flags 2.1.3, remaining length 2.1.4)
 *   2.2.1    packet identifier; 2.2.2 properties (the table in 2.2.2.2 says which packet may
 *            carry which property)
 *   3.1-3.15 the packets; 4.7 topic names and filters; 4.13 handling errors
 *
 * Framing (2.1.4): jn_mqtt_frame() looks at the start of a stream buffer and says whether a
 * whole packet is there (and its size), how many bytes are still needed, or that the stream is
 * broken (remaining length over 4 bytes, or a packet over the caller's max_packet_size).
 *
 * Decoding: jn_mqtt_decode() reads exactly one framed packet into a caller-owned struct
 * jn_mqtt_packet. It allocates nothing: strings, binary data, the payload, property lists and
 * subscription lists are borrowed spans into the caller's bytes and stay valid as long as those
 * bytes do. Lists of unbounded length (user properties, subscription identifiers, topic
 * filters) are kept as their wire span plus a count and read with the jn_mqtt_*_next()
 * iterators, which never fail on what decode accepted.
 *
 * Encoding: jn_mqtt_encode() appends one packet to a jn_buf (the buffer owns its bytes, as
 * always). Lists come either from caller arrays (user, subid, subs, codes) or, for a decoded
 * packet, from its wire spans, so a decoded packet re-encodes as it is.
 *
 * Errors: each failure returns a negative JN_E* code and fills struct jn_mqtt_err with a
 * sentence and the MQTT 5 reason code to answer with (CONNACK or DISCONNECT, 4.13):
 *   0x81 Malformed Packet  - the bytes cannot be parsed per the spec: truncated fields, bad
 *                            UTF-8 or U+0000, reserved flag bits, QoS 3, a property not allowed
 *                            in the packet or unknown, trailing bytes, a reason code value the
 *                            packet does not define, a non-minimal variable byte integer (v5)
 *   0x82 Protocol Error    - parsed, but not allowed: packet identifier 0, a duplicated
 *                            property, a property value out of its range, an empty SUBSCRIBE,
 *                            a Response Topic with a wildcard, AUTH without a method
 *   0x84 Unsupported Protocol Version (CONNECT: not "MQTT" level 4 or 5)
 *   0x85 Client Identifier not valid (v4: empty with clean session 0)
 *   0x8F Topic Filter invalid, 0x90 Topic Name invalid (wildcards), 0x94 Topic Alias invalid (0)
 *   0x95 Packet too large, 0x99 Payload format invalid (payload format 1 and bad UTF-8)
 * A v4 peer has no reason codes: a CONNECT refusal maps to a CONNACK return code with
 * jn_mqtt_v4_connack_rc(); anything else closes the connection (v4 4.8).
 *
 * Not checked here because it needs session state or the direction: topic alias above the
 * negotiated maximum, packet identifiers in use, Receive Maximum, a packet over the peer's
 * Maximum Packet Size on the sending side, AUTH when CONNECT had no authentication method,
 * properties only one side may send (a Subscription Identifier in a client's PUBLISH).
 *
 * Threads: all functions are reentrant; no global state.
 */
#ifndef JN_MQTT_PROTO_H
#define JN_MQTT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_buf.h"
#include "jn_err.h"

#define JN_MQTT_V311 4
#define JN_MQTT_V5 5

/* The largest remaining length (2.1.4: 4 bytes of 7 bits), and so the largest packet. */
#define JN_MQTT_MAX_REMAINING 268435455u
#define JN_MQTT_MAX_PACKET (JN_MQTT_MAX_REMAINING + 5u)

/* Control packet types (2.1.2). */
enum {
    JN_MQTT_CONNECT = 1,
    JN_MQTT_CONNACK = 2,
    JN_MQTT_PUBLISH = 3,
    JN_MQTT_PUBACK = 4,
    JN_MQTT_PUBREC = 5,
    JN_MQTT_PUBREL = 6,
    JN_MQTT_PUBCOMP = 7,
    JN_MQTT_SUBSCRIBE = 8,
    JN_MQTT_SUBACK = 9,
    JN_MQTT_UNSUBSCRIBE = 10,
    JN_MQTT_UNSUBACK = 11,
    JN_MQTT_PINGREQ = 12,
    JN_MQTT_PINGRESP = 13,
    JN_MQTT_DISCONNECT = 14,
    JN_MQTT_AUTH = 15, /* v5 only */
};

/* The reason codes this codec reports (2.4); the packets define more, all accepted on decode. */
enum {
    JN_MQTT_RC_SUCCESS = 0x00,
    JN_MQTT_RC_UNSPECIFIED = 0x80,
    JN_MQTT_RC_MALFORMED = 0x81,
    JN_MQTT_RC_PROTOCOL = 0x82,
    JN_MQTT_RC_IMPLEMENTATION = 0x83,
    JN_MQTT_RC_BAD_VERSION = 0x84,
    JN_MQTT_RC_BAD_CLIENT_ID = 0x85,
    JN_MQTT_RC_BAD_LOGIN = 0x86,
    JN_MQTT_RC_NOT_AUTHORIZED = 0x87,
    JN_MQTT_RC_UNAVAILABLE = 0x88,
    JN_MQTT_RC_TOPIC_FILTER = 0x8F,
    JN_MQTT_RC_TOPIC_NAME = 0x90,
    JN_MQTT_RC_TOPIC_ALIAS = 0x94,
    JN_MQTT_RC_TOO_LARGE = 0x95,
    JN_MQTT_RC_PAYLOAD_FORMAT = 0x99,
};

/* Property identifiers (2.2.2.2). A struct jn_mqtt_props says which are present with the bit
 * (1 << id) in .has. */
enum {
    JN_MQTT_P_PAYLOAD_FORMAT = 0x01,
    JN_MQTT_P_MESSAGE_EXPIRY = 0x02,
    JN_MQTT_P_CONTENT_TYPE = 0x03,
    JN_MQTT_P_RESPONSE_TOPIC = 0x08,
    JN_MQTT_P_CORRELATION_DATA = 0x09,
    JN_MQTT_P_SUBSCRIPTION_ID = 0x0B,
    JN_MQTT_P_SESSION_EXPIRY = 0x11,
    JN_MQTT_P_ASSIGNED_CLIENT_ID = 0x12,
    JN_MQTT_P_SERVER_KEEP_ALIVE = 0x13,
    JN_MQTT_P_AUTH_METHOD = 0x15,
    JN_MQTT_P_AUTH_DATA = 0x16,
    JN_MQTT_P_REQUEST_PROBLEM_INFO = 0x17,
    JN_MQTT_P_WILL_DELAY = 0x18,
    JN_MQTT_P_REQUEST_RESPONSE_INFO = 0x19,
    JN_MQTT_P_RESPONSE_INFO = 0x1A,
    JN_MQTT_P_SERVER_REFERENCE = 0x1C,
    JN_MQTT_P_REASON_STRING = 0x1F,
    JN_MQTT_P_RECEIVE_MAX = 0x21,
    JN_MQTT_P_TOPIC_ALIAS_MAX = 0x22,
    JN_MQTT_P_TOPIC_ALIAS = 0x23,
    JN_MQTT_P_MAX_QOS = 0x24,
    JN_MQTT_P_RETAIN_AVAILABLE = 0x25,
    JN_MQTT_P_USER = 0x26,
    JN_MQTT_P_MAX_PACKET_SIZE = 0x27,
    JN_MQTT_P_WILDCARD_SUB = 0x28,
    JN_MQTT_P_SUBID_AVAILABLE = 0x29,
    JN_MQTT_P_SHARED_SUB = 0x2A,
};
#define JN_MQTT_HAS(props, id) ((((props)->has) >> (id)) & 1u)

/* Bytes, not NUL-terminated. Borrowed: from the decoded packet's bytes, or the caller's. */
struct jn_mqtt_str {
    const char *p;
    size_t len;
};

struct jn_mqtt_userprop {
    struct jn_mqtt_str name, value;
};

/*
 * v5 properties of a packet (or of a will). Scalars and strings are valid when their .has bit
 * is set. The two lists that may repeat, user properties and subscription identifiers, are read
 * with jn_mqtt_user_next() / jn_mqtt_subid_next(): on decode .raw is the property bytes and the
 * arrays are NULL; to encode, point .user / .subid at arrays of n_user / n_subid entries (or
 * leave a decoded .raw in place).
 */
struct jn_mqtt_props {
    uint64_t has;
    uint32_t message_expiry, session_expiry, will_delay, max_packet_size;
    uint16_t receive_max, topic_alias_max, topic_alias, server_keep_alive;
    uint8_t payload_format, request_problem_info, request_response_info, max_qos;
    uint8_t retain_available, wildcard_sub, subid_available, shared_sub;
    struct jn_mqtt_str content_type, response_topic, correlation_data, assigned_client_id;
    struct jn_mqtt_str auth_method, auth_data, response_info, server_reference, reason_string;
    size_t n_user;
    const struct jn_mqtt_userprop *user;
    size_t n_subid;
    const uint32_t *subid;
    struct jn_mqtt_str raw;
};

/* Subscription options (3.8.3.1); v4 has only the QoS bits. */
#define JN_MQTT_SUB_QOS(o) ((o) & 3u)
#define JN_MQTT_SUB_NO_LOCAL 0x04u
#define JN_MQTT_SUB_RETAIN_AS_PUBLISHED 0x08u
#define JN_MQTT_SUB_RETAIN_HANDLING(o) (((o) >> 4) & 3u)

struct jn_mqtt_sub {
    struct jn_mqtt_str filter;
    uint8_t options; /* 0 for UNSUBSCRIBE */
};

struct jn_mqtt_connect {
    uint16_t keep_alive;
    bool clean_start; /* v4: clean session */
    bool will, will_retain, has_username, has_password;
    uint8_t will_qos;
    struct jn_mqtt_str client_id, will_topic, will_payload, username, password;
    struct jn_mqtt_props will_props; /* v5 */
};

/*
 * One control packet. Which fields mean something depends on type:
 *   CONNECT      connect, props (version comes from the packet's protocol level)
 *   CONNACK      session_present, reason_code (v4: the return code 0..5), props
 *   PUBLISH      dup, qos, retain, topic, packet_id (QoS > 0), props, payload
 *   PUBACK, PUBREC, PUBREL, PUBCOMP  packet_id, reason_code, props
 *   SUBSCRIBE    packet_id, props, subscriptions (filter + options)
 *   SUBACK       packet_id, props, codes (one per filter)
 *   UNSUBSCRIBE  packet_id, props, subscriptions (filter only)
 *   UNSUBACK     packet_id, props, codes (v5; v4 has none)
 *   PINGREQ, PINGRESP  nothing
 *   DISCONNECT, AUTH   reason_code, props (v5; v4 DISCONNECT has none)
 * Subscriptions: to encode, subs points at n_subs entries; decoded, subs is NULL and subs_raw
 * holds the wire bytes, read with jn_mqtt_subs_next(). codes: n_codes bytes, borrowed.
 */
struct jn_mqtt_packet {
    uint8_t type;
    uint8_t version; /* JN_MQTT_V311 or JN_MQTT_V5 */
    bool dup, retain, session_present;
    uint8_t qos;
    uint8_t reason_code;
    uint16_t packet_id;
    struct jn_mqtt_str topic, payload;
    struct jn_mqtt_connect connect;
    struct jn_mqtt_props props;
    size_t n_subs;
    const struct jn_mqtt_sub *subs;
    struct jn_mqtt_str subs_raw;
    size_t n_codes;
    const uint8_t *codes;
};

struct jn_mqtt_err {
    uint8_t rc;         /* the MQTT 5 reason code to answer with */
    struct jn_err err;  /* .code: JN_EPROTO (decode, frame) or JN_EINVAL (encode); .msg */
};

enum jn_mqtt_frame_res {
    JN_MQTT_FRAME_MORE = 0,   /* not a whole packet yet; *n: the bytes needed at least */
    JN_MQTT_FRAME_PACKET = 1, /* a whole packet of *n bytes starts the buffer */
    JN_MQTT_FRAME_BAD = -1,   /* the stream is broken (e: 0x81 or 0x95); close it */
};

/*
 * Looks at the first len bytes of a stream. max_packet: the largest whole packet (fixed header
 * included) accepted, 0 for the protocol's limit; a larger one is reported (0x95) as soon as
 * its remaining length is readable, before its bytes arrive. *n: see the enum. Never reads
 * beyond len; len 0 is MORE with *n = 2.
 */
enum jn_mqtt_frame_res jn_mqtt_frame(const void *data, size_t len, size_t max_packet, size_t *n,
                                     struct jn_mqtt_err *e);

/*
 * Decodes one whole packet (len: exactly what jn_mqtt_frame() reported) sent by a peer that
 * speaks version (JN_MQTT_V311 or JN_MQTT_V5, what its CONNECT said; ignored for CONNECT,
 * which carries its own). Fills *p, borrowing from data. 0, or JN_EPROTO with e filled (*p is
 * then unspecified), or JN_EINVAL for a bad version argument.
 */
int jn_mqtt_decode(const void *data, size_t len, int version, struct jn_mqtt_packet *p,
                   struct jn_mqtt_err *e);

/*
 * Appends the encoding of *p in p->version to out. Checks what the bytes need (lengths that
 * fit, QoS 0..2, packet identifier not 0 where one is needed, properties and codes the
 * version allows); strings are written as given. 0, JN_EINVAL with e filled (out is then as
 * it was), or JN_ENOMEM.
 */
int jn_mqtt_encode(const struct jn_mqtt_packet *p, struct jn_buf *out, struct jn_mqtt_err *e);

/* Zeroes *p and sets its type and version. */
void jn_mqtt_packet_init(struct jn_mqtt_packet *p, int type, int version);

/* Iterators: *it starts at 0. 1 and *out filled while there is a next entry, else 0. */
int jn_mqtt_user_next(const struct jn_mqtt_props *pr, size_t *it, struct jn_mqtt_userprop *out);
int jn_mqtt_subid_next(const struct jn_mqtt_props *pr, size_t *it, uint32_t *out);
int jn_mqtt_subs_next(const struct jn_mqtt_packet *p, size_t *it, struct jn_mqtt_sub *out);

/* 1 when a and b hold the same packet (field by field, lists by content), else 0. */
int jn_mqtt_packet_equal(const struct jn_mqtt_packet *a, const struct jn_mqtt_packet *b);

/* Checks (1 = valid). UTF-8 per 1.5.4: well-formed, no surrogates, no U+0000 (nul_ok: allow
 * it, as in a payload with payload format 1). Topic names (4.7): no '+' or '#', length >= 1.
 * Topic filters (4.7.1, 4.8.2 shared): wildcards alone in their level, '#' last. */
int jn_mqtt_utf8_valid(const void *s, size_t len, int nul_ok);
int jn_mqtt_topic_name_valid(const char *s, size_t len);
int jn_mqtt_topic_filter_valid(const char *s, size_t len);

/* "CONNECT", ..., "AUTH"; "?" for others. */
const char *jn_mqtt_type_name(int type);

/* The v4 CONNACK return code (v4 3.2.2.3) for a v5 CONNACK reason code: 1 bad protocol
 * version, 2 identifier rejected, 3 server unavailable, 4 bad user name or password, 5 not
 * authorized; anything else not success is 3. */
uint8_t jn_mqtt_v4_connack_rc(uint8_t rc5);

#endif
