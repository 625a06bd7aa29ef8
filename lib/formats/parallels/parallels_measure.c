/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the Parallels image convert makes (qemu-img 7.2 cannot measure this
 * format; the layout is prl_create's and QEMU's block/parallels.c). The header and catalog fill
 * the clusters up to data_off; every cluster of the source holding data is then appended
 * whole, so "required" is exactly the converted file's length (to whole host blocks), and
 * one host block more for QEMU's preallocation.
 */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "formats/format.h"
#include "formats/parallels/parallels.h"
#include "opts.h"
#include "util/checked.h"

int prl_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    uint64_t cluster = PRL_DEFAULT_CLUSTER;
    int ret = opts_get_size(args->opts, "cluster_size", &cluster);
    if (ret < 0)
        return ret;
    /* prl_create's limits and messages. */
    if (args->size > (uint64_t)INT64_MAX - PRL_SECTOR || cluster > (uint64_t)INT64_MAX - PRL_SECTOR)
        return img_error(-EFBIG, "parallels: Image size is too large for this cluster size");
    uint64_t size = align_up_u64(args->size, PRL_SECTOR);
    cluster = align_up_u64(cluster, PRL_SECTOR);
    if (cluster == 0 || size / cluster >= (1ull << 32))
        return img_error(-E2BIG, "parallels: Image size is too large for this cluster size");
    if (cluster / PRL_SECTOR > PRL_MAX_TRACKS)
        return img_error(-EINVAL, "parallels: Cluster size is too large");
    uint64_t bat_entries = measure_units_of(size, cluster);
    if (bat_entries > PRL_MAX_BAT_ENTRIES)
        return img_error(-EFBIG, "parallels: Image size is too large for this cluster size "
                                 "(the catalog would exceed its limit)");

    /* Clusters are whole sectors, not always a power of two. */
    uint64_t data_off = measure_units_of(PRL_HEADER_SIZE + bat_entries * 4, cluster) * cluster;
    uint64_t used;
    if ((ret = measure_data_units(args, cluster, false, &used)) < 0)
        return ret;
    /* QEMU preallocates ahead of its writes and cuts the file back at close; a host block
     * past the end may stay allocated. */
    out->required = measure_host_bytes(data_off + used * cluster) + MEASURE_HOST_BLOCK;
    out->fully_allocated = data_off + bat_entries * cluster;
    return 0;
}
