/*
 * jn_tls: the `tls:` option table and the OpenSSL contexts built from it (contract in
 * jn_tls.h). Modelled on Fluent Bit's flb_tls.c (one builder behind every plugin's tls.*
 * options) and nginx's ngx_event_openssl.c (load the files, name the file and OpenSSL's reason
 * when one is bad, keep the running context when a reload fails).
 *
 * The allowed_peers check runs in the verify callback at depth 0, after OpenSSL has checked
 * the chain, dates and (clients) the name: a peer the CA signed but the list does not name
 * fails the handshake with X509_V_ERR_APPLICATION_VERIFICATION, which jn_tls_reason turns
 * into "not in allowed_peers". The callback finds its jn_tls through the SSL_CTX's ex_data.
 *
 * Live contexts are kept in a loop-thread list so SIGHUP can reload them all (jn_tls_reload_all).
 */
#include "jn_tls.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "jn_log.h"
#include "jn_mem.h"
#include "jn_time.h"

static const char *const tls_verify_names[] = {"auto", "false", "true", NULL};
static const char *const tls_version_names[] = {"1.0", "1.1", "1.2", "1.3", NULL};

/* Mozilla's "intermediate" TLS 1.2 list: forward secrecy and AEAD only. */
#define TLS_DEFAULT_CIPHERS JN_TLS_DEFAULT_CIPHERS

static int tls__version_ok(const void *value, const struct jn_node *node, const char *what,
                           struct jn_diag *d)
{
    int v = *(const int *)value;

    if (v == JN_TLS_V10 || v == JN_TLS_V11) {
        jn_diag_add(d, &node->pos, "%s: TLS %s is refused (deprecated by RFC 8996); use 1.2 "
                    "or 1.3", what, tls_version_names[v]);
        return 1;
    }
    return 0;
}

static int tls__peers_ok(const void *value, const struct jn_node *node, const char *what,
                         struct jn_diag *d)
{
    const struct jn_strlist *l = value;
    int errs = 0;

    for (size_t i = 0; i < l->n; i++) {
        const char *s = l->v[i];
        if (strncasecmp(s, "sha256:", 7) == 0) {
            size_t hex = 0;
            int bad = 0;
            for (const char *p = s + 7; *p; p++) {
                if (isxdigit((unsigned char)*p)) {
                    hex++;
                } else if (*p != ':') {
                    bad = 1;
                }
            }
            if (bad || hex != 64) {
                jn_diag_add(d, &node->pos, "%s: '%s' is not sha256:<64 hex digits> (colons "
                            "allowed), e.g. from openssl x509 -noout -fingerprint -sha256",
                            what, s);
                errs++;
            }
        }
    }
    return errs;
}

const struct jn_opt jn_tls_opts[] = {
    JN_OPT_BOOL("enabled", "false", 0, struct jn_tls_conf, enabled,
                "Speak TLS. Implied by cert (and, for HTTP OUT, by an https:// url); set it for "
                "a client that only verifies the server."),
    JN_OPT_PATH("cert", NULL, 0, struct jn_tls_conf, cert,
                "PEM certificate, leaf first then intermediates. Required on servers; on "
                "clients it is the client certificate for mutual TLS."),
    JN_OPT_PATH("key", NULL, 0, struct jn_tls_conf, key,
                "PEM private key of cert (default: read from the cert file)."),
    JN_OPT_STR("key_password", NULL, JN_OPT_SECRET, struct jn_tls_conf, key_password,
               "Password of an encrypted key; never logged."),
    JN_OPT_PATH("ca", NULL, 0, struct jn_tls_conf, ca,
                "PEM file, or a folder prepared with c_rehash / openssl rehash, of the CAs that "
                "sign the peer's certificate. Clients without it use the system's CAs."),
    JN_OPT_ENUM("verify_peer", "auto", tls_verify_names, 0, struct jn_tls_conf, verify_peer,
                "Servers: true asks for and requires a client certificate signed by ca (mutual "
                "TLS). Clients: check the server's certificate and name. auto: false on "
                "servers (true when allowed_peers is set), true on clients."),
    JN_OPT_STRLIST("allowed_peers", NULL, 0, struct jn_tls_conf, allowed_peers,
                   "Peers allowed on top of the CA check, each a subject CN, a SAN DNS name, a "
                   "SAN URI or sha256:<hex fingerprint>; empty: any the CA signed.",
                   .validate = tls__peers_ok),
    JN_OPT_ENUM("min_version", "1.2", tls_version_names, 0, struct jn_tls_conf, min_version,
                "Oldest TLS version spoken: 1.2 or 1.3 (1.0 and 1.1 are refused).",
                .validate = tls__version_ok),
    JN_OPT_STR("ciphers", TLS_DEFAULT_CIPHERS, 0, struct jn_tls_conf, ciphers,
               "TLS 1.2 cipher list (OpenSSL syntax); the default is forward secret AEAD only."),
    JN_OPT_STR("ciphersuites", NULL, 0, struct jn_tls_conf, ciphersuites,
               "TLS 1.3 cipher suites (OpenSSL syntax); default: OpenSSL's."),
    JN_OPT_STR("server_name", NULL, 0, struct jn_tls_conf, server_name,
               "Clients: the name sent as SNI and checked in the server's certificate "
               "(default: the host of url or connect)."),
    JN_OPT_END,
};

