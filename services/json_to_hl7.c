/*
 * json-to-hl7: the JSON document hl7-to-json writes (docs/hl7.md) becomes HL7 v2 again, byte
 * for byte what hl7-to-json read. Built by hand or by json-map, it is checked as it is written:
 * a segment id that is not three of A-Z/0-9, a first segment that is not MSH/FHS/BHS, bad
 * delimiters, a "raw" value holding a delimiter: each is an error naming the JSON path
 * (segments[3][5]), which dead-letters the message.
 *
 *   services:
 *     to-hl7:
 *       type: json-to-hl7
 *
 * The output is a copy of the message with the HL7 payload and Content-Type
 * x-application/hl7-v2+er7.
 */
#include <jansson.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_services.h"

struct json_to_hl7_conf {
    int unused;
};

static const struct jn_opt json_to_hl7_opts[] = {
    JN_OPT_END
};

static int json_to_hl7_transform(const struct jn_service *svc, struct jn_msg *in,
                                 struct jn_msg_list *out, struct jn_err *err)
{
    struct jn_buf b = JN_BUF_INIT;
    json_error_t je;
    json_t *j;
    struct jn_msg *m;
    char *p;
    size_t n;
    int rc;

    j = json_loadb((const char *)in->payload, in->len, JSON_ALLOW_NUL, &je);
    if (j == NULL) {
        return jn_err_set(err, JN_EINVAL, "payload is not JSON: %s at line %d column %d",
                          je.text, je.line, je.column);
    }
    rc = jn_hl7_from_json(j, &b, err);
    json_decref(j);
    if (rc != 0) {
        jn_buf_reset(&b);
        return rc == JN_ENOMEM ? jn_err_set(err, JN_ENOMEM, "out of memory") : rc;
    }
    n = b.len;
    p = jn_buf_steal(&b);
    m = jn_msg_copy(in);
    if (m == NULL || p == NULL) {
        jn_free(p);
        jn_msg_unref(&m);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_msg_set_payload(m, p, n);
    if (jn_msg_header_set(m, "Content-Type", "x-application/hl7-v2+er7") != 0) {
        jn_msg_unref(&m);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    return jn_msg_list_push(out, m);
}

const struct jn_service_def jn_service_json_to_hl7 = {
    .name = "json-to-hl7",
    .desc = "The JSON of hl7-to-json -> HL7 v2, byte for byte (docs/hl7.md)",
    .opts = json_to_hl7_opts,
    .conf_size = sizeof(struct json_to_hl7_conf),
    .transform = json_to_hl7_transform,
};
