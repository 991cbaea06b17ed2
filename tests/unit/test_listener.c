/*
 * Unit tests of the listener (jn_listener) on real loopback sockets: max_connections closes the
 * extra socket (and counts it), a close frees the slot, the per-IP limit (127.0.0.1 and
 * 127.0.0.2 are two peers), the EMFILE pause and resume under a low open-file limit, and the
 * pause at max_connections of a library-accepted (JN_LISTENER_WAIT) listener.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "jn_listener.h"
#include "jn_test.h"

struct tconn {
    evutil_socket_t fd;
    struct jn_listener_ip *ip;
    char peer[64];
};

struct tstate {
    struct tconn c[32];
    int n;
};

static void t_accept(void *arg, evutil_socket_t fd, const struct sockaddr *sa, const char *peer,
                     struct jn_listener_ip *ip)
{
    struct tstate *s = arg;

    (void)sa;
    if (s->n >= 32) {
        evutil_closesocket(fd);
        return;
    }
    s->c[s->n].fd = fd;
    s->c[s->n].ip = ip;
    snprintf(s->c[s->n].peer, sizeof(s->c[s->n].peer), "%s", peer);
    s->n++;
}

/* Runs the loop for about ms milliseconds. */
static void spin(struct event_base *base, int ms)
{
    struct timespec ts = {0, 5 * 1000 * 1000};

    for (int i = 0; i < ms / 5; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        nanosleep(&ts, NULL);
    }
}

/* A client socket connected to 127.0.0.1:port from src (e.g. "127.0.0.2"), or -1. */
static int dial(const char *src, int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    if (src) {
        inet_pton(AF_INET, src, &a.sin_addr);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
            close(fd);
            return -1;
        }
    }
    a.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* 1 when the server closed fd's connection (EOF or reset), 0 when it is still open. */
static int closed_by_peer(int fd)
{
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_DONTWAIT);

    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void drop(struct jn_listener *l, struct tstate *s, int i)
{
    evutil_closesocket(s->c[i].fd);
    jn_listener_closed(l, s->c[i].ip);
    s->c[i] = s->c[--s->n];
}

static void test_max_connections(struct event_base *base)
{
    struct jn_net_conf net = {0, 0, 16, 100, 1000};
    struct tstate s = {0};
    struct jn_listener_conf lc = {"127.0.0.1:0", "test.max", &net, 2, 0, t_accept, &s,
                                  NULL, NULL, NULL, 0};
    struct jn_listener_stats st;
    struct jn_err err = {0};
    struct jn_listener *l = jn_listener_new(base, &lc, &err);
    int fd[4];

    CHECK(l != NULL);
    if (l == NULL) {
        return;
    }
    CHECK_INT(jn_listener_max(l), 2);
    for (int i = 0; i < 3; i++) {
        fd[i] = dial(NULL, jn_listener_port(l));
        CHECK(fd[i] >= 0);
        spin(base, 50);
    }
    CHECK_INT(s.n, 2);
    CHECK(strncmp(s.c[0].peer, "127.0.0.1:", 10) == 0);
    jn_listener_stats(l, &st);
    CHECK_INT(st.open, 2);
    CHECK_INT(st.accepted, 2);
    CHECK_INT(st.refused_max, 1);
    CHECK(closed_by_peer(fd[2]));
    CHECK(!closed_by_peer(fd[0]));
    /* A close frees a slot. */
    drop(l, &s, 0);
    fd[3] = dial(NULL, jn_listener_port(l));
    spin(base, 50);
    CHECK_INT(s.n, 2);
    jn_listener_stats(l, &st);
    CHECK_INT(st.open, 2);
    CHECK_INT(st.accepted, 3);
    for (int i = 0; i < 4; i++) {
        close(fd[i]);
    }
    while (s.n) {
        drop(l, &s, 0);
    }
    /* Stop: no new connections are accepted, counted ones still close. */
    jn_listener_stop(l);
    fd[0] = dial(NULL, jn_listener_port(l));
    spin(base, 50);
    CHECK_INT(s.n, 0);
    jn_listener_stats(l, &st);
    CHECK_INT(st.accepted, 3);
    CHECK(st.paused);
    close(fd[0]);
    jn_listener_free(l);

    /* net.max_connections wins over the channel's value. */
    net.max_connections = 5;
    l = jn_listener_new(base, &lc, &err);
    CHECK(l != NULL);
    CHECK_INT(jn_listener_max(l), 5);
    jn_listener_free(l);
}

