/*
 * Unit tests of jn_tls without a network: certificates are made here with OpenSSL's API (a CA
 * and leaves signed by it, written as PEM into a temp dir), and handshakes run between two SSLs
 * over a memory BIO pair. Checked: allowed_peers matching (CN, SAN DNS case-insensitively,
 * SAN URI exactly, sha256 with or without colons, in any case), the peer identity string, a
 * peer the list does not name refused inside the handshake with the reason saying so, a client
 * that checks the server's name, and a reload that fails keeping the running context.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "jn_test.h"
#include "jn_tls.h"

static char dir[64];

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

static void add_ext(X509 *issuer, X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    CHECK(ext != NULL);
    if (ext != NULL) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
}

/* A certificate for key, named cn, signed by ca/ca_key (self-signed when ca is NULL). */
static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *ca, EVP_PKEY *ca_key,
                      long serial)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
    X509_NAME_free(name);
    if (ca == NULL) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    if (san != NULL) {
        add_ext(ca ? ca : x, x, NID_subject_alt_name, san);
    }
    CHECK(X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0);
    return x;
}

static char *write_pem(const char *name, X509 *x, EVP_PKEY *key)
{
    static char paths[8][128];
    static int n;
    char *p = paths[n++ % 8];
    FILE *f;

    snprintf(p, 128, "%s/%s", dir, name);
    f = fopen(p, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        if (x != NULL) {
            PEM_write_X509(f, x);
        }
        if (key != NULL) {
            PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
        }
        fclose(f);
    }
    return p;
}

static void fp_hex(X509 *x, char *out)
{
    unsigned char md[32];
    unsigned int n = 0;

    X509_digest(x, EVP_sha256(), md, &n);
    for (unsigned int i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", md[i]);
    }
}

static int allowed1(X509 *x, const char *entry)
{
    char *v[1] = {(char *)entry};
    struct jn_strlist l = {v, 1};

    return jn_tls_peer_allowed(x, &l);
}

/* Runs a handshake between a client and a server SSL over a BIO pair: 1 when both finished. */
static int handshake(SSL *c, SSL *s)
{
    BIO *bc = NULL, *bs = NULL;
    int cdone = 0, sdone = 0;

    BIO_new_bio_pair(&bc, 0, &bs, 0);
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        int rc = SSL_do_handshake(c);
        int rs;
        if (rc == 1) {
            cdone = 1;
        } else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) {
            return 0;
        }
        rs = SSL_do_handshake(s);
        if (rs == 1) {
            sdone = 1;
        } else if (SSL_get_error(s, rs) != SSL_ERROR_WANT_READ) {
            return 0;
        }
    }
    /* TLS 1.3: the server checks the client's certificate after the client is done; one read
     * on the client surfaces the server's alert, if any. */
    if (cdone && sdone) {
        char b;
        SSL_read(c, &b, 0);
    }
    return cdone && sdone;
}

