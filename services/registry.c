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
    &jn_service_delay,
    &jn_service_lua,
    &jn_service_csv_to_json,
    &jn_service_json_to_msgpack,
    &jn_service_msgpack_to_json,
    &jn_service_split,
    &jn_service_template,
    &jn_service_hl7_map,
    &jn_service_filter,
    &jn_service_validate,
    &jn_service_http_lookup,
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

