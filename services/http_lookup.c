/*
 * http-lookup: enrich a message with the JSON answer of an HTTP GET.
 *
 *   services:
 *     patient:
 *       type: http-lookup
 *       url: http://127.0.0.1:9000/patients/{header.patient-id}
 *       field: name                 # a part of the answer (a.b.0); the whole answer without
 *       into: json.patient.name     # header.NAME | json (merge an object) | json.PATH
 *       timeout: 2s
 *       cache: {ttl: 5m, max_entries: 1000}
 *       on_error: fail              # fail: dead-letter | skip: pass the message on unchanged
 *
 * The url is a template over the message ({id}, {channel}, {header.NAME}, {json.a.b},
 * {hl7.PID-3.1}: template.c's placeholders); each value is percent-encoded where it is put,
 * so a field cannot change the URL's path or query beyond its own place. A missing field is an
 * error (a lookup by an empty key would find the wrong record).
 *
 * Each call blocks its thread, on purpose: transform runs on a routing thread, never on a loop
 * thread that serves sockets, and the instance asks for `concurrency` of them (.parallel), so
 * that many messages' lookups are under way at once while the broker keeps the results in
 * acceptance order (jn_route.c's reorder window). A blocking call per thread is far simpler
 * than parking a message's pipeline half-way and resuming it from a callback, and as fast for
 * the numbers that matter here (docs/performance.md "http-lookup"). Each GET uses a private
 * event_base and libevent's evhttp client (the HTTP OUT channel's library, so no new
 * dependency), with `timeout` both per read/write and for the whole exchange, polling the
 * broker's stop flag (svc->abort) every ABORT_POLL_MS. No connection, a timeout, a 5xx or a 429
 * is tried again, `retries` times, after retry_delay doubling. http:// only: HTTPS is not built
 * yet. State shared between calls, each under its own mutex: the count of lookups under way
 * (at most concurrency) and the cache, which keeps 2xx answers by URL for `ttl`, at most
 * max_entries (the one closest to expiry goes first). Modelled on Camel's enrich with an HTTP
 * producer and Redpanda Connect's http processor inside a branch, with Mirth-like on_error
 * choices.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "jn_log.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "jn_template.h"
#include "template_int.h"

enum { ON_ERROR_FAIL, ON_ERROR_SKIP };
static const char *const on_error_names[] = {"fail", "skip", NULL};

struct lookup_cache_conf {
    long long ttl;         /* ms; 0: no cache */
    long long max_entries;
};

struct lookup_conf {
    char *url;
    char *field;
    char *into;
    long long timeout;
    struct lookup_cache_conf cache;
    int on_error;
    struct jn_strmap headers;
    unsigned long long max_response;
    long long concurrency;
    long long retries;
    long long retry_delay; /* ms, doubled after each retry */
};

struct centry {
    uint64_t hash;
    char *url;
    char *body;
    size_t len;
    int64_t expires_us;
};

struct lookup_state {
    pthread_mutex_t lock;
    struct centry *ents;
    size_t n, cap;
    pthread_mutex_t slots_lock;
    pthread_cond_t slot_free;
    long long busy; /* lookups under way (at most concurrency), under slots_lock */
};

/* ---- load-time checks ---- */

/* The url with every placeholder as "x", to parse its fixed parts. NULL on no memory. */
static char *url_sample(const char *tmpl)
{
    struct jn_buf b = JN_BUF_INIT;

    for (const char *p = tmpl; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            jn_buf_putc(&b, p[0]);
            p += 2;
        } else if (*p == '{') {
            const char *q = strchr(p, '}');
            jn_buf_putc(&b, 'x');
            p = q ? q + 1 : p + strlen(p);
        } else {
            jn_buf_putc(&b, *p++);
        }
    }
    jn_buf_putc(&b, '\0');
    return jn_buf_steal(&b);
}

static int lookup__check_url(const void *value, const struct jn_node *node, const char *what,
                             struct jn_diag *d)
{
    const char *const *u = value;
    struct jn_svc_fields x = {"http-lookup", true, "", NULL, NULL, 0};
    struct evhttp_uri *uri;
    struct jn_err e;
    char *sample;
    int errs = 0;

