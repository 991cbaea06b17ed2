/*
 * Unit tests for services/: the registry and message list, set-header and json-map.
 *
 * Each service is built the way the config loader builds it (YAML -> option table -> check ->
 * init), so load-time errors are checked with their file:line:col. Outputs are compared as exact
 * bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_service.h"
#include "jn_services.h"
#include "jn_time.h"
#include "jn_test.h"
#include "jn_yaml.h"

/* One service instance built from YAML, as the config loader does it. */
struct fx {
    struct jn_diag diag;
    struct jn_node *root;
    struct jn_service svc;
    char name[8];
    int errs;    /* errors from the option table and check */
    int init_rc; /* init's result (0 when there is no init) */
    int inited;
    struct jn_err err;
};

static void fx_load(struct fx *f, const char *type, const char *yaml)
{
    static const char *const skip[] = {"type", NULL}; /* as the config loader does */
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
    f->errs = jn_opt_parse(def->opts, f->root, f->svc.conf, what, 0, skip, f->root,
                           &f->diag);
    if (f->errs == 0 && def->check) {
        f->errs += def->check(f->svc.conf, f->root, &f->diag);
    }
}

static int fx_init(struct fx *f)
{
    if (f->errs != 0) {
        return -100;
    }
    f->init_rc = f->svc.def->init ? f->svc.def->init(&f->svc, &f->err) : 0;
    f->inited = f->init_rc == 0;
    return f->init_rc;
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

/* The first diag message, or "" (for CHECK_STR). */
static const char *fx_diag(const struct fx *f)
{
    return f->diag.n ? f->diag.msgs[0] : "";
}

/* Runs payload from channel "orders-in" through f; returns rc. On success *out holds one
 * message (a new reference). err gets the reason. */
static int fx_run(struct fx *f, const char *payload, struct jn_msg **out, struct jn_err *err)
{
    struct jn_msg_list l = {0};
    struct jn_msg *in = jn_msg_new("orders-in", payload, strlen(payload));
    int rc;

    *out = NULL;
    jn_err_clear(err);
    if (in == NULL) {
        return JN_ENOMEM;
    }
    memcpy(in->id, "01J9Z0000000000000000000AB", JN_ID_LEN + 1);
    in->recv_us = 1700000000123456LL; /* 2023-11-14 22:13:20 UTC */
    rc = f->svc.def->transform(&f->svc, in, &l, err);
    if (rc == 0 && l.n == 1) {
        *out = jn_msg_ref(l.v[0]);
    }
    CHECK(rc != 0 || l.n == 1);
    CHECK(rc == 0 || err->msg[0] != '\0');
    /* The input is never changed. */
    CHECK_INT(in->len, strlen(payload));
    CHECK(memcmp(in->payload, payload, in->len) == 0);
    CHECK_INT(in->nhdrs, 0);
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    return rc;
}

/* Runs payload through a json-map built from yaml; returns the output payload (static buffer)
 * or "ERR <rc>: <reason>". */
static const char *map1(const char *yaml, const char *payload)
{
    static char res[2048];
    struct fx f;
    struct jn_msg *out;
    struct jn_err err;
    int rc;

    fx_load(&f, "json-map", yaml);
    if (fx_init(&f) != 0) {
        snprintf(res, sizeof(res), "LOAD %d: %s%s", f.init_rc, fx_diag(&f), f.err.msg);
        fx_free(&f);
        return res;
    }
    rc = fx_run(&f, payload, &out, &err);
    if (rc != 0) {
        snprintf(res, sizeof(res), "ERR %d: %s", rc, err.msg);
    } else {
        snprintf(res, sizeof(res), "%.*s", (int)out->len, (const char *)out->payload);
        CHECK_STR(jn_msg_header_get(out, "content-type"), "application/json");
        CHECK_STR(out->id, "01J9Z0000000000000000000AB");
        CHECK_STR(out->channel, "orders-in");
    }
    jn_msg_unref(&out);
    fx_free(&f);
    return res;
}

/* The first load error of a config (diag or init), or "" when it loads. */
static const char *load_err(const char *type, const char *yaml)
{
    static char res[1024];
    struct fx f;

    fx_load(&f, type, yaml);
    fx_init(&f);
    snprintf(res, sizeof(res), "%s%s", fx_diag(&f), f.errs ? "" : f.err.msg);
    fx_free(&f);
    return res;
}

/* ---- registry and list ---- */

static void test_registry(void)
{
    CHECK(jn_service_def_find("json-map") == &jn_service_json_map);
    CHECK(jn_service_def_find("set-header") == &jn_service_set_header);
    CHECK(jn_service_def_find("nope") == NULL);
    CHECK(jn_service_def_find(NULL) == NULL);
    /* NULL-terminated after set-header, json-map, the three HL7 services (issue 4), delay,
     * lua, csv-to-json, the two msgpack ones, split, template, hl7-map, filter, validate and
     * http-lookup. */
    CHECK(jn_service_def_find("hl7-to-json") != NULL && jn_service_def_find("hl7-split") != NULL);
    CHECK(jn_service_def_find("delay") == &jn_service_delay);
    CHECK(jn_service_def_find("lua") == &jn_service_lua);
    CHECK(jn_service_def_find("csv-to-json") == &jn_service_csv_to_json);
    CHECK(jn_service_def_find("split") == &jn_service_split);
    CHECK(jn_service_def_find("template") == &jn_service_template);
    CHECK(jn_service_def_find("hl7-map") == &jn_service_hl7_map);
    CHECK(jn_service_def_find("filter") == &jn_service_filter);
    CHECK(jn_service_def_find("validate") == &jn_service_validate);
    CHECK(jn_service_def_find("http-lookup") == &jn_service_http_lookup);
    CHECK(jn_service_defs[16] == NULL);
    for (size_t i = 0; jn_service_defs[i]; i++) {
        FILE *null = fopen("/dev/null", "w");
        if (null != NULL) {
            jn_opt_describe_md(jn_service_defs[i]->opts, NULL, null);
            fclose(null);
        }
        for (const struct jn_opt *o = jn_service_defs[i]->opts; o->name; o++) {
            CHECK(o->doc != NULL && o->doc[0] != '\0');
        }
    }
}

static void test_msg_list(void)
{
    struct jn_msg_list l = {0};
    struct jn_msg *m = jn_msg_new("c", "x", 1);

    for (int i = 0; i < 10; i++) {
        CHECK_INT(jn_msg_list_push(&l, jn_msg_ref(m)), 0);
    }
    CHECK_INT(l.n, 10);
    CHECK_INT(atomic_load(&m->refs), 11);
    jn_msg_list_clear(&l);
    CHECK_INT(l.n, 0);
    CHECK(l.v == NULL);
    CHECK_INT(atomic_load(&m->refs), 1);

    /* A failed push releases the message it was given. */
    jn_mem_fail_after(0);
    CHECK_INT(jn_msg_list_push(&l, jn_msg_ref(m)), JN_ENOMEM);
    jn_mem_fail_after(-1);
    CHECK_INT(atomic_load(&m->refs), 1);
    jn_msg_list_clear(&l);
    jn_msg_unref(&m);
}

/* ---- json-map ---- */

static const char *const order_yaml =
    "type: json-map\n"
    "copy: {id: order_id}\n"
    "rename: {customer.name: customer_name}\n"
    "set: {source: \"{channel}\"}\n"
    "set_json: {meta.v: \"2\"}\n"
    "remove: [debug]\n";

static void test_json_map_example(void)
{
    /* copy appends order_id; rename appends customer_name and the customer it emptied goes;
     * set and set_json append; remove takes debug out from the middle. */
    CHECK_STR(map1(order_yaml, "{\"id\":7,\"customer\":{\"name\":\"Ann\"},\"debug\":1}"),
              "{\"id\":7,\"order_id\":7,\"customer_name\":\"Ann\","
              "\"source\":\"orders-in\",\"meta\":{\"v\":2}}");
    /* Whitespace goes, order stays; missing sources are skipped when not strict. */
    CHECK_STR(map1(order_yaml, " { \"z\" : 1 ,\n \"a\" : [ 1 , 2 ] } "),
              "{\"z\":1,\"a\":[1,2],\"source\":\"orders-in\",\"meta\":{\"v\":2}}");
}

static void test_json_map_values(void)
{
    const char *y = "type: json-map\nset_json: {x: \"1\"}\n";

    /* Numbers leave as they came (jansson's own dump would print 19.989999999999998). */
    CHECK_STR(map1(y, "{\"p\":19.99,\"q\":0.1,\"r\":1.0,\"s\":1e2,\"t\":-0.0,\"u\":1.5e300,"
                      "\"v\":0.30000000000000004,\"big\":9223372036854775807,\"neg\":-5}"),
              "{\"p\":19.99,\"q\":0.1,\"r\":1.0,\"s\":100.0,\"t\":-0.0,\"u\":1.5e+300,"
              "\"v\":0.30000000000000004,\"big\":9223372036854775807,\"neg\":-5,\"x\":1}");
    /* Strings: required escapes only; other UTF-8 passes as is. */
    CHECK_STR(map1(y, "{\"s\":\"a\\\"b\\\\c\\n\\t\\u0001\\u00e9/\xc3\xa9\\u2028\",\"e\":\"\"}"),
              "{\"s\":\"a\\\"b\\\\c\\n\\t\\u0001\xc3\xa9/\xc3\xa9\xe2\x80\xa8\",\"e\":\"\","
              "\"x\":1}");
    /* Duplicate members: the last value wins, at the first one's place. */
    CHECK_STR(map1(y, "{\"a\":1,\"b\":2,\"a\":3}"), "{\"a\":3,\"b\":2,\"x\":1}");
    /* set_json replaces an existing member in place. */
    CHECK_STR(map1(y, "{\"x\":{\"deep\":[1]},\"y\":true}"), "{\"x\":1,\"y\":true}");
    CHECK_STR(map1("type: json-map\nset_json: {a: '{\"k\": [true, null, \"s\"]}', b: '\"t\"'}\n",
                   "{}"),
              "{\"a\":{\"k\":[true,null,\"s\"]},\"b\":\"t\"}");
    CHECK_STR(map1(y, "{}"), "{\"x\":1}");
}

static void test_json_map_paths(void)
{
    /* Arrays: replace, append at the length, create missing containers. */
    CHECK_STR(map1("type: json-map\nset: {'tags[0]': A, 'tags[2]': C}\n",
                   "{\"tags\":[\"a\",\"b\"]}"),
              "{\"tags\":[\"A\",\"b\",\"C\"]}");
    CHECK_STR(map1("type: json-map\nset: {'items[0].sku': x, 'm[0][0]': y, 'o.p.q': z}\n", "{}"),
              "{\"items\":[{\"sku\":\"x\"}],\"m\":[[\"y\"]],\"o\":{\"p\":{\"q\":\"z\"}}}");
    CHECK_STR(map1("type: json-map\nset: {'tags[5]': x}\n", "{\"tags\":[\"a\",\"b\"]}"),
              "ERR -2: json-map: set 'tags[5]': 'tags' has 2 elements: [5] is past the end "
              "([2] appends)");
    CHECK_STR(map1("type: json-map\nset: {a.b: x}\n", "{\"a\":1}"),
              "ERR -2: json-map: set 'a.b': 'a' is a number, not an object");
    CHECK_STR(map1("type: json-map\nset: {'a[0]': x}\n", "{\"a\":{}}"),
              "ERR -2: json-map: set 'a[0]': 'a' is an object, not an array");
    /* remove shifts later elements; removing twice removes two. */
    CHECK_STR(map1("type: json-map\nremove: ['a[0]', 'a[0]', 'b.c']\n",
                   "{\"a\":[1,2,3],\"b\":{\"c\":1,\"d\":2}}"),
              "{\"a\":[3],\"b\":{\"d\":2}}");
    /* copy and rename into and out of themselves. */
    CHECK_STR(map1("type: json-map\nrename: {a: a.b}\n", "{\"a\":{\"x\":1},\"z\":0}"),
              "{\"z\":0,\"a\":{\"b\":{\"x\":1}}}");
    CHECK_STR(map1("type: json-map\nrename: {a.x: a}\n", "{\"a\":{\"x\":1}}"), "{\"a\":1}");
    CHECK_STR(map1("type: json-map\nrename: {a: a}\n", "{\"a\":1,\"b\":2}"), "{\"a\":1,\"b\":2}");
    CHECK_STR(map1("type: json-map\ncopy: {a: a.b}\n", "{\"a\":{\"x\":1}}"),
              "{\"a\":{\"x\":1,\"b\":{\"x\":1}}}");
    /* A copy is independent of its source. */
    CHECK_STR(map1("type: json-map\ncopy: {a: b}\nset_json: {b.y: '2'}\n", "{\"a\":{\"x\":1}}"),
              "{\"a\":{\"x\":1},\"b\":{\"x\":1,\"y\":2}}");
    CHECK_STR(map1("type: json-map\ncopy: {'items[1]': second}\n", "{\"items\":[1,[2]]}"),
              "{\"items\":[1,[2]],\"second\":[2]}");
    /* '\' escapes a '.' (or '[', ']', '\') inside a member name. */
    CHECK_STR(map1("type: json-map\nrename: {'a\\.b': 'c\\[1\\]', 'd\\\\': e}\n",
                   "{\"a.b\":1,\"d\\\\\":2}"),
              "{\"c[1]\":1,\"e\":2}");
    /* Templates see the message. */
    CHECK_STR(map1("type: json-map\nset: {t: '{id} {date} {ts} {{x}}'}\n", "{}"),
              "{\"t\":\"01J9Z0000000000000000000AB 2023-11-14 1700000000123 {x}\"}");
}

static void test_json_map_errors(void)
{
    const char *y = "type: json-map\nremove: [x]\n";

    CHECK_STR(map1(y, "{\"a\":1}x"),
              "ERR -2: json-map: payload is not JSON: end of file expected near 'x' at line 1 "
              "column 8");
    CHECK_STR(map1(y, "{\"a\":\n tru}"),
              "ERR -2: json-map: payload is not JSON: invalid token near 'tru' at line 2 "
              "column 4");
    CHECK_STR(map1(y, ""),
              "ERR -2: json-map: payload is not JSON: unexpected token near end of file at line "
              "1 column 0");
    CHECK_STR(map1(y, "[1,2]"), "ERR -2: json-map: payload is an array, expected a JSON object");
    CHECK_STR(map1(y, "\"s\""), "ERR -2: json-map: payload is a string, expected a JSON object");
    CHECK_STR(map1(y, "{\"a\":\"\\u0000\"}"),
              "ERR -2: json-map: payload is not JSON: \\u0000 is not allowed without "
              "JSON_ALLOW_NUL near '\"\\u0000\"' at line 1 column 13");
    /* Control bytes quoted from the payload are masked in the reason. */
    CHECK_STR(map1(y, "{\"a\":\x01}"),
              "ERR -2: json-map: payload is not JSON: invalid token near '?' at line 1 column 6");
    /* Integers beyond 64 bits are a jansson limit. */
    CHECK_STR(map1(y, "{\"a\":12345678901234567890}"),
              "ERR -2: json-map: payload is not JSON: too big integer near "
              "'12345678901234567890' at line 1 column 25");

    /* strict: a missing source fails the message; otherwise it is skipped. */
    CHECK_STR(map1("type: json-map\nstrict: true\ncopy: {nope: x}\n", "{\"a\":1}"),
              "ERR -2: json-map: copy 'nope' -> 'x': source not found: the payload has no member "
              "'nope'");
    CHECK_STR(map1("type: json-map\ncopy: {nope: x}\n", "{\"a\":1}"), "{\"a\":1}");
    CHECK_STR(map1("type: json-map\nstrict: true\nrename: {'a.b[3]': x}\n",
                   "{\"a\":{\"b\":[1]}}"),
              "ERR -2: json-map: rename 'a.b[3]' -> 'x': source not found: 'a.b' has 1 "
              "elements, no [3]");
    CHECK_STR(map1("type: json-map\nstrict: true\nremove: [a.b.c]\n", "{\"a\":{\"b\":\"s\"}}"),
              "ERR -2: json-map: remove 'a.b.c': not found: 'a.b' is a string, not an object");
    CHECK_STR(map1("type: json-map\nremove: [a.b.c, 'a[0]', zz]\n", "{\"a\":{\"b\":\"s\"}}"),
              "{\"a\":{\"b\":\"s\"}}");
    CHECK_STR(map1("type: json-map\nstrict: yes\nremove: [a.b]\n", "{\"a\":{\"b\":1}}"),
              "{}");
}

/* test_issue_12_json_map_prune_empty: renaming an object's only member left "customer":{}. */
static void test_issue_12_json_map_prune_empty(void)
{
    const char *ren = "type: json-map\nrename: {customer.name: customer_name}\n";
    const char *rm = "type: json-map\nremove: [a.b.c.d]\n";

    /* By default the object the rename emptied goes; prune_empty: false keeps it. */
    CHECK_STR(map1(ren, "{\"customer\":{\"name\":\"x\"}}"), "{\"customer_name\":\"x\"}");
    CHECK_STR(map1("type: json-map\nprune_empty: false\nrename: {customer.name: customer_name}\n",
                   "{\"customer\":{\"name\":\"x\"}}"),
              "{\"customer\":{},\"customer_name\":\"x\"}");
    /* An object that was empty in the input stays, and so does one with members left. */
    CHECK_STR(map1(ren, "{\"e\":{},\"customer\":{\"name\":\"x\",\"id\":1}}"),
              "{\"e\":{},\"customer\":{\"id\":1},\"customer_name\":\"x\"}");
    CHECK_STR(map1(ren, "{\"customer\":{}}"), "{\"customer\":{}}");
    CHECK_STR(map1("type: json-map\nremove: [a.x]\n", "{\"a\":{\"x\":1,\"e\":{}}}"),
              "{\"a\":{\"e\":{}}}");
    /* Up the path, as far as objects became empty. */
    CHECK_STR(map1(rm, "{\"a\":{\"b\":{\"c\":{\"d\":1}}},\"z\":0}"), "{\"z\":0}");
    CHECK_STR(map1(rm, "{\"a\":{\"k\":2,\"b\":{\"c\":{\"d\":1}}}}"), "{\"a\":{\"k\":2}}");
    CHECK_STR(map1(rm, "{\"a\":{\"b\":{\"c\":{\"d\":1,\"k\":2}}}}"),
              "{\"a\":{\"b\":{\"c\":{\"k\":2}}}}");
    /* The value removed may itself be an empty object: only its holders are pruned. */
    CHECK_STR(map1(rm, "{\"a\":{\"b\":{\"c\":{\"d\":{}}}},\"z\":0}"), "{\"z\":0}");
    /* A rename into the object it empties keeps the object in its place. */
    CHECK_STR(map1("type: json-map\nrename: {a.x: a.y}\n", "{\"a\":{\"x\":1},\"b\":2}"),
              "{\"a\":{\"y\":1},\"b\":2}");
    CHECK_STR(map1("type: json-map\nrename: {a.b.x: a.c}\n", "{\"a\":{\"b\":{\"x\":1}},\"z\":0}"),
              "{\"a\":{\"c\":1},\"z\":0}");
    CHECK_STR(map1("type: json-map\nrename: {a.b.c: a.b}\n", "{\"a\":{\"b\":{\"c\":{}}},\"z\":0}"),
              "{\"a\":{\"b\":{}},\"z\":0}");
    /* Pruning is done last: an object a later op fills again keeps its place; one a later op
     * replaces is the new value's; one a later remove empties further still goes. */
    CHECK_STR(map1("type: json-map\nrename: {a.x: y}\nset: {a.n: v}\n",
                   "{\"a\":{\"x\":1},\"b\":2}"),
              "{\"a\":{\"n\":\"v\"},\"b\":2,\"y\":1}");
    CHECK_STR(map1("type: json-map\nrename: {a.b.x: y}\nset_json: {a.b: '{}'}\n",
                   "{\"a\":{\"b\":{\"x\":1}}}"),
              "{\"a\":{\"b\":{}},\"y\":1}");
    CHECK_STR(map1("type: json-map\nrename: {a.b.x: y}\nremove: [a.b]\n",
                   "{\"a\":{\"b\":{\"x\":1}},\"z\":0}"),
              "{\"z\":0,\"y\":1}");
    CHECK_STR(map1("type: json-map\nremove: [a.b.x, a.c.y]\n",
                   "{\"a\":{\"b\":{\"x\":1},\"c\":{\"y\":2}},\"z\":0}"),
              "{\"z\":0}");
    /* Arrays and their elements stay: removing an element would shift the later ones. */
    CHECK_STR(map1("type: json-map\nremove: ['items[0].sku']\n",
                   "{\"items\":[{\"sku\":1},{\"sku\":2}]}"),
              "{\"items\":[{},{\"sku\":2}]}");
    CHECK_STR(map1("type: json-map\nremove: ['o.items[0]']\n", "{\"o\":{\"items\":[1]}}"),
              "{\"o\":{\"items\":[]}}");
    CHECK_STR(map1("type: json-map\nremove: ['l[0].o.x']\n", "{\"l\":[{\"o\":{\"x\":1}}]}"),
              "{\"l\":[{}]}");
    /* Empty objects json-map writes (set_json, copy) are the config's to keep. */
    CHECK_STR(map1("type: json-map\nset_json: {m: '{}'}\ncopy: {e: f}\n", "{\"e\":{}}"),
              "{\"e\":{},\"f\":{},\"m\":{}}");
    /* A source that is not there removes nothing, so prunes nothing. */
    CHECK_STR(map1("type: json-map\nremove: [a.b.c]\n", "{\"a\":{\"b\":{}}}"),
              "{\"a\":{\"b\":{}}}");
}

static void test_json_map_header_bytes(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in = jn_msg_new("orders-in", "{}", 2);
    struct jn_err err;

    /* Header values are bytes; a JSON string must be UTF-8. */
    jn_msg_header_add(in, "X-Bin", "a\xff");
    jn_msg_header_add(in, "X-Ok", "\xc3\xa9\"\t");
    fx_load(&f, "json-map", "type: json-map\nset: {ok: '{header.X-Ok}', bin: '{header.X-Bin}'}\n");
    CHECK_INT(fx_init(&f), 0);
    CHECK_INT(f.svc.def->transform(&f.svc, in, &l, &err), JN_EINVAL);
    CHECK_STR(err.msg, "json-map: set 'bin': the rendered value is not valid UTF-8");
    CHECK_INT(l.n, 0);
    fx_free(&f);

    fx_load(&f, "json-map", "type: json-map\nset: {ok: '{header.X-Ok}'}\n");
    CHECK_INT(fx_init(&f), 0);
    CHECK_INT(f.svc.def->transform(&f.svc, in, &l, &err), 0);
    CHECK_INT(l.n, 1);
    CHECK_STR(l.n ? (const char *)l.v[0]->payload : "", "{\"ok\":\"\xc3\xa9\\\"\\t\"}");
    jn_msg_list_clear(&l);
    fx_free(&f);
    jn_msg_unref(&in);
}

static void test_json_map_load_errors(void)
{
    static const struct {
        const char *path;
        const char *why;
    } bad[] = {
        {"a..b", "empty member name at character 3"},
        {".a", "empty member name at character 1"},
        {"a.", "it ends with '.', expected a member name after it"},
        {"items[0", "unclosed '[' at character 6"},
        {"items[x]", "index 'x' at character 6 is not a number, expected digits"},
        {"items[-1]", "index '-1' at character 6 is not a number, expected digits"},
        {"items[]", "empty index '[]' at character 6"},
        {"[0]", "expected a member name before '[' at character 1"},
        {"a.[0]", "expected a member name before '[' at character 3"},
        {"a]", "unmatched ']' at character 2"},
        {"a[0]]", "unmatched ']' at character 5"},
        {"a[0]b", "expected '.' or '[' after ']' at character 5"},
        {"a\\", "it ends with a lone '\\'"},
        {"a[1234567890]", "the index at character 2 is too large (at most 9 digits)"},
        {"\xc3\xa9..b", "empty member name at character 3"},
    };
    char yaml[256], want[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* As a copy destination: reported at the value, line 3 column 6. */
        snprintf(yaml, sizeof(yaml), "type: json-map\ncopy:\n  ok: '%s'\n", bad[i].path);
        snprintf(want, sizeof(want), "t.yaml:3:7: service 'x' (json-map): copy: bad path '%s': %s",
                 bad[i].path, bad[i].why);
        CHECK_STR(load_err("json-map", yaml), want);
    }
    /* Keys are reported at the key. */
    CHECK_STR(load_err("json-map", "type: json-map\nremove: [ok]\nset_json:\n  b.c: '1'\n"
                                   "  'a..b': '1'\n"),
              "t.yaml:5:3: service 'x' (json-map): set_json: bad path 'a..b': empty member name at character "
              "3");
    CHECK_STR(load_err("json-map", "type: json-map\nremove:\n  - ok\n  - 'x[y]'\n"),
              "t.yaml:4:5: service 'x' (json-map): remove: bad path 'x[y]': index 'y' at character 2 is not a "
              "number, expected digits");
    CHECK_STR(load_err("json-map", "type: json-map\nremove: ''\n"),
              "t.yaml:2:9: service 'x' (json-map): remove: bad path '': the path is empty");
    /* set_json literals are parsed at load. */
    CHECK_STR(load_err("json-map", "type: json-map\nset_json:\n  name: \"Ann\"\n"),
              "t.yaml:3:9: service 'x' (json-map): set_json.name: 'Ann' is not valid JSON: invalid token near "
              "'Ann' at line 1 column 3 (a JSON string keeps its quotes inside the YAML value: "
              "'\"text\"')");
    CHECK_STR(load_err("json-map", "type: json-map\nset_json: {a: '{\"a\":'}\n"),
              "t.yaml:2:15: service 'x' (json-map): set_json.a: '{\"a\":' is not valid JSON: unexpected token "
              "near end of file at line 1 column 5");
    CHECK_STR(load_err("json-map", "type: json-map\nset_json: {a: '[1] 2'}\n"),
              "t.yaml:2:15: service 'x' (json-map): set_json.a: '[1] 2' is not valid JSON: end of file "
              "expected near '2' at line 1 column 5");
    /* Templates are checked at load. */
    CHECK_STR(load_err("json-map", "type: json-map\nset:\n  src: \"{chanel}\"\n"),
              "t.yaml:3:8: service 'x' (json-map): set.src: template '{chanel}': unknown placeholder "
              "'{chanel}', expected {id}, {channel}, {date}, {hour}, {time}, {ts} or {header.NAME}");
    CHECK_STR(load_err("json-map", "type: json-map\nstrict: true\n"),
              "t.yaml:1:1: json-map: nothing to do, expected at least one of: copy, rename, set, "
              "set_json, remove");
    /* Every error is reported, not only the first. */
    {
        struct fx f;
        fx_load(&f, "json-map", "type: json-map\ncopy: {'a..': 'b[', c: d}\nremove: ['']\n");
        CHECK_INT(f.errs, 3);
        CHECK_INT(f.diag.n, 3);
        fx_free(&f);
    }
    /* init refuses what check would, for callers that skip check. */
    {
        struct fx f;
        struct jn_strlist *l;
        fx_load(&f, "json-map", "type: json-map\nremove: [a]\n");
        l = (struct jn_strlist *)((char *)f.svc.conf + jn_service_json_map.opts[4].off);
        jn_free(l->v[0]);
        l->v[0] = jn_strdup("a[");
        CHECK_INT(fx_init(&f), JN_EINVAL);
        CHECK_STR(f.err.msg, "json-map: remove: bad path 'a[': unclosed '[' at character 2");
        CHECK(f.svc.state == NULL);
        fx_free(&f);
    }
    /* YAML refuses bytes that are not UTF-8, but a conf may come from elsewhere. */
    {
        struct fx f;
        struct jn_strlist *l;
        fx_load(&f, "json-map", "type: json-map\nremove: [a]\n");
        l = (struct jn_strlist *)((char *)f.svc.conf + jn_service_json_map.opts[4].off);
        jn_free(l->v[0]);
        l->v[0] = jn_strdup("a\xff");
        CHECK_INT(fx_init(&f), JN_EINVAL);
        CHECK_STR(f.err.msg, "json-map: remove: bad path 'a\xff': the path is not valid UTF-8");
        fx_free(&f);
    }
    /* A good config loads without a word. */
    CHECK_STR(load_err("json-map", order_yaml), "");
}

static void test_json_map_depth(void)
{
    struct jn_buf y = JN_BUF_INIT, p = JN_BUF_INIT;
    const char *r;

    /* jansson stops parsing at 2048 levels. */
    for (int i = 0; i < 3000; i++) {
        jn_buf_putc(&p, '[');
    }
    r = map1("type: json-map\nremove: [x]\n", p.p);
    CHECK(strncmp(r, "ERR -2: json-map: payload is not JSON: maximum parsing depth reached", 67)
          == 0);
    jn_buf_reset(&p);

    /* Paths and literals can nest further; the serializer refuses past 4096 levels. */
    /* An explicit key ("? "): libyaml limits implicit keys to 1024 characters. */
    jn_buf_puts(&y, "type: json-map\nset_json:\n  ? a");
    for (int i = 0; i < 2100; i++) {
        jn_buf_puts(&y, ".a");
    }
    jn_buf_puts(&y, "\n  : '");
    for (int i = 0; i < 2040; i++) {
        jn_buf_putc(&y, '[');
    }
    for (int i = 0; i < 2040; i++) {
        jn_buf_putc(&y, ']');
    }
    jn_buf_puts(&y, "'\n");
    CHECK_STR(map1(y.p, "{}"), "ERR -2: json-map: the result nests deeper than 4096 levels");
    jn_buf_reset(&y);
}

/* Every allocation in init and transform may fail: each failure is a clean JN_ENOMEM, and a
 * failure is never swallowed into a wrong result. */
static void fail_walk(const char *type, const char *yaml, const char *payload, const char *want,
                      const char *hname, const char *hvalue, long min_allocs)
{
    int done = 0;
    long n;

    for (n = 0; !done && n < 10000; n++) {
        struct fx f;
        struct jn_msg_list l = {0};
        struct jn_msg *in;
        struct jn_err err;
        long failed;
        int rc;

        fx_load(&f, type, yaml);
        CHECK_INT(f.errs, 0);
        in = jn_msg_new("orders-in", payload, strlen(payload));
        jn_msg_header_add(in, "X-In", "v");
        jn_mem_fail_after(n);
        rc = fx_init(&f);
        if (rc == 0) {
            rc = f.svc.def->transform(&f.svc, in, &l, &err);
            if (rc != 0) {
                CHECK_INT(l.n, 0);
            }
        } else {
            CHECK(f.svc.state == NULL);
        }
        failed = jn_mem_failed();
        jn_mem_fail_after(-1);
        if (failed == 0) {
            /* Enough allocations for a clean run: the walk is over. */
            done = 1;
            CHECK_INT(rc, 0);
        } else {
            CHECK_INT(rc, JN_ENOMEM);
        }
        if (rc == 0) {
            CHECK_INT(l.n, 1);
            CHECK_STR((const char *)l.v[0]->payload, want);
            CHECK_STR(jn_msg_header_get(l.v[0], hname), hvalue);
        }
        jn_msg_list_clear(&l);
        jn_msg_unref(&in);
        fx_free(&f);
    }
    CHECK(done);
    /* The walk really went through init and transform (they allocate min_allocs times). */
    CHECK(n > min_allocs);
}

static void test_alloc_failures(void)
{
    fail_walk("json-map",
              "type: json-map\n"
              "copy: {id: order_id, 'items[0]': first}\n"
              "rename: {customer.name: customer_name}\n"
              "set: {source: \"{channel}-{header.X-In}\", 'o.p[0]': x}\n"
              "set_json: {meta.v: '[1, {\"a\": \"b\"}]'}\n"
              "remove: [debug]\n",
              "{\"id\":7,\"customer\":{\"name\":\"Ann\"},\"debug\":\"long string \\n value\","
              "\"items\":[1.5]}",
              "{\"id\":7,\"items\":[1.5],\"order_id\":7,\"first\":1.5,"
              "\"customer_name\":\"Ann\",\"source\":\"orders-in-v\",\"o\":{\"p\":[\"x\"]},"
              "\"meta\":{\"v\":[1,{\"a\":\"b\"}]}}",
              "Content-Type", "application/json", 12);
    /* More deletions than json-map keeps room for on the stack. */
    fail_walk("json-map", "type: json-map\nremove: [a.b0, a.b1, a.b2, a.b3, a.b4, a.b5, a.b6, "
              "a.b7, a.b8]\n", "{\"a\":{\"b0\":0,\"b1\":1,\"b2\":2,\"b3\":3,\"b4\":4,"
              "\"b5\":5,\"b6\":6,\"b7\":7,\"b8\":8},\"z\":0}", "{\"z\":0}",
              "Content-Type", "application/json", 12);
    fail_walk("set-header",
              "type: set-header\nremove: [x-in]\n"
              "set: {X-Src: '{channel}', X-Old: '{header.X-In}'}\nadd: {Via: j}\n",
              "p", "p", "X-Old", "v", 12);
    fail_walk("hl7-map", "{copy: {PID-2: PID-3.1, PID-6.1: PID-5}, set: {MSH-5: '{header.X-In}'},"
              " remove: [PID-8, NTE]}",
              "MSH|^~\\&|A|B|C\rPID|1||42^^^MR||DOE^J|\rNTE|x\r",
              "MSH|^~\\&|A|B|v\rPID|1|42|42^^^MR||DOE^J|DOE\\S\\J\r", "X-In", "v", 12);
    fail_walk("template", "{template: '{hl7.PID-5.2} {hl7.PID-3.1} {header.X-In} {hl7.PID-5} "
              "{hl7.PID-1} {hl7.MSH-3} {hl7.PID-3} {hl7.PID-5.1}'}",
              "MSH|^~\\&|A\rPID|1||42^^^MR||DOE^J\r", "J 42 v DOE^J 1 A 42^^^MR DOE",
              "content-type", "text/plain", 12);
}

/* ---- set-header ---- */

static void test_set_header(void)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in = jn_msg_new("orders-in", "body", 4);
    struct jn_msg *o;
    struct jn_err err;
    static const char *const want[][2] = {
        {"X-Source", "orders-in"}, {"Via", "a"}, {"X-Orig", "1"}, {"X-Received", "2023-11-14"},
        {"Via", "b"},
    };

    in->recv_us = 1700000000123456LL;
    jn_msg_header_add(in, "X-Debug", "1");
    jn_msg_header_add(in, "x-debug", "2");
    jn_msg_header_add(in, "X-Source", "old");
    jn_msg_header_add(in, "x-SOURCE", "dup");
    jn_msg_header_add(in, "Via", "a");
    fx_load(&f, "set-header",
            "type: set-header\n"
            "add: {Via: b}\n"
            "set: {x-source: \"{channel}\", X-Orig: \"{header.x-DEBUG}\", X-Received: \"{date}\"}\n"
            "remove: [x-DEBUG]\n");
    CHECK_INT(f.errs, 0);
    CHECK_INT(fx_init(&f), 0);
    CHECK_INT(f.svc.def->transform(&f.svc, in, &l, &err), 0);
    CHECK_INT(l.n, 1);
    o = l.n ? l.v[0] : NULL;
    /* remove, then set (replacing the first X-Source, dropping its duplicate; templates see
     * the message as it arrived), then add. */
    CHECK_INT(o ? o->nhdrs : 0, 5);
    for (size_t i = 0; o && i < o->nhdrs && i < 5; i++) {
        CHECK_STR(o->hdrs[i].name, want[i][0]);
        CHECK_STR(o->hdrs[i].value, want[i][1]);
    }
    CHECK(o != NULL && o != in && o->len == 4 && memcmp(o->payload, "body", 4) == 0);
    CHECK_INT(in->nhdrs, 5);
    CHECK_STR(in->hdrs[2].value, "old");
    jn_msg_list_clear(&l);

    /* A line break in a rendered value fails the message. */
    jn_msg_header_add(in, "X-Bad", "a\r\nInjected: 1");
    fx_free(&f);
    fx_load(&f, "set-header", "type: set-header\nadd: {X-Copy: '{header.X-Bad}'}\n");
    CHECK_INT(fx_init(&f), 0);
    CHECK_INT(f.svc.def->transform(&f.svc, in, &l, &err), JN_EINVAL);
    CHECK_STR(err.msg, "set-header: add X-Copy: the value contains a line break");
    CHECK_INT(l.n, 0);
    fx_free(&f);
    jn_msg_unref(&in);

    CHECK_STR(load_err("set-header", "type: set-header\n"),
              "t.yaml:1:1: set-header: nothing to do, expected at least one of: remove, set, add");
    CHECK_STR(load_err("set-header", "type: set-header\nset:\n  X-A: ok\n  X-B: '{nope}'\n"),
              "t.yaml:4:8: service 'x' (set-header): set.X-B: template '{nope}': unknown placeholder '{nope}', "
              "expected {id}, {channel}, {date}, {hour}, {time}, {ts} or {header.NAME}");
    CHECK_STR(load_err("set-header", "type: set-header\nadd:\n  'X Bad': v\n"),
              "t.yaml:3:3: service 'x' (set-header): add: 'X Bad' is not a valid header name, expected "
              "letters, digits and !#$%&'*+-.^_`|~");
    CHECK_STR(load_err("set-header", "type: set-header\nremove: [ok, 'a:b']\n"),
              "t.yaml:2:14: service 'x' (set-header): remove: 'a:b' is not a valid header name, expected "
              "letters, digits and !#$%&'*+-.^_`|~");
    CHECK_STR(load_err("set-header", "type: set-header\nset: {X-A: \"a\\nb\"}\n"),
              "t.yaml:2:12: service 'x' (set-header): set.X-A: a header value cannot contain a line break");
    CHECK_STR(load_err("set-header", "type: set-header\nset: {X-A: 1}\nbogus: 2\n"),
              "t.yaml:3:1: service 'x' (set-header): unknown option 'bogus', expected one of: "
              "type, remove, set, add");
}

