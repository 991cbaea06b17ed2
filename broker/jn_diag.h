/*
 * jn_diag: the list of errors and warnings a config load collects, each at file:line:col.
 *
 * An error makes the load fail; a warning (printed "file:line:col: warning: text", e.g. a
 * deprecated option name) does not: `junction check` prints it and exits 0, `junction run`
 * logs it at startup. nerr counts the errors only; n counts every message.
 *
 * Loading does not stop at the first error: users fix configs faster when they see them all.
 * A diag also owns the file names positions point at, so nodes can be freed independently.
 */
#ifndef JN_DIAG_H
#define JN_DIAG_H

#include <stddef.h>
#include <stdio.h>

struct jn_pos {
    const char *file; /* owned by the diag (or static) */
    int line;         /* 1-based; 0 = unknown */
    int col;          /* 1-based; 0 = unknown */
};

struct jn_diag {
    char **msgs;   /* "file:line:col: text", in the order they were added */
    unsigned char *warn; /* warn[i]: msgs[i] is a warning, not an error */
    size_t nerr;   /* errors among the n messages */
    struct jn_pos *at; /* at[i] is where msgs[i] points (file owned by the diag, or NULL) */
    size_t n;
    size_t cap;
    char **files;  /* pool of file names (and of their folders, jn_node.dir) */
    size_t nfiles;
    int oom;       /* set when a message could not be stored */
};

void jn_diag_init(struct jn_diag *d);
void jn_diag_free(struct jn_diag *d);
/* Adds "file:line:col: text" (or "file: text" when pos has no line). Never fails loudly: on
 * out-of-memory the diag's oom flag is set instead. pos may be NULL. */
void jn_diag_add(struct jn_diag *d, const struct jn_pos *pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds the warning "file:line:col: warning: text"; it does not count in nerr. */
void jn_diag_warn(struct jn_diag *d, const struct jn_pos *pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds every message of src to d at the same position, its text after prefix ("service 'f'
 * (filter): when: "): for checks that collect a sub-parser's messages apart, then name whose
 * they are. Warnings stay warnings; src's oom carries over. src is left as it is. */
void jn_diag_take(struct jn_diag *d, const struct jn_diag *src, const char *prefix);
/* Interns a file name; returns a pointer owned by the diag, or a static "?" on no memory. */
const char *jn_diag_file(struct jn_diag *d, const char *name);
/* Prints the messages sorted by file name, line and column (messages without a position first;
 * equal positions keep the order they were added in), whatever order the checks ran in. */
void jn_diag_print(const struct jn_diag *d, FILE *out);

/* Edit distance with a cutoff, used for "did you mean" suggestions. */
size_t jn_edit_distance(const char *a, const char *b);
/* The candidate nearest to word (distance <= max(2, len/3)), or NULL. */
const char *jn_nearest(const char *word, const char *const *cands, size_t n);

#endif
