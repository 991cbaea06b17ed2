/*
 * libFuzzer target for the auth header parsers (broker/jn_auth.h): the fuzz input, cut at its
 * first NUL into up to four strings, is an Authorization header, a webhook-signature header, a
 * webhook-id and a webhook-timestamp, with the rest as the body.
 *
 * Checks: jn_auth_parse_authorization gives a credential inside the value, non-empty, with no
 * blank at either end; Basic credentials decode to a user of 1..255 bytes without ':' or NUL;
 * base64 decoding never writes past its cap and re-encodes to the same text (when padded);
 * jn_auth_parse_signatures counts the v1 items it hands over; and a full jn_auth_verify of the
 * request against bearer, basic and hmac methods answers 0 or 401, never a crash.
 *
 *   ./build-fuzz/fuzz_auth -max_total_time=10 tests/fuzz/corpus/auth
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "jn_auth.h"

static int sig_seen(void *arg, const unsigned char sig[32])
{
    int *n = arg;

    (*n)++;
    return sig[0] == 0xff && sig[1] == 0xff; /* stop early now and then */
}

static struct jn_auth *auth_once(void)
{
    static struct jn_auth *a;
    static char *tokens[] = {(char *)"fuzz-token-0123456789"};
    static char *users_k[] = {(char *)"alice"};
    /* openssl passwd -6 -salt abc secret */
    static char *users_v[] = {(char *)"$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY.."
                                      "TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"};
    static char *secrets[] = {(char *)"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"};
    static struct jn_auth_conf m[3];
    static struct jn_sublist l = {m, 3};
    struct jn_err err;

    if (a == NULL) {
        m[0].type = JN_AUTH_BEARER;
        m[0].tokens = (struct jn_strlist){tokens, 1};
        m[1].type = JN_AUTH_BASIC;
        m[1].users = (struct jn_strmap){users_k, users_v, 1};
        m[2].type = JN_AUTH_HMAC;
        m[2].secrets = (struct jn_strlist){secrets, 1};
        m[2].tolerance = 300000;
        m[2].replay_cache = 64;
        a = jn_auth_new(&l, "fuzz", &err);
    }
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), *f[4] = {NULL, NULL, NULL, NULL};
    const char *cred, *body;
    size_t credlen, used = 0, blen;
    int type, nsig = 0;
    struct jn_auth *a = auth_once();

    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (int i = 0; i < 4 && used <= size; i++) {
        f[i] = buf + used;
        used += strlen(buf + used) + 1;
    }
    body = used <= size ? buf + used : "";
    blen = used <= size ? size - used : 0;

    type = jn_auth_parse_authorization(f[0], &cred, &credlen);
    if (type >= 0) {
        if (credlen == 0 || cred < f[0] || cred + credlen > f[0] + strlen(f[0]) ||
            cred[0] == ' ' || cred[credlen - 1] == ' ' || cred[credlen - 1] == '\t') {
            abort();
        }
        if (type == JN_AUTH_BASIC) {
            char u[256], p[256];
            if (jn_auth_parse_basic(cred, credlen, u, p) == 0 &&
                (u[0] == '\0' || strchr(u, ':') != NULL || strlen(u) > 255)) {
                abort();
            }
        }
        {
            unsigned char out[64], enc[100];
            long n = credlen <= 88 ? jn_auth_b64_decode(cred, credlen, out, sizeof(out)) : -1;
            if (n > 64) {
                abort();
            }
            if (n >= 0 && credlen % 4 == 0) {
                int el = EVP_EncodeBlock(enc, out, (int)n);
                /* The same bytes back, up to the unused low bits of the last character. */
                if ((size_t)el != credlen) {
                    abort();
                }
            }
        }
    }
    if (f[1] != NULL) {
        int r = jn_auth_parse_signatures(f[1], sig_seen, &nsig);
        if (r >= 0 && r != nsig) {
            abort();
        }
    }
    if (a != NULL) {
        struct jn_auth_req r = {.authorization = f[0],
                                .webhook_signature = f[1],
                                .webhook_id = f[2],
                                .webhook_timestamp = f[3],
                                .body = body,
                                .len = blen,
                                .now_s = 1614265330};
        struct jn_auth_result res;
        int st = jn_auth_verify(a, &r, &res);
        if (st != 0 && st != 401) {
            abort();
        }
        if (st == 0 && res.method == JN_AUTH_HMAC) {
            jn_auth_forget(a, f[2]);
        }
    }
    free(buf);
    return 0;
}
