/*
 * jn_msg: the message envelope.
 *
 * A message is what an IN channel turns its input into: a time-ordered unique id, the source
 * channel, headers, payload bytes and the receive time. Like Mosquitto's stored messages it is
 * refcounted and treated as immutable once it has been accepted (handed to jn_ingest()):
 * fan-out to N destinations is N references, not N copies. A service that changes a message
 * works on a jn_msg_copy().
 *
 * Ids are ULIDs (26 characters of Crockford base32: 48 bits of milliseconds, then 80 bits that
 * are random at the start of each millisecond and incremented within it), so they sort by
 * receive time as strings and as bytes.
 *
 * Threads: a message may be referenced from several threads; the refcount is atomic. The
 * contents are not locked: only the thread that created a message changes it, before it is
 * accepted.
 */
#ifndef JN_MSG_H
#define JN_MSG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "jn_buf.h"
#include "jn_err.h"

#define JN_ID_LEN 26

/* A header's name and value are one allocation, held through name; value points into it.
 * Change one in place only with jn_header_set_value and jn_header_clear. */
struct jn_header {
    char *name;  /* owned (with the value); compared without regard to case */
    char *value; /* inside name's allocation */
};

/* Longest dedup key (jn_msg_set_dedup): with a channel name of up to 255 bytes and the expiry
 * index's 8 bytes it stays within LMDB's 511-byte key. */
#define JN_DEDUP_KEY_MAX 240

/* What a message's ingest remembers for its channel's duplicate window (jn_channel.h,
 * jn_dedup_load): one allocation, the key then the answer. */
struct jn_dedup {
    long long ttl_ms;  /* remembered this long after the ingest */
    int answered;      /* 0: the answer is still to come (jn_dedup_answer) */
    size_t klen, alen;
    unsigned char data[]; /* key, then answer */
};

/* One entry of a channel's duplicate window as read back from the journal (jn_dedup_load);
 * every pointer is borrowed for the visit only. */
struct jn_dedup_entry {
    const void *key;
    size_t klen;
    const char *id;      /* the message it was written with */
    int64_t time_us;     /* that message's receive time */
    int64_t expires_us;  /* forgotten after this */
    int answered;        /* 0: its answer was still to come */
    const void *answer;
    size_t alen;
};
typedef int (*jn_dedup_visit_fn)(void *arg, const struct jn_dedup_entry *e);

struct jn_msg {
    atomic_int refs;
    char id[JN_ID_LEN + 1];
    char *channel;  /* owned: the source channel's name */
    int64_t recv_us; /* receive time, microseconds since the Unix epoch */
    struct jn_header *hdrs;
    size_t nhdrs;
    size_t caphdrs;
    unsigned char *payload; /* owned; NUL-terminated for convenience (not counted in len) */
    size_t len;
    struct jn_dedup *dedup; /* owned, usually NULL: for the ingest only (never copied, never
                             * encoded); the ingest writes it to the journal and drops it */
};

/* The id generator; one per broker, safe to share between threads. */
struct jn_idgen {
    pthread_mutex_t lock;
    int64_t last_ms;
    unsigned char rnd[10];
};

void jn_idgen_init(struct jn_idgen *g);
void jn_idgen_destroy(struct jn_idgen *g);
/* Writes JN_ID_LEN characters and a NUL to out. */
void jn_idgen_next(struct jn_idgen *g, char out[JN_ID_LEN + 1]);
/* Milliseconds encoded in an id, or -1 if it is not a well-formed id. */
int64_t jn_id_time_ms(const char *id);

/* A new message with one reference, a copy of payload, no id yet (id[0] == 0), recv_us = now.
 * Returns NULL when out of memory. */
struct jn_msg *jn_msg_new(const char *channel, const void *payload, size_t len);
/* Same, but takes ownership of payload (allocated with jn_malloc, len + 1 bytes so the core
 * can NUL-terminate it), also on failure. */
struct jn_msg *jn_msg_new_take(const char *channel, void *payload, size_t len);
/* A deep copy with one reference (same id, channel, time, headers, payload), or NULL. */
struct jn_msg *jn_msg_copy(const struct jn_msg *m);

struct jn_msg *jn_msg_ref(struct jn_msg *m);
/* Drops one reference and sets *mp to NULL; frees on the last one. NULL is a no-op. */
void jn_msg_unref(struct jn_msg **mp);

/* Replaces the payload; takes ownership of p (len + 1 bytes allocated), also on failure. */
void jn_msg_set_payload(struct jn_msg *m, void *p, size_t len);

