/*
 * jn_auth: the `auth:` list and the verification of one request against it (contract in
 * jn_auth.h). Every comparison of a secret is constant-time (CRYPTO_memcmp over equal-length
 * digests); nothing here logs or returns a secret, only which method refused and why.
 */
#include "jn_auth.h"

#include <crypt.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "jn_log.h"
#include "jn_mem.h"
#include "jn_tls.h"

static const char *const auth_type_names[] = {"bearer", "basic", "mtls", "hmac", NULL};
static const char *const auth_scheme_names[] = {"standard-webhooks", NULL};

#define SW_ID_MAX 256     /* longest webhook-id taken */
#define SW_KEYS_MAX 16    /* secrets of one hmac method */
#define SIG_ITEMS_MAX 16  /* items of one webhook-signature header */
#define BASIC_HITS 64     /* basic credentials remembered after a crypt accepted them */
#define BASIC_HIT_S 300   /* for this long */

const struct jn_opt jn_auth_opts[] = {
    JN_OPT_ENUM("type", NULL, auth_type_names, JN_OPT_REQUIRED, struct jn_auth_conf, type,
                "The method: bearer (Authorization: Bearer), basic (Authorization: Basic), "
                "mtls (the verified TLS client certificate) or hmac (signed webhooks)."),
    JN_OPT_STRLIST("tokens", NULL, JN_OPT_SECRET, struct jn_auth_conf, tokens,
                   "bearer: the tokens accepted, e.g. \"${TOKEN}\" or \"${file:/run/secrets/t}\"."),
    JN_OPT_STRMAP("users", JN_OPT_SECRET, struct jn_auth_conf, users,
                  "basic: user: password hash, as made by `openssl passwd -6` (SHA-512-crypt; "
                  "any hash crypt(3) knows is taken)."),
    JN_OPT_STRLIST("allowed_peers", NULL, 0, struct jn_auth_conf, allowed_peers,
                   "mtls: the verified peers allowed to post (subject CN, SAN DNS, SAN URI or "
                   "sha256:<hex>); another verified peer is answered 403. Empty: any peer the "
                   "tls block accepted."),
    JN_OPT_ENUM("scheme", "standard-webhooks", auth_scheme_names, 0, struct jn_auth_conf,
                scheme, "hmac: the signature scheme (Standard Webhooks: webhook-id, "
                "webhook-timestamp, webhook-signature)."),
    JN_OPT_STRLIST("secrets", NULL, JN_OPT_SECRET, struct jn_auth_conf, secrets,
                   "hmac: the signing secrets, whsec_<base64>; several while rotating (any "
                   "may match)."),
    JN_OPT_DURATION("tolerance", "5m", 1000, 86400000LL, 0, struct jn_auth_conf, tolerance,
                    "hmac: how far webhook-timestamp may be from now, either way; a webhook-id "
                    "seen again within it is refused as a replay."),
    JN_OPT_INT("replay_cache", "100000", 1, 10000000, 0, struct jn_auth_conf, replay_cache,
               "hmac: webhook-ids remembered (in memory, per channel) to refuse replays; past "
               "it the oldest are forgotten early."),
    JN_OPT_END,
};

const char *jn_auth_method_name(int method)
{
    static const char *const names[JN_AUTH__COUNT] = {"bearer", "basic", "mtls", "hmac",
                                                      "none"};

    return method >= 0 && method < JN_AUTH__COUNT ? names[method] : "?";
}

