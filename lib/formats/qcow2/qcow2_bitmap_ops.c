/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The backend's bitmap entries: list, read, and the changes qemu-img bitmap makes. The checks
 * and their order follow QEMU's qmp_block_dirty_bitmap_add() and friends (blockdev and
 * block/dirty-bitmap.c) and qcow2_co_can_store_new_dirty_bitmap() (block/qcow2-bitmap.c), so
 * each refusal gives qemu-img's message.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "util/checked.h"

#define DEFAULT_MIN_GRANULARITY 4096u
#define DEFAULT_MAX_GRANULARITY 65536u

static struct qcow2_bitmap *find(struct qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        if (strcmp(s->bitmaps[i].name, name) == 0)
            return &s->bitmaps[i];
    return NULL;
}

/* Marked in use by an earlier session that did not close cleanly (not by this one). */
static bool inconsistent(const struct qcow2_bitmap *b)
{
    return (b->flags & QCOW2_BITMAP_IN_USE) && !b->tracking;
}

static int not_found(const char *name)
{
    return img_error(-ENOENT, "Dirty bitmap '%s' not found", name);
}

static int refuse_inconsistent(const char *name)
{
    return img_error(-EBUSY,
                     "Bitmap '%s' is inconsistent and cannot be used\n"
                     "Try block-dirty-bitmap-remove to delete this bitmap from disk",
                     name);
}

/* The bitmap `name` for a use that needs consistent bits. */
static int usable(struct qcow2_state *s, const char *name, struct qcow2_bitmap **out)
{
    struct qcow2_bitmap *b = find(s, name);
    if (!b)
        return not_found(name);
    if (inconsistent(b))
        return refuse_inconsistent(name);
    *out = b;
    return 0;
}

int qcow2_bitmap_list(struct img *img, struct img_bitmap_desc **out, size_t *count)
{
    struct qcow2_state *s = img->priv;
    *out = NULL;
    *count = 0;
    pthread_mutex_lock(&s->lock);
    uint32_t n = s->nb_bitmaps;
    struct img_bitmap_desc *d = calloc(n ? n : 1, sizeof(*d));
    int ret = d ? 0 : img_error(-ENOMEM, "out of memory");
    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        d[i].name = strdup(b->name);
        if (!d[i].name)
            ret = img_error(-ENOMEM, "out of memory");
        d[i].granularity = 1ull << b->granularity_bits;
        d[i].flags = ((b->flags & QCOW2_BITMAP_AUTO) ? IMG_BITMAP_ENABLED : 0) |
                     (inconsistent(b) ? IMG_BITMAP_IN_USE : 0);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        img_bitmap_descs_free(d, n);
        return ret;
    }
    *out = d;
    *count = n;
    return 0;
}

