/*
 * lua_json: junction.json and junction.msgpack, the data helpers the lua service
 * (services/lua.c) gives its scripts.
 *
 * junction.json: decode(text) -> value, or nil and the reason; encode(value) -> compact JSON
 * text (members sorted by name, so the same table always gives the same text); array(t) marks
 * t to encode as an array even when empty; null is a light userdata for JSON's null.
 * junction.msgpack: encode(value) -> bytes (map entries in table order; junction.json.null is
 * nil); decode(bytes) -> value, or nil and the reason. One object, nothing after it.
 *
 * Modelled, as the service is, on Redis's EVAL sandbox, whose scripts get cjson and cmsgpack
 * (a null value, a mark for arrays). What the C side holds while a Lua call can raise (a
 * jansson document, an output buffer, an unpacked object) is in a userdata with __gc, and the
 * encoders stop at what max_memory has left.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <msgpack.h>

#include "jn_buf.h"
#include "jn_msg.h"
#include "lua_int.h"

/* Registry keys: addresses of these (the values are never used). */
static const char key_arr_mt = 'a', key_holder_mt = 'j', key_buf_mt = 'b', key_sbuf_mt = 'm',
                  key_unpacked_mt = 'u';
/* junction.json.null is a light userdata pointing here. */
static const char json_null_mark = 'n';

#define LUA_JSON_MAX_DEPTH 1000

/* ---- junction.json ---- */

static int holder_gc(lua_State *L)
{
    json_t **j = lua_touserdata(L, 1);
    if (*j != NULL) {
        json_decref(*j);
        *j = NULL;
    }
    return 0;
}

static void json_push(lua_State *L, json_t *v, int depth)
{
    luaL_checkstack(L, 4, "json.decode: nested too deeply");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *e;
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, k, e) {
            json_push(L, e, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *e;
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, e) {
            json_push(L, e, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_arr_mt);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        lua_pushlightuserdata(L, (void *)&json_null_mark);
        break;
    }
}

/* json.decode(text) -> value, or nil and the reason. */
static int lj_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    json_error_t je;
    json_t **holder;

    lua_settop(L, 1);
    /* The document is ours until it is converted; if a Lua error (no memory) cuts that short,
     * the holder's __gc frees it. */
    holder = lua_newuserdatauv(L, sizeof(*holder), 0);
    *holder = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_holder_mt);
    lua_setmetatable(L, -2);
    *holder = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (*holder == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "json.decode: %s at line %d column %d", je.text, je.line,
                        je.column);
        return 2;
    }
    json_push(L, *holder, 0);
    json_decref(*holder);
    *holder = NULL;
    return 1;
}

static int buf_gc(lua_State *L)
{
    jn_buf_reset(lua_touserdata(L, 1));
    return 0;
}

/* The encoder's output: a jn_buf in a userdata (freed by __gc if an error cuts in), capped at
 * what the memory budget has left so a table of many references to one big string cannot
 * blow up the broker's own heap. */
struct enc {
    lua_State *L;
    struct jn_buf *b;
    size_t cap;
};

static void enc_put(struct enc *e, const char *p, size_t n)
{
    if (e->b->len + n > e->cap) {
        luaL_error(e->L, "json.encode: the text would be larger than max_memory allows");
    }
    if (jn_buf_append(e->b, p, n) != 0) {
        luaL_error(e->L, "json.encode: out of memory");
    }
}

/* Length of the UTF-8 sequence at s (n bytes left) as jansson accepts it, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp;
    size_t len;

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
    } else {
        return 0;
    }
    cp = c & (0x7Fu >> len);
    if (n < len) {
        return 0;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        return 0;
    }
    return len;
}

static void enc_str(struct enc *e, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0;

    enc_put(e, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char hex[8];
        size_t k;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof(hex), "\\u%04x", c);
                esc = hex;
            }
        }
        if (esc != NULL) {
            enc_put(e, s + run, i - run);
            enc_put(e, esc, strlen(esc));
            i++;
            run = i;
            continue;
        }
        k = utf8_seq(u + i, n - i);
        if (k == 0) {
            luaL_error(e->L, "json.encode: a string is not valid UTF-8 (byte %d)", (int)i + 1);
        }
        i += k;
    }
    enc_put(e, s + run, n - run);
    enc_put(e, "\"", 1);
}

static void enc_num(struct enc *e, lua_State *L, int idx)
{
    char t[40];

    if (lua_isinteger(L, idx)) {
        snprintf(t, sizeof(t), "%lld", (long long)lua_tointeger(L, idx));
    } else {
        double d = (double)lua_tonumber(L, idx);
        if (!isfinite(d)) {
            luaL_error(L, "json.encode: %s has no JSON form", isnan(d) ? "nan" : "inf");
        }
        /* The shortest text that reads back as the same double (19.99, not 19.98999...). */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(t, sizeof(t), "%.*g", prec, d);
            if (strtod(t, NULL) == d) {
                break;
            }
        }
        if (strpbrk(t, ".eE") == NULL) {
            strcat(t, ".0"); /* stays a float when decoded again */
        }
    }
    enc_put(e, t, strlen(t));
}