struct jn_tls {
    struct jn_tls *next; /* live contexts, for jn_tls_reload_all */
    enum jn_tls_role role;
    SSL_CTX *ctx;
    char *what;
    char *cert, *key, *key_password, *ca, *ciphers, *ciphersuites, *server_name;
    int verify;     /* SSL_VERIFY_PEER asked */
    int min_version;
    struct jn_strlist allowed;
    unsigned long long refused;  /* jn_tls_refused */
    long long win_ms;            /* the current 10 s log window (monotonic) */
    unsigned win_lines;          /* lines logged in it */
    unsigned long long unshown;  /* refusals not logged since the last line */
    unsigned long long stamp;    /* the files as they were read (tls__stamp) */
};

#define TLS_LOG_WINDOW_MS 10000
#define TLS_LOG_LINES 20

/* Loop thread only (see the opening comment). */
static struct jn_tls *tls__live;
static int tls__idx = -1;

/* What the certificate files are now: their size, inode and change time mixed; another value
 * means one was written, replaced or removed since. A ca folder's own time covers a file added
 * to it or taken away. */
static unsigned long long tls__stamp(const struct jn_tls *t)
{
    const char *files[] = {t->cert, t->key, t->ca};
    unsigned long long s = 1469598103934665603ULL;

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct stat sb;
        unsigned long long v[4] = {0, 0, 0, 0};
        if (files[i] != NULL && stat(files[i], &sb) == 0) {
            v[0] = (unsigned long long)sb.st_size;
            v[1] = (unsigned long long)sb.st_ino;
            v[2] = (unsigned long long)sb.st_mtim.tv_sec;
            v[3] = (unsigned long long)sb.st_mtim.tv_nsec;
        }
        for (size_t k = 0; k < 4; k++) {
            s = (s ^ v[k]) * 1099511628211ULL;
        }
    }
    return s;
}

int jn_tls_on(const struct jn_tls_conf *c)
{
    return c->enabled || c->cert != NULL;
}

int jn_tls_check(const struct jn_tls_conf *c, enum jn_tls_role role, int tls_on,
                 const struct jn_node *node, const char *key, const char *what,
                 struct jn_diag *d)
{
    const struct jn_node *tn = node ? jn_node_get(node, key) : NULL;
    const struct jn_pos *pos = tn ? &tn->pos : &node->pos;
    int errs = 0;

    if (tn == NULL) {
        return 0;
    }
    if (!tls_on) {
        jn_diag_add(d, pos, "%s: %s: options are given but TLS is off; set cert (and "
                    "key) or enabled: true%s", what, key,
                    role == JN_TLS_CLIENT ? " (or use an https:// url)" : "");
        return 1;
    }
    if (role == JN_TLS_SERVER && c->cert == NULL) {
        jn_diag_add(d, pos, "%s: %s: a server needs cert (and key)", what, key);
        errs++;
    }
    if (c->key != NULL && c->cert == NULL) {
        jn_diag_add(d, pos, "%s: %s: key needs cert", what, key);
        errs++;
    }
    if (role == JN_TLS_SERVER && c->ca == NULL &&
        (c->verify_peer == JN_TLS_VERIFY_TRUE || c->allowed_peers.n > 0)) {
        jn_diag_add(d, pos, "%s: %s: verify_peer (mutual TLS) needs ca, the CA that signs "
                    "client certificates", what, key);
        errs++;
    }
    if (c->verify_peer == JN_TLS_VERIFY_FALSE && c->allowed_peers.n > 0) {
        jn_diag_add(d, pos, "%s: %s: allowed_peers needs the peer verified; remove "
                    "verify_peer: false", what, key);
        errs++;
    }
    if (role == JN_TLS_SERVER && c->server_name != NULL) {
        jn_diag_add(d, pos, "%s: %s: server_name is for clients (direction: out)", what, key);
        errs++;
    }
    if (errs == 0) {
        /* Load the files now, so a missing file, a wrong key_password or a key of another
         * certificate is a check error at the tls block rather than a failed start. */
        struct jn_err err = {0};
        char prefix[128];
        struct jn_tls *t;
        snprintf(prefix, sizeof(prefix), "%s: %s", what, key);
        t = jn_tls_new(c, role, prefix, &err);
        if (t == NULL) {
            jn_diag_add(d, pos, "%s", err.msg);
            errs++;
        }
        jn_tls_free(t);
    }
    return errs;
}

