/* jn_store: record formats of the broker's journal databases (see jn_store.h). */
#include "jn_store.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_tls.h"

/* A whole tls-peer value fits the action record's peer. */
_Static_assert(JN_STORE_PEER_MAX >= JN_TLS_PEER_ID_MAX, "jn_logrec.peer too small");

int jn_store_log(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                 const char *route, const char *channel, int attempt, const char *error)
{
    return jn_store_log_cfg(t, seq, id, event, route, channel, attempt, error, NULL);
}

int jn_store_log_cfg(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                     const char *route, const char *channel, int attempt, const char *error,
                     const char *config)
{
    return jn_store_log_peer(t, seq, id, event, route, channel, attempt, error, config, NULL);
}

int jn_store_log_peer(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                      const char *route, const char *channel, int attempt, const char *error,
                      const char *config, const char *peer)
{
    int has_peer = peer != NULL && peer[0] != '\0';
    unsigned char key[8 + 8], idkey[JN_ID_LEN + 16];
    int64_t now = jn_now_us();
    size_t idl = strnlen(id, JN_ID_LEN);
    struct jn_buf *b;
    int rc;

    jn_be64(key, (uint64_t)now);
    jn_be64(key + 8, seq);
    /* Encoded in place, in the jtxn's own buffer. */
    b = jn_jtxn_put_begin(t, JN_JDB_LOG, key, sizeof(key));
    if (b == NULL) {
        return JN_ENOMEM;
    }
    rc = jn_mp_array(b, has_peer ? 10 : 9);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_int(b, now);
    rc |= jn_mp_cstr(b, id);
    rc |= jn_mp_cstr(b, event);
    rc |= jn_mp_cstr(b, route);
    rc |= jn_mp_cstr(b, channel);
    rc |= jn_mp_int(b, attempt);
    rc |= jn_mp_cstr(b, error);
    rc |= jn_mp_cstr(b, config);
    if (has_peer) {
        rc |= jn_mp_cstr(b, peer);
    }
    if (jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0) != 0) {
        return JN_ENOMEM;
    }
    memset(idkey, '0', JN_ID_LEN);
    memcpy(idkey, id, idl);
    memcpy(idkey + JN_ID_LEN, key, 16);
    return jn_jtxn_put(t, JN_JDB_LOGID, idkey, sizeof(idkey), "", 0);
}

int jn_store_inbox_put_env(struct jn_jtxn *t, uint64_t seq, const void *env, size_t len)
{
    unsigned char key[8];

    jn_be64(key, seq);
    return jn_jtxn_put(t, JN_JDB_INBOX, key, 8, env, len);
}

int jn_store_inbox_put(struct jn_jtxn *t, uint64_t seq, const struct jn_msg *m)
{
    struct jn_buf b = JN_BUF_INIT;
    int rc = jn_msg_encode(m, &b);

    if (rc == 0) {
        rc = jn_store_inbox_put_env(t, seq, b.p, b.len);
    }
    jn_buf_reset(&b);
    return rc;
}

int jn_store_inbox_del(struct jn_jtxn *t, uint64_t seq)
{
    unsigned char key[8];

    jn_be64(key, seq);
    return jn_jtxn_del(t, JN_JDB_INBOX, key, 8);
}

size_t jn_store_queue_key(unsigned char *key, const char *dest, uint64_t seq)
{
    size_t n = strlen(dest);

    if (n >= JN_STORE_DEST_MAX) {
        return 0;
    }
    memcpy(key, dest, n);
    key[n] = '\0';
    jn_be64(key + n + 1, seq);
    return n + 9;
}

