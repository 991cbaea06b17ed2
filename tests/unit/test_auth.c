/*
 * Unit tests of jn_auth (no network): the Standard Webhooks test vector of the specification
 * (github.com/standard-webhooks/standard-webhooks, the reference libraries' tests), a tampered
 * body, an old and a future timestamp, a replayed id (and one forgotten after a 503), a wrong
 * secret, secret rotation; bearer good/bad/missing; basic with a SHA-512-crypt hash as
 * `openssl passwd -6` makes it; the header parsers on edge cases; the `auth:` list's check;
 * and ${file:} substitution in YAML values.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jn_auth.h"
#include "jn_test.h"
#include "jn_yaml.h"

struct wrap {
    struct jn_sublist auth;
};
static const struct jn_opt wopts[] = {
    JN_OPT_SUBLIST("auth", jn_auth_opts, struct jn_auth_conf, 0, struct wrap, auth, "test"),
    JN_OPT_END,
};

/* The spec's vector. */
#define SW_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SW_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SW_TS 1614265330
#define SW_BODY "{\"test\": 2432232314}"
#define SW_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* `openssl passwd -6 -salt abc secret` */
#define ALICE_HASH "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"

#define TOKEN "tok-0123456789abcdef"

struct parsed {
    struct jn_node *root;
    struct jn_diag d;
    struct wrap w;
    int errs;
};

static void parse(const char *text, struct parsed *p)
{
    memset(p, 0, sizeof(*p));
    jn_diag_init(&p->d);
    p->root = jn_yaml_load_buf("t.yaml", text, strlen(text), &p->d);
    CHECK(p->root != NULL);
    p->errs = p->root ? jn_opt_parse(wopts, p->root, &p->w, "http", 0, NULL, p->root, &p->d) : 1;
    if (p->errs == 0) {
        p->errs = jn_auth_check(&p->w.auth, 1, p->root, "auth", "http", &p->d);
    }
}

static void parsed_free(struct parsed *p)
{
    jn_opt_free(wopts, &p->w);
    jn_node_free(p->root);
    jn_diag_free(&p->d);
}

static int has_msg(const struct parsed *p, const char *needle)
{
    for (size_t i = 0; i < p->d.n; i++) {
        if (strstr(p->d.msgs[i], needle) != NULL) {
            return 1;
        }
    }
    return 0;
}

static struct jn_auth_req sw_req(const char *id, const char *ts, const char *sig,
                                 const char *body, int64_t now)
{
    struct jn_auth_req r = {.webhook_id = id, .webhook_timestamp = ts, .webhook_signature = sig,
                            .body = body, .len = strlen(body), .now_s = now};
    return r;
}

static void test_vector(void)
{
    unsigned char key[64], mac[32];
    char hdr[64];
    long kl = jn_auth_sw_key(SW_SECRET, key);

    CHECK_INT(kl, 24);
    CHECK_INT(jn_auth_sw_mac(key, (size_t)kl, SW_ID, SW_TS, SW_BODY, strlen(SW_BODY), mac), 0);
    jn_auth_sw_header(mac, hdr, sizeof(hdr));
    CHECK_STR(hdr, SW_SIG);
}