/* OpenSSL's reason for the oldest queued error (the root cause), then clears the queue. */
static void tls__ossl(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    if (e == 0) {
        snprintf(out, n, "unknown error");
    } else if (r != NULL) {
        snprintf(out, n, "%s", r);
    } else {
        ERR_error_string_n(e, out, n);
    }
    ERR_clear_error();
}

static int tls__pw_cb(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    size_t n = pw ? strlen(pw) : 0;

    (void)rwflag;
    if (pw == NULL || size <= 0 || n > (size_t)size) {
        return 0; /* no password: fail, never prompt on a terminal */
    }
    memcpy(buf, pw, n);
    return (int)n;
}

/* A readable file (or folder, for ca): 0, or the error set naming it. */
static int tls__readable(const char *what, const char *opt, const char *path, struct jn_err *err)
{
    if (access(path, R_OK) != 0) {
        return jn_err_set(err, JN_EINVAL, "%s: %s: cannot read %s: %s", what, opt, path,
                          strerror(errno));
    }
    return 0;
}

static int tls__verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct jn_tls *t = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls__idx) : NULL;

    if (!ok || t == NULL || t->allowed.n == 0 || X509_STORE_CTX_get_error_depth(x) != 0) {
        return ok;
    }
    if (jn_tls_peer_allowed(X509_STORE_CTX_get_current_cert(x), &t->allowed)) {
        return 1;
    }
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* A new SSL_CTX from t's settings, or NULL with err naming the file and OpenSSL's reason. */
static SSL_CTX *tls__build(const struct jn_tls *t, struct jn_err *err)
{
    SSL_CTX *ctx;
    char why[256];
    int rc;

    ERR_clear_error();
    ctx = SSL_CTX_new(t->role == JN_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        jn_err_set(err, JN_ENOMEM, "%s: cannot create a TLS context", t->what);
        return NULL;
    }
    SSL_CTX_set_ex_data(ctx, tls__idx, (void *)t);
    SSL_CTX_set_min_proto_version(ctx, t->min_version == JN_TLS_V13 ? TLS1_3_VERSION
                                                                    : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 (t->role == JN_TLS_SERVER ? SSL_OP_CIPHER_SERVER_PREFERENCE
                                                           : 0));
    if (t->ciphers && SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        tls__ossl(why, sizeof(why));
        jn_err_set(err, JN_EINVAL, "%s: ciphers: '%s': %s", t->what, t->ciphers, why);
        goto fail;
    }
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        tls__ossl(why, sizeof(why));
        jn_err_set(err, JN_EINVAL, "%s: ciphersuites: '%s': %s", t->what,
                   t->ciphersuites, why);
        goto fail;
    }
    if (t->cert) {
        const char *key = t->key ? t->key : t->cert;
        if (tls__readable(t->what, "cert", t->cert, err) != 0 ||
            (t->key && tls__readable(t->what, "key", t->key, err) != 0)) {
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
            tls__ossl(why, sizeof(why));
            jn_err_set(err, JN_EINVAL, "%s: cert: %s: %s", t->what, t->cert, why);
            goto fail;
        }
        SSL_CTX_set_default_passwd_cb(ctx, tls__pw_cb);
        SSL_CTX_set_default_passwd_cb_userdata(ctx, t->key_password);
        rc = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
        SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
        if (rc != 1) {
            unsigned long e = ERR_peek_error();
            int mismatch = ERR_GET_LIB(e) == ERR_LIB_X509 &&
                           ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
            tls__ossl(why, sizeof(why));
            if (mismatch) {
                jn_err_set(err, JN_EINVAL, "%s: key: %s does not belong to cert %s: %s",
                           t->what, key, t->cert, why);
            } else {
                jn_err_set(err, JN_EINVAL, "%s: key: %s: %s%s", t->what, key, why,
                           t->key_password ? "" : " (an encrypted key needs key_password)");
            }
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            tls__ossl(why, sizeof(why));
            jn_err_set(err, JN_EINVAL, "%s: key: %s does not belong to cert %s: %s",
                       t->what, key, t->cert, why);
            goto fail;
        }
    }
    if (t->ca) {
        struct stat st;
        int dir;
        if (tls__readable(t->what, "ca", t->ca, err) != 0) {
            goto fail;
        }
        dir = stat(t->ca, &st) == 0 && S_ISDIR(st.st_mode);
        if (SSL_CTX_load_verify_locations(ctx, dir ? NULL : t->ca, dir ? t->ca : NULL) != 1) {
            tls__ossl(why, sizeof(why));
            jn_err_set(err, JN_EINVAL, "%s: ca: %s: %s", t->what, t->ca, why);
            goto fail;
        }
        if (t->role == JN_TLS_SERVER && !dir) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca);
            if (names != NULL) {
                SSL_CTX_set_client_CA_list(ctx, names);
            }
        }
    } else if (t->role == JN_TLS_CLIENT && t->verify &&
               SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls__ossl(why, sizeof(why));
        jn_err_set(err, JN_EIO, "%s: cannot load the system's CA certificates: %s",
                   t->what, why);
        goto fail;
    }
    if (t->role == JN_TLS_SERVER) {
        /* DHE suites of the default list use the RFC 7919 groups sized to the key. */
        SSL_CTX_set_dh_auto(ctx, 1);
        /* Needed for session resumption once client certificates are asked for. */
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"junction", 8);
        SSL_CTX_set_verify(ctx, t->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                          : SSL_VERIFY_NONE,
                           t->verify ? tls__verify_cb : NULL);
    } else {
        SSL_CTX_set_verify(ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                           t->verify ? tls__verify_cb : NULL);
    }
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

