/*
 * jn_service: the message list services fill, and the registry of service types (see
 * jn_service.h). The registry is one NULL-terminated array, like channels/registry.c: adding a
 * type is one line here plus its file.
 */
#include "jn_service.h"

#include <stdint.h>
#include <string.h>

#include "jn_mem.h"
#include "jn_services.h"

const struct jn_service_def *const jn_service_defs[] = {
    &jn_service_set_header,
    &jn_service_json_map,
    &jn_service_hl7_to_json,
    &jn_service_json_to_hl7,
    &jn_service_hl7_split,
    NULL,
};

const struct jn_service_def *jn_service_def_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (size_t i = 0; jn_service_defs[i]; i++) {
        if (strcmp(jn_service_defs[i]->name, name) == 0) {
            return jn_service_defs[i];
        }
    }
    return NULL;
}

int jn_msg_list_push(struct jn_msg_list *l, struct jn_msg *m)
{
    if (l->n == l->cap) {
        /* Most services emit one message; start small and double for splitters. */
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct jn_msg **v;

        if (cap < l->cap || cap > SIZE_MAX / sizeof(*v)) {
            jn_msg_unref(&m);
            return JN_ENOMEM;
        }
        v = jn_realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            jn_msg_unref(&m);
            return JN_ENOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = m;
    return 0;
}

void jn_msg_list_clear(struct jn_msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        jn_msg_unref(&l->v[i]);
    }
    jn_free(l->v);
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}
