/*
 * junction: the command line.
 *
 *   junction run   [-c FILE]          start the broker
 *   junction check [-c FILE]          validate a config: exit 0, or file:line:col errors and 1
 *   junction describe [TYPE] [--markdown]   the options of channel/service types
 *   junction trace | log | dlq ...    read the data_dir's journal (jn_inspect.h)
 *   junction test [-c FILE] [TEST.yaml ...]   route tests, offline (jn_testrun.h)
 *   junction init [--example NAME] [-o FILE]  a commented starter config (jn_init.h)
 *   junction man                      the manual page junction(1), roff, from these tables
 *   junction help [COMMAND]           the general help, or one command's
 *   junction version
 *
 * The commands table below is the one list of them: help, usage errors, suggestions for
 * unknown commands and the man page come from it (the man page's config part from the option
 * tables, as describe's), so they cannot drift apart.
 *
 * Without -c, ./config/junction.yaml is used when it exists, else the copy of it compiled into
 * the binary, so `junction run` works from anywhere with no file at all.
 */
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jn_admin.h"
#include "jn_broker.h"
#include "jn_reload.h"
#include "jn_ctl.h"
#include "jn_record.h"
#include "jn_config.h"
#include "jn_diag.h"
#include "jn_init.h"
#include "jn_inspect.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_opt.h"
#include "jn_testrun.h"
#include "jn_tls.h"

#ifndef JN_VERSION
#define JN_VERSION "0.1.0"
#endif

#define DEFAULT_CONFIG "config/junction.yaml"

extern const char jn_default_config[];
extern const size_t jn_default_config_len;

/* The commands. This one table makes the general help, `junction help NAME` (and NAME --help),
 * the usage lines of a usage error and the "did you mean" of an unknown command. A name may
 * have several forms (dlq list, dlq replay): one row each, in the order they are shown. */
struct command {
    const char *name;
    const char *args;    /* what follows the name in its usage line */
    const char *summary; /* the general help's text; '\n' continues on the next line */
    const char *help;    /* the paragraph of `junction help NAME`, '\n' between lines */
};

