/*
 * jn_reply: request-reply's `response_via:`: a destination's answer goes through services
 * before the IN channel returns it to its caller (HTTP IN's respond, docs/channels.md).
 *
 * The answer (http_out.c's form: "<status>\n", "Name: value\n" lines, "\n", the body) becomes
 * a message: payload = the body, headers = the answer's headers plus http-status, id = the
 * message's, channel = the IN channel. Services never run on the loop, so the transform is a
 * job of a worker of its own (jn_worker.h, thread "jn-reply", made at the first use); the
 * ticket stays on the loop and is held (pending) until the job is back, so a timeout or a stop
 * meanwhile only forgets or answers it, and the job's done releases it. What the last service
 * gives is turned back into an answer: http-status (100..599) is the status, the other headers
 * but the hop-by-hop ones go out as they are.
 *
 * Threads: jn_reply__post and done on the loop; reply_run on the worker's thread reads only
 * its job and the job's generation (its services, fixed once made; held: gen->jobs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jn_broker_int.h"
#include "jn_log.h"
#include "jn_mem.h"
#include "jn_service.h"
#include "jn_worker.h"

struct reply_job {
    struct jn_job job;
    struct jn_ticket *t;    /* loop only: never touched by reply_run */
    struct jn_gen *gen;     /* held: gen->jobs */
    size_t *svc;            /* indexes into gen->svcs, nsvc of them */
    size_t nsvc;
    char *channel;          /* owned copy of the IN channel's name */
    char id[JN_ID_LEN + 1];
    struct jn_buf in;       /* the answer as it came */
    struct jn_buf out;      /* run: the answer after the services */
    char *why;              /* run: the reason it failed (owned), or NULL */
};

