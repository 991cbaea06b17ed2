/*
 * jn_admin_reply: how every admin answer is written (JSON, or a body of its own type), shared
 * by admin/jn_admin.c and admin/jn_admin_msg.c.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jn_admin_int.h"

void jn_admin__reply_body(struct evhttp_request *req, int code, const char *reason,
                       const char *ctype, const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evbuffer_new();

    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (out == NULL || evbuffer_add(out, body, len) != 0) {
        if (out != NULL) {
            evbuffer_free(out);
        }
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

void jn_admin__reply_json(struct evhttp_request *req, int code, const char *reason, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (s == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    jn_admin__reply_body(req, code, reason, "application/json", s, strlen(s));
    free(s); /* jansson's allocator is libc's */
}

void jn_admin__reply_error(struct evhttp_request *req, int code, const char *reason,
                        const char *fmt, const char *arg)
{
    char msg[512];

    snprintf(msg, sizeof(msg), fmt, arg);
    jn_admin__reply_json(req, code, reason, json_pack("{s:s}", "error", msg));
}

