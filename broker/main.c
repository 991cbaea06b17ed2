/*
 * junction: the command line.
 *
 *   junction run   [-c FILE]          start the broker
 *   junction check [-c FILE]          validate a config: exit 0, or file:line:col errors and 1
 *   junction describe [TYPE] [--markdown]   the options of channel/service types
 *   junction version
 *
 * Without -c, ./config/junction.yaml is used when it exists, else the copy of it compiled into
 * the binary, so `junction run` works from anywhere with no file at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jn_broker.h"
#include "jn_config.h"
#include "jn_inspect.h"
#include "jn_log.h"
#include "jn_mem.h"

#ifndef JN_VERSION
#define JN_VERSION "0.1.0"
#endif

#define DEFAULT_CONFIG "config/junction.yaml"

extern const char jn_default_config[];
extern const size_t jn_default_config_len;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: junction <command> [options]\n"
            "\n"
            "commands:\n"
            "  run      [-c FILE]   start the broker\n"
            "  check    [-c FILE]   validate a config; exit 0, or print file:line:col errors\n"
            "                       and exit 1\n"
            "  describe [TYPE] [--markdown]\n"
            "                       list channel and service types, or one type's options;\n"
            "                       --markdown prints docs/config-reference.md\n"
            "  trace    ID [-c FILE]  a message's history from the action log\n"
            "  log      [--since T] [--until T] [-c FILE]\n"
            "                       the action log in a time range (T: 10m ago, or UTC\n"
            "                       YYYY-MM-DDTHH:MM:SS)\n"
            "  dlq list [-c FILE]   dead letters with their last error\n"
            "  dlq replay ID|--all [-c FILE]\n"
            "                       put dead letters back in their queue (broker stopped)\n"
            "  version              print the version\n"
            "\n"
            "options:\n"
            "  -c, --config FILE    config file (default: %s if it exists, else the\n"
            "                       embedded default config)\n"
            "  -h, --help           this text\n",
            DEFAULT_CONFIG);
}

/* Loads the config (see the file comment for which); on errors prints them all, each at
 * file:line:col, then "<file>: N error(s)<suffix>", and returns NULL. */
static struct jn_config *load(const char *path, const char **used, const char *suffix)
{
    struct jn_diag d;
    struct jn_config *c;

    if (path == NULL && access(DEFAULT_CONFIG, F_OK) == 0) {
        path = DEFAULT_CONFIG;
    }
    jn_diag_init(&d);
    if (path == NULL) {
        *used = "(embedded default config)";
        c = jn_config_load_buf("<embedded>/config/junction.yaml", jn_default_config,
                               jn_default_config_len, &d);
    } else {
        *used = path;
        c = jn_config_load_file(path, &d);
    }
    if (c == NULL) {
        jn_diag_print(&d, stderr);
        fprintf(stderr, "%s: %zu error(s)%s\n", *used, d.n, suffix);
    }
    jn_diag_free(&d);
    return c;
}

static int cmd_check(const char *path)
{
    const char *used;
    struct jn_config *c = load(path, &used, "");

    if (c == NULL) {
        return 1;
    }
    printf("%s: ok (%zu channels, %zu services, %zu routes)\n", used, c->nchannels, c->nservices,
           c->nroutes);
    jn_config_free(c);
    return 0;
}

static int cmd_run(const char *path)
{
    struct jn_err err;
    struct jn_broker *b;
    const char *used;
    struct jn_config *c = load(path, &used, "; not starting");
    int rc;

    if (c == NULL) {
        return 1;
    }
    jn_log_level = c->core.log_level;
    jn_log(JN_LOG_INFO, "junction %s starting with %s", JN_VERSION, used);
    jn_err_clear(&err);
    b = jn_broker_new(c, &err);
    if (b == NULL) {
        jn_log(JN_LOG_ERROR, "cannot start: %s", err.msg[0] ? err.msg : jn_strerror(err.code));
        jn_config_free(c);
        return 1;
    }
    rc = jn_broker_run(b);
    jn_broker_free(b);
    jn_config_free(c);
    return rc;
}