/* ---- parsers ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

long jn_auth_b64_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    size_t pad = 0, o = 0;
    unsigned acc = 0;
    int bits = 0;

    while (pad < 2 && n > 0 && s[n - 1] == '=') {
        n--;
        pad++;
    }
    if ((pad > 0 && (n + pad) % 4 != 0) || n % 4 == 1) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) {
                return -1;
            }
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (long)o;
}

int jn_auth_parse_authorization(const char *v, const char **cred, size_t *credlen)
{
    size_t sl = 0, n;
    int type;

    if (v == NULL) {
        return -1;
    }
    while (v[sl] && v[sl] != ' ' && v[sl] != '\t') {
        sl++;
    }
    if (sl == 6 && strncasecmp(v, "Bearer", 6) == 0) {
        type = JN_AUTH_BEARER;
    } else if (sl == 5 && strncasecmp(v, "Basic", 5) == 0) {
        type = JN_AUTH_BASIC;
    } else {
        return -1;
    }
    v += sl;
    if (*v != ' ' && *v != '\t') {
        return -1;
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) {
        n--;
    }
    if (n == 0) {
        return -1;
    }
    *cred = v;
    *credlen = n;
    return type;
}

int jn_auth_parse_basic(const char *cred, size_t n, char user[256], char password[256])
{
    unsigned char buf[512];
    long len = n <= 684 ? jn_auth_b64_decode(cred, n, buf, sizeof(buf)) : -1;
    const unsigned char *colon;
    size_t ul, pl;

    if (len <= 0 || memchr(buf, '\0', (size_t)len) != NULL) {
        return -1;
    }
    colon = memchr(buf, ':', (size_t)len);
    if (colon == NULL) {
        return -1;
    }
    ul = (size_t)(colon - buf);
    pl = (size_t)len - ul - 1;
    if (ul == 0 || ul > 255 || pl > 255) {
        return -1;
    }
    memcpy(user, buf, ul);
    user[ul] = '\0';
    memcpy(password, colon + 1, pl);
    password[pl] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int jn_auth_parse_signatures(const char *v, int (*fn)(void *arg, const unsigned char sig[32]),
                             void *arg)
{
    int items = 0, v1 = 0;

    while (v != NULL && *v) {
        size_t len, vl;
        const char *comma;
        unsigned char sig[33];

        while (*v == ' ') {
            v++;
        }
        if (*v == '\0') {
            break;
        }
        len = strcspn(v, " ");
        if (++items > SIG_ITEMS_MAX) {
            return -1;
        }
        comma = memchr(v, ',', len);
        if (comma == NULL || comma == v) {
            return -1;
        }
        vl = (size_t)(comma - v);
        if (vl == 2 && memcmp(v, "v1", 2) == 0) {
            if (jn_auth_b64_decode(comma + 1, len - vl - 1, sig, sizeof(sig)) != 32) {
                return -1;
            }
            v1++;
            if (fn != NULL && fn(arg, sig)) {
                return v1;
            }
        }
        v += len;
    }
    return v1;
}

long jn_auth_sw_key(const char *secret, unsigned char key[64])
{
    long n;

    if (strncmp(secret, "whsec_", 6) == 0) {
        secret += 6;
    }
    n = jn_auth_b64_decode(secret, strlen(secret), key, 64);
    return n > 0 ? n : -1;
}

int jn_auth_sw_mac(const unsigned char *key, size_t keylen, const char *id, long long ts,
                   const void *body, size_t len, unsigned char mac[32])
{
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    char tsb[32];
    int tl = snprintf(tsb, sizeof(tsb), ".%lld.", ts);
    size_t ml = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, keylen, params) &&
             EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
             EVP_MAC_update(ctx, (const unsigned char *)tsb, (size_t)tl) &&
             (len == 0 || EVP_MAC_update(ctx, body, len)) && EVP_MAC_final(ctx, mac, &ml, 32) &&
             ml == 32;

    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return ok ? 0 : JN_ENOMEM;
}

void jn_auth_sw_header(const unsigned char mac[32], char *out, size_t n)
{
    char b64[48];

    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    snprintf(out, n, "v1,%s", b64);
}

/* ---- check ---- */

