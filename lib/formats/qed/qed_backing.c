/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Changing the backing file reference of a QED image, as QEMU 7.2's
 * bdrv_qed_change_backing_file: the 64-byte header and the name right behind it are written
 * in one synced request; the "backing format is raw" feature follows the new format. A name
 * that would run past the header clusters fails with -ENOSPC before anything is written.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"

int qed_change_backing(struct img *img, const char *backing_file, const char *backing_fmt)
{
    struct qed_state *s = img->priv;
    if (backing_file && !*backing_file)
        backing_file = NULL;
    /*
     * As QEMU: with compat features this implementation does not know, the bytes behind the
     * header may hold something a new name would overwrite (QED defines none yet).
     */
    if (backing_file && s->hdr.compat_features)
        return img_error(-ENOTSUP,
                         "qed: '%s': unknown compat features 0x%" PRIx64
                         " may use the space a backing file name needs",
                         img->filename, s->hdr.compat_features);
    size_t name_len = backing_file ? strlen(backing_file) : 0;
    if (name_len > QED_MAX_BACKING_NAME)
        return img_error(-EINVAL, "qed: '%s': backing file name is too long (%zu bytes)",
                         img->filename, name_len);

    pthread_mutex_lock(&s->lock);
    struct qed_header h = s->hdr;
    h.features &= ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
    if (backing_file) {
        h.features |= QED_F_BACKING_FILE;
        if (backing_fmt && strcmp(backing_fmt, "raw") == 0)
            h.features |= QED_F_BACKING_FORMAT_NO_PROBE;
    }
    h.backing_filename_offset = QED_HEADER_BYTES;
    h.backing_filename_size = (uint32_t)name_len;
    int ret = 0;
    if (QED_HEADER_BYTES + name_len > (uint64_t)h.header_size * h.cluster_size)
        ret = img_error(-ENOSPC,
                        "qed: '%s': the backing file name does not fit in the header (%" PRIu64
                        " bytes)",
                        img->filename, (uint64_t)h.header_size * h.cluster_size);
    uint8_t *buf = ret == 0 ? malloc(QED_HEADER_BYTES + name_len) : NULL;
    if (ret == 0 && !buf)
        ret = img_error(-ENOMEM, "out of memory");
    if (ret == 0) {
        qed_header_store(&h, buf);
        if (name_len)
            memcpy(buf + QED_HEADER_BYTES, backing_file, name_len);
        ret = io_pwrite(img->file, buf, QED_HEADER_BYTES + name_len, 0);
        if (ret == 0)
            ret = io_fsync(img->file);
        if (ret < 0)
            img_error(ret, "qed: '%s': cannot write the header: %s", img->filename,
                      img_strerror(ret));
        else
            s->hdr = h;
    }
    pthread_mutex_unlock(&s->lock);
    free(buf);
    return ret;
}
