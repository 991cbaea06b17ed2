/*
 * libFuzzer target for the validate service's schema compiler (services/json_schema.c): the
 * input is a schema as a user writes it (YAML or JSON text, read by jn_yaml) and, after the
 * first NUL byte if there is one, a JSON document. What compiles is checked against the
 * document (when it parses) and against a few fixed values, so both the compiler and the
 * checker see hostile input.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... tests/fuzz/fuzz_schema.c
 *   ./fuzz_schema -max_total_time=60 tests/fuzz/corpus/schema
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_diag.h"
#include "jn_yaml.h"
#include "json_schema.h"

static void check_one(const struct jn_schema *s, json_t *v)
{
    struct jn_buf out = JN_BUF_INIT;
    size_t listed = 0;
    long n;

    if (v == NULL) {
        return;
    }
    n = jn_schema_check(s, v, &out, 400, &listed);
    /* Listed entries are whole and fit; none listed means no text. */
    if (n < 0 || (long)listed > n || out.len > 400 || (listed == 0) != (out.len == 0)) {
        abort();
    }
    jn_buf_reset(&out);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    struct jn_diag d;
    struct jn_node *root;
    struct jn_schema *s;

    jn_diag_init(&d);
    root = jn_yaml_load_buf("fuzz.yaml", (const char *)data, slen, &d);
    if (root == NULL) {
        jn_diag_free(&d);
        return 0;
    }
    s = jn_schema_compile(root, NULL, NULL, &d);
    jn_node_free(root);
    if (s == NULL) {
        if (d.nerr == 0 && !d.oom) {
            abort(); /* a refused schema says why */
        }
        jn_diag_free(&d);
        return 0;
    }
    if (nul != NULL) {
        json_error_t je;
        check_one(s, json_loadb((const char *)nul + 1, size - slen - 1, JSON_DECODE_ANY, &je));
    }
    check_one(s, json_loads("{\"a\":[1,2.5,\"x\",null,true,{\"b\":{}}],\"c\":\"\xc3\xa9\"}", 0,
                            NULL));
    check_one(s, json_loads("[[[[[[]]]]]]", 0, NULL));
    check_one(s, json_loads("-1e300", JSON_DECODE_ANY, NULL));
    jn_schema_free(s);
    jn_diag_free(&d);
    return 0;
}