static const struct command commands[] = {
    {"run", "[-c FILE] [--user NAME] [--allow-root]", "start the broker",
     "Starts the broker and runs until SIGTERM or SIGINT. Then intake stops (new requests get\n"
     "503), sends in flight get up to shutdown_timeout, and queued messages stay in the\n"
     "journal for the next start. Exit 1 when the config does not load.\n"
     "--user NAME (or junction.user): started as root, become NAME once the listeners are\n"
     "bound and the journal is open. As root without a user junction refuses to start (exit\n"
     "2) unless given --allow-root."},
    {"check", "[-c FILE]", "validate a config; exit 0, or print file:line:col errors\nand exit 1",
     "Loads the config as run would, without starting anything: exit 0 with a summary, or\n"
     "every error at file:line:col and exit 1."},
    {"describe", "[TYPE] [--markdown]",
     "list channel and service types, or one type's options;\n"
     "--markdown prints docs/config-reference.md",
     "Without TYPE: the channel and service types. With TYPE: its options with their type,\n"
     "default, allowed values and description; (in) and (out) mark the options of one\n"
     "direction. --markdown prints the whole config reference (docs/config-reference.md)."},
    {"trace", "ID [-c FILE]", "a message's history from the action log",
     "Every action on the message ID (received, routed, retries, delivered, dead-lettered,\n"
     "replayed) from the action log of the config's data_dir; works while a broker runs."},
    {"log", "[--since T] [--until T] [-c FILE]",
     "the action log in a time range (T: 10m ago, 2h, or UTC\nYYYY-MM-DDTHH:MM:SS)",
     "The actions of all messages from --since to --until, oldest first. T is a duration ago\n"
     "with its unit (10m ago, 10m, 90s, 2h, 7d; units ms s m h d) or a UTC time\n"
     "YYYY-MM-DDTHH:MM:SS (a trailing Z allowed). Without --since: from the oldest action\n"
     "kept; without --until: up to now. Works while a broker runs."},
    {"dlq", "list [-c FILE]", "dead letters with their last error",
     "dlq list: the dead letters with their destination, route, attempts and last error."},
    {"dlq", "replay ID|--all [-c FILE]", "put dead letters back in their queue (broker stopped)",
     "dlq replay: puts the dead letter ID (or with --all every one) back in the queue of its\n"
     "destination. It takes the data_dir's lock: stop the broker first; the next start\n"
     "delivers what was put back."},
    {"ctl", "status|channels|queues|routes [--json]", "ask the running broker (the admin API)",
     "A client of the running broker's admin listener (docs/admin-api.md): status, channels,\n"
     "queues (+: the journal holds more than memory) and routes as tables, or the API's JSON\n"
     "with --json. The address is --admin HOST:PORT, else the config's junction.admin\n"
     "(-c FILE), else 127.0.0.1:8081; the token is read from --token-file F, else\n"
     "$JUNCTION_ADMIN_TOKEN, else the config's admin_token. Over https (--admin\n"
     "https://HOST:PORT, or a config with junction.admin_tls) the admin's certificate is\n"
     "verified against --ca FILE|DIR (else the system's CAs) and the host's name (or\n"
     "--server-name NAME); --cert FILE --key FILE show a client certificate (mTLS).\n"
     "Exit 1 when the broker cannot be reached or answers an error."},
    {"ctl", "pause|resume CHANNEL",
     "hold a channel (IN refuses, OUT keeps its queue) or let\nit go",
     "ctl pause CHANNEL: an IN channel refuses what it is sent (HTTP 503, MLLP negative ACK),\n"
     "an OUT channel holds its queue; ctl resume CHANNEL lets it go again."},
    {"ctl", "messages [--since T --until T --channel C --status S --route R --header K=V "
     "--grep TEXT --limit N]",
     "messages received, newest first, from the action log",
     "ctl messages: the messages received in a time range (T as in log), newest first, with\n"
     "their channel and status (received, queued, retrying, delivered, dead, dropped).\n"
     "--route, --header and --grep (payload text) match what retention keeps of a message\n"
     "(a route's keep:); a message not kept matches none of them."},
    {"ctl", "show ID", "one message's trace",
     "ctl show ID: the message's actions, in order, and what is kept of it (headers, size)."},
    {"ctl", "replay [ID...] [filters] [--to CH]... [--kept] [--dry-run]",
     "put dead letters (or kept messages) back while the broker runs",
     "ctl replay: puts the dead letters of the IDs (default: all) that pass every filter given\n"
     "(--since T, --until T: dead-lettered then; --channel C: received on C; --route R;\n"
     "--destination CH; --header NAME=VALUE; --grep TEXT: in the payload) back in their\n"
     "queues, or with --to CH (repeatable) into those OUT channels instead, while the broker\n"
     "runs, and waits for the job to end. --kept: from the messages retention keeps instead\n"
     "(delivered or not; since/until of their receive time), routed again by the current\n"
     "routes or put into --to. --dry-run counts them and names the first ones, writing\n"
     "nothing."},
    {"ctl", "config history|show HASH", "the config versions the broker has run",
     "ctl config history: every config the broker has run from this data dir, by hash (the\n"
     "hash each action in a trace names, config=), with when it was first and last loaded.\n"
     "ctl config show HASH: that version's text as it was written."},
    {"ctl", "record --channel C [--count N] --out FILE",
     "write a channel's last messages as a junction test file",
     "ctl record: the last N (default 10, at most 1000) messages of IN channel C, as the\n"
     "running broker keeps them (a route's keep: all), written to FILE as `junction test`\n"
     "cases, each expecting what the config (-c) makes of it, run offline. Record with the\n"
     "config that runs, change it, then `junction test -c NEW FILE` checks the change against\n"
     "that traffic. Payloads YAML cannot hold byte for byte go to FILE.d/."},
    {"ctl", "dlq list|replay [filters]", "the dead letters of the running broker",
     "ctl dlq list: the dead letters (oldest first, --limit N, default 50) that pass the\n"
     "filters of ctl replay, with where they came from, their destination, attempts and last\n"
     "error. ctl dlq replay: the same as ctl replay."},
    {"test", "[-c FILE] [--junit OUT] [TEST.yaml ...]",
     "run route tests offline: each case's message through the\n"
     "routes and services; exit 0 all pass, 1 a failure",
     "Runs the cases of each test file (docs/testing-routes.md) through the config's routes\n"
     "and services, offline: no listener, no OUT channel, no journal, no network. Each case\n"
     "prints PASS or FAIL with what differs (a diff for payloads), then a summary. Without\n"
     "TEST.yaml: the config's folder's tests/*.yaml. --junit OUT also writes JUnit XML. Exit\n"
     "0 when every case passes, 1 when one fails, 2 when the config or a test file has an\n"
     "error (file:line:col) or OUT cannot be written."},
    {"init", "[--example NAME] [-o FILE] [--force]",
     "write a commented starter config (stdout, or FILE)",
     "Writes a commented starter config that junction check accepts: to stdout, or with -o FILE\n"
     "to FILE, which must not exist yet (--force replaces it). NAME is one of the examples\n"
     "below (default: the first). Edit it, then: junction check -c FILE; junction run -c FILE."},
    {"man", "", "print the manual page junction(1) (roff)",
     "Prints this manual page in roff (man -l <(junction man)); the build installs it as\n"
     "junction.1. It is made from the same tables as --help and describe."},
    {"help", "[COMMAND]", "this text, or the help of one command",
     "Without COMMAND: the list of commands. With it: that command's help, as COMMAND --help."},
    {"version", "", "print the version", "Prints junction's version."},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))
