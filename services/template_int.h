/*
 * template_int: the {json.a.b} and {hl7.PID-5.1} placeholders of the template service
 * (services/template.c), shared with http-lookup's url. See template.c for what they read.
 */
#ifndef JN_TEMPLATE_INT_H
#define JN_TEMPLATE_INT_H

#include <jansson.h>
#include <stdbool.h>

#include "jn_buf.h"
#include "jn_err.h"
#include "jn_msg.h"

/* One render: the message, its payload parsed on the first {json.}. Zero json and json_tried;
 * json_decref(json) after the render. */
struct jn_svc_fields {
    const char *who;         /* names the service in reasons ("template") */
    bool strict;             /* a missing field is an error (else it renders as "") */
    const char *strict_note; /* appended to that error, e.g. " (strict: true)" */
    const struct jn_msg *m;
    json_t *json;
    int json_tried;
};

/* A jn_template_ext_fn for {json.PATH} and {hl7.PATH}; ctx is a struct jn_svc_fields, or NULL
 * when checking (out NULL). */
int jn_svc__fields_ext(void *ctx, const char *name, size_t n, struct jn_buf *out,
                       struct jn_err *err);
/* Walks "a.b.0.c" (n bytes) from v: object keys, array elements by number; NULL when a step
 * is missing. Borrowed from v. */
json_t *jn_svc__json_walk(json_t *v, const char *path, size_t n);

#endif
