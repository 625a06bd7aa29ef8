/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Operations on an image, in a one-line text form that the driver both prints (the trace of a
 * random run) and reads (a script), so that any failing run can be replayed exactly:
 *
 *   write OFFSET LENGTH DATASEED      img_pwrite of pattern_fill(DATASEED) bytes
 *   zero OFFSET LENGTH                img_zero(flags 0)
 *   zero-unmap OFFSET LENGTH          img_zero(IMG_ZERO_MAY_UNMAP)
 *   discard OFFSET LENGTH             img_discard
 *   resize SIZE [PREALLOCATION]       img_resize (IMG_RESIZE_SHRINK when SIZE is smaller)
 *   flush | reopen | verify           img_flush; close and open again; compare everything
 *   snapshot-create|snapshot-apply|snapshot-delete NAME
 *   save FILE                         the expected guest content, as a raw file
 */
#ifndef WRITE_OPS_H
#define WRITE_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pattern.h"

enum op_kind {
    OP_WRITE,
    OP_ZERO,
    OP_ZERO_UNMAP,
    OP_DISCARD,
    OP_RESIZE,
    OP_FLUSH,
    OP_REOPEN,
    OP_VERIFY,
    OP_SNAPSHOT_CREATE,
    OP_SNAPSHOT_APPLY,
    OP_SNAPSHOT_DELETE,
    OP_SAVE,
};

#define OP_NAME_MAX 256

struct op {
    enum op_kind kind;
    uint64_t offset; /* resize: the new size */
    uint64_t length;
    uint64_t seed;
    char name[OP_NAME_MAX]; /* snapshot name, save file, resize preallocation ("" = none) */
};

/* A whole unsigned number (decimal, 0x hex or 0 octal), as operations and drivers take them. */
bool op_parse_number(const char *word, uint64_t *out);

/* Parses one line (without comments or blank lines: the caller skips those). 0 or -1. */
int op_parse(const char *line, struct op *op);
/* The line form of `op`, without a newline. */
void op_format(const struct op *op, char *buf, size_t size);

/* What the random generator may do, and the geometry it aims its offsets at. */
struct opgen {
    struct rng rng;
    uint64_t cluster;    /* cluster size (the raw format: 4096) */
    uint64_t subcluster; /* extended L2 subcluster size, or the cluster size */
    uint64_t min_size, max_size;
    uint64_t max_length;  /* longest write or zero; 0: the default (a few MiB) */
    bool resize;          /* grow and shrink */
    bool resize_prealloc; /* grow with a preallocation mode now and then */
    bool discard;         /* img_discard */
    bool raw;             /* the raw format (no "metadata" preallocation) */
};

/* The next random operation for an image of `size` bytes. */
void opgen_next(struct opgen *g, uint64_t size, struct op *op);

#endif
