/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applies operations to an image through the public API and to its shadow, checking after
 * each one that the image reads back as the shadow around what it touched.
 */
#ifndef WRITE_RUNNER_H
#define WRITE_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgutil.h"
#include "ops.h"
#include "shadow.h"

/*
 * What a reader may see after img_discard. Discard only promises that the range need not be
 * kept, so each model names the contents that are acceptable; the shadow then takes what the
 * image actually reads, so later operations are checked exactly.
 */
enum discard_model {
    /*
     * qcow2 v3, or v2 without a backing file (as QEMU does): clusters the range covers whole
     * (the last one may end at the image's end) read as zeros; the partial clusters at the
     * edges read either unchanged or as zeros.
     */
    DISCARD_ZEROES,
    /*
     * qcow2 v2 over a backing file: v2 has no zero clusters, so a deallocated cluster shows
     * the backing file again. Each byte reads unchanged or as the backing file's data.
     */
    DISCARD_KEEP_OR_BACKING,
    /* A hint (raw: a punched hole, or nothing): each byte reads unchanged or as zero. */
    DISCARD_HINT,
};

struct saved_snapshot {
    char name[OP_NAME_MAX];
    struct shadow content;
};

struct runner {
    const char *path;
    const char *format; /* NULL: probe */
    img *img;
    struct shadow cur;
    struct shadow backing; /* guest content of the backing chain; size 0 without one */
    enum discard_model discard;
    uint64_t cluster;
    bool resize_may_refuse; /* growing may fail with -ENOTSUP (qcow2 v2 over a backing file) */
    /*
     * What a shrink cut off inside the last cluster: QEMU keeps that cluster allocated, so
     * growing again may show these bytes instead of zeros between the old end and the end of
     * its cluster (past that, the new space must read as zeros, never as backing data).
     */
    uint8_t *ghost;
    uint64_t ghost_start, ghost_len;
    struct saved_snapshot *snapshots;
    size_t snapshot_count;
    uint64_t applied;
    char when[400]; /* "after operation #N (TEXT)", for messages */
};

/* Open read-write. 0 or -1 (printed). */
int runner_open(struct runner *r);
int runner_apply(struct runner *r, const struct op *op);
/*
 * Flushes and closes, opens the image again read-only and compares all of it. When
 * `check_report` is set, writes img_check()'s JSON report there ("null" when the format has
 * no check).
 */
int runner_finish(struct runner *r, const char *check_report);
void runner_free(struct runner *r);

#endif
