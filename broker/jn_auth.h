/*
 * jn_auth: inbound authentication of a listener's requests (issue 16, part 3): the `auth:`
 * option list (one map per method, any one suffices) and the pure verification of one request
 * against it. Used by HTTP IN (channels/http.c); the MQTT listener and WebSocket are meant to
 * reuse the same list and the same jn_auth_verify when they arrive.
 *
 * Modelled on nginx's auth_basic / auth_request (a list of methods checked before the handler,
 * 401 with a challenge, 403 for a known identity that is not allowed) and on the Standard
 * Webhooks specification (standardwebhooks.com, spec/standard-webhooks.md) for `hmac`.
 *
 * Methods:
 *   bearer  Authorization: Bearer <token>, compared with each configured token in constant time
 *           (SHA-256 of both, CRYPTO_memcmp; every token compared, no early exit).
 *   basic   Authorization: Basic <base64 user:password>, the password checked with crypt_r(3)
 *           against the user's hash (SHA-512-crypt from `openssl passwd -6`, or any hash
 *           libcrypt knows); an unknown user costs the same crypt as a known one. Accepted
 *           credentials are remembered (a salted SHA-256, 64 of them, 5 minutes) so a client
 *           sending the same ones on every request pays one crypt (~4 ms) per 5 minutes.
 *   mtls    the TLS peer's certificate, already verified by the tls block (verify_peer: true);
 *           allowed_peers here narrows who may post (403 for a verified peer not named).
 *   hmac    Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature ("v1,<base64>"
 *           items separated by spaces, any may match) over "id.timestamp.body", HMAC-SHA256 with
 *           each whsec_ secret (rotation), the timestamp within +-tolerance, and a webhook-id seen
 *           within the tolerance refused as a replay.
 *
 * The replay window is in memory, per jn_auth (per channel), bounded by replay_cache ids: a
 * restart forgets it, and past the bound the oldest ids are forgotten before their tolerance
 * ends (logged once per jn_auth). Ids are kept as 128 bits of their SHA-256.
 *
 * Threads: jn_auth_new / verify / forget / free on one thread (the loop thread); the parsers
 * (jn_auth_parse_*) are pure and thread-safe.
 */
#ifndef JN_AUTH_H
#define JN_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "jn_err.h"
#include "jn_opt.h"

typedef struct x509_st X509;

/* The methods, in the order of the `type:` names; JN_AUTH_NONE labels a refusal of a request
 * that carried no credentials for any listed method. */
enum {
    JN_AUTH_BEARER = 0,
    JN_AUTH_BASIC = 1,
    JN_AUTH_MTLS = 2,
    JN_AUTH_HMAC = 3,
    JN_AUTH_NONE = 4,
    JN_AUTH__COUNT = 5,
};
/* "bearer", "basic", "mtls", "hmac", "none" (the metric label). */
const char *jn_auth_method_name(int method);

/* One element of the `auth:` list (jn_auth_opts). Strings owned by the conf (jn_opt_free). */
struct jn_auth_conf {
    int type;                        /* JN_AUTH_BEARER .. JN_AUTH_HMAC */
    struct jn_strlist tokens;        /* bearer (secret) */
    struct jn_strmap users;          /* basic: user -> crypt hash (secret) */
    struct jn_strlist allowed_peers; /* mtls: CN, SAN DNS, SAN URI or sha256:<hex>; empty: any */
    int scheme;                      /* hmac: 0 = standard-webhooks */
    struct jn_strlist secrets;       /* hmac: whsec_<base64> (secret) */
    long long tolerance;             /* hmac: ms */
    long long replay_cache;          /* hmac: ids remembered at most */
};
extern const struct jn_opt jn_auth_opts[];

/*
 * Cross-field check of an `auth:` list for `junction check`: node is the map holding it under
 * key ("auth"), what the prefix ("http"); mtls_ok says whether the owner verifies client
 * certificates (tls.verify_peer: true). Options of another type, empty token/user/secret lists,
 * a hash libcrypt cannot use, a secret that is not whsec_<base64>, a type listed twice. Never
 * prints a secret. Returns the number of errors reported in d.
 */
int jn_auth_check(const struct jn_sublist *list, int mtls_ok, const struct jn_node *node,
                  const char *key, const char *what, struct jn_diag *d);

struct jn_auth;

/*
 * Builds the verifier of list (checked). The conf strings are borrowed and must outlive it;
 * what is derived (decoded secrets, the replay window) is owned. prefix names the owner in the
 * one log line about the replay window. NULL with err (JN_ENOMEM, JN_EINVAL) on failure; an
 * empty list gives NULL with err->code 0 (no auth).
 */
