/*
 * jn_opt: option tables. One table per channel type, service type and config section drives
 * parsing, defaults, validation, `junction describe` and docs/config-reference.md.
 *
 * Modelled on Fluent Bit's config maps (defaults are strings run through the same parser as
 * user input) and Redis's standardConfig (bounds and flags). Each JN_OPT_* macro checks at
 * compile time that the struct field has the C type the option type writes.
 *
 * Field types:
 *   STR      char *              (owned by the conf; freed by jn_opt_free)
 *   PATH     char *              a file or folder: a relative one (also the default) is made
 *                                absolute against the folder of the config file it is in
 *                                (node->dir), so every command started from anywhere with
 *                                the same -c finds the same files; read from a buffer, it
 *                                stays relative to the current directory. "" stays "".
 *   INT      long long           min..max
 *   SIZE     unsigned long long  bytes; "512", "64KiB", "1MiB", "2GiB", "1MB" (= 1000^2)
 *   DURATION long long          milliseconds; "250ms", "5s", "5m", "2h", "7d"; a bare number = ms
 *   BOOL     bool                true/false/yes/no/on/off
 *   ENUM     int                 index into a NULL-terminated list of names
 *   STRLIST  struct jn_strlist   a value or a list of values; with JN_OPT_COMMAS each value
 *                                may also hold several, separated by commas
 *   STRMAP   struct jn_strmap    a map of name: value (order kept)
 *   SUB      any struct          a nested map parsed with its own table
 *   SUBLIST  struct jn_sublist   a list of maps, each parsed with the same table into one
 *                                element of an array (e.g. the `auth:` methods of a listener)
 */
#ifndef JN_OPT_H
#define JN_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "jn_diag.h"
#include "jn_yaml.h"

enum jn_opt_type {
    JN_OPT_T_STR,
    JN_OPT_T_PATH,
    JN_OPT_T_INT,
    JN_OPT_T_SIZE,
    JN_OPT_T_DURATION,
    JN_OPT_T_BOOL,
    JN_OPT_T_ENUM,
    JN_OPT_T_STRLIST,
    JN_OPT_T_STRMAP,
    JN_OPT_T_SUB,
    JN_OPT_T_SUBLIST,
};

enum {
    JN_OPT_REQUIRED = 1 << 0, /* no default; the user must set it */
    JN_OPT_SECRET = 1 << 1,   /* never logged, shown as *** */
    JN_OPT_IN = 1 << 2,       /* only for direction: in  (channels) */
    JN_OPT_OUT = 1 << 3,      /* only for direction: out (channels) */
    /* STRLIST: "a, b" is the list a, b (blanks around each item trimmed, an empty item is an
     * error). Only for lists whose items can never hold a comma (host:port, not topic regexes,
     * JSON paths or MQTT topic filters). */
    JN_OPT_COMMAS = 1 << 4,
    /* The option can change on a running channel, service or route without restarting it:
     * the code that uses it reads it anew for each message or attempt and holds nothing
     * (a socket, a thread, a compiled form) made from an earlier value. Hot reload applies a
     * change of only such options in place and restarts the owner for any other change.
     * See docs/config-reference.md, "Reloadable options". */
    JN_OPT_RELOADABLE = 1 << 5,
};

/* For jn_opt_parse's dirmask: leave keys the table does not know to another pass. */
#define JN_OPT_LENIENT (1u << 8)

struct jn_strlist {
    char **v;
    size_t n;
};

struct jn_strmap {
    char **k;
    char **v;
    size_t n;
};

/* SUBLIST: n elements of the sub table's struct, v[0..n) (element size in the option row). */
struct jn_sublist {
    void *v;
    size_t n;
};

struct jn_opt;

/*
 * A per-option check, run on a value the user gave after its type and bounds were checked
 * (not on defaults). value points at the field as parsed (a char **, long long *, ...), node
 * is the value's YAML node, what names the option ("channel 'x' (http): url"). Reports each
 * problem in d at node's position and returns how many it reported (0 = valid).
 */
typedef int (*jn_opt_validate_fn)(const void *value, const struct jn_node *node, const char *what,
                                  struct jn_diag *d);

