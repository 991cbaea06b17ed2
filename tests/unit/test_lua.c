/*
 * Unit tests for services/lua.c (`type: lua`).
 *
 * Each service is built as the config loader builds it (YAML -> option table -> check ->
 * init) and run on messages through its transform, as the router does. Checked: what process
 * can return (the message, a new one, a list, nil, error()), the case-insensitive headers, the
 * sandbox (each escape ends in an error with a reason and the next message still works), both
 * budgets and the rebuild after them, the junction helpers (json, hl7, require), load errors
 * at file:line, and random return values (never a crash, always a result or a reason).
 * Also prints two timings: a header-setting script per message next to set-header, and a
 * JSON decode+encode of 1 KB. And two calls at once on two threads (a state each).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jn_buf.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_service.h"
#include "jn_services.h"
#include "jn_test.h"
#include "jn_yaml.h"

#define IN_ID "01J9Z0000000000000000000AB"

struct fx {
    struct jn_diag diag;
    struct jn_node *root;
    struct jn_service svc;
    char name[8];
    int errs;
    int init_rc;
    int inited;
    struct jn_err err;
    char yaml[16384];
};

/* Loads a service of type `type` from yaml (the options of one block). */
static void fx_yaml(struct fx *f, const char *type, const char *yaml)
{
    static const char *const skip[] = {"type", NULL};
    const struct jn_service_def *def = jn_service_def_find(type);
    char what[64];

    memset(f, 0, sizeof(*f));
    jn_diag_init(&f->diag);
    strcpy(f->name, "x");
    f->svc.def = def;
    f->svc.name = f->name;
    snprintf(f->svc.log_prefix, sizeof(f->svc.log_prefix), "%s.x", type);
    f->root = jn_yaml_load_buf("t.yaml", yaml, strlen(yaml), &f->diag);
    if (f->root == NULL) {
        f->errs = 1;
        return;
    }
    f->svc.conf = jn_calloc(1, def->conf_size);
    snprintf(what, sizeof(what), "service 'x' (%s)", type);
    f->errs = jn_opt_parse(def->opts, f->root, f->svc.conf, what, 0, skip, f->root, &f->diag);
    if (f->errs == 0 && def->check) {
        f->errs += def->check(f->svc.conf, f->root, &f->diag);
    }
    if (f->errs == 0) {
        f->init_rc = def->init ? def->init(&f->svc, &f->err) : 0;
        f->inited = f->init_rc == 0;
    }
}

/* A lua service with src inline (as `source: |`) and the options in extra ("" or YAML lines). */
static void fx_lua(struct fx *f, const char *extra, const char *src)
{
    struct jn_buf b = JN_BUF_INIT;
    const char *p = src;

    jn_buf_printf(&b, "%ssource: |\n", extra);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        jn_buf_printf(&b, "  %.*s\n", (int)n, p);
        p += n + (nl != NULL);
    }
    fx_yaml(f, "lua", b.p);
    jn_buf_reset(&b);
}

static void fx_free(struct fx *f)
{
    if (f->inited && f->svc.def->destroy) {
        f->svc.def->destroy(&f->svc);
    }
    if (f->svc.conf) {
        jn_opt_free(f->svc.def->opts, f->svc.conf);
        jn_free(f->svc.conf);
    }
    jn_node_free(f->root);
    jn_diag_free(&f->diag);
}

static const char *fx_diag(const struct fx *f)
{
    return f->diag.n ? f->diag.msgs[0] : "";
}

static struct jn_msg *mk(const char *payload)
{
    struct jn_msg *m = jn_msg_new("orders-in", payload, strlen(payload));
    memcpy(m->id, IN_ID, JN_ID_LEN + 1);
    m->recv_us = 1700000000123456LL;
    return m;
}

/* Runs in through f; outputs in *l (cleared first by the caller). rc, reason in err. The
 * input is never changed. */
static int run_msg(struct fx *f, struct jn_msg *in, struct jn_msg_list *l, struct jn_err *err)
{
    struct jn_buf before = JN_BUF_INIT, after = JN_BUF_INIT;
    int rc;

    jn_err_clear(err);
    jn_msg_encode(in, &before);
    rc = f->svc.def->transform(&f->svc, in, l, err);
    jn_msg_encode(in, &after);
    CHECK(before.len == after.len && memcmp(before.p, after.p, before.len) == 0);
    CHECK(rc == 0 || err->msg[0] != '\0');
    jn_buf_reset(&before);
    jn_buf_reset(&after);
    return rc;
}

/* Runs payload; returns the one output's payload, "DROP", "N=<count>" for more, or
 * "ERR: <reason>" (static buffer). */
