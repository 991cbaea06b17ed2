/*
 * lua_hl7: junction.hl7, the HL7 v2 helper the lua service (services/lua.c) gives its scripts.
 *
 * hl7.parse(text) -> message object, or nil and the reason. h:get(path) -> the decoded value,
 * "" when empty, nil when absent; h:set(path, value): value is escaped (a string, a number, or
 * nil for empty); returns h. h:segments([id]) -> a list of {id=, index=} objects with get/set
 * by "field.comp" paths; tostring(h) gives the message's text. Paths are adapters/hl7.h's.
 *
 * Modelled on Mirth's JavaScript transformers for what the helpers offer. The message lives in
 * a userdata (its __gc frees it); a set builds the new text in C buffers, parses it and only
 * then swaps it in, with no Lua call that can raise while those buffers are held.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "hl7.h"
#include "jn_buf.h"
#include "lua_int.h"

/* Registry keys: addresses of these (the values are never used). */
static const char key_hl7_mt = 'l', key_seg_mt = 's';

/* ---- junction.hl7 ---- */

struct lhl7 {
    struct jn_hl7_msg *m;
};

static struct lhl7 *hl7_check(lua_State *L, int idx)
{
    struct lhl7 *h = lua_touserdata(L, idx);
    int ok = 0;

    if (h != NULL && lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hl7_mt);
        ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (!ok || h->m == NULL) {
        luaL_error(L, "expected an HL7 message from junction.hl7.parse (call it as h:get(...))");
    }
    return h;
}

static int hl7_gc(lua_State *L)
{
    struct lhl7 *h = lua_touserdata(L, 1);
    jn_hl7_free(h->m);
    h->m = NULL;
    return 0;
}

/* hl7.parse(text) -> message object, or nil and the reason. */
static int lh_parse(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    struct lhl7 *h;
    struct jn_err err;

    h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->m = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hl7_mt);
    lua_setmetatable(L, -2);
    jn_err_clear(&err);
    if (jn_hl7_parse(s, n, 0, &h->m, &err) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "hl7.parse: %s", err.msg[0] ? err.msg : "not an HL7 message");
        return 2;
    }
    return 1;
}

static void hl7_path(lua_State *L, int idx, struct jn_hl7_path *p)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    struct jn_err err;

    jn_err_clear(&err);
    if (jn_hl7_path_parse(s, n, p, &err) != 0) {
        luaL_error(L, "hl7: path '%s': %s", s, err.msg);
    }
}

/* h:get(path) -> the decoded value, "" when empty, nil when absent. */
static int lh_get(lua_State *L)
{
    struct lhl7 *h = hl7_check(L, 1);
    struct jn_hl7_path p;
    struct jn_hl7_span sp;
    luaL_Buffer b;
    char *o;

    hl7_path(L, 2, &p);
    if (jn_hl7_get(h->m, &p, &sp) != 1) {
        lua_pushnil(L);
        return 1;
    }
    o = luaL_buffinitsize(L, &b, sp.len + 1);
    luaL_pushresultsize(&b, jn_hl7_text(&h->m->d, &p, &sp, o));
    return 1;
}

/* h:set(path, value): value is escaped (a string, a number, or nil for empty); returns h. */
static int lh_set(lua_State *L)
{
    struct lhl7 *h = hl7_check(L, 1);
    struct jn_hl7_path p;
    struct jn_buf esc = JN_BUF_INIT;
    struct jn_err err;
    const char *v = "";
    size_t vlen = 0;
    int rc;

    hl7_path(L, 2, &p);
    if (!lua_isnoneornil(L, 3)) {
        if (lua_type(L, 3) != LUA_TSTRING && lua_type(L, 3) != LUA_TNUMBER) {
            return luaL_error(L, "hl7 set %s: the value is a %s, expected a string",
                              lua_tostring(L, 2), luaL_typename(L, 3));
        }
        v = lua_tolstring(L, 3, &vlen);
    }
    /* From here to the end no Lua call may raise while C buffers are held. */
    jn_err_clear(&err);
    rc = jn_hl7_escape(&h->m->d, v, vlen, &esc);
    if (rc != 0) {
        jn_err_set(&err, rc, "out of memory");
    } else {
        rc = jn_hl7_set_raw(&h->m, &p, esc.p ? esc.p : "", esc.len, 0, &err);
    }
    jn_buf_reset(&esc);
    if (rc != 0) {
        return luaL_error(L, "hl7 set %s: %s", lua_tostring(L, 2), err.msg);
    }
    lua_settop(L, 1);
    return 1;
}

