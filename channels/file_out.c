/*
 * file OUT: one file per message.
 *
 * Writes each message to "<dir>/.<name>.tmp", syncs it, renames it to "<dir>/<name>" and syncs
 * the folder, like Apache Camel's file component's tempFileName plus what a broker that
 * promises durability owes: a delivered file survives a power loss, and a reader never sees
 * half a file. The writes run on a writer thread per channel that syncs a whole group of files
 * at once (see "the writer").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/event.h>

#include "file_int.h"
#include "jn_buf.h"
#include "jn_fs.h"
#include "jn_mem.h"
#include "jn_worker.h"

struct file_out {
    struct jn_channel *ch;
    struct jn_worker *w; /* the writer thread (see "the writer") */
};

/* ---- helpers ---- */

static bool is_dir(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* ---- init, start ---- */

static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    struct file_out *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    ch->state = st;
    return 0;
}

static int writer_start(struct jn_channel *ch, struct jn_err *err);

static int out_start(struct jn_channel *ch, struct jn_err *err)
{
    const struct file_conf *c = ch->conf;

    if (c->do_mkdir) {
        if (jn_fs_mkdir_p(c->dir, 0755) != 0) {
            return jn_err_set(err, JN_EIO, "cannot create folder %s: %s", c->dir,
                              strerror(errno));
        }
    } else if (!is_dir(c->dir)) {
        /* Not fatal: it may be a mount that comes later; deliveries retry until then. */
        jn_ch_warn(ch, "%s is not a folder (mkdir: false); deliveries will be retried", c->dir);
    }
    if (writer_start(ch, err) != 0) {
        return JN_ENOMEM;
    }
    jn_ch_info(ch, "writing to %s as %s%s", c->dir, c->name, c->do_fsync ? ", fsync" : "");
    return 0;
}

