/*
 * lua: a transform written in Lua 5.4, sandboxed and on a budget.
 *
 *   services:
 *     enrich:
 *       type: lua
 *       script: scripts/enrich.lua     # or inline: source: |
 *       max_instructions: 10000000     # per message
 *       max_memory: 64MiB              # the whole Lua state
 *
 * The script defines process(msg). msg.payload is a string, msg.headers a table whose lookups
 * and assignments ignore the case of the name (a header sent more than once is a list of its
 * values), msg.id and msg.channel are strings. It returns the message (changed in place or a
 * new table with a payload), a list of such tables (a split), or nil (the message is dropped:
 * `filtered` in the action log); error("why") dead-letters it with that reason, any other
 * runtime error with the Lua traceback. Only the table passed in keeps the message's id; new
 * tables become new messages with ids of their own. Headers leave in the order they arrived,
 * then the new ones sorted by name.
 *
 * Modelled on Redis's EVAL sandbox and its script time limit (a count hook, a state per
 * server), Fluent Bit's Lua filter (one function per record) and Mirth's JavaScript
 * transformers for what the helpers offer.
 *
 * Files: this one is the service (the sandbox, the state, one message); junction.json and
 * junction.msgpack are in lua_json.c, junction.hl7 in lua_hl7.c; lua_int.h is what they share.
 *
 * Sandbox: a state of our own with only base (without dofile, loadfile, collectgarbage; load
 * takes text chunks only; setmetatable refuses __gc, so no script code runs in the collector),
 * string, table, math, utf8 and os.time/clock/date. No io, no debug, no coroutine (a coroutine
 * would get a fresh instruction count). require loads name.lua from allow_require only, and
 * "junction" (the helpers, also the global `junction`).
 *
 * Budgets: a count hook raises an error after max_instructions VM instructions and then after
 * every instruction, so pcall in the script cannot hold on to it; the allocator refuses to
 * grow the state past max_memory (a refusal that Lua's emergency collection recovers from is
 * no breach). Past either, the message is dead-lettered with which budget and where, and the
 * state is closed and built again from the script, so nothing a runaway left behind stays.
 * Instructions inside one C function (a long string.rep, a pattern match over a large payload)
 * are not counted; their memory is.
 *
 * Threads: the routing worker is one thread unless a config has an http-lookup (then it runs
 * on as many threads as the lookups' concurrency, jn_worker_set_threads). An instance keeps up
 * to LUA_STATES lua_States, each under its own mutex: a call takes the first one free, so
 * there are as many states as calls ever ran at once, each reused (one per worker thread that
 * needed one); past LUA_STATES concurrent calls the next waits for a state, taken in turn.
 * State 0 is built at init (a script that does not load is a start error); the others the
 * first time they are needed, from the same text. Globals are a state's own: a script cannot
 * count on one message seeing what another left. The interface's promise that transform does
 * not change svc holds for what it can see (svc->state points at the same states). Every Lua
 * API call that can raise runs inside lua_pcall; memory the C side holds across such calls is
 * in a userdata with __gc, or in the call record the caller releases.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "jn_buf.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "lua_int.h"

struct lua_conf {
    char *script;
    char *source;
    long long max_instructions;
    unsigned long long max_memory;
    char *allow_require;
};

/* States one instance may hold (see Threads above): the routing worker's thread count is at
 * most a service's `parallel`, so 32 covers the usual; more threads share them. */
#define LUA_STATES 32

struct lua_slot {
    pthread_mutex_t lock;
    struct lua_vm vm; /* L == NULL: not built yet, or a rebuild failed (tried again) */
};

struct lua_state {
    struct lua_slot slots[LUA_STATES];
    int nlocks;              /* slots whose mutex was initialised */
    atomic_uint next;        /* which slot a call waits for when all are taken */
    char *code; /* the script's text, read once at init, so a rebuild runs the same code */
    size_t code_len;
    char chunk[300]; /* "@/path/x.lua" or "=source" */
};

/* Registry keys: addresses of these (the values are never used). The helpers' own are in
 * lua_json.c and lua_hl7.c. */
static const char key_hdr_mt = 'h', key_user_err = 'e', key_loaded = 'r', key_junction = 'J';