static void test_delay(void)
{
    struct fx f;
    struct jn_msg *out;
    struct jn_err err;
    int64_t t0, t1;

    fx_load(&f, "delay", "type: delay\nduration: 30ms\n");
    CHECK_INT(f.errs, 0);
    CHECK_INT(fx_init(&f), 0);
    t0 = jn_mono_ms();
    CHECK_INT(fx_run(&f, "held", &out, &err), 0);
    t1 = jn_mono_ms();
    /* The same message, unchanged, after at least the duration. */
    CHECK(out != NULL && out->len == 4 && memcmp(out->payload, "held", 4) == 0);
    CHECK_STR(out ? out->id : "", "01J9Z0000000000000000000AB");
    CHECK(t1 - t0 >= 30);
    jn_msg_unref(&out);
    fx_free(&f);

    CHECK_STR(load_err("delay", "type: delay\n"),
              "t.yaml:1:1: service 'x' (delay): missing required option 'duration' (duration: How "
              "long each message is held before it is passed on)");
    CHECK_STR(load_err("delay", "type: delay\nduration: 2h\n"),
              "t.yaml:2:11: service 'x' (delay): duration: 2h is out of range 0ms..1h");
}

/* Runs payload (len bytes) through a service of type with options yaml: the output payload
 * (static buffer) or "ERR <reason>". */
