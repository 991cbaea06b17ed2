/*
 * file OUT: the writer thread and `mode: file`, one file per message.
 *
 * mode: file writes each message to "<dir>/<folders>/.<name>.tmp", syncs it, renames it to
 * its name and syncs the folder, like Apache Camel's file component's tempFileName plus what a
 * broker that promises durability owes: a delivered file survives a power loss, and a reader
 * never sees half a file. The name template may spread files over subfolders
 * ("{date}/{hour}/{id}.msg"); they are made when first needed and their handles kept.
 * mode: append (channels/file_append.c) writes many messages into one file instead. Both run on
 * a writer thread per channel that makes a whole group durable at once (see "the writer").
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

/* The folders mode: file has written to since the cache was last emptied: the path relative to
 * dir ("" for dir itself) and an open handle, for openat()/renameat() and the folder fsync. */
struct out_dir {
    char *rel;  /* owned */
    int fd;
    bool used;  /* in the group being written: its fsync is due */
};

/* More folders than this are forgotten (closed) after the group that passed it. */
#define OUT_DIRS_KEEP 64

struct file_out {
    struct jn_channel *ch;
    struct jn_worker *w;        /* the writer thread (see "the writer") */
    /* Writer thread only while it runs; the loop's after it was joined. */
    struct out_dir *dirs;       /* owned, ndirs of them */
    size_t ndirs, capdirs;
    struct file_append *app;    /* mode: append; owned */
    /* mode: append: a tick posted every second so files are closed when due with no traffic */
    struct file_job *tick;      /* owned; in the writer's hands while tick_busy */
    bool tick_busy;
    struct event *tick_ev;
    unsigned char sep[256];     /* mode: append: the decoded separator */
    size_t seplen;
};

/* ---- helpers ---- */


/* ---- init, start ---- */

static void out_destroy(struct jn_channel *ch);