static int tls__dup(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL) {
        return 0;
    }
    *dst = jn_strdup(src);
    return *dst ? 0 : -1;
}

struct jn_tls *jn_tls_new(const struct jn_tls_conf *c, enum jn_tls_role role, const char *what,
                          struct jn_err *err)
{
    struct jn_tls *t;
    int bad = 0;

    if (tls__idx < 0) {
        tls__idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (tls__idx < 0) {
            jn_err_set(err, JN_ENOMEM, "%s: cannot set up OpenSSL", what);
            return NULL;
        }
    }
    t = jn_calloc(1, sizeof(*t));
    if (t == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    t->role = role;
    t->min_version = c->min_version;
    if (role == JN_TLS_SERVER) {
        t->verify = c->verify_peer == JN_TLS_VERIFY_TRUE ||
                    (c->verify_peer == JN_TLS_VERIFY_AUTO && c->allowed_peers.n > 0);
    } else {
        t->verify = c->verify_peer != JN_TLS_VERIFY_FALSE;
    }
    bad |= tls__dup(&t->what, what ? what : "tls");
    bad |= tls__dup(&t->cert, c->cert);
    bad |= tls__dup(&t->key, c->key);
    bad |= tls__dup(&t->key_password, c->key_password);
    bad |= tls__dup(&t->ca, c->ca);
    bad |= tls__dup(&t->ciphers, c->ciphers);
    bad |= tls__dup(&t->ciphersuites, c->ciphersuites);
    bad |= tls__dup(&t->server_name, c->server_name);
    if (!bad && c->allowed_peers.n > 0) {
        t->allowed.v = jn_calloc(c->allowed_peers.n, sizeof(char *));
        bad |= t->allowed.v == NULL;
        for (size_t i = 0; !bad && i < c->allowed_peers.n; i++) {
            bad |= tls__dup(&t->allowed.v[i], c->allowed_peers.v[i]);
            t->allowed.n += t->allowed.v[i] != NULL;
        }
    }
    if (bad) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        jn_tls_free(t);
        return NULL;
    }
    t->stamp = tls__stamp(t); /* before reading: a write during the read is seen next time */
    t->ctx = tls__build(t, err);
    if (t->ctx == NULL) {
        jn_tls_free(t);
        return NULL;
    }
    t->next = tls__live;
    tls__live = t;
    return t;
}

