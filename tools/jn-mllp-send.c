/*
 * jn-mllp-send: an MLLP sender for people. Sends the HL7 v2 messages in files to an MLLP
 * listener, one frame at a time per connection, waits for each ACK, prints it, and sums up.
 * With -c and -n it is a quick load generator.
 *
 *   jn-mllp-send 127.0.0.1:2575 adt.hl7                 send, print each ACK
 *   jn-mllp-send -q -c 8 -n 10000 -u 127.0.0.1:2575 adt.hl7   10000 messages on 8 connections
 *
 * What it fixes compared with python3-hl7's mllp_send (stack.md §9): a timeout on every ACK,
 * MSA-2 checked against the MSH-10 sent, a plain file with any line ends is taken as it is,
 * batches (FHS/BHS ... BTS/FTS) are sent message by message, a non-zero exit when any message
 * was not accepted, and frames read until <FS><CR> rather than with one recv().
 *
 * Input: a file holding MLLP frames (<VT>...<FS><CR>) is split on them; any other file is
 * split into messages at each segment starting "MSH", its line ends (CR, LF or CRLF) becoming
 * CR; FHS, BHS, BTS and FTS segments are left out.
 *
 * Exit code: 0 when every message got AA or CA, 1 otherwise, 2 on a usage or input error.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hl7.h"
#include "jn_buf.h"
#include "jn_mem.h"
#include "mllp_proto.h"

struct msg {
    char *p;
    size_t len;
};

static struct {
    const char *host;
    const char *port;
    int conns;
    long count;   /* messages to send in all; 0 = each message once */
    int timeout;  /* seconds per ACK */
    int quiet;
    int unique;
    struct msg *msgs;
    size_t nmsgs;
} opt = {NULL, NULL, 1, 0, 30, 0, 0, NULL, 0};

static atomic_long next_i;
static atomic_long n_ok, n_err, n_rej, n_fail;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void usage(void)
{
    fprintf(stderr,
            "usage: jn-mllp-send [-c CONNS] [-n COUNT] [-t SECONDS] [-u] [-q] HOST:PORT FILE...\n"
            "  -c CONNS    connections in parallel (default 1)\n"
            "  -n COUNT    messages to send in all, cycling through the files' messages\n"
            "              (default: each message once)\n"
            "  -t SECONDS  how long to wait for each ACK (default 30)\n"
            "  -u          make each MSH-10 unique (MSH-10 + \"-\" + sequence number), so that\n"
            "              repeated sends are not taken as duplicates\n"
            "  -q          do not print the ACKs, only the summary\n");
    exit(2);
}

static void add_msg(struct jn_buf *b)
{
    struct msg *v;

    if (b->len == 0) {
        return;
    }
    v = jn_realloc(opt.msgs, (opt.nmsgs + 1) * sizeof(*v));
    if (v == NULL) {
        fprintf(stderr, "jn-mllp-send: out of memory\n");
        exit(2);
    }
    opt.msgs = v;
    opt.msgs[opt.nmsgs].len = b->len;
    opt.msgs[opt.nmsgs].p = jn_buf_steal(b);
    opt.nmsgs++;
}

static void load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct jn_buf all = JN_BUF_INIT, cur = JN_BUF_INIT;
    char tmp[65536];
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "jn-mllp-send: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if (jn_buf_append(&all, tmp, n) != 0) {
            fprintf(stderr, "jn-mllp-send: out of memory\n");
            exit(2);
        }
    }
    fclose(f);
    if (all.len && memchr(all.p, JN_MLLP_VT, all.len)) {
        /* Framed: each <VT> ... <FS> is a message, as it is. */
        struct jn_mllp_framer fr;
        size_t off = 0;
        jn_mllp_framer_init(&fr, all.len + 1, 0);
        while (off < all.len) {
            struct jn_mllp_event ev;
            size_t used = 0;
            jn_mllp_feed(&fr, all.p + off, all.len - off, &used, &ev);
            off += used;
            if (ev.kind == JN_MLLP_EV_FRAME) {
                jn_buf_append(&cur, ev.data, ev.len);
                add_msg(&cur);
            } else if (ev.kind != JN_MLLP_EV_NONE) {
                fprintf(stderr, "jn-mllp-send: %s: broken framing near byte %zu\n", path, off);
                exit(2);
            }
        }
        jn_mllp_framer_free(&fr);
    } else {
        /* Plain text: one segment per line, a message from each MSH. */
        size_t i = 0;
        while (i < all.len) {
            size_t s = i;
            while (i < all.len && all.p[i] != '\r' && all.p[i] != '\n') {
                i++;
            }
            if (i > s) {
                const char *seg = all.p + s;
                size_t sl = i - s;
                if (sl >= 3 && memcmp(seg, "MSH", 3) == 0) {
                    add_msg(&cur);
                }
                if (!(sl >= 3 && (memcmp(seg, "FHS", 3) == 0 || memcmp(seg, "BHS", 3) == 0 ||
                                  memcmp(seg, "BTS", 3) == 0 || memcmp(seg, "FTS", 3) == 0))) {
                    if (cur.len == 0 && (sl < 3 || memcmp(seg, "MSH", 3) != 0)) {
                        fprintf(stderr, "jn-mllp-send: %s: a segment before the first MSH\n",
                                path);
                        exit(2);
                    }
                    jn_buf_append(&cur, seg, sl);
                    jn_buf_putc(&cur, '\r');
                }
            }
            while (i < all.len && (all.p[i] == '\r' || all.p[i] == '\n')) {
                i++;
            }
        }
        add_msg(&cur);
    }
    jn_buf_reset(&all);
    jn_buf_reset(&cur);
}

