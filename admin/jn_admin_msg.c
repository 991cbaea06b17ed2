/*
 * jn_admin_msg: the message browser of the admin API (docs/admin-api.md), read from the action
 * log: GET /api/v1/messages (by time range, channel, status; newest first, cursor paging) and
 * GET /api/v1/messages/{id} (the message's trace).
 *
 * The action log is keyed by time (time_us seq) with an index by id (id time_us seq), both in
 * jn_store.h, so a time range is one range scan of the log and a trace one prefix scan of the
 * index: no full scan. A page holds at most MSG_LIMIT_MAX messages, and a range at most
 * MSG_RANGE_MAX received messages (past that the answer asks for a narrower range), so one
 * request costs a bounded time on the loop. Model: NiFi's provenance query (time first, then
 * attributes) and Mirth's message browser.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "jn_admin_int.h"
#include "jn_buf.h"
#include "jn_journal.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_opt.h"
#include "jn_stats.h"
#include "jn_store.h"

#define MSG_LIMIT_DEFAULT 50
#define MSG_LIMIT_MAX 1000
#define MSG_RANGE_MAX 200000

void jn_admin__iso_time(int64_t us, char *buf, size_t n)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&s, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us / 1000 % 1000));
}

/* The state a message's latest action says it is in. */
static const char *status_of(const char *event)
{
    if (strcmp(event, "delivered") == 0) {
        return "delivered";
    }
    if (strcmp(event, "dead-lettered") == 0 || strcmp(event, "failed") == 0) {
        return "dead";
    }
    if (strcmp(event, "retry-scheduled") == 0) {
        return "retrying";
    }
    if (strcmp(event, "dropped") == 0 || strcmp(event, "filtered") == 0) {
        return "dropped";
    }
    if (strcmp(event, "received") == 0) {
        return "received";
    }
    return "queued"; /* routed, routed+transformed, replayed */
}

/* ---- one message's trace ---- */

struct trace_ctx {
    struct jn_journal *j;
    json_t *events;      /* or NULL: only the latest is wanted */
    struct jn_logrec last;
    char recv_channel[128];
    int64_t recv_us;
    size_t n;
};

static int visit_record(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct trace_ctx *c = arg;
    struct jn_logrec r;
    struct jn_err err;

    (void)k;
    (void)kl;
    if (jn_store_log_decode(v, vl, &r, &err) != 0) {
        return 1;
    }
    c->n++;
    c->last = r;
    if (strcmp(r.event, "received") == 0 && c->recv_us == 0) {
        c->recv_us = r.time_us;
        snprintf(c->recv_channel, sizeof(c->recv_channel), "%s", r.channel);
    }
    if (c->events != NULL) {
        char t[80];
        jn_admin__iso_time(r.time_us, t, sizeof(t));
        json_t *e = json_pack("{s:s,s:I,s:s,s:s,s:s,s:i,s:s,s:s}", "time", t, "time_us",
                              (json_int_t)r.time_us, "event", r.event, "route", r.route,
                              "channel", r.channel, "attempt", r.attempt, "error", r.error,
                              "config", r.config);
        if (e != NULL && r.peer[0] != '\0') {
            json_object_set_new(e, "peer", json_string(r.peer)); /* received over TLS */
        }
        json_array_append_new(c->events, e);
    }
    return 1; /* one record per key */
}

static int visit_index(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct trace_ctx *c = arg;

    (void)v;
    (void)vl;
    if (kl != JN_ID_LEN + 16) {
        return 0;
    }
    /* The index key ends with the log key: the record is found by it. */
    return jn_journal_scan(c->j, JN_JDB_LOG, (const unsigned char *)k + JN_ID_LEN, 16,
                           visit_record, c) < 0;
}

static int trace(struct jn_journal *j, const char *id, struct trace_ctx *c, json_t *events)
{
    memset(c, 0, sizeof(*c));
    c->j = j;
    c->events = events;
    return jn_journal_scan(j, JN_JDB_LOGID, id, JN_ID_LEN, visit_index, c);
}

static const char *const keep_names[] = {"none", "headers", "all"};

