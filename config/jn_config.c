/*
 * jn_config: loading and cross-checking the whole config (see jn_config.h).
 *
 * Each section is parsed by its option table (jn_opt); the references between sections (a
 * route's channels and services, unrouted) are resolved afterwards, like Mosquitto's
 * config__check. Every error is collected with its position; nothing stops at the first.
 */
#include "jn_config.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_cond.h"
#include "jn_mem.h"
#include "jn_net.h"
#include "jn_rate.h"
#include "jn_router.h"

static const char *const directions[] = {"in", "out", NULL};
static const char *const orders[] = {"none", "fifo", "key", NULL};
/* Same order as enum jn_when_full. */
static const char *const when_full[] = {"block", "reject", "drop-oldest", NULL};

static const struct jn_opt max_queued_opts[] = {
    JN_OPT_INT("messages", "0", 0, 1LL << 40, JN_OPT_RELOADABLE, struct jn_queue_limit_conf,
               messages, "Most messages queued for this channel (0: no limit)."),
    JN_OPT_SIZE("bytes", "0", 0, 1LL << 50, JN_OPT_RELOADABLE, struct jn_queue_limit_conf, bytes,
                "Most bytes of queue records for this channel in the journal: payload, headers "
                "and envelope (0: no limit)."),
    JN_OPT_END,
};
/* Same order as enum jn_log_level. */
static const char *const log_levels[] = {"error", "warn", "info", "debug", "trace", NULL};
/* Same order as enum jn_log_format. */
static const char *const log_formats[] = {"text", "json", NULL};

static const struct jn_opt retry_opts[] = {
    JN_OPT_INT("attempts", "10", 1, 1000000, JN_OPT_RELOADABLE, struct jn_retry_conf, attempts,
               "Tries in all (the first send included) before the message is dead-lettered."),
    JN_OPT_DURATION("backoff", "500ms", 1, 86400000LL, JN_OPT_RELOADABLE, struct jn_retry_conf,
                    backoff,
                    "Base delay: retry n waits a random time in 0..min(max_backoff, "
                    "backoff * 2^(n-1)) (full jitter)."),
    JN_OPT_DURATION("max_backoff", "5m", 1, 7 * 86400000LL, JN_OPT_RELOADABLE,
                    struct jn_retry_conf, max_backoff,
                    "Cap of the exponential growth."),
    JN_OPT_END,
};

const struct jn_opt jn_chan_common_opts[] = {
    JN_OPT_STR("type", NULL, JN_OPT_REQUIRED, struct jn_chan_common, type,
               "The protocol: one of the channel types that `junction describe` lists."),
    JN_OPT_ENUM("direction", NULL, directions, JN_OPT_REQUIRED, struct jn_chan_common, direction,
                "in: messages arrive here; out: messages leave here."),
    JN_OPT_SUB("retry", retry_opts, struct jn_retry_conf, JN_OPT_OUT, struct jn_chan_common,
               retry, "Retry policy of deliveries to this channel."),
    JN_OPT_INT("concurrency", "1", 1, 1024, JN_OPT_OUT, struct jn_chan_common, concurrency,
               "Deliveries in flight at once. 1 keeps the order of the queue."),
    JN_OPT_ENUM("ordered", "none", orders, JN_OPT_OUT, struct jn_chan_common, ordered,
                "none: up to concurrency sends at once; fifo: one at a time in queue order; "
                "key: queue order per value of the header ordered_key, different keys in "
                "parallel."),
    JN_OPT_STR("ordered_key", NULL, JN_OPT_OUT, struct jn_chan_common, ordered_key,
               "With ordered: key, the header whose value orders (e.g. X-Patient-Id); a "
               "message without it has the empty key."),
    JN_OPT_SUB("max_queued", max_queued_opts, struct jn_queue_limit_conf, JN_OPT_OUT,
               struct jn_chan_common, max_queued,
               "The queue's budget. Past either figure it is full until it is below 90 % of "
               "both (docs/flow-control.md)."),
    JN_OPT_ENUM("when_full", "block", when_full, JN_OPT_OUT | JN_OPT_RELOADABLE,
                struct jn_chan_common, when_full,
                "block: the IN channels whose routes feed this queue refuse new messages on "
                "their protocol (HTTP 503, MLLP AE, ...) until it has room; reject: messages "
                "are taken and, for this destination, dead-lettered at once; drop-oldest: "
                "taken and queued, and the oldest queued message is dead-lettered."),
    JN_OPT_SUB("rate_limit", jn_rate_opts, struct jn_rate_conf, JN_OPT_IN, struct jn_chan_common,
               rate_limit,
               "Token bucket on intake: past it messages are refused on the channel's protocol "
               "(HTTP 429 with Retry-After, MLLP AE, ...) and counted "
               "(docs/security.md#limits)."),
    JN_OPT_END,
};

static const struct jn_opt actlog_opts[] = {
    JN_OPT_DURATION("retention", "7d", 60000, 3650LL * 86400000, JN_OPT_RELOADABLE,
                    struct jn_actlog_conf,
                    retention, "Actions older than this are deleted (checked every second; "
                    "junction.retention.keep, if shorter, wins)."),
    JN_OPT_SIZE("max_size", "256MiB", 1LL << 20, 1LL << 40, JN_OPT_RELOADABLE,
                struct jn_actlog_conf, max_size,
                "When the action log takes more than this (or a quarter of the journal's "
                "max_size, if less), the oldest actions are deleted."),
    JN_OPT_END,
};

