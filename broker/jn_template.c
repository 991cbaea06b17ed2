/* jn_template: "{id}", "{header.X}" ... placeholders for file names, topics, headers
 * (see jn_template.h). */
#include <string.h>
#include <time.h>

#include "jn_template.h"

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
                struct tm tm;
                time_t secs = (time_t)(m->recv_us / 1000000);
                gmtime_r(&secs, &tm);
                strftime(s, sizeof(s), p[0] == 'd' ? "%Y-%m-%d" : p[0] == 'h' ? "%H" : "%H%M%S",
                         &tm);
                rc |= jn_buf_puts(out, s);
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