    if (jn_template_check_ext(*u, jn_svc__fields_ext, &x, &e) != 0) {
        jn_diag_add(d, &node->pos, "%s: %s", what, e.msg);
        return 1;
    }
    if ((sample = url_sample(*u)) == NULL) {
        d->oom = 1;
        return 1;
    }
    uri = evhttp_uri_parse(sample);
    if (uri == NULL || evhttp_uri_get_scheme(uri) == NULL || evhttp_uri_get_host(uri) == NULL ||
        evhttp_uri_get_host(uri)[0] == '\0') {
        jn_diag_add(d, &node->pos, "%s: '%s' is not a URL, expected such as "
                    "http://127.0.0.1:9000/patients/{header.patient-id}", what, *u);
        errs++;
    } else if (strcasecmp(evhttp_uri_get_scheme(uri), "http") != 0) {
        jn_diag_add(d, &node->pos, "%s: the scheme '%s' is not supported: http:// only "
                    "(https is not built yet)", what, evhttp_uri_get_scheme(uri));
        errs++;
    } else if (evhttp_uri_get_fragment(uri) != NULL || evhttp_uri_get_userinfo(uri) != NULL) {
        jn_diag_add(d, &node->pos, "%s: a URL with user info or a #fragment is not supported",
                    what);
        errs++;
    }
    if (uri != NULL) {
        evhttp_uri_free(uri);
    }
    jn_free(sample);
    return errs;
}

static int path_ok(const char *p)
{
    size_t n = strlen(p);

    if (n == 0 || p[0] == '.' || p[n - 1] == '.' || strstr(p, "..") != NULL) {
        return 0;
    }
    return 1;
}

static int lookup__check_into(const void *value, const struct jn_node *node, const char *what,
                              struct jn_diag *d)
{
    const char *v = *(const char *const *)value;

    if (strcmp(v, "json") == 0 || (strncmp(v, "json.", 5) == 0 && path_ok(v + 5))) {
        return 0;
    }
    if (strncmp(v, "header.", 7) == 0 && v[7] != '\0' && strcspn(v + 7, " \t\r\n:") ==
        strlen(v + 7)) {
        return 0;
    }
    jn_diag_add(d, &node->pos, "%s: '%s': expected header.NAME (a header), json (the answer's "
                "members merged into a JSON payload) or json.PATH (put at a.b in it)", what, v);
    return 1;
}

static int lookup__check_field(const void *value, const struct jn_node *node, const char *what,
                               struct jn_diag *d)
{
    const char *v = *(const char *const *)value;

    if (path_ok(v)) {
        return 0;
    }
    jn_diag_add(d, &node->pos, "%s: '%s': expected a path in the answer such as name.family or "
                "items.0.id", what, v);
    return 1;
}

static const struct jn_opt lookup_cache_opts[] = {
    JN_OPT_DURATION("ttl", "0", 0, 7LL * 24 * 3600 * 1000, 0, struct lookup_cache_conf, ttl,
                    "How long a 2xx answer is kept for its URL; 0: no cache"),
    JN_OPT_INT("max_entries", "1000", 1, 100000, 0, struct lookup_cache_conf, max_entries,
               "The most answers kept; past it the one closest to expiry is dropped"),
    JN_OPT_END
};

