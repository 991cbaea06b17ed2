/*
 * file IN: a drop folder.
 *
 * Polls a folder and turns each finished file (or each non-empty line of it) into a message.
 * A file is moved to done/ only once the broker has made every one of its messages durable, and
 * to error/ with a `<name>.reason` beside it when its content is refused. Modelled on Apache
 * Camel's file component (done and error folders, the ".tmp"-then-rename convention for
 * writers, `readLock=changed` as our `settle`) and Fluent Bit's in_tail (a poll timer on the
 * engine's loop, a record per file in flight).
 *
 * Threads: runs on the broker's loop thread, including its disk reads. That breaks the "never
 * block the loop" rule on purpose for now: local files are fast, and each poll is bounded
 * (FILE_MAX_IN_FLIGHT files, FILE_POLL_BUDGET bytes).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "file_int.h"
#include "jn_fs.h"
#include "jn_mem.h"
#include "jn_time.h"

/* Files being ingested at once, per channel: bounds memory and the callbacks outstanding. */
#define FILE_MAX_IN_FLIGHT 64
/* Bytes read per poll before the loop gets a turn (the rest is read on an immediate re-poll). */
#define FILE_POLL_BUDGET (64ULL << 20)

/* One message of a file in flight; its address is the jn_ingest() callback argument. */
struct file_part {
    struct file_inflight *f;
    struct jn_ticket *t; /* NULL once the callback has come */
};

/* A file whose messages have been handed to jn_ingest() and not all answered yet. */
struct file_inflight {
    struct file_inflight *next;
    struct jn_channel *ch;
    char *name;
    dev_t dev; /* identity when read (after following a symlink): we move only that file */
    ino_t ino;
    size_t nparts;
    size_t pending;
    bool refused;               /* some message got a (retryable) refusal */
    char id[JN_ID_LEN + 1];     /* the first message's id, for a name clash in done/ */
    struct file_part parts[];
};

/* A regular file as a listing saw it. */
struct file_seen {
    char *name;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int64_t since_ms; /* monotonic time since which size and mtime have not changed */
};

/* A file we could not move after it was dealt with: not read again while it is unchanged, or
 * an accepted file would be ingested again on every poll. */
struct file_parked {
    struct file_parked *next;
    struct file_seen id;
    unsigned gen; /* the last poll that listed it */
};

/* A name a debug line has been logged for (a dangling symlink): said once, not every poll. */
struct file_note {
    struct file_note *next;
    char *name;
    unsigned gen;
};
struct file_state {
    struct jn_channel *ch;
    char *done_dir;
    char *error_dir;
    struct event *timer;
    bool stopped;
    bool dir_failing;           /* the folder could not be listed last time (log once) */
    struct file_inflight *inflight;
    size_t ninflight;
    struct file_seen *seen;     /* settle > 0: the last listing, sorted by name */
    size_t nseen;
    struct file_parked *parked;
    struct file_note *notes;
    unsigned gen;               /* counts polls, to prune parked and notes */
};

/* ---- helpers ---- */

/* "a" + "/" + "b" into out; -1 with errno ENAMETOOLONG when it does not fit. */
static int path_join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);

    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* "" -> "<dir>/<sub>", else a copy; NULL when out of memory. */
static char *resolve_dir(const char *dir, const char *opt, const char *sub)
{
    size_t n;
    char *s;

    if (opt != NULL && opt[0] != '\0') {
        return jn_strdup(opt);
    }
    n = strlen(dir) + strlen(sub) + 2;
    s = jn_malloc(n);
    if (s != NULL) {
        snprintf(s, n, "%s/%s", dir, sub);
    }
    return s;
}

/* ---- init ---- */

