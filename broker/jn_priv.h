/*
 * jn_priv: running as a service user. junction may be started as root so that it can bind
 * ports below 1024 and open files only root may; once its listeners are bound and the journal
 * is open it becomes the configured user for good (`junction run --user NAME`,
 * `junction.user`). Modelled on the privilege drop of OpenSSH's and Mosquitto's daemons:
 * setgid, then the user's supplementary groups, then setuid, then a check that root cannot be
 * regained.
 */
#ifndef JN_PRIV_H
#define JN_PRIV_H

#include "jn_err.h"

/* Becomes user (a name, or a numeric uid) for good; already being that user is 0 too.
 * Returns 0, or JN_ENOENT (no such user) or JN_EIO (not permitted, e.g. not started as root)
 * with err. glibc applies set*id to every thread of the process, so threads already started
 * (journal writer, workers) change with it. */
int jn_priv_drop(const char *user, struct jn_err *err);

#endif