int qcow2_bitmap_read(struct img *img, const char *name, uint8_t **bits, uint64_t *size,
                      unsigned *granularity_bits)
{
    struct qcow2_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    struct qcow2_bitmap *b = NULL;
    int ret = usable(s, name, &b);
    if (ret == 0)
        ret = qcow2_bitmap_load_bits(s, b, img->size);
    if (ret == 0) {
        uint64_t n = qcow2_bitmap_nb_bytes(qcow2_bitmap_nb_bits(img->size, b->granularity_bits));
        *bits = malloc(n ? n : 1);
        if (!*bits)
            ret = img_error(-ENOMEM, "out of memory");
        else /* byte by byte: tracked writes set bits meanwhile, without the lock */
            for (uint64_t i = 0; i < n; i++)
                (*bits)[i] = __atomic_load_n(&b->bits[i], __ATOMIC_RELAXED);
        *size = img->size;
        *granularity_bits = b->granularity_bits;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static unsigned log2_u64(uint64_t v)
{
    unsigned n = 0;
    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

/* qcow2_co_can_store_new_dirty_bitmap(): the reason a new bitmap cannot be stored, or 0. */
static int can_store(struct img *img, const char *name, unsigned gbits)
{
    struct qcow2_state *s = img->priv;
    const char *why = NULL;
    int code = -EINVAL;
    uint64_t nb_bytes = (qcow2_bitmap_nb_bits(img->size, (uint8_t)gbits) + 7) / 8;
    uint64_t dir_bytes = 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        dir_bytes += align_up_u64(QCOW2_BITMAP_ENTRY_BYTES + strlen(s->bitmaps[i].name), 8);
    char reason[96];
    if (s->hdr.version < 3) {
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
        code = -ENOTSUP;
    } else if (strlen(name) > QCOW2_MAX_BITMAP_NAME) {
        snprintf(reason, sizeof(reason), "Name length exceeds maximum (%u characters)",
                 QCOW2_MAX_BITMAP_NAME);
        why = reason;
    } else if (gbits > QCOW2_BITMAP_MAX_GRANULARITY_BITS) {
        snprintf(reason, sizeof(reason), "Granularity exceeds maximum (%llu bytes)",
                 1ull << QCOW2_BITMAP_MAX_GRANULARITY_BITS);
        why = reason;
    } else if (gbits < QCOW2_BITMAP_MIN_GRANULARITY_BITS) {
        snprintf(reason, sizeof(reason), "Granularity is under minimum (%llu bytes)",
                 1ull << QCOW2_BITMAP_MIN_GRANULARITY_BITS);
        why = reason;
    } else if (nb_bytes > QCOW2_BITMAP_MAX_PHYS_BYTES) {
        why = "Too much space will be occupied by the bitmap. Use larger granularity";
    } else if (s->nb_bitmaps >= QCOW2_MAX_BITMAPS) {
        why = "Maximum number of persistent bitmaps is already reached";
        code = -ENOSPC;
    } else if (dir_bytes + align_up_u64(QCOW2_BITMAP_ENTRY_BYTES + strlen(name), 8) >
               QCOW2_MAX_BITMAP_DIRECTORY_BYTES) {
        why = "Not enough space in the bitmap directory";
        code = -ENOSPC;
    }
    if (!why)
        return 0;
    /* A name past the limit is shortened so that the reason still fits in the message. */
    bool long_name = strlen(name) > QCOW2_MAX_BITMAP_NAME;
    return img_error(code, "Can't make bitmap '%.*s%s' persistent in '%s': %s",
                     long_name ? 64 : (int)strlen(name), name, long_name ? "..." : "",
                     img->filename, why);
}

static int add(struct img *img, const struct img_bitmap_change *c)
{
    struct qcow2_state *s = img->priv;
    if (!c->name[0])
        return img_error(-EINVAL, "Bitmap name cannot be empty");
    uint64_t g = c->granularity;
    if (g == 0)
        g = s->cluster_size < DEFAULT_MIN_GRANULARITY   ? DEFAULT_MIN_GRANULARITY
            : s->cluster_size > DEFAULT_MAX_GRANULARITY ? DEFAULT_MAX_GRANULARITY
                                                        : s->cluster_size;
    else if (g < 512 || (g & (g - 1)) || g > UINT32_MAX)
        return img_error(-EINVAL, "Granularity must be power of 2 and at least 512");
    unsigned gbits = log2_u64(g);
    int ret = can_store(img, c->name, gbits);
    if (ret < 0)
        return ret;
    if (find(s, c->name))
        return img_error(-EEXIST, "Bitmap already exists: %s", c->name);

    struct qcow2_bitmap *grown = realloc(s->bitmaps, (s->nb_bitmaps + 1) * sizeof(*grown));
    if (!grown)
        return img_error(-ENOMEM, "out of memory");
    s->bitmaps = grown;
    struct qcow2_bitmap *b = &s->bitmaps[s->nb_bitmaps];
    memset(b, 0, sizeof(*b));
    b->name = strdup(c->name);
    b->bits = calloc(1, qcow2_bitmap_nb_bytes(qcow2_bitmap_nb_bits(img->size, (uint8_t)gbits)) + 1);
    if (!b->name || !b->bits) {
        qcow2_bitmap_release(b);
        return img_error(-ENOMEM, "out of memory");
    }
    b->type = QCOW2_BITMAP_TYPE_DIRTY_TRACKING;
    b->granularity_bits = (uint8_t)gbits;
    b->flags = c->disabled ? 0 : QCOW2_BITMAP_AUTO;
    /* Added while this session tracks writes: it tracks them from now on too. */
    if (!c->disabled && s->writer->bitmaps_in_use) {
        b->flags |= QCOW2_BITMAP_IN_USE;
        b->tracking = true;
    }
    s->nb_bitmaps++;
    ret = qcow2_bitmaps_store(img, NULL, 0);
    if (ret < 0) {
        s->nb_bitmaps--;
        qcow2_bitmap_release(b);
    }
    return ret;
}

static int remove_bitmap(struct img *img, const char *name)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_bitmap *b = find(s, name);
    if (!b)
        return not_found(name);
    struct qcow2_bitmap kept = *b, gone = *b;
    /* A table that cannot be read is left where it is (leaked) rather than freed blindly. */
    if (qcow2_bitmap_load_table(s, b) < 0)
        gone.table_offset = 0;
    else
        kept = gone = *b;
    uint32_t index = (uint32_t)(b - s->bitmaps);
    memmove(b, b + 1, (s->nb_bitmaps - index - 1) * sizeof(*b));
    s->nb_bitmaps--;
    int ret = qcow2_bitmaps_store(img, &gone, 1);
    if (ret < 0) {
        memmove(&s->bitmaps[index + 1], &s->bitmaps[index], (s->nb_bitmaps - index) * sizeof(*b));
        s->bitmaps[index] = kept;
        s->nb_bitmaps++;
        return ret;
    }
    qcow2_bitmap_release(&gone);
    return 0;
}

/* Sets the bits of `b` covering guest bytes [start, end). */
static void set_range(struct qcow2_bitmap *b, uint64_t start, uint64_t end)
{
    for (uint64_t i = start >> b->granularity_bits; i <= (end - 1) >> b->granularity_bits; i++)
        b->bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

static int merge(struct img *img, struct qcow2_bitmap *b, const struct img_bitmap_change *c)
{
    if (c->src_size != img->size)
        return img_error(-EINVAL,
                         "Bitmaps are of different sizes (destination size is %" PRIu64
                         ", source size is %" PRIu64 ") and can't be merged",
                         img->size, c->src_size);
    struct qcow2_state *s = img->priv;
    int ret = qcow2_bitmap_load_bits(s, b, img->size);
    if (ret < 0)
        return ret;
    uint64_t n = qcow2_bitmap_nb_bits(c->src_size, (uint8_t)c->src_granularity_bits);
    for (uint64_t i = 0; i < n; i++) {
        if (!(c->src_bits[i / 8] & (1u << (i % 8))))
            continue;
        uint64_t start = i << c->src_granularity_bits;
        set_range(b, start, min_u64(img->size, start + (1ull << c->src_granularity_bits)));
    }
    return 0;
}

static int change_existing(struct img *img, const struct img_bitmap_change *c)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_bitmap *b = NULL;
    int ret = usable(s, c->name, &b);
    if (ret < 0)
        return ret;
    uint32_t old_flags = b->flags;
    bool old_tracking = b->tracking;
    /*
     * Clear and merge change the bits in memory before they are stored: the old bits are kept
     * aside, so that a failed store leaves nothing for a later one (or the close) to write.
     */
    size_t nb_bytes =
        (size_t)qcow2_bitmap_nb_bytes(qcow2_bitmap_nb_bits(img->size, b->granularity_bits));
    uint8_t *old_bits = NULL;
    if (c->op == IMG_BITMAP_OP_CLEAR || c->op == IMG_BITMAP_OP_MERGE) {
        ret = qcow2_bitmap_load_bits(s, b, img->size);
        if (ret < 0)
            return ret;
        old_bits = malloc(nb_bytes ? nb_bytes : 1);
        if (!old_bits)
            return img_error(-ENOMEM, "out of memory");
        memcpy(old_bits, b->bits, nb_bytes);
    }
    switch (c->op) {
    case IMG_BITMAP_OP_CLEAR:
        memset(b->bits, 0, nb_bytes);
        break;
    case IMG_BITMAP_OP_ENABLE:
        b->flags |= QCOW2_BITMAP_AUTO;
        if (s->writer->bitmaps_in_use && !b->tracking) {
            ret = qcow2_bitmap_load_bits(s, b, img->size);
            b->flags |= QCOW2_BITMAP_IN_USE;
            b->tracking = true;
        }
        break;
    case IMG_BITMAP_OP_DISABLE:
        /* Its bits are complete up to now: stored consistent, they stop changing. */
        if (b->tracking)
            b->flags &= ~QCOW2_BITMAP_IN_USE;
        b->flags &= ~QCOW2_BITMAP_AUTO;
        b->tracking = false;
        break;
    case IMG_BITMAP_OP_MERGE:
        ret = merge(img, b, c);
        break;
    default:
        ret = img_error(-EINVAL, "qcow2: unknown bitmap operation");
        break;
    }
    if (ret == 0)
        ret = qcow2_bitmaps_store(img, NULL, 0);
    if (ret < 0) {
        b->flags = old_flags;
        b->tracking = old_tracking;
        if (old_bits)
            memcpy(b->bits, old_bits, nb_bytes);
    }
    free(old_bits);
    return ret;
}

int qcow2_bitmap_change(struct img *img, const struct img_bitmap_change *c)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_writer_usable(s);
    if (ret == 0) {
        if (c->op == IMG_BITMAP_OP_ADD)
            ret = add(img, c);
        else if (c->op == IMG_BITMAP_OP_REMOVE)
            ret = remove_bitmap(img, c->name);
        else
            ret = change_existing(img, c);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