#define HELP_COL 23 /* where the general help's summaries start */

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

/* Prints s, '\n' separated, each line after the first indented by indent spaces. */
static void print_lines(FILE *out, const char *s, int indent)
{
    for (const char *nl; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
        fprintf(out, "%.*s\n%*s", (int)(nl - s), s, indent, "");
    }
    fprintf(out, "%s\n", s);
}

/* The options every command's help ends with (config: only for commands that take -c). */
static const struct {
    const char *name, *text;
    int config;
} common_opts[] = {
    {"-c, --config FILE", "config file (default: " DEFAULT_CONFIG " if it exists, else the\n"
     "embedded default config)", 1},
    {"-h, --help", "this text", 0},
};

static void print_option_help(FILE *out, int config)
{
    fprintf(out, "\noptions:\n");
    for (size_t i = 0; i < sizeof(common_opts) / sizeof(common_opts[0]); i++) {
        if (config || !common_opts[i].config) {
            fprintf(out, "  %-20s ", common_opts[i].name);
            print_lines(out, common_opts[i].text, 23);
        }
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: junction <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *c = &commands[i];
        int n = fprintf(out, "  %-8s %s", c->name, c->args);

        if (n > HELP_COL - 2) { /* a long "name args": the summary below, at the same column */
            fputc('\n', out);
            n = 0;
        }
        fprintf(out, "%*s", HELP_COL - n, "");
        print_lines(out, c->summary, HELP_COL);
    }
    print_option_help(out, 1);
}

/* "usage: junction NAME ARGS", one line per form of the command. */
static void usage_of(const struct command *c, FILE *out)
{
    const char *lead = "usage:";

    for (const struct command *f = c; f < commands + NCOMMANDS; f++) {
        if (strcmp(f->name, c->name) == 0) {
            fprintf(out, "%s junction %s%s%s\n", lead, f->name, f->args[0] ? " " : "", f->args);
            lead = "   or:";
        }
    }
}

static int cmd_help(const struct command *c)
{
    int config = 0;

    usage_of(c, stdout);
    for (const struct command *f = c; f < commands + NCOMMANDS; f++) {
        if (strcmp(f->name, c->name) == 0) {
            fputc('\n', stdout);
            print_lines(stdout, f->help, 0);
            config |= strstr(f->args, "-c FILE") != NULL;
        }
    }
    if (strcmp(c->name, "init") == 0) {
        printf("\nexamples:\n");
        for (const struct jn_init_example *e = jn_init_examples; e->name; e++) {
            printf("  %-20s %s\n", e->name, e->summary);
        }
    }
    print_option_help(stdout, config);
    return 0;
}

/* "junction: unknown command 'rnu' (did you mean 'run'?)" and where the list is; returns 2. */
static int unknown_command(const char *name)
{
    const char *names[NCOMMANDS];
    const char *near;
    size_t n = 0;

    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (n == 0 || strcmp(names[n - 1], commands[i].name) != 0) {
            names[n++] = commands[i].name;
        }
    }
    near = jn_nearest(name, names, n);
    fprintf(stderr, "junction: unknown command '%s'%s%s%s\n", name, near ? " (did you mean '" : "",
            near ? near : "", near ? "'?)" : "");
    fprintf(stderr, "Run 'junction --help' for the list of commands.\n");
    return 2;
}

/* A command line the command cannot take: the reason, its usage lines, where its help is. */
static int usage_error(const struct command *c, const char *why, const char *arg)
{
    if (why) {
        fprintf(stderr, "junction: %s '%s'\n", why, arg);
    }
    usage_of(c, stderr);
    fprintf(stderr, "Run 'junction help %s' for more.\n", c->name);
    return 2;
}

