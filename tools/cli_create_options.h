/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The -o options that create (and convert, for its target) pass to img_create(): "-o help" and
 * the "Formatting ..." line, both laid out from the format's own table
 * (img_format_options_json). The CLI keeps no list of any format's options.
 */
#ifndef CLI_CREATE_OPTIONS_H
#define CLI_CREATE_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgutil.h"

/* True when the -o text asks for the list ("help" or "?" among its comma-separated items). */
bool cli_opts_ask_help(const char *text);

/*
 * Prints the options img_create() takes for `format` as qemu-img's "-o help" does. Returns 0,
 * or CLI_EXIT_FAILURE after "Unknown file format" (or "does not support image creation").
 */
int cli_print_create_options(const char *format);

/*
 * Prints qemu-img's "Formatting 'FILE', fmt=FORMAT ..." line: the format's options in its
 * table's order, each with the value given in `opts`, else its default when it has one (size
 * and number options as byte counts), then the keys in `given` (in the user's order) that
 * the table does not list.
 */
void cli_print_formatting(const char *filename, const char *format, uint64_t size,
                          const img_opts *opts, char *const *given, size_t given_count);

#endif
