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

/* One command line from stdin; answers on stdout. */
static void command(rd_kafka_mock_cluster_t *mc, char *line, int nbrokers)
{
    char *cmd = strtok(line, " \t\r\n");
    char *arg = cmd != NULL ? strtok(NULL, " \t\r\n") : NULL;
    char *arg2 = arg != NULL ? strtok(NULL, " \t\r\n") : NULL;
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
