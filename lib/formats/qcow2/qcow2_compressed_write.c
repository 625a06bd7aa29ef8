/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Compressed writes: one whole guest cluster, compressed with the image's codec (deflate or
 * zstd) and packed byte by byte after the previous compressed cluster, as QEMU packs them. Data
 * that does not shrink below a cluster is written as a normal cluster. The stream is written
 * before the L2 entry that points at it, like any other data.
 *
 * Compressing (qcow2_compress_unit) and placing the result (qcow2_write_compressed_data) are
 * separate, so that convert compresses on many threads but places clusters in guest order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "util/checked.h"

/* Where compressed data may go: a cluster of the guest, in a writable image of one file. */
static int check_target(struct img *img, uint64_t offset)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    if (offset & (s->cluster_size - 1))
        return img_error(-EINVAL, "qcow2: compressed write at %" PRIu64 " is not cluster-aligned",
                         offset);
    if (offset >= img->size)
        return img_error(-EINVAL,
                         "qcow2: compressed write at %" PRIu64 " is beyond the end of "
                         "the image",
                         offset);
    if (qcow2_has_data_file(s))
        return img_error(-ENOTSUP,
                         "qcow2: compressed clusters cannot be written to an image with an "
                         "external data file");
    return 0;
}

/* Only whole clusters, or the image's short last one, can be stored compressed. */
static int check_unit(struct img *img, uint64_t offset, size_t len)
{
    struct qcow2_state *s = img->priv;
    int ret = check_target(img, offset);
    if (ret < 0)
        return ret;
    if (len > s->cluster_size)
        return img_error(-EINVAL, "qcow2: compressed write larger than a cluster");
    if (len != s->cluster_size && len != img->size - offset)
        return img_error(-EINVAL,
                         "qcow2: a compressed write must cover one whole cluster (%zu bytes "
                         "given, cluster size %" PRIu32 ")",
                         len, s->cluster_size);
    return 0;
}

int qcow2_compress_unit(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                        size_t *out_len)
{
    struct qcow2_state *s = img->priv;
    *out_len = 0;
    if (len == 0 || len > s->cluster_size)
        return img_error(-EINVAL, "qcow2: cannot compress %zu bytes as one cluster of %" PRIu32,
                         len, s->cluster_size);
    if (out_cap < s->cluster_size)
        return img_error(-EINVAL, "qcow2: compression buffer smaller than a cluster");

    /* The image's last cluster may be partial; it is compressed padded with zeros. */
    uint8_t *plain = NULL;
    const uint8_t *src = buf;
    if (len < s->cluster_size) {
        plain = calloc(1, s->cluster_size);
        if (!plain)
            return img_error(-ENOMEM, "out of memory");
        memcpy(plain, buf, len);
        src = plain;
    }
    /* As QEMU: the stream must be smaller than a cluster, by at least a byte. */
    long clen = codec_compress(s->codec, src, s->cluster_size, out, s->cluster_size - 1);
    free(plain);
    if (clen == -ENOSPC || clen == 0)
        return 0;
    if (clen < 0)
        return img_error((int)clen, "qcow2: %s compression failed", codec_name(s->codec));
    *out_len = (size_t)clen;
    return 0;
}

/* Packs `clen` bytes of stream after the previous compressed cluster and points `c` at them. */
static int place_stream(struct img *img, uint64_t c, const void *stream, size_t clen)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_inflight inflight;
    uint64_t host = 0;
    pthread_mutex_lock(&s->lock);
    qcow2_inflight_wait(s, c, 1);
    int ret = qcow2_writer_begin_change(s);
    if (ret == 0)
        ret = qcow2_l2_prepare(s, c);
    if (ret == 0)
        ret = qcow2_alloc_bytes(s, (uint64_t)clen, &host);
    if (ret == 0)
        qcow2_inflight_add(s, &inflight, c, 1);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        return ret;

    ret = io_pwrite(s->file, stream, clen, host);
    if (ret < 0)
        img_error(ret, "qcow2: cannot write a compressed cluster: %s", img_strerror(ret));

    pthread_mutex_lock(&s->lock);
    if (ret < 0) {
        qcow2_refcount_update(s, host, (uint64_t)clen, -1);
    } else {
        struct qcow2_l2_cursor cur = {0};
        uint64_t old, bitmap;
        bool no_l2;
        ret = qcow2_l2_lookup(s, &cur, c, &old, &bitmap, &no_l2);
        qcow2_l2_cursor_release(s, &cur);
        /* The descriptor counts the sectors after the first one the stream touches. */
        uint64_t sectors = ((host + (uint64_t)clen - 1) >> 9) - (host >> 9);
        uint64_t entry = QCOW2_OFLAG_COMPRESSED | (sectors << s->csize_shift) | host;
        if (ret == 0)
            ret = qcow2_l2_set(s, c, entry, 0);
        if (ret == 0 && !no_l2) {
            if (old & QCOW2_OFLAG_COMPRESSED) {
                uint64_t off, n;
                qcow2_compressed_decode(s, old, &off, &n);
                ret = qcow2_free_clusters(s, off, n);
            } else if (qcow2_l2_entry_offset(old)) {
                ret = qcow2_free_clusters(s, qcow2_l2_entry_offset(old), s->cluster_size);
            }
        }
        if (ret == 0)
            ret = qcow2_writer_maybe_flush(s);
    }
    qcow2_inflight_remove(s, &inflight);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_write_compressed_data(struct img *img, uint64_t offset, const void *data, size_t len,
                                bool stored_uncompressed)
{
    struct qcow2_state *s = img->priv;
    if (stored_uncompressed) {
        int ret = check_unit(img, offset, len);
        return ret < 0 ? ret : qcow2_write_through(img, offset, data, len);
    }
    int ret = check_target(img, offset);
    if (ret < 0)
        return ret;
    if (len == 0 || len >= s->cluster_size)
        return img_error(-EINVAL,
                         "qcow2: a compressed stream of %zu bytes does not fit a cluster of "
                         "%" PRIu32,
                         len, s->cluster_size);
    ret = qcow2_bitmaps_before_write(s);
    if (ret == 0)
        ret = place_stream(img, offset >> s->cluster_bits, data, len);
    qcow2_bitmaps_mark_dirty(s, offset, min_u64(s->cluster_size, img->size - offset));
    return ret;
}

int qcow2_compress_allowed(const img_opts *opts)
{
    /* The same refusal as check_target() gives an open image, before the image exists. */
    if (img_opts_get(opts, "data_file"))
        return img_error(-ENOTSUP,
                         "qcow2: compressed clusters cannot be written to an image with an "
                         "external data file");
    return 0;
}
