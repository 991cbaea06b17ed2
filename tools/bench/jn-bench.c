/*
 * jn-bench: junction's load generator (issue 6; method in docs/performance.md).
 *
 * Closed-loop load on libevent: --conns connections, each with exactly one request in flight;
 * the next one leaves as soon as the answer is in. That is what MLLP demands (one message,
 * then wait for its ACK), and using the same shape for HTTP keeps the two comparable: the
 * offered load is set by the number of connections, not by a rate (unless --rate caps it, see
 * below). The shape is wrk's (fixed
 * connections, a warm-up that is not counted, a latency histogram), but the client is written
 * on raw bufferevents rather than evhttp: the generator shares the machine's two cores with
 * junction, so every microsecond it spends per request is taken from the broker it measures.
 *
 * --rate R paces the load (issue 20's sustained-rate harness, tools/bench/sustained.sh): the
 * requests of all connections leave at most R a second, on a fixed schedule of one every 1/R s
 * (a connection whose slot is not due waits on a timer; a slot missed because every connection
 * was busy is not made up later, so no burst follows a stall). The offered rate is then R,
 * or less when the connections cannot keep up (the report shows what was reached).
 *
 * Latency goes into a log-linear histogram (HdrHistogram's idea: 64 linear sub-buckets per
 * power of two above 128 ns, so under 1% error), a fixed 30 KB however long the run.
 *
 * Modes:
 *   http      POST --size bytes to --url, keep-alive
 *   mllp      <VT>HL7<FS><CR> to --url mllp://host:port, wait for the ACK frame; a built-in
 *             ADT^A01 (or --file) with a unique MSH-10 per message
 *   mqtt      MQTT 3.1.1 to --url mqtt://host:port/topic: CONNECT (clean session), then PUBLISH
 *             at --qos 1 or 2 with --size bytes, --inflight of them per connection at once (a
 *             new one leaves as each is acknowledged). Latency is PUBLISH -> PUBACK (QoS 1) or
 *             PUBLISH -> PUBREC (QoS 2: the broker has the message; the PUBREL / PUBCOMP that
 *             follows frees the packet id). The answer comes from the MQTT server: an outside
 *             broker (then what junction made of it is the files in --count-dir, delivered/s)
 *             or junction's own listener (then the PUBACK is junction's, after the commit)
 *             With --rate R the PUBLISHes are paced to R per second in all (open loop, the
 *             window still bounding what is in flight): the rate a subscriber must keep up with.
 *   ws        WebSocket to --url ws://host:port/path (wss:// with TLS): the upgrade, then one
 *             masked binary frame of --size bytes at a time, waiting for junction's text
 *             answer ({"ack":"<id>"} after the commit is ok; {"nack":...} an error); pings
 *             are answered. Latency is frame -> ack
 *   mqtt-idle --conns MQTT connections opened, CONNACKed and then held without traffic (a
 *             PINGREQ every 30 s) for --duration: the idle-device memory check with --pid.
 *             ok is the connections up; latency is connect -> CONNACK
 *   wait      poll --url until one request is accepted (2xx / ACK AA; mqtt: a probe published
 *             every 50 ms until a file shows up in --count-dir, or without it the broker's
 *             CONNACK); prints the time taken, from --t0 (epoch ns) if given: the
 *             start-to-accepting measurement
 *   drain     no load: wait until --count files are in the --count-dir folders (a backlog that
 *             junction consumes by itself, e.g. from Kafka) and report the time from --t0 to
 *             the first and to the last, and the rate in between
 *   freeport  print --conns free 127.0.0.1 ports (bound at once, so they differ)
 *
 * TLS: --url https://... (mode http) and mllps://... (mode mllp) speak TLS 1.2+ through
 * bufferevent_openssl, one full handshake per connection (kept alive after that). The
 * server's certificate is not verified: this measures the cost of the encryption on loopback,
 * not a trust decision.
 *
 * Output: one human line on stdout and, with --json, one JSON object on the next line.
 * Exit status: 0 when at least one request succeeded in the measured window, 1 otherwise,
 * 2 on bad usage.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#define BENCH_MAX_DIRS 8
#define BENCH_HEAD_MAX (64 * 1024)   /* a response head larger than this is a protocol error */
#define BENCH_FRAME_MAX (1 << 20)    /* an ACK frame larger than this is a protocol error */
#define BENCH_MQTT_KEEPALIVE 60      /* s; a connection is never idle that long during a run */
#define BENCH_MQTT_TOPIC "jn/bench"  /* when the mqtt:// URL has no path */
#define BENCH_MQTT_PING 30           /* s between PINGREQs in mqtt-idle */
#define BENCH_IDLE_OPENING 128       /* mqtt-idle: connections being opened at once */

/* ---- histogram ---- */

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_HALF (HIST_SUB / 2)
/* Values below HIST_SUB are exact; above, each power of two is split into HIST_HALF buckets.
 * The largest index (msb 63) is (63 - HIST_SUB_BITS + 1) * HIST_HALF + HIST_SUB - 1. */
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_HALF + HIST_HALF)

struct hist {
    uint64_t n, max, sum;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - HIST_SUB_BITS + 1;
    return shift * HIST_HALF + (unsigned)(v >> shift);
}

/* The middle of bucket idx: the value reported for every sample that fell into it. */
static uint64_t hist_value(unsigned idx)
{
    unsigned shift, top;

    if (idx < HIST_SUB) {
        return idx;
    }
    shift = idx / HIST_HALF - 1;
    top = idx - shift * HIST_HALF;
    return ((uint64_t)top << shift) + ((1ull << shift) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max) {
        h->max = v;
    }
}

/* The smallest recorded value with at least p% of the samples at or below it. */
static uint64_t hist_pct(const struct hist *h, double p)
{
    double r = p / 100.0 * (double)h->n;
    uint64_t rank = (uint64_t)r, seen = 0;

    if (h->n == 0) {
        return 0;
    }
    if ((double)rank < r) {
        rank++;
    }
    if (rank == 0) {
        rank = 1;
    }
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- state ---- */

/* The protocol of a load (wait polls with the protocol of its --url). */
enum mode { MODE_HTTP, MODE_MLLP, MODE_MQTT, MODE_MQTT_IDLE, MODE_WS };

/* E_REFUSED: an MQTT CONNACK with a non-zero return code. */
enum ekind { E_NONE, E_CONNECT, E_TIMEOUT, E_CLOSED, E_PROTO, E_REFUSED };

/* ACK kinds that count as errors, by index. */
enum { ACK_AE, ACK_AR, ACK_CE, ACK_CR, ACK_OTHER, ACK_MISMATCH, ACK__COUNT };
static const char *const ack_names[ACK__COUNT] = {"AE", "AR", "CE", "CR", "other", "id_mismatch"};

struct errs {
    uint64_t status[600]; /* non-2xx answers by HTTP status (0: not a number) */
    uint64_t connect, timeout, closed, proto;
    uint64_t ack[ACK__COUNT];
    uint64_t connack;    /* mqtt: CONNACK refused */
    uint64_t puback_id;  /* mqtt: a PUBACK/PUBREC/PUBCOMP for a packet id not in that state */
};

/* HTTP response parser states. */
enum { ST_HEAD, ST_BODY, ST_CHUNK_SIZE, ST_CHUNK_DATA, ST_TRAILER, ST_UNTIL_CLOSE };

struct bench;

struct conn {
    struct bench *b;
    struct bufferevent *bev;
    struct event *retry;  /* reconnect delay */
    struct event *pace;   /* --rate: waits for this connection's send slot */
    int connecting;       /* TCP connect, and for mqtt until the CONNACK */
    int up;               /* mqtt-idle: CONNACKed, counted in b->up */
    int inflight;         /* requests out (mqtt: PUBLISHes not yet PUBACKed / PUBCOMPed) */
    uint64_t sent_ns;
    /* http */
    int st;
    size_t body_left;
    int status;
    int close_after;
    /* mllp */
    char ctl[32];         /* MSH-10 of the message in flight */
    /* mqtt: packet ids 1..--inflight; a free one is on the stack ids[0..nfree) */
    uint64_t *id_ns;      /* [id - 1]: when the PUBLISH with that id left */
    unsigned char *id_st; /* [id - 1]: 0 free, 1 waiting for PUBACK/PUBREC, 2 for PUBCOMP */
    uint16_t *ids;
    int nfree;
};

struct bench {
    enum mode mode;
    struct event_base *base;
    SSL_CTX *ssl_ctx;        /* https:// or mllps://; NULL: plain TCP */
    struct sockaddr_storage addr;
    int addrlen;
    char url[1024];
    char host[256];
    int port;
    char path[1024];
    int nconns;
    int mqtt_inflight;       /* mqtt: PUBLISHes in flight per connection (1..65535) */
    int qos;                 /* mqtt: 1 or 2 */
    uint64_t up;             /* mqtt-idle: connections CONNACKed now */
    int next_start;          /* mqtt-idle: the next connection to open */
    double tokens;           /* mqtt with --rate: PUBLISHes that may leave now */
    uint64_t pace_ns;        /* when tokens were last added */
    int pace_next;           /* the connection the next pacing round starts with */
    double duration, warmup, timeout;
    size_t size;
    uint64_t count;          /* stop after this many successes (0: no limit) */
    const char *file;
    const char *count_dirs[BENCH_MAX_DIRS];
    int ndirs;
    const char *count_url;
    const char *count_key; /* with count_url: sum "key":N instead of the first number */
    pid_t pid;
    int json;
    int64_t t0_epoch_ns;     /* wait mode: measure from here */
    double rate;             /* --rate: requests (mqtt: PUBLISHes) per second of all
                              * connections together (0: no cap, closed loop) */
    uint64_t next_slot_ns;   /* --rate: when the next request may leave */

    /* prepared requests */
    char *req;               /* http: head + body; mllp: VT + text before MSH-10;
                              * mqtt: PUBLISH fixed header and topic */
    size_t reqlen;
    char *post;              /* mllp: text after MSH-10 + FS CR; mqtt: the payload */
    size_t postlen;
    uint64_t ctl_seq;

    struct conn *conns;
    int measuring, stopping;
    uint64_t t_begin_ns, t_start_ns, t_end_ns;
    uint64_t ok, ok_total;
    struct hist hist;
    struct errs err;
    uint64_t err_warmup;

    long rss_idle, rss_peak, rss_end;
    long anon_idle, anon_peak;
    int target_gone;
    long long cpu_target0, cpu_target1;
    double cpu_self0, cpu_self1;
    long long delivered0, delivered1;

    struct event *ev_warm, *ev_end, *ev_rss, *ev_int, *ev_term, *ev_ping, *ev_pace;
    struct timeval tv_timeout;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t epoch_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "jn-bench: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* ---- /proc sampling ---- */

/* VmRSS in kB, or -1; *anon gets RssAnon. VmRSS also counts the pages of LMDB's map that the
 * process has touched (file-backed, RssFile): page cache the kernel can drop, unlike the heap
 * (RssAnon), so both are reported. */
static long read_rss_kb(pid_t pid, long *anon)
{
    char path[64], line[256];
    FILE *f;
    long kb = -1;

    *anon = -1;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        } else if (strncmp(line, "RssAnon:", 8) == 0) {
            *anon = strtol(line + 8, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime + stime of pid in clock ticks, or -1. */
static long long read_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    unsigned long long ut, st;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and ')': fields are counted from the last ')'.
     * After it come field 3 (state) ... field 14 (utime) and 15 (stime). */
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                            &ut, &st) != 2) {
        return -1;
    }
    return (long long)(ut + st);
}

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void sample_rss(struct bench *b)
{
    long kb, anon;

    if (b->pid <= 0 || b->target_gone) {
        return;
    }
    kb = read_rss_kb(b->pid, &anon);
    if (kb < 0) {
        b->target_gone = 1;
        return;
    }
    b->rss_end = kb;
    if (kb > b->rss_peak) {
        b->rss_peak = kb;
    }
    if (anon > b->anon_peak) {
        b->anon_peak = anon;
    }
}

/* ---- blocking helpers (wait mode, --count-url): small, outside the measured window ---- */

static int blocking_connect(const struct bench *b, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)&b->addr, (socklen_t)b->addrlen) != 0) {
        close(fd);
        return -1;
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

/* Sends req and reads the answer until the peer closes (HTTP with Connection: close) or, with
 * stop != NULL, until stop is seen. Returns the bytes read (NUL-terminated), or -1. */
static ssize_t blocking_exchange(const struct bench *b, const char *req, size_t reqlen,
                                 const char *stop, char *resp, size_t cap, int timeout_ms)
{
    int fd = blocking_connect(b, timeout_ms);
    SSL *ssl = NULL;
    size_t got = 0;

    if (fd < 0) {
        return -1;
    }
    if (b->ssl_ctx != NULL) {
        ssl = SSL_new(b->ssl_ctx);
        if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1 ||
            SSL_write(ssl, req, (int)reqlen) != (int)reqlen) {
            SSL_free(ssl);
            close(fd);
            return -1;
        }
    } else if (write_all(fd, req, reqlen) != 0) {
        close(fd);
        return -1;
    }
    while (got + 1 < cap) {
        ssize_t r = ssl ? SSL_read(ssl, resp + got, (int)(cap - 1 - got))
                        : recv(fd, resp + got, cap - 1 - got, 0);
        if (r < 0 && errno == EINTR && ssl == NULL) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
        resp[got] = '\0';
        if (stop && memmem(resp, got, stop, strlen(stop))) {
            break;
        }
    }
    SSL_free(ssl);
    close(fd);
    resp[got] = '\0';
    return got ? (ssize_t)got : -1;
}

