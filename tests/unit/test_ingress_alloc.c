/*
 * Allocation failures on the ingress path: the HTTP IN side builds a message from a request's
 * pieces (body, headers, path, query, peer) with jn_http__build_msg, exactly as its handler does.
 * We fail the Nth allocation for every N until the build succeeds, and check that each failure
 * is a clean JN_ENOMEM with nothing returned; run under ASan (scripts/sanitize.sh) a leak or a
 * bad free in any of those paths fails the test.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <string.h>

#include "http_int.h"
#include "jn_mem.h"
#include "jn_msg.h"
#include "jn_test.h"

/* A request as evhttp hands it to the handler: input headers and body. */
struct fake_req {
    struct evhttp_request *req;
    struct evkeyvalq *hdrs;
    struct evbuffer *body;
};

static void fake_req_init(struct fake_req *f, const char *body, size_t len, int nhdrs)
{
    char name[32], value[64];

    f->req = evhttp_request_new(NULL, NULL);
    f->hdrs = evhttp_request_get_input_headers(f->req);
    f->body = evhttp_request_get_input_buffer(f->req);
    evhttp_add_header(f->hdrs, "Content-Type", "application/json");
    evhttp_add_header(f->hdrs, "X-Order", "A17");
    for (int i = 0; i < nhdrs; i++) {
        snprintf(name, sizeof(name), "X-Extra-%d", i);
        snprintf(value, sizeof(value), "value %d", i);
        evhttp_add_header(f->hdrs, name, value);
    }
    evbuffer_add(f->body, body, len);
}

static void check_msg(const struct jn_msg *m, const char *body, size_t len, int nhdrs,
                      const char *query)
{
    CHECK_INT(m->len, len);
    CHECK(memcmp(m->payload, body, len) == 0);
    CHECK_INT(m->payload[len], 0);
    CHECK_STR(m->channel, "in");
    CHECK_STR(jn_msg_header_get(m, "content-type"), "application/json");
    CHECK_STR(jn_msg_header_get(m, "X-Order"), "A17");
    CHECK_STR(jn_msg_header_get(m, "http-path"), "/ingest");
    CHECK_STR(jn_msg_header_get(m, "http-peer"), "127.0.0.1:40000");
    if (query) {
        CHECK_STR(jn_msg_header_get(m, "http-query"), query);
    } else {
        CHECK(jn_msg_header_get(m, "http-query") == NULL);
    }
    /* Request headers in order, then path, query and peer. */
    CHECK_INT(m->nhdrs, 2 + nhdrs + 2 + (query != NULL));
    CHECK_STR(m->hdrs[0].name, "Content-Type");
    CHECK(m->id[0] == '\0');
}

/* Walks N from 0 until the build succeeds; returns the number of allocations it needed. */
static long walk(const char *body, size_t len, int nhdrs, const char *query)
{
    struct fake_req f;
    long n;

    fake_req_init(&f, body, len, nhdrs);
    for (n = 0; n < 10000; n++) {
        struct jn_msg *m = (struct jn_msg *)&f; /* must be reset to NULL on failure */
        long failed;
        int rc;

        jn_mem_fail_after(n);
        rc = jn_http__build_msg("in", f.body, f.hdrs, "/ingest", query, "127.0.0.1:40000", &m);
        failed = jn_mem_failed(); /* before the reset clears it */
        jn_mem_fail_after(-1);
        if (rc == 0) {
            CHECK(m != NULL);
            if (m != NULL) {
                check_msg(m, body, len, nhdrs, query);
            }
            jn_msg_unref(&m);
            break;
        }
        CHECK_INT(rc, JN_ENOMEM);
        CHECK(m == NULL);
        /* The walk only means something if the failure was ours. */
        CHECK(failed > 0);
    }
    /* The request is left as it was: the handler may still answer from it. */
    CHECK_INT(evbuffer_get_length(f.body), len);
    evhttp_request_free(f.req);
    return n;
}

static void test_walks(void)
{
    static const char json[] = "{\"order\": 1, \"bytes\": \"\\u00e9\\n\"}\0\xff tail";
    char big[70000];
    long n;

    n = walk(json, sizeof(json) - 1, 0, NULL);
    printf("ingress build, small body, no query: %ld allocation points walked\n", n);
    CHECK(n >= 3); /* payload, message, headers at least */

    n = walk(json, sizeof(json) - 1, 40, "a=1&b=2");
    printf("ingress build, 42 headers + query: %ld allocation points walked\n", n);
    CHECK(n >= 10);

    memset(big, 'x', sizeof(big));
    n = walk(big, sizeof(big), 3, "");
    printf("ingress build, 70000-byte body, empty query: %ld allocation points walked\n", n);
    CHECK(n >= 3);

    n = walk("", 0, 0, NULL);
    printf("ingress build, empty body: %ld allocation points walked\n", n);
    CHECK(n >= 2);
}

int main(void)
{
    test_walks();
    TEST_MAIN_END();
}
