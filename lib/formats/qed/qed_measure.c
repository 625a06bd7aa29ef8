/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * measure(): the size of the QED image convert makes (qemu-img 7.2 cannot measure QED; the
 * layout is qed_create's and QEMU's block/qed.c). The header cluster and the L1 table come
 * first; then, in the order written, an L2 table (table_size clusters) for every L1 entry whose
 * range holds data and a cluster for every cluster of data. Every piece is appended whole, so
 * "required" is exactly the converted file's length (to whole host blocks). With a backing
 * file, what the target shares with it is unknown: every cluster is counted, as qcow2 does.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qed/qed.h"
#include "opts.h"
#include "util/checked.h"

int qed_measure(const struct img_measure_args *args, struct img_measure_result *out)
{
    uint64_t cluster_size = QED_DEFAULT_CLUSTER_SIZE, table_size = QED_DEFAULT_TABLE_SIZE;
    int ret = opts_get_size(args->opts, "cluster_size", &cluster_size);
    if (ret == 0)
        ret = opts_get_size(args->opts, "table_size", &table_size);
    if (ret < 0)
        return ret;
    uint64_t size = align_up_u64(args->size, 512);
    if ((ret = qed_check_geometry(cluster_size, table_size, size)) < 0)
        return ret;

    uint64_t table_bytes = table_size * cluster_size;
    uint64_t l2_span = table_bytes / sizeof(uint64_t) * cluster_size; /* guest bytes an L2 maps */
    bool every = img_opts_get(args->opts, "backing_file") != NULL;
    uint64_t data_clusters, l2_tables;
    if ((ret = measure_data_units(args, cluster_size, every, &data_clusters)) < 0 ||
        (ret = measure_data_units(args, l2_span, every, &l2_tables)) < 0)
        return ret;

    uint64_t fixed = cluster_size + table_bytes; /* header cluster, L1 table */
    out->required =
        measure_host_bytes(fixed + l2_tables * table_bytes + data_clusters * cluster_size);
    out->fully_allocated = fixed + measure_units_of(size, l2_span) * table_bytes +
                           measure_units_of(size, cluster_size) * cluster_size;
    return 0;
}