/* What retention keeps of a message (jn_store.h), or NULL when nothing is kept. */
static json_t *headers_json(const struct jn_msg *m)
{
    json_t *hdrs = json_array();

    for (size_t i = 0; hdrs != NULL && i < m->nhdrs; i++) {
        json_array_append_new(hdrs, json_pack("{s:s,s:s}", "name", m->hdrs[i].name, "value",
                                              m->hdrs[i].value));
    }
    return hdrs;
}

static json_t *kept_json(const struct jn_keptrec *k)
{
    json_t *hdrs = headers_json(k->msg), *routes = json_array(), *outs = json_array();
    const char *p = k->routes;
    char url[96];

    for (size_t i = 0; outs != NULL && i < k->nouts; i++) {
        snprintf(url, sizeof(url), "/api/v1/messages/%s/outputs/%zu/payload", k->msg->id, i);
        json_array_append_new(outs, json_pack("{s:s,s:s,s:I,s:o,s:s}", "route",
                                              k->outs[i].route, "service", k->outs[i].service,
                                              "bytes", (json_int_t)k->outs[i].msg->len,
                                              "headers", headers_json(k->outs[i].msg),
                                              "payload_url", url));
    }
    while (routes != NULL && p != NULL && *p != '\0') {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        json_array_append_new(routes, json_stringn(p, l));
        p = e ? e + 1 : NULL;
    }
    snprintf(url, sizeof(url), "/api/v1/messages/%s/payload", k->msg->id);
    return json_pack("{s:s,s:o,s:o,s:I,s:s?,s:o}", "keep", keep_names[k->keep], "routes",
                     routes, "headers", hdrs, "bytes", (json_int_t)k->bytes, "payload_url",
                     k->keep == JN_KEEP_ALL ? url : NULL, "outputs", outs);
}

/* GET /api/v1/messages/{id}/payload: the kept payload as received, with its content-type;
 * out >= 0: .../outputs/{out}/payload, what a route's services made of it. */
static void get_payload(struct jn_journal *j, struct evhttp_request *req, const char *id,
                        long out)
{
    struct jn_keptrec k;
    struct jn_err err;
    const struct jn_msg *m;
    const char *ct;
    int rc = jn_store_kept_get(j, id, &k, &err);

    if (rc == JN_ENOENT) {
        jn_admin__reply_error(req, 404, "Not Found", "message '%s' is not kept (its routes "
                              "say keep: none, or retention has deleted it)", id);
        return;
    }
    if (rc != 0) {
        jn_admin__reply_error(req, 500, "Internal Server Error", "%s", err.msg);
        return;
    }
    if (k.keep != JN_KEEP_ALL) {
        jn_keptrec_clear(&k);
        jn_admin__reply_error(req, 404, "Not Found", "message '%s' is kept without its payload "
                              "(its routes say keep: headers)", id);
        return;
    }
    if (out >= (long)k.nouts) {
        char why[96];
        snprintf(why, sizeof(why), "message '%s' has %zu kept output(s)", id, k.nouts);
        jn_admin__reply_error(req, 404, "Not Found", "%s", why);
        jn_keptrec_clear(&k);
        return;
    }
    m = out >= 0 ? k.outs[out].msg : k.msg;
    ct = jn_msg_header_get(m, "content-type");
    /* The payload is the sender's: opened in a browser on the admin's origin, an HTML one
     * must not run as the dashboard (sandbox: an opaque origin, no script). */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                      "default-src 'none'; sandbox");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Content-Type-Options",
                      "nosniff");
    jn_admin__reply_body(req, 200, "OK", ct && *ct && !strpbrk(ct, "\r\n") ? ct
                                          : "application/octet-stream",
                         (const char *)m->payload, m->len);
    jn_keptrec_clear(&k);
}