static const struct jn_opt lua_opts[] = {
    JN_OPT_PATH("script", NULL, 0, struct lua_conf, script,
                "A Lua 5.4 file that defines process(msg) (relative to the config file's "
                "folder); read once at start. Set this or source"),
    JN_OPT_STR("source", NULL, 0, struct lua_conf, source,
               "The script inline (a YAML block, `source: |`); errors name it `source:LINE`"),
    JN_OPT_INT("max_instructions", "10000000", 1000, INT_MAX, 0, struct lua_conf,
               max_instructions,
               "Lua VM instructions one message may take; past it the message is "
               "dead-lettered and the state rebuilt"),
    JN_OPT_SIZE("max_memory", "64MiB", 256 * 1024, 1ULL << 40, 0, struct lua_conf, max_memory,
                "Memory the Lua state may hold (script, globals and the message being "
                "processed); past it the message is dead-lettered and the state rebuilt"),
    JN_OPT_PATH("allow_require", NULL, 0, struct lua_conf, allow_require,
                "A folder whose NAME.lua files `require \"NAME\"` may load (a.b is a/b.lua); "
                "unset, require loads only \"junction\""),
    JN_OPT_END
};

/* ---- the state's allocator and hook ---- */

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_vm *vm = ud;
    size_t old = ptr ? osize : 0;
    void *p;

    if (nsize == 0) {
        jn_free(ptr);
        vm->used -= old;
        return NULL;
    }
    if (vm->refused) {
        /* Lua retries a refused request once, after an emergency collection (only frees run
         * in between); any other request means the refusal stood and an error was raised. */
        int retry = ptr == vm->ref_ptr && osize == vm->ref_osize && nsize == vm->ref_nsize;
        vm->refused = 0;
        if (!retry) {
            vm->over_mem = 1;
        } else if (nsize > old && nsize - old > vm->limit - vm->used) {
            vm->over_mem = 1; /* the retry fails too */
            return NULL;
        }
    }
    if (nsize > old && nsize - old > vm->limit - vm->used) {
        vm->refused = 1;
        vm->ref_ptr = ptr;
        vm->ref_osize = osize;
        vm->ref_nsize = nsize;
        return NULL;
    }
    p = jn_realloc(ptr, nsize);
    if (p != NULL) {
        vm->used = vm->used - old + nsize;
    }
    return p;
}

static void vm_hook(lua_State *L, lua_Debug *ar)
{
    struct lua_vm *vm = lua__vm_of(L);

    if (!vm->over_instr) {
        vm->over_instr = 1;
        vm->where[0] = '\0';
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
            snprintf(vm->where, sizeof(vm->where), " at %s:%d", ar->short_src, ar->currentline);
        }
        /* From now on every instruction fails, so a pcall in the script cannot go on. */
        lua_sethook(L, vm_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "max_instructions (%lld) exceeded", vm->max_instr);
}

/* ---- the sandbox's base functions ---- */

/* error(): the standard one, but the value is remembered so the message handler can tell a
 * reason the script gave from a runtime error (which gets a traceback). */
static int sb_error(lua_State *L)
{
    int level = (int)luaL_optinteger(L, 2, 1);

    lua_settop(L, 1);
    if (lua_type(L, 1) == LUA_TSTRING && level > 0) {
        luaL_where(L, level);
        lua_pushvalue(L, 1);
        lua_concat(L, 2);
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_user_err);
    return lua_error(L);
}

/* load(chunk [, name [, mode [, env]]]): text only, whatever mode says. */
static int sb_load(lua_State *L)
{
    int n = lua_gettop(L);

    if (n < 3) {
        lua_settop(L, 3);
    }
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int sb_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) {
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed here");
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* The arguments as one string, separated by spaces (print and junction.log.*). */
static const char *sb_join(lua_State *L, int first)
{
    luaL_Buffer b;
    int n = lua_gettop(L);

    luaL_buffinit(L, &b);
    for (int i = first; i <= n; i++) {
        luaL_tolstring(L, i, NULL);
        if (i > first) {
            luaL_addchar(&b, ' ');
        }
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static int sb_log(lua_State *L, int level)
{
    struct lua_vm *vm = lua__vm_of(L);
    const char *s = sb_join(L, 1);

    if (vm->cur_id && vm->cur_id[0]) {
        jn_log_p(level, vm->log_prefix, "msg=%s %s", vm->cur_id, s);
    } else {
        jn_log_p(level, vm->log_prefix, "%s", s);
    }
    return 0;
}

static int sb_log_info(lua_State *L)
{
    return sb_log(L, JN_LOG_INFO);
}

static int sb_log_warn(lua_State *L)
{
    return sb_log(L, JN_LOG_WARN);
}

static int sb_log_debug(lua_State *L)
{
    return sb_log(L, JN_LOG_DEBUG);
}

static int sb_time_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)jn_now_us() / 1e6);
    return 1;
}