/* The first number in the body of GET url (jn-sink's /stats), or with key the sum of every
 * "key":N in it (junction's admin /api/v1/channels, "delivered"), or -1. */
static long long count_from_url(const char *url, const char *key)
{
    struct bench tmp;
    char req[1200], resp[16384];
    const char *p, *body;
    const char *hp = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    const char *slash = strchr(hp, '/');
    char hostport[300];
    size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
    int n;

    memset(&tmp, 0, sizeof(tmp));
    if (hl >= sizeof(hostport)) {
        return -1;
    }
    memcpy(hostport, hp, hl);
    hostport[hl] = '\0';
    tmp.addrlen = (int)sizeof(tmp.addr);
    if (evutil_parse_sockaddr_port(hostport, (struct sockaddr *)&tmp.addr, &tmp.addrlen) != 0) {
        return -1;
    }
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                 slash ? slash : "/", hostport);
    if (n < 0 || (size_t)n >= sizeof(req) ||
        blocking_exchange(&tmp, req, (size_t)n, NULL, resp, sizeof(resp), 5000) < 0) {
        return -1;
    }
    body = strstr(resp, "\r\n\r\n");
    if (key != NULL) {
        char pat[128];
        long long sum = 0;
        int found = 0;
        snprintf(pat, sizeof(pat), "\"%s\":", key);
        for (p = body ? body : resp; (p = strstr(p, pat)) != NULL; p += strlen(pat)) {
            sum += strtoll(p + strlen(pat), NULL, 10);
            found = 1;
        }
        return found ? sum : -1;
    }
    for (p = body ? body : resp; *p && (*p < '0' || *p > '9'); p++) {
    }
    return *p ? strtoll(p, NULL, 10) : -1;
}

/* Entries in the folders, not counting names that start with '.' (temp files). */
static long long count_files(const struct bench *b)
{
    long long n = 0;

    for (int i = 0; i < b->ndirs; i++) {
        DIR *d = opendir(b->count_dirs[i]);
        struct dirent *e;
        if (d == NULL) {
            continue;
        }
        while ((e = readdir(d)) != NULL) {
            n += e->d_name[0] != '.';
        }
        closedir(d);
    }
    return n;
}

static long long delivered_now(const struct bench *b)
{
    if (b->count_url) {
        return count_from_url(b->count_url, b->count_key);
    }
    if (b->ndirs) {
        return count_files(b);
    }
    return -1;
}

/* ---- the messages ---- */

static void make_http_request(struct bench *b)
{
    char head[2048];
    char *body = malloc(b->size + 1);
    int hl;
    const char *open = "{\"bench\":\"", *close_ = "\"}";
    size_t ol = strlen(open), cl = strlen(close_);
    int json = b->size >= ol + cl + 1;

    if (body == NULL) {
        die("%s", "out of memory");
    }
    /* A JSON body of exactly --size bytes when it fits, so json routes could take it too. */
    memset(body, 'x', b->size);
    if (json) {
        memcpy(body, open, ol);
        memcpy(body + b->size - cl, close_, cl);
    }
    hl = snprintf(head, sizeof(head),
                  "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: jn-bench\r\n"
                  "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                  b->path, b->host, b->port, json ? "application/json" : "application/octet-stream",
                  b->size);
    if (hl < 0 || (size_t)hl >= sizeof(head)) {
        die("%s", "URL too long");
    }
    b->reqlen = (size_t)hl + b->size;
    b->req = malloc(b->reqlen);
    if (b->req == NULL) {
        die("%s", "out of memory");
    }
    memcpy(b->req, head, (size_t)hl);
    memcpy(b->req + hl, body, b->size);
    free(body);
}

/* ws: the upgrade request in req, and in post one masked binary frame of --size bytes (the
 * same bytes every time: the mask is fixed, which the protocol allows a client that is not a
 * browser; junction unmasks it as any frame). */
static void make_ws_frame(struct bench *b)
{
    static const unsigned char mask[4] = {0x5a, 0x3c, 0x96, 0xe1};
    char head[2048];
    size_t hl = 2, i;
    int n;

    n = snprintf(head, sizeof(head),
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: jn-bench\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 b->path, b->host, b->port);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        die("%s", "URL too long");
    }
    b->req = strdup(head);
    b->reqlen = (size_t)n;
    b->post = malloc(b->size + 14);
    if (b->req == NULL || b->post == NULL) {
        die("%s", "out of memory");
    }
    b->post[0] = (char)0x82; /* FIN, binary */
    if (b->size < 126) {
        b->post[1] = (char)(0x80 | b->size);
    } else if (b->size < 65536) {
        b->post[1] = (char)(0x80 | 126);
        b->post[2] = (char)(b->size >> 8);
        b->post[3] = (char)(b->size & 0xff);
        hl = 4;
    } else {
        b->post[1] = (char)(0x80 | 127);
        for (i = 0; i < 8; i++) {
            b->post[2 + i] = (char)((uint64_t)b->size >> (56 - 8 * i));
        }
        hl = 10;
    }
    memcpy(b->post + hl, mask, 4);
    for (i = 0; i < b->size; i++) {
        b->post[hl + 4 + i] = (char)('x' ^ mask[i % 4]);
    }
    b->postlen = hl + 4 + b->size;
}

/* An ADT^A01 as a registration system sends it; MSH-10 is replaced for every message. */
static const char builtin_adt[] =
    "MSH|^~\\&|JNBENCH|BENCH_HOSP|JUNCTION|BENCH_HOSP|20240101120000||ADT^A01^ADT_A01|X|P|2.5\r"
    "EVN|A01|20240101120000|||1234^SMITH^JANE\r"
    "PID|1||123456^^^BENCH_HOSP^MR||DOE^JOHN^A||19700101|M|||1 MAIN ST^^ANYTOWN^CA^90210^USA"
    "||(555)555-1234|||S||123456789\r"
    "NK1|1|DOE^JANE|SPO|1 MAIN ST^^ANYTOWN^CA^90210^USA|(555)555-4321\r"
    "PV1|1|I|WARD1^101^A^BENCH_HOSP||||1234^SMITH^JANE|||MED||||1|||1234^SMITH^JANE|IN|V0001"
    "|||||||||||||||||||||||||20240101120000\r"
    "AL1|1|DA|PEN^PENICILLIN|SV|RASH\r"
    "DG1|1||I10^HYPERTENSION^I10|||A\r";

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL) {
        return NULL;
    }
    for (;;) {
        size_t r;
        if (n + 4096 > cap) {
            char *q = realloc(p, cap = cap ? cap * 2 : 8192);
            if (q == NULL) {
                free(p);
                fclose(f);
                return NULL;
            }
            p = q;
        }
        r = fread(p + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            break;
        }
    }
    fclose(f);
    p[n] = '\0';
    *len = n;
    return p;
}

/* Splits the HL7 text around MSH-10 so each send can put a unique control id there. Line ends
 * become CR (segment separator) and a framed file is unframed first. */
