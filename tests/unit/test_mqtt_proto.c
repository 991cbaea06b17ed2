/*
 * Unit tests for channels/mqtt_proto: every packet of MQTT 3.1.1 and 5.0 as bytes derived by
 * hand from the OASIS specs (decoded field by field, re-encoded to the same bytes), packets
 * built from caller arrays and encoded to hand bytes, each malformed case the codec rejects
 * (with the reason code it must answer), encoder refusals, and the framer on a stream of all
 * packets split at every byte boundary and fed one byte at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_test.h"
#include "mqtt_proto.h"

#define V(s) s, sizeof(s) - 1

struct vec {
    const char *name;
    int version;
    const char *b;
    size_t len;
};

/* Canonical packets: each decodes and re-encodes to the same bytes. */
static const struct vec good[] = {
    /* 3.1.1 3.1: CONNECT, clean session 0, keep alive 60, client id "jn1". */
    {"v4 connect", 4, V("\x10\x0f\x00\x04MQTT\x04\x00\x00\x3c\x00\x03jn1")},
    /* Will (QoS 1, retain) "w/t" = "bye", user "u", password "pw": flags 0xEE. */
    {"v4 connect will+login", 4,
     V("\x10\x20\x00\x04MQTT\x04\xee\x00\x0a\x00\x03" "cid\x00\x03w/t\x00\x03" "bye"
       "\x00\x01u\x00\x02pw")},
    /* 5.0 3.1: clean start, keep alive 30, Session Expiry 3600, Receive Maximum 20, user a=b. */
    {"v5 connect", 5,
     V("\x10\x1e\x00\x04MQTT\x05\x02\x00\x1e\x0f\x11\x00\x00\x0e\x10\x21\x00\x14"
       "\x26\x00\x01" "a\x00\x01" "b\x00\x02" "c5")},
    /* 5.0 will with Will Delay 5 and Payload Format 1, auth method "M" + data 01 02. */
    {"v5 connect will+auth", 5,
     V("\x10\x26\x00\x04MQTT\x05\x06\x00\x00\x09\x15\x00\x01M\x16\x00\x02\x01\x02"
       "\x00\x01" "c\x07\x01\x01\x18\x00\x00\x00\x05\x00\x01t\x00\x02ok")},
    {"v4 connack", 4, V("\x20\x02\x01\x00")},
    {"v4 connack refused", 4, V("\x20\x02\x00\x05")},
    {"v5 connack", 5, V("\x20\x03\x00\x00\x00")},
    /* Assigned Client Identifier "x", Receive Maximum 10, Maximum QoS 1. */
    {"v5 connack props", 5, V("\x20\x0c\x00\x00\x09\x12\x00\x01x\x21\x00\x0a\x24\x01")},
    {"v5 connack refused", 5, V("\x20\x03\x00\x87\x00")},
    {"v4 publish q1", 4, V("\x32\x09\x00\x03" "a/b\x00\x0ahi")},
    {"v4 publish q0 retain empty", 4, V("\x31\x05\x00\x03" "a/b")},
    {"v4 publish q2 dup", 4, V("\x3c\x08\x00\x03" "a/b\xff\xfe\x00")},
    /* Payload Format 1, Message Expiry 60, Content Type "ct", user k=v; payload "ok". */
    {"v5 publish q1 props", 5,
     V("\x32\x1b\x00\x01t\x00\x01\x13\x01\x01\x02\x00\x00\x00\x3c\x03\x00\x02" "ct"
       "\x26\x00\x01k\x00\x01vok")},
    /* Empty topic with Topic Alias 5; Response Topic "r", Correlation Data 01 02,
     * Subscription Identifiers 1 and 133 (0x85 0x01). */
    {"v5 publish alias", 5,
     V("\x30\x15\x00\x00\x11\x08\x00\x01r\x09\x00\x02\x01\x02\x0b\x01\x0b\x85\x01"
       "\x23\x00\x05x")},
    {"v4 puback", 4, V("\x40\x02\x00\x0a")},
    {"v4 pubrec", 4, V("\x50\x02\x00\x0b")},
    {"v4 pubrel", 4, V("\x62\x02\x00\x0b")},
    {"v4 pubcomp", 4, V("\x70\x02\x00\x0b")},
    {"v5 puback", 5, V("\x40\x02\x00\x0a")},
    {"v5 puback no subscribers", 5, V("\x40\x03\x00\x0a\x10")},
    {"v5 puback reason string", 5, V("\x40\x09\x00\x0a\x10\x05\x1f\x00\x02no")},
    {"v5 pubrec", 5, V("\x50\x02\x00\x0b")},
    {"v5 pubrel not found", 5, V("\x62\x03\x00\x0b\x92")},
    {"v5 pubcomp", 5, V("\x70\x02\x00\x0b")},
    {"v4 subscribe", 4, V("\x82\x0c\x00\x01\x00\x03" "a/#\x01\x00\x01+\x02")},
    /* Subscription Identifier 7; options QoS 1 | No Local | RAP | retain handling 2. */
    {"v5 subscribe", 5, V("\x82\x0b\x00\x02\x02\x0b\x07\x00\x03" "a/#\x2d")},
    {"v5 subscribe shared", 5, V("\x82\x12\x00\x02\x00\x00\x0c$share/g/a/+\x01")},
    {"v4 suback", 4, V("\x90\x04\x00\x01\x01\x80")},
    {"v5 suback", 5, V("\x90\x06\x00\x02\x00\x00\x01\x8f")},
    {"v4 unsubscribe", 4, V("\xa2\x07\x00\x03\x00\x03" "a/b")},
    {"v5 unsubscribe", 5, V("\xa2\x08\x00\x03\x00\x00\x03" "a/b")},
    {"v4 unsuback", 4, V("\xb0\x02\x00\x03")},
    {"v5 unsuback", 5, V("\xb0\x05\x00\x03\x00\x00\x11")},
    {"v4 pingreq", 4, V("\xc0\x00")},
    {"v4 pingresp", 4, V("\xd0\x00")},
    {"v5 pingreq", 5, V("\xc0\x00")},
    {"v4 disconnect", 4, V("\xe0\x00")},
    {"v5 disconnect", 5, V("\xe0\x00")},
    {"v5 disconnect with will", 5, V("\xe0\x01\x04")},
    {"v5 disconnect session expiry", 5, V("\xe0\x07\x00\x05\x11\x00\x00\x00\x00")},
    {"v5 auth", 5, V("\xf0\x00")},
    {"v5 auth continue", 5, V("\xf0\x0a\x18\x08\x15\x00\x05SCRAM")},
};
#define N_GOOD (sizeof(good) / sizeof(good[0]))

