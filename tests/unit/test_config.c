/* Unit tests of YAML loading, ${ENV} substitution, option tables and the config loader. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jn_config.h"
#include "jn_mem.h"
#include "jn_opt.h"
#include "jn_test.h"
#include "jn_yaml.h"

struct tconf {
    char *s;
    long long i;
    unsigned long long size;
    long long dur;
    bool b;
    int e;
    struct jn_strlist l;
    struct jn_strlist cl;
    struct jn_strmap m;
};

static const char *const colours[] = {"red", "green", "blue", NULL};

static const struct jn_opt topts[] = {
    JN_OPT_STR("s", "dflt", 0, struct tconf, s, "a string"),
    JN_OPT_INT("i", "5", 1, 10, 0, struct tconf, i, "an int"),
    JN_OPT_SIZE("size", "1MiB", 0, 0, 0, struct tconf, size, "a size"),
    JN_OPT_DURATION("dur", "5m", 0, 0, 0, struct tconf, dur, "a duration"),
    JN_OPT_BOOL("b", "true", 0, struct tconf, b, "a bool"),
    JN_OPT_ENUM("e", "green", colours, 0, struct tconf, e, "an enum"),
    JN_OPT_STRLIST("l", NULL, 0, struct tconf, l, "a list"),
    JN_OPT_STRLIST("cl", NULL, JN_OPT_COMMAS, struct tconf, cl, "a list, commas allowed"),
    JN_OPT_STRMAP("m", 0, struct tconf, m, "a map"),
    JN_OPT_END,
};

/* Parses text with topts; returns the number of errors; first error copied to first. */
static int parse(const char *text, struct tconf *c, char *first, size_t n)
{
    struct jn_diag d;
    struct jn_node *root;
    int errs;

    memset(c, 0, sizeof(*c));
    jn_diag_init(&d);
    root = jn_yaml_load_buf("t.yaml", text, strlen(text), &d);
    errs = root ? jn_opt_parse(topts, root, c, "thing", 0, NULL, root, &d) : (int)d.n;
    first[0] = '\0';
    if (d.n) {
        snprintf(first, n, "%s", d.msgs[0]);
    }
    jn_node_free(root);
    jn_diag_free(&d);
    return errs;
}

static void test_units(void)
{
    unsigned long long s;
    long long ms;

    CHECK(jn_parse_size("512", &s) == 0 && s == 512);
    CHECK(jn_parse_size("64KiB", &s) == 0 && s == 65536);
    CHECK(jn_parse_size("1MiB", &s) == 0 && s == 1048576);
    CHECK(jn_parse_size("2GiB", &s) == 0 && s == 2147483648ULL);
    CHECK(jn_parse_size("1MB", &s) == 0 && s == 1000000);
    CHECK(jn_parse_size("1.5KiB", &s) == 0 && s == 1536);
    CHECK(jn_parse_size("-1", &s) != 0);
    CHECK(jn_parse_size("1 parsec", &s) != 0);
    CHECK(jn_parse_size("", &s) != 0);
    CHECK(jn_parse_duration_ms("250ms", &ms) == 0 && ms == 250);
    CHECK(jn_parse_duration_ms("5s", &ms) == 0 && ms == 5000);
    CHECK(jn_parse_duration_ms("5m", &ms) == 0 && ms == 300000);
    CHECK(jn_parse_duration_ms("2h", &ms) == 0 && ms == 7200000);
    CHECK(jn_parse_duration_ms("7d", &ms) == 0 && ms == 604800000);
    CHECK(jn_parse_duration_ms("100", &ms) == 0 && ms == 100);
    CHECK(jn_parse_duration_ms("5 weeks", &ms) != 0);
}

