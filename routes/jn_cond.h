/*
 * jn_cond: the route condition language (`when:`), compiled at load, evaluated per message.
 *
 *   when: channel == "orders-in" && header("Content-Type") =~ "^application/json"
 *
 * Operands: string literals ("..." or '...', with \" \' \\ \n \t \r escapes), `channel` (the
 * source channel), `id`, `payload` (the bytes as text), `header("Name")` (case-insensitive; an
 * absent header is the empty string). Operators, loosest first: `||`, `&&`, `!` (prefix),
 * comparisons `==`, `!=`, `=~` and `!~` (POSIX extended regex; the right side must be a string
 * literal, compiled at load), parentheses. An operand on its own is true when it is not empty.
 *
 * Errors name the column inside the expression, offset from the node's position.
 */
#ifndef JN_COND_H
#define JN_COND_H

#include "jn_diag.h"
#include "jn_msg.h"

struct jn_cond;

/* pos: where the expression text starts in the config (the first character of the value).
 * Returns NULL with errors in d. */
struct jn_cond *jn_cond_compile(const char *expr, const struct jn_pos *pos, struct jn_diag *d);
/* 1 when the message matches, 0 when not. Thread-safe (read-only). */
int jn_cond_eval(const struct jn_cond *c, const struct jn_msg *m);
void jn_cond_free(struct jn_cond *c);

#endif
