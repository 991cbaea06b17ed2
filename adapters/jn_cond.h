/*
 * jn_cond: the route condition language (`when:`), compiled at load, evaluated per message.
 *
 *   when: channel == "orders-in" && header("Content-Type") =~ "^application/json"
 *
 * Operands: string literals ("..." or '...', with \" \' \\ \n \t \r escapes), `channel` (the
 * source channel), `id`, `payload` (the bytes as text), `header("Name")` (case-insensitive; an
 * absent header is the empty string), `hl7("PID-3[2].1")` (the HL7 v2 value at that path in the
 * payload, escapes decoded; "" when absent or when the payload is not HL7). Operators, loosest
 * first: `||`, `&&`, `!` (prefix), comparisons `==`, `!=`, `=~` and `!~` (POSIX extended
 * regex; the right side must be a string literal, compiled at load), parentheses. An operand
 * on its own is true when it is not empty.
 *
 * Errors name the column inside the expression, offset from the node's position.
 *
 * Details of the implementation (jn_cond.c):
 *  - Any backslash pair other than the escapes above is kept as written, so a regex reads as
 *    usual: "^v1\.2" matches "v1.2".
 *  - == and != compare bytes and lengths, so a payload with NUL bytes compares in full; =~ and
 *    !~ read values as C strings, so matching a payload stops at its first NUL byte.
 *  - Regexes are POSIX extended (regcomp REG_EXTENDED | REG_NOSUB), case-sensitive and
 *    unanchored. Rejected at load, because glibc's regcomp would take minutes or gigabytes on
 *    them: backreferences (\1, not POSIX ERE), patterns that unroll to more than about 1000
 *    copies of an atom ("a{0,5000}", "(x{50}){50}"), unbounded repetition of something that can
 *    match the empty string ("(a?)+", "(a*|b)*": write "a*", "(a|b)*"), groups nested more than
 *    64 deep. Matching costs about payload length times pattern size.
 *  - Limits: 4096 bytes per expression, 64 levels of parentheses.
 *  - Columns count bytes; the diag position is pos->col + offset, which is exact when the
 *    value sits on one line of the config as written (not for quoted values with escapes or
 *    folded scalars); the message text also says "at column N" counted inside the expression.
 *  - jn_cond_compile: d may be NULL. On failure exactly one message is added (or d->oom set).
 *  - jn_cond_eval: c NULL (no condition) matches every message. Allocates through jn_malloc
 *    only for an hl7() value of 512 bytes or more (one buffer, freed before it returns; without
 *    memory the value reads as ""); regexec may allocate internally (glibc).
 *  - hl7(): the path is checked at load (adapters/hl7.h: SEG[occ]-field[rep].comp.sub). The
 *    payload is scanned per evaluation, without parsing all of it: MSH-9.1 costs a look at
 *    the first segment. An explicit null reads as the two characters "". MSH-1 and MSH-2 are
 *    returned as written.
 *  - jn_cond_free(NULL) is a no-op.
 */
#ifndef JN_COND_H
#define JN_COND_H

#include <regex.h>

#include "jn_diag.h"
#include "jn_err.h"
#include "jn_msg.h"

struct jn_cond;

/* pos: where the expression text starts in the config (the first character of the value).
 * Returns NULL with errors in d. */
struct jn_cond *jn_cond_compile(const char *expr, const struct jn_pos *pos, struct jn_diag *d);
/* 1 when the message matches, 0 when not. Thread-safe (read-only). */
int jn_cond_eval(const struct jn_cond *c, const struct jn_msg *m);
void jn_cond_free(struct jn_cond *c);

/* A POSIX extended regex (REG_EXTENDED | REG_NOSUB) vetted as `=~` literals are (see above:
 * no backreferences, bounded unrolled size, no unbounded repetition of what can match empty),
 * for other users of the same safety: the validate service's `pattern`. Returns a jn_malloc'd
 * regex_t, or NULL with the reason in err (JN_EINVAL, JN_ENOMEM). Free with
 * jn_cond_regex_free (NULL is a no-op). */
regex_t *jn_cond_regex_new(const char *re, struct jn_err *err);
void jn_cond_regex_free(regex_t *r);

#endif
