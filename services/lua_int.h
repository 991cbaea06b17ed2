/*
 * lua_int.h: what the lua service's files share (services/lua.c, lua_json.c, lua_hl7.c);
 * internal to them, declarations only.
 */
#ifndef JN_LUA_INT_H
#define JN_LUA_INT_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

/* One Lua state and what its hook and allocator need. */
struct lua_vm {
    lua_State *L;
    size_t used, limit;       /* bytes the state holds; max_memory */
    int refused;              /* the last growth was refused; Lua may retry it after a GC */
    const void *ref_ptr;      /* that request, to know the retry */
    size_t ref_osize, ref_nsize;
    int over_mem, over_instr; /* budgets broken during the current call */
    long long max_instr;
    char where[160];          /* where the instruction budget ran out */
    int process_ref;
    const char *require_dir;  /* borrowed from the conf; NULL: require is off */
    const char *log_prefix;   /* borrowed */
    const char *cur_id;       /* the message being processed, for log lines */
};

/* The state's struct lua_vm (its allocator's userdata). */
static inline struct lua_vm *lua__vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* A metatable in the registry under key, with the functions in fns, __index = a table of
 * methods (or the function index), and __metatable so scripts cannot change it. */
static inline void lua__new_mt(lua_State *L, const void *key, const luaL_Reg *fns,
                               const luaL_Reg *methods)
{
    lua_createtable(L, 0, 4);
    if (fns != NULL) {
        luaL_setfuncs(L, fns, 0);
    }
    if (methods != NULL) {
        lua_createtable(L, 0, 4);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Each pushes its junction.<name> table and registers the metatables its values use; they run
 * inside the protected setup, so they may raise. lua__open_msgpack uses json's array
 * metatable: call lua__open_json first. */
void lua__open_json(lua_State *L);
void lua__open_msgpack(lua_State *L);
void lua__open_hl7(lua_State *L);

#endif