void jn_admin__get_message(struct jn_admin *a, struct evhttp_request *req, const char *path)
{
    struct jn_journal *j = jn_broker_journal(a->b);
    struct trace_ctx c;
    struct jn_keptrec k;
    struct jn_err err;
    json_t *events, *kept = NULL;
    char t[80], id[JN_ID_LEN + 1];
    const char *slash = strchr(path, '/');
    int payload = slash != NULL && strcmp(slash, "/payload") == 0;
    size_t idl = slash ? (size_t)(slash - path) : strlen(path);
    long out = -1;

    snprintf(id, sizeof(id), "%.*s", (int)(idl < JN_ID_LEN ? idl : JN_ID_LEN), path);
    if (slash != NULL && !payload && strncmp(slash, "/outputs/", 9) == 0) {
        char *end;
        out = strtol(slash + 9, &end, 10);
        payload = end != slash + 9 && out >= 0 && out < JN_KEPT_OUTS_MAX &&
                  strcmp(end, "/payload") == 0;
    }
    if (slash != NULL && !payload) {
        jn_admin__reply_error(req, 404, "Not Found", "no such resource '%s' (a message has "
                              "/api/v1/messages/ID, ID/payload and ID/outputs/N/payload)", path);
        return;
    }
    if (idl != JN_ID_LEN || jn_id_time_ms(id) < 0) {
        jn_admin__reply_error(req, 400, "Bad Request", "'%s' is not a message id (26 "
                              "characters, as X-Junction-Id gives it)", id);
        return;
    }
    if (j == NULL) {
        jn_admin__reply_error(req, 503, "Service Unavailable", "%s", "the journal is closed");
        return;
    }
    if (payload) {
        get_payload(j, req, id, out);
        return;
    }
    events = json_array();
    trace(j, id, &c, events);
    if (jn_store_kept_get(j, id, &k, &err) == 0) {
        kept = kept_json(&k);
        if (c.recv_us == 0) {
            c.recv_us = k.time_us;
            snprintf(c.recv_channel, sizeof(c.recv_channel), "%s", k.msg->channel);
        }
        jn_keptrec_clear(&k);
    }
    if (c.n == 0 && kept == NULL) {
        json_decref(events);
        jn_admin__reply_error(req, 404, "Not Found", "no message '%s' in the action log (never "
                              "received, or its actions are past the retention)", id);
        return;
    }
    jn_admin__iso_time(c.recv_us, t, sizeof(t));
    jn_admin__reply_json(req, 200, "OK",
                         json_pack("{s:s,s:s,s:s?,s:s,s:o,s:o}", "id", id, "channel",
                                   c.recv_channel, "received", c.recv_us ? t : NULL, "status",
                                   c.n ? status_of(c.last.event) : "received", "trace", events,
                                   "kept", kept ? kept : json_null()));
}

/* ---- the list ---- */

struct hit {
    unsigned char key[16]; /* its "received" log key: time_us seq */
    char id[JN_ID_LEN + 1];
};

struct list_ctx {
    int64_t until_us;
    const char *channel;
    struct hit *v;
    size_t n, cap;
    int too_many, oom;
};

static int visit_range(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct list_ctx *c = arg;
    struct jn_logrec r;
    struct jn_err err;

    if (kl != 16) {
        return 0;
    }
    if ((int64_t)jn_get_be64(k) > c->until_us) {
        return 1;
    }
    if (jn_store_log_decode(v, vl, &r, &err) != 0 || strcmp(r.event, "received") != 0 ||
        (c->channel != NULL && strcmp(r.channel, c->channel) != 0)) {
        return 0;
    }
    if (c->n == MSG_RANGE_MAX) {
        c->too_many = 1;
        return 1;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct hit *nv = jn_realloc(c->v, cap * sizeof(*nv));
        if (nv == NULL) {
            c->oom = 1;
            return 1;
        }
        c->v = nv;
        c->cap = cap;
    }
    memcpy(c->v[c->n].key, k, 16);
    snprintf(c->v[c->n].id, sizeof(c->v[c->n].id), "%s", r.id);
    c->n++;
    return 0;
}

