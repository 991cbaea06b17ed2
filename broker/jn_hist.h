/*
 * jn_hist: a latency histogram with fixed bounds, for the admin's Prometheus histograms
 * (junction_commit_seconds, junction_delivery_seconds). Adding a sample is a few compares and
 * increments on the writer's own thread (the loop): no lock, no allocation. The bounds are
 * Prometheus's usual ones for request latencies, from 0.5 ms to 60 s.
 *
 * Model: Prometheus's client histograms (cumulative `le` buckets, _sum and _count), kept here
 * per bucket and made cumulative when rendered (admin/jn_prom.c).
 */
#ifndef JN_HIST_H
#define JN_HIST_H

#include <stddef.h>
#include <stdint.h>

#define JN_HIST_BUCKETS 16

/* Upper bounds in seconds, ascending; a sample above the last is counted in count only
 * (the +Inf bucket). */
extern const double jn_hist_bounds[JN_HIST_BUCKETS];

struct jn_hist {
    uint64_t count;
    double sum;                    /* seconds */
    uint64_t n[JN_HIST_BUCKETS];   /* samples in (bound[i-1], bound[i]] */
};

/* Adds one sample of us microseconds (a negative one, from a clock step, counts as 0). */
void jn_hist_add_us(struct jn_hist *h, int64_t us);

#endif