struct enc_key {
    const char *s;
    size_t n;
    lua_Integer i;
    int is_int;
};

static int enc_key_cmp(const void *a, const void *b)
{
    const struct enc_key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c != 0 ? c : (x->n > y->n) - (x->n < y->n);
}

static void enc_value(struct enc *e, int idx, int depth);

static void enc_table(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    size_t nkeys = 0;
    int is_array, marked = 0;
    struct enc_key *keys;

    if (depth > LUA_JSON_MAX_DEPTH) {
        luaL_error(L, "json.encode: nested more than %d levels (a table that holds itself?)",
                   LUA_JSON_MAX_DEPTH);
    }
    luaL_checkstack(L, 6, "json.encode: nested too deeply");
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_arr_mt);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    is_array = marked;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        nkeys++;
    }
    if (!marked) {
        /* A table whose keys are exactly 1..n (n > 0) is an array; {} is an object. */
        is_array = len > 0 && (size_t)len == nkeys;
    }
    if (is_array) {
        enc_put(e, "[", 1);
        for (lua_Integer i = 1; i <= len; i++) {
            if (i > 1) {
                enc_put(e, ",", 1);
            }
            lua_rawgeti(L, idx, i);
            enc_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        enc_put(e, "]", 1);
        return;
    }
    /* Members sorted by name, so the same table always gives the same text. The names live
     * as keys of the table (or in the anchor table, for numbers), the array in a userdata. */
    keys = lua_newuserdatauv(L, (nkeys ? nkeys : 1) * sizeof(*keys), 0);
    lua_pushnil(L); /* the anchor for number keys made strings: a table once there is one */
    {
        int anchor = lua_gettop(L);
        size_t k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            lua_pop(L, 1);
            if (k == nkeys) {
                luaL_error(L, "json.encode: a table changed while it was encoded");
            }
            if (lua_type(L, -1) == LUA_TSTRING) {
                keys[k].s = lua_tolstring(L, -1, &keys[k].n);
                keys[k].is_int = 0;
            } else if (lua_isinteger(L, -1)) {
                keys[k].i = lua_tointeger(L, -1);
                keys[k].is_int = 1;
                if (lua_isnil(L, anchor)) {
                    lua_createtable(L, 4, 0);
                    lua_replace(L, anchor);
                }
                lua_pushfstring(L, "%I", (LUAI_UACINT)keys[k].i);
                keys[k].s = lua_tolstring(L, -1, &keys[k].n);
                lua_rawseti(L, anchor, (lua_Integer)k + 1);
            } else {
                luaL_error(L, "json.encode: an object key is a %s, expected a string",
                           luaL_typename(L, -1));
            }
            k++;
        }
        qsort(keys, k, sizeof(*keys), enc_key_cmp);
        enc_put(e, "{", 1);
        for (size_t i = 0; i < k; i++) {
            if (i > 0) {
                enc_put(e, ",", 1);
            }
            enc_str(e, keys[i].s, keys[i].n);
            enc_put(e, ":", 1);
            if (keys[i].is_int) {
                lua_pushinteger(L, keys[i].i);
            } else {
                lua_pushlstring(L, keys[i].s, keys[i].n);
            }
            lua_rawget(L, idx);
            enc_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        enc_put(e, "}", 1);
        lua_pop(L, 2);
    }
}

static void enc_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    size_t n;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        enc_put(e, "null", 4);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) {
            enc_put(e, "true", 4);
        } else {
            enc_put(e, "false", 5);
        }
        break;
    case LUA_TNUMBER:
        enc_num(e, L, idx);
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &n);
        enc_str(e, s, n);
        break;
    case LUA_TTABLE:
        enc_table(e, idx, depth);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == &json_null_mark) {
            enc_put(e, "null", 4);
            break;
        }
        /* fall through */
    default:
        luaL_error(L, "json.encode: a %s has no JSON form", luaL_typename(L, idx));
    }
}

