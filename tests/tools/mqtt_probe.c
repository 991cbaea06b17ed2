/*
 * mqtt_probe: a small MQTT subscriber on channels/mqtt_proto over a blocking socket, so the
 * codec is tested against a real broker (tests/integration/test_mqtt_proto_peer.py).
 *
 *   mqtt_probe -p PORT [-h 127.0.0.1] [-V 4|5] -i CLIENT_ID -t FILTER [-q 1|2] [-n COUNT]
 *              [-w SECONDS] [-x SESSION_EXPIRY] [-k KEEP_ALIVE]
 *
 * Connects with clean session 0 (v5: clean start 0 and Session Expiry -x, default 3600), so
 * the broker keeps the session; subscribes to FILTER at QoS -q (default 1); prints one line
 * per message delivered to the application and answers as the receiver of 4.3 must:
 *   QoS 1: PUBACK after the message is printed;
 *   QoS 2: the message is printed on its first PUBLISH and its packet identifier kept until
 *          PUBREL (a resent PUBLISH with that identifier is answered PUBREC, not printed
 *          again); PUBREL is answered PUBCOMP and frees the identifier (3.1.1 4.3.3, method B).
 * After COUNT messages (default 1) and no QoS 2 exchange left open it sends DISCONNECT and
 * exits 0; after -w seconds (default 20) without that it exits 2; on a protocol error 1.
 *
 * Output lines (stdout, flushed each; strings as hex so any byte survives):
 *   CONNACK session_present=0|1 rc=0xNN
 *   SUBACK rc=0xNN
 *   MSG topic=<hex> qos=N dup=0|1 retain=0|1 payload=<hex> user=<hexname>:<hexvalue>,...
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "jn_buf.h"
#include "mqtt_proto.h"

#define MAX_PACKET (1u << 20)
#define MAX_OPEN_QOS2 65536

struct probe {
    int fd, version;
    struct jn_buf in;
    unsigned char open_qos2[MAX_OPEN_QOS2 / 8]; /* identifiers between PUBREC and PUBREL */
    size_t n_open;
    time_t last_sent;
    int closing; /* we sent DISCONNECT: the broker closing is expected */
};

static void hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        printf("%02x", (unsigned char)p[i]);
    }
}

static int send_packet(struct probe *pr, const struct jn_mqtt_packet *p)
{
    struct jn_buf b = JN_BUF_INIT;
    struct jn_mqtt_err e;
    size_t off = 0;

    if (jn_mqtt_encode(p, &b, &e) != 0) {
        fprintf(stderr, "mqtt_probe: cannot encode %s: %s\n", jn_mqtt_type_name(p->type),
                e.err.msg);
        jn_buf_reset(&b);
        return -1;
    }
    while (off < b.len) {
        ssize_t w = send(pr->fd, b.p + off, b.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            fprintf(stderr, "mqtt_probe: send: %s\n", strerror(errno));
            jn_buf_reset(&b);
            return -1;
        }
        off += (size_t)w;
    }
    jn_buf_reset(&b);
    pr->last_sent = time(NULL);
    return 0;
}

static int send_ack(struct probe *pr, int type, uint16_t id)
{
    struct jn_mqtt_packet p;

    jn_mqtt_packet_init(&p, type, pr->version);
    p.packet_id = id;
    return send_packet(pr, &p);
}

/* Waits up to deadline for the next whole packet; 1 with it decoded into *p (borrowing
 * pr->in, valid until the next call), 0 on timeout, -1 on error or close. */
