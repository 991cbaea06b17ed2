/*
 * jn_init: `junction init`, commented starter configs. Each example is a whole config that
 * `junction check` accepts without a warning (tests/integration/test_init.py checks every one),
 * so a newcomer starts from something that runs, then edits.
 */
#ifndef JN_INIT_H
#define JN_INIT_H

#include <stdio.h>

struct jn_init_example {
    const char *name;    /* --example NAME */
    const char *summary; /* one line, for --help and the man page */
    const char *text;    /* the config file */
};

/* The examples, ending with {NULL}; the first is the default. */
extern const struct jn_init_example jn_init_examples[];

/*
 * Writes example name (NULL: the first) to path, or to out when path is NULL. An existing path
 * is refused unless force. Returns the exit code: 0, 1 (the file exists or cannot be written;
 * said on err) or 2 (no such example; the list is said on err).
 */
int jn_init_write(const char *name, const char *path, int force, FILE *out, FILE *err);

#endif
