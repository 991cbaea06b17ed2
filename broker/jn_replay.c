/*
 * jn_replay: dead letters put back while the broker runs (jn_stats.h, jn_broker_replay).
 *
 * The dead-letter queue is read once (one read transaction) for the records that match; they
 * are then written back in chunks of REPLAY_CHUNK, each one journal transaction that deletes
 * the dead letter, writes its queue record (or, for a message dead-lettered before it had a
 * destination, an inbox record, routed again after the commit by the current routes) and the
 * "replayed" action. A crash between chunks leaves each message either still a dead letter or
 * already queued, never lost nor both; the job can be asked again for what is left. One job at
 * a time: a second one would read records the first has not deleted yet.
 *
 * Model: `junction dlq replay` (cli/jn_inspect.c, the broker stopped), done here through the
 * broker's own queues so nothing waits for a restart; Svix's "recover failed since T".
 * Loop thread only.
 */
#include <string.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_stats.h"
#include "jn_store.h"

#define REPLAY_CHUNK 500

struct replay_item {
    unsigned char key[8];      /* the dead letter's (a kept message's: none, it stays) */
    int kept;
    struct jn_qrec r;          /* owned */
};

struct jn_replay {
    uint64_t id;
    size_t matched, written, failed;
    int chunks_pending;
    int running;
    int64_t started_us, ended_us;
};

/* The inbox records of one chunk, routed once it is committed. */
struct chunk {
    struct jn_broker *b;
    size_t n;                  /* records in the chunk */
    size_t ninbox;
    struct jn_msg **msgs;      /* owned refs of the inbox ones */
    uint64_t *seqs;
};

struct scan_ctx {
    struct jn_broker *b;
    const struct jn_replay_req *req;
    struct jn_replay_result *out;
    struct replay_item *v;
    size_t n, cap;
    int collect, oom;
};