static int in_init(struct jn_channel *ch, struct jn_err *err)
{
    const struct file_conf *c = ch->conf;
    struct file_state *st = jn_calloc(1, sizeof(*st));

    if (st == NULL) {
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    st->ch = ch;
    st->done_dir = resolve_dir(c->dir, c->done_dir, "done");
    st->error_dir = resolve_dir(c->dir, c->error_dir, "error");
    if (st->done_dir == NULL || st->error_dir == NULL) {
        jn_free(st->done_dir);
        jn_free(st->error_dir);
        jn_free(st);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    ch->state = st;
    return 0;
}

/* ---- bookkeeping ---- */

static struct file_inflight *inflight_find(struct file_state *st, const char *name)
{
    for (struct file_inflight *f = st->inflight; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

static void inflight_unlink(struct file_state *st, struct file_inflight *f)
{
    for (struct file_inflight **pp = &st->inflight; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            st->ninflight--;
            return;
        }
    }
}

static void inflight_free(struct file_inflight *f)
{
    if (f != NULL) {
        jn_free(f->name);
        jn_free(f);
    }
}

static bool seen_same(const struct file_seen *a, const struct stat *sb)
{
    return a->dev == sb->st_dev && a->ino == sb->st_ino && a->size == sb->st_size &&
           a->mtime.tv_sec == sb->st_mtim.tv_sec && a->mtime.tv_nsec == sb->st_mtim.tv_nsec;
}

static void seen_fill(struct file_seen *s, const struct stat *sb)
{
    s->dev = sb->st_dev;
    s->ino = sb->st_ino;
    s->size = sb->st_size;
    s->mtime = sb->st_mtim;
}

static void seen_free(struct file_seen *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jn_free(v[i].name);
    }
    jn_free(v);
}

/* Parks name (as it is now on disk) so it is skipped until it changes. */
static void park(struct file_state *st, const char *path, const char *name)
{
    struct stat sb;
    struct file_parked *p;

    if (stat(path, &sb) != 0) {
        return; /* gone: nothing to skip */
    }
    p = jn_calloc(1, sizeof(*p));
    if (p == NULL || (p->id.name = jn_strdup(name)) == NULL) {
        jn_free(p);
        jn_ch_error(st->ch, "%s: out of memory while parking it; it may be read again", name);
        return;
    }
    seen_fill(&p->id, &sb);
    p->gen = st->gen;
    p->next = st->parked;
    st->parked = p;
}

/* true when name is parked and unchanged; a changed file is unparked (it is new content). */
static bool parked_skip(struct file_state *st, const char *name, const struct stat *sb)
{
    for (struct file_parked **pp = &st->parked; *pp != NULL; pp = &(*pp)->next) {
        struct file_parked *p = *pp;
        if (strcmp(p->id.name, name) != 0) {
            continue;
        }
        if (seen_same(&p->id, sb)) {
            p->gen = st->gen;
            return true;
        }
        *pp = p->next;
        jn_free(p->id.name);
        jn_free(p);
        return false;
    }
    return false;
}

/* true the first time name is noted (log then), false while it stays listed. */
static bool note_once(struct file_state *st, const char *name)
{
    struct file_note *n;

    for (n = st->notes; n != NULL; n = n->next) {
        if (strcmp(n->name, name) == 0) {
            n->gen = st->gen;
            return false;
        }
    }
    n = jn_calloc(1, sizeof(*n));
    if (n == NULL || (n->name = jn_strdup(name)) == NULL) {
        jn_free(n);
        return true; /* cannot remember: log again next time, no harm */
    }
    n->gen = st->gen;
    n->next = st->notes;
    st->notes = n;
    return true;
}

static void notes_prune(struct file_state *st, bool all)
{
    struct file_note **pp = &st->notes;

    while (*pp != NULL) {
        struct file_note *n = *pp;
        if (all || n->gen != st->gen) {
            *pp = n->next;
            jn_free(n->name);
            jn_free(n);
        } else {
            pp = &n->next;
        }
    }
}

/* Forgets parked files the last complete listing did not show. */
static void parked_prune(struct file_state *st)
{
    struct file_parked **pp = &st->parked;

    while (*pp != NULL) {
        struct file_parked *p = *pp;
        if (p->gen != st->gen) {
            *pp = p->next;
            jn_free(p->id.name);
            jn_free(p);
        } else {
            pp = &p->next;
        }
    }
}

/*
 * Moves <from>/<name> to <to>/<name>, or to <to>/<name>.<id> when that name is taken (never
 * overwriting). Only if <from>/<name> is still the file (dev, ino) we read. The name used goes
 * to final. 0, or -1 with errno (ESTALE: it is another file now).
 */
static int move_noreplace(const char *from, const char *name, dev_t dev, ino_t ino,
                          const char *to, const char *id, char *final, size_t cap)
{
    char src[PATH_MAX], dst[PATH_MAX];
    struct stat sb;

    if (path_join(src, sizeof(src), from, name) != 0) {
        return -1;
    }
    if (stat(src, &sb) != 0) {
        return -1;
    }
    if (sb.st_dev != dev || sb.st_ino != ino) {
        errno = ESTALE;
        return -1;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int n = attempt == 0 ? snprintf(final, cap, "%s", name)
                             : snprintf(final, cap, "%s.%s", name, id);
        if (n < 0 || (size_t)n >= cap || path_join(dst, sizeof(dst), to, final) != 0) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) {
            return 0;
        }
        if (errno == EINVAL || errno == ENOSYS) {
            /* A filesystem without RENAME_NOREPLACE: check, then rename (racy, but only
             * against someone else writing into our done/ or error/). */
            struct stat tb;
            if (lstat(dst, &tb) == 0) {
                continue;
            }
            return rename(src, dst);
        }
        if (errno != EEXIST) {
            return -1;
        }
    }
    /* <name>.<id> exists too: ids are unique, so that is the same file moved before. */
    return rename(src, dst);
}

/* ---- refusing a file ---- */

static void write_reason(struct jn_channel *ch, const char *dir, const char *final,
                         const char *reason)
{
    char path[PATH_MAX], line[JN_ERR_MSG_MAX + 2];
    size_t n, off = 0;
    int fd, n1;

    n1 = snprintf(path, sizeof(path), "%s/%s.reason", dir, final);
    if (n1 < 0 || (size_t)n1 >= sizeof(path)) {
        jn_ch_warn(ch, "%s: reason file name too long; reason: %s", final, reason);
        return;
    }
    /* One line, whatever the file name or errno text held. */
    n = (size_t)snprintf(line, sizeof(line) - 1, "%s", reason);
    if (n > sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\n' || line[i] == '\r') {
            line[i] = ' ';
        }
    }
    line[n++] = '\n';
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        jn_ch_warn(ch, "cannot write %s: %s", path, strerror(errno));
        return;
    }
    while (off < n) {
        ssize_t w = write(fd, line + off, n - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            jn_ch_warn(ch, "cannot write %s: %s", path, w < 0 ? strerror(errno) : "short write");
            break;
        }
        off += (size_t)w;
    }
    close(fd);
}

