/*
 * template: a new text payload rendered from a template over the message's headers, its JSON
 * fields and its HL7 fields.
 *
 *   services:
 *     notice:
 *       type: template
 *       content_type: text/plain
 *       template: "Patient {hl7.PID-5.2} {hl7.PID-5.1} ({hl7.PID-3.1}) arrived on {channel}\n"
 *
 * The placeholders are broker/jn_template's ({id}, {channel}, {date}, {time}, {ts},
 * {header.NAME}, {{ and }}) plus two this service adds through its extension hook:
 *   {json.a.b}      a field of a JSON payload: object keys by dots, array elements by number
 *                   (items.0.sku); a string as its text, other values as compact JSON
 *   {hl7.PID-5.1}   an HL7 field by adapters/hl7.h's path, escapes decoded
 * A missing field renders "" unless `strict: true` (then the message is dead-lettered naming
 * the field). A payload that is not JSON (HL7) while the template reads json. (hl7.) fields
 * is always an error. Modelled on Mirth's message templates and Camel's simple language, kept
 * to lookups: no loops, no conditions (a lua service does those).
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "jn_template.h"
#include "template_int.h"

struct template_conf {
    char *tmpl;
    char *content_type;
    bool strict;
};

#define WHO(x) ((x) && (x)->who ? (x)->who : "template")

json_t *jn_svc__json_walk(json_t *v, const char *path, size_t n)
{
    const char *p = path, *end = path + n;

    while (v != NULL && p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        char key[256];
        size_t kl = (size_t)(e - p);
        if (kl >= sizeof(key)) {
            return NULL;
        }
        memcpy(key, p, kl);
        key[kl] = '\0';
        if (json_is_object(v)) {
            v = json_object_get(v, key);
        } else if (json_is_array(v) && kl > 0 && strspn(key, "0123456789") == kl) {
            errno = 0;
            unsigned long i = strtoul(key, NULL, 10);
            v = errno ? NULL : json_array_get(v, i);
        } else {
            return NULL;
        }
        p = e + 1;
    }
    return v;
}

static int ext_json(struct jn_svc_fields *x, const char *name, size_t n, const char *path,
                    size_t pn, struct jn_buf *out, struct jn_err *err)
{
    json_t *v;
    int rc = 0;

    if (!x->json_tried) {
        json_error_t je;
        x->json_tried = 1;
        x->json = json_loadb((const char *)x->m->payload, x->m->len, JSON_DECODE_ANY, &je);
        if (x->json == NULL) {
            return jn_err_set(err, JN_EPROTO, "%s: {%.*s}: the payload is not JSON: %s "
                              "(line %d column %d)", WHO(x), (int)n, name, je.text, je.line,
                              je.column);
        }
    }
    if (x->json == NULL) {
        return JN_EPROTO; /* reported at the first placeholder */
    }
    v = jn_svc__json_walk(x->json, path, pn);
    if (v == NULL) {
        return x->strict ? jn_err_set(err, JN_EINVAL, "%s: {%.*s}: no such field in the "
                                      "payload%s", WHO(x), (int)n, name, x->strict_note) : 0;
    }
    if (json_is_string(v)) {
        rc = jn_buf_append(out, json_string_value(v), json_string_length(v));
    } else if (!json_is_null(v)) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        rc = s ? jn_buf_puts(out, s) : JN_ENOMEM;
        free(s);
    }
    return rc ? jn_err_set(err, JN_ENOMEM, "%s: out of memory", WHO(x)) : 0;
}

static int ext_hl7(struct jn_svc_fields *x, const char *name, size_t n, const struct jn_hl7_path *p,
                   struct jn_buf *out, struct jn_err *err)
{
    struct jn_hl7_delims d;
    struct jn_hl7_span sp;
    struct jn_err e;
    char *text;
    int found, rc;

    if (jn_hl7_delims_read(x->m->payload, x->m->len, &d, &e) != 0) {
        return jn_err_set(err, JN_EPROTO, "%s: {%.*s}: the payload is not HL7: %s",
                          WHO(x), (int)n, name, e.msg);
    }
    found = jn_hl7_lookup(x->m->payload, x->m->len, p, &sp);
    if (found != 1) {
        return x->strict ? jn_err_set(err, JN_EINVAL, "%s: {%.*s}: no such field in the "
                                      "message%s", WHO(x), (int)n, name, x->strict_note) : 0;
    }
    if ((text = jn_malloc(sp.len + 1)) == NULL) {
        return jn_err_set(err, JN_ENOMEM, "%s: out of memory", WHO(x));
    }
    rc = jn_buf_append(out, text, jn_hl7_text(&d, p, &sp, text));
    jn_free(text);
    return rc ? jn_err_set(err, JN_ENOMEM, "%s: out of memory", WHO(x)) : 0;
}

