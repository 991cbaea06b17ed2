/* jn_store: record formats of the broker's journal databases (see jn_store.h). */
#include "jn_store.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"

int jn_store_log(struct jn_jtxn *t, uint64_t seq, const char *id, const char *event,
                 const char *route, const char *channel, int attempt, const char *error)
{
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
    rc = jn_mp_array(b, 8);
    rc |= jn_mp_int(b, 1);
    rc |= jn_mp_int(b, now);
    rc |= jn_mp_cstr(b, id);
    rc |= jn_mp_cstr(b, event);
    rc |= jn_mp_cstr(b, route);
    rc |= jn_mp_cstr(b, channel);
    rc |= jn_mp_int(b, attempt);
    rc |= jn_mp_cstr(b, error);
    if (jn_jtxn_put_end(t, rc ? JN_ENOMEM : 0) != 0) {
        return JN_ENOMEM;
    }
    memset(idkey, '0', JN_ID_LEN);
    memcpy(idkey, id, idl);
    memcpy(idkey + JN_ID_LEN, key, 16);
    return jn_jtxn_put(t, JN_JDB_LOGID, idkey, sizeof(idkey), "", 0);
}

static int inbox_put_env(struct jn_jtxn *t, uint64_t seq, const void *env, size_t len)
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
        rc = inbox_put_env(t, seq, b.p, b.len);
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

/* Unpacks v as an array of n elements whose first is version 1. */
static int unpack(msgpack_unpacked *u, const void *v, size_t vl, uint32_t n, const char *what,
                  struct jn_err *err)
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
    if (u->data.via.array.size != n) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%s record v1 has %u fields, expected %u", what,
                          (unsigned)u->data.via.array.size, (unsigned)n);
    }
    return 0;
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
    rc = unpack(&u, v, vl, 8, "log", err);
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
    msgpack_unpacked_destroy(&u);
    return 0;
}
