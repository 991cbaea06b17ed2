/*
 * file: the channel type (drop folder IN; OUT one file per message or many appended to one):
 * its option table, the cross-field check and the def. The sides are channels/file_in.c and
 * channels/file_out.c (with file_append.c). Modelled on Apache Camel's file component (see
 * file_in.c and file_out.c).
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_int.h"

static const char *const file_split_names[] = {"none", "lines", NULL};
static const char *const file_mode_names[] = {"file", "append", NULL};
static const char *const file_framing_names[] = {"none", "hl7-batch", NULL};

/* file_mode: octal permission bits, 0 to 0777 ("0640", "640"). */
static int file_mode_ok(const void *value, const struct jn_node *node, const char *what,
                        struct jn_diag *d)
{
    const char *s = *(char *const *)value;
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 4 || strspn(s, "01234567") != n || strtoul(s, NULL, 8) > 0777) {
        jn_diag_add(d, &node->pos, "%s: '%s' is not a file mode, expected octal permission "
                    "bits such as 0640", what, s ? s : "");
        return 1;
    }
    return 0;
}

static const struct jn_opt file_opts[] = {
    JN_OPT_PATH("dir", NULL, JN_OPT_REQUIRED, struct file_conf, dir,
                "Folder to watch (in) or to write to (out), relative to the config file's "
                "folder; created at start if missing"),
    JN_OPT_STR("pattern", "*", JN_OPT_IN, struct file_conf, pattern,
               "fnmatch glob on file names. Names starting with '.' or ending in .tmp or .part "
               "are never read: write under such a name, then rename"),
    JN_OPT_DURATION("poll_interval", "500ms", 10, 3600000, JN_OPT_IN | JN_OPT_RELOADABLE,
                    struct file_conf, poll_interval, "How often the folder is listed"),
    JN_OPT_ENUM("split", "none", file_split_names, JN_OPT_IN, struct file_conf, split,
                "none: one message per file; lines: one per non-empty line (LF or CRLF "
                "stripped, header file-line gives the 1-based line number)"),
    JN_OPT_SIZE("max_message", "16MiB", 1, 1LL << 30, JN_OPT_IN | JN_OPT_RELOADABLE,
                struct file_conf, max_message,
                "A bigger file (split: none) or line (split: lines) is moved to error_dir"),
    JN_OPT_SIZE("max_file", "256MiB", 1, 4LL << 30, JN_OPT_IN | JN_OPT_RELOADABLE,
                struct file_conf, max_file,
                "A bigger file is moved to error_dir; a file is read whole into memory"),
    JN_OPT_PATH("done_dir", "", JN_OPT_IN, struct file_conf, done_dir,
                "Where accepted files go (empty: dir/done); same filesystem as dir"),
    JN_OPT_PATH("error_dir", "", JN_OPT_IN, struct file_conf, error_dir,
                "Where refused files go, each with NAME.reason saying why (empty: dir/error); "
                "same filesystem as dir"),
    JN_OPT_DURATION("settle", "0", 0, 86400000, JN_OPT_IN | JN_OPT_RELOADABLE,
                    struct file_conf, settle,
                    "When > 0, a file is read only once its size and mtime have not changed "
                    "for this long (for writers that cannot rename)"),
    JN_OPT_ENUM("mode", "file", file_mode_names, JN_OPT_OUT, struct file_conf, mode,
                "file: one file per message; append: many messages per file, each group of "
                "deliveries synced once, files rotated (see docs/channels.md)"),
    JN_OPT_STR("name", "{id}.msg", JN_OPT_OUT, struct file_conf, name,
               "File name template, relative to dir, may name subfolders (made when first "
               "needed): {id} {channel} {date} {hour} {time} {ts} {header.NAME}. mode: file: "
               "an existing file of that name is replaced; mode: append: the rotation key "
               "(\"{date}/{hour}.ndjson\"), a taken name is numbered (11.1.ndjson)"),
    JN_OPT_STR("separator", "\\n", JN_OPT_OUT, struct file_conf, separator,
               "mode: append: bytes written after each message; escapes \\n \\r \\t \\0 "
               "\\\\ \\xHH are decoded. For HL7 the default keeps one message per line "
               "(segments stay CR-separated); \"\\r\" gives the classic HL7 file"),
    JN_OPT_ENUM("framing", "none", file_framing_names, JN_OPT_OUT, struct file_conf, framing,
                "mode: append: none: records and separators only; hl7-batch: each file is one "
                "HL7 batch file, FHS and BHS first, BTS (message count) and FTS last, every "
                "segment ending in \\r (LF and CRLF in a payload become CR; separator is not "
                "used)"),
    JN_OPT_SIZE("max_file_bytes", "64MiB", 1, 1LL << 40, JN_OPT_OUT, struct file_conf,
                max_file_bytes,
                "mode: append: a file is closed (renamed to its final name) before a record "
                "would take it past this; a bigger record gets a file of its own"),
    JN_OPT_DURATION("max_file_age", "1h", 1000, 31LL * 86400000, JN_OPT_OUT, struct file_conf,
                    max_file_age, "mode: append: a file is closed once open this long"),
    JN_OPT_DURATION("max_file_idle", "5s", 1000, 31LL * 86400000, JN_OPT_OUT,
                    struct file_conf, max_file_idle,
                    "mode: append: a file is closed when no record came for this long (its "
                    "key moved on, e.g. the next {hour})"),
    JN_OPT_BOOL("mkdir", "true", JN_OPT_OUT, struct file_conf, do_mkdir,
                "Create dir (and its parents) when missing"),
    JN_OPT_BOOL("fsync", "true", JN_OPT_OUT, struct file_conf, do_fsync,
                "fsync each file and then the folder (mode: append: fdatasync each group, "
                "fsync at close), so what was delivered survives power loss"),
    JN_OPT_STR("file_mode", "0640", JN_OPT_OUT, struct file_conf, file_mode,
               "Permission bits of written files, in octal (the process umask still applies)",
               .validate = file_mode_ok),
    JN_OPT_END
};