static const struct jn_opt lookup_opts[] = {
    JN_OPT_STR("url", NULL, JN_OPT_REQUIRED, struct lookup_conf, url,
               "The URL to GET, http:// only: a template with {id}, {channel}, {header.NAME}, "
               "{json.a.b}, {hl7.PID-3.1}, each value percent-encoded; a missing field is an "
               "error", .validate = lookup__check_url),
    JN_OPT_STR("field", NULL, 0, struct lookup_conf, field,
               "The part of the JSON answer to use (a.b, items.0); unset: the whole answer",
               .validate = lookup__check_field),
    JN_OPT_STR("into", NULL, JN_OPT_REQUIRED, struct lookup_conf, into,
               "Where the value goes: header.NAME (a string as its text, other values as "
               "compact JSON), json (an object's members merged into the JSON payload) or "
               "json.PATH (set at a.b in the payload, objects made as needed)",
               .validate = lookup__check_into),
    JN_OPT_DURATION("timeout", "5s", 1, 300000, 0, struct lookup_conf, timeout,
                    "For the whole GET: connect, send and the answer"),
    JN_OPT_SUB("cache", lookup_cache_opts, struct lookup_cache_conf, 0, struct lookup_conf,
               cache, "A cache of answers by URL (off unless ttl is set)"),
    JN_OPT_ENUM("on_error", "fail", on_error_names, 0, struct lookup_conf, on_error,
                "fail: a failed lookup (no answer, not 2xx, not JSON, no such field) "
                "dead-letters the message with the reason; skip: the message goes on "
                "unchanged (logged as a warning)"),
    JN_OPT_STRMAP("headers", 0, struct lookup_conf, headers,
                  "Request headers, e.g. {Authorization: \"Bearer ${TOKEN}\"}"),
    JN_OPT_SIZE("max_response", "1MiB", 1, 64ULL << 20, 0, struct lookup_conf, max_response,
                "A longer answer fails the lookup"),
    JN_OPT_INT("concurrency", "16", 1, 256, 0, struct lookup_conf, concurrency,
               "Lookups of this instance under way at once, each for another message (the "
               "routing runs on as many threads as the largest concurrency asks; results still "
               "reach their queues in acceptance order)"),
    JN_OPT_INT("retries", "2", 0, 20, 0, struct lookup_conf, retries,
               "Attempts after the first when there is no connection, a timeout, a 5xx or a "
               "429; any other 4xx is not retried. After the last, on_error applies"),
    JN_OPT_DURATION("retry_delay", "1s", 1, 600000, 0, struct lookup_conf, retry_delay,
                    "The wait before the first retry, doubled before each next one"),
    JN_OPT_END
};

/* ---- the cache ---- */

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static void centry_clear(struct centry *e)
{
    jn_free(e->url);
    jn_free(e->body);
    memset(e, 0, sizeof(*e));
}

/* A copy of the cached answer for url (jn_malloc'd, NUL-terminated), or NULL. */
static char *cache_get(struct lookup_state *st, const char *url, uint64_t h, size_t *len)
{
    int64_t now = mono_us();
    char *copy = NULL;

    pthread_mutex_lock(&st->lock);
    for (size_t i = 0; i < st->n; i++) {
        struct centry *e = &st->ents[i];
        if (e->hash != h || strcmp(e->url, url) != 0) {
            continue;
        }
        if (e->expires_us <= now) {
            centry_clear(e);
            st->ents[i] = st->ents[--st->n];
        } else if ((copy = jn_malloc(e->len + 1)) != NULL) {
            memcpy(copy, e->body, e->len + 1);
            *len = e->len;
        }
        break;
    }
    pthread_mutex_unlock(&st->lock);
    return copy;
}

/* Keeps a copy of body for url; without memory it is simply not kept. */
static void cache_put(struct lookup_state *st, long long ttl_ms, const char *url, uint64_t h,
                      const char *body, size_t len)
{
    int64_t now = mono_us();
    struct centry ne = {h, jn_strdup(url), jn_malloc(len + 1), len, now + ttl_ms * 1000};
    size_t slot;

    if (ne.url == NULL || ne.body == NULL) {
        centry_clear(&ne);
        return;
    }
    memcpy(ne.body, body, len);
    ne.body[len] = '\0';
    pthread_mutex_lock(&st->lock);
    slot = st->n;
    for (size_t i = 0; i < st->n; i++) {
        if (st->ents[i].hash == h && strcmp(st->ents[i].url, url) == 0) {
            slot = i; /* another thread looked it up meanwhile: replace */
            break;
        }
    }
    if (slot == st->n && st->n == st->cap) {
        /* Full: the expired or soonest-expiring one goes (all share one ttl: the oldest). */
        slot = 0;
        for (size_t i = 1; i < st->n; i++) {
            if (st->ents[i].expires_us < st->ents[slot].expires_us) {
                slot = i;
            }
        }
    }
    if (slot < st->n) {
        centry_clear(&st->ents[slot]);
    } else {
        st->n++;
    }
    st->ents[slot] = ne;
    pthread_mutex_unlock(&st->lock);
}

