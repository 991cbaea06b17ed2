/*
 * kafka_int.h: what channels/kafka_conf.c (options, check, the librdkafka conf, the def),
 * kafka_in.c (the consumer) and kafka_out.c (the producer) share, and the parts that turn
 * outside input into junction headers and Kafka fields, with no librdkafka type in sight (its
 * handles are named by their struct tags only), so tests/fuzz/fuzz_kafka_headers.c and
 * tests/unit/test_kafka.c can drive them alone (house style: module__verb, shared inside one
 * module and its tests only).
 *
 * IN: a consumed record's topic, partition, offset, key, timestamp and record headers become
 * junction headers (docs/kafka.md "Headers given to the message"). OUT: the topic, key and
 * record headers rendered from the channel's templates over a message's headers. Both: the
 * bootstrap.servers value made from the `brokers` option.
 *
 * The header and record functions run on the loop thread (or anywhere: no shared state) and
 * allocate only through jn_malloc, so jn_mem_fail_after() reaches every failure path.
 */
#ifndef JN_KAFKA_INT_H
#define JN_KAFKA_INT_H

#include <stddef.h>
#include <stdint.h>

#include "jn_buf.h"
#include "jn_channel.h"
#include "jn_msg.h"
#include "jn_tls.h"

struct rd_kafka_s;      /* rd_kafka_t */
struct rd_kafka_conf_s; /* rd_kafka_conf_t */

/* The safety-net poll: bounds the cost of a wake-up librdkafka did not signal. */
#define KAFKA_TICK_MS 100
/* Messages or reports handled per loop turn before the loop gets a turn of its own. */
#define KAFKA_POLL_BUDGET 500
/* librdkafka's error strings are short; this also bounds a reason we log. */
#define KAFKA_ERRSTR 512

/* `sasl:` (issue 16): SASL/PLAIN or SCRAM onto librdkafka's sasl.* properties. */
enum { KAFKA_SASL_PLAIN = 0, KAFKA_SASL_SCRAM_256 = 1, KAFKA_SASL_SCRAM_512 = 2 };
struct kafka_sasl_conf {
    int mechanism;  /* KAFKA_SASL_* */
    char *username;
    char *password; /* secret */
};

struct kafka_conf {
    struct jn_strlist brokers;
    struct jn_strmap properties;
    struct jn_tls_conf tls;       /* the `tls:` block, mapped onto librdkafka's ssl.* */
    struct kafka_sasl_conf sasl;  /* given when sasl.username is set */
    /* IN */
    struct jn_strlist topics;
    char *group;
    char *header_prefix;
    long long max_in_flight;
    long long pause_retry;       /* ms */
    long long commit_interval;   /* ms */
    /* OUT */
    char *topic;                 /* template */
    char *key;                   /* template; NULL or renders empty: no key */
    struct jn_strmap headers;    /* name -> template */
    char *id_header;             /* "" = none */
    long long timeout;           /* ms: message.timeout.ms */
};

/* The two sides (jn_channel_kafka's in and out): kafka_in.c, kafka_out.c. */
extern const struct jn_in_def jn_kafka__in;
extern const struct jn_out_def jn_kafka__out;

/*
 * The librdkafka conf for one side (dir JN_DIR_IN or JN_DIR_OUT) of ch's conf: the properties,
 * then what junction owns, with ch as the opaque and the log and error callbacks both sides
 * install. NULL with err on failure. The caller adds its side's own callbacks.
 */
struct rd_kafka_conf_s *jn_kafka__conf_build(struct jn_channel *ch, unsigned dir,
                                             struct jn_err *err);
/* librdkafka callbacks both sides install; the conf's opaque is the channel. log: on
 * librdkafka's threads (one jn_log_print). error: on the loop (from a poll). qev: on
 * librdkafka's threads, arg the struct event to activate. */
void jn_kafka__log_cb(const struct rd_kafka_s *rk, int level, const char *fac, const char *buf);
void jn_kafka__error_cb(struct rd_kafka_s *rk, int err, const char *reason, void *opaque);
void jn_kafka__qev_cb(struct rd_kafka_s *rk, void *arg);

/* One record header as the consumer sees it. Borrowed from the caller for the call. */
struct jn_kafka_hdr {
    const char *name;  /* NUL-terminated (librdkafka cuts a wire name at its first NUL) */
    const void *value; /* NULL: a null value (becomes an empty header) */
    size_t len;        /* bytes at value; may hold NUL bytes */
};

/* A consumed record's metadata. Borrowed from the caller for the call. */
struct jn_kafka_rec {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;     /* NULL: the record has no key (no kafka-key header) */
    size_t keylen;       /* may hold NUL bytes: then kafka-key-base64 */
    int64_t ts;          /* ms since the epoch; < 0: none (no kafka-timestamp headers) */
    int ts_log_append;   /* nonzero: kafka-timestamp-type log-append, else create */
};

/*
 * Adds the headers for one record to m: kafka-topic, kafka-partition, kafka-offset, kafka-key,
 * kafka-timestamp(-type), then each of the n record headers as prefix + name, in order. A key
 * or value with a NUL byte goes base64-encoded (RFC 4648, padded) under the name + "-base64";
 * a null value becomes "". With prefix "" a record header whose name is empty or starts with
 * "kafka-" (any case) is dropped, so a producer cannot pose as the channel's own headers.
 * prefix NULL is "". Returns 0 or JN_ENOMEM (m may then hold some of the headers: drop it).
 */
int jn_kafka__map_headers(struct jn_msg *m, const char *prefix, const struct jn_kafka_rec *rec,
                          const struct jn_kafka_hdr *hdrs, size_t n);

/* Appends the padded base64 of n bytes to b; 0 or JN_ENOMEM. */
int jn_kafka__b64(struct jn_buf *b, const unsigned char *p, size_t n);

/* Receives one rendered OUT record header (name borrowed from the conf, value from the
 * caller's buffer, both valid for the call only); 0, or an error that stops the rendering. */
typedef int (*jn_kafka_hdr_fn)(void *arg, const char *name, const void *value, size_t len);

/*
 * Renders an OUT record from m: topic (reset, then rendered: a NUL-terminated name that is not
 * empty), key (reset; rendered when key_tmpl is not NULL; empty = no key), then each header of
 * `headers` (name -> template, in order) and id_header = m->id (unless NULL or "") handed to
 * add(). Returns JN_SEND_OK, or JN_SEND_REJECT (a template fails, the topic renders empty) or
 * JN_SEND_RETRY (out of memory, add() failed) with the reason in reason[n]. topic and key are
 * the caller's to reset in every case.
 */
enum jn_send_result jn_kafka__out_render(const char *topic_tmpl, const char *key_tmpl,
                                         const struct jn_strmap *headers, const char *id_header,
                                         const struct jn_msg *m, struct jn_buf *topic,
                                         struct jn_buf *key, jn_kafka_hdr_fn add, void *arg,
                                         char *reason, size_t n);

/*
 * The bootstrap.servers value handed to librdkafka: the `brokers` of conf (a kafka channel's
 * conf, as jn_cfg_channel.conf holds it) joined with ','. Returns a jn_malloc'd string the
 * caller frees, or NULL when out of memory.
 */
char *jn_kafka__bootstrap(const void *conf);

#endif