/* require(name): "junction", or name.lua from allow_require (a.b is a/b.lua), run once. */
static int sb_require(lua_State *L)
{
    struct lua_vm *vm = lua__vm_of(L);
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    const char *path;
    struct stat st;
    char *data;
    FILE *f;
    size_t got;

    lua_settop(L, 1);
    if (strcmp(name, "junction") == 0) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &key_junction);
        return 1;
    }
    if (vm->require_dir == NULL) {
        return luaL_error(L, "require '%s': only \"junction\" can be required (set "
                          "allow_require to a folder of modules)", name);
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int dot = c == '.';
        if (!(dot || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')) || (dot && (i == 0 || i + 1 == n || name[i + 1] == '.'))) {
            return luaL_error(L, "require '%s': a module name is letters, digits and _ in "
                              "parts separated by single dots", name);
        }
    }
    if (n == 0 || n > 200) {
        return luaL_error(L, "require: a module name has 1 to 200 characters");
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_loaded);          /* 2 */
    if (lua_getfield(L, 2, name) != LUA_TNIL) {
        return 1;
    }
    lua_pop(L, 1);
    lua_pushstring(L, vm->require_dir);
    lua_pushliteral(L, "/");
    luaL_gsub(L, name, ".", "/");
    lua_pushliteral(L, ".lua");
    lua_concat(L, 4);                                        /* 3: the path */
    path = lua_tostring(L, 3);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        return luaL_error(L, "require '%s': no module %s in allow_require%s%s", name, path,
                          errno ? ": " : "", errno ? strerror(errno) : "");
    }
    if ((unsigned long long)st.st_size > vm->limit) {
        return luaL_error(L, "require '%s': %s is larger than max_memory", name, path);
    }
    /* The buffer first: nothing may raise while the file is open. */
    data = lua_newuserdatauv(L, (size_t)st.st_size + 1, 0); /* 4 */
    f = fopen(path, "rb");
    if (f == NULL) {
        return luaL_error(L, "require '%s': %s: %s", name, path, strerror(errno));
    }
    got = fread(data, 1, (size_t)st.st_size, f);
    fclose(f);
    lua_pushfstring(L, "@%s", path);                        /* 5 */
    if (luaL_loadbufferx(L, data, got, lua_tostring(L, 5), "t") != LUA_OK) {
        return lua_error(L);
    }
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

/* ---- headers: a table whose lookups ignore case ---- */

/* Pushes the key of t (at idx) equal to name without regard to case, or nothing: 1 or 0. */
static int hdr_find(lua_State *L, int idx, const char *name)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING && strcasecmp(lua_tostring(L, -1), name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int hdr_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING && hdr_find(L, 1, lua_tostring(L, 2))) {
        lua_rawget(L, 1);
        return 1;
    }
    lua_pushnil(L);
    return 1;
}

static int hdr_newindex(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING) {
        return luaL_error(L, "headers: a header name is a string, not a %s",
                          luaL_typename(L, 2));
    }
    if (hdr_find(L, 1, lua_tostring(L, 2))) {
        lua_replace(L, 2);
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}
/* ---- the state ---- */

static void open_junction(lua_State *L)
{
    static const luaL_Reg log[] = {
        {"info", sb_log_info}, {"warn", sb_log_warn}, {"debug", sb_log_debug}, {NULL, NULL}};
    static const luaL_Reg tm[] = {{"now", sb_time_now}, {NULL, NULL}};
    static const luaL_Reg hdr_fns[] = {
        {"__index", hdr_index}, {"__newindex", hdr_newindex}, {NULL, NULL}};

    lua__new_mt(L, &key_hdr_mt, hdr_fns, NULL);
    lua_createtable(L, 0, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_loaded);

    lua_createtable(L, 0, 4);
    lua__open_json(L);
    lua_setfield(L, -2, "json");
    lua__open_hl7(L);
    lua_setfield(L, -2, "hl7");
    lua__open_msgpack(L);
    lua_setfield(L, -2, "msgpack");
    luaL_newlib(L, log);
    lua_setfield(L, -2, "log");
    luaL_newlib(L, tm);
    lua_setfield(L, -2, "time");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_junction);
    lua_setglobal(L, "junction");
}

/* Message handler: a reason the script gave with error() as it is; anything else with a
 * traceback. */