static void test_per_ip(struct event_base *base)
{
    struct jn_net_conf net = {0, 1, 16, 100, 1000};
    struct tstate s = {0};
    struct jn_listener_conf lc = {"127.0.0.1:0", "test.ip", &net, 10, 0, t_accept, &s,
                                  NULL, NULL, NULL, 0};
    struct jn_listener_stats st;
    struct jn_err err = {0};
    struct jn_listener *l = jn_listener_new(base, &lc, &err);
    int a1, a2, b1, a3;

    CHECK(l != NULL);
    if (l == NULL) {
        return;
    }
    a1 = dial("127.0.0.1", jn_listener_port(l));
    spin(base, 50);
    a2 = dial("127.0.0.1", jn_listener_port(l));
    spin(base, 50);
    b1 = dial("127.0.0.2", jn_listener_port(l));
    spin(base, 50);
    CHECK(a1 >= 0 && a2 >= 0 && b1 >= 0);
    CHECK_INT(s.n, 2);
    jn_listener_stats(l, &st);
    CHECK_INT(st.refused_per_ip, 1);
    CHECK_INT(st.refused_max, 0);
    CHECK(closed_by_peer(a2));
    CHECK(!closed_by_peer(a1));
    CHECK(!closed_by_peer(b1));
    /* When 127.0.0.1's connection closes, it may connect again. */
    for (int i = 0; i < s.n; i++) {
        if (strncmp(s.c[i].peer, "127.0.0.1:", 10) == 0) {
            drop(l, &s, i);
            break;
        }
    }
    a3 = dial("127.0.0.1", jn_listener_port(l));
    spin(base, 50);
    CHECK_INT(s.n, 2);
    CHECK(!closed_by_peer(a3));
    while (s.n) {
        drop(l, &s, 0);
    }
    jn_listener_stats(l, &st);
    CHECK_INT(st.open, 0);
    close(a1);
    close(a2);
    close(b1);
    close(a3);
    jn_listener_free(l);
}

static void test_emfile(struct event_base *base)
{
    struct jn_net_conf net = {0, 0, 16, 100, 1000};
    struct tstate s = {0};
    struct jn_listener_conf lc = {"127.0.0.1:0", "test.emfile", &net, 10, 0, t_accept, &s,
                                  NULL, NULL, NULL, 0};
    struct jn_listener_stats st;
    struct jn_err err = {0};
    struct jn_listener *l = jn_listener_new(base, &lc, &err);
    struct rlimit old, low;
    int fillers[64], nf = 0, cfd, probe;

    CHECK(l != NULL);
    if (l == NULL) {
        return;
    }
    cfd = dial(NULL, jn_listener_port(l)); /* waits in the backlog until the loop runs */
    CHECK(cfd >= 0);
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    /* The lowest free descriptor tells how many are open; leave no room at all. */
    probe = dup(0);
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe + 8;
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    while (nf < 64 && (fillers[nf] = dup(0)) >= 0) {
        nf++;
    }
    CHECK(nf > 0 && nf < 64);
    spin(base, 30);
    jn_listener_stats(l, &st);
    CHECK_INT(s.n, 0);
    CHECK(st.accept_errors >= 1);
    CHECK(st.paused);
    /* Paused, not spinning: one pause interval sees a single error or so. */
    CHECK(st.accept_errors <= 3);
    while (nf) {
        close(fillers[--nf]);
    }
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    spin(base, 300);
    jn_listener_stats(l, &st);
    CHECK_INT(s.n, 1);
    CHECK(!st.paused);
    while (s.n) {
        drop(l, &s, 0);
    }
    close(cfd);
    jn_listener_free(l);
}

/* Library-accepted with JN_LISTENER_WAIT: the listener pauses at the limit and resumes when one
 * closes; opened_ip adds the per-IP check later. */
static void test_wait_mode(struct event_base *base)
{
    struct jn_net_conf net = {0, 1, 16, 100, 1000};
    struct jn_listener_conf lc = {"127.0.0.1:0", "test.wait", &net, 2, JN_LISTENER_WAIT, NULL,
                                  NULL, NULL, NULL, NULL, 0};
    struct jn_listener_stats st;
    struct jn_err err = {0};
    struct jn_listener *l = jn_listener_new(base, &lc, &err);
    struct jn_listener_ip *c1, *c2, *c3;
    struct sockaddr_in a;

    CHECK(l != NULL);
    if (l == NULL) {
        return;
    }
    CHECK(jn_listener_lev(l) != NULL);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "10.0.0.1", &a.sin_addr);
    CHECK_INT(jn_listener_opened(l, NULL, &c1), 0);
    CHECK(c1 == NULL);
    CHECK_INT(jn_listener_opened_ip(l, (struct sockaddr *)&a, &c1), 0);
    CHECK(c1 != NULL);
    jn_listener_stats(l, &st);
    CHECK(!st.paused);
    CHECK_INT(jn_listener_opened(l, NULL, &c2), 0);
    jn_listener_stats(l, &st);
    CHECK(st.paused);
    CHECK_INT(st.open, 2);
    /* Same address again: over the per-IP limit; stays counted until closed. */
    CHECK_INT(jn_listener_opened_ip(l, (struct sockaddr *)&a, &c2), JN_EFULL);
    jn_listener_closed(l, NULL);
    jn_listener_stats(l, &st);
    CHECK(!st.paused);
    CHECK_INT(st.open, 1);
    CHECK_INT(st.refused_per_ip, 1);
    CHECK_INT(jn_listener_opened(l, (struct sockaddr *)&a, &c3), JN_EFULL);
    jn_listener_closed(l, c1);
    CHECK_INT(jn_listener_opened(l, (struct sockaddr *)&a, &c3), 0);
    jn_listener_closed(l, c3);
    jn_listener_stats(l, &st);
    CHECK_INT(st.open, 0);
    /* The library owns the evconnlistener; here, we are the library. */
    evconnlistener_free(jn_listener_lev(l));
    jn_listener_free(l);
}