static int hex_key(const char *s, unsigned char out[16])
{
    if (strlen(s) != 32) {
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static const char *const statuses[] = {"received", "queued", "retrying", "delivered", "dead",
                                       "dropped", NULL};

/* The list's filters on what retention keeps (route, header.NAME, q): a message that is not
 * kept matches none of them. */
struct kept_filter {
    const char *route, *hname, *hvalue, *text;
};

static int kept_match(struct jn_journal *j, const char *id, const struct kept_filter *f)
{
    struct jn_keptrec k;
    struct jn_err err;
    int ok = 1;

    if (f->route == NULL && f->hname == NULL && f->text == NULL) {
        return 1;
    }
    if (jn_store_kept_get(j, id, &k, &err) != 0) {
        return 0;
    }
    if (f->route != NULL) {
        size_t n = strlen(f->route);
        const char *p = k.routes;
        ok = 0;
        while (!ok && p != NULL && *p != '\0') {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            ok = l == n && memcmp(p, f->route, n) == 0;
            p = e ? e + 1 : NULL;
        }
    }
    if (ok && f->hname != NULL) {
        const char *v = jn_msg_header_get(k.msg, f->hname);
        ok = v != NULL && (*f->hvalue == '\0' || strcmp(v, f->hvalue) == 0);
    }
    if (ok && f->text != NULL && *f->text != '\0') {
        ok = k.keep == JN_KEEP_ALL &&
             memmem(k.msg->payload, k.msg->len, f->text, strlen(f->text)) != NULL;
    }
    jn_keptrec_clear(&k);
    return ok;
}

void jn_admin__get_messages(struct jn_admin *a, struct evhttp_request *req)
{
    struct jn_journal *j = jn_broker_journal(a->b);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq q;
    const char *since, *until, *status, *limit_s, *cursor_s;
    struct list_ctx c;
    struct kept_filter kf = {NULL, NULL, NULL, NULL};
    unsigned char from[8], cursor[16];
    int64_t now = jn_now_us(), since_us = 0;
    long limit = MSG_LIMIT_DEFAULT;
    int have_cursor = 0;
    json_t *arr;
    size_t i, taken = 0;
    char next[33] = "";

    memset(&c, 0, sizeof(c));
    c.until_us = INT64_MAX;
    TAILQ_INIT(&q);
    if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
        jn_admin__reply_error(req, 400, "Bad Request", "%s", "the query string cannot be parsed");
        return;
    }
    since = evhttp_find_header(&q, "since");
    until = evhttp_find_header(&q, "until");
    status = evhttp_find_header(&q, "status");
    if (status != NULL && strcmp(status, "failed") == 0) {
        status = "retrying"; /* an attempt failed, another is due: the same status */
    }
    limit_s = evhttp_find_header(&q, "limit");
    cursor_s = evhttp_find_header(&q, "cursor");
    c.channel = evhttp_find_header(&q, "channel");
    kf.route = evhttp_find_header(&q, "route");
    kf.text = evhttp_find_header(&q, "q");
    {
        struct evkeyval *kv;
        TAILQ_FOREACH(kv, &q, next) {
            if (strncmp(kv->key, "header.", 7) == 0 && kv->key[7] != '\0') {
                kf.hname = kv->key + 7;
                kf.hvalue = kv->value;
            }
        }
    }
    if (since != NULL && jn_parse_when(since, now, &since_us) != 0) {
        jn_admin__reply_error(req, 400, "Bad Request", "since: '%s' is not a time (10m, 2h, "
                              "7d, or YYYY-MM-DDTHH:MM:SS in UTC)", since);
        goto out;
    }
    if (until != NULL && jn_parse_when(until, now, &c.until_us) != 0) {
        jn_admin__reply_error(req, 400, "Bad Request", "until: '%s' is not a time (10m, 2h, "
                              "7d, or YYYY-MM-DDTHH:MM:SS in UTC)", until);
        goto out;
    }
    if (limit_s != NULL) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*limit_s == '\0' || *end != '\0' || limit < 1 || limit > MSG_LIMIT_MAX) {
            jn_admin__reply_error(req, 400, "Bad Request", "limit: '%s' is not a number from 1 "
                                  "to 1000", limit_s);
            goto out;
        }
    }
    if (status != NULL) {
        size_t k = 0;
        while (statuses[k] != NULL && strcmp(statuses[k], status) != 0) {
            k++;
        }
        if (statuses[k] == NULL) {
            jn_admin__reply_error(req, 400, "Bad Request", "status: '%s' is not one of "
                                  "received, queued, retrying, delivered, dead, dropped", status);
            goto out;
        }
    }
    if (cursor_s != NULL) {
        if (hex_key(cursor_s, cursor) != 0) {
            jn_admin__reply_error(req, 400, "Bad Request", "cursor: '%s' is not a cursor this "
                                  "API gave (next_cursor)", cursor_s);
            goto out;
        }
        have_cursor = 1;
    }
    if (j == NULL) {
        jn_admin__reply_error(req, 503, "Service Unavailable", "%s", "the journal is closed");
        goto out;
    }
    jn_be64(from, (uint64_t)since_us);
    jn_journal_scan_from(j, JN_JDB_LOG, from, sizeof(from), visit_range, &c);
    if (c.oom) {
        jn_admin__reply_error(req, 500, "Internal Server Error", "%s", "out of memory");
        goto out;
    }
    if (c.too_many) {
        jn_admin__reply_error(req, 400, "Bad Request", "%s", "the range holds more than 200000 "
                              "messages: narrow it with since and until");
        goto out;
    }
    arr = json_array();
    /* Newest first: from the end of the range, below the cursor. */
    for (i = c.n; i-- > 0;) {
        struct trace_ctx tc;
        const char *st;
        char t[80];
        if (have_cursor && memcmp(c.v[i].key, cursor, 16) >= 0) {
            continue;
        }
        if (taken == (size_t)limit) {
            /* One more matches (maybe): the page ends at the last one taken. */
            break;
        }
        trace(j, c.v[i].id, &tc, NULL);
        st = tc.n ? status_of(tc.last.event) : "received";
        if ((status != NULL && strcmp(st, status) != 0) || !kept_match(j, c.v[i].id, &kf)) {
            continue;
        }
        jn_admin__iso_time((int64_t)jn_get_be64(c.v[i].key), t, sizeof(t));
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", c.v[i].id,
                                             "channel", tc.recv_channel, "received", t,
                                             "status", st, "last_event", tc.n ? tc.last.event
                                                                               : "received"));
        taken++;
        for (int b = 0; b < 16; b++) {
            snprintf(next + 2 * b, 3, "%02x", c.v[i].key[b]);
        }
    }
    jn_admin__reply_json(req, 200, "OK",
                         json_pack("{s:o,s:s?}", "messages", arr, "next_cursor",
                                   (taken == (size_t)limit && i != (size_t)-1) ? next : NULL));
