/*
 * jn_fs: file-system helpers (see jn_fs.h).
 */
#include "jn_fs.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int jn_fs_mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0) {
        errno = EINVAL;
        return -1;
    }
    if (n >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        /* EEXIST may be a file: the mkdir below it then says ENOTDIR. */
        if (mkdir(buf, mode) != 0 && errno != EEXIST && !is_dir(buf)) {
            return -1;
        }
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) {
        return -1;
    }
    if (!is_dir(buf)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}