int main(void)
{
    EVP_PKEY *ca_key = new_key(), *srv_key = new_key(), *cli_key = new_key();
    X509 *ca = new_cert(ca_key, "Unit CA", NULL, NULL, NULL, 1);
    X509 *srv = new_cert(srv_key, "server", "DNS:localhost", ca, ca_key, 2);
    X509 *cli = new_cert(cli_key, "client1", "DNS:Host.Example,URI:urn:jn:client1", ca, ca_key,
                         3);
    char fp[65], colons[100], id[JN_TLS_PEER_ID_MAX], want[JN_TLS_PEER_ID_MAX];
    struct jn_tls_conf sc = {0}, cc = {0};
    struct jn_tls *st, *ct;
    struct jn_err err = {0};
    char *srv_pem, *cli_pem, *ca_pem;
    SSL_CTX *before;
    SSL *c, *s;

    snprintf(dir, sizeof(dir), "/tmp/jn-ut-tls-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);

    /* ---- allowed_peers matching ---- */
    fp_hex(cli, fp);
    for (int i = 0, o = 0; i < 64; i += 2) {
        o += sprintf(colons + o, "%s%c%c", i ? ":" : "", fp[i] - (fp[i] >= 'a' ? 32 : 0),
                     fp[i + 1] - (fp[i + 1] >= 'a' ? 32 : 0));
    }
    CHECK(allowed1(cli, "client1"));
    CHECK(!allowed1(cli, "Client1"));            /* a CN is exact */
    CHECK(allowed1(cli, "host.example"));        /* a DNS name is not case-sensitive */
    CHECK(allowed1(cli, "urn:jn:client1"));
    CHECK(!allowed1(cli, "URN:jn:client1"));     /* a URI is exact */
    CHECK(!allowed1(cli, "client"));
    {
        char e[120];
        snprintf(e, sizeof(e), "sha256:%s", fp);
        CHECK(allowed1(cli, e));
        snprintf(e, sizeof(e), "SHA256:%s", colons);
        CHECK(allowed1(cli, e));                 /* colons and upper case, as openssl prints */
        e[strlen(e) - 1] = e[strlen(e) - 1] == '0' ? '1' : '0';
        CHECK(!allowed1(cli, e));                /* one digit off */
        snprintf(e, sizeof(e), "sha256:%.62s", fp);
        CHECK(!allowed1(cli, e));                /* too short */
    }
    {
        struct jn_strlist none = {NULL, 0};
        CHECK(jn_tls_peer_allowed(cli, &none));  /* empty: any the CA signed */
        CHECK(!jn_tls_peer_allowed(NULL, &none)); /* but there must be a certificate */
    }

    /* ---- a handshake with a client certificate ---- */
    srv_pem = write_pem("server.pem", srv, srv_key);
    cli_pem = write_pem("client.pem", cli, cli_key);
    ca_pem = write_pem("ca.pem", ca, NULL);
    sc.cert = srv_pem;
    sc.ca = ca_pem;
    sc.verify_peer = JN_TLS_VERIFY_TRUE;
    sc.min_version = JN_TLS_V12;
    cc.cert = cli_pem;
    cc.ca = ca_pem;
    cc.min_version = JN_TLS_V12;
    st = jn_tls_new(&sc, JN_TLS_SERVER, "unit server", &err);
    CHECK(st != NULL);
    ct = jn_tls_new(&cc, JN_TLS_CLIENT, "unit client", &err);
    CHECK(ct != NULL);
    if (st == NULL || ct == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        TEST_MAIN_END();
    }
    c = jn_tls_client_ssl(ct, "localhost");
    s = SSL_new(jn_tls_ctx(st));
    CHECK(handshake(c, s));
    CHECK(jn_tls_peer_id(s, id, sizeof(id)) == 1);
    snprintf(want, sizeof(want), "CN=client1 sha256:%s", fp);
    CHECK_STR(id, want);
    SSL_free(c);
    SSL_free(s);

    /* ---- the client checks the server's name ---- */
    c = jn_tls_client_ssl(ct, "elsewhere.example");
    s = SSL_new(jn_tls_ctx(st));
    CHECK(!handshake(c, s));
    jn_tls_reason(c, 0, id, sizeof(id));
    CHECK_STR(id, "TLS: certificate verify failed: hostname mismatch");
    SSL_free(c);
    SSL_free(s);

    /* ---- allowed_peers refuses inside the handshake ---- */
    jn_tls_free(st);
    {
        char *v[1] = {"someone-else"};
        sc.allowed_peers.v = v;
        sc.allowed_peers.n = 1;
        st = jn_tls_new(&sc, JN_TLS_SERVER, "unit server", &err);
        sc.allowed_peers.v = NULL;
        sc.allowed_peers.n = 0;
    }
    CHECK(st != NULL);
    c = jn_tls_client_ssl(ct, "localhost");
    s = SSL_new(jn_tls_ctx(st));
    CHECK(!handshake(c, s));
    jn_tls_reason(s, 0, id, sizeof(id));
    CHECK_STR(id, "TLS: peer certificate is not in allowed_peers");
    SSL_free(c);
    SSL_free(s);

    /* ---- a failed reload keeps the running context ---- */
    before = jn_tls_ctx(st);
    {
        FILE *f = fopen(srv_pem, "w");
        CHECK(f != NULL);
        if (f) {
            fputs("garbage\n", f);
            fclose(f);
        }
    }
    CHECK(jn_tls_reload(st, &err) == JN_EINVAL);
    CHECK(strstr(err.msg, "unit server: cert: ") != NULL);
    CHECK(strstr(err.msg, srv_pem) != NULL);
    CHECK(jn_tls_ctx(st) == before);
    write_pem("server.pem", srv, srv_key);
    CHECK(jn_tls_reload(st, &err) == 0);
    CHECK(jn_tls_ctx(st) != before);
    CHECK_INT(jn_tls_reload_all(), 0);

    jn_tls_free(st);
    jn_tls_free(ct);
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(cli_key);
    unlink(srv_pem);
    unlink(cli_pem);
    unlink(ca_pem);
    rmdir(dir);
    TEST_MAIN_END();
}