/* Which options belong to which type (the rest must not be given). */
static int opt_of_type(const char *opt, int type)
{
    static const char *const per_type[4][5] = {
        {"tokens", NULL},
        {"users", NULL},
        {"allowed_peers", NULL},
        {"scheme", "secrets", "tolerance", "replay_cache", NULL},
    };

    if (strcmp(opt, "type") == 0) {
        return 1;
    }
    for (size_t i = 0; type >= 0 && type < 4 && per_type[type][i]; i++) {
        if (strcmp(opt, per_type[type][i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int jn_auth_check(const struct jn_sublist *list, int mtls_ok, const struct jn_node *node,
                  const char *key, const char *what, struct jn_diag *d)
{
    const struct jn_node *ln = jn_node_get(node, key);
    const struct jn_auth_conf *m = list->v;
    struct crypt_data *cd = NULL;
    int seen[4] = {0, 0, 0, 0};
    int errs = 0;

    for (size_t i = 0; i < list->n; i++) {
        const struct jn_node *item = ln && ln->kind == JN_NODE_SEQ && i < ln->n ? ln->vals[i]
                                                                                : NULL;
        const struct jn_pos *pos = item ? &item->pos : jn_node_pos(node, key);
        const char *tn = auth_type_names[m[i].type];

        for (size_t k = 0; item && item->kind == JN_NODE_MAP && k < item->n; k++) {
            if (!opt_of_type(item->keys[k]->str, m[i].type)) {
                jn_diag_add(d, &item->keys[k]->pos, "%s: %s[%zu]: option '%s' does not apply "
                            "to type: %s", what, key, i, item->keys[k]->str, tn);
                errs++;
            }
        }
        if (seen[m[i].type]++) {
            jn_diag_add(d, pos, "%s: %s[%zu]: type %s is listed twice; give one entry with "
                        "all its %s", what, key, i, tn,
                        m[i].type == JN_AUTH_BASIC ? "users" : "values");
            errs++;
        }
        switch (m[i].type) {
        case JN_AUTH_BEARER:
            if (m[i].tokens.n == 0) {
                jn_diag_add(d, pos, "%s: %s[%zu]: bearer needs tokens: [...]", what, key, i);
                errs++;
            }
            for (size_t t = 0; t < m[i].tokens.n; t++) {
                if (strlen(m[i].tokens.v[t]) < 16) {
                    jn_diag_add(d, jn_node_pos(item, "tokens"), "%s: %s[%zu]: tokens: token "
                                "%zu is shorter than 16 characters (empty environment "
                                "variable or file?)", what, key, i, t + 1);
                    errs++;
                }
            }
            break;
        case JN_AUTH_BASIC:
            if (m[i].users.n == 0) {
                jn_diag_add(d, pos, "%s: %s[%zu]: basic needs users: { name: hash }", what, key,
                            i);
                errs++;
            }
            if (cd == NULL && m[i].users.n > 0) {
                cd = jn_calloc(1, sizeof(*cd));
            }
            for (size_t u = 0; cd != NULL && u < m[i].users.n; u++) {
                const char *h = m[i].users.v[u];
                const char *r = crypt_r("x", h, cd);
                if (strchr(m[i].users.k[u], ':') != NULL || r == NULL || r[0] == '*' ||
                    h[0] != '$') {
                    jn_diag_add(d, jn_node_entry_pos(item, "users", m[i].users.k[u], 1),
                                "%s: %s[%zu]: users: %s: %s", what, key, i, m[i].users.k[u],
                                strchr(m[i].users.k[u], ':') ? "a user name cannot hold ':'"
                                : "not a password hash crypt(3) knows; make one with "
                                  "`openssl passwd -6`");
                    errs++;
                }
            }
            break;
        case JN_AUTH_MTLS:
            if (!mtls_ok) {
                jn_diag_add(d, pos, "%s: %s[%zu]: mtls needs client certificates verified: "
                            "set tls.cert, tls.ca and tls.verify_peer: true", what, key, i);
                errs++;
            }
            break;
        case JN_AUTH_HMAC:
            if (m[i].secrets.n == 0 || m[i].secrets.n > SW_KEYS_MAX) {
                jn_diag_add(d, pos, "%s: %s[%zu]: hmac needs secrets: [whsec_...] (1 to %d)",
                            what, key, i, SW_KEYS_MAX);
                errs++;
            }
            for (size_t s = 0; s < m[i].secrets.n; s++) {
                unsigned char k[64];
                long kl = jn_auth_sw_key(m[i].secrets.v[s], k);
                OPENSSL_cleanse(k, sizeof(k));
                if (kl < 16) {
                    jn_diag_add(d, jn_node_pos(item, "secrets"), "%s: %s[%zu]: secrets: secret "
                                "%zu is not whsec_<base64 of 16 to 64 bytes>", what, key, i,
                                s + 1);
                    errs++;
                }
            }
            break;
        }
    }
    if (cd != NULL) {
        OPENSSL_cleanse(cd, sizeof(*cd));
        jn_free(cd);
    }
    return errs;
}

/* ---- the verifier ---- */

struct sw_key {
    unsigned char k[64];
    size_t n;
};

/* One remembered webhook-id: 128 bits of its SHA-256, when it was seen, its hash chain. */
struct seen {
    uint64_t h[2];
    int64_t at;
    uint32_t next; /* in its bucket's chain; UINT32_MAX ends it */
    int live;      /* in a chain (forget unlinks it early) */
};
#define SEEN_END UINT32_MAX

struct jn_auth {
    const struct jn_auth_conf *m; /* borrowed */
    size_t n;
    unsigned char (*tok)[32];     /* SHA-256 of each bearer token */
    size_t ntok;
    const struct jn_auth_conf *hmac;
    struct sw_key keys[SW_KEYS_MAX];
    size_t nkeys;
    struct crypt_data *cd;        /* basic */
    /* basic: SHA-256(hit_key, user, NUL, password) of credentials a crypt accepted lately, so
     * a client that sends the same ones on every request pays one crypt (~4 ms of the loop)
     * per BASIC_HIT_S, not one per request. Refusals are never remembered. */
    unsigned char hit_key[32];
    struct {
        unsigned char h[32];
        int64_t until;
    } hits[BASIC_HITS];
    unsigned hit_next;
    /* replay window: a ring in insertion order, indexed by a chained hash */
    struct seen *ring;
    size_t cap, first, count;
    uint32_t *bucket;
    size_t bmask;
    int64_t keep_s;               /* how long an id is remembered: 2 * tolerance */
    int warned_full;
    char prefix[160];
};

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int ol = 32;

    if (EVP_Digest(p, n, out, &ol, EVP_sha256(), NULL) != 1) {
        memset(out, 0, 32);
    }
}

struct jn_auth *jn_auth_new(const struct jn_sublist *list, const char *prefix,
                            struct jn_err *err)
{
    struct jn_auth *a;

    jn_err_clear(err);
    if (list->n == 0) {
        return NULL;
    }
    a = jn_calloc(1, sizeof(*a));
    if (a == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    a->m = list->v;
    a->n = list->n;
    snprintf(a->prefix, sizeof(a->prefix), "%s", prefix ? prefix : "auth");
    for (size_t i = 0; i < a->n; i++) {
        const struct jn_auth_conf *c = &a->m[i];
        if (c->type == JN_AUTH_BEARER && a->tok == NULL && c->tokens.n > 0) {
            a->tok = jn_calloc(c->tokens.n, sizeof(*a->tok));
            if (a->tok == NULL) {
                goto nomem;
            }
            for (size_t t = 0; t < c->tokens.n; t++) {
                sha256(c->tokens.v[t], strlen(c->tokens.v[t]), a->tok[t]);
            }
            a->ntok = c->tokens.n;
        } else if (c->type == JN_AUTH_BASIC && a->cd == NULL) {
            a->cd = jn_calloc(1, sizeof(*a->cd));
            if (a->cd == NULL || RAND_bytes(a->hit_key, sizeof(a->hit_key)) != 1) {
                goto nomem;
            }
        } else if (c->type == JN_AUTH_HMAC && a->hmac == NULL) {
            size_t nb = 16;
            a->hmac = c;
            for (size_t s = 0; s < c->secrets.n && a->nkeys < SW_KEYS_MAX; s++) {
                long kl = jn_auth_sw_key(c->secrets.v[s], a->keys[a->nkeys].k);
                if (kl <= 0) {
                    jn_auth_free(a);
                    jn_err_set(err, JN_EINVAL, "hmac: secret %zu is not whsec_<base64>", s + 1);
                    return NULL;
                }
                a->keys[a->nkeys++].n = (size_t)kl;
            }
            a->cap = (size_t)c->replay_cache;
            while (nb < a->cap) {
                nb <<= 1;
            }
            a->ring = jn_calloc(a->cap, sizeof(*a->ring));
            a->bucket = jn_malloc(nb * sizeof(*a->bucket));
            if (a->ring == NULL || a->bucket == NULL) {
                goto nomem;
            }
            memset(a->bucket, 0xff, nb * sizeof(*a->bucket));
            a->bmask = nb - 1;
            a->keep_s = 2 * ((c->tolerance + 999) / 1000);
        }
    }
    return a;
nomem:
    jn_auth_free(a);
    jn_err_set(err, JN_ENOMEM, "out of memory for the auth methods");
    return NULL;
}

void jn_auth_free(struct jn_auth *a)
{
    if (a == NULL) {
        return;
    }
    if (a->cd != NULL) {
        OPENSSL_cleanse(a->cd, sizeof(*a->cd));
    }
    OPENSSL_cleanse(a->keys, sizeof(a->keys));
    OPENSSL_cleanse(a->hit_key, sizeof(a->hit_key));
    jn_free(a->cd);
    jn_free(a->tok);
    jn_free(a->ring);
    jn_free(a->bucket);
    jn_free(a);
}

/* -- the replay window -- */

static void id_hash(const char *id, uint64_t h[2])
{
    unsigned char md[32];

    sha256(id, strlen(id), md);
    memcpy(h, md, 16);
}

static void seen_unlink(struct jn_auth *a, uint32_t idx)
{
    struct seen *s = &a->ring[idx];
    uint32_t *pp = &a->bucket[s->h[0] & a->bmask];

    while (*pp != SEEN_END && *pp != idx) {
        pp = &a->ring[*pp].next;
    }
    if (*pp == idx) {
        *pp = s->next;
    }
    s->live = 0;
}

static struct seen *seen_find(struct jn_auth *a, const uint64_t h[2], uint32_t *idx)
{
    for (uint32_t i = a->bucket[h[0] & a->bmask]; i != SEEN_END; i = a->ring[i].next) {
        if (a->ring[i].h[0] == h[0] && a->ring[i].h[1] == h[1]) {
            *idx = i;
            return &a->ring[i];
        }
    }
    return NULL;
}

static void seen_expire(struct jn_auth *a, int64_t now)
{
    while (a->count > 0 && a->ring[a->first].at + a->keep_s < now) {
        if (a->ring[a->first].live) {
            seen_unlink(a, (uint32_t)a->first);
        }
        a->first = (a->first + 1) % a->cap;
        a->count--;
    }
}

static void seen_add(struct jn_auth *a, const uint64_t h[2], int64_t now)
{
    size_t idx;
    struct seen *s;

    if (a->count == a->cap) {
        if (!a->warned_full) {
            jn_log_p(JN_LOG_WARN, a->prefix, "auth: hmac: more than replay_cache %zu "
                     "webhook-ids within the tolerance; the oldest are forgotten early (a "
                     "replay of one of them would pass): raise replay_cache", a->cap);
            a->warned_full = 1;
        }
        if (a->ring[a->first].live) {
            seen_unlink(a, (uint32_t)a->first);
        }
        a->first = (a->first + 1) % a->cap;
        a->count--;
    }
    idx = (a->first + a->count) % a->cap;
    s = &a->ring[idx];
    s->h[0] = h[0];
    s->h[1] = h[1];
    s->at = now;
    s->live = 1;
    s->next = a->bucket[h[0] & a->bmask];
    a->bucket[h[0] & a->bmask] = (uint32_t)idx;
    a->count++;
}

void jn_auth_forget(struct jn_auth *a, const char *webhook_id)
{
    uint64_t h[2];
    uint32_t idx;

    if (a == NULL || a->ring == NULL || webhook_id == NULL) {
        return;
    }
    id_hash(webhook_id, h);
    if (seen_find(a, h, &idx) != NULL) {
        seen_unlink(a, idx);
    }
}

/* -- the methods: each returns 0 (allowed), 401 or 403 with out->reason -- */

static int verify_bearer(struct jn_auth *a, const char *cred, size_t n,
                         struct jn_auth_result *out)
{
    unsigned char md[32];
    int ok = 0;

    sha256(cred, n, md);
    for (size_t t = 0; t < a->ntok; t++) {
        ok |= CRYPTO_memcmp(md, a->tok[t], 32) == 0;
    }
    if (!ok) {
        snprintf(out->reason, sizeof(out->reason), "bearer token not accepted");
        out->bearer_invalid = 1;
        return 401;
    }
    snprintf(out->user, sizeof(out->user), "bearer");
    return 0;
}

/* The lookup key of user:pw in the hits (see struct jn_auth). */
static void basic_hit_hash(const struct jn_auth *a, const char *user, const char *pw,
                           unsigned char out[32])
{
    unsigned char buf[32 + 256 + 1 + 256];
    size_t ul = strlen(user), pl = strlen(pw);

    memcpy(buf, a->hit_key, 32);
    memcpy(buf + 32, user, ul + 1);
    memcpy(buf + 33 + ul, pw, pl);
    sha256(buf, 33 + ul + pl, out);
    OPENSSL_cleanse(buf, sizeof(buf));
}

static int verify_basic(struct jn_auth *a, const struct jn_auth_conf *c, const char *cred,
                        size_t n, int64_t now, struct jn_auth_result *out)
{
    char user[256], pw[256];
    const char *hash = NULL, *r;
    unsigned char hh[32];
    int known = 0, ok = 0;

    if (jn_auth_parse_basic(cred, n, user, pw) != 0 || c->users.n == 0) {
        snprintf(out->reason, sizeof(out->reason), "malformed Basic credentials");
        return 401;
    }
    basic_hit_hash(a, user, pw, hh);
    for (size_t i = 0; i < BASIC_HITS; i++) {
        ok |= a->hits[i].until >= now && CRYPTO_memcmp(a->hits[i].h, hh, 32) == 0;
    }
    if (ok) {
        OPENSSL_cleanse(pw, sizeof(pw));
        snprintf(out->user, sizeof(out->user), "%s", user);
        return 0;
    }
    for (size_t u = 0; u < c->users.n && !known; u++) {
        if (strcmp(c->users.k[u], user) == 0) {
            hash = c->users.v[u];
            known = 1;
        }
    }
    /* An unknown user costs the same crypt as a known one. */
    r = crypt_r(pw, known ? hash : c->users.v[0], a->cd);
    if (!known) {
        hash = c->users.v[0];
    }
    ok = known && r != NULL && strlen(r) == strlen(hash) &&
         CRYPTO_memcmp(r, hash, strlen(hash)) == 0;
    OPENSSL_cleanse(pw, sizeof(pw));
    if (ok) {
        unsigned i = a->hit_next++ % BASIC_HITS;
        memcpy(a->hits[i].h, hh, 32);
        a->hits[i].until = now + BASIC_HIT_S;
    }
    if (!ok) {
        /* The user name is what the client sent: printable ASCII only in the reason. */
        size_t k;
        for (k = 0; user[k] && k < 64; k++) {
            if (!isprint((unsigned char)user[k])) {
                user[k] = '?';
            }
        }
        user[k] = '\0';
        snprintf(out->reason, sizeof(out->reason), "basic: wrong password or unknown user "
                 "'%.64s'", user);
        return 401;
    }
    snprintf(out->user, sizeof(out->user), "%s", user);
    return 0;
}

static int verify_mtls(const struct jn_auth_conf *c, const struct jn_auth_req *r,
                       struct jn_auth_result *out)
{
    snprintf(out->user, sizeof(out->user), "%s", r->peer_id ? r->peer_id : "");
    if (c->allowed_peers.n > 0 && !jn_tls_peer_allowed(r->peer_cert, &c->allowed_peers)) {
        snprintf(out->reason, sizeof(out->reason), "mtls: peer %.200s is not in auth "
                 "allowed_peers", out->user);
        return 403;
    }
    return 0;
}

struct sig_match {
    const unsigned char (*macs)[32];
    size_t n;
    int hit;
};

static int sig_cmp(void *arg, const unsigned char sig[32])
{
    struct sig_match *sm = arg;

    for (size_t i = 0; i < sm->n; i++) {
        sm->hit |= CRYPTO_memcmp(sig, sm->macs[i], 32) == 0;
    }
    return sm->hit;
}

static int verify_hmac(struct jn_auth *a, const struct jn_auth_req *r,
                       struct jn_auth_result *out)
{
    const char *id = r->webhook_id, *ts = r->webhook_timestamp;
    unsigned char macs[SW_KEYS_MAX][32];
    struct sig_match sm = {(const unsigned char (*)[32])macs, 0, 0};
    long long t = 0, tol = (a->hmac->tolerance + 999) / 1000;
    uint64_t h[2];
    uint32_t idx;
    size_t il;
    int nsig;

    if (id == NULL || ts == NULL || r->webhook_signature == NULL) {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-id, webhook-timestamp and "
                 "webhook-signature are all required");
        return 401;
    }
    il = strlen(id);
    if (il == 0 || il > SW_ID_MAX) {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-id must be 1 to %d "
                 "characters", SW_ID_MAX);
        return 401;
    }
    for (size_t i = 0; i < il; i++) {
        if (!isgraph((unsigned char)id[i])) {
            snprintf(out->reason, sizeof(out->reason), "hmac: webhook-id holds a blank or a "
                     "control character");
            return 401;
        }
    }
    for (size_t i = 0; ts[i]; i++) {
        if (!isdigit((unsigned char)ts[i]) || i >= 15) {
            t = -1;
            break;
        }
        t = t * 10 + (ts[i] - '0');
    }
    if (t < 0 || ts[0] == '\0') {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-timestamp is not whole "
                 "seconds since the epoch");
        return 401;
    }
    if (t < r->now_s - tol || t > r->now_s + tol) {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-timestamp %lld is %lld s "
                 "from now, outside the tolerance of %lld s", t,
                 (long long)(t > r->now_s ? t - r->now_s : r->now_s - t), tol);
        return 401;
    }
    for (size_t k = 0; k < a->nkeys; k++) {
        if (jn_auth_sw_mac(a->keys[k].k, a->keys[k].n, id, t, r->body, r->len, macs[k]) != 0) {
            snprintf(out->reason, sizeof(out->reason), "hmac: out of memory");
            return 401;
        }
    }
    sm.n = a->nkeys;
    nsig = jn_auth_parse_signatures(r->webhook_signature, sig_cmp, &sm);
    OPENSSL_cleanse(macs, sizeof(macs));
    if (nsig < 0) {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-signature is malformed, "
                 "expected v1,<base64> items separated by spaces");
        return 401;
    }
    if (!sm.hit) {
        snprintf(out->reason, sizeof(out->reason), "hmac: no webhook-signature matches (%d v1 "
                 "signature%s, %zu secret%s)", nsig, nsig == 1 ? "" : "s", a->nkeys,
                 a->nkeys == 1 ? "" : "s");
        return 401;
    }
    seen_expire(a, r->now_s);
    id_hash(id, h);
    if (seen_find(a, h, &idx) != NULL) {
        snprintf(out->reason, sizeof(out->reason), "hmac: webhook-id %.150s was seen within "
                 "the tolerance: refused as a replay", id);
        return 401;
    }
    seen_add(a, h, r->now_s);
    snprintf(out->user, sizeof(out->user), "hmac");
    return 0;
}

