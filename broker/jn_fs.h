/*
 * jn_fs: file-system helpers shared by the journal and the channels that keep files.
 *
 * Plain POSIX calls, no state; safe on any thread; nothing allocated.
 */
#ifndef JN_FS_H
#define JN_FS_H

#include <sys/types.h>

/*
 * mkdir -p: creates path and every missing parent with mode (before the umask), like
 * mkdir(1) -p. An existing directory, or a symlink to one, anywhere on the way is fine.
 * Returns 0 when path is a directory afterwards, or -1 with errno: EINVAL (empty path),
 * ENAMETOOLONG (PATH_MAX or longer), ENOTDIR (path, or a parent, exists and is not a
 * directory), or what mkdir(2) said.
 */
int jn_fs_mkdir_p(const char *path, mode_t mode);

#endif
