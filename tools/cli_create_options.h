/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The -o options that create (and convert, for its target) pass to img_create(): -o help. */
#ifndef CLI_CREATE_OPTIONS_H
#define CLI_CREATE_OPTIONS_H

#include <stdbool.h>

/* True when the -o text asks for the list ("help" or "?" among its comma-separated items). */
bool cli_opts_ask_help(const char *text);

/*
 * Prints the options img_create() takes for `format` as qemu-img's "-o help" does. Returns 0,
 * or CLI_EXIT_FAILURE after "Unknown file format" for a format that cannot be created.
 */
int cli_print_create_options(const char *format);

#endif
