/*
 * set-header: remove, set and add message headers, with values from templates.
 *
 *   services:
 *     stamp:
 *       type: set-header
 *       remove: [X-Debug]
 *       set: {X-Source: "{channel}", X-Received: "{date}"}
 *       add: {Via: junction}
 *
 * The same job as Fluent Bit's modify filter and an HTTP proxy's header rules. The order is
 * fixed (remove, then set, then add) so a config reads the same whatever order its keys are
 * written in. Templates render against the message as it arrived, so `set` can copy a header
 * that `remove` takes away ({header.X-Old}) and the result never depends on option order.
 */
#include <string.h>
#include <strings.h>

#include "jn_buf.h"
#include "jn_mem.h"
#include "jn_services.h"
#include "jn_template.h"

struct set_header_conf {
    struct jn_strlist remove;
    struct jn_strmap set;
    struct jn_strmap add;
};


/* An HTTP token (RFC 9110 5.6.2): the strictest of the header rules our channels speak, so a
 * name that passes here is valid on every channel. */
static int is_token(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c) != NULL)) {
            return 0;
        }
    }
    return 1;
}

/* Hooks of the options (jn_opt validate): each error at the entry's own key or value. what is
 * "service 'x' (set-header): set". */
static int set_header__bad_name(struct jn_diag *d, const struct jn_pos *pos, const char *what,
                                const char *name)
{
    jn_diag_add(d, pos, "%s: '%s' is not a valid header name, expected letters, digits and "
                "!#$%%&'*+-.^_`|~", what, name);
    return 1;
}

static int set_header__check_map(const void *value, const struct jn_node *node, const char *what,
                                 struct jn_diag *d)
{
    const struct jn_strmap *m = value;
    int errs = 0;

    /* Called only when every entry parsed, so entry i is node's pair i. */
    for (size_t i = 0; i < m->n && i < node->n; i++) {
        struct jn_err e;
        if (!is_token(m->k[i])) {
            errs += set_header__bad_name(d, &node->keys[i]->pos, what, m->k[i]);
        }
        if (jn_template_check(m->v[i], &e) != 0) {
            jn_diag_add(d, &node->vals[i]->pos, "%s.%s: %s", what, m->k[i], e.msg);
            errs++;
        } else if (strpbrk(m->v[i], "\r\n") != NULL) {
            jn_diag_add(d, &node->vals[i]->pos, "%s.%s: a header value cannot contain a line "
                        "break", what, m->k[i]);
            errs++;
        }
    }
    return errs;
}

static int set_header__check_remove(const void *value, const struct jn_node *node,
                                    const char *what, struct jn_diag *d)
{
    const struct jn_strlist *l = value;
    int errs = 0;

    for (size_t i = 0; i < l->n; i++) {
        const struct jn_node *at = node->kind == JN_NODE_SEQ && i < node->n ? node->vals[i] : node;
        if (!is_token(l->v[i])) {
            errs += set_header__bad_name(d, &at->pos, what, l->v[i]);
        }
    }
    return errs;
}

static const struct jn_opt set_header_opts[] = {
    JN_OPT_STRLIST("remove", NULL, JN_OPT_RELOADABLE, struct set_header_conf, remove,
                   "Header names to delete, every occurrence, compared without regard to case. "
                   "Applied first",
                   .validate = set_header__check_remove),
    JN_OPT_STRMAP("set", JN_OPT_RELOADABLE, struct set_header_conf, set,
                  "Header name -> template ({id}, {channel}, {date}, {time}, {ts}, "
                  "{header.NAME}); replaces the header of that name (any case; later duplicates "
                  "are dropped) or adds it. Applied after remove; templates see the message as "
                  "it arrived",
                  .validate = set_header__check_map),
    JN_OPT_STRMAP("add", JN_OPT_RELOADABLE, struct set_header_conf, add,
                  "Header name -> template; always appended, keeping existing headers of that "
                  "name. Applied last",
                  .validate = set_header__check_map),
    JN_OPT_END
};