static int lh_tostring(lua_State *L)
{
    struct lhl7 *h = hl7_check(L, 1);
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    for (size_t i = 0; i < h->m->nsegs; i++) {
        const struct jn_hl7_seg *s = &h->m->segs[i];
        luaL_addlstring(&b, s->text.p, s->text.len);
        luaL_addlstring(&b, s->eol.p, s->eol.len);
    }
    luaL_pushresult(&b);
    return 1;
}

/* h:segments([id]) -> a list of {id=, index=} objects with get/set by "field.comp" paths. */
static int lh_segments(lua_State *L)
{
    struct lhl7 *h = hl7_check(L, 1);
    const char *want = luaL_optstring(L, 2, NULL);
    lua_Integer k = 0;

    lua_settop(L, 2);
    lua_createtable(L, 0, 0); /* 3 */
    for (size_t i = 0; i < h->m->nsegs; i++) {
        const struct jn_hl7_seg *s = &h->m->segs[i];
        int occ = 0;
        if (want != NULL && strcmp(s->id, want) != 0) {
            continue;
        }
        for (size_t j = 0; j <= i; j++) {
            occ += strcmp(h->m->segs[j].id, s->id) == 0;
        }
        lua_createtable(L, 0, 3);
        lua_pushstring(L, s->id);
        lua_setfield(L, -2, "id");
        lua_pushinteger(L, occ);
        lua_setfield(L, -2, "index");
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "message");
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_seg_mt);
        lua_setmetatable(L, -2);
        lua_rawseti(L, 3, ++k);
    }
    return 1;
}

/* seg:get(p) / seg:set(p, v): the message's get/set of "ID[index]-p". */
static int seg_call(lua_State *L, lua_CFunction fn)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkstring(L, 2);
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "id");
    lua_getfield(L, 1, "index");
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isinteger(L, -1)) {
        return luaL_error(L, "expected a segment from h:segments() (call it as s:get(...))");
    }
    lua_pushfstring(L, "%s[%d]-%s", lua_tostring(L, -2), (int)lua_tointeger(L, -1),
                    lua_tostring(L, 2));
    lua_replace(L, 2);
    lua_pop(L, 2);
    lua_replace(L, 1);
    return fn(L);
}

static int seg_get(lua_State *L)
{
    return seg_call(L, lh_get);
}

static int seg_set(lua_State *L)
{
    return seg_call(L, lh_set);
}

void lua__open_hl7(lua_State *L)
{
    static const luaL_Reg hl7[] = {{"parse", lh_parse}, {NULL, NULL}};
    static const luaL_Reg hl7_fns[] = {
        {"__gc", hl7_gc}, {"__tostring", lh_tostring}, {NULL, NULL}};
    static const luaL_Reg hl7_methods[] = {{"get", lh_get}, {"set", lh_set},
                                           {"segments", lh_segments}, {"tostring", lh_tostring},
                                           {NULL, NULL}};
    static const luaL_Reg seg_methods[] = {{"get", seg_get}, {"set", seg_set}, {NULL, NULL}};

    lua__new_mt(L, &key_hl7_mt, hl7_fns, hl7_methods);
    lua__new_mt(L, &key_seg_mt, NULL, seg_methods);
    luaL_newlib(L, hl7);
}
