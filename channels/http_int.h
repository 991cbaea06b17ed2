/*
 * http channel internals shared by channels/http.c (the def, the IN server) and
 * channels/http_out.c (the OUT client).
 */
#ifndef JN_HTTP_INT_H
#define JN_HTTP_INT_H

#include "jn_channel.h"

struct http_conf {
    /* IN */
    char *listen;                    /* "127.0.0.1:8080" */
    char *path;                      /* "/ingest" */
    unsigned long long max_message;  /* bytes */
    long long read_timeout;          /* ms */
    /* OUT */
    char *url;                       /* http://host:port/path */
    char *method;                    /* POST | PUT (checked in http.c) */
    struct jn_strmap headers;        /* name -> template */
    long long timeout;               /* ms, per request */
    char *sign_secret;               /* HMAC-SHA256 request signing; NULL = off */
};

/* "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>" into out (128 bytes suffice). */
void jn_http_sign(const char *secret, long long t, const void *body, size_t len, char *out,
                  size_t n);

/* OUT side, in http_out.c. Same contracts as the jn_channel_def callbacks. */
int jn_http__out_check(const struct http_conf *c, const struct jn_node *node, struct jn_diag *d);
int jn_http__out_init(struct jn_channel *ch, struct jn_err *err);
int jn_http__out_start(struct jn_channel *ch, struct jn_err *err);
void jn_http__out_send(struct jn_channel *ch, struct jn_delivery *d);
void jn_http__out_stop(struct jn_channel *ch);
void jn_http__out_destroy(struct jn_channel *ch);

#endif
