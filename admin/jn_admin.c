/*
 * jn_admin: the admin listener (see jn_admin.h): evhttp on the broker's loop, bound by
 * jn_listener; each request is answered at once from a jn_stats snapshot.
 */
#include "jn_admin_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "jn_auth.h"
#include "jn_broker.h"
#include "jn_httpframe.h"
#include "jn_reload.h"
#include "jn_buf.h"
#include "jn_listener.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_net.h"
#include "jn_prom.h"
#include "jn_stats.h"

#define ADMIN_DEFAULT "127.0.0.1:8081"
#define ADMIN_PREFIX "admin"
#define ADMIN_MAX_BODY (64 * 1024)     /* request bodies (POST /api/v1/replay ...) */
#define ADMIN_MAX_HEADERS (16 * 1024)  /* request line + headers */


/* ---- /health, /ready ---- */

static void get_health(struct jn_admin *a, struct evhttp_request *req)
{
    (void)a;
    jn_admin__reply_json(req, 200, "OK", json_pack("{s:s}", "status", "up"));
}

static void get_ready(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_broker_stats s;
    struct jn_channel_stats cs;
    json_t *why = json_array();
    int ready;

    jn_broker_stats(a->b, &s);
    if (!s.journal_open) {
        json_array_append_new(why, json_string("the journal is not open"));
    }
    if (s.stopping) {
        json_array_append_new(why, json_string("shutting down"));
    } else if (!s.started) {
        json_array_append_new(why, json_string("the channels have not all started yet"));
    } else {
        for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
            if (!cs.up) {
                char m[256];
                snprintf(m, sizeof(m), "channel '%s' is not started", cs.name);
                json_array_append_new(why, json_string(m));
            }
        }
    }
    ready = json_array_size(why) == 0;
    if (ready) {
        json_decref(why);
        jn_admin__reply_json(req, 200, "OK", json_pack("{s:b}", "ready", 1));
    } else {
        jn_admin__reply_json(req, 503, "Service Unavailable",
                   json_pack("{s:b,s:o}", "ready", 0, "not_ready", why));
    }
}

/* ---- /metrics ---- */