/* Moves a file refused for its content to error/ with <name>.reason. */
static void in_refuse(struct jn_channel *ch, const char *name, dev_t dev, ino_t ino,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void in_refuse(struct jn_channel *ch, const char *name, dev_t dev, ino_t ino,
                      const char *fmt, ...)
{
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    char reason[JN_ERR_MSG_MAX], final[NAME_MAX + JN_ID_LEN + 2], id[JN_ID_LEN + 1];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    jn_idgen_next(jn_broker_idgen(ch->broker), id);
    if (move_noreplace(c->dir, name, dev, ino, st->error_dir, id, final, sizeof(final)) != 0) {
        char path[PATH_MAX];
        if (errno == ENOENT || errno == ESTALE) {
            jn_ch_debug(ch, "%s: changed or gone before it could be moved to %s; skipped", name,
                        st->error_dir);
            return;
        }
        jn_ch_error(ch, "%s: refused (%s), but cannot be moved to %s: %s; left in place until "
                    "it changes", name, reason, st->error_dir, strerror(errno));
        if (path_join(path, sizeof(path), c->dir, name) == 0) {
            park(st, path, name);
        }
        return;
    }
    write_reason(ch, st->error_dir, final, reason);
    ch->n_refused++;
    jn_ch_warn(ch, "%s: refused, moved to %s/%s: %s", name, st->error_dir, final, reason);
}

/* ---- accepting a file ---- */

/* All messages of f have been answered. */
static void in_finish(struct file_inflight *f)
{
    struct jn_channel *ch = f->ch;
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    char final[NAME_MAX + JN_ID_LEN + 2];

    inflight_unlink(st, f);
    if (f->refused) {
        /* Left where it is: the next poll reads it again. For split: lines, lines that were
         * accepted this time are ingested again then (at-least-once, not exactly-once). */
        inflight_free(f);
        return;
    }
    if (move_noreplace(c->dir, f->name, f->dev, f->ino, st->done_dir, f->id, final,
                       sizeof(final)) != 0) {
        char path[PATH_MAX];
        if (errno == ENOENT) {
            jn_ch_warn(ch, "%s: accepted, but it was gone before it could be moved to %s",
                       f->name, st->done_dir);
        } else if (errno == ESTALE) {
            jn_ch_warn(ch, "%s: accepted, but it was replaced by another file before it could "
                       "be moved to %s; the new file will be read", f->name, st->done_dir);
        } else {
            jn_ch_error(ch, "%s: accepted, but cannot be moved to %s: %s; left in place and not "
                        "read again until it changes", f->name, st->done_dir, strerror(errno));
            if (path_join(path, sizeof(path), c->dir, f->name) == 0) {
                park(st, path, f->name);
            }
        }
        inflight_free(f);
        return;
    }
    jn_ch_debug(ch, "%s: %zu message%s accepted, moved to %s/%s", f->name, f->nparts,
                f->nparts == 1 ? "" : "s", st->done_dir, final);
    inflight_free(f);
}

static void in_accepted(void *arg, int rc, const struct jn_msg *msg, const struct jn_err *err)
{
    struct file_part *p = arg;
    struct file_inflight *f = p->f;
    struct jn_channel *ch = f->ch;

    p->t = NULL;
    /* The core counts n_in and n_refused for these answers. */
    if (rc == 0) {
        if (p == &f->parts[0] && msg != NULL) {
            memcpy(f->id, msg->id, sizeof(f->id));
        }
    } else if (!f->refused) {
        /* JN_EFULL, JN_ESTOPPED, JN_ENOMEM: all "not now". Anything else is treated the same,
         * so a file is never lost to an answer we did not expect. */
        f->refused = true;
        jn_ch_warn(ch, "%s: refused by the broker (%s%s%s); left in place, will try again",
                   f->name, jn_strerror(rc), err != NULL && err->msg[0] ? ": " : "",
                   err != NULL ? err->msg : "");
    }
    if (--f->pending == 0) {
        in_finish(f);
    }
}

/*
 * Reads up to limit bytes of fd into a jn_malloc'd buffer of len + 1 bytes (NUL-terminated).
 * hint is the size fstat gave. 0, JN_ENOMEM, JN_EINVAL (more than limit bytes) or JN_EIO (errno
 * set).
 */
static int read_all(int fd, size_t hint, size_t limit, char **out, size_t *outlen)
{
    size_t cap = (hint < limit ? hint : limit) + 1;
    size_t len = 0;
    char *buf = jn_malloc(cap);

    if (buf == NULL) {
        return JN_ENOMEM;
    }
    for (;;) {
        ssize_t r;
        if (len + 1 == cap) {
            /* Full: at EOF, or the file grew since fstat. One byte tells which. */
            char probe;
            size_t ncap;
            char *nb;
            do {
                r = read(fd, &probe, 1);
            } while (r < 0 && errno == EINTR);
            if (r < 0) {
                jn_free(buf);
                return JN_EIO;
            }
            if (r == 0) {
                break;
            }
            if (len + 1 > limit) {
                jn_free(buf);
                return JN_EINVAL;
            }
            ncap = cap * 2 < limit + 1 ? cap * 2 : limit + 1;
            nb = jn_realloc(buf, ncap);
            if (nb == NULL) {
                jn_free(buf);
                return JN_ENOMEM;
            }
            buf = nb;
            cap = ncap;
            buf[len++] = probe;
            continue;
        }
        r = read(fd, buf + len, cap - 1 - len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            jn_free(buf);
            return JN_EIO;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* Next line of [*p, end): sets *line, *llen (LF or CRLF stripped), advances *p. */
static void next_line(const char **p, const char *end, const char **line, size_t *llen)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = nl != NULL ? (size_t)(nl - *p) : (size_t)(end - *p);

    *line = *p;
    if (nl != NULL && n > 0 && (*p)[n - 1] == '\r') {
        n--;
    }
    *llen = n;
    *p = nl != NULL ? nl + 1 : end;
}

static struct jn_msg *msg_with_headers(struct jn_msg *m, const char *name, size_t fsize,
                                       size_t line)
{
    char num[32];

    if (m == NULL) {
        return NULL;
    }
    snprintf(num, sizeof(num), "%zu", fsize);
    if (jn_msg_header_set(m, "file-name", name) != 0 ||
        jn_msg_header_set(m, "file-size", num) != 0) {
        jn_msg_unref(&m);
        return NULL;
    }
    if (line > 0) {
        snprintf(num, sizeof(num), "%zu", line);
        if (jn_msg_header_set(m, "file-line", num) != 0) {
            jn_msg_unref(&m);
            return NULL;
        }
    }
    return m;
}

/* Builds the messages of buf (taken). 0 with the messages in *msgs and their number in *n (0 is
 * possible for split: lines), JN_ENOMEM, or JN_EINVAL with why in reason (a line over
 * max_message). */
static int build_msgs(struct jn_channel *ch, const char *name, char *buf, size_t len,
                      struct jn_msg ***msgs, size_t *n, char *reason, size_t rcap)
{
    const struct file_conf *c = ch->conf;
    const char *p, *end = buf + len, *line;
    size_t llen, count = 0, lineno = 0, k = 0;
    struct jn_msg **v;

    if (c->split == FILE_SPLIT_NONE) {
        v = jn_malloc(sizeof(*v));
        if (v == NULL) {
            jn_free(buf);
            return JN_ENOMEM;
        }
        v[0] = msg_with_headers(jn_msg_new_take(ch->name, buf, len), name, len, 0);
        if (v[0] == NULL) {
            jn_free(v);
            return JN_ENOMEM;
        }
        *msgs = v;
        *n = 1;
        return 0;
    }
    /* Check every line before ingesting any, so a refused file is refused whole. */
    for (p = buf; p < end;) {
        next_line(&p, end, &line, &llen);
        lineno++;
        if (llen > c->max_message) {
            snprintf(reason, rcap, "line %zu is %zu bytes, over max_message (%llu bytes)",
                     lineno, llen, c->max_message);
            jn_free(buf);
            return JN_EINVAL;
        }
        count += llen > 0;
    }
    *msgs = NULL;
    *n = 0;
    if (count == 0) {
        jn_free(buf);
        return 0;
    }
    v = jn_calloc(count, sizeof(*v));
    if (v == NULL) {
        jn_free(buf);
        return JN_ENOMEM;
    }
    lineno = 0;
    for (p = buf; p < end;) {
        next_line(&p, end, &line, &llen);
        lineno++;
        if (llen == 0) {
            continue;
        }
        v[k] = msg_with_headers(jn_msg_new(ch->name, line, llen), name, len, lineno);
        if (v[k] == NULL) {
            while (k > 0) {
                jn_msg_unref(&v[--k]);
            }
            jn_free(v);
            jn_free(buf);
            return JN_ENOMEM;
        }
        k++;
    }
    jn_free(buf);
    *msgs = v;
    *n = count;
    return 0;
}

/* A file with nothing to send (split: lines, no non-empty line) is done at once. */
static void in_done_empty(struct jn_channel *ch, const char *name, const struct stat *sb)
{
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    char final[NAME_MAX + JN_ID_LEN + 2], id[JN_ID_LEN + 1];

    jn_idgen_next(jn_broker_idgen(ch->broker), id);
    if (move_noreplace(c->dir, name, sb->st_dev, sb->st_ino, st->done_dir, id, final,
                       sizeof(final)) != 0) {
        char path[PATH_MAX];
        if (errno != ENOENT && errno != ESTALE) {
            jn_ch_error(ch, "%s: no lines, but cannot be moved to %s: %s", name, st->done_dir,
                        strerror(errno));
            if (path_join(path, sizeof(path), c->dir, name) == 0) {
                park(st, path, name);
            }
        }
        return;
    }
    jn_ch_info(ch, "%s: no non-empty lines, moved to %s/%s", name, st->done_dir, final);
}

/* Reads one listed file and hands its messages to the broker. Returns the bytes read. */
static size_t in_take(struct jn_channel *ch, int dfd, const struct file_seen *cand)
{
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    const char *name = cand->name;
    unsigned long long limit = c->max_file;
    const char *limit_name = "max_file";
    struct file_inflight *f;
    struct jn_msg **msgs = NULL;
    size_t nmsgs = 0, len = 0, nnull = 0;
    char reason[JN_ERR_MSG_MAX];
    struct stat sb;
    char *buf = NULL;
    int fd, rc;

    /* O_NONBLOCK: a FIFO swapped in since the listing must not block the loop in open(). */
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) {
            jn_ch_debug(ch, "%s: vanished before it could be opened; skipped", name);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR) {
            jn_ch_warn(ch, "%s: cannot open it now (%s); will try again", name, strerror(errno));
        } else {
            in_refuse(ch, name, cand->dev, cand->ino, "cannot be opened: %s", strerror(errno));
        }
        return 0;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        jn_ch_debug(ch, "%s: no longer a regular file; skipped", name);
        close(fd);
        return 0;
    }
    if (c->split == FILE_SPLIT_NONE && c->max_message < limit) {
        limit = c->max_message;
        limit_name = "max_message";
    }
    if ((unsigned long long)sb.st_size > limit) {
        close(fd);
        in_refuse(ch, name, sb.st_dev, sb.st_ino, "file is %lld bytes, over %s (%llu bytes)",
                  (long long)sb.st_size, limit_name, limit);
        return 0;
    }
    rc = read_all(fd, (size_t)sb.st_size, (size_t)limit, &buf, &len);
    close(fd);
    if (rc == JN_EINVAL) {
        in_refuse(ch, name, sb.st_dev, sb.st_ino, "file grew while being read, to over %s "
                  "(%llu bytes)", limit_name, limit);
        return (size_t)limit;
    }
    if (rc == JN_EIO) {
        in_refuse(ch, name, sb.st_dev, sb.st_ino, "read failed: %s", strerror(errno));
        return 0;
    }
    if (rc != 0) {
        jn_ch_warn(ch, "%s: out of memory reading %lld bytes; will try again", name,
                   (long long)sb.st_size);
        return 0;
    }
    reason[0] = '\0';
    rc = build_msgs(ch, name, buf, len, &msgs, &nmsgs, reason, sizeof(reason));
    if (rc == JN_EINVAL) {
        in_refuse(ch, name, sb.st_dev, sb.st_ino, "%s", reason);
        return len;
    }
    if (rc != 0) {
        jn_ch_warn(ch, "%s: out of memory building messages; will try again", name);
        return len;
    }
    if (nmsgs == 0) {
        in_done_empty(ch, name, &sb);
        return len;
    }
    f = jn_calloc(1, sizeof(*f) + nmsgs * sizeof(f->parts[0]));
    if (f == NULL || (f->name = jn_strdup(name)) == NULL) {
        jn_free(f);
        for (size_t i = 0; i < nmsgs; i++) {
            jn_msg_unref(&msgs[i]);
        }
        jn_free(msgs);
        jn_ch_warn(ch, "%s: out of memory; will try again", name);
        return len;
    }
    f->ch = ch;
    f->dev = sb.st_dev;
    f->ino = sb.st_ino;
    f->nparts = nmsgs;
    f->pending = nmsgs;
    f->next = st->inflight;
    st->inflight = f;
    st->ninflight++;
    for (size_t i = 0; i < nmsgs; i++) {
        f->parts[i].f = f;
    }
    /* Callbacks never run inside jn_ingest(), so f is complete before the first one. */
    for (size_t i = 0; i < nmsgs; i++) {
        f->parts[i].t = jn_ingest(ch, msgs[i], in_accepted, &f->parts[i]);
        if (f->parts[i].t == NULL) {
            /* No ticket (out of memory): no callback will come; a refusal like JN_ENOMEM. */
            nnull++;
        }
    }
    jn_free(msgs);
    jn_ch_debug(ch, "%s: %zu bytes, %zu message%s handed to the broker", name, len, nmsgs,
                nmsgs == 1 ? "" : "s");
    if (nnull > 0) {
        jn_ch_warn(ch, "%s: refused by the broker (out of memory); left in place, will try "
                   "again", name);
        f->refused = true;
        f->pending -= nnull;
        if (f->pending == 0) {
            in_finish(f);
        }
    }
    return len;
}

/* ---- the poll ---- */

static bool in_name_ok(const struct file_conf *c, const char *name)
{
    size_t n = strlen(name);

    /* Also skips "." and "..". Writers use these names for files they are still writing. */
    if (name[0] == '.') {
        return false;
    }
    if ((n >= 4 && strcmp(name + n - 4, ".tmp") == 0) ||
        (n >= 5 && strcmp(name + n - 5, ".part") == 0)) {
        return false;
    }
    return fnmatch(c->pattern, name, 0) == 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct file_seen *)a)->name, ((const struct file_seen *)b)->name);
}

