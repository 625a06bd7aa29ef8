/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The qcow2 backend: probing, opening (every check before any large allocation), closing. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_check.h"
#include "formats/qcow2/qcow2_snapshot_write.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* The L2 cache covers the whole image when that takes at most this much memory. */
#define L2_CACHE_MAX_BYTES (8u << 20)
#define REFCOUNT_CACHE_MAX_BYTES (1u << 20)
/* Tighter bounds for images opened with IMG_OPEN_UNTRUSTED. */
#define UNTRUSTED_L2_CACHE_MAX_BYTES (1u << 20)
#define UNTRUSTED_REFCOUNT_CACHE_MAX_BYTES (256u << 10)
#define REFCOUNT_SLICE_MAX (64u * 1024)

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    if (len >= 8 && load_be32(buf) == QCOW2_MAGIC && load_be32(buf + 4) >= 2)
        return 100;
    return 0;
}

static void state_free(struct qcow2_state *s)
{
    if (!s)
        return;
    qcow2_writer_close(s);
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->refcount_cache);
    qcow2_snapshots_free(s);
    qcow2_bitmaps_free(s);
    qcow2_extensions_free(&s->ext);
    io_file_close(s->data_file);
    free(s->unknown_header_fields);
    free(s->l1_table);
    free(s->refcount_table);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Reads the first cluster (zero-filled past the end of a short file) and decodes the header. */
static int read_header(struct qcow2_state *s, uint8_t **first_cluster)
{
    uint8_t probe[QCOW2_HEADER_PROBE_BYTES] = {0};
    size_t have = (size_t)min_u64(s->file_size, sizeof(probe));
    int ret = io_pread(s->file, probe, have, 0);
    if (ret < 0)
        return ret;
    ret = qcow2_header_decode(probe, have, &s->hdr);
    if (ret < 0)
        return ret;

    uint32_t cluster_size = 1u << s->hdr.cluster_bits;
    uint8_t *buf = calloc(1, cluster_size);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    ret = io_pread(s->file, buf, (size_t)min_u64(s->file_size, cluster_size), 0);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    *first_cluster = buf;
    return 0;
}

static int read_extensions(struct qcow2_state *s, const uint8_t *buf, bool refuse_corrupt)
{
    const struct qcow2_header *h = &s->hdr;
    size_t end = h->backing_file_offset ? (size_t)h->backing_file_offset : 1u << h->cluster_bits;
    int ext_ret = qcow2_extensions_parse(buf, h->header_length, end, h, &s->ext);
    /*
     * Unknown incompatible features take precedence over damaged extensions: they are named
     * from whatever part of the feature table could be read.
     */
    bool unknown_features = (h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN) != 0;
    if (ext_ret < 0 && !unknown_features)
        return ext_ret;
    int ret = qcow2_header_check_features(h, &s->ext, refuse_corrupt);
    if (ret < 0)
        return ret;
    if (h->header_length > QCOW2_KNOWN_HEADER_LENGTH) {
        s->unknown_header_fields_len = h->header_length - QCOW2_KNOWN_HEADER_LENGTH;
        s->unknown_header_fields = malloc(s->unknown_header_fields_len);
        if (!s->unknown_header_fields)
            return img_error(-ENOMEM, "out of memory");
        memcpy(s->unknown_header_fields, buf + QCOW2_KNOWN_HEADER_LENGTH,
               s->unknown_header_fields_len);
    }
    return 0;
}

