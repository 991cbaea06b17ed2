/*
 * jn_service_inst: a config's service blocks made into running instances (jn_service.h),
 * for the broker and for the offline `junction test`, so that both run the same instances
 * built the same way. Model: Fluent Bit's flb_filter_init_all over its config's instances.
 */
#include <stdio.h>

#include "jn_service.h"
#include "jn_spec.h"

int jn_services_init(struct jn_service *svcs, const struct jn_cfg_service *cs, size_t n,
                     struct jn_err *err)
{
    for (size_t i = 0; i < n; i++) {
        struct jn_service *s = &svcs[i];
        s->def = cs[i].def;
        s->name = cs[i].name;
        s->conf = cs[i].conf;
        snprintf(s->log_prefix, sizeof(s->log_prefix), "%s.%s", cs[i].def->name, cs[i].name);
        if (s->def->init != NULL) {
            int rc = s->def->init(s, err);
            if (rc != 0) {
                s->def = NULL; /* not initialised: no destroy */
                return rc;
            }
        }
    }
    return 0;
}

void jn_services_destroy(struct jn_service *svcs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (svcs[i].def != NULL && svcs[i].def->destroy != NULL) {
            svcs[i].def->destroy(&svcs[i]);
        }
    }
}