static void make_mllp_template(struct bench *b)
{
    size_t len = strlen(builtin_adt), w = 0, start = 0, end;
    char *txt = b->file ? read_file(b->file, &len) : strdup(builtin_adt);
    char fs;
    int seps = 0;

    if (txt == NULL) {
        die("cannot read %s", b->file ? b->file : "the built-in message");
    }
    for (size_t r = 0; r < len; r++) {
        char c = txt[r];
        if (c == '\x0b' || c == '\x1c') {
            continue;
        }
        if (c == '\n') {
            if (w > 0 && txt[w - 1] == '\r') {
                continue;
            }
            c = '\r';
        }
        txt[w++] = c;
    }
    while (w > 0 && (txt[w - 1] == '\r' || txt[w - 1] == ' ')) {
        w--;
    }
    txt[w++] = '\r';
    txt[w] = '\0';
    if (w < 8 || strncmp(txt, "MSH", 3) != 0) {
        die("%s: the message must start with an MSH segment", b->file ? b->file : "built-in");
    }
    fs = txt[3];
    /* MSH-1 is the separator itself, so MSH-10 starts after the 9th separator. */
    for (size_t i = 3; i < w && txt[i] != '\r'; i++) {
        if (txt[i] == fs && ++seps == 9) {
            start = i + 1;
            break;
        }
    }
    if (start == 0) {
        die("%s: MSH has no field 10 (message control id)", b->file ? b->file : "built-in");
    }
    for (end = start; end < w && txt[end] != fs && txt[end] != '\r'; end++) {
    }
    b->reqlen = start + 1;
    b->req = malloc(b->reqlen);
    b->postlen = w - end + 2;
    b->post = malloc(b->postlen);
    if (b->req == NULL || b->post == NULL) {
        die("%s", "out of memory");
    }
    b->req[0] = '\x0b';
    memcpy(b->req + 1, txt, start);
    memcpy(b->post, txt + end, w - end);
    b->post[w - end] = '\x1c';
    b->post[w - end + 1] = '\r';
    free(txt);
}

/* MQTT's Remaining Length: 7 bits a byte, low first, the top bit saying more follow. Returns
 * the bytes written to out (up to 4). */
static size_t mqtt_varint(unsigned char *out, size_t v)
{
    size_t n = 0;

    do {
        out[n] = (unsigned char)(v & 127);
        v >>= 7;
        if (v) {
            out[n] |= 128;
        }
        n++;
    } while (v && n < 4);
    return n;
}

/* A PUBLISH at QoS 1 or 2 is: fixed header, topic, packet id, payload. The packet id changes with
 * every message, so req holds what comes before it and post the payload (--size bytes). */
static void make_mqtt_publish(struct bench *b)
{
    const char *topic = b->path[1] ? b->path + 1 : BENCH_MQTT_TOPIC;
    size_t tl = strlen(topic), n = 0;
    const char *open = "{\"bench\":\"", *close_ = "\"}";
    size_t ol = strlen(open), cl = strlen(close_);

    if (tl > 65535 || 2 + tl + 2 + b->size > 268435455u) {
        die("%s", "mqtt: the topic or --size is too large for one MQTT packet");
    }
    b->req = malloc(1 + 4 + 2 + tl);
    b->post = malloc(b->size + 1);
    if (b->req == NULL || b->post == NULL) {
        die("%s", "out of memory");
    }
    b->req[n++] = b->qos == 2 ? 0x34 : 0x32; /* PUBLISH, QoS 1 or 2, no DUP, no RETAIN */
    n += mqtt_varint((unsigned char *)b->req + n, 2 + tl + 2 + b->size);
    b->req[n++] = (char)(tl >> 8);
    b->req[n++] = (char)(tl & 0xff);
    memcpy(b->req + n, topic, tl);
    b->reqlen = n + tl;
    /* The same body as http: JSON of exactly --size bytes when it fits. */
    memset(b->post, 'x', b->size);
    if (b->size >= ol + cl + 1) {
        memcpy(b->post, open, ol);
        memcpy(b->post + b->size - cl, close_, cl);
    }
    b->postlen = b->size;
}

/* CONNECT with a clean session and a client id unique to this process and connection index
 * (at most 23 bytes, the limit MQTT 3.1.1 requires brokers to accept). Returns its length. */
static size_t mqtt_connect_packet(unsigned char *pkt, size_t cap, int idx)
{
    char id[24];
    int il = snprintf(id, sizeof(id), "jnb%lx-%d", (unsigned long)getpid() & 0xffffff, idx);
    size_t n = 0;

    if (il < 0 || (size_t)il >= sizeof(id) || cap < 14 + (size_t)il) {
        die("%s", "mqtt: client id too long");
    }
    pkt[n++] = 0x10;
    pkt[n++] = (unsigned char)(10 + 2 + il); /* always under 128: one length byte */
    memcpy(pkt + n, "\0\4MQTT", 6);          /* protocol name */
    n += 6;
    pkt[n++] = 4;                            /* level: 3.1.1 */
    pkt[n++] = 0x02;                         /* clean session, no will, no credentials */
    pkt[n++] = (unsigned char)(BENCH_MQTT_KEEPALIVE >> 8);
    pkt[n++] = (unsigned char)(BENCH_MQTT_KEEPALIVE & 0xff);
    pkt[n++] = 0;
    pkt[n++] = (unsigned char)il;
    memcpy(pkt + n, id, (size_t)il);
    return n + (size_t)il;
}

/* ---- the load ---- */

static void conn_start(struct conn *c);
static void mqtt_reset_ids(struct conn *c);

static void finish(struct bench *b)
{
    if (b->stopping) {
        return;
    }
    if (b->measuring) {
        b->t_end_ns = now_ns();
        b->measuring = 0;
        if (b->pid > 0) {
            b->cpu_target1 = read_cpu_ticks(b->pid);
        }
        b->cpu_self1 = self_cpu_s();
    }
    b->stopping = 1;
    event_base_loopbreak(b->base);
}

static void count_error(struct bench *b, enum ekind kind)
{
    if (!b->measuring) {
        b->err_warmup += kind != E_NONE;
        return;
    }
    switch (kind) {
    case E_CONNECT:
        b->err.connect++;
        break;
    case E_TIMEOUT:
        b->err.timeout++;
        break;
    case E_CLOSED:
        b->err.closed++;
        break;
    case E_PROTO:
        b->err.proto++;
        break;
    case E_REFUSED:
        b->err.connack++;
        break;
    case E_NONE:
        break;
    }
}

/* Every packet id free: a new connection (clean session) starts with none in flight. */
static void mqtt_reset_ids(struct conn *c)
{
    int n = c->b->mqtt_inflight;

    for (int i = 0; i < n; i++) {
        c->id_st[i] = 0;
        c->ids[i] = (uint16_t)(n - i); /* popped from the end: 1 goes first */
    }
    c->nfree = n;
}

/* mqtt: PUBLISHes until --inflight are out. They go into the output buffer; libevent writes
 * what gathered in one go when the loop turns, so a burst of PUBACKs gives one write. */
static void mqtt_fill(struct conn *c)
{
    struct bench *b = c->b;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    while (!b->stopping && c->nfree > 0 && (b->rate == 0 || b->tokens >= 1)) {
        uint16_t id = c->ids[--c->nfree];
        if (b->rate > 0) {
            b->tokens -= 1;
        }
        unsigned char idb[2] = {(unsigned char)(id >> 8), (unsigned char)(id & 0xff)};
        evbuffer_add_reference(out, b->req, b->reqlen, NULL, NULL);
        evbuffer_add(out, idb, 2);
        if (b->postlen) {
            evbuffer_add_reference(out, b->post, b->postlen, NULL, NULL);
        }
        c->id_st[id - 1] = 1;
        c->id_ns[id - 1] = now_ns();
        c->inflight++;
    }
}

/* mqtt: a PUBACK (0x40, QoS 1), PUBREC (0x50, QoS 2: the server has the message; answered
 * PUBREL) or PUBCOMP (0x70: the id is free again) for packet id. One for an id that is not in
 * that state is counted as an id mismatch and otherwise ignored. */
static void mqtt_ack(struct conn *c, unsigned type, unsigned id)
{
    struct bench *b = c->b;
    int want = type == 0x70 ? 2 : 1;
    int fits = b->qos == 1 ? type == 0x40 : type == 0x50 || type == 0x70;

    if (!fits || id == 0 || id > (unsigned)b->mqtt_inflight || c->id_st[id - 1] != want) {
        if (b->measuring) {
            b->err.puback_id++;
        } else {
            b->err_warmup++;
        }
        return;
    }
    if (type != 0x70) {
        uint64_t t = now_ns();
        b->ok_total++;
        if (b->measuring) {
            b->ok++;
            hist_add(&b->hist, t - c->id_ns[id - 1]);
        }
    }
    if (type == 0x50) {
        unsigned char rel[4] = {0x62, 0x02, (unsigned char)(id >> 8), (unsigned char)(id & 0xff)};
        c->id_st[id - 1] = 2;
        evbuffer_add(bufferevent_get_output(c->bev), rel, sizeof(rel));
    } else {
        c->id_st[id - 1] = 0;
        c->ids[c->nfree++] = (uint16_t)id;
        c->inflight--;
    }
    if (b->count && b->ok_total >= b->count) {
        finish(b);
        return;
    }
    mqtt_fill(c);
}

/* mqtt with --rate: every millisecond the PUBLISHes due since the last round, handed to the
 * connections with room in turn (starting one further each round, so none is favoured). At
 * most 10 ms worth are saved up while every window is full: the rate is a ceiling, and a
 * server that falls behind is not sent a burst to catch up. */
static void pace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    uint64_t t = now_ns();
    double cap = b->rate / 100 > 1 ? b->rate / 100 : 1;

    (void)fd;
    (void)what;
    b->tokens += b->rate * (double)(t - b->pace_ns) / 1e9;
    b->pace_ns = t;
    if (b->tokens > cap) {
        b->tokens = cap;
    }
    for (int k = 0; k < b->nconns && b->tokens >= 1; k++) {
        struct conn *c = &b->conns[(b->pace_next + k) % b->nconns];
        if (c->bev != NULL && !c->connecting) {
            mqtt_fill(c);
        }
    }
    b->pace_next = (b->pace_next + 1) % b->nconns;
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    static const unsigned char ping[2] = {0xc0, 0x00};

    (void)fd;
    (void)what;
    for (int i = 0; i < b->nconns; i++) {
        if (b->conns[i].up) {
            evbuffer_add(bufferevent_get_output(b->conns[i].bev), ping, sizeof(ping));
        }
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_start(arg);
}

/* Drops the connection (counting why) and opens a new one: at once after an orderly close, after
 * 100 ms after a failure so a refused port is not hammered. */
static void conn_reset(struct conn *c, enum ekind kind)
{
    struct timeval tv = {0, kind == E_NONE || kind == E_CLOSED ? 0 : 100000};

    count_error(c->b, kind);
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->pace) {
        evtimer_del(c->pace);
    }
    if (c->up) {
        c->b->up--;
        c->up = 0;
    }
    c->inflight = 0;
    c->connecting = 0;
    if (c->ids) {
        mqtt_reset_ids(c);
    }
    if (!c->b->stopping) {
        evtimer_add(c->retry, &tv);
    }
}

static void send_now(struct conn *c);

static void slot_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->bev != NULL && !c->connecting && !c->inflight) {
        send_now(c);
    }
}

