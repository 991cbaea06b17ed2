/*
 * jn_inspect: the commands that read (and, for replay, write) a data_dir's journal directly:
 *
 *   junction trace ID                   a message's whole history from the action log
 *   junction log [--since T] [--until T]  the action log in a time range
 *   junction dlq list                   dead letters with their last error and attempts
 *   junction dlq replay ID|--all        dead letters back into their destination's queue
 *
 * Reading works while a broker runs (LMDB readers never block the writer). Replay writes, so it
 * takes the data_dir's lock and refuses while a broker holds it: stop the broker, replay, start
 * it, and the replayed messages are delivered. Each returns a process exit code.
 */
#ifndef JN_INSPECT_H
#define JN_INSPECT_H

#include <stdint.h>
#include <stdio.h>

#include "jn_config.h"

int jn_inspect_trace(const struct jn_config *cfg, const char *id, FILE *out);
/* since/until: as jn_parse_when() (jn_opt.h) takes them, or NULL. Exit code 2 when either is bad. */
int jn_inspect_log(const struct jn_config *cfg, const char *since, const char *until, FILE *out);
int jn_inspect_dlq_list(const struct jn_config *cfg, FILE *out);
/* id NULL: all. */
int jn_inspect_dlq_replay(const struct jn_config *cfg, const char *id, FILE *out);

#endif