void jn_tls_free(struct jn_tls *t)
{
    struct jn_tls **pp;

    if (t == NULL) {
        return;
    }
    for (pp = &tls__live; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    if (t->ctx) {
        /* Open SSLs keep it alive; they must not run a handshake after this. */
        SSL_CTX_set_ex_data(t->ctx, tls__idx, NULL);
        SSL_CTX_free(t->ctx);
    }
    for (size_t i = 0; i < t->allowed.n; i++) {
        jn_free(t->allowed.v[i]);
    }
    jn_free(t->allowed.v);
    if (t->key_password) {
        OPENSSL_cleanse(t->key_password, strlen(t->key_password));
    }
    jn_free(t->what);
    jn_free(t->cert);
    jn_free(t->key);
    jn_free(t->key_password);
    jn_free(t->ca);
    jn_free(t->ciphers);
    jn_free(t->ciphersuites);
    jn_free(t->server_name);
    jn_free(t);
}

SSL_CTX *jn_tls_ctx(const struct jn_tls *t)
{
    return t->ctx;
}

static int tls__is_ip(const char *s)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

SSL *jn_tls_client_ssl(const struct jn_tls *t, const char *host)
{
    const char *name = t->server_name ? t->server_name : host;
    SSL *ssl = SSL_new(t->ctx);
    int ok;

    if (ssl == NULL) {
        return NULL;
    }
    if (tls__is_ip(name)) {
        /* No SNI for an address (RFC 6066); the certificate must name the IP. */
        ok = !t->verify || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    } else {
        ok = SSL_set_tlsext_host_name(ssl, name) == 1 && (!t->verify || SSL_set1_host(ssl, name)
                                                                            == 1);
    }
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int jn_tls_reload(struct jn_tls *t, struct jn_err *err)
{
    unsigned long long stamp = tls__stamp(t);
    SSL_CTX *ctx = tls__build(t, err);

    t->stamp = stamp; /* also when refused: the next try is for the next change */
    if (ctx == NULL) {
        return err->code;
    }
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}

int jn_tls_reload_changed(void)
{
    int failed = 0;

    for (struct jn_tls *t = tls__live; t != NULL; t = t->next) {
        struct jn_err err = {0};
        if (tls__stamp(t) == t->stamp) {
            continue;
        }
        if (jn_tls_reload(t, &err) != 0) {
            jn_log(JN_LOG_ERROR, "%s (the files changed on disk); keeping the certificates in use",
                   err.msg);
            failed++;
        } else {
            jn_log(JN_LOG_INFO, "%s: certificate files changed on disk: reloaded", t->what);
        }
    }
    return failed;
}

int jn_tls_reload_all(void)
{
    int failed = 0;

    for (struct jn_tls *t = tls__live; t != NULL; t = t->next) {
        struct jn_err err = {0};
        if (jn_tls_reload(t, &err) != 0) {
            jn_log(JN_LOG_ERROR, "%s; keeping the certificates in use", err.msg);
            failed++;
        } else {
            jn_log(JN_LOG_INFO, "%s: certificates reloaded", t->what);
        }
    }
    return failed;
}

int jn_tls_peer_id(SSL *ssl, char *out, size_t n)
{
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char cn[256] = "";
    size_t o;

    if (n > 0) {
        out[0] = '\0';
    }
    if (cert == NULL || n == 0) {
        return 0;
    }
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                  (int)sizeof(cn)) < 0) {
        cn[0] = '\0';
    }
    /* Nothing unprintable reaches a header or a log line. */
    for (char *p = cn; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f) {
            *p = '?';
        }
    }
    X509_digest(cert, EVP_sha256(), md, &mdlen);
    o = (size_t)snprintf(out, n, "CN=%s sha256:", cn);
    for (unsigned int i = 0; i < mdlen && o + 2 < n; i++) {
        o += (size_t)snprintf(out + o, n - o, "%02x", md[i]);
    }
    return 1;
}

/* Hex digits of s (colons skipped) equal to the digest? */
static int tls__fp_eq(const char *s, const unsigned char *md, unsigned int mdlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned int i = 0, half = 0;

    for (; *s; s++) {
        int c = tolower((unsigned char)*s);
        if (c == ':') {
            continue;
        }
        if (i >= mdlen || c != hex[half ? md[i] & 15 : md[i] >> 4]) {
            return 0;
        }
        if (half) {
            i++;
        }
        half ^= 1;
    }
    return i == mdlen && half == 0;
}

