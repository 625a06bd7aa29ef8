/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Random operations aimed where write paths break: at and around cluster and subcluster
 * boundaries, single bytes, partial clusters on both sides, runs spanning many clusters, and
 * the end of the image.
 */
#include <string.h>

#include "ops.h"

#define SECTOR 512u
#define LARGE_WRITE (6u << 20)

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* An offset in [0, size) near a boundary of some granule, or anywhere. */
static uint64_t aimed_offset(struct opgen *g, uint64_t size)
{
    uint64_t granule;
    switch (rng_below(&g->rng, 4)) {
    case 0:
        granule = g->cluster;
        break;
    case 1:
        granule = g->subcluster;
        break;
    case 2:
        granule = SECTOR;
        break;
    default:
        return rng_below(&g->rng, size);
    }
    uint64_t base = rng_below(&g->rng, size / granule + 1) * granule;
    uint64_t jitter = rng_range(&g->rng, 1, 600);
    switch (rng_below(&g->rng, 4)) {
    case 0:
        break;
    case 1:
        base = base > jitter ? base - jitter : 0;
        break;
    case 2:
        base += jitter;
        break;
    default:
        base += rng_below(&g->rng, granule);
    }
    return base < size ? base : size - 1 - rng_below(&g->rng, min_u64(size, 4096));
}

static uint64_t aimed_length(struct opgen *g)
{
    switch (rng_below(&g->rng, 8)) {
    case 0:
    case 1:
        return rng_range(&g->rng, 1, 64);
    case 2:
    case 3:
        return rng_range(&g->rng, 1, g->subcluster + 64);
    case 4:
    case 5:
        return rng_range(&g->rng, 1, 3 * g->cluster);
    case 6:
        return rng_range(&g->rng, 1, 4) * g->cluster;
    default:
        return rng_range(&g->rng, 1, LARGE_WRITE);
    }
}

static void aimed_range(struct opgen *g, uint64_t size, struct op *op)
{
    op->offset = aimed_offset(g, size);
    op->length = min_u64(aimed_length(g), size - op->offset);
    if (g->max_length)
        op->length = min_u64(op->length, g->max_length);
}

/* Mostly whole clusters (the last one may end at the image's end), sometimes anything. */
static void discard_range(struct opgen *g, uint64_t size, struct op *op)
{
    if (rng_below(&g->rng, 10) < 4) {
        aimed_range(g, size, op);
        return;
    }
    uint64_t clusters = (size + g->cluster - 1) / g->cluster;
    uint64_t first = rng_below(&g->rng, clusters);
    uint64_t count = rng_range(&g->rng, 1, min_u64(clusters - first, 1 + LARGE_WRITE / g->cluster));
    op->offset = first * g->cluster;
    op->length = min_u64(count * g->cluster, size - op->offset);
}

static void resize_target(struct opgen *g, uint64_t size, struct op *op)
{
    bool grow =
        size < g->min_size + SECTOR || (size + SECTOR <= g->max_size && rng_below(&g->rng, 2));
    uint64_t lo = grow ? size + SECTOR : g->min_size;
    uint64_t hi = grow ? g->max_size : size - SECTOR;
    uint64_t target = rng_range(&g->rng, lo / SECTOR, hi / SECTOR) * SECTOR;
    /* Cluster-aligned sizes half the time: the other half leaves a partial last cluster. */
    if (rng_below(&g->rng, 2) && target / g->cluster * g->cluster >= lo)
        target = target / g->cluster * g->cluster;
    op->offset = target;
    op->name[0] = '\0';
    if (grow && g->resize_prealloc && rng_below(&g->rng, 5) == 0) {
        static const char *const modes[] = {"off", "metadata", "falloc", "full"};
        const char *mode = modes[rng_below(&g->rng, 4)];
        if (g->raw && strcmp(mode, "metadata") == 0)
            mode = "falloc";
        strcpy(op->name, mode);
    }
}

void opgen_next(struct opgen *g, uint64_t size, struct op *op)
{
    memset(op, 0, sizeof(*op));
    for (;;) {
        uint64_t pick = rng_below(&g->rng, 100);
        if (pick < 46) {
            op->kind = OP_WRITE;
            aimed_range(g, size, op);
            op->seed = rng_next(&g->rng);
        } else if (pick < 56) {
            op->kind = OP_ZERO;
            aimed_range(g, size, op);
        } else if (pick < 66) {
            op->kind = OP_ZERO_UNMAP;
            aimed_range(g, size, op);
        } else if (pick < 78) {
            if (!g->discard)
                continue;
            op->kind = OP_DISCARD;
            discard_range(g, size, op);
        } else if (pick < 85) {
            if (!g->resize || g->max_size <= g->min_size)
                continue;
            op->kind = OP_RESIZE;
            resize_target(g, size, op);
        } else if (pick < 93) {
            op->kind = OP_FLUSH;
        } else if (pick < 98) {
            op->kind = OP_REOPEN;
        } else {
            op->kind = OP_VERIFY;
        }
        return;
    }
}