static void test_hmac(void)
{
    struct parsed p;
    struct jn_auth *a;
    struct jn_auth_result res;
    struct jn_auth_req r;
    struct jn_err err;

    parse("auth:\n  - type: hmac\n    secrets: [\"whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==\", "
          "\"" SW_SECRET "\"]\n    tolerance: 5m\n", &p);
    CHECK_INT(p.errs, 0);
    a = jn_auth_new(&p.w.auth, "t", &err);
    CHECK(a != NULL);
    if (a == NULL) {
        parsed_free(&p);
        return;
    }
    /* The vector verifies (with the second secret: rotation). */
    r = sw_req(SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    CHECK_INT(res.method, JN_AUTH_HMAC);
    CHECK_STR(res.user, "hmac");
    /* The same id again: a replay. */
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK(strstr(res.reason, "replay") != NULL);
    /* Forgotten (the request was answered 503): the sender's retry passes. */
    jn_auth_forget(a, SW_ID);
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    jn_auth_forget(a, SW_ID);
    /* Several signatures, one good: passes; a bad one first does not matter. */
    r = sw_req(SW_ID, "1614265330",
               "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,xyz " SW_SIG, SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    jn_auth_forget(a, SW_ID);
    /* Tampered body. */
    r = sw_req(SW_ID, "1614265330", SW_SIG, "{\"test\": 2432232315}", SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK(strstr(res.reason, "no webhook-signature matches") != NULL);
    /* Timestamp changed: the signature covers it. */
    r = sw_req(SW_ID, "1614265331", SW_SIG, SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    /* Old and future timestamps (now 5 m 1 s after / before). */
    r = sw_req(SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS + 301);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK(strstr(res.reason, "tolerance") != NULL);
    r = sw_req(SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS - 301);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    /* At the edge of the tolerance: passes. */
    r = sw_req(SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS + 300);
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    /* Malformed headers. */
    r = sw_req("other", "1614265330", "v1 g0hM", SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK(strstr(res.reason, "malformed") != NULL);
    r = sw_req("other", "16142x5330", SW_SIG, SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    r = sw_req(NULL, "1614265330", SW_SIG, SW_BODY, SW_TS);
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_HMAC);
    /* Nothing presented: method none, no Bearer/Basic challenge for hmac only. */
    memset(&r, 0, sizeof(r));
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_NONE);
    CHECK_INT(res.challenges, 0);
    jn_auth_free(a);
    parsed_free(&p);

    /* A wrong secret alone: refused. */
    parse("auth:\n  - type: hmac\n    secrets: [\"whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==\"]\n",
          &p);
    CHECK_INT(p.errs, 0);
    a = jn_auth_new(&p.w.auth, "t", &err);
    r = sw_req(SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS);
    CHECK(a != NULL && jn_auth_verify(a, &r, &res) == 401);
    jn_auth_free(a);
    parsed_free(&p);
}

static void test_replay_window_bound(void)
{
    struct parsed p;
    struct jn_auth *a;
    struct jn_auth_result res;
    struct jn_err err;
    unsigned char key[64], mac[32];
    long kl = jn_auth_sw_key(SW_SECRET, key);
    char id[32], sig[64];

    parse("auth:\n  - type: hmac\n    secrets: [\"" SW_SECRET "\"]\n    replay_cache: 4\n", &p);
    CHECK_INT(p.errs, 0);
    a = jn_auth_new(&p.w.auth, "t", &err);
    CHECK(a != NULL);
    for (int i = 0; a != NULL && i < 6; i++) {
        struct jn_auth_req r;
        snprintf(id, sizeof(id), "msg_%d", i);
        jn_auth_sw_mac(key, (size_t)kl, id, SW_TS, "x", 1, mac);
        jn_auth_sw_header(mac, sig, sizeof(sig));
        r = sw_req(id, "1614265330", sig, "x", SW_TS);
        CHECK_INT(jn_auth_verify(a, &r, &res), 0);
        CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    }
    /* Expired ids are forgotten: the window moved on (2 x tolerance later the timestamp is
     * outside the tolerance anyway, so this is only about memory). */
    jn_auth_free(a);
    parsed_free(&p);
}

static void test_bearer_basic(void)
{
    struct parsed p;
    struct jn_auth *a;
    struct jn_auth_result res;
    struct jn_auth_req r;
    struct jn_err err;

    parse("auth:\n  - type: bearer\n    tokens: [\"" TOKEN "\", \"another-token-0123456\"]\n"
          "  - type: basic\n    users: { alice: \"" ALICE_HASH "\" }\n", &p);
    CHECK_INT(p.errs, 0);
    a = jn_auth_new(&p.w.auth, "t", &err);
    CHECK(a != NULL);
    if (a == NULL) {
        parsed_free(&p);
        return;
    }
    memset(&r, 0, sizeof(r));
    r.authorization = "Bearer " TOKEN;
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    CHECK_STR(res.user, "bearer");
    r.authorization = "bearer   another-token-0123456  ";
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    r.authorization = "Bearer " TOKEN "x";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_BEARER);
    CHECK(res.bearer_invalid);
    CHECK_INT(res.challenges, JN_AUTH_CHALLENGE_BEARER | JN_AUTH_CHALLENGE_BASIC);
    CHECK(strstr(res.reason, TOKEN) == NULL);
    r.authorization = NULL;
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_NONE);
    CHECK(!res.bearer_invalid);
    /* alice:secret */
    r.authorization = "Basic YWxpY2U6c2VjcmV0";
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    CHECK_STR(res.user, "alice");
    CHECK_INT(res.method, JN_AUTH_BASIC);
    /* alice:badpass: refused, the reason names the user, not the password */
    r.authorization = "Basic YWxpY2U6YmFkcGFzcw==";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_BASIC);
    CHECK(strstr(res.reason, "alice") != NULL);
    CHECK(strstr(res.reason, "badpass") == NULL);
    /* Remembered after the crypt accepted it: the same answer, also with a time later on,
     * and a wrong password is still refused. */
    r.authorization = "Basic YWxpY2U6c2VjcmV0";
    r.now_s = 1000;
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    CHECK_STR(res.user, "alice");
    r.now_s = 100000;
    CHECK_INT(jn_auth_verify(a, &r, &res), 0);
    r.authorization = "Basic YWxpY2U6YmFkcGFzcw==";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    /* bob:secret (unknown user) */
    r.authorization = "Basic Ym9iOnNlY3JldA==";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    /* Not base64, no colon. */
    r.authorization = "Basic !!!";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    r.authorization = "Basic YWxpY2U="; /* "alice" */
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    /* Another scheme: no credentials for a listed method. */
    r.authorization = "Digest x";
    CHECK_INT(jn_auth_verify(a, &r, &res), 401);
    CHECK_INT(res.method, JN_AUTH_NONE);
    jn_auth_free(a);
    parsed_free(&p);
}

static int count_sig(void *arg, const unsigned char sig[32])
{
    (*(int *)arg)++;
    return 0;
}

static void test_parsers(void)
{
    unsigned char out[64];
    const char *cred;
    size_t n;
    char u[256], pw[256];
    int calls = 0;

    CHECK_INT(jn_auth_b64_decode("", 0, out, sizeof(out)), 0);
    CHECK_INT(jn_auth_b64_decode("YQ==", 4, out, sizeof(out)), 1);
    CHECK_INT(jn_auth_b64_decode("YQ", 2, out, sizeof(out)), 1);
    CHECK_INT(jn_auth_b64_decode("YWI=", 4, out, sizeof(out)), 2);
    CHECK_INT(jn_auth_b64_decode("Y", 1, out, sizeof(out)), -1);
    CHECK_INT(jn_auth_b64_decode("YQ=", 3, out, sizeof(out)), -1);
    CHECK_INT(jn_auth_b64_decode("Y Q==", 5, out, sizeof(out)), -1);
    CHECK_INT(jn_auth_b64_decode("YWJj", 4, out, 2), -1);
    CHECK_INT(jn_auth_parse_authorization("Bearer abc", &cred, &n), JN_AUTH_BEARER);
    CHECK_INT(n, 3);
    CHECK_INT(jn_auth_parse_authorization("BASIC  abc ", &cred, &n), JN_AUTH_BASIC);
    CHECK_INT(n, 3);
    CHECK_INT(jn_auth_parse_authorization("Bearer", &cred, &n), -1);
    CHECK_INT(jn_auth_parse_authorization("Bearer   ", &cred, &n), -1);
    CHECK_INT(jn_auth_parse_authorization("Bearerx abc", &cred, &n), -1);
    CHECK_INT(jn_auth_parse_authorization(NULL, &cred, &n), -1);
    CHECK_INT(jn_auth_parse_basic("YWxpY2U6", 8, u, pw), 0); /* "alice:" */
    CHECK_STR(u, "alice");
    CHECK_STR(pw, "");
    CHECK_INT(jn_auth_parse_basic("OnB3", 4, u, pw), -1); /* ":pw": no user */
    CHECK_INT(jn_auth_parse_basic("YQBiOmM=", 8, u, pw), -1); /* NUL inside */
    CHECK_INT(jn_auth_parse_signatures(SW_SIG, count_sig, &calls), 1);
    CHECK_INT(calls, 1);
    CHECK_INT(jn_auth_parse_signatures("", count_sig, &calls), 0);
    CHECK_INT(jn_auth_parse_signatures("v1a,xyz  v2,abc", NULL, NULL), 0);
    CHECK_INT(jn_auth_parse_signatures("v1,YQ==", NULL, NULL), -1);
    CHECK_INT(jn_auth_parse_signatures("nocomma", NULL, NULL), -1);
    CHECK_INT(jn_auth_parse_signatures(",abc", NULL, NULL), -1);
    CHECK_INT(jn_auth_parse_signatures("v2,a v2,a v2,a v2,a v2,a v2,a v2,a v2,a v2,a v2,a v2,a "
                                       "v2,a v2,a v2,a v2,a v2,a v2,a", NULL, NULL), -1);
}

static void test_check(void)
{
    struct parsed p;

    parse("auth:\n  - type: bearer\n    tokens: [short]\n    users: { a: b }\n", &p);
    CHECK(p.errs == 2);
    CHECK(has_msg(&p, "option 'users' does not apply to type: bearer"));
    CHECK(has_msg(&p, "shorter than 16"));
    CHECK(!has_msg(&p, "short]"));
    parsed_free(&p);

    parse("auth:\n  - type: basic\n    users: { alice: notahash }\n", &p);
    CHECK_INT(p.errs, 1);
    CHECK(has_msg(&p, "t.yaml:3:21: http: auth[0]: users: alice: not a password hash"));
    CHECK(!has_msg(&p, "notahash"));
    parsed_free(&p);

    parse("auth:\n  - type: hmac\n    secrets: [\"whsec_!!\"]\n", &p);
    CHECK_INT(p.errs, 1);
    CHECK(has_msg(&p, "secret 1 is not whsec_"));
    CHECK(!has_msg(&p, "whsec_!!"));
    parsed_free(&p);

    parse("auth:\n  - type: hmac\n  - type: hmac\n    secrets: [\"" SW_SECRET "\"]\n", &p);
    CHECK(has_msg(&p, "listed twice"));
    CHECK(has_msg(&p, "hmac needs secrets"));
    parsed_free(&p);

    parse("auth:\n  - type: kerberos\n", &p);
    CHECK(p.errs >= 1);
    CHECK(has_msg(&p, "auth[0]: type: 'kerberos' is not allowed"));
    parsed_free(&p);

    parse("auth: bearer\n", &p);
    CHECK(has_msg(&p, "auth: expected a list of maps"));
    parsed_free(&p);

    parse("auth:\n  - bearer\n", &p);
    CHECK(has_msg(&p, "t.yaml:2:5: http: auth[0]: expected a map"));
    parsed_free(&p);

    /* mtls without verified client certificates. */
    memset(&p, 0, sizeof(p));
    jn_diag_init(&p.d);
    p.root = jn_yaml_load_buf("t.yaml", "auth:\n  - type: mtls\n", 20, &p.d);
    CHECK(p.root != NULL && jn_opt_parse(wopts, p.root, &p.w, "http", 0, NULL, p.root, &p.d) == 0);
    CHECK_INT(jn_auth_check(&p.w.auth, 0, p.root, "auth", "http", &p.d), 1);
    CHECK(has_msg(&p, "verify_peer: true"));
    parsed_free(&p);
}

static void test_file_subst(void)
{
    char dir[] = "/tmp/jn-ut-auth-XXXXXX", path[128], yaml[512];
    struct jn_diag d;
    struct jn_node *root;
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/token", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    fputs("s3cret-value\n\n", f);
    fclose(f);
    snprintf(yaml, sizeof(yaml), "a: \"${file:%s}\"\nb: pre-${file:%s}-post\nc: '${file:%s}'\n",
             path, path, path);
    jn_diag_init(&d);
    root = jn_yaml_load_buf("t.yaml", yaml, strlen(yaml), &d);
    CHECK(root != NULL);
    if (root != NULL) {
        /* One trailing newline removed, not two. */
        CHECK_STR(jn_node_get(root, "a")->str, "s3cret-value\n");
        CHECK_STR(jn_node_get(root, "b")->str, "pre-s3cret-value\n-post");
        CHECK(strncmp(jn_node_get(root, "c")->str, "${file:", 7) == 0);
    }
    jn_node_free(root);
    jn_diag_free(&d);

    snprintf(yaml, sizeof(yaml), "x: 1\nsecret: \"${file:%s/missing}\"\n", dir);
    jn_diag_init(&d);
    root = jn_yaml_load_buf("t.yaml", yaml, strlen(yaml), &d);
    CHECK(root == NULL);
    CHECK(d.n >= 1 && strncmp(d.msgs[0], "t.yaml:2:9: cannot read ", 24) == 0);
    CHECK(d.n >= 1 && strstr(d.msgs[0], "No such file or directory") != NULL);
    jn_node_free(root);
    jn_diag_free(&d);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_vector();
    test_hmac();
    test_replay_window_bound();
    test_bearer_basic();
    test_parsers();
    test_check();
    test_file_subst();
    TEST_MAIN_END();
}