/* Oldest first, then by name: the order a user expects a drop folder to be read in. */
static int cmp_age(const void *a, const void *b)
{
    const struct file_seen *x = *(const struct file_seen *const *)a;
    const struct file_seen *y = *(const struct file_seen *const *)b;

    if (x->mtime.tv_sec != y->mtime.tv_sec) {
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    }
    if (x->mtime.tv_nsec != y->mtime.tv_nsec) {
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

/* settle: carries since_ms over from the last listing for files that have not changed. Both
 * lists are sorted by name. */
static void settle_merge(struct file_state *st, struct file_seen *v, size_t n)
{
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        int d = 1;
        while (j < st->nseen && (d = strcmp(st->seen[j].name, v[i].name)) < 0) {
            j++;
        }
        if (j < st->nseen && d == 0) {
            const struct file_seen *o = &st->seen[j];
            if (o->dev == v[i].dev && o->ino == v[i].ino && o->size == v[i].size &&
                o->mtime.tv_sec == v[i].mtime.tv_sec && o->mtime.tv_nsec == v[i].mtime.tv_nsec) {
                v[i].since_ms = o->since_ms;
            }
        }
    }
}

/* Lists the folder and takes what is ready. Returns 1 when it stopped early with files ready
 * and room in flight (poll again at once), else 0. */
static int in_poll(struct jn_channel *ch)
{
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    struct file_seen *v = NULL, **ready = NULL;
    size_t n = 0, cap = 0, nready = 0;
    unsigned long long used = 0;
    bool complete = true;
    int64_t now = jn_mono_ms();
    int more = 0, dfd;
    DIR *dp;

    dp = opendir(c->dir);
    if (dp == NULL) {
        if (!st->dir_failing) {
            jn_ch_warn(ch, "cannot list %s: %s; will keep trying", c->dir, strerror(errno));
            st->dir_failing = true;
        }
        return 0;
    }
    if (st->dir_failing) {
        jn_ch_info(ch, "%s can be listed again", c->dir);
        st->dir_failing = false;
    }
    dfd = dirfd(dp);
    st->gen++;
    for (;;) {
        struct dirent *de;
        struct stat sb;
        errno = 0;
        de = readdir(dp);
        if (de == NULL) {
            if (errno != 0) {
                jn_ch_warn(ch, "listing %s: %s", c->dir, strerror(errno));
                complete = false;
            }
            break;
        }
        if (de->d_type == DT_DIR || !in_name_ok(c, de->d_name) ||
            inflight_find(st, de->d_name) != NULL) {
            continue;
        }
        /* Follows symlinks: a link is read only when it leads to a regular file. */
        if (fstatat(dfd, de->d_name, &sb, 0) != 0) {
            int e = errno;
            if (note_once(st, de->d_name)) {
                if (e == ENOENT) {
                    jn_ch_debug(ch, "%s: vanished, or a symlink to nothing; skipped",
                                de->d_name);
                } else {
                    jn_ch_debug(ch, "%s: cannot stat: %s; skipped", de->d_name, strerror(e));
                }
            }
            continue;
        }
        if (!S_ISREG(sb.st_mode) || parked_skip(st, de->d_name, &sb)) {
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct file_seen *nv = jn_realloc(v, ncap * sizeof(*v));
            if (nv == NULL) {
                complete = false;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[n].name = jn_strdup(de->d_name);
        if (v[n].name == NULL) {
            complete = false;
            break;
        }
        seen_fill(&v[n], &sb);
        v[n].since_ms = now;
        n++;
    }
    if (complete) {
        parked_prune(st);
        notes_prune(st, false);
    } else {
        jn_ch_warn(ch, "listing %s was cut short (out of memory or a read error)", c->dir);
    }

    if (c->settle > 0 && n > 0) {
        qsort(v, n, sizeof(*v), cmp_name);
        settle_merge(st, v, n);
    }
    ready = n > 0 ? jn_malloc(n * sizeof(*ready)) : NULL;
    if (n > 0 && ready == NULL) {
        jn_ch_warn(ch, "out of memory sorting %zu files; will try again", n);
    }
    for (size_t i = 0; ready != NULL && i < n; i++) {
        if (c->settle <= 0 || now - v[i].since_ms >= c->settle) {
            ready[nready++] = &v[i];
        }
    }
    if (nready > 1) {
        qsort(ready, nready, sizeof(*ready), cmp_age);
    }
    for (size_t i = 0; i < nready; i++) {
        if (st->stopped || st->ninflight >= FILE_MAX_IN_FLIGHT) {
            break; /* answers free slots; the next poll goes on */
        }
        if (used >= FILE_POLL_BUDGET) {
            more = 1;
            break;
        }
        used += in_take(ch, dfd, ready[i]);
    }
    jn_free(ready);
    closedir(dp);

    if (c->settle > 0) {
        /* Keep this listing for the next poll's comparison. A file in flight is not in it; if
         * it comes back (refused), it settles again, which is a fair back-off. */
        seen_free(st->seen, st->nseen);
        st->seen = v;
        st->nseen = n;
    } else {
        seen_free(v, n);
    }
    return more;
}

static void in_arm(struct file_state *st, long long ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(st->timer, &tv);
}

static void in_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_channel *ch = arg;
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    int more;

    (void)fd;
    (void)what;
    if (st->stopped) {
        return;
    }
    more = in_poll(ch);
    if (!st->stopped) {
        /* Re-armed after the work, not periodic: a slow poll never stacks up behind itself. */
        in_arm(st, more ? 0 : c->poll_interval);
    }
}

static int in_start(struct jn_channel *ch, struct jn_err *err)
{
    struct file_state *st = ch->state;
    const struct file_conf *c = ch->conf;
    const char *dirs[3] = {c->dir, st->done_dir, st->error_dir};
    struct stat sb[3];

    for (int i = 0; i < 3; i++) {
        if (jn_fs_mkdir_p(dirs[i], 0755) != 0 || stat(dirs[i], &sb[i]) != 0) {
            return jn_err_set(err, JN_EIO, "cannot create folder %s: %s", dirs[i],
                              strerror(errno));
        }
    }
    for (int i = 1; i < 3; i++) {
        const char *what = i == 1 ? "done_dir" : "error_dir";
        if (sb[i].st_dev != sb[0].st_dev) {
            return jn_err_set(err, JN_EINVAL, "%s %s is on another filesystem than dir %s; "
                              "files are moved there with rename()", what, dirs[i], c->dir);
        }
        if (sb[i].st_ino == sb[0].st_ino) {
            return jn_err_set(err, JN_EINVAL, "%s %s is dir %s itself", what, dirs[i], c->dir);
        }
    }
    if (sb[1].st_ino == sb[2].st_ino) {
        return jn_err_set(err, JN_EINVAL, "done_dir and error_dir are the same folder (%s)",
                          st->done_dir);
    }
    st->timer = evtimer_new(ch->base, in_timer_cb, ch);
    if (st->timer == NULL) {
        return jn_err_set(err, JN_ENOMEM, "cannot create the poll timer");
    }
    in_arm(st, 0);
    jn_ch_info(ch, "watching %s (pattern %s, every %lldms%s%s), done: %s, error: %s", c->dir,
               c->pattern, c->poll_interval, c->split == FILE_SPLIT_LINES ? ", split: lines" : "",
               c->settle > 0 ? ", settle" : "", st->done_dir, st->error_dir);
    return 0;
}

/* ---- life cycle ---- */

/*
 * No new polls. Answers that still come move their files to done/ as usual (the state
 * lives until destroy), so a file whose messages are durable is not read again at the next
 * start. Files still unanswered at destroy stay where they are and are read again then.
 */
static void in_stop(struct jn_channel *ch)
{
    struct file_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    st->stopped = true;
    if (st->timer != NULL) {
        evtimer_del(st->timer);
    }
}

static void in_destroy(struct jn_channel *ch)
{
    struct file_state *st = ch->state;

    if (st == NULL) {
        return;
    }
    while (st->inflight != NULL) {
        struct file_inflight *f = st->inflight;
        st->inflight = f->next;
        for (size_t i = 0; i < f->nparts; i++) {
            /* The callback would point into f, which is about to go. */
            if (f->parts[i].t != NULL) {
                jn_ingest_forget(f->parts[i].t);
            }
        }
        inflight_free(f);
    }
    while (st->parked != NULL) {
        struct file_parked *p = st->parked;
        st->parked = p->next;
        jn_free(p->id.name);
        jn_free(p);
    }
    notes_prune(st, true);
    if (st->timer != NULL) {
        event_free(st->timer);
    }
    seen_free(st->seen, st->nseen);
    jn_free(st->done_dir);
    jn_free(st->error_dir);
    jn_free(st);
    ch->state = NULL;
}

const struct jn_in_def jn_file__in = {
    .init = in_init,   /* state and resolved done/error folders only */
    .start = in_start, /* creates folders; arms the poll timer */
    .stop = in_stop,
    .destroy = in_destroy,
};