struct jn_opt {
    const char *name;
    enum jn_opt_type type;
    const char *def;  /* default, in user syntax; NULL = unset (NULL / 0 / empty) */
    long long min, max;
    unsigned flags;
    size_t off;
    const char *const *enums;   /* ENUM */
    const struct jn_opt *sub;   /* SUB, SUBLIST */
    size_t elsize;              /* SUBLIST: sizeof one element */
    const char *doc;
    /* Optional, given after doc in the JN_OPT_* macros as designated initializers, e.g.
     * JN_OPT_DURATION("timeout", ..., "doc", .alias = "ack_timeout", .validate = fn). */
    const char *alias;  /* an old name still accepted, with a deprecation warning */
    jn_opt_validate_fn validate;
};

#define JN_OPT__CHECK(T, field, CT)                                                               \
    (offsetof(T, field) +                                                                         \
     0 * sizeof(char[_Generic(((T *)0)->field, CT: 1, default: -1)]))

/* The last argument, "...", is the doc string, optionally followed by .alias = "old_name"
 * and/or .validate = fn. */
#define JN_OPT__ROW(n, t, d, lo, hi, fl, o, en, sb, ...)                                          \
    {.name = (n), .type = (t), .def = (d), .min = (lo), .max = (hi), .flags = (fl), .off = (o),  \
     .enums = (en), .sub = (sb), .doc = __VA_ARGS__}

#define JN_OPT_STR(name, def, flags, T, field, ...)                                               \
    JN_OPT__ROW(name, JN_OPT_T_STR, def, 0, 0, flags, JN_OPT__CHECK(T, field, char *), NULL,     \
                NULL, __VA_ARGS__)
#define JN_OPT_PATH(name, def, flags, T, field, ...)                                              \
    JN_OPT__ROW(name, JN_OPT_T_PATH, def, 0, 0, flags, JN_OPT__CHECK(T, field, char *), NULL,    \
                NULL, __VA_ARGS__)
#define JN_OPT_INT(name, def, min, max, flags, T, field, ...)                                     \
    JN_OPT__ROW(name, JN_OPT_T_INT, def, min, max, flags, JN_OPT__CHECK(T, field, long long),    \
                NULL, NULL, __VA_ARGS__)
#define JN_OPT_SIZE(name, def, min, max, flags, T, field, ...)                                    \
    JN_OPT__ROW(name, JN_OPT_T_SIZE, def, min, max, flags,                                       \
                JN_OPT__CHECK(T, field, unsigned long long), NULL, NULL, __VA_ARGS__)
#define JN_OPT_DURATION(name, def, min, max, flags, T, field, ...)                                \
    JN_OPT__ROW(name, JN_OPT_T_DURATION, def, min, max, flags,                                   \
                JN_OPT__CHECK(T, field, long long), NULL, NULL, __VA_ARGS__)
#define JN_OPT_BOOL(name, def, flags, T, field, ...)                                              \
    JN_OPT__ROW(name, JN_OPT_T_BOOL, def, 0, 1, flags, JN_OPT__CHECK(T, field, bool), NULL,      \
                NULL, __VA_ARGS__)
#define JN_OPT_ENUM(name, def, enums, flags, T, field, ...)                                       \
    JN_OPT__ROW(name, JN_OPT_T_ENUM, def, 0, 0, flags, JN_OPT__CHECK(T, field, int), enums,      \
                NULL, __VA_ARGS__)
#define JN_OPT_STRLIST(name, def, flags, T, field, ...)                                           \
    JN_OPT__ROW(name, JN_OPT_T_STRLIST, def, 0, 0, flags,                                        \
                JN_OPT__CHECK(T, field, struct jn_strlist), NULL, NULL, __VA_ARGS__)
#define JN_OPT_STRMAP(name, flags, T, field, ...)                                                 \
    JN_OPT__ROW(name, JN_OPT_T_STRMAP, NULL, 0, 0, flags,                                        \
                JN_OPT__CHECK(T, field, struct jn_strmap), NULL, NULL, __VA_ARGS__)
#define JN_OPT_SUB(name, subtab, ST, flags, T, field, ...)                                        \
    JN_OPT__ROW(name, JN_OPT_T_SUB, NULL, 0, 0, flags, JN_OPT__CHECK(T, field, ST), NULL, subtab, \
                __VA_ARGS__)