out:
    jn_free(c.v);
    evhttp_clear_headers(&q);
}

/* ---- replay ---- */

static json_t *job_json(const struct jn_replay_job *jb)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:b}", "job", (json_int_t)jb->id, "count",
                     (json_int_t)jb->matched, "replayed", (json_int_t)jb->written, "failed",
                     (json_int_t)jb->failed, "done", !jb->running);
}

/* A list of strings (or one string) from v into a new array *out of *n (the strings stay v's).
 * 0, or -1 when v is neither (out of memory: *n is then SIZE_MAX). */
static int str_list(json_t *v, const char ***out, size_t *n)
{
    size_t i;
    json_t *e;

    *out = NULL;
    *n = 0;
    if (json_is_string(v)) {
        v = json_pack("[O]", v); /* one element; freed below */
    } else if (json_is_array(v)) {
        json_incref(v);
    } else {
        return -1;
    }
    if (json_array_size(v) > 0 && (*out = jn_calloc(json_array_size(v), sizeof(**out))) == NULL) {
        json_decref(v);
        *n = SIZE_MAX;
        return -1;
    }
    json_array_foreach(v, i, e) {
        if (!json_is_string(e)) {
            jn_free(*out);
            *out = NULL;
            json_decref(v);
            return -1;
        }
        (*out)[i] = json_string_value(e);
    }
    *n = json_array_size(v);
    json_decref(v); /* the strings stay alive in the body, which holds them too */
    return 0;
}

/* The request's fields into rq (strings borrowed from body; ids and to allocated). 0, or -1
 * with the reply sent. */