static const char *run1(struct fx *f, const char *payload)
{
    static char res[2048];
    struct jn_msg_list l = {0};
    struct jn_msg *in = mk(payload);
    struct jn_err err;
    int rc = run_msg(f, in, &l, &err);

    if (rc != 0) {
        snprintf(res, sizeof(res), "ERR: %s", err.msg);
    } else if (l.n == 0) {
        snprintf(res, sizeof(res), "DROP");
    } else if (l.n > 1) {
        snprintf(res, sizeof(res), "N=%zu", l.n);
    } else {
        snprintf(res, sizeof(res), "%.*s", (int)l.v[0]->len, (const char *)l.v[0]->payload);
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    return res;
}

static int has(const char *s, const char *sub)
{
    if (strstr(s, sub) == NULL) {
        fprintf(stderr, "  '%s' not in: %s\n", sub, s);
        return 0;
    }
    return 1;
}

/* ---- what process returns ---- */

static void test_pass_through(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in = mk("hello");
    struct jn_err err;

    jn_msg_header_add(in, "Content-Type", "text/plain");
    jn_msg_header_add(in, "X-Trace", "1");
    fx_lua(&f, "", "function process(msg) return msg end");
    CHECK_INT(f.init_rc, 0);
    CHECK_INT(run_msg(&f, in, &l, &err), 0);
    CHECK_INT(l.n, 1);
    if (l.n == 1) {
        CHECK_STR(l.v[0]->id, IN_ID);
        CHECK_STR(l.v[0]->channel, "orders-in");
        CHECK_INT(l.v[0]->recv_us, 1700000000123456LL);
        CHECK_INT(l.v[0]->len, 5);
        CHECK(memcmp(l.v[0]->payload, "hello", 5) == 0);
        CHECK_INT(l.v[0]->nhdrs, 2);
        CHECK_STR(l.v[0]->hdrs[0].name, "Content-Type");
        CHECK_STR(l.v[0]->hdrs[1].value, "1");
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);
}

static void test_headers(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in = mk("{}");
    struct jn_err err;

    jn_msg_header_add(in, "Content-Type", "application/json");
    jn_msg_header_add(in, "X-Debug", "on");
    jn_msg_header_add(in, "Via", "a");
    jn_msg_header_add(in, "via", "b");
    fx_lua(&f, "",
           "function process(msg)\n"
           "  local h = msg.headers\n"
           "  assert(h['content-type'] == 'application/json', 'ci lookup')\n"
           "  assert(h.CONTENT_TYPE == nil)\n"
           "  assert(type(h.VIA) == 'table' and h.VIA[1] == 'a' and h.VIA[2] == 'b')\n"
           "  h['CONTENT-TYPE'] = 'text/plain'\n"   /* replaces, keeps the original name */
           "  h['x-debug'] = nil\n"                  /* removes */
           "  h['X-New'] = 42\n"                     /* numbers become text */
           "  h['A-First'] = {'1', '2'}\n"           /* a list: one header per value */
           "  return msg\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    CHECK_INT(run_msg(&f, in, &l, &err), 0);
    CHECK_STR(err.msg, "");
    CHECK_INT(l.n, 1);
    if (l.n == 1) {
        struct jn_msg *o = l.v[0];
        /* The input's order (Content-Type, Via), then the new ones sorted. */
        CHECK_INT(o->nhdrs, 6);
        if (o->nhdrs == 6) {
            CHECK_STR(o->hdrs[0].name, "Content-Type");
            CHECK_STR(o->hdrs[0].value, "text/plain");
            CHECK_STR(o->hdrs[1].name, "Via");
            CHECK_STR(o->hdrs[1].value, "a");
            CHECK_STR(o->hdrs[2].value, "b");
            CHECK_STR(o->hdrs[3].name, "A-First");
            CHECK_STR(o->hdrs[4].value, "2");
            CHECK_STR(o->hdrs[5].name, "X-New");
            CHECK_STR(o->hdrs[5].value, "42");
        }
        CHECK(jn_msg_header_get(o, "X-Debug") == NULL);
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);

    /* Bad names and values are the script's error, named. */
    fx_lua(&f, "", "function process(m) m.headers['bad name'] = 'x' return m end");
    CHECK(has(run1(&f, "p"), "'bad name' is not a valid header name"));
    fx_free(&f);
    fx_lua(&f, "", "function process(m) m.headers.X = 'a\\r\\nInjected: 1' return m end");
    CHECK(has(run1(&f, "p"), "header 'X': a value cannot hold CR, LF or NUL"));
    fx_free(&f);
    fx_lua(&f, "", "function process(m) m.headers.X = true return m end");
    CHECK(has(run1(&f, "p"), "header 'X' is a boolean, expected a string"));
    fx_free(&f);
}

static void test_payload_drop_split(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in;
    struct jn_err err;

    fx_lua(&f, "", "function process(m) m.payload = m.payload:upper() .. '!' return m end");
    CHECK_STR(run1(&f, "abc"), "ABC!");
    fx_free(&f);

    /* Binary payloads pass intact (NUL bytes included). */
    fx_lua(&f, "", "function process(m) return {payload = m.payload .. '\\0z'} end");
    in = mk("a");
    CHECK_INT(run_msg(&f, in, &l, &err), 0);
    CHECK(l.n == 1 && l.v[0]->len == 3 && memcmp(l.v[0]->payload, "a\0z", 3) == 0);
    /* A new table is a new message: no id until the router gives one, no headers. */
    CHECK(l.n == 1 && l.v[0]->id[0] == '\0' && l.v[0]->nhdrs == 0);
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);

    fx_lua(&f, "", "function process(m) if m.payload == 'drop' then return nil end return m end");
    CHECK_STR(run1(&f, "drop"), "DROP");
    CHECK_STR(run1(&f, "keep"), "keep");
    fx_free(&f);
    fx_lua(&f, "", "function process(m) return {} end");
    CHECK_STR(run1(&f, "x"), "DROP");
    fx_free(&f);

    fx_lua(&f, "",
           "function process(m)\n"
           "  local out = {}\n"
           "  for part in m.payload:gmatch('[^,]+') do\n"
           "    out[#out + 1] = {payload = part, headers = {Part = part}}\n"
           "  end\n"
           "  m.payload = 'whole'\n"
           "  out[#out + 1] = m\n"
           "  return out\n"
           "end");
    in = mk("a,b,c");
    CHECK_INT(run_msg(&f, in, &l, &err), 0);
    CHECK_INT(l.n, 4);
    if (l.n == 4) {
        CHECK(l.v[0]->len == 1 && l.v[0]->payload[0] == 'a');
        CHECK_STR(jn_msg_header_get(l.v[2], "part"), "c");
        CHECK(l.v[0]->id[0] == '\0' && l.v[2]->id[0] == '\0');
        CHECK_STR(l.v[3]->id, IN_ID); /* only the table passed in keeps the id */
        CHECK(l.v[3]->len == 5 && memcmp(l.v[3]->payload, "whole", 5) == 0);
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);

    /* The same table twice: the id goes to the first only. */
    fx_lua(&f, "", "function process(m) return {m, m} end");
    in = mk("x");
    CHECK_INT(run_msg(&f, in, &l, &err), 0);
    CHECK(l.n == 2 && strcmp(l.v[0]->id, IN_ID) == 0 && l.v[1]->id[0] == '\0');
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);

    /* msg.id and msg.channel are readable. */
    fx_lua(&f, "", "function process(m) return {payload = m.id .. ' ' .. m.channel} end");
    CHECK_STR(run1(&f, "x"), IN_ID " orders-in");
    fx_free(&f);
}