struct badvec {
    const char *name;
    int version;
    const char *b;
    size_t len;
    int rc;
    const char *why; /* the start of the sentence: the rule that fired */
};

static const struct badvec bad[] = {
    {"type 0", 4, V("\x00\x00"), 0x81, "packet type 0 is reserved"},
    {"auth in 3.1.1", 4, V("\xf0\x00"), 0x81, "packet type 15 is reserved"},
    {"pubrel flags 0", 4, V("\x60\x02\x00\x01"), 0x81, "PUBREL fixed header flags 0x0 (mus"},
    {"subscribe flags 0", 5, V("\x80\x06\x00\x01\x00\x01" "a\x00"),
     0x81, "SUBSCRIBE fixed header flags 0x0 ("},
    {"pingreq flags", 4, V("\xc1\x00"), 0x81, "PINGREQ fixed header flags 0x1 (mu"},
    {"puback flags", 5, V("\x48\x02\x00\x01"), 0x81, "PUBACK fixed header flags 0x8 (mus"},
    {"remaining length short", 4, V("\x40\x03\x00\x01"),
     0x81, "the remaining length 3 does not ma"},
    {"remaining length over 4 bytes", 4, V("\x30\xff\xff\xff\xff\x7f"),
     0x81, "the remaining length is longer tha"},
    {"remaining length not shortest (v5)", 5, V("\xe0\x80\x00"),
     0x81, "the remaining length is not in its"},
    {"publish qos 3", 4, V("\x36\x05\x00\x03" "a/b"), 0x81, "PUBLISH with QoS 3"},
    {"publish qos 0 dup", 4, V("\x38\x05\x00\x03" "a/b"), 0x81, "PUBLISH QoS 0 with the DUP flag"},
    {"publish packet id 0", 4, V("\x32\x07\x00\x03" "a/b\x00\x00"),
     0x82, "PUBLISH with packet identifier 0"},
    {"publish wildcard #", 4, V("\x30\x05\x00\x03" "a/#"),
     0x90, "the topic name 'a/#' has a wildcar"},
    {"publish wildcard +", 5, V("\x30\x06\x00\x03+/b\x00"),
     0x90, "the topic name '+/b' has a wildcar"},
    {"publish topic bad utf-8", 4, V("\x30\x04\x00\x02\xc3\x28"),
     0x81, "the topic name is not well-formed"},
    {"publish topic overlong nul", 4, V("\x30\x04\x00\x02\xc0\x80"),
     0x81, "the topic name is not well-formed"},
    {"publish topic U+0000", 4, V("\x30\x04\x00\x02" "a\x00"),
     0x81, "the topic name is not well-formed"},
    {"publish topic surrogate", 4, V("\x30\x05\x00\x03\xed\xa0\x80"),
     0x81, "the topic name is not well-formed"},
    {"publish topic truncated", 4, V("\x30\x03\x00\x05" "a"),
     0x81, "the packet ends inside the topic n"},
    {"publish empty topic (3.1.1)", 4, V("\x30\x02\x00\x00"), 0x82, "the topic name is empty"},
    {"publish empty topic without alias", 5, V("\x30\x03\x00\x00\x00"),
     0x82, "the topic name is empty"},
    {"publish topic alias 0", 5, V("\x30\x06\x00\x00\x03\x23\x00\x00"), 0x94, "Topic Alias is 0"},
    {"publish duplicate content type", 5,
     V("\x30\x0c\x00\x01t\x08\x03\x00\x01" "a\x03\x00\x01" "b"),
     0x82, "the Content Type property appears"},
    {"publish unknown property", 5, V("\x30\x06\x00\x01t\x02\x04\x00"),
     0x81, "unknown property 0x04"},
    {"publish session expiry not allowed", 5, V("\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01"),
     0x81, "the Session Expiry Interval proper"},
    {"publish property value missing", 5, V("\x30\x05\x00\x01t\x01\x01"),
     0x81, "the packet ends inside the Payload"},
    {"publish property length past end", 5, V("\x30\x04\x00\x01t\x05"),
     0x81, "the property length 5 goes past th"},
    {"publish payload format 2", 5, V("\x30\x06\x00\x01t\x02\x01\x02"),
     0x82, "Payload Format Indicator is 2 (0 o"},
    {"publish payload format 1 not utf-8", 5, V("\x30\x07\x00\x01t\x02\x01\x01\xff"),
     0x99, "payload format 1 (UTF-8) but the p"},
    {"publish subscription id 0", 5, V("\x30\x06\x00\x01t\x02\x0b\x00"),
     0x82, "Subscription Identifier is 0"},
    {"publish user property bad utf-8", 5, V("\x30\x0b\x00\x01t\x07\x26\x00\x01k\x00\x01\xff"),
     0x81, "the User Property value is not wel"},
    {"publish user property truncated", 5, V("\x30\x09\x00\x01t\x05\x26\x00\x01k\x00"),
     0x81, "the packet ends inside the User Pr"},
    {"puback 3.1.1 with reason", 4, V("\x40\x03\x00\x01\x00"),
     0x81, "1 bytes after the end of the PUBAC"},
    {"puback unknown reason", 5, V("\x40\x03\x00\x01\x05"),
     0x81, "PUBACK reason code 0x05 is not def"},
    {"pubcomp reason of puback", 5, V("\x70\x03\x00\x01\x10"),
     0x81, "PUBCOMP reason code 0x10 is not de"},
    {"puback packet id 0", 5, V("\x40\x02\x00\x00"), 0x82, "PUBACK with packet identifier 0"},
    {"puback topic alias not allowed", 5, V("\x40\x07\x00\x01\x00\x03\x23\x00\x01"),
     0x81, "the Topic Alias property is not al"},
    {"puback duplicate reason string", 5,
     V("\x40\x0c\x00\x01\x00\x08\x1f\x00\x01" "a\x1f\x00\x01" "b"),
     0x82, "the Reason String property appears"},
    {"connect name MQIsdp", 4, V("\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02" "id"),
     0x84, "unsupported protocol 'MQIsdp' leve"},
    {"connect level 6", 4, V("\x10\x0e\x00\x04MQTT\x06\x02\x00\x3c\x00\x02id"),
     0x84, "unsupported protocol 'MQTT' level"},
    {"connect reserved flag", 4, V("\x10\x0e\x00\x04MQTT\x04\x03\x00\x3c\x00\x02id"),
     0x81, "CONNECT reserved flag bit 0 is set"},
    {"connect will qos 3", 4,
     V("\x10\x14\x00\x04MQTT\x04\x1e\x00\x3c\x00\x02id\x00\x01t\x00\x01p"),
     0x81, "CONNECT will QoS 3"},
    {"connect will qos without will", 4, V("\x10\x0e\x00\x04MQTT\x04\x0a\x00\x3c\x00\x02id"),
     0x81, "CONNECT will QoS or retain set wit"},
    {"connect password without user (3.1.1)", 4,
     V("\x10\x11\x00\x04MQTT\x04\x42\x00\x3c\x00\x02id\x00\x01p"),
     0x81, "CONNECT password flag without the"},
    {"connect empty id, clean 0 (3.1.1)", 4, V("\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00"),
     0x85, "an empty client identifier needs c"},
    {"connect trailing byte", 4, V("\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id\x00"),
     0x81, "1 bytes after the end of the CONNE"},
    {"connect client id truncated", 4, V("\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x02i"),
     0x81, "the packet ends inside the client"},
    {"connect receive maximum 0", 5,
     V("\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x02id"),
     0x82, "Receive Maximum is 0"},
    {"connect maximum packet size 0", 5,
     V("\x10\x14\x00\x04MQTT\x05\x02\x00\x3c\x05\x27\x00\x00\x00\x00\x00\x02id"),
     0x82, "Maximum Packet Size is 0"},
    {"connect request problem info 2", 5,
     V("\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x02\x17\x02\x00\x02id"),
     0x82, "Request Problem Information is 2 ("},
    {"connect auth data without method", 5,
     V("\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x04\x16\x00\x01x\x00\x02id"),
     0x82, "Authentication Data without an Aut"},
    {"connect topic alias not allowed", 5,
     V("\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x03\x23\x00\x01\x00\x02id"),
     0x81, "the Topic Alias property is not al"},
    {"connect will wildcard topic", 4,
     V("\x10\x14\x00\x04MQTT\x04\x06\x00\x3c\x00\x02id\x00\x01#\x00\x01p"),
     0x90, "the will topic '#' has a wildcard"},
    {"connect will payload format 1 bad utf-8", 5,
     V("\x10\x18\x00\x04MQTT\x05\x06\x00\x3c\x00\x00\x02id\x02\x01\x01\x00\x01t\x00\x01\xfe"),
     0x99, "payload format 1 (UTF-8) but the p"},
    {"connack reserved flags", 4, V("\x20\x02\x02\x00"),
     0x81, "CONNACK reserved flag bits set (0x"},
    {"connack return code 6 (3.1.1)", 4, V("\x20\x02\x00\x06"),
     0x81, "CONNACK reason code 0x06 is not de"},
    {"connack session present refused", 4, V("\x20\x02\x01\x05"),
     0x82, "CONNACK session present with a ref"},
    {"connack 5.0 without properties", 5, V("\x20\x02\x00\x00"),
     0x81, "the packet ends inside the propert"},
    {"connack 5.0 unknown reason", 5, V("\x20\x03\x00\x01\x00"),
     0x81, "CONNACK reason code 0x01 is not de"},
    {"connack max qos 2", 5, V("\x20\x05\x00\x00\x02\x24\x02"), 0x82, "Maximum QoS is 2 (0 or 1)"},
    {"connack duplicate server keep alive", 5,
     V("\x20\x09\x00\x00\x06\x13\x00\x01\x13\x00\x02"), 0x82, "the Server Keep Alive property app"},
    {"subscribe empty", 4, V("\x82\x02\x00\x01"), 0x82, "SUBSCRIBE without a topic filter"},
    {"subscribe qos 3", 4, V("\x82\x06\x00\x01\x00\x01" "a\x03"), 0x81, "subscription QoS 3"},
    {"subscribe reserved bits (3.1.1)", 4, V("\x82\x06\x00\x01\x00\x01" "a\x04"),
     0x81, "subscription reserved bits set (0x"},
    {"subscribe reserved bits 6-7", 5, V("\x82\x07\x00\x01\x00\x00\x01" "a\x40"),
     0x81, "subscription reserved bits 6-7 set"},
    {"subscribe retain handling 3", 5, V("\x82\x07\x00\x01\x00\x00\x01" "a\x30"),
     0x82, "subscription retain handling 3"},
    {"subscribe # not last", 4, V("\x82\x0a\x00\x01\x00\x05" "a/#/b\x00"),
     0x8f, "topic filter 'a/#/b' is not valid"},
    {"subscribe + inside a level", 4, V("\x82\x07\x00\x01\x00\x02" "a+\x00"),
     0x8f, "topic filter 'a+' is not valid"},
    {"subscribe empty filter", 4, V("\x82\x05\x00\x01\x00\x00\x00"),
     0x8f, "topic filter '' is not valid"},
    {"subscribe shared without name", 5, V("\x82\x0f\x00\x01\x00\x00\x09$share//a\x00"),
     0x8f, "topic filter '$share//a' is not va"},
    {"subscribe shared no local", 5, V("\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04"),
     0x82, "No Local on a shared subscription"},
    {"subscribe two subscription ids", 5,
     V("\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01" "a\x00"),
     0x82, "the Subscription Identifier proper"},
    {"subscribe options missing", 4, V("\x82\x05\x00\x01\x00\x01" "a"),
     0x81, "the packet ends inside the subscri"},
    {"suback code 3 (3.1.1)", 4, V("\x90\x03\x00\x01\x03"),
     0x81, "SUBACK reason code 0x03 is not def"},
    {"suback without codes", 4, V("\x90\x02\x00\x01"), 0x82, "SUBACK without a reason code"},
    {"suback 5.0 unknown code", 5, V("\x90\x04\x00\x01\x00\x81"),
     0x81, "SUBACK reason code 0x81 is not def"},
    {"unsubscribe empty", 5, V("\xa2\x03\x00\x01\x00"), 0x82, "UNSUBSCRIBE without a topic filter"},
    {"unsubscribe flags 0", 4, V("\xa0\x05\x00\x01\x00\x01" "a"),
     0x81, "UNSUBSCRIBE fixed header flags 0x0"},
    {"unsubscribe subscription id not allowed", 5, V("\xa2\x08\x00\x01\x02\x0b\x01\x00\x01" "a"),
     0x81, "the Subscription Identifier proper"},
    {"unsuback payload (3.1.1)", 4, V("\xb0\x03\x00\x01\x00"),
     0x81, "1 bytes after the end of the UNSUB"},
    {"unsuback unknown code", 5, V("\xb0\x04\x00\x01\x00\x01"),
     0x81, "UNSUBACK reason code 0x01 is not d"},
    {"pingresp with body", 4, V("\xd0\x01\x00"), 0x81, "1 bytes after the end of the PINGR"},
    {"disconnect body (3.1.1)", 4, V("\xe0\x01\x00"), 0x81, "1 bytes after the end of the DISCO"},
    {"disconnect unknown reason", 5, V("\xe0\x01\x05"), 0x81, "DISCONNECT reason code 0x05 is not"},
    {"disconnect assigned id not allowed", 5, V("\xe0\x06\x00\x04\x12\x00\x01x"),
     0x81, "the Assigned Client Identifier pro"},
    {"auth reason without property length", 5, V("\xf0\x01\x18"),
     0x81, "the packet ends inside the propert"},
    {"auth unknown reason", 5, V("\xf0\x02\x01\x00"), 0x81, "AUTH reason code 0x01 is not defin"},
    {"publish response topic wildcard", 5, V("\x30\x08\x00\x01t\x04\x08\x00\x01#"),
     0x82, "the Response Topic is empty or has"},
    {"auth without method", 5, V("\xf0\x02\x18\x00"), 0x82, "AUTH without an Authentication Met"},
    {"connect 5.0 remaining length not shortest", 5,
     V("\x10\x8d\x00\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"),
     0x81, "the remaining length is not in its"},
    {"property id not shortest vbi", 5, V("\x30\x07\x00\x01t\x03\x81\x00\x01"),
     0x81, "the property identifier is not in"},
};
#define N_BAD (sizeof(bad) / sizeof(bad[0]))