static const struct jn_opt retention_opts[] = {
    JN_OPT_DURATION("keep", "7d", 1000, 3650LL * 86400000, JN_OPT_RELOADABLE,
                    struct jn_retention_conf, keep,
                    "Kept messages (a route's keep:) and actions older than this are deleted, "
                    "oldest first, in small batches (docs/storage.md)."),
    JN_OPT_SIZE("max_bytes", "512MiB", 1LL << 20, 1LL << 50, JN_OPT_RELOADABLE,
                struct jn_retention_conf,
                max_bytes,
                "The budget of kept messages and the action log together (or half of the "
                "journal's max_size, if less): past it the oldest are deleted first."),
    JN_OPT_END,
};

const struct jn_opt jn_core_opts[] = {
    JN_OPT_PATH("data_dir", "./data", 0, struct jn_core_conf, data_dir,
                "Directory of the broker's state (the LMDB journal, queues and action log); "
                "relative to the config file's folder."),
    JN_OPT_ENUM("log_level", "info", log_levels, JN_OPT_RELOADABLE, struct jn_core_conf,
                log_level,
                "Least important level logged."),
    JN_OPT_ENUM("log_format", "text", log_formats, 0, struct jn_core_conf, log_format,
                "Lines on stderr: text (\"<time> [level] [component] message\") or json (one "
                "object per line: time, level, component, msg). Under journald (stderr is "
                "$JOURNAL_STREAM) lines start with their syslog priority (<3> error ... <7> "
                "debug) and text lines leave the time to the journal (docs/operations.md)."),
    JN_OPT_DURATION("shutdown_timeout", "10s", 0, 3600000LL, JN_OPT_RELOADABLE,
                    struct jn_core_conf,
                    shutdown_timeout,
                    "On SIGTERM/SIGINT, how long to wait for sends in flight before exiting; "
                    "queued messages stay in the journal for the next start."),
    JN_OPT_SIZE("max_size", "1GiB", 1LL << 20, 1LL << 40, 0, struct jn_core_conf, max_size,
                "Size of the journal (LMDB map): accepted, queued and dead-lettered messages "
                "and the action log must fit."),
    JN_OPT_INT("high_water", "90", 10, 99, 0, struct jn_core_conf, high_water,
               "Percent of max_size above which new input is refused (HTTP 503, files left "
               "in place) so queued messages can still move; a warning is logged 10 points "
               "before."),
    JN_OPT_SIZE("min_free_disk", "64MiB", 0, 1LL << 50, JN_OPT_RELOADABLE, struct jn_core_conf,
                min_free_disk,
                "New input is refused while the disk holding data_dir has less than this free "
                "(checked every second; 0: never), so the journal's growth cannot fill it."),
    JN_OPT_SUB("action_log", actlog_opts, struct jn_actlog_conf, JN_OPT_RELOADABLE,
               struct jn_core_conf,
               action_log, "Retention of the action log (junction trace, junction log)."),
    JN_OPT_SUB("retention", retention_opts, struct jn_retention_conf, JN_OPT_RELOADABLE,
               struct jn_core_conf,
               retention, "Retention of kept messages and the action log (docs/storage.md)."),
    JN_OPT_STR("admin", NULL, 0, struct jn_core_conf, admin,
               "The admin listener (docs/admin-api.md: /health, /ready, /metrics, /api/v1/): "
               "host:port, or off. Unset: 127.0.0.1:8081, and when that port is taken junction "
               "warns and runs without it; a host:port that is set must bind. Beyond loopback "
               "it needs admin_token."),
    JN_OPT_STR("admin_token", NULL, JN_OPT_SECRET, struct jn_core_conf, admin_token,
               "Bearer token every admin request must carry (Authorization: Bearer ...); "
               "required when admin listens beyond loopback. Give it as \"${ENV_VAR}\"."),
    JN_OPT_SUB("admin_tls", jn_tls_opts, struct jn_tls_conf, 0, struct jn_core_conf, admin_tls,
               "The admin listener over https (docs/security.md): cert and key, and "
               "verify_peer: true to require client certificates."),
    JN_OPT_STR("user", NULL, 0, struct jn_core_conf, user,
               "Started as root, run as this user once the listeners are bound and the journal "
               "is open (setgid, initgroups, setuid; junction run --user wins). Unset: junction "
               "run refuses to run as root unless given --allow-root (docs/security.md)."),
    JN_OPT_END,
};

/* In enum jn_keep's order (jn_store.h). */
static const char *const keep_names[] = {"none", "headers", "all", NULL};

const struct jn_opt jn_route_opts[] = {
    JN_OPT_STRLIST("from", NULL, JN_OPT_REQUIRED, struct jn_route_conf, from,
                   "IN channels whose messages this route considers."),
    JN_OPT_STR("when", NULL, 0, struct jn_route_conf, when,
               "Condition (see docs/routes.md); absent means every message."),
    JN_OPT_STRLIST("via", NULL, 0, struct jn_route_conf, via,
                   "Services applied in order; each output of one feeds the next."),
    JN_OPT_STRLIST("to", NULL, JN_OPT_REQUIRED, struct jn_route_conf, to,
                   "OUT channels; each gets its own copy (fan-out)."),
    JN_OPT_STR("notify", NULL, 0, struct jn_route_conf, notify,
               "Callback URL: a JSON POST {id, route, destination, status, attempts, error, "
               "time} per event, from its own durable queue with retries."),
    JN_OPT_STR("notify_secret", NULL, JN_OPT_SECRET, struct jn_route_conf, notify_secret,
               "Signs each callback: X-Junction-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "
               "\"<t>.\" + body>."),
    JN_OPT_STR("notify_webhook_secret", NULL, JN_OPT_SECRET, struct jn_route_conf,
               notify_webhook_secret,
               "Signs each callback as Standard Webhooks do (webhook-id: the callback's own id, "
               "the same on every retry; webhook-timestamp; webhook-signature: v1,<base64 "
               "HMAC-SHA256>) with this whsec_<base64> secret, as HTTP OUT's sign: does."),
    JN_OPT_STRLIST("notify_on", NULL, 0, struct jn_route_conf, notify_on,
                   "Events to call back: delivered, failed (an attempt failed, will retry), "
                   "dead-lettered. Empty: all three."),
    JN_OPT_ENUM("keep", "all", keep_names, 0, struct jn_route_conf, keep,
                "What is kept of its messages after routing, for the message browser and "
                "replay, until junction.retention deletes it: all (headers and payload as "
                "received), headers (no payload), none."),
    JN_OPT_END,
};

