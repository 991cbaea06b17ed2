/* jn_rate: the token bucket of rate_limit (contract in jn_rate.h). */
#include "jn_rate.h"

#include <ctype.h>
#include <math.h> /* isfinite: a macro, no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rate_check(const void *value, const struct jn_node *node, const char *what,
                      struct jn_diag *d)
{
    const char *s = *(char *const *)value;
    double r;

    if (s != NULL && jn_rate_parse(s, &r) != 0) {
        jn_diag_add(d, &node->pos, "%s: '%s' is not a rate, expected N/s, N/m or N/h (e.g. "
                    "1000/s)", what, s);
        return 1;
    }
    return 0;
}

const struct jn_opt jn_rate_opts[] = {
    JN_OPT_STR("rate", NULL, 0, struct jn_rate_conf, rate,
               "Messages allowed on average: N/s, N/m or N/h (e.g. 1000/s). Unset: no limit.",
               .validate = rate_check),
    JN_OPT_INT("burst", "0", 0, 1LL << 40, 0, struct jn_rate_conf, burst,
               "Messages allowed at once above the average (the bucket's size). 0: one "
               "second's worth of rate, at least 1."),
    JN_OPT_END,
};

int jn_rate_parse(const char *s, double *per_s)
{
    char *end;
    double n;

    while (isspace((unsigned char)*s)) {
        s++;
    }
    if (!isdigit((unsigned char)*s) && *s != '.') {
        return JN_EINVAL;
    }
    n = strtod(s, &end);
    while (isspace((unsigned char)*end)) {
        end++;
    }
    if (end == s || *end++ != '/' || !(n > 0) || !isfinite(n)) {
        return JN_EINVAL;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    if (end[0] == '\0' || end[1 + strspn(end + 1, " \t")] != '\0') {
        return JN_EINVAL;
    }
    if (end[0] == 's') {
        *per_s = n;
    } else if (end[0] == 'm') {
        *per_s = n / 60;
    } else if (end[0] == 'h') {
        *per_s = n / 3600;
    } else {
        return JN_EINVAL;
    }
    return 0;
}

void jn_rate__init(struct jn_channel *ch, const struct jn_rate_conf *c)
{
    double r = 0;

    if (c->rate == NULL || jn_rate_parse(c->rate, &r) != 0) {
        ch->rate_per_s = 0;
        return;
    }
    ch->rate_per_s = r;
    ch->rate_burst = c->burst > 0 ? (double)c->burst : (r < 1 ? 1 : (double)(long long)r);
    ch->rate_tokens = ch->rate_burst;
    ch->rate_last_us = 0;
}

/* Adds the tokens earned since the last look. */
static void rate_refill(struct jn_channel *ch, int64_t now_us)
{
    if (ch->rate_last_us != 0 && now_us > ch->rate_last_us) {
        ch->rate_tokens += (double)(now_us - ch->rate_last_us) / 1e6 * ch->rate_per_s;
        if (ch->rate_tokens > ch->rate_burst) {
            ch->rate_tokens = ch->rate_burst;
        }
    }
    ch->rate_last_us = now_us;
}

long long jn_rate__wait_ms(struct jn_channel *ch, int64_t now_us)
{
    double ms;

    if (ch->rate_per_s <= 0) {
        return 0;
    }
    rate_refill(ch, now_us);
    if (ch->rate_tokens >= 1) {
        return 0;
    }
    ms = (1 - ch->rate_tokens) / ch->rate_per_s * 1000;
    return ms < 1 ? 1 : (long long)ms + ((double)(long long)ms < ms);
}

const char *jn_rate__take(struct jn_channel *ch, int64_t now_us)
{
    double need;

    if (ch->rate_per_s <= 0) {
        return NULL;
    }
    rate_refill(ch, now_us);
    if (ch->rate_tokens >= 1) {
        ch->rate_tokens -= 1;
        return NULL;
    }
    need = (1 - ch->rate_tokens) / ch->rate_per_s;
    ch->rate_retry_s = (long long)need + ((double)(long long)need < need);
    if (ch->rate_retry_s < 1) {
        ch->rate_retry_s = 1;
    }
    ch->n_rate_limited++;
    snprintf(ch->rate_why, sizeof(ch->rate_why), "rate limit exceeded (rate_limit %g/s, burst "
             "%g); try again in %lld s", ch->rate_per_s, ch->rate_burst, ch->rate_retry_s);
    return ch->rate_why;
}
