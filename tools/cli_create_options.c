/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli_create_options.h"

#include <stdio.h>
#include <string.h>

#include "cli_util.h"

struct create_option {
    const char *name;
    const char *type; /* as qemu-img names it: str, size, num, bool (on/off) */
    const char *help;
};

/*
 * What img_create() accepts for each format, in qemu-img's (alphabetical) order. The
 * encryption keys are left out: the library takes them only to refuse encrypted images.
 */
static const struct create_option qcow2_options[] = {
    {"backing_file", "str", "File name of a base image"},
    {"backing_fmt", "str", "Image format of the base image"},
    {"cluster_size", "size", "qcow2 cluster size (a power of two from 512 to 2M, default 64k)"},
    {"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {"compression_type", "str",
     "Compression method used for image cluster compression (allowed values: zlib, zstd)"},
    {"data_file", "str", "File name of an external data file"},
    {"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
    {"extended_l2", "bool (on/off)", "Extended L2 tables"},
    {"extent_size_hint", "size", "Extent size hint for the image file (accepted, no effect)"},
    {"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
    {"nocow", "bool (on/off)", "Turn off copy-on-write (accepted, no effect)"},
    {"preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {"refcount_bits", "num", "Width of a reference count entry in bits (1, 2, 4, ... 64)"},
    {"size", "size", "Virtual disk size"},
    {NULL, NULL, NULL},
};

static const struct create_option raw_options[] = {
    {"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
    {"size", "size", "Virtual disk size"},
    {NULL, NULL, NULL},
};

static const struct {
    const char *format;
    const struct create_option *options;
} formats[] = {
    {"qcow2", qcow2_options},
    {"raw", raw_options},
};

bool cli_opts_ask_help(const char *text)
{
    /* Items are split at single commas; ",," is a literal comma inside a value. */
    const char *p = text;
    for (;;) {
        const char *item = p;
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',') ? 2 : 1;
        size_t len = (size_t)(p - item);
        if ((len == 4 && strncmp(item, "help", 4) == 0) || (len == 1 && item[0] == '?'))
            return true;
        if (!*p)
            return false;
        p++;
    }
}

int cli_print_create_options(const char *format)
{
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        if (strcmp(formats[i].format, format) != 0)
            continue;
        printf("Supported %s options:\n", format);
        for (const struct create_option *o = formats[i].options; o->name; o++) {
            char key[64];
            snprintf(key, sizeof(key), "%s=<%s>", o->name, o->type);
            printf("  %-22s - %s\n", key, o->help);
        }
        return 0;
    }
    cli_error("Unknown file format '%s'", format);
    return CLI_EXIT_FAILURE;
}