static void test_errors(void)
{
    struct fx f;
    const char *r;

    fx_lua(&f, "", "function process(m)\n  if m.payload == 'bad' then error('no PID-3') end\n"
                   "  return m\nend");
    r = run1(&f, "bad");
    CHECK(has(r, "ERR: source:2: no PID-3"));
    CHECK(strstr(r, "traceback") == NULL);
    CHECK_STR(run1(&f, "good"), "good");
    fx_free(&f);

    /* error with level 0: exactly the reason. */
    fx_lua(&f, "", "function process(m) error('just this', 0) end");
    CHECK_STR(run1(&f, "x"), "ERR: just this");
    fx_free(&f);

    fx_lua(&f, "", "local function helper(t)\n  return t.field.sub\nend\n"
                   "function process(m)\n  local r = helper({})\n  return r\nend");
    r = run1(&f, "x");
    CHECK(has(r, "source:2: attempt to index a nil value (field 'field')"));
    CHECK(has(r, "(traceback: source:2: in "));
    CHECK(has(r, "source:5: in function 'process'"));
    CHECK(strchr(r, '\n') == NULL);
    CHECK_STR(run1(&f, "x"), r); /* the state stays usable */
    fx_free(&f);

    fx_lua(&f, "", "function process(m) error({code = 1}) end");
    CHECK_STR(run1(&f, "x"), "ERR: error(table)");
    fx_free(&f);
}

/* ---- the sandbox and the budgets ---- */

static void test_sandbox(void)
{
    static const struct {
        const char *code;
        const char *reason;
    } cases[] = {
        {"os.execute('touch /tmp/jn-lua-escaped')", "attempt to call a nil value (field 'execute')"},
        {"io.open('/etc/passwd')", "attempt to index a nil value (global 'io')"},
        {"require 'os'", "require 'os': only \"junction\" can be required"},
        {"require('io')", "only \"junction\" can be required"},
        {"assert(load(string.dump(function() return 1 end)))()",
         "attempt to load a binary chunk (mode is 't')"},
        {"assert(load(string.dump(function() return 1 end), 'x', 'b', _G))()",
         "attempt to load a binary chunk (mode is 't')"},
        {"dofile('/etc/passwd')", "attempt to call a nil value (global 'dofile')"},
        {"loadfile('/etc/passwd')", "global 'loadfile'"},
        {"debug.getregistry()", "global 'debug'"},
        {"package.loadlib('libc.so.6', 'system')", "global 'package'"},
        {"coroutine.wrap(function() end)()", "global 'coroutine'"},
        {"collectgarbage('stop')", "global 'collectgarbage'"},
        {"os.getenv('HOME')", "field 'getenv'"},
        {"os.exit(1)", "field 'exit'"},
        {"setmetatable({}, {__gc = function() while true do end end})", "__gc metamethods"},
        {"getmetatable(m.headers).__index = nil", "attempt to index a boolean value"},
        {"local s = string.rep('x', 1 << 30)", "max_memory (67108864 bytes) exceeded"},
        {"local s = 'x' for i = 1, 40 do s = s .. s end", "max_memory"},
        {"local t = {} for i = 1, 1e8 do t[i] = {i} end", "exceeded"},
        {"pcall(string.rep, 'x', 1 << 30) return m", "max_memory"},
        {"while true do end", "max_instructions (10000000) exceeded at source:"},
        {"while true do pcall(function() while true do end end) end", "max_instructions"},
        {"local function f() return f() end return f()", "max_instructions"},
        {"local function f() return 1 + f() end return f()", "exceeded"},
    };
    struct fx f;
    char src[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *r;
        snprintf(src, sizeof(src),
                 "n = (n or 0) + 1\n"
                 "function process(m)\n"
                 "  if m.payload == 'attack' then %s end\n"
                 "  calls = (calls or 0) + 1\n"
                 "  m.headers.calls = calls\n"
                 "  return m\n"
                 "end", cases[i].code);
        fx_lua(&f, "", src);
        CHECK_INT(f.init_rc, 0);
        CHECK_STR(run1(&f, "warm-up"), "warm-up");
        r = run1(&f, "attack");
        if (strncmp(r, "ERR: ", 5) != 0 || strstr(r, cases[i].reason) == NULL) {
            fprintf(stderr, "sandbox case %zu (%s): got %s\n", i, cases[i].code, r);
            CHECK(0);
        }
        /* The next message works. */
        CHECK_STR(run1(&f, "after"), "after");
        fx_free(&f);
    }
    CHECK(access("/tmp/jn-lua-escaped", F_OK) != 0);
}

