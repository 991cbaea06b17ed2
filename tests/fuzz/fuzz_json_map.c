/*
 * libFuzzer target: the fuzz input is the payload of a message run through json-map.
 *
 * One fixed config uses every operation (copy, rename, set, set_json, remove) with member
 * paths, indexes, escapes and a destination inside its source, once lenient (pruning the objects
 * it empties) and once strict (keeping them).
 * Every successful output then goes through an identity json-map: parsing our own output and
 * writing it again must give the same bytes, which checks the serializer (escapes, numbers, key
 * order) against jansson's parser. Finally the same input runs with an allocation failing at a
 * point chosen by the input, to walk the cleanup paths under ASan.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... ; ./fuzz_json_map tests/fuzz/corpus/json_map
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jn_mem.h"
#include "jn_service.h"
#include "jn_services.h"
#include "jn_yaml.h"

static const char *const cfg_lenient =
    "type: json-map\n"
    "copy: {id: order_id, 'items[0]': first, a: a.b, 'x\\.y': 'esc\\[1\\]'}\n"
    "rename: {customer.name: customer_name, 'items[1]': 'moved[0]', b: b.c.d}\n"
    "set: {source: \"{channel}/{header.X-Sku}\", 'items[1].sku': \"{id}\", 'tags[0]': t}\n"
    "set_json: {meta.v: '2', 'm[0]': '{\"k\":[1,2.5,\"s\",null,true,-0.0,1e300]}'}\n"
    "remove: [debug, 'items[0]', 'a.b.b', 'tags[3]']\n";

static const char *const cfg_strict =
    "type: json-map\n"
    "strict: true\n"
    "prune_empty: false\n"
    "copy: {id: order_id}\n"
    "rename: {'customer.name': customer_name}\n"
    "remove: ['items[0]']\n";

static const char *const cfg_identity =
    "type: json-map\n"
    "remove: [__fuzz_absent__]\n";

static struct jn_service svc_lenient, svc_strict, svc_identity;

/* Builds a service the way the config loader does; aborts on any error (a bug in the target). */
static void build(struct jn_service *svc, const char *yaml)
{
    static const char *const skip[] = {"type", NULL};
    static char name[] = "fuzz";
    const struct jn_service_def *def = jn_service_def_find("json-map");
    struct jn_diag d;
    struct jn_node *root;
    struct jn_err err;

    jn_diag_init(&d);
    root = jn_yaml_load_buf("fuzz.yaml", yaml, strlen(yaml), &d);
    memset(svc, 0, sizeof(*svc));
    svc->def = def;
    svc->name = name;
    svc->conf = jn_calloc(1, def->conf_size);
    if (root == NULL || svc->conf == NULL ||
        jn_opt_parse(def->opts, root, svc->conf, "fuzz", 0, skip, root, &d) != 0 ||
        def->check(svc->conf, root, &d) != 0 || def->init(svc, &err) != 0) {
        jn_diag_print(&d, stderr);
        abort();
    }
    jn_node_free(root);
    jn_diag_free(&d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    build(&svc_lenient, cfg_lenient);
    build(&svc_strict, cfg_strict);
    build(&svc_identity, cfg_identity);
    return 0;
}

/* Runs m through svc; returns rc and the output (a new reference) in *out. */
static int run(const struct jn_service *svc, struct jn_msg *m, struct jn_msg **out)
{
    struct jn_msg_list l = {0};
    struct jn_err err;
    int rc;

    jn_err_clear(&err);
    *out = NULL;
    rc = svc->def->transform(svc, m, &l, &err);
    if (rc == 0) {
        if (l.n != 1) {
            abort();
        }
        *out = jn_msg_ref(l.v[0]);
    } else if (l.n != 0 || err.msg[0] == '\0' || (rc != JN_EINVAL && rc != JN_ENOMEM)) {
        abort();
    }
    jn_msg_list_clear(&l);
    return rc;
}

static void check_fixed_point(struct jn_msg *out)
{
    struct jn_msg *again;

    if (run(&svc_identity, out, &again) != 0) {
        abort(); /* our own output must parse as a JSON object */
    }
    if (again->len != out->len || memcmp(again->payload, out->payload, out->len) != 0) {
        abort();
    }
    jn_msg_unref(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_msg *m = jn_msg_new("orders-in", data, size);
    struct jn_msg *out;

    if (m == NULL) {
        return 0;
    }
    memcpy(m->id, "01J9Z0000000000000000000AB", JN_ID_LEN + 1);
    jn_msg_header_add(m, "X-Sku", "sku-\xc3\xa9");

    if (run(&svc_lenient, m, &out) == 0) {
        check_fixed_point(out);
        jn_msg_unref(&out);
    }
    if (run(&svc_strict, m, &out) == 0) {
        check_fixed_point(out);
        jn_msg_unref(&out);
    }
    /* The same input with the Nth allocation (and every later one) failing. */
    if (size > 0) {
        jn_mem_fail_after(data[size - 1] % 32);
        if (run(&svc_lenient, m, &out) == 0) {
            jn_msg_unref(&out);
        }
        jn_mem_fail_after(-1);
    }
    jn_msg_unref(&m);
    return 0;
}