static const char *const top_keys[] = {"junction", "channels", "services", "routes", "unrouted"};

/* Names of a table's options, NULL-terminated, for skip lists. Caller frees the array. */
static const char **opt_names(const struct jn_opt *tab)
{
    size_t n = 0;
    const char **v;

    while (tab[n].name) {
        n++;
    }
    v = jn_calloc(n + 1, sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        v[i] = tab[i].name;
    }
    return v;
}

static void type_list(struct jn_buf *b, int services)
{
    if (services) {
        for (size_t i = 0; jn_service_defs[i]; i++) {
            jn_buf_printf(b, "%s%s", i ? ", " : "", jn_service_defs[i]->name);
        }
    } else {
        for (size_t i = 0; jn_channel_defs[i]; i++) {
            jn_buf_printf(b, "%s%s", i ? ", " : "", jn_channel_defs[i]->name);
        }
    }
}

static const char *nearest_type(const char *t, int services)
{
    const char *names[64] = {NULL};
    size_t n = 0;

    if (services) {
        for (size_t i = 0; jn_service_defs[i] && n < 64; i++) {
            names[n++] = jn_service_defs[i]->name;
        }
    } else {
        for (size_t i = 0; jn_channel_defs[i] && n < 64; i++) {
            names[n++] = jn_channel_defs[i]->name;
        }
    }
    return jn_nearest(t, names, n);
}

/* The `type:` of a channel or service block; reports a missing or unknown one. */
static const char *block_type(const struct jn_node *v, const char *what, int services,
                              struct jn_diag *d)
{
    const struct jn_node *t = jn_node_get(v, "type");
    struct jn_buf b = JN_BUF_INIT;
    const char *near;

    type_list(&b, services);
    if (t == NULL) {
        jn_diag_add(d, &v->pos, "%s: missing required option 'type', expected one of: %s", what,
                    b.p ? b.p : "");
        jn_buf_reset(&b);
        return NULL;
    }
    if (t->kind != JN_NODE_SCALAR) {
        jn_diag_add(d, &t->pos, "%s: type: expected a value, found a %s", what,
                    jn_node_kind_name(t));
        jn_buf_reset(&b);
        return NULL;
    }
    if ((services ? (const void *)jn_service_def_find(t->str)
                  : (const void *)jn_channel_def_find(t->str)) == NULL) {
        near = nearest_type(t->str, services);
        jn_diag_add(d, &t->pos, "%s: unknown %s type '%s'%s%s%s, expected one of: %s", what,
                    services ? "service" : "channel", t->str, near ? " (did you mean '" : "",
                    near ? near : "", near ? "'?)" : "", b.p ? b.p : "");
        jn_buf_reset(&b);
        return NULL;
    }
    jn_buf_reset(&b);
    return t->str;
}

/*
 * A type's check hook is not told the instance's name: its messages start "<type>: " after
 * the position. Rename that prefix to the loader's "channel 'x' (type): " for messages
 * first..d->n, so every config error names the instance the same way.
 */
static void name_instance(struct jn_diag *d, size_t first, const char *type, const char *what)
{
    size_t tl = strlen(type);

    for (size_t i = first; i < d->n; i++) {
        char *m = d->msgs[i];
        char *p = strstr(m, ": ");
        struct jn_buf b = JN_BUF_INIT;
        char *nm;

        /* Skip "file:line:col: " (the file name itself has no ": " in practice). */
        p = p ? p + 2 : m;
        if (strncmp(p, type, tl) != 0 || p[tl] != ':') {
            continue;
        }
        jn_buf_append(&b, m, (size_t)(p - m));
        jn_buf_puts(&b, what);
        jn_buf_puts(&b, p + tl);
        nm = jn_buf_steal(&b);
        if (nm != NULL) {
            jn_free(d->msgs[i]);
            d->msgs[i] = nm;
        }
    }
}

static int load_channel(struct jn_config *c, const struct jn_node *k, const struct jn_node *v,
                        struct jn_diag *d)
{
    struct jn_cfg_channel *ch = &c->channels[c->nchannels];
    char what[320];
    const char *type;
    const char **common_names = NULL;
    int errs = 0;
    unsigned mask;