static const char *svc1(const char *type, const char *yaml, const char *payload, size_t len,
                        size_t *outlen)
{
    static char res[2048];
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in;
    struct jn_err err;
    int rc;

    fx_load(&f, type, yaml);
    if (fx_init(&f) != 0) {
        snprintf(res, sizeof(res), "LOAD: %s%s", fx_diag(&f), f.err.msg);
        fx_free(&f);
        return res;
    }
    in = jn_msg_new("in", payload, len);
    jn_err_clear(&err);
    rc = f.svc.def->transform(&f.svc, in, &l, &err);
    if (rc != 0) {
        CHECK(l.n == 0 || l.n == 1);
        CHECK(err.msg[0] != '\0');
        snprintf(res, sizeof(res), "ERR %s", err.msg);
    } else {
        CHECK_INT(l.n, 1);
        *outlen = l.v[0]->len < sizeof(res) ? l.v[0]->len : sizeof(res) - 1;
        memcpy(res, l.v[0]->payload, *outlen);
        res[*outlen] = '\0';
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);
    return res;
}

static const char *csv(const char *yaml, const char *payload)
{
    size_t n;
    return svc1("csv-to-json", yaml, payload, strlen(payload), &n);
}

static void test_csv_to_json(void)
{
    CHECK_STR(csv("{}", "id,name\n1,Ann\n2,\"Bo, \"\"B\"\"\"\n"),
              "[{\"id\":\"1\",\"name\":\"Ann\"},{\"id\":\"2\",\"name\":\"Bo, \\\"B\\\"\"}]");
    CHECK_STR(csv("{}", "b,a\r\n2,1\r\n\r\n"), "[{\"b\":\"2\",\"a\":\"1\"}]");
    CHECK_STR(csv("{header: false, delimiter: \";\"}", "x;y\n\"line\nbreak\";\n"),
              "[[\"x\",\"y\"],[\"line\\nbreak\",\"\"]]");
    CHECK_STR(csv("{}", ""), "[]");
    CHECK_STR(csv("{}", "a,b\n1\n"),
              "ERR csv-to-json: row 2 has 1 field(s), the header 2 (ragged: true accepts it)");
    CHECK_STR(csv("{ragged: true}", "a,b\n1\n1,2,3\n"),
              "[{\"a\":\"1\"},{\"a\":\"1\",\"b\":\"2\"}]");
    CHECK_STR(csv("{}", "a\n\"open\n"), "ERR csv-to-json: row 2: a quoted field is not closed");
    CHECK_STR(csv("{}", "a\n\xff\n"), "ERR csv-to-json: row 2 field 1 is not UTF-8 text");
    CHECK_STR(load_err("csv-to-json", "{delimiter: \";;\"}"),
              "t.yaml:1:13: csv-to-json: delimiter: one character, not a quote or a line break "
              "(got ';;')");
}

