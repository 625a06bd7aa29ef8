/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* QED: probing, opening (header, backing name, L1 table, the need-check repair), closing. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qed/qed.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define L1_READ_CHUNK (4u << 20)

static int qed_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= QED_HEADER_BYTES && load_le32(buf) == QED_MAGIC ? 100 : 0;
}

static int read_backing_name(struct img *img, struct qed_state *s)
{
    const struct qed_header *h = &s->hdr;
    uint64_t header_bytes = (uint64_t)h->header_size * h->cluster_size;
    if ((uint64_t)h->backing_filename_offset + h->backing_filename_size > header_bytes)
        return img_error(-EINVAL, "qed: '%s': QED backing filename offset is invalid",
                         img->filename);
    if (h->backing_filename_size > QED_MAX_BACKING_NAME)
        return img_error(-EINVAL,
                         "qed: '%s': the backing file name is too long (%" PRIu32 " bytes)",
                         img->filename, h->backing_filename_size);
    char *name = calloc(1, h->backing_filename_size + 1);
    if (!name)
        return img_error(-ENOMEM, "qed: out of memory");
    int ret = io_pread(img->file, name, h->backing_filename_size, h->backing_filename_offset);
    if (ret < 0) {
        free(name);
        return img_error(ret, "qed: '%s': failed to read backing filename: %s", img->filename,
                         img_strerror(ret));
    }
    img->backing_name = name;
    if (h->features & QED_F_BACKING_FORMAT_NO_PROBE) {
        img->backing_format = strdup("raw");
        if (!img->backing_format)
            return img_error(-ENOMEM, "qed: out of memory");
    }
    return 0;
}

static int read_l1(struct img *img, struct qed_state *s)
{
    uint64_t bytes = qed_table_bytes(&s->hdr);
    /* The table lies inside the file (checked before): its size is bounded by the file's. */
    s->l1 = malloc((size_t)bytes);
    if (!s->l1)
        return img_error(-ENOMEM, "qed: '%s': out of memory for an L1 table of %" PRIu64 " bytes",
                         img->filename, bytes);
    uint8_t *raw = (uint8_t *)s->l1;
    for (uint64_t done = 0; done < bytes;) {
        size_t n = (size_t)min_u64(bytes - done, L1_READ_CHUNK);
        int ret = io_pread(img->file, raw + done, n, s->hdr.l1_table_offset + done);
        if (ret < 0)
            return img_error(ret, "qed: '%s': cannot read the L1 table: %s", img->filename,
                             img_strerror(ret));
        done += n;
    }
    for (uint64_t i = 0; i < s->table_entries; i++)
        s->l1[i] = load_le64(&s->l1[i]);
    return 0;
}

static void free_state(struct qed_state *s)
{
    if (!s)
        return;
    free(s->l1);
    free(s->cache);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->alloc_done);
    free(s);
}

/*
 * As QEMU: an image opened for writing with need-check set (its writer did not close it) is
 * checked and its invalid offsets cleared, then marked clean unless corruption remains. Not
 * for IMG_OPEN_CHECK, where the caller's own check does it.
 */
static int repair_if_needed(struct img *img, struct qed_state *s)
{
    int ret = 0;
    if (s->hdr.autoclear_features && img->writable) {
        /* Unknown autoclear bits are knocked out by whoever writes the image. */
        s->hdr.autoclear_features = 0;
        ret = qed_header_write(img);
    }
    if (ret < 0 || !(s->hdr.features & QED_F_NEED_CHECK) || !img->writable ||
        (img->flags & IMG_OPEN_CHECK))
        return ret;
    struct img_check_result r = {0};
    pthread_mutex_lock(&s->lock);
    ret = qed_check_locked(img, true, &r);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int qed_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    struct qed_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "qed: out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->alloc_done, NULL);
    uint8_t buf[QED_HEADER_BYTES];
    int64_t file_size = io_file_size(img->file);
    int ret = file_size < 0 ? (int)file_size : 0;
    if (ret < 0) {
        img_error(ret, "qed: cannot read the size of '%s'", img->filename);
        goto fail;
    }
    if (file_size < QED_HEADER_BYTES) {
        ret = img_error(-EINVAL,
                        "qed: '%s': the file ends inside the header (%" PRId64 " of %u bytes)",
                        img->filename, file_size, QED_HEADER_BYTES);
        goto fail;
    }
    ret = io_pread(img->file, buf, sizeof(buf), 0);
    if (ret < 0) {
        img_error(ret, "qed: '%s': cannot read the header: %s", img->filename, img_strerror(ret));
        goto fail;
    }
    ret = qed_header_parse(buf, img->filename, &s->hdr);
    if (ret < 0)
        goto fail;
    /* QEMU takes the file's size rounded down to whole clusters. */
    s->file_size = align_down_u64((uint64_t)file_size, s->hdr.cluster_size);
    s->table_entries = qed_table_bytes(&s->hdr) / sizeof(uint64_t);
    img->priv = s; /* for the helpers; cleared again on failure */
    if (!qed_table_offset_valid(s, s->hdr.l1_table_offset)) {
        ret = img_error(-EINVAL, "qed: '%s': QED table offset is invalid (L1 at 0x%" PRIx64 ")",
                        img->filename, s->hdr.l1_table_offset);
        goto fail;
    }
    if (s->hdr.features & QED_F_BACKING_FILE) {
        ret = read_backing_name(img, s);
        if (ret < 0)
            goto fail;
    }
    s->cache = calloc(QED_CACHE_SLOTS, sizeof(*s->cache));
    if (!s->cache) {
        ret = img_error(-ENOMEM, "qed: out of memory");
        goto fail;
    }
    ret = read_l1(img, s);
    if (ret < 0)
        goto fail;
    img->size = s->hdr.image_size;
    img->cluster_size = s->hdr.cluster_size;
    /* QEMU's info never reports need-check as "dirty-flag". */
    ret = repair_if_needed(img, s);
    if (ret < 0)
        goto fail;
    return 0;
fail:
    img->priv = NULL;
    free(img->backing_name);
    free(img->backing_format);
    img->backing_name = img->backing_format = NULL;
    free_state(s);
    return ret;
}

static void qed_close(struct img *img)
{
    free_state(img->priv);
    img->priv = NULL;
}

static const struct opt_desc qed_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "backing_file", .type = OPT_PATH, .help = "File name of a base image"},
    {.name = "backing_fmt", .type = OPT_STRING, .help = "Image format of the base image"},
    {.name = "cluster_size", .type = OPT_SIZE, .def = "65536", .help = "Cluster size (in bytes)"},
    {.name = "table_size", .type = OPT_SIZE, .help = "L1/L2 table size (in clusters)"},
    OPT_TABLE_END,
};

const struct img_format format_qed = {
    .name = "qed",
    .caps = FORMAT_HAS_METADATA | FORMAT_BACKING,
    .create_options = qed_create_options,
    .probe = qed_probe,
    .open = qed_open,
    .close = qed_close,
    .map = qed_map,
    .create = qed_create,
    .measure = qed_measure,
    .alloc = qed_alloc,
    .alloc_commit = qed_alloc_commit,
    .zero = qed_zero,
    .flush = qed_flush,
    .resize = qed_resize,
    .check = qed_check,
    .change_backing = qed_change_backing,
};
