/*
 * jn_testrun_int: what cli/jn_testrun.c (test files, running, reports) and
 * cli/jn_testrun_match.c (the checks on one message) share.
 *
 * Each check appends one line per difference to out, every line starting with prefix (the
 * indent and the destination, "    ehr-out[0]: "), and returns how many it found (0: it
 * holds). A check whose text cannot be stored (no memory) still counts its differences.
 */
#ifndef JN_TESTRUN_INT_H
#define JN_TESTRUN_INT_H

#include <stddef.h>

#include "jn_buf.h"
#include "jn_msg.h"
#include "jn_spec.h"
#include "jn_yaml.h"

/* At most this many differences are listed per check (the count says the rest). */
#define JN_TESTRUN_MAX_DIFFS 10

/* `payload`: exactly want (wlen bytes); a short unified diff by lines when it differs. */
int jn_testrun__payload(const char *want, size_t wlen, const struct jn_msg *m, const char *prefix,
                     struct jn_buf *out);
/* `json`: the payload parsed as JSON holds want (a YAML node) as a subset: every key of a map
 * matches, a sequence matches an array of the same length element by element, a quoted scalar
 * is a string, a plain one a number, true/false, null, or else a string. */
int jn_testrun__json(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                  struct jn_buf *out);
/* `hl7`: a map of path (adapters/hl7.h) -> decoded value; a null value: the element is absent.
 * Paths were checked by jn_testrun__hl7_path at load. */
int jn_testrun__hl7(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                 struct jn_buf *out);
/* `headers`: a map of name (any case) -> value; a null value: no such header. */
int jn_testrun__headers(const struct jn_node *want, const struct jn_msg *m, const char *prefix,
                     struct jn_buf *out);

/* Appends p (n bytes) as a double-quoted, readable string: escapes for control bytes, quotes,
 * backslashes and bytes that are not UTF-8; cut after max bytes with "...". */
void jn_testrun__quote(struct jn_buf *out, const void *p, size_t n, size_t max);

/* ---- running a message (jn_testrun.c; ctl record uses it too) ---- */

struct jn_testrun_dead {
    char route[128]; /* "" when unrouted */
    char reason[JN_ERR_MSG_MAX];
};

/* What the broker would have made of a message. */
struct jn_testrun_outcome {
    const struct jn_config *cfg;
    struct jn_msg_list *got; /* per channel index: what each destination would be sent */
    struct jn_testrun_dead *dead;
    size_t ndead, capdead;
    const char *filtered[16]; /* routes whose services dropped it (the first 16) */
    size_t nfiltered;
    int dropped;   /* unrouted: drop */
    int oom;
};

/* Routes m (its id set) from IN channel index src as the broker would, into o (o->got: one
 * list per channel index, cfg->nchannels of them, empty at the start). 0, or JN_ENOMEM. */
struct jn_service;
struct jn_idgen;
int jn_testrun__route(const struct jn_config *cfg, const struct jn_service *svcs,
                      struct jn_idgen *ids, size_t src, struct jn_msg *m,
                      struct jn_testrun_outcome *o);

#endif
