/*
 * jn_ctl: `junction ctl` (see jn_ctl.h).
 */
#include "jn_ctl.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <signal.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "jn_buf.h"
#include "jn_net.h"
#include "jn_tls.h"

/* One TLS client connection on the blocking socket fd, or NULL with why on stderr. *tp gets
 * the context (free it with jn_tls_free after the SSL). */
static SSL *ctl_tls_connect(const struct jn_ctl_opts *o, int fd, const char *host,
                            struct jn_tls **tp)
{
    struct jn_tls_conf tc;
    struct jn_err err = {0};
    char why[512];
    SSL *ssl;

    memset(&tc, 0, sizeof(tc));
    tc.enabled = true;
    tc.min_version = JN_TLS_V12;
    tc.verify_peer = JN_TLS_VERIFY_TRUE;
    /* Borrowed: jn_tls_new copies what it keeps. */
    tc.ca = (char *)o->ca;
    tc.cert = (char *)o->cert;
    tc.key = (char *)o->key;
    tc.server_name = (char *)o->server_name;
    tc.ciphers = (char *)JN_TLS_DEFAULT_CIPHERS;
    *tp = jn_tls_new(&tc, JN_TLS_CLIENT, "junction ctl: tls", &err);
    if (*tp == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    ssl = jn_tls_client_ssl(*tp, host);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        fprintf(stderr, "junction ctl: out of memory setting up TLS\n");
        SSL_free(ssl);
        return NULL;
    }
    if (SSL_connect(ssl) != 1) {
        jn_tls_reason(ssl, 0, why, sizeof(why));
        fprintf(stderr, "junction ctl: %s: handshake failed: %s\n", o->admin,
                why[0] ? why : "TLS: the connection closed (is the admin listener https?)");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* A failed send or receive, said on stderr: errno, or over TLS the server's alert when one came
 * (TLS 1.3 servers refuse a client certificate after the client's handshake has finished, so
 * the refusal surfaces here: "tlsv13 alert certificate required"). */
static void ctl_io_error(const struct jn_ctl_opts *o, SSL *ssl, const char *doing)
{
    char why[512] = "";
    int e = errno;

    if (ssl != NULL) {
        char buf[256];
        /* The alert may still be unread behind a failed write. */
        (void)SSL_read(ssl, buf, (int)sizeof(buf));
        jn_tls_reason(ssl, 0, why, sizeof(why));
    }
    fprintf(stderr, "junction ctl: %s %s: %s\n", doing, o->admin, why[0] ? why : strerror(e));
}

int jn_ctl_request(const struct jn_ctl_opts *o, const char *method, const char *path,
                   const char *send_body, int *status, struct jn_buf *body)
{
    const char *addr = o->admin;
    char host[256], portstr[16];
    struct addrinfo hints, *ai = NULL;
    struct timeval tv = {10, 0};
    struct jn_buf req = JN_BUF_INIT, resp = JN_BUF_INIT;
    struct jn_tls *tls = NULL;
    SSL *ssl = NULL;
    int port, fd = -1, rc = -1, gai, https = o->tls;
    char *sep;

    if (strncmp(addr, "http://", 7) == 0) {
        addr += 7;
    } else if (strncmp(addr, "https://", 8) == 0) {
        addr += 8;
        https = 1;
    }
    if (jn_split_hostport(addr, host, sizeof(host), &port, 1) != 0) {
        fprintf(stderr, "junction ctl: --admin %s: expected host:port\n", o->admin);
        return -1;
    }
    snprintf(portstr, sizeof(portstr), "%d", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "junction ctl: %s: %s\n", host, gai_strerror(gai));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "junction ctl: cannot reach the admin listener at %s: %s (is junction "
                "running, with admin on?)\n", o->admin, strerror(errno));
        goto out;
    }
    if (https) {
        /* SSL_write uses write(2): a server that refuses our certificate after a TLS 1.3
         * handshake closes under us, and that must be an error message, not SIGPIPE. This is
         * a one-request command-line process: ignoring the signal for it is harmless. */
        signal(SIGPIPE, SIG_IGN);
        if ((ssl = ctl_tls_connect(o, fd, host, &tls)) == NULL) {
            goto out;
        }
    }
    jn_buf_printf(&req, "%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: junction-ctl\r\n", method,
                  path, host);
    if (o->token != NULL) {
        jn_buf_printf(&req, "Authorization: Bearer %s\r\n", o->token);
    }
    if (strcmp(method, "POST") == 0) {
        jn_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      send_body ? strlen(send_body) : 0, send_body ? send_body : "");
    } else {
        jn_buf_puts(&req, "\r\n");
    }
    for (size_t off = 0; req.p != NULL && off < req.len;) {
        ssize_t n = ssl ? SSL_write(ssl, req.p + off, (int)(req.len - off))
                        : send(fd, req.p + off, req.len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            ctl_io_error(o, ssl, "sending to");
            goto out;
        }
        off += (size_t)n;
    }
    for (;;) {
        char buf[8192];
        ssize_t n = ssl ? SSL_read(ssl, buf, (int)sizeof(buf)) : recv(fd, buf, sizeof(buf), 0);
        if (ssl != NULL && n <= 0) {
            /* close_notify ends the answer; so does a bare close once some of it came (the
             * admin's HTTP/1.0 answer ends with the connection, not always with an alert).
             * Anything else before a byte of the answer is the server's refusal. */
            if (SSL_get_error(ssl, (int)n) == SSL_ERROR_ZERO_RETURN || resp.len > 0) {
                break;
            }
            ctl_io_error(o, ssl, "reading from");
            goto out;
        }
        if (n == 0) {
            break;
        }
        if (n < 0) {
            ctl_io_error(o, NULL, "reading from");
            goto out;
        }
        jn_buf_append(&resp, buf, (size_t)n);
    }
    jn_buf_putc(&resp, '\0');
    if (resp.p == NULL || sscanf(resp.p, "HTTP/%*d.%*d %d", status) != 1 ||
        (sep = strstr(resp.p, "\r\n\r\n")) == NULL) {
        fprintf(stderr, "junction ctl: %s did not answer HTTP%s\n", o->admin,
                https ? "" : " (if it is https, give --admin https://HOST:PORT)");
        goto out;
    }
    /* The body as bytes (a payload may hold NULs): up to the NUL put after the answer. */
    jn_buf_append(body, sep + 4, resp.len - 1 - (size_t)(sep + 4 - resp.p));
    rc = 0;
