/*
 * libFuzzer target for the HTTP ingress: the http channel's real server side (channels/http.c:
 * the evhttp setup and limits, connection accounting, request deadline, handler, message
 * building and answers), fed each input as the raw bytes of one client connection.
 *
 * evhttp 2.1 can only serve sockets it accepts itself, and exits the process on a peer address
 * getnameinfo cannot print (AF_UNIX), so the "socketpair" is a loopback TCP connection to a
 * jn_listener on 127.0.0.1:0, handed to the channel with jn_http__in_start_on(). The
 * client writes the input, shuts down its sending side and reads until the server closes; the
 * server must close (answer or not) in bounded time and hold no connection slot afterwards.
 * The broker is not linked: jn_ingest below answers on the next loop turn, refusing some
 * messages (JN_EFULL) so both answers are exercised. ASan/LSan catch crashes and leaks (a
 * request freed twice or never, a message not released).
 *
 * CMakeLists.txt compiles channels/http.c into this target so libFuzzer sees its coverage.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_int.h"
#include "jn_mem.h"
#include "jn_msg.h"

extern const struct jn_channel_def jn_channel_http;

static struct event_base *base;
static struct jn_channel ch;
static struct http_conf conf;
static struct sockaddr_in addr;
static int tickets; /* outstanding */

/* ---- the broker side, stubbed ---- */

struct jn_ticket {
    struct event *ev;
    struct jn_msg *msg;
    jn_accept_fn cb;
    void *arg;
};

static void ticket_fire(evutil_socket_t fd, short what, void *arg)
{
    struct jn_ticket *t = arg;

    if (t->cb) {
        /* Refuse one message in four, by its size, as a full journal would. */
        if (t->msg->len % 4 == 3) {
            struct jn_err e;
            jn_err_set(&e, JN_EFULL, "the journal is full; try again later");
            t->cb(t->arg, JN_EFULL, t->msg, &e);
        } else {
            t->cb(t->arg, 0, t->msg, NULL);
        }
    }
    jn_msg_unref(&t->msg);
    event_free(t->ev);
    jn_free(t);
    tickets--;
}

struct jn_ticket *jn_ingest(struct jn_channel *c, struct jn_msg *msg, jn_accept_fn cb, void *arg)
{
    struct jn_ticket *t = jn_calloc(1, sizeof(*t));

    if (t == NULL || (t->ev = event_new(c->base, -1, 0, ticket_fire, t)) == NULL) {
        jn_free(t);
        jn_msg_unref(&msg);
        return NULL;
    }
    memcpy(msg->id, "01HZZZZZZZZZZZZZZZZZZZZZZZ", JN_ID_LEN + 1);
    t->msg = msg;
    t->cb = cb;
    t->arg = arg;
    event_active(t->ev, EV_TIMEOUT, 1);
    tickets++;
    return t;
}

void jn_ingest_forget(struct jn_ticket *t)
{
    if (t) {
        t->cb = NULL;
    }
}

/* respond: is not configured here, so the outcome path never runs. */
struct jn_ticket *jn_ingest_outcome(struct jn_channel *c, struct jn_msg *msg, jn_accept_fn cb,
                                    jn_outcome_fn outcome, void *arg)
{
    abort();
}

void jn_ingest_reply_from(struct jn_ticket *t, const char *out_channel)
{
    abort();
}

void jn_ingest_reply_via(struct jn_ticket *t, const struct jn_strlist *services)
{
    abort();
}

/* http_out.c is linked with the channel def; it never runs here. */
int jn_delivery_wants_reply(const struct jn_delivery *d)
{
    abort();
}

void jn_delivery_reply(struct jn_delivery *d, const void *bytes, size_t len)
{
    abort();
}

struct jn_msg *jn_delivery_msg(const struct jn_delivery *d)
{
    abort();
}

void jn_delivery_done(struct jn_delivery *d, enum jn_send_result r, const char *reason)
{
    abort();
}

/* ---- setup ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char listen[] = "127.0.0.1:0", path[] = "/ingest", name[] = "in";
    struct jn_listener_conf lc = {listen, "http.in", &conf.net, 4, JN_LISTENER_WAIT, NULL, NULL,
                                  NULL, NULL, NULL, 0};
    struct jn_listener *lst = NULL;
    struct jn_err err;

    jn_log_level = JN_LOG_ERROR;
    base = event_base_new();
    conf.listen = listen;
    conf.path = path;
    conf.max_message = 4096; /* small, so 413 is reachable */
    conf.read_timeout = 1000;
    conf.request_timeout = 2000;
    conf.max_connections = 4;
    conf.net.backlog = 16;
    conf.net.accept_pause = 250;
    ch.def = &jn_channel_http;
    ch.name = name;
    snprintf(ch.log_prefix, sizeof(ch.log_prefix), "http.in");
    ch.dir = JN_DIR_IN;
    ch.conf = &conf;
    ch.base = base;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (base != NULL) {
        lst = jn_listener_new(base, &lc, &err);
    }
    if (lst != NULL) {
        addr.sin_port = htons((unsigned short)jn_listener_port(lst));
    }
    if (base == NULL || lst == NULL || jn_channel_http.in->init(&ch, &err) != 0 ||
        jn_http__in_start_on(&ch, lst, &err) != 0) {
        fprintf(stderr, "fuzz_http_in: setup failed\n");
        abort();
    }
    return 0;
}

/* ---- one connection ---- */

struct client {
    int fd;
    const uint8_t *data;
    size_t size, off;
    int closed;  /* the server closed */
    int expired; /* the server did not close in time */
    struct event *ev;
};

static void client_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;
    char buf[4096];

    if ((what & EV_WRITE) && cl->off < cl->size) {
        ssize_t n = send(fd, cl->data + cl->off, cl->size - cl->off, MSG_NOSIGNAL);
        if (n > 0) {
            cl->off += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            cl->off = cl->size; /* the server closed on us: stop writing */
        }
    }
    if (cl->off == cl->size && (what & EV_WRITE)) {
        shutdown(fd, SHUT_WR);
        event_del(cl->ev);
        event_assign(cl->ev, base, fd, EV_READ | EV_PERSIST, client_cb, cl);
        event_add(cl->ev, NULL);
    }
    if (what & EV_READ) {
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n > 0) {
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                cl->closed = 1;
                event_base_loopbreak(base);
            }
            break;
        }
    }
}

static void guard_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;

    cl->expired = 1;
    event_base_loopbreak(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct client cl = {.data = data, .size = size};
    struct timeval guard_tv = {5, 0};
    struct event *guard;

    cl.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (cl.fd < 0 || (connect(cl.fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 &&
                      errno != EINPROGRESS)) {
        perror("fuzz_http_in: connect");
        abort();
    }
    cl.ev = event_new(base, cl.fd, EV_READ | EV_WRITE | EV_PERSIST, client_cb, &cl);
    guard = evtimer_new(base, guard_cb, &cl);
    event_add(cl.ev, NULL);
    evtimer_add(guard, &guard_tv);
    while (!cl.closed && !cl.expired) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(cl.ev);
    event_free(guard);
    close(cl.fd);
    /* Answers still queued for connections that are gone. */
    while (tickets > 0) {
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    if (cl.expired) {
        /* The request deadline (2 s) and the idle timeout (1 s) should have closed it. */
        fprintf(stderr, "fuzz_http_in: the server kept the connection open for 5 s\n");
        abort();
    }
    if (jn_http__in_open(&ch) != 0) {
        fprintf(stderr, "fuzz_http_in: %zu connection slots still taken after the close\n",
                jn_http__in_open(&ch));
        abort();
    }
    return 0;
}
