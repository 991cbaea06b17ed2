/*
 * delay: holds each message for a fixed time, then passes it on unchanged. For pacing a
 * destination that must not be sent to faster than a rate, and for trying what a slow
 * transform (a lookup, a script) does to the rest of the broker. Camel's Delay EIP and
 * Redpanda Connect's `sleep` processor are the models.
 *
 *   services:
 *     pace:
 *       type: delay
 *       duration: 50ms
 *
 * The wait blocks the thread the service runs on, as a slow transform would.
 */
#include <errno.h>
#include <time.h>

#include "jn_services.h"

struct delay_conf {
    long long duration; /* ms */
};

static const struct jn_opt delay_opts[] = {
    JN_OPT_DURATION("duration", NULL, 0, 3600 * 1000LL, JN_OPT_REQUIRED | JN_OPT_RELOADABLE,
                    struct delay_conf, duration,
                    "How long each message is held before it is passed on"),
    JN_OPT_END
};

static int delay_transform(const struct jn_service *svc, struct jn_msg *in,
                           struct jn_msg_list *out, struct jn_err *err)
{
    const struct delay_conf *c = svc->conf;
    struct timespec ts = {
        .tv_sec = (time_t)(c->duration / 1000),
        .tv_nsec = (long)(c->duration % 1000) * 1000000L,
    };

    (void)err;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return jn_msg_list_push(out, jn_msg_ref(in));
}

const struct jn_service_def jn_service_delay = {
    .name = "delay",
    .desc = "Holds each message for `duration`, then passes it on unchanged",
    .opts = delay_opts,
    .conf_size = sizeof(struct delay_conf),
    .transform = delay_transform,
};