/* Sends the next request at once, or with --rate when its slot is due. */
static void send_next(struct conn *c)
{
    struct bench *b = c->b;
    uint64_t now, slot;

    if (b->stopping) {
        return;
    }
    if (b->rate <= 0) {
        send_now(c);
        return;
    }
    now = now_ns();
    slot = b->next_slot_ns > now ? b->next_slot_ns : now;
    b->next_slot_ns = slot + (uint64_t)(1e9 / b->rate);
    if (slot <= now) {
        send_now(c);
    } else {
        uint64_t d = slot - now; /* up to nconns / rate ahead */
        struct timeval tv = {(time_t)(d / 1000000000u), (suseconds_t)(d % 1000000000u / 1000)};
        evtimer_add(c->pace, &tv);
    }
}

static void send_now(struct conn *c)
{
    struct bench *b = c->b;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (b->stopping) {
        return;
    }
    c->st = ST_HEAD;
    c->close_after = 0;
    c->status = 0;
    if (b->mode == MODE_HTTP) {
        evbuffer_add_reference(out, b->req, b->reqlen, NULL, NULL);
    } else if (b->mode == MODE_WS) {
        evbuffer_add_reference(out, b->post, b->postlen, NULL, NULL);
    } else {
        int n = snprintf(c->ctl, sizeof(c->ctl), "JB%lx.%" PRIu64, (long)getpid() & 0xffff,
                         ++b->ctl_seq);
        evbuffer_add_reference(out, b->req, b->reqlen, NULL, NULL);
        evbuffer_add(out, c->ctl, (size_t)n);
        evbuffer_add_reference(out, b->post, b->postlen, NULL, NULL);
    }
    c->inflight = 1;
    c->sent_ns = now_ns();
}

/* One answer is in: ok (2xx, ACK AA/CA, PUBACK of our packet id) or an error of the given kind
 * (status for http, ack for mllp; mqtt's only answer error is a PUBACK id mismatch). */
static void on_answer(struct conn *c, int ok, int status, int ack)
{
    struct bench *b = c->b;
    uint64_t t = now_ns();

    c->inflight = 0;
    if (ok) {
        b->ok_total++;
    }
    if (b->measuring) {
        if (ok) {
            b->ok++;
            hist_add(&b->hist, t - c->sent_ns);
        } else if (b->mode == MODE_HTTP) {
            b->err.status[status >= 0 && status < 600 ? status : 0]++;
        } else if (b->mode == MODE_MQTT) {
            b->err.puback_id++;
        } else {
            b->err.ack[ack]++;
        }
    } else if (!ok) {
        b->err_warmup++;
    }
    if (b->count && b->ok_total >= b->count) {
        finish(b);
        return;
    }
    if (c->close_after) {
        conn_reset(c, E_NONE);
        return;
    }
    send_next(c);
}

static int ci_prefix(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);

    return (size_t)(end - p) >= n && strncasecmp(p, word, n) == 0;
}

/* Parses the status line and the headers we need; drains the head. -1 on a malformed one. */
static int http_head(struct conn *c, struct evbuffer *in, size_t hl)
{
    const char *h = (const char *)evbuffer_pullup(in, (ev_ssize_t)hl);
    const char *end = h + hl, *p;
    int chunked = 0, has_cl = 0;
    size_t cl = 0;

    if (h == NULL || hl < 12 || strncmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ') {
        return -1;
    }
    c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    if (c->status < 100 || c->status > 599) {
        return -1;
    }
    c->close_after = h[7] == '0'; /* HTTP/1.0 closes unless told otherwise */
    for (p = memchr(h, '\n', hl); p && p + 1 < end; p = memchr(p, '\n', (size_t)(end - p))) {
        const char *v, *eol;
        p++;
        eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) {
            break;
        }
        v = memchr(p, ':', (size_t)(eol - p));
        if (v == NULL) {
            continue;
        }
        v++;
        if (ci_prefix(p, eol, "content-length:")) {
            cl = (size_t)strtoull(v, NULL, 10);
            has_cl = 1;
        } else if (ci_prefix(p, eol, "transfer-encoding:")) {
            chunked = memmem(v, (size_t)(eol - v), "chunked", 7) != NULL;
        } else if (ci_prefix(p, eol, "connection:")) {
            if (memmem(v, (size_t)(eol - v), "close", 5)) {
                c->close_after = 1;
            } else if (memmem(v, (size_t)(eol - v), "eep-alive", 9)) {
                c->close_after = 0;
            }
        }
    }
    evbuffer_drain(in, hl);
    if (c->status < 200) {
        c->st = ST_HEAD; /* interim answer: the real one follows */
    } else if (chunked) {
        c->st = ST_CHUNK_SIZE;
    } else if (has_cl || c->status == 204 || c->status == 304) {
        c->body_left = has_cl ? cl : 0;
        c->st = ST_BODY;
    } else {
        c->st = ST_UNTIL_CLOSE;
        c->close_after = 1;
    }
    return 0;
}

/* 1: an answer is complete; 0: need more bytes; -1: protocol error. */
static int http_parse(struct conn *c, struct evbuffer *in)
{
    for (;;) {
        size_t len = evbuffer_get_length(in), n;
        char *line;

        switch (c->st) {
        case ST_HEAD: {
            struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (p.pos < 0) {
                return len > BENCH_HEAD_MAX ? -1 : 0;
            }
            if (http_head(c, in, (size_t)p.pos + 4) != 0) {
                return -1;
            }
            break;
        }
        case ST_BODY:
        case ST_CHUNK_DATA:
            n = len < c->body_left ? len : c->body_left;
            evbuffer_drain(in, n);
            c->body_left -= n;
            if (c->body_left) {
                return 0;
            }
            if (c->st == ST_BODY) {
                c->st = ST_HEAD;
                return 1;
            }
            c->st = ST_CHUNK_SIZE;
            break;
        case ST_CHUNK_SIZE:
            line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
            if (line == NULL) {
                return len > BENCH_HEAD_MAX ? -1 : 0;
            }
            c->body_left = (size_t)strtoull(line, NULL, 16);
            free(line);
            if (c->body_left == 0) {
                c->st = ST_TRAILER;
            } else {
                c->body_left += 2; /* the CRLF after the data */
                c->st = ST_CHUNK_DATA;
            }
            break;
        case ST_TRAILER:
            line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
            if (line == NULL) {
                return len > BENCH_HEAD_MAX ? -1 : 0;
            }
            free(line);
            if (n == 0) {
                c->st = ST_HEAD;
                return 1;
            }
            break;
        case ST_UNTIL_CLOSE:
            evbuffer_drain(in, len);
            return 0;
        }
    }
}

/* 1 with *ack set (-1: AA/CA, else an ACK_* error), 0: need more, -1: protocol error. */
static int mllp_parse(struct conn *c, struct evbuffer *in, int *ack)
{
    struct evbuffer_ptr p = evbuffer_search(in, "\x1c\r", 2, NULL);
    const char *f, *end, *msa = NULL;
    size_t fl;

    if (p.pos < 0) {
        return evbuffer_get_length(in) > BENCH_FRAME_MAX ? -1 : 0;
    }
    fl = (size_t)p.pos + 2;
    f = (const char *)evbuffer_pullup(in, (ev_ssize_t)fl);
    if (f == NULL || f[0] != '\x0b') {
        return -1;
    }
    end = f + fl - 2;
    for (const char *s = f + 1; s + 4 <= end; s++) {
        if ((s == f + 1 || s[-1] == '\r' || s[-1] == '\n') && strncmp(s, "MSA", 3) == 0) {
            msa = s;
            break;
        }
    }
    *ack = ACK_OTHER;
    if (msa && msa + 6 <= end) {
        char sep = msa[3];
        const char *code = msa + 4, *id, *idend;
        if (code[0] == 'A' && code[1] == 'A') {
            *ack = -1;
        } else if (code[0] == 'C' && code[1] == 'A') {
            *ack = -1;
        } else if (code[0] == 'A' && code[1] == 'E') {
            *ack = ACK_AE;
        } else if (code[0] == 'A' && code[1] == 'R') {
            *ack = ACK_AR;
        } else if (code[0] == 'C' && code[1] == 'E') {
            *ack = ACK_CE;
        } else if (code[0] == 'C' && code[1] == 'R') {
            *ack = ACK_CR;
        }
        id = memchr(code, sep, (size_t)(end - code));
        if (*ack == -1 && id != NULL) {
            id++;
            for (idend = id; idend < end && *idend != sep && *idend != '\r' && *idend != '\n' &&
                             *idend != '^';
                 idend++) {
            }
            if ((size_t)(idend - id) != strlen(c->ctl) || memcmp(id, c->ctl, strlen(c->ctl))) {
                *ack = ACK_MISMATCH;
            }
        }
    }
    evbuffer_drain(in, fl);
    return 1;
}

/* One MQTT packet from in: 1 with its first byte in *type and, when it has them, the first two
 * bytes after the fixed header in *v (CONNACK's flags and code, PUBACK's packet id); 0: need
 * more; -1: malformed or too large. The packet is drained. */
static int mqtt_packet(struct evbuffer *in, unsigned *type, size_t *rl, unsigned *v)
{
    size_t len = evbuffer_get_length(in), i;
    const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(len < 5 ? len : 5));

    *rl = 0;
    *v = 0;
    for (i = 1;; i++) {
        if (i > 4) {
            return -1; /* a fifth length byte */
        }
        if (i >= len) {
            return 0;
        }
        *rl |= (size_t)(p[i] & 127) << (7 * (i - 1));
        if (!(p[i] & 128)) {
            break;
        }
    }
    if (*rl > BENCH_FRAME_MAX) {
        return -1;
    }
    if (len < i + 1 + *rl) {
        return 0;
    }
    *type = p[0];
    if (*rl >= 2) {
        p = evbuffer_pullup(in, (ev_ssize_t)(i + 3));
        *v = (unsigned)p[i + 1] << 8 | p[i + 2];
    }
    evbuffer_drain(in, i + 1 + *rl);
    return 1;
}

/* mqtt: the CONNACK, then one PUBACK per PUBLISH. PINGRESP is let through; anything else
 * (we subscribe to nothing, so no PUBLISH can come) breaks the stream. */