/* What the process uses, from /proc and getrusage (Prometheus's process_* names). */
static int process_metrics(struct jn_buf *b)
{
    struct rusage ru;
    struct rlimit rl;
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long pages_total = 0, pages_rss = 0;
    size_t fds = 0;
    int rc = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    DIR *d;

    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &pages_total, &pages_rss) != 2) {
            pages_total = pages_rss = 0;
        }
        fclose(f);
    }
    d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            fds += e->d_name[0] != '.';
        }
        closedir(d);
        fds -= fds > 0; /* the directory stream's own */
    }
    getrusage(RUSAGE_SELF, &ru);
    rc |= jn_prom_family(b, "process_cpu_seconds_total", "counter",
                         "User and system CPU time spent, in seconds.");
    rc |= jn_prom_sample(b, "process_cpu_seconds_total", NULL, NULL, 0,
                         (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                             (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    rc |= jn_prom_family(b, "process_resident_memory_bytes", "gauge",
                         "Resident memory size in bytes.");
    rc |= jn_prom_sample_u(b, "process_resident_memory_bytes", NULL, NULL, 0,
                           pages_rss * (unsigned long long)(page > 0 ? page : 4096));
    rc |= jn_prom_family(b, "process_virtual_memory_bytes", "gauge",
                         "Virtual memory size in bytes.");
    rc |= jn_prom_sample_u(b, "process_virtual_memory_bytes", NULL, NULL, 0,
                           pages_total * (unsigned long long)(page > 0 ? page : 4096));
    rc |= jn_prom_family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    rc |= jn_prom_sample_u(b, "process_open_fds", NULL, NULL, 0, fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        rc |= jn_prom_family(b, "process_max_fds", "gauge",
                             "Maximum number of open file descriptors.");
        rc |= jn_prom_sample_u(b, "process_max_fds", NULL, NULL, 0, rl.rlim_cur);
    }
    return rc;
}

/* A family with one sample per channel of one direction (out: 1 OUT, 0 IN), the value taken
 * by field. */
enum chan_field { F_RECEIVED, F_REFUSED, F_UNROUTED, F_DELIVERED, F_FAILED, F_IN_MEMORY,
                  F_IN_FLIGHT, F_UP, F_PAUSED, F_DEPTH, F_DEPTH_BYTES, F_FULL, F_BLOCKED };

static uint64_t chan_value(const struct jn_channel_stats *cs, enum chan_field f)
{
    switch (f) {
    case F_RECEIVED: return cs->received;
    case F_REFUSED: return cs->refused;
    case F_UNROUTED: return cs->unrouted;
    case F_DELIVERED: return cs->delivered;
    case F_FAILED: return cs->failed;
    case F_IN_MEMORY: return cs->in_memory;
    case F_IN_FLIGHT: return cs->in_flight;
    case F_UP: return (uint64_t)cs->up;
    case F_PAUSED: return (uint64_t)cs->paused;
    case F_DEPTH: return cs->depth;
    case F_DEPTH_BYTES: return cs->depth_bytes;
    case F_FULL: return (uint64_t)cs->full;
    case F_BLOCKED: return cs->blocked != NULL;
    }
    return 0;
}

static int chan_family(struct jn_admin *a, struct jn_buf *b, const char *name, const char *type,
                       const char *help, int dir, enum chan_field f)
{
    struct jn_channel_stats cs;
    int rc = jn_prom_family(b, name, type, help);

    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *lab[] = {"channel", cs.name};
        if (dir < 0 || cs.out == dir) {
            rc |= jn_prom_sample_u(b, name, NULL, lab, 1, chan_value(&cs, f));
        }
    }
    return rc;
}

static double oldest_seconds(const struct jn_channel_stats *cs)
{
    int64_t now = jn_now_us();

    return cs->oldest_us > 0 && now > cs->oldest_us ? (double)(now - cs->oldest_us) / 1e6 : 0;
}

/* A gauge family with one sample and no labels. */
static int gauge1(struct jn_buf *b, const char *name, const char *help, uint64_t v)
{
    return jn_prom_family(b, name, "gauge", help) | jn_prom_sample_u(b, name, NULL, NULL, 0, v);
}

static int render_metrics(struct jn_admin *a, struct jn_buf *b)
{
    struct jn_broker_stats s;
    struct jn_channel_stats cs;
    struct jn_route_stats rs;
    const char *info[] = {"version", a->version, "config_hash", NULL};
    int rc = 0;

    jn_broker_stats(a->b, &s);
    info[3] = s.config_hash;
    rc |= jn_prom_family(b, "junction_build_info", "gauge",
                         "Always 1; the labels say which junction this is.");
    rc |= jn_prom_sample_u(b, "junction_build_info", NULL, info, 2, 1);
    rc |= jn_prom_family(b, "junction_start_time_seconds", "gauge",
                         "When the channels had started, in seconds since the epoch.");
    rc |= jn_prom_sample(b, "junction_start_time_seconds", NULL, NULL, 0,
                         (double)s.started_us / 1e6);
    rc |= jn_prom_family(b, "junction_ready", "gauge",
                         "1 when the journal is open, every channel has started and no "
                         "shutdown is under way (GET /ready).");
    rc |= jn_prom_sample_u(b, "junction_ready", NULL, NULL, 0,
                           s.journal_open && s.started && !s.stopping);
    rc |= chan_family(a, b, "junction_channel_up", "gauge",
                      "1 while the channel is started (listening, subscribed or ready to send).",
                      -1, F_UP);
    rc |= chan_family(a, b, "junction_channel_paused", "gauge",
                      "1 while the operator holds the channel (POST .../pause).", -1, F_PAUSED);
    rc |= chan_family(a, b, "junction_messages_received_total", "counter",
                      "Messages an IN channel accepted (durable in the journal).", 0,
                      F_RECEIVED);
    rc |= chan_family(a, b, "junction_messages_refused_total", "counter",
                      "Messages an IN channel refused (journal full, stopping, rate limit, out of "
                      "memory).",
                      0, F_REFUSED);
    rc |= chan_family(a, b, "junction_messages_unrouted_total", "counter",
                      "Messages from an IN channel that no route took.", 0, F_UNROUTED);
    rc |= jn_prom_family(b, "junction_auth_failures_total", "counter",
                         "Requests an IN channel's auth: refused (401/403), by the method that "
                         "refused (method=none: no credentials for any listed method).");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        for (int m = 0; m < JN_AUTH__COUNT && !cs.out; m++) {
            const char *lab[] = {"channel", cs.name, "method", jn_auth_method_name(m)};
            if (cs.auth_methods & (1u << m)) {
                rc |= jn_prom_sample_u(b, "junction_auth_failures_total", NULL, lab, 2,
                                       cs.auth_failed[m]);
            }
        }
    }
    rc |= jn_prom_family(b, "junction_connections_refused_total", "counter",
                         "Connections a listening IN channel refused: reason=max_connections "
                         "or max_connections_per_ip (HTTP answers them 503, MLLP closes).");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *max[] = {"channel", cs.name, "reason", "max_connections"};
        const char *ip[] = {"channel", cs.name, "reason", "max_connections_per_ip"};
        if (!cs.out && cs.listens) {
            rc |= jn_prom_sample_u(b, "junction_connections_refused_total", NULL, max, 2,
                                   cs.conn_refused_max);
            rc |= jn_prom_sample_u(b, "junction_connections_refused_total", NULL, ip, 2,
                                   cs.conn_refused_per_ip);
        }
    }
    rc |= jn_prom_family(b, "junction_rate_limited_total", "counter",
                         "Messages an IN channel's rate_limit refused (HTTP 429, MLLP AE; also "
                         "in junction_messages_refused_total) or, MQTT listener, held "
                         "unacknowledged until a token.");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *lab[] = {"channel", cs.name};
        if (!cs.out && cs.rate_limited_on) {
            rc |= jn_prom_sample_u(b, "junction_rate_limited_total", NULL, lab, 1,
                                   cs.rate_limited);
        }
    }
    rc |= jn_prom_family(b, "junction_messages_routed_total", "counter",
                         "Messages a route took and queued (its services' outputs).");
    for (size_t i = 0; jn_broker_route_stats(a->b, i, &rs) == 0; i++) {
        const char *lab[] = {"route", rs.name};
        rc |= jn_prom_sample_u(b, "junction_messages_routed_total", NULL, lab, 1, rs.routed);
    }
    rc |= chan_family(a, b, "junction_messages_delivered_total", "counter",
                      "Messages an OUT channel delivered.", 1, F_DELIVERED);
    rc |= jn_prom_family(b, "junction_delivery_failures_total", "counter",
                         "Failed delivery attempts: kind=retry (scheduled again) or "
                         "kind=reject (rejected or out of attempts: dead-lettered).");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *retry[] = {"channel", cs.name, "kind", "retry"};
        const char *reject[] = {"channel", cs.name, "kind", "reject"};
        if (cs.out) {
            rc |= jn_prom_sample_u(b, "junction_delivery_failures_total", NULL, retry, 2,
                                   cs.retried);
            rc |= jn_prom_sample_u(b, "junction_delivery_failures_total", NULL, reject, 2,
                                   cs.failed);
        }
    }
    rc |= jn_prom_family(b, "junction_commit_seconds", "histogram",
                         "From receive to durable (the journal's commit), every IN channel.");
    rc |= jn_prom_histogram(b, "junction_commit_seconds", NULL, 0, s.commit_lat);
    rc |= jn_prom_family(b, "junction_delivery_seconds", "histogram",
                         "From durable in the queue to delivered, per OUT channel (a "
                         "message paged in from the journal counts from its receive).");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *lab[] = {"channel", cs.name};
        if (cs.out) {
            rc |= jn_prom_histogram(b, "junction_delivery_seconds", lab, 1, cs.delivery_lat);
        }
    }
    rc |= chan_family(a, b, "junction_dead_letters_total", "counter",
                      "Messages an OUT channel dead-lettered.", 1, F_FAILED);
    rc |= chan_family(a, b, "junction_queue_depth", "gauge",
                      "Messages queued for an OUT channel: its records in the journal, "
                      "committed (counted by the journal, exact).", 1, F_DEPTH);
    rc |= chan_family(a, b, "junction_queue_bytes", "gauge",
                      "Bytes of an OUT channel's queue records in the journal.", 1,
                      F_DEPTH_BYTES);
    rc |= chan_family(a, b, "junction_queue_full", "gauge",
                      "1 while an OUT channel's queue is past max_queued (until below 90 %).",
                      1, F_FULL);
    rc |= jn_admin__link_metrics(a, b);
    rc |= chan_family(a, b, "junction_channel_blocked", "gauge",
                      "1 while flow control refuses an IN channel's intake (a queue it feeds "
                      "is full, or the disk is short of min_free_disk).", 0, F_BLOCKED);
    rc |= chan_family(a, b, "junction_queue_in_memory", "gauge",
                      "Deliveries of an OUT channel's queue held in memory (its window; the "
                      "journal holds the rest, junction_journal_queued).", 1, F_IN_MEMORY);
    rc |= chan_family(a, b, "junction_queue_in_flight", "gauge",
                      "Sends of an OUT channel under way.", 1, F_IN_FLIGHT);
    rc |= jn_prom_family(b, "junction_queue_oldest_seconds", "gauge",
                         "Age of the oldest message in an OUT channel's queue (0: empty).");
    for (size_t i = 0; jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        const char *lab[] = {"channel", cs.name};
        if (cs.out) {
            rc |= jn_prom_sample(b, "junction_queue_oldest_seconds", NULL, lab, 1,
                                 oldest_seconds(&cs));
        }
    }
    rc |= gauge1(b, "junction_journal_queued",
                 "Queue records in the journal: routed, not delivered yet.",
                 s.queued);
    rc |= gauge1(b, "junction_journal_inbox",
                 "Messages accepted and not routed yet (waiting for their services).",
                 s.inbox);
    rc |= gauge1(b, "junction_journal_dead_letters",
                 "Dead letters kept in the journal (junction dlq list).",
                 s.dead_stored);
    rc |= gauge1(b, "junction_kept_messages",
                 "Messages kept after routing for the browser and replay (junction.retention).",
                 s.kept);
    rc |= gauge1(b, "junction_kept_bytes",
                 "Bytes of the kept messages' pages in the journal.",
                 s.kept_bytes);
    rc |= gauge1(b, "junction_action_log_bytes",
                 "Bytes of the action log's pages in the journal.",
                 s.log_bytes);
    rc |= gauge1(b, "junction_retention_budget_bytes",
                 "What kept messages and the action log may take together.",
                 s.retention_budget);
    rc |= jn_prom_family(b, "junction_retention_deleted_total", "counter",
                         "Kept messages and actions deleted by retention since the start.");
    {
        const char *lk[] = {"kind", "message"}, *la[] = {"kind", "action"};
        rc |= jn_prom_sample_u(b, "junction_retention_deleted_total", NULL, lk, 1,
                               s.pruned_kept);
        rc |= jn_prom_sample_u(b, "junction_retention_deleted_total", NULL, la, 1,
                               s.pruned_actions);
    }
    rc |= gauge1(b, "junction_journal_bytes",
                 "Bytes of the journal's pages in use.",
                 s.journal_bytes);
    rc |= gauge1(b, "junction_journal_map_bytes",
                 "The journal's size limit (max_size).",
                 s.journal_map_bytes);
    rc |= gauge1(b, "junction_routing_in_flight",
                 "Messages with the routing thread or their routing commit.",
                 s.routing_in_flight);
    rc |= process_metrics(b);
    return rc;
}