/* name is one of list's comma-separated names. */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, name, n) == 0) {
            return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static int wanted(const struct jn_replay_req *req, const struct jn_qrec *r)
{
    const struct jn_msg *m = r->msg;

    if (req->from_kept && req->route != NULL) {
        /* A kept message's route field lists every route that took it. */
        struct jn_replay_req one = *req;
        if (!in_list(r->route, req->route)) {
            return 0;
        }
        one.route = NULL;
        one.from_kept = 0;
        return wanted(&one, r);
    }

    if (req->dest != NULL && strcmp(req->dest, r->dest) != 0) {
        return 0;
    }
    if ((req->since_us != 0 && r->time_us < req->since_us) ||
        (req->until_us != 0 && r->time_us > req->until_us) ||
        (req->channel != NULL && strcmp(req->channel, m->channel ? m->channel : "") != 0) ||
        (req->route != NULL && strcmp(req->route, r->route ? r->route : "") != 0)) {
        return 0;
    }
    if (req->header != NULL) {
        const char *v = jn_msg_header_get(m, req->header);
        if (v == NULL || (req->header_value != NULL && strcmp(v, req->header_value) != 0)) {
            return 0;
        }
    }
    if (req->text != NULL && *req->text != '\0' &&
        memmem(m->payload, m->len, req->text, strlen(req->text)) == NULL) {
        return 0;
    }
    if (req->nids == 0) {
        return 1;
    }
    for (size_t i = 0; i < req->nids; i++) {
        if (strcmp(req->ids[i], r->msg->id) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A kept record as the replay sees it: no destination (routed again), its routes. Takes
 * over k's message. 0 or JN_ENOMEM. */
static int qrec_of_kept(struct jn_keptrec *k, struct jn_qrec *r)
{
    memset(r, 0, sizeof(*r));
    r->dest = jn_strdup("");
    r->error = jn_strdup("");
    r->route = k->routes;
    k->routes = NULL;
    r->time_us = k->time_us;
    r->msg = k->msg;
    k->msg = NULL;
    jn_keptrec_clear(k); /* the rest (its outputs): a replay routes the input again */
    if (r->dest == NULL || r->error == NULL || r->route == NULL) {
        jn_qrec_clear(r);
        return JN_ENOMEM;
    }
    return 0;
}

/* Counts r (owned) if it matches and, when collecting, keeps it for the writing. */
static int take(struct scan_ctx *c, const void *k, struct jn_qrec r, int kept)
{
    if (!wanted(c->req, &r)) {
        jn_qrec_clear(&r);
        return 0;
    }
    if (c->out->nsample < JN_REPLAY_SAMPLE) {
        snprintf(c->out->sample[c->out->nsample++], JN_ID_LEN + 1, "%s", r.msg->id);
    }
    c->out->count++;
    if (!c->collect) {
        jn_qrec_clear(&r);
        return 0;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct replay_item *nv = jn_realloc(c->v, cap * sizeof(*nv));
        if (nv == NULL) {
            jn_qrec_clear(&r);
            c->oom = 1;
            return 1;
        }
        c->v = nv;
        c->cap = cap;
    }
    if (k != NULL) {
        memcpy(c->v[c->n].key, k, 8);
    }
    c->v[c->n].kept = kept;
    c->v[c->n].r = r;
    c->n++;
    return 0;
}

static int visit_dlq(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct scan_ctx *c = arg;
    struct jn_qrec r;
    struct jn_err err;

    if (kl != 8 || jn_store_dlq_decode(v, vl, &r, &err) != 0) {
        c->out->undecodable++;
        return 0;
    }
    return take(c, k, r, 0);
}

/* One kept record (k: its record, owned). */
static int take_kept(struct scan_ctx *c, struct jn_keptrec *k)
{
    struct jn_qrec r;

    if (c->req->until_us != 0 && k->time_us > c->req->until_us) {
        jn_keptrec_clear(k);
        return 1; /* in receive-time order: the rest is later */
    }
    if (k->keep != JN_KEEP_ALL) {
        struct jn_qrec probe;
        /* Without its payload it cannot be sent again: counted, not replayed. */
        if (qrec_of_kept(k, &probe) == 0) {
            if (wanted(c->req, &probe)) {
                c->out->headers_only++;
            }
            jn_qrec_clear(&probe);
        }
        return 0;
    }
    if (qrec_of_kept(k, &r) != 0) {
        c->oom = 1;
        return 1;
    }
    return take(c, NULL, r, 1);
}

static int visit_kept(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct scan_ctx *c = arg;
    struct jn_keptrec kr;
    struct jn_err err;

    if (kl != 16 || jn_store_kept_decode(v, vl, &kr, &err) != 0) {
        c->out->undecodable++;
        return 0;
    }
    return take_kept(c, &kr);
}

/* The kept messages that match: by id through kept_id, else the receive-time range. */
static int scan_kept(struct jn_broker *b, struct scan_ctx *c)
{
    unsigned char from[8];

    if (c->req->nids > 0) {
        for (size_t i = 0; i < c->req->nids && !c->oom; i++) {
            struct jn_keptrec kr;
            struct jn_err err;
            int rc = jn_store_kept_get(b->journal, c->req->ids[i], &kr, &err);
            if (rc == JN_EPROTO) {
                c->out->undecodable++;
            } else if (rc == JN_ENOMEM) {
                c->oom = 1;
            } else if (rc == 0) {
                take_kept(c, &kr);
            }
        }
        return 0;
    }
    jn_be64(from, (uint64_t)(c->req->since_us > 0 ? c->req->since_us : 0));
    return jn_journal_scan_from(b->journal, JN_JDB_KEPT, from, sizeof(from), visit_kept, c);
}

struct list_ctx {
    const struct jn_replay_req *req;
    int (*visit)(void *arg, const struct jn_qrec *r);
    void *arg;
    long n;
    int stopped;
};

static int visit_list(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct list_ctx *c = arg;
    struct jn_qrec r;
    struct jn_err err;

    if (kl != 8 || jn_store_dlq_decode(v, vl, &r, &err) != 0) {
        return 0;
    }
    if (wanted(c->req, &r)) {
        c->n++;
        if (!c->stopped) {
            c->stopped = c->visit(c->arg, &r) != 0;
        }
    }
    jn_qrec_clear(&r);
    return 0;
}

long jn_broker_dead_letters(struct jn_broker *b, const struct jn_replay_req *req,
                            int (*visit)(void *arg, const struct jn_qrec *r), void *arg)
{
    struct list_ctx c = {req, visit, arg, 0, 0};

    if (b->journal == NULL ||
        jn_journal_scan(b->journal, JN_JDB_DLQ, NULL, 0, visit_list, &c) != 0) {
        return -1;
    }
    return c.n;
}

static void chunk_free(struct chunk *ch)
{
    for (size_t i = 0; i < ch->ninbox; i++) {
        jn_msg_unref(&ch->msgs[i]);
    }
    jn_free(ch->msgs);
    jn_free(ch->seqs);
    jn_free(ch);
}

static void chunk_committed(void *arg, int rc)
{
    struct chunk *ch = arg;
    struct jn_broker *b = ch->b;
    struct jn_replay *job = b->replay;

    if (rc == 0) {
        job->written += ch->n;
        /* Routed again by the current routes, from the inbox record just committed (a crash
         * before this routes it at the next start). */
        for (size_t i = 0; i < ch->ninbox && !b->freeing; i++) {
            jn_route__inbox(b, jn_broker__find_chan(b, ch->msgs[i]->channel, JN_DIR_IN),
                            ch->msgs[i], ch->seqs[i]);
        }
    } else {
        job->failed += ch->n;
    }
    if (--job->chunks_pending == 0) {
        job->running = 0;
        job->ended_us = jn_now_us();
        jn_log(JN_LOG_INFO, "replay %llu: %zu of %zu message(s) put back%s",
               (unsigned long long)job->id, job->written, job->matched,
               job->failed ? " (the journal refused the rest: dead letters stay dead letters)"
                           : "");
    }
    chunk_free(ch);
}

/* Queues r's message for OUT channel dest in t, logging "replayed" there. */
static int put_queued(struct jn_broker *b, struct jn_jtxn *t, struct jn_channel *dest,
                      const struct jn_qrec *r)
{
    uint64_t seq = jn_journal_seq(b->journal);

    if (jn_store_queue_put(t, dest->name, seq, r->msg, r->route, 1, NULL) != 0) {
        return 0;
    }
    jn_queue_add(b->queues[dest->slot], &b->adds, jn_msg_ref(r->msg), r->route, seq);
    return jn_store_log_cfg(t, jn_journal_seq(b->journal), r->msg->id, "replayed", r->route,
                            dest->name, 0, NULL, b->cfg->hash) == 0;
}

/* Writes items [from, end) as one chunk: each to its own destination, or with nto > 0 to
 * each of tos[]. */
static void write_chunk(struct jn_broker *b, struct replay_item *v, size_t from, size_t end,
                        struct jn_channel *const *tos, size_t nto)
{
    struct jn_jtxn *t = jn_jtxn_new();
    struct chunk *ch = jn_calloc(1, sizeof(*ch));
    size_t n = end - from;
    int ok = t != NULL && ch != NULL;

    if (ok) {
        ch->b = b;
        ch->n = n;
        ch->msgs = jn_calloc(n, sizeof(*ch->msgs));
        ch->seqs = jn_calloc(n, sizeof(*ch->seqs));
        ok = ch->msgs != NULL && ch->seqs != NULL;
    }
    for (size_t i = from; ok && i < end; i++) {
        struct jn_qrec *r = &v[i].r;
        if (nto > 0) {
            for (size_t k = 0; ok && k < nto; k++) {
                ok = put_queued(b, t, tos[k], r);
            }
        } else if (r->dest[0] == '\0') {
            uint64_t seq = jn_journal_seq(b->journal);
            ok = jn_store_inbox_put(t, seq, r->msg) == 0 &&
                 jn_store_log_cfg(t, jn_journal_seq(b->journal), r->msg->id, "replayed",
                                  r->route, r->dest, 0, NULL, b->cfg->hash) == 0;
            if (ok) {
                ch->msgs[ch->ninbox] = jn_msg_ref(r->msg);
                ch->seqs[ch->ninbox++] = seq;
            }
        } else {
            struct jn_channel *dest = jn_broker__find_chan(b, r->dest, JN_DIR_OUT);
            if (dest == NULL) {
                /* Its destination is no longer configured: it stays a dead letter. */
                b->replay->failed++;
                ch->n--;
                continue;
            }
            ok = put_queued(b, t, dest, r);
        }
        ok = ok && (v[i].kept || jn_jtxn_del(t, JN_JDB_DLQ, v[i].key, 8) == 0);
    }
    if (!ok) {
        /* Out of memory: nothing of this chunk is written; what was queued in memory for it
         * is dropped with the transaction (jn_commit__submit_cb answers JN_ENOMEM). */
        jn_jtxn_free(t);
        t = NULL;
    }
    b->replay->chunks_pending++;
    if (ch == NULL) {
        b->replay->failed += n;
        b->replay->chunks_pending--;
        jn_commit__submit(b, NULL);
        return;
    }
    jn_commit__submit_cb(b, t, chunk_committed, ch);
}

int jn_broker_replay(struct jn_broker *b, const struct jn_replay_req *req,
                     struct jn_replay_result *out, struct jn_err *err)
{
    struct scan_ctx c = {b, req, out, NULL, 0, 0, !req->dry_run, 0};
    struct jn_channel **tos = NULL;

    memset(out, 0, sizeof(*out));
    if (b->journal == NULL || b->stopping) {
        return jn_err_set(err, JN_ESTOPPED, "the broker is stopping");
    }
    if (req->nto > 0 && (tos = jn_calloc(req->nto, sizeof(*tos))) == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < req->nto; k++) {
        tos[k] = jn_broker__find_chan(b, req->to[k], JN_DIR_OUT);
        if (tos[k] == NULL) {
            jn_free(tos);
            return jn_err_set(err, JN_ENOENT, "to: '%s' is not an OUT channel", req->to[k]);
        }
    }
    if (!req->dry_run && b->replay != NULL && b->replay->running) {
        jn_free(tos);
        return jn_err_set(err, JN_EAGAIN, "replay %llu is still running: one at a time",
                          (unsigned long long)b->replay->id);
    }
    if ((req->from_kept ? scan_kept(b, &c)
                        : jn_journal_scan(b->journal, JN_JDB_DLQ, NULL, 0, visit_dlq, &c)) != 0 ||
        c.oom) {
        for (size_t i = 0; i < c.n; i++) {
            jn_qrec_clear(&c.v[i].r);
        }
        jn_free(c.v);
        jn_free(tos);
        return jn_err_set(err, c.oom ? JN_ENOMEM : JN_EIO, "cannot read the %s",
                          req->from_kept ? "kept messages" : "dead letters");
    }
    if (!req->dry_run && c.n > 0) {
        if (b->replay == NULL) {
            b->replay = jn_calloc(1, sizeof(*b->replay));
        }
        if (b->replay == NULL) {
            for (size_t i = 0; i < c.n; i++) {
                jn_qrec_clear(&c.v[i].r);
            }
            jn_free(c.v);
            jn_free(tos);
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        {
            uint64_t id = b->replay->id + 1;
            memset(b->replay, 0, sizeof(*b->replay));
            b->replay->id = id;
        }
        b->replay->matched = c.n;
        b->replay->running = 1;
        b->replay->started_us = jn_now_us();
        b->replay->chunks_pending = 1; /* this call's own, so no chunk ends the job early */
        for (size_t from = 0; from < c.n; from += REPLAY_CHUNK) {
            size_t end = from + REPLAY_CHUNK < c.n ? from + REPLAY_CHUNK : c.n;
            write_chunk(b, c.v, from, end, tos, req->nto);
        }
        out->job = b->replay->id;
        if (--b->replay->chunks_pending == 0) {
            b->replay->running = 0;
            b->replay->ended_us = jn_now_us();
        }
        jn_log(JN_LOG_INFO, "replay %llu: putting back %zu %s", (unsigned long long)out->job,
               c.n, req->from_kept ? "kept message(s)" : "dead letter(s)");
    }
    for (size_t i = 0; i < c.n; i++) {
        jn_qrec_clear(&c.v[i].r);
    }
    jn_free(c.v);
    jn_free(tos);
    return 0;
}

int jn_broker_replay_job(const struct jn_broker *b, uint64_t id, struct jn_replay_job *out)
{
    const struct jn_replay *j = b->replay;

    if (j == NULL || j->id != id) {
        return JN_ENOENT;
    }
    out->id = j->id;
    out->matched = j->matched;
    out->written = j->written;
    out->failed = j->failed;
    out->running = j->running;
    out->started_us = j->started_us;
    out->ended_us = j->ended_us;
    return 0;
}

void jn_replay__free(struct jn_broker *b)
{
    jn_free(b->replay);
    b->replay = NULL;
}