static int next_packet(struct probe *pr, time_t deadline, int keep_alive,
                       struct jn_mqtt_packet *p, size_t *consumed)
{
    if (*consumed) {
        memmove(pr->in.p, pr->in.p + *consumed, pr->in.len - *consumed);
        pr->in.len -= *consumed;
        *consumed = 0;
    }
    for (;;) {
        struct jn_mqtt_err e;
        size_t n = 0;
        enum jn_mqtt_frame_res fr = jn_mqtt_frame(pr->in.p, pr->in.len, MAX_PACKET, &n, &e);
        struct pollfd pfd = {pr->fd, POLLIN, 0};
        time_t now = time(NULL);
        ssize_t r;

        if (fr == JN_MQTT_FRAME_BAD) {
            fprintf(stderr, "mqtt_probe: broken stream (0x%02x): %s\n", e.rc, e.err.msg);
            return -1;
        }
        if (fr == JN_MQTT_FRAME_PACKET) {
            if (jn_mqtt_decode(pr->in.p, n, pr->version, p, &e) != 0) {
                fprintf(stderr, "mqtt_probe: bad packet (0x%02x): %s\n", e.rc, e.err.msg);
                return -1;
            }
            *consumed = n;
            return 1;
        }
        if (now >= deadline) {
            return 0;
        }
        if (keep_alive > 0 && now - pr->last_sent >= keep_alive / 2) {
            struct jn_mqtt_packet ping;
            jn_mqtt_packet_init(&ping, JN_MQTT_PINGREQ, pr->version);
            if (send_packet(pr, &ping) != 0) {
                return -1;
            }
        }
        if (poll(&pfd, 1, 200) < 0 && errno != EINTR) {
            return -1;
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
            continue;
        }
        if (jn_buf_reserve(&pr->in, 65536) != 0) {
            return -1;
        }
        r = recv(pr->fd, pr->in.p + pr->in.len, 65536, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (!pr->closing) {
                fprintf(stderr, "mqtt_probe: the broker closed the connection\n");
            }
            return -1;
        }
        pr->in.len += (size_t)r;
    }
}