static void hexdump(const char *what, const void *p, size_t n)
{
    const unsigned char *u = p;
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, " %02x", u[i]);
    }
    fprintf(stderr, "\n");
}

static int bytes_eq(const char *name, const struct jn_buf *b, const char *want, size_t n)
{
    if (b->len == n && memcmp(b->p, want, n) == 0) {
        return 1;
    }
    fprintf(stderr, "%s: encoded bytes differ\n", name);
    hexdump("got ", b->p, b->len);
    hexdump("want", want, n);
    return 0;
}

static int streq(struct jn_mqtt_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.p, c, s.len) == 0;
}

/* Every good vector: framed whole, decoded, re-encoded to the same bytes, decoded equal. */
static void test_good_round_trip(void)
{
    for (size_t i = 0; i < N_GOOD; i++) {
        const struct vec *v = &good[i];
        struct jn_mqtt_packet p, q;
        struct jn_mqtt_err e;
        struct jn_buf b = JN_BUF_INIT;
        size_t n = 0;
        int rc;

        CHECK_INT(jn_mqtt_frame(v->b, v->len, 0, &n, &e), JN_MQTT_FRAME_PACKET);
        CHECK_INT(n, v->len);
        rc = jn_mqtt_decode(v->b, v->len, v->version, &p, &e);
        if (rc != 0) {
            fprintf(stderr, "%s: %s (0x%02x)\n", v->name, e.err.msg, e.rc);
        }
        CHECK_INT(rc, 0);
        CHECK_INT(p.version, v->version);
        CHECK_INT(p.type, ((const unsigned char *)v->b)[0] >> 4);
        CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
        CHECK(bytes_eq(v->name, &b, v->b, v->len));
        CHECK_INT(jn_mqtt_decode(b.p, b.len, v->version, &q, &e), 0);
        CHECK(jn_mqtt_packet_equal(&p, &q));
        jn_buf_reset(&b);
    }
}