static int out_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct file_conf *c = ch->conf;
    struct file_out *st = jn_calloc(1, sizeof(*st));
    char why[128];

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    ch->state = st;
    if (c->mode == FILE_MODE_APPEND) {
        /* The check decoded it already; this cannot fail but for the size. */
        if (jn_file__sep_decode(c->separator ? c->separator : "\n", st->sep, sizeof(st->sep),
                                &st->seplen, why, sizeof(why)) != 0) {
            out_destroy(ch); /* a failed init is not destroyed by the broker */
            return jn_err_set(err, JN_EINVAL, "separator: %s", why);
        }
        if (c->framing == FILE_FRAMING_HL7_BATCH) {
            /* Every segment ends in CR, the last of a message too: that ends a record. */
            st->sep[0] = '\r';
            st->seplen = 1;
        }
        st->app = jn_file__append_new(ch, st->sep, st->seplen);
        st->tick = jn_calloc(1, sizeof(*st->tick));
        if (st->app == NULL || st->tick == NULL) {
            out_destroy(ch);
            return jn_err_set(err, JN_ENOMEM, "out of memory");
        }
    }
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
    } else if (!jn_file__is_dir(c->dir)) {
        /* Not fatal: it may be a mount that comes later; deliveries retry until then. */
        jn_ch_warn(ch, "%s is not a folder (mkdir: false); deliveries will be retried", c->dir);
    }
    if (writer_start(ch, err) != 0) {
        return JN_ENOMEM;
    }
    jn_ch_info(ch, "writing to %s as %s (mode: %s)%s", c->dir, c->name,
               c->mode == FILE_MODE_APPEND ? "append" : "file", c->do_fsync ? ", fsync" : "");
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
 * delivery at once (a group, like the journal's group commit). mode: file writes each to
 * "<folder>/.<name>.tmp", then makes the whole group durable with ONE syncfs() of dir's
 * filesystem, renames each into place in queue order, and syncs each folder it wrote to once.
 * Two syncs per group instead of two per file; a reader still never sees half a file.
 * mode: append writes the group with one pwritev and one fdatasync per file it goes to
 * (file_append.c). The results go back to the loop, which finishes the deliveries. The thread,
 * its lists and the way back are a jn_worker. The broker sends up to `concurrency` deliveries
 * at once (256 by default for this channel), which is what a group can hold.
 */

/* Closes every cached folder handle. */
static void dirs_forget(struct file_out *st)
{
    for (size_t i = 0; i < st->ndirs; i++) {
        close(st->dirs[i].fd);
        jn_free(st->dirs[i].rel);
    }
    st->ndirs = 0;
}

/* Drops the cached handle of one folder (it was removed under us). */
static void dirs_drop(struct file_out *st, int fd)
{
    for (size_t i = 0; i < st->ndirs; i++) {
        if (st->dirs[i].fd == fd) {
            close(fd);
            jn_free(st->dirs[i].rel);
            st->dirs[i] = st->dirs[--st->ndirs];
            return;
        }
    }
}

/* The handle of "<dir>/<rel>" (rlen bytes of rel), made and cached when new; -1 with errno. */
static int dirs_get(struct file_out *st, const struct file_conf *c, const char *rel, size_t rlen)
{
    char path[PATH_MAX];
    int fd, n;

    for (size_t i = 0; i < st->ndirs; i++) {
        if (strlen(st->dirs[i].rel) == rlen && memcmp(st->dirs[i].rel, rel, rlen) == 0) {
            st->dirs[i].used = true;
            return st->dirs[i].fd;
        }
    }
    if (jn_file__folder(c, rel, rlen) != 0) {
        return -1;
    }
    n = snprintf(path, sizeof(path), "%s%s%.*s", c->dir, rlen ? "/" : "", (int)rlen, rel);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (st->ndirs == st->capdirs) {
        size_t cap = st->capdirs ? 2 * st->capdirs : 8;
        struct out_dir *nd = jn_realloc(st->dirs, cap * sizeof(*nd));
        if (nd == NULL) {
            errno = ENOMEM;
            return -1;
        }
        st->dirs = nd;
        st->capdirs = cap;
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    st->dirs[st->ndirs].rel = jn_malloc(rlen + 1);
    if (st->dirs[st->ndirs].rel == NULL) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    memcpy(st->dirs[st->ndirs].rel, rel, rlen);
    st->dirs[st->ndirs].rel[rlen] = '\0';
    st->dirs[st->ndirs].fd = fd;
    st->dirs[st->ndirs].used = true;
    st->ndirs++;
    return fd;
}

/* j->name's folder part (rel, its length) and file name part. */
static const char *split_name(const char *name, size_t *rlen)
{
    const char *slash = strrchr(name, '/');

    *rlen = slash ? (size_t)(slash - name) : 0;
    return slash ? slash + 1 : name;
}

/* Phase 1: the temp file, written and closed (not yet synced). */
static void job_write(struct file_out *st, const struct file_conf *c, struct file_job *j)
{
    mode_t mode = (mode_t)strtoul(c->file_mode, NULL, 8); /* checked by file_mode_ok */
    size_t rlen;
    const char *base = split_name(j->name, &rlen);
    char tmp[NAME_MAX + 1];
    int dfd = -1, fd = -1;

    snprintf(tmp, sizeof(tmp), ".%s.tmp", base); /* fits: jn_file__name_check */
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        dfd = dirs_get(st, c, j->name, rlen);
        if (dfd < 0) {
            jn_file__job_fail(c, j, JN_SEND_RETRY, "cannot open folder", rlen ? j->name : NULL);
            return;
        }
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0 && errno == ENOENT) {
            dirs_drop(st, dfd); /* the folder was removed: make it again, once */
        } else if (fd < 0) {
            break;
        }
    }
    if (fd < 0) {
        jn_file__job_fail(c, j, JN_SEND_RETRY, "cannot create", j->name);
        return;
    }
    if (write_full(fd, j->msg->payload, j->msg->len) != 0) {
        int e = errno;
        close(fd);
        unlinkat(dfd, tmp, 0);
        errno = e;
        jn_file__job_fail(c, j, JN_SEND_RETRY, "write", j->name);
        return;
    }
    /* close() can report a deferred write error (NFS). */
    if (close(fd) != 0) {
        int e = errno;
        unlinkat(dfd, tmp, 0);
        errno = e;
        jn_file__job_fail(c, j, JN_SEND_RETRY, "close", j->name);
        return;
    }
    j->dirfd = dfd;
    j->stage = 1;
}

