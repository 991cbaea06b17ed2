/*
 * jn_prom: Prometheus text exposition 0.0.4 (see jn_prom.h). Numbers: integers exactly, other
 * values with 15 digits, or 17 when 15 do not read back as the same double, and +Inf, -Inf and
 * NaN spelled as the format wants.
 */
#include "jn_prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "jn_err.h"

static int put_escaped(struct jn_buf *b, const char *s, int label)
{
    int rc = 0;

    for (; *s && rc == 0; s++) {
        switch (*s) {
        case '\\':
            rc = jn_buf_puts(b, "\\\\");
            break;
        case '\n':
            rc = jn_buf_puts(b, "\\n");
            break;
        case '"':
            rc = label ? jn_buf_puts(b, "\\\"") : jn_buf_putc(b, '"');
            break;
        default:
            rc = jn_buf_putc(b, *s);
            break;
        }
    }
    return rc ? JN_ENOMEM : 0;
}

int jn_prom_escape_label(struct jn_buf *b, const char *s)
{
    return put_escaped(b, s, 1);
}

int jn_prom_family(struct jn_buf *b, const char *name, const char *type, const char *help)
{
    int rc = jn_buf_printf(b, "# HELP %s ", name) | put_escaped(b, help, 0) |
             jn_buf_printf(b, "\n# TYPE %s %s\n", name, type);

    return rc ? JN_ENOMEM : 0;
}

static int head(struct jn_buf *b, const char *name, const char *suffix,
                const char *const *labels, size_t nlabels)
{
    int rc = jn_buf_puts(b, name) | (suffix ? jn_buf_puts(b, suffix) : 0);

    if (nlabels > 0) {
        rc |= jn_buf_putc(b, '{');
        for (size_t i = 0; i < nlabels; i++) {
            rc |= jn_buf_printf(b, "%s%s=\"", i ? "," : "", labels[2 * i]);
            rc |= put_escaped(b, labels[2 * i + 1] ? labels[2 * i + 1] : "", 1);
            rc |= jn_buf_putc(b, '"');
        }
        rc |= jn_buf_putc(b, '}');
    }
    return rc;
}

int jn_prom_sample(struct jn_buf *b, const char *name, const char *suffix,
                   const char *const *labels, size_t nlabels, double value)
{
    int rc = head(b, name, suffix, labels, nlabels);

    if (isnan(value)) {
        rc |= jn_buf_puts(b, " NaN\n");
    } else if (isinf(value)) {
        rc |= jn_buf_puts(b, value > 0 ? " +Inf\n" : " -Inf\n");
    } else {
        /* The shortest of %.15g and %.17g that reads back as the same double. */
        char num[40];
        snprintf(num, sizeof(num), "%.15g", value);
        if (strtod(num, NULL) != value) {
            snprintf(num, sizeof(num), "%.17g", value);
        }
        rc |= jn_buf_printf(b, " %s\n", num);
    }
    return rc ? JN_ENOMEM : 0;
}

int jn_prom_sample_u(struct jn_buf *b, const char *name, const char *suffix,
                     const char *const *labels, size_t nlabels, uint64_t value)
{
    int rc = head(b, name, suffix, labels, nlabels) | jn_buf_printf(b, " %" PRIu64 "\n", value);

    return rc ? JN_ENOMEM : 0;
}

int jn_prom_histogram(struct jn_buf *b, const char *name, const char *const *labels,
                      size_t nlabels, const struct jn_hist *h)
{
    const char *lab[2 * (JN_PROM_HIST_LABELS + 1)];
    char le[32];
    uint64_t cum = 0;
    int rc = 0;

    if (nlabels > JN_PROM_HIST_LABELS) {
        return JN_EINVAL;
    }
    for (size_t i = 0; i < 2 * nlabels; i++) {
        lab[i] = labels[i];
    }
    lab[2 * nlabels] = "le";
    lab[2 * nlabels + 1] = le;
    for (size_t i = 0; i < JN_HIST_BUCKETS; i++) {
        cum += h->n[i];
        snprintf(le, sizeof(le), "%g", jn_hist_bounds[i]);
        rc |= jn_prom_sample_u(b, name, "_bucket", lab, nlabels + 1, cum);
    }
    snprintf(le, sizeof(le), "+Inf");
    rc |= jn_prom_sample_u(b, name, "_bucket", lab, nlabels + 1, h->count);
    rc |= jn_prom_sample(b, name, "_sum", labels, nlabels, h->sum);
    rc |= jn_prom_sample_u(b, name, "_count", labels, nlabels, h->count);
    return rc ? JN_ENOMEM : 0;
}
