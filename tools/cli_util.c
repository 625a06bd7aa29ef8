/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_create_options.h"

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, CLI_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_lib_error(const char *fmt, ...)
{
    /* Read the message first: nothing below may call into the library and replace it. */
    const char *reason = img_last_error();
    char context[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    /*
     * The library's messages name their file ("disk.qcow2: ..."); where this line is that
     * name alone ("imgutil: disk.qcow2: ..."), as qemu-img words it, it is not said twice.
     */
    const char *colon = strstr(reason, ": ");
    char named[4096];
    size_t n = colon ? (size_t)(colon - reason) : 0;
    if (n > 0 && n < sizeof(named)) {
        memcpy(named, reason, n);
        named[n] = '\0';
        if (strcmp(context, named) == 0)
            reason = colon + 2;
    }
    fprintf(stderr, CLI_NAME ": %s: %s\n", context, reason);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, CLI_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '" CLI_NAME " --help' for more information\n");
    va_end(ap);
    return CLI_EXIT_FAILURE;
}

int cli_getopt_error(int c, char **argv)
{
    /*
     * A long option is named by the word itself; a short one by optopt, because the word may
     * be a cluster such as "-Uz".
     */
    const char *word = optind > 0 ? argv[optind - 1] : "";
    char short_name[3] = {'-', (char)optopt, '\0'};
    const char *name = (strncmp(word, "--", 2) == 0 || !optopt) ? word : short_name;
    if (c == ':')
        return cli_usage_error("missing argument for option '%s'", name);
    return cli_usage_error("unrecognized option '%s'", name);
}

/* Power-of-1024 exponent for a size suffix, or -1. */
static int suffix_shift(char c)
{
    switch (toupper((unsigned char)c)) {
    case 'B':
        return 0;
    case 'K':
        return 10;
    case 'M':
        return 20;
    case 'G':
        return 30;
    case 'T':
        return 40;
    case 'P':
        return 50;
    case 'E':
        return 60;
    default:
        return -1;
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int cli_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    uint64_t integer = 0;
    double fraction = 0;
    bool overflow = false;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && hex_digit(p[2]) >= 0) {
        for (p += 2; hex_digit(*p) >= 0; p++) {
            if (integer > (UINT64_MAX >> 4))
                overflow = true;
            integer = (integer << 4) | (uint64_t)hex_digit(*p);
        }
    } else {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
            unsigned d = (unsigned)(*p - '0');
            if (integer > (UINT64_MAX - d) / 10)
                overflow = true;
            integer = integer * 10 + d;
        }
        if (*p == '.') {
            /* Digits only: "1.5e3" must not be read as an exponent (E is the exabyte suffix). */
            char digits[64] = "0.";
            const char *start = ++p;
            while (isdigit((unsigned char)*p))
                p++;
            size_t n = (size_t)(p - start);
            if (n > sizeof(digits) - 3)
                n = sizeof(digits) - 3;
            memcpy(digits + 2, start, n);
            digits[2 + n] = '\0';
            fraction = strtod(digits, NULL);
        }
    }

    int shift = 0;
    if (*p) {
        shift = suffix_shift(*p);
        if (shift < 0)
            return -EINVAL;
        p++;
    }
    if (*p)
        return -EINVAL;
    /* A fraction of a byte means nothing: qemu-img wants a multiplying suffix with it. */
    if (shift == 0 && fraction != 0)
        return -EINVAL;
    if (overflow || integer > ((uint64_t)INT64_MAX >> shift))
        return -ERANGE;

    uint64_t value = integer << shift;
    /* The fraction is rounded to the nearest byte, as qemu-img rounds it. */
    uint64_t extra = (uint64_t)(fraction * (double)(1ull << shift) + 0.5);
    if (value > (uint64_t)INT64_MAX - extra)
        return -ERANGE;
    *out = value + extra;
    return 0;
}

void cli_size_error(int error, const char *what)
{
    if (error == -ERANGE) {
        cli_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
        return;
    }
    cli_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
    cli_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

void cli_size_to_str(uint64_t value, char *buf, size_t cap)
{
    static const char *const units[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    /*
     * Switch to the next unit once the number would reach 1000 in the current one, so sizes
     * read as "0.977 KiB" rather than "1000 B": the same rule as qemu-img, so texts match.
     */
    double scaled = (double)value / (1000.0 / 1024.0);
    unsigned unit = 0;
    while (unit + 1 < sizeof(units) / sizeof(units[0]) &&
           scaled >= (double)(1ull << (10 * (unit + 1))))
        unit++;
    snprintf(buf, cap, "%0.3g %sB", (double)value / (double)(1ull << (10 * unit)), units[unit]);
}

int cli_parse_output(const char *arg, enum cli_output *out)
{
    if (strcmp(arg, "human") == 0) {
        *out = CLI_OUTPUT_HUMAN;
        return 0;
    }
    if (strcmp(arg, "json") == 0) {
        *out = CLI_OUTPUT_JSON;
        return 0;
    }
    cli_error("--output must be used with human or json as argument.");
    return -1;
}

static int ensure_opts(img_opts **opts)
{
    if (*opts)
        return 0;
    if (img_opts_new(opts) < 0) {
        cli_lib_error("options");
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

int cli_opts_add(img_opts **opts, const char *text, bool *help)
{
    if (cli_opts_ask_help(text)) {
        *help = true;
        return 0;
    }
    if (ensure_opts(opts))
        return CLI_EXIT_FAILURE;
    if (img_opts_parse(*opts, text) < 0) {
        cli_error("%s", img_last_error());
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

int cli_opts_set(img_opts **opts, const char *key, const char *value)
{
    if (ensure_opts(opts))
        return CLI_EXIT_FAILURE;
    if (img_opts_set(*opts, key, value) < 0) {
        cli_lib_error("option %s", key);
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

int cli_open_image(img **out, const char *path, const char *format, unsigned flags)
{
    if ((flags & IMG_OPEN_FORCE_SHARE) && (flags & IMG_OPEN_READ_WRITE)) {
        cli_error("Could not open '%s': force-share=on can only be used with read-only images",
                  path);
        return -EINVAL;
    }
    int ret = img_open(out, path, format, flags, NULL);
    if (ret < 0) {
        cli_lib_error("Could not open '%s'", path);
        return ret;
    }
    const char *guessed = img_get_format(*out);
    if ((flags & IMG_OPEN_READ_WRITE) && !format &&
        img_format_supports(guessed, "probe_fallback") == 1) {
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed %s.\n"
                "         Automatically detecting the format is dangerous for %s images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the '%s' format explicitly to remove the restrictions.\n",
                path, guessed, guessed, guessed);
    }
    return 0;
}

void cli_print_json(const char *json)
{
    size_t len = strlen(json);
    fputs(json, stdout);
    if (len == 0 || json[len - 1] != '\n')
        fputc('\n', stdout);
}

bool cli_is_cache_mode(const char *mode)
{
    static const char *const modes[] = {"none",       "off",    "writeback", "writethrough",
                                        "directsync", "unsafe", NULL};
    for (size_t i = 0; modes[i]; i++)
        if (strcmp(mode, modes[i]) == 0)
            return true;
    return false;
}