static int read_l1_table(struct qcow2_state *s)
{
    s->l1_size = s->hdr.l1_size;
    if (s->l1_size == 0)
        return 0;
    /* At most 32 MiB, checked against the header limits and the file size. */
    size_t bytes = (size_t)s->l1_size * sizeof(uint64_t);
    s->l1_table = malloc(bytes);
    if (!s->l1_table)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(s->file, s->l1_table, bytes, s->hdr.l1_table_offset);
    if (ret < 0) {
        img_error_prefix("qcow2: cannot read the L1 table");
        return ret;
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1_table[i] = load_be64(&s->l1_table[i]);
    return 0;
}

static int make_caches(struct qcow2_state *s, bool untrusted)
{
    /* Enough to hold every L2 table of the image, within the cap. */
    uint64_t tables = qcow2_l1_entries_for_size(s->cluster_bits, s->l2_bits, s->hdr.size);
    uint64_t want = tables << s->cluster_bits;
    uint64_t l2_cap = untrusted ? UNTRUSTED_L2_CACHE_MAX_BYTES : L2_CACHE_MAX_BYTES;
    int ret =
        qcow2_cache_new(&s->l2_cache, s->file, qcow2_l2_slice_bytes(s), min_u64(want, l2_cap));
    if (ret < 0)
        return ret;
    uint32_t rc_slice = s->cluster_size < REFCOUNT_SLICE_MAX ? s->cluster_size : REFCOUNT_SLICE_MAX;
    return qcow2_cache_new(&s->refcount_cache, s->file, rc_slice,
                           untrusted ? UNTRUSTED_REFCOUNT_CACHE_MAX_BYTES
                                     : REFCOUNT_CACHE_MAX_BYTES);
}

/* The backing file name sits in the first cluster; a NUL inside it ends it, as in QEMU. */
static int backing_name(const struct qcow2_state *s, const uint8_t *buf, char **out)
{
    *out = NULL;
    if (!s->hdr.backing_file_offset || !s->hdr.backing_file_size)
        return 0;
    const uint8_t *p = buf + s->hdr.backing_file_offset;
    size_t len = s->hdr.backing_file_size;
    const uint8_t *nul = memchr(p, 0, len);
    if (nul)
        len = (size_t)(nul - p);
    if (len == 0)
        return 0;
    char *name = malloc(len + 1);
    if (!name)
        return img_error(-ENOMEM, "out of memory");
    memcpy(name, p, len);
    name[len] = '\0';
    *out = name;
    return 0;
}

static int qcow2_open(struct img *img, const img_opts *opts)
{
    struct qcow2_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->file = img->file;
    uint8_t *first_cluster = NULL;
    char *backing = NULL, *backing_format = NULL;

    int64_t file_size = io_file_size(img->file);
    int ret = (int)file_size;
    if (file_size < 0)
        goto fail;
    s->file_size = (uint64_t)file_size;

    ret = read_header(s, &first_cluster);
    if (ret < 0)
        goto fail;
    /* An open for checking may write to an image marked corrupt: that is how it is repaired. */
    bool refuse_corrupt = img->writable && !(img->flags & IMG_OPEN_CHECK);
    ret = read_extensions(s, first_cluster, refuse_corrupt);
    if (ret < 0)
        goto fail;
    const struct qcow2_header *h = &s->hdr;
    qcow2_geometry_init(s, h->cluster_bits, (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0,
                        h->refcount_order);
    s->codec = h->compression_type == QCOW2_COMPRESSION_ZSTD ? CODEC_ZSTD : CODEC_DEFLATE_RAW;
    ret = qcow2_header_check_tables(h, s->file_size);
    if (ret < 0)
        goto fail;
    ret = backing_name(s, first_cluster, &backing);
    if (ret < 0)
        goto fail;
    if (backing && s->ext.backing_format) {
        backing_format = strdup(s->ext.backing_format);
        if (!backing_format) {
            ret = img_error(-ENOMEM, "out of memory");
            goto fail;
        }
    }

    ret = read_l1_table(s);
    if (ret < 0)
        goto fail;
    ret = make_caches(s, (img->flags & IMG_OPEN_UNTRUSTED) != 0);
    if (ret < 0)
        goto fail;
    ret = qcow2_snapshots_read(s, h->size);
    if (ret < 0)
        goto fail;
    ret = qcow2_snapshot_view_load(img, s, opts);
    if (ret < 0)
        goto fail;
    ret = qcow2_bitmaps_read(s, h->size);
    if (ret < 0)
        goto fail;

    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
        if (s->ext.data_file &&
            (ret = img_name_file(img, IMG_NAMED_DATA_FILE, s->ext.data_file)) < 0)
            goto fail;
        s->data_file_raw = (h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
        /*
         * Without permission the image is opened for its metadata only (info never opens a
         * data file) and map() refuses data in it. Writing needs the data file, and an
         * untrusted image naming another file is refused outright: both go through the
         * core's policy check, which says why.
         */
        if (img->flags & (IMG_OPEN_ALLOW_DATA_FILE | IMG_OPEN_UNTRUSTED) || img->writable) {
            ret = img_open_named_file(img, s->ext.data_file, IMG_OPEN_ALLOW_DATA_FILE, "data file",
                                      &s->data_file);
            if (ret < 0)
                goto fail;
        }
    }

    free(first_cluster);
    img->priv = s;
    /* QEMU presents the size in whole 512-byte sectors; a partial last sector is not there. */
    img->size = align_down_u64(h->size, 512);
    img->cluster_size = s->cluster_size;
    img->alloc_unit = s->subcluster_size;
    img->dirty = (h->incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    img->backing_name = backing;
    img->backing_format = backing_format;
    if (img->writable) {
        ret = qcow2_writer_open(img);
        if (ret < 0) {
            state_free(s);
            img->priv = NULL;
            return ret;
        }
    }
    return 0;

fail:
    free(first_cluster);
    free(backing);
    free(backing_format);
    state_free(s);
    return ret;
}

static void qcow2_close(struct img *img)
{
    state_free(img->priv);
    img->priv = NULL;
}

const struct img_format format_qcow2 = {
    .name = "qcow2",
    .caps = FORMAT_HAS_METADATA | FORMAT_BACKING | FORMAT_PARALLEL_ALLOCS,
    .create_options = qcow2_create_options,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .map = qcow2_map,
    .info_specific = qcow2_info_specific,
    .snapshot_list = qcow2_snapshot_list,
    .check = qcow2_check_backend,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_apply = qcow2_snapshot_apply,
    .snapshot_delete = qcow2_snapshot_delete,
    .create = qcow2_create,
    .alloc = qcow2_alloc,
    .alloc_commit = qcow2_alloc_commit,
    .zero = qcow2_zero,
    .discard = qcow2_discard,
    .flush = qcow2_flush,
    .resize = qcow2_resize,
    .compress_unit = qcow2_compress_unit,
    .write_compressed_data = qcow2_write_compressed_data,
    .compress_allowed = qcow2_compress_allowed,
    .status_flags = qcow2_status_flags,
    .measure = qcow2_measure,
    .make_empty = qcow2_make_empty,
    .change_backing = qcow2_change_backing,
    .amend = qcow2_amend,
    .amend_options = qcow2_amend_options,
    .bitmap_list = qcow2_bitmap_list,
    .bitmap_read = qcow2_bitmap_read,
    .bitmap_change = qcow2_bitmap_change,
};
