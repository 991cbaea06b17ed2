/*
 * kafka_mock: a Kafka cluster for tests, from librdkafka's mock cluster (rdkafka_mock.h).
 *
 *   kafka_mock [--brokers N] TOPIC[:PARTITIONS] ...
 *
 * Starts N mock brokers on 127.0.0.1 ports (real Kafka protocol, so junction and kcat talk to
 * it like to any cluster), creates each topic (default 1 partition, replication factor N capped
 * at 3), prints the bootstrap servers on one line to stdout, flushes, and stays up until stdin
 * closes or SIGTERM/SIGINT arrives. Lines read from stdin drive it while it runs:
 *
 *   down [ID]            disconnect broker ID (all when omitted) and refuse new connections
 *   up [ID]              accept connections again
 *   topic NAME [PARTS]   create another topic
 *   produce TOPIC N SIZE produce N records of SIZE bytes (no key, round robin over the partitions)
 *                        and wait until the cluster has them all: "ok N records in MS ms, the
 *                        topic holds T". A mock partition keeps only its last 5 MB (librdkafka
 *                        2.0's rdkafka_mock.c), so T < N is an error: use more partitions.
 *                        tools/bench/run.sh pre-loads its Kafka scenario with it
 *
 * each answered with "ok" or "error: ..." on stdout, so a test can wait for the effect.
 * Why a separate program: the mock cluster lives in the process of the rd_kafka_t that owns it,
 * and a test must be able to kill -9 junction without taking the cluster down with it.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int create_topic(rd_kafka_mock_cluster_t *mc, const char *spec, int nbrokers)
{
    char name[256];
    const char *colon = strchr(spec, ':');
    int parts = 1;
    int rf = nbrokers < 3 ? nbrokers : 3;
    size_t n = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
    rd_kafka_resp_err_t err;

    if (n == 0 || n >= sizeof(name)) {
        fprintf(stderr, "kafka_mock: bad topic '%s'\n", spec);
        return -1;
    }
    memcpy(name, spec, n);
    name[n] = '\0';
    if (colon != NULL) {
        parts = atoi(colon + 1);
        if (parts < 1) {
            fprintf(stderr, "kafka_mock: bad partition count in '%s'\n", spec);
            return -1;
        }
    }
    err = rd_kafka_mock_topic_create(mc, name, parts, rf);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafka_mock: cannot create topic %s: %s\n", name, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

static void produce_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++*(long *)opaque;
    }
}

/* The records the topic's partitions hold (high - low watermark, summed), or -1; *parts gets
 * the partition count. */
static long topic_records(rd_kafka_t *rk, const char *topic, int *parts)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    long sum = 0;

    *parts = 0;
    if (rkt == NULL) {
        return -1;
    }
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sum = -1;
    } else {
        *parts = md->topics[0].partition_cnt;
    }
    for (int i = 0; sum >= 0 && i < md->topics[0].partition_cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, md->topics[0].partitions[i].id, &lo,
                                             &hi, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sum = -1;
            break;
        }
        sum += (long)(hi - lo);
    }
    if (md != NULL) {
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return sum;
}

/* produce TOPIC N SIZE: a plain producer on our own brokers; every record is SIZE bytes of
 * JSON-ish text that starts with its number. Blocks the command loop until all are acked. */