/* ---- the GET ---- */

struct get {
    struct event_base *base;
    const atomic_int *abort; /* the broker stops: give up (or NULL) */
    int aborted;
    int done;
    int status;
    struct jn_buf body;
    char why[160];
    int oom;
};

static void get_error(enum evhttp_request_error e, void *arg)
{
    struct get *g = arg;
    const char *w = e == EVREQ_HTTP_TIMEOUT ? "timed out"
                    : e == EVREQ_HTTP_EOF ? "the connection closed before an answer"
                    : e == EVREQ_HTTP_INVALID_HEADER ? "the answer's headers are malformed"
                    : e == EVREQ_HTTP_BUFFER_ERROR ? "connection failed"
                    : e == EVREQ_HTTP_DATA_TOO_LONG ? "the answer is longer than max_response"
                    : "the request was cancelled";

    if (g->why[0] == '\0') {
        snprintf(g->why, sizeof(g->why), "%s", w);
    }
}

static void get_done(struct evhttp_request *req, void *arg)
{
    struct get *g = arg;

    g->done = 1;
    if (req != NULL && evhttp_request_get_response_code(req) > 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        g->status = evhttp_request_get_response_code(req);
        if (jn_buf_reserve(&g->body, n + 1) != 0) {
            g->oom = 1;
        } else {
            evbuffer_remove(in, g->body.p, n);
            g->body.len = n;
            g->body.p[n] = '\0';
        }
    } else if (g->why[0] == '\0') {
        snprintf(g->why, sizeof(g->why), "connection failed");
    }
    event_base_loopexit(g->base, NULL);
}

/* Every ABORT_POLL_MS while a GET or a retry's wait is under way: the broker is stopping? */
#define ABORT_POLL_MS 50

static void get_poll(evutil_socket_t fd, short what, void *arg)
{
    struct get *g = arg;

    (void)fd;
    (void)what;
    if (atomic_load(g->abort)) {
        g->aborted = 1;
        event_base_loopexit(g->base, NULL);
    }
}

/* GETs url. 0 with g->status and g->body, or JN_EIO with g->why, or JN_ENOMEM, or
 * JN_ESTOPPED when *abort became set meanwhile. */
static int http_get(const struct lookup_conf *c, const atomic_int *abort, const char *url,
                    struct get *g)
{
    struct event *poll = NULL;
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    struct evhttp_connection *evcon = NULL;
    struct evhttp_request *req;
    struct jn_buf target = JN_BUF_INIT;
    struct timeval tv = {c->timeout / 1000, (c->timeout % 1000) * 1000};
    const char *host, *path, *query;
    int port, rc = JN_EIO;

