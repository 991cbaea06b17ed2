/*
 * jn_init: the starter configs of `junction init` (see jn_init.h). The texts are here, not in
 * files, so the binary alone can write them (a package installs no examples folder).
 */
#include "jn_init.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define HEAD(what, cmd)                                                                           \
    "# junction starter config: " what " (junction init --example " cmd ").\n"                    \
    "#\n"                                                                                         \
    "#   junction check -c junction.yaml    validate it: errors and warnings at file:line:col\n"  \
    "#   junction run -c junction.yaml      start it (Ctrl-C stops it; queued messages stay)\n"   \
    "#\n"                                                                                         \
    "# Relative paths are relative to this file's folder. Every option of a type:\n"              \
    "# `junction describe TYPE`; all of them: docs/config-reference.md or junction(1).\n\n"

#define CORE                                                                                      \
    "junction:\n"                                                                                 \
    "  data_dir: ./data          # the journal: queued messages, dead letters, the action log\n" \
    "  log_level: info           # error | warn | info | debug | trace\n"                        \
    "  admin: 127.0.0.1:8081     # /health /ready /metrics, and what `junction ctl` asks\n\n"

#define TAIL                                                                                      \
    "\n# What no route takes: dead-letter (see `junction dlq list`), drop, or an OUT channel.\n"  \
    "unrouted: dead-letter\n"

const struct jn_init_example jn_init_examples[] = {
    {"http-to-file", "HTTP POST in, one file per message out",
     HEAD("HTTP in, files out", "http-to-file")
     "#   curl --data-binary @order.json http://127.0.0.1:8080/ingest   -> 202 {\"id\":\"...\"}\n"
     "#   ls out/                                                        -> the message\n\n"
     CORE
     "channels:\n"
     "  orders-in:\n"
     "    type: http\n"
     "    direction: in\n"
     "    # Loopback only. To take other hosts' requests listen on 0.0.0.0:8080 and add\n"
     "    # tls: {cert: server.pem, key: server.key} (check warns about one without).\n"
     "    listen: 127.0.0.1:8080\n"
     "    path: /ingest\n"
     "    max_message: 1MiB         # larger bodies are answered 413\n\n"
     "  archive:\n"
     "    type: file\n"
     "    direction: out\n"
     "    dir: ./out\n"
     "    name: \"{date}-{id}.msg\"   # templates: {id} {channel} {date} {time} {header.NAME}\n\n"
     "routes:\n"
     "  orders-to-archive:\n"
     "    from: [orders-in]\n"
     "    to: [archive]\n" TAIL},
    {"hl7", "HL7 v2 over MLLP in; ADT as JSON files, everything on to a lab system",
     HEAD("HL7 v2 over MLLP", "hl7")
     "#   jn-mllp-send 127.0.0.1:2575 adt_a01.hl7    -> an AA ACK once the message is durable\n\n"
     CORE
     "channels:\n"
     "  adt-in:\n"
     "    type: mllp\n"
     "    direction: in\n"
     "    listen: 127.0.0.1:2575\n"
     "    ack: commit               # or delivered: ACK with the outcome downstream\n"
     "    duplicate_window: 10m     # a resent MSH-10 is ACKed again, not routed twice\n\n"
     "  lab-out:\n"
     "    type: mllp\n"
     "    direction: out\n"
     "    connect: 127.0.0.1:2576   # the lab system's MLLP listener\n"
     "    ordered: fifo             # HL7 peers usually need the order kept\n"
     "    retry: {attempts: 20, backoff: 1s, max_backoff: 5m}\n\n"
     "  adt-json:\n"
     "    type: file\n"
     "    direction: out\n"
     "    dir: ./adt-json\n"
     "    name: \"{date}-{id}.json\"\n\n"
     "services:\n"
     "  # segments by name, fields by number: {\"PID\":[{\"5\":[{\"1\":\"DOE\"}]}]}\n"
     "  to-json: { type: hl7-to-json, shape: named }\n\n"
     "routes:\n"
     "  adt-as-json:\n"
     "    from: [adt-in]\n"
     "    when: hl7(\"MSH-9.1\") == \"ADT\"\n"
     "    via: [to-json]\n"
     "    to: [adt-json]\n"
     "  all-to-lab:\n"
     "    from: [adt-in]\n"
     "    to: [lab-out]\n" TAIL},
    {"mqtt", "MQTT subscription in, HTTP POST out",
     HEAD("MQTT in, HTTP out", "mqtt")
     "#   mosquitto_pub -h 127.0.0.1 -t sensors/room1 -q 1 -m '{\"t\": 21.5}'\n\n"
     CORE
     "channels:\n"
     "  sensors:\n"
     "    type: mqtt\n"
     "    direction: in\n"
     "    url: tcp://127.0.0.1:1883 # mqtts://host:8883 for TLS\n"
     "    topics: [\"sensors/#\"]\n"
     "    qos: 1\n\n"
     "  readings-api:\n"
     "    type: http\n"
     "    direction: out\n"
     "    url: http://127.0.0.1:9000/readings\n"
     "    headers: {X-Source: \"{channel}\"}\n"
     "    retry: {attempts: 10, backoff: 500ms, max_backoff: 1m}\n\n"
     "routes:\n"
     "  sensors-to-api:\n"
     "    from: [sensors]\n"
     "    to: [readings-api]\n" TAIL},
    {"kafka", "HTTP POST in, a Kafka topic out (idempotent producer)",
     HEAD("HTTP in, Kafka out", "kafka")
     "#   curl -H 'X-Order-Id: 42' --data-binary @order.json http://127.0.0.1:8080/orders\n\n"
     CORE
     "channels:\n"
     "  orders-in:\n"
     "    type: http\n"
     "    direction: in\n"
     "    listen: 127.0.0.1:8080\n"
     "    path: /orders\n\n"
     "  orders-topic:\n"
     "    type: kafka\n"
     "    direction: out\n"
     "    brokers: [\"127.0.0.1:9092\"]\n"
     "    topic: orders\n"
     "    key: \"{header.X-Order-Id}\" # same key, same partition: per-order ordering\n"
     "    # properties: {security.protocol: SASL_SSL, sasl.mechanism: PLAIN, ...}\n\n"
     "routes:\n"
     "  orders-to-kafka:\n"
     "    from: [orders-in]\n"
     "    to: [orders-topic]\n" TAIL},
    {NULL, NULL, NULL},
};

