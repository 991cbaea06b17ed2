/*
 * jn_tls: the one `tls:` option sub-table of every channel and listener that speaks TLS, and
 * the OpenSSL contexts built from it (issue 16; the engine owns the network edge, issue 13).
 *
 * Modelled on Fluent Bit's flb_tls (one tls.* option set, one context builder, used by every
 * plugin's upstream and downstream) and nginx's ssl_* directives (ssl_verify_client,
 * ssl_protocols, ssl_ciphers). The same table is a SUB option of HTTP IN/OUT, MLLP IN/OUT and
 * junction.admin_tls; docs/security.md documents it once.
 *
 * A built context (struct jn_tls) is either a server's or a client's. It owns an SSL_CTX that
 * jn_tls_reload may replace: connections made after a reload use the new one; open ones keep
 * theirs (each SSL holds a reference to the SSL_CTX it was made from). The allowed_peers list
 * is checked inside the handshake (the verify callback, depth 0), so a peer that is not
 * allowed never gets a byte of the protocol through, on servers and clients alike.
 *
 * Threads: build, reload and free on the loop thread; the SSL objects are used on it too.
 */
#ifndef JN_TLS_H
#define JN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "jn_err.h"
#include "jn_opt.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct x509_st X509;

enum { JN_TLS_VERIFY_AUTO = 0, JN_TLS_VERIFY_FALSE = 1, JN_TLS_VERIFY_TRUE = 2 };
enum { JN_TLS_V10 = 0, JN_TLS_V11 = 1, JN_TLS_V12 = 2, JN_TLS_V13 = 3 };

/* The `tls:` sub-table (jn_tls_opts). All strings owned by the conf (jn_opt_free). */
struct jn_tls_conf {
    bool enabled;                    /* TLS without a cert (a client that only verifies) */
    char *cert;                      /* PEM certificate (chain) */
    char *key;                       /* PEM private key; NULL: in cert */
    char *key_password;              /* secret */
    char *ca;                        /* PEM file or a folder (c_rehash'd) of CAs */
    int verify_peer;                 /* JN_TLS_VERIFY_*: auto = servers false, clients true */
    struct jn_strlist allowed_peers; /* CN, SAN DNS, SAN URI or sha256:<hex> */
    int min_version;                 /* JN_TLS_V* (1.0 and 1.1 refused by the table) */
    char *ciphers;                   /* TLS 1.2 cipher list (OpenSSL syntax) */
    char *ciphersuites;              /* TLS 1.3 suites; NULL: OpenSSL's */
    char *server_name;               /* clients: SNI and the name checked */
};
extern const struct jn_opt jn_tls_opts[];

/* The `ciphers` default (Mozilla "intermediate": forward-secret AEAD only), for contexts built
 * without the option table (junction ctl). */
#define JN_TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"

enum jn_tls_role { JN_TLS_SERVER = 0, JN_TLS_CLIENT = 1 };

/* Whether the conf turns TLS on: enabled, or a cert given. (HTTP OUT also turns it on with an
 * https:// url.) */
int jn_tls_on(const struct jn_tls_conf *c);

/*
 * Cross-field check for `junction check`: c is the conf, node the map holding it under key
 * ("tls", "admin_tls"; nothing is checked when the key is absent), what the prefix ("http"). tls_on says whether the owner
 * will use TLS (jn_tls_on, or an https url). Reports in d and returns the number of errors:
 * options given while TLS is off, a server without cert, key without cert, verify_peer without
 * ca on a server, verify_peer: false with allowed_peers; then the files are loaded as
 * jn_tls_new would (a missing file, a wrong key_password, a key of another cert).
 */
int jn_tls_check(const struct jn_tls_conf *c, enum jn_tls_role role, int tls_on,
                 const struct jn_node *node, const char *key, const char *what,
                 struct jn_diag *d);

struct jn_tls;

/*
 * Builds a context from c (borrowed during the call; what is needed is copied). what names the
 * owner in errors and logs ("channel 'lab_in'"). Returns it, or NULL with err: a file that
 * cannot be read or parsed is named with OpenSSL's reason (JN_EINVAL), JN_ENOMEM.
 */
struct jn_tls *jn_tls_new(const struct jn_tls_conf *c, enum jn_tls_role role, const char *what,
                          struct jn_err *err);
void jn_tls_free(struct jn_tls *t); /* NULL is a no-op; open SSLs keep their SSL_CTX */

/* The current context, for SSL_new. Borrowed until the next jn_tls_reload or jn_tls_free. */
SSL_CTX *jn_tls_ctx(const struct jn_tls *t);

/*
 * A client connection's SSL: SNI and the checked name are server_name when set, else host
 * (an IP literal is checked as an IP and sends no SNI). Returns a new SSL or NULL (ENOMEM).
 */
SSL *jn_tls_client_ssl(const struct jn_tls *t, const char *host);

/*
 * Reads the certificate files again and swaps the context in; 0, or an error in err with the
 * old context kept. Loop thread.
 */
int jn_tls_reload(struct jn_tls *t, struct jn_err *err);
/* Reloads every live context (SIGHUP); logs each result. Returns the number that failed. */
int jn_tls_reload_all(void);
/* Reloads the live contexts whose files changed since they were read (size, inode or time);
 * logs each result, a refused one once per change. Returns the number that failed. The broker
 * calls it every JN_TLS_WATCH_MS. */
int jn_tls_reload_changed(void);
#define JN_TLS_WATCH_MS 2000

/*
 * The peer's identity as one string: "CN=<common name> sha256:<64 hex digits>" (CN= empty
 * when the subject has none). Returns 1 with out filled, 0 when the peer sent no certificate.
 */
int jn_tls_peer_id(SSL *ssl, char *out, size_t n);
#define JN_TLS_PEER_ID_MAX 400

/*
 * A server refused a handshake: counts it and logs "peer <peer>: TLS handshake refused:
 * <reason>" at warn under prefix, the reason from jn_tls_reason(ssl, err) or else fallback.
 * A peer that closed without sending a byte (a port probe, a load balancer's check) is logged
 * at debug only and not counted; pass ssl NULL for a refusal of one's own (a timeout). At most 20 warn lines per 10 s per context; the rest are counted and the next
 * line says how many were not shown. peer may be NULL.
 */
void jn_tls_refused(struct jn_tls *t, const char *prefix, const char *peer, SSL *ssl,
                    unsigned long err, const char *fallback);
/* Handshakes refused so far (jn_tls_refused, probes excluded). */
unsigned long long jn_tls_refused_count(const struct jn_tls *t);

/* Whether cert matches one of allowed (CN, SAN DNS, SAN URI or sha256:<hex>); 1 or 0. */
int jn_tls_peer_allowed(X509 *cert, const struct jn_strlist *allowed);

/*
 * Why a handshake failed, for a log line or a delivery reason: the verify result when the
 * peer's certificate failed ("certificate verify failed: unable to get local issuer
 * certificate"), else OpenSSL's first queued error (err, 0: take it from the thread's queue).
 * Drains the thread's error queue. Writes "" when nothing is known.
 */
void jn_tls_reason(SSL *ssl, unsigned long err, char *out, size_t n);

#endif
