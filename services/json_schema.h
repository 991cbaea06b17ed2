/*
 * json_schema: a JSON Schema subset, compiled from a YAML/JSON node tree (broker/jn_yaml, so
 * every keyword keeps its file:line:col) and checked against jansson values. Used by the
 * validate service (services/validate.c); a header of its own so the unit test and the fuzz
 * target reach the compiler without a broker.
 *
 * Keywords: type (a name or a list of names: null, boolean, integer, number, string, array,
 * object; integer is a number without a fraction, 1.0 included), required, properties, items
 * (one schema for every element), enum, pattern (POSIX extended regex, unanchored, vetted as
 * route `=~` regexes are: adapters/jn_cond.h), minimum, maximum, exclusiveMinimum,
 * exclusiveMaximum (numbers, draft 6 style), minLength, maxLength (in Unicode code points),
 * additionalProperties (true or false; not a schema). Annotations are accepted and ignored:
 * $schema, $id, $comment, title, description, default, examples, format (an annotation in
 * JSON Schema 2019-09 and later). Any other keyword ($ref, oneOf, minItems ...) is an error at
 * load, so no one believes a rule is checked that is not.
 *
 * Scalars of a YAML schema are typed as YAML writes them: a plain 12 is a number, "12" a
 * string; true/false/null plain are JSON's. A schema in JSON syntax reads the same (JSON is
 * YAML's flow style). Like the config, ${ENV} in a schema's scalars is substituted (write $${
 * for a literal ${).
 *
 * Threads: a compiled schema is read-only; jn_schema_check may run on many threads at once.
 */
#ifndef JN_JSON_SCHEMA_H
#define JN_JSON_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "jn_buf.h"
#include "jn_diag.h"
#include "jn_yaml.h"

struct jn_schema;

/*
 * Maps a node's position in the text that was parsed to where the user sees it (an inline
 * schema inside a config). NULL: positions as read.
 */
typedef void (*jn_schema_pos_fn)(void *arg, const struct jn_pos *in, struct jn_pos *out);

/*
 * Compiles root. Every error is added to d ("schema: properties.age: minimum: ...") at the
 * offending node's position, through map when given; returns NULL when there was one (or on
 * out of memory: d->oom set). Nodes are borrowed only during the call.
 */
struct jn_schema *jn_schema_compile(const struct jn_node *root, jn_schema_pos_fn map, void *arg,
                                    struct jn_diag *d);
void jn_schema_free(struct jn_schema *s); /* NULL is a no-op */

/*
 * Checks v against s. Every violation is counted; they are appended to out (may be NULL) as
 * "PATH: why; PATH: why" ($ is the document, $.a.b[2] a member and an element), whole entries
 * in document order while out stays within max bytes, the rest only counted; *listed (may be
 * NULL) is how many were written. Returns the number of violations (0: valid), or JN_ENOMEM.
 */
long jn_schema_check(const struct jn_schema *s, json_t *v, struct jn_buf *out, size_t max,
                     size_t *listed);

#endif