out:
    if (ssl != NULL) {
        (void)SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    jn_tls_free(tls);
    if (fd >= 0) {
        close(fd);
    }
    freeaddrinfo(ai);
    jn_buf_reset(&req);
    jn_buf_reset(&resp);
    return rc;
}

static long long num(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void print_status(const json_t *j)
{
    const json_t *jr = json_object_get(j, "journal");

    printf("junction %s, up %llds, %s\n", str(j, "version"), num(j, "uptime_seconds"),
           json_is_true(json_object_get(j, "ready")) ? "ready"
           : json_is_true(json_object_get(j, "stopping")) ? "stopping" : "not ready");
    printf("channels %lld, routes %lld, dead letters since start %lld\n", num(j, "channels"),
           num(j, "routes"), num(j, "dead_letters_total"));
    printf("journal: %lld%% of %lld MiB used; %lld queued, %lld waiting for services, %lld dead "
           "letters\n", num(jr, "used_pct"), num(jr, "map_bytes") >> 20, num(jr, "queued"),
           num(jr, "inbox"), num(jr, "dead_letters"));
}

static void print_channels(const json_t *j)
{
    const json_t *arr = json_object_get(j, "channels");
    size_t i;
    json_t *c;

    printf("%-20s %-6s %-4s %-7s %10s %10s %10s %10s\n", "CHANNEL", "TYPE", "DIR", "STATE",
           "IN", "DELIVERED", "RETRIED", "FAILED");
    json_array_foreach(arr, i, c) {
        int out = strcmp(str(c, "direction"), "out") == 0;
        printf("%-20s %-6s %-4s %-7s %10lld %10lld %10lld %10lld\n", str(c, "name"),
               str(c, "type"), str(c, "direction"), str(c, "state"),
               out ? 0 : num(c, "received"), out ? num(c, "delivered") : 0,
               out ? num(c, "retried") : 0, out ? num(c, "failed") : 0);
    }
}

static void print_queues(const json_t *j)
{
    const json_t *arr = json_object_get(j, "queues");
    size_t i;
    json_t *q;

    printf("%-20s %-6s %10s %9s %10s %8s\n", "QUEUE", "PAUSED", "IN-MEMORY", "IN-FLIGHT",
           "RETRYING", "OLDEST");
    json_array_foreach(arr, i, q) {
        printf("%-20s %-6s %9lld%s %9lld %10lld %7.1fs\n", str(q, "channel"),
               json_is_true(json_object_get(q, "paused")) ? "yes" : "no", num(q, "in_memory"),
               json_is_true(json_object_get(q, "complete")) ? " " : "+", num(q, "in_flight"),
               num(q, "waiting_retry"), json_real_value(json_object_get(q, "oldest_seconds")));
    }
}

static void print_routes(const json_t *j)
{
    const json_t *arr = json_object_get(j, "routes");
    size_t i;
    json_t *r;

    printf("%-30s %10s\n", "ROUTE", "ROUTED");
    json_array_foreach(arr, i, r) {
        printf("%-30s %10lld\n", str(r, "name"), num(r, "routed"));
    }
}

static void print_messages(const json_t *j)
{
    const json_t *arr = json_object_get(j, "messages");
    size_t i;
    json_t *m;

    printf("%-24s  %-26s  %-16s  %s\n", "RECEIVED", "ID", "CHANNEL", "STATUS");
    json_array_foreach(arr, i, m) {
        printf("%-24s  %-26s  %-16s  %s\n", str(m, "received"), str(m, "id"),
               str(m, "channel"), str(m, "status"));
    }
    if (json_is_string(json_object_get(j, "next_cursor"))) {
        printf("(more: narrow --since/--until, or raise --limit)\n");
    }
}

static void print_show(const json_t *j)
{
    const json_t *arr = json_object_get(j, "trace");
    size_t i;
    json_t *e;

    const json_t *kept = json_object_get(j, "kept");

    printf("%s  from %s  received %s  %s\n", str(j, "id"), str(j, "channel"),
           str(j, "received"), str(j, "status"));
    if (json_is_object(kept)) {
        const json_t *hs = json_object_get(kept, "headers");
        size_t k;
        json_t *h;
        printf("  kept: %s, %lld bytes%s\n", str(kept, "keep"), num(kept, "bytes"),
               json_is_string(json_object_get(kept, "payload_url")) ? " (payload: GET "
               "/api/v1/messages/ID/payload)" : "");
        json_array_foreach(hs, k, h) {
            printf("  %s: %s\n", str(h, "name"), str(h, "value"));
        }
    }
    json_array_foreach(arr, i, e) {
        printf("  %-24s  %-20s", str(e, "time"), str(e, "event"));
        if (str(e, "route")[0]) {
            printf("  route=%s", str(e, "route"));
        }
        if (str(e, "channel")[0]) {
            printf("  channel=%s", str(e, "channel"));
        }
        if (num(e, "attempt") > 0) {
            printf("  attempt=%lld", num(e, "attempt"));
        }
        if (str(e, "error")[0]) {
            printf("  error=%s", str(e, "error"));
        }
        if (str(e, "config")[0]) {
            printf("  config=%s", str(e, "config"));
        }
        if (str(e, "peer")[0]) {
            printf("  peer=%s", str(e, "peer"));
        }
        printf("\n");
    }
}

static void print_config_history(const json_t *j)
{
    const json_t *arr = json_object_get(j, "configs");
    size_t i;
    json_t *c;

    printf("%-16s  %-24s  %-24s  %8s\n", "CONFIG", "FIRST LOADED", "LAST LOADED", "BYTES");
    json_array_foreach(arr, i, c) {
        printf("%-16s  %-24s  %-24s  %8lld%s\n", str(c, "hash"), str(c, "first_loaded"),
               str(c, "last_loaded"), num(c, "bytes"),
               strcmp(str(c, "hash"), str(j, "running")) == 0 ? "  (running)" : "");
    }
}

/* Up to this many bytes of a payload are shown by ctl show. */
#define SHOW_PAYLOAD_MAX 4096

/* ctl show: the kept payload, as text when it is printable UTF-8 (HL7's CR as line breaks),
 * else the first bytes in hex. */
static void print_kept_payload(const struct jn_ctl_opts *o, const json_t *kept)
{
    const char *url = json_string_value(json_object_get(kept, "payload_url"));
    struct jn_buf body = JN_BUF_INIT;
    int status = 0, text = 1;
    size_t n;

    if (url == NULL) {
        if (json_is_object(kept)) {
            printf("  payload: not kept (keep: headers)\n");
        }
        return;
    }
    if (jn_ctl_request(o, "GET", url, NULL, &status, &body) != 0 || status != 200) {
        printf("  payload: could not be read (%d)\n", status);
        jn_buf_reset(&body);
        return;
    }
    n = body.len < SHOW_PAYLOAD_MAX ? body.len : SHOW_PAYLOAD_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body.p[i];
        text &= c >= 0x20 || c == '\r' || c == '\n' || c == '\t';
        text &= c != 0x7f;
    }
    printf("  payload (%zu bytes%s):\n", body.len, n < body.len ? ", the first 4096" : "");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body.p[i];
        if (!text) {
            printf("%s%02x", i % 32 == 0 ? (i ? "\n    " : "    ") : " ", c);
        } else if (c == '\r') {
            fputs(i + 1 < n && body.p[i + 1] == '\n' ? "" : "\n", stdout);
        } else {
            fputc(c, stdout);
        }
    }
    printf("\n");
    jn_buf_reset(&body);
}