    memset(ch, 0, sizeof(*ch));
    ch->pos = k->pos;
    ch->name = jn_strdup(k->str);
    if (ch->name == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        return 1;
    }
    c->nchannels++;
    snprintf(what, sizeof(what), "channel '%s'", k->str);
    if (v->kind != JN_NODE_MAP) {
        jn_diag_add(d, &v->pos, "%s: expected a map of options, found a %s", what,
                    jn_node_kind_name(v));
        return 1;
    }
    type = block_type(v, what, 0, d);
    if (type == NULL) {
        return 1;
    }
    ch->def = jn_channel_def_find(type);
    snprintf(what, sizeof(what), "channel '%s' (%s)", k->str, type);
    /* The direction first: it decides which options are allowed. */
    {
        const struct jn_node *dn = jn_node_get(v, "direction");
        int dir = -1;
        if (dn && dn->kind == JN_NODE_SCALAR) {
            dir = strcmp(dn->str, "in") == 0 ? 0 : strcmp(dn->str, "out") == 0 ? 1 : -1;
        }
        mask = dir == 0 ? JN_OPT_IN : dir == 1 ? JN_OPT_OUT : 0;
    }
    /* All common names (also those of the other direction, which the common pass reports). */
    common_names = opt_names(jn_chan_common_opts);
    if (common_names == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        return 1;
    }
    /* Common keys first; keys it does not know are the type's, checked in the second pass. */
    errs += jn_opt_parse(jn_chan_common_opts, v, &ch->common, what, mask | JN_OPT_LENIENT, NULL, v,
                         d);
    if (ch->def->default_concurrency > 0 && jn_node_get(v, "concurrency") == NULL) {
        ch->common.concurrency = ch->def->default_concurrency;
    }
    /* Left 0 (unknown) when the direction is missing or wrong, like a channel whose type is
     * unknown: its own error says so, and routes do not check their ends against it. */
    ch->dir = mask == JN_OPT_IN ? JN_DIR_IN : mask == JN_OPT_OUT ? JN_DIR_OUT : 0;
    if (errs == 0 && (ch->common.ordered == JN_ORDERED_KEY) != (ch->common.ordered_key != NULL)) {
        const struct jn_node *on = jn_node_get(v, "ordered");
        jn_diag_add(d, on ? &on->pos : &v->pos, "%s: %s", what,
                    ch->common.ordered_key ? "ordered_key needs ordered: key"
                                           : "ordered: key needs ordered_key: <header name>");
        errs++;
    }
    if (mask && !(jn_channel_def_dirs(ch->def) & ch->dir)) {
        const struct jn_node *dn = jn_node_get(v, "direction");
        jn_diag_add(d, &dn->pos, "%s: direction: '%s' is not supported, expected %s", what,
                    dn->str, ch->def->in ? "in" : "out");
        errs++;
    }
    ch->conf = jn_calloc(1, ch->def->conf_size);
    if (ch->conf == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        errs++;
    } else {
        errs += jn_opt_parse(ch->def->opts, v, ch->conf, what, mask, common_names, v, d);
        if (errs == 0 && ch->def->check) {
            size_t first = d->n;
            errs += ch->def->check(ch->conf, ch->dir, v, d);
            name_instance(d, first, type, what);
        }
        if (errs == 0 && ch->dir == JN_DIR_OUT && ch->def->concurrency_of != NULL &&
            jn_node_get(v, "concurrency") == NULL) {
            ch->common.concurrency = ch->def->concurrency_of(ch->conf);
        }
    }
    jn_free(common_names);
    return errs;
}

static int load_service(struct jn_config *c, const struct jn_node *k, const struct jn_node *v,
                        struct jn_diag *d)
{
    struct jn_cfg_service *s = &c->services[c->nservices];
    static const char *const skip[] = {"type", NULL};
    char what[320];
    const char *type;
    int errs = 0;

    memset(s, 0, sizeof(*s));
    s->pos = k->pos;
    s->name = jn_strdup(k->str);
    if (s->name == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        return 1;
    }
    c->nservices++;
    snprintf(what, sizeof(what), "service '%s'", k->str);
    if (v->kind != JN_NODE_MAP) {
        jn_diag_add(d, &v->pos, "%s: expected a map of options, found a %s", what,
                    jn_node_kind_name(v));
        return 1;
    }
    type = block_type(v, what, 1, d);
    if (type == NULL) {
        return 1;
    }
    s->def = jn_service_def_find(type);
    snprintf(what, sizeof(what), "service '%s' (%s)", k->str, type);
    s->conf = jn_calloc(1, s->def->conf_size ? s->def->conf_size : 1);
    if (s->conf == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        return 1;
    }
    errs += jn_opt_parse(s->def->opts, v, s->conf, what, 0, skip, v, d);
    if (errs == 0 && s->def->check) {
        size_t first = d->n;
        errs += s->def->check(s->conf, v, d);
        name_instance(d, first, type, what);
    }
    return errs;
}

