/*
 * file channel internals shared by channels/file_conf.c (the option table, check and the
 * def), channels/file_in.c (the drop folder), channels/file_out.c (the OUT side: one file per
 * message, and the writer thread both OUT modes share), channels/file_append.c (mode: append,
 * many messages per file) and channels/file_name.c (the pure helpers: rendered names,
 * separators, numbered final names; tests/unit/test_file_name.c reaches them here).
 */
#ifndef JN_FILE_INT_H
#define JN_FILE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "jn_channel.h"
#include "jn_worker.h"

enum {
    FILE_SPLIT_NONE = 0,
    FILE_SPLIT_LINES = 1,
};

enum {
    FILE_MODE_FILE = 0,   /* OUT: one file per message */
    FILE_MODE_APPEND = 1, /* OUT: many messages per file, rotated */
};

enum {
    FILE_FRAMING_NONE = 0,      /* OUT append: records and separators */
    FILE_FRAMING_HL7_BATCH = 1, /* OUT append: FHS BHS <messages> BTS FTS, segments end in CR */
};

struct file_conf {
    char *dir;
    /* IN */
    char *pattern;
    long long poll_interval;          /* ms */
    int split;                        /* FILE_SPLIT_* */
    unsigned long long max_message;   /* bytes, per message */
    unsigned long long max_file;      /* bytes, per file read */
    char *done_dir;                   /* "" = <dir>/done */
    char *error_dir;                  /* "" = <dir>/error */
    long long settle;                 /* ms; 0 = off */
    /* OUT */
    char *name;                       /* template; may name subfolders ("{date}/{id}.msg") */
    bool do_mkdir;
    bool do_fsync;
    char *file_mode;                  /* octal permission bits of written files, "0640" */
    int mode;                         /* FILE_MODE_* */
    char *separator;                  /* append: as written, backslash escapes not decoded */
    unsigned long long max_file_bytes; /* append: rotate before a file would pass this */
    long long max_file_age;           /* append: ms a file stays open at most */
    long long max_file_idle;          /* append: ms without a record before it is closed */
    int framing;                      /* append: FILE_FRAMING_* */
};

/* The two sides (jn_channel_file's in and out). */
extern const struct jn_in_def jn_file__in;
extern const struct jn_out_def jn_file__out;

/* ---- channels/file_name.c: pure helpers, any thread, no allocation ---- */

/* What a part of a rendered name may be at most: ".<part>.part" must fit in NAME_MAX. */
#define JN_FILE__PART_EXTRA 6

/*
 * Checks a rendered name (a path relative to dir): not empty, not starting with '/', every
 * '/'-separated part non-empty, not "." or "..", at most NAME_MAX - JN_FILE__PART_EXTRA bytes.
 * Returns 0, or -1 with why (cap bytes, NUL-terminated) saying what is wrong.
 */
int jn_file__name_check(const char *name, char *why, size_t cap);

/*
 * Decodes a separator: the backslash escapes \n \r \t \0 \\ and \xHH, every other byte as
 * is. out gets at most cap bytes (the result is never longer than s); *len its length.
 * Returns 0, or -1 with why for an unknown or unfinished escape or an empty result.
 */
int jn_file__sep_decode(const char *s, unsigned char *out, size_t cap, size_t *len, char *why,
                        size_t whycap);

/*
 * The n-th final name for base (a file name without '/'): n = 0 is base itself, n >= 1 puts
 * ".n" before the extension ("11.ndjson" -> "11.3.ndjson"; "log" -> "log.3"; a leading '.'
 * is not an extension). Returns 0, or -1 when out (cap bytes) is too small.
 */
int jn_file__numbered(const char *base, unsigned n, char *out, size_t cap);

/*
 * Where the torn tail of a file ends: the length of buf (the file's last len bytes, ending at
 * the end of the file) up to and including its last separator, or 0 when buf holds no
 * separator. A file written by append mode ends with a separator after every synced group.
 */
