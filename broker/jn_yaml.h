/*
 * jn_yaml: YAML documents as a tree of nodes that remember where they came from.
 *
 * libyaml gives events; we build a small tree of scalars, maps and sequences, each with its
 * file, line and column (1-based), so every later error can say file:line:col. Scalars have
 * `${ENV}` and `${ENV:-default}` substituted as they are read ("$${" is a literal "${"), and
 * `${file:/path}` by the file's content less one trailing newline (a relative path is taken
 * from the config file's folder; a missing or unreadable file is an error at the value).
 * Anchors and aliases are refused: a config is read by people, and aliases hide where a value
 * came from.
 */
#ifndef JN_YAML_H
#define JN_YAML_H

#include <stddef.h>

#include "jn_buf.h"
#include "jn_diag.h"

enum jn_node_kind {
    JN_NODE_SCALAR,
    JN_NODE_MAP,
    JN_NODE_SEQ,
};

struct jn_node {
    enum jn_node_kind kind;
    struct jn_pos pos;
    /* Folder of the file the node was read from, absolute, owned by the diag: relative paths
     * in it are relative to there (JN_OPT_PATH). NULL when read from a buffer: relative paths
     * are then left relative to the current directory. */
    const char *dir;
    /* scalar */
    char *str;     /* after ${ENV} / ${file:} substitution; NUL-terminated */
    int plain;     /* 1 if unquoted: only a plain scalar can be null, a number or a bool */
    /* map: keys[i] -> vals[i]; seq: vals[i] */
    struct jn_node **keys;
    struct jn_node **vals;
    size_t n;
};

/* Parses a whole file / buffer into a tree; NULL and errors in d on failure. The file name is
 * kept (copied into d's string pool) for positions, and for a file also its folder (node->dir).
 * An empty document gives an empty map. With text (may be NULL), a file's bytes as read are
 * left in *text (the caller resets it), whether it parsed or not. */
struct jn_node *jn_yaml_load_file(const char *path, struct jn_diag *d, struct jn_buf *text);
struct jn_node *jn_yaml_load_buf(const char *name, const char *buf, size_t len, struct jn_diag *d);
void jn_node_free(struct jn_node *n);

/* The value under key in a map, or NULL (also when n is not a map). Borrowed. */
const struct jn_node *jn_node_get(const struct jn_node *map, const char *key);
/* The key node itself (for positions), or NULL. */
const struct jn_node *jn_node_key(const struct jn_node *map, const char *key);
/*
 * Where to point a check's message about option `key` of a config block: the value node's
 * position, or the block's own when the key is absent (its default is at fault). Borrowed from
 * the tree. map NULL gives NULL.
 */
const struct jn_pos *jn_node_pos(const struct jn_node *map, const char *key);
/*
 * The same for one entry of a map or list option `opt` of map: for a map option, the key node
 * of entry `key` (want_value 0) or its value node (1); for a list option, the scalar item equal
 * to `key`. Falls back to jn_node_pos(map, opt). Borrowed; map NULL gives NULL.
 */
const struct jn_pos *jn_node_entry_pos(const struct jn_node *map, const char *opt,
                                       const char *key, int want_value);
/* 1 for a plain `~`, `null`, `Null`, `NULL` or empty plain scalar. */
int jn_node_is_null(const struct jn_node *n);
const char *jn_node_kind_name(const struct jn_node *n);

#endif