static void test_opts(void)
{
    struct tconf c;
    char e[512];

    CHECK_INT(parse("{}", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "dflt");
    CHECK_INT(c.i, 5);
    CHECK_INT(c.size, 1048576);
    CHECK_INT(c.dur, 300000);
    CHECK(c.b == true);
    CHECK_INT(c.e, 1);
    CHECK_INT(c.l.n, 0);
    jn_opt_free(topts, &c);

    CHECK_INT(parse("s: hello\ni: 10\nsize: 2KiB\ndur: 1s\nb: no\ne: blue\nl: [a, b]\n"
                    "m: {X-A: '1', X-B: two}\n", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "hello");
    CHECK_INT(c.i, 10);
    CHECK_INT(c.size, 2048);
    CHECK_INT(c.dur, 1000);
    CHECK(c.b == false);
    CHECK_INT(c.e, 2);
    CHECK_INT(c.l.n, 2);
    CHECK_STR(c.l.v[1], "b");
    CHECK_INT(c.m.n, 2);
    CHECK_STR(c.m.k[0], "X-A");
    CHECK_STR(c.m.v[1], "two");
    jn_opt_free(topts, &c);

    /* A single value is a list of one. */
    CHECK_INT(parse("l: only\n", &c, e, sizeof(e)), 0);
    CHECK_INT(c.l.n, 1);
    CHECK_STR(c.l.v[0], "only");
    jn_opt_free(topts, &c);

    /* JN_OPT_COMMAS: one string may hold several values; other lists keep their commas. */
    CHECK_INT(parse("cl: ' x , y,z'\nl: 'x, y'\n", &c, e, sizeof(e)), 0);
    CHECK_INT(c.cl.n, 3);
    CHECK_STR(c.cl.v[0], "x");
    CHECK_STR(c.cl.v[1], "y");
    CHECK_STR(c.cl.v[2], "z");
    CHECK_INT(c.l.n, 1);
    CHECK_STR(c.l.v[0], "x, y");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("cl: [a, 'b,c']\n", &c, e, sizeof(e)), 0);
    CHECK_INT(c.cl.n, 3);
    CHECK_STR(c.cl.v[2], "c");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("cl: [a, 'b,,c']\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:9: thing: cl: item 2 of 'b,,c' is empty, expected values separated by "
                 "commas");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("cl: {a: 1}\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:5: thing: cl: expected a list or comma-separated string, found a map");
    jn_opt_free(topts, &c);

    CHECK_INT(parse("i: 11\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: i: 11 is out of range 1..10");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("i: ten\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: i: 'ten' is not an integer, expected a whole number in 1..10");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("\nsiz: 1\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:2:1: thing: unknown option 'siz', did you mean 'size'? (expected one of: s, "
                 "i, size, dur, b, e, l, cl, m)");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("e: bleu\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: e: 'bleu' is not allowed, expected one of: red | green | "
                 "blue (did you mean 'blue'?)");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("b: maybe\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: b: 'maybe' is not a bool, expected true or false");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("s: [1, 2]\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: s: expected a string, found a list");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("m: [1]\n", &c, e, sizeof(e)), 1);
    CHECK_STR(e, "t.yaml:1:4: thing: m: expected a map of name: value, found a list");
    jn_opt_free(topts, &c);
}

static void test_yaml(void)
{
    struct tconf c;
    char e[512];

    setenv("JN_T_VAR", "from-env", 1);
    unsetenv("JN_T_UNSET");
    CHECK_INT(parse("s: \"a-${JN_T_VAR}-b\"\n", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "a-from-env-b");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("s: ${JN_T_UNSET:-fallback}\n", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "fallback");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("s: 'no ${JN_T_VAR} here'\n", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "no ${JN_T_VAR} here");
    jn_opt_free(topts, &c);
    CHECK_INT(parse("s: cost $${X}\n", &c, e, sizeof(e)), 0);
    CHECK_STR(c.s, "cost ${X}");
    jn_opt_free(topts, &c);
    CHECK(parse("s: ${JN_T_UNSET}\n", &c, e, sizeof(e)) > 0);
    CHECK_STR(e, "t.yaml:1:4: environment variable JN_T_UNSET is not set, expected it set or a "
                 "default as ${JN_T_UNSET:-default}");
    jn_opt_free(topts, &c);
    CHECK(parse("a: 1\na: 2\n", &c, e, sizeof(e)) > 0);
    CHECK_STR(e, "t.yaml:2:1: duplicate key 'a' (first at line 1), expected each name once");
    jn_opt_free(topts, &c);
    CHECK(parse("a: [1\n", &c, e, sizeof(e)) > 0);
    CHECK(strncmp(e, "t.yaml:2:1: YAML syntax error: ", 31) == 0);
    jn_opt_free(topts, &c);
    CHECK(parse("a: &x 1\nb: *x\n", &c, e, sizeof(e)) > 0);
    CHECK_STR(e, "t.yaml:1:4: YAML anchors are not supported, expected the value written out");
    jn_opt_free(topts, &c);
}

/* Loads a config from text; returns the number of errors and the first in e. */
static int load(const char *text, char *e, size_t n)
{
    struct jn_diag d;
    struct jn_config *c;
    int errs;

    jn_diag_init(&d);
    c = jn_config_load_buf("j.yaml", text, strlen(text), &d);
    errs = (int)d.n;
    CHECK((c == NULL) == (errs > 0));
    e[0] = '\0';
    if (d.n) {
        snprintf(e, n, "%s", d.msgs[0]);
    }
    jn_config_free(c);
    jn_diag_free(&d);
    return errs;
}

static const char good[] =
    "junction:\n"
    "  data_dir: ./d\n"
    "channels:\n"
    "  in:\n"
    "    type: http\n"
    "    direction: in\n"
    "    listen: 127.0.0.1:1\n"
    "  out:\n"
    "    type: http\n"
    "    direction: out\n"
    "    url: http://127.0.0.1:2/x\n"
    "    retry: {attempts: 3}\n"
    "routes:\n"
    "  r:\n"
    "    from: [in]\n"
    "    when: channel == \"in\"\n"
    "    to: [out]\n";

static void test_config(void)
{
    char e[1024];
    struct jn_diag d;
    struct jn_config *c;

    jn_diag_init(&d);
    c = jn_config_load_buf("j.yaml", good, strlen(good), &d);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->nchannels, 2);
        CHECK_INT(c->nroutes, 1);
        CHECK_STR(c->core.data_dir, "./d");
        CHECK_INT(c->core.shutdown_timeout, 10000);
        CHECK_INT(c->channels[1].common.retry.attempts, 3);
        CHECK_INT(c->channels[1].common.retry.backoff, 500);
        CHECK_INT(c->channels[1].common.concurrency, 1);
        CHECK_INT(c->channels[1].dir, JN_DIR_OUT);
        CHECK_INT(c->routes[0].to[0], 1);
        CHECK(c->routes[0].cond != NULL);
        CHECK_INT(c->unrouted, JN_UNROUTED_DEAD_LETTER);
    }
    jn_config_free(c);
    jn_diag_free(&d);

    CHECK_INT(load("channels:\n  in:\n    type: http\n    direction: in\n    retry: {}\n", e,
                   sizeof(e)), 1);
    CHECK_STR(e, "j.yaml:5:5: channel 'in' (http): option 'retry' applies only to direction: out");
    CHECK_INT(load("channels:\n  o:\n    type: http\n    direction: out\n", e, sizeof(e)), 1);
    CHECK(strstr(e, "j.yaml:3:5: channel 'o' (http): missing required option 'url'") == e);
    CHECK_INT(load("chanels: {}\n", e, sizeof(e)), 1);
    CHECK_STR(e, "j.yaml:1:1: unknown section 'chanels' (did you mean 'channels'?), expected one "
                 "of: junction, channels, services, routes, unrouted");
    CHECK_INT(load("routes:\n  r:\n    to: [x]\n", e, sizeof(e)), 2);
    CHECK_STR(e, "j.yaml:3:5: route 'r': missing required option 'from' (list of strings: IN "
                 "channels whose messages this route considers.)");
    CHECK_INT(load("junction: {log_level: loud}\n", e, sizeof(e)), 1);
    CHECK_STR(e, "j.yaml:1:23: junction: log_level: 'loud' is not allowed, expected one of: "
                 "error | warn | info | debug | trace");
    CHECK_INT(load("", e, sizeof(e)), 0);
    /* test_issue_fuzz_lone_question_mark: an empty key read past its (unterminated) buffer. */
    CHECK_INT(load("?", e, sizeof(e)), 1);
    CHECK_STR(e, "j.yaml:1:2: unknown section '', expected one of: junction, channels, services, "
                 "routes, unrouted");
    CHECK_INT(load("- a\n", e, sizeof(e)), 1);
    CHECK_STR(e, "j.yaml:1:1: expected a map with junction:, channels:, services:, routes:, "
                 "found a list");
}