static void mqtt_read(struct conn *c, struct bufferevent *bev, struct evbuffer *in)
{
    while (c->bev == bev && evbuffer_get_length(in) > 0) {
        unsigned type, v;
        size_t rl;
        int rc = mqtt_packet(in, &type, &rl, &v);
        if (rc == 0) {
            return;
        }
        if (rc < 0) {
            conn_reset(c, E_PROTO);
            return;
        }
        if (type == 0x20 && rl == 2 && c->connecting) {
            if ((v & 0xff) != 0) {
                conn_reset(c, E_REFUSED); /* 1..5: version, id, unavailable, auth */
                return;
            }
            c->connecting = 0;
            if (c->b->mode == MODE_MQTT_IDLE) {
                struct bench *b = c->b;
                c->up = 1;
                b->up++;
                b->ok_total++;
                if (b->measuring) {
                    b->ok++;
                    hist_add(&b->hist, now_ns() - c->sent_ns);
                }
                /* Held idle from now on: no read timeout (the PINGRESPs keep coming). */
                bufferevent_set_timeouts(bev, NULL, NULL);
                if (b->next_start < b->nconns) {
                    conn_start(&b->conns[b->next_start++]);
                }
            } else {
                mqtt_fill(c);
            }
        } else if ((type == 0x40 || type == 0x50 || type == 0x70) && rl == 2 && !c->connecting &&
                   c->ids) {
            mqtt_ack(c, type, v);
        } else if (type != 0xd0 || rl != 0) {
            conn_reset(c, E_PROTO);
            return;
        }
        if (c->b->stopping) {
            return;
        }
    }
}

/* ws: the 101 answer while connecting, then the server's frames (unmasked): a text frame is
 * the answer to the frame in flight, a ping gets its pong, a close ends the connection. */
static void ws_read(struct conn *c, struct evbuffer *in)
{
    while (c->bev != NULL && evbuffer_get_length(in) > 0) {
        unsigned char h[10];
        size_t have = evbuffer_get_length(in), hl = 2, len;
        unsigned op;

        if (c->connecting) {
            struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            char st[13];
            if (e.pos < 0) {
                return;
            }
            if (evbuffer_copyout(in, st, 12) != 12 || memcmp(st, "HTTP/1.1 101", 12) != 0) {
                conn_reset(c, E_CONNECT);
                return;
            }
            evbuffer_drain(in, (size_t)e.pos + 4);
            c->connecting = 0;
            send_next(c);
            continue;
        }
        if (have < 2 || evbuffer_copyout(in, h, have < 10 ? have : 10) < 2) {
            return;
        }
        op = h[0] & 0x0f;
        len = h[1] & 0x7f;
        if (h[1] & 0x80) {
            conn_reset(c, E_PROTO); /* a server never masks */
            return;
        }
        if (len == 126) {
            hl = 4;
            if (have < hl) {
                return;
            }
            len = ((size_t)h[2] << 8) | h[3];
        } else if (len == 127) {
            hl = 10;
            if (have < hl) {
                return;
            }
            len = 0;
            for (int i = 0; i < 8; i++) {
                len = (len << 8) | h[2 + i];
            }
        }
        if (have < hl + len) {
            return;
        }
        if (op == 0x1) {
            char a[8] = {0};
            evbuffer_drain(in, hl);
            evbuffer_copyout(in, a, len < 7 ? len : 7);
            evbuffer_drain(in, len);
            if (!c->inflight) {
                conn_reset(c, E_PROTO);
                return;
            }
            on_answer(c, strncmp(a, "{\"ack\"", 6) == 0, 0, ACK_OTHER);
            if (c->b->stopping) {
                return;
            }
        } else if (op == 0x9) {
            /* Pong with the ping's payload (at most 125 bytes), masked with a zero mask. */
            unsigned char pong[6 + 125];
            size_t pl = len <= 125 ? len : 125;
            pong[0] = 0x8a;
            pong[1] = (unsigned char)(0x80 | pl);
            memset(pong + 2, 0, 4);
            evbuffer_drain(in, hl);
            evbuffer_remove(in, pong + 6, pl);
            evbuffer_drain(in, len - pl);
            evbuffer_add(bufferevent_get_output(c->bev), pong, 6 + pl);
        } else if (op == 0x8) {
            conn_reset(c, c->inflight ? E_CLOSED : E_NONE);
            return;
        } else {
            evbuffer_drain(in, hl + len); /* pong, binary: not ours to answer */
        }
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (c->b->mode == MODE_MQTT || c->b->mode == MODE_MQTT_IDLE) {
        mqtt_read(c, bev, in);
        return;
    }
    if (c->b->mode == MODE_WS) {
        ws_read(c, in);
        return;
    }
    while (c->bev == bev && evbuffer_get_length(in) > 0) {
        int ack = -1;
        int rc = c->b->mode == MODE_HTTP ? http_parse(c, in) : mllp_parse(c, in, &ack);
        if (rc == 0) {
            return;
        }
        if (rc < 0 || !c->inflight) {
            /* Garbage, or an answer nobody asked for: the stream cannot be trusted. */
            conn_reset(c, E_PROTO);
            return;
        }
        if (c->b->mode == MODE_HTTP) {
            on_answer(c, c->status >= 200 && c->status < 300, c->status, 0);
        } else {
            on_answer(c, ack < 0, 0, ack < 0 ? 0 : ack);
        }
        if (c->b->stopping) {
            return;
        }
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    enum ekind kind;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        /* One small request at a time: Nagle would hold it for the peer's delayed ACK. */
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (c->b->mode == MODE_MQTT || c->b->mode == MODE_MQTT_IDLE) {
            /* Still connecting until the CONNACK: a failure before it is a connect error. */
            unsigned char pkt[64];
            size_t n = mqtt_connect_packet(pkt, sizeof(pkt), (int)(c - c->b->conns));
            evbuffer_add(bufferevent_get_output(c->bev), pkt, n);
            return;
        }
        if (c->b->mode == MODE_WS) {
            /* Still connecting until the 101. */
            evbuffer_add_reference(bufferevent_get_output(c->bev), c->b->req, c->b->reqlen,
                                   NULL, NULL);
            return;
        }
        c->connecting = 0;
        send_next(c);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        kind = c->connecting ? E_CONNECT : c->inflight ? E_TIMEOUT : E_NONE;
    } else if (c->connecting) {
        kind = E_CONNECT;
    } else if (c->st == ST_UNTIL_CLOSE && c->inflight) {
        /* An answer delimited by the close: it is complete now. */
        c->close_after = 1;
        on_answer(c, c->status >= 200 && c->status < 300, c->status, 0);
        if (!c->b->stopping) {
            conn_reset(c, E_NONE);
        }
        return;
    } else {
        kind = c->inflight ? E_CLOSED : E_NONE;
    }
    conn_reset(c, kind);
}

static void conn_start(struct conn *c)
{
    struct bench *b = c->b;

    if (b->stopping) {
        return;
    }
    if (b->ssl_ctx != NULL) {
        SSL *ssl = SSL_new(b->ssl_ctx);
        c->bev = ssl ? bufferevent_openssl_socket_new(b->base, -1, ssl,
                                                      BUFFEREVENT_SSL_CONNECTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev == NULL) {
            SSL_free(ssl);
        } else {
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        }
    } else {
        c->bev = bufferevent_socket_new(b->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        conn_reset(c, E_CONNECT);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    /* Reading is always on and a connection is never idle while the run lasts, so the read
     * timeout is the per-request timeout; the write timeout also bounds the connect. */
    bufferevent_set_timeouts(c->bev, &b->tv_timeout, &b->tv_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->connecting = 1;
    c->inflight = 0;
    c->sent_ns = now_ns();
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&b->addr, b->addrlen) != 0) {
        conn_reset(c, E_CONNECT);
    }
}

static void start_measuring(struct bench *b)
{
    memset(&b->hist, 0, sizeof(b->hist));
    memset(&b->err, 0, sizeof(b->err));
    b->ok = 0;
    b->delivered0 = delivered_now(b);
    if (b->pid > 0) {
        b->cpu_target0 = read_cpu_ticks(b->pid);
    }
    b->cpu_self0 = self_cpu_s();
    b->measuring = 1;
    b->t_start_ns = now_ns();
}

static void warm_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_measuring(arg);
}

static void end_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg);
}

static void rss_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sample_rss(arg);
}

static void sig_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg);
}

/* ---- output ---- */

static void fmt_ms(char *out, size_t cap, uint64_t ns)
{
    snprintf(out, cap, "%.3f ms", (double)ns / 1e6);
}

static uint64_t errors_total(const struct errs *e)
{
    uint64_t n = e->connect + e->timeout + e->closed + e->proto + e->connack + e->puback_id;

    for (int i = 0; i < 600; i++) {
        n += e->status[i];
    }
    for (int i = 0; i < ACK__COUNT; i++) {
        n += e->ack[i];
    }
    return n;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        if ((unsigned char)*s >= 0x20) {
            fputc(*s, f);
        }
    }
    fputc('"', f);
}