static int replay_fields(struct evhttp_request *req, json_t *body, struct jn_replay_req *rq,
                         const char ***ids, const char ***to)
{
    const char *key;
    json_t *v;
    int64_t now = jn_now_us();

    json_object_foreach(body, key, v) {
        const char *sv = json_is_string(v) ? json_string_value(v) : NULL;
        size_t n = 0;
        if (strcmp(key, "ids") == 0 || strcmp(key, "to") == 0) {
            const char ***dst = key[0] == 'i' ? ids : to;
            if ((key[0] == 'i' && !json_is_array(v)) || str_list(v, dst, &n) != 0) {
                if (n == SIZE_MAX) {
                    jn_admin__reply_error(req, 500, "Internal Server Error", "%s",
                                          "out of memory");
                } else {
                    jn_admin__reply_error(req, 400, "Bad Request", "%s: must be a list of "
                                          "strings", key);
                }
                return -1;
            }
            if (key[0] == 'i') {
                rq->ids = *ids;
                rq->nids = n;
            } else {
                rq->to = *to;
                rq->nto = n;
            }
        } else if (strcmp(key, "dry_run") == 0) {
            if (!json_is_boolean(v)) {
                jn_admin__reply_error(req, 400, "Bad Request", "%s", "dry_run: true or false");
                return -1;
            }
            rq->dry_run = json_is_true(v);
        } else if (sv == NULL) {
            jn_admin__reply_error(req, 400, "Bad Request", "%s: must be a string", key);
            return -1;
        } else if (strcmp(key, "since") == 0 || strcmp(key, "until") == 0) {
            int64_t *t = key[0] == 's' ? &rq->since_us : &rq->until_us;
            if (jn_parse_when(sv, now, t) != 0) {
                char why[160];
                snprintf(why, sizeof(why), "%s: '%.64s' is not a time (10m, 2h, 7d, or "
                         "YYYY-MM-DDTHH:MM:SS in UTC)", key, sv);
                jn_admin__reply_error(req, 400, "Bad Request", "%s", why);
                return -1;
            }
        } else if (strcmp(key, "destination") == 0) {
            rq->dest = sv;
        } else if (strcmp(key, "channel") == 0) {
            rq->channel = sv;
        } else if (strcmp(key, "route") == 0) {
            rq->route = sv;
        } else if (strcmp(key, "q") == 0) {
            rq->text = sv;
        } else if (strncmp(key, "header.", 7) == 0 && key[7] != '\0') {
            if (rq->header != NULL) {
                jn_admin__reply_error(req, 400, "Bad Request", "%s: one header filter at a "
                                      "time", key);
                return -1;
            }
            rq->header = key + 7;
            rq->header_value = sv;
        } else if (strcmp(key, "status") == 0) {
            if (strcmp(sv, "dead") != 0) {
                jn_admin__reply_error(req, 400, "Bad Request", "%s", "status: only dead is a "
                                      "status to replay; for messages whatever became of them, "
                                      "from: kept");
                return -1;
            }
        } else if (strcmp(key, "from") == 0) {
            if (strcmp(sv, "dead-letters") != 0 && strcmp(sv, "kept") != 0) {
                jn_admin__reply_error(req, 400, "Bad Request", "%s", "from: dead-letters (the "
                                      "default) or kept (messages kept after routing, "
                                      "junction.retention)");
                return -1;
            }
            rq->from_kept = sv[0] == 'k';
        } else {
            jn_admin__reply_error(req, 400, "Bad Request", "'%s' is not a replay field (ids, "
                                  "to, dry_run, from, since, until, destination, channel, "
                                  "route, status, q, header.NAME)", key);
            return -1;
        }
    }
    return 0;
}