static void get_metrics(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_buf b = JN_BUF_INIT;

    if (render_metrics(a, &b) != 0) {
        jn_buf_reset(&b);
        jn_admin__reply_error(req, 500, "Internal Server Error", "%s", "out of memory");
        return;
    }
    jn_admin__reply_body(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "",
               b.len);
    jn_buf_reset(&b);
}

/* ---- /api/v1 ---- */

static void get_status(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_broker_stats s;
    int64_t now = jn_now_us();
    json_t *j;

    jn_broker_stats(a->b, &s);
    j = json_pack("{s:s,s:s,s:I,s:b,s:b,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:i,s:I,s:I,s:I}}",
                         "version", a->version,
                         "config_hash", s.config_hash,
                         "uptime_seconds", (json_int_t)(s.started_us ? (now - s.started_us) /
                                                                          1000000 : 0),
                         "ready", s.journal_open && s.started && !s.stopping,
                         "stopping", s.stopping,
                         "channels", (json_int_t)s.nchannels,
                         "routes", (json_int_t)s.nroutes,
                         "dead_letters_total", (json_int_t)s.dead_letters,
                         "routing_in_flight", (json_int_t)s.routing_in_flight,
                         "journal",
                         "bytes", (json_int_t)s.journal_bytes,
                         "map_bytes", (json_int_t)s.journal_map_bytes,
                         "used_pct", s.journal_used_pct,
                         "queued", (json_int_t)s.queued,
                         "inbox", (json_int_t)s.inbox,
                         "dead_letters", (json_int_t)s.dead_stored);
    if (j != NULL) {
        char at[40];
        jn_admin__iso_time(s.config_loaded_us, at, sizeof(at));
        json_object_set_new(j, "config_loaded_at", json_string(at));
        json_object_set_new(j, "config_reloads", json_integer((json_int_t)s.reloads));
        json_object_set_new(j, "flow", json_pack("{s:b,s:I}", "disk_low", s.disk_low,
                                                 "blocked_total", (json_int_t)s.blocked));
        json_object_set_new(j, "retention",
                            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "kept", (json_int_t)s.kept,
                                      "kept_bytes", (json_int_t)s.kept_bytes,
                                      "action_log_bytes", (json_int_t)s.log_bytes,
                                      "budget_bytes", (json_int_t)s.retention_budget,
                                      "deleted_messages", (json_int_t)s.pruned_kept,
                                      "deleted_actions", (json_int_t)s.pruned_actions));
    }
    jn_admin__reply_json(req, 200, "OK", j);
}