static int vm_msgh(lua_State *L)
{
    const char *msg;

    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_user_err);
    if (lua_rawequal(L, 1, -1)) {
        lua_pop(L, 1);
        if (lua_type(L, 1) != LUA_TSTRING) {
            lua_pushfstring(L, "error(%s)", luaL_typename(L, 1));
        }
        return 1;
    }
    lua_pop(L, 1);
    msg = lua_tostring(L, 1);
    if (msg == NULL) {
        msg = lua_pushfstring(L, "(the error is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

struct vm_src {
    const char *code;
    size_t len;
    const char *chunk;
    int compile_failed;
};

/* Protected: builds the sandbox, compiles and runs the script, finds process. */
static int vm_setup(lua_State *L)
{
    struct lua_vm *vm = lua__vm_of(L);
    struct vm_src *src = lua_touserdata(L, 1);
    static const char *const drop[] = {"dofile", "loadfile", "collectgarbage", NULL};
    static const char *const os_keep[] = {"time", "clock", "date", NULL};
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base}, {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};

    lua_settop(L, 0);
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_createtable(L, 0, 3);
    for (size_t i = 0; os_keep[i]; i++) {
        lua_getfield(L, -2, os_keep[i]);
        lua_setfield(L, -2, os_keep[i]);
    }
    lua_setglobal(L, "os");
    lua_pop(L, 1);
    for (size_t i = 0; drop[i]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, drop[i]);
    }
    lua_getglobal(L, "load");
    lua_pushcclosure(L, sb_load, 1);
    lua_setglobal(L, "load");
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, sb_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, sb_error);
    lua_setglobal(L, "error");
    lua_pushcfunction(L, sb_log_info);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, sb_require);
    lua_setglobal(L, "require");
    open_junction(L);

    lua_pushcfunction(L, vm_msgh);
    if (luaL_loadbufferx(L, src->code, src->len, src->chunk, "t") != LUA_OK) {
        src->compile_failed = 1;
        return lua_error(L);
    }
    if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
        return lua_error(L);
    }
    if (lua_getglobal(L, "process") != LUA_TFUNCTION) {
        return luaL_error(L, "the script defines no function process(msg) (process is %s)",
                          luaL_typename(L, -1));
    }
    vm->process_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void vm_close(struct lua_vm *vm)
{
    if (vm->L != NULL) {
        lua_close(vm->L);
        vm->L = NULL;
    }
}

/* Appends n bytes of p to buf (cap bytes, NUL-terminated), as far as they fit. */
static void put(char *buf, size_t cap, size_t *w, const char *p, size_t n)
{
    if (*w + n >= cap) {
        n = cap - 1 - *w;
    }
    memcpy(buf + *w, p, n);
    *w += n;
    buf[*w] = '\0';
}

/* Copies the error on top of L into buf as one line: "why (traceback: a; b)", without the C
 * frames that say nothing. */
static void vm_reason(lua_State *L, char *buf, size_t cap)
{
    const char *s = lua_tostring(L, -1), *nl;
    size_t w = 0;
    int frames = -1; /* -1: before the traceback */

    buf[0] = '\0';
    if (s == NULL) {
        s = "(an error that is not a string)";
    }
    for (;; s = nl + 1) {
        size_t n;
        nl = strchr(s, '\n');
        n = nl ? (size_t)(nl - s) : strlen(s);
        while (n > 0 && (*s == '\t' || *s == ' ')) {
            s++;
            n--;
        }
        if (frames < 0 && n == 16 && strncmp(s, "stack traceback:", 16) == 0) {
            frames = 0;
        } else if (frames >= 0) {
            if (n > 0 && !(n == 9 && strncmp(s, "[C]: in ?", 9) == 0)) {
                const char *sep = frames ? "; " : " (traceback: ";
                frames++;
                put(buf, cap, &w, sep, strlen(sep));
                put(buf, cap, &w, s, n);
            }
        } else {
            put(buf, cap, &w, w ? " " : "", w ? 1 : 0);
            put(buf, cap, &w, s, n);
        }
        if (nl == NULL) {
            break;
        }
    }
    if (frames > 0) {
        put(buf, cap, &w, ")", 1);
    }
}

/* A new state for the script: 0, or JN_EINVAL with the reason (*compile set when the script
 * did not compile), JN_ENOMEM. */