/* The parameter names differ from the designators they fill (.name, .flags). */
#define JN_OPT_SUBLIST(nm, subtab, ST, fl, T, field, ...)                                         \
    {.name = (nm), .type = JN_OPT_T_SUBLIST, .flags = (fl),                                      \
     .off = JN_OPT__CHECK(T, field, struct jn_sublist), .sub = (subtab), .elsize = sizeof(ST),   \
     .doc = __VA_ARGS__}
#define JN_OPT_END {.name = NULL}

/*
 * Fills conf from a YAML map: every option gets its default, then the map's keys are applied.
 * Unknown keys (listing the allowed ones and the nearest), wrong types, out-of-range values
 * and missing required options are reported in d at their file:line:col, prefixed with what
 * (e.g. "channel 'lab_in' (mllp)"). Keys listed in skip are left for the caller. dirmask
 * (JN_OPT_IN / JN_OPT_OUT, or 0 for no direction filter) refuses options of the other
 * direction; with 0, options required in one direction only are not required. at is the node
 * the options belong to (map itself, or its parent when map is NULL: all defaults): missing
 * required options are reported at its position, and relative PATH defaults resolve against
 * its folder. Returns the number of errors added. conf must be zeroed; free with jn_opt_free
 * even on error.
 * An option's alias (old name) is accepted with a warning in d; giving both names is an
 * error. After the type and bounds check of a given value, the option's validate hook runs.
 */
int jn_opt_parse(const struct jn_opt *tab, const struct jn_node *map, void *conf, const char *what,
                 unsigned dirmask, const char *const *skip, const struct jn_node *at,
                 struct jn_diag *d);
void jn_opt_free(const struct jn_opt *tab, void *conf);
/*
 * 1 when confs a and b (both parsed with tab) hold the same value for every option that has
 * none of the flags in skip (e.g. JN_OPT_RELOADABLE: "the same but for what can change live"),
 * nested tables compared alike. Fields that tab does not describe are not compared. With 0
 * and where given, where names the first option that differs ("tls.cert").
 */
int jn_opt_same(const struct jn_opt *tab, const void *a, const void *b, unsigned skip,
                char *where, size_t wlen);
/*
 * Hot reload of a running conf dst from src (both parsed with tab): with apply, copies every
 * JN_OPT_RELOADABLE option of a number, size, duration, bool or enum type that differs (nested
 * tables too), for code that reads them anew each time. Returns how many reloadable options of
 * other types (strings, lists, maps: dst's memory is its config's) differ and are NOT copied,
 * the first named in where.
 */
int jn_opt_reload(const struct jn_opt *tab, void *dst, const void *src, int apply, char *where,
                  size_t wlen);

/* Parsers of user syntax, shared with anything else that reads such values. 0 or JN_EINVAL. */
int jn_parse_size(const char *s, unsigned long long *out);
int jn_parse_duration_ms(const char *s, long long *out);
/* A point in time (the command line, the admin API's since/until): a duration ago with its
 * unit ("10m ago", "10m", "2h", "7d", "90s ago"; ms, s, m, h, d) or a UTC time
 * "2026-11-22T10:00:00" (a trailing Z allowed). now_us: the current time (µs since the epoch).
 * Sets *out_us (µs, times before 1970 become 0) and returns 0, or returns JN_EINVAL. */
int jn_parse_when(const char *s, int64_t now_us, int64_t *out_us);
int jn_parse_bool(const char *s, bool *out);

/* Markdown table of a table's options (name, type, default, range, description). */
void jn_opt_describe_md(const struct jn_opt *tab, const char *prefix, FILE *out);
/* roff .TP paragraphs, for the man page (junction man). */
void jn_opt_describe_roff(const struct jn_opt *tab, const char *prefix, FILE *out);
/* s as roff body text: backslashes and minus signs escaped, a line never a request. */
void jn_opt_roff_text(FILE *out, const char *s);
/* Plain text for --describe. */
void jn_opt_describe_text(const struct jn_opt *tab, const char *prefix, FILE *out);

#endif
