/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creating Parallels images as qemu-img creates them: a version 2 header, an empty catalog and
 * room up to the first cluster boundary after it (data_off), nothing else.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

/* QEMU's MAX_PARALLELS_IMAGE_FACTOR: a catalog holds at most 2^32 clusters. */
#define PRL_MAX_IMAGE_FACTOR (1ull << 32)

static const char *const prl_prealloc_values[] = {"off", "falloc", "full", NULL};

/* In the order qemu-img prints them on its "Formatting ..." line; -o help lists the first two. */
const struct opt_desc prl_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "cluster_size",
     .type = OPT_SIZE,
     .def = "1048576",
     .help = "Parallels image cluster size"},
    /*
     * Host file options qemu-img passes to the file it creates first; the Parallels driver then
     * empties that file, so they change nothing (qemu-img leaves them out of -o help).
     */
    {.name = "preallocation",
     .type = OPT_ENUM,
     .values = prl_prealloc_values,
     .flags = OPT_HIDDEN,
     .help = "Preallocation mode of the host file (accepted, no effect)"},
    {.name = "nocow",
     .type = OPT_BOOL,
     .flags = OPT_HIDDEN,
     .help = "Turn off copy-on-write (accepted, no effect)"},
    {.name = "extent_size_hint",
     .type = OPT_SIZE,
     .flags = OPT_HIDDEN,
     .help = "Extent size hint for the image file (accepted, no effect)"},
    OPT_TABLE_END,
};

int prl_create(const struct img_create_args *args)
{
    if (args->backing_file)
        return img_error(-ENOTSUP, "parallels: Backing file not supported for file format "
                                   "'parallels'");
    uint64_t size = args->size, cluster = PRL_DEFAULT_CLUSTER;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    if (ret == 0 && img_opts_get(args->opts, "cluster_size"))
        ret = opts_get_size(args->opts, "cluster_size", &cluster);
    if (ret < 0)
        return ret;
    /* qemu-img silently rounds both up to whole sectors. */
    if (size > (uint64_t)INT64_MAX - PRL_SECTOR || cluster > (uint64_t)INT64_MAX - PRL_SECTOR)
        return img_error(-EFBIG, "parallels: Image size is too large for this cluster size");
    size = align_up_u64(size, PRL_SECTOR);
    cluster = align_up_u64(cluster, PRL_SECTOR);
    /* A zero cluster size fails QEMU's size limit, with its message. */
    if (cluster == 0)
        return img_error(-E2BIG, "parallels: Image size is too large for this cluster size");
    if (cluster >= (uint64_t)INT64_MAX / PRL_MAX_IMAGE_FACTOR)
        return img_error(-EINVAL, "parallels: Cluster size is too large");
    if (size >= PRL_MAX_IMAGE_FACTOR * cluster)
        return img_error(-E2BIG, "parallels: Image size is too large for this cluster size");
    if (cluster / PRL_SECTOR > PRL_MAX_TRACKS)
        return img_error(-EINVAL, "parallels: Cluster size is too large");

    uint64_t bat_entries = (size + cluster - 1) / cluster;
    if (bat_entries > PRL_MAX_BAT_ENTRIES)
        return img_error(-EFBIG, "parallels: Image size is too large for this cluster size "
                                 "(the catalog would exceed its limit)");
    uint64_t data_bytes = align_up_u64(PRL_HEADER_SIZE + bat_entries * 4, cluster);
    if (data_bytes / PRL_SECTOR > UINT32_MAX)
        return img_error(-EFBIG, "parallels: Image size is too large for this cluster size");

    struct prl_header h = {
        .v2 = true,
        .version = PRL_VERSION,
        .heads = PRL_HEADS,
        /* The geometry is not used at image level; QEMU fills it this way. */
        .cylinders = (uint32_t)(size / PRL_SECTOR / PRL_HEADS / PRL_SEC_IN_CYL),
        .tracks = (uint32_t)(cluster / PRL_SECTOR),
        .bat_entries = (uint32_t)bat_entries,
        .nb_sectors = size / PRL_SECTOR,
        .data_off = (uint32_t)(data_bytes / PRL_SECTOR),
    };
    uint8_t sector[PRL_SECTOR] = {0};
    prl_encode_header(&h, sector);
    struct io_file *f = args->file;
    ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_pwrite(f, sector, sizeof(sector), 0);
    if (ret == 0)
        ret = io_truncate(f, data_bytes);
    /* Real zeros, so the catalog is allocated as qemu-img allocates it. */
    if (ret == 0 && data_bytes > PRL_SECTOR)
        ret = io_write_zeroes(f, PRL_SECTOR, data_bytes - PRL_SECTOR);
    if (ret < 0)
        return img_error(ret, "parallels: Failed to create Parallels image '%s': %s", args->path,
                         img_strerror(ret));
    return 0;
}
