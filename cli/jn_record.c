/*
 * jn_record: `junction ctl record --channel NAME [--count N] --out FILE`, record-to-test
 * (docs/testing-routes.md).
 *
 * Asks the running broker's admin API for the channel's last N messages (GET
 * /api/v1/messages?channel=), and for each the message as it was received, headers and
 * payload, as retention keeps it (GET /api/v1/messages/ID and .../payload: a route's
 * `keep: all`). Each becomes a `junction test` case whose expectations are what the config
 * given with -c makes of it, run offline through the same code as `junction test`
 * (jn_testrun__route): record before a change, with the config that runs, and the file checks
 * the changed config against yesterday's traffic. The trace says what the broker delivered;
 * where that differs from what the config gives offline (a retry, a replay, a config that is
 * not the one running), the case says so in a comment and the command on stderr.
 *
 * Payloads that YAML text cannot hold byte for byte (not UTF-8, NUL, other control bytes than
 * CR, LF, TAB) are written beside the test file, in FILE.d/, as payload_file.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "jn_buf.h"
#include "jn_ctl.h"
#include "jn_mem.h"
#include "jn_record.h"
#include "jn_service.h"
#include "jn_testrun_int.h"
#include "jn_utf8.h"

#define RECORD_MAX 1000

/* ---- YAML text ---- */

/* Text that a YAML double-quoted scalar gives back byte for byte: UTF-8 without NUL and
 * without control bytes other than CR, LF and TAB. */
static int utf8_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == 0x7f || (p[i] < 0x20 && p[i] != '\r' && p[i] != '\n' && p[i] != '\t')) {
            return 0;
        }
    }
    return jn_utf8_valid(p, n);
}

/* p as a YAML double-quoted scalar that reads back as the same bytes (utf8_ok holds), with
 * "${" written "$${" (test files substitute ${ENV}). */
static void yaml_str(struct jn_buf *b, const void *pv, size_t n)
{
    const unsigned char *p = pv;

    jn_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        switch (p[i]) {
        case '"': jn_buf_puts(b, "\\\""); break;
        case '\\': jn_buf_puts(b, "\\\\"); break;
        case '\n': jn_buf_puts(b, "\\n"); break;
        case '\r': jn_buf_puts(b, "\\r"); break;
        case '\t': jn_buf_puts(b, "\\t"); break;
        case '$':
            jn_buf_puts(b, i + 1 < n && p[i + 1] == '{' ? "$$" : "$");
            break;
        default: jn_buf_putc(b, (char)p[i]); break;
        }
    }
    jn_buf_putc(b, '"');
}

/* A POSIX ERE that matches exactly s, anchored. */
static void ere_exact(struct jn_buf *b, const char *s)
{
    jn_buf_putc(b, '^');
    for (; *s; s++) {
        if (strchr(".[]{}()\\*+?|^$", *s)) {
            jn_buf_putc(b, '\\');
        }
        jn_buf_putc(b, *s);
    }
    jn_buf_putc(b, '$');
}

/* ---- files beside the test file ---- */

struct rec {
    const char *out;     /* the test file */
    char dir[4096];      /* out.d, made when first needed */
    int made;
    FILE *err;
};

/* Writes the bytes to FILE.d/name and appends `key: FILE.d-relative path` (relative to the
 * test file's folder). 0, or -1 (said on err). */
static int side_file(struct rec *r, struct jn_buf *y, const char *key, const char *name,
                     const void *p, size_t n)
{
    char path[4352];
    const char *base = strrchr(r->out, '/');
    FILE *f;

    if (!r->made) {
        snprintf(r->dir, sizeof(r->dir), "%s.d", r->out);
        if (mkdir(r->dir, 0755) != 0 && errno != EEXIST) {
            fprintf(r->err, "junction ctl record: cannot make %s: %s\n", r->dir, strerror(errno));
            return -1;
        }
        r->made = 1;
    }
    snprintf(path, sizeof(path), "%s/%s", r->dir, name);
    f = fopen(path, "wb");
    if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(r->err, "junction ctl record: cannot write %s: %s\n", path, strerror(errno));
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    jn_buf_printf(y, "%s: ", key);
    snprintf(path, sizeof(path), "%s.d/%s", base ? base + 1 : r->out, name);
    yaml_str(y, path, strlen(path));
    return 0;
}