static const char *chan_state(const struct jn_channel_stats *cs)
{
    return cs->removed ? "removed" : !cs->up ? "down" : cs->paused ? "paused" : "up";
}

/* POST /api/v1/channels/{name}/pause and /resume. */
static void post_pause(struct jn_admin *a, struct evhttp_request *req, const char *name,
                       int on)
{
    struct jn_err err;
    int rc;

    jn_err_clear(&err);
    rc = jn_broker_pause(a->b, name, on, &err);
    if (rc == JN_ENOENT) {
        jn_admin__reply_error(req, 404, "Not Found", "%s", err.msg);
    } else if (rc != 0) {
        jn_admin__reply_error(req, 409, "Conflict", "%s", err.msg);
    } else {
        jn_admin__reply_json(req, 200, "OK", json_pack("{s:s,s:s}", "channel", name, "state",
                                             on ? "paused" : "up"));
    }
}

/* POST /api/v1/reload: the config file read again and applied live (jn_broker_reload). 200
 * with what changed (or "unchanged"), 422 for a file with errors (each at file:line:col),
 * 409 for a change that needs a restart, 500 when it could not be applied; the running config
 * stays in all three. */
static void post_reload(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_reload_report rep;
    json_t *msgs = json_array(), *j;
    int code;

    jn_broker_reload(a->b, &rep);
    for (size_t i = 0; msgs != NULL && i < rep.msgs.n; i++) {
        json_array_append_new(msgs, json_string(rep.msgs.msgs[i]));
    }
    code = rep.status == JN_RELOAD_APPLIED || rep.status == JN_RELOAD_UNCHANGED ? 200
           : rep.status == JN_RELOAD_INVALID ? 422
           : rep.status == JN_RELOAD_REFUSED ? 409 : 500;
    j = json_pack("{s:s,s:s,s:s,s:o}", "status", jn_reload_status_name(rep.status),
                  "config_hash", rep.hash, "previous_hash", rep.from,
                  rep.status == JN_RELOAD_APPLIED ? "changes" : "errors",
                  msgs ? msgs : json_array());
    jn_reload_report_free(&rep);
    jn_admin__reply_json(req, code, code == 200 ? "OK" : code == 422 ? "Unprocessable Entity"
                                    : code == 409 ? "Conflict" : "Internal Server Error", j);
}