static void report(struct bench *b)
{
    double secs = b->t_end_ns > b->t_start_ns ? (double)(b->t_end_ns - b->t_start_ns) / 1e9 : 0;
    double rate = secs > 0 ? (double)b->ok / secs : 0;
    uint64_t p50 = hist_pct(&b->hist, 50), p90 = hist_pct(&b->hist, 90);
    uint64_t p99 = hist_pct(&b->hist, 99), mx = b->hist.max;
    uint64_t nerr = errors_total(&b->err);
    long tick = sysconf(_SC_CLK_TCK);
    double cpu_t = -1, cpu_s = -1, dlv_rate = -1;
    long long dlv = -1;
    const char *mode = b->mode == MODE_HTTP        ? "http"
                       : b->mode == MODE_MQTT      ? "mqtt"
                       : b->mode == MODE_MQTT_IDLE ? "mqtt-idle"
                       : b->mode == MODE_WS        ? "ws"
                                                   : "mllp";
    char s50[32], s90[32], s99[32], smax[32];

    if (b->pid > 0 && b->cpu_target0 >= 0 && b->cpu_target1 >= b->cpu_target0 && secs > 0) {
        cpu_t = 100.0 * (double)(b->cpu_target1 - b->cpu_target0) / (double)tick / secs;
    }
    if (secs > 0) {
        cpu_s = 100.0 * (b->cpu_self1 - b->cpu_self0) / secs;
    }
    if (b->delivered0 >= 0) {
        b->delivered1 = delivered_now(b);
        if (b->delivered1 >= 0 && secs > 0) {
            dlv = b->delivered1 - b->delivered0;
            dlv_rate = (double)dlv / secs;
        }
    }
    sample_rss(b);
    fmt_ms(s50, sizeof(s50), p50);
    fmt_ms(s90, sizeof(s90), p90);
    fmt_ms(s99, sizeof(s99), p99);
    fmt_ms(smax, sizeof(smax), mx);

    if (b->mode == MODE_MQTT_IDLE) {
        printf("mqtt-idle %d conns, held %.1f s: %" PRIu64 " up at the end; connect->CONNACK p50 %s"
               " p90 %s p99 %s max %s; %" PRIu64 " CONNACKed; errors: ",
               b->nconns, secs, b->up, s50, s90, s99, smax, b->ok);
    } else if (b->mode == MODE_MQTT) {
        char paced[48] = "";
        if (b->rate > 0) {
            snprintf(paced, sizeof(paced), " (paced to %.0f/s)", b->rate);
        }
        printf("mqtt QoS %d, %d conn%s x %d in flight%s, %.1f s: %.0f msg/s; %s p50 %s p90 %s"
               " p99 %s max %s; %" PRIu64 " ok; errors: ",
               b->qos, b->nconns, b->nconns == 1 ? "" : "s", b->mqtt_inflight, paced, secs, rate,
               b->qos == 1 ? "PUBACK" : "PUBREC", s50, s90, s99, smax, b->ok);
    } else {
        printf("%s %d conn%s, %.1f s: %.0f msg/s; latency p50 %s p90 %s p99 %s max %s; %" PRIu64
               " ok; errors: ",
               mode, b->nconns, b->nconns == 1 ? "" : "s", secs, rate, s50, s90, s99, smax, b->ok);
    }
    if (nerr == 0) {
        printf("none");
    }
    {
        const char *sep = "";
        for (int i = 0; i < 600; i++) {
            if (b->err.status[i]) {
                printf("%s%d x%" PRIu64, sep, i, b->err.status[i]);
                sep = ", ";
            }
        }
        for (int i = 0; i < ACK__COUNT; i++) {
            if (b->err.ack[i]) {
                printf("%sACK %s x%" PRIu64, sep, ack_names[i], b->err.ack[i]);
                sep = ", ";
            }
        }
        const struct {
            const char *what;
            uint64_t n;
        } other[] = {
            {"connect", b->err.connect},
            {"timeout", b->err.timeout},
            {"closed", b->err.closed},
            {"protocol", b->err.proto},
            {"CONNACK refused", b->err.connack},
            {"PUBACK id mismatch", b->err.puback_id},
        };
        for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
            if (other[i].n) {
                printf("%s%s x%" PRIu64, sep, other[i].what, other[i].n);
                sep = ", ";
            }
        }
    }
    if (b->pid > 0) {
        printf("; RSS idle %.1f MB peak %.1f MB (anon %.1f / %.1f)%s; CPU target %.0f%% "
               "bench %.0f%%",
               (double)b->rss_idle / 1024, (double)b->rss_peak / 1024,
               (double)b->anon_idle / 1024, (double)b->anon_peak / 1024,
               b->target_gone ? " (target exited)" : "", cpu_t, cpu_s);
    }
    if (dlv >= 0) {
        printf("; delivered %.0f/s", dlv_rate);
    }
    printf("\n");

    if (!b->json) {
        return;
    }
    printf("{\"mode\":\"%s\",\"url\":", mode);
    json_str(stdout, b->url);
    printf(",\"conns\":%d,\"size\":%zu,\"warmup_s\":%.3f,\"duration_s\":%.3f,\"ok\":%" PRIu64,
           b->nconns, b->mode == MODE_MLLP ? b->reqlen + b->postlen + 10 : b->size, b->warmup,
           secs, b->ok);
    if (b->mode == MODE_MQTT_IDLE) {
        printf(",\"msg_per_s\":null"); /* no messages: ok counts CONNACKs */
    } else {
        printf(",\"msg_per_s\":%.1f", rate);
    }
    printf(",\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f"
           ",\"mean_us\":%.1f,\"errors\":%" PRIu64 ",\"err_status\":{",
           (double)p50 / 1e3, (double)p90 / 1e3, (double)p99 / 1e3,
           (double)mx / 1e3, b->hist.n ? (double)b->hist.sum / (double)b->hist.n / 1e3 : 0.0,
           nerr);
    {
        const char *sep = "";
        for (int i = 0; i < 600; i++) {
            if (b->err.status[i]) {
                printf("%s\"%d\":%" PRIu64, sep, i, b->err.status[i]);
                sep = ",";
            }
        }
        printf("},\"err_ack\":{");
        sep = "";
        for (int i = 0; i < ACK__COUNT; i++) {
            if (b->err.ack[i]) {
                printf("%s\"%s\":%" PRIu64, sep, ack_names[i], b->err.ack[i]);
                sep = ",";
            }
        }
    }
    printf("},\"err_connect\":%" PRIu64 ",\"err_timeout\":%" PRIu64 ",\"err_closed\":%" PRIu64
           ",\"err_proto\":%" PRIu64 ",\"err_connack\":%" PRIu64 ",\"err_puback_id\":%" PRIu64
           ",\"err_warmup\":%" PRIu64,
           b->err.connect, b->err.timeout, b->err.closed, b->err.proto, b->err.connack,
           b->err.puback_id, b->err_warmup);
    if (b->pid > 0) {
        printf(",\"rss_idle_kb\":%ld,\"rss_peak_kb\":%ld,\"rss_end_kb\":%ld,\"anon_idle_kb\":%ld"
               ",\"anon_peak_kb\":%ld,\"target_exited\":%s,\"cpu_target_pct\":%.1f",
               b->rss_idle, b->rss_peak, b->rss_end, b->anon_idle, b->anon_peak,
               b->target_gone ? "true" : "false", cpu_t);
    } else {
        printf(",\"rss_idle_kb\":null,\"rss_peak_kb\":null,\"rss_end_kb\":null"
               ",\"anon_idle_kb\":null,\"anon_peak_kb\":null,\"cpu_target_pct\":null");
    }
    printf(",\"cpu_self_pct\":%.1f,\"rate\":%.1f", cpu_s, b->rate);
    if (b->mode == MODE_MQTT || b->mode == MODE_MQTT_IDLE) {
        printf(",\"qos\":%d,\"inflight\":%d,\"up\":%" PRIu64 ",\"ok_total\":%" PRIu64,
               b->qos, b->mqtt_inflight, b->up, b->ok_total);
    }
    if (dlv >= 0) {
        printf(",\"delivered\":%lld,\"delivered_per_s\":%.1f", dlv, dlv_rate);
    } else {
        printf(",\"delivered\":null,\"delivered_per_s\":null");
    }
    printf("}\n");
}

/* ---- modes ---- */

static int run_load(struct bench *b)
{
    struct timeval tv_rss = {0, 100000};
    struct timeval tv_warm, tv_end;
    double total = b->warmup + b->duration;

    if (b->mode == MODE_HTTP) {
        make_http_request(b);
    } else if (b->mode == MODE_MQTT) {
        make_mqtt_publish(b);
    } else if (b->mode == MODE_MQTT_IDLE) {
        b->warmup = 0; /* every connection counts, from the first */
        total = b->duration;
    } else if (b->mode == MODE_WS) {
        make_ws_frame(b);
    } else {
        make_mllp_template(b);
    }
    if (b->pid > 0) {
        /* Idle: before the first connection. */
        b->rss_idle = read_rss_kb(b->pid, &b->anon_idle);
        if (b->rss_idle < 0) {
            die("no process %s (see --pid)", "");
        }
        b->rss_peak = b->rss_end = b->rss_idle;
        b->anon_peak = b->anon_idle;
    }
    b->base = event_base_new();
    if (b->base == NULL) {
        die("%s", "cannot create the event base");
    }
    b->tv_timeout.tv_sec = (time_t)b->timeout;
    b->tv_timeout.tv_usec = (suseconds_t)((b->timeout - (double)(time_t)b->timeout) * 1e6);
    tv_warm.tv_sec = (time_t)b->warmup;
    tv_warm.tv_usec = (suseconds_t)((b->warmup - (double)(time_t)b->warmup) * 1e6);
    tv_end.tv_sec = (time_t)total;
    tv_end.tv_usec = (suseconds_t)((total - (double)(time_t)total) * 1e6);
    b->ev_warm = evtimer_new(b->base, warm_cb, b);
    b->ev_end = evtimer_new(b->base, end_cb, b);
    b->ev_rss = event_new(b->base, -1, EV_PERSIST, rss_cb, b);
    b->ev_int = evsignal_new(b->base, SIGINT, sig_cb, b);
    b->ev_term = evsignal_new(b->base, SIGTERM, sig_cb, b);
    b->ev_ping = event_new(b->base, -1, EV_PERSIST, ping_cb, b);
    b->ev_pace = event_new(b->base, -1, EV_PERSIST, pace_cb, b);
    b->conns = calloc((size_t)b->nconns, sizeof(*b->conns));
    if (!b->ev_warm || !b->ev_end || !b->ev_rss || !b->ev_int || !b->ev_term || !b->ev_ping ||
        !b->ev_pace || !b->conns) {
        die("%s", "out of memory");
    }
    if (b->mode == MODE_MQTT_IDLE) {
        struct timeval tv_ping = {BENCH_MQTT_PING, 0};
        event_add(b->ev_ping, &tv_ping);
    }
    if (b->mode == MODE_MQTT && b->rate > 0) {
        struct timeval tv_pace = {0, 1000};
        b->pace_ns = now_ns();
        event_add(b->ev_pace, &tv_pace);
    }
    evsignal_add(b->ev_int, NULL);
    evsignal_add(b->ev_term, NULL);
    if (b->pid > 0) {
        event_add(b->ev_rss, &tv_rss);
    }
    b->t_begin_ns = now_ns();
    if (b->warmup > 0) {
        evtimer_add(b->ev_warm, &tv_warm);
    } else {
        start_measuring(b);
    }
    evtimer_add(b->ev_end, &tv_end);
    for (int i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        c->b = b;
        c->retry = evtimer_new(b->base, retry_cb, c);
        c->pace = evtimer_new(b->base, slot_cb, c);
        if (c->retry == NULL) {
            die("%s", "out of memory");
        }
        if (b->mode == MODE_MQTT) {
            size_t n = (size_t)b->mqtt_inflight;
            c->id_ns = calloc(n, sizeof(*c->id_ns));
            c->id_st = calloc(n, sizeof(*c->id_st));
            c->ids = calloc(n, sizeof(*c->ids));
            if (!c->id_ns || !c->id_st || !c->ids) {
                die("%s", "out of memory");
            }
            mqtt_reset_ids(c);
        }
        /* mqtt-idle opens BENCH_IDLE_OPENING at a time, the next as each is CONNACKed: 10k
         * connects at once would overflow the server's accept backlog and time SYN retries. */
        if (b->mode != MODE_MQTT_IDLE || i < BENCH_IDLE_OPENING) {
            conn_start(c);
            b->next_start = i + 1;
        }
    }
    event_base_dispatch(b->base);
    finish(b);
    if (b->t_end_ns == 0) {
        b->t_end_ns = b->t_start_ns; /* stopped during the warm-up: nothing measured */
    }
    report(b);
    for (int i = 0; i < b->nconns; i++) {
        if (b->conns[i].bev) {
            bufferevent_free(b->conns[i].bev);
        }
        event_free(b->conns[i].retry);
        if (b->conns[i].pace) {
            event_free(b->conns[i].pace);
        }
        free(b->conns[i].id_ns);
        free(b->conns[i].id_st);
        free(b->conns[i].ids);
    }
    free(b->conns);
    event_free(b->ev_ping);
    event_free(b->ev_pace);
    event_free(b->ev_warm);
    event_free(b->ev_end);
    event_free(b->ev_rss);
    event_free(b->ev_int);
    event_free(b->ev_term);
    event_base_free(b->base);
    free(b->req);
    free(b->post);
    return b->ok > 0 ? 0 : 1;
}

