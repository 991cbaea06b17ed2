/* jn_inspect: trace, log and dlq commands over a data_dir's journal (see jn_inspect.h). */
#include "jn_inspect.h"

#include <ctype.h>
#include <string.h>
#include <time.h>

#include "jn_buf.h"
#include "jn_journal.h"
#include "jn_mem.h"
#include "jn_opt.h"
#include "jn_store.h"

static struct jn_journal *open_journal(const struct jn_config *cfg, int write)
{
    struct jn_journal *j;
    struct jn_err err;
    struct jn_journal_conf jc = {
        .dir = cfg->core.data_dir,
        .map_size = cfg->core.max_size,
        .high_water_pct = (int)cfg->core.high_water,
        .warn_pct = (int)cfg->core.high_water - 10,
        .readonly = !write,
    };

    jn_err_clear(&err);
    if (jn_journal_open(&j, &jc, NULL, &err) != 0) {
        fprintf(stderr, "junction: %s\n", err.msg);
        return NULL;
    }
    return j;
}

static void fmt_time(int64_t us, char *buf, size_t n)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    size_t l;

    gmtime_r(&s, &tm);
    l = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + l, n - l, ".%03dZ", (int)(us / 1000 % 1000));
}

static void print_log(FILE *out, const struct jn_logrec *r)
{
    char t[40];

    fmt_time(r->time_us, t, sizeof(t));
    fprintf(out, "%s  %s  %-18s", t, r->id, r->event);
    if (r->route[0]) {
        fprintf(out, "  route=%s", r->route);
    }
    if (r->channel[0]) {
        fprintf(out, "  channel=%s", r->channel);
    }
    if (r->attempt) {
        fprintf(out, "  attempt=%d", r->attempt);
    }
    if (r->error[0]) {
        fprintf(out, "  error=%s", r->error);
    }
    if (r->peer[0]) {
        fprintf(out, "  peer=%s", r->peer);
    }
    fputc('\n', out);
}

/* ---- trace ---- */

struct trace_ctx {
    struct jn_journal *j;
    FILE *out;
    size_t n;
};

static int visit_log_key(void *arg, const void *k, size_t kl, const void *v, size_t vl);

static int visit_logid(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct trace_ctx *c = arg;

    if (kl != JN_ID_LEN + 16) {
        return 0;
    }
    /* The log_id key ends with the log key: look the record up by it. */
    return jn_journal_scan(c->j, JN_JDB_LOG, (const unsigned char *)k + JN_ID_LEN, 16,
                           visit_log_key, c) != 0;
}

static int visit_log_key(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct trace_ctx *c = arg;
    struct jn_logrec r;
    struct jn_err err;

    if (jn_store_log_decode(v, vl, &r, &err) != 0) {
        fprintf(c->out, "(an action record cannot be decoded: %s)\n", err.msg);
    } else {
        print_log(c->out, &r);
        c->n++;
    }
    return 1; /* one record per key */
}

int jn_inspect_trace(const struct jn_config *cfg, const char *id, FILE *out)
{
    struct jn_journal *j;
    struct trace_ctx c;

    if (strlen(id) != JN_ID_LEN || jn_id_time_ms(id) < 0) {
        fprintf(stderr, "junction: '%s' is not a message id (26 characters, 0-9 A-Z without "
                "I L O U)\n", id);
        return 2;
    }
    j = open_journal(cfg, 0);
    if (j == NULL) {
        return 1;
    }
    c.j = j;
    c.out = out;
    c.n = 0;
    jn_journal_scan(j, JN_JDB_LOGID, id, JN_ID_LEN, visit_logid, &c);
    jn_journal_close(j);
    if (c.n == 0) {
        fprintf(stderr, "junction: no actions for %s in %s (never seen, or past retention)\n",
                id, cfg->core.data_dir);
        return 1;
    }
    return 0;
}

/* ---- log ---- */

static int64_t parse_when(const char *s)
{
    int64_t us;

    return jn_parse_when(s, jn_now_us(), &us) == 0 ? us : -1;
}

struct log_ctx {
    FILE *out;
    int64_t until;
    size_t n;
};

static int visit_log(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct log_ctx *c = arg;
    struct jn_logrec r;
    struct jn_err err;

    if (kl == 16 && (int64_t)jn_get_be64(k) > c->until) {
        return 1;
    }
    if (jn_store_log_decode(v, vl, &r, &err) == 0) {
        print_log(c->out, &r);
        c->n++;
    }
    return 0;
}

int jn_inspect_log(const struct jn_config *cfg, const char *since, const char *until, FILE *out)
{
    struct log_ctx c = {out, INT64_MAX, 0};
    int64_t from = 0;
    unsigned char key[8];
    struct jn_journal *j;

    if (since && (from = parse_when(since)) < 0) {
        fprintf(stderr, "junction: --since '%s': expected a duration ago (10m ago, 10m, 2h, 7d) "
                "or a UTC time YYYY-MM-DDTHH:MM:SS[Z]\n", since);
        return 2;
    }
    if (until && (c.until = parse_when(until)) < 0) {
        fprintf(stderr, "junction: --until '%s': expected a duration ago (10m ago, 10m, 2h, 7d) "
                "or a UTC time YYYY-MM-DDTHH:MM:SS[Z]\n", until);
        return 2;
    }
    j = open_journal(cfg, 0);
    if (j == NULL) {
        return 1;
    }
    jn_be64(key, (uint64_t)from); /* log keys start with the time: seek to it */
    jn_journal_scan_from(j, JN_JDB_LOG, key, 8, visit_log, &c);
    jn_journal_close(j);
    fprintf(stderr, "%zu action(s)\n", c.n);
    return 0;
}