/* test_issue_12_6: one root error gives one message, and messages print in line order. */
static void test_issue_12_6_no_false_second_error(void)
{
    static const char two[] =
        "routes:\n"
        "  r:\n"
        "    from: [in]\n"
        "    to: [nope, out]\n"
        "channels:\n"
        "  out:\n"
        "    type: http\n"
        "    direction: out\n"
        "    url: http://127.0.0.1:2/x\n"
        "  in:\n"
        "    type: htp\n"
        "    direction: in\n"
        "junction:\n"
        "  log_level: loud\n";
    struct jn_diag d;
    struct jn_config *c;
    char out[2048];
    size_t n;
    FILE *f;

    jn_diag_init(&d);
    c = jn_config_load_buf("j.yaml", two, strlen(two), &d);
    CHECK(c == NULL);
    /* Not "'in' is an OUT channel", nor "'out' is listed twice" (the unknown 'nope' left its
     * slot at index 0, which is 'out''s). */
    CHECK_INT(d.n, 3);
    f = tmpfile();
    CHECK(f != NULL);
    if (f != NULL) {
        jn_diag_print(&d, f);
        rewind(f);
        n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        fclose(f);
        CHECK_STR(out, "j.yaml:4:10: route 'r': to: unknown channel 'nope', expected the name of "
                       "one defined under 'channels:'\n"
                       "j.yaml:11:11: channel 'in': unknown channel type 'htp' (did you mean "
                       "'http'?), expected one of: bridge, file, http, kafka, mllp, mqtt, "
                       "websocket\n"
                       "j.yaml:14:14: junction: log_level: 'loud' is not allowed, expected one "
                       "of: error | warn | info | debug | trace\n");
    }
    jn_config_free(c);
    jn_diag_free(&d);
}