static int cmd_describe(const char *type, int markdown)
{
    if (markdown) {
        jn_config_reference_md(stdout);
        return 0;
    }
    if (type == NULL) {
        printf("channel types:\n");
        for (size_t i = 0; jn_channel_defs[i]; i++) {
            printf("  %-12s %s\n", jn_channel_defs[i]->name, jn_channel_defs[i]->desc);
        }
        printf("service types:\n");
        for (size_t i = 0; jn_service_defs[i]; i++) {
            printf("  %-12s %s\n", jn_service_defs[i]->name, jn_service_defs[i]->desc);
        }
        return 0;
    }
    if (jn_channel_def_find(type)) {
        const struct jn_channel_def *def = jn_channel_def_find(type);
        printf("channel type %s (%s): %s\n", def->name, jn_config_dirs_text(def->dirs),
               def->desc);
        jn_opt_describe_text(jn_chan_common_opts, NULL, stdout);
        jn_opt_describe_text(def->opts, NULL, stdout);
        return 0;
    }
    if (jn_service_def_find(type)) {
        const struct jn_service_def *def = jn_service_def_find(type);
        printf("service type %s: %s\n", def->name, def->desc);
        jn_opt_describe_text(def->opts, NULL, stdout);
        return 0;
    }
    fprintf(stderr, "junction: unknown type '%s'; 'junction describe' lists them\n", type);
    return 1;
}

static int cmd_tool(const char *cmd, const char *config, int nargs, char **args,
                    const char *since, const char *until, int all)
{
    struct jn_config *c;
    const char *used;
    int rc = 2;

    if (strcmp(cmd, "trace") == 0 && nargs != 1) {
        fprintf(stderr, "usage: junction trace ID [-c FILE]\n");
        return 2;
    }
    if (strcmp(cmd, "dlq") == 0 &&
        !(nargs == 1 && strcmp(args[0], "list") == 0) &&
        !(nargs == 2 && strcmp(args[0], "replay") == 0 && !all) &&
        !(nargs == 1 && strcmp(args[0], "replay") == 0 && all)) {
        fprintf(stderr, "usage: junction dlq list | junction dlq replay ID|--all [-c FILE]\n");
        return 2;
    }
    if (strcmp(cmd, "log") == 0 && nargs != 0) {
        fprintf(stderr, "usage: junction log [--since T] [--until T] [-c FILE]\n");
        return 2;
    }
    c = load(config, &used, "");
    if (c == NULL) {
        return 1;
    }
    jn_log_level = JN_LOG_WARN;
    if (strcmp(cmd, "trace") == 0) {
        rc = jn_inspect_trace(c, args[0], stdout);
    } else if (strcmp(cmd, "log") == 0) {
        rc = jn_inspect_log(c, since, until, stdout);
    } else if (strcmp(args[0], "list") == 0) {
        rc = jn_inspect_dlq_list(c, stdout);
    } else {
        rc = jn_inspect_dlq_replay(c, all ? NULL : args[1], stdout);
    }
    jn_config_free(c);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd, *config = NULL, *type = NULL, *since = NULL, *until = NULL;
    char *args[4];
    int nargs = 0, all = 0, tool;
    int markdown = 0;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    cmd = argv[1];
    tool = strcmp(cmd, "trace") == 0 || strcmp(cmd, "log") == 0 || strcmp(cmd, "dlq") == 0;
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--markdown") == 0) {
            markdown = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(cmd, "describe") == 0 && argv[i][0] != '-' && type == NULL) {
            type = argv[i];
        } else if (tool && strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            since = argv[++i];
        } else if (tool && strcmp(argv[i], "--until") == 0 && i + 1 < argc) {
            until = argv[++i];
        } else if (tool && strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else if (tool && argv[i][0] != '-' && nargs < 4) {
            args[nargs++] = argv[i];
        } else {
            fprintf(stderr, "junction: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "run") == 0) {
        return cmd_run(config);
    }
    if (strcmp(cmd, "check") == 0) {
        return cmd_check(config);
    }
    if (strcmp(cmd, "describe") == 0) {
        return cmd_describe(type, markdown);
    }
    if (tool) {
        return cmd_tool(cmd, config, nargs, args, since, until, all);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("junction %s\n", JN_VERSION);
        return 0;
    }
    fprintf(stderr, "junction: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
