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

/*
 * Placeholders a caller adds (the template service's {json.a.b} and {hl7.PID-5.1}): ext is
 * asked about every name the built-ins above do not know (name, n bytes, without the braces).
 * It returns 1 when the name is not its own (then the template is refused as with an unknown
 * placeholder), 0 when it is, after appending the value to out, or a negative JN_E* with err
 * set (the render fails with it). When checking, out is NULL: ext only says whether it knows
 * the name (0), does not (1), or finds it malformed (JN_EINVAL with err).
 */
typedef int (*jn_template_ext_fn)(void *ctx, const char *name, size_t n, struct jn_buf *out,
                                  struct jn_err *err);
int jn_template_render_ext(const char *tmpl, const struct jn_msg *m, jn_template_ext_fn ext,
                           void *ctx, struct jn_buf *out, struct jn_err *err);
int jn_template_check_ext(const char *tmpl, jn_template_ext_fn ext, void *ctx,
                          struct jn_err *err);

#endif