int jn_svc__fields_ext(void *ctx, const char *name, size_t n, struct jn_buf *out,
                       struct jn_err *err)
{
    struct jn_svc_fields *x = ctx;

    if (n > 5 && memcmp(name, "json.", 5) == 0) {
        const char *path = name + 5;
        size_t pn = n - 5;
        int empty = path[0] == '.' || path[pn - 1] == '.';
        for (size_t i = 1; i < pn && !empty; i++) {
            empty = path[i] == '.' && path[i - 1] == '.';
        }
        if (empty) {
            return jn_err_set(err, JN_EINVAL, "%s: {%.*s}: an empty step in the JSON "
                              "path", WHO(x), (int)n, name);
        }
        return out ? ext_json(x, name, n, path, pn, out, err) : 0;
    }
    if (n > 4 && memcmp(name, "hl7.", 4) == 0) {
        struct jn_hl7_path p;
        struct jn_err e;
        if (jn_hl7_path_parse(name + 4, n - 4, &p, &e) != 0) {
            return jn_err_set(err, JN_EINVAL, "%s: {%.*s}: %s", WHO(x), (int)n, name, e.msg);
        }
        return out ? ext_hl7(x, name, n, &p, out, err) : 0;
    }
    return 1;
}

static int template__check(const void *value, const struct jn_node *node, const char *what,
                           struct jn_diag *d)
{
    const char *const *t = value;
    struct jn_err e;

    if (jn_template_check_ext(*t, jn_svc__fields_ext, NULL, &e) != 0) {
        jn_diag_add(d, &node->pos, "%s: %s", what, e.msg);
        return 1;
    }
    return 0;
}

static const struct jn_opt template_opts[] = {
    JN_OPT_STR("template", NULL, JN_OPT_REQUIRED | JN_OPT_RELOADABLE, struct template_conf, tmpl,
               "The payload to render: text with {id}, {channel}, {date}, {time}, {ts}, "
               "{header.NAME}, {json.a.b} (a JSON payload's field; array elements by number), "
               "{hl7.PID-5.1} (an HL7 field, decoded); {{ and }} for braces",
               .validate = template__check),
    JN_OPT_STR("content_type", "text/plain", JN_OPT_RELOADABLE, struct template_conf,
               content_type, "The content-type header of the rendered message"),
    JN_OPT_BOOL("strict", "false", JN_OPT_RELOADABLE, struct template_conf, strict,
                "true: a {json.} or {hl7.} field the message does not have is an error (the "
                "message is dead-lettered naming it); false: it renders as empty text"),
    JN_OPT_END
};

static int template_transform(const struct jn_service *svc, struct jn_msg *in,
                              struct jn_msg_list *out, struct jn_err *err)
{
    const struct template_conf *c = svc->conf;
    struct jn_svc_fields x = {"template", c->strict, " (strict: true)", in, NULL, 0};
    struct jn_buf b = JN_BUF_INIT;
    struct jn_msg *m = NULL;
    char *p;
    int rc;

    rc = jn_template_render_ext(c->tmpl, in, jn_svc__fields_ext, &x, &b, err);
    json_decref(x.json);
    if (rc != 0) {
        jn_buf_reset(&b);
        return rc;
    }
    /* The payload is a buffer of its own with room for the NUL (jn_msg_set_payload). */
    if ((p = jn_malloc(b.len + 1)) == NULL || (m = jn_msg_copy(in)) == NULL ||
        jn_msg_header_set(m, "content-type", c->content_type) != 0) {
        jn_free(p);
        jn_msg_unref(&m);
        jn_buf_reset(&b);
        return jn_err_set(err, JN_ENOMEM, "template: out of memory");
    }
    if (b.len) {
        memcpy(p, b.p, b.len);
    }
    p[b.len] = '\0';
    jn_msg_set_payload(m, p, b.len);
    jn_buf_reset(&b);
    return jn_msg_list_push(out, m) ? jn_err_set(err, JN_ENOMEM, "template: out of memory") : 0;
}

const struct jn_service_def jn_service_template = {
    .name = "template",
    .desc = "A text payload rendered from a template over headers, JSON and HL7 fields",
    .opts = template_opts,
    .conf_size = sizeof(struct template_conf),
    .transform = template_transform,
};