static int vm_open(struct lua_vm *vm, const struct lua_conf *c, const char *code, size_t len,
                   const char *chunk, const char *log_prefix, int *compile, struct jn_err *err)
{
    struct vm_src src = {code, len, chunk, 0};
    char why[JN_ERR_MSG_MAX];
    int status;

    memset(vm, 0, sizeof(*vm));
    vm->limit = (size_t)c->max_memory;
    vm->max_instr = c->max_instructions;
    vm->require_dir = c->allow_require && c->allow_require[0] ? c->allow_require : NULL;
    vm->log_prefix = log_prefix;
    vm->process_ref = LUA_NOREF;
    vm->L = lua_newstate(vm_alloc, vm);
    if (vm->L == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory creating the Lua state");
    }
    lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, (int)vm->max_instr);
    lua_pushcfunction(vm->L, vm_setup);
    lua_pushlightuserdata(vm->L, &src);
    status = lua_pcall(vm->L, 1, 0, 0);
    lua_sethook(vm->L, NULL, 0, 0);
    if (vm->refused) {
        vm->over_mem = 1;
    }
    if (status != LUA_OK) {
        vm_reason(vm->L, why, sizeof(why));
        if (vm->over_mem) {
            snprintf(why, sizeof(why), "max_memory (%llu bytes) exceeded while loading the "
                     "script", c->max_memory);
        } else if (vm->over_instr) {
            snprintf(why, sizeof(why), "max_instructions (%lld) exceeded while loading the "
                     "script%s", c->max_instructions, vm->where);
        }
        if (compile) {
            *compile = src.compile_failed;
        }
        vm_close(vm);
        return jn_err_set(err, status == LUA_ERRMEM && !vm->over_mem ? JN_ENOMEM : JN_EINVAL,
                          "%s", why);
    }
    lua_settop(vm->L, 0);
    return 0;
}

/* Reads a whole file (at most max bytes) into *out (jn_malloc'd, NUL-terminated). */
static int read_file(const char *path, size_t max, char **out, size_t *len, struct jn_err *err)
{
    FILE *f = fopen(path, "rb");
    struct jn_buf b = JN_BUF_INIT;
    char chunk[8192];
    size_t n;

    if (f == NULL) {
        return jn_err_set(err, JN_EIO, "cannot read script %s: %s", path, strerror(errno));
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        int big = b.len + n > max;
        if (big || jn_buf_append(&b, chunk, n) != 0) {
            fclose(f);
            jn_buf_reset(&b);
            return big ? jn_err_set(err, JN_EINVAL, "script %s is larger than max_memory", path)
                       : jn_err_set(err, JN_ENOMEM, "out of memory reading script %s", path);
        }
    }
    if (ferror(f)) {
        fclose(f);
        jn_buf_reset(&b);
        return jn_err_set(err, JN_EIO, "cannot read script %s: %s", path, strerror(errno));
    }
    fclose(f);
    *len = b.len;
    *out = b.p ? jn_buf_steal(&b) : jn_strdup("");
    return *out ? 0 : jn_err_set(err, JN_ENOMEM, "out of memory");
}

static void chunk_name(const struct lua_conf *c, char *buf, size_t n)
{
    if (c->script && c->script[0]) {
        snprintf(buf, n, "@%s", c->script);
    } else {
        snprintf(buf, n, "=source");
    }
}

/* At load (junction check and run): the script must compile, run and define process. */
static int lua_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct lua_conf *c = conf;
    int has_script = c->script && c->script[0], has_source = c->source != NULL;
    const struct jn_pos *at = jn_node_pos(node, has_script ? "script" : "source");
    struct lua_vm vm;
    struct jn_err err;
    char *code = NULL;
    size_t len = 0;
    char chunk[300];
    int compile = 0;

    if (has_script == has_source) {
        jn_diag_add(d, node ? &node->pos : NULL, "lua: %s", has_script
                    ? "set script or source, not both"
                    : "expected script (a .lua file) or source (the script inline)");
        return 1;
    }
    jn_err_clear(&err);
    if (has_script && read_file(c->script, (size_t)c->max_memory, &code, &len, &err) != 0) {
        jn_diag_add(d, at, "lua: %s", err.msg);
        return 1;
    }
    chunk_name(c, chunk, sizeof(chunk));
    if (vm_open(&vm, c, has_script ? code : c->source, has_script ? len : strlen(c->source),
                chunk, "lua (check)", &compile, &err) != 0) {
        jn_diag_add(d, at, "lua: %s%s", compile ? "" : "loading the script: ", err.msg);
        jn_free(code);
        return 1;
    }
    vm_close(&vm);
    jn_free(code);
    return 0;
}

static void lua_destroy(struct jn_service *svc)
{
    struct lua_state *st = svc->state;

    if (st == NULL) {
        return;
    }
    for (int i = 0; i < st->nlocks; i++) {
        vm_close(&st->slots[i].vm);
        pthread_mutex_destroy(&st->slots[i].lock);
    }
    jn_free(st->code);
    jn_free(st);
    svc->state = NULL;
}

