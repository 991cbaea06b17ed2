/*
 * json-to-msgpack and msgpack-to-json: the same document in the other encoding (msgpack-c and
 * jansson), for devices and APIs that speak MessagePack.
 *
 *   services:
 *     packed:   { type: json-to-msgpack }
 *     readable: { type: msgpack-to-json }
 *
 * JSON -> msgpack: objects keep their key order, integers are msgpack ints (the smallest
 * encoding), reals float64, strings str. msgpack -> JSON: map keys must be strings (JSON has no
 * other); bin and ext values are refused with the reason (JSON has no bytes: a lua script can
 * encode them as it likes), and so are NaN and infinite floats. Nesting is limited to JN_MP_DEPTH levels both ways. The output's content-type is set
 * (application/msgpack, application/json).
 */
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_services.h"

#define JN_MP_DEPTH 64

static const struct jn_opt mp_opts[] = {
    JN_OPT_END,
};

/* The payload replaced by p (len bytes, jn_malloc'd, len + 1), with content-type ct. */
static int emit(struct jn_msg *in, void *p, size_t len, const char *ct, const char *who,
                struct jn_msg_list *out, struct jn_err *err)
{
    struct jn_msg *m = jn_msg_copy(in);

    if (m == NULL || jn_msg_header_set(m, "content-type", ct) != 0) {
        jn_msg_unref(&m);
        jn_free(p);
        return jn_err_set(err, JN_ENOMEM, "%s: out of memory", who);
    }
    jn_msg_set_payload(m, p, len);
    if (jn_msg_list_push(out, m) != 0) {
        return jn_err_set(err, JN_ENOMEM, "%s: out of memory", who);
    }
    return 0;
}

/* ---- JSON -> msgpack ---- */

static int pack_json(msgpack_packer *pk, const json_t *j, int depth, struct jn_err *err)
{
    const char *k;
    json_t *v;
    size_t i;

    if (depth > JN_MP_DEPTH) {
        return jn_err_set(err, JN_EPROTO, "json-to-msgpack: nested deeper than %d levels",
                          JN_MP_DEPTH);
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, k, v) {
            msgpack_pack_str_with_body(pk, k, strlen(k));
            if (pack_json(pk, v, depth + 1, err) != 0) {
                return err->code;
            }
        }
        return 0;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v) {
            if (pack_json(pk, v, depth + 1, err) != 0) {
                return err->code;
            }
        }
        return 0;
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(j));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return jn_err_set(err, JN_EPROTO, "json-to-msgpack: a JSON value of no known type");
}

static int j2m_write(void *data, const char *buf, size_t len)
{
    return jn_buf_append(data, buf, len) == 0 ? 0 : -1;
}

static int j2m_transform(const struct jn_service *svc, struct jn_msg *in,
                         struct jn_msg_list *out, struct jn_err *err)
{
    struct jn_buf b = JN_BUF_INIT;
    msgpack_packer pk;
    json_error_t je;
    json_t *j;
    size_t len;
    int rc;

    (void)svc;
    j = json_loadb((const char *)in->payload, in->len,
                   JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        return jn_err_set(err, JN_EPROTO, "json-to-msgpack: the payload is not JSON: %s at "
                          "line %d column %d", je.text, je.line, je.column);
    }
    msgpack_packer_init(&pk, &b, j2m_write);
    rc = pack_json(&pk, j, 0, err);
    json_decref(j);
    if (rc == 0 && jn_buf_reserve(&b, 1) != 0) {
        rc = jn_err_set(err, JN_ENOMEM, "json-to-msgpack: out of memory");
    }
    if (rc != 0) {
        jn_buf_reset(&b);
        return rc < 0 ? rc : jn_err_set(err, JN_ENOMEM, "json-to-msgpack: out of memory");
    }
    len = b.len;
    return emit(in, jn_buf_steal(&b), len, "application/msgpack", "json-to-msgpack", out, err);
}

/* ---- msgpack -> JSON ---- */