/* Prints wait's outcome and frees the prepared request; returns the exit status. */
static int wait_report(struct bench *b, int ok, int64_t t0, unsigned long attempts)
{
    if (ok) {
        double ms = (double)(epoch_ns() - t0) / 1e6;
        printf("accepting after %.1f ms (%lu attempt%s)\n", ms, attempts,
               attempts == 1 ? "" : "s");
        if (b->json) {
            printf("{\"mode\":\"wait\",\"accepting_ms\":%.1f,\"attempts\":%lu}\n", ms,
                   attempts);
        }
    } else {
        printf("not accepting after %.1f s (%lu attempts)\n", b->duration, attempts);
        if (b->json) {
            printf("{\"mode\":\"wait\",\"accepting_ms\":null,\"attempts\":%lu}\n", attempts);
        }
    }
    free(b->req);
    free(b->post);
    return ok ? 0 : 1;
}

/* Reads exactly n bytes from a blocking socket (with SO_RCVTIMEO). 0, or -1. */
static int read_all(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* A connection to the MQTT broker that has had its CONNACK (code 0), or -1. */
static int mqtt_blocking_connect(const struct bench *b)
{
    unsigned char pkt[64], ack[4];
    size_t n = mqtt_connect_packet(pkt, sizeof(pkt), 0);
    int fd = blocking_connect(b, 1000);

    if (fd < 0) {
        return -1;
    }
    if (write_all(fd, (const char *)pkt, n) != 0 || read_all(fd, ack, 4) != 0 ||
        ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * mqtt: the broker answers PUBACK whether junction listens or not, so junction is accepting
 * when a message published to the broker comes out as a file in --count-dir (without one,
 * this waits for the broker's CONNACK instead: the broker is up). A QoS 1 probe
 * goes out every 50 ms (the broker drops those that arrive before junction has subscribed)
 * and the folders are looked at every 5 ms. The probes that got through are delivered before
 * the measured window of the load that follows.
 */
static int run_wait_mqtt(struct bench *b, int64_t t0, int64_t deadline)
{
    unsigned char *pkt;
    size_t len;
    long long n0;
    int64_t next_probe = 0;
    unsigned long attempts = 0;
    uint16_t id = 0;
    int fd = -1, ok = 0;

    if (b->ndirs == 0) {
        /* No folder to watch: wait for the MQTT broker itself (its CONNACK). */
        while (!ok && epoch_ns() < deadline) {
            attempts++;
            fd = mqtt_blocking_connect(b);
            ok = fd >= 0;
            if (ok) {
                close(fd);
            } else {
                usleep(5000);
            }
        }
        return wait_report(b, ok, t0, attempts);
    }
    make_mqtt_publish(b);
    len = b->reqlen + 2 + b->postlen;
    pkt = malloc(len);
    if (pkt == NULL) {
        die("%s", "out of memory");
    }
    memcpy(pkt, b->req, b->reqlen);
    memcpy(pkt + b->reqlen + 2, b->post, b->postlen);
    n0 = count_files(b);
    while (!ok && epoch_ns() < deadline) {
        if (epoch_ns() >= next_probe) {
            unsigned char ack[4];
            next_probe = epoch_ns() + 50000000;
            if (fd < 0) {
                fd = mqtt_blocking_connect(b);
            }
            if (fd >= 0) {
                id = id == 0xffff ? 1 : id + 1;
                pkt[b->reqlen] = (unsigned char)(id >> 8);
                pkt[b->reqlen + 1] = (unsigned char)(id & 0xff);
                attempts++;
                if (write_all(fd, (const char *)pkt, len) != 0 || read_all(fd, ack, 4) != 0 ||
                    ack[0] != 0x40 || ack[1] != 2) {
                    close(fd);
                    fd = -1;
                }
            }
        }
        ok = count_files(b) > n0;
        if (!ok) {
            usleep(5000);
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    free(pkt);
    return wait_report(b, ok, t0, attempts);
}

/* Polls until one request is accepted: the time a broker takes from start to accepting. */
static int run_wait(struct bench *b)
{
    int64_t t0 = b->t0_epoch_ns ? b->t0_epoch_ns : epoch_ns();
    int64_t deadline = epoch_ns() + (int64_t)(b->duration * 1e9);
    char resp[8192];
    const char *stop = NULL;
    char *req;
    size_t reqlen;
    unsigned long attempts = 0;

    if (b->mode == MODE_MQTT) {
        return run_wait_mqtt(b, t0, deadline);
    }
    if (b->mode == MODE_WS) {
        /* The upgrade answered 101: the listener takes connections (nothing is sent). */
        make_ws_frame(b);
        req = strdup(b->req);
        reqlen = b->reqlen;
        stop = "\r\n\r\n";
        if (req == NULL) {
            die("%s", "out of memory");
        }
    } else if (b->mode == MODE_HTTP) {
        /* Connection: close, so the answer ends with the connection. */
        static const char cl[] = "Connection: close\r\n";
        const char *p;
        size_t head;
        make_http_request(b);
        p = memmem(b->req, b->reqlen, "\r\n\r\n", 4);
        reqlen = b->reqlen + sizeof(cl) - 1;
        req = malloc(reqlen);
        if (p == NULL || req == NULL) {
            die("%s", "out of memory");
        }
        head = (size_t)(p - b->req) + 2; /* up to and with the last header's CRLF */
        memcpy(req, b->req, head);
        memcpy(req + head, cl, sizeof(cl) - 1);
        memcpy(req + head + sizeof(cl) - 1, b->req + head, b->reqlen - head);
    } else {
        struct conn c;
        make_mllp_template(b);
        memset(&c, 0, sizeof(c));
        snprintf(c.ctl, sizeof(c.ctl), "JBWAIT%lx", (long)getpid());
        reqlen = b->reqlen + strlen(c.ctl) + b->postlen;
        req = malloc(reqlen);
        if (req == NULL) {
            die("%s", "out of memory");
        }
        memcpy(req, b->req, b->reqlen);
        memcpy(req + b->reqlen, c.ctl, strlen(c.ctl));
        memcpy(req + b->reqlen + strlen(c.ctl), b->post, b->postlen);
        stop = "\x1c\r";
    }
    for (;;) {
        ssize_t n = blocking_exchange(b, req, reqlen, stop, resp, sizeof(resp), 5000);
        int ok = 0;
        attempts++;
        if (n > 0 && b->mode == MODE_WS) {
            ok = strncmp(resp, "HTTP/1.1 101", 12) == 0;
        } else if (n > 0 && b->mode == MODE_HTTP) {
            ok = strncmp(resp, "HTTP/1.", 7) == 0 && resp[9] == '2';
        } else if (n > 0) {
            const char *msa = strstr(resp, "MSA");
            ok = msa && (strncmp(msa + 4, "AA", 2) == 0 || strncmp(msa + 4, "CA", 2) == 0);
        }
        if (ok || epoch_ns() >= deadline) {
            free(req);
            return wait_report(b, ok, t0, attempts);
        }
        usleep(5000);
    }
}

/*
 * Waits for --count new files in the --count-dir folders without sending anything: junction
 * consumes a backlog by itself (Kafka IN). Reports the time from --t0 (junction's launch) to the
 * first file and to the last, the rate in between, and junction's memory and CPU. A folder
 * with 100k files costs milliseconds to count, so it is looked at every 10 ms until the first
 * file (that time is the start-to-accepting figure), then every 200 ms (so the last time is
 * up to 200 ms late: 1% of a 20 s drain).
 */
static int run_drain(struct bench *b)
{
    int64_t t0 = b->t0_epoch_ns ? b->t0_epoch_ns : epoch_ns();
    int64_t deadline = epoch_ns() + (int64_t)(b->duration * 1e9);
    int64_t now, t_first = 0;
    long long n0, n, n_first = 0;
    long tick = sysconf(_SC_CLK_TCK);
    double secs, rate = 0, cpu_t = -1;
    int done = 0;

    if (b->ndirs == 0 || b->count == 0) {
        die("%s", "--mode drain needs --count-dir and --count");
    }
    if (b->pid > 0) {
        b->rss_idle = read_rss_kb(b->pid, &b->anon_idle);
        if (b->rss_idle < 0) {
            die("no process %s (see --pid)", "");
        }
        b->rss_peak = b->rss_end = b->rss_idle;
        b->anon_peak = b->anon_idle;
    }
    n0 = count_files(b);
    for (;;) {
        now = epoch_ns();
        n = count_files(b) - n0;
        if (t_first == 0 && n == 0 && b->pid > 0 && !b->target_gone) {
            /* Idle: the last sample with nothing delivered yet, junction up and waiting. */
            long anon, kb = read_rss_kb(b->pid, &anon);
            if (kb >= 0) {
                b->rss_idle = kb;
                b->anon_idle = anon;
            }
        }
        sample_rss(b);
        if (t_first == 0 && n > 0) {
            t_first = now;
            n_first = n;
            if (b->pid > 0) {
                b->cpu_target0 = read_cpu_ticks(b->pid);
            }
        }
        if (n >= (long long)b->count) {
            done = 1;
            break;
        }
        if (now >= deadline || b->target_gone) {
            break;
        }
        usleep(t_first ? 200000 : 10000);
    }
    if (t_first && b->pid > 0 && !b->target_gone) {
        b->cpu_target1 = read_cpu_ticks(b->pid);
    }
    secs = t_first ? (double)(now - t_first) / 1e9 : 0;
    if (secs > 0) {
        rate = (double)(n - n_first) / secs;
        if (b->cpu_target0 >= 0 && b->cpu_target1 >= b->cpu_target0) {
            cpu_t = 100.0 * (double)(b->cpu_target1 - b->cpu_target0) / (double)tick / secs;
        }
    }
    printf("drain: %lld of %" PRIu64 " files %s %.1f s (the first after %.1f s, then %.0f/s)", n,
           b->count, done ? "after" : "and gave up after", (double)(now - t0) / 1e9,
           t_first ? (double)(t_first - t0) / 1e9 : 0.0, rate);
    if (b->pid > 0) {
        printf("; RSS idle %.1f MB peak %.1f MB (anon %.1f / %.1f)%s; CPU target %.0f%%",
               (double)b->rss_idle / 1024, (double)b->rss_peak / 1024,
               (double)b->anon_idle / 1024, (double)b->anon_peak / 1024,
               b->target_gone ? " (target exited)" : "", cpu_t);
    }
    printf("\n");
    if (b->json) {
        printf("{\"mode\":\"drain\",\"count\":%" PRIu64 ",\"delivered\":%lld,\"timed_out\":%s"
               ",\"errors\":%d,\"first_ms\":%.1f,\"all_ms\":%.1f,\"msg_per_s\":%.1f"
               ",\"delivered_per_s\":%.1f",
               b->count, n, done ? "false" : "true", !done,
               t_first ? (double)(t_first - t0) / 1e6 : -1.0, (double)(now - t0) / 1e6, rate,
               rate);
        if (b->pid > 0) {
            printf(",\"rss_idle_kb\":%ld,\"rss_peak_kb\":%ld,\"rss_end_kb\":%ld"
                   ",\"anon_idle_kb\":%ld,\"anon_peak_kb\":%ld,\"target_exited\":%s"
                   ",\"cpu_target_pct\":%.1f",
                   b->rss_idle, b->rss_peak, b->rss_end, b->anon_idle, b->anon_peak,
                   b->target_gone ? "true" : "false", cpu_t);
        }
        printf("}\n");
    }
    return done ? 0 : 1;
}

/* Prints n ports that were free a moment ago, all bound at once so that they differ. */
static int run_freeport(int n)
{
    int *fds = calloc((size_t)n, sizeof(int));

    if (fds == NULL) {
        return 2;
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &sl) != 0) {
            perror("jn-bench: freeport");
            return 2;
        }
        printf("%s%u", i ? " " : "", (unsigned)ntohs(sa.sin_port));
    }
    printf("\n");
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
    free(fds);
    return 0;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: jn-bench --mode http|mllp|mqtt|mqtt-idle|ws|wait|drain|freeport [options]\n"
            "\n"
            "  --url URL          http://127.0.0.1:8080/ingest, mllp://127.0.0.1:2575, or\n"
            "                     mqtt://127.0.0.1:1883/TOPIC (an MQTT server), or\n"
            "                     ws://127.0.0.1:8080/ (a WebSocket IN);\n"
            "                     https://, mllps:// and wss:// speak TLS (not verified)\n"
            "  --conns N          connections, each with one request in flight (default 1);\n"
            "                     freeport: how many ports to print\n"
            "  --inflight N       mqtt: PUBLISHes in flight per connection (default 1)\n"
            "  --qos Q            mqtt: 1 (PUBACK, the default) or 2 (PUBREC, PUBREL, PUBCOMP)\n"
            "  --rate R           mqtt: at most R PUBLISHes per second in all, paced every ms\n"
            "                     (default: closed loop, the next as soon as one is acknowledged)\n"
            "  --duration S       measured seconds after the warm-up (default 10);\n"
            "                     wait, drain: give up after S seconds\n"
            "  --warmup S         seconds of load before measuring (default 2)\n"
            "  --size B           http: body bytes, mqtt, ws: payload bytes (default 1024)\n"
            "  --file F           mllp: the HL7 message (default: a built-in ADT^A01); MSH-10\n"
            "                     is replaced by a unique control id for every message\n"
            "  --count N          stop after N successes (e.g. to fill a queue);\n"
            "                     drain: wait for N new files in the --count-dir folders\n"
            "  --timeout S        per request and per connect (default 10)\n"
            "  --pid PID          sample the broker's VmRSS (idle, then every 100 ms) and CPU\n"
            "  --count-dir DIR    count files in DIR (repeatable) before and after the window:\n"
            "                     deliveries per second (mqtt's figure for junction itself);\n"
            "                     wait with mqtt: the folder the probe must reach (none:\n"
            "                     wait for the broker's CONNACK)\n"
            "  --count-url URL    same, from the first number in GET URL (jn-sink's /stats)\n"
            "  --count-key KEY    with --count-url: the sum of every \"KEY\":N in the answer\n"
            "                     (junction's admin /api/v1/channels with KEY delivered)\n"
            "  --t0 NS            wait, drain: measure from this CLOCK_REALTIME ns (date +%%s%%N)\n"
            "  --rate R           at most R requests/s of all connections together, on a\n"
            "                     fixed schedule (default: no cap, closed loop)\n"
            "  --json             also print one JSON object\n");
}

static double num_arg(const char *s, const char *name, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);

    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        die("bad value for %s", name);
    }
    return v;
}

static void parse_url(struct bench *b)
{
    const char *hp, *slash;
    size_t hl;
    char *colon;

    if (strncmp(b->url, "https://", 8) == 0 || strncmp(b->url, "mllps://", 8) == 0 ||
        strncmp(b->url, "wss://", 6) == 0) {
        hp = strchr(b->url, '/') + 2;
        b->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (b->ssl_ctx == NULL) {
            die("%s", "cannot create a TLS context");
        }
        SSL_CTX_set_min_proto_version(b->ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(b->ssl_ctx, SSL_VERIFY_NONE, NULL);
    } else if (strncmp(b->url, "http://", 7) == 0) {
        hp = b->url + 7;
    } else if (strncmp(b->url, "mllp://", 7) == 0 || strncmp(b->url, "tcp://", 6) == 0 ||
               strncmp(b->url, "mqtt://", 7) == 0 || strncmp(b->url, "ws://", 5) == 0) {
        hp = strchr(b->url, '/') + 2;
    } else {
        die("--url %s: expected http[s]://host:port/path, mllp[s]://host:port, "
            "ws[s]://host:port/path or mqtt://host:port/topic", b->url);
        return;
    }
    slash = strchr(hp, '/');
    hl = slash ? (size_t)(slash - hp) : strlen(hp);
    if (hl == 0 || hl >= sizeof(b->host)) {
        die("--url %s: bad host", b->url);
    }
    memcpy(b->host, hp, hl);
    b->host[hl] = '\0';
    snprintf(b->path, sizeof(b->path), "%s", slash ? slash : "/");
    b->addrlen = (int)sizeof(b->addr);
    if (evutil_parse_sockaddr_port(b->host, (struct sockaddr *)&b->addr, &b->addrlen) != 0) {
        die("--url: '%s' is not a numeric address:port (no DNS here)", b->host);
    }
    colon = strrchr(b->host, ':');
    b->port = colon ? atoi(colon + 1) : 0;
    if (colon) {
        *colon = '\0';
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},      {"url", required_argument, NULL, 'u'},
        {"conns", required_argument, NULL, 'c'},     {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},    {"size", required_argument, NULL, 's'},
        {"file", required_argument, NULL, 'f'},      {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},   {"pid", required_argument, NULL, 'p'},
        {"count-dir", required_argument, NULL, 'D'}, {"count-url", required_argument, NULL, 'U'},
        {"t0", required_argument, NULL, 'T'},        {"json", no_argument, NULL, 'j'},
        {"count-key", required_argument, NULL, 'K'}, {"inflight", required_argument, NULL, 'I'},
        {"qos", required_argument, NULL, 'Q'},         {"rate", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    static struct bench bench; /* large (histogram): not on the stack */
    struct bench *b = &bench;
    const char *mode = NULL;
    int opt;

    b->nconns = 1;
    b->duration = 10;
    b->warmup = 2;
    b->timeout = 10;
    b->size = 1024;
    b->mqtt_inflight = 1;
    b->qos = 1;
    b->cpu_target0 = b->cpu_target1 = -1;
    b->delivered0 = b->delivered1 = -1;
    while ((opt = getopt_long(argc, argv, "m:u:c:d:w:s:f:n:t:p:D:U:K:T:I:Q:r:jh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            mode = optarg;
            break;
        case 'u':
            snprintf(b->url, sizeof(b->url), "%s", optarg);
            break;
        case 'c':
            b->nconns = (int)num_arg(optarg, "--conns", 1, 100000);
            break;
        case 'd':
            b->duration = num_arg(optarg, "--duration", 0.001, 86400);
            break;
        case 'w':
            b->warmup = num_arg(optarg, "--warmup", 0, 86400);
            break;
        case 's':
            b->size = (size_t)num_arg(optarg, "--size", 0, 1 << 30);
            break;
        case 'f':
            b->file = optarg;
            break;
        case 'n':
            b->count = (uint64_t)num_arg(optarg, "--count", 1, 1e15);
            break;
        case 't':
            b->timeout = num_arg(optarg, "--timeout", 0.001, 3600);
            break;
        case 'p':
            b->pid = (pid_t)num_arg(optarg, "--pid", 1, 1 << 30);
            break;
        case 'D':
            if (b->ndirs == BENCH_MAX_DIRS) {
                die("%s", "too many --count-dir");
            }
            b->count_dirs[b->ndirs++] = optarg;
            break;
        case 'U':
            b->count_url = optarg;
            break;
        case 'K':
            b->count_key = optarg;
            break;
        case 'I':
            b->mqtt_inflight = (int)num_arg(optarg, "--inflight", 1, 65535);
            break;
        case 'Q':
            b->qos = (int)num_arg(optarg, "--qos", 1, 2);
            break;
        case 'T':
            b->t0_epoch_ns = (int64_t)strtoll(optarg, NULL, 10);
            break;
        case 'r':
            b->rate = num_arg(optarg, "--rate", 1, 1e8);
            break;
        case 'j':
            b->json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (mode == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "freeport") == 0) {
        return run_freeport(b->nconns);
    }
    if (strcmp(mode, "drain") == 0) {
        return run_drain(b);
    }
    if (b->url[0] == '\0') {
        die("%s", "--url is required");
    }
    parse_url(b);
    if (strcmp(mode, "http") == 0) {
        b->mode = MODE_HTTP;
        return run_load(b);
    }
    if (strcmp(mode, "mllp") == 0) {
        b->mode = MODE_MLLP;
        return run_load(b);
    }
    if (strcmp(mode, "mqtt") == 0) {
        b->mode = MODE_MQTT;
        return run_load(b);
    }
    if (strcmp(mode, "mqtt-idle") == 0) {
        b->mode = MODE_MQTT_IDLE;
        return run_load(b);
    }
    if (strcmp(mode, "ws") == 0) {
        b->mode = MODE_WS;
        return run_load(b);
    }
    if (strcmp(mode, "wait") == 0) {
        b->mode = strncmp(b->url, "http", 4) == 0      ? MODE_HTTP
                  : strncmp(b->url, "mqtt://", 7) == 0 ? MODE_MQTT
                  : strncmp(b->url, "ws", 2) == 0      ? MODE_WS
                                                       : MODE_MLLP;
        return run_wait(b);
    }
    die("unknown --mode %s (http, mllp, mqtt, mqtt-idle, ws, wait, drain, freeport)", mode);
    return 2;
}
