/* Unit tests of mkdir -p (jn_fs): nested, existing, a file in the way, bad input. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jn_fs.h"
#include "jn_test.h"

int main(void)
{
    char root[] = "/tmp/jn-ut-fs-XXXXXX";
    char p[512], f[512];
    struct stat sb;
    FILE *fp;

    CHECK(mkdtemp(root) != NULL);
    snprintf(p, sizeof(p), "%s/a/b/c", root);
    CHECK_INT(jn_fs_mkdir_p(p, 0700), 0);
    CHECK(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK_INT(sb.st_mode & 0777, 0700);
    CHECK_INT(jn_fs_mkdir_p(p, 0700), 0); /* already there */
    snprintf(p, sizeof(p), "%s/a/b/c/", root);
    CHECK_INT(jn_fs_mkdir_p(p, 0755), 0); /* trailing slash */

    snprintf(f, sizeof(f), "%s/file", root);
    fp = fopen(f, "w");
    CHECK(fp != NULL);
    if (fp != NULL) {
        fclose(fp);
    }
    errno = 0;
    CHECK_INT(jn_fs_mkdir_p(f, 0755), -1);
    CHECK_INT(errno, ENOTDIR);
    snprintf(p, sizeof(p), "%s/file/sub", root);
    CHECK_INT(jn_fs_mkdir_p(p, 0755), -1);
    CHECK_INT(errno, ENOTDIR);

    errno = 0;
    CHECK_INT(jn_fs_mkdir_p("", 0755), -1);
    CHECK_INT(errno, EINVAL);
    {
        char *lng = malloc(5000);
        memset(lng, 'x', 4999);
        lng[0] = '/';
        lng[4999] = '\0';
        CHECK_INT(jn_fs_mkdir_p(lng, 0755), -1);
        CHECK_INT(errno, ENAMETOOLONG);
        free(lng);
    }

    unlink(f);
    snprintf(p, sizeof(p), "%s/a/b/c", root);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/a/b", root);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/a", root);
    rmdir(p);
    rmdir(root);
    TEST_MAIN_END();
}
