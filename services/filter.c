/*
 * filter: drop the message unless a condition holds.
 *
 *   services:
 *     only-adt:
 *       type: filter
 *       when: hl7("MSH-9.1") == "ADT" && header("X-Test") != "yes"
 *
 * The condition is the route `when:` language (adapters/jn_cond.h), compiled once at load: a
 * message it matches passes on unchanged (the same message, by reference), any other is
 * dropped, which the broker records as `filtered` in the action log, as it does for a lua
 * script returning nil. A condition that does not compile is a `junction check` error at its
 * column in the config. Modelled on Mirth's source filters and Redpanda Connect's
 * `mapping: root = if ... { deleted() }`, kept to the one language routes already use.
 */
#include <stdio.h>
#include <string.h>

#include "jn_cond.h"
#include "jn_services.h"

struct filter_conf {
    char *when;
};

/* The load-time check: the same compile as init, reported at the value's position. */
static int filter__check_when(const void *value, const struct jn_node *node, const char *what,
                              struct jn_diag *d)
{
    const char *const *w = value;
    struct jn_pos p = node->pos;
    struct jn_diag cd;
    struct jn_cond *c;
    char prefix[256];

    if (!node->plain && p.col > 0) {
        p.col++; /* the opening quote, as routes' when: */
    }
    jn_diag_init(&cd);
    c = jn_cond_compile(*w, &p, &cd);
    snprintf(prefix, sizeof(prefix), "%s: ", what);
    jn_diag_take(d, &cd, prefix);
    jn_diag_free(&cd);
    if (c == NULL) {
        return 1;
    }
    jn_cond_free(c);
    return 0;
}

static const struct jn_opt filter_opts[] = {
    JN_OPT_STR("when", NULL, JN_OPT_REQUIRED, struct filter_conf, when,
               "The condition a message must meet to pass, in the language of a route's when: "
               "(docs/routes.md); any other message is dropped and recorded as filtered",
               .validate = filter__check_when),
    JN_OPT_END
};

static void filter_destroy(struct jn_service *svc)
{
    jn_cond_free(svc->state);
    svc->state = NULL;
}

static int filter_init(struct jn_service *svc, struct jn_err *err)
{
    const struct filter_conf *c = svc->conf;
    struct jn_diag d;

    jn_diag_init(&d);
    svc->state = jn_cond_compile(c->when, NULL, &d);
    if (svc->state == NULL) {
        int rc = d.n ? jn_err_set(err, JN_EINVAL, "filter: when: %s", d.msgs[0])
                     : jn_err_set(err, JN_ENOMEM, "filter: out of memory");
        jn_diag_free(&d);
        return rc;
    }
    jn_diag_free(&d);
    return 0;
}

static int filter_transform(const struct jn_service *svc, struct jn_msg *in,
                            struct jn_msg_list *out, struct jn_err *err)
{
    if (!jn_cond_eval(svc->state, in)) {
        return 0; /* nothing pushed: filtered */
    }
    if (jn_msg_list_push(out, jn_msg_ref(in)) != 0) {
        return jn_err_set(err, JN_ENOMEM, "filter: out of memory");
    }
    return 0;
}

const struct jn_service_def jn_service_filter = {
    .name = "filter",
    .desc = "Drops the message unless a condition (the route when: language) holds",
    .opts = filter_opts,
    .conf_size = sizeof(struct filter_conf),
    .init = filter_init,
    .transform = filter_transform,
    .destroy = filter_destroy,
};
