/*
 * jn_store: the broker's records in the journal, and their keys.
 *
 *   inbox   seq                      -> envelope (jn_msg_encode)       accepted, not yet routed
 *   queue   destination \0 seq       -> [1, attempt, route, error, envelope:bin]
 *   dlq     seq                      -> [1, destination, route, attempts, error, time_us, envelope:bin]
 *   log     time_us seq              -> [1, time_us, id, event, route, channel, attempt, error]
 *   log_id  id time_us seq           -> ""  (the action log by message id)
 *
 * Every record starts with its format version; a reader of each older version stays. Strings
 * that are absent are stored as "". Keys use big-endian numbers so they sort by value.
 */
#ifndef JN_STORE_H
#define JN_STORE_H

#include <stdint.h>

#include "jn_journal.h"
#include "jn_msg.h"

#define JN_STORE_DEST_MAX 256

/* Appends one action-log entry to t. 0 or JN_ENOMEM. */
int jn_store_log(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                 const char *route, const char *channel, int attempt, const char *error);

int jn_store_inbox_put(struct jn_jtxn *t, uint64_t seq, const struct jn_msg *m);
int jn_store_inbox_del(struct jn_jtxn *t, uint64_t seq);

/* Queue keys: dest \0 seq. Returns the key length written to key (>= 9), or 0 if dest is too
 * long (JN_STORE_DEST_MAX). */
size_t jn_store_queue_key(unsigned char *key, const char *dest, uint64_t seq);
int jn_store_queue_put(struct jn_jtxn *t, const char *dest, uint64_t seq, const struct jn_msg *m,
                       const char *route, int attempt, const char *error);
int jn_store_queue_put_env(struct jn_jtxn *t, const char *dest, uint64_t seq, const void *env,
                           size_t len, const char *route, int attempt, const char *error);
int jn_store_queue_del(struct jn_jtxn *t, const char *dest, uint64_t seq);

int jn_store_dlq_put(struct jn_jtxn *t, uint64_t seq, const char *dest, const char *route,
                     int attempts, const char *error, const struct jn_msg *m);

/* A decoded queue or dead-letter record; strings and msg owned. */
struct jn_qrec {
    int attempt;
    char *dest;  /* dlq only */
    char *route;
    char *error;
    int64_t time_us; /* dlq only */
    struct jn_msg *msg;
};
int jn_store_queue_decode(const void *v, size_t vl, struct jn_qrec *out, struct jn_err *err);
int jn_store_dlq_decode(const void *v, size_t vl, struct jn_qrec *out, struct jn_err *err);
void jn_qrec_clear(struct jn_qrec *r);

struct jn_logrec {
    int64_t time_us;
    char id[JN_ID_LEN + 1];
    char event[32];
    char route[128];
    char channel[128];
    int attempt;
    char error[512];
};
int jn_store_log_decode(const void *v, size_t vl, struct jn_logrec *out, struct jn_err *err);

#endif