/* Loads the config (see the file comment for which); on errors prints them all (warnings
 * too), each at file:line:col, then "<file>: N error(s)<suffix>", and returns NULL. A config
 * with warnings only loads: its warnings go to stderr, or into *warns (then the caller's to
 * free) when warns is not NULL. */
static struct jn_config *load(const char *path, const char **used, const char *suffix,
                              struct jn_diag *warns)
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
        fprintf(stderr, "%s: %zu error(s)%s\n", *used, d.nerr, suffix);
    } else if (warns != NULL) {
        *warns = d;
        return c;
    } else {
        jn_diag_print(&d, stderr);
    }
    jn_diag_free(&d);
    return c;
}

static int cmd_check(const char *path)
{
    const char *used;
    struct jn_config *c = load(path, &used, "", NULL);

    if (c == NULL) {
        return 1;
    }
    printf("%s: ok (%zu channels, %zu services, %zu routes)\n", used, c->nchannels, c->nservices,
           c->nroutes);
    jn_config_free(c);
    return 0;
}

/*
 * The broker's reloader (jn_broker_set_reloader): reads the file it started with again (path
 * NULL: the embedded default, which cannot change), and lets config/ say whether it can
 * replace the running one.
 */
static struct jn_config *reload_load(void *arg, const struct jn_config *cur,
                                     struct jn_reload_report *rep)
{
    const char *path = arg;
    struct jn_diag d, changes;
    struct jn_config *c;

    jn_diag_init(&d);
    c = path ? jn_config_load_file(path, &d)
             : jn_config_load_buf("<embedded>/config/junction.yaml", jn_default_config,
                                  jn_default_config_len, &d);
    if (c == NULL) {
        rep->status = JN_RELOAD_INVALID;
        jn_diag_free(&rep->msgs);
        rep->msgs = d;
        return NULL;
    }
    for (size_t i = 0; i < d.n; i++) {
        jn_log(JN_LOG_WARN, "config: %s", d.msgs[i]);
    }
    jn_diag_free(&d);
    jn_diag_init(&d);
    jn_diag_init(&changes);
    if (jn_config_reloadable(cur, c, &d, &changes) != 0) {
        rep->status = JN_RELOAD_REFUSED;
        jn_diag_free(&rep->msgs);
        rep->msgs = d;
        jn_diag_free(&changes);
        jn_config_free(c);
        return NULL;
    }
    jn_diag_free(&d);
    if (changes.n == 0 && strcmp(c->hash, cur->hash) == 0) {
        rep->status = JN_RELOAD_UNCHANGED;
        jn_diag_free(&changes);
        jn_config_free(c);
        return NULL;
    }
    jn_diag_free(&rep->msgs);
    rep->msgs = changes;
    return c;
}

