/*
 * mqtt_int.h: the parts of channels/mqtt.c that read outside input, with no paho type in
 * sight, so tests/fuzz/fuzz_mqtt_headers.c can drive them alone (house style: module__verb,
 * shared inside one module and its tests only).
 *
 * IN: what a PUBLISH brings (topic, QoS, retain) becomes junction headers; a paho queue entry
 * left on disk by a crash is checked before paho reads it. OUT: a topic rendered from the
 * channel's template over a message's headers is checked before it is published. Topic
 * filters from the config are checked at load.
 *
 * No shared state; allocations only through jn_malloc (jn_mem_fail_after() reaches them).
 */
#ifndef JN_MQTT_INT_H
#define JN_MQTT_INT_H

#include <stddef.h>

#include "jn_msg.h"

/* MQTT 3.1.1 1.5.3: a UTF-8 string (a topic, a filter) is at most 65535 bytes. */
#define JN_MQTT_MAX_TOPIC 65535

/*
 * Adds mqtt-topic, mqtt-qos and mqtt-retain for one received message to m (set: replacing any
 * present). topic is topic_len bytes (paho's topicLen; 0 means NUL-terminated). A topic with a
 * NUL byte in it (MQTT forbids U+0000, but not every broker checks) cannot be a junction
 * header: it goes base64-encoded as mqtt-topic-base64 instead, like Kafka's keys. mqtt-qos is
 * qos in decimal (paho hands 0, 1 or 2); mqtt-retain is "true" for any nonzero retained.
 * Returns 0 or JN_ENOMEM.
 */
int jn_mqtt__map_headers(struct jn_msg *m, const char *topic, size_t topic_len, int qos,
                         int retained);

/* Why a topic filter is not valid (MQTT 3.1.1 4.7), or NULL. f is NUL-terminated. */
const char *jn_mqtt__filter_error(const char *f);

/* Why a rendered topic name (n bytes at t, NUL-terminated) cannot be published to, or NULL:
 * empty, longer than 65535 bytes, a NUL byte inside, a wildcard (+ or #). UTF-8 validity is
 * paho's check (MQTTASYNC_BAD_UTF8_STRING at send). */
const char *jn_mqtt__topic_error(const char *t, size_t n);

/* 1 when size bytes at buf are a whole paho 1.3.11 queue entry ("q-N.msg", MQTT 3.1.1 layout:
 * int payloadlen, payload, int qos, int retained, int dup, int msgid, topic NUL, int topiclen),
 * 0 when one was cut short (or is not one). */
int jn_mqtt__queue_entry_ok(const unsigned char *buf, size_t size);

#endif