int jn_store_queue_put_env(struct jn_jtxn *t, const char *dest, uint64_t seq, const void *env,
                           size_t len, const char *route, int attempt, const char *error)
{
    unsigned char key[JN_STORE_DEST_MAX + 9];
    size_t kl = jn_store_queue_key(key, dest, seq);
    struct jn_buf *b;
    int rc;

    if (kl == 0) {
        return JN_EINVAL;
    }
    b = jn_jtxn_put_begin(t, JN_JDB_QUEUE, key, kl);
    if (b == NULL) {
        return JN_ENOMEM;
    }
    rc = jn_mp_array(b, 5);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_int(b, attempt);
    rc |= jn_mp_cstr(b, route);
    rc |= jn_mp_cstr(b, error);
    /* The record nests the envelope's own versioned format as a bin field. */
    rc |= jn_mp_bin(b, env, len);
    return jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0);
}

int jn_store_queue_put(struct jn_jtxn *t, const char *dest, uint64_t seq, const struct jn_msg *m,
                       const char *route, int attempt, const char *error)
{
    struct jn_buf b = JN_BUF_INIT;
    int rc = jn_msg_encode(m, &b);

    if (rc == 0) {
        rc = jn_store_queue_put_env(t, dest, seq, b.p, b.len, route, attempt, error);
    }
    jn_buf_reset(&b);
    return rc;
}

int jn_store_queue_del(struct jn_jtxn *t, const char *dest, uint64_t seq)
{
    unsigned char key[JN_STORE_DEST_MAX + 9];
    size_t kl = jn_store_queue_key(key, dest, seq);

    return kl ? jn_jtxn_del(t, JN_JDB_QUEUE, key, kl) : JN_EINVAL;
}

int jn_store_dlq_put(struct jn_jtxn *t, uint64_t seq, const char *dest, const char *route,
                     int attempts, const char *error, const struct jn_msg *m)
{
    struct jn_buf env = JN_BUF_INIT;
    unsigned char key[8];
    struct jn_buf *b;
    int rc;

    if (jn_msg_encode(m, &env) != 0) {
        jn_buf_reset(&env);
        return JN_ENOMEM;
    }
    jn_be64(key, seq);
    b = jn_jtxn_put_begin(t, JN_JDB_DLQ, key, 8);
    if (b == NULL) {
        jn_buf_reset(&env);
        return JN_ENOMEM;
    }
    rc = jn_mp_array(b, 7);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_cstr(b, dest);
    rc |= jn_mp_cstr(b, route);
    rc |= jn_mp_int(b, attempts);
    rc |= jn_mp_cstr(b, error);
    rc |= jn_mp_int(b, jn_now_us());
    rc |= jn_mp_bin(b, env.p, env.len);
    jn_buf_reset(&env);
    return jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0);
}

/* ---- decoding ---- */

static int is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

/* A string field into a fixed buffer, cut at n - 1 bytes; anything else reads as "". */
static void copy_str(char *dst, size_t n, const msgpack_object *o)
{
    const char *s;
    size_t l = 0;

    if (jn_mp_get_str(o, &s, &l) == 0) {
        l = l < n - 1 ? l : n - 1;
        memcpy(dst, s, l);
    }
    dst[l] = '\0';
}

/* Unpacks v as an array of nmin..nmax elements whose first is version 1 (fields added to a v1
 * record later are optional at its end). */
static int unpack_n(msgpack_unpacked *u, const void *v, size_t vl, uint32_t nmin, uint32_t nmax,
                    const char *what, struct jn_err *err)
{
    size_t off = 0;

    if (jn_msgpack_check(v, vl) != 0) {
        return jn_err_set(err, JN_EPROTO, "%s record is not valid msgpack", what);
    }
    msgpack_unpacked_init(u);
    if (msgpack_unpack_next(u, v, vl, &off) != MSGPACK_UNPACK_SUCCESS || off != vl) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%s record is not valid msgpack", what);
    }
    if (u->data.type != MSGPACK_OBJECT_ARRAY || u->data.via.array.size < 1 ||
        u->data.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%s record does not start with a version", what);
    }
    if (u->data.via.array.ptr[0].via.u64 != 1) {
        unsigned long long ver = u->data.via.array.ptr[0].via.u64;
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%s record version %llu is newer than this build",
                          what, ver);
    }
    if (u->data.via.array.size < nmin || u->data.via.array.size > nmax) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%s record v1 has %u fields, expected %u", what,
                          (unsigned)u->data.via.array.size, (unsigned)nmax);
    }
    return 0;
}

