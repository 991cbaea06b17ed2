/* jn_log: formatting and writing of log lines (see jn_log.h). */
#include "jn_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int jn_log_level = JN_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int jn_log_level_parse(const char *s)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *jn_log_level_name(int lvl)
{
    if (lvl < 0 || lvl > JN_LOG_TRACE) {
        return "?";
    }
    return level_names[lvl];
}

void jn_log_print(int lvl, const char *prefix, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ [%s] ", (long)(tv.tv_usec / 1000),
                 jn_log_level_name(lvl));
    n += (size_t)r;
    if (prefix != NULL) {
        r = snprintf(line + n, sizeof(line) - n, "[%s] ", prefix);
        n = n + (size_t)r < sizeof(line) ? n + (size_t)r : sizeof(line) - 1;
    }
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r < 0) {
        r = 0;
    }
    n = n + (size_t)r < sizeof(line) - 1 ? n + (size_t)r : sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line: lines from several threads do not interleave. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}
