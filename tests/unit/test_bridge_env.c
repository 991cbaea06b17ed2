/*
 * Unit tests of the bridge's envelope (channels/bridge_env.c): a message encodes and decodes
 * back with its id, origin, first-received time, headers and payload; answers (ack, nack) round
 * trip; the edge's status frame round trips and is told apart from envelopes; what a hub
 * must refuse (another version, a bad id, a wrong shape, trailing bytes) is
 * JN_EPROTO with a reason and no message. No network.
 */
#include <stdio.h>
#include <string.h>

#include "bridge_int.h"
#include "jn_test.h"

static char got[8][JN_ID_LEN + 1];
static int ngot;

static void on_id(void *arg, const char *id)
{
    (void)arg;
    if (ngot < 8) {
        snprintf(got[ngot++], sizeof(got[0]), "%s", id);
    }
}

static int refused(const void *p, size_t n)
{
    struct bridge_env e;
    struct jn_err err;

    jn_err_clear(&err);
    return jn_bridge__env_decode(p, n, "hub", &e, &err) == JN_EPROTO && e.msg == NULL &&
           err.msg[0] != '\0';
}

int main(void)
{
    struct jn_msg *m = jn_msg_new("web", "hello\0bin", 9);
    struct jn_buf b = JN_BUF_INIT;
    struct bridge_env e;
    struct jn_err err;
    char reason[200];
    int nack;
    const char ids[] = "01M98GTETQAXSXREDWCWXAXA4301M98GTETQAXSXREDWCWXAXA44";

    CHECK(m != NULL);
    snprintf(m->id, sizeof(m->id), "01M98GTETQAXSXREDWCWXAXA43");
    m->recv_us = 1765119000123456LL;
    CHECK_INT(jn_msg_header_set(m, "Content-Type", "text/plain"), 0);
    CHECK_INT(jn_msg_header_set(m, "x-empty", ""), 0);
    CHECK_INT(jn_bridge__env_encode(m, "clinic-1", &b), 0);
    CHECK_INT(jn_bridge__env_decode(b.p, b.len, "hub", &e, &err), 0);
    CHECK_STR(e.msg->id, m->id);
    CHECK_STR(e.msg->channel, "hub");
    CHECK_STR(e.origin, "clinic-1");
    CHECK(e.first_us == 1765119000123456LL);
    CHECK_INT((int)e.msg->len, 9);
    CHECK(memcmp(e.msg->payload, "hello\0bin", 9) == 0);
    CHECK_INT((int)e.msg->nhdrs, 2);
    CHECK_STR(jn_msg_header_get(e.msg, "content-type"), "text/plain");
    CHECK_STR(jn_msg_header_get(e.msg, "x-empty"), "");
    jn_msg_unref(&e.msg);

    /* Truncated anywhere, or with a byte more: refused. */
    for (size_t n = 0; n < b.len; n++) {
        CHECK(refused(b.p, n));
    }
    CHECK_INT(jn_buf_append(&b, "\x00", 1), 0);
    CHECK(refused(b.p, b.len));

    /* Another version, a bad id, a wrong shape. */
    CHECK(refused("\x97\x02\xa1m\xc0\xc0\xc0\xc0\xc0", 9));
    CHECK(refused("\x97\x01\xa1m\xa3" "abc" "\xa1" "e\x00\x90\xc4\x00", 14));
    CHECK(refused("\x93\x01\xa1" "a\x90", 5)); /* an ack is not a message */
    CHECK(refused("\xc1", 1));
    CHECK(refused("", 0));

    /* Answers. */
    CHECK_INT(jn_bridge__ans_encode(ids, 2, NULL, &b), 0);
    ngot = 0;
    CHECK_INT(jn_bridge__ans_decode(b.p, b.len, &nack, reason, on_id, NULL), 0);
    CHECK_INT(nack, 0);
    CHECK_INT(ngot, 2);
    CHECK_STR(got[1], "01M98GTETQAXSXREDWCWXAXA44");
    CHECK_INT(jn_bridge__ans_encode(ids, 1, "journal full", &b), 0);
    ngot = 0;
    CHECK_INT(jn_bridge__ans_decode(b.p, b.len, &nack, reason, on_id, NULL), 0);
    CHECK_INT(nack, 1);
    CHECK_INT(ngot, 1);
    CHECK_STR(reason, "journal full");
    CHECK_INT(jn_bridge__ans_decode("\x93\x01\xa1" "a\x91\xa3" "abc", 8, &nack, reason, on_id,
                                    NULL), JN_EPROTO);
    CHECK_INT(jn_bridge__ans_decode(b.p, b.len - 1, &nack, reason, on_id, NULL), JN_EPROTO);

    /* The edge's status: round trip; an envelope or an answer is no status (1); a status of
     * the wrong shape is JN_EPROTO; a message envelope is not taken for a status. */
    {
        struct bridge_status st;
        CHECK_INT(jn_bridge__status_encode("clinic-1", 12345678901ULL, 256, &b), 0);
        CHECK_INT(jn_bridge__status_decode(b.p, b.len, &st, &err), 0);
        CHECK_STR(st.origin, "clinic-1");
        CHECK(st.queued == 12345678901ULL && st.in_flight == 256);
        CHECK_INT(jn_bridge__status_decode(b.p, b.len - 1, &st, &err), 1); /* truncated */
        CHECK(refused(b.p, b.len)); /* and the envelope decoder refuses it */
        jn_err_clear(&err);
        CHECK_INT(jn_bridge__status_decode("\x94\x01\xa1s\xa1" "e\x00", 7, &st, &err),
                  JN_EPROTO);
        CHECK(err.msg[0] != '\0');
        CHECK_INT(jn_bridge__status_decode("\x95\x01\xa1s\xa0\x00\x00", 7, &st, &err),
                  JN_EPROTO); /* an empty origin */
        CHECK_INT(jn_bridge__status_decode("\x95\x01\xa1s\xa1" "e\xff\x00", 8, &st, &err),
                  JN_EPROTO); /* a negative depth */
        CHECK_INT(jn_bridge__env_encode(m, "clinic-1", &b), 0);
        CHECK_INT(jn_bridge__status_decode(b.p, b.len, &st, &err), 1);
        CHECK_INT(jn_bridge__ans_encode(ids, 1, NULL, &b), 0);
        CHECK_INT(jn_bridge__status_decode(b.p, b.len, &st, &err), 1);
    }

    CHECK(jn_bridge__id_ok("01M98GTETQAXSXREDWCWXAXA43", JN_ID_LEN));
    CHECK(!jn_bridge__id_ok("01M98GTETQAXSXREDWCWXAXA4", JN_ID_LEN - 1));
    CHECK(!jn_bridge__id_ok("01M98GTETQAXSXREDWCWXAXAU3", JN_ID_LEN)); /* U is not Crockford */
    jn_buf_reset(&b);
    jn_msg_unref(&m);
    TEST_MAIN_END();
}
