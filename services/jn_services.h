/*
 * jn_services: the service defs this build offers, listed in jn_service_defs[] (registry.c).
 * Each lives in its own file (set_header.c, json_map.c); this header only lets the registry
 * name them.
 */
#ifndef JN_SERVICES_H
#define JN_SERVICES_H

#include "jn_service.h"

extern const struct jn_service_def jn_service_set_header, jn_service_json_map;
extern const struct jn_service_def jn_service_hl7_to_json, jn_service_json_to_hl7,
    jn_service_hl7_split, jn_service_delay, jn_service_lua, jn_service_csv_to_json,
    jn_service_json_to_msgpack, jn_service_msgpack_to_json, jn_service_split,
    jn_service_template, jn_service_hl7_map, jn_service_filter, jn_service_validate,
    jn_service_http_lookup;

#endif
