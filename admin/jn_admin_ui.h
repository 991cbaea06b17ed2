/*
 * jn_admin_ui: the dashboard's files (admin/ui/), compiled into the binary by CMake
 * (jn_embed_files in CMakeLists.txt) and served by the admin listener at / and /ui/<name>
 * (docs/dashboard.md).
 */
#ifndef JN_ADMIN_UI_H
#define JN_ADMIN_UI_H

#include <stddef.h>

struct jn_ui_file {
    const char *name;           /* "app.js": the file's name in admin/ui/ */
    const unsigned char *data;  /* its bytes (static, NUL after the last) */
    size_t len;
};

/* Generated (build/jn_ui_files.c): every file of admin/ui/, ended by a row whose name is NULL. */
extern const struct jn_ui_file jn_ui_files[];

/* The file with this name, or NULL. */
const struct jn_ui_file *jn_ui_file_get(const char *name);

#endif