static void write_group(struct file_out *st, const struct file_conf *c, struct file_job *list)
{
    bool synced = true;

    for (size_t i = 0; i < st->ndirs; i++) {
        st->dirs[i].used = false;
    }
    for (struct file_job *j = list; j; j = jn_file__job_next(j)) {
        j->result = JN_SEND_RETRY;
        j->dirfd = -1;
        job_write(st, c, j);
    }
    if (c->do_fsync) {
        /* One sync makes every temp file of the group durable before any is renamed. The
         * folders are on dir's filesystem (a mount below dir is not supported). */
        int top = dirs_get(st, c, "", 0);
        if (top < 0 || syncfs(top) != 0) {
            synced = false;
        }
    }
    for (struct file_job *j = list; j; j = jn_file__job_next(j)) {
        size_t rlen;
        const char *base = split_name(j->name, &rlen);
        char tmp[NAME_MAX + 1];

        if (j->stage != 1) {
            continue;
        }
        snprintf(tmp, sizeof(tmp), ".%s.tmp", base);
        if (!synced) {
            jn_file__job_fail(c, j, JN_SEND_RETRY, "sync of the filesystem holding", NULL);
            unlinkat(j->dirfd, tmp, 0);
            continue;
        }
        if (renameat(j->dirfd, tmp, j->dirfd, base) != 0) {
            jn_file__job_fail(c, j, JN_SEND_RETRY, "rename into", j->name);
            unlinkat(j->dirfd, tmp, 0);
            continue;
        }
        j->stage = 2;
    }
    if (c->do_fsync) {
        for (size_t i = 0; i < st->ndirs; i++) {
            if (!st->dirs[i].used || fsync(st->dirs[i].fd) == 0) {
                continue;
            }
            /* The files are in place but their names may not survive a crash: retry, which
             * rewrites the same names. */
            for (struct file_job *j = list; j; j = jn_file__job_next(j)) {
                if (j->stage == 2 && j->dirfd == st->dirs[i].fd) {
                    jn_file__job_fail(c, j, JN_SEND_RETRY, "fsync folder", st->dirs[i].rel);
                    j->stage = 1;
                }
            }
        }
    }
    for (struct file_job *j = list; j; j = jn_file__job_next(j)) {
        if (j->stage == 2) {
            j->result = JN_SEND_OK;
        }
    }
    if (st->ndirs > OUT_DIRS_KEEP) {
        dirs_forget(st); /* never within a group: the jobs borrow the handles */
    }
}

/* The writer thread: one group. ch->conf does not change while the channel lives. */
static void writer_run(void *arg, struct jn_job *batch)
{
    const struct jn_channel *ch = arg;
    const struct file_conf *c = ch->conf;
    struct file_out *st = ch->state;
    struct file_job *list = JN_JOB_OF(batch, struct file_job, job);

    if (c->mode == FILE_MODE_APPEND) {
        jn_file__append_group(st->app, list);
    } else {
        write_group(st, c, list);
    }
}

static void job_free(struct file_job *j)
{
    jn_msg_unref(&j->msg);
    jn_free(j->reason);
    jn_free(j);
}

/* On the loop: finish the delivery of a written message. */
static void writer_done(void *arg, struct jn_job *job)
{
    struct jn_channel *ch = arg;
    struct file_out *st = ch->state;
    const struct file_conf *c = ch->conf;
    struct file_job *j = JN_JOB_OF(job, struct file_job, job);

    if (j->d == NULL) {
        st->tick_busy = false; /* the tick is ours again */
        return;
    }
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

/* mode: append, on the loop every second: the writer closes what is due (age, idle). */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct file_out *st = arg;

    (void)fd;
    (void)what;
    if (st->tick_busy || st->w == NULL) {
        return;
    }
    st->tick_busy = true;
    if (jn_worker_post(st->w, &st->tick->job) != 0) {
        st->tick_busy = false;
    }
}