/* An IN channel, before jn_ingest*(): the ingest writes a dedup entry for the message in the
 * same journal transaction as the message (see jn_dedup_load in jn_channel.h). key is the
 * channel's own bytes (1..JN_DEDUP_KEY_MAX), kept ttl_ms (> 0) after the ingest, with answer:
 * the channel's bytes for a duplicate (alen may be 0), or NULL when the answer is still to come
 * (jn_dedup_answer). Copies both; replaces an earlier entry. 0, JN_EINVAL (key length, ttl) or
 * JN_ENOMEM (then m has none). jn_msg_clear_dedup drops it. */
int jn_msg_set_dedup(struct jn_msg *m, const void *key, size_t klen, long long ttl_ms,
                     const void *answer, size_t alen);
void jn_msg_clear_dedup(struct jn_msg *m);

/* Headers. Names compare case-insensitively; get returns the first match (borrowed, valid until
 * the header is changed). set replaces the first match or adds; add always appends. */
const char *jn_msg_header_get(const struct jn_msg *m, const char *name);
int jn_msg_header_set(struct jn_msg *m, const char *name, const char *value); /* 0 | JN_ENOMEM */
int jn_msg_header_add(struct jn_msg *m, const char *name, const char *value); /* 0 | JN_ENOMEM */
int jn_msg_header_del(struct jn_msg *m, const char *name); /* number removed */
/* add, with a value of vlen bytes (no NUL needed; it must hold none). 0 | JN_ENOMEM */
int jn_msg_header_addn(struct jn_msg *m, const char *name, const char *value, size_t vlen);

/* For a service editing the header array of its own copy: replaces h's value (the name is
 * kept; on JN_ENOMEM h is unchanged), or frees h (its pointers are NULL after). */
int jn_header_set_value(struct jn_header *h, const char *value);
void jn_header_clear(struct jn_header *h);

/*
 * Storage encoding (msgpack), format version 1:
 *   [1, id:str, channel:str, recv_us:int, [[name:str, value:str], ...], payload:bin]
 * Readers of every older version stay (see docs/architecture.md). Appends to out.
 */
#define JN_MSG_FORMAT_VERSION 1
int jn_msg_encode(const struct jn_msg *m, struct jn_buf *out); /* 0 | JN_ENOMEM */
/* The same with an empty payload: the id, channel, time and headers only. */
int jn_msg_encode_meta(const struct jn_msg *m, struct jn_buf *out); /* 0 | JN_ENOMEM */
/* Decodes one record. Returns 0 and a new message in *out, or JN_EPROTO / JN_ENOMEM with the
 * reason in err. Never trusts the input: any byte string is safe to pass. */
int jn_msg_decode(const void *data, size_t len, struct jn_msg **out, struct jn_err *err);

/*
 * msgpack writing for the storage records, straight into a jn_buf: each value in its smallest
 * encoding, the same bytes msgpack-c's packer writes (unsigned types for values >= 0, str8
 * for strings of 32..255 bytes). No callback per piece and no NUL after each; the buffer is
 * NUL-terminated when each call returns. 0 or JN_ENOMEM.
 */
int jn_mp_array(struct jn_buf *b, size_t n);
int jn_mp_int(struct jn_buf *b, int64_t v);
int jn_mp_str(struct jn_buf *b, const char *s, size_t n);
int jn_mp_cstr(struct jn_buf *b, const char *s); /* NULL is "" */
int jn_mp_bin(struct jn_buf *b, const void *p, size_t n);

/*
 * msgpack reading for the storage records. msgpack-c 4.0 unpacks an empty str or bin with a
 * NULL pointer; every reader goes through these so an empty value reads as "" and never as a
 * bad field. jn_mp_get_str: 0 and *s / *n (never NULL, *s not NUL-terminated) when o is a str
 * without NUL bytes, else JN_EPROTO. jn_mp_strdup: a NUL-terminated copy (caller frees), or
 * NULL when o is not such a string or on no memory.
 */
struct msgpack_object;
int jn_mp_get_str(const struct msgpack_object *o, const char **s, size_t *n);
char *jn_mp_strdup(const struct msgpack_object *o);

/* 0 when data holds msgpack objects whose containers announce no more elements than bytes
 * remain (run before msgpack-c, which allocates what a header announces); else JN_EPROTO.
 * Trailing bytes after the first object are allowed. */
int jn_msgpack_check(const void *data, size_t len);

int64_t jn_now_us(void);

/* A growable list of message references: what a service emits, what the router collects. */
struct jn_msg_list {
    struct jn_msg **v;
    size_t n;
    size_t cap;
};

/* Takes ownership of m's reference, also on failure (then m is released). 0 | JN_ENOMEM. */
int jn_msg_list_push(struct jn_msg_list *l, struct jn_msg *m);
/* Releases every message and the array. */
void jn_msg_list_clear(struct jn_msg_list *l);

#endif