static int cmd_run(const char *path, const char *user, int allow_root)
{
    char *reload_path = NULL;
    struct jn_err err;
    struct jn_broker *b;
    struct jn_admin *admin = NULL;
    const char *used;
    struct jn_diag warns;
    struct jn_config *c = load(path, &used, "; not starting", &warns);
    int rc;

    if (c == NULL) {
        return 1;
    }
    if (user == NULL) {
        user = c->core.user;
    }
    if (user == NULL && geteuid() == 0 && !allow_root) {
        fprintf(stderr, "junction: refusing to run as root: give --user NAME (or junction.user) "
                "to run as a service user once the listeners are bound, or --allow-root\n");
        jn_diag_free(&warns);
        jn_config_free(c);
        return 2;
    }
    jn_log_level = c->core.log_level;
    jn_log_setup((enum jn_log_format)c->core.log_format);
    jn_log(JN_LOG_INFO, "junction %s starting with %s", JN_VERSION, used);
    for (size_t i = 0; i < warns.n; i++) {
        jn_log(JN_LOG_WARN, "config: %s", warns.msgs[i]);
    }
    jn_diag_free(&warns);
    jn_err_clear(&err);
    b = jn_broker_new(c, &err);
    if (b == NULL) {
        jn_log(JN_LOG_ERROR, "cannot start: %s", err.msg[0] ? err.msg : jn_strerror(err.code));
        jn_config_free(c);
        return 1;
    }
    {
        struct jn_admin_conf ac = {c->core.admin, c->core.admin_token, JN_VERSION,
                                  &c->core.admin_tls};
        if (jn_admin_start(b, &ac, &admin, &err) != 0) {
            jn_log(JN_LOG_ERROR, "cannot start: %s", err.msg[0] ? err.msg : jn_strerror(err.code));
            jn_broker_free(b);
            jn_config_free(c);
            return 1;
        }
    }
    jn_broker_set_user(b, user);
    /* The same file however the working folder changes; NULL: the embedded default. */
    if (strcmp(used, "(embedded default config)") != 0) {
        reload_path = realpath(used, NULL);
    }
    jn_broker_set_reloader(b, reload_load, jn_config_free,
                           reload_path ? reload_path
                           : strcmp(used, "(embedded default config)") != 0 ? (char *)used
                                                                            : NULL);
    rc = jn_broker_run(b);
    jn_admin_free(admin);
    jn_broker_free(b);
    jn_config_free(c);
    free(reload_path);
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
        printf("channel type %s (%s): %s\n", def->name, jn_config_dirs_text(jn_channel_def_dirs(def)),
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

static int cmd_tool(const struct command *cmd, const char *config, int nargs, char **args,
                    const char *since, const char *until, int all)
{
    struct jn_config *c;
    const char *used;
    int rc = 2;

    if ((strcmp(cmd->name, "trace") == 0 && nargs != 1) ||
        (strcmp(cmd->name, "log") == 0 && nargs != 0) ||
        (strcmp(cmd->name, "dlq") == 0 && !(nargs == 1 && strcmp(args[0], "list") == 0) &&
         !(nargs == 2 && strcmp(args[0], "replay") == 0 && !all) &&
         !(nargs == 1 && strcmp(args[0], "replay") == 0 && all))) {
        return usage_error(cmd, NULL, NULL);
    }
    c = load(config, &used, "", NULL);
    if (c == NULL) {
        return 1;
    }
    jn_log_level = JN_LOG_WARN;
    if (strcmp(cmd->name, "trace") == 0) {
        rc = jn_inspect_trace(c, args[0], stdout);
    } else if (strcmp(cmd->name, "log") == 0) {
        rc = jn_inspect_log(c, since, until, stdout);
    } else if (strcmp(args[0], "list") == 0) {
        rc = jn_inspect_dlq_list(c, stdout);
    } else {
        rc = jn_inspect_dlq_replay(c, all ? NULL : args[1], stdout);
    }
    jn_config_free(c);
    return rc;
}

/* Reads the first line of path into out (a token file). 0, or -1 (said on stderr). */
static int read_token(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t len;

    if (f == NULL || fgets(out, (int)n, f) == NULL) {
        fprintf(stderr, "junction ctl: --token-file %s: %s\n", path,
                f ? "empty" : strerror(errno));
        if (f) {
            fclose(f);
        }
        return -1;
    }
    fclose(f);
    len = strcspn(out, "\r\n");
    out[len] = '\0';
    return 0;
}

/* junction ctl ...: its options, the admin address and token, then jn_ctl_main. */
static int cmd_ctl(const struct command *cmd, int argc, char **argv)
{
    const char *config = NULL, *admin = NULL, *token_file = NULL, *env;
    struct jn_ctl_opts o = {0};
    struct jn_config *c = NULL;
    char *args[64];
    char token[1024], addr[300];
    int nargs = 0, rc, record;

    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc) {
            admin = argv[++i];
        } else if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) {
            token_file = argv[++i];
        } else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc) {
            o.ca = argv[++i];
        } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            o.cert = argv[++i];
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            o.key = argv[++i];
        } else if (strcmp(argv[i], "--server-name") == 0 && i + 1 < argc) {
            o.server_name = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            o.json = 1;
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (strcmp(argv[i], "--kept") == 0) {
            o.kept = 1;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            o.count = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            o.out = argv[++i];
        } else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            o.since = argv[++i];
        } else if (strcmp(argv[i], "--until") == 0 && i + 1 < argc) {
            o.until = argv[++i];
        } else if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc) {
            o.channel = argv[++i];
        } else if (strcmp(argv[i], "--status") == 0 && i + 1 < argc) {
            o.status = argv[++i];
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            o.limit = argv[++i];
        } else if (strcmp(argv[i], "--destination") == 0 && i + 1 < argc) {
            o.destination = argv[++i];
        } else if (strcmp(argv[i], "--route") == 0 && i + 1 < argc) {
            o.route = argv[++i];
        } else if (strcmp(argv[i], "--header") == 0 && i + 1 < argc) {
            o.header = argv[++i];
        } else if (strcmp(argv[i], "--grep") == 0 && i + 1 < argc) {
            o.grep = argv[++i];
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            if (o.nto == JN_CTL_TO_MAX) {
                return usage_error(cmd, "too many", "--to");
            }
            o.to[o.nto++] = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return cmd_help(cmd);
        } else if (argv[i][0] != '-' && nargs < 64) {
            args[nargs++] = argv[i];
        } else {
            return usage_error(cmd, "unexpected argument", argv[i]);
        }
    }
    if (nargs == 0) {
        return usage_error(cmd, "missing", "what to ask");
    }
    record = strcmp(args[0], "record") == 0;
    if (record || admin == NULL ||
        (token_file == NULL && getenv("JUNCTION_ADMIN_TOKEN") == NULL)) {
        const char *used;
        jn_log_level = JN_LOG_ERROR;
        c = load(config, &used, record ? "" : "; give --admin HOST:PORT", NULL);
        if (c == NULL && (admin == NULL || record)) {
            return record ? 2 : 1;
        }
    }
    if (admin == NULL) {
        admin = c && c->core.admin ? c->core.admin : "127.0.0.1:8081";
        if (strcmp(admin, "off") == 0) {
            fprintf(stderr, "junction ctl: the config says admin: off; give --admin HOST:PORT\n");
            jn_config_free(c);
            return 1;
        }
    }
    snprintf(addr, sizeof(addr), "%s", admin);
    o.admin = addr;
    /* The config's admin is https: so is ctl (an --admin given with http:// stays plain). */
    if (c != NULL && jn_tls_on(&c->core.admin_tls) && strncmp(addr, "http://", 7) != 0) {
        o.tls = 1;
    }
    if ((o.ca || o.cert || o.key || o.server_name) && !o.tls &&
        strncmp(addr, "https://", 8) != 0) {
        fprintf(stderr, "junction ctl: --ca, --cert, --key and --server-name need https: give "
                "--admin https://HOST:PORT (or a config with junction.admin_tls)\n");
        jn_config_free(c);
        return 2;
    }
    env = getenv("JUNCTION_ADMIN_TOKEN");
    if (token_file != NULL) {
        if (read_token(token_file, token, sizeof(token)) != 0) {
            jn_config_free(c);
            return 1;
        }
        o.token = token;
    } else if (env != NULL && env[0] != '\0') {
        o.token = env;
    } else if (c && c->core.admin_token && c->core.admin_token[0]) {
        snprintf(token, sizeof(token), "%s", c->core.admin_token);
        o.token = token;
    }
    if (record) {
        rc = nargs == 1 ? jn_record_main(&o, c, stderr) : usage_error(cmd, "unexpected argument",
                                                                      args[1]);
    } else {
        rc = jn_ctl_main(&o, nargs, args);
    }
    jn_config_free(c);
    return rc;
}

