/* jn_record: `junction ctl record`, record-to-test (see jn_record.c, docs/testing-routes.md). */
#ifndef JN_RECORD_H
#define JN_RECORD_H

#include <stdio.h>

#include "jn_ctl.h"
#include "jn_spec.h"

/* Writes o->out: the last o->count (default 10) messages of IN channel o->channel, as the
 * broker at o->admin keeps them, as `junction test` cases expecting what cfg makes of each.
 * Exit code: 0, 1 (the API or a file failed, said on err), 2 (usage). */
int jn_record_main(const struct jn_ctl_opts *o, const struct jn_config *cfg, FILE *err);

#endif
