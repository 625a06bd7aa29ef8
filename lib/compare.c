/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_compare: whether two images show the guest the same bytes, as qemu-img compare (7.2,
 * qemu-img.c: img_compare) decides it. Both images are walked by block status; runs that are
 * zeros in both are not read, the others are read and compared. The part of the longer image
 * past the shorter one must read as zeros. In strict mode the allocation status of every run
 * must be the same and the sizes must match.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "image.h"
#include "progress.h"

/* Runs are compared in pieces of at most this, read into one buffer per image. */
#define COMPARE_BUF_SIZE (2u << 20)
/* Mismatches are reported at sector granularity, as qemu-img reports them. */
#define COMPARE_SECTOR 512u
/*
 * What strict mode compares of each run's status: qemu-img compares the whole block status,
 * which holds, beside data/zero/allocated, whether the host offset is known and whether the
 * run reaches the end of the image (BDRV_BLOCK_EOF, which STATUS_EOF stands for here).
 */
#define STATUS_EOF (1u << 31)
#define STATUS_MASK                                                                                \
    (IMG_BLOCK_DATA | IMG_BLOCK_ZERO | IMG_BLOCK_ALLOCATED | IMG_BLOCK_OFFSET_VALID | STATUS_EOF)

struct compare_side {
    img *image;
    uint64_t size;
    unsigned char *buf;
};

/* The status of the run at `offset`, or a negative errno with qemu-img's message. */
static int side_status(struct compare_side *s, uint64_t offset, uint64_t length, uint64_t *pnum,
                       unsigned *status)
{
    int ret = img_block_status(s->image, offset, length, pnum, status, NULL, NULL);
    if (ret >= 0 && offset + *pnum == s->size)
        *status |= STATUS_EOF;
    if (ret >= 0 && *pnum == 0)
        ret = img_error(-EIO, "no progress at offset %" PRIu64, offset);
    if (ret < 0)
        img_error_prefix("Sector allocation test failed for %s", img_get_filename(s->image));
    return ret < 0 ? ret : 0;
}

static int side_read(struct compare_side *s, uint64_t offset, size_t len)
{
    int64_t n = img_pread(s->image, s->buf, len, offset);
    if (n == (int64_t)len)
        return 0;
    int ret = n < 0 ? (int)n : img_error(-EIO, "short read");
    img_error_prefix("Error while reading offset %" PRIu64 " of %s", offset,
                     img_get_filename(s->image));
    return ret;
}

/* Index of the first byte that differs, or len. */
static size_t first_difference(const unsigned char *x, const unsigned char *y, size_t len)
{
    /* memcmp finds out quickly whether any difference is there at all. */
    if (memcmp(x, y, len) == 0)
        return len;
    size_t i = 0;
    while (i < len && x[i] == y[i])
        i++;
    return i;
}

static size_t first_nonzero(const unsigned char *x, size_t len)
{
    size_t i = 0;
    while (i < len && x[i] == 0)
        i++;
    return i;
}

static int content_mismatch(uint64_t offset, size_t index, uint64_t *where)
{
    *where = offset + (uint64_t)index / COMPARE_SECTOR * COMPARE_SECTOR;
    return IMG_COMPARE_CONTENT_MISMATCH;
}

/* [0, common) of both images: a result code, or a negative errno. */
static int compare_common(struct compare_side *a, struct compare_side *b, uint64_t common,
                          bool strict, uint64_t total, uint64_t *where)
{
    for (uint64_t offset = 0; offset < common;) {
        uint64_t pnum_a, pnum_b;
        unsigned st_a, st_b;
        int ret = side_status(a, offset, common - offset, &pnum_a, &st_a);
        if (ret == 0)
            ret = side_status(b, offset, common - offset, &pnum_b, &st_b);
        if (ret < 0)
            return ret;
        uint64_t chunk = pnum_a < pnum_b ? pnum_a : pnum_b;
        if (strict && (st_a & STATUS_MASK) != (st_b & STATUS_MASK)) {
            *where = offset;
            return IMG_COMPARE_STATUS_MISMATCH;
        }
        if (!((st_a & IMG_BLOCK_ZERO) && (st_b & IMG_BLOCK_ZERO))) {
            if (chunk > COMPARE_BUF_SIZE)
                chunk = COMPARE_BUF_SIZE;
            ret = side_read(a, offset, (size_t)chunk);
            if (ret == 0)
                ret = side_read(b, offset, (size_t)chunk);
            if (ret < 0)
                return ret;
            size_t diff = first_difference(a->buf, b->buf, (size_t)chunk);
            if (diff < chunk)
                return content_mismatch(offset, diff, where);
        }
        offset += chunk;
        if ((ret = img_progress(offset, total)) < 0)
            return ret;
    }
    return IMG_COMPARE_IDENTICAL;
}

/* The part of the longer image from `from` on must read as zeros. */
static int compare_tail(struct compare_side *longer, uint64_t from, uint64_t *where)
{
    for (uint64_t offset = from; offset < longer->size;) {
        uint64_t chunk;
        unsigned status;
        int ret = side_status(longer, offset, longer->size - offset, &chunk, &status);
        if (ret < 0)
            return ret;
        if (!(status & IMG_BLOCK_ZERO)) {
            if (chunk > COMPARE_BUF_SIZE)
                chunk = COMPARE_BUF_SIZE;
            if ((ret = side_read(longer, offset, (size_t)chunk)) < 0)
                return ret;
            size_t nonzero = first_nonzero(longer->buf, (size_t)chunk);
            if (nonzero < chunk)
                return content_mismatch(offset, nonzero, where);
        }
        offset += chunk;
        if ((ret = img_progress(offset, longer->size)) < 0)
            return ret;
    }
    return IMG_COMPARE_IDENTICAL;
}

static int side_init(struct compare_side *s, img *image)
{
    s->image = image;
    int64_t size = img_get_size(image);
    if (size < 0)
        return img_error((int)size, "Can't get size of %s", img_get_filename(image));
    s->size = (uint64_t)size;
    s->buf = malloc(COMPARE_BUF_SIZE);
    if (!s->buf)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

static int run_compare(struct compare_side *a, struct compare_side *b, bool strict, uint64_t *where)
{
    if (a->size != b->size && strict)
        return IMG_COMPARE_SIZE_MISMATCH;
    struct compare_side *longer = a->size > b->size ? a : b;
    uint64_t common = a->size < b->size ? a->size : b->size;
    int ret = compare_common(a, b, common, strict, longer->size, where);
    if (ret == IMG_COMPARE_IDENTICAL && a->size != b->size)
        ret = compare_tail(longer, common, where);
    return ret;
}

IMG_API int img_compare(img *a, img *b, unsigned flags, uint64_t *offset)
{
    uint64_t unused;
    if (!offset)
        offset = &unused;
    *offset = 0;
    if (!a || !b || a->magic != IMG_HANDLE_MAGIC || b->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "img_compare: invalid image handle");
    if (flags & ~IMG_COMPARE_STRICT)
        return img_error(-EINVAL, "img_compare: unknown flags 0x%x", flags);

    struct compare_side sa = {0}, sb = {0};
    int ret = side_init(&sa, a);
    if (ret == 0)
        ret = side_init(&sb, b);
    if (ret == 0) {
        /* Progress and cancellation are those of `a`'s handle (img_set_progress). */
        struct img_op op;
        img_op_begin(&op, a, NULL, NULL);
        ret = run_compare(&sa, &sb, (flags & IMG_COMPARE_STRICT) != 0, offset);
        img_op_end(&op);
    }
    free(sa.buf);
    free(sb.buf);
    return ret;
}