/* junction test [-c FILE] [--junit OUT] [TEST.yaml ...] */
static int cmd_test(const struct command *cmd, int argc, char **argv)
{
    struct jn_testrun_opts o = {0};
    const char *config = NULL, *used;
    struct jn_config *c;
    int rc;

    o.files = jn_calloc((size_t)argc + 1, sizeof(*o.files));
    if (o.files == NULL) {
        fprintf(stderr, "junction test: out of memory\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--junit") == 0 && i + 1 < argc) {
            o.junit = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            jn_free(o.files);
            return cmd_help(cmd);
        } else if (argv[i][0] != '-') {
            o.files[o.nfiles++] = argv[i];
        } else {
            jn_free(o.files);
            return usage_error(cmd, "unexpected argument", argv[i]);
        }
    }
    if (config == NULL && access(DEFAULT_CONFIG, F_OK) == 0) {
        config = DEFAULT_CONFIG;
    }
    c = load(config, &used, "; no test was run", NULL);
    if (c == NULL) {
        jn_free(o.files);
        return 2;
    }
    /* The services' and the codecs' warnings, not the broker's chatter. */
    jn_log_level = JN_LOG_WARN;
    o.cfg = c;
    o.config_path = config;
    rc = jn_testrun_main(&o, stdout, stderr);
    jn_config_free(c);
    jn_free(o.files);
    return rc;
}

/* junction init [--example NAME] [-o FILE] [--force] */
static int cmd_init(const struct command *cmd, int argc, char **argv)
{
    const char *example = NULL, *out = NULL;
    int force = 0;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--example") == 0 && i + 1 < argc) {
            example = argv[++i];
        } else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) &&
                   i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return cmd_help(cmd);
        } else {
            return usage_error(cmd, "unexpected argument", argv[i]);
        }
    }
    return jn_init_write(example, out, force, stdout, stderr);
}

/* ---- junction man: junction(1) in roff, from the tables above and the option tables ---- */