static int lua_init(struct jn_service *svc, struct jn_err *err)
{
    const struct lua_conf *c = svc->conf;
    struct lua_state *st = jn_calloc(1, sizeof(*st));
    int rc;

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    svc->state = st;
    for (; st->nlocks < LUA_STATES; st->nlocks++) {
        if (pthread_mutex_init(&st->slots[st->nlocks].lock, NULL) != 0) {
            lua_destroy(svc);
            return jn_err_set(err, JN_ENOMEM, "cannot create a mutex");
        }
    }
    atomic_init(&st->next, 0);
    if (c->script && c->script[0]) {
        rc = read_file(c->script, (size_t)c->max_memory, &st->code, &st->code_len, err);
    } else {
        st->code = jn_strdup(c->source ? c->source : "");
        st->code_len = c->source ? strlen(c->source) : 0;
        rc = st->code ? 0 : jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    chunk_name(c, st->chunk, sizeof(st->chunk));
    if (rc == 0) {
        rc = vm_open(&st->slots[0].vm, c, st->code, st->code_len, st->chunk, svc->log_prefix,
                     NULL, err);
    }
    if (rc != 0) {
        lua_destroy(svc);
    }
    return rc;
}

/* ---- one message ---- */

struct lua_call {
    struct lua_vm *vm;
    struct jn_msg *in;
    struct jn_msg_list *out;
    struct jn_msg *building; /* released by the caller when a Lua error cuts in */
    size_t out_bytes;
    int id_used;
    int script_failed;
    int rc; /* a C-side failure (JN_ENOMEM) */
    char reason[JN_ERR_MSG_MAX];
};

static void push_msg(lua_State *L, const struct jn_msg *in)
{
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, (const char *)in->payload, in->len);
    lua_setfield(L, -2, "payload");
    lua_pushstring(L, in->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, in->channel ? in->channel : "");
    lua_setfield(L, -2, "channel");
    lua_createtable(L, 0, (int)in->nhdrs);
    for (size_t i = 0; i < in->nhdrs; i++) {
        size_t same = 0, seen = 0;
        for (size_t j = 0; j < in->nhdrs; j++) {
            if (strcasecmp(in->hdrs[i].name, in->hdrs[j].name) == 0) {
                seen += j < i;
                same++;
            }
        }
        if (seen > 0) {
            continue; /* handled at its first occurrence */
        }
        if (same == 1) {
            lua_pushstring(L, in->hdrs[i].value);
        } else {
            lua_Integer k = 0;
            lua_createtable(L, (int)same, 0);
            for (size_t j = i; j < in->nhdrs; j++) {
                if (strcasecmp(in->hdrs[i].name, in->hdrs[j].name) == 0) {
                    lua_pushstring(L, in->hdrs[j].value);
                    lua_rawseti(L, -2, ++k);
                }
            }
        }
        lua_setfield(L, -2, in->hdrs[i].name);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hdr_mt);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "headers");
}

static int is_token(const char *s, size_t n)
{
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL))) {
            return 0;
        }
    }
    return 1;
}

/* Adds the header value at idx (a string or a number) to c->building. */
static void add_header(lua_State *L, struct lua_call *c, const char *name, int idx)
{
    size_t n;
    const char *v;

    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER) {
        luaL_error(L, "header '%s' is a %s, expected a string or a list of strings", name,
                   luaL_typename(L, idx));
    }
    lua_pushvalue(L, idx); /* tolstring on a copy: a number key of a list stays a number */
    v = lua_tolstring(L, -1, &n);
    if (memchr(v, '\r', n) || memchr(v, '\n', n) || memchr(v, '\0', n)) {
        luaL_error(L, "header '%s': a value cannot hold CR, LF or NUL", name);
    }
    if (jn_msg_header_addn(c->building, name, v, n) != 0) {
        c->rc = JN_ENOMEM;
        luaL_error(L, "out of memory");
    }
    lua_pop(L, 1);
}

struct hdr_key {
    const char *s;
    size_t n;
    size_t rank; /* position among the input's headers, or SIZE_MAX for a new one */
};

static int hdr_key_cmp(const void *a, const void *b)
{
    const struct hdr_key *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank < y->rank ? -1 : 1;
    }
    return strcmp(x->s, y->s);
}

/* The headers table at idx onto c->building: the input's names first, in their order, then
 * the others sorted. */