    memset(g, 0, sizeof(*g));
    g->abort = abort;
    if (uri == NULL || (host = evhttp_uri_get_host(uri)) == NULL) {
        snprintf(g->why, sizeof(g->why), "the URL does not parse");
        goto out;
    }
    port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    path = evhttp_uri_get_path(uri);
    query = evhttp_uri_get_query(uri);
    if (jn_buf_printf(&target, "%s%s%s", path && path[0] ? path : "/", query ? "?" : "",
                      query ? query : "") != 0 ||
        (g->base = event_base_new()) == NULL ||
        (evcon = evhttp_connection_base_new(g->base, NULL, host, (unsigned short)port)) ==
            NULL) {
        rc = JN_ENOMEM;
        goto out;
    }
    evhttp_connection_set_timeout_tv(evcon, &tv);
    evhttp_connection_set_retries(evcon, 0);
    evhttp_connection_set_max_body_size(evcon, (ev_ssize_t)c->max_response);
    if ((req = evhttp_request_new(get_done, g)) == NULL) {
        rc = JN_ENOMEM;
        goto out;
    }
    evhttp_request_set_error_cb(req, get_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hosthdr[300];
    /* HTTP/1.1's Host names the port unless it is the default (RFC 9110 7.2). */
    snprintf(hosthdr, sizeof(hosthdr), strchr(host, ':') ? "[%s]" : "%s", host);
    if (port != 80) {
        size_t l = strlen(hosthdr);
        snprintf(hosthdr + l, sizeof(hosthdr) - l, ":%d", port);
    }
    evhttp_add_header(h, "Host", hosthdr);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, "User-Agent", "junction http-lookup");
    for (size_t i = 0; i < c->headers.n; i++) {
        evhttp_remove_header(h, c->headers.k[i]);
        evhttp_add_header(h, c->headers.k[i], c->headers.v[i]);
    }
    if (evhttp_make_request(evcon, req, EVHTTP_REQ_GET, target.p) != 0) {
        snprintf(g->why, sizeof(g->why), "the request could not be made");
        goto out; /* req is freed by libevent */
    }
    /* The whole exchange, not only each read, within timeout. */
    event_base_loopexit(g->base, &tv);
    if (abort != NULL) {
        struct timeval ptv = {0, ABORT_POLL_MS * 1000};
        poll = event_new(g->base, -1, EV_PERSIST, get_poll, g);
        if (poll == NULL || event_add(poll, &ptv) != 0) {
            rc = JN_ENOMEM;
            goto out;
        }
    }
    event_base_dispatch(g->base);
    if (g->aborted && !g->done) {
        rc = JN_ESTOPPED;
    } else if (!g->done) {
        snprintf(g->why, sizeof(g->why), "timed out after %lld ms", c->timeout);
    } else if (g->oom) {
        rc = JN_ENOMEM;
    } else if (g->status > 0) {
        rc = 0;
    }
out:
    if (poll != NULL) {
        event_free(poll);
    }
    if (evcon != NULL) {
        evhttp_connection_free(evcon); /* cancels a request still pending */
    }
    if (g->base != NULL) {
        event_base_free(g->base);
        g->base = NULL;
    }
    if (uri != NULL) {
        evhttp_uri_free(uri);
    }
    jn_buf_reset(&target);
    if (rc != 0) {
        jn_buf_reset(&g->body);
    }
    return rc;
}

/* ---- the service ---- */

static void lookup_destroy(struct jn_service *svc)
{
    struct lookup_state *st = svc->state;

    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->n; i++) {
        centry_clear(&st->ents[i]);
    }
    jn_free(st->ents);
    pthread_mutex_destroy(&st->lock);
    pthread_mutex_destroy(&st->slots_lock);
    pthread_cond_destroy(&st->slot_free);
    jn_free(st);
    svc->state = NULL;
}

static int lookup_init(struct jn_service *svc, struct jn_err *err)
{
    const struct lookup_conf *c = svc->conf;
    struct lookup_state *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        jn_free(st);
        return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
    }
    if (pthread_mutex_init(&st->slots_lock, NULL) != 0) {
        pthread_mutex_destroy(&st->lock);
        jn_free(st);
        return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
    }
    if (pthread_cond_init(&st->slot_free, NULL) != 0) {
        pthread_mutex_destroy(&st->slots_lock);
        pthread_mutex_destroy(&st->lock);
        jn_free(st);
        return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
    }
    svc->state = st;
    if (c->cache.ttl > 0) {
        st->cap = (size_t)c->cache.max_entries;
        if ((st->ents = jn_calloc(st->cap, sizeof(*st->ents))) == NULL) {
            lookup_destroy(svc);
            return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
        }
    }
    return 0;
}

static int unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* The url for message m: the template's text as written, each placeholder's value
 * percent-encoded. 0 or JN_E* with err. */
static int render_url(const struct lookup_conf *c, struct jn_svc_fields *x, struct jn_buf *out,
                      struct jn_err *err)
{
    static const char hex[] = "0123456789ABCDEF";
    struct jn_buf one = JN_BUF_INIT, val = JN_BUF_INIT;
    int rc = 0;

