/*
 * jn_admin_ui: GET / and GET /ui/<name>, the dashboard's embedded files (jn_admin_ui.h).
 *
 * The files hold no data, only the page; everything it shows comes from /api/v1/, which asks
 * for the token as always. So they are answered without the token (a browser cannot send a
 * bearer token when it opens a URL), with a Content-Security-Policy that allows scripts,
 * styles and connections to this origin only and no inline script or style.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

#include "jn_admin_int.h"
#include "jn_admin_ui.h"

#define UI_CSP "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

const struct jn_ui_file *jn_ui_file_get(const char *name)
{
    for (const struct jn_ui_file *f = jn_ui_files; f->name != NULL; f++) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

static const char *ui_ctype(const char *name)
{
    static const struct { const char *ext, *type; } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
    };
    const char *dot = strrchr(name, '.');

    for (size_t i = 0; dot != NULL && i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(dot, types[i].ext) == 0) {
            return types[i].type;
        }
    }
    return "application/octet-stream";
}

/* FNV-1a of the bytes: the ETag, so a reload revalidates in one round trip and an upgraded
 * binary's files are fetched again. */
static unsigned long long ui_hash(const struct jn_ui_file *f)
{
    unsigned long long h = 1469598103934665603ULL;

    for (size_t i = 0; i < f->len; i++) {
        h = (h ^ f->data[i]) * 1099511628211ULL;
    }
    return h;
}

/* Adds the headers every answer of the dashboard carries, UI files and their errors alike. */
void jn_admin__ui_headers(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Security-Policy", UI_CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
}

int jn_admin__is_ui(const char *path)
{
    return strcmp(path, "/") == 0 || strncmp(path, "/ui/", 4) == 0;
}

void jn_admin__get_ui(struct jn_admin *a, struct evhttp_request *req, const char *path)
{
    const char *name = strcmp(path, "/") == 0 ? "index.html" : path + 4;
    const struct jn_ui_file *f = strchr(name, '/') ? NULL : jn_ui_file_get(name);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    const char *inm;
    struct evbuffer *out;
    char etag[24];

    (void)a;
    jn_admin__ui_headers(req);
    if (f == NULL) {
        jn_admin__reply_error(req, 404, "Not Found", "no such dashboard file: %s", path);
        return;
    }
    snprintf(etag, sizeof(etag), "\"%016llx\"", ui_hash(f));
    evhttp_add_header(h, "ETag", etag);
    /* no-cache: kept, but revalidated each time (the ETag), so an upgrade shows at once. */
    evhttp_add_header(h, "Cache-Control", "no-cache");
    inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    if (inm != NULL && strcmp(inm, etag) == 0) {
        evhttp_send_reply(req, 304, "Not Modified", NULL);
        return;
    }
    evhttp_add_header(h, "Content-Type", ui_ctype(name));
    out = evbuffer_new();
    /* The data is static: referenced, not copied. */
    if (out == NULL || evbuffer_add_reference(out, f->data, f->len, NULL, NULL) != 0) {
        if (out != NULL) {
            evbuffer_free(out);
        }
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}
