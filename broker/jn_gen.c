/*
 * jn_gen: the broker's config generations (struct jn_gen, jn_broker_int.h): a config with its
 * services made running, held by the messages routed under it. jn_reload.c makes a new one
 * for each reload; the routing (jn_route.c) and the ingest (jn_broker.c) hold and let go of
 * them. Loop thread only.
 */
#include "jn_broker_int.h"
#include "jn_mem.h"
#include "jn_time.h"

struct jn_gen *jn_gen__new(const struct jn_config *cfg, struct jn_err *err)
{
    struct jn_gen *g = jn_calloc(1, sizeof(*g));

    if (g == NULL || (g->svcs = jn_calloc(cfg->nservices + 1, sizeof(*g->svcs))) == NULL) {
        jn_free(g);
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    g->cfg = cfg;
    g->nsvcs = cfg->nservices;
    if (jn_services_init(g->svcs, cfg->services, cfg->nservices, err) != 0) {
        jn_services_destroy(g->svcs, g->nsvcs);
        jn_free(g->svcs);
        jn_free(g);
        return NULL;
    }
    return g;
}

void jn_gen__services_free(struct jn_gen *g)
{
    if (g->svcs != NULL) {
        jn_services_destroy(g->svcs, g->nsvcs);
        jn_free(g->svcs);
        g->svcs = NULL;
    }
}

/* b runs g from now on. */
void jn_gen__use(struct jn_broker *b, struct jn_gen *g)
{
    for (size_t i = 0; i < g->nsvcs; i++) {
        g->svcs[i].abort = &b->route_abort; /* the stop ends long waits (jn_service.h) */
    }
    b->gen = g;
    b->cfg = g->cfg;
    b->svcs = g->svcs;
    b->nsvcs = g->nsvcs;
    b->loaded_us = jn_now_us();
}

int jn_gen__first(struct jn_broker *b, struct jn_err *err)
{
    struct jn_gen *g = jn_gen__new(b->cfg, err);

    if (g == NULL) {
        return err->code ? err->code : JN_ENOMEM;
    }
    jn_gen__use(b, g);
    return 0;
}

void jn_gen__release(struct jn_broker *b, struct jn_gen *g)
{
    g->jobs--;
    if (g != b->gen && g->jobs == 0) {
        jn_gen__services_free(g);
    }
}

void jn_gen__free_all(struct jn_broker *b)
{
    while (b->gen != NULL) {
        struct jn_gen *g = b->gen;
        b->gen = g->older;
        jn_gen__services_free(g);
        if (g->owned != NULL && b->reload_free != NULL) {
            b->reload_free(g->owned);
        }
        jn_free(g);
    }
    b->cfg = NULL;
    b->svcs = NULL;
    b->nsvcs = 0;
}