/* ---- dlq ---- */

struct dlq_ctx {
    FILE *out;
    const char *id;   /* replay: NULL = all */
    struct jn_jtxn *t;
    struct jn_journal *j;
    struct jn_buf done; /* replay: the "replayed" lines, printed once the write committed */
    size_t n, bad, failed;
};

/* One dead letter that cannot be read is named and left where it is; it never stops the
 * others from being listed or replayed. */
static void dlq_bad(struct dlq_ctx *c, const void *k, size_t kl, const char *why)
{
    fprintf(stderr, "junction: dead letter %llu cannot be decoded (%s); left in the "
            "dead-letter queue\n", kl == 8 ? (unsigned long long)jn_get_be64(k) : 0ULL, why);
    c->bad++;
}

static int visit_dlq_list(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct dlq_ctx *c = arg;
    struct jn_qrec r;
    struct jn_err err;
    char t[40];

    if (jn_store_dlq_decode(v, vl, &r, &err) != 0) {
        dlq_bad(c, k, kl, err.msg);
        return 0;
    }
    fmt_time(r.time_us, t, sizeof(t));
    fprintf(c->out, "%s  %s  destination=%s  route=%s  attempts=%d  bytes=%zu  error=%s\n", t,
            r.msg->id, r.dest[0] ? r.dest : "-", r.route[0] ? r.route : "-", r.attempt,
            r.msg->len, r.error);
    jn_qrec_clear(&r);
    c->n++;
    return 0;
}

int jn_inspect_dlq_list(const struct jn_config *cfg, FILE *out)
{
    struct dlq_ctx c = {.out = out};
    struct jn_journal *j = open_journal(cfg, 0);

    if (j == NULL) {
        return 1;
    }
    jn_journal_scan(j, JN_JDB_DLQ, NULL, 0, visit_dlq_list, &c);
    jn_journal_close(j);
    if (c.bad) {
        fprintf(stderr, "%zu dead letter(s), %zu that cannot be decoded\n", c.n, c.bad);
        return 1;
    }
    fprintf(stderr, "%zu dead letter(s)\n", c.n);
    return 0;
}

static int visit_dlq_replay(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct dlq_ctx *c = arg;
    struct jn_qrec r;
    struct jn_err err;
    int ok;

    if (kl != 8) {
        dlq_bad(c, k, kl, "bad key");
        return 0;
    }
    if (jn_store_dlq_decode(v, vl, &r, &err) != 0) {
        dlq_bad(c, k, kl, err.msg);
        return 0;
    }
    if (c->id && strcmp(c->id, r.msg->id) != 0) {
        jn_qrec_clear(&r);
        return 0;
    }
    if (r.dest[0] == '\0') {
        /* Dead-lettered before it had a destination (unrouted, a service error): it goes
         * back to the inbox and is routed again with the current config. */
        ok = jn_store_inbox_put(c->t, jn_journal_seq(c->j), r.msg) == 0;
    } else {
        ok = jn_store_queue_put(c->t, r.dest, jn_journal_seq(c->j), r.msg, r.route, 1, NULL) ==
             0;
    }
    ok = ok && jn_jtxn_del(c->t, JN_JDB_DLQ, k, kl) == 0 &&
         jn_store_log(c->t, jn_journal_seq(c->j), r.msg->id, "replayed", r.route, r.dest, 0,
                      NULL) == 0 &&
         jn_buf_printf(&c->done, "replayed %s to %s\n", r.msg->id,
                       r.dest[0] ? r.dest : "(routing)") == 0;
    if (ok) {
        c->n++;
    } else {
        c->failed++;
    }
    jn_qrec_clear(&r);
    return 0;
}

int jn_inspect_dlq_replay(const struct jn_config *cfg, const char *id, FILE *out)
{
    struct dlq_ctx c = {.out = out, .id = id, .t = jn_jtxn_new()};
    int rc = 0;

    if (c.t == NULL) {
        fprintf(stderr, "junction: out of memory\n");
        return 1;
    }
    c.j = open_journal(cfg, 1);
    if (c.j == NULL) {
        jn_jtxn_free(c.t);
        fprintf(stderr, "junction: replay writes to the journal: stop the broker first, replay, "
                "then start it\n");
        return 1;
    }
    jn_journal_scan(c.j, JN_JDB_DLQ, NULL, 0, visit_dlq_replay, &c);
    if (c.failed) {
        /* Out of memory building the write: all or nothing, so nothing. */
        fprintf(stderr, "junction: out of memory preparing the replay; nothing written\n");
        jn_jtxn_free(c.t);
        rc = JN_ENOMEM;
    } else if (c.n > 0) {
        rc = jn_journal_write_now(c.j, c.t); /* all or nothing, one transaction */
    } else {
        jn_jtxn_free(c.t);
    }
    jn_journal_close(c.j);
    if (rc != 0) {
        if (!c.failed) {
            fprintf(stderr, "junction: replay failed: %s\n", jn_strerror(rc));
        }
        jn_buf_reset(&c.done);
        return 1;
    }
    if (c.done.len) {
        fputs(c.done.p, out);
    }
    jn_buf_reset(&c.done);
    if (c.n == 0) {
        fprintf(stderr, "junction: %s\n", id ? "no dead letter with that id" : "no dead letters");
        return id || c.bad ? 1 : 0;
    }
    fprintf(stderr, "%zu dead letter(s) replayed; they are delivered when the broker starts\n",
            c.n);
    /* --all leaves the undecodable ones behind: say so with the exit code too. */
    return id == NULL && c.bad ? 1 : 0;
}
