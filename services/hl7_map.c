/*
 * hl7-map: declarative edits of an HL7 v2 message by field path (adapters/hl7.h paths).
 *
 *   services:
 *     to-ehr:
 *       type: hl7-map
 *       copy: {PID-2: PID-3.1}           # destination: source
 *       set: {MSH-5: EHR, MSH-6: "{header.X-Facility}"}
 *       remove: [PID-19, ZPI]            # a field emptied; a segment id removes those segments
 *
 * The order is fixed, like set-header's: copy, then set, then remove, and copies and set
 * templates read the message as it arrived, so a config means the same whatever order its keys
 * are in. set values are jn_template templates ({id}, {header.NAME}, ...) and are escaped; a
 * copy takes the source as written (escaped, components kept) when the destination is at its
 * level or above it, and the decoded text escaped anew when the destination is deeper (PID-3 to
 * PID-2.1: one component, its ^ escaped), so a copy never adds structure where it was not
 * asked. Edits go through jn_hl7_set_raw, the function Lua's h:set uses, and each result is
 * parsed again, so the output is always a valid message. Modelled on Mirth's mapper steps and
 * HAPI's Terser set/get, without a script.
 */
#include <stdbool.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "jn_template.h"

struct hl7_map_conf {
    struct jn_strmap copy;
    struct jn_strmap set;
    struct jn_strlist remove;
    bool strict;
};

/* One compiled edit; texts are borrowed from the conf. */
struct hm_op {
    struct jn_hl7_path dst, src;
    const char *dst_text, *src_text; /* as configured, for errors */
    const char *val;                 /* set: the template */
    int whole_seg;                   /* remove: a segment id alone */
};

struct hm_state {
    struct hm_op *copy, *set, *remove;
};

static int is_seg_id(const char *s)
{
    return strlen(s) == 3 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == 3;
}

static int is_header_seg(const char *s)
{
    return strcmp(s, "MSH") == 0 || strcmp(s, "FHS") == 0 || strcmp(s, "BHS") == 0;
}

/* 0 when text is a path an edit can write (not MSH-1 or MSH-2), else the reason in e. */
static int path_compile(const char *text, struct jn_hl7_path *p, int write, struct jn_err *e)
{
    if (jn_hl7_path_parse(text, strlen(text), p, e) != 0) {
        return JN_EINVAL;
    }
    if (is_header_seg(p->seg) && p->field <= 2) {
        return jn_err_set(e, JN_EINVAL, "%s-%d holds the delimiters and cannot be %s", p->seg,
                          p->field, write ? "changed" : "copied");
    }
    return 0;
}

static int hm__bad(struct jn_diag *d, const struct jn_node *at, const char *what,
                   const char *text, const struct jn_err *e)
{
    jn_diag_add(d, &at->pos, "%s: '%s': %s", what, text, e->msg);
    return 1;
}

static int hm__check_copy(const void *value, const struct jn_node *node, const char *what,
                          struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    struct jn_hl7_path p;
    struct jn_err e;
    int errs = 0;

    for (size_t i = 0; i < m->n && i < node->n; i++) {
        if (path_compile(m->k[i], &p, 1, &e) != 0) {
            errs += hm__bad(d, node->keys[i], what, m->k[i], &e);
        }
        if (path_compile(m->v[i], &p, 0, &e) != 0) {
            errs += hm__bad(d, node->vals[i], what, m->v[i], &e);
        }
    }
    return errs;
}

static int hm__check_set(const void *value, const struct jn_node *node, const char *what,
                         struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    struct jn_hl7_path p;
    struct jn_err e;
    int errs = 0;

    for (size_t i = 0; i < m->n && i < node->n; i++) {
        if (path_compile(m->k[i], &p, 1, &e) != 0) {
            errs += hm__bad(d, node->keys[i], what, m->k[i], &e);
        }
        if (jn_template_check(m->v[i], &e) != 0) {
            jn_diag_add(d, &node->vals[i]->pos, "%s.%s: %s", what, m->k[i], e.msg);
            errs++;
        }
    }
    return errs;
}