static const struct jn_init_example *find_example(const char *name)
{
    for (const struct jn_init_example *e = jn_init_examples; e->name; e++) {
        if (name == NULL || strcmp(e->name, name) == 0) {
            return e;
        }
    }
    return NULL;
}

int jn_init_write(const char *name, const char *path, int force, FILE *out, FILE *err)
{
    const struct jn_init_example *e = find_example(name);
    size_t len;
    int fd;

    if (e == NULL) {
        fprintf(err, "junction init: unknown example '%s', expected one of:", name);
        for (e = jn_init_examples; e->name; e++) {
            fprintf(err, " %s", e->name);
        }
        fputc('\n', err);
        return 2;
    }
    len = strlen(e->text);
    if (path == NULL) {
        return fwrite(e->text, 1, len, out) == len && fflush(out) == 0 ? 0 : 1;
    }
    /* O_EXCL: refusing to overwrite is decided by the kernel, not by a check that can race. */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0644);
    if (fd < 0) {
        if (errno == EEXIST) {
            fprintf(err, "junction init: %s exists; not overwriting it (--force replaces it)\n",
                    path);
        } else {
            fprintf(err, "junction init: %s: %s\n", path, strerror(errno));
        }
        return 1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, e->text + off, len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            fprintf(err, "junction init: %s: %s\n", path, strerror(errno));
            close(fd);
            return 1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        fprintf(err, "junction init: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(err, "junction init: wrote %s (%s); check it with: junction check -c %s\n", path,
            e->name, path);
    return 0;
}
