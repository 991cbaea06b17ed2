/*
 * Unit tests of the websocket channel's helpers (channels/ws_conf.c): the UTF-8 check that
 * decides close 1007 on IN and the frame type on OUT, and the ws:// / wss:// url parser. No
 * network.
 */
#include <stdio.h>
#include <string.h>

#include "jn_test.h"
#include "jn_utf8.h"
#include "ws_int.h"

static int u8(const char *s, size_t n)
{
    return jn_utf8_valid(s, n);
}

int main(void)
{
    struct ws_url u;

    /* UTF-8 (RFC 3629) */
    CHECK(u8("", 0));
    CHECK(u8("plain ascii", 11));
    CHECK(u8("caf\xc3\xa9", 5));                 /* U+00E9 */
    CHECK(u8("\xe2\x82\xac", 3));                /* U+20AC */
    CHECK(u8("\xf0\x9f\x98\x80", 4));            /* U+1F600 */
    CHECK(u8("\xf4\x8f\xbf\xbf", 4));            /* U+10FFFF, the last */
    CHECK(u8("a\0b", 3));                        /* U+0000 is valid UTF-8 */
    CHECK(!u8("\xff", 1));
    CHECK(!u8("\x80", 1));                       /* a lone continuation */
    CHECK(!u8("\xc3", 1));                       /* cut short */
    CHECK(!u8("\xe2\x82", 2));
    CHECK(!u8("\xc0\xaf", 2));                   /* overlong '/' */
    CHECK(!u8("\xe0\x80\xaf", 3));               /* overlong */
    CHECK(!u8("\xed\xa0\x80", 3));               /* U+D800, a surrogate */
    CHECK(!u8("\xf4\x90\x80\x80", 4));           /* above U+10FFFF */
    CHECK(!u8("\xc3\x28", 2));                   /* a bad continuation */
    CHECK(!u8("ok \xff\xfe bad", 11));

    /* urls */
    CHECK_INT(jn_ws__url_parse("ws://127.0.0.1:8765/feed", &u), 0);
    CHECK_INT(u.tls, 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_INT(u.port, 8765);
    CHECK_STR(u.path, "/feed");
    CHECK_INT(jn_ws__url_parse("wss://hub.example/in?edge=7", &u), 0);
    CHECK_INT(u.tls, 1);
    CHECK_INT(u.port, 443);
    CHECK_STR(u.path, "/in?edge=7");
    CHECK_INT(jn_ws__url_parse("ws://h", &u), 0);
    CHECK_INT(u.port, 80);
    CHECK_STR(u.path, "/");
    CHECK_INT(jn_ws__url_parse("ws://[::1]:9000/x", &u), 0);
    CHECK_STR(u.host, "::1");
    CHECK_INT(jn_ws__url_parse("http://h/", &u), -1);
    CHECK_INT(jn_ws__url_parse("ws:///nohost", &u), -1);
    CHECK_INT(jn_ws__url_parse("ws://h/#frag", &u), -1);
    CHECK_INT(jn_ws__url_parse("ws://h:0/", &u), -1);
    CHECK_INT(jn_ws__url_parse(NULL, &u), -1);
    CHECK_INT(jn_ws__url_parse("not a url", &u), -1);
    TEST_MAIN_END();
}