/* /api/v1/channels/{name}/{action}: 1 when path is one (name and action filled). */
static int channel_action(const char *path, char *name, size_t nlen, const char **action)
{
    static const char pre[] = "/api/v1/channels/";
    const char *p, *slash;

    if (strncmp(path, pre, sizeof(pre) - 1) != 0) {
        return 0;
    }
    p = path + sizeof(pre) - 1;
    slash = strchr(p, '/');
    if (slash == NULL || slash == p || (size_t)(slash - p) >= nlen || strchr(slash + 1, '/')) {
        return 0;
    }
    memcpy(name, p, (size_t)(slash - p));
    name[slash - p] = '\0';
    *action = slash + 1;
    return 1;
}

static void get_channels(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_channel_stats cs;
    json_t *arr = json_array();

    for (size_t i = 0; arr && jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        json_t *o = cs.out ? json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "name",
                                       cs.name, "type", cs.type, "direction", "out", "state",
                                       chan_state(&cs), "delivered",
                                       (json_int_t)cs.delivered, "retried",
                                       (json_int_t)cs.retried, "failed", (json_int_t)cs.failed,
                                       "in_memory", (json_int_t)cs.in_memory, "in_flight",
                                       (json_int_t)cs.in_flight)
                           : json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I}", "name", cs.name,
                                       "type", cs.type, "direction", "in", "state",
                                       chan_state(&cs), "received",
                                       (json_int_t)cs.received, "refused",
                                       (json_int_t)cs.refused, "unrouted",
                                       (json_int_t)cs.unrouted);
        if (o != NULL) {
            char t[80];
            jn_admin__iso_time(cs.last_error_us, t, sizeof(t));
            json_object_set_new(o, "last_error",
                                cs.last_error_us ? json_pack("{s:s,s:s}", "time", t, "error",
                                                             cs.last_error)
                                                 : json_null());
        }
        if (o != NULL) {
            jn_admin__link_json(a, i, &cs, o);
        }
        if (o != NULL && cs.out) {
            json_object_set_new(o, "queued", json_integer((json_int_t)cs.depth));
            json_object_set_new(o, "full", json_boolean(cs.full));
        } else if (o != NULL) {
            json_object_set_new(o, "blocked", cs.blocked ? json_string(cs.blocked)
                                                         : json_null());
            if (cs.auth_methods != 0) {
                uint64_t n = 0;
                for (int m = 0; m < JN_AUTH__COUNT; m++) {
                    n += cs.auth_failed[m];
                }
                json_object_set_new(o, "auth_failures", json_integer((json_int_t)n));
            }
            if (cs.rate_limited_on) {
                json_object_set_new(o, "rate_limited",
                                    json_integer((json_int_t)cs.rate_limited));
            }
            if (cs.listens) {
                json_object_set_new(o, "connections_refused",
                                    json_pack("{s:I,s:I}", "max_connections",
                                              (json_int_t)cs.conn_refused_max,
                                              "max_connections_per_ip",
                                              (json_int_t)cs.conn_refused_per_ip));
            }
        }
        json_array_append_new(arr, o);
    }
    jn_admin__reply_json(req, 200, "OK", json_pack("{s:o}", "channels", arr));
}

