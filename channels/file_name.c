/*
 * file OUT's pure helpers (see file_int.h): is a rendered name a safe relative path, the
 * separator's escapes, the numbered final names of rotated files, and where a torn tail
 * starts. No state, no allocation, no I/O, so tests/unit/test_file_name.c checks them alone.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "file_int.h"

int jn_file__name_check(const char *name, char *why, size_t cap)
{
    const char *p = name;

    if (name[0] == '\0') {
        snprintf(why, cap, "is empty");
        return -1;
    }
    if (name[0] == '/') {
        snprintf(why, cap, "starts with '/'; names are relative to dir");
        return -1;
    }
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);

        if (n == 0) {
            snprintf(why, cap, "has an empty folder name ('//' or a trailing '/')");
            return -1;
        }
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            snprintf(why, cap, "has a '%.*s' part; names stay inside dir", (int)n, p);
            return -1;
        }
        if (n > NAME_MAX - JN_FILE__PART_EXTRA) {
            snprintf(why, cap, "has a part of %zu bytes, over %d", n,
                     NAME_MAX - JN_FILE__PART_EXTRA);
            return -1;
        }
        if (e == NULL) {
            break;
        }
        p = e + 1;
        if (*p == '\0') {
            snprintf(why, cap, "ends with '/'; it must name a file");
            return -1;
        }
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int jn_file__sep_decode(const char *s, unsigned char *out, size_t cap, size_t *len, char *why,
                        size_t whycap)
{
    size_t n = 0;

    for (const char *p = s; *p; p++) {
        int c = (unsigned char)*p;

        if (c == '\\') {
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case '0': c = '\0'; break;
            case '\\': c = '\\'; break;
            case 'x': {
                int hi = p[1] ? hexval(p[1]) : -1;
                int lo = hi >= 0 && p[2] ? hexval(p[2]) : -1;
                if (lo < 0) {
                    snprintf(why, whycap, "\\x at offset %zu needs two hex digits",
                             (size_t)(p - 1 - s));
                    return -1;
                }
                c = hi * 16 + lo;
                p += 2;
                break;
            }
            case '\0':
                snprintf(why, whycap, "ends with a lone '\\'");
                return -1;
            default:
                snprintf(why, whycap, "unknown escape '\\%c' (known: \\n \\r \\t \\0 \\\\ \\xHH)",
                         *p);
                return -1;
            }
        }
        if (n == cap) {
            snprintf(why, whycap, "is longer than %zu bytes", cap);
            return -1;
        }
        out[n++] = (unsigned char)c;
    }
    if (n == 0) {
        snprintf(why, whycap, "must not be empty (records could not be told apart)");
        return -1;
    }
    *len = n;
    return 0;
}

int jn_file__numbered(const char *base, unsigned n, char *out, size_t cap)
{
    const char *dot = strrchr(base, '.');
    int w;

    if (n == 0) {
        w = snprintf(out, cap, "%s", base);
    } else if (dot == NULL || dot == base) {
        w = snprintf(out, cap, "%s.%u", base, n);
    } else {
        w = snprintf(out, cap, "%.*s.%u%s", (int)(dot - base), base, n, dot);
    }
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

size_t jn_file__cut_torn(const unsigned char *buf, size_t len, const unsigned char *sep,
                         size_t seplen)
{
    if (seplen == 0 || len < seplen) {
        return 0;
    }
    for (size_t end = len; end >= seplen; end--) {
        if (memcmp(buf + end - seplen, sep, seplen) == 0) {
            return end;
        }
    }
    return 0;
}

/* ---- HL7 batch framing (framing: hl7-batch) ---- */

size_t jn_file__hl7_norm(const unsigned char *src, size_t len, unsigned char *dst)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\n') {
            /* CRLF: the CR is written already; a lone LF becomes a CR. */
            if (i == 0 || src[i - 1] != '\r') {
                dst[n++] = '\r';
            }
        } else {
            dst[n++] = src[i];
        }
    }
    if (n == 0 || dst[n - 1] != '\r') {
        dst[n++] = '\r';
    }
    return n;
}

bool jn_file__hl7_clean(const unsigned char *p, size_t len)
{
    return len > 0 && p[len - 1] == '\r' && memchr(p, '\n', len) == NULL;
}

void jn_file__hl7_scan(struct jn_file_hl7_scan *s, const unsigned char *buf, size_t len,
                       unsigned long long off)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = buf[i];

        if (c == '\r' || c == '\n') {
            s->col = 0;
            continue;
        }
        if (s->col < 3) {
            s->seg[s->col] = (char)c;
        }
        if (++s->col == 3 && s->bts < 0) {
            if (memcmp(s->seg, "MSH", 3) == 0) {
                s->msgs++;
            } else if (memcmp(s->seg, "BTS", 3) == 0) {
                s->bts = (long long)(off + i) - 2;
            }
        }
    }
}