static int hm__check_remove(const void *value, const struct jn_node *node, const char *what,
                            struct jn_diag *d)
{
    const struct jn_strlist *l = value;
    struct jn_hl7_path p;
    struct jn_err e;
    int errs = 0;

    for (size_t i = 0; i < l->n; i++) {
        const struct jn_node *at = node->kind == JN_NODE_SEQ && i < node->n ? node->vals[i] : node;
        if (is_seg_id(l->v[i])) {
            if (is_header_seg(l->v[i])) {
                jn_err_set(&e, JN_EINVAL, "the header segment cannot be removed");
                errs += hm__bad(d, at, what, l->v[i], &e);
            }
        } else if (path_compile(l->v[i], &p, 1, &e) != 0) {
            errs += hm__bad(d, at, what, l->v[i], &e);
        }
    }
    return errs;
}

static const struct jn_opt hl7_map_opts[] = {
    JN_OPT_STRMAP("copy", 0, struct hl7_map_conf, copy,
                  "Destination path -> source path (PID-2: PID-3.1), read from the message as "
                  "it arrived; an absent source copies an empty value (strict: an error). "
                  "Applied first",
                  .validate = hm__check_copy),
    JN_OPT_STRMAP("set", 0, struct hl7_map_conf, set,
                  "Path -> value, a template ({id}, {channel}, {date}, {header.NAME}, ...), "
                  "escaped; missing fields, components and the next segment occurrence are "
                  "added. Applied after copy",
                  .validate = hm__check_set),
    JN_OPT_STRLIST("remove", NULL, 0, struct hl7_map_conf, remove,
                   "Paths to empty (PID-19, absent ones are left alone), or segment ids (ZPI) "
                   "whose every occurrence is deleted. Applied last",
                   .validate = hm__check_remove),
    JN_OPT_BOOL("strict", "false", 0, struct hl7_map_conf, strict,
                "true: a copy from an absent field dead-letters the message naming it"),
    JN_OPT_END
};

static int hl7_map_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct hl7_map_conf *c = conf;

    if (c->copy.n == 0 && c->set.n == 0 && c->remove.n == 0) {
        jn_diag_add(d, node ? &node->pos : NULL,
                    "hl7-map: nothing to do, expected at least one of: copy, set, remove");
        return 1;
    }
    return 0;
}

static void hl7_map_destroy(struct jn_service *svc)
{
    struct hm_state *st = svc->state;

    if (st != NULL) {
        jn_free(st->copy);
        jn_free(st->set);
        jn_free(st->remove);
        jn_free(st);
        svc->state = NULL;
    }
}

/* The paths were checked at load; init only stores them parsed. */
static int hl7_map_init(struct jn_service *svc, struct jn_err *err)
{
    const struct hl7_map_conf *c = svc->conf;
    struct hm_state *st = jn_calloc(1, sizeof(*st));
    struct jn_err e;

    if (st == NULL || (st->copy = jn_calloc(c->copy.n + 1, sizeof(struct hm_op))) == NULL ||
        (st->set = jn_calloc(c->set.n + 1, sizeof(struct hm_op))) == NULL ||
        (st->remove = jn_calloc(c->remove.n + 1, sizeof(struct hm_op))) == NULL) {
        svc->state = st;
        hl7_map_destroy(svc);
        return jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory");
    }
    svc->state = st;
    for (size_t i = 0; i < c->copy.n; i++) {
        struct hm_op *o = &st->copy[i];
        o->dst_text = c->copy.k[i];
        o->src_text = c->copy.v[i];
        if (path_compile(o->dst_text, &o->dst, 1, &e) != 0 ||
            path_compile(o->src_text, &o->src, 0, &e) != 0) {
            hl7_map_destroy(svc);
            return jn_err_set(err, JN_EINVAL, "hl7-map: copy: %s", e.msg);
        }
    }
    for (size_t i = 0; i < c->set.n; i++) {
        struct hm_op *o = &st->set[i];
        o->dst_text = c->set.k[i];
        o->val = c->set.v[i];
        if (path_compile(o->dst_text, &o->dst, 1, &e) != 0) {
            hl7_map_destroy(svc);
            return jn_err_set(err, JN_EINVAL, "hl7-map: set: %s", e.msg);
        }
    }
    for (size_t i = 0; i < c->remove.n; i++) {
        struct hm_op *o = &st->remove[i];
        o->dst_text = c->remove.v[i];
        o->whole_seg = is_seg_id(o->dst_text);
        if (o->whole_seg) {
            memcpy(o->dst.seg, o->dst_text, 4);
        } else if (path_compile(o->dst_text, &o->dst, 1, &e) != 0) {
            hl7_map_destroy(svc);
            return jn_err_set(err, JN_EINVAL, "hl7-map: remove: %s", e.msg);
        }
    }
    return 0;
}

