/* jn_hist: see jn_hist.h. */
#include "jn_hist.h"

const double jn_hist_bounds[JN_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

void jn_hist_add_us(struct jn_hist *h, int64_t us)
{
    double s = us > 0 ? (double)us / 1e6 : 0;

    h->count++;
    h->sum += s;
    for (size_t i = 0; i < JN_HIST_BUCKETS; i++) {
        if (s <= jn_hist_bounds[i]) {
            h->n[i]++;
            return;
        }
    }
}