static struct jn_mqtt_packet dec(const char *name, int version)
{
    struct jn_mqtt_packet p;
    struct jn_mqtt_err e;

    memset(&p, 0, sizeof(p));
    for (size_t i = 0; i < N_GOOD; i++) {
        if (strcmp(good[i].name, name) == 0) {
            CHECK_INT(jn_mqtt_decode(good[i].b, good[i].len, version, &p, &e), 0);
            return p;
        }
    }
    fprintf(stderr, "no vector %s\n", name);
    CHECK(0);
    return p;
}

/* The fields each vector holds, as the spec lays them out. */
static void test_fields(void)
{
    struct jn_mqtt_packet p;
    struct jn_mqtt_userprop u;
    struct jn_mqtt_sub s;
    size_t it;
    uint32_t sid;

    p = dec("v4 connect", 4);
    CHECK(streq(p.connect.client_id, "jn1"));
    CHECK_INT(p.connect.keep_alive, 60);
    CHECK(!p.connect.clean_start && !p.connect.will && !p.connect.has_username);

    p = dec("v4 connect will+login", 4);
    CHECK(p.connect.clean_start && p.connect.will && p.connect.will_retain);
    CHECK_INT(p.connect.will_qos, 1);
    CHECK(streq(p.connect.will_topic, "w/t") && streq(p.connect.will_payload, "bye"));
    CHECK(streq(p.connect.username, "u") && streq(p.connect.password, "pw"));
    CHECK_INT(p.connect.keep_alive, 10);

    p = dec("v5 connect", 5);
    CHECK_INT(p.version, 5);
    CHECK(p.connect.clean_start);
    CHECK(streq(p.connect.client_id, "c5"));
    CHECK(JN_MQTT_HAS(&p.props, JN_MQTT_P_SESSION_EXPIRY));
    CHECK_INT(p.props.session_expiry, 3600);
    CHECK_INT(p.props.receive_max, 20);
    CHECK(!JN_MQTT_HAS(&p.props, JN_MQTT_P_MAX_PACKET_SIZE));
    CHECK_INT(p.props.n_user, 1);
    it = 0;
    CHECK(jn_mqtt_user_next(&p.props, &it, &u) && streq(u.name, "a") && streq(u.value, "b"));
    CHECK(!jn_mqtt_user_next(&p.props, &it, &u));

    p = dec("v5 connect will+auth", 5);
    CHECK(streq(p.props.auth_method, "M") && streq(p.props.auth_data, "\x01\x02"));
    CHECK_INT(p.connect.will_props.will_delay, 5);
    CHECK_INT(p.connect.will_props.payload_format, 1);
    CHECK(streq(p.connect.will_topic, "t") && streq(p.connect.will_payload, "ok"));
    CHECK(streq(p.connect.client_id, "c"));

    p = dec("v4 connack", 4);
    CHECK(p.session_present);
    CHECK_INT(p.reason_code, 0);
    p = dec("v5 connack props", 5);
    CHECK(streq(p.props.assigned_client_id, "x"));
    CHECK_INT(p.props.receive_max, 10);
    CHECK_INT(p.props.max_qos, 1);
    CHECK(JN_MQTT_HAS(&p.props, JN_MQTT_P_MAX_QOS));
    p = dec("v5 connack refused", 5);
    CHECK_INT(p.reason_code, 0x87);

    p = dec("v4 publish q1", 4);
    CHECK(streq(p.topic, "a/b") && streq(p.payload, "hi"));
    CHECK_INT(p.qos, 1);
    CHECK_INT(p.packet_id, 10);
    CHECK(!p.dup && !p.retain);
    p = dec("v4 publish q0 retain empty", 4);
    CHECK(p.retain && p.payload.len == 0 && p.packet_id == 0);
    p = dec("v4 publish q2 dup", 4);
    CHECK(p.dup && p.qos == 2 && p.packet_id == 0xfffe);
    CHECK(p.payload.len == 1 && p.payload.p[0] == 0);

    p = dec("v5 publish q1 props", 5);
    CHECK(streq(p.topic, "t") && streq(p.payload, "ok"));
    CHECK_INT(p.packet_id, 1);
    CHECK_INT(p.props.payload_format, 1);
    CHECK_INT(p.props.message_expiry, 60);
    CHECK(streq(p.props.content_type, "ct"));
    it = 0;
    CHECK(jn_mqtt_user_next(&p.props, &it, &u) && streq(u.name, "k") && streq(u.value, "v"));

    p = dec("v5 publish alias", 5);
    CHECK(p.topic.len == 0 && streq(p.payload, "x"));
    CHECK_INT(p.props.topic_alias, 5);
    CHECK(streq(p.props.response_topic, "r") && streq(p.props.correlation_data, "\x01\x02"));
    CHECK_INT(p.props.n_subid, 2);
    it = 0;
    CHECK(jn_mqtt_subid_next(&p.props, &it, &sid) && sid == 1);
    CHECK(jn_mqtt_subid_next(&p.props, &it, &sid) && sid == 133);
    CHECK(!jn_mqtt_subid_next(&p.props, &it, &sid));
    CHECK_INT(p.props.n_user, 0);

    p = dec("v5 puback reason string", 5);
    CHECK_INT(p.packet_id, 10);
    CHECK_INT(p.reason_code, 0x10);
    CHECK(streq(p.props.reason_string, "no"));
    p = dec("v5 pubrel not found", 5);
    CHECK_INT(p.reason_code, 0x92);
    CHECK_INT(p.packet_id, 11);

    p = dec("v4 subscribe", 4);
    CHECK_INT(p.packet_id, 1);
    CHECK_INT(p.n_subs, 2);
    it = 0;
    CHECK(jn_mqtt_subs_next(&p, &it, &s) && streq(s.filter, "a/#") && s.options == 1);
    CHECK(jn_mqtt_subs_next(&p, &it, &s) && streq(s.filter, "+") && s.options == 2);
    CHECK(!jn_mqtt_subs_next(&p, &it, &s));
    p = dec("v5 subscribe", 5);
    it = 0;
    CHECK(jn_mqtt_subid_next(&p.props, &it, &sid) && sid == 7);
    it = 0;
    CHECK(jn_mqtt_subs_next(&p, &it, &s) && streq(s.filter, "a/#"));
    CHECK_INT(JN_MQTT_SUB_QOS(s.options), 1);
    CHECK(s.options & JN_MQTT_SUB_NO_LOCAL);
    CHECK(s.options & JN_MQTT_SUB_RETAIN_AS_PUBLISHED);
    CHECK_INT(JN_MQTT_SUB_RETAIN_HANDLING(s.options), 2);

    p = dec("v5 suback", 5);
    CHECK_INT(p.n_codes, 3);
    CHECK(p.codes[0] == 0 && p.codes[1] == 1 && p.codes[2] == 0x8f);
    p = dec("v4 unsubscribe", 4);
    it = 0;
    CHECK(jn_mqtt_subs_next(&p, &it, &s) && streq(s.filter, "a/b") && s.options == 0);
    CHECK(!jn_mqtt_subs_next(&p, &it, &s));
    p = dec("v4 unsuback", 4);
    CHECK_INT(p.n_codes, 0);
    p = dec("v5 unsuback", 5);
    CHECK(p.n_codes == 2 && p.codes[1] == 0x11);
    p = dec("v5 disconnect with will", 5);
    CHECK_INT(p.reason_code, 4);
    p = dec("v5 disconnect session expiry", 5);
    CHECK(JN_MQTT_HAS(&p.props, JN_MQTT_P_SESSION_EXPIRY) && p.props.session_expiry == 0);
    p = dec("v5 auth continue", 5);
    CHECK_INT(p.reason_code, 0x18);
    CHECK(streq(p.props.auth_method, "SCRAM"));
}