/* 1 repetition (or field), 2 component, 3 subcomponent: how deep a path points. */
static int level(const struct jn_hl7_path *p)
{
    return p->comp == 0 ? 1 : p->sub == 0 ? 2 : 3;
}

static int do_copy(const struct hm_op *o, const struct jn_msg *in, struct jn_hl7_msg **h,
                   bool strict, struct jn_err *err)
{
    struct jn_hl7_span sp = {"", 0};
    struct jn_buf esc = JN_BUF_INIT;
    int rc;

    if (jn_hl7_lookup(in->payload, in->len, &o->src, &sp) != 1) {
        if (strict) {
            return jn_err_set(err, JN_EINVAL, "hl7-map: copy %s: the source %s is absent "
                              "(strict: true)", o->dst_text, o->src_text);
        }
        sp.p = "";
        sp.len = 0;
    }
    if (level(&o->dst) > level(&o->src) && sp.len > 0) {
        char *text = jn_malloc(sp.len + 1);
        if (text == NULL) {
            return jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory");
        }
        rc = jn_hl7_escape(&(*h)->d, text, jn_hl7_text(&(*h)->d, &o->src, &sp, text), &esc);
        jn_free(text);
        if (rc != 0) {
            jn_buf_reset(&esc);
            return jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory");
        }
        sp.p = esc.p;
        sp.len = esc.len;
    }
    rc = jn_hl7_set_raw(h, &o->dst, sp.p, sp.len, 0, err);
    jn_buf_reset(&esc);
    if (rc != 0) {
        struct jn_err e = *err;
        return jn_err_set(err, rc, "hl7-map: copy %s: %s", o->dst_text, e.msg);
    }
    return 0;
}

static int do_set(const struct hm_op *o, const struct jn_msg *in, struct jn_hl7_msg **h,
                  struct jn_err *err)
{
    struct jn_buf v = JN_BUF_INIT, esc = JN_BUF_INIT;
    struct jn_err e;
    int rc = jn_template_render(o->val, in, &v, &e);

    if (rc == 0 && jn_hl7_escape(&(*h)->d, v.p ? v.p : "", v.len, &esc) != 0) {
        rc = jn_err_set(&e, JN_ENOMEM, "out of memory");
    }
    if (rc == 0) {
        rc = jn_hl7_set_raw(h, &o->dst, esc.p ? esc.p : "", esc.len, 0, &e);
    }
    jn_buf_reset(&v);
    jn_buf_reset(&esc);
    return rc ? jn_err_set(err, rc, "hl7-map: set %s: %s", o->dst_text, e.msg) : 0;
}

