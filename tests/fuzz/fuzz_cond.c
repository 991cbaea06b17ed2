/*
 * libFuzzer target for jn_cond: any bytes as a route condition. What compiles is evaluated
 * against a fixed message (headers, an id, a payload with a NUL byte), so both the parser and
 * the evaluator see hostile input. Modelled on Fluent Bit's tests/internal/fuzzers.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... tests/fuzz/fuzz_cond.c
 *   ./fuzz_cond -max_total_time=60 tests/fuzz/corpus/cond
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jn_cond.h"
#include "jn_diag.h"
#include "jn_mem.h"
#include "jn_msg.h"

static struct jn_msg *fixed_msg(void)
{
    static const char body[] = "{\"type\":\"order\"}\0tail";
    struct jn_msg *m = jn_msg_new("orders-in", body, sizeof(body) - 1);

    if (m == NULL) {
        abort();
    }
    strcpy(m->id, "01J9ZQ4X5YB7M2K8N3P6R1T0VW");
    if (jn_msg_header_add(m, "Content-Type", "application/json") != 0 ||
        jn_msg_header_add(m, "X-Empty", "") != 0) {
        abort();
    }
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Built once and kept: the fuzzer runs for the life of the process. */
    static struct jn_msg *m;
    static const struct jn_pos pos = {"fuzz.yaml", 1, 7};
    struct jn_diag d;
    struct jn_cond *c;
    char *expr;

    if (m == NULL) {
        m = fixed_msg();
    }
    /* jn_cond_compile takes a C string; an embedded NUL just ends it early. */
    expr = jn_malloc(size + 1);
    if (expr == NULL) {
        return 0;
    }
    memcpy(expr, data, size);
    expr[size] = '\0';

    jn_diag_init(&d);
    c = jn_cond_compile(expr, &pos, &d);
    if (c != NULL) {
        int r = jn_cond_eval(c, m);
        if ((r != 0 && r != 1) || d.n != 0) {
            abort(); /* eval returns 0 or 1; a compiled condition leaves no errors */
        }
        jn_cond_free(c);
    } else if (d.n != 1 || d.msgs[0] == NULL || strncmp(d.msgs[0], "fuzz.yaml:1:", 12) != 0) {
        abort(); /* a rejected condition says why, exactly once, with a position */
    }
    jn_diag_free(&d);
    jn_free(expr);
    return 0;
}