/* Appends &key=value (value percent-encoded) to path when value is set. */
static void query_add(struct jn_buf *path, const char *key, const char *value)
{
    if (value == NULL) {
        return;
    }
    jn_buf_printf(path, "%c%s=", strchr(path->p ? path->p : "", '?') ? '&' : '?', key);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            jn_buf_putc(path, (char)*p);
        } else {
            jn_buf_printf(path, "%%%02X", *p);
        }
    }
}

/* GET or POST path; prints the error and returns 1, or 0 with *out the parsed JSON. */
static int call(const struct jn_ctl_opts *o, const char *method, const char *path,
                const char *send, json_t **out, struct jn_buf *raw)
{
    int status = 0;
    json_t *j;

    if (jn_ctl_request(o, method, path, send, &status, raw) != 0) {
        return 1;
    }
    j = json_loads(raw->p ? raw->p : "", 0, NULL);
    if (status < 200 || status >= 300 || j == NULL) {
        fprintf(stderr, "junction ctl: %d: %s\n", status,
                j && json_object_get(j, "error") ? str(j, "error") : (raw->p ? raw->p : ""));
        json_decref(j);
        return 1;
    }
    *out = j;
    return 0;
}

/* The dead-letter filters of o as (key, value) pairs into obj (replay's body) or path (the
 * dead-letters query). 0, or 2 (usage: --header without '='). */