struct jn_auth *jn_auth_new(const struct jn_sublist *list, const char *prefix,
                            struct jn_err *err);
void jn_auth_free(struct jn_auth *a); /* NULL is a no-op */

/* What a request presents (all borrowed for the call; NULL = header absent). */
struct jn_auth_req {
    const char *authorization;
    const char *webhook_id, *webhook_timestamp, *webhook_signature;
    const void *body;
    size_t len;
    X509 *peer_cert;     /* the verified TLS peer certificate, or NULL */
    const char *peer_id; /* its jn_tls_peer_id string, or NULL */
    int64_t now_s;       /* wall clock, seconds since the epoch */
};

#define JN_AUTH_USER_MAX 400
#define JN_AUTH_CHALLENGE_BEARER 1u
#define JN_AUTH_CHALLENGE_BASIC 2u

struct jn_auth_result {
    int status;                  /* 0: allowed; 401: not authenticated; 403: not allowed */
    int method;                  /* JN_AUTH_*: the method that allowed or refused it */
    char user[JN_AUTH_USER_MAX]; /* allowed: the identity (basic user, "bearer", mtls peer,
                                    "hmac"); 403: the identity refused */
    char reason[256];            /* why refused, for the log and the answer; never a secret */
    unsigned challenges;         /* 401: JN_AUTH_CHALLENGE_* to answer in WWW-Authenticate */
    int bearer_invalid;          /* 401: a bearer token was given and is wrong */
};

/*
 * Verifies r against every method in turn; the first that accepts wins. Otherwise the refusal
 * is that of the first method the request presented credentials for (a 403 beats a 401), or
 * JN_AUTH_NONE when it presented none. An accepted hmac request's webhook-id enters the replay
 * window: call jn_auth_forget when the request is not taken after all (a 503), so the sender's
 * retry with the same id is not refused. Returns out->status.
 */
int jn_auth_verify(struct jn_auth *a, const struct jn_auth_req *r, struct jn_auth_result *out);
void jn_auth_forget(struct jn_auth *a, const char *webhook_id);

/* ---- pure parsers and helpers (fuzzed in tests/fuzz/fuzz_auth.c) ---- */

/* Strict base64 (standard alphabet, padding optional, no blanks) of s[0..n) into out (at most
 * cap bytes). Returns the decoded length, or -1 when malformed or longer than cap. */
long jn_auth_b64_decode(const char *s, size_t n, unsigned char *out, size_t cap);

/*
 * An Authorization header value: the scheme (case-insensitive) "Bearer" or "Basic" then one
 * or more blanks and the credentials (trailing blanks dropped). Returns JN_AUTH_BEARER or
 * JN_AUTH_BASIC with *cred / *credlen pointing into v, or -1 for another scheme or garbage.
 */
int jn_auth_parse_authorization(const char *v, const char **cred, size_t *credlen);

/*
 * Basic credentials: base64 of "user:password" (the first ':' splits). user and password
 * (NUL-terminated, of at most 255 bytes each) are written into the caller's buffers of 256
 * bytes. 0, or -1 when malformed (no ':', a NUL byte inside, too long, bad base64).
 */
int jn_auth_parse_basic(const char *cred, size_t n, char user[256], char password[256]);

/*
 * A webhook-signature header: calls fn(arg, sig) with each decoded 32-byte "v1," signature,
 * skipping items of other versions; stops early when fn returns non-zero. Returns the number
 * of v1 signatures seen, or -1 for a malformed header (an item without ',', bad base64, a v1
 * that is not 32 bytes, more than 16 items).
 */
int jn_auth_parse_signatures(const char *v, int (*fn)(void *arg, const unsigned char sig[32]),
                             void *arg);

/* Standard Webhooks: HMAC-SHA256 with key of "id.timestamp." + body into mac. 0 or JN_ENOMEM. */
int jn_auth_sw_mac(const unsigned char *key, size_t keylen, const char *id, long long ts,
                   const void *body, size_t len, unsigned char mac[32]);
/* A whsec_<base64> secret (or bare base64) decoded into key (at most 64 bytes). Length, or -1. */
long jn_auth_sw_key(const char *secret, unsigned char key[64]);
/* "v1,<base64 of the mac>" for the webhook-signature header; out has at least 52 bytes. */
void jn_auth_sw_header(const unsigned char mac[32], char *out, size_t n);

#endif