/* Deletes every segment with o's id: the bytes without them, parsed anew. */
static int remove_segs(const struct hm_op *o, struct jn_hl7_msg **h, struct jn_err *err)
{
    const struct jn_hl7_msg *m = *h;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_hl7_msg *nm = NULL;
    size_t from = 0;
    int rc = 0, any = 0;

    for (size_t i = 0; i < m->nsegs && rc == 0; i++) {
        const struct jn_hl7_seg *s = &m->segs[i];
        size_t off = (size_t)(s->text.p - m->buf);
        if (strcmp(s->id, o->dst.seg) != 0) {
            continue;
        }
        any = 1;
        rc = jn_buf_append(&b, m->buf + from, off - from);
        from = off + s->text.len + s->eol.len;
        if (s->eol.len == 0 && b.len > 0) {
            /* The last segment had no end: drop the end of the one before it, so the
             * message still ends as it did. */
            while (b.len > 0 && (b.p[b.len - 1] == '\r' || b.p[b.len - 1] == '\n')) {
                b.len--;
            }
        }
    }
    if (!any) {
        return 0;
    }
    if (rc == 0) {
        rc = jn_buf_append(&b, m->buf + from, m->len - from);
    }
    if (rc == 0) {
        rc = jn_hl7_parse(b.p, b.len, 0, &nm, err);
    } else {
        rc = jn_err_set(err, JN_ENOMEM, "out of memory");
    }
    jn_buf_reset(&b);
    if (rc == 0) {
        jn_hl7_free(*h);
        *h = nm;
    }
    return rc;
}

static int do_remove(const struct hm_op *o, struct jn_hl7_msg **h, struct jn_err *err)
{
    struct jn_hl7_span sp;
    struct jn_err e;
    int rc;

    if (o->whole_seg) {
        rc = remove_segs(o, h, &e);
    } else if (jn_hl7_get(*h, &o->dst, &sp) != 1) {
        return 0; /* absent: nothing to empty, and nothing added */
    } else {
        rc = jn_hl7_set_raw(h, &o->dst, "", 0, 0, &e);
    }
    return rc ? jn_err_set(err, rc, "hl7-map: remove %s: %s", o->dst_text, e.msg) : 0;
}

static int hl7_map_transform(const struct jn_service *svc, struct jn_msg *in,
                             struct jn_msg_list *out, struct jn_err *err)
{
    const struct hl7_map_conf *c = svc->conf;
    const struct hm_state *st = svc->state;
    struct jn_hl7_msg *h = NULL;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_msg *m = NULL;
    struct jn_err e;
    int rc;

    rc = jn_hl7_parse(in->payload, in->len, 0, &h, &e);
    if (rc != 0) {
        return jn_err_set(err, rc, rc == JN_ENOMEM ? "hl7-map: out of memory"
                                                    : "hl7-map: the payload is not HL7: %s", e.msg);
    }
    for (size_t i = 0; rc == 0 && i < c->copy.n; i++) {
        rc = do_copy(&st->copy[i], in, &h, c->strict, err);
    }
    for (size_t i = 0; rc == 0 && i < c->set.n; i++) {
        rc = do_set(&st->set[i], in, &h, err);
    }
    for (size_t i = 0; rc == 0 && i < c->remove.n; i++) {
        rc = do_remove(&st->remove[i], &h, err);
    }
    if (rc == 0 && (jn_hl7_write(h, &b) != 0 || (m = jn_msg_copy(in)) == NULL)) {
        rc = jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory");
    }
    jn_hl7_free(h);
    if (rc == 0) {
        char *p = jn_malloc(b.len + 1);
        if (p == NULL) {
            rc = jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory");
        } else {
            memcpy(p, b.p, b.len);
            p[b.len] = '\0';
            jn_msg_set_payload(m, p, b.len);
            rc = jn_msg_list_push(out, m) ? jn_err_set(err, JN_ENOMEM, "hl7-map: out of memory")
                                          : 0;
            m = NULL;
        }
    }
    jn_msg_unref(&m);
    jn_buf_reset(&b);
    return rc;
}

const struct jn_service_def jn_service_hl7_map = {
    .name = "hl7-map",
    .desc = "Set, copy and remove HL7 fields by path (MSH-5, PID-3.1), without a script",
    .opts = hl7_map_opts,
    .conf_size = sizeof(struct hl7_map_conf),
    .check = hl7_map_check,
    .init = hl7_map_init,
    .destroy = hl7_map_destroy,
    .transform = hl7_map_transform,
};
