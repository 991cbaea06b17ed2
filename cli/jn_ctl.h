/*
 * jn_ctl: `junction ctl`, a client of the admin API (docs/admin-api.md) for people and scripts:
 * human tables by default, --json for the API's own answer. Exit 0, 1 (the API could not be
 * reached, or answered an error, printed), 2 (usage).
 *
 * A plain blocking HTTP/1.0 client over one TCP connection to the admin listener (loopback by
 * default): the command line has no loop to share and one request to make. Model: redis-cli and
 * mosquitto_ctrl (a thin client; the broker does the work). Over https (an https:// address,
 * or a config with junction.admin_tls) the same request goes through OpenSSL on that blocking
 * socket, with a client context from jn_tls (the same builder as every TLS client of the broker:
 * TLS 1.2+, the server's chain and name verified against --ca or the system's CAs, --cert/--key
 * shown when the admin asks for a client certificate).
 */
#ifndef JN_CTL_H
#define JN_CTL_H

#define JN_CTL_TO_MAX 16

struct jn_ctl_opts {
    const char *admin;      /* host:port or http://host:port (the config's admin, or default) */
    const char *token;      /* NULL: none */
    int tls;                /* https: also implied by an https:// admin */
    const char *ca;         /* https: CAs that sign the admin's certificate; NULL: the system's */
    const char *cert, *key; /* https: client certificate and key (mTLS); NULL: none */
    const char *server_name; /* https: the name checked; NULL: the host of admin */
    int json;               /* print the API's JSON as it came */
    /* ctl messages filters and ctl replay's options (NULL / 0: not given) */
    const char *since, *until, *channel, *status, *limit, *destination;
    const char *route, *header, *grep; /* header: NAME=VALUE */
    const char *to[JN_CTL_TO_MAX];     /* ctl replay --to, each an OUT channel */
    int nto;
    int dry_run;
    int kept;               /* ctl replay --kept: from the kept messages, not the dead letters */
    const char *count, *out; /* ctl record --count N --out FILE */
};

/* One request to the admin listener (send_body: what to send, or NULL); 0 with the status and
 * the answer's body (owned by the caller), or -1 with why on stderr. */
struct jn_buf;
int jn_ctl_request(const struct jn_ctl_opts *o, const char *method, const char *path,
                   const char *send_body, int *status, struct jn_buf *body);

/* argv: what follows `ctl` (the verb and its arguments; options already taken out). */
int jn_ctl_main(const struct jn_ctl_opts *o, int argc, char **argv);

#endif
