/*
 * http channel internals shared by channels/http.c (the def, the IN server) and
 * channels/http_out.c (the OUT client).
 */
#ifndef JN_HTTP_INT_H
#define JN_HTTP_INT_H

#include "jn_auth.h"
#include "jn_channel.h"
#include "jn_listener.h"

struct evbuffer;
struct evconnlistener;
struct evkeyvalq;

/* sign: (OUT) Standard Webhooks request signatures. */
struct http_sign_conf {
    int scheme;    /* 0 = standard-webhooks */
    char *secret;  /* whsec_<base64>; NULL = off */
};

/* IN: `respond:` (request-reply): the caller waits for the answer of OUT channel `from`. */
struct http_respond_conf {
    char *from;       /* an OUT channel's name, or NULL: answer 202 at the commit as usual */
    long long timeout; /* ms: past this, 504 with the message id (it stays accepted) */
    struct jn_strlist response_via; /* services the answer goes through (jn_ingest_reply_via) */
};

struct http_conf {
    /* IN */
    char *listen;                    /* "127.0.0.1:8080" */
    char *path;                      /* "/ingest" */
    unsigned long long max_message;  /* bytes */
    unsigned long long max_headers;  /* bytes: request line + headers (jn_httpframe) */
    long long read_timeout;          /* ms */
    long long request_timeout;       /* ms: a whole request must arrive within this */
    long long max_connections;       /* open connections at most (or net.max_connections) */
    struct jn_net_conf net;          /* net: the listener options (jn_listener.h) */
    struct jn_sublist auth;          /* auth: struct jn_auth_conf methods (jn_auth.h) */
    struct http_respond_conf respond; /* respond: from: (request-reply) */
    /* both */
    struct jn_tls_conf tls;          /* tls: (jn_tls.h); OUT also speaks TLS to https:// */
    /* OUT */
    char *url;                       /* http://host:port/path */
    char *method;                    /* POST | PUT (checked in http.c) */
    struct jn_strmap headers;        /* name -> template */
    long long timeout;               /* ms, per request */
    char *sign_secret;               /* HMAC-SHA256 request signing; NULL = off */
    struct http_sign_conf sign;      /* Standard Webhooks signing */
};

/* "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>" into out (128 bytes suffice). */
void jn_http_sign(const char *secret, long long t, const void *body, size_t len, char *out,
                  size_t n);

/*
 * IN side, in http.c: the message for one request, as the server builds it. The body is copied;
 * every request header becomes a message header (order and case kept), then http-path,
 * http-query (when query is not NULL) and http-peer (when peer is not NULL). All arguments are
 * borrowed. Returns 0 with *out holding a new message with one reference (no id yet), or
 * JN_ENOMEM with *out NULL and nothing left allocated. Any thread.
 */
int jn_http__build_msg(const char *channel, struct evbuffer *body, const struct evkeyvalq *headers,
                       const char *path, const char *query, const char *peer, struct jn_msg **out);

/*
 * IN side, for tests and fuzz targets: what start() does after it has bound the listening
 * socket, on a listener the caller made (e.g. on 127.0.0.1:0) with jn_listener_new, accept
 * NULL and JN_LISTENER_WAIT. The channel must be an initialised IN instance on ch->base; takes
 * ownership of lst, also on failure (destroy() frees it with the rest). 0 or JN_E* with err.
 * Loop thread.
 */
int jn_http__in_start_on(struct jn_channel *ch, struct jn_listener *lst, struct jn_err *err);
/* Connections the IN side holds open (accepted, not yet closed). Loop thread. */
size_t jn_http__in_open(const struct jn_channel *ch);

/* OUT side, in http_out.c (the jn_out_def of jn_channel_http). Same contracts as its
 * callbacks. */
int jn_http__out_check(const struct http_conf *c, const struct jn_node *node, struct jn_diag *d);
int jn_http__out_init(struct jn_channel *ch, struct jn_err *err);
int jn_http__out_start(struct jn_channel *ch, struct jn_err *err);
void jn_http__out_send(struct jn_channel *ch, struct jn_delivery *d);
void jn_http__out_stop(struct jn_channel *ch);
void jn_http__out_destroy(struct jn_channel *ch);

#endif