/* json.encode(value) -> compact JSON text. */
static int lj_encode(lua_State *L)
{
    struct lua_vm *vm = lua__vm_of(L);
    struct enc e;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    e.L = L;
    e.b = lua_newuserdatauv(L, sizeof(*e.b), 0); /* 2 */
    memset(e.b, 0, sizeof(*e.b));
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_buf_mt);
    lua_setmetatable(L, 2);
    e.cap = vm->limit > vm->used ? vm->limit - vm->used : 0;
    enc_value(&e, 1, 0);
    lua_pushlstring(L, e.b->p ? e.b->p : "", e.b->len);
    jn_buf_reset(e.b);
    return 1;
}

/* json.array(t): marks t to encode as an array even when empty. */
static int lj_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_createtable(L, 0, 0);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_arr_mt);
    lua_setmetatable(L, 1);
    return 1;
}

void lua__open_json(lua_State *L)
{
    static const luaL_Reg json[] = {
        {"decode", lj_decode}, {"encode", lj_encode}, {"array", lj_array}, {NULL, NULL}};
    static const luaL_Reg holder_fns[] = {{"__gc", holder_gc}, {NULL, NULL}};
    static const luaL_Reg buf_fns[] = {{"__gc", buf_gc}, {NULL, NULL}};

    lua__new_mt(L, &key_arr_mt, NULL, NULL);
    lua__new_mt(L, &key_holder_mt, holder_fns, NULL);
    lua__new_mt(L, &key_buf_mt, buf_fns, NULL);
    luaL_newlib(L, json);
    lua_pushlightuserdata(L, (void *)&json_null_mark);
    lua_setfield(L, -2, "null");
}

/* ---- junction.msgpack ---- */

#define LUA_MP_MAX_DEPTH 1000

/* The encoder's output, in a userdata so __gc frees it if an error cuts in. */
struct mpe_out {
    msgpack_sbuffer sb;
    int failed; /* a write ran out of memory */
};

static int sbuf_gc(lua_State *L)
{
    struct mpe_out *o = lua_touserdata(L, 1);
    msgpack_sbuffer_destroy(&o->sb);
    return 0;
}

static int mpe_write(void *data, const char *buf, size_t len)
{
    struct mpe_out *o = data;
    if (msgpack_sbuffer_write(&o->sb, buf, len) != 0) {
        o->failed = 1;
        return -1;
    }
    return 0;
}

static int unpacked_gc(lua_State *L)
{
    msgpack_unpacked_destroy(lua_touserdata(L, 1));
    return 0;
}

struct mpe {
    lua_State *L;
    struct mpe_out *out;
    msgpack_packer pk;
    size_t cap;
};

static void mpe_room(struct mpe *e)
{
    if (e->out->failed) {
        luaL_error(e->L, "msgpack.encode: out of memory");
    }
    if (e->out->sb.size > e->cap) {
        luaL_error(e->L, "msgpack.encode: the bytes would be larger than max_memory allows");
    }
}

/* Returns 1 when the table at idx encodes as an array (marked, or keys exactly 1..n). */
static int is_array(lua_State *L, int idx, lua_Integer *len)
{
    size_t nkeys = 0;
    int marked = 0;

    *len = (lua_Integer)lua_rawlen(L, idx);
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_arr_mt);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (marked) {
        return 1;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        nkeys++;
    }
    return *len > 0 && (size_t)*len == nkeys;
}

static void mpe_value(struct mpe *e, int idx, int depth)
{
    lua_State *L = e->L;
    size_t n;
    const char *str;
    lua_Integer len;

    luaL_checkstack(L, 4, "msgpack.encode: nested too deeply");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        msgpack_pack_nil(&e->pk);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) {
            msgpack_pack_true(&e->pk);
        } else {
            msgpack_pack_false(&e->pk);
        }
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            msgpack_pack_int64(&e->pk, (int64_t)lua_tointeger(L, idx));
        } else {
            msgpack_pack_double(&e->pk, (double)lua_tonumber(L, idx));
        }
        break;
    case LUA_TSTRING:
        str = lua_tolstring(L, idx, &n);
        msgpack_pack_str(&e->pk, n);
        msgpack_pack_str_body(&e->pk, str, n);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != &json_null_mark) {
            luaL_error(L, "msgpack.encode: a light userdata has no msgpack form");
        }
        msgpack_pack_nil(&e->pk);
        break;
    case LUA_TTABLE:
        if (depth > LUA_MP_MAX_DEPTH) {
            luaL_error(L, "msgpack.encode: nested more than %d levels (a table that holds "
                       "itself?)", LUA_MP_MAX_DEPTH);
        }
        if (is_array(L, idx, &len)) {
            msgpack_pack_array(&e->pk, (size_t)len);
            for (lua_Integer i = 1; i <= len; i++) {
                lua_rawgeti(L, idx, i);
                mpe_value(e, lua_gettop(L), depth + 1);
                lua_pop(L, 1);
            }
        } else {
            size_t count = 0;
            lua_pushnil(L);
            while (lua_next(L, idx) != 0) {
                lua_pop(L, 1);
                count++;
            }
            msgpack_pack_map(&e->pk, count);
            lua_pushnil(L);
            while (lua_next(L, idx) != 0) {
                int kt = lua_type(L, -2);
                if (kt != LUA_TSTRING && !lua_isinteger(L, -2)) {
                    luaL_error(L, "msgpack.encode: a map key is a %s, expected a string or "
                               "an integer", luaL_typename(L, -2));
                }
                mpe_value(e, lua_gettop(L) - 1, depth + 1);
                mpe_value(e, lua_gettop(L), depth + 1);
                lua_pop(L, 1);
            }
        }
        break;
    default:
        luaL_error(L, "msgpack.encode: a %s has no msgpack form", luaL_typename(L, idx));
    }
    mpe_room(e);
}