static void get_queues(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_channel_stats cs;
    json_t *arr = json_array();

    for (size_t i = 0; arr && jn_broker_channel_stats(a->b, i, &cs) == 0; i++) {
        if (!cs.out) {
            continue;
        }
        json_array_append_new(arr, json_pack("{s:s,s:b,s:I,s:I,s:b,s:I,s:b,s:I,s:I,s:f}",
                                             "channel", cs.name, "paused", cs.paused,
                                             "queued", (json_int_t)cs.depth, "queued_bytes",
                                             (json_int_t)cs.depth_bytes, "full", cs.full,
                                             "in_memory", (json_int_t)cs.in_memory,
                                             "complete", cs.depth_exact, "in_flight",
                                             (json_int_t)cs.in_flight, "waiting_retry",
                                             (json_int_t)cs.waiting, "oldest_seconds",
                                             oldest_seconds(&cs)));
    }
    jn_admin__reply_json(req, 200, "OK", json_pack("{s:o}", "queues", arr));
}

static void get_routes(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_route_stats rs;
    json_t *arr = json_array();

    for (size_t i = 0; arr && jn_broker_route_stats(a->b, i, &rs) == 0; i++) {
        json_array_append_new(arr, json_pack("{s:s,s:I}", "name", rs.name, "routed",
                                             (json_int_t)rs.routed));
    }
    jn_admin__reply_json(req, 200, "OK", json_pack("{s:o}", "routes", arr));
}

/* ---- dispatch ---- */

static const struct endpoint {
    const char *path;
    void (*get)(struct jn_admin *a, struct evhttp_request *req);
} endpoints[] = {
    {"/health", get_health},
    {"/ready", get_ready},
    {"/metrics", get_metrics},
    {"/api/v1/status", get_status},
    {"/api/v1/channels", get_channels},
    {"/api/v1/routes", get_routes},
    {"/api/v1/queues", get_queues},
};

/* 1 when cmd is the method the endpoint takes (post: POST, else GET or HEAD); else answers
 * 405 with Allow and returns 0. */