/* Writes len bytes of p to fd; 0 or -1 with errno. */
static int write_full(int fd, const unsigned char *p, size_t len)
{
    size_t off = 0;

    while (off < len) {
        size_t chunk = len - off < (size_t)SSIZE_MAX ? len - off : (size_t)SSIZE_MAX;
        ssize_t w = write(fd, p + off, chunk);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (w == 0) {
            errno = EIO; /* a regular file never takes 0 bytes without an error */
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/*
 * The writer.
 *
 * Disk writes and fsyncs must not stop the loop, and one fsync per file caps a folder at a few
 * hundred files a second. So each channel has a writer thread that takes every pending
 * file at once (a group, like the journal's group commit): it writes each to "<dir>/.<name>.tmp",
 * then makes the whole group durable with ONE syncfs() of the folder's filesystem, renames
 * each into place in queue order, and syncs the folder once. Two syncs per group instead of
 * two per file; a reader still never sees half a file. The results go back to the loop, which
 * finishes the deliveries. The thread, its lists and the way back are a jn_worker. The broker
 * sends up to `concurrency` files at once (256 by default for this channel), which is what a
 * group can hold.
 */

/* One allocation per file: the job, then its three path strings. It is small on purpose (the
 * loop makes one per delivery); the reason is allocated only when something fails. */
struct out_job {
    struct jn_job job;         /* in the writer's batch */
    struct jn_delivery *d;
    struct jn_msg *msg;        /* a reference of our own: the payload is read on the writer */
    char *name;                /* the file's name, in buf */
    char *tmp;                 /* "<dir>/.<name>.tmp", in buf */
    char *dst;                 /* "<dir>/<name>", in buf */
    int stage;                 /* 0 new, 1 written, 2 renamed (done) */
    enum jn_send_result result;
    char *reason;              /* owned, or NULL: set with a failing result */
    char buf[];
};

/* The next job of a writer batch, or NULL. */
static struct out_job *job_next(struct out_job *j)
{
    return j->job.next != NULL ? JN_JOB_OF(j->job.next, struct out_job, job) : NULL;
}

static void job_fail(struct out_job *j, enum jn_send_result r, const char *what, const char *path)
{
    int e = errno;
    const char *es = strerror(e);
    int n = snprintf(NULL, 0, "%s %s: %s", what, path, es);

    jn_free(j->reason);
    j->reason = n >= 0 ? jn_malloc((size_t)n + 1) : NULL;
    if (j->reason != NULL) {
        snprintf(j->reason, (size_t)n + 1, "%s %s: %s", what, path, es);
    }
    j->result = e == ENAMETOOLONG ? JN_SEND_REJECT : r;
}

/* Phase 1: the temp file, written and closed (not yet synced). */
static void job_write(const struct file_conf *c, struct out_job *j)
{
    mode_t mode = (mode_t)strtoul(c->file_mode, NULL, 8); /* checked by file_mode_ok */
    int fd = open(j->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    if (fd < 0 && errno == ENOENT && c->do_mkdir && jn_fs_mkdir_p(c->dir, 0755) == 0) {
        fd = open(j->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode); /* dir was removed */
    }
    if (fd < 0) {
        job_fail(j, JN_SEND_RETRY, "cannot create", j->tmp);
        return;
    }
    if (write_full(fd, j->msg->payload, j->msg->len) != 0) {
        int e = errno;
        close(fd);
        unlink(j->tmp);
        errno = e;
        job_fail(j, JN_SEND_RETRY, "write", j->tmp);
        return;
    }
    /* close() can report a deferred write error (NFS). */
    if (close(fd) != 0) {
        int e = errno;
        unlink(j->tmp);
        errno = e;
        job_fail(j, JN_SEND_RETRY, "close", j->tmp);
        return;
    }
    j->stage = 1;
}

static void write_group(const struct file_conf *c, struct out_job *list)
{
    int dirfd = -1;
    bool synced = true;

    for (struct out_job *j = list; j; j = job_next(j)) {
        j->result = JN_SEND_RETRY;
        job_write(c, j);
    }
    if (c->do_fsync) {
        /* One sync makes every temp file of the group durable before any is renamed. */
        dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0 || syncfs(dirfd) != 0) {
            synced = false;
        }
    }
    for (struct out_job *j = list; j; j = job_next(j)) {
        if (j->stage != 1) {
            continue;
        }
        if (!synced) {
            job_fail(j, JN_SEND_RETRY, "sync of the filesystem holding", c->dir);
            unlink(j->tmp);
            continue;
        }
        if (rename(j->tmp, j->dst) != 0) {
            job_fail(j, JN_SEND_RETRY, "rename", j->tmp);
            unlink(j->tmp);
            continue;
        }
        j->stage = 2;
    }
    if (c->do_fsync && dirfd >= 0 && fsync(dirfd) != 0) {
        /* The files are in place but their names may not survive a crash: retry, which
         * rewrites the same names. */
        for (struct out_job *j = list; j; j = job_next(j)) {
            if (j->stage == 2) {
                job_fail(j, JN_SEND_RETRY, "fsync folder", c->dir);
                j->stage = 1;
            }
        }
    }
    if (dirfd >= 0) {
        close(dirfd);
    }
    for (struct out_job *j = list; j; j = job_next(j)) {
        if (j->stage == 2) {
            j->result = JN_SEND_OK;
        }
    }
}

/* The writer thread: one group. ch->conf does not change while the channel lives. */
static void writer_run(void *arg, struct jn_job *batch)
{
    const struct jn_channel *ch = arg;

    write_group(ch->conf, JN_JOB_OF(batch, struct out_job, job));
}

static void job_free(struct out_job *j)
{
    jn_msg_unref(&j->msg);
    jn_free(j->reason);
    jn_free(j);
}

/* On the loop: finish the delivery of a written file. */
static void writer_done(void *arg, struct jn_job *job)
{
    struct jn_channel *ch = arg;
    const struct file_conf *c = ch->conf;
    struct out_job *j = JN_JOB_OF(job, struct out_job, job);

    if (j->result == JN_SEND_OK) {
        jn_ch_debug(ch, "msg=%s written to %s/%s (%zu bytes)", j->msg->id, c->dir, j->name,
                    j->msg->len);
        jn_delivery_done(j->d, JN_SEND_OK, NULL);
    } else {
        const char *why = j->reason ? j->reason : "writing the file failed (out of memory for "
                                                  "the reason)";
        jn_ch_debug(ch, "msg=%s %s", j->msg->id, why);
        jn_delivery_done(j->d, j->result, why);
    }
    job_free(j);
}

static int writer_start(struct jn_channel *ch, struct jn_err *err)
{
    struct file_out *st = ch->state;

    st->w = jn_worker_new(ch->base, "jn-file-out", writer_run, writer_done, ch);
    if (st->w == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot start the writer thread");
    }
    return 0;
}

/* Stops the writer after the group it is writing, and finishes every delivery: written ones
 * with their result, the rest with RETRY (the broker keeps them queued). */
static void writer_stop(struct jn_channel *ch)
{
    struct file_out *st = ch->state;
    struct jn_job *rest;

    if (st == NULL || st->w == NULL) {
        return;
    }
    rest = jn_worker_stop(st->w, 0); /* not started: taken back */
    while (rest != NULL) {
        struct out_job *j = JN_JOB_OF(rest, struct out_job, job);
        rest = rest->next;
        jn_delivery_done(j->d, JN_SEND_RETRY, "stopping");
        job_free(j);
    }
    jn_worker_free(st->w);
    st->w = NULL;
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    const struct file_conf *c = ch->conf;
    struct file_out *st = ch->state;
    struct jn_msg *m = jn_delivery_msg(d);
    struct jn_buf nb = JN_BUF_INIT;
    char reason[2 * PATH_MAX + 128];
    struct jn_err err;
    struct out_job *j;
    const char *name;
    size_t nl, dl;

    jn_err_clear(&err);
    if (jn_template_render(c->name, m, &nb, &err) != 0) {
        jn_buf_reset(&nb);
        jn_delivery_done(d, err.code == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT, err.msg);
        return;
    }
    name = nb.p ? nb.p : "";
    if (name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0) {
        snprintf(reason, sizeof(reason), "name template '%s' gave '%s', which is not a file name "
                 "(empty, '.', '..' or containing '/')", c->name, name);
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    if (strlen(name) + 5 > NAME_MAX) {
        /* ".<name>.tmp" must fit too. The same message would fail the same way every time. */
        snprintf(reason, sizeof(reason), "file name '%.64s...' is %zu bytes, over %d", name,
                 strlen(name), NAME_MAX - 5);
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    nl = strlen(name);
    dl = strlen(c->dir);
    if (dl + nl + 7 > PATH_MAX) {
        /* "<dir>/.<name>.tmp" and its NUL must fit in PATH_MAX, every time for this message. */
        snprintf(reason, sizeof(reason), "path %s: %s", c->dir, strerror(ENAMETOOLONG));
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    /* name, tmp and dst follow the struct: nl + 1, dl + nl + 7 and dl + nl + 2 bytes. */
    j = jn_malloc(sizeof(*j) + 2 * dl + 3 * nl + 10);
    if (j == NULL || st == NULL || st->w == NULL) {
        jn_free(j);
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_RETRY, j ? "the writer is not running" : "out of memory");
        return;
    }
    j->d = d;
    j->msg = jn_msg_ref(m);
    j->stage = 0;
    j->result = JN_SEND_RETRY;
    j->reason = NULL;
    j->name = j->buf;
    memcpy(j->name, name, nl + 1);
    j->tmp = j->name + nl + 1;
    memcpy(j->tmp, c->dir, dl);
    memcpy(j->tmp + dl, "/.", 2);
    memcpy(j->tmp + dl + 2, name, nl);
    memcpy(j->tmp + dl + 2 + nl, ".tmp", 5);
    j->dst = j->tmp + dl + nl + 7;
    memcpy(j->dst, c->dir, dl);
    j->dst[dl] = '/';
    memcpy(j->dst + dl + 1, name, nl + 1);
    jn_buf_reset(&nb);
    if (jn_worker_post(st->w, &j->job) != 0) {
        job_free(j);
        jn_delivery_done(d, JN_SEND_RETRY, "the writer is not running");
    }
}

/* ---- life cycle ---- */

static void out_destroy(struct jn_channel *ch)
{
    struct file_out *st = ch->state;

    if (st == NULL) {
        return;
    }
    writer_stop(ch);
    jn_free(st);
    ch->state = NULL;
}

const struct jn_out_def jn_file__out = {
    .init = out_init,
    .start = out_start,     /* creates the folder; starts the writer thread */
    .send = out_send,       /* to the writer thread: temp files, one sync, renames */
    .destroy = out_destroy, /* the writer finishes its group; the rest -> RETRY */
};
