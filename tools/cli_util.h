/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the imgutil subcommands: messages, sizes, option parsing, opening. */
#ifndef CLI_UTIL_H
#define CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgutil.h"

#define CLI_NAME "imgutil"

/* Exit status of every subcommand on failure, as qemu-img uses it. */
#define CLI_EXIT_FAILURE 1

#if defined(__GNUC__)
#define CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF(fmt, args)
#endif

enum cli_output {
    CLI_OUTPUT_HUMAN,
    CLI_OUTPUT_JSON,
};

/* "imgutil: <message>" on stderr. */
void cli_error(const char *fmt, ...) CLI_PRINTF(1, 2);

/* "imgutil: <what>: <img_last_error()>" on stderr, for a failed library call. */
void cli_lib_error(const char *fmt, ...) CLI_PRINTF(1, 2);

/*
 * A command line the subcommand cannot accept: prints the message and the pointer to --help
 * and returns CLI_EXIT_FAILURE, so callers can `return cli_usage_error(...)`.
 */
int cli_usage_error(const char *fmt, ...) CLI_PRINTF(1, 2);

/*
 * Reports what getopt_long() returned for a bad option (':' missing argument, '?' unknown) the
 * way qemu-img words it. Returns CLI_EXIT_FAILURE. The option string must start with ':'.
 */
int cli_getopt_error(int c, char **argv);

/* Prints the full usage text on stdout (--help and every subcommand's -h). */
void cli_print_help(void);

/* Whether `mode` is a cache mode qemu-img accepts for -t and -T (the library caches itself). */
bool cli_is_cache_mode(const char *mode);

/*
 * Parses a size as qemu-img does: a decimal integer (or 0x hex), an optional fraction, and an
 * optional suffix b/B (bytes) or k/K, M, G, T, P, E (powers of 1024). A fraction needs a
 * multiplying suffix. Returns 0, -EINVAL for malformed text or -ERANGE when above INT64_MAX.
 */
int cli_parse_size(const char *text, uint64_t *out);

/*
 * Reports a size that cli_parse_size() refused, naming it as qemu-img does:
 * "Invalid <what> specified. ..." with the accepted suffixes or the accepted range.
 */
void cli_size_error(int error, const char *what);

/* Formats a byte count as qemu-img's size_to_str(): "0 B", "388 KiB", "1.33 MiB", "1 GiB". */
void cli_size_to_str(uint64_t value, char *buf, size_t cap);
#define CLI_SIZE_STR_MAX 32

/* Parses the argument of --output. Prints qemu-img's message and returns -1 when invalid. */
int cli_parse_output(const char *arg, enum cli_output *out);

/*
 * Adds "-o" text to `*opts`, creating the set on first use. A request for the list of options
 * ("help" or "?" among the items) sets *help instead, for the caller to print once the format
 * is known. Returns 0 or CLI_EXIT_FAILURE after printing why the text was refused.
 */
int cli_opts_add(img_opts **opts, const char *text, bool *help);

/* img_opts_set() that creates the set on first use and reports failures. */
int cli_opts_set(img_opts **opts, const char *key, const char *value);

/*
 * Opens an image, printing "imgutil: Could not open 'PATH': <reason>" on failure. When a
 * writable image was opened without a format and probing chose raw, prints qemu-img's warning
 * that writes to the first block are restricted. Returns 0 or a negative errno.
 */
int cli_open_image(img **out, const char *path, const char *format, unsigned flags);

/* Prints a JSON document returned by the library followed by exactly one newline. */
void cli_print_json(const char *json);

#endif