/* A budget breach rebuilds the state: the script's globals start over. */
static void test_rebuild(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in = mk("x");
    struct jn_err err;

    fx_lua(&f, "max_instructions: 100000\nmax_memory: 1MiB\n",
           "function process(m)\n"
           "  count = (count or 0) + 1\n"
           "  if m.payload == 'spin' then while true do end end\n"
           "  if m.payload == 'eat' then local t = {} for i = 1, 1e6 do t[i] = i end end\n"
           "  return {payload = tostring(count)}\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    CHECK_STR(run1(&f, "x"), "1");
    CHECK_STR(run1(&f, "x"), "2");
    CHECK(has(run1(&f, "spin"), "max_instructions (100000) exceeded at source:3; the script's "
                                "state is rebuilt"));
    CHECK_STR(run1(&f, "x"), "1");
    CHECK(has(run1(&f, "eat"), "max_memory (1048576 bytes) exceeded"));
    CHECK_STR(run1(&f, "x"), "1");
    CHECK_STR(run1(&f, "x"), "2");
    /* A loop well inside the budget is fine: 10k iterations. */
    fx_free(&f);
    fx_lua(&f, "max_instructions: 100000\n",
           "function process(m) local s = 0 for i = 1, 10000 do s = s + i end "
           "return {payload = tostring(s)} end");
    CHECK_STR(run1(&f, "x"), "50005000");
    fx_free(&f);
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    (void)err;
}

/* ---- threads: a call does not wait for another one's state ---- */

struct hold_arg {
    struct fx *f;
    char res[64];
    atomic_int done;
};

static void *hold_thread(void *arg)
{
    struct hold_arg *a = arg;

    struct jn_msg_list l = {0};
    struct jn_msg *in = mk("hold");
    struct jn_err err;

    /* Not run1: its answer buffer and the CHECK counters belong to the main thread. */
    jn_err_clear(&err);
    if (a->f->svc.def->transform(&a->f->svc, in, &l, &err) != 0) {
        snprintf(a->res, sizeof(a->res), "ERR: %s", err.msg);
    } else if (l.n == 1) {
        snprintf(a->res, sizeof(a->res), "%.*s", (int)l.v[0]->len,
                 (const char *)l.v[0]->payload);
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    atomic_store(&a->done, 1);
    return NULL;
}

/* The routing worker runs on several threads when a config has an http-lookup: a second call
 * while the first holds its state gets a state of its own (its globals start afresh) and does
 * not wait; the next call after both reuses the first free state. */
static void test_threads(void)
{
    struct fx f;
    struct hold_arg a;
    pthread_t th;
    char mine[64];

    fx_lua(&f, "max_instructions: 2000000000\n",
           "function process(m)\n"
           "  count = (count or 0) + 1\n"
           "  if m.payload == 'hold' then\n"
           "    local t = junction.time.now() + 3\n"
           "    while junction.time.now() < t do end\n"
           "  end\n"
           "  return {payload = tostring(count)}\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    memset(&a, 0, sizeof(a));
    a.f = &f;
    atomic_init(&a.done, 0);
    CHECK_INT(pthread_create(&th, NULL, hold_thread, &a), 0);
    usleep(200 * 1000); /* the holder is in its 3 s loop by now */
    snprintf(mine, sizeof(mine), "%s", run1(&f, "x"));
    CHECK_INT(atomic_load(&a.done), 0); /* answered while the holder still held its state */
    CHECK_STR(mine, "1");               /* from a state of its own */
    pthread_join(th, NULL);
    CHECK_STR(a.res, "1");
    CHECK_STR(run1(&f, "x"), "2"); /* state 0 again, the first free: its count goes on */
    fx_free(&f);
}

/* ---- helpers ---- */

static void test_json(void)
{
    struct fx f;
    const char *r;

    fx_lua(&f, "",
           "local json = junction.json\n"
           "function process(m)\n"
           "  local v, why = json.decode(m.payload)\n"
           "  if v == nil then error(why, 0) end\n"
           "  if type(v) == 'table' then v.seen = true end\n"
           "  return {payload = json.encode(v)}\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    CHECK_STR(run1(&f, "{\"b\":[1,2.5,{\"c\":null}],\"a\":19.99,\"e\":[],\"f\":{},\"s\":\"x\\\"\\n\\u00e9\"}"),
              "{\"a\":19.99,\"b\":[1,2.5,{\"c\":null}],\"e\":[],\"f\":{},\"s\":\"x\\\"\\n\xc3\xa9\","
              "\"seen\":true}");
    CHECK_STR(run1(&f, "[1,true,false,null,1.0,-0.5,1e300]"), "[1,true,false,null,1.0,-0.5,1e+300]");
    CHECK_STR(run1(&f, "\"just a string\""), "\"just a string\"");
    CHECK_STR(run1(&f, "9007199254740993"), "9007199254740993");
    r = run1(&f, "{\"a\":");
    CHECK(has(r, "ERR: json.decode: "));
    CHECK(has(r, "at line 1"));
    fx_free(&f);

    fx_lua(&f, "",
           "local json = junction.json\n"
           "function process(m)\n"
           "  if m.payload == 'cycle' then local t = {} t.t = t return {payload = json.encode(t)} end\n"
           "  if m.payload == 'fn' then return {payload = json.encode({f = print})} end\n"
           "  if m.payload == 'nan' then return {payload = json.encode(0/0)} end\n"
           "  if m.payload == 'utf8' then return {payload = json.encode('\\xff')} end\n"
           "  if m.payload == 'key' then return {payload = json.encode({[true] = 1})} end\n"
           "  if m.payload == 'mixed' then return {payload = json.encode({1, 2, x = 3})} end\n"
           "  if m.payload == 'empty' then return {payload = json.encode(json.array())} end\n"
           "  return {payload = json.encode({json.null, {}, n = 3})}\n"
           "end");
    CHECK(has(run1(&f, "cycle"), "nested more than 1000 levels"));
    CHECK(has(run1(&f, "fn"), "a function has no JSON form"));
    CHECK(has(run1(&f, "nan"), "nan has no JSON form"));
    CHECK(has(run1(&f, "utf8"), "not valid UTF-8"));
    CHECK(has(run1(&f, "key"), "an object key is a boolean"));
    CHECK_STR(run1(&f, "mixed"), "{\"1\":1,\"2\":2,\"x\":3}");
    CHECK_STR(run1(&f, "empty"), "[]");
    CHECK_STR(run1(&f, "other"), "{\"1\":null,\"2\":{},\"n\":3}");
    fx_free(&f);
}

static void test_msgpack(void)
{
    struct fx f;

    fx_lua(&f, "",
           "local mp, json = junction.msgpack, junction.json\n"
           "function process(m)\n"
           "  if m.payload == 'bad' then local v, why = mp.decode('\\xc1') error(why, 0) end\n"
           "  if m.payload == 'trail' then local v, why = mp.decode('\\x01\\x02') error(why, 0) end\n"
           "  if m.payload == 'fn' then mp.encode({print}) end\n"
           "  if m.payload == 'bytes' then return {payload = mp.encode({1, -2, 'ab', true, json.null})} end\n"
           "  local v = json.decode(m.payload)\n"
           "  local back = mp.decode(mp.encode(v))\n"
           "  return {payload = json.encode(back)}\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    CHECK_STR(run1(&f, "{\"a\":[1,2.5,\"x\",{\"b\":null}],\"c\":{},\"d\":[],\"e\":-7}"),
              "{\"a\":[1,2.5,\"x\",{\"b\":null}],\"c\":{},\"d\":[],\"e\":-7}");
    /* fixarray of 5: 1, -2 (negative fixint), fixstr "ab", true, nil. */
    CHECK_STR(run1(&f, "bytes"), "\x95\x01\xfe\xa2" "ab\xc3\xc0");
    CHECK(has(run1(&f, "bad"), "ERR: msgpack.decode: not msgpack (1 bytes)"));
    CHECK(has(run1(&f, "trail"), "ERR: msgpack.decode: 1 bytes after the first object"));
    CHECK(has(run1(&f, "fn"), "msgpack.encode: a function has no msgpack form"));
    fx_free(&f);
}

#define ADT "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG001|P|2.5\r" \
            "PID|1||12345^^^HOSP^MR||DOE^JANE^Q||19800101|F\r"                    \
            "OBX|1|NM|GLU||5.4|mmol/L\r"                                          \
            "OBX|2|NM|K||4.1|mmol/L\r"

static void test_hl7(void)
{
    struct fx f;

    fx_lua(&f, "",
           "local hl7 = junction.hl7\n"
           "function process(m)\n"
           "  local h, why = hl7.parse(m.payload)\n"
           "  if not h then error(why, 0) end\n"
           "  local out = {}\n"
           "  out[#out+1] = h:get('PID-5.1') .. '/' .. h:get('PID-5.2') .. '/' .. h:get('MSH-9.2')\n"
           "  out[#out+1] = tostring(h:get('PID-9')) .. '/' .. tostring(h:get('ZZZ-1'))\n"
           "  for _, s in ipairs(h:segments('OBX')) do\n"
           "    out[#out+1] = s.id .. s.index .. '=' .. s:get('5') .. s:get('6')\n"
           "  end\n"
           "  out[#out+1] = #h:segments() .. ' segments'\n"
           "  h:set('PID-5.1', 'ROE|SMITH')\n"
           "  h:set('PID-3[2].1', 'X9')\n"
           "  h:set('OBX[2]-5', '4.2')\n"
           "  h:set('PID-12.2.2', 'deep')\n"
           "  h:set('ZZZ-2', 'new')\n"
           "  h:segments('OBX')[1]:set('3', 'GLUC')\n"
           "  out[#out+1] = h:tostring()\n"
           "  out[#out+1] = h:get('PID-5.1')\n"
           "  return {payload = table.concat(out, '\\n')}\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    CHECK_STR(run1(&f, ADT),
              "DOE/JANE/A01\n"
              "nil/nil\n"
              "OBX1=5.4mmol/L\n"
              "OBX2=4.1mmol/L\n"
              "4 segments\n"
              "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG001|P|2.5\r"
              "PID|1||12345^^^HOSP^MR~X9||ROE\\F\\SMITH^JANE^Q||19800101|F||||^&deep\r"
              "OBX|1|NM|GLUC||5.4|mmol/L\r"
              "OBX|2|NM|K||4.2|mmol/L\r"
              "ZZZ||new\r"
              "\nROE|SMITH");
    CHECK(has(run1(&f, "not hl7"), "ERR: hl7.parse: "));
    fx_free(&f);

    fx_lua(&f, "",
           "function process(m)\n"
           "  local h = junction.hl7.parse(m.payload)\n"
           "  if m.headers.op == 'msh2' then h:set('MSH-2', 'x') end\n"
           "  if m.headers.op == 'gap' then h:set('OBX[4]-1', 'x') end\n"
           "  if m.headers.op == 'path' then h:get('nonsense') end\n"
           "  return m\n"
           "end");
    {
        static const char *const ops[][2] = {
            {"msh2", "MSH-2 holds the delimiters and cannot be set"},
            {"gap", "OBX[4] does not exist (the message has 2 OBX segment(s))"},
            {"path", "hl7: path 'nonsense': "},
        };
        for (size_t i = 0; i < 3; i++) {
            struct jn_msg_list l = {0};
            struct jn_msg *in = mk(ADT);
            struct jn_err err;
            jn_msg_header_add(in, "op", ops[i][0]);
            CHECK(run_msg(&f, in, &l, &err) != 0);
            CHECK(has(err.msg, ops[i][1]));
            jn_msg_list_clear(&l);
            jn_msg_unref(&in);
        }
    }
    fx_free(&f);
}

static void test_misc_helpers(void)
{
    struct fx f;
    char dir[] = "/tmp/jn-lua-req-XXXXXX", path[256], yaml[512];
    FILE *fp;
    double t0 = (double)time(NULL);
    const char *r;

    fx_lua(&f, "",
           "function process(m)\n"
           "  junction.log.info('hello from', m.id)\n"
           "  print('print goes to the log too')\n"
           "  local j = require 'junction'\n"
           "  return {payload = string.format('%d %s %s', math.floor(j.time.now()), "
           "type(os.time()), os.date('!%Y', 0))}\n"
           "end");
    r = run1(&f, "x");
    CHECK(has(r, " number 1970"));
    CHECK(atof(r) >= t0 - 1 && atof(r) <= t0 + 5);
    fx_free(&f);

    /* require from allow_require only. */
    if (mkdtemp(dir) != NULL) {
        snprintf(path, sizeof(path), "%s/util.lua", dir);
        fp = fopen(path, "w");
        fputs("loads = (loads or 0) + 1\nreturn {shout = function(s) return s:upper() end}\n", fp);
        fclose(fp);
        snprintf(path, sizeof(path), "%s/sub", dir);
        mkdir(path, 0700);
        snprintf(path, sizeof(path), "%s/sub/deep.lua", dir);
        fp = fopen(path, "w");
        fputs("return 'deep'\n", fp);
        fclose(fp);
        snprintf(yaml, sizeof(yaml), "allow_require: %s\n", dir);
        fx_lua(&f, yaml,
               "local util = require 'util'\n"
               "local again = require 'util'\n"
               "function process(m)\n"
               "  if m.payload == 'up' then local ok, e = pcall(require, '..util') error(e, 0) end\n"
               "  if m.payload == 'missing' then require 'nope' end\n"
               "  return {payload = util.shout('a') .. loads .. tostring(util == again) .. "
               "require('sub.deep')}\n"
               "end");
        CHECK_INT(f.init_rc, 0);
        CHECK_STR(run1(&f, "x"), "A1truedeep");
        CHECK(has(run1(&f, "up"), "a module name is letters, digits and _"));
        CHECK(has(run1(&f, "missing"), "no module"));
        fx_free(&f);
        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        CHECK_INT(system(path), 0);
    }
}

/* ---- loading ---- */

static void test_load_errors(void)
{
    struct fx f;
    char path[] = "/tmp/jn-lua-bad-XXXXXX.lua", yaml[256];
    int fd = mkstemps(path, 4);

    CHECK(fd >= 0);
    CHECK(write(fd, "function process(m)\n  return m +\nend\n", 38) == 38);
    close(fd);
    snprintf(yaml, sizeof(yaml), "script: %s\n", path);
    fx_yaml(&f, "lua", yaml);
    CHECK_INT(f.errs, 1);
    {
        char want[300];
        snprintf(want, sizeof(want), "t.yaml:1:9: lua: %s:3: unexpected symbol near 'end'",
                 path);
        CHECK_STR(fx_diag(&f), want);
    }
    fx_free(&f);
    unlink(path);

    fx_yaml(&f, "lua", "script: /nonexistent/x.lua\n");
    CHECK(has(fx_diag(&f), "t.yaml:1:9: lua: cannot read script /nonexistent/x.lua: No such file"));
    fx_free(&f);
    fx_yaml(&f, "lua", "max_memory: 1MiB\n");
    CHECK(has(fx_diag(&f), "expected script (a .lua file) or source"));
    fx_free(&f);
    fx_lua(&f, "script: a.lua\n", "x = 1");
    CHECK(has(fx_diag(&f), "set script or source, not both"));
    fx_free(&f);
    fx_lua(&f, "", "process = 42");
    CHECK(has(fx_diag(&f), "defines no function process(msg) (process is number)"));
    fx_free(&f);
    fx_lua(&f, "", "local x = nil\nx.y = 1\nfunction process(m) return m end");
    CHECK(has(fx_diag(&f), "t.yaml:1:9: lua: loading the script: source:2: attempt to index"));
    fx_free(&f);
    fx_lua(&f, "", "while true do end");
    CHECK(has(fx_diag(&f), "max_instructions (10000000) exceeded while loading the script"));
    fx_free(&f);
    fx_lua(&f, "max_memory: 256KiB\n", "big = string.rep('x', 1 << 20)");
    CHECK(has(fx_diag(&f), "max_memory (262144 bytes) exceeded while loading the script"));
    fx_free(&f);
    fx_lua(&f, "max_instructions: 5\n", "x = 1");
    CHECK(has(fx_diag(&f), "max_instructions: 5 is out of range 1000.."));
    fx_free(&f);
}

/* ---- random return values ---- */

static void test_random_returns(void)
{
    struct fx f;
    int ok = 0, failed = 0;

    /* A value of a random type, recursively: the msg API must give an output or a reason,
     * never a crash, for whatever comes back. */
    fx_lua(&f, "max_instructions: 200000\n",
           "local function rnd(m, d)\n"
           "  local k = math.random(1, d > 3 and 8 or 12)\n"
           "  if k == 1 then return nil elseif k == 2 then return math.random(-10, 10)\n"
           "  elseif k == 3 then return math.random() * 1e6 elseif k == 4 then return k == 4\n"
           "  elseif k == 5 then return string.rep('z', math.random(0, 5))\n"
           "  elseif k == 6 then return false elseif k == 7 then return m\n"
           "  elseif k == 8 then return junction.json.null\n"
           "  elseif k == 9 then return print\n"
           "  end\n"
           "  local t = {}\n"
           "  for i = 1, math.random(0, 4) do\n"
           "    local key = ({'payload', 'headers', i, 'id', 'X-' .. i, true})[math.random(1, 6)]\n"
           "    t[key] = rnd(m, d + 1)\n"
           "  end\n"
           "  if math.random(1, 3) == 1 then t.payload = 'p' .. d end\n"
           "  return t\n"
           "end\n"
           "function process(m)\n"
           "  math.randomseed(tonumber(m.payload))\n"
           "  if math.random(1, 4) == 1 then m.headers = rnd(m, 2) end\n"
           "  return rnd(m, 0)\n"
           "end");
    CHECK_INT(f.init_rc, 0);
    for (int i = 0; i < 2000; i++) {
        char seed[16];
        struct jn_msg_list l = {0};
        struct jn_msg *in;
        struct jn_err err;
        snprintf(seed, sizeof(seed), "%d", i);
        in = mk(seed);
        if (run_msg(&f, in, &l, &err) == 0) {
            ok++;
            for (size_t k = 0; k < l.n; k++) {
                CHECK(l.v[k]->payload != NULL && l.v[k]->payload[l.v[k]->len] == '\0');
            }
        } else {
            failed++;
            CHECK(err.msg[0] != '\0');
        }
        jn_msg_list_clear(&l);
        jn_msg_unref(&in);
    }
    printf("random returns: %d gave outputs or a drop, %d a reason\n", ok, failed);
    CHECK(ok > 100 && failed > 100);
    CHECK_STR(run1(&f, "7"), run1(&f, "7")); /* the same seed, the same answer */
    fx_free(&f);

    {
        static const char *const rets[][2] = {
            {"42", "returned a number"},
            {"true", "returned a boolean"},
            {"'text'", "returned a string"},
            {"print", "returned a function"},
            {"{payload = 1}", "payload is a number, expected a string"},
            {"{payload = 'x', headers = 'h'}", "headers is a string, expected a table"},
            {"{payload = 'x', headers = {a = {b = {}}}}", "header 'a' is a table"},
            {"{1, 2}", "item 1 of the returned list is a number"},
            {"{{payload = 'ok'}, {payload = true}}", "item 2 of the returned list: payload is a boolean"},
            {"{x = 1}", "no payload and no list of messages"},
            {"{payload = 'x', headers = {[1] = 'v'}}", "headers: a key is a number"},
        };
        for (size_t i = 0; i < sizeof(rets) / sizeof(rets[0]); i++) {
            char src[256];
            snprintf(src, sizeof(src), "function process(m) return %s end", rets[i][0]);
            fx_lua(&f, "", src);
            CHECK(has(run1(&f, "x"), rets[i][1]));
            CHECK_STR(run1(&f, "x"), run1(&f, "x"));
            fx_free(&f);
        }
    }
}

/* No memory at every allocation point of a run: an error, never a crash or a leak (the
 * sanitizer build checks the leaks). */
static void test_alloc_failures(void)
{
    struct fx f;
    int fails = 0;

    fx_lua(&f, "", "function process(m) m.headers.x = junction.json.encode("
                   "junction.json.decode('[1,{\"a\":2}]')) return {m, {payload = 'b'}} end");
    CHECK_INT(f.init_rc, 0);
    for (long n = 0; n < 400; n++) {
        struct jn_msg_list l = {0};
        struct jn_msg *in = mk("x");
        struct jn_err err;
        int rc;
        jn_mem_fail_after(n);
        rc = f.svc.def->transform(&f.svc, in, &l, &err);
        jn_mem_fail_after(-1);
        if (rc != 0) {
            fails++;
            CHECK(err.msg[0] != '\0');
        }
        jn_msg_list_clear(&l);
        jn_msg_unref(&in);
    }
    CHECK(fails > 0);
    CHECK_STR(run1(&f, "x"), "N=2");
    fx_free(&f);
}

/* ---- timings (printed, not asserted: the machine is shared) ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double per_msg_us(struct fx *f, const char *payload, int n)
{
    struct jn_msg *in = mk(payload);
    double t0;

    jn_msg_header_add(in, "Content-Type", "application/json");
    jn_msg_header_add(in, "User-Agent", "bench");
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        struct jn_msg_list l = {0};
        struct jn_err err;
        if (f->svc.def->transform(&f->svc, in, &l, &err) != 0 || l.n != 1) {
            CHECK(0);
        }
        jn_msg_list_clear(&l);
    }
    t0 = now_s() - t0;
    jn_msg_unref(&in);
    return t0 * 1e6 / n;
}

static void test_timings(void)
{
    struct fx lua, sh, js, pass;
    struct jn_buf doc = JN_BUF_INIT;
    double a, b, c, d;

    fx_lua(&lua, "", "function process(m) m.headers['X-Stamp'] = m.channel return m end");
    fx_yaml(&sh, "set-header", "set: {X-Stamp: \"{channel}\"}\n");
    fx_lua(&pass, "", "function process(m) return m end");
    fx_lua(&js, "", "local json = junction.json\n"
                    "function process(m) m.payload = json.encode(json.decode(m.payload)) "
                    "return m end");
    /* Keys already in order, so the text comes back the same. */
    jn_buf_puts(&doc, "{\"order\":{\"customer\":{\"email\":\"jane@example.org\","
                      "\"name\":\"Jane Doe\"},\"id\":\"A-1001\",\"items\":[");
    for (int i = 0; doc.len < 980; i++) {
        jn_buf_printf(&doc, "%s{\"price\":%d.99,\"qty\":%d,\"sku\":\"SKU-%04d\"}", i ? "," : "",
                      i * 3 + 1, i % 7 + 1, i);
    }
    jn_buf_puts(&doc, "]}}");
    CHECK(lua.init_rc == 0 && sh.init_rc == 0 && js.init_rc == 0);
    a = per_msg_us(&lua, "{\"a\":1}", 20000);
    b = per_msg_us(&sh, "{\"a\":1}", 20000);
    c = per_msg_us(&js, doc.p, 5000);
    d = per_msg_us(&pass, doc.p, 5000);
    printf("timing: header-setting script %.2f us/msg, set-header %.2f us/msg (difference "
           "%.2f us)\n", a, b, a - b);
    printf("timing: JSON decode+encode of %zu bytes in Lua: %.2f us/msg (%.2f us with the "
           "pass-through cost of %.2f us taken off)\n", doc.len, c, c - d, d);
    CHECK_STR(run1(&js, doc.p), doc.p); /* sorted keys and shortest numbers: the same text */
    jn_buf_reset(&doc);
    fx_free(&lua);
    fx_free(&sh);
    fx_free(&js);
    fx_free(&pass);
}

int main(int argc, char **argv)
{
    jn_log_level = JN_LOG_WARN;
    if (argc > 1 && strcmp(argv[1], "timings") == 0) {
        test_timings(); /* alone, for a profiler */
        TEST_MAIN_END();
    }
    test_pass_through();
    test_headers();
    test_payload_drop_split();
    test_errors();
    test_sandbox();
    test_rebuild();
    test_threads();
    test_json();
    test_msgpack();
    test_hl7();
    test_misc_helpers();
    test_load_errors();
    test_random_returns();
    test_alloc_failures();
    test_timings();
    TEST_MAIN_END();
}