static void man_section(FILE *out, const char *title, const struct jn_opt *tab, const char *text)
{
    fprintf(out, ".SS \"");
    jn_opt_roff_text(out, title);
    fprintf(out, "\"\n");
    if (text != NULL) {
        jn_opt_roff_text(out, text);
        fputc('\n', out);
    }
    jn_opt_describe_roff(tab, NULL, out);
}

static int cmd_man(void)
{
    FILE *out = stdout;

    fprintf(out, ".\\\" Generated by `junction man` from the tables of cli/main.c and the option\n"
            ".\\\" tables; do not edit.\n"
            ".TH JUNCTION 1 \"\" \"junction %s\" \"User Commands\"\n"
            ".SH NAME\njunction \\- a message broker for integration: channels in, routes and "
            "services, channels out, on a durable journal\n.SH SYNOPSIS\n", JN_VERSION);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        fprintf(out, ".B junction %s\n", commands[i].name);
        if (commands[i].args[0]) {
            jn_opt_roff_text(out, commands[i].args);
            fputc('\n', out);
        }
        fprintf(out, ".br\n");
    }
    fprintf(out, ".SH DESCRIPTION\n"
            "junction takes messages in on its IN channels (HTTP, MLLP, MQTT, Kafka, files), "
            "makes each durable in its journal before it acknowledges it, routes it by the "
            "config's routes through their services and delivers it to OUT channels with "
            "retries and dead letters. One YAML file (\\fB\\-c\\fR FILE) describes it all; "
            "see CONFIGURATION.\n.SH COMMANDS\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *c = &commands[i];
        fprintf(out, ".TP\n.B junction %s", c->name);
        if (c->args[0]) {
            fputc(' ', out);
            jn_opt_roff_text(out, c->args);
        }
        fputc('\n', out);
        jn_opt_roff_text(out, c->help);
        fputc('\n', out);
    }
    fprintf(out, ".SH OPTIONS\n");
    for (size_t i = 0; i < sizeof(common_opts) / sizeof(common_opts[0]); i++) {
        fprintf(out, ".TP\n.B ");
        jn_opt_roff_text(out, common_opts[i].name);
        fputc('\n', out);
        jn_opt_roff_text(out, common_opts[i].text);
        fputc('\n', out);
    }
    fprintf(out, ".SH INIT EXAMPLES\n");
    for (const struct jn_init_example *e = jn_init_examples; e->name; e++) {
        fprintf(out, ".TP\n.B ");
        jn_opt_roff_text(out, e->name);
        fputc('\n', out);
        jn_opt_roff_text(out, e->summary);
        fputc('\n', out);
    }
    fprintf(out, ".SH CONFIGURATION\n"
            "The sections of the config file and every option, with its type and default (as "
            "\\fBjunction describe\\fR prints them). Sizes take B, KiB, MiB, GiB; durations ms, "
            "s, m, h, d; any value may be \\fI${ENV}\\fR or \\fI${ENV:\\-default}\\fR. "
            "Relative paths are relative to the config file's folder.\n");
    man_section(out, "junction:", jn_core_opts, NULL);
    man_section(out, "channels: (every channel)", jn_chan_common_opts,
                "A map of name to channel; these keys apply to every type.");
    for (size_t i = 0; jn_channel_defs[i]; i++) {
        char title[96], text[1024];
        snprintf(title, sizeof(title), "channel type %s", jn_channel_defs[i]->name);
        snprintf(text, sizeof(text), "%s. Directions: %s.", jn_channel_defs[i]->desc,
                 jn_config_dirs_text(jn_channel_def_dirs(jn_channel_defs[i])));
        man_section(out, title, jn_channel_defs[i]->opts, text);
    }
    for (size_t i = 0; jn_service_defs[i]; i++) {
        char title[96], text[1024];
        snprintf(title, sizeof(title), "service type %s", jn_service_defs[i]->name);
        snprintf(text, sizeof(text), "%s.", jn_service_defs[i]->desc);
        man_section(out, title, jn_service_defs[i]->opts, text);
    }
    man_section(out, "routes:", jn_route_opts,
                "A map of name to route: every route whose from lists the message's channel and "
                "whose when holds takes the message.");
    fprintf(out, ".SS unrouted:\n\\fBdead\\-letter\\fR (default), \\fBdrop\\fR or an OUT "
            "channel's name: what happens to a message no route takes.\n"
            ".SH SIGNALS\n.TP\n.B SIGTERM, SIGINT\nStop: intake closes, sends in flight get "
            "shutdown_timeout, queued messages stay in the journal. A second signal exits at "
            "once.\n.TP\n.B SIGHUP\nReads the config file again and applies changed routes, "
            "services and reloadable options live (a file with errors, or one that changes a "
            "channel, is refused and the running config stays), and reads the TLS certificate "
            "files again (systemctl reload, junction ctl reload).\n"
            ".SH ENVIRONMENT\n.TP\n.B NOTIFY_SOCKET\nUnder systemd (Type=notify): READY=1 once "
            "every channel has started, STATUS= lines, STOPPING=1.\n.TP\n"
            ".B WATCHDOG_USEC, WATCHDOG_PID\nWith WatchdogSec=: WATCHDOG=1 from the event loop "
            "at half the period.\n.TP\n.B JOURNAL_STREAM\nWhen stderr is journald's stream, "
            "log lines carry syslog priorities (<3> ... <7>) and no timestamp of their own.\n"
            ".TP\n.B JUNCTION_ADMIN_TOKEN\nThe admin token for \\fBjunction ctl\\fR.\n"
            ".SH FILES\n.TP\n.I /etc/junction/junction.yaml\nThe config of the packaged "
            "service (junction.service).\n.TP\n.I /var/lib/junction\nIts data_dir: the "
            "journal (LMDB), queues, dead letters, the action log.\n"
            ".SH EXIT STATUS\n0 success; 1 an error (a config that does not load, a failed "
            "check, a broker that cannot be reached); 2 a usage error.\n"
            ".SH SEE ALSO\n.BR systemctl (1),\n.BR journalctl (1),\n.BR systemd.service (5);\n"
            "docs/operations.md and docs/config-reference.md in the source.\n");
    return ferror(out) ? 1 : 0;
}