struct pconf {
    char *a, *b, *c, *e, *dflt;
};

static const struct jn_opt popts[] = {
    JN_OPT_PATH("a", NULL, 0, struct pconf, a, "relative"),
    JN_OPT_PATH("b", NULL, 0, struct pconf, b, "absolute"),
    JN_OPT_PATH("c", NULL, 0, struct pconf, c, "the folder itself"),
    JN_OPT_PATH("e", "", 0, struct pconf, e, "empty: not set"),
    JN_OPT_PATH("dflt", "./state/", 0, struct pconf, dflt, "a relative default"),
    JN_OPT_END,
};

/* Writes text to <dir>/name; 0 on success. */
static int write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fputs(text, f);
    return fclose(f);
}

/* test_issue_12_7: relative paths are relative to the config file's folder, not the cwd. */
static void test_issue_12_7_paths(void)
{
    static const char text[] = "a: ./out/x\nb: /var/lib/j\nc: .\ne:\n";
    char tmpl[] = "/tmp/jn-ut-config-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char want[4096], path[4096];
    struct pconf pc;
    struct jn_diag d;
    struct jn_node *root;
    struct jn_config *c;

    CHECK(dir != NULL);
    if (dir == NULL) {
        return;
    }
    CHECK_INT(write_file(dir, "p.yaml", text), 0);
    snprintf(path, sizeof(path), "%s/p.yaml", dir);
    memset(&pc, 0, sizeof(pc));
    jn_diag_init(&d);
    root = jn_yaml_load_file(path, &d, NULL);
    CHECK(root != NULL);
    CHECK_STR(root ? root->dir : NULL, dir);
    CHECK_INT(root ? jn_opt_parse(popts, root, &pc, "p", 0, NULL, root, &d) : -1, 0);
    snprintf(want, sizeof(want), "%s/out/x", dir);
    CHECK_STR(pc.a, want);
    CHECK_STR(pc.b, "/var/lib/j");
    CHECK_STR(pc.c, dir);
    CHECK_STR(pc.e, "");
    snprintf(want, sizeof(want), "%s/state/", dir);
    CHECK_STR(pc.dflt, want);
    jn_opt_free(popts, &pc);
    jn_node_free(root);
    jn_diag_free(&d);

    /* From a buffer (the embedded default config): left relative to the current directory. */
    memset(&pc, 0, sizeof(pc));
    jn_diag_init(&d);
    root = jn_yaml_load_buf("p.yaml", text, strlen(text), &d);
    CHECK_INT(root ? jn_opt_parse(popts, root, &pc, "p", 0, NULL, root, &d) : -1, 0);
    CHECK_STR(pc.a, "./out/x");
    CHECK_STR(pc.c, ".");
    CHECK_STR(pc.dflt, "./state/");
    jn_opt_free(popts, &pc);
    jn_node_free(root);
    jn_diag_free(&d);

    /* The whole config: data_dir given, and data_dir defaulted with no junction: section. */
    CHECK_INT(write_file(dir, "j.yaml", good), 0);
    CHECK_INT(write_file(dir, "empty.yaml", "channels: {}\n"), 0);
    snprintf(path, sizeof(path), "%s/j.yaml", dir);
    jn_diag_init(&d);
    c = jn_config_load_file(path, &d);
    CHECK(c != NULL);
    snprintf(want, sizeof(want), "%s/d", dir);
    CHECK_STR(c ? c->core.data_dir : NULL, want);
    jn_config_free(c);
    snprintf(path, sizeof(path), "%s/empty.yaml", dir);
    c = jn_config_load_file(path, &d);
    CHECK(c != NULL);
    snprintf(want, sizeof(want), "%s/data", dir);
    CHECK_STR(c ? c->core.data_dir : NULL, want);
    jn_config_free(c);
    jn_diag_free(&d);

    snprintf(path, sizeof(path), "%s/p.yaml", dir);
    remove(path);
    snprintf(path, sizeof(path), "%s/j.yaml", dir);
    remove(path);
    snprintf(path, sizeof(path), "%s/empty.yaml", dir);
    remove(path);
    rmdir(dir);
}