static int dl_filters(const struct jn_ctl_opts *o, json_t *obj, struct jn_buf *path)
{
    const char *kv[][2] = {{"since", o->since}, {"until", o->until},
                           {"channel", o->channel}, {"route", o->route},
                           {"destination", o->destination}, {"q", o->grep}};
    char name[256];

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (kv[i][1] == NULL) {
            continue;
        }
        if (obj) {
            json_object_set_new(obj, kv[i][0], json_string(kv[i][1]));
        } else {
            query_add(path, kv[i][0], kv[i][1]);
        }
    }
    if (o->header != NULL) {
        const char *eq = strchr(o->header, '=');
        if (eq == NULL || eq == o->header || (size_t)(eq - o->header) > sizeof(name) - 8) {
            fprintf(stderr, "junction ctl: --header wants NAME=VALUE, not '%s'\n", o->header);
            return 2;
        }
        snprintf(name, sizeof(name), "header.%.*s", (int)(eq - o->header), o->header);
        if (obj) {
            json_object_set_new(obj, name, json_string(eq + 1));
        } else {
            query_add(path, name, eq + 1);
        }
    }
    return 0;
}

static void print_dead_letters(const json_t *j)
{
    const json_t *arr = json_object_get(j, "dead_letters");
    size_t i;
    json_t *d;

    printf("%-26s %-24s %-16s %-16s %8s  %s\n", "ID", "DEAD-LETTERED", "FROM", "DESTINATION",
           "ATTEMPTS", "ERROR");
    json_array_foreach(arr, i, d) {
        printf("%-26s %-24s %-16s %-16s %8lld  %s\n", str(d, "id"), str(d, "time"),
               str(d, "channel"), str(d, "destination"), num(d, "attempts"), str(d, "error"));
    }
    printf("%lld dead letter(s)%s\n", num(j, "count"),
           (long long)json_array_size(arr) < num(j, "count") ? " (more: raise --limit)" : "");
}