void jn_admin__post_replay(struct jn_admin *a, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    struct jn_replay_req rq;
    struct jn_replay_result res;
    struct jn_err err;
    const char **ids = NULL, **to = NULL;
    json_error_t jerr;
    json_t *body, *sample;
    int rc;

    memset(&rq, 0, sizeof(rq));
    body = len ? json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)len), len, 0, &jerr)
               : json_object();
    if (body == NULL || !json_is_object(body)) {
        json_decref(body);
        jn_admin__reply_error(req, 400, "Bad Request", "the body is not a JSON object: %s",
                              len ? jerr.text : "");
        return;
    }
    if (replay_fields(req, body, &rq, &ids, &to) != 0) {
        jn_free(ids);
        jn_free(to);
        json_decref(body);
        return;
    }
    jn_err_clear(&err);
    rc = jn_broker_replay(a->b, &rq, &res, &err);
    jn_free(ids);
    jn_free(to);
    json_decref(body);
    if (rc == JN_EAGAIN) {
        jn_admin__reply_error(req, 409, "Conflict", "%s", err.msg);
        return;
    }
    if (rc == JN_ENOENT) {
        jn_admin__reply_error(req, 404, "Not Found", "%s", err.msg);
        return;
    }
    if (rc != 0) {
        jn_admin__reply_error(req, rc == JN_ESTOPPED ? 503 : 500,
                              rc == JN_ESTOPPED ? "Service Unavailable" : "Internal Server Error",
                              "%s", err.msg);
        return;
    }
    sample = json_array();
    for (size_t i = 0; i < res.nsample; i++) {
        json_array_append_new(sample, json_string(res.sample[i]));
    }
    if (rq.dry_run || res.job == 0) {
        jn_admin__reply_json(req, 200, "OK",
                             json_pack("{s:b,s:I,s:I,s:o}", "dry_run", rq.dry_run, "count",
                                       (json_int_t)res.count, "headers_only",
                                       (json_int_t)res.headers_only, "ids", sample));
        return;
    }
    jn_admin__reply_json(req, 202, "Accepted",
                         json_pack("{s:b,s:I,s:I,s:I,s:o}", "dry_run", 0, "job",
                                   (json_int_t)res.job, "count", (json_int_t)res.count,
                                   "headers_only", (json_int_t)res.headers_only, "ids",
                                   sample));
}

/* ---- the dead letters ---- */

struct dl_ctx {
    json_t *arr;
    long limit;
};

static int dl_visit(void *arg, const struct jn_qrec *r)
{
    struct dl_ctx *c = arg;
    char when[80], recv[80];

    if ((long)json_array_size(c->arr) >= c->limit) {
        return 1;
    }
    jn_admin__iso_time(r->time_us, when, sizeof(when));
    jn_admin__iso_time(r->msg->recv_us, recv, sizeof(recv));
    json_array_append_new(c->arr,
                          json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:I}", "id", r->msg->id,
                                    "channel", r->msg->channel ? r->msg->channel : "",
                                    "destination", r->dest ? r->dest : "", "route",
                                    r->route ? r->route : "", "attempts", r->attempt, "error",
                                    r->error ? r->error : "", "time", when, "received", recv,
                                    "bytes", (json_int_t)r->msg->len));
    return 0;
}

/* GET /api/v1/dead-letters: the dead letters, oldest first, filtered by the replay fields
 * (from the query string), at most limit of them; count is how many match in all. */
void jn_admin__get_dead_letters(struct jn_admin *a, struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq q;
    struct evkeyval *kv;
    struct jn_replay_req rq;
    struct dl_ctx c = {NULL, MSG_LIMIT_DEFAULT};
    const char **ids = NULL, **to = NULL;
    json_t *filters = json_object();
    long n;

    memset(&rq, 0, sizeof(rq));
    TAILQ_INIT(&q);
    if (filters == NULL || (query != NULL && evhttp_parse_query_str(query, &q) != 0)) {
        json_decref(filters);
        jn_admin__reply_error(req, 400, "Bad Request", "%s", "the query string cannot be parsed");
        return;
    }
    TAILQ_FOREACH(kv, &q, next) {
        if (strcmp(kv->key, "limit") == 0) {
            char *end;
            c.limit = strtol(kv->value, &end, 10);
            if (*kv->value == '\0' || *end != '\0' || c.limit < 1 || c.limit > MSG_LIMIT_MAX) {
                jn_admin__reply_error(req, 400, "Bad Request", "%s", "limit: a number from 1 "
                                      "to 1000");
                goto out;
            }
        } else if (strcmp(kv->key, "ids") == 0 || strcmp(kv->key, "to") == 0 ||
                   strcmp(kv->key, "dry_run") == 0 || strcmp(kv->key, "from") == 0) {
            jn_admin__reply_error(req, 400, "Bad Request", "'%s' is not a dead-letters filter",
                                  kv->key);
            goto out;
        } else {
            json_object_set_new(filters, kv->key, json_string(kv->value));
        }
    }
    if (replay_fields(req, filters, &rq, &ids, &to) != 0) {
        goto out;
    }
    c.arr = json_array();
    n = c.arr ? jn_broker_dead_letters(a->b, &rq, dl_visit, &c) : -1;
    if (n < 0) {
        json_decref(c.arr);
        jn_admin__reply_error(req, 503, "Service Unavailable", "%s", "the journal cannot be "
                              "read now");
        goto out;
    }
    jn_admin__reply_json(req, 200, "OK", json_pack("{s:I,s:o}", "count", (json_int_t)n,
                                                   "dead_letters", c.arr));
out:
    jn_free(ids);
    jn_free(to);
    json_decref(filters);
    evhttp_clear_headers(&q);
}