static void test_config_alloc_failures(void)
{
    /* Every allocation failure while loading is a clean error (no crash; ASan/valgrind check
     * for leaks). Walk until a load succeeds. */
    long n;

    for (n = 0; n < 5000; n++) {
        struct jn_diag d;
        struct jn_config *c;

        jn_diag_init(&d);
        jn_mem_fail_after(n);
        c = jn_config_load_buf("j.yaml", good, strlen(good), &d);
        jn_mem_fail_after(-1);
        if (c != NULL) {
            jn_config_free(c);
            jn_diag_free(&d);
            break;
        }
        jn_diag_free(&d);
    }
    CHECK(n > 50 && n < 5000);
}

/* jn_opt_same: every type, the skip flags, and the name of what differs. */
static void test_opt_same(void)
{
    struct tconf a, b;
    char where[64], first[256];

    CHECK(parse("s: x\nl: [a, b]\nm: {k: v}\n", &a, first, sizeof(first)) == 0);
    CHECK(parse("s: x\nl: [a, b]\nm: {k: v}\n", &b, first, sizeof(first)) == 0);
    CHECK(jn_opt_same(topts, &a, &b, 0, where, sizeof(where)) == 1);
    jn_opt_free(topts, &b);
    CHECK(parse("s: x\nl: [a, c]\nm: {k: v}\n", &b, first, sizeof(first)) == 0);
    CHECK(jn_opt_same(topts, &a, &b, 0, where, sizeof(where)) == 0);
    CHECK(strcmp(where, "l") == 0);
    jn_opt_free(topts, &b);
    CHECK(parse("s: x\nl: [a, b]\nm: {k: w}\ndur: 1s\n", &b, first, sizeof(first)) == 0);
    CHECK(jn_opt_same(topts, &a, &b, 0, where, sizeof(where)) == 0);
    CHECK(strcmp(where, "dur") == 0); /* the first in table order */
    jn_opt_free(topts, &b);
    jn_opt_free(topts, &a);
}

struct rconf {
    long long n;
    char *s;
    char *fixed;
};

static const struct jn_opt ropts[] = {
    JN_OPT_INT("n", "1", 0, 100, JN_OPT_RELOADABLE, struct rconf, n, "a number"),
    JN_OPT_STR("s", NULL, JN_OPT_RELOADABLE, struct rconf, s, "a string"),
    JN_OPT_STR("fixed", NULL, 0, struct rconf, fixed, "not reloadable"),
    JN_OPT_END,
};

