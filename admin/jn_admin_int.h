/*
 * jn_admin internals shared by admin/jn_admin.c (the listener, health, metrics, status,
 * channels, queues), admin/jn_admin_msg.c (the message browser, replay) and
 * admin/jn_admin_reply.c (how answers are written).
 */
#ifndef JN_ADMIN_INT_H
#define JN_ADMIN_INT_H

#include <jansson.h>
#include <stddef.h>

#include "jn_admin.h"
#include "jn_listener.h"

struct evhttp;
struct evhttp_request;

struct jn_admin {
    struct jn_broker *b;
    struct jn_listener *lst;
    struct evhttp *http;
    char *token;                /* owned; NULL: no token */
    size_t token_len;
    char version[32];
    struct jn_net_conf net;     /* the listener's: defaults */
    int bound;                  /* evhttp owns the listener's evconnlistener */
    struct jn_tls *tls;         /* https, or NULL */
};

/* jn_admin_reply.c. Answers body (len bytes) with code and a Content-Type. */
void jn_admin__reply_body(struct evhttp_request *req, int code, const char *reason,
                          const char *ctype, const char *body, size_t len);
/* Answers j (taken: decref'd here; NULL: out of memory, 500) as JSON with code. */
void jn_admin__reply_json(struct evhttp_request *req, int code, const char *reason, json_t *j);
/* us (microseconds since the epoch) as 2026-12-07T07:00:17.075Z into buf (80 bytes suffice). */
void jn_admin__iso_time(int64_t us, char *buf, size_t n);
/* Answers {"error": fmt with arg} with code. */
void jn_admin__reply_error(struct evhttp_request *req, int code, const char *reason,
                           const char *fmt, const char *arg);

/* jn_admin_msg.c: GET /api/v1/messages (the query in req's URI) and GET
 * /api/v1/messages/{id}. */
void jn_admin__get_messages(struct jn_admin *a, struct evhttp_request *req);
void jn_admin__get_message(struct jn_admin *a, struct evhttp_request *req, const char *id);
/* GET /api/v1/config/history, GET /api/v1/config/{hash} (jn_admin_msg.c). */
void jn_admin__get_config(struct jn_admin *a, struct evhttp_request *req, const char *what);
/* POST /api/v1/replay (a JSON body) and GET /api/v1/replay/{job}. */
void jn_admin__post_replay(struct jn_admin *a, struct evhttp_request *req);
/* GET /api/v1/dead-letters (jn_admin_msg.c). */
void jn_admin__get_dead_letters(struct jn_admin *a, struct evhttp_request *req);
void jn_admin__get_replay(struct jn_admin *a, struct evhttp_request *req, const char *job);

/* jn_admin_link.c: the links of channels that keep them (bridge): the "link" object of a row
 * of /api/v1/channels (added to o when cs->links), and the junction_link_* metric families. */
struct jn_channel_stats;
void jn_admin__link_json(struct jn_admin *a, size_t i, const struct jn_channel_stats *cs,
                         json_t *o);
int jn_admin__link_metrics(struct jn_admin *a, struct jn_buf *b);

/* jn_admin_ui.c: 1 when path is the dashboard's (/ or /ui/...). */
int jn_admin__is_ui(const char *path);
/* GET / and GET /ui/<name>: an embedded file with its type, ETag and CSP, or 404. */
void jn_admin__get_ui(struct jn_admin *a, struct evhttp_request *req, const char *path);
/* The CSP and nosniff headers of the dashboard's answers. */
void jn_admin__ui_headers(struct evhttp_request *req);

#endif
