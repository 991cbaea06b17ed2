/*
 * libFuzzer target for the config loader: any bytes as junction.yaml. Covers libyaml events
 * to our node tree, ${ENV} substitution, every option table, the cross-reference pass and the
 * condition compiler. Every input must end in a config or in diagnostics, never a crash/leak.
 *
 *   ./fuzz_config -max_total_time=60 -dict=tests/fuzz/config.dict tests/fuzz/corpus/config
 */
#include <stddef.h>
#include <stdint.h>

#include "jn_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jn_diag d;
    struct jn_config *c;

    jn_diag_init(&d);
    c = jn_config_load_buf("fuzz.yaml", (const char *)data, size, &d);
    if (c == NULL && d.n == 0 && !d.oom) {
        __builtin_trap(); /* a refused config must say why */
    }
    jn_config_free(c);
    jn_diag_free(&d);
    return 0;
}
