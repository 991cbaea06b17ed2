/*
 * bridge envelope: the bytes of one message between two junction nodes (the format is in
 * bridge_int.h and docs/bridge.md), written with msgpack-c's packer and read with its
 * unpacker after jn_msgpack_check (which refuses containers announcing more elements than
 * there are bytes, so a hostile length cannot make msgpack-c allocate). The decoder is outside
 * input (any peer that passed auth): fuzzed alone in tests/fuzz/fuzz_bridge_env.c.
 *
 * Threads: pure; any thread.
 */
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "bridge_int.h"
#include "jn_mem.h"

static int buf_write(void *data, const char *p, size_t n)
{
    return jn_buf_append(data, p, n) == 0 ? 0 : -1;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    return msgpack_pack_str(pk, n) == 0 && msgpack_pack_str_body(pk, s, n) == 0 ? 0 : -1;
}

int jn_bridge__env_encode(const struct jn_msg *m, const char *origin, struct jn_buf *out)
{
    msgpack_packer pk;
    int bad = 0;

    out->len = 0;
    msgpack_packer_init(&pk, out, buf_write);
    bad |= msgpack_pack_array(&pk, 7);
    bad |= msgpack_pack_uint8(&pk, JN_BRIDGE_VERSION);
    bad |= pack_str(&pk, "m", 1);
    bad |= pack_str(&pk, m->id, strlen(m->id));
    bad |= pack_str(&pk, origin, strlen(origin));
    bad |= msgpack_pack_int64(&pk, m->recv_us);
    bad |= msgpack_pack_array(&pk, m->nhdrs);
    for (size_t i = 0; i < m->nhdrs && !bad; i++) {
        const struct jn_header *h = &m->hdrs[i];
        bad |= msgpack_pack_array(&pk, 2);
        bad |= pack_str(&pk, h->name, strlen(h->name));
        bad |= pack_str(&pk, h->value, strlen(h->value));
    }
    bad |= msgpack_pack_bin(&pk, m->len);
    bad |= msgpack_pack_bin_body(&pk, m->payload, m->len);
    return bad ? JN_ENOMEM : 0;
}

int jn_bridge__id_ok(const char *s, size_t n)
{
    char id[JN_ID_LEN + 1];

    if (n != JN_ID_LEN) {
        return 0;
    }
    memcpy(id, s, n);
    id[n] = '\0';
    return jn_id_time_ms(id) >= 0;
}

/* Unpacks exactly one object of p into u. 0, or JN_EPROTO / JN_ENOMEM with err. */
static int unpack_one(const void *p, size_t len, msgpack_unpacked *u, struct jn_err *err)
{
    size_t off = 0;

    if (jn_msgpack_check(p, len) != 0) {
        return jn_err_set(err, JN_EPROTO, "not msgpack (%zu bytes)", len);
    }
    msgpack_unpacked_init(u);
    switch (msgpack_unpack_next(u, p, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    default:
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "not msgpack, or truncated (%zu bytes)", len);
    }
    if (off != len) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "%zu bytes after the envelope", len - off);
    }
    if (u->data.type != MSGPACK_OBJECT_ARRAY || u->data.via.array.size < 2 ||
        u->data.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "not an array starting with a version");
    }
    if (u->data.via.array.ptr[0].via.u64 != JN_BRIDGE_VERSION) {
        unsigned long long v = (unsigned long long)u->data.via.array.ptr[0].via.u64;
        msgpack_unpacked_destroy(u);
        return jn_err_set(err, JN_EPROTO, "envelope version %llu; this node speaks %d", v,
                          JN_BRIDGE_VERSION);
    }
    return 0;
}

/* 1 when o is the str kind (one character). */
static int is_kind(const msgpack_object *o, char kind)
{
    const char *s;
    size_t n;

    return jn_mp_get_str(o, &s, &n) == 0 && n == 1 && s[0] == kind;
}