void jn_admin__get_replay(struct jn_admin *a, struct evhttp_request *req, const char *job)
{
    struct jn_replay_job jb;
    char *end;
    unsigned long long id = strtoull(job, &end, 10);

    if (*job == '\0' || *end != '\0' || jn_broker_replay_job(a->b, id, &jb) != 0) {
        jn_admin__reply_error(req, 404, "Not Found", "no replay job '%s' (only the last one is "
                              "kept)", job);
        return;
    }
    jn_admin__reply_json(req, 200, "OK", job_json(&jb));
}

/* ---- config versions (GET /api/v1/config/history, GET /api/v1/config/{hash}) ---- */

static int visit_config(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    json_t *arr = arg;
    struct jn_configrec r;
    struct jn_err err;
    char first[80], last[80], hash[32];

    if (kl >= sizeof(hash) || jn_store_config_decode(v, vl, &r, &err) != 0) {
        return 0;
    }
    memcpy(hash, k, kl);
    hash[kl] = '\0';
    jn_admin__iso_time(r.first_us, first, sizeof(first));
    jn_admin__iso_time(r.last_us, last, sizeof(last));
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I,s:I}", "hash", hash, "first_loaded",
                                         first, "last_loaded", last, "last_loaded_us",
                                         (json_int_t)r.last_us, "bytes", (json_int_t)r.len));
    return 0;
}

static int by_last_load(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "last_loaded_us"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "last_loaded_us"));

    return x < y ? 1 : x > y ? -1 : 0;
}

void jn_admin__get_config(struct jn_admin *a, struct evhttp_request *req, const char *what)
{
    struct jn_journal *j = jn_broker_journal(a->b);
    struct jn_buf v = JN_BUF_INIT;
    struct jn_configrec r;
    struct jn_err err;

    if (j == NULL) {
        jn_admin__reply_error(req, 503, "Service Unavailable", "%s", "the journal is closed");
        return;
    }
    if (strcmp(what, "history") == 0) {
        json_t *arr = json_array(), *sorted = json_array();
        size_t n;
        json_t **items;
        jn_journal_scan(j, JN_JDB_CONFIGS, NULL, 0, visit_config, arr);
        n = json_array_size(arr);
        items = jn_calloc(n + 1, sizeof(*items));
        for (size_t i = 0; items != NULL && i < n; i++) {
            items[i] = json_array_get(arr, i);
        }
        if (items != NULL) {
            qsort(items, n, sizeof(*items), by_last_load);
            for (size_t i = 0; i < n; i++) {
                json_object_del(items[i], "last_loaded_us");
                json_array_append(sorted, items[i]);
            }
        }
        jn_free(items);
        json_decref(arr);
        {
            struct jn_broker_stats st;
            jn_broker_stats(a->b, &st);
            jn_admin__reply_json(req, 200, "OK", json_pack("{s:s,s:o}", "running",
                                                           st.config_hash, "configs", sorted));
        }
        return;
    }
    if (strlen(what) != 16 || strspn(what, "0123456789abcdef") != 16) {
        jn_admin__reply_error(req, 400, "Bad Request", "'%s' is not a config hash (16 hex "
                              "digits, as ctl config history lists them)", what);
        return;
    }
    if (jn_journal_get(j, JN_JDB_CONFIGS, what, 16, &v) != 0 ||
        jn_store_config_decode(v.p, v.len, &r, &err) != 0) {
        jn_buf_reset(&v);
        jn_admin__reply_error(req, 404, "Not Found", "no config '%s' in this data dir", what);
        return;
    }
    jn_admin__reply_body(req, 200, "OK", "text/yaml; charset=utf-8", r.text, r.len);
    jn_buf_reset(&v);
}
