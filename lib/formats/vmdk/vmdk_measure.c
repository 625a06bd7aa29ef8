/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the VMDK image convert makes, summed over its files (qemu-img 7.2
 * cannot measure VMDK; the layout is vmdk_create's, the allocation QEMU's block/vmdk.c).
 *
 * Sparse extents (monolithicSparse, twoGbMaxExtentSparse, one per 2 GiB): header, descriptor,
 * both grain directories and every grain table, made at create, up to the first grain; then
 * every 64 KiB grain holding data is appended whole. "required" is exactly the converted
 * files' length (to whole host blocks), the separate descriptor of a split image counted as
 * DESCRIPTOR_BOUND.
 * streamOptimized: the grains are compressed; each is bounded by a sector of marker and slack
 * over its 64 KiB (deflate's worst case), and the grain tables, directory and footer written
 * at close by their markers: an upper bound, close only for incompressible data.
 * Flat (monolithicFlat, twoGbMaxExtentFlat): the extents are as long as the guest disk from the
 * start and "required" bounds what is allocated: the source's data in 64 KiB units, and the
 * descriptor file.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/vmdk/vmdk.h"
#include "opts.h"
#include "util/checked.h"

#define GRAIN_BYTES 65536u     /* 128 sectors: the grain vmdk_create writes */
#define GT_ENTRIES 512u        /* entries per grain table */
#define DESCRIPTOR_BOUND 4096u /* a descriptor file's text: a few hundred bytes, one host block */

enum layout { SPARSE, FLAT, SPLIT_SPARSE, SPLIT_FLAT, STREAM };

/* The bytes before the first grain of a sparse extent of `size` bytes (init_sparse's layout). */
static uint64_t sparse_metadata_bytes(uint64_t size)
{
    uint64_t grains = measure_units_of(size / VMDK_SECTOR, GRAIN_BYTES / VMDK_SECTOR);
    uint64_t gt_sectors = GT_ENTRIES * 4 / VMDK_SECTOR;
    uint64_t gt_count = measure_units_of(grains, GT_ENTRIES);
    uint64_t gd_sectors = measure_units_of(gt_count * 4, VMDK_SECTOR);
    uint64_t header_and_descriptor = 1 + VMDK_DESC_SIZE / VMDK_SECTOR;
    uint64_t end = header_and_descriptor + 2 * (gd_sectors + gt_sectors * gt_count);
    return align_up_u64(end, GRAIN_BYTES / VMDK_SECTOR) * VMDK_SECTOR;
}

/* What streamOptimized adds at close: each grain table and the directory after a marker
 * sector, then the footer's marker, the footer and the end-of-stream marker. */
static uint64_t stream_trailer_bytes(uint64_t size)
{
    uint64_t gt_count = measure_units_of(measure_units_of(size, GRAIN_BYTES), GT_ENTRIES);
    uint64_t gt_bytes = GT_ENTRIES * 4;
    uint64_t gd_bytes = align_up_u64(gt_count * 4, VMDK_SECTOR);
    return gt_count * (VMDK_SECTOR + gt_bytes) + VMDK_SECTOR + gd_bytes + 3 * VMDK_SECTOR;
}

static int parse_layout(const img_opts *opts, enum layout *out)
{
    static const char *const names[] = {"monolithicSparse", "monolithicFlat",
                                        "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                                        "streamOptimized"};
    const char *sub = img_opts_get(opts, "subformat");
    if (!sub)
        sub = names[0];
    for (int i = 0; i <= STREAM; i++)
        if (strcmp(sub, names[i]) == 0) {
            *out = (enum layout)i;
            return 0;
        }
    /* vmdk_create's message. */
    return img_error(-EINVAL, "invalid parameter value: %s", sub);
}

int vmdk_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    enum layout layout = SPARSE;
    bool zeroed_grain = false;
    int ret = parse_layout(args->opts, &layout);
    if (ret == 0)
        ret = opts_get_bool(args->opts, "zeroed_grain", &zeroed_grain);
    if (ret < 0)
        return ret;
    bool flat = layout == FLAT || layout == SPLIT_FLAT;
    bool backing = img_opts_get(args->opts, "backing_file") != NULL;
    if (flat && backing)
        return img_error(-ENOTSUP, "vmdk: Flat image can't have backing file");
    if (flat && zeroed_grain)
        return img_error(-ENOTSUP, "vmdk: Flat image can't enable zeroed grain");
    if (args->size > (uint64_t)INT64_MAX - 511)
        return img_error(-EFBIG, "vmdk: size is too large");
    uint64_t size = align_up_u64(args->size, VMDK_SECTOR);
    uint64_t grains = measure_units_of(size, GRAIN_BYTES);
    uint64_t used;
    if ((ret = measure_data_units(args, GRAIN_BYTES, backing, &used)) < 0)
        return ret;

    if (flat) {
        out->required = used * GRAIN_BYTES + DESCRIPTOR_BOUND;
        out->fully_allocated = size + DESCRIPTOR_BOUND;
        return 0;
    }
    /* vmdk_create's limit: a sparse extent's tables must end below 2^32 sectors. */
    uint64_t extent = layout == SPLIT_SPARSE ? min_u64(size, VMDK_SPLIT_SIZE) : size;
    if (sparse_metadata_bytes(extent) / VMDK_SECTOR > UINT32_MAX)
        return img_error(-EFBIG, "vmdk: %" PRIu64 " bytes is too large for a sparse extent",
                         extent);
    if (layout == STREAM) {
        uint64_t fixed = sparse_metadata_bytes(size) + stream_trailer_bytes(size);
        uint64_t grain_bound = GRAIN_BYTES + VMDK_SECTOR;
        out->required = measure_host_bytes(fixed + used * grain_bound);
        out->fully_allocated = fixed + grains * grain_bound;
        return 0;
    }
    uint64_t metadata = 0;
    if (layout == SPARSE) {
        metadata = sparse_metadata_bytes(size);
    } else {
        /* One extent per whole 2 GiB, and one for the rest. */
        uint64_t rest = size % VMDK_SPLIT_SIZE;
        metadata = size / VMDK_SPLIT_SIZE * sparse_metadata_bytes(VMDK_SPLIT_SIZE) +
                   (rest ? sparse_metadata_bytes(rest) : 0) + DESCRIPTOR_BOUND;
    }
    out->required = measure_host_bytes(metadata + used * GRAIN_BYTES);
    out->fully_allocated = metadata + grains * GRAIN_BYTES;
    return 0;
}