static void produce(rd_kafka_mock_cluster_t *mc, const char *topic, long count, long size)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    struct timespec t0, t1;
    long failed = 0, held;
    int parts;
    char *buf;

    if (count < 1 || size < 16 || size > (1L << 20)) {
        rd_kafka_conf_destroy(conf);
        printf("error: produce TOPIC N SIZE wants N >= 1 and SIZE in 16..1048576\n");
        return;
    }
    buf = malloc((size_t)size);
    if (buf == NULL) {
        rd_kafka_conf_destroy(conf);
        printf("error: out of memory\n");
        return;
    }
    memset(buf, 'x', (size_t)size);
    buf[size - 2] = '"';
    buf[size - 1] = '}';
    if (rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc),
                          errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        free(buf);
        printf("error: %s\n", errstr);
        return;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, produce_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        free(buf);
        printf("error: %s\n", errstr);
        return;
    }
    if (topic_records(rk, topic, &parts) < 0 || parts < 1) {
        rd_kafka_destroy(rk);
        free(buf);
        printf("error: no topic %s\n", topic);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count && !stop_flag; i++) {
        char head[32];
        int hl = snprintf(head, sizeof(head), "{\"n\":%ld,\"x\":\"", i);
        rd_kafka_resp_err_t err;
        memcpy(buf, head, (size_t)hl < (size_t)size - 2 ? (size_t)hl : (size_t)size - 2);
        for (;;) {
            err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION((int32_t)(i % parts)),
                                    RD_KAFKA_V_VALUE(buf, (size_t)size),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                break;
            }
            rd_kafka_poll(rk, 50); /* the local queue is full: let deliveries drain it */
        }
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            failed += count - i;
            break;
        }
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 300000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        failed += rd_kafka_outq_len(rk);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    held = topic_records(rk, topic, &parts);
    rd_kafka_destroy(rk);
    free(buf);
    if (failed > 0 || stop_flag) {
        printf("error: %ld of %ld records not produced\n", failed, count);
    } else if (held < count) {
        printf("error: the topic holds %ld records of the %ld produced (a mock partition keeps "
               "its last 5 MB): use more partitions\n", held, count);
    } else {
        printf("ok %ld records in %ld ms, the topic holds %ld\n", count,
               (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000),
               held);
    }
}

/* One command line from stdin; answers on stdout. */
static void command(rd_kafka_mock_cluster_t *mc, char *line, int nbrokers)
{
    char *cmd = strtok(line, " \t\r\n");
    char *arg = cmd != NULL ? strtok(NULL, " \t\r\n") : NULL;
    char *arg2 = arg != NULL ? strtok(NULL, " \t\r\n") : NULL;
    char *arg3 = arg2 != NULL ? strtok(NULL, " \t\r\n") : NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (cmd == NULL) {
        return;
    }
    if (strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) {
        int first = arg != NULL ? atoi(arg) : 1;
        int last = arg != NULL ? first : nbrokers;
        for (int id = first; id <= last && err == RD_KAFKA_RESP_ERR_NO_ERROR; id++) {
            err = cmd[0] == 'd' ? rd_kafka_mock_broker_set_down(mc, id)
                                : rd_kafka_mock_broker_set_up(mc, id);
        }
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            printf("error: %s\n", rd_kafka_err2str(err));
        } else {
            printf("ok\n");
        }
    } else if (strcmp(cmd, "topic") == 0 && arg != NULL) {
        char spec[300];
        snprintf(spec, sizeof(spec), "%s:%s", arg, arg2 != NULL ? arg2 : "1");
        printf(create_topic(mc, spec, nbrokers) == 0 ? "ok\n" : "error: cannot create\n");
    } else if (strcmp(cmd, "produce") == 0 && arg3 != NULL) {
        produce(mc, arg, strtol(arg2, NULL, 10), strtol(arg3, NULL, 10));
    } else {
        printf("error: unknown command '%s'\n", cmd);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    int nbrokers = 1;
    int i = 1;
    char line[512];
    size_t have = 0;
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (argc > 2 && strcmp(argv[1], "--brokers") == 0) {
        nbrokers = atoi(argv[2]);
        i = 3;
    }
    if (nbrokers < 1) {
        fprintf(stderr, "usage: kafka_mock [--brokers N] TOPIC[:PARTITIONS] ...\n");
        return 2;
    }
    /* The owner handle only keeps the cluster; it talks to nobody (hence no bootstrap). */
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "kafka_mock: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, nbrokers);
    if (mc == NULL) {
        fprintf(stderr, "kafka_mock: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (; i < argc; i++) {
        if (create_topic(mc, argv[i], nbrokers) != 0) {
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    while (!stop_flag) {
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = poll(&p, 1, 200);
        ssize_t got;
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            continue;
        }
        got = read(STDIN_FILENO, line + have, sizeof(line) - 1 - have);
        if (got <= 0) {
            break; /* stdin closed: the test is gone */
        }
        have += (size_t)got;
        line[have] = '\0';
        for (char *nl; (nl = strchr(line, '\n')) != NULL;) {
            size_t used = (size_t)(nl - line) + 1;
            *nl = '\0';
            command(mc, line, nbrokers);
            memmove(line, line + used, have - used + 1);
            have -= used;
        }
        if (have == sizeof(line) - 1) {
            have = 0; /* an overlong line: drop it */
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
