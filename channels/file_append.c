/*
 * file OUT, mode: append: many messages per file, each group made durable by one fdatasync.
 *
 * The name template's value is the rotation key ("{date}/{hour}.ndjson"). Records go, each
 * followed by the separator, into "<dir>/<folders>/.<base>.part", a hidden name file IN and
 * careful readers skip. A file is closed, synced and renamed to its final name when it reaches
 * max_file_bytes, has been open max_file_age, has had no record for max_file_idle, or at the
 * stop; the final name is the key itself, or the key numbered ("11.1.ndjson", "11.2.ndjson")
 * when a file of that name exists already (rotation by size, a restart within the hour), so a
 * reader never sees a half file and a complete file is never replaced. Modelled on Fluent Bit's
 * out_file with the rotation of logrotate and the group commit of our journal.
 *
 * Durability and duplicates: a delivery counts (JN_SEND_OK) only after its group's bytes were
 * written and fdatasync'd. A group that fails (short write, ENOSPC, EIO) is cut back to the
 * length before it (ftruncate + fsync) and all its deliveries RETRY, so a file holds whole
 * records only. A crash between the sync and the journal's commit of the deliveries makes them
 * go again after the restart: at-least-once, a record may be in the files twice.
 *
 * A crash leaves .part files. At the first group after the start (the start posts a tick at
 * once) each is completed: its torn tail, the bytes after the last separator, is cut (a group
 * always ends with a separator, so what follows one is a write that was never synced, hence
 * never delivered), the rest synced and renamed to a final name. A payload that contains the
 * separator itself (HL7 with "\r") can hide a torn tail's start from that rule: then the tail
 * stays as a partial record at the end of that one completed file, and its messages are
 * written again whole. With JSON lines and "\n" the rule is exact.
 *
 * framing: hl7-batch makes each file one HL7 batch file (docs/hl7.md): "FHS" and "BHS" segments
 * are written when the file is opened, each message follows with its segments ending in CR
 * (LF and CRLF become CR, so MSH starts every message's first segment), and "BTS|<count>" and
 * "FTS|1" are appended just before the file is synced and renamed, so a final name always holds
 * a whole batch. The record terminator is the CR itself (separator is not used), which is also
 * what the torn-tail cut looks for. A leftover .part gets its trailer at the next start: the
 * MSH segments are counted, a trailer written before the crash is replaced.
 *
 * All of this runs on the channel's writer thread (file_out.c); the loop touches the state only
 * after the thread was joined.
 */
#include <dirent.h>
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "file_int.h"
#include "jn_fs.h"
#include "jn_mem.h"
#include "jn_time.h"

/* More open files than this (many keys at once): the least recently written is closed. */
#define APP_MAX_OPEN 64
/* Folders below dir searched for leftover .part files at the start. */
#define APP_SCAN_DEPTH 8
/* Numbered final names tried before giving up ("11.9999.ndjson"). */
#define APP_MAX_NUMBER 100000u

struct app_file {
    struct app_file *next;
    char *key;                   /* owned: the rendered name, relative to dir */
    char *part;                  /* owned: "<dir>/<folders>/.<base>.part" */
    int fd;
    unsigned long long size;     /* whole records written (and synced, after a group) */
    unsigned long long nrec;     /* records in it (hl7-batch: the BTS count) */
    int64_t opened_ms, last_ms;  /* monotonic */
    unsigned number;             /* the first final-name number to try */
    bool bad_tail;               /* a failed group's bytes are still to be cut off */
    struct file_job *head, *tail; /* this group's jobs for the file */
    unsigned long long pend;     /* their bytes (records and separators) */
    size_t npend;
};

struct file_append {
    const struct jn_channel *ch;
    const struct file_conf *c;
    unsigned char sep[256];
    size_t seplen;
    struct app_file *files;      /* open */
    size_t nfiles;
    bool recovered;              /* leftover .part files completed */
    struct iovec *iov;           /* owned: reused by every write */
    size_t iovcap;
    bool hl7;                    /* framing: hl7-batch */
    unsigned char *norm;         /* owned: hl7-batch: the group's payloads that needed CRs */
    size_t normcap;
};

