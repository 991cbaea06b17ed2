/*
 * hl7-to-json: an HL7 v2 message (or batch) becomes the JSON document described in
 * adapters/hl7.h and docs/hl7.md, keeping repetitions, components, subcomponents, explicit
 * nulls (null) apart from empty values (""), and segment ends, so json-to-hl7 gives the same
 * bytes back.
 *
 *   services:
 *     adt-json:
 *       type: hl7-to-json
 *       strict: false      # true: segments must end with CR only
 *       shape: named       # positional (the default): the lossless shape json-to-hl7 reads
 *
 * The output is a copy of the message (same id and headers) with the JSON as payload and
 * Content-Type: application/json. A payload that is not HL7 is an error with the codec's
 * reason, which dead-letters the message.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_services.h"

enum { SHAPE_POSITIONAL, SHAPE_NAMED };
static const char *const shapes[] = {"positional", "named", NULL};

struct hl7_to_json_conf {
    bool strict;
    int shape;
};

static const struct jn_opt hl7_to_json_opts[] = {
    JN_OPT_BOOL("strict", "false", JN_OPT_RELOADABLE, struct hl7_to_json_conf, strict,
                "Segments must end with CR only; LF and CRLF are errors"),
    JN_OPT_ENUM("shape", "positional", shapes, JN_OPT_RELOADABLE, struct hl7_to_json_conf, shape,
                "positional: {\"segments\": [[\"PID\", ...]]}, lossless, what json-to-hl7 "
                "reads; named: segments by id, fields and components by position "
                "({\"PID\": [{\"5\": [{\"1\": \"DOE\"}]}]}), for mappings (docs/hl7.md)"),
    JN_OPT_END
};

static int hl7_to_json_transform(const struct jn_service *svc, struct jn_msg *in,
                                 struct jn_msg_list *out, struct jn_err *err)
{
    const struct hl7_to_json_conf *c = svc->conf;
    struct jn_hl7_msg *h = NULL;
    struct jn_msg *m;
    json_t *j;
    char *text, *p;
    size_t n;
    int rc;

    rc = jn_hl7_parse(in->payload, in->len, c->strict ? JN_HL7_STRICT : 0, &h, err);
    if (rc != 0) {
        return rc;
    }
    j = c->shape == SHAPE_NAMED ? jn_hl7_to_json_named(h) : jn_hl7_to_json(h);
    jn_hl7_free(h);
    if (j == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (text == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    /* jansson allocates with malloc; the message owns jn_malloc'd memory. */
    n = strlen(text);
    p = jn_malloc(n + 1);
    if (p != NULL) {
        memcpy(p, text, n + 1);
    }
    free(text);
    m = jn_msg_copy(in);
    if (p == NULL || m == NULL) {
        jn_free(p);
        jn_msg_unref(&m);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_msg_set_payload(m, p, n);
    if (jn_msg_header_set(m, "Content-Type", "application/json") != 0) {
        jn_msg_unref(&m);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    return jn_msg_list_push(out, m);
}

const struct jn_service_def jn_service_hl7_to_json = {
    .name = "hl7-to-json",
    .desc = "HL7 v2 message -> JSON (repetitions, components, null vs empty kept; docs/hl7.md)",
    .opts = hl7_to_json_opts,
    .conf_size = sizeof(struct hl7_to_json_conf),
    .transform = hl7_to_json_transform,
};
