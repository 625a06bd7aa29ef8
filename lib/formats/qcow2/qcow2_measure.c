/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of a qcow2 image made from a source or of a given size, computed as
 * QEMU 7.2 computes it (block/qcow2.c: qcow2_measure, qcow2_calc_prealloc_size,
 * qcow2_refcount_metadata_size; block/qcow2-bitmap.c: qcow2_get_persistent_dirty_bitmap_size),
 * so that the figures equal qemu-img measure's byte for byte. "fully-allocated" is the header,
 * every L2 and L1 entry, the refcount structures covering all of it, and every data cluster;
 * "required" drops the data clusters the source does not need.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "opts.h"
#include "util/checked.h"

#define DEFAULT_CLUSTER_SIZE 65536u
#define BITMAP_DIR_ENTRY_BYTES 24u /* fixed part of a bitmap directory entry */
#define BITMAP_TABLE_ENTRY_BYTES 8u

static uint64_t div_round_up_u64(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

struct measure_opts {
    uint64_t cluster_size;
    uint32_t version;
    uint32_t refcount_order;
    bool extended_l2;
    enum qcow2_prealloc prealloc;
    bool has_backing_file;
};

/* The options qcow2_measure reads, with the messages QEMU gives for values it refuses. */
static int parse_measure_opts(const img_opts *opts, struct measure_opts *o)
{
    memset(o, 0, sizeof(*o));
    int ret = opts_get_bool(opts, "extended_l2", &o->extended_l2);
    if (ret < 0)
        return ret;
    o->cluster_size = DEFAULT_CLUSTER_SIZE;
    if ((ret = opts_get_size(opts, "cluster_size", &o->cluster_size)) < 0)
        return ret;
    if (o->cluster_size < 512 || o->cluster_size > (2u << 20) ||
        (o->cluster_size & (o->cluster_size - 1)))
        return img_error(-EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    if (o->extended_l2 && o->cluster_size < 16384)
        return img_error(-EINVAL, "Extended L2 entries are only supported with cluster sizes of "
                                  "at least 16384 bytes");

    /* Unlike create, QEMU's measure knows only the two version numbers, not "v2"/"v3". */
    const char *compat = img_opts_get(opts, "compat");
    o->version = 3;
    if (compat && strcmp(compat, "0.10") == 0)
        o->version = 2;
    else if (compat && strcmp(compat, "1.1") != 0)
        return img_error(-EINVAL, "Invalid compatibility level: '%s'", compat);

    uint64_t refcount_bits = 16;
    if ((ret = opts_get_u64(opts, "refcount_bits", &refcount_bits)) < 0)
        return ret;
    if (refcount_bits == 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1)))
        return img_error(-EINVAL,
                         "Refcount width must be a power of two and may not exceed 64 bits");
    if (o->version < 3 && refcount_bits != 16)
        return img_error(-EINVAL, "Different refcount widths than 16 bits require compatibility "
                                  "level 1.1 or above (use compat=1.1 or greater)");
    o->refcount_order = (uint32_t)__builtin_ctzll(refcount_bits);

    if ((ret = qcow2_parse_prealloc(img_opts_get(opts, "preallocation"), &o->prealloc)) < 0)
        return ret;
    o->has_backing_file = img_opts_get(opts, "backing_file") != NULL;

    bool encrypted = false;
    if ((ret = opts_get_bool(opts, "encryption", &encrypted)) < 0)
        return ret;
    if (encrypted || img_opts_get(opts, "encrypt.format"))
        return img_error(-ENOTSUP, "qcow2: encrypted images are not supported");
    return 0;
}

/*
 * The refcount table and blocks needed to count `clusters` clusters and themselves: the
 * fixed point where one more pass adds no block and no table cluster.
 */