static void test_msgpack_json(void)
{
    const char *j = "{\"b\":1,\"a\":[true,null,-2,1.5,\"x\"],\"n\":{}}";
    char packed[256];
    size_t n = 0, m = 0;
    const char *r = svc1("json-to-msgpack", "{}", j, strlen(j), &n);

    CHECK(strncmp(r, "ERR", 3) != 0 && n > 0);
    memcpy(packed, r, n);
    /* 0x83: a map of 3; key order kept; back to the same JSON */
    CHECK((unsigned char)packed[0] == 0x83 && packed[1] == (char)0xa1 && packed[2] == 'b');
    CHECK_STR(svc1("msgpack-to-json", "{}", packed, n, &m), j);
    CHECK_STR(svc1("json-to-msgpack", "{}", "{oops", 5, &n),
              "ERR json-to-msgpack: the payload is not JSON: string or '}' expected near 'oops' "
              "at line 1 column 5");
    CHECK_STR(svc1("msgpack-to-json", "{}", "\xc4\x01z", 3, &m),
              "ERR msgpack-to-json: a bin value (bytes) has no JSON form");
    CHECK_STR(svc1("msgpack-to-json", "{}", "\x81\x01\x02", 3, &m),
              "ERR msgpack-to-json: a map key that is not a string (JSON objects have string "
              "keys)");
    CHECK_STR(svc1("msgpack-to-json", "{}", "\xdc\xff\xff", 3, &m),
              "ERR msgpack-to-json: the payload is not msgpack");
    CHECK_STR(svc1("msgpack-to-json", "{}", "\x01\x02", 2, &m),
              "ERR msgpack-to-json: the payload is not one msgpack value");
    CHECK_STR(svc1("msgpack-to-json", "{}", "\x2a", 1, &m), "42");
}

