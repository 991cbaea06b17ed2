/*
 * jn_log: the house log format.
 *
 *   2026-11-22T22:30:01.123Z [warn] [http.orders-in] peer 127.0.0.1:5521 sent 2 MiB, over max_message
 *
 * junction.log_format: json makes each line one JSON object for log shippers:
 *
 *   {"time":"2026-11-22T22:30:01.123Z","level":"warn","component":"http.orders-in","msg":"..."}
 *
 * ("component" is "core" for the broker's own lines). Under journald (stderr is the stream
 * $JOURNAL_STREAM names) each line starts with its syslog priority, "<4>" for warn, the
 * sd-daemon(3) convention journald strips and stores as PRIORITY=; text lines then carry no
 * timestamp of their own, since the journal stamps every line.
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

enum jn_log_format {
    JN_LOG_TEXT = 0, /* same order as junction.log_format's names */
    JN_LOG_JSON = 1,
};

/* Sets the line format and looks whether stderr is journald's ($JOURNAL_STREAM's dev:ino).
 * Call once at start, before other threads log. */
void jn_log_setup(enum jn_log_format format);

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