static int ctl_replay(const struct jn_ctl_opts *o, int argc, char **argv)
{
    json_t *req = json_object(), *ids = json_array(), *ans = NULL;
    struct jn_buf raw = JN_BUF_INIT;
    char *body;
    char path[64];
    int rc;

    for (int i = 1; i < argc; i++) {
        json_array_append_new(ids, json_string(argv[i]));
    }
    json_object_set_new(req, "ids", ids);
    if (dl_filters(o, req, NULL) != 0) {
        json_decref(req);
        return 2;
    }
    if (o->nto > 0) {
        json_t *to = json_array();
        for (int i = 0; i < o->nto; i++) {
            json_array_append_new(to, json_string(o->to[i]));
        }
        json_object_set_new(req, "to", to);
    }
    json_object_set_new(req, "dry_run", json_boolean(o->dry_run));
    if (o->kept) {
        json_object_set_new(req, "from", json_string("kept"));
    }
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    rc = body ? call(o, "POST", "/api/v1/replay", body, &ans, &raw) : 1;
    free(body);
    if (rc != 0) {
        jn_buf_reset(&raw);
        return 1;
    }
    if (o->json) {
        printf("%s\n", raw.p);
    } else if (o->dry_run || json_integer_value(json_object_get(ans, "job")) == 0) {
        printf("%lld %s would be replayed%s\n", num(ans, "count"),
               o->kept ? "kept message(s)" : "dead letter(s)", o->dry_run ? "" : " (none now)");
        if (num(ans, "headers_only") > 0) {
            printf("%lld more match but are kept without their payload (keep: headers)\n",
                   num(ans, "headers_only"));
        }
    }
    if (!o->dry_run && json_integer_value(json_object_get(ans, "job")) > 0) {
        long long job = num(ans, "job"), count = num(ans, "count");
        snprintf(path, sizeof(path), "/api/v1/replay/%lld", job);
        for (int tries = 0; tries < 600; tries++) {
            json_t *p = NULL;
            struct jn_buf pr = JN_BUF_INIT;
            if (call(o, "GET", path, NULL, &p, &pr) != 0) {
                jn_buf_reset(&pr);
                rc = 1;
                break;
            }
            jn_buf_reset(&pr);
            if (!o->json && isatty(STDOUT_FILENO)) {
                printf("\rreplay %lld: %lld of %lld", job, num(p, "replayed"), count);
                fflush(stdout);
            }
            if (json_is_true(json_object_get(p, "done"))) {
                if (!o->json) {
                    printf("%sreplay %lld: %lld of %lld put back, %lld failed\n",
                           isatty(STDOUT_FILENO) ? "\r" : "", job, num(p, "replayed"), count,
                           num(p, "failed"));
                }
                rc = num(p, "failed") > 0;
                json_decref(p);
                break;
            }
            json_decref(p);
            usleep(100 * 1000);
        }
    }
    json_decref(ans);
    jn_buf_reset(&raw);
    return rc;
}

/* ctl reload: POST /api/v1/reload; prints what changed, or why the file was not taken (each
 * reason on its own line, file:line:col first). 0 when the new config runs or nothing changed,
 * 1 otherwise (the running config stays). */
