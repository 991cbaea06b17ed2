/*
 * jn_template: placeholders in file names, topics and header values, rendered from a message.
 * Used by channels and services alike, so it depends on jn_msg only.
 */
#ifndef JN_TEMPLATE_H
#define JN_TEMPLATE_H

#include "jn_buf.h"
#include "jn_err.h"
#include "jn_msg.h"

/* Templates: "{id}", "{channel}", "{date}" (YYYY-MM-DD, UTC), "{hour}" (HH, UTC: a rotation
 * key for file OUT's append mode), "{time}" (HHMMSS), "{ts}" (receive time, ms), "{header.NAME}" (empty when absent), "{{" and "}}"
 * for braces. Appends to out; JN_EINVAL with err for an unknown placeholder. */
int jn_template_render(const char *tmpl, const struct jn_msg *m, struct jn_buf *out,
                       struct jn_err *err);
/* Checks a template's placeholders at load time; 0 or JN_EINVAL with err. */
int jn_template_check(const char *tmpl, struct jn_err *err);

#endif
