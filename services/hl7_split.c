/*
 * hl7-split: an HL7 batch (FHS/BHS ... BTS/FTS) becomes one message per MSH, each with the
 * segments up to the next MSH or batch segment, bytes unchanged (segment ends included). A
 * plain message passes through as it is. Modelled on the batch handling of HAPI's
 * Hl7InputStreamMessageIterator and Mirth's batch processing of ER7.
 *
 *   services:
 *     batch:
 *       type: hl7-split
 *       strict: false
 *
 * Each part is a new message (the broker gives it an id of its own) with the input's headers
 * and hl7-batch-id (the batch's message id), hl7-batch-index (1-based) and hl7-batch-count. A
 * batch holding no MSH is an error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_services.h"

struct hl7_split_conf {
    bool strict;
};

static const struct jn_opt hl7_split_opts[] = {
    JN_OPT_BOOL("strict", "false", JN_OPT_RELOADABLE, struct hl7_split_conf, strict,
                "Segments must end with CR only; LF and CRLF are errors"),
    JN_OPT_END
};

static int hl7_split_transform(const struct jn_service *svc, struct jn_msg *in,
                               struct jn_msg_list *out, struct jn_err *err)
{
    const struct hl7_split_conf *c = svc->conf;
    struct jn_hl7_msg *h = NULL;
    struct jn_hl7_span *parts = NULL;
    size_t n = 0;
    int rc;

    rc = jn_hl7_parse(in->payload, in->len, c->strict ? JN_HL7_STRICT : 0, &h, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(h->segs[0].id, "MSH") == 0) {
        jn_hl7_free(h);
        return jn_msg_list_push(out, jn_msg_ref(in));
    }
    if (jn_hl7_split(h, &parts, &n) != 0) {
        jn_hl7_free(h);
        return jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    if (n == 0) {
        jn_hl7_free(h);
        return jn_err_set(err, JN_EINVAL, "the batch holds no message (no MSH segment)");
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct jn_msg *m = jn_msg_new(in->channel, parts[i].p, parts[i].len);
        char num[24];
        if (m == NULL) {
            rc = JN_ENOMEM;
            break;
        }
        m->recv_us = in->recv_us;
        for (size_t k = 0; rc == 0 && k < in->nhdrs; k++) {
            rc = jn_msg_header_add(m, in->hdrs[k].name, in->hdrs[k].value);
        }
        snprintf(num, sizeof(num), "%zu", i + 1);
        if (rc == 0) {
            rc = jn_msg_header_set(m, "hl7-batch-id", in->id);
        }
        if (rc == 0) {
            rc = jn_msg_header_set(m, "hl7-batch-index", num);
        }
        snprintf(num, sizeof(num), "%zu", n);
        if (rc == 0) {
            rc = jn_msg_header_set(m, "hl7-batch-count", num);
        }
        if (rc != 0) {
            jn_msg_unref(&m);
            break;
        }
        rc = jn_msg_list_push(out, m);
    }
    jn_free(parts);
    jn_hl7_free(h);
    return rc ? jn_err_set(err, JN_ENOMEM, "out of memory") : 0;
}

const struct jn_service_def jn_service_hl7_split = {
    .name = "hl7-split",
    .desc = "HL7 batch (FHS/BHS..BTS/FTS) -> one message per MSH; a plain message passes",
    .opts = hl7_split_opts,
    .conf_size = sizeof(struct hl7_split_conf),
    .transform = hl7_split_transform,
};
