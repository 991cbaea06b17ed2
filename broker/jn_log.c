/* jn_log: formatting and writing of log lines (see jn_log.h). */
#include "jn_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int jn_log_level = JN_LOG_INFO;

/* Set once by jn_log_setup, before the threads that log exist; read-only afterwards. */
static enum jn_log_format log_format = JN_LOG_TEXT;
static int log_journald;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
/* syslog priorities (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG) per level. */
static const char level_prio[] = {'3', '4', '6', '7', '7'};

/* stderr is the stream journald handed us: $JOURNAL_STREAM is "dev:ino" of that very file (a
 * child whose stderr was redirected inherits the variable, hence the comparison). */
static int stderr_is_journal(void)
{
    const char *s = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char end;

    if (s == NULL || sscanf(s, "%llu:%llu%c", &dev, &ino, &end) != 2) {
        return 0;
    }
    return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

void jn_log_setup(enum jn_log_format format)
{
    log_format = format;
    log_journald = stderr_is_journal();
}

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

/* s as the inside of a JSON string into out[*n..cap), stopping (whole escapes only) at cap. */
static void json_escape(char *out, size_t *n, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t len = 1;

        esc[0] = (char)c;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            len = 2;
        } else if (c == '\n' || c == '\t' || c == '\r') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
            len = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        if (*n + len > cap) {
            return;
        }
        memcpy(out + *n, esc, len);
        *n += len;
    }
}

/* Appends what printf would to out[*n..cap), keeping *n <= cap (cut when longer). */
static void put(char *out, size_t *n, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *out, size_t *n, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vsnprintf(out + *n, cap - *n + 1, fmt, ap);
    va_end(ap);
    if (r > 0) {
        *n = *n + (size_t)r < cap ? *n + (size_t)r : cap;
    }
}

void jn_log_print(int lvl, const char *prefix, const char *fmt, ...)
{
    char msg[2048], line[4096 + 64], stamp[40];
    const size_t cap = sizeof(line) - 8; /* room for the closing "}\n" and the NUL */
    struct timeval tv;
    struct tm tm;
    size_t n = 0;
    va_list ap;

    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0) {
        msg[0] = '\0';
    }
    va_end(ap);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + strlen(stamp), sizeof(stamp) - strlen(stamp), ".%03ldZ",
             (long)(tv.tv_usec / 1000));
    if (log_journald) {
        put(line, &n, cap, "<%c>", level_prio[lvl >= 0 && lvl <= JN_LOG_TRACE ? lvl : 0]);
    }
    if (log_format == JN_LOG_JSON) {
        put(line, &n, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"", stamp,
            jn_log_level_name(lvl));
        json_escape(line, &n, cap, prefix ? prefix : "core");
        put(line, &n, cap, "\",\"msg\":\"");
        json_escape(line, &n, cap, msg);
        memcpy(line + n, "\"}", 2); /* cap leaves room for it */
        n += 2;
    } else {
        if (!log_journald) {
            put(line, &n, cap, "%s ", stamp); /* the journal stamps lines itself */
        }
        put(line, &n, cap, "[%s] ", jn_log_level_name(lvl));
        if (prefix != NULL) {
            put(line, &n, cap, "[%s] ", prefix);
        }
        put(line, &n, cap, "%s", msg);
    }
    line[n++] = '\n';
    /* One write per line: lines from several threads do not interleave. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}
