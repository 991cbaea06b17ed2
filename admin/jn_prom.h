/*
 * jn_prom: the Prometheus text exposition format (version 0.0.4), written into a jn_buf.
 *
 * One family is a # HELP line, a # TYPE line and its samples, all together (the format wants a
 * family's samples in one group). Label values and HELP text are escaped as the format says
 * (backslash, double quote and line feed in label values; backslash and line feed in HELP), so
 * a channel named with a quote cannot break the scrape. Model: the format's own description
 * (prometheus.io, "Exposition formats") and promtool's checks; no client library.
 *
 * Pure functions over a buffer; any thread. Each returns 0, or JN_ENOMEM when an append failed
 * (the buffer is then short: callers OR the results and drop the buffer on failure).
 */
#ifndef JN_PROM_H
#define JN_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "jn_buf.h"
#include "jn_hist.h"

/* Starts family name of type ("counter", "gauge", "histogram", "untyped") with help. */
int jn_prom_family(struct jn_buf *b, const char *name, const char *type, const char *help);

/*
 * One sample: name{k0="v0",k1="v1"} value. labels: nlabels pairs as {key, value, key,
 * value...} (values escaped here; keys must be valid label names). suffix is appended to the
 * name (a histogram's "_bucket", "_sum", "_count"), or NULL.
 */
int jn_prom_sample(struct jn_buf *b, const char *name, const char *suffix,
                   const char *const *labels, size_t nlabels, double value);
/* The same with an unsigned integer value, printed exactly. */
int jn_prom_sample_u(struct jn_buf *b, const char *name, const char *suffix,
                     const char *const *labels, size_t nlabels, uint64_t value);

/* The samples of one histogram (its family started with type "histogram"): a cumulative
 * name_bucket{labels...,le="..."} per bound and le="+Inf", then name_sum and name_count.
 * At most JN_PROM_HIST_LABELS label pairs (JN_EINVAL past that). */
#define JN_PROM_HIST_LABELS 3
int jn_prom_histogram(struct jn_buf *b, const char *name, const char *const *labels,
                      size_t nlabels, const struct jn_hist *h);

/* Appends s to b escaped as a label value. */
int jn_prom_escape_label(struct jn_buf *b, const char *s);

#endif
