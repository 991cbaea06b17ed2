/*
 * jn-sink: the HTTP receiver of the HTTP -> HTTP OUT benchmark (issue 6).
 *
 * It answers every request at once with 200 and an empty body, so the number measured is
 * junction's delivery path and not the receiver's work. It counts requests and body bytes;
 * GET /stats answers {"requests":N,"bytes":B} (not counted), which jn-bench --count-url reads
 * before and after its window to get deliveries per second. Built on libevent's evhttp, the
 * same server junction's HTTP IN uses, with TCP_NODELAY on the listener (stack.md §6).
 *
 *   jn-sink [--listen 127.0.0.1:PORT] [--status CODE]
 *
 * Prints "listening on HOST:PORT" once bound (PORT 0 picks a free one); SIGTERM or SIGINT
 * prints the totals and exits 0.
 */
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

struct sink {
    struct event_base *base;
    int status;
    uint64_t requests, bytes;
};

static void handle(struct evhttp_request *req, void *arg)
{
    struct sink *s = arg;
    const char *uri = evhttp_request_get_uri(req);

    if (evhttp_request_get_command(req) == EVHTTP_REQ_GET && uri && strcmp(uri, "/stats") == 0) {
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            evhttp_send_error(req, 500, NULL);
            return;
        }
        evbuffer_add_printf(out, "{\"requests\":%" PRIu64 ",\"bytes\":%" PRIu64 "}\n",
                            s->requests, s->bytes);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
        return;
    }
    s->requests++;
    s->bytes += evbuffer_get_length(evhttp_request_get_input_buffer(req));
    evhttp_send_reply(req, s->status, s->status < 300 ? "OK" : "Error", NULL);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct sink *s = arg;

    (void)sig;
    (void)what;
    event_base_loopbreak(s->base);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"status", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *laddr = "127.0.0.1:0";
    struct sink s = {NULL, 200, 0, 0};
    struct evhttp *http;
    struct evhttp_bound_socket *bs;
    struct event *ev_term, *ev_int;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char host[256];
    const char *colon;
    int opt, one = 1;

    while ((opt = getopt_long(argc, argv, "l:s:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            laddr = optarg;
            break;
        case 's':
            s.status = atoi(optarg);
            if (s.status < 100 || s.status > 599) {
                fprintf(stderr, "jn-sink: --status %s is not an HTTP status\n", optarg);
                return 2;
            }
            break;
        case 'h':
            printf("usage: jn-sink [--listen 127.0.0.1:PORT] [--status CODE]\n");
            return 0;
        default:
            fprintf(stderr, "usage: jn-sink [--listen 127.0.0.1:PORT] [--status CODE]\n");
            return 2;
        }
    }
    colon = strrchr(laddr, ':');
    if (colon == NULL || (size_t)(colon - laddr) >= sizeof(host)) {
        fprintf(stderr, "jn-sink: --listen %s is not host:port\n", laddr);
        return 2;
    }
    memcpy(host, laddr, (size_t)(colon - laddr));
    host[colon - laddr] = '\0';
    signal(SIGPIPE, SIG_IGN);
    s.base = event_base_new();
    http = s.base ? evhttp_new(s.base) : NULL;
    if (http == NULL) {
        fprintf(stderr, "jn-sink: cannot create the HTTP server\n");
        return 1;
    }
    evhttp_set_gencb(http, handle, &s);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT);
    bs = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)atoi(colon + 1));
    if (bs == NULL) {
        fprintf(stderr, "jn-sink: cannot listen on %s\n", laddr);
        return 1;
    }
    /* Accepted sockets inherit it: no Nagle/delayed-ACK stall on the small answers. */
    setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &sl) == 0) {
        printf("listening on %s:%u\n", host, (unsigned)ntohs(sa.sin_port));
        fflush(stdout);
    }
    ev_term = evsignal_new(s.base, SIGTERM, stop_cb, &s);
    ev_int = evsignal_new(s.base, SIGINT, stop_cb, &s);
    if (ev_term == NULL || ev_int == NULL) {
        fprintf(stderr, "jn-sink: out of memory\n");
        return 1;
    }
    evsignal_add(ev_term, NULL);
    evsignal_add(ev_int, NULL);
    event_base_dispatch(s.base);
    printf("jn-sink: %" PRIu64 " requests, %" PRIu64 " body bytes\n", s.requests, s.bytes);
    event_free(ev_term);
    event_free(ev_int);
    evhttp_free(http);
    event_base_free(s.base);
    return 0;
}