/* msgpack.encode(value) -> bytes (map entries in table order; junction.json.null is nil). */
static int lm_encode(lua_State *L)
{
    struct lua_vm *vm = lua__vm_of(L);
    struct mpe e;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    e.L = L;
    e.out = lua_newuserdatauv(L, sizeof(*e.out), 0);
    msgpack_sbuffer_init(&e.out->sb);
    e.out->failed = 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_sbuf_mt);
    lua_setmetatable(L, 2);
    msgpack_packer_init(&e.pk, e.out, mpe_write);
    e.cap = vm->limit > vm->used ? vm->limit - vm->used : 0;
    mpe_value(&e, 1, 0);
    lua_pushlstring(L, e.out->sb.data ? e.out->sb.data : "", e.out->sb.size);
    return 1;
}

static void mpd_value(lua_State *L, const msgpack_object *o, int depth)
{
    luaL_checkstack(L, 4, "msgpack.decode: nested too deeply");
    if (depth > LUA_MP_MAX_DEPTH) {
        luaL_error(L, "msgpack.decode: nested more than %d levels", LUA_MP_MAX_DEPTH);
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        lua_pushlightuserdata(L, (void *)&json_null_mark);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)LUA_MAXINTEGER) {
            lua_pushnumber(L, (lua_Number)o->via.u64);
        } else {
            lua_pushinteger(L, (lua_Integer)o->via.u64);
        }
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, (lua_Number)o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.size ? o->via.bin.ptr : "", o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        lua_createtable(L, (int)o->via.array.size, 0);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            mpd_value(L, &o->via.array.ptr[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_arr_mt);
        lua_setmetatable(L, -2);
        break;
    case MSGPACK_OBJECT_MAP:
        lua_createtable(L, 0, (int)o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
                k->type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                luaL_error(L, "msgpack.decode: a map key that is not a string or an integer");
            }
            mpd_value(L, k, depth + 1);
            mpd_value(L, &o->via.map.ptr[i].val, depth + 1);
            lua_rawset(L, -3);
        }
        break;
    default:
        luaL_error(L, "msgpack.decode: an extension type has no Lua form");
    }
}

/* msgpack.decode(bytes) -> value, or nil and the reason. One object, nothing after it. */
static int lm_decode(lua_State *L)
{
    size_t n, off = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    msgpack_unpacked *u;

    lua_settop(L, 1);
    u = lua_newuserdatauv(L, sizeof(*u), 0);
    msgpack_unpacked_init(u);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_unpacked_mt);
    lua_setmetatable(L, 2);
    if (n == 0 || jn_msgpack_check(s, n) != 0 ||
        msgpack_unpack_next(u, s, n, &off) != MSGPACK_UNPACK_SUCCESS) {
        lua_pushnil(L);
        lua_pushfstring(L, "msgpack.decode: not msgpack (%d bytes)", (int)n);
        return 2;
    }
    if (off != n) {
        lua_pushnil(L);
        lua_pushfstring(L, "msgpack.decode: %d bytes after the first object", (int)(n - off));
        return 2;
    }
    mpd_value(L, &u->data, 0);
    return 1;
}

void lua__open_msgpack(lua_State *L)
{
    static const luaL_Reg mp[] = {{"encode", lm_encode}, {"decode", lm_decode}, {NULL, NULL}};
    static const luaL_Reg sbuf_fns[] = {{"__gc", sbuf_gc}, {NULL, NULL}};
    static const luaL_Reg unpacked_fns[] = {{"__gc", unpacked_gc}, {NULL, NULL}};

    lua__new_mt(L, &key_sbuf_mt, sbuf_fns, NULL);
    lua__new_mt(L, &key_unpacked_mt, unpacked_fns, NULL);
    luaL_newlib(L, mp);
}