/* ---- split ---- */

/* Runs payload through a split built from yaml: "ERR <reason>", or each part as
 * "<index>/<count> <content-type> <payload>\n" (static buffer). */
static const char *split1(const char *yaml, const char *payload)
{
    static char res[4096];
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in;
    struct jn_err err;
    size_t w = 0;
    int rc;

    fx_load(&f, "split", yaml);
    if (fx_init(&f) != 0) {
        snprintf(res, sizeof(res), "LOAD: %s%s", fx_diag(&f), f.err.msg);
        fx_free(&f);
        return res;
    }
    in = jn_msg_new("in", payload, strlen(payload));
    memcpy(in->id, "01J9Z0000000000000000000AB", JN_ID_LEN + 1);
    jn_msg_header_add(in, "X-Batch", "b7");
    jn_err_clear(&err);
    res[0] = '\0';
    rc = f.svc.def->transform(&f.svc, in, &l, &err);
    if (rc != 0) {
        CHECK(err.msg[0] != '\0');
        snprintf(res, sizeof(res), "ERR %s", err.msg);
    }
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        const struct jn_msg *m = l.v[i];
        /* A new message of its own, with the input's headers and the split's. */
        CHECK(strcmp(m->id, in->id) != 0);
        CHECK_STR(jn_msg_header_get(m, "X-Batch"), "b7");
        CHECK_STR(jn_msg_header_get(m, "split-id"), in->id);
        w += (size_t)snprintf(res + w, sizeof(res) - w, "%s/%s %s %.*s\n",
                              jn_msg_header_get(m, "split-index"),
                              jn_msg_header_get(m, "split-count"),
                              jn_msg_header_get(m, "content-type"), (int)m->len,
                              (const char *)m->payload);
    }
    CHECK_INT(in->nhdrs, 1);
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);
    return res;
}

static void test_split(void)
{
    /* JSON parts keep their bytes as written (1.10 stays 1.10, spaces inside stay). */
    CHECK_STR(split1("{format: json-array}", " [ {\"a\": [1, \"]\"]}, 1.10,\"x\\\"\" ,null]\n"),
              "1/4 application/json {\"a\": [1, \"]\"]}\n2/4 application/json 1.10\n"
              "3/4 application/json \"x\\\"\"\n4/4 application/json null\n");
    CHECK_STR(split1("{format: json-array}", "[]"), "");
    CHECK_STR(split1("{format: json-array}", "[1, {\"a\": tru}, 3]"),
              "ERR split: element 2 is not JSON: invalid token near 'tru' (column 9)");
    CHECK_STR(split1("{format: json-array}", "[1, , 3]"),
              "ERR split: element 2: a value is missing");
    CHECK_STR(split1("{format: json-array}", "[1, 2"),
              "ERR split: after element 2: expected ',' or ']', the array is not closed");
    CHECK_STR(split1("{format: json-array}", "[1, \"open]"),
              "ERR split: element 2: the array is not closed");
    CHECK_STR(split1("{format: json-array}", "{\"a\": 1}"),
              "ERR split: the payload is a JSON object, expected a JSON array (format: "
              "json-array)");
    CHECK_STR(split1("{format: json-array}", "[1] [2]"), "ERR split: text after the JSON array");
    CHECK_STR(split1("{format: json-array, max_parts: 2}", "[1,2,3]"),
              "ERR split: more than 2 parts (max_parts)");

    CHECK_STR(split1("{format: ndjson}", "{\"a\":1}\r\n\n  \n[2]\n\"s\""),
              "1/3 application/json {\"a\":1}\n2/3 application/json [2]\n"
              "3/3 application/json \"s\"\n");
    CHECK_STR(split1("{format: ndjson}", "{\"a\":1}\n{\"a\":\n"),
              "ERR split: line 2 is not JSON: unexpected token near end of file (column 5)");

    CHECK_STR(split1("{format: csv}", "id,name\n1,Ann\n\n2,\"Bo, \"\"B\"\"\"\n"),
              "1/2 application/json {\"id\":\"1\",\"name\":\"Ann\"}\n"
              "2/2 application/json {\"id\":\"2\",\"name\":\"Bo, \\\"B\\\"\"}\n");
    CHECK_STR(split1("{format: csv, header: false, delimiter: ';'}", "a;b\r\nc;d"),
              "1/2 application/json [\"a\",\"b\"]\n2/2 application/json [\"c\",\"d\"]\n");
    CHECK_STR(split1("{format: csv}", "a,b\n1,2\n3\n"),
              "ERR split: row 3 has 1 field(s), the header 2 (ragged: true accepts it)");
    CHECK_STR(split1("{format: csv, ragged: true}", "a,b\n3\n"),
              "1/1 application/json {\"a\":\"3\"}\n");
    CHECK_STR(split1("{format: csv}", "a\n\"open\n"), "ERR split: row 2: a quoted field is not "
              "closed");
    CHECK_STR(split1("{format: csv}", "a\n"), "");
    CHECK_STR(split1("{format: csv, csv_as: row}", "id,name\r\n1,\"A, nn\"\r\n2,Bo"),
              "1/2 text/csv 1,\"A, nn\"\n2/2 text/csv 2,Bo\n");
    CHECK_STR(split1("{format: csv, csv_as: row}", "\"i\nd\",name\n1,2\n"),
              "ERR split: the header row holds a line break (in quotes), which the "
              "split-csv-header header cannot carry");

    /* The header row rides along in row mode. */
    {
        struct fx f;
        struct jn_msg_list l = {0};
        struct jn_msg *in = jn_msg_new("in", "id;n\n1;a\n", 9);
        struct jn_err err;
        fx_load(&f, "split", "{format: csv, csv_as: row, delimiter: ';'}");
        CHECK_INT(fx_init(&f), 0);
        CHECK_INT(f.svc.def->transform(&f.svc, in, &l, &err), 0);
        CHECK_INT(l.n, 1);
        CHECK_STR(l.n ? jn_msg_header_get(l.v[0], "split-csv-header") : "", "id;n");
        jn_msg_list_clear(&l);
        jn_msg_unref(&in);
        fx_free(&f);
    }

    CHECK_STR(load_err("split", "{}"),
              "t.yaml:1:1: service 'x' (split): missing required option 'format' (enum: "
              "json-array: one message per element of a JSON array; ndjson: one per non-empty "
              "line (each a JSON value); csv: one per row)");
    CHECK_STR(load_err("split", "{format: xml}"),
              "t.yaml:1:10: service 'x' (split): format: 'xml' is not allowed, expected one of: "
              "json-array | ndjson | csv");
    CHECK_STR(load_err("split", "{format: ndjson, header: false}"),
              "t.yaml:1:18: split: header is for format: csv (format is ndjson)");
    CHECK_STR(load_err("split", "{format: csv, delimiter: ab}"),
              "t.yaml:1:26: split: delimiter: one character, not a quote or a line break (got "
              "'ab')");
}