static int ctl_reload(const struct jn_ctl_opts *o)
{
    struct jn_buf body = JN_BUF_INIT;
    json_t *j, *list;
    int status = 0, rc;

    if (jn_ctl_request(o, "POST", "/api/v1/reload", NULL, &status, &body) != 0) {
        jn_buf_reset(&body);
        return 1;
    }
    j = json_loads(body.p ? body.p : "", 0, NULL);
    if (j == NULL || json_object_get(j, "status") == NULL) {
        fprintf(stderr, "junction ctl: %d: %s\n", status, body.p ? body.p : "");
        json_decref(j);
        jn_buf_reset(&body);
        return 1;
    }
    rc = status == 200 ? 0 : 1;
    if (o->json) {
        printf("%s\n", body.p);
    } else {
        FILE *out = rc ? stderr : stdout;
        const char *st = str(j, "status");
        if (strcmp(st, "reloaded") == 0) {
            fprintf(out, "reloaded: config %s -> %s\n", str(j, "previous_hash"),
                    str(j, "config_hash"));
        } else if (strcmp(st, "unchanged") == 0) {
            fprintf(out, "unchanged: config %s keeps running\n", str(j, "config_hash"));
        } else {
            fprintf(out, "%s: config %s keeps running\n", st, str(j, "config_hash"));
        }
        list = json_object_get(j, rc ? "errors" : "changes");
        for (size_t i = 0; i < json_array_size(list); i++) {
            fprintf(out, "  %s\n", json_string_value(json_array_get(list, i)));
        }
    }
    json_decref(j);
    jn_buf_reset(&body);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: junction ctl status|channels|queues|routes [--json] "
            "[--admin [https://]HOST:PORT] [--token-file F] [-c FILE]\n"
            "       (https: [--ca FILE|DIR] [--cert FILE --key FILE] [--server-name NAME])\n"
            "       junction ctl pause|resume CHANNEL [--admin HOST:PORT] [--token-file F] "
            "[-c FILE]\n"
            "       junction ctl messages [--since T] [--until T] [--channel C] [--status S] "
            "[--route R] [--header K=V] [--grep TEXT] [--limit N] [--json]\n"
            "       junction ctl show ID [--json]\n"
            "       junction ctl replay [ID...] [--since T] [--until T] [--channel C] "
            "[--route R] [--destination CH] [--header K=V] [--grep TEXT] [--to CH]... "
            "[--kept] [--dry-run] [--json]\n"
            "       junction ctl dlq list [the filters of replay] [--limit N] [--json]\n"
            "       junction ctl dlq replay [as replay]\n"
            "       junction ctl record --channel C [--count N] --out FILE [-c FILE]\n"
            "       junction ctl config history | show HASH\n"
            "       junction ctl reload [--json]\n");
    return 2;
}