int jn_tls_peer_allowed(X509 *cert, const struct jn_strlist *allowed)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char cn[256] = "";
    GENERAL_NAMES *san;
    int hit = 0;

    if (cert == NULL) {
        return 0;
    }
    if (allowed->n == 0) {
        return 1;
    }
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                  (int)sizeof(cn)) < 0) {
        cn[0] = '\0';
    }
    X509_digest(cert, EVP_sha256(), md, &mdlen);
    san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; i < allowed->n && !hit; i++) {
        const char *a = allowed->v[i];
        if (strncasecmp(a, "sha256:", 7) == 0) {
            hit = tls__fp_eq(a + 7, md, mdlen);
            continue;
        }
        hit = cn[0] != '\0' && strcmp(a, cn) == 0;
        for (int k = 0; !hit && san != NULL && k < sk_GENERAL_NAME_num(san); k++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, k);
            const ASN1_IA5STRING *s;
            size_t len = strlen(a);
            if (g->type == GEN_DNS) {
                s = g->d.dNSName;
            } else if (g->type == GEN_URI) {
                s = g->d.uniformResourceIdentifier;
            } else {
                continue;
            }
            if ((size_t)ASN1_STRING_length(s) == len &&
                (g->type == GEN_DNS ? strncasecmp(a, (const char *)ASN1_STRING_get0_data(s), len)
                                    : memcmp(a, ASN1_STRING_get0_data(s), len)) == 0) {
                hit = 1;
            }
        }
    }
    GENERAL_NAMES_free(san);
    return hit;
}

void jn_tls_reason(SSL *ssl, unsigned long err, char *out, size_t n)
{
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

    out[0] = '\0';
    if (err != 0 && ERR_GET_LIB(err) == 0) {
        /* libevent's bufferevent_get_openssl_error also reports SSL_get_error codes and
         * errno values (a reset, a close) this way: no OpenSSL reason, the caller's text is
         * better. */
        err = 0;
    }
    if (err == 0) {
        err = ERR_peek_error();
    }
    if (vr == X509_V_ERR_APPLICATION_VERIFICATION) {
        snprintf(out, n, "TLS: peer certificate is not in allowed_peers");
    } else if (vr != X509_V_OK) {
        snprintf(out, n, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    } else if (err != 0) {
        const char *r = ERR_reason_error_string(err);
        if (r != NULL) {
            snprintf(out, n, "TLS: %s", r);
        } else {
            char s[256];
            ERR_error_string_n(err, s, sizeof(s));
            snprintf(out, n, "TLS: %s", s);
        }
    }
    ERR_clear_error();
}

void jn_tls_refused(struct jn_tls *t, const char *prefix, const char *peer, SSL *ssl,
                    unsigned long err, const char *fallback)
{
    char why[300];
    long long now;

    if (ssl != NULL && SSL_get_rbio(ssl) != NULL && BIO_number_read(SSL_get_rbio(ssl)) == 0) {
        ERR_clear_error();
        jn_log_p(JN_LOG_DEBUG, prefix, "peer %s: closed before sending a TLS hello",
                 peer ? peer : "?");
        return;
    }
    jn_tls_reason(ssl, err, why, sizeof(why));
    t->refused++;
    now = jn_mono_ms();
    if (t->win_ms == 0 || now - t->win_ms >= TLS_LOG_WINDOW_MS) {
        t->win_ms = now;
        t->win_lines = 0;
    }
    if (t->win_lines >= TLS_LOG_LINES) {
        t->unshown++;
        return;
    }
    t->win_lines++;
    if (t->unshown > 0) {
        jn_log_p(JN_LOG_WARN, prefix, "peer %s: TLS handshake refused: %s (%llu so far; %llu "
                 "more not logged)", peer ? peer : "?", why[0] ? why : fallback ? fallback : "TLS: "
                 "connection closed during the handshake", t->refused, t->unshown);
        t->unshown = 0;
    } else {
        jn_log_p(JN_LOG_WARN, prefix, "peer %s: TLS handshake refused: %s (%llu so far)",
                 peer ? peer : "?", why[0] ? why : fallback ? fallback : "TLS: connection "
                 "closed during the handshake", t->refused);
    }
}

unsigned long long jn_tls_refused_count(const struct jn_tls *t)
{
    return t ? t->refused : 0;
}