static int method_ok(struct evhttp_request *req, enum evhttp_cmd_type cmd, int post,
                     const char *path)
{
    if (post ? cmd == EVHTTP_REQ_POST : (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)) {
        return 1;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", post ? "POST" : "GET, HEAD");
    jn_admin__reply_error(req, 405, "Method Not Allowed",
                          post ? "%s only answers POST" : "%s only answers GET", path);
    return 0;
}

/* Constant time in the length of the longer of the two. */
static int token_ok(const struct jn_admin *a, const char *hdr)
{
    const char *got;
    size_t glen, n;
    unsigned diff;

    if (hdr == NULL || strncmp(hdr, "Bearer ", 7) != 0) {
        return 0;
    }
    got = hdr + 7;
    glen = strlen(got);
    n = glen > a->token_len ? glen : a->token_len;
    diff = (unsigned)(glen != a->token_len);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < glen ? (unsigned char)got[i] : 0;
        unsigned char y = i < a->token_len ? (unsigned char)a->token[i] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct jn_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    {
        /* The framing guard refused what the peer sent (jn_httpframe.h). */
        int code;
        const char *phrase, *why;
        if (jn_httpframe_refusal(NULL, req, &code, &phrase, &why)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
            jn_admin__reply_error(req, code, phrase, "%s", why);
            return;
        }
    }
    if (path == NULL || path[0] == '\0') {
        path = "/";
    }
    /* The dashboard's files hold no data: a browser opening the page has no token to send;
     * the page then asks for it when /api/v1/ answers 401 (docs/dashboard.md). */
    if (jn_admin__is_ui(path)) {
        if (method_ok(req, cmd, 0, path)) {
            jn_admin__get_ui(a, req, path);
        }
        return;
    }
    if (a->token != NULL &&
        !token_ok(a, evhttp_find_header(evhttp_request_get_input_headers(req),
                                        "Authorization"))) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"junction admin\"");
        jn_admin__reply_error(req, 401, "Unauthorized", "%s",
                    "this admin listener needs 'Authorization: Bearer <admin_token>'");
        return;
    }
    {
        char name[256];
        const char *action;
        if (channel_action(path, name, sizeof(name), &action) &&
            (strcmp(action, "pause") == 0 || strcmp(action, "resume") == 0)) {
            if (method_ok(req, cmd, 1, path)) {
                char *dec = evhttp_uridecode(name, 0, NULL);
                post_pause(a, req, dec ? dec : name, action[0] == 'p');
                free(dec);
            }
            return;
        }
    }
    if (strcmp(path, "/api/v1/reload") == 0) {
        if (method_ok(req, cmd, 1, path)) {
            post_reload(a, req);
        }
        return;
    }
    if (strcmp(path, "/api/v1/replay") == 0) {
        if (method_ok(req, cmd, 1, path)) {
            jn_admin__post_replay(a, req);
        }
        return;
    }
    if (strcmp(path, "/api/v1/dead-letters") == 0) {
        if (method_ok(req, cmd, 0, path)) {
            jn_admin__get_dead_letters(a, req);
        }
        return;
    }
    if (strncmp(path, "/api/v1/config/", 15) == 0) {
        if (method_ok(req, cmd, 0, path)) {
            jn_admin__get_config(a, req, path + 15);
        }
        return;
    }
    if (strncmp(path, "/api/v1/replay/", 15) == 0) {
        if (method_ok(req, cmd, 0, path)) {
            jn_admin__get_replay(a, req, path + 15);
        }
        return;
    }
    if (strncmp(path, "/api/v1/messages", 16) == 0 && (path[16] == '\0' || path[16] == '/')) {
        if (!method_ok(req, cmd, 0, path)) {
            return;
        }
        if (path[16] == '\0') {
            jn_admin__get_messages(a, req);
        } else {
            jn_admin__get_message(a, req, path + 17);
        }
        return;
    }
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        if (strcmp(path, endpoints[i].path) != 0) {
            continue;
        }
        if (method_ok(req, cmd, 0, path)) {
            endpoints[i].get(a, req);
        }
        return;
    }
    jn_admin__reply_error(req, 404, "Not Found",
                "no such endpoint: %s (see docs/admin-api.md: /, /health, /ready, /metrics, "
                "/api/v1/status, /api/v1/channels, /api/v1/queues, /api/v1/routes, "
                "/api/v1/messages, /api/v1/dead-letters, /api/v1/replay, /api/v1/reload)", path);
}

/* ---- life cycle ---- */

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(host, "localhost") == 0) {
        return 1;
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* One connection's framing guard (jn_httpframe.h), freed by evhttp's close callback. */
struct admin_conn {
    struct jn_httpframe frame;
    struct bufferevent *bev;
};

static void admin_conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct admin_conn *c = arg;

    (void)evcon;
    jn_httpframe_detach(&c->frame);
    jn_free(c);
}

/* On the accept's loop turn: the connection is the bufferevent's callback argument (as in
 * channels/http.c, which explains the trick); from then on its close callback frees the guard. */
static void admin_conn_hook(evutil_socket_t fd, short what, void *arg)
{
    struct admin_conn *c = arg;
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;

    (void)fd;
    (void)what;
    bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &cbarg);
    if (eventcb == NULL || cbarg == NULL ||
        evhttp_connection_get_bufferevent((struct evhttp_connection *)cbarg) != c->bev) {
        /* evhttp gave up on it already. */
        jn_httpframe_detach(&c->frame);
        bufferevent_decref(c->bev);
        jn_free(c);
        return;
    }
    evhttp_connection_set_closecb(cbarg, admin_conn_closed, c);
    bufferevent_decref(c->bev);
}

/* evhttp's bevcb: a socket or (admin_tls) server-side TLS bufferevent with the framing guard,
 * so evhttp never answers with its HTML pages. Chunked bodies are refused (411): the handler
 * has no connection at hand to learn of a refusal inside one. */
static struct bufferevent *admin_bev(struct event_base *base, void *arg)
{
    struct jn_admin *a = arg;
    /* net.handshake_timeout (10 s here) from the accept, as on every TLS listener. */
    struct bufferevent *bev = a->tls ? jn_listener_lib_tls_bev(a->lst, base)
                                     : bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct admin_conn *c = bev ? jn_calloc(1, sizeof(*c)) : NULL;
    struct timeval now = {0, 0};

