/*
 * jn_store: the broker's records in the journal, and their keys.
 *
 *   inbox   seq                      -> envelope (jn_msg_encode)       accepted, not yet routed
 *   queue   destination \0 seq       -> [1, attempt, route, error, envelope:bin]
 *   dlq     seq                      -> [1, destination, route, attempts, error, time_us, envelope:bin]
 *   log     time_us seq              -> [1, time_us, id, event, route, channel, attempt, error,
 *                                        config]  (config: the hash of the config that did it;
 *                                        absent in records written before it)
 *   configs hash                     -> [1, first_loaded_us, last_loaded_us, text:bin]
 *   log_id  id time_us seq           -> ""  (the action log by message id)
 *   dedup   channel \0 key           -> [1, id, time_us, expires_us, answered, answer:bin]
 *   dedup_exp  expires_us channel \0 key -> ""  (the dedup entries by expiry, for the prune)
 *   kept    recv_us seq              -> [1, id, keep, routes, bytes, envelope:bin,
 *                                        [[route, service, output envelope:bin], ...]]  kept after routing
 *   kept_id id                       -> recv_us seq  (the kept messages by id: the latest)
 *
 * Every record starts with its format version; a reader of each older version stays. Strings
 * that are absent are stored as "". Keys use big-endian numbers so they sort by value.
 *
 * Compatibility: dedup and dedup_exp came after journal format 1 without a new format number. A
 * journal from before them opens as it is (a writer creates them, a reader finds them empty);
 * a build from before them ignores them, so its run neither loads nor prunes the entries (a
 * later build prunes what expired meanwhile).
 */
#ifndef JN_STORE_H
#define JN_STORE_H

#include <stdint.h>

#include "jn_journal.h"
#include "jn_msg.h"

#define JN_STORE_DEST_MAX 256

/* Appends one action-log entry to t. 0 or JN_ENOMEM. _cfg: with the hash of the config it was
 * done under (jn_spec.h's cfg->hash; NULL: ""). */
int jn_store_log(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                 const char *route, const char *channel, int attempt, const char *error);
int jn_store_log_cfg(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                     const char *route, const char *channel, int attempt, const char *error,
                     const char *config);
/* _peer: also the TLS peer's identity (the tls-peer header, jn_tls_peer_id's form) of a
 * "received" record; NULL or "": none. A record with a peer has 10 fields, one without keeps 9,
 * so a binary from before the field still reads the log of a broker without TLS peers. */
int jn_store_log_peer(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                      const char *route, const char *channel, int attempt, const char *error,
                      const char *config, const char *peer);
#define JN_STORE_PEER_MAX 400 /* JN_TLS_PEER_ID_MAX */

/* Config versions (junction ctl config history): the text of each config the broker has run,
 * by its hash, with when it was first and last loaded. */
struct jn_configrec {
    int64_t first_us, last_us;
    const void *text; /* borrowed from the record decoded */
    size_t len;
};
int jn_store_config_put(struct jn_jtxn *t, const char *hash, int64_t first_us, int64_t last_us,
                        const void *text, size_t len);
int jn_store_config_decode(const void *v, size_t vl, struct jn_configrec *r, struct jn_err *err);

int jn_store_inbox_put(struct jn_jtxn *t, uint64_t seq, const struct jn_msg *m);
/* The same with m already encoded (jn_msg_encode). */
int jn_store_inbox_put_env(struct jn_jtxn *t, uint64_t seq, const void *env, size_t len);
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
    char config[24]; /* "" in records from before it */
    char peer[JN_STORE_PEER_MAX]; /* "" in records without (and from before it) */
};
int jn_store_log_decode(const void *v, size_t vl, struct jn_logrec *out, struct jn_err *err);

/*
 * Duplicate windows (jn_msg_set_dedup, jn_dedup_load in jn_channel.h). Each entry is two
 * records: the entry under channel \0 key (one per key: a later ingest of the key replaces
 * it), and its expiry index entry under expires_us channel \0 key.
 */
struct jn_dedup_rec {
    char id[JN_ID_LEN + 1];
    int64_t time_us;
    int64_t expires_us;
    int answered;
};
/* channel \0 key into out (JN_STORE_DEST_MAX + 1 + JN_DEDUP_KEY_MAX bytes); its length, or 0
 * when the channel name (JN_STORE_DEST_MAX) or the key (1..JN_DEDUP_KEY_MAX) is too long. */
size_t jn_store_dedup_key(unsigned char *out, const char *channel, const void *key, size_t klen);
/* Both records of one entry into t. 0, JN_EINVAL (the lengths above) or JN_ENOMEM. */
int jn_store_dedup_put(struct jn_jtxn *t, const char *channel, const void *key, size_t klen,
                       const struct jn_dedup_rec *r, const void *answer, size_t alen);