/* Hop-by-hop and framing headers: never taken from a service's message into the answer. */
static int hop_header(const char *name)
{
    static const char *const hop[] = {"http-status", "connection", "keep-alive",
                                      "transfer-encoding", "content-length", "date", "server",
                                      NULL};

    for (size_t i = 0; hop[i] != NULL; i++) {
        if (strcasecmp(name, hop[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The job's answer as a message, or NULL (why set). */
static struct jn_msg *answer_msg(const struct reply_job *j, char **why)
{
    const char *a = j->in.p ? j->in.p : "", *end = a + j->in.len, *p = a, *hend;
    char status[8];
    size_t sl = 0;
    struct jn_msg *m;

    while (p < end && *p >= '0' && *p <= '9' && sl + 1 < sizeof(status)) {
        status[sl++] = *p++;
    }
    status[sl] = '\0';
    if (sl == 0 || p >= end || *p != '\n') {
        *why = jn_strdup("response_via: the destination's answer could not be read");
        return NULL;
    }
    /* The headers are p+1..hend, the body after the empty line that ends them. */
    for (hend = p; hend + 1 < end && !(hend[0] == '\n' && hend[1] == '\n'); hend++) {
    }
    m = hend + 1 < end ? jn_msg_new(j->channel, hend + 2, (size_t)(end - hend - 2))
                       : jn_msg_new(j->channel, "", 0);
    if (m == NULL) {
        *why = jn_strdup("response_via: out of memory");
        return NULL;
    }
    memcpy(m->id, j->id, sizeof(m->id));
    if (jn_msg_header_set(m, "http-status", status) != 0) {
        goto oom;
    }
    for (p++; p < hend;) {
        const char *e = memchr(p, '\n', (size_t)(hend - p));
        const char *colon, *v;
        char name[256];
        if (e == NULL) {
            e = hend;
        }
        colon = memchr(p, ':', (size_t)(e - p));
        if (colon != NULL && colon > p && (size_t)(colon - p) < sizeof(name)) {
            memcpy(name, p, (size_t)(colon - p));
            name[colon - p] = '\0';
            for (v = colon + 1; v < e && *v == ' '; v++) {
            }
            if (jn_msg_header_addn(m, name, v, (size_t)(e - v)) != 0) {
                goto oom;
            }
        }
        p = e + 1;
    }
    return m;
oom:
    jn_msg_unref(&m);
    *why = jn_strdup("response_via: out of memory");
    return NULL;
}

/* m as an answer in out (the form answer_msg reads). 0, or -1 with why set. */
static int msg_answer(const struct jn_msg *m, struct jn_buf *out, char **why)
{
    const char *st = jn_msg_header_get(m, "http-status");
    char *endp = NULL;
    long code = st ? strtol(st, &endp, 10) : 200;

    if (st != NULL && (endp == st || *endp != '\0' || code < 100 || code > 599)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "response_via: http-status '%.40s' is not a status "
                 "100..599", st);
        *why = jn_strdup(msg);
        return -1;
    }
    jn_buf_printf(out, "%ld\n", code);
    for (size_t i = 0; i < m->nhdrs; i++) {
        const struct jn_header *h = &m->hdrs[i];
        if (h->name == NULL || hop_header(h->name) || strchr(h->name, '\n') != NULL ||
            strchr(h->value, '\n') != NULL) {
            continue;
        }
        jn_buf_printf(out, "%s: %s\n", h->name, h->value);
    }
    jn_buf_puts(out, "\n");
    jn_buf_append(out, m->payload ? (const char *)m->payload : "", m->len);
    if (out->p == NULL) {
        *why = jn_strdup("response_via: out of memory");
        return -1;
    }
    return 0;
}

/* Worker thread: the job's answer through its services. */
static void reply_one(struct reply_job *j)
{
    struct jn_msg *cur = answer_msg(j, &j->why);
    char msg[JN_ERR_MSG_MAX + 200];

    for (size_t i = 0; cur != NULL && i < j->nsvc; i++) {
        const struct jn_service *s = &j->gen->svcs[j->svc[i]];
        struct jn_msg_list next = {0};
        struct jn_err e;
        int rc;
        jn_err_clear(&e);
        rc = s->def->transform(s, cur, &next, &e);
        jn_msg_unref(&cur);
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "response_via: service '%s' (%s) failed: %s", s->name,
                     s->def->name, e.msg[0] ? e.msg : jn_strerror(rc));
        } else if (next.n != 1) {
            snprintf(msg, sizeof(msg), "response_via: service '%s' (%s) %s", s->name,
                     s->def->name, next.n == 0 ? "dropped the answer"
                                               : "gave several messages, expected one answer");
        } else {
            cur = jn_msg_ref(next.v[0]);
        }
        jn_msg_list_clear(&next);
        if (cur == NULL) {
            j->why = jn_strdup(msg);
        }
    }
    if (cur != NULL) {
        (void)msg_answer(cur, &j->out, &j->why);
        jn_msg_unref(&cur);
    }
    if (j->why == NULL && j->out.p == NULL) {
        j->why = jn_strdup("response_via: out of memory");
    }
}

static void reply_run(void *arg, struct jn_job *batch)
{
    (void)arg;
    for (struct jn_job *jb = batch; jb != NULL; jb = jb->next) {
        reply_one(JN_JOB_OF(jb, struct reply_job, job));
    }
}

static void job_free(struct jn_broker *b, struct reply_job *j)
{
    if (j->gen != NULL) {
        jn_gen__release(b, j->gen);
    }
    jn_buf_reset(&j->in);
    jn_buf_reset(&j->out);
    jn_free(j->why);
    jn_free(j->svc);
    jn_free(j->channel);
    jn_free(j);
}

/* Loop: the job is back (ran: with its answer or why), or not run (the broker is freeing). */
static void job_end(struct jn_broker *b, struct reply_job *j, int ran)
{
    struct jn_ticket *t = j->t;
    jn_outcome_fn fn = t->outcome;

    b->replies_in_flight--;
    t->pending--;
    if (fn != NULL) {
        jn_track__detach(t);
        if (!ran || b->freeing) {
            fn(t->arg, JN_SEND_RETRY, "broker is stopping", NULL, 0);
        } else if (j->why != NULL) {
            jn_log(JN_LOG_WARN, "msg=%s %s: the caller is answered 502", t->id, j->why);
            fn(t->arg, JN_SEND_REJECT, j->why, NULL, 0);
        } else {
            fn(t->arg, t->result, t->reason, j->out.p, j->out.len);
        }
    }
    if (t->pending == 0) {
        jn_track__free(t);
    }
    job_free(b, j);
}

static void reply_done(void *arg, struct jn_job *jb)
{
    job_end(arg, JN_JOB_OF(jb, struct reply_job, job), 1);
}

int jn_reply__post(struct jn_ticket *t)
{
    struct jn_broker *b = t->b;
    struct jn_gen *gen = b->gen;
    const struct jn_config *cfg = gen->cfg;
    struct reply_job *j;
    char why[300] = "";

    if (b->freeing) {
        return JN_ESTOPPED;
    }
    if (b->replier == NULL &&
        (b->replier = jn_worker_new(b->base, "jn-reply", reply_run, reply_done, b)) == NULL) {
        return JN_ENOMEM;
    }
    j = jn_calloc(1, sizeof(*j));
    if (j == NULL || (j->svc = jn_calloc(t->reply_via->n, sizeof(*j->svc))) == NULL ||
        (j->channel = jn_strdup(t->ch->name)) == NULL ||
        jn_buf_append(&j->in, t->reply, t->reply_len) != 0) {
        if (j != NULL) {
            jn_buf_reset(&j->in);
            jn_free(j->channel);
            jn_free(j->svc);
            jn_free(j);
        }
        return JN_ENOMEM;
    }
    for (size_t i = 0; i < t->reply_via->n; i++) {
        size_t k = 0;
        while (k < cfg->nservices && strcmp(cfg->services[k].name, t->reply_via->v[i]) != 0) {
            k++;
        }
        if (k == cfg->nservices && why[0] == '\0') {
            /* Checked at load; a reload may have taken it away since the request came. */
            snprintf(why, sizeof(why), "response_via: service '%.100s' is not in the config",
                     t->reply_via->v[i]);
        }
        j->svc[i] = k;
    }
    j->nsvc = why[0] ? 0 : t->reply_via->n;
    j->why = why[0] ? jn_strdup(why) : NULL;
    memcpy(j->id, t->id, sizeof(j->id));
    j->t = t;
    j->gen = gen;
    gen->jobs++;
    t->via_busy = 1;
    t->pending++;
    b->replies_in_flight++;
    if (jn_worker_post(b->replier, &j->job) != 0) {
        gen->jobs--;
        t->pending--;
        t->via_busy = 0;
        b->replies_in_flight--;
        j->gen = NULL;
        job_free(b, j);
        return JN_ESTOPPED;
    }
    return 0;
}

void jn_reply__free(struct jn_broker *b)
{
    struct jn_job *left;

    if (b->replier == NULL) {
        return;
    }
    left = jn_worker_stop(b->replier, 0);
    while (left != NULL) {
        struct reply_job *j = JN_JOB_OF(left, struct reply_job, job);
        left = left->next;
        job_end(b, j, 0);
    }
    jn_worker_free(b->replier);
    b->replier = NULL;
}
