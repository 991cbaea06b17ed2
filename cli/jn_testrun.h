/*
 * jn_testrun: `junction test`, route tests run offline (docs/testing-routes.md).
 *
 *   junction test [-c junction.yaml] [--junit FILE] [FILE.yaml ...]
 *
 * Each test file lists cases: an input message (channel, headers, payload or payload_file) and
 * what is expected of it per OUT channel (count, payload, json, hl7, headers, regex), or a dead
 * letter's reason, or that a service filtered it. A case's message goes through the config's
 * routes and services by the same code the broker routes with (cfg->router->route and the
 * instances of jn_services_init), but nothing is started: no listener, no OUT channel, no
 * journal, no network. What the broker would queue for each destination is compared instead.
 *
 * Without FILE arguments the files are the .yaml files of <the config's folder>/tests/, in
 * name order.
 *
 * Model: Redpanda Connect's `rpk connect test` (cases beside the config, output checks per
 * output), with JUnit XML as CI systems read it.
 */
#ifndef JN_TESTRUN_H
#define JN_TESTRUN_H

#include <stdio.h>

#include "jn_spec.h"

struct jn_testrun_opts {
    const struct jn_config *cfg; /* borrowed */
    const char *config_path;     /* the file cfg was loaded from; NULL for the embedded one */
    char **files;                /* test files given on the command line (may be 0 of them) */
    int nfiles;
    const char *junit;           /* write JUnit XML here, or NULL */
};

/* Runs every case of every file, one line each to out (errors of the test files to err).
 * Returns the exit code: 0 all passed, 1 one or more failed, 2 a test file (or the JUnit file,
 * or a service's init) could not be used. */
int jn_testrun_main(const struct jn_testrun_opts *o, FILE *out, FILE *err);

#endif