/* ---- template ---- */

static const char *tpl(const char *yaml, const char *payload)
{
    size_t n;
    return svc1("template", yaml, payload, strlen(payload), &n);
}

static const char *const adt =
    "MSH|^~\\&|LAB|H|EHR|H|20240101||ADT^A01|M1|P|2.5\r"
    "PID|1||42^^^MR~77^^^SS||DOE^JANE^Q\\T\\A||19800101|F\r";

static void test_template(void)
{
    struct fx f;
    struct jn_msg *o;
    struct jn_err err;

    CHECK_STR(tpl("{template: 'order {json.id} for {json.customer.name}: {json.items.1.sku} "
                  "{json.items} {json.n} {json.flag} [{json.none}] [{json.z}] {{x}}'}",
                  "{\"id\":7,\"customer\":{\"name\":\"Ann\"},\"items\":[{\"sku\":\"a\"},"
                  "{\"sku\":\"b\"}],\"n\":1.5,\"flag\":true,\"z\":null}"),
              "order 7 for Ann: b [{\"sku\":\"a\"},{\"sku\":\"b\"}] 1.5 true [] [] {x}");
    CHECK_STR(tpl("{template: '{hl7.PID-5.2} {hl7.PID-5.1} ({hl7.PID-3[2].1}) {hl7.PID-5.3} "
                  "{hl7.MSH-9.2} [{hl7.ZZZ-1}] {channel}'}", adt),
              "JANE DOE (77) Q&A A01 [] in");
    /* strict: a missing field names itself; a wrong payload always fails. */
    CHECK_STR(tpl("{template: '{json.a.b}', strict: true}", "{\"a\":{}}"),
              "ERR template: {json.a.b}: no such field in the payload (strict: true)");
    CHECK_STR(tpl("{template: '{json.a.0}', strict: true}", "{\"a\":\"s\"}"),
              "ERR template: {json.a.0}: no such field in the payload (strict: true)");
    CHECK_STR(tpl("{template: '{hl7.PID-30}', strict: true}", adt),
              "ERR template: {hl7.PID-30}: no such field in the message (strict: true)");
    CHECK_STR(tpl("{template: 'x {json.a}'}", "{oops"),
              "ERR template: {json.a}: the payload is not JSON: string or '}' expected near "
              "'oops' (line 1 column 5)");
    CHECK(strncmp(tpl("{template: '{hl7.PID-5}'}", "{\"a\":1}"),
                  "ERR template: {hl7.PID-5}: the payload is not HL7: ", 50) == 0);

    /* The content type is set, the id and other headers kept. */
    fx_load(&f, "template", "{template: 'id={id} h={header.X-None}', content_type: text/x}");
    CHECK_INT(fx_init(&f), 0);
    CHECK_INT(fx_run(&f, "{}", &o, &err), 0);
    CHECK(o != NULL && o->len == 32 && memcmp(o->payload, "id=01J9Z0000000000000000000AB h=",
                                              32) == 0);
    CHECK_STR(o ? jn_msg_header_get(o, "content-type") : "", "text/x");
    CHECK_STR(o ? o->id : "", "01J9Z0000000000000000000AB");
    jn_msg_unref(&o);
    fx_free(&f);

    CHECK_STR(load_err("template", "{}"),
              "t.yaml:1:1: service 'x' (template): missing required option 'template' "
              "(string: The payload to render: text with {id}, {channel}, {date}, {time}, "
              "{ts}, {header.NAME}, {json.a.b} (a JSON payload's field; array elements by "
              "number), {hl7.PID-5.1} (an HL7 field, decoded); {{ and }} for braces)");
    CHECK_STR(load_err("template", "{template: 'a {nope}'}"),
              "t.yaml:1:12: service 'x' (template): template: template 'a {nope}': unknown "
              "placeholder '{nope}', expected {id}, {channel}, {date}, {hour}, {time}, {ts} or "
              "{header.NAME} (or this service's own)");
    CHECK_STR(load_err("template", "{template: '{json.a..b}'}"),
              "t.yaml:1:12: service 'x' (template): template: template: {json.a..b}: an "
              "empty step in the JSON path");
    CHECK(strncmp(load_err("template", "{template: '{hl7.PID-x}'}"),
                  "t.yaml:1:12: service 'x' (template): template: template: {hl7.PID-x}: ", 67)
          == 0);
}

/* ---- hl7-map ---- */

static const char *hmap(const char *yaml, const char *payload)
{
    size_t n;
    const char *r = svc1("hl7-map", yaml, payload, strlen(payload), &n);
    static char res[2048];

    /* CRs as newlines, to read the expectations. */
    snprintf(res, sizeof(res), "%s", r);
    for (char *p = res; *p; p++) {
        *p = *p == '\r' ? '\n' : *p;
    }
    return res;
}

static void test_hl7_map(void)
{
    CHECK_STR(hmap("{copy: {PID-2: PID-3.1, PID-4: PID-3, PID-6.1: PID-5}, "
                   "set: {MSH-5: EHR, 'PID-5.3': 'Q|A', 'ZPI-2.1': '{channel}'}, "
                   "remove: [PID-8, PID-99]}", adt),
              "MSH|^~\\&|LAB|H|EHR|H|20240101||ADT^A01|M1|P|2.5\n"
              "PID|1|42|42^^^MR~77^^^SS|42^^^MR|DOE^JANE^Q\\F\\A|DOE\\S\\JANE\\S\\Q\\T\\A|19800101|\n"
              "ZPI||in\n");
    /* Segments removed; the message ends as it did. */
    CHECK_STR(hmap("{remove: [NTE]}", "MSH|^~\\&|A\rNTE|1\rPID|1\rNTE|2"),
              "MSH|^~\\&|A\nPID|1");
    CHECK_STR(hmap("{remove: [NTE]}", "MSH|^~\\&|A\rNTE|1\rPID|1\rNTE|2\r"),
              "MSH|^~\\&|A\nPID|1\n");
    /* A missing source copies empty, or fails with strict. */
    CHECK_STR(hmap("{copy: {PID-2: PID-40}}", "MSH|^~\\&|A\rPID|1|x\r"),
              "MSH|^~\\&|A\nPID|1|\n");
    CHECK_STR(hmap("{copy: {PID-2: PID-40}, strict: true}", "MSH|^~\\&|A\rPID|1|x\r"),
              "ERR hl7-map: copy PID-2: the source PID-40 is absent (strict: true)");
    CHECK_STR(hmap("{set: {'OBX[3]-5': x}}", "MSH|^~\\&|A\rOBX|1\r"),
              "ERR hl7-map: set OBX[3]-5: OBX[3] does not exist (the message has 1 OBX "
              "segment(s)), and set can add only the next one");
    CHECK(strncmp(hmap("{set: {MSH-5: x}}", "not hl7"), "ERR hl7-map: the payload is not HL7: ",
                  37) == 0);

    CHECK_STR(load_err("hl7-map", "{}"),
              "t.yaml:1:1: hl7-map: nothing to do, expected at least one of: copy, set, remove");
    CHECK_STR(load_err("hl7-map", "{set: {MSH-2: x}}"),
              "t.yaml:1:8: service 'x' (hl7-map): set: 'MSH-2': MSH-2 holds the delimiters and "
              "cannot be changed");
    CHECK_STR(load_err("hl7-map", "{copy: {PID-2: MSH-1}}"),
              "t.yaml:1:16: service 'x' (hl7-map): copy: 'MSH-1': MSH-1 holds the delimiters "
              "and cannot be copied");
    CHECK_STR(load_err("hl7-map", "{remove: [PID-1, MSH]}"),
              "t.yaml:1:18: service 'x' (hl7-map): remove: 'MSH': the header segment cannot be "
              "removed");
    CHECK_STR(load_err("hl7-map", "{set: {PID-3: '{bad}'}}"),
              "t.yaml:1:15: service 'x' (hl7-map): set.PID-3: template '{bad}': unknown "
              "placeholder '{bad}', expected {id}, {channel}, {date}, {hour}, {time}, {ts} or "
              "{header.NAME}");
    CHECK(strncmp(load_err("hl7-map", "{remove: [pid-x]}"),
                  "t.yaml:1:11: service 'x' (hl7-map): remove: 'pid-x': ", 52) == 0);
}

/* ---- filter and validate ---- */

static const char *one(const char *type, const char *yaml, const char *payload)
{
    size_t n;
    return svc1(type, yaml, payload, strlen(payload), &n);
}