    if (c == NULL) {
        return bev; /* out of memory: without the guard */
    }
    c->bev = bev;
    if (jn_httpframe_attach(&c->frame, bev, ADMIN_MAX_BODY, ADMIN_MAX_HEADERS) != 0) {
        jn_free(c);
        return bev;
    }
    c->frame.no_chunked = 1;
    bufferevent_incref(bev);
    if (event_base_once(base, -1, EV_TIMEOUT, admin_conn_hook, c, &now) != 0) {
        bufferevent_decref(bev);
        jn_httpframe_detach(&c->frame);
        jn_free(c);
    }
    return bev;
}

int jn_admin_start(struct jn_broker *b, const struct jn_admin_conf *conf, struct jn_admin **out,
                   struct jn_err *err)
{
    const char *listen = conf->listen ? conf->listen : ADMIN_DEFAULT;
    int optional = conf->listen == NULL;
    struct jn_admin *a;
    struct jn_listener_conf lc;
    char host[256];
    int port;

    *out = NULL;
    if (strcmp(listen, "off") == 0) {
        jn_log(JN_LOG_INFO, "admin: off");
        return 0;
    }
    if (jn_split_hostport(listen, host, sizeof(host), &port, 0) != 0) {
        return jn_err_set(err, JN_EINVAL, "junction.admin: '%s' is not host:port (or off)",
                          listen);
    }
    if (!is_loopback(host) && (conf->token == NULL || conf->token[0] == '\0')) {
        return jn_err_set(err, JN_EINVAL, "junction.admin: %s is not a loopback address and "
                          "no admin_token is set; set junction.admin_token (e.g. "
                          "\"${JUNCTION_ADMIN_TOKEN}\") or listen on 127.0.0.1", listen);
    }
    a = jn_calloc(1, sizeof(*a));
    if (a == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    a->b = b;
    snprintf(a->version, sizeof(a->version), "%s", conf->version ? conf->version : "");
    if (conf->token != NULL && conf->token[0] != '\0') {
        a->token = jn_strdup(conf->token);
        if (a->token == NULL) {
            jn_admin_free(a);
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        a->token_len = strlen(a->token);
    }
    if (conf->tls != NULL && jn_tls_on(conf->tls)) {
        a->tls = jn_tls_new(conf->tls, JN_TLS_SERVER, "junction: admin_tls", err);
        if (a->tls == NULL) {
            jn_admin_free(a);
            return err->code;
        }
    }
    a->net = (struct jn_net_conf){0, 0, 128, 1000, 10000};
    lc = (struct jn_listener_conf){listen, ADMIN_PREFIX, &a->net, 64, JN_LISTENER_WAIT,
                                   NULL, NULL, NULL, a->tls, NULL, 0};
    a->lst = jn_listener_new(jn_broker_base(b), &lc, err);
    if (a->lst == NULL) {
        jn_admin_free(a);
        if (optional) {
            jn_log(JN_LOG_WARN, "admin: not started on the default %s (%s); set "
                   "junction.admin to another host:port, or off", listen, err->msg);
            jn_err_clear(err);
            return 0;
        }
        return err->code;
    }
    a->http = evhttp_new(jn_broker_base(b));
    if (a->http == NULL) {
        jn_admin_free(a);
        return jn_err_set(err, JN_ENOMEM, "cannot create the admin HTTP server");
    }
    /* Above the framing guard's limits (admin_bev), so that evhttp never answers itself. */
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS + JN_HTTPFRAME_SLACK);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY + JN_HTTPFRAME_SLACK);
    evhttp_set_timeout(a->http, 30);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(a->http, handle, a);
    evhttp_set_bevcb(a->http, admin_bev, a);
    if (evhttp_bind_listener(a->http, jn_listener_lev(a->lst)) == NULL) {
        jn_admin_free(a);
        return jn_err_set(err, JN_ENOMEM, "cannot attach the admin listener");
    }
    a->bound = 1;
    jn_log(JN_LOG_INFO, "admin: listening on %s://%s:%d (/health /ready /metrics /api/v1/)%s",
           a->tls ? "https" : "http", host, jn_listener_port(a->lst),
           a->token ? ", bearer token required" : "");
    *out = a;
    return 0;
}

int jn_admin_port(const struct jn_admin *a)
{
    return a ? jn_listener_port(a->lst) : 0;
}

void jn_admin_free(struct jn_admin *a)
{
    if (a == NULL) {
        return;
    }
    /* As HTTP IN: the listener goes first; evhttp then frees the evconnlistener it was given
     * and its connections. */
    if (a->lst != NULL && !a->bound) {
        evconnlistener_free(jn_listener_lev(a->lst));
    }
    jn_listener_free(a->lst);
    if (a->http != NULL) {
        evhttp_free(a->http);
    }
    jn_free(a->token);
    jn_tls_free(a->tls);
    jn_free(a);
}
