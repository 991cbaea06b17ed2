/*
 * file channel internals shared by channels/file_conf.c (the option table, check and the
 * def), channels/file_in.c (the drop folder) and channels/file_out.c (one file per message).
 */
#ifndef JN_FILE_INT_H
#define JN_FILE_INT_H

#include <stdbool.h>

#include "jn_channel.h"

enum {
    FILE_SPLIT_NONE = 0,
    FILE_SPLIT_LINES = 1,
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
    char *name;                       /* template */
    bool do_mkdir;
    bool do_fsync;
    char *file_mode;                  /* octal permission bits of written files, "0640" */
};

/* The two sides (jn_channel_file's in and out). */
extern const struct jn_in_def jn_file__in;
extern const struct jn_out_def jn_file__out;

#endif