/* How many messages type built from yaml gives for payload (-1: an error). */
static long count_out(const char *type, const char *yaml, const char *payload)
{
    struct fx f;
    struct jn_msg_list l = {0};
    struct jn_msg *in;
    struct jn_err err;
    long n;

    fx_load(&f, type, yaml);
    if (fx_init(&f) != 0) {
        fx_free(&f);
        return -2;
    }
    in = jn_msg_new("orders-in", payload, strlen(payload));
    jn_msg_header_add(in, "X-Kind", "lab");
    n = f.svc.def->transform(&f.svc, in, &l, &err) == 0 ? (long)l.n : -1;
    if (n == 1) {
        CHECK(l.v[0] == in); /* passed on by reference, unchanged */
    }
    jn_msg_list_clear(&l);
    jn_msg_unref(&in);
    fx_free(&f);
    return n;
}

static void test_filter(void)
{
    const char *a01 = "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||42\r";
    const char *oru = "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rPID|1||42\r";

    CHECK_INT(count_out("filter", "{when: 'hl7(\"MSH-9.1\") == \"ADT\"'}", a01), 1);
    CHECK_INT(count_out("filter", "{when: 'hl7(\"MSH-9.1\") == \"ADT\"'}", oru), 0);
    CHECK_INT(count_out("filter", "{when: 'hl7(\"MSH-9.1\") == \"ADT\"'}", "not hl7"), 0);
    CHECK_INT(count_out("filter", "{when: 'header(\"x-kind\") =~ \"^la\" && channel == "
                        "\"orders-in\"'}", "x"), 1);
    CHECK_INT(count_out("filter", "{when: '!(header(\"X-Kind\") == \"lab\")'}", "x"), 0);
    CHECK_INT(count_out("filter", "{when: 'payload =~ \"urgent\"'}", "an urgent one"), 1);

    CHECK(strncmp(load_err("filter", "{}"), "t.yaml:1:1: service 'x' (filter): missing required "
                  "option 'when'", 64) == 0);
    CHECK_STR(load_err("filter", "{when: 'header(\"a\") = \"b\"'}"),
              "t.yaml:1:21: service 'x' (filter): when: unexpected '=' at column 13; did you "
              "mean '=='?");
    CHECK_STR(load_err("filter", "when: payload =~ \"(a?)+\"\n"),
              "t.yaml:1:18: service 'x' (filter): when: regex \"(a?)+\" at column 12 repeats "
              "without limit something that can match the empty string (as in (a?)+ or (a*)*); "
              "write it without the inner ?, * or empty alternative");
}

static const char order_schema[] =
    "schema_inline: |\n"
    "  type: object\n"
    "  required: [id, patient]\n"
    "  additionalProperties: false\n"
    "  properties:\n"
    "    id: {type: string, pattern: '^[0-9]+$'}\n"
    "    patient:\n"
    "      type: object\n"
    "      required: [name]\n"
    "      properties:\n"
    "        name: {type: string, minLength: 2, maxLength: 4}\n"
    "        born: {type: [string, 'null']}\n"
    "    qty: {type: integer, minimum: 1, maximum: 10}\n"
    "    price: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 100}\n"
    "    code: {enum: [1, two, null, true]}\n"
    "    tags: {type: array, items: {type: string, enum: [a, b]}}\n"
    "    note: {title: free text, description: anything, format: whatever}\n";

static void test_validate_json(void)
{
    /* Valid: passed on unchanged; 3.0 is an integer, 7 matches 7.0 in an enum. */
    CHECK_STR(one("validate", order_schema, "{\"id\":\"12\",\"patient\":{\"name\":\"Jo\","
                  "\"born\":null},\"qty\":3.0,\"price\":0.5,\"code\":\"two\",\"tags\":[\"a\"],"
                  "\"note\":[1]}"),
              "{\"id\":\"12\",\"patient\":{\"name\":\"Jo\",\"born\":null},\"qty\":3.0,"
              "\"price\":0.5,\"code\":\"two\",\"tags\":[\"a\"],\"note\":[1]}");
    /* Four code points in eight bytes fit maxLength 4. */
#define E4 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
    CHECK_STR(one("validate", order_schema, "{\"id\":\"1\",\"patient\":{\"name\":\"" E4 "\"},"
                  "\"code\":1.0}"),
              "{\"id\":\"1\",\"patient\":{\"name\":\"" E4 "\"},\"code\":1.0}");
#undef E4
    /* Every violation, in document order, with its path. */
    CHECK_STR(one("validate", order_schema, "{\"id\":\"x1\",\"patient\":{\"name\":\"J\","
                  "\"born\":5},\"qty\":11,\"price\":100,\"code\":false,\"tags\":[\"a\",\"c\",3],"
                  "\"extra\":{}}"),
              "ERR validate: 9 violations: $.id: \"x1\" does not match the pattern ^[0-9]+$; "
              "$.patient.name: 1 characters, fewer than minLength 2; $.patient.born: is integer,"
              " expected string or null; $.qty: 11 is more than the maximum 10; $.price: 100 is "
              "not less than the exclusiveMaximum 100; $.code: false is not one of "
              "[1,\"two\",null,true]; $.tags[1]: \"c\" is not one of [\"a\",\"b\"]; $.tags[2]: is "
              "integer, expected string; $.extra: is not allowed (additionalProperties: false)");
    CHECK_STR(one("validate", order_schema, "{\"patient\":{}}"),
              "ERR validate: 2 violations: $.id: is required but missing; $.patient.name: is "
              "required but missing");
    CHECK_STR(one("validate", order_schema, "{\"id\":\"1\",\"patient\":{\"name\":\"Janet\"},"
                  "\"qty\":1.5,\"price\":0}"),
              "ERR validate: 3 violations: $.patient.name: 5 characters, more than maxLength 4; "
              "$.qty: is number, expected integer; $.price: 0 is not more than the "
              "exclusiveMinimum 0");
    CHECK_STR(one("validate", order_schema, "[]"),
              "ERR validate: 1 violation: $: is array, expected object");
    CHECK_STR(one("validate", order_schema, "{\"id\":"),
              "ERR validate: the payload is not JSON: unexpected token near end of file (line 1 "
              "column 6)");
    CHECK_STR(one("validate", "schema_inline: '{\"type\": \"string\"}'", "\"s\""), "\"s\"");
    /* A schema in JSON, keys without spaces, through the YAML reader. */
    CHECK_STR(one("validate", "schema_inline: '{\"required\":[\"a\"],\"properties\":{\"a\":"
                  "{\"minimum\":2}}}'", "{\"a\":1}"),
              "ERR validate: 1 violation: $.a: 1 is less than the minimum 2");
    CHECK_STR(one("validate", "schema_inline: '{\"properties\":{\"a\":{\"minimum\":2}}}'",
                  "{\"a\":\"not a number\"}"),
              "{\"a\":\"not a number\"}"); /* minimum applies to numbers only */
}

static void test_validate_many(void)
{
    /* 200 violations: the reason holds what fits, whole entries, then the count of the rest. */
    struct jn_buf doc = JN_BUF_INIT;
    const char *r;

    jn_buf_puts(&doc, "[");
    for (int i = 0; i < 200; i++) {
        jn_buf_printf(&doc, "%s%d", i ? "," : "", i);
    }
    jn_buf_puts(&doc, "]");
    r = one("validate", "schema_inline: '{type: array, items: {type: string}}'", doc.p);
    CHECK(strncmp(r, "ERR validate: 200 violations: $[0]: is integer, expected string; $[1]: ",
                  70) == 0);
    CHECK(strlen(r) < JN_ERR_MSG_MAX + 4);
    CHECK(strstr(r, " more)") != NULL);
    {
        int listed = 0;
        long more = -1;
        const char *m = strstr(r, " (and ");
        for (const char *p = r; (p = strstr(p, ": is integer")) != NULL; p++) {
            listed++;
        }
        CHECK(m != NULL && sscanf(m, " (and %ld more)", &more) == 1);
        CHECK_INT(listed + more, 200);
        /* The last listed entry is whole. */
        CHECK(m != NULL && strncmp(m - 27, "is integer, expected string", 27) == 0);
    }
    jn_buf_reset(&doc);
}

static void test_validate_hl7(void)
{
    const char *yaml = "hl7: {segments: [MSH, PID, PV1], required: [MSH-9.1, PID-3, PID-5, "
                       "'PID-3[2].1']}";
    const char *ok = "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||42~77^^^SS||DOE\rPV1|1\r";

    CHECK_STR(one("validate", yaml, ok), ok);
    CHECK_STR(one("validate", yaml, "MSH|^~\\&|A|B|C|D|2024||^A01|1|P|2.5\rPID|1||42||\"\"\r"),
              "ERR validate: 4 violations: PV1: segment required but missing; MSH-9.1: required "
              "but empty; PID-5: required but null (\"\"); PID-3[2].1: required but missing");
    CHECK_STR(one("validate", yaml, "{\"not\": \"hl7\"}"),
              "ERR validate: 1 violation: the payload is not HL7: the message does not start "
              "with MSH (or FHS/BHS for a batch)");
    CHECK_STR(one("validate", "hl7: {segments: [ZPI]}", ok),
              "ERR validate: 1 violation: ZPI: segment required but missing");
}