static int unpack(msgpack_unpacked *u, const void *v, size_t vl, uint32_t n, const char *what,
                  struct jn_err *err)
{
    return unpack_n(u, v, vl, n, n, what, err);
}

void jn_qrec_clear(struct jn_qrec *r)
{
    jn_free(r->dest);
    jn_free(r->route);
    jn_free(r->error);
    jn_msg_unref(&r->msg);
    memset(r, 0, sizeof(*r));
}

static int decode_msg(const msgpack_object *o, struct jn_qrec *r, const char *what,
                      struct jn_err *err)
{
    struct jn_err e;

    if (o->type != MSGPACK_OBJECT_BIN) {
        return jn_err_set(err, JN_EPROTO, "%s record: envelope is not binary", what);
    }
    if (jn_msg_decode(o->via.bin.ptr, o->via.bin.size, &r->msg, &e) != 0) {
        return jn_err_set(err, e.code, "%s record: envelope: %s", what, e.msg);
    }
    return 0;
}

int jn_store_queue_decode(const void *v, size_t vl, struct jn_qrec *r, struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = unpack(&u, v, vl, 5, "queue", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    if (!is_int(&f[1]) || (r->route = jn_mp_strdup(&f[2])) == NULL ||
        (r->error = jn_mp_strdup(&f[3])) == NULL) {
        rc = jn_err_set(err, JN_EPROTO, "queue record: bad attempt, route or error field");
    } else {
        r->attempt = (int)f[1].via.i64;
        rc = decode_msg(&f[4], r, "queue", err);
    }
    msgpack_unpacked_destroy(&u);
    if (rc != 0) {
        jn_qrec_clear(r);
    }
    return rc;
}

int jn_store_dlq_decode(const void *v, size_t vl, struct jn_qrec *r, struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = unpack(&u, v, vl, 7, "dead-letter", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    if ((r->dest = jn_mp_strdup(&f[1])) == NULL || (r->route = jn_mp_strdup(&f[2])) == NULL ||
        !is_int(&f[3]) || (r->error = jn_mp_strdup(&f[4])) == NULL || !is_int(&f[5])) {
        rc = jn_err_set(err, JN_EPROTO, "dead-letter record: bad field");
    } else {
        r->attempt = (int)f[3].via.i64;
        r->time_us = f[5].via.i64;
        rc = decode_msg(&f[6], r, "dead-letter", err);
    }
    msgpack_unpacked_destroy(&u);
    if (rc != 0) {
        jn_qrec_clear(r);
    }
    return rc;
}

int jn_store_log_decode(const void *v, size_t vl, struct jn_logrec *r, struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    int rc;

    memset(r, 0, sizeof(*r));
    /* the 9th, config, came later, and the 10th, peer, later still (only when there is one) */
    rc = unpack_n(&u, v, vl, 8, 10, "log", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    if (!is_int(&f[1]) || !is_int(&f[6])) {
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_EPROTO, "log record: bad time or attempt");
    }
    r->time_us = f[1].via.i64;
    copy_str(r->id, sizeof(r->id), &f[2]);
    copy_str(r->event, sizeof(r->event), &f[3]);
    copy_str(r->route, sizeof(r->route), &f[4]);
    copy_str(r->channel, sizeof(r->channel), &f[5]);
    r->attempt = (int)f[6].via.i64;
    copy_str(r->error, sizeof(r->error), &f[7]);
    if (u.data.via.array.size > 8) {
        copy_str(r->config, sizeof(r->config), &f[8]);
    }
    if (u.data.via.array.size > 9) {
        copy_str(r->peer, sizeof(r->peer), &f[9]);
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}

/* ---- duplicate windows ---- */

#define DEDUP_KEY_BUF (JN_STORE_DEST_MAX + 1 + JN_DEDUP_KEY_MAX)

size_t jn_store_dedup_key(unsigned char *out, const char *channel, const void *key, size_t klen)
{
    size_t n = strlen(channel);

    if (n >= JN_STORE_DEST_MAX || klen == 0 || klen > JN_DEDUP_KEY_MAX) {
        return 0;
    }
    memcpy(out, channel, n);
    out[n] = '\0';
    memcpy(out + n + 1, key, klen);
    return n + 1 + klen;
}

int jn_store_dedup_put(struct jn_jtxn *t, const char *channel, const void *key, size_t klen,
                       const struct jn_dedup_rec *r, const void *answer, size_t alen)
{
    unsigned char k[8 + DEDUP_KEY_BUF];
    size_t kl = jn_store_dedup_key(k + 8, channel, key, klen);
    struct jn_buf *b;
    int rc;

    if (kl == 0) {
        return JN_EINVAL;
    }
    b = jn_jtxn_put_begin(t, JN_JDB_DEDUP, k + 8, kl);
    if (b == NULL) {
        return JN_ENOMEM;
    }
    rc = jn_mp_array(b, 6);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_cstr(b, r->id);
    rc |= jn_mp_int(b, r->time_us);
    rc |= jn_mp_int(b, r->expires_us);
    rc |= jn_mp_int(b, r->answered ? 1 : 0);
    rc |= jn_mp_bin(b, answer, alen);
    if (jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0) != 0) {
        return JN_ENOMEM;
    }
    /* The index entry of an entry put again (same key, later expiry) is written anew; the
     * prune tells the old one by the entry's own expiry. */
    jn_be64(k, (uint64_t)r->expires_us);
    return jn_jtxn_put(t, JN_JDB_DEDUP_EXP, k, 8 + kl, "", 0);
}

int jn_store_dedup_put_msg(struct jn_jtxn *t, const char *channel, const struct jn_msg *m)
{
    const struct jn_dedup *d = m->dedup;
    struct jn_dedup_rec r;

    if (d == NULL) {
        return 0;
    }
    memcpy(r.id, m->id, sizeof(r.id));
    r.time_us = m->recv_us;
    r.expires_us = jn_now_us() + d->ttl_ms * 1000;
    r.answered = d->answered;
    return jn_store_dedup_put(t, channel, d->data, d->klen, &r, d->data + d->klen, d->alen);
}

int jn_store_dedup_decode(const void *v, size_t vl, struct jn_dedup_rec *r, struct jn_buf *answer,
                          struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    int rc;

    memset(r, 0, sizeof(*r));
    answer->len = 0;
    rc = unpack(&u, v, vl, 6, "dedup", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    if (f[1].type != MSGPACK_OBJECT_STR || f[1].via.str.size != JN_ID_LEN || !is_int(&f[2]) ||
        !is_int(&f[3]) || !is_int(&f[4]) || f[5].type != MSGPACK_OBJECT_BIN) {
        rc = jn_err_set(err, JN_EPROTO, "dedup record: bad field");
    } else {
        copy_str(r->id, sizeof(r->id), &f[1]);
        r->time_us = f[2].via.i64;
        r->expires_us = f[3].via.i64;
        r->answered = f[4].via.i64 != 0;
        if (jn_buf_append(answer, f[5].via.bin.ptr, f[5].via.bin.size) != 0) {
            rc = JN_ENOMEM;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* One entry read for jn_store_dedup_load: the record, then key and answer in data. */
struct dedup_item {
    struct jn_dedup_rec r;
    size_t klen, alen;
    unsigned char *data;
};

struct dedup_load {
    size_t plen;        /* of the channel \0 prefix */
    int64_t now_us;
    struct dedup_item *v;
    size_t n, cap;
    size_t bad;
    struct jn_buf answer;
    int rc;
};

static int visit_dedup_load(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct dedup_load *c = arg;
    struct dedup_item *it;
    struct jn_err err;
    int rc;

    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct dedup_item *nv = jn_realloc(c->v, cap * sizeof(*nv));
        if (nv == NULL) {
            c->rc = JN_ENOMEM;
            return 1;
        }
        c->v = nv;
        c->cap = cap;
    }
    it = &c->v[c->n];
    rc = jn_store_dedup_decode(v, vl, &it->r, &c->answer, &err);
    if (rc == JN_ENOMEM) {
        c->rc = rc;
        return 1;
    }
    if (rc != 0 || kl <= c->plen) {
        if (c->bad++ == 0) {
            jn_log(JN_LOG_ERROR, "journal: a dedup record cannot be decoded (%s); left in place",
                   rc != 0 ? err.msg : "bad key");
        }
        return 0;
    }
    if (it->r.expires_us <= c->now_us) {
        return 0; /* expired: the prune deletes it */
    }
    it->klen = kl - c->plen;
    it->alen = c->answer.len;
    it->data = jn_malloc(it->klen + it->alen + 1);
    if (it->data == NULL) {
        c->rc = JN_ENOMEM;
        return 1;
    }
    memcpy(it->data, (const unsigned char *)k + c->plen, it->klen);
    if (it->alen) {
        memcpy(it->data + it->klen, c->answer.p, it->alen);
    }
    c->n++;
    return 0;
}

static int dedup_item_cmp(const void *a, const void *b)
{
    const struct dedup_item *x = a, *y = b;

    if (x->r.time_us != y->r.time_us) {
        return x->r.time_us < y->r.time_us ? -1 : 1;
    }
    return strcmp(x->r.id, y->r.id); /* ids are time-ordered too */
}

int jn_store_dedup_load(struct jn_journal *j, const char *channel, int64_t now_us, size_t max,
                        jn_dedup_visit_fn visit, void *arg)
{
    unsigned char prefix[JN_STORE_DEST_MAX + 1];
    struct dedup_load c = {0};
    size_t n = strlen(channel);
    int rc;

    if (n >= JN_STORE_DEST_MAX) {
        return JN_EINVAL;
    }
    memcpy(prefix, channel, n);
    prefix[n] = '\0';
    c.plen = n + 1;
    c.now_us = now_us;
    rc = jn_journal_scan(j, JN_JDB_DEDUP, prefix, c.plen, visit_dedup_load, &c);
    if (rc == 0) {
        rc = c.rc;
    }
    if (c.bad) {
        jn_log(JN_LOG_ERROR, "journal: %zu dedup record(s) of channel '%s' could not be "
               "decoded; they stay in the journal untouched", c.bad, channel);
    }
    if (rc == 0 && c.n > 0) {
        qsort(c.v, c.n, sizeof(*c.v), dedup_item_cmp);
        for (size_t i = c.n > max ? c.n - max : 0; i < c.n; i++) {
            const struct dedup_item *it = &c.v[i];
            struct jn_dedup_entry e = {it->data, it->klen, it->r.id, it->r.time_us,
                                       it->r.expires_us, it->r.answered, it->data + it->klen,
                                       it->alen};
            if (visit(arg, &e) != 0) {
                break;
            }
        }
    }
    for (size_t i = 0; i < c.n; i++) {
        jn_free(c.v[i].data);
    }
    jn_free(c.v);
    jn_buf_reset(&c.answer);
    return rc;
}

int jn_store_dedup_answer(struct jn_journal *j, struct jn_jtxn *t, const char *channel,
                          const void *key, size_t klen, const char *id, const void *answer,
                          size_t alen)
{
    unsigned char k[DEDUP_KEY_BUF];
    size_t kl = jn_store_dedup_key(k, channel, key, klen);
    struct jn_buf v = JN_BUF_INIT, old = JN_BUF_INIT;
    struct jn_dedup_rec r;
    struct jn_err err;
    int rc;

    if (kl == 0) {
        return JN_EINVAL;
    }
    rc = jn_journal_get(j, JN_JDB_DEDUP, k, kl, &v);
    if (rc == 0) {
        rc = jn_store_dedup_decode(v.p, v.len, &r, &old, &err);
        if (rc == JN_EPROTO) {
            jn_log(JN_LOG_ERROR, "journal: a dedup record of channel '%s' cannot be decoded "
                   "(%s); left in place", channel, err.msg);
            rc = JN_ENOENT;
        }
    }
    if (rc == 0 && strcmp(r.id, id) != 0) {
        rc = JN_ENOENT;
    }
    if (rc == 0) {
        r.answered = 1;
        rc = jn_store_dedup_put(t, channel, key, klen, &r, answer, alen);
    }
    jn_buf_reset(&v);
    jn_buf_reset(&old);
    return rc;
}

struct dedup_prune {
    struct jn_journal *j;
    struct jn_jtxn *t;
    int64_t now_us;
    size_t max, n;
    struct jn_buf v, answer;
};

static int visit_dedup_prune(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct dedup_prune *c = arg;
    const unsigned char *kb = k;
    struct jn_dedup_rec r;
    struct jn_err err;
    int64_t exp;

    (void)v;
    (void)vl;
    if (c->n >= c->max || kl <= 8) {
        return 1;
    }
    exp = (int64_t)jn_get_be64(kb);
    if (exp > c->now_us) {
        return 1; /* the index is in expiry order: the rest is still valid */
    }
    if (jn_jtxn_del(c->t, JN_JDB_DEDUP_EXP, k, kl) != 0) {
        return 1;
    }
    c->n++;
    /* The entry goes with it unless the key was put again (its expiry is later): since this
     * read, too, by an ingest not yet committed, so the delete is of these bytes only. */
    if (jn_journal_get(c->j, JN_JDB_DEDUP, kb + 8, kl - 8, &c->v) == 0 &&
        jn_store_dedup_decode(c->v.p, c->v.len, &r, &c->answer, &err) == 0 &&
        r.expires_us <= c->now_us) {
        jn_jtxn_del_if(c->t, JN_JDB_DEDUP, kb + 8, kl - 8, c->v.p, c->v.len);
    }
    return 0;
}

size_t jn_store_dedup_prune(struct jn_journal *j, struct jn_jtxn *t, int64_t now_us, size_t max)
{
    struct dedup_prune c = {j, t, now_us, max, 0, JN_BUF_INIT, JN_BUF_INIT};

    jn_journal_scan(j, JN_JDB_DEDUP_EXP, NULL, 0, visit_dedup_prune, &c);
    jn_buf_reset(&c.v);
    jn_buf_reset(&c.answer);
    return c.n;
}

/* ---- kept messages (retention) ---- */

int jn_store_kept_put(struct jn_jtxn *t, uint64_t seq, const struct jn_msg *m,
                      const struct jn_buf *env, int keep, const char *routes,
                      const struct jn_buf *outs, size_t nouts)
{
    unsigned char key[16];
    struct jn_buf own = JN_BUF_INIT;
    struct jn_buf *b;
    int rc;

    if (keep != JN_KEEP_HEADERS && keep != JN_KEEP_ALL) {
        return JN_EINVAL;
    }
    if (keep == JN_KEEP_HEADERS || env == NULL || env->p == NULL) {
        rc = keep == JN_KEEP_HEADERS ? jn_msg_encode_meta(m, &own) : jn_msg_encode(m, &own);
        if (rc != 0) {
            jn_buf_reset(&own);
            return JN_ENOMEM;
        }
        env = &own;
    }
    jn_be64(key, (uint64_t)m->recv_us);
    jn_be64(key + 8, seq);
    b = jn_jtxn_put_begin(t, JN_JDB_KEPT, key, sizeof(key));
    if (b == NULL) {
        jn_buf_reset(&own);
        return JN_ENOMEM;
    }
    /* The id first, in a fixed place, so the prune finds it without decoding the rest. */
    rc = jn_mp_array(b, 7);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_str(b, m->id, strnlen(m->id, JN_ID_LEN));
    rc |= jn_mp_int(b, keep);
    rc |= jn_mp_cstr(b, routes);
    rc |= jn_mp_int(b, (int64_t)m->len);
    rc |= jn_mp_bin(b, env->p, env->len);
    rc |= jn_mp_array(b, keep == JN_KEEP_ALL && outs != NULL ? nouts : 0);
    if (keep == JN_KEEP_ALL && outs != NULL && nouts > 0) {
        rc |= jn_buf_append(b, outs->p, outs->len);
    }
    jn_buf_reset(&own);
    if (jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0) != 0) {
        return JN_ENOMEM;
    }
    return jn_jtxn_put(t, JN_JDB_KEPTID, m->id, strnlen(m->id, JN_ID_LEN), key, sizeof(key));
}

void jn_keptrec_clear(struct jn_keptrec *r)
{
    for (size_t i = 0; i < r->nouts; i++) {
        jn_free(r->outs[i].route);
        jn_free(r->outs[i].service);
        jn_msg_unref(&r->outs[i].msg);
    }
    jn_free(r->outs);
    jn_free(r->routes);
    jn_msg_unref(&r->msg);
    memset(r, 0, sizeof(*r));
}

/* [[route, service, envelope:bin], ...] into r->outs. */
static int decode_outs(const msgpack_object *o, struct jn_keptrec *r, struct jn_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > JN_KEPT_OUTS_MAX) {
        return jn_err_set(err, JN_EPROTO, "kept record: bad outputs field");
    }
    if (o->via.array.size == 0) {
        return 0;
    }
    r->outs = jn_calloc(o->via.array.size, sizeof(*r->outs));
    if (r->outs == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        struct jn_qrec q;
        memset(&q, 0, sizeof(q));
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 3 ||
            (r->outs[i].route = jn_mp_strdup(&e->via.array.ptr[0])) == NULL ||
            (r->outs[i].service = jn_mp_strdup(&e->via.array.ptr[1])) == NULL) {
            r->nouts = i + 1;
            return jn_err_set(err, JN_EPROTO, "kept record: bad output %u", (unsigned)i);
        }
        r->nouts = i + 1;
        if (decode_msg(&e->via.array.ptr[2], &q, "kept output", err) != 0) {
            return err->code;
        }
        r->outs[i].msg = q.msg;
    }
    return 0;
}

int jn_store_kept_decode(const void *v, size_t vl, struct jn_keptrec *r, struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    struct jn_qrec q;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = unpack(&u, v, vl, 7, "kept", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    memset(&q, 0, sizeof(q));
    if (f[1].type != MSGPACK_OBJECT_STR || !is_int(&f[2]) || f[2].via.i64 < JN_KEEP_HEADERS ||
        f[2].via.i64 > JN_KEEP_ALL || (r->routes = jn_mp_strdup(&f[3])) == NULL ||
        f[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rc = jn_err_set(err, JN_EPROTO, "kept record: bad id, keep, routes or bytes field");
    } else {
        r->keep = (int)f[2].via.i64;
        r->bytes = (size_t)f[4].via.u64;
        rc = decode_msg(&f[5], &q, "kept", err);
        r->msg = q.msg;
        if (rc == 0) {
            r->time_us = r->msg->recv_us;
            rc = decode_outs(&f[6], r, err);
        }
    }
    msgpack_unpacked_destroy(&u);
    if (rc != 0) {
        jn_keptrec_clear(r);
    }
    return rc;
}

int jn_store_kept_get(struct jn_journal *j, const char *id, struct jn_keptrec *out,
                      struct jn_err *err)
{
    struct jn_buf v = JN_BUF_INIT;
    unsigned char key[16];
    int rc;

    memset(out, 0, sizeof(*out));
    rc = jn_journal_get(j, JN_JDB_KEPTID, id, strnlen(id, JN_ID_LEN), &v);
    if (rc == 0 && v.len != sizeof(key)) {
        rc = JN_ENOENT;
    }
    if (rc == 0) {
        memcpy(key, v.p, sizeof(key));
        rc = jn_journal_get(j, JN_JDB_KEPT, key, sizeof(key), &v);
    }
    if (rc == 0) {
        rc = jn_store_kept_decode(v.p, v.len, out, err);
    } else if (rc != JN_ENOENT) {
        jn_err_set(err, rc, "the journal cannot be read");
    }
    jn_buf_reset(&v);
    return rc;
}

struct kept_prune {
    struct jn_jtxn *t;
    int64_t cutoff_us;
    size_t extra, max, n;
};

static int visit_kept_prune(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct kept_prune *c = arg;
    const unsigned char *p = v;

    if (c->n >= c->max || kl != 16) {
        return 1;
    }
    if ((int64_t)jn_get_be64(k) >= c->cutoff_us) {
        if (c->extra == 0) {
            return 1; /* in time order: the rest is newer */
        }
        c->extra--;
    }
    if (jn_jtxn_del(c->t, JN_JDB_KEPT, k, kl) != 0) {
        return 1;
    }
    c->n++;
    /* [1, id:fixstr 26, ...] as jn_store_kept_put writes it. The index entry goes with it
     * unless a later routing of the message points it elsewhere. */
    if (vl > 3 + JN_ID_LEN && p[0] == 0x97 && p[1] == 0x01 && p[2] == (0xa0 | JN_ID_LEN)) {
        jn_jtxn_del_if(c->t, JN_JDB_KEPTID, p + 3, JN_ID_LEN, k, kl);
    }
    return 0;
}

size_t jn_store_kept_prune(struct jn_journal *j, struct jn_jtxn *t, int64_t cutoff_us,
                           size_t extra, size_t max)
{
    struct kept_prune c = {t, cutoff_us, extra, max, 0};

    jn_journal_scan(j, JN_JDB_KEPT, NULL, 0, visit_kept_prune, &c);
    return c.n;
}

/* ---- config versions ---- */

int jn_store_config_put(struct jn_jtxn *t, const char *hash, int64_t first_us, int64_t last_us,
                        const void *text, size_t len)
{
    struct jn_buf *b = jn_jtxn_put_begin(t, JN_JDB_CONFIGS, hash, strlen(hash));
    int rc;

    if (b == NULL) {
        return JN_ENOMEM;
    }
    rc = jn_mp_array(b, 4);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_int(b, first_us);
    rc |= jn_mp_int(b, last_us);
    rc |= jn_mp_bin(b, text, len);
    return jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0);
}

int jn_store_config_decode(const void *v, size_t vl, struct jn_configrec *r, struct jn_err *err)
{
    msgpack_unpacked u;
    const msgpack_object *f;
    size_t off;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = unpack(&u, v, vl, 4, "config", err);
    if (rc != 0) {
        return rc;
    }
    f = u.data.via.array.ptr;
    if (!is_int(&f[1]) || !is_int(&f[2]) || f[3].type != MSGPACK_OBJECT_BIN) {
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_EPROTO, "config record: bad field");
    }
    r->first_us = f[1].via.i64;
    r->last_us = f[2].via.i64;
    r->len = f[3].via.bin.size;
    /* The text as a pointer into v (msgpack-c's points into its zone): found again by offset. */
    off = r->len && f[3].via.bin.ptr ? (size_t)(vl - r->len) : 0;
    r->text = (const char *)v + off;
    msgpack_unpacked_destroy(&u);
    return 0;
}