/* junction help [COMMAND] */
static int cmd_help_of(const struct command *help, int argc, char **argv)
{
    const struct command *c;

    if (argc == 2) {
        usage(stdout);
        return 0;
    }
    if (argc > 3) {
        return usage_error(help, "unexpected argument", argv[3]);
    }
    if (strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0) {
        return cmd_help(help);
    }
    c = find_command(argv[2]);
    return c ? cmd_help(c) : unknown_command(argv[2]);
}

int main(int argc, char **argv)
{
    const char *config = NULL, *type = NULL, *since = NULL, *until = NULL, *user = NULL;
    const struct command *cmd;
    char *args[4];
    int nargs = 0, all = 0, tool, allow_root = 0;
    int markdown = 0;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    cmd = find_command(strcmp(argv[1], "--version") == 0 ? "version" : argv[1]);
    if (cmd == NULL) {
        return unknown_command(argv[1]);
    }
    if (strcmp(cmd->name, "help") == 0) {
        return cmd_help_of(cmd, argc, argv);
    }
    if (strcmp(cmd->name, "ctl") == 0) {
        return cmd_ctl(cmd, argc, argv);
    }
    if (strcmp(cmd->name, "test") == 0) {
        return cmd_test(cmd, argc, argv);
    }
    if (strcmp(cmd->name, "init") == 0) {
        return cmd_init(cmd, argc, argv);
    }
    tool = strcmp(cmd->name, "trace") == 0 || strcmp(cmd->name, "log") == 0 ||
           strcmp(cmd->name, "dlq") == 0;
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return cmd_help(cmd);
        } else if (strcmp(cmd->name, "run") == 0 && strcmp(argv[i], "--user") == 0 &&
                   i + 1 < argc) {
            user = argv[++i];
        } else if (strcmp(cmd->name, "run") == 0 && strcmp(argv[i], "--allow-root") == 0) {
            allow_root = 1;
        } else if (strcmp(cmd->name, "describe") == 0 && strcmp(argv[i], "--markdown") == 0) {
            markdown = 1;
        } else if (strcmp(cmd->name, "describe") == 0 && argv[i][0] != '-' && type == NULL) {
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
            return usage_error(cmd, "unexpected argument", argv[i]);
        }
    }
    if (strcmp(cmd->name, "run") == 0) {
        return cmd_run(config, user, allow_root);
    }
    if (strcmp(cmd->name, "check") == 0) {
        return cmd_check(config);
    }
    if (strcmp(cmd->name, "describe") == 0) {
        return cmd_describe(type, markdown);
    }
    if (tool) {
        return cmd_tool(cmd, config, nargs, args, since, until, all);
    }
    if (strcmp(cmd->name, "man") == 0) {
        return cmd_man();
    }
    printf("junction %s\n", JN_VERSION); /* version: the table has no other command */
    return 0;
}
