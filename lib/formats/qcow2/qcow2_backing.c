/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Changing the backing file reference (rebase, amend backing_file), as QEMU 7.2's
 * qcow2_change_backing_file: the name and the backing format extension are re-encoded into a
 * new header cluster, which is written in one request and synced. The whole cluster is built
 * in memory first, so a name that does not fit fails with -ENOSPC before anything is written.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "image.h"
#include "io/io.h"

int qcow2_change_backing(struct img *img, const char *backing_file, const char *backing_fmt)
{
    struct qcow2_state *s = img->priv;
    if (backing_file && !*backing_file)
        backing_file = NULL;
    if (!backing_file)
        backing_fmt = NULL;
    /* As QEMU: a raw external data file alone is the guest view; a backing file contradicts it. */
    if (backing_file && s->data_file_raw)
        return img_error(-EINVAL,
                         "qcow2: '%s': an image with a raw external data file cannot have a "
                         "backing file",
                         img->filename);
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME)
        return img_error(-EINVAL,
                         "qcow2: '%s': backing file name '%s' is too long (at most %u bytes)",
                         img->filename, backing_file, QCOW2_MAX_BACKING_NAME);

    char *new_format = NULL;
    if (backing_fmt && !(new_format = strdup(backing_fmt)))
        return img_error(-ENOMEM, "out of memory");
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf) {
        free(new_format);
        return img_error(-ENOMEM, "out of memory");
    }

    pthread_mutex_lock(&s->lock);
    struct qcow2_header h = s->hdr;
    struct qcow2_extensions ext = s->ext; /* shallow: only backing_format differs */
    ext.backing_format = new_format;
    int ret = qcow2_header_encode(&h, &ext, backing_file, s->unknown_header_fields,
                                  s->unknown_header_fields_len, buf, s->cluster_size);
    if (ret == -EFBIG)
        ret = img_error(-ENOSPC,
                        "qcow2: '%s': the backing file name does not fit in the header cluster "
                        "(%u bytes)",
                        img->filename, s->cluster_size);
    if (ret == 0) {
        ret = io_pwrite(s->file, buf, s->cluster_size, 0);
        if (ret == 0)
            ret = io_fsync(s->file);
        if (ret < 0)
            img_error(ret, "qcow2: '%s': cannot write the header: %s", img->filename,
                      img_strerror(ret));
    }
    if (ret == 0) {
        s->hdr = h;
        free(s->ext.backing_format);
        s->ext.backing_format = new_format;
        new_format = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    free(new_format);
    free(buf);
    return ret;
}