static void emit_headers(lua_State *L, struct lua_call *c, int idx)
{
    size_t n = 0, k = 0;
    struct hdr_key *keys;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        n++;
    }
    if (n == 0) {
        return;
    }
    keys = lua_newuserdatauv(L, n * sizeof(*keys), 0);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (k == n) {
            luaL_error(L, "headers: the table changed while it was read");
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "headers: a key is a %s, expected a header name",
                       luaL_typename(L, -1));
        }
        keys[k].s = lua_tolstring(L, -1, &keys[k].n);
        if (!is_token(keys[k].s, keys[k].n)) {
            luaL_error(L, "headers: '%s' is not a valid header name (letters, digits and "
                       "!#$%%&'*+-.^_`|~)", keys[k].s);
        }
        keys[k].rank = SIZE_MAX;
        for (size_t i = 0; i < c->in->nhdrs; i++) {
            if (strcmp(c->in->hdrs[i].name, keys[k].s) == 0) {
                keys[k].rank = i;
                break;
            }
        }
        k++;
    }
    qsort(keys, k, sizeof(*keys), hdr_key_cmp);
    for (size_t i = 0; i < k; i++) {
        lua_pushlstring(L, keys[i].s, keys[i].n);
        if (lua_rawget(L, idx) == LUA_TTABLE) {
            int t = lua_gettop(L);
            lua_Integer len = (lua_Integer)lua_rawlen(L, t), count = 0;
            lua_pushnil(L);
            while (lua_next(L, t) != 0) {
                lua_pop(L, 1);
                count++;
            }
            if (count != len) {
                luaL_error(L, "header '%s' is a table that is not a list of strings",
                           keys[i].s);
            }
            for (lua_Integer j = 1; j <= len; j++) {
                lua_rawgeti(L, t, j);
                add_header(L, c, keys[i].s, lua_gettop(L));
                lua_pop(L, 1);
            }
        } else {
            add_header(L, c, keys[i].s, lua_gettop(L));
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* One message table (at idx) becomes an output; what says where it came from. */
static void emit_msg(lua_State *L, struct lua_call *c, int idx, int msgidx, const char *what)
{
    size_t len;
    const char *p;
    int t;

    idx = lua_absindex(L, idx);
    lua_pushliteral(L, "payload");
    if (lua_rawget(L, idx) != LUA_TSTRING) {
        luaL_error(L, "%s: payload is a %s, expected a string", what, luaL_typename(L, -1));
    }
    p = lua_tolstring(L, -1, &len);
    c->out_bytes += len;
    if (c->out_bytes > c->vm->limit) {
        luaL_error(L, "%s: the outputs total more than max_memory", what);
    }
    c->building = jn_msg_new(c->in->channel, p, len);
    if (c->building == NULL) {
        c->rc = JN_ENOMEM;
        luaL_error(L, "out of memory");
    }
    lua_pop(L, 1);
    c->building->recv_us = c->in->recv_us;
    if (!c->id_used && lua_rawequal(L, idx, msgidx)) {
        memcpy(c->building->id, c->in->id, sizeof(c->building->id));
        c->id_used = 1;
    }
    lua_pushliteral(L, "headers");
    t = lua_rawget(L, idx);
    if (t == LUA_TTABLE) {
        emit_headers(L, c, lua_gettop(L));
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: headers is a %s, expected a table", what, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    {
        struct jn_msg *m = c->building;
        c->building = NULL;
        if (jn_msg_list_push(c->out, m) != 0) {
            c->rc = JN_ENOMEM;
            luaL_error(L, "out of memory");
        }
    }
}

/* Protected: runs process(msg) and turns what it returned into c->out. */
static int vm_call(lua_State *L)
{
    struct lua_call *c = lua_touserdata(L, 1);
    int t;

    lua_settop(L, 0);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_user_err);
    lua_pushcfunction(L, vm_msgh);                          /* 1 */
    push_msg(L, c->in);                                     /* 2: kept, to know it again */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->vm->process_ref); /* 3 */
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) {                  /* the result at 3 */
        vm_reason(L, c->reason, sizeof(c->reason));
        c->script_failed = 1;
        return 0;
    }
    t = lua_type(L, 3);
    if (t == LUA_TNIL) {
        return 0; /* dropped */
    }
    if (t != LUA_TTABLE) {
        return luaL_error(L, "process(msg) returned a %s; expected the message, a new message "
                          "table, a list of them or nil", lua_typename(L, t));
    }
    lua_pushliteral(L, "payload");
    if (lua_rawget(L, 3) != LUA_TNIL) {
        lua_pop(L, 1);
        emit_msg(L, c, 3, 2, "the returned message");
        return 0;
    }
    lua_pop(L, 1);
    {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 3);
        char what[64];
        if (n == 0) {
            lua_pushnil(L);
            if (lua_next(L, 3) != 0) {
                return luaL_error(L, "process(msg) returned a table with no payload and no "
                                  "list of messages");
            }
            return 0; /* an empty list: dropped */
        }
        for (lua_Integer i = 1; i <= n; i++) {
            snprintf(what, sizeof(what), "item %lld of the returned list", (long long)i);
            if (lua_rawgeti(L, 3, i) != LUA_TTABLE) {
                return luaL_error(L, "%s is a %s, expected a message table", what,
                                  luaL_typename(L, -1));
            }
            emit_msg(L, c, -1, 2, what);
            lua_pop(L, 1);
        }
    }
    return 0;
}

