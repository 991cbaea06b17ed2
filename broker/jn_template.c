/* jn_template: "{id}", "{header.X}" ... placeholders for file names, topics, headers
 * (see jn_template.h). */
#include <stdio.h>
#include <string.h>

#include "jn_template.h"
#include "jn_time.h"

/* n >= 0 as exactly `width` decimal digits (zero-padded) at s; returns s + width. */
static char *digits(char *s, int64_t n, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        s[i] = (char)('0' + n % 10);
        n /= 10;
    }
    return s + width;
}

/*
 * {date} (YYYY-MM-DD), {hour} (HH) or {time} (HHMMSS), chosen by the name's first letter, of
 * the receive time in UTC, into s (at least 32 bytes); returns s. The same text strftime's
 * "%Y-%m-%d", "%H" and "%H%M%S" make of gmtime_r (a year outside 1000..9999 as %Y prints
 * it, unpadded), at a tenth of the cost: this runs for every message file OUT names.
 */
static const char *utc_field(char *s, char which, int64_t recv_us)
{
    int64_t secs = recv_us / 1000000; /* truncated, as it always was */
    struct jn_utc u;
    char *e = s;

    jn_utc_from_secs(secs, &u);
    if (which == 'd') {
        if (u.year >= 1000 && u.year <= 9999) {
            e = digits(e, u.year, 4);
        } else {
            e += snprintf(e, 24, "%lld", (long long)u.year);
        }
        *e++ = '-';
        e = digits(e, u.mon, 2);
        *e++ = '-';
        e = digits(e, u.day, 2);
    } else {
        e = digits(e, u.hour, 2);
        if (which != 'h') {
            e = digits(e, u.min, 2);
            e = digits(e, u.sec, 2);
        }
    }
    *e = '\0';
    return s;
}

static int render(const char *t, const struct jn_msg *m, jn_template_ext_fn ext, void *ctx,
                  struct jn_buf *out, struct jn_err *err)
{
    const char *p = t;
    int rc = 0; /* the first failed append: every jn_buf_* call is checked through it */

    while (*p) {
        const char *close;
        size_t n;
        if (p[0] == '{' && p[1] == '{') {
            if (out) {
                rc |= jn_buf_putc(out, '{');
            }
            p += 2;
            continue;
        }
        if (p[0] == '}' && p[1] == '}') {
            if (out) {
                rc |= jn_buf_putc(out, '}');
            }
            p += 2;
            continue;
        }
        if (*p != '{') {
            if (out) {
                rc |= jn_buf_putc(out, *p);
            }
            p++;
            continue;
        }
        close = strchr(p, '}');
        if (close == NULL) {
            return jn_err_set(err, JN_EINVAL, "template '%s': '{' at offset %zu is never closed",
                              t, (size_t)(p - t));
        }
        n = (size_t)(close - p - 1);
        p++;
        if (n == 2 && memcmp(p, "id", 2) == 0) {
            if (out) {
                rc |= jn_buf_puts(out, m->id);
            }
        } else if (n == 7 && memcmp(p, "channel", 7) == 0) {
            if (out) {
                rc |= jn_buf_puts(out, m->channel);
            }
        } else if ((n == 4 && memcmp(p, "date", 4) == 0) || (n == 4 && memcmp(p, "time", 4) == 0) ||
                   (n == 4 && memcmp(p, "hour", 4) == 0)) {
            if (out) {
                char s[32];
                rc |= jn_buf_puts(out, utc_field(s, p[0], m->recv_us));
            }
        } else if (n == 2 && memcmp(p, "ts", 2) == 0) {
            if (out) {
                rc |= jn_buf_printf(out, "%lld", (long long)(m->recv_us / 1000));
            }
        } else if (n > 7 && memcmp(p, "header.", 7) == 0) {
            if (out) {
                char name[256];
                const char *v;
                size_t nl = n - 7 < sizeof(name) - 1 ? n - 7 : sizeof(name) - 1;
                memcpy(name, p + 7, nl);
                name[nl] = '\0';
                v = jn_msg_header_get(m, name);
                if (v) {
                    rc |= jn_buf_puts(out, v);
                }
            }
        } else {
            int x = ext ? ext(ctx, p, n, out, err) : 1;
            if (x < 0) {
                return x;
            }
            if (x > 0) {
                return jn_err_set(err, JN_EINVAL,
                                  "template '%s': unknown placeholder '{%.*s}', expected {id}, "
                                  "{channel}, {date}, {hour}, {time}, {ts} or {header.NAME}%s",
                                  t, (int)n, p, ext ? " (or this service's own)" : "");
            }
        }
        p = close + 1;
    }
    if (rc != 0) {
        return jn_err_set(err, JN_ENOMEM, "out of memory rendering template '%s'", t);
    }
    return 0;
}

int jn_template_render(const char *tmpl, const struct jn_msg *m, struct jn_buf *out,
                       struct jn_err *err)
{
    return render(tmpl, m, NULL, NULL, out, err);
}

int jn_template_check(const char *tmpl, struct jn_err *err)
{
    return render(tmpl, NULL, NULL, NULL, NULL, err);
}

int jn_template_render_ext(const char *tmpl, const struct jn_msg *m, jn_template_ext_fn ext,
                           void *ctx, struct jn_buf *out, struct jn_err *err)
{
    return render(tmpl, m, ext, ctx, out, err);
}

int jn_template_check_ext(const char *tmpl, jn_template_ext_fn ext, void *ctx,
                          struct jn_err *err)
{
    return render(tmpl, NULL, ext, ctx, NULL, err);
}