struct file_append *jn_file__append_new(const struct jn_channel *ch, const unsigned char *sep,
                                        size_t seplen)
{
    struct file_append *a = jn_calloc(1, sizeof(*a));

    if (a == NULL || seplen > sizeof(a->sep)) {
        jn_free(a);
        return NULL;
    }
    a->ch = ch;
    a->c = ch->conf;
    memcpy(a->sep, sep, seplen);
    a->seplen = seplen;
    a->hl7 = a->c->framing == FILE_FRAMING_HL7_BATCH;
    return a;
}

/* ---- HL7 batch framing ---- */

/* The batch file's header (FHS, BHS) into buf; its length. */
static size_t hl7_header(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    char ts[32];
    int n;

    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y%m%d%H%M%S+0000", &tm);
    n = snprintf(buf, cap, "FHS|^~\\&|junction||||%s\rBHS|^~\\&|junction||||%s\r", ts, ts);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The trailer for nrec messages (BTS, FTS) into buf; its length. */
static size_t hl7_trailer(char *buf, size_t cap, unsigned long long nrec)
{
    int n = snprintf(buf, cap, "BTS|%llu\rFTS|1\r", nrec);

    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Writes all of len bytes at off; 0 or -1 with errno. */
static int pwrite_full(int fd, const void *p, size_t len, off_t off)
{
    const char *b = p;

    while (len > 0) {
        ssize_t w = pwrite(fd, b, len, off);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            if (w == 0) {
                errno = EIO;
            }
            return -1;
        }
        b += w;
        len -= (size_t)w;
        off += w;
    }
    return 0;
}

/* ---- completing a file: sync, final name ---- */

static int fsync_path(const char *folder)
{
    int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc, e;

    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    e = errno;
    close(fd);
    errno = e;
    return rc;
}

/*
 * Renames part (a full path ending in "/.<base>.part") to "<same folder>/<base>", numbered
 * from *number when that name is taken; never replaces a file. *number becomes the number
 * used plus one. Syncs the folder. 0, or -1 with errno; final gets the name (cap bytes).
 */
static int complete_part(const struct file_append *a, const char *part, unsigned *number,
                         char *final, size_t cap)
{
    const char *slash = strrchr(part, '/');
    size_t fl = (size_t)(slash - part); /* the folder's length */
    size_t bl = strlen(slash + 2) - 5;  /* base: after "/.", before ".part" */
    char base[NAME_MAX + 1], folder[PATH_MAX], name[NAME_MAX + 1];

    memcpy(base, slash + 2, bl);
    base[bl] = '\0';
    memcpy(folder, part, fl);
    folder[fl] = '\0';
    for (unsigned n = *number; n < APP_MAX_NUMBER; n++) {
        int rc;

        if (jn_file__numbered(base, n, name, sizeof(name)) != 0 ||
            snprintf(final, cap, "%s/%s", folder, name) >= (int)cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        rc = renameat2(AT_FDCWD, part, AT_FDCWD, final, RENAME_NOREPLACE);
        if (rc != 0 && errno == EINVAL) {
            /* A filesystem without RENAME_NOREPLACE: link() refuses an existing name too. */
            rc = link(part, final);
            if (rc == 0) {
                unlink(part);
            }
        }
        if (rc == 0) {
            *number = n + 1;
            return a->c->do_fsync ? fsync_path(folder) : 0;
        }
        if (errno != EEXIST) {
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
}

/* hl7-batch: appends BTS and FTS after f's records. 0 or -1 with errno. */
static int write_trailer(struct app_file *f)
{
    char tr[64];
    size_t n = hl7_trailer(tr, sizeof(tr), f->nrec);

    if (pwrite_full(f->fd, tr, n, (off_t)f->size) != 0) {
        return -1;
    }
    f->size += n;
    return 0;
}

/* Closes f and frees it: synced, renamed to its final name (an empty file is removed). Returns
 * the next final-name number for its key. */
static unsigned close_file(struct file_append *a, struct app_file *f, const char *why)
{
    const struct jn_channel *ch = a->ch;
    char final[PATH_MAX];
    unsigned number = f->number;

    if (f->bad_tail && ftruncate(f->fd, (off_t)f->size) == 0) {
        f->bad_tail = false;
    }
    if (f->nrec == 0 && !f->bad_tail) {
        close(f->fd);
        unlink(f->part);
    } else if (a->hl7 && !f->bad_tail && write_trailer(f) != 0) {
        jn_ch_error(ch, "cannot write the batch trailer of %s: %s; it is completed at the next "
                    "start", f->part, strerror(errno));
        close(f->fd);
    } else if ((a->c->do_fsync && fsync(f->fd) != 0) || close(f->fd) != 0) {
        jn_ch_error(ch, "closing %s: %s; it stays as it is and is completed at the next start",
                    f->part, strerror(errno));
    } else if (f->bad_tail) {
        jn_ch_error(ch, "%s ends with a failed write that could not be cut off; it stays as it "
                    "is and is completed at the next start", f->part);
    } else if (complete_part(a, f->part, &number, final, sizeof(final)) != 0) {
        jn_ch_error(ch, "cannot rename %s to its final name: %s; it is completed at the next "
                    "start", f->part, strerror(errno));
    } else {
        jn_ch_debug(ch, "closed %s (%llu bytes, %s)", final, f->size, why);
    }
    jn_free(f->key);
    jn_free(f->part);
    jn_free(f);
    return number;
}

/* Unlinks f from the open list and closes it; returns close_file's number. */
static unsigned drop_file(struct file_append *a, struct app_file *f, const char *why)
{
    for (struct app_file **pp = &a->files; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            a->nfiles--;
            break;
        }
    }
    return close_file(a, f, why);
}

/* ---- leftovers of a previous run ---- */

/* Cuts the torn tail of fd (size bytes): the bytes after its last separator. 0 or -1. */
static int cut_tail(const struct file_append *a, int fd, off_t size, off_t *good)
{
    unsigned char buf[65536];
    off_t end = size;

    *good = 0;
    while (end > 0) {
        off_t start = end > (off_t)(sizeof(buf) - a->seplen) ? end - (off_t)(sizeof(buf) -
                                                                          a->seplen) : 0;
        /* The chunk overlaps the next one by seplen - 1 bytes: a separator across the seam. */
        off_t stop = end + (off_t)a->seplen - 1 < size ? end + (off_t)a->seplen - 1 : size;
        ssize_t r = pread(fd, buf, (size_t)(stop - start), start);
        size_t cut;

        if (r != (ssize_t)(stop - start)) {
            if (r >= 0) {
                errno = EIO;
            }
            return -1;
        }
        cut = jn_file__cut_torn(buf, (size_t)r, a->sep, a->seplen);
        if (cut > 0) {
            *good = start + (off_t)cut;
            break;
        }
        end = start;
    }
    if (*good < size && ftruncate(fd, *good) != 0) {
        return -1;
    }
    return 0;
}

/*
 * hl7-batch: a leftover's first *good bytes are whole records (torn tail cut). Counts its
 * messages, cuts a trailer written before the crash, writes a new one and syncs. *good becomes
 * the new length, 0 when no message is in it (the file is to be removed). 0 or -1 with errno.
 */
static int hl7_recover(int fd, off_t *good)
{
    struct jn_file_hl7_scan sc = JN_FILE_HL7_SCAN_INIT;
    unsigned char buf[65536];
    char tr[64];
    off_t off = 0, end;
    size_t n;

    while (off < *good) {
        size_t want = *good - off < (off_t)sizeof(buf) ? (size_t)(*good - off) : sizeof(buf);
        ssize_t r = pread(fd, buf, want, off);

        if (r <= 0) {
            if (r == 0) {
                errno = EIO;
            }
            return -1;
        }
        jn_file__hl7_scan(&sc, buf, (size_t)r, (unsigned long long)off);
        off += r;
    }
    if (sc.msgs == 0) {
        *good = 0;
        return 0;
    }
    end = sc.bts >= 0 ? (off_t)sc.bts : *good;
    n = hl7_trailer(tr, sizeof(tr), sc.msgs);
    if (ftruncate(fd, end) != 0 || pwrite_full(fd, tr, n, end) != 0 || fsync(fd) != 0) {
        return -1;
    }
    *good = end + (off_t)n;
    return 0;
}

/* Completes one leftover .part file (path). */
static void recover_one(struct file_append *a, const char *path)
{
    const struct jn_channel *ch = a->ch;
    struct stat sb;
    off_t good;
    unsigned number = 0;
    char final[PATH_MAX];
    int fd = open(path, O_RDWR | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &sb) != 0 || cut_tail(a, fd, sb.st_size, &good) != 0 ||
        fsync(fd) != 0) {
        jn_ch_error(ch, "cannot complete the leftover %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    if (a->hl7 && good > 0 && hl7_recover(fd, &good) != 0) {
        jn_ch_error(ch, "cannot complete the batch of the leftover %s: %s", path,
                    strerror(errno));
        close(fd);
        return;
    }
    close(fd);
    if (good == 0) {
        unlink(path);
        jn_ch_info(ch, "removed the leftover %s: no whole record (%lld bytes cut)", path,
                   (long long)sb.st_size);
        return;
    }
    if (complete_part(a, path, &number, final, sizeof(final)) != 0) {
        jn_ch_error(ch, "cannot rename the leftover %s: %s", path, strerror(errno));
        return;
    }
    jn_ch_info(ch, "completed the leftover %s as %s (%lld bytes; a torn tail of %lld bytes cut)",
               path, final, (long long)good, (long long)(sb.st_size - good));
}

static bool is_part_name(const char *n)
{
    size_t l = strlen(n);

    return n[0] == '.' && l > 6 && strcmp(n + l - 5, ".part") == 0;
}

static void scan_folder(struct file_append *a, const char *folder, int depth)
{
    DIR *d = opendir(folder);
    struct dirent *e;

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat sb;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            snprintf(path, sizeof(path), "%s/%s", folder, e->d_name) >= (int)sizeof(path) ||
            lstat(path, &sb) != 0) {
            continue;
        }
        if (S_ISREG(sb.st_mode) && is_part_name(e->d_name)) {
            recover_one(a, path);
        } else if (S_ISDIR(sb.st_mode) && depth < APP_SCAN_DEPTH) {
            scan_folder(a, path, depth + 1);
        }
    }
    closedir(d);
}

/* ---- open files ---- */

static struct app_file *find_file(struct file_append *a, const char *key)
{
    for (struct app_file *f = a->files; f; f = f->next) {
        if (strcmp(f->key, key) == 0) {
            return f;
        }
    }
    return NULL;
}

/* Opens a new .part for key (the least recently written file is closed when too many are
 * open). NULL with errno. */
static struct app_file *open_file(struct file_append *a, const char *key, unsigned number,
                                  int64_t now)
{
    const struct file_conf *c = a->c;
    const char *slash = strrchr(key, '/');
    size_t rlen = slash ? (size_t)(slash - key) : 0;
    const char *base = slash ? slash + 1 : key;
    struct app_file *f;
    char part[PATH_MAX];
    int fd = -1;

    if (snprintf(part, sizeof(part), "%s/%.*s%s.%s.part", c->dir, (int)rlen, key,
                 rlen ? "/" : "", base) >= (int)sizeof(part)) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (a->nfiles >= APP_MAX_OPEN) {
        struct app_file *lru = a->files;
        for (struct app_file *g = a->files; g; g = g->next) {
            if (g->head == NULL && (lru->head != NULL || g->last_ms < lru->last_ms)) {
                lru = g;
            }
        }
        if (lru->head == NULL) {
            drop_file(a, lru, "too many open files");
        }
    }
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                  (mode_t)strtoul(c->file_mode, NULL, 8)); /* checked by file_mode_ok */
        if (fd >= 0) {
            break;
        }
        if (errno == EEXIST) {
            recover_one(a, part); /* a file whose close failed before: complete it first */
        } else if (errno != ENOENT || jn_file__folder(c, key, rlen) != 0) {
            return NULL;
        }
    }
    if (fd < 0) {
        return NULL;
    }
    /* The new name must survive a crash before a record in it counts. */
    if (c->do_fsync && jn_file__folder(c, key, rlen) == 0) {
        char folder[PATH_MAX];
        snprintf(folder, sizeof(folder), "%s%s%.*s", c->dir, rlen ? "/" : "", (int)rlen, key);
        if (fsync_path(folder) != 0) {
            int e = errno;
            close(fd);
            unlink(part);
            errno = e;
            return NULL;
        }
    }
    f = jn_calloc(1, sizeof(*f));
    if (f != NULL) {
        f->key = jn_strdup(key);
        f->part = jn_strdup(part);
    }
    if (f == NULL || f->key == NULL || f->part == NULL) {
        if (f != NULL) {
            jn_free(f->key);
            jn_free(f->part);
            jn_free(f);
        }
        close(fd);
        unlink(part);
        errno = ENOMEM;
        return NULL;
    }
    if (a->hl7) {
        char hdr[128];
        size_t hl = hl7_header(hdr, sizeof(hdr));

        /* Synced with the first group; a crash before that leaves no message, so nothing. */
        if (pwrite_full(fd, hdr, hl, 0) != 0) {
            int e = errno;
            jn_free(f->key);
            jn_free(f->part);
            jn_free(f);
            close(fd);
            unlink(part);
            errno = e;
            return NULL;
        }
        f->size = hl;
    }
    f->fd = fd;
    f->opened_ms = f->last_ms = now;
    f->number = number;
    f->next = a->files;
    a->files = f;
    a->nfiles++;
    return f;
}