static int decode_msg(const msgpack_object *a, const char *channel, struct bridge_env *out,
                      struct jn_err *err)
{
    const msgpack_object *f = a->via.array.ptr;
    const msgpack_object *hs;
    const char *s;
    size_t n;
    struct jn_msg *m;

    if (a->via.array.size != 7 || !is_kind(&f[1], 'm')) {
        return jn_err_set(err, JN_EPROTO, "not a message envelope of 7 fields");
    }
    if (jn_mp_get_str(&f[2], &s, &n) != 0 || !jn_bridge__id_ok(s, n)) {
        return jn_err_set(err, JN_EPROTO, "field 2 (id) is not a message id");
    }
    if (jn_mp_get_str(&f[3], &s, &n) != 0 || n >= JN_BRIDGE_ORIGIN_MAX) {
        return jn_err_set(err, JN_EPROTO, "field 3 (origin) is not a string of at most %d "
                          "bytes", JN_BRIDGE_ORIGIN_MAX - 1);
    }
    if (f[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
        f[4].type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return jn_err_set(err, JN_EPROTO, "field 4 (first received) is not an integer");
    }
    hs = &f[5];
    if (hs->type != MSGPACK_OBJECT_ARRAY) {
        return jn_err_set(err, JN_EPROTO, "field 5 (headers) is not an array");
    }
    if (f[6].type != MSGPACK_OBJECT_BIN) {
        return jn_err_set(err, JN_EPROTO, "field 6 (payload) is not bin");
    }
    m = jn_msg_new(channel, f[6].via.bin.size ? f[6].via.bin.ptr : "", f[6].via.bin.size);
    if (m == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_mp_get_str(&f[2], &s, &n);
    memcpy(m->id, s, JN_ID_LEN);
    m->id[JN_ID_LEN] = '\0';
    jn_mp_get_str(&f[3], &s, &n);
    memcpy(out->origin, s, n);
    out->origin[n] = '\0';
    out->first_us = f[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                        ? (f[4].via.u64 > (uint64_t)INT64_MAX ? INT64_MAX
                                                              : (int64_t)f[4].via.u64)
                        : f[4].via.i64;
    for (uint32_t i = 0; i < hs->via.array.size; i++) {
        const msgpack_object *h = &hs->via.array.ptr[i];
        const char *name, *value;
        size_t nl, vl;
        if (h->type != MSGPACK_OBJECT_ARRAY || h->via.array.size != 2 ||
            jn_mp_get_str(&h->via.array.ptr[0], &name, &nl) != 0 || nl == 0 ||
            jn_mp_get_str(&h->via.array.ptr[1], &value, &vl) != 0) {
            jn_msg_unref(&m);
            return jn_err_set(err, JN_EPROTO, "header %u is not [name, value] strings", i);
        }
        {
            char *nm = jn_strndup(name, nl);
            int rc = nm != NULL ? jn_msg_header_addn(m, nm, value, vl) : JN_ENOMEM;
            jn_free(nm);
            if (rc != 0) {
                jn_msg_unref(&m);
                return jn_err_set(err, JN_ENOMEM, "out of memory");
            }
        }
    }
    out->msg = m;
    return 0;
}

int jn_bridge__env_decode(const void *p, size_t len, const char *channel,
                          struct bridge_env *out, struct jn_err *err)
{
    msgpack_unpacked u;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = unpack_one(p, len, &u, err);
    if (rc != 0) {
        return rc;
    }
    rc = decode_msg(&u.data, channel, out, err);
    msgpack_unpacked_destroy(&u);
    return rc;
}

int jn_bridge__ans_encode(const char *ids, size_t n, const char *reason, struct jn_buf *out)
{
    msgpack_packer pk;
    int bad = 0;

    out->len = 0;
    msgpack_packer_init(&pk, out, buf_write);
    bad |= msgpack_pack_array(&pk, reason != NULL ? 4 : 3);
    bad |= msgpack_pack_uint8(&pk, JN_BRIDGE_VERSION);
    bad |= pack_str(&pk, reason != NULL ? "n" : "a", 1);
    bad |= msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n && !bad; i++) {
        bad |= pack_str(&pk, ids + i * JN_ID_LEN, JN_ID_LEN);
    }
    if (reason != NULL) {
        bad |= pack_str(&pk, reason, strlen(reason));
    }
    return bad ? JN_ENOMEM : 0;
}

int jn_bridge__ans_decode(const void *p, size_t len, int *nack, char reason[200],
                          void (*fn)(void *arg, const char *id), void *arg)
{
    msgpack_unpacked u;
    struct jn_err err;
    const msgpack_object *f, *ids;
    int rc = 0;

    *nack = 0;
    reason[0] = '\0';
    if (unpack_one(p, len, &u, &err) != 0) {
        return JN_EPROTO;
    }
    f = u.data.via.array.ptr;
    if (u.data.via.array.size == 3 && is_kind(&f[1], 'a')) {
        ids = &f[2];
    } else if (u.data.via.array.size == 4 && is_kind(&f[1], 'n')) {
        const char *s;
        size_t n;
        ids = &f[2];
        *nack = 1;
        if (jn_mp_get_str(&f[3], &s, &n) != 0) {
            rc = JN_EPROTO;
        } else {
            snprintf(reason, 200, "%.*s", (int)(n < 199 ? n : 199), s);
        }
    } else {
        ids = NULL;
        rc = JN_EPROTO;
    }
    if (rc == 0 && ids->type != MSGPACK_OBJECT_ARRAY) {
        rc = JN_EPROTO;
    }
    for (uint32_t i = 0; rc == 0 && i < ids->via.array.size; i++) {
        const char *s;
        size_t n;
        char id[JN_ID_LEN + 1];
        if (jn_mp_get_str(&ids->via.array.ptr[i], &s, &n) != 0 || !jn_bridge__id_ok(s, n)) {
            rc = JN_EPROTO;
            break;
        }
        memcpy(id, s, JN_ID_LEN);
        id[JN_ID_LEN] = '\0';
        fn(arg, id);
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int jn_bridge__status_encode(const char *origin, uint64_t queued, uint64_t in_flight,
                             struct jn_buf *out)
{
    msgpack_packer pk;
    int bad = 0;

    out->len = 0;
    msgpack_packer_init(&pk, out, buf_write);
    bad |= msgpack_pack_array(&pk, 5);
    bad |= msgpack_pack_uint8(&pk, JN_BRIDGE_VERSION);
    bad |= pack_str(&pk, "s", 1);
    bad |= pack_str(&pk, origin, strlen(origin));
    bad |= msgpack_pack_uint64(&pk, queued);
    bad |= msgpack_pack_uint64(&pk, in_flight);
    return bad ? JN_ENOMEM : 0;
}

int jn_bridge__status_decode(const void *p, size_t len, struct bridge_status *out,
                             struct jn_err *err)
{
    msgpack_unpacked u;
    struct jn_err ignored;
    const msgpack_object *f;
    const char *s;
    size_t n;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (unpack_one(p, len, &u, &ignored) != 0) {
        return 1; /* the envelope decoder says what is wrong with it */
    }
    f = u.data.via.array.ptr;
    if (!is_kind(&f[1], 's')) {
        rc = 1;
    } else if (u.data.via.array.size != 5) {
        rc = jn_err_set(err, JN_EPROTO, "a status of %u fields, not 5",
                        (unsigned)u.data.via.array.size);
    } else if (jn_mp_get_str(&f[2], &s, &n) != 0 || n == 0 || n >= JN_BRIDGE_ORIGIN_MAX) {
        rc = jn_err_set(err, JN_EPROTO, "status field 2 (origin) is not a string of 1..%d "
                        "bytes", JN_BRIDGE_ORIGIN_MAX - 1);
    } else if (f[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
               f[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rc = jn_err_set(err, JN_EPROTO, "status fields 3, 4 (queued, in flight) are not "
                        "unsigned integers");
    } else {
        memcpy(out->origin, s, n);
        out->origin[n] = '\0';
        out->queued = f[3].via.u64;
        out->in_flight = f[4].via.u64;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}
