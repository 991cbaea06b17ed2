/*
 * jn_time: the clocks and the retry wait the whole broker shares.
 *
 * One monotonic clock in milliseconds for timeouts, windows and rate limits (never the wall
 * clock: it jumps), and one backoff with "full jitter" (a random wait in 0..ceiling, the AWS
 * architecture blog's recommendation) for every retry and reconnect, so peers that failed
 * together do not come back together. Modelled on Redis's mstime()/ustime() helpers: one
 * place, no state.
 *
 * Both functions are safe on any thread and allocate nothing.
 */
#ifndef JN_TIME_H
#define JN_TIME_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC: only differences mean anything. Never fails. */
int64_t jn_mono_ms(void);

/*
 * How long to wait before retry number `attempt` (1 for the first retry): a uniformly random
 * number of milliseconds in 0..min(cap, base * 2^(attempt-1)), both ends included. The
 * randomness comes from getrandom(2), which blocks only until the kernel's pool is first
 * initialised at boot; should it fail, from the monotonic clock's nanoseconds. attempt < 1 counts as 1; base <= 0 gives 0; a cap below base caps base. The
 * doubling saturates at cap, so no attempt number overflows.
 */
long long jn_backoff_ms(long long base, long long cap, int attempt);

/* The UTC calendar of a time: what gmtime_r() gives (tm_year + 1900, tm_mon + 1, ...). */
struct jn_utc {
    int64_t year;
    int mon;  /* 1..12 */
    int day;  /* 1..31 */
    int hour; /* 0..23 */
    int min;
    int sec;
};

/*
 * secs since the epoch (negative before it) as a UTC date and time in the proleptic Gregorian
 * calendar, from day counts alone: no lock, no time-zone state, no call into libc. It is on
 * the hot path: file OUT renders "{date}/{hour}" for every message, and gmtime_r() with
 * strftime() cost about 2,000 instructions a message there (issue 20). Any int64_t works.
 */
void jn_utc_from_secs(int64_t secs, struct jn_utc *out);

#endif