static json_t *to_json(const msgpack_object *o, int depth, struct jn_err *err)
{
    json_t *j = NULL;

    if (depth > JN_MP_DEPTH) {
        jn_err_set(err, JN_EPROTO, "msgpack-to-json: nested deeper than %d levels", JN_MP_DEPTH);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            jn_err_set(err, JN_EPROTO, "msgpack-to-json: the integer %llu is beyond JSON's "
                       "64-bit integers here", (unsigned long long)o->via.u64);
            return NULL;
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            jn_err_set(err, JN_EPROTO, "msgpack-to-json: a NaN or infinite float has no JSON "
                       "form");
            return NULL;
        }
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        j = json_stringn(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        if (j == NULL) {
            jn_err_set(err, JN_EPROTO, "msgpack-to-json: a string is not UTF-8");
        }
        return j;
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (uint32_t i = 0; j != NULL && i < o->via.array.size; i++) {
            json_t *v = to_json(&o->via.array.ptr[i], depth + 1, err);
            if (v == NULL || json_array_append_new(j, v) != 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; j != NULL && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            char *key;
            json_t *v;
            if (kv->key.type != MSGPACK_OBJECT_STR ||
                memchr(kv->key.via.str.ptr, '\0', kv->key.via.str.size) != NULL) {
                jn_err_set(err, JN_EPROTO, "msgpack-to-json: a map key that is not a string "
                           "(JSON objects have string keys)");
                json_decref(j);
                return NULL;
            }
            key = jn_strndup(kv->key.via.str.size ? kv->key.via.str.ptr : "",
                             kv->key.via.str.size);
            v = key ? to_json(&kv->val, depth + 1, err) : NULL;
            if (v == NULL || json_object_set_new(j, key, v) != 0) {
                if (v != NULL && err->msg[0] == '\0') {
                    jn_err_set(err, JN_EPROTO, "msgpack-to-json: a map key is not UTF-8");
                }
                jn_free(key);
                json_decref(j);
                return NULL;
            }
            jn_free(key);
        }
        return j;
    case MSGPACK_OBJECT_BIN:
        jn_err_set(err, JN_EPROTO, "msgpack-to-json: a bin value (bytes) has no JSON form");
        return NULL;
    default:
        jn_err_set(err, JN_EPROTO, "msgpack-to-json: an ext value has no JSON form");
        return NULL;
    }
}

static int m2j_transform(const struct jn_service *svc, struct jn_msg *in,
                         struct jn_msg_list *out, struct jn_err *err)
{
    msgpack_unpacked u;
    size_t off = 0, len;
    json_t *j;
    char *text, *p;

    (void)svc;
    if (in->len == 0 || jn_msgpack_check(in->payload, in->len) != 0) {
        return jn_err_set(err, JN_EPROTO, "msgpack-to-json: the payload is not msgpack");
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)in->payload, in->len, &off) !=
            MSGPACK_UNPACK_SUCCESS || off != in->len) {
        msgpack_unpacked_destroy(&u);
        return jn_err_set(err, JN_EPROTO, "msgpack-to-json: the payload is not one msgpack "
                          "value");
    }
    jn_err_clear(err);
    j = to_json(&u.data, 0, err);
    msgpack_unpacked_destroy(&u);
    if (j == NULL) {
        return err->msg[0] ? err->code : jn_err_set(err, JN_ENOMEM, "msgpack-to-json: out of "
                                                    "memory");
    }
    text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(j);
    if (text == NULL) {
        return jn_err_set(err, JN_ENOMEM, "msgpack-to-json: out of memory");
    }
    len = strlen(text);
    p = jn_malloc(len + 1);
    if (p == NULL) {
        free(text);
        return jn_err_set(err, JN_ENOMEM, "msgpack-to-json: out of memory");
    }
    memcpy(p, text, len + 1);
    free(text);
    return emit(in, p, len, "application/json", "msgpack-to-json", out, err);
}

const struct jn_service_def jn_service_json_to_msgpack = {
    .name = "json-to-msgpack",
    .desc = "A JSON payload as MessagePack (msgpack-c), key order kept",
    .opts = mp_opts,
    .conf_size = 1,
    .transform = j2m_transform,
};

const struct jn_service_def jn_service_msgpack_to_json = {
    .name = "msgpack-to-json",
    .desc = "A MessagePack payload as JSON; bin, ext, non-string keys and NaN are refused",
    .opts = mp_opts,
    .conf_size = 1,
    .transform = m2j_transform,
};