size_t jn_file__cut_torn(const unsigned char *buf, size_t len, const unsigned char *sep,
                         size_t seplen);

/*
 * HL7 batch framing. A record of a batch file is the message with every segment ending in CR:
 * jn_file__hl7_norm writes src (len bytes) to dst (len + 1 bytes at least) with LF and CRLF
 * turned into CR and a CR added at the end when missing; returns the bytes written.
 * jn_file__hl7_clean says whether p is a record as it is (ends in CR, no LF): then no copy.
 */
size_t jn_file__hl7_norm(const unsigned char *src, size_t len, unsigned char *dst);
bool jn_file__hl7_clean(const unsigned char *p, size_t len);

/* What a batch file holds, fed in order from offset 0 (the leftover of a crash): the MSH
 * segments before the first BTS (msgs), and where that BTS starts (bts, -1: none). Start with
 * JN_FILE_HL7_SCAN_INIT. */
struct jn_file_hl7_scan {
    unsigned long long msgs;
    long long bts;
    unsigned col;  /* bytes of the current segment seen */
    char seg[3];
};
#define JN_FILE_HL7_SCAN_INIT {0, -1, 0, {0, 0, 0}}
void jn_file__hl7_scan(struct jn_file_hl7_scan *s, const unsigned char *buf, size_t len,
                       unsigned long long off);

/* ---- channels/file_append.c: mode: append (see there); writer thread unless said ---- */

struct file_append;
struct file_job;

/* Loop thread, at init. sep (decoded, borrowed, copied). NULL when out of memory. */
struct file_append *jn_file__append_new(const struct jn_channel *ch, const unsigned char *sep,
                                        size_t seplen);
/* Writes one group: jobs linked by their jn_job, in order; ticks (d == NULL) only close what
 * is due. The first call completes the .part files a previous run left. */
void jn_file__append_group(struct file_append *a, struct file_job *list);
/* After the writer thread has been joined (loop thread): closes and renames every open file. */
void jn_file__append_close_all(struct file_append *a);
/* Loop thread; NULL: nothing. Closes what is open first. */
void jn_file__append_free(struct file_append *a);

/* One delivery for the writer thread (both modes), or a tick (d == NULL). */
struct file_job {
    struct jn_job job;         /* in the writer's batch */
    struct jn_delivery *d;     /* NULL for a tick */
    struct jn_msg *msg;        /* a reference of our own: the payload is read on the writer */
    char *name;                /* the rendered name, relative to dir, in buf */
    int stage;                 /* file: 0 new, 1 written, 2 renamed (done); append: 1 pending */
    int dirfd;                 /* file: its folder (borrowed from the writer's cache), or -1 */
    struct file_job *fnext;    /* append: the next job for the same file in this group */
    enum jn_send_result result;
    char *reason;              /* owned, or NULL: set with a failing result */
    char buf[];
};

/* Sets j's result and reason: "<what> <dir>/<path>: <strerror(errno)>" (path may be NULL:
 * dir alone). ENAMETOOLONG makes it REJECT (the same name fails every time). Writer thread. */
void jn_file__job_fail(const struct file_conf *c, struct file_job *j, enum jn_send_result r,
                       const char *what, const char *path);

/*
 * Makes "<dir>/<rel>" (rel: rlen bytes of a checked relative path; 0: dir itself) when it is
 * missing and mkdir is on; when it made a folder and fsync is on, syncs dir and every folder
 * down to rel, so the new names survive a crash. Writer thread. 0, or -1 with errno.
 */
int jn_file__folder(const struct file_conf *c, const char *rel, size_t rlen);
/* Whether path is a folder (file_dir.c). */
bool jn_file__is_dir(const char *path);

/* The next job of a writer batch, or NULL. */
static inline struct file_job *jn_file__job_next(struct file_job *j)
{
    return j->job.next != NULL ? JN_JOB_OF(j->job.next, struct file_job, job) : NULL;
}

#endif