int jn_ctl_main(const struct jn_ctl_opts *o, int argc, char **argv)
{
    const char *verb = argc > 0 ? argv[0] : NULL;
    char path[512];
    const char *method = "GET";
    void (*print)(const json_t *) = NULL;
    struct jn_buf body = JN_BUF_INIT;
    json_t *j;
    int status = 0, rc;

    if (verb == NULL) {
        return usage();
    }
    if (strcmp(verb, "replay") == 0) {
        return ctl_replay(o, argc, argv);
    }
    if (strcmp(verb, "reload") == 0 && argc == 1) {
        return ctl_reload(o);
    }
    if (strcmp(verb, "dlq") == 0 && argc >= 2 && strcmp(argv[1], "replay") == 0) {
        return ctl_replay(o, argc - 1, argv + 1);
    }
    if (strcmp(verb, "dlq") == 0 && argc == 2 && strcmp(argv[1], "list") == 0) {
        struct jn_buf p = JN_BUF_INIT;
        jn_buf_puts(&p, "/api/v1/dead-letters");
        if (dl_filters(o, NULL, &p) != 0) {
            jn_buf_reset(&p);
            return 2;
        }
        query_add(&p, "limit", o->limit);
        if (p.p == NULL || p.len >= sizeof(path)) {
            jn_buf_reset(&p);
            return usage();
        }
        snprintf(path, sizeof(path), "%s", p.p);
        jn_buf_reset(&p);
        print = print_dead_letters;
    } else if (strcmp(verb, "messages") == 0 && argc == 1) {
        struct jn_buf p = JN_BUF_INIT;
        if (o->destination || o->nto || o->kept) {
            fprintf(stderr, "junction ctl: messages takes --since, --until, --channel, --status, "
                    "--route, --header, --grep and --limit\n");
            return 2;
        }
        jn_buf_puts(&p, "/api/v1/messages");
        query_add(&p, "since", o->since);
        query_add(&p, "until", o->until);
        query_add(&p, "status", o->status);
        query_add(&p, "limit", o->limit);
        /* channel, route, q and header.NAME: the replay filters' way */
        if (dl_filters(o, NULL, &p) != 0) {
            jn_buf_reset(&p);
            return 2;
        }
        if (p.p == NULL || p.len >= sizeof(path)) {
            jn_buf_reset(&p);
            return usage();
        }
        snprintf(path, sizeof(path), "%s", p.p);
        jn_buf_reset(&p);
        print = print_messages;
    } else if (strcmp(verb, "show") == 0 && argc == 2 && strlen(argv[1]) < 64 &&
               strchr(argv[1], '/') == NULL && strchr(argv[1], '?') == NULL) {
        snprintf(path, sizeof(path), "/api/v1/messages/%s", argv[1]);
        print = print_show;
    } else if (strcmp(verb, "config") == 0 && argc == 2 && strcmp(argv[1], "history") == 0) {
        snprintf(path, sizeof(path), "/api/v1/config/history");
        print = print_config_history;
    } else if (strcmp(verb, "config") == 0 && argc == 3 && strcmp(argv[1], "show") == 0 &&
               strlen(argv[2]) == 16 && strspn(argv[2], "0123456789abcdef") == 16) {
        struct jn_buf text = JN_BUF_INIT;
        snprintf(path, sizeof(path), "/api/v1/config/%s", argv[2]);
        if (jn_ctl_request(o, "GET", path, NULL, &status, &text) != 0) {
            jn_buf_reset(&text);
            return 1;
        }
        if (status != 200) {
            fprintf(stderr, "junction ctl: %d: no config %s in the broker's data dir\n", status,
                    argv[2]);
            jn_buf_reset(&text);
            return 1;
        }
        fwrite(text.p ? text.p : "", 1, text.len, stdout);
        jn_buf_reset(&text);
        return 0;
    } else if ((strcmp(verb, "pause") == 0 || strcmp(verb, "resume") == 0)) {
        if (argc != 2 || strchr(argv[1], '/') != NULL || strlen(argv[1]) > 200) {
            return usage();
        }
        snprintf(path, sizeof(path), "/api/v1/channels/%s/%s", argv[1], verb);
        method = "POST";
    } else if (argc == 1 && strcmp(verb, "status") == 0) {
        snprintf(path, sizeof(path), "/api/v1/status");
        print = print_status;
    } else if (argc == 1 && strcmp(verb, "channels") == 0) {
        snprintf(path, sizeof(path), "/api/v1/channels");
        print = print_channels;
    } else if (argc == 1 && strcmp(verb, "queues") == 0) {
        snprintf(path, sizeof(path), "/api/v1/queues");
        print = print_queues;
    } else if (argc == 1 && strcmp(verb, "routes") == 0) {
        snprintf(path, sizeof(path), "/api/v1/routes");
        print = print_routes;
    } else {
        return usage();
    }
    if (jn_ctl_request(o, method, path, NULL, &status, &body) != 0) {
        jn_buf_reset(&body);
        return 1;
    }
    j = json_loads(body.p ? body.p : "", 0, NULL);
    if (status < 200 || status >= 300) {
        fprintf(stderr, "junction ctl: %d: %s\n", status,
                j && json_object_get(j, "error") ? str(j, "error") : (body.p ? body.p : ""));
        rc = 1;
    } else if (o->json || j == NULL) {
        printf("%s\n", body.p ? body.p : "");
        rc = j == NULL;
    } else if (print != NULL) {
        print(j);
        if (print == print_show) {
            print_kept_payload(o, json_object_get(j, "kept"));
        }
        rc = 0;
    } else {
        printf("%s: %s\n", argv[1], str(j, "state"));
        rc = 0;
    }
    json_decref(j);
    jn_buf_reset(&body);
    return rc;
}