/* Everything after the TCP connect: the exit code. main closes and frees whatever happens. */
static int session(struct probe *pr, const char *client_id, const char *filter, int qos,
                   int count, long expiry, int keep_alive, time_t deadline)
{
    struct jn_mqtt_packet p;
    struct jn_mqtt_sub sub;
    size_t consumed = 0;
    int got = 0, rc;

    /* CONNECT: clean session 0; v5 also a Session Expiry so the session outlives us. */
    jn_mqtt_packet_init(&p, JN_MQTT_CONNECT, pr->version);
    p.connect.client_id = (struct jn_mqtt_str){client_id, strlen(client_id)};
    p.connect.keep_alive = (uint16_t)keep_alive;
    if (pr->version == JN_MQTT_V5) {
        p.props.has |= (uint64_t)1 << JN_MQTT_P_SESSION_EXPIRY;
        p.props.session_expiry = (uint32_t)expiry;
    }
    if (send_packet(pr, &p) != 0) {
        return 1;
    }
    rc = next_packet(pr, deadline, keep_alive, &p, &consumed);
    if (rc <= 0 || p.type != JN_MQTT_CONNACK) {
        fprintf(stderr, "mqtt_probe: no CONNACK\n");
        return 1;
    }
    printf("CONNACK session_present=%d rc=0x%02x\n", p.session_present, p.reason_code);
    fflush(stdout);
    if (p.reason_code != 0) {
        return 1;
    }

    jn_mqtt_packet_init(&p, JN_MQTT_SUBSCRIBE, pr->version);
    p.packet_id = 1;
    sub.filter = (struct jn_mqtt_str){filter, strlen(filter)};
    sub.options = (uint8_t)qos;
    p.subs = &sub;
    p.n_subs = 1;
    if (send_packet(pr, &p) != 0) {
        return 1;
    }

    for (;;) {
        if (got >= count && pr->n_open == 0) {
            jn_mqtt_packet_init(&p, JN_MQTT_DISCONNECT, pr->version);
            send_packet(pr, &p);
            pr->closing = 1;
            shutdown(pr->fd, SHUT_WR);
            /* Wait for the broker to close, so our last acknowledgements are processed. */
            while (next_packet(pr, time(NULL) + 2, 0, &p, &consumed) > 0) {
            }
            return 0;
        }
        rc = next_packet(pr, deadline, keep_alive, &p, &consumed);
        if (rc == 0) {
            fprintf(stderr, "mqtt_probe: timed out with %d of %d messages, %zu QoS 2 open\n",
                    got, count, pr->n_open);
            return 2;
        }
        if (rc < 0) {
            return 1;
        }
        switch (p.type) {
        case JN_MQTT_SUBACK:
            printf("SUBACK rc=0x%02x\n", p.n_codes ? p.codes[0] : 0xff);
            fflush(stdout);
            if (p.n_codes != 1 || p.codes[0] > 2) {
                return 1;
            }
            break;
        case JN_MQTT_PUBLISH: {
            int seen = p.qos == 2 && (pr->open_qos2[p.packet_id / 8] >> (p.packet_id % 8)) & 1;
            if (!seen) {
                struct jn_mqtt_userprop u;
                size_t it = 0;
                printf("MSG topic=");
                hex(p.topic.p, p.topic.len);
                printf(" qos=%d dup=%d retain=%d payload=", p.qos, p.dup, p.retain);
                hex(p.payload.p, p.payload.len);
                printf(" user=");
                for (int first = 1; jn_mqtt_user_next(&p.props, &it, &u); first = 0) {
                    printf("%s", first ? "" : ",");
                    hex(u.name.p, u.name.len);
                    printf(":");
                    hex(u.value.p, u.value.len);
                }
                printf("\n");
                fflush(stdout);
                got++;
            }
            if (p.qos == 1 && send_ack(pr, JN_MQTT_PUBACK, p.packet_id) != 0) {
                return 1;
            }
            if (p.qos == 2) {
                if (!seen) {
                    pr->open_qos2[p.packet_id / 8] |= (unsigned char)(1u << (p.packet_id % 8));
                    pr->n_open++;
                }
                if (send_ack(pr, JN_MQTT_PUBREC, p.packet_id) != 0) {
                    return 1;
                }
            }
            break;
        }
        case JN_MQTT_PUBREL:
            if ((pr->open_qos2[p.packet_id / 8] >> (p.packet_id % 8)) & 1) {
                pr->open_qos2[p.packet_id / 8] &= (unsigned char)~(1u << (p.packet_id % 8));
                pr->n_open--;
            }
            /* A PUBREL for an identifier we do not hold (after a reconnect) is answered too. */
            if (send_ack(pr, JN_MQTT_PUBCOMP, p.packet_id) != 0) {
                return 1;
            }
            break;
        case JN_MQTT_PINGRESP:
            break;
        case JN_MQTT_DISCONNECT:
            fprintf(stderr, "mqtt_probe: the broker sent DISCONNECT 0x%02x\n", p.reason_code);
            return 1;
        default:
            fprintf(stderr, "mqtt_probe: unexpected %s\n", jn_mqtt_type_name(p.type));
            return 1;
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: mqtt_probe -p PORT [-h HOST] [-V 4|5] -i CLIENT_ID -t FILTER "
                    "[-q 1|2] [-n COUNT] [-w SECONDS] [-x SESSION_EXPIRY] [-k KEEP_ALIVE]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *client_id = NULL, *filter = NULL;
    int port = 0, qos = 1, count = 1, wait_s = 20, keep_alive = 60, opt;
    long expiry = 3600;
    struct probe pr;
    struct sockaddr_in sa;
    time_t deadline;
    int rc, one = 1;

    memset(&pr, 0, sizeof(pr));
    pr.version = JN_MQTT_V311;
    while ((opt = getopt(argc, argv, "h:p:V:i:t:q:n:w:x:k:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'V': pr.version = atoi(optarg); break;
        case 'i': client_id = optarg; break;
        case 't': filter = optarg; break;
        case 'q': qos = atoi(optarg); break;
        case 'n': count = atoi(optarg); break;
        case 'w': wait_s = atoi(optarg); break;
        case 'x': expiry = atol(optarg); break;
        case 'k': keep_alive = atoi(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || client_id == NULL || filter == NULL || qos < 0 ||
        qos > 2 || (pr.version != 4 && pr.version != 5) || count < 0 || keep_alive < 0 ||
        keep_alive > 65535 || expiry < 0 || expiry > 0xffffffffL) {
        usage();
    }
    deadline = time(NULL) + wait_s;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "mqtt_probe: host must be an IPv4 address: %s\n", host);
        return 1;
    }
    pr.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (pr.fd < 0 || connect(pr.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "mqtt_probe: connect %s:%d: %s\n", host, port, strerror(errno));
        if (pr.fd >= 0) {
            close(pr.fd);
        }
        return 1;
    }
    setsockopt(pr.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    rc = session(&pr, client_id, filter, qos, count, expiry, keep_alive, deadline);
    close(pr.fd);
    jn_buf_reset(&pr.in);
    return rc;
}
