/*
 * jn_test: the few macros our unit tests need. A failed check prints file:line and the
 * expression, counts, and the test goes on; main returns non-zero if anything failed.
 */
#ifndef JN_TEST_H
#define JN_TEST_H

#include <stdio.h>
#include <string.h>

static int jn_test_failures;
static int jn_test_checks;

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        jn_test_checks++;                                                                         \
        if (!(cond)) {                                                                            \
            jn_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
        }                                                                                         \
    } while (0)

#define CHECK_STR(a, b)                                                                           \
    do {                                                                                          \
        const char *a_ = (a), *b_ = (b);                                                          \
        jn_test_checks++;                                                                         \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                    \
            jn_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed:\n  got:      %s\n  expected: %s\n",          \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");          \
        }                                                                                         \
    } while (0)

#define CHECK_INT(a, b)                                                                           \
    do {                                                                                          \
        long long a_ = (long long)(a), b_ = (long long)(b);                                       \
        jn_test_checks++;                                                                         \
        if (a_ != b_) {                                                                           \
            jn_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed: got %lld, expected %lld\n", __FILE__,        \
                    __LINE__, #a, #b, a_, b_);                                                    \
        }                                                                                         \
    } while (0)

#define TEST_MAIN_END()                                                                           \
    do {                                                                                          \
        printf("%d checks, %d failed\n", jn_test_checks, jn_test_failures);                       \
        return jn_test_failures ? 1 : 0;                                                          \
    } while (0)

#endif