/* The ingest's part: m's dedup entry (m->dedup; none: nothing) with m's id and receive time,
 * expiring m->dedup->ttl_ms from now. 0, JN_EINVAL or JN_ENOMEM. */
int jn_store_dedup_put_msg(struct jn_jtxn *t, const char *channel, const struct jn_msg *m);
/* Decodes an entry; its answer into answer (emptied first). 0, JN_EPROTO or JN_ENOMEM. */
int jn_store_dedup_decode(const void *v, size_t vl, struct jn_dedup_rec *r, struct jn_buf *answer,
                          struct jn_err *err);
/* Calls visit for channel's entries that expire after now_us: the max newest by time_us, oldest
 * first (visit returns non-zero to stop). Entries that cannot be decoded are logged and left in
 * place. 0, JN_EINVAL (the channel name is too long for a key), JN_ENOMEM or JN_EIO. */
int jn_store_dedup_load(struct jn_journal *j, const char *channel, int64_t now_us, size_t max,
                        jn_dedup_visit_fn visit, void *arg);
/* Puts into t the new answer of channel's entry for key, if the journal holds one written with
 * message id (not pruned, not replaced by a later ingest of the key). 0, JN_ENOENT (no such
 * entry), JN_EINVAL, JN_ENOMEM or JN_EIO. */
int jn_store_dedup_answer(struct jn_journal *j, struct jn_jtxn *t, const char *channel,
                          const void *key, size_t klen, const char *id, const void *answer,
                          size_t alen);
/* Deletes into t what expired by now_us, oldest first, at most max index entries: each index
 * entry, and its entry unless a later ingest of the key put it again (its own expiry is later).
 * Returns the number of index entries deleted. */
size_t jn_store_dedup_prune(struct jn_journal *j, struct jn_jtxn *t, int64_t now_us, size_t max);

/*
 * Kept messages (retention, docs/storage.md): what a message was when it was received, kept
 * after routing for the message browser and replay until retention deletes it. keep says how
 * much: JN_KEEP_HEADERS keeps the envelope with an empty payload. routes: the names of the
 * routes that took it, comma-separated ("" when none). The record is written in the routing
 * transaction, so a message is kept exactly when it was routed. A message routed again (a
 * replay, a crash before the routing commit) gets a new record; kept_id names the latest.
 */
enum jn_keep {
    JN_KEEP_NONE = 0,
    JN_KEEP_HEADERS = 1,
    JN_KEEP_ALL = 2,
};
/* env: m's full encoding when the caller has it (used for JN_KEEP_ALL), else NULL. outs: what
 * the routes' services made of it, nouts msgpack arrays [route, service, envelope:bin] back
 * to back, one per output of each service in order (NULL / 0: none; a route without services
 * has none; the last service's are what the destinations were sent). 0, JN_EINVAL (keep is none) or JN_ENOMEM. */
#define JN_KEPT_OUTS_MAX 64
int jn_store_kept_put(struct jn_jtxn *t, uint64_t seq, const struct jn_msg *m,
                      const struct jn_buf *env, int keep, const char *routes,
                      const struct jn_buf *outs, size_t nouts);
struct jn_kept_out {
    char *route;        /* owned */
    char *service;      /* owned: the service that gave it */
    struct jn_msg *msg; /* owned */
};
struct jn_keptrec {
    int64_t time_us; /* the receive time of the key */
    int keep;        /* enum jn_keep */
    char *routes;    /* owned */
    size_t bytes;    /* of the payload as received (msg's is empty with JN_KEEP_HEADERS) */
    struct jn_msg *msg;
    struct jn_kept_out *outs; /* after each route's services, in routing order (owned) */
    size_t nouts;
};
int jn_store_kept_decode(const void *v, size_t vl, struct jn_keptrec *out, struct jn_err *err);
/* The latest kept record of message id. 0, JN_ENOENT (not kept, or deleted by retention),
 * JN_EPROTO (cannot be decoded; err says why), JN_ENOMEM or JN_EIO. */
int jn_store_kept_get(struct jn_journal *j, const char *id, struct jn_keptrec *out,
                      struct jn_err *err);
void jn_keptrec_clear(struct jn_keptrec *r);
/* Deletes into t the oldest kept records: those received before cutoff_us, then extra more,
 * at most max in all (with their kept_id entries when they are still the latest). Returns the
 * number deleted. */
size_t jn_store_kept_prune(struct jn_journal *j, struct jn_jtxn *t, int64_t cutoff_us,
                           size_t extra, size_t max);

#endif