/* WAIT with refuse_slots (HTTP): past max_connections a few are still taken, returned as
 * JN_ELIMIT (counted open and refused, into conf.refused too) so the protocol can answer them;
 * the pause comes at max + slots and lifts below it. */
static void test_refuse_slots(struct event_base *base)
{
    struct jn_net_conf net = {0, 1, 16, 100, 1000};
    uint64_t refused[JN_CONN_REFUSED__COUNT] = {0};
    struct jn_listener_conf lc = {"127.0.0.1:0", "test.slots", &net, 2, JN_LISTENER_WAIT, NULL,
                                  NULL, NULL, NULL, refused, 2};
    struct jn_listener_stats st;
    struct jn_err err = {0};
    struct jn_listener *l = jn_listener_new(base, &lc, &err);
    struct jn_listener_ip *c[5];
    struct sockaddr_in a;

    CHECK(l != NULL);
    if (l == NULL) {
        return;
    }
    CHECK_INT(jn_listener_max(l), 2);
    CHECK_INT(jn_listener_cap(l), 4);
    CHECK_INT(jn_listener_opened(l, NULL, &c[0]), 0);
    CHECK_INT(jn_listener_opened(l, NULL, &c[1]), 0);
    jn_listener_stats(l, &st);
    CHECK(!st.paused);
    CHECK_INT(jn_listener_opened(l, NULL, &c[2]), JN_ELIMIT);
    CHECK(c[2] == NULL);
    jn_listener_stats(l, &st);
    CHECK(!st.paused);
    CHECK_INT(jn_listener_opened(l, NULL, &c[3]), JN_ELIMIT);
    jn_listener_stats(l, &st);
    CHECK(st.paused);
    CHECK_INT(st.open, 4);
    CHECK_INT(st.refused_max, 2);
    CHECK_INT(refused[JN_CONN_REFUSED_MAX], 2);
    /* Library accepts may still report one after the pause: refused outright. */
    CHECK_INT(jn_listener_opened(l, NULL, &c[4]), JN_EFULL);
    CHECK_INT(refused[JN_CONN_REFUSED_MAX], 3);
    jn_listener_closed(l, NULL);
    jn_listener_stats(l, &st);
    CHECK(!st.paused);
    /* The per-IP refusal lands in the channel's counter too. */
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "10.0.0.9", &a.sin_addr);
    CHECK_INT(jn_listener_opened_ip(l, (struct sockaddr *)&a, &c[0]), 0);
    CHECK_INT(jn_listener_opened_ip(l, (struct sockaddr *)&a, &c[1]), JN_EFULL);
    CHECK_INT(refused[JN_CONN_REFUSED_PER_IP], 1);
    jn_listener_closed(l, c[0]);
    jn_listener_closed(l, NULL);
    jn_listener_closed(l, NULL);
    jn_listener_stats(l, &st);
    CHECK_INT(st.open, 0);
    evconnlistener_free(jn_listener_lev(l));
    jn_listener_free(l);
}

static void test_bad_address(struct event_base *base)
{
    struct jn_net_conf net = {0, 0, 16, 100, 1000};
    struct tstate s = {0};
    struct jn_listener_conf lc = {"nonsense", "test.bad", &net, 2, 0, t_accept, &s,
                                  NULL, NULL, NULL, 0};
    struct jn_err err = {0};

    CHECK(jn_listener_new(base, &lc, &err) == NULL);
    CHECK_INT(err.code, JN_EINVAL);
    lc.listen = "[::1]:0";
    {
        struct jn_listener *l = jn_listener_new(base, &lc, &err);
        /* IPv6 loopback may be off in a container; when it binds it has a port. */
        if (l) {
            CHECK(jn_listener_port(l) > 0);
        }
        jn_listener_free(l);
    }
    jn_listener_free(NULL);
}

int main(void)
{
    struct event_base *base = event_base_new();

    CHECK(base != NULL);
    test_max_connections(base);
    test_per_ip(base);
    test_emfile(base);
    test_wait_mode(base);
    test_refuse_slots(base);
    test_bad_address(base);
    event_base_free(base);
    TEST_MAIN_END();
}