/* jn_opt_reload: numbers are copied into the running conf, a string is reported, not copied. */
static void test_opt_reload(void)
{
    struct rconf run = {0}, next = {0};
    struct jn_diag d;
    struct jn_node *r1, *r2;
    char where[64] = "";
    static const char t1[] = "n: 5\ns: a\nfixed: x\n", t2[] = "n: 7\ns: a\nfixed: x\n",
                      t3[] = "n: 7\ns: b\nfixed: x\n";

    jn_diag_init(&d);
    r1 = jn_yaml_load_buf("r.yaml", t1, strlen(t1), &d);
    r2 = jn_yaml_load_buf("r.yaml", t2, strlen(t2), &d);
    CHECK(r1 && r2 && jn_opt_parse(ropts, r1, &run, "r", 0, NULL, r1, &d) == 0 &&
          jn_opt_parse(ropts, r2, &next, "r", 0, NULL, r2, &d) == 0);
    CHECK(jn_opt_same(ropts, &run, &next, JN_OPT_RELOADABLE, NULL, 0) == 1);
    CHECK(jn_opt_same(ropts, &run, &next, 0, where, sizeof(where)) == 0 && strcmp(where, "n") == 0);
    CHECK(jn_opt_reload(ropts, &run, &next, 0, where, sizeof(where)) == 0 && run.n == 5);
    CHECK(jn_opt_reload(ropts, &run, &next, 1, where, sizeof(where)) == 0 && run.n == 7);
    jn_opt_free(ropts, &next);
    jn_node_free(r2);
    r2 = jn_yaml_load_buf("r.yaml", t3, strlen(t3), &d);
    CHECK(r2 && jn_opt_parse(ropts, r2, &next, "r", 0, NULL, r2, &d) == 0);
    CHECK(jn_opt_reload(ropts, &run, &next, 1, where, sizeof(where)) == 1 &&
          strcmp(where, "s") == 0 && strcmp(run.s, "a") == 0);
    jn_opt_free(ropts, &next);
    jn_opt_free(ropts, &run);
    jn_node_free(r1);
    jn_node_free(r2);
    jn_diag_free(&d);
}

/* jn_config_reloadable: routes and services change, channels may be listed in another order
 * (indexes remapped), a new channel or a changed non-reloadable option is refused. */