static void test_validate_load_errors(void)
{
    CHECK_STR(load_err("validate", "{}"),
              "t.yaml:1:1: validate: give exactly one of schema, schema_inline or hl7 (none is "
              "set)");
    CHECK_STR(load_err("validate", "{schema_inline: '{}', hl7: {segments: [PID]}}"),
              "t.yaml:1:1: validate: give exactly one of schema, schema_inline or hl7 (more "
              "than one is set)");
    CHECK_STR(load_err("validate", "hl7: {}\n"),
              "t.yaml:1:6: validate: hl7: give segments, required or both");
    CHECK_STR(load_err("validate", "hl7: {segments: [MSH, Pid1]}\n"),
              "t.yaml:1:23: validate: hl7: segments: 'Pid1' is not a segment id (three of A-Z, "
              "0-9, such as PID)");
    /* Inline, one line: the column inside the quoted value. */
    CHECK_STR(load_err("validate", "schema_inline: '{type: objekt}'\n"),
              "t.yaml:1:24: validate: schema_inline: schema: type: 'objekt' is not a type "
              "(null, boolean, integer, number, string, array, object)");
    /* Every error of a block, each named (their line:col inside the config is checked by
     * jn-it-services_catalogue: a config read from a buffer has no file to find the block's
     * indentation in, so they point at the value). */
    {
        static const char *const want[] = {
            "properties.a: minLength: expected a whole number of 0 or more",
            "properties.b: pattern: regex (a)\\1 at column 1 uses a backreference (\\1), which "
            "is not supported: matching with one can take exponential time",
            "properties.b: items: expected one schema (a map); lists of schemas (tuples) are "
            "not supported",
            "properties.c: additionalProperties: only true or false is supported, not a schema",
            "properties.d: '$ref' is not supported by this validator (supported: type, "
            "required, properties, items, enum, pattern, minimum, maximum, exclusiveMinimum, "
            "exclusiveMaximum, minLength, maxLength, additionalProperties)",
            "properties.d: enum: expected a list of one or more values",
        };
        struct fx f;
        fx_load(&f, "validate", "schema_inline: |\n"
                                "    properties:\n"
                                "      a: {type: string, minLength: -1}\n"
                                "      b: {pattern: '(a)\\1', items: [x]}\n"
                                "      c: {additionalProperties: {type: string}}\n"
                                "      d: {$ref: '#/x', enum: []}\n");
        CHECK_INT(f.diag.n, 6);
        for (size_t i = 0; i < f.diag.n && i < 6; i++) {
            const char *head = "t.yaml:1:16: validate: schema_inline: schema: ";
            CHECK(strncmp(f.diag.msgs[i], head, strlen(head)) == 0);
            CHECK_STR(f.diag.msgs[i] + strlen(head), want[i]);
        }
        fx_free(&f);
    }
    /* A schema file: errors at its own positions; a missing one named. */
    CHECK_STR(load_err("validate", "schema: tests/data/no-such-schema.json"),
              "tests/data/no-such-schema.json: validate: cannot open: No such file or directory");
}

static void test_http_lookup_load(void)
{
    CHECK_STR(load_err("http-lookup", "{url: 'http://127.0.0.1:9/p/{header.id}', into: json, "
                       "cache: {ttl: 1m}}"), "");
    CHECK_STR(load_err("http-lookup", "{url: 'ftp://h/x', into: json}"),
              "t.yaml:1:7: service 'x' (http-lookup): url: the scheme 'ftp' is not supported: "
              "http:// only (https is not built yet)");
    CHECK_STR(load_err("http-lookup", "{url: '/relative/{id}', into: json}"),
              "t.yaml:1:7: service 'x' (http-lookup): url: '/relative/{id}' is not a URL, "
              "expected such as http://127.0.0.1:9000/patients/{header.patient-id}");
    CHECK_STR(load_err("http-lookup", "{url: 'http://h/{hl7.pid}', into: json}"),
              "t.yaml:1:7: service 'x' (http-lookup): url: http-lookup: {hl7.pid}: 'pid' does "
              "not start with a segment id (three of A-Z, 0-9); expected a path such as "
              "MSH-9.1, PID-3[2].1 or OBX[3]-5");
    CHECK_STR(load_err("http-lookup", "{url: 'http://h/', into: 'header.'}"),
              "t.yaml:1:26: service 'x' (http-lookup): into: 'header.': expected header.NAME (a "
              "header), json (the answer's members merged into a JSON payload) or json.PATH "
              "(put at a.b in it)");
    CHECK_STR(load_err("http-lookup", "{url: 'http://h/', into: json, field: 'a..b'}"),
              "t.yaml:1:39: service 'x' (http-lookup): field: 'a..b': expected a path in the "
              "answer such as name.family or items.0.id");
    CHECK(strncmp(load_err("http-lookup", "{url: 'http://h/', into: json, on_error: retry}"),
                  "t.yaml:1:42: service 'x' (http-lookup): on_error: ", 50) == 0);
}

static void test_hl7_to_json_named(void)
{
    /* Segments by id in the order first seen, occurrences in order; fields, components and
     * subcomponents by position, empty ones left out; an empty repetition kept as {}. */
    CHECK_STR(one("hl7-to-json", "{shape: named}",
                  "MSH|^~\\&|LAB||EHR||20240101||ADT^A01|M1|P|2.5\r"
                  "PID|1||42^^^MR~~77^^^SS||DOE^JANE||\"\"|A&B^^C&&D\r"
                  "OBX|1|ST|x||a\\T\\b\rNTE|1\rOBX|2\r"),
              "{\"MSH\":[{\"1\":\"|\",\"2\":\"^~\\\\&\",\"3\":[{\"1\":\"LAB\"}],"
              "\"5\":[{\"1\":\"EHR\"}],\"7\":[{\"1\":\"20240101\"}],\"9\":[{\"1\":\"ADT\","
              "\"2\":\"A01\"}],\"10\":[{\"1\":\"M1\"}],\"11\":[{\"1\":\"P\"}],"
              "\"12\":[{\"1\":\"2.5\"}]}],"
              "\"PID\":[{\"1\":[{\"1\":\"1\"}],\"3\":[{\"1\":\"42\",\"4\":\"MR\"},{},"
              "{\"1\":\"77\",\"4\":\"SS\"}],\"5\":[{\"1\":\"DOE\",\"2\":\"JANE\"}],"
              "\"7\":[{\"1\":null}],\"8\":[{\"1\":{\"1\":\"A\",\"2\":\"B\"},"
              "\"3\":{\"1\":\"C\",\"3\":\"D\"}}]}],"
              "\"OBX\":[{\"1\":[{\"1\":\"1\"}],\"2\":[{\"1\":\"ST\"}],\"3\":[{\"1\":\"x\"}],"
              "\"5\":[{\"1\":\"a&b\"}]},{\"1\":[{\"1\":\"2\"}]}],"
              "\"NTE\":[{\"1\":[{\"1\":\"1\"}]}]}");
    CHECK_STR(one("hl7-to-json", "{shape: named}", "not hl7"),
              "ERR the message does not start with MSH (or FHS/BHS for a batch)");
    /* json-to-hl7 reads the named shape: back to the same bytes when segments of one id are
     * together, the last field is not empty and segments end with CR. */
    {
        const char *msg = "MSH|^~\\&|LAB||EHR||20240101||ADT^A01|M1|P|2.5\r"
                          "PID|1||42^^^MR~~77^^^SS||DOE^JANE|\"\"|A&B^^C&&D|x\\F\\y\r"
                          "OBX|1|ST\rOBX|2|NM||7\r";
        char named[2048];
        snprintf(named, sizeof(named), "%s", one("hl7-to-json", "{shape: named}", msg));
        CHECK(named[0] == '{');
        CHECK_STR(one("json-to-hl7", "{}", named), msg);
    }
    CHECK_STR(one("json-to-hl7", "{}", "{\"MSH\":[{\"1\":\"|\",\"2\":\"^~\\\\&\",\"9\":"
                  "[{\"1\":\"ADT\"}]}],\"ZPI\":[{\"2\":[{\"1\":\"a|b\",\"3\":{\"2\":\"s\"}},"
                  "{}]}]}"),
              "MSH|^~\\&|||||||ADT\rZPI||a\\F\\b^^&s~\r");
    CHECK_STR(one("json-to-hl7", "{}", "{\"PID\":[{}]}"),
              "ERR PID: the first segment must be MSH, FHS or BHS");
    CHECK_STR(one("json-to-hl7", "{}", "{\"MSH\":[{\"1\":\"|\",\"2\":\"^~\\\\&\",\"x\":1}]}"),
              "ERR MSH[0]: 'x' is not a position (1, 2, ...)");
    CHECK_STR(one("json-to-hl7", "{}", "{\"MSH\":[{\"1\":\"|\",\"2\":\"^~\\\\&\",\"3\":\"A\"}]}"),
              "ERR MSH[0].3: a field is a non-empty list of repetitions");
    CHECK(strncmp(load_err("hl7-to-json", "{shape: tree}"),
                  "t.yaml:1:9: service 'x' (hl7-to-json): shape: ", 46) == 0);
}

static void test_validate_alloc(void)
{
    fail_walk("filter", "{when: 'header(\"X-In\") == \"v\" && hl7(\"PID-3\") != \"\"'}",
              "MSH|^~\\&|A\rPID|1||42\r", "MSH|^~\\&|A\rPID|1||42\r", "X-In", "v", 1);
    fail_walk("validate", "hl7: {segments: [PID], required: [PID-3, MSH-3]}",
              "MSH|^~\\&|A\rPID|1||42\r", "MSH|^~\\&|A\rPID|1||42\r", "X-In", "v", 2);
    fail_walk("validate", "schema_inline: '{type: object, required: [a], properties: {a: "
              "{type: string, pattern: \"^x\"}}}'", "{\"a\":\"xy\"}", "{\"a\":\"xy\"}", "X-In",
              "v", 10);
}

int main(void)
{
    test_registry();
    test_msg_list();
    test_json_map_example();
    test_json_map_values();
    test_json_map_paths();
    test_json_map_errors();
    test_issue_12_json_map_prune_empty();
    test_json_map_header_bytes();
    test_json_map_load_errors();
    test_json_map_depth();
    test_alloc_failures();
    test_set_header();
    test_delay();
    test_csv_to_json();
    test_msgpack_json();
    test_split();
    test_template();
    test_hl7_map();
    test_filter();
    test_validate_json();
    test_validate_many();
    test_validate_hl7();
    test_validate_load_errors();
    test_validate_alloc();
    test_http_lookup_load();
    test_hl7_to_json_named();
    TEST_MAIN_END();
}