/* Compares paths as written, ignoring trailing slashes (a cheap check; start() compares
 * inodes). */
static bool same_path(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);

    while (na > 1 && a[na - 1] == '/') {
        na--;
    }
    while (nb > 1 && b[nb - 1] == '/') {
        nb--;
    }
    return na == nb && memcmp(a, b, na) == 0;
}

/* ---- check ---- */

/*
 * The check hook is not given the instance's name; the position (file:line:col of the option)
 * says which channel it is, and the prefix says which type, as http's check does.
 */
static int file_check(const void *conf, unsigned dir, const struct jn_node *node,
                      struct jn_diag *d)
{
    const struct file_conf *c = conf;
    int errors = 0;

    if (c->dir == NULL || c->dir[0] == '\0') {
        jn_diag_add(d, jn_node_pos(node, "dir"), "file: dir: must name a folder");
        /* The other checks compare against dir. */
        return 1;
    }
    if (dir & JN_DIR_IN) {
        char done[PATH_MAX], error[PATH_MAX];

        if (c->pattern == NULL || c->pattern[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "pattern"),
                        "file: pattern: must not be empty (\"*\" matches every name)");
            errors++;
        }
        snprintf(done, sizeof(done), "%s/done", c->dir);
        snprintf(error, sizeof(error), "%s/error", c->dir);
        /* A `done_dir:` with no value is "" like the default, but do not rely on it. */
        if (c->done_dir != NULL && c->done_dir[0] != '\0') {
            snprintf(done, sizeof(done), "%s", c->done_dir);
        }
        if (c->error_dir != NULL && c->error_dir[0] != '\0') {
            snprintf(error, sizeof(error), "%s", c->error_dir);
        }
        if (same_path(done, c->dir)) {
            jn_diag_add(d, jn_node_pos(node, "done_dir"),
                        "file: done_dir: must differ from dir, or files would be read again");
            errors++;
        }
        if (same_path(error, c->dir)) {
            jn_diag_add(d, jn_node_pos(node, "error_dir"),
                        "file: error_dir: must differ from dir, or files would be read again");
            errors++;
        }
        if (same_path(done, error)) {
            jn_diag_add(d, jn_node_pos(node, "error_dir"),
                        "file: error_dir: must differ from done_dir");
            errors++;
        }
    }
    if (dir & JN_DIR_OUT) {
        struct jn_err err;

        jn_err_clear(&err);
        if (c->name == NULL || c->name[0] == '\0') {
            jn_diag_add(d, jn_node_pos(node, "name"),
                        "file: name: must not be empty (default \"{id}.msg\")");
            errors++;
        } else if (jn_template_check(c->name, &err) != 0) {
            jn_diag_add(d, jn_node_pos(node, "name"), "file: name: %s", err.msg);
            errors++;
        } else if (c->name[0] == '/' || strstr(c->name, "../") != NULL ||
                   strcmp(c->name, "..") == 0 || strncmp(c->name, "./", 2) == 0 ||
                   strstr(c->name, "/./") != NULL || strstr(c->name, "//") != NULL ||
                   c->name[strlen(c->name) - 1] == '/') {
            /* What the literal text shows already; the rendered name is checked again. */
            jn_diag_add(d, jn_node_pos(node, "name"),
                        "file: name: '%s' must be a relative path inside dir (no leading or "
                        "trailing '/', no '.', '..' or empty parts)", c->name);
            errors++;
        } else if (c->mode == FILE_MODE_APPEND && strstr(c->name, "{id}") != NULL) {
            jn_diag_add(d, jn_node_pos(node, "name"),
                        "file: name: '%s' names one file per message (its {id}); mode: append "
                        "wants a rotation key such as \"{date}/{hour}.ndjson\"", c->name);
            errors++;
        }
        if (c->framing == FILE_FRAMING_HL7_BATCH && c->mode != FILE_MODE_APPEND) {
            jn_diag_add(d, jn_node_pos(node, "framing"),
                        "file: framing: hl7-batch frames files of many messages; it needs "
                        "mode: append");
            errors++;
        }
        if (c->mode == FILE_MODE_APPEND) {
            unsigned char sep[256];
            size_t len;
            char why[128];
            if (jn_file__sep_decode(c->separator ? c->separator : "", sep, sizeof(sep), &len,
                                    why, sizeof(why)) != 0) {
                jn_diag_add(d, jn_node_pos(node, "separator"), "file: separator: %s", why);
                errors++;
            }
        }
    }
    return errors;
}

const struct jn_channel_def jn_channel_file = {
    .name = "file",
    .desc = "Drop folder (in: one message per file or per line); out: one file per message, or "
            "many appended to rotated files (mode: append). Concurrency defaults to 256 here: "
            "deliveries are written and synced in groups, in queue order",
    .default_concurrency = 256, /* files are synced in groups of up to this many */
    .opts = file_opts,
    .conf_size = sizeof(struct file_conf),
    .check = file_check, /* dir for both; folders (in); the name template (out) */
    .in = &jn_file__in,
    .out = &jn_file__out,
};