static int dial(void)
{
    struct addrinfo hints, *res, *ai;
    int fd = -1, one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(opt.host, opt.port, &hints, &res) != 0) {
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one ACK frame into *ack (unframed). 0, or -1 with why set. */
static int read_ack(int fd, struct jn_mllp_framer *fr, struct jn_buf *pend, struct jn_buf *ack,
                    const char **why)
{
    long long deadline = (long long)time(NULL) + opt.timeout;

    for (;;) {
        while (pend->len > 0) {
            struct jn_mllp_event ev;
            size_t used = 0;
            jn_mllp_feed(fr, pend->p, pend->len, &used, &ev);
            memmove(pend->p, pend->p + used, pend->len - used);
            pend->len -= used;
            if (ev.kind == JN_MLLP_EV_FRAME) {
                ack->len = 0;
                jn_buf_append(ack, ev.data, ev.len);
                return 0;
            }
            if (ev.kind != JN_MLLP_EV_NONE) {
                *why = "the answer is not a well-formed MLLP frame";
                return -1;
            }
        }
        {
            struct pollfd pfd = {fd, POLLIN, 0};
            long long left = deadline - (long long)time(NULL);
            char tmp[16384];
            ssize_t r;
            if (left <= 0 || poll(&pfd, 1, (int)(left * 1000)) <= 0) {
                *why = "no ACK within the timeout";
                return -1;
            }
            r = recv(fd, tmp, sizeof(tmp), 0);
            if (r <= 0) {
                *why = "the connection closed before the ACK";
                return -1;
            }
            jn_buf_append(pend, tmp, (size_t)r);
        }
    }
}

/* Message i, with a unique MSH-10 when asked. */
static void build(long i, struct jn_buf *out, struct jn_buf *ctl)
{
    const struct msg *m = &opt.msgs[(size_t)i % opt.nmsgs];
    struct jn_hl7_path p;
    struct jn_hl7_span s;

    out->len = 0;
    ctl->len = 0;
    jn_hl7_path_parse("MSH-10", 6, &p, NULL);
    if (jn_hl7_lookup(m->p, m->len, &p, &s) != 1) {
        jn_buf_append(out, m->p, m->len);
        return;
    }
    jn_buf_append(ctl, s.p, s.len);
    if (!opt.unique) {
        jn_buf_append(out, m->p, m->len);
        return;
    }
    jn_buf_printf(ctl, "-%ld", i + 1);
    jn_buf_append(out, m->p, (size_t)(s.p - m->p));
    jn_buf_append(out, ctl->p, ctl->len);
    jn_buf_append(out, s.p + s.len, m->len - (size_t)(s.p + s.len - m->p));
}

static void report(long i, const char *ctl, const char *ack, size_t len, const char *what)
{
    if (opt.quiet && what == NULL) {
        return;
    }
    pthread_mutex_lock(&out_lock);
    if (what) {
        fprintf(stderr, "message %ld (MSH-10 %s): %s\n", i + 1, ctl, what);
    }
    if (!opt.quiet && ack) {
        for (size_t k = 0; k < len; k++) {
            putchar(ack[k] == '\r' ? '\n' : ack[k]);
        }
        if (len == 0 || ack[len - 1] != '\r') {
            putchar('\n');
        }
        putchar('\n');
    }
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void *worker(void *arg)
{
    struct jn_buf msg = JN_BUF_INIT, ctl = JN_BUF_INIT, frame = JN_BUF_INIT;
    struct jn_buf pend = JN_BUF_INIT, ack = JN_BUF_INIT;
    struct jn_mllp_framer fr;
    long total = opt.count ? opt.count : (long)opt.nmsgs;
    int fd = -1;

    (void)arg;
    jn_mllp_framer_init(&fr, 1 << 20, 0);
    for (;;) {
        long i = atomic_fetch_add(&next_i, 1);
        const char *why = NULL;
        struct jn_mllp_ack a;
        if (i >= total) {
            break;
        }
        build(i, &msg, &ctl);
        frame.len = 0;
        jn_mllp_frame(msg.p, msg.len, &frame);
        if (fd < 0) {
            fd = dial();
            pend.len = 0;
            jn_mllp_framer_free(&fr);
            jn_mllp_framer_init(&fr, 1 << 20, 0);
        }
        if (fd < 0) {
            why = "cannot connect";
        } else if (write_all(fd, frame.p, frame.len) != 0) {
            why = "cannot send";
        } else if (read_ack(fd, &fr, &pend, &ack, &why) == 0) {
            if (jn_mllp_ack_read(ack.p, ack.len, &a, NULL) != 0) {
                why = "the answer is not an HL7 ACK (no MSA)";
            } else if (a.ctlid.len != ctl.len || memcmp(a.ctlid.p, ctl.p, ctl.len) != 0) {
                why = "MSA-2 does not match the MSH-10 sent";
            }
        }
        if (why) {
            atomic_fetch_add(&n_fail, 1);
            report(i, ctl.p ? ctl.p : "", ack.len ? ack.p : NULL, ack.len, why);
            if (fd >= 0) {
                close(fd); /* a late ACK on this connection would answer the wrong message */
                fd = -1;
            }
            ack.len = 0;
            continue;
        }
        if (a.code[1] == 'A') {
            atomic_fetch_add(&n_ok, 1);
        } else if (a.code[1] == 'E') {
            atomic_fetch_add(&n_err, 1);
        } else {
            atomic_fetch_add(&n_rej, 1);
        }
        report(i, ctl.p, ack.p, ack.len, NULL);
        ack.len = 0;
    }
    if (fd >= 0) {
        close(fd);
    }
    jn_mllp_framer_free(&fr);
    jn_buf_reset(&msg);
    jn_buf_reset(&ctl);
    jn_buf_reset(&frame);
    jn_buf_reset(&pend);
    jn_buf_reset(&ack);
    return NULL;
}

int main(int argc, char **argv)
{
    int c;
    char *colon;
    pthread_t *t;
    struct timespec t0, t1;
    double secs;
    long sent;

    while ((c = getopt(argc, argv, "c:n:t:uqh")) != -1) {
        switch (c) {
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'n':
            opt.count = atol(optarg);
            break;
        case 't':
            opt.timeout = atoi(optarg);
            break;
        case 'u':
            opt.unique = 1;
            break;
        case 'q':
            opt.quiet = 1;
            break;
        default:
            usage();
        }
    }
    if (argc - optind < 2 || opt.conns < 1 || opt.conns > 1024 || opt.count < 0 ||
        opt.timeout < 1) {
        usage();
    }
    opt.host = jn_strdup(argv[optind]);
    colon = opt.host ? strrchr(opt.host, ':') : NULL;
    if (colon == NULL) {
        usage();
    }
    *colon = '\0';
    opt.port = colon + 1;
    if (opt.host[0] == '[') {
        opt.host++;
        if (colon[-1] == ']') {
            colon[-1] = '\0';
        }
    }
    for (int i = optind + 1; i < argc; i++) {
        load_file(argv[i]);
    }
    if (opt.nmsgs == 0) {
        fprintf(stderr, "jn-mllp-send: no messages in the files\n");
        return 2;
    }
    t = jn_calloc((size_t)opt.conns, sizeof(*t));
    if (t == NULL) {
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < opt.conns; i++) {
        pthread_create(&t[i], NULL, worker, NULL);
    }
    for (int i = 0; i < opt.conns; i++) {
        pthread_join(t[i], NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    sent = n_ok + n_err + n_rej + n_fail;
    fprintf(stderr, "jn-mllp-send: %ld message(s) on %d connection(s) in %.3f s (%.0f/s): "
            "%ld accepted (AA/CA), %ld error (AE/CE), %ld rejected (AR/CR), %ld failed\n",
            sent, opt.conns, secs, secs > 0 ? (double)sent / secs : 0.0, (long)n_ok,
            (long)n_err, (long)n_rej, (long)n_fail);
    for (size_t i = 0; i < opt.nmsgs; i++) {
        jn_free(opt.msgs[i].p);
    }
    jn_free(opt.msgs);
    jn_free(t);
    return n_ok == sent ? 0 : 1;
}