static int set_header_check(const void *conf, const struct jn_node *node, struct jn_diag *d)
{
    const struct set_header_conf *c = conf;

    if (c->remove.n == 0 && c->set.n == 0 && c->add.n == 0) {
        jn_diag_add(d, node ? &node->pos : NULL,
                    "set-header: nothing to do, expected at least one of: remove, set, add");
        return 1;
    }
    return 0;
}

/* Replaces the value of the first header called name (any case) and drops the later ones, or
 * appends it. The copy is ours, so editing its header array directly is allowed. */
static int header_replace(struct jn_msg *m, const char *name, const char *value)
{
    int found = 0;
    size_t w = 0;

    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].name, name) != 0) {
            m->hdrs[w++] = m->hdrs[i];
        } else if (!found) {
            if (jn_header_set_value(&m->hdrs[i], value) != 0) {
                /* Nothing was dropped before the first match (w == i): m is unchanged. */
                return JN_ENOMEM;
            }
            found = 1;
            m->hdrs[w++] = m->hdrs[i];
        } else {
            jn_header_clear(&m->hdrs[i]);
        }
    }
    m->nhdrs = w;
    return found ? 0 : jn_msg_header_add(m, name, value);
}

/* Renders tmpl against in into b (reset first); the value is b->p or "". */
static int render(const char *opt, const char *name, const char *tmpl, const struct jn_msg *in,
                  struct jn_buf *b, struct jn_err *err)
{
    struct jn_err e;
    int rc;

    jn_buf_reset(b);
    rc = jn_template_render(tmpl, in, b, &e);
    if (rc != 0) {
        return jn_err_set(err, rc, "set-header: %s %s: %s", opt, name, e.msg);
    }
    if (b->p != NULL && strpbrk(b->p, "\r\n") != NULL) {
        /* A line break would let a header from one channel inject headers into another. */
        return jn_err_set(err, JN_EINVAL, "set-header: %s %s: the value contains a line break",
                          opt, name);
    }
    return 0;
}

static int set_header_transform(const struct jn_service *svc, struct jn_msg *in,
                                struct jn_msg_list *out, struct jn_err *err)
{
    const struct set_header_conf *c = svc->conf;
    struct jn_buf b = JN_BUF_INIT;
    struct jn_msg *m = jn_msg_copy(in);
    int rc = 0;

    if (m == NULL) {
        return jn_err_set(err, JN_ENOMEM, "set-header: out of memory copying the message");
    }
    for (size_t i = 0; i < c->remove.n; i++) {
        jn_msg_header_del(m, c->remove.v[i]);
    }
    for (size_t i = 0; i < c->set.n && rc == 0; i++) {
        rc = render("set", c->set.k[i], c->set.v[i], in, &b, err);
        if (rc == 0 && header_replace(m, c->set.k[i], b.p ? b.p : "") != 0) {
            rc = jn_err_set(err, JN_ENOMEM, "set-header: out of memory setting %s",
                            c->set.k[i]);
        }
    }
    for (size_t i = 0; i < c->add.n && rc == 0; i++) {
        rc = render("add", c->add.k[i], c->add.v[i], in, &b, err);
        if (rc == 0 && jn_msg_header_add(m, c->add.k[i], b.p ? b.p : "") != 0) {
            rc = jn_err_set(err, JN_ENOMEM, "set-header: out of memory adding %s", c->add.k[i]);
        }
    }
    jn_buf_reset(&b);
    if (rc != 0) {
        jn_msg_unref(&m);
        return rc;
    }
    if (jn_msg_list_push(out, m) != 0) {
        return jn_err_set(err, JN_ENOMEM, "set-header: out of memory");
    }
    return 0;
}

const struct jn_service_def jn_service_set_header = {
    .name = "set-header",
    .desc = "Remove, set and add message headers; values are templates",
    .opts = set_header_opts,
    .conf_size = sizeof(struct set_header_conf),
    .check = set_header_check,
    .transform = set_header_transform,
};