    for (const char *p = c->url; *p && rc == 0;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            rc = jn_buf_putc(out, p[0]);
            p += 2;
            continue;
        }
        if (*p != '{') {
            rc = jn_buf_putc(out, *p++);
            continue;
        }
        const char *q = strchr(p, '}'); /* checked at load: every { closes */
        size_t n = q ? (size_t)(q - p) + 1 : strlen(p);
        one.len = 0;
        val.len = 0;
        if (jn_buf_append(&one, p, n) != 0 || jn_buf_putc(&one, '\0') != 0) {
            rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
            break;
        }
        rc = jn_template_render_ext(one.p, x->m, jn_svc__fields_ext, x, &val, err);
        if (rc == 0 && val.len == 0) {
            /* {header.X} of a message without X, or an empty field: no key, no lookup. */
            rc = jn_err_set(err, JN_EINVAL, "http-lookup: url: %s is empty in this message",
                            one.p);
        }
        for (size_t i = 0; rc == 0 && i < val.len; i++) {
            unsigned char ch = (unsigned char)val.p[i];
            if (unreserved(ch)) {
                rc = jn_buf_putc(out, (char)ch);
            } else {
                char enc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
                rc = jn_buf_append(out, enc, 3);
            }
            if (rc != 0) {
                rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
            }
        }
        p += n;
    }
    if (rc == 0 && jn_buf_putc(out, '\0') != 0) {
        rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
    }
    jn_buf_reset(&one);
    jn_buf_reset(&val);
    return rc;
}

/* Sets v at path (a.b.c, objects made as needed) in root. 0, JN_EINVAL with err, JN_ENOMEM. */
static int json_put(json_t *root, const char *path, json_t *v, struct jn_err *err)
{
    json_t *o = root;
    const char *p = path;
    char key[256];

    for (;;) {
        const char *dot = strchr(p, '.');
        size_t kl = dot ? (size_t)(dot - p) : strlen(p);
        if (kl >= sizeof(key)) {
            return jn_err_set(err, JN_EINVAL, "http-lookup: into: a step longer than %zu bytes",
                              sizeof(key) - 1);
        }
        memcpy(key, p, kl);
        key[kl] = '\0';
        if (dot == NULL) {
            return json_object_set(o, key, v) ? jn_err_set(err, JN_ENOMEM, "http-lookup: out "
                                                           "of memory") : 0;
        }
        json_t *next = json_object_get(o, key);
        if (next == NULL) {
            next = json_object();
            if (next == NULL || json_object_set_new(o, key, next) != 0) {
                return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
            }
        } else if (!json_is_object(next)) {
            return jn_err_set(err, JN_EINVAL, "http-lookup: into: json.%s: '%s' in the payload "
                              "is not an object", path, key);
        }
        o = next;
        p = dot + 1;
    }
}

/* Puts the answer's value where into says, in a copy of in pushed to out. */
static int apply(const struct lookup_conf *c, struct jn_msg *in, json_t *v,
                 struct jn_msg_list *out, struct jn_err *err)
{
    struct jn_msg *m = NULL;
    char *text = NULL;
    int rc;

    if (strncmp(c->into, "header.", 7) == 0) {
        text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
                                                     JSON_PRESERVE_ORDER);
        const char *hv = json_is_string(v) ? json_string_value(v) : text;
        if (hv == NULL || (m = jn_msg_copy(in)) == NULL ||
            jn_msg_header_set(m, c->into + 7, hv) != 0) {
            free(text);
            jn_msg_unref(&m);
            return jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
        }
        free(text);
        if (json_is_string(v) && strpbrk(hv, "\r\n") != NULL) {
            jn_msg_unref(&m);
            return jn_err_set(err, JN_EPROTO, "http-lookup: the answer's value holds a line "
                              "break and cannot be a header");
        }
        return jn_msg_list_push(out, m) ? jn_err_set(err, JN_ENOMEM, "http-lookup: out of "
                                                     "memory") : 0;
    }
    json_error_t je;
    json_t *doc = json_loadb((const char *)in->payload, in->len, 0, &je);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        return jn_err_set(err, JN_EPROTO, "http-lookup: into: %s needs a JSON object payload%s%s",
                          c->into, doc ? "" : ": ", doc ? "" : je.text);
    }
    if (strcmp(c->into, "json") == 0) {
        rc = !json_is_object(v) ? jn_err_set(err, JN_EPROTO, "http-lookup: into: json merges "
                                             "an object, and the answer%s is not one",
                                             c->field ? "'s field" : "")
             : json_object_update(doc, v) != 0 ? jn_err_set(err, JN_ENOMEM, "http-lookup: out "
                                                            "of memory") : 0;
    } else {
        rc = json_put(doc, c->into + 5, v, err);
    }
    if (rc == 0) {
        char *s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
        char *p = s ? jn_malloc(strlen(s) + 1) : NULL;
        if (p == NULL || (m = jn_msg_copy(in)) == NULL ||
            jn_msg_header_set(m, "content-type", "application/json") != 0) {
            jn_free(p);
            jn_msg_unref(&m);
            rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
        } else {
            size_t n = strlen(s);
            memcpy(p, s, n + 1);
            jn_msg_set_payload(m, p, n);
            rc = jn_msg_list_push(out, m) ? jn_err_set(err, JN_ENOMEM, "http-lookup: out of "
                                                       "memory") : 0;
        }
        free(s);
    }
    json_decref(doc);
    return rc;
}

