/*
 * jn_log: the house log format.
 *
 *   2026-11-22T22:30:01.123Z [warn] [http.orders-in] peer 127.0.0.1:5521 sent 2 MiB, over max_message
 *
 * Like Redis's serverLog, the level is checked in the macro, so arguments below the level are
 * never evaluated. Lines go to stderr, one write() each, so threads do not interleave halves.
 */
#ifndef JN_LOG_H
#define JN_LOG_H

enum jn_log_level {
    JN_LOG_ERROR = 0,
    JN_LOG_WARN = 1,
    JN_LOG_INFO = 2,
    JN_LOG_DEBUG = 3,
    JN_LOG_TRACE = 4,
};

/* The process's level; set once at start (broker/ owns global state). */
extern int jn_log_level;

/* Parse "error|warn|info|debug|trace"; returns the level or -1. */
int jn_log_level_parse(const char *s);
const char *jn_log_level_name(int lvl);

/* prefix: an instance name such as "http.orders-in", or NULL for the core. */
void jn_log_print(int lvl, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define jn_log(lvl, ...)                                                                          \
    do {                                                                                          \
        if ((lvl) > jn_log_level) {                                                               \
            break;                                                                                \
        }                                                                                         \
        jn_log_print((lvl), NULL, __VA_ARGS__);                                                   \
    } while (0)

#define jn_log_p(lvl, prefix, ...)                                                                \
    do {                                                                                          \
        if ((lvl) > jn_log_level) {                                                               \
            break;                                                                                \
        }                                                                                         \
        jn_log_print((lvl), (prefix), __VA_ARGS__);                                               \
    } while (0)

/* For a channel or service instance: anything with a `log_prefix` member. */
#define jn_ch_error(ch, ...) jn_log_p(JN_LOG_ERROR, (ch)->log_prefix, __VA_ARGS__)
#define jn_ch_warn(ch, ...) jn_log_p(JN_LOG_WARN, (ch)->log_prefix, __VA_ARGS__)
#define jn_ch_info(ch, ...) jn_log_p(JN_LOG_INFO, (ch)->log_prefix, __VA_ARGS__)
#define jn_ch_debug(ch, ...) jn_log_p(JN_LOG_DEBUG, (ch)->log_prefix, __VA_ARGS__)

#endif
