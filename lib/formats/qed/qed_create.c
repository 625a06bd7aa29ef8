/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * New QED images as qemu-img 7.2 makes them: the header in cluster 0 (the backing file name
 * right after its 64 bytes), an empty L1 table of table_size clusters at cluster 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"

#define ZERO_CHUNK (1u << 20)

static int write_zeros(struct io_file *f, uint64_t offset, uint64_t len)
{
    void *zeros = calloc(1, (size_t)min_u64(len, ZERO_CHUNK));
    if (!zeros)
        return -ENOMEM;
    int ret = 0;
    while (ret == 0 && len) {
        size_t n = (size_t)min_u64(len, ZERO_CHUNK);
        ret = io_pwrite(f, zeros, n, offset);
        offset += n;
        len -= n;
    }
    free(zeros);
    return ret;
}

/*
 * The cluster and table sizes and the (sector-aligned) image size create takes, with QEMU's
 * messages; measure checks the same. 0 or -EINVAL.
 */
int qed_check_geometry(uint64_t cluster_size, uint64_t table_size, uint64_t size)
{
    if (!qed_cluster_size_valid(cluster_size))
        return img_error(-EINVAL, "QED cluster size must be within range [%u, %u] and power of 2",
                         QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
    if (!qed_table_size_valid(table_size))
        return img_error(-EINVAL, "QED table size must be within range [%u, %u] and power of 2",
                         QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
    uint64_t max = qed_max_image_size((uint32_t)cluster_size, (uint32_t)table_size);
    if (size % 512 || size > max)
        return img_error(-EINVAL,
                         "QED image size must be a non-zero multiple of cluster size and less "
                         "than %" PRIu64 " bytes",
                         max);
    return 0;
}

int qed_create(const struct img_create_args *args)
{
    uint64_t size = args->size, cluster_size = QED_DEFAULT_CLUSTER_SIZE;
    uint64_t table_size = QED_DEFAULT_TABLE_SIZE;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    if (ret == 0)
        ret = opts_get_size(args->opts, "cluster_size", &cluster_size);
    if (ret == 0)
        ret = opts_get_size(args->opts, "table_size", &table_size);
    if (ret < 0)
        return ret;
    /* qemu-img rounds the size up to whole sectors, silently. */
    if (size > UINT64_MAX - 511)
        return img_error(-EFBIG, "qed: size %" PRIu64 " is too large", size);
    size = align_up_u64(size, 512);
    ret = qed_check_geometry(cluster_size, table_size, size);
    if (ret < 0)
        return ret;
    struct qed_header h = {
        .cluster_size = (uint32_t)cluster_size,
        .table_size = (uint32_t)table_size,
        .header_size = 1,
        .l1_table_offset = cluster_size,
        .image_size = size,
    };
    size_t name_len = args->backing_file ? strlen(args->backing_file) : 0;
    if (args->backing_file) {
        /* QEMU would write a name its own open refuses: it must fit in the header cluster. */
        if (name_len > cluster_size - QED_HEADER_BYTES || name_len > QED_MAX_BACKING_NAME)
            return img_error(-EINVAL, "qed: the backing file name is too long (%zu bytes)",
                             name_len);
        h.features |= QED_F_BACKING_FILE;
        h.backing_filename_offset = QED_HEADER_BYTES;
        h.backing_filename_size = (uint32_t)name_len;
        if (args->backing_fmt && strcmp(args->backing_fmt, "raw") == 0)
            h.features |= QED_F_BACKING_FORMAT_NO_PROBE;
    }
    uint8_t buf[QED_HEADER_BYTES];
    qed_header_store(&h, buf);
    struct io_file *f = args->file;
    ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_pwrite(f, buf, sizeof(buf), 0);
    if (ret == 0 && name_len)
        ret = io_pwrite(f, args->backing_file, name_len, QED_HEADER_BYTES);
    if (ret == 0)
        ret = write_zeros(f, h.l1_table_offset, qed_table_bytes(&h));
    if (ret < 0)
        return img_error(ret, "qed: cannot create '%s': %s", args->path, img_strerror(ret));
    return 0;
}