static void test_bad(void)
{
    for (size_t i = 0; i < N_BAD; i++) {
        const struct badvec *v = &bad[i];
        struct jn_mqtt_packet p;
        struct jn_mqtt_err e;
        int rc = jn_mqtt_decode(v->b, v->len, v->version, &p, &e);
        if (rc != JN_EPROTO || e.rc != v->rc) {
            fprintf(stderr, "bad vector '%s': rc %d, reason 0x%02x (want 0x%02x): %s\n",
                    v->name, rc, e.rc, v->rc, rc ? e.err.msg : "(accepted)");
        }
        CHECK_INT(rc, JN_EPROTO);
        CHECK_INT(e.rc, v->rc);
        CHECK(strstr(e.err.msg, v->why) == e.err.msg);
        if (strstr(e.err.msg, v->why) != e.err.msg) {
            fprintf(stderr, "bad vector '%s': '%s', expected it to start '%s'\n", v->name,
                    e.err.msg, v->why);
        }
        CHECK_INT(e.err.code, JN_EPROTO);
    }
    /* The same non-shortest remaining length is fine in 3.1.1 (it has no such rule). */
    {
        struct jn_mqtt_packet p;
        struct jn_mqtt_err e;
        CHECK_INT(jn_mqtt_decode("\xe0\x80\x00", 3, 4, &p, &e), 0);
        CHECK_INT(p.type, JN_MQTT_DISCONNECT);
        CHECK_INT(jn_mqtt_decode("\xe0\x00", 2, 7, &p, &e), JN_EINVAL);
        CHECK_INT(jn_mqtt_decode("\xe0", 1, 4, &p, &e), JN_EPROTO);
        CHECK_INT(e.rc, 0x81);
    }
}