/* Waits for one of the instance's concurrency slots. 0, or JN_ESTOPPED (the broker stops). */
static int slot_take(const struct jn_service *svc)
{
    const struct lookup_conf *c = svc->conf;
    struct lookup_state *st = svc->state;
    int rc = 0;

    pthread_mutex_lock(&st->slots_lock);
    while (st->busy >= c->concurrency) {
        struct timespec ts;
        if (svc->abort != NULL && atomic_load(svc->abort)) {
            rc = JN_ESTOPPED;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += ABORT_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&st->slot_free, &st->slots_lock, &ts);
    }
    if (rc == 0) {
        st->busy++;
    }
    pthread_mutex_unlock(&st->slots_lock);
    return rc;
}

static void slot_give(const struct jn_service *svc)
{
    struct lookup_state *st = svc->state;

    pthread_mutex_lock(&st->slots_lock);
    st->busy--;
    pthread_cond_signal(&st->slot_free);
    pthread_mutex_unlock(&st->slots_lock);
}

/* Sleeps ms, in steps so that a stop is seen. 0, or JN_ESTOPPED. */
static int pause_ms(const atomic_int *abort, long long ms)
{
    while (ms > 0) {
        long long step = ms < ABORT_POLL_MS ? ms : ABORT_POLL_MS;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000L};
        if (abort != NULL && atomic_load(abort)) {
            return JN_ESTOPPED;
        }
        nanosleep(&ts, NULL);
        ms -= step;
    }
    return abort != NULL && atomic_load(abort) ? JN_ESTOPPED : 0;
}

/* GETs url, again after retry_delay (doubling) on no connection, a timeout, a 5xx or a 429,
 * at most 1 + retries times, within one of the instance's concurrency slots. 0 with g's 2xx
 * answer, or JN_E* with err: the last error and how many attempts were made. */
static int get_with_retries(const struct jn_service *svc, const char *url, struct get *g,
                            struct jn_err *err)
{
    const struct lookup_conf *c = svc->conf;
    long long delay = c->retry_delay;
    char last[200];
    int rc, attempts = 0;

    if (slot_take(svc) != 0) {
        return jn_err_set(err, JN_ESTOPPED, "http-lookup: the broker is stopping");
    }
    for (;;) {
        int again;
        attempts++;
        rc = http_get(c, svc->abort, url, g);
        if (rc == JN_ENOMEM) {
            rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
            break;
        }
        if (rc == JN_ESTOPPED) {
            rc = jn_err_set(err, JN_ESTOPPED, "http-lookup: the broker is stopping");
            break;
        }
        if (rc == 0 && g->status >= 200 && g->status <= 299) {
            break;
        }
        if (rc != 0) {
            snprintf(last, sizeof(last), ": %s", g->why);
            again = 1;
        } else {
            snprintf(last, sizeof(last), " answered %d", g->status);
            again = g->status >= 500 || g->status == 429;
            jn_buf_reset(&g->body);
        }
        if (!again || attempts > c->retries) {
            rc = jn_err_set(err, JN_EIO, "http-lookup: GET %s%s (%d attempt%s%s)", url, last,
                            attempts, attempts == 1 ? "" : "s",
                            again ? "" : ", not retried: a 4xx other than 429");
            break;
        }
        jn_log(JN_LOG_DEBUG, "http-lookup: GET %s%s; attempt %d of %lld in %lld ms", url,
               last, attempts + 1, c->retries + 1, delay);
        if (pause_ms(svc->abort, delay) != 0) {
            rc = jn_err_set(err, JN_ESTOPPED, "http-lookup: the broker is stopping");
            break;
        }
        delay = delay > 300000 ? 600000 : delay * 2;
    }
    slot_give(svc);
    return rc;
}