static int writer_start(struct jn_channel *ch, struct jn_err *err)
{
    const struct file_conf *c = ch->conf;
    struct file_out *st = ch->state;

    st->w = jn_worker_new(ch->base, "jn-file-out", writer_run, writer_done, ch);
    if (st->w == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot start the writer thread");
    }
    if (c->mode == FILE_MODE_APPEND) {
        struct timeval tv = {1, 0};
        st->tick_ev = event_new(ch->base, -1, EV_PERSIST, tick_cb, st);
        if (st->tick_ev == NULL || event_add(st->tick_ev, &tv) != 0) {
            return jn_err_set(err, JN_ENOMEM, "cannot make the rotation timer");
        }
        /* The first tick completes what a previous run left (.part files) at once. */
        tick_cb(-1, 0, st);
    }
    return 0;
}

/* Stops the writer after the group it is writing, and finishes every delivery: written ones
 * with their result, the rest with RETRY (the broker keeps them queued). Then closes (and
 * renames) the open append files. */
static void writer_stop(struct jn_channel *ch)
{
    struct file_out *st = ch->state;
    struct jn_job *rest;

    if (st == NULL || st->w == NULL) {
        return;
    }
    if (st->tick_ev != NULL) {
        event_free(st->tick_ev);
        st->tick_ev = NULL;
    }
    rest = jn_worker_stop(st->w, 0); /* not started: taken back */
    while (rest != NULL) {
        struct file_job *j = JN_JOB_OF(rest, struct file_job, job);
        rest = rest->next;
        if (j->d == NULL) {
            st->tick_busy = false;
            continue;
        }
        jn_delivery_done(j->d, JN_SEND_RETRY, "stopping");
        job_free(j);
    }
    jn_worker_free(st->w);
    st->w = NULL;
    if (st->app != NULL) {
        jn_file__append_close_all(st->app);
    }
}

static void out_send(struct jn_channel *ch, struct jn_delivery *d)
{
    const struct file_conf *c = ch->conf;
    struct file_out *st = ch->state;
    struct jn_msg *m = jn_delivery_msg(d);
    struct jn_buf nb = JN_BUF_INIT;
    char reason[2 * PATH_MAX + 128], why[128];
    struct jn_err err;
    struct file_job *j;
    const char *name;
    size_t nl, dl;

    jn_err_clear(&err);
    if (jn_template_render(c->name, m, &nb, &err) != 0) {
        jn_buf_reset(&nb);
        jn_delivery_done(d, err.code == JN_ENOMEM ? JN_SEND_RETRY : JN_SEND_REJECT, err.msg);
        return;
    }
    name = nb.p ? nb.p : "";
    if (jn_file__name_check(name, why, sizeof(why)) != 0) {
        /* The same message would fail the same way every time. */
        snprintf(reason, sizeof(reason),
                 "name template '%s' gave '%.1024s', which is not a file name: it %s", c->name,
                 name, why);
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    nl = strlen(name);
    dl = strlen(c->dir);
    if (dl + nl + JN_FILE__PART_EXTRA + 2 > PATH_MAX) {
        /* "<dir>/<folders>/.<name>.part" and its NUL must fit in PATH_MAX. */
        snprintf(reason, sizeof(reason), "path %s/%.64s...: %s", c->dir, name,
                 strerror(ENAMETOOLONG));
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_REJECT, reason);
        return;
    }
    j = jn_malloc(sizeof(*j) + nl + 1);
    if (j == NULL || st == NULL || st->w == NULL) {
        jn_free(j);
        jn_buf_reset(&nb);
        jn_delivery_done(d, JN_SEND_RETRY, j ? "the writer is not running" : "out of memory");
        return;
    }
    memset(j, 0, sizeof(*j));
    j->d = d;
    j->msg = jn_msg_ref(m);
    j->dirfd = -1;
    j->result = JN_SEND_RETRY;
    j->name = j->buf;
    memcpy(j->name, name, nl + 1);
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
    dirs_forget(st);
    jn_free(st->dirs);
    jn_file__append_free(st->app);
    jn_free(st->tick);
    jn_free(st);
    ch->state = NULL;
}

const struct jn_out_def jn_file__out = {
    .init = out_init,
    .start = out_start,     /* creates the folder; starts the writer thread (and the tick) */
    .send = out_send,       /* to the writer thread: a group per wake-up, synced at once */
    .destroy = out_destroy, /* the writer finishes its group; the rest -> RETRY; files closed */
};
