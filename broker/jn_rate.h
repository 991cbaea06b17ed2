/*
 * jn_rate: an IN channel's `rate_limit: { rate: 1000/s, burst: 2000 }`, a token bucket checked
 * by jn_ingest() beside flow control: a message that finds the bucket empty is refused with
 * JN_ELIMIT before the journal, so every IN channel answers it on its own protocol (HTTP 429
 * with Retry-After, MLLP AE naming the limit, ...). The bucket lives in struct jn_channel and
 * is refilled lazily from the clock on each ingest: no timer. Loop thread.
 *
 * Model: the token bucket of nginx's limit_req (rate + burst) and Envoy's local rate limit.
 */
#ifndef JN_RATE_H
#define JN_RATE_H

#include "jn_channel.h"
#include "jn_diag.h"
#include "jn_opt.h"

/* The rate_limit sub-table (config/jn_config.c puts it under every IN channel). */
extern const struct jn_opt jn_rate_opts[];

/* "N/s", "N/m" or "N/h" (N a positive number, spaces allowed around '/') into messages per
 * second. 0 or JN_EINVAL. */
int jn_rate_parse(const char *s, double *per_s);

/* Sets the channel's bucket from its conf (full at start). */
void jn_rate__init(struct jn_channel *ch, const struct jn_rate_conf *c);

/* Takes one token at now_us. NULL when there was one, else the refusal's reason (the
 * channel's rate_why) with ch->rate_retry_s and n_rate_limited updated. */
const char *jn_rate__take(struct jn_channel *ch, int64_t now_us);

/* Milliseconds until the bucket has a token at now_us (at least 1), or 0 when it has one now;
 * takes nothing and counts nothing. A channel that would rather hold a message than refuse it
 * (the MQTT listener: no PUBACK until under the limit) asks this first, and hands the message
 * to jn_ingest on the same loop turn as a 0, where the token is then certain to be there. */
long long jn_rate__wait_ms(struct jn_channel *ch, int64_t now_us);

#endif
