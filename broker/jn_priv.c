/* jn_priv: the privilege drop (contract in jn_priv.h). */
#include "jn_priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

int jn_priv_drop(const char *user, struct jn_err *err)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    int rc = getpwnam_r(user, &pw, buf, sizeof(buf), &res);

    if (res == NULL) {
        char *end;
        unsigned long uid = strtoul(user, &end, 10);
        if (*user != '\0' && *end == '\0') {
            rc = getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &res);
        }
    }
    if (res == NULL) {
        return jn_err_set(err, JN_ENOENT, "user: no such user '%s'%s%s", user,
                          rc != 0 ? ": " : "", rc != 0 ? strerror(rc) : "");
    }
    if (getuid() == pw.pw_uid && geteuid() == pw.pw_uid) {
        return 0; /* already that user */
    }
    /* The group first: once the uid is not root, setgid is not permitted any more. */
    if (setgid(pw.pw_gid) != 0) {
        return jn_err_set(err, JN_EIO, "user '%s': cannot set group %u: %s", user,
                          (unsigned)pw.pw_gid, strerror(errno));
    }
    if (initgroups(pw.pw_name, pw.pw_gid) != 0) {
        return jn_err_set(err, JN_EIO, "user '%s': cannot set supplementary groups: %s", user,
                          strerror(errno));
    }
    if (setuid(pw.pw_uid) != 0) {
        return jn_err_set(err, JN_EIO, "user '%s': cannot set user %u: %s", user,
                          (unsigned)pw.pw_uid, strerror(errno));
    }
    if (pw.pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        return jn_err_set(err, JN_EIO, "user '%s': root could be regained after the drop", user);
    }
    return 0;
}