static uint64_t refcount_metadata_bytes(uint64_t clusters, uint64_t cluster_size,
                                        uint32_t refcount_order)
{
    uint64_t blocks_per_table_cluster = cluster_size / 8;
    uint64_t refcounts_per_block = cluster_size * 8 / (1ull << refcount_order);
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = div_round_up_u64(clusters + table + blocks, refcounts_per_block);
        table = div_round_up_u64(blocks, blocks_per_table_cluster);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cluster_size;
}

/* The file size of the image with every cluster of `virtual_size` allocated. */
static uint64_t fully_allocated_bytes(uint64_t virtual_size, const struct measure_opts *o)
{
    uint64_t cs = o->cluster_size;
    uint64_t aligned = align_up_u64(virtual_size, cs);
    uint64_t l2_entry_bytes = o->extended_l2 ? 16 : 8;
    uint64_t meta = cs; /* the header cluster */

    uint64_t l2_entries = align_up_u64(aligned / cs, cs / l2_entry_bytes);
    meta += l2_entries * l2_entry_bytes;
    uint64_t l1_entries = align_up_u64(l2_entries * l2_entry_bytes / cs, cs / 8);
    meta += l1_entries * 8;
    meta += refcount_metadata_bytes((meta + aligned) / cs, cs, o->refcount_order);
    return meta + aligned;
}

/*
 * Room for the source's persistent bitmaps in a target of `cluster_size`: each bitmap's data
 * clusters and table, and the directory, assuming every bitmap cluster is stored.
 */
static uint64_t bitmaps_bytes(const struct qcow2_state *s, uint64_t virtual_size,
                              uint64_t cluster_size)
{
    uint64_t total = 0, directory = 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t bits = div_round_up_u64(virtual_size, 1ull << b->granularity_bits);
        uint64_t clusters = div_round_up_u64(div_round_up_u64(bits, 8), cluster_size);
        total += clusters * cluster_size;
        total += align_up_u64(clusters * BITMAP_TABLE_ENTRY_BYTES, cluster_size);
        directory += align_up_u64(BITMAP_DIR_ENTRY_BYTES + strlen(b->name), 8);
    }
    return total + align_up_u64(directory, cluster_size);
}

int qcow2_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    struct measure_opts o;
    int ret = parse_measure_opts(args->opts, &o);
    if (ret < 0)
        return ret;
    uint64_t cs = o.cluster_size;
    uint64_t virtual_size = align_up_u64(args->size, cs);
    uint64_t required = 0;

    if (!args->src) {
        /* QEMU checks the L1 table of a size given on the command line only. */
        uint64_t l2_tables = div_round_up_u64(virtual_size / cs, cs / (o.extended_l2 ? 16 : 8));
        if (l2_tables * 8 > QCOW2_MAX_L1_BYTES)
            return img_error(-EFBIG,
                             "The image size is too large (try using a larger cluster size)");
    } else if (o.has_backing_file) {
        /* What the new backing file shares with the source is unknown: assume nothing. */
        required = virtual_size;
    } else if ((ret = measure_allocated_bytes(args->src, cs, &required)) < 0) {
        return ret;
    }
    if (o.prealloc == QCOW2_PREALLOC_FULL || o.prealloc == QCOW2_PREALLOC_FALLOC)
        required = virtual_size;

    out->fully_allocated = fully_allocated_bytes(virtual_size, &o);
    /* Metadata for the fully allocated image stays counted: an overestimate, as in QEMU. */
    out->required = out->fully_allocated - virtual_size + required;

    /*
     * Bitmaps are reported when both the source and the target can keep them (v3): the source
     * is then one of this backend's own images, whose bitmap directory open() read.
     */
    const struct img *src = args->src;
    if (o.version >= 3 && src && src->fmt == &format_qcow2) {
        const struct qcow2_state *s = src->priv;
        if (s->hdr.version >= 3) {
            out->has_bitmaps = true;
            out->bitmaps = bitmaps_bytes(s, args->size, cs);
        }
    }
    return 0;
}