static int lua_transform(const struct jn_service *svc, struct jn_msg *in,
                         struct jn_msg_list *out, struct jn_err *err)
{
    struct lua_state *st = svc->state;
    const struct lua_conf *c = svc->conf;
    struct lua_slot *slot = NULL;
    struct lua_vm *vm;
    struct lua_call call;
    struct jn_err e;
    int status, rc = 0;

    for (int i = 0; i < LUA_STATES && slot == NULL; i++) {
        if (pthread_mutex_trylock(&st->slots[i].lock) == 0) {
            slot = &st->slots[i];
        }
    }
    if (slot == NULL) {
        slot = &st->slots[atomic_fetch_add(&st->next, 1) % LUA_STATES];
        pthread_mutex_lock(&slot->lock);
    }
    vm = &slot->vm;
    if (vm->L == NULL) {
        jn_err_clear(&e);
        if (vm_open(vm, c, st->code, st->code_len, st->chunk, svc->log_prefix, NULL, &e) != 0) {
            pthread_mutex_unlock(&slot->lock);
            return jn_err_set(err, e.code ? e.code : JN_EINVAL,
                              "the script's state could not be rebuilt: %s", e.msg);
        }
    }
    memset(&call, 0, sizeof(call));
    call.vm = vm;
    call.in = in;
    call.out = out;
    vm->over_mem = vm->over_instr = vm->refused = 0;
    vm->cur_id = in->id;
    lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, (int)vm->max_instr);
    lua_pushcfunction(vm->L, vm_call);
    lua_pushlightuserdata(vm->L, &call);
    status = lua_pcall(vm->L, 1, 0, 0);
    lua_sethook(vm->L, NULL, 0, 0);
    if (vm->refused) {
        vm->over_mem = 1;
    }
    if (status != LUA_OK) {
        vm_reason(vm->L, call.reason, sizeof(call.reason));
    }
    lua_settop(vm->L, 0);
    vm->cur_id = NULL;
    jn_msg_unref(&call.building);
    if (vm->over_instr) {
        rc = jn_err_set(err, JN_EINVAL, "max_instructions (%lld) exceeded%s; the script's "
                        "state is rebuilt", c->max_instructions, vm->where);
    } else if (vm->over_mem) {
        rc = jn_err_set(err, JN_EINVAL, "max_memory (%llu bytes) exceeded; the script's state "
                        "is rebuilt", c->max_memory);
    } else if (call.rc != 0) {
        rc = jn_err_set(err, call.rc, "out of memory");
    } else if (status != LUA_OK || call.script_failed) {
        rc = jn_err_set(err, status == LUA_ERRMEM ? JN_ENOMEM : JN_EINVAL, "%s", call.reason);
    }
    if (vm->over_instr || vm->over_mem) {
        /* Whatever the runaway left in its globals goes; the next message meets the script as
         * it was loaded. A rebuild that fails is tried again at the next message. */
        jn_log_p(JN_LOG_WARN, svc->log_prefix, "msg=%s %s", in->id, err->msg);
        vm_close(vm);
        jn_err_clear(&e);
        if (vm_open(vm, c, st->code, st->code_len, st->chunk, svc->log_prefix, NULL, &e) != 0) {
            jn_log_p(JN_LOG_ERROR, svc->log_prefix, "rebuilding the script's state: %s",
                     e.msg);
        }
    }
    pthread_mutex_unlock(&slot->lock);
    return rc;
}

const struct jn_service_def jn_service_lua = {
    .name = "lua",
    .desc = "A Lua 5.4 script's process(msg): change, drop, split or dead-letter each message, "
            "sandboxed, with instruction and memory budgets (docs/services.md)",
    .opts = lua_opts,
    .conf_size = sizeof(struct lua_conf),
    .check = lua_check,
    .init = lua_init,
    .transform = lua_transform,
    .destroy = lua_destroy,
};
