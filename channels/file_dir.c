/*
 * file OUT: what both modes (file_out.c's one file a message, file_append.c's append) share:
 * the folders a rendered name needs, made and synced on the way, and a job's failure reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_int.h"
#include "jn_fs.h"
#include "jn_mem.h"

bool jn_file__is_dir(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

void jn_file__job_fail(const struct file_conf *c, struct file_job *j, enum jn_send_result r,
                       const char *what, const char *path)
{
    int e = errno;
    const char *es = strerror(e);
    int n = snprintf(NULL, 0, "%s %s%s%s: %s", what, c->dir, path ? "/" : "", path ? path : "",
                     es);

    jn_free(j->reason);
    j->reason = n >= 0 ? jn_malloc((size_t)n + 1) : NULL;
    if (j->reason != NULL) {
        snprintf(j->reason, (size_t)n + 1, "%s %s%s%s: %s", what, c->dir, path ? "/" : "",
                 path ? path : "", es);
    }
    j->result = e == ENAMETOOLONG ? JN_SEND_REJECT : r;
}

/*
 * Makes "<dir>/<rel>" (rel: rlen bytes, a checked relative path; 0: dir itself) when it is
 * missing and mkdir is on; when it made a folder and fsync is on, syncs every folder from dir
 * down to rel's parent, so the new folders' names survive a crash. 0, or -1 with errno.
 */
int jn_file__folder(const struct file_conf *c, const char *rel, size_t rlen)
{
    char path[PATH_MAX];
    size_t dl = strlen(c->dir);
    int n = snprintf(path, sizeof(path), "%s%s%.*s", c->dir, rlen ? "/" : "", (int)rlen, rel);

    if (n < 0 || (size_t)n >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (jn_file__is_dir(path)) {
        return 0;
    }
    if (!c->do_mkdir) {
        errno = ENOENT;
        return -1;
    }
    if (jn_fs_mkdir_p(path, 0755) != 0) {
        return -1;
    }
    if (c->do_fsync) {
        /* dir, then each folder below it down to rel: each holds the next one's entry. */
        size_t end = dl;
        for (;;) {
            char save = path[end];
            int fd;
            path[end] = '\0';
            fd = open(end ? path : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            path[end] = save;
            if (fd >= 0) {
                int rc = fsync(fd);
                int e = errno;
                close(fd);
                if (rc != 0) {
                    errno = e;
                    return -1;
                }
            }
            if (end >= (size_t)n) {
                break;
            }
            end++;
            while (end < (size_t)n && path[end] != '/') {
                end++;
            }
        }
    }
    return 0;
}