int jn_auth_verify(struct jn_auth *a, const struct jn_auth_req *r, struct jn_auth_result *out)
{
    const char *cred = NULL;
    size_t credlen = 0;
    int scheme = jn_auth_parse_authorization(r->authorization, &cred, &credlen);
    struct jn_auth_result best;
    int have = 0;

    memset(out, 0, sizeof(*out));
    memset(&best, 0, sizeof(best));
    for (size_t i = 0; i < a->n; i++) {
        const struct jn_auth_conf *c = &a->m[i];
        struct jn_auth_result res;
        int presented, st = 401;

        memset(&res, 0, sizeof(res));
        res.method = c->type;
        switch (c->type) {
        case JN_AUTH_BEARER:
            presented = scheme == JN_AUTH_BEARER;
            st = presented ? verify_bearer(a, cred, credlen, &res) : 401;
            break;
        case JN_AUTH_BASIC:
            presented = scheme == JN_AUTH_BASIC;
            st = presented ? verify_basic(a, c, cred, credlen, r->now_s, &res) : 401;
            break;
        case JN_AUTH_MTLS:
            presented = r->peer_cert != NULL;
            st = presented ? verify_mtls(c, r, &res) : 401;
            break;
        default:
            presented = r->webhook_id || r->webhook_timestamp || r->webhook_signature;
            st = presented ? verify_hmac(a, r, &res) : 401;
            break;
        }
        if (presented && st == 0) {
            *out = res;
            return 0;
        }
        if (presented && (!have || (st == 403 && best.status != 403))) {
            best = res;
            best.status = st;
            have = 1;
        }
    }
    if (have) {
        *out = best;
    } else {
        struct jn_buf b = JN_BUF_INIT;
        for (size_t i = 0; i < a->n; i++) {
            jn_buf_printf(&b, "%s%s", i ? ", " : "", auth_type_names[a->m[i].type]);
        }
        out->status = 401;
        out->method = JN_AUTH_NONE;
        snprintf(out->reason, sizeof(out->reason), "no credentials for an accepted method (%s)",
                 b.p ? b.p : "");
        jn_buf_reset(&b);
    }
    if (out->status == 401) {
        for (size_t i = 0; i < a->n; i++) {
            out->challenges |= a->m[i].type == JN_AUTH_BEARER ? JN_AUTH_CHALLENGE_BEARER
                               : a->m[i].type == JN_AUTH_BASIC ? JN_AUTH_CHALLENGE_BASIC : 0;
        }
    }
    return out->status;
}