static void test_frame(void)
{
    struct jn_mqtt_err e;
    size_t n = 99;

    CHECK_INT(jn_mqtt_frame("", 0, 0, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(n, 2);
    CHECK_INT(jn_mqtt_frame("\x30", 1, 0, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(jn_mqtt_frame("\x30\x80", 2, 0, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(n, 3);
    CHECK_INT(jn_mqtt_frame("\x30\x80\x01", 3, 0, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(n, 1 + 2 + 128);
    CHECK_INT(jn_mqtt_frame("\x30\xff\xff\xff\x7f", 5, 0, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(n, 1 + 4 + 268435455u);
    CHECK_INT(jn_mqtt_frame("\x30\xff\xff\xff\xff", 5, 0, &n, &e), JN_MQTT_FRAME_BAD);
    CHECK_INT(e.rc, 0x81);
    CHECK_INT(e.err.code, JN_EPROTO);
    /* Too large is known from the header alone. */
    CHECK_INT(jn_mqtt_frame("\x30\x0a", 2, 11, &n, &e), JN_MQTT_FRAME_BAD);
    CHECK_INT(e.rc, 0x95);
    CHECK_INT(n, 12);
    CHECK_INT(jn_mqtt_frame("\x30\x09", 2, 11, &n, &e), JN_MQTT_FRAME_MORE);
    CHECK_INT(n, 11);
    CHECK_INT(jn_mqtt_frame("\xc0\x00\xd0", 3, 2, &n, &e), JN_MQTT_FRAME_PACKET);
    CHECK_INT(n, 2);
}

/* A stream of every good vector of one version, fed as a streaming reader would: the bytes
 * arrive split at position k (every k), and one byte at a time. Each packet must come out
 * whole and decode equal to the vector. */
static void feed(const char *stream, size_t len, int version, const size_t *splits, size_t n_sp,
                 size_t *got)
{
    char *acc = malloc(len ? len : 1);
    size_t have = 0, at = 0, idx = 0, next = 0;

    *got = 0;
    for (size_t s = 0; s <= n_sp; s++) {
        size_t upto = s < n_sp ? splits[s] : len;
        memcpy(acc + have, stream + at, upto - at);
        have += upto - at;
        at = upto;
        for (;;) {
            struct jn_mqtt_err e;
            size_t n = 0;
            enum jn_mqtt_frame_res fr = jn_mqtt_frame(acc, have, 4096, &n, &e);
            if (fr == JN_MQTT_FRAME_MORE) {
                CHECK(n > have);
                break;
            }
            CHECK_INT(fr, JN_MQTT_FRAME_PACKET);
            if (fr != JN_MQTT_FRAME_PACKET) {
                free(acc);
                return;
            }
            while (idx < N_GOOD && good[idx].version != version) {
                idx++;
            }
            CHECK(idx < N_GOOD);
            if (idx >= N_GOOD) {
                free(acc);
                return;
            }
            {
                struct jn_mqtt_packet a, b;
                CHECK_INT(n, good[idx].len);
                CHECK_INT(jn_mqtt_decode(acc, n, version, &a, &e), 0);
                CHECK_INT(jn_mqtt_decode(good[idx].b, good[idx].len, version, &b, &e), 0);
                CHECK(jn_mqtt_packet_equal(&a, &b));
            }
            memmove(acc, acc + n, have - n);
            have -= n;
            idx++;
            (*got)++;
        }
        next++;
    }
    CHECK_INT(have, 0);
    free(acc);
}

static void test_stream(void)
{
    for (int version = 4; version <= 5; version++) {
        struct jn_buf s = JN_BUF_INIT;
        size_t count = 0, got = 0, *every;

        for (size_t i = 0; i < N_GOOD; i++) {
            if (good[i].version == version) {
                jn_buf_append(&s, good[i].b, good[i].len);
                count++;
            }
        }
        for (size_t k = 0; k <= s.len; k++) {
            feed(s.p, s.len, version, &k, 1, &got);
            CHECK_INT(got, count);
        }
        every = malloc(sizeof(*every) * (s.len + 1));
        for (size_t k = 0; k < s.len; k++) {
            every[k] = k + 1;
        }
        feed(s.p, s.len, version, every, s.len, &got);
        CHECK_INT(got, count);
        free(every);
        jn_buf_reset(&s);
    }
}

/* Packets built from caller arrays encode to the bytes worked out by hand. */
static void test_build(void)
{
    struct jn_mqtt_packet p, q;
    struct jn_mqtt_err e;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_mqtt_userprop up[2] = {{{"k", 1}, {"v", 1}}, {{"h2", 2}, {"", 0}}};
    struct jn_mqtt_sub subs[2] = {{{"s/+/x", 5}, 1}, {{"#", 1}, 2}};
    uint32_t subid = 300;
    static const uint8_t codes[] = {1, 2};
    size_t it = 0;
    struct jn_mqtt_userprop u;

    /* v5 PUBLISH QoS 2, retain, id 0x1234, topic "t/1", user k=v and h2="",
     * payload "P": props 26 00 01 6B 00 01 76 | 26 00 02 68 32 00 00 = 7 + 7 = 14. */
    jn_mqtt_packet_init(&p, JN_MQTT_PUBLISH, JN_MQTT_V5);
    p.qos = 2;
    p.retain = true;
    p.packet_id = 0x1234;
    p.topic = (struct jn_mqtt_str){"t/1", 3};
    p.payload = (struct jn_mqtt_str){"P", 1};
    p.props.user = up;
    p.props.n_user = 2;
    CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
    CHECK(bytes_eq("build publish", &b,
                   V("\x35\x17\x00\x03t/1\x12\x34\x0e\x26\x00\x01k\x00\x01v\x26\x00\x02h2"
                     "\x00\x00P")));
    CHECK_INT(jn_mqtt_decode(b.p, b.len, 5, &q, &e), 0);
    CHECK(jn_mqtt_packet_equal(&p, &q));
    CHECK_INT(q.props.n_user, 2);
    CHECK(jn_mqtt_user_next(&q.props, &it, &u) && streq(u.name, "k"));
    CHECK(jn_mqtt_user_next(&q.props, &it, &u) && streq(u.name, "h2") && u.value.len == 0);

    /* Appends: a second packet goes after the first. v5 SUBSCRIBE id 9, subscription id 300
     * (0xAC 0x02), two filters. */
    jn_mqtt_packet_init(&p, JN_MQTT_SUBSCRIBE, JN_MQTT_V5);
    p.packet_id = 9;
    p.subs = subs;
    p.n_subs = 2;
    p.props.subid = &subid;
    p.props.n_subid = 1;
    b.len = 0;
    CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
    CHECK(bytes_eq("build subscribe", &b,
                   V("\x82\x12\x00\x09\x03\x0b\xac\x02\x00\x05s/+/x\x01\x00\x01#\x02")));
    CHECK_INT(jn_mqtt_decode(b.p, b.len, 5, &q, &e), 0);
    CHECK(jn_mqtt_packet_equal(&p, &q));

    /* v4 CONNECT as mqtt_probe sends it. */
    jn_mqtt_packet_init(&p, JN_MQTT_CONNECT, JN_MQTT_V311);
    p.connect.client_id = (struct jn_mqtt_str){"jn1", 3};
    p.connect.keep_alive = 60;
    b.len = 0;
    CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
    CHECK(bytes_eq("build connect", &b, V("\x10\x0f\x00\x04MQTT\x04\x00\x00\x3c\x00\x03jn1")));

    /* v4 SUBACK with codes from an array. */
    jn_mqtt_packet_init(&p, JN_MQTT_SUBACK, JN_MQTT_V311);
    p.packet_id = 1;
    p.codes = codes;
    p.n_codes = 2;
    b.len = 0;
    CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
    CHECK(bytes_eq("build suback", &b, V("\x90\x04\x00\x01\x01\x02")));

    /* A PUBLISH with a payload of 200 bytes: remaining length 2 + 1 + 2 + 200 = 205 = CD 01. */
    {
        char big[200];
        memset(big, 'z', sizeof(big));
        jn_mqtt_packet_init(&p, JN_MQTT_PUBLISH, JN_MQTT_V311);
        p.topic = (struct jn_mqtt_str){"a", 1};
        p.payload = (struct jn_mqtt_str){big, sizeof(big)};
        p.qos = 1;
        p.packet_id = 2;
        b.len = 0;
        CHECK_INT(jn_mqtt_encode(&p, &b, &e), 0);
        CHECK_INT(b.len, 1 + 2 + 205);
        CHECK(memcmp(b.p, "\x32\xcd\x01\x00\x01" "a\x00\x02zz", 9) == 0);
        CHECK_INT(jn_mqtt_decode(b.p, b.len, 4, &q, &e), 0);
        CHECK(jn_mqtt_packet_equal(&p, &q));
    }
    jn_buf_reset(&b);
}

/* The encoder refuses what the decoder would refuse, and leaves the buffer as it was. */
static void test_encode_refuses(void)
{
    struct jn_mqtt_packet p;
    struct jn_mqtt_err e;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_mqtt_sub badsub = {{"a/#/b", 5}, 0};
    static char huge[70000];
    static const uint8_t code3 = 3;

    jn_buf_puts(&b, "keep");
#define REFUSE(rc_)                                                                               \
    do {                                                                                          \
        CHECK_INT(jn_mqtt_encode(&p, &b, &e), JN_EINVAL);                                         \
        CHECK_INT(e.rc, rc_);                                                                     \
        CHECK_INT(b.len, 4);                                                                      \
    } while (0)
    jn_mqtt_packet_init(&p, JN_MQTT_PUBLISH, JN_MQTT_V311);
    p.topic = (struct jn_mqtt_str){"a", 1};
    p.qos = 1;
    REFUSE(JN_MQTT_RC_PROTOCOL); /* packet id 0 */
    p.qos = 3;
    p.packet_id = 1;
    REFUSE(JN_MQTT_RC_MALFORMED);
    p.qos = 0;
    p.topic = (struct jn_mqtt_str){"a/+", 3};
    REFUSE(JN_MQTT_RC_TOPIC_NAME);
    p.topic = (struct jn_mqtt_str){"a\xff", 2};
    REFUSE(JN_MQTT_RC_MALFORMED);
    memset(huge, 'a', sizeof(huge));
    p.topic = (struct jn_mqtt_str){huge, sizeof(huge)};
    REFUSE(JN_MQTT_RC_IMPLEMENTATION);
    p.topic = (struct jn_mqtt_str){"a", 1};
    p.props.has = (uint64_t)1 << JN_MQTT_P_CONTENT_TYPE;
    REFUSE(JN_MQTT_RC_IMPLEMENTATION); /* 3.1.1 has no properties */
    p.version = JN_MQTT_V5;
    p.props.has = (uint64_t)1 << JN_MQTT_P_SESSION_EXPIRY;
    REFUSE(JN_MQTT_RC_IMPLEMENTATION); /* not a PUBLISH property */
    p.props.has = (uint64_t)1 << JN_MQTT_P_TOPIC_ALIAS;
    REFUSE(JN_MQTT_RC_TOPIC_ALIAS);    /* alias 0 */
    p.props.has = 0;
    p.version = 3;
    REFUSE(JN_MQTT_RC_IMPLEMENTATION);
    jn_mqtt_packet_init(&p, JN_MQTT_AUTH, JN_MQTT_V311);
    REFUSE(JN_MQTT_RC_IMPLEMENTATION);
    jn_mqtt_packet_init(&p, JN_MQTT_SUBSCRIBE, JN_MQTT_V311);
    p.packet_id = 1;
    REFUSE(JN_MQTT_RC_PROTOCOL); /* no filter */
    p.subs = &badsub;
    p.n_subs = 1;
    REFUSE(JN_MQTT_RC_TOPIC_FILTER);
    jn_mqtt_packet_init(&p, JN_MQTT_SUBACK, JN_MQTT_V311);
    p.packet_id = 1;
    p.codes = &code3;
    p.n_codes = 1;
    REFUSE(JN_MQTT_RC_IMPLEMENTATION);
    jn_mqtt_packet_init(&p, JN_MQTT_CONNECT, JN_MQTT_V311);
    REFUSE(JN_MQTT_RC_BAD_CLIENT_ID); /* empty id, clean 0 */
    jn_mqtt_packet_init(&p, JN_MQTT_AUTH, JN_MQTT_V5);
    p.reason_code = 0x18;
    REFUSE(JN_MQTT_RC_PROTOCOL); /* no method */
    jn_mqtt_packet_init(&p, JN_MQTT_PINGREQ, JN_MQTT_V5);
    p.props.has = (uint64_t)1 << JN_MQTT_P_REASON_STRING;
    REFUSE(JN_MQTT_RC_IMPLEMENTATION);
    jn_buf_reset(&b);
}

static void test_checks(void)
{
    CHECK(jn_mqtt_utf8_valid("h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10, 0));
    CHECK(!jn_mqtt_utf8_valid("\xf4\x90\x80\x80", 4, 0)); /* > U+10FFFF */
    CHECK(!jn_mqtt_utf8_valid("\xe0\x80\xaf", 3, 0));     /* overlong */
    CHECK(!jn_mqtt_utf8_valid("\xe2\x82", 2, 0));         /* cut */
    CHECK(jn_mqtt_utf8_valid("a\0b", 3, 1));
    CHECK(!jn_mqtt_utf8_valid("a\0b", 3, 0));
    CHECK(jn_mqtt_topic_filter_valid("#", 1));
    CHECK(jn_mqtt_topic_filter_valid("+/+/#", 5));
    CHECK(jn_mqtt_topic_filter_valid("/", 1));
    CHECK(!jn_mqtt_topic_filter_valid("a#", 2));
    CHECK(!jn_mqtt_topic_filter_valid("#/a", 3));
    CHECK(jn_mqtt_topic_filter_valid("$share/g/#", 10));
    CHECK(!jn_mqtt_topic_filter_valid("$share/g+/a", 11));
    CHECK(!jn_mqtt_topic_filter_valid("$share/g/", 9));
    CHECK(!jn_mqtt_topic_filter_valid("$share/g", 8));
    CHECK(jn_mqtt_topic_name_valid("$SYS/x", 6));
    CHECK_INT(jn_mqtt_v4_connack_rc(0x84), 1);
    CHECK_INT(jn_mqtt_v4_connack_rc(0x85), 2);
    CHECK_INT(jn_mqtt_v4_connack_rc(0x86), 4);
    CHECK_INT(jn_mqtt_v4_connack_rc(0x87), 5);
    CHECK_INT(jn_mqtt_v4_connack_rc(0x81), 3);
    CHECK_STR(jn_mqtt_type_name(JN_MQTT_PUBREL), "PUBREL");
    CHECK_STR(jn_mqtt_type_name(0), "?");
}

/* Every strict prefix of every good packet: the framer asks for more and decode refuses it
 * as malformed; a good packet with a byte cut from its body is refused too (never a crash). */
static void test_truncated(void)
{
    for (size_t i = 0; i < N_GOOD; i++) {
        const struct vec *v = &good[i];
        for (size_t k = 0; k < v->len; k++) {
            struct jn_mqtt_err e;
            struct jn_mqtt_packet p;
            size_t n;
            CHECK_INT(jn_mqtt_frame(v->b, k, 0, &n, &e), JN_MQTT_FRAME_MORE);
            CHECK_INT(jn_mqtt_decode(v->b, k, v->version, &p, &e), JN_EPROTO);
            CHECK_INT(e.rc, 0x81);
        }
    }
}

int main(void)
{
    test_good_round_trip();
    test_fields();
    test_bad();
    test_frame();
    test_stream();
    test_build();
    test_encode_refuses();
    test_checks();
    test_truncated();
    TEST_MAIN_END();
}
