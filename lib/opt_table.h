/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Option tables: each backend declares the options it takes (name, type, default, allowed
 * values, help) once, and everything else is answered from that table: checking an option set
 * (with the same words for every format, qemu-img's), "-o help", and the public JSON query.
 */
#ifndef IMG_OPT_TABLE_H
#define IMG_OPT_TABLE_H

#include <stdint.h>

#include "imgutil.h"
#include "util/json.h"

enum opt_type {
    OPT_BOOL,   /* on/off (also true/false, yes/no, 1/0) */
    OPT_SIZE,   /* a byte count with qemu-img's suffixes (k, M, G, ...) */
    OPT_INT,    /* a non-negative integer (decimal, or 0x hex) */
    OPT_ENUM,   /* one of `values` */
    OPT_STRING, /* any text */
    OPT_PATH,   /* a file name */
};

/* Accepted, and checked, but left out of "-o help" and the JSON (options kept only to refuse). */
#define OPT_HIDDEN 1u

struct opt_desc {
    const char *name;
    enum opt_type type;
    /*
     * The default as text, or NULL when the option has no fixed default (the format decides,
     * or it is simply absent). As qemu-img, `create` prints the options that have one.
     */
    const char *def;
    const char *const *values; /* OPT_ENUM: the allowed values, NULL-terminated */
    uint64_t min, max;         /* OPT_SIZE, OPT_INT: inclusive range when max != 0 */
    const char *help;
    unsigned flags;
};

/* The end of a table: the entry whose name is NULL. */
#define OPT_TABLE_END                                                                              \
    {                                                                                              \
        .name = NULL                                                                               \
    }

/* The entry named `name`, or NULL. */
const struct opt_desc *opt_table_find(const struct opt_desc *table, const char *name);

/*
 * Checks every option of `opts` against `table`: an unknown key, or a value of the wrong type,
 * outside the range or not among the allowed values, is refused with -EINVAL and the message
 * qemu-img gives for it ("Invalid parameter 'bogus'", "Parameter 'preallocation' does not
 * accept value 'bogus'", ...), the same for every format. A NULL table accepts no option.
 */
int opt_table_check(const struct opt_desc *table, const img_opts *opts);

/* The type as qemu-img's "-o help" names it: str, size, num, bool (on/off). */
const char *opt_type_help_name(enum opt_type type);
/* The type as the JSON names it: bool, size, int, enum, string, path. */
const char *opt_type_json_name(enum opt_type type);

/* Appends the table (an array of objects) as member `key` of the object being written. */
void opt_table_json(const struct opt_desc *table, struct json_writer *w, const char *key);

#endif