/* ---- one group ---- */

/* Fails every job of f's group with r and errno's reason. */
static void fail_pending(struct file_append *a, struct app_file *f, const char *what)
{
    int e = errno;

    for (struct file_job *j = f->head; j; j = j->fnext) {
        errno = e;
        jn_file__job_fail(a->c, j, JN_SEND_RETRY, what, f->key);
    }
}

/* Writes all of iov (n entries) at off; 0 or -1 with errno. Advances iov in place. */
static int pwrite_all(int fd, struct iovec *iov, size_t n, off_t off)
{
    while (n > 0) {
        int cnt = n > IOV_MAX ? IOV_MAX : (int)n;
        ssize_t w = pwritev(fd, iov, cnt, off);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/*
 * hl7-batch: the iovecs of f's group into a->iov (*n entries): a payload that is a record as it
 * is goes by reference, any other is normalized into a->norm (grown first, so no pointer moves
 * after it was taken). f->pend becomes the bytes written. 0, or -1 out of memory.
 */
static int hl7_iov(struct file_append *a, struct app_file *f, size_t *n)
{
    size_t need = 0, used = 0;

    for (struct file_job *j = f->head; j; j = j->fnext) {
        if (!jn_file__hl7_clean(j->msg->payload, j->msg->len)) {
            need += j->msg->len + 1;
        }
    }
    if (need > a->normcap) {
        unsigned char *nb = jn_realloc(a->norm, need);
        if (nb == NULL) {
            return -1;
        }
        a->norm = nb;
        a->normcap = need;
    }
    f->pend = 0;
    for (struct file_job *j = f->head; j; j = j->fnext) {
        size_t len = j->msg->len;

        if (jn_file__hl7_clean(j->msg->payload, len)) {
            a->iov[*n].iov_base = j->msg->payload;
        } else {
            a->iov[*n].iov_base = a->norm + used;
            len = jn_file__hl7_norm(j->msg->payload, len, a->norm + used);
            used += len;
        }
        a->iov[(*n)++].iov_len = len;
        f->pend += len;
    }
    return 0;
}

/* Writes f's group with one pwritev (per IOV_MAX entries) and makes it durable with one
 * fdatasync; on any failure cuts the file back and fails the group. */
static void flush_file(struct file_append *a, struct app_file *f)
{
    const struct file_conf *c = a->c;
    size_t n = 0;

    if (f->head == NULL) {
        return;
    }
    if (f->bad_tail) {
        if (ftruncate(f->fd, (off_t)f->size) != 0 || fsync(f->fd) != 0) {
            fail_pending(a, f, "cannot cut a failed write off");
            goto out;
        }
        f->bad_tail = false;
    }
    if (a->iovcap < 2 * f->npend) {
        struct iovec *ni = jn_realloc(a->iov, 2 * f->npend * sizeof(*ni));
        if (ni == NULL) {
            errno = ENOMEM;
            fail_pending(a, f, "out of memory writing");
            goto out;
        }
        a->iov = ni;
        a->iovcap = 2 * f->npend;
    }
    if (a->hl7) {
        if (hl7_iov(a, f, &n) != 0) {
            errno = ENOMEM;
            fail_pending(a, f, "out of memory writing");
            goto out;
        }
    } else {
        for (struct file_job *j = f->head; j; j = j->fnext) {
            a->iov[n].iov_base = j->msg->payload;
            a->iov[n++].iov_len = j->msg->len;
            a->iov[n].iov_base = a->sep;
            a->iov[n++].iov_len = a->seplen;
        }
    }
    if (pwrite_all(f->fd, a->iov, n, (off_t)f->size) != 0 ||
        (c->do_fsync && fdatasync(f->fd) != 0)) {
        int e = errno;
        /* No half record may stay: back to the length before the group. */
        if (ftruncate(f->fd, (off_t)f->size) != 0 || fsync(f->fd) != 0) {
            f->bad_tail = true;
        }
        errno = e;
        fail_pending(a, f, "append to");
        goto out;
    }
    f->size += f->pend;
    f->nrec += f->npend;
    for (struct file_job *j = f->head; j; j = j->fnext) {
        j->result = JN_SEND_OK;
    }
out:
    f->head = f->tail = NULL;
    f->pend = 0;
    f->npend = 0;
}

void jn_file__append_group(struct file_append *a, struct file_job *list)
{
    const struct file_conf *c = a->c;
    int64_t now = jn_mono_ms();

    if (!a->recovered) {
        a->recovered = true;
        scan_folder(a, c->dir, 0);
    }
    for (struct file_job *j = list; j; j = jn_file__job_next(j)) {
        struct app_file *f;
        unsigned long long rec;
        unsigned number = 0;

        if (j->d == NULL) {
            continue; /* a tick */
        }
        j->result = JN_SEND_RETRY;
        j->fnext = NULL;
        rec = (unsigned long long)j->msg->len + a->seplen;
        f = find_file(a, j->name);
        if (f != NULL && f->nrec + f->npend > 0 && f->size + f->pend + rec > c->max_file_bytes) {
            /* Full: what is pending goes into it, then a new file (a record bigger than
             * max_file_bytes gets a file of its own; an hl7-batch header alone is no record). */
            flush_file(a, f);
            number = drop_file(a, f, "max_file_bytes");
            f = NULL;
        }
        if (f == NULL) {
            f = open_file(a, j->name, number, now);
            if (f == NULL) {
                jn_file__job_fail(c, j, JN_SEND_RETRY, "cannot create the file for", j->name);
                continue;
            }
        }
        if (f->tail != NULL) {
            f->tail->fnext = j;
        } else {
            f->head = j;
        }
        f->tail = j;
        f->pend += rec;
        f->npend++;
        f->last_ms = now;
    }
    for (struct app_file *f = a->files; f; f = f->next) {
        flush_file(a, f);
    }
    /* What is due closes now: full, old, or idle (the key moved on: "{hour}" changed). */
    for (struct app_file *f = a->files, *next; f; f = next) {
        next = f->next;
        if (f->size >= c->max_file_bytes) {
            drop_file(a, f, "max_file_bytes");
        } else if (now - f->opened_ms >= c->max_file_age) {
            drop_file(a, f, "max_file_age");
        } else if (now - f->last_ms >= c->max_file_idle) {
            drop_file(a, f, "max_file_idle");
        }
    }
}

void jn_file__append_close_all(struct file_append *a)
{
    while (a->files != NULL) {
        drop_file(a, a->files, "stop");
    }
}

void jn_file__append_free(struct file_append *a)
{
    if (a == NULL) {
        return;
    }
    jn_file__append_close_all(a);
    jn_free(a->iov);
    jn_free(a->norm);
    jn_free(a);
}