/* How many messages at once this instance can use (the routing's threads). */
static size_t lookup_parallel(const struct jn_service *svc)
{
    const struct lookup_conf *c = svc->conf;

    return (size_t)c->concurrency;
}

static int lookup_transform(const struct jn_service *svc, struct jn_msg *in,
                            struct jn_msg_list *out, struct jn_err *err)
{
    const struct lookup_conf *c = svc->conf;
    struct lookup_state *st = svc->state;
    struct jn_svc_fields x = {"http-lookup", true, "", in, NULL, 0};
    struct jn_buf url = JN_BUF_INIT;
    struct get g;
    char *body = NULL;
    size_t len = 0;
    uint64_t h = 0;
    json_t *ans = NULL, *v;
    int rc;

    memset(&g, 0, sizeof(g));
    rc = render_url(c, &x, &url, err);
    json_decref(x.json);
    if (rc != 0) {
        goto out;
    }
    if (st->cap > 0) {
        h = fnv1a(url.p);
        body = cache_get(st, url.p, h, &len);
    }
    if (body == NULL) {
        rc = get_with_retries(svc, url.p, &g, err);
        if (rc != 0) {
            goto out;
        }
        body = g.body.p ? jn_buf_steal(&g.body) : jn_strdup("");
        len = body ? strlen(body) : 0;
        if (body == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "http-lookup: out of memory");
            goto out;
        }
    }
    json_error_t je;
    ans = json_loadb(body, len, JSON_DECODE_ANY, &je);
    if (ans == NULL) {
        rc = jn_err_set(err, JN_EPROTO, "http-lookup: GET %s: the answer is not JSON: %s "
                        "(line %d column %d)", url.p, je.text, je.line, je.column);
        goto out;
    }
    if (st->cap > 0 && g.status != 0) {
        cache_put(st, c->cache.ttl, url.p, h, body, len); /* a fresh 2xx JSON answer */
    }
    v = c->field ? jn_svc__json_walk(ans, c->field, strlen(c->field)) : ans;
    if (v == NULL) {
        rc = jn_err_set(err, JN_EPROTO, "http-lookup: GET %s: the answer has no field %s",
                        url.p, c->field);
        goto out;
    }
    rc = apply(c, in, v, out, err);
out:
    json_decref(ans);
    jn_free(body);
    jn_buf_reset(&g.body);
    jn_buf_reset(&url);
    if (rc != 0 && rc != JN_ENOMEM && rc != JN_ESTOPPED && c->on_error == ON_ERROR_SKIP) {
        jn_log_p(JN_LOG_WARN, svc->log_prefix, "msg=%s %s (on_error: skip: passed on "
                 "unchanged)", in->id, err ? err->msg : "");
        return jn_msg_list_push(out, jn_msg_ref(in)) ? jn_err_set(err, JN_ENOMEM, "http-lookup: "
                                                                  "out of memory") : 0;
    }
    return rc;
}

const struct jn_service_def jn_service_http_lookup = {
    .name = "http-lookup",
    .desc = "Enriches a message with the JSON answer of an HTTP GET (into a header or the "
            "JSON payload), with a timeout and a TTL cache",
    .opts = lookup_opts,
    .conf_size = sizeof(struct lookup_conf),
    .init = lookup_init,
    .transform = lookup_transform,
    .destroy = lookup_destroy,
    .parallel = lookup_parallel,
};