/* `key: "..."`, or a side file when YAML text cannot hold the bytes. */
static int payload_field(struct rec *r, struct jn_buf *y, const char *key, const char *name,
                         const struct jn_msg *m)
{
    if (utf8_ok(m->payload, m->len)) {
        jn_buf_printf(y, "%s: ", key);
        yaml_str(y, m->payload, m->len);
        return 0;
    }
    return side_file(r, y, strcmp(key, "payload") == 0 ? "payload_file" : key, name, m->payload,
                     m->len);
}

/* ---- the admin API ---- */

static json_t *get_json(const struct jn_ctl_opts *o, const char *path, int *status)
{
    struct jn_buf body = JN_BUF_INIT;
    json_t *j = NULL;

    if (jn_ctl_request(o, "GET", path, NULL, status, &body) == 0 && body.p != NULL) {
        j = json_loadb(body.p, body.len, 0, NULL);
    }
    jn_buf_reset(&body);
    return j;
}

static const char *jstr(const json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

/* The message as received (kept), or NULL with why in why. */
static struct jn_msg *fetch(const struct jn_ctl_opts *o, const char *id, const char *channel,
                            json_t **show, char *why, size_t wn)
{
    char path[128];
    int status = 0;
    json_t *j, *kept, *h;
    struct jn_buf body = JN_BUF_INIT;
    struct jn_msg *m;
    size_t i;

    snprintf(path, sizeof(path), "/api/v1/messages/%s", id);
    j = get_json(o, path, &status);
    kept = json_object_get(j, "kept");
    if (j == NULL || status != 200 || !json_is_object(kept) ||
        strcmp(jstr(kept, "keep"), "all") != 0) {
        snprintf(why, wn, "%s", j == NULL || status != 200 ? "not found"
                 : json_is_object(kept) ? "kept without its payload (keep: headers)"
                                        : "not kept (keep: none, or past the retention)");
        json_decref(j);
        return NULL;
    }
    snprintf(path, sizeof(path), "/api/v1/messages/%s/payload", id);
    if (jn_ctl_request(o, "GET", path, NULL, &status, &body) != 0 || status != 200) {
        snprintf(why, wn, "its payload could not be read (%d)", status);
        jn_buf_reset(&body);
        json_decref(j);
        return NULL;
    }
    m = jn_msg_new(channel, body.p ? body.p : "", body.len);
    jn_buf_reset(&body);
    if (m == NULL) {
        snprintf(why, wn, "out of memory");
        json_decref(j);
        return NULL;
    }
    snprintf(m->id, sizeof(m->id), "%s", id);
    json_array_foreach(json_object_get(kept, "headers"), i, h) {
        if (jn_msg_header_add(m, jstr(h, "name"), jstr(h, "value")) != 0) {
            jn_msg_unref(&m);
            snprintf(why, wn, "out of memory");
            json_decref(j);
            return NULL;
        }
    }
    *show = j;
    return m;
}

/* How many `delivered` the trace names for channel dest. */
static long delivered_to(const json_t *show, const char *dest)
{
    const json_t *e;
    size_t i;
    long n = 0;

    json_array_foreach(json_object_get(show, "trace"), i, e) {
        n += strcmp(jstr(e, "event"), "delivered") == 0 && strcmp(jstr(e, "channel"), dest) == 0;
    }
    return n;
}

/* ---- one case ---- */

/* Headers of out that in does not have with the same value: what the services set. */
static void changed_headers(struct jn_buf *y, const struct jn_msg *in, const struct jn_msg *out)
{
    int any = 0;

    for (size_t i = 0; i < out->nhdrs; i++) {
        const char *v = jn_msg_header_get(in, out->hdrs[i].name);
        if (v != NULL && strcmp(v, out->hdrs[i].value) == 0) {
            continue;
        }
        jn_buf_puts(y, any ? ", " : ", headers: {");
        yaml_str(y, out->hdrs[i].name, strlen(out->hdrs[i].name));
        jn_buf_puts(y, ": ");
        yaml_str(y, out->hdrs[i].value, strlen(out->hdrs[i].value));
        any = 1;
    }
    if (any) {
        jn_buf_putc(y, '}');
    }
}

static int write_case(struct rec *r, struct jn_buf *y, const struct jn_config *cfg,
                      const struct jn_msg *m, const json_t *show,
                      const struct jn_testrun_outcome *oc, int *drift)
{
    char name[160];

    jn_buf_puts(y, "  - name: ");
    snprintf(name, sizeof(name), "%s received %s", m->id, jstr(show, "received"));
    yaml_str(y, name, strlen(name));
    jn_buf_puts(y, "\n    input:\n      channel: ");
    yaml_str(y, m->channel, strlen(m->channel));
    jn_buf_puts(y, "\n");
    if (m->nhdrs > 0) {
        jn_buf_puts(y, "      headers:\n");
        for (size_t i = 0; i < m->nhdrs; i++) {
            /* a header given twice is a list (jn_testrun reads name -> list) */
            size_t first = 0, count = 0;
            while (first < i && strcasecmp(m->hdrs[first].name, m->hdrs[i].name) != 0) {
                first++;
            }
            if (first < i) {
                continue;
            }
            jn_buf_puts(y, "        ");
            yaml_str(y, m->hdrs[i].name, strlen(m->hdrs[i].name));
            jn_buf_puts(y, ": [");
            for (size_t k = i; k < m->nhdrs; k++) {
                if (strcasecmp(m->hdrs[k].name, m->hdrs[i].name) == 0) {
                    jn_buf_puts(y, count++ ? ", " : "");
                    yaml_str(y, m->hdrs[k].value, strlen(m->hdrs[k].value));
                }
            }
            jn_buf_puts(y, "]\n");
        }
    }
    jn_buf_puts(y, "      ");
    {
        char fname[64];
        snprintf(fname, sizeof(fname), "%s.in", m->id);
        if (payload_field(r, y, "payload", fname, m) != 0) {
            return -1;
        }
    }
    jn_buf_puts(y, "\n    expect:\n      only: true\n");
    for (size_t c = 0; c < cfg->nchannels; c++) {
        const struct jn_msg_list *got = &oc->got[c];
        long was = cfg->channels[c].dir == JN_DIR_OUT ? delivered_to(show,
                                                                     cfg->channels[c].name) : 0;
        if (cfg->channels[c].dir != JN_DIR_OUT) {
            continue;
        }
        if ((long)got->n != was) {
            jn_buf_printf(y, "      # when recorded, the broker had delivered %ld to %s; this "
                          "config gives %zu\n", was, cfg->channels[c].name, got->n);
            (*drift)++;
        }
        if (got->n == 0) {
            continue;
        }
        jn_buf_puts(y, "      ");
        yaml_str(y, cfg->channels[c].name, strlen(cfg->channels[c].name));
        jn_buf_puts(y, ":\n");
        for (size_t k = 0; k < got->n; k++) {
            char fname[400];
            snprintf(fname, sizeof(fname), "%s.%s.%zu", m->id, cfg->channels[c].name, k + 1);
            for (char *p = fname; *p; p++) {
                *p = *p == '/' ? '_' : *p;
            }
            jn_buf_puts(y, "        - {");
            if (payload_field(r, y, "payload", fname, got->v[k]) != 0) {
                return -1;
            }
            changed_headers(y, m, got->v[k]);
            jn_buf_puts(y, "}\n");
        }
    }
    for (size_t d = 0; d < oc->ndead; d++) {
        jn_buf_puts(y, "      dead_letter: ");
        {
            struct jn_buf re = JN_BUF_INIT;
            ere_exact(&re, oc->dead[d].reason);
            yaml_str(y, re.p, re.len);
            jn_buf_reset(&re);
        }
        jn_buf_puts(y, "\n");
        break; /* one reason is matched against all; the first says enough */
    }
    if (oc->nfiltered > 0) {
        jn_buf_puts(y, "      filtered: true\n");
    }
    return 0;
}

/* ---- the command ---- */

int jn_record_main(const struct jn_ctl_opts *o, const struct jn_config *cfg, FILE *err)
{
    struct rec r = {o->out, "", 0, err};
    struct jn_buf y = JN_BUF_INIT, path = JN_BUF_INIT;
    struct jn_service *svcs = NULL;
    struct jn_msg_list *got = NULL;
    struct jn_idgen ids;
    struct jn_err e;
    json_t *list = NULL, *msgs;
    long count = 10, src = -1;
    size_t n, written = 0, skipped = 0;
    int status = 0, rc = 1, drift = 0;
    char now[32];
    time_t t = time(NULL);
    FILE *f;

    if (o->channel == NULL || o->out == NULL) {
        fprintf(err, "usage: junction ctl record --channel NAME [--count N] --out FILE "
                "[-c FILE]\n");
        return 2;
    }
    if (o->count != NULL) {
        char *end;
        count = strtol(o->count, &end, 10);
        if (*o->count == '\0' || *end != '\0' || count < 1 || count > RECORD_MAX) {
            fprintf(err, "junction ctl record: --count wants a number from 1 to %d\n",
                    RECORD_MAX);
            return 2;
        }
    }
    for (size_t i = 0; i < cfg->nchannels; i++) {
        if (cfg->channels[i].dir == JN_DIR_IN && strcmp(cfg->channels[i].name, o->channel) == 0) {
            src = (long)i;
        }
    }
    if (src < 0) {
        fprintf(err, "junction ctl record: the config has no IN channel '%s'\n", o->channel);
        return 2;
    }
    jn_buf_printf(&path, "/api/v1/messages?channel=%s&limit=%ld", o->channel, count);
    if (strpbrk(o->channel, "&?#% ") != NULL) {
        fprintf(err, "junction ctl record: a channel name with '&?#%% ' cannot be asked for\n");
        jn_buf_reset(&path);
        return 2;
    }
    list = get_json(o, path.p, &status);
    jn_buf_reset(&path);
    if (list == NULL || status != 200) {
        fprintf(err, "junction ctl record: the admin API answered %d for the message list\n",
                status);
        json_decref(list);
        return 1;
    }
    msgs = json_object_get(list, "messages");
    n = json_array_size(msgs);
    jn_err_clear(&e);
    jn_idgen_init(&ids);
    svcs = jn_calloc(cfg->nservices + 1, sizeof(*svcs));
    got = jn_calloc(cfg->nchannels + 1, sizeof(*got));
    if (svcs == NULL || got == NULL || jn_services_init(svcs, cfg->services, cfg->nservices,
                                                        &e) != 0) {
        fprintf(err, "junction ctl record: cannot start the services: %s\n",
                e.msg[0] ? e.msg : "out of memory");
        jn_free(svcs);
        svcs = NULL;
        goto out;
    }
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    jn_buf_printf(&y, "# Recorded by `junction ctl record --channel %s` on %s: the channel's "
                  "last\n# messages as received, each expecting what the config made of it "
                  "when recorded\n# (run offline as `junction test` runs it). Run: junction "
                  "test -c CONFIG THIS_FILE\ncases:\n", o->channel, now);
    /* The list is newest first: the file oldest first, as they came. */
    for (size_t i = n; i-- > 0;) {
        const char *id = jstr(json_array_get(msgs, i), "id");
        struct jn_testrun_outcome oc = {.cfg = cfg, .got = got};
        json_t *show = NULL;
        char why[160];
        struct jn_msg *m = fetch(o, id, o->channel, &show, why, sizeof(why));
        if (m == NULL) {
            fprintf(err, "junction ctl record: %s skipped: %s\n", id, why);
            skipped++;
            continue;
        }
        if (jn_testrun__route(cfg, svcs, &ids, (size_t)src, m, &oc) != 0 ||
            write_case(&r, &y, cfg, m, show, &oc, &drift) != 0) {
            jn_msg_unref(&m);
            json_decref(show);
            for (size_t k = 0; k < cfg->nchannels; k++) {
                jn_msg_list_clear(&got[k]);
            }
            jn_free(oc.dead);
            goto out;
        }
        written++;
        jn_msg_unref(&m);
        json_decref(show);
        for (size_t k = 0; k < cfg->nchannels; k++) {
            jn_msg_list_clear(&got[k]);
        }
        jn_free(oc.dead);
    }
    if (written == 0) {
        fprintf(err, "junction ctl record: no message of '%s' could be recorded (%zu listed); "
                "nothing written\n", o->channel, n);
        goto out;
    }
    f = fopen(o->out, "w");
    if (f == NULL || fwrite(y.p, 1, y.len, f) != y.len || fclose(f) != 0) {
        fprintf(err, "junction ctl record: cannot write %s: %s\n", o->out, strerror(errno));
        if (f != NULL) {
            fclose(f);
        }
        goto out;
    }
    printf("%zu case(s) written to %s%s%s\n", written, o->out, skipped ? "; skipped: " : "",
           skipped ? "see above" : "");
    if (drift) {
        fprintf(err, "junction ctl record: %d destination count(s) differ from what the broker "
                "delivered (a retry, a replay, or a config other than the running one): see "
                "the comments in %s\n", drift, o->out);
    }
    rc = 0;
out:
    if (svcs != NULL) {
        jn_services_destroy(svcs, cfg->nservices);
    }
    jn_free(svcs);
    jn_free(got);
    jn_idgen_destroy(&ids);
    jn_buf_reset(&y);
    json_decref(list);
    return rc;
}