static long find_channel(const struct jn_config *c, const char *name)
{
    for (size_t i = 0; i < c->nchannels; i++) {
        if (strcmp(c->channels[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static int load_route(struct jn_config *c, const struct jn_node *k, const struct jn_node *v,
                      struct jn_diag *d)
{
    struct jn_cfg_route *r = &c->routes[c->nroutes];
    char what[320];
    int errs;

    memset(r, 0, sizeof(*r));
    r->pos = k->pos;
    r->name = jn_strdup(k->str);
    if (r->name == NULL) {
        jn_diag_add(d, &k->pos, "out of memory");
        return 1;
    }
    c->nroutes++;
    snprintf(what, sizeof(what), "route '%s'", k->str);
    errs = jn_opt_parse(jn_route_opts, v, &r->rc, what, 0, NULL, v, d);
    if (v->kind != JN_NODE_MAP) {
        return errs ? errs : 1;
    }
    return errs + jn_router_compile(r, c, k, v, what, d);
}

typedef int (*block_fn)(struct jn_config *c, const struct jn_node *k, const struct jn_node *v,
                        struct jn_diag *d);

static int load_section(struct jn_config *c, const struct jn_node *root, const char *key,
                        void **arr, size_t elem, block_fn fn, struct jn_diag *d)
{
    const struct jn_node *s = jn_node_get(root, key);
    int errs = 0;

    if (s == NULL || jn_node_is_null(s)) {
        return 0;
    }
    if (s->kind != JN_NODE_MAP) {
        jn_diag_add(d, &s->pos, "%s: expected a map of name: {...}, found a %s", key,
                    jn_node_kind_name(s));
        return 1;
    }
    *arr = jn_calloc(s->n + 1, elem);
    if (*arr == NULL) {
        jn_diag_add(d, &s->pos, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < s->n; i++) {
        errs += fn(c, s->keys[i], s->vals[i], d);
    }
    return errs;
}

/* YAML double-quoted string content. */
static void yaml_quote(struct jn_buf *b, const char *s)
{
    jn_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            jn_buf_putc(b, '\\');
        }
        jn_buf_putc(b, *s);
    }
    jn_buf_putc(b, '"');
}

/*
 * A route's callbacks leave through an HTTP OUT channel of their own, "notify:<route>", so
 * they get a durable queue, retries and signing from the same code as every delivery. The
 * channel is written as YAML and loaded like one the user wrote; its errors are reported at
 * the route's notify: option.
 */
static int add_notify_channels(struct jn_config *c, const struct jn_node *root, struct jn_diag *d)
{
    int errs = 0;

    for (size_t i = 0; i < c->nroutes; i++) {
        struct jn_cfg_route *r = &c->routes[i];
        const struct jn_node *rn = jn_node_get(jn_node_get(root, "routes"), r->name);
        const struct jn_node *un = jn_node_get(rn, "notify");
        struct jn_buf y = JN_BUF_INIT;
        struct jn_diag nd;
        struct jn_node *doc;
        struct jn_cfg_channel *grown;

        if (r->rc.notify == NULL) {
            continue;
        }
        jn_buf_puts(&y, "notify:");
        jn_buf_puts(&y, r->name);
        jn_buf_puts(&y, ":\n  type: http\n  direction: out\n  concurrency: 4\n  url: ");
        yaml_quote(&y, r->rc.notify);
        jn_buf_puts(&y, "\n  retry: {attempts: 20, backoff: 1s, max_backoff: 5m}\n");
        jn_buf_puts(&y, "  headers: {X-Junction-Event: '{header.X-Junction-Event}'}\n");
        if (r->rc.notify_secret) {
            jn_buf_puts(&y, "  sign_secret: ");
            yaml_quote(&y, r->rc.notify_secret);
            jn_buf_puts(&y, "\n");
        }
        if (r->rc.notify_webhook_secret) {
            jn_buf_puts(&y, "  sign: {scheme: standard-webhooks, secret: ");
            yaml_quote(&y, r->rc.notify_webhook_secret);
            jn_buf_puts(&y, "}\n");
        }
        jn_diag_init(&nd);
        doc = y.p ? jn_yaml_load_buf("notify", y.p, y.len, &nd) : NULL;
        jn_buf_reset(&y);
        grown = jn_realloc(c->channels, (c->nchannels + 2) * sizeof(*grown));
        if (doc == NULL || grown == NULL || doc->kind != JN_NODE_MAP || doc->n != 1) {
            jn_diag_add(d, un ? &un->pos : &r->pos, "route '%s': notify: out of memory", r->name);
            jn_node_free(doc);
            jn_diag_free(&nd);
            if (grown) {
                c->channels = grown;
            }
            errs++;
            continue;
        }
        c->channels = grown;
        if (load_channel(c, doc->keys[0], doc->vals[0], &nd) != 0 || nd.nerr) {
            /* Report the channel's complaint (without the synthetic position) at notify:. */
            for (size_t k = 0; k < nd.n; k++) {
                const char *msg = strstr(nd.msgs[k], "(http): ");
                jn_diag_add(d, un ? &un->pos : &r->pos, "route '%s': notify: %s", r->name,
                            msg ? msg + 8 : nd.msgs[k]);
            }
            errs++;
        }
        c->channels[c->nchannels - 1].pos = un ? un->pos : r->pos;
        r->notify_chan = (long)(c->nchannels - 1);
        jn_node_free(doc);
        jn_diag_free(&nd);
    }
    return errs;
}

static int load_unrouted(struct jn_config *c, const struct jn_node *root, struct jn_diag *d)
{
    const struct jn_node *u = jn_node_get(root, "unrouted");
    long idx;

    c->unrouted = JN_UNROUTED_DEAD_LETTER;
    if (u == NULL) {
        return 0;
    }
    if (u->kind != JN_NODE_SCALAR) {
        jn_diag_add(d, &u->pos, "unrouted: expected dead-letter, drop or an OUT channel name, "
                    "found a %s", jn_node_kind_name(u));
        return 1;
    }
    if (strcmp(u->str, "dead-letter") == 0) {
        return 0;
    }
    if (strcmp(u->str, "drop") == 0) {
        c->unrouted = JN_UNROUTED_DROP;
        return 0;
    }
    idx = find_channel(c, u->str);
    if (idx >= 0 && c->channels[idx].dir == 0) {
        return 1; /* its type or direction failed, and was reported (see load_route) */
    }
    if (idx < 0 || c->channels[idx].dir != JN_DIR_OUT) {
        jn_diag_add(d, &u->pos, "unrouted: '%s' is %s, expected dead-letter, drop or the name of "
                    "an OUT channel", u->str, idx < 0 ? "not a channel" : "an IN channel");
        return 1;
    }
    c->unrouted = JN_UNROUTED_CHANNEL;
    c->unrouted_channel = (size_t)idx;
    return 0;
}

/* An IN channel's `respond: response_via:` names services defined under `services:`. Returns
 * the number of errors. */
static int check_response_via(struct jn_config *c, const struct jn_node *chans,
                              struct jn_diag *d)
{
    int errs = 0;

    for (size_t i = 0; i < c->nchannels; i++) {
        const struct jn_cfg_channel *ch = &c->channels[i];
        const struct jn_node *v = jn_node_get(jn_node_get(jn_node_get(chans, ch->name),
                                                          "respond"), "response_via");
        if (v == NULL || v->kind != JN_NODE_SEQ || ch->dir != JN_DIR_IN) {
            continue; /* its type was checked with the channel's options */
        }
        for (size_t k = 0; k < v->n; k++) {
            const struct jn_node *e = v->vals[k];
            const char *names[256];
            size_t n = 0, found = 0;
            const char *near;
            if (e->kind != JN_NODE_SCALAR) {
                continue;
            }
            for (size_t s = 0; s < c->nservices; s++) {
                found |= strcmp(c->services[s].name, e->str) == 0;
                if (n < 256) {
                    names[n++] = c->services[s].name;
                }
            }
            if (found) {
                continue;
            }
            near = jn_nearest(e->str, names, n);
            jn_diag_add(d, &e->pos, "channel '%s': respond.response_via: unknown service "
                        "'%s'%s%s%s, expected the name of one defined under 'services:'",
                        ch->name, e->str,
                        near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
            errs++;
        }
    }
    return errs;
}

/* An IN channel's `respond: from:` (HTTP IN's request-reply) names an OUT channel that one of
 * its routes feeds. Returns the number of errors. */
static int check_respond(struct jn_config *c, const struct jn_node *root, struct jn_diag *d)
{
    const struct jn_node *chans = jn_node_get(root, "channels");
    int errs = 0;

    for (size_t i = 0; i < c->nchannels; i++) {
        const struct jn_cfg_channel *ch = &c->channels[i];
        const struct jn_node *f = jn_node_get(jn_node_get(jn_node_get(chans, ch->name),
                                                          "respond"), "from");
        long idx;
        int fed = 0;
        if (f == NULL || f->kind != JN_NODE_SCALAR || ch->dir != JN_DIR_IN) {
            continue;
        }
        idx = find_channel(c, f->str);
        if (idx < 0 || c->channels[idx].dir != JN_DIR_OUT) {
            jn_diag_add(d, &f->pos, "channel '%s': respond.from: '%s' is %s, expected the name "
                        "of an OUT channel", ch->name, f->str,
                        idx < 0 ? "not a channel" : "an IN channel");
            errs++;
            continue;
        }
        for (size_t r = 0; r < c->nroutes; r++) {
            const struct jn_cfg_route *rt = &c->routes[r];
            int reads = 0;
            for (size_t k = 0; rt->from && k < rt->rc.from.n; k++) {
                reads |= rt->from[k] == i;
            }
            for (size_t k = 0; reads && rt->to && k < rt->rc.to.n; k++) {
                fed |= rt->to[k] == (size_t)idx;
            }
        }
        if (!fed) {
            jn_diag_add(d, &f->pos, "channel '%s': respond.from: no route from '%s' feeds '%s', "
                        "so no answer could come", ch->name, ch->name, f->str);
            errs++;
        }
    }
    return errs + check_response_via(c, chans, d);
}

/* A listen address's host that binds every interface: 0.0.0.0, :: (or [::]), *. */
static int wildcard_host(const char *listen)
{
    char host[256];
    struct in_addr a4;
    struct in6_addr a6;
    int port;

    if (listen == NULL || jn_split_hostport(listen, host, sizeof(host), &port, 0) != 0) {
        return 0;
    }
    if (strcmp(host, "*") == 0) {
        return 1;
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return a4.s_addr == htonl(INADDR_ANY);
    }
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}

/* The option named name of type t in tab, or NULL. */
static const struct jn_opt *find_opt(const struct jn_opt *tab, const char *name,
                                     enum jn_opt_type t)
{
    for (; tab && tab->name; tab++) {
        if (tab->type == t && strcmp(tab->name, name) == 0) {
            return tab;
        }
    }
    return NULL;
}

static const struct jn_pos *node_pos(const struct jn_node *n, const struct jn_pos *fallback)
{
    return n ? &n->pos : fallback;
}

/*
 * Warnings for a config that loads but will not work as meant (junction check prints them and
 * still exits 0; junction run logs them): an IN channel no route reads, an OUT channel nothing
 * sends to, a listener open to every network without TLS. A channel listens when its type has
 * a `listen` option next to a `tls:` sub-table, so a new listening type is covered by its
 * table alone.
 */
static void check_warnings(const struct jn_config *c, const struct jn_node *root,
                           struct jn_diag *d)
{
    const struct jn_node *chans = jn_node_get(root, "channels");

    for (size_t i = 0; i < c->nchannels; i++) {
        const struct jn_cfg_channel *ch = &c->channels[i];
        const struct jn_node *cn = jn_node_get(chans, ch->name);
        const struct jn_opt *lo = find_opt(ch->def->opts, "listen", JN_OPT_T_STR);
        const struct jn_opt *to = find_opt(ch->def->opts, "tls", JN_OPT_T_SUB);
        int used = 0;

        if (cn == NULL) {
            continue; /* a synthetic channel (a route's notify:), used by its route */
        }
        for (size_t r = 0; r < c->nroutes && !used; r++) {
            const struct jn_cfg_route *rt = &c->routes[r];
            const size_t *ends = ch->dir == JN_DIR_IN ? rt->from : rt->to;
            size_t n = ch->dir == JN_DIR_IN ? rt->rc.from.n : rt->rc.to.n;
            for (size_t k = 0; k < n && !used; k++) {
                used = ends[k] == i;
            }
        }
        if (ch->dir == JN_DIR_OUT && c->unrouted == JN_UNROUTED_CHANNEL &&
            c->unrouted_channel == i) {
            used = 1;
        }
        if (!used && ch->dir == JN_DIR_IN) {
            jn_diag_warn(d, &ch->pos, "channel '%s' (%s): no route reads from this IN channel; "
                         "what it receives is %s%s%s", ch->name, ch->def->name,
                         c->unrouted == JN_UNROUTED_DROP      ? "dropped (unrouted: drop)"
                         : c->unrouted == JN_UNROUTED_CHANNEL ? "sent to unrouted: '"
                                                              : "dead-lettered as unrouted",
                         c->unrouted == JN_UNROUTED_CHANNEL
                             ? c->channels[c->unrouted_channel].name : "",
                         c->unrouted == JN_UNROUTED_CHANNEL ? "'" : "");
        } else if (!used) {
            jn_diag_warn(d, &ch->pos, "channel '%s' (%s): no route sends to this OUT channel",
                         ch->name, ch->def->name);
        }
        if (ch->dir == JN_DIR_IN && lo && to && to->sub == jn_tls_opts) {
            const char *listen = *(char *const *)((const char *)ch->conf + lo->off);
            const struct jn_tls_conf *tls =
                (const struct jn_tls_conf *)((const char *)ch->conf + to->off);
            if (wildcard_host(listen) && !jn_tls_on(tls)) {
                jn_diag_warn(d, node_pos(jn_node_get(cn, "listen"), &ch->pos),
                             "channel '%s' (%s): listen: %s takes connections from every "
                             "network without tls: (set tls.cert and tls.key, or listen on a "
                             "private address)", ch->name, ch->def->name, listen);
            }
        }
    }
    if (wildcard_host(c->core.admin) && !jn_tls_on(&c->core.admin_tls)) {
        jn_diag_warn(d, node_pos(jn_node_get(jn_node_get(root, "junction"), "admin"), NULL),
                     "junction: admin: %s takes connections from every network without "
                     "admin_tls: (its token travels in clear)", c->core.admin);
    }
}

static struct jn_config *load_root(struct jn_node *root, struct jn_diag *d)
{
    struct jn_config *c;
    int errs = 0;

    if (root == NULL) {
        return NULL;
    }
    c = jn_calloc(1, sizeof(*c));
    if (c == NULL) {
        jn_diag_add(d, &root->pos, "out of memory");
        jn_node_free(root);
        return NULL;
    }
    c->router = &jn_router_ops;
    jn_diag_init(&c->names);
    if (root->kind != JN_NODE_MAP) {
        jn_diag_add(d, &root->pos, "expected a map with junction:, channels:, services:, "
                    "routes:, found a %s", jn_node_kind_name(root));
        errs++;
    } else {
        for (size_t i = 0; i < root->n; i++) {
            const char *key = root->keys[i]->str;
            int known = 0;
            for (size_t k = 0; k < sizeof(top_keys) / sizeof(top_keys[0]); k++) {
                known |= strcmp(key, top_keys[k]) == 0;
            }
            if (!known) {
                const char *near = jn_nearest(key, top_keys, 5);
                jn_diag_add(d, &root->keys[i]->pos, "unknown section '%s'%s%s%s, expected one "
                            "of: junction, channels, services, routes, unrouted", key,
                            near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
                errs++;
            }
        }
        {
            const struct jn_node *j = jn_node_get(root, "junction");
            /* Without a junction: map, the defaults (data_dir) still resolve against the
             * config file's folder, through root. */
            errs += jn_opt_parse(jn_core_opts, jn_node_is_null(j) ? NULL : j, &c->core,
                                 "junction", 0, NULL, j ? j : root, d);
            if (j != NULL && !jn_node_is_null(j) && errs == 0) {
                errs += jn_tls_check(&c->core.admin_tls, JN_TLS_SERVER,
                                     jn_tls_on(&c->core.admin_tls), j, "admin_tls", "junction",
                                     d);
            }
        }
        errs += load_section(c, root, "channels", (void **)&c->channels,
                             sizeof(struct jn_cfg_channel), load_channel, d);
        errs += load_section(c, root, "services", (void **)&c->services,
                             sizeof(struct jn_cfg_service), load_service, d);
        errs += load_section(c, root, "routes", (void **)&c->routes, sizeof(struct jn_cfg_route),
                             load_route, d);
        errs += load_unrouted(c, root, d);
        errs += check_respond(c, root, d);
        if (errs == 0) {
            errs += add_notify_channels(c, root, d);
        }
    }
    if (errs == 0 && d->nerr == 0) {
        check_warnings(c, root, d);
    }
    /* Positions point at file names owned by d; keep our own copies for the broker's use. */
    for (size_t i = 0; i < c->nchannels; i++) {
        c->channels[i].pos.file = jn_diag_file(&c->names, c->channels[i].pos.file);
    }
    for (size_t i = 0; i < c->nservices; i++) {
        c->services[i].pos.file = jn_diag_file(&c->names, c->services[i].pos.file);
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        c->routes[i].pos.file = jn_diag_file(&c->names, c->routes[i].pos.file);
    }
    jn_node_free(root);
    if (errs || d->nerr) {
        jn_config_free(c);
        return NULL;
    }
    return c;
}

/* The config's version: the first JN_CONFIG_HASH_LEN hex digits of its text's SHA-256. */
static void config_hash(struct jn_config *c, const char *text, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    static const char hex[] = "0123456789abcdef";

    if (EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen * 2 < JN_CONFIG_HASH_LEN) {
        snprintf(c->hash, sizeof(c->hash), "unknown");
        return;
    }
    for (size_t i = 0; i < JN_CONFIG_HASH_LEN / 2; i++) {
        c->hash[2 * i] = hex[md[i] >> 4];
        c->hash[2 * i + 1] = hex[md[i] & 15];
    }
    c->hash[JN_CONFIG_HASH_LEN] = '\0';
}

struct jn_config *jn_config_load_file(const char *path, struct jn_diag *d)
{
    struct jn_buf text = JN_BUF_INIT;
    struct jn_config *c = load_root(jn_yaml_load_file(path, d, &text), d);

    if (c != NULL) {
        config_hash(c, text.p ? text.p : "", text.len);
        c->text_len = text.len;
        c->text = jn_buf_steal(&text);
    }
    jn_buf_reset(&text);
    return c;
}

struct jn_config *jn_config_load_buf(const char *name, const char *buf, size_t len,
                                     struct jn_diag *d)
{
    struct jn_config *c = load_root(jn_yaml_load_buf(name, buf, len, d), d);

    if (c != NULL) {
        config_hash(c, buf, len);
        c->text = jn_malloc(len + 1);
        if (c->text != NULL) {
            memcpy(c->text, buf, len);
            c->text[len] = '\0';
            c->text_len = len;
        }
    }
    return c;
}

void jn_config_free(struct jn_config *c)
{
    if (c == NULL) {
        return;
    }
    jn_free(c->text);
    for (size_t i = 0; i < c->nchannels; i++) {
        struct jn_cfg_channel *ch = &c->channels[i];
        if (ch->gone) {
            continue; /* an older config's block, borrowed (jn_config_reloadable) */
        }
        if (ch->def && ch->conf) {
            jn_opt_free(ch->def->opts, ch->conf);
        }
        jn_free(ch->conf);
        jn_opt_free(jn_chan_common_opts, &ch->common);
        jn_free(ch->name);
    }
    jn_free(c->channels);
    for (size_t i = 0; i < c->nservices; i++) {
        struct jn_cfg_service *s = &c->services[i];
        if (s->def && s->conf) {
            jn_opt_free(s->def->opts, s->conf);
        }
        jn_free(s->conf);
        jn_free(s->name);
    }
    jn_free(c->services);
    for (size_t i = 0; i < c->nroutes; i++) {
        struct jn_cfg_route *r = &c->routes[i];
        jn_opt_free(jn_route_opts, &r->rc);
        jn_cond_free(r->cond);
        jn_free(r->from);
        jn_free(r->via);
        jn_free(r->to);
        jn_free(r->name);
    }
    jn_free(c->routes);
    jn_opt_free(jn_core_opts, &c->core);
    jn_diag_free(&c->names);
    jn_free(c);
}

const char *jn_config_dirs_text(unsigned dirs)
{
    switch (dirs & (JN_DIR_IN | JN_DIR_OUT)) {
    case JN_DIR_IN:
        return "in";
    case JN_DIR_OUT:
        return "out";
    case JN_DIR_IN | JN_DIR_OUT:
        return "in, out";
    default:
        return "none";
    }
}

void jn_config_reference_md(FILE *out)
{
    fprintf(out, "# Config reference\n\n"
            "Generated by `junction describe --markdown` from the option tables in the code; "
            "a test fails when this file is stale. Sizes take B, KiB, MiB, GiB (or KB, MB, GB); "
            "durations take ms, s, m, h, d. Any value may use `${ENV}` or `${ENV:-default}`; "
            "inside `{ }` or `[ ]` quote it: `{ listen: \"${LISTEN}\" }`.\n\n"
            "An option of type `path` that is relative (`./data`, `out/archive`), its default "
            "included, is relative to the folder of the config file it is written in, not to "
            "the folder junction is started from, so "
            "`junction run` and `junction trace -c /etc/junction/junction.yaml` find the same "
            "`data_dir` wherever they are started. The embedded default config (used when there "
            "is no config file, see `junction --help`) has no folder: its relative paths are "
            "relative to the current directory. Paths inside a kafka channel's `properties` "
            "(`ssl.ca.location`...) are passed to librdkafka as written: make them absolute.\n\n"
            "**Reloadable options.** `reloadable: yes` marks an option that can change on a "
            "running channel, service or route without restarting it: the code that uses it "
            "reads it anew for each message or delivery attempt and keeps nothing (a socket, a "
            "thread, a compiled pattern, a client library handle) made from an earlier value. "
            "Hot reload (not there yet) will apply a change of such options in place and "
            "restart the channel or service for a change of any other option. An unmarked "
            "option may still be safe to change; it is marked only once the code using it has "
            "been checked.\n\n"
            "**Deprecated names.** A row marked Deprecated is an option's old name: it is "
            "still accepted, with a warning (`file:line:col: warning: ... is deprecated, use "
            "...`) that `junction check` prints (and still exits 0) and `junction run` logs at "
            "startup. Giving both the old and the new name is an error.\n\n");
    fprintf(out, "## `junction:`\n\n");
    jn_opt_describe_md(jn_core_opts, NULL, out);
    fprintf(out, "\n## `channels:` (every channel)\n\nA map of name -> channel. These keys apply "
            "to every type; `retry` and `concurrency` only to `direction: out`.\n\n");
    jn_opt_describe_md(jn_chan_common_opts, NULL, out);
    for (size_t i = 0; jn_channel_defs[i]; i++) {
        const struct jn_channel_def *def = jn_channel_defs[i];
        fprintf(out, "\n### channel type `%s`\n\n%s. Directions: %s.\n\n", def->name,
                def->desc, jn_config_dirs_text(jn_channel_def_dirs(def)));
        jn_opt_describe_md(def->opts, NULL, out);
    }
    fprintf(out, "\n## `services:`\n\nA map of name -> service; every service has `type`.\n");
    for (size_t i = 0; jn_service_defs[i]; i++) {
        const struct jn_service_def *def = jn_service_defs[i];
        fprintf(out, "\n### service type `%s`\n\n%s.\n\n", def->name, def->desc);
        jn_opt_describe_md(def->opts, NULL, out);
    }
    fprintf(out, "\n## `routes:`\n\nA map of name -> route. Every route whose `from` lists the "
            "message's channel and whose `when` holds takes the message.\n\n");
    jn_opt_describe_md(jn_route_opts, NULL, out);
    fprintf(out, "\n## `unrouted:`\n\n| value | meaning |\n|---|---|\n"
            "| `dead-letter` (default) | a message no route takes is dead-lettered with the "
            "reason `unrouted` |\n"
            "| `drop` | it is acknowledged and dropped, with a log line |\n"
            "| an OUT channel's name | it is delivered there |\n");
}
