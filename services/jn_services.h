/*
 * jn_services: the service defs this build offers, listed in jn_service_defs[] (jn_service.c).
 * Each lives in its own file (set_header.c, json_map.c); this header only lets the registry
 * name them.
 */
#ifndef JN_SERVICES_H
#define JN_SERVICES_H

#include "jn_service.h"

extern const struct jn_service_def jn_service_set_header, jn_service_json_map;
extern const struct jn_service_def jn_service_hl7_to_json, jn_service_json_to_hl7,
    jn_service_hl7_split;

/*
 * For .check passes: where to report a problem with one entry of a map or list option. For a
 * map option `opt` (STRMAP), the key node of entry `key` (want_value 0) or its value node (1);
 * for a list option (STRLIST), the item equal to `key`. Falls back to the option's node, then
 * to svc's. Borrowed from the node tree. svc may be NULL (then NULL).
 */
const struct jn_pos *jn_service__opt_pos(const struct jn_node *svc, const char *opt,
                                         const char *key, int want_value);

#endif
