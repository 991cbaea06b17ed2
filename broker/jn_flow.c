/*
 * jn_flow: flow control. Intake is refused, on each IN channel's own protocol, while a queue
 * its routes feed is past its budget (`max_queued`, with `when_full: block`) or the disk under
 * the journal is short of `min_free_disk`; it resumes by itself once the queue is below 90 % of
 * its budget or the disk has room again. A full queue with `when_full: reject` or `drop-oldest`
 * takes the message and dead-letters (the new one, or its oldest) instead.
 *
 * The queue depths are the journal's own counts of committed records (jn_qcount.h), so they
 * hold across restarts and cost no scan; they lag the commits in flight, so a queue may pass
 * its budget by about one commit group. The map's high_water (jn_journal.c) stays the last
 * guard for the journal as a whole.
 *
 * Model: RabbitMQ's memory and disk alarms (block publishers, resume below the mark) and its
 * queue length limits with overflow reject-publish / drop-head. Loop thread.
 */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

#include <event2/event.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_queue.h"

#define DISK_CHECK_MS 1000

/* Adds out index o to the list *l of n (no duplicates). 0 or JN_ENOMEM. */
static int feed_add(size_t **l, size_t *n, size_t o)
{
    size_t *nl;

    for (size_t i = 0; i < *n; i++) {
        if ((*l)[i] == o) {
            return 0;
        }
    }
    nl = jn_realloc(*l, (*n + 2) * sizeof(*nl));
    if (nl == NULL) {
        return JN_ENOMEM;
    }
    nl[(*n)++] = o;
    nl[*n] = (size_t)-1;
    *l = nl;
    return 0;
}

static void disk_check(struct jn_broker *b)
{
    unsigned long long min = b->cfg->core.min_free_disk;
    struct statvfs st;
    unsigned long long avail;
    int low;

    if (min == 0 || statvfs(b->cfg->core.data_dir, &st) != 0) {
        return;
    }
    avail = (unsigned long long)st.f_bavail * st.f_frsize;
    low = avail < min;
    if (low != b->disk_low) {
        jn_log(low ? JN_LOG_WARN : JN_LOG_INFO, low
               ? "the disk holding %s has %llu bytes free, less than min_free_disk (%llu): new "
                 "input is refused until it has room"
               : "the disk holding %s has %llu bytes free again (min_free_disk %llu): input "
                 "resumes", b->cfg->core.data_dir, avail, min);
    }
    b->disk_low = low;
    snprintf(b->disk_why, sizeof(b->disk_why), "the disk holding the journal has less than "
             "min_free_disk free; try again later");
}

static void disk_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_broker *b = arg;
    struct timeval tv = {DISK_CHECK_MS / 1000, (DISK_CHECK_MS % 1000) * 1000};

    (void)fd;
    (void)what;
    disk_check(b);
    evtimer_add(b->disk_timer, &tv);
}

static void feeds_free(size_t **feeds, size_t n)
{
    for (size_t i = 0; feeds && i < n; i++) {
        jn_free(feeds[i]);
    }
    jn_free(feeds);
}

/* Per IN channel of b: the OUT channel indexes cfg's routes from it feed that have a
 * max_queued budget. NULL when out of memory. */
static size_t **feeds_new(struct jn_broker *b, const struct jn_config *cfg)
{
    size_t **feeds = jn_calloc(b->nchans ? b->nchans : 1, sizeof(*feeds));

    for (size_t i = 0; feeds != NULL && i < b->nchans; i++) {
        size_t n = 0;
        if (b->chans[i]->dir != JN_DIR_IN) {
            continue;
        }
        for (size_t r = 0; r < cfg->nroutes; r++) {
            const struct jn_cfg_route *rt = &cfg->routes[r];
            int reads = 0;
            for (size_t f = 0; f < rt->rc.from.n; f++) {
                reads |= rt->from[f] == i;
            }
            for (size_t d = 0; reads && d < rt->rc.to.n; d++) {
                if (b->queues[rt->to[d]] != NULL &&
                    (b->chans[rt->to[d]]->max_queued.messages > 0 ||
                     b->chans[rt->to[d]]->max_queued.bytes > 0) &&
                    feed_add(&feeds[i], &n, rt->to[d]) != 0) {
                    feeds_free(feeds, b->nchans);
                    return NULL;
                }
            }
        }
    }
    return feeds;
}

int jn_flow__init(struct jn_broker *b, struct jn_err *err)
{
    b->feeds = feeds_new(b, b->cfg);
    b->nfeeds = b->nchans;
    if (b->feeds == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (b->cfg->core.min_free_disk > 0) {
        b->disk_timer = evtimer_new(b->base, disk_cb, b);
        if (b->disk_timer == NULL) {
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        disk_check(b);
    }
    return 0;
}

int jn_flow__reconfig(struct jn_broker *b)
{
    size_t **feeds = feeds_new(b, b->cfg);

    if (feeds == NULL) {
        return JN_ENOMEM;
    }
    feeds_free(b->feeds, b->nfeeds);
    b->feeds = feeds;
    b->nfeeds = b->nchans;
    if (b->cfg->core.min_free_disk == 0) {
        b->disk_low = 0;
    } else if (b->disk_timer == NULL) {
        b->disk_timer = evtimer_new(b->base, disk_cb, b);
        if (b->disk_timer != NULL) {
            disk_cb(-1, 0, b); /* checks now, then every DISK_CHECK_MS */
        }
    }
    return 0;
}

void jn_flow__start(struct jn_broker *b)
{
    struct timeval tv = {DISK_CHECK_MS / 1000, (DISK_CHECK_MS % 1000) * 1000};

    if (b->disk_timer != NULL) {
        evtimer_add(b->disk_timer, &tv);
    }
}

void jn_flow__free(struct jn_broker *b)
{
    feeds_free(b->feeds, b->nfeeds);
    b->feeds = NULL;
    if (b->disk_timer != NULL) {
        event_free(b->disk_timer);
        b->disk_timer = NULL;
    }
}

const char *jn_flow__blocked(struct jn_broker *b, const struct jn_channel *src)
{
    const size_t *f = b->feeds ? b->feeds[src->slot] : NULL;

    if (b->disk_low) {
        return b->disk_why;
    }
    for (; f != NULL && *f != (size_t)-1; f++) {
        struct jn_queue *q = b->queues[*f];
        if (jn_queue_full(q) && b->chans[*f]->when_full == JN_FULL_BLOCK) {
            return jn_queue_full_why(q);
        }
    }
    return NULL;
}

int jn_flow__full_policy(struct jn_broker *b, struct jn_queue *q, struct jn_jtxn *t,
                         const struct jn_msg *m, const char *route)
{
    struct jn_channel *ch = jn_queue_channel(q);

    if (ch->when_full == JN_FULL_BLOCK || !jn_queue_full(q)) {
        return 0;
    }
    if (ch->when_full == JN_FULL_DROP_OLDEST &&
        jn_queue_drop_oldest(q, "dropped: the queue was full (when_full: drop-oldest)") == 0) {
        return 0;
    }
    ch->n_failed++;
    jn_notify__dead_letter(b, t, m, route, ch->name, 0,
                           ch->when_full == JN_FULL_REJECT
                               ? "rejected: the queue was full (when_full: reject)"
                               : "rejected: the queue was full and nothing queued could be "
                                 "dropped (when_full: drop-oldest)",
                           JN_LOG_DEBUG, ch->log_prefix);
    return 1;
}