static void test_reloadable(void)
{
    static const char cur_text[] =
        "junction: { data_dir: /tmp/x }\n"
        "channels:\n"
        "  a: { type: http, direction: in, listen: '127.0.0.1:1', path: /a }\n"
        "  o1: { type: file, direction: out, dir: /tmp/o1 }\n"
        "  o2: { type: file, direction: out, dir: /tmp/o2 }\n"
        "routes:\n"
        "  r: { from: [a], to: [o1] }\n";
    static const char next_text[] =
        "junction: { data_dir: /tmp/x, log_level: debug }\n"
        "channels:\n"
        "  o2: { type: file, direction: out, dir: /tmp/o2, retry: { attempts: 2 } }\n"
        "  a: { type: http, direction: in, listen: '127.0.0.1:1', path: /a }\n"
        "  o1: { type: file, direction: out, dir: /tmp/o1 }\n"
        "services:\n"
        "  s: { type: set-header, set: { x: y } }\n"
        "routes:\n"
        "  r: { from: [a], via: [s], to: [o2, o1] }\n";
    static const char bad_text[] =
        "junction: { data_dir: /tmp/y }\n"
        "channels:\n"
        "  a: { type: http, direction: in, listen: '127.0.0.1:1', path: /a }\n"
        "  o1: { type: file, direction: out, dir: /tmp/o1 }\n"
        "  o2: { type: file, direction: out, dir: /tmp/o2 }\n"
        "routes:\n"
        "  r: { from: [a], to: [o1] }\n";
    /* a listens elsewhere (a restart), o2 removed (a placeholder keeps its slot), o3 added */
    static const char chg_text[] =
        "junction: { data_dir: /tmp/x }\n"
        "channels:\n"
        "  o3: { type: file, direction: out, dir: /tmp/o3 }\n"
        "  a: { type: http, direction: in, listen: '127.0.0.1:2', path: /a }\n"
        "  o1: { type: file, direction: out, dir: /tmp/o1 }\n"
        "routes:\n"
        "  r: { from: [a], to: [o3, o1] }\n";
    static const char dir_text[] =
        "junction: { data_dir: /tmp/x }\n"
        "channels:\n"
        "  a: { type: http, direction: in, listen: '127.0.0.1:1', path: /a }\n"
        "  o1: { type: file, direction: out, dir: /tmp/o1 }\n"
        "  o2: { type: http, direction: in, listen: '127.0.0.1:3', path: /b }\n"
        "routes:\n"
        "  r: { from: [a], to: [o1] }\n";
    struct jn_diag d, why, ch;
    struct jn_config *cur, *next, *bad, *chg, *dirc;
    int seen_listen = 0, seen_new = 0, seen_gone = 0, seen_dir = 0;

    jn_diag_init(&d);
    cur = jn_config_load_buf("c.yaml", cur_text, strlen(cur_text), &d);
    next = jn_config_load_buf("n.yaml", next_text, strlen(next_text), &d);
    bad = jn_config_load_buf("b.yaml", bad_text, strlen(bad_text), &d);
    chg = jn_config_load_buf("g.yaml", chg_text, strlen(chg_text), &d);
    dirc = jn_config_load_buf("d.yaml", dir_text, strlen(dir_text), &d);
    CHECK(cur != NULL && next != NULL && bad != NULL && chg != NULL && dirc != NULL &&
          d.nerr == 0);
    if (cur == NULL || next == NULL || bad == NULL || chg == NULL || dirc == NULL) {
        jn_config_free(cur);
        jn_config_free(next);
        jn_config_free(bad);
        jn_config_free(chg);
        jn_config_free(dirc);
        jn_diag_free(&d);
        return;
    }
    jn_diag_init(&why);
    jn_diag_init(&ch);
    CHECK(jn_config_reloadable(cur, next, &why, &ch) == 0);
    CHECK(why.n == 0);
    /* next's channels in cur's order, the route's destinations remapped with them */
    CHECK(strcmp(next->channels[0].name, "a") == 0 && strcmp(next->channels[1].name, "o1") == 0 &&
          strcmp(next->channels[2].name, "o2") == 0);
    CHECK(next->routes[0].from[0] == 0 && next->routes[0].to[0] == 2 &&
          next->routes[0].to[1] == 1);
    {
        int svc = 0, route = 0, retry = 0, core = 0;
        for (size_t i = 0; i < ch.n; i++) {
            svc |= strstr(ch.msgs[i], "service 's' added") != NULL;
            route |= strstr(ch.msgs[i], "route 'r': via changed") != NULL;
            retry |= strstr(ch.msgs[i], "channel 'o2': retry.attempts changed (applied live)") !=
                     NULL;
            core |= strstr(ch.msgs[i], "junction.log_level changed (applied live)") != NULL;
        }
        CHECK(svc && route && retry && core);
    }
    jn_diag_free(&why);
    jn_diag_free(&ch);
    jn_diag_init(&why);
    jn_diag_init(&ch);
    CHECK(jn_config_reloadable(cur, bad, &why, &ch) == JN_EINVAL);
    for (size_t i = 0; i < why.n; i++) {
        seen_dir |= strstr(why.msgs[i], "junction.data_dir changed") != NULL;
    }
    CHECK(seen_dir);
    jn_diag_free(&why);
    jn_diag_free(&ch);
    jn_diag_init(&why);
    jn_diag_init(&ch);
    CHECK(jn_config_reloadable(cur, chg, &why, &ch) == 0 && why.n == 0);
    for (size_t i = 0; i < ch.n; i++) {
        seen_listen |= strstr(ch.msgs[i], "channel 'a': listen changed: the channel restarts") !=
                       NULL;
        seen_new |= strstr(ch.msgs[i], "g.yaml:3:3: channel 'o3' added") != NULL;
        seen_gone |= strstr(ch.msgs[i], "channel 'o2' removed") != NULL;
    }
    CHECK(seen_listen && seen_new && seen_gone);
    /* cur's slots first (o2 a placeholder), then the new one; the route remapped */
    CHECK(chg->nchannels == 4 && strcmp(chg->channels[0].name, "a") == 0 &&
          chg->channels[0].restart == 1 && strcmp(chg->channels[2].name, "o2") == 0 &&
          chg->channels[2].gone == 1 && strcmp(chg->channels[3].name, "o3") == 0 &&
          chg->channels[3].gone == 0);
    CHECK(chg->routes[0].from[0] == 0 && chg->routes[0].to[0] == 3 && chg->routes[0].to[1] == 1);
    jn_diag_free(&why);
    jn_diag_free(&ch);
    jn_diag_init(&why);
    jn_diag_init(&ch);
    CHECK(jn_config_reloadable(cur, dirc, &why, &ch) == JN_EINVAL && why.n == 1 &&
          strstr(why.msgs[0], "channel 'o2': its direction changed") != NULL);
    jn_diag_free(&why);
    jn_diag_free(&ch);
    jn_config_free(chg); /* its placeholder (o2) is cur's: freed with cur only */
    jn_config_free(dirc);
    jn_config_free(cur);
    jn_config_free(next);
    jn_config_free(bad);
    jn_diag_free(&d);
}

int main(void)
{
    test_opt_same();
    test_opt_reload();
    test_reloadable();
    test_units();
    test_opts();
    test_yaml();
    test_config();
    test_issue_12_6_no_false_second_error();
    test_issue_12_7_paths();
    test_config_alloc_failures();
    TEST_MAIN_END();
}
