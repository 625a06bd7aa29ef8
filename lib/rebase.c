/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_rebase(): moves an overlay onto another backing file, as qemu-img 7.2's rebase.
 *
 * Safe mode keeps the guest view: every range the overlay does not hold itself is read from
 * the old backing chain and from the new one; where they differ (compared sector by sector,
 * as qemu-img does), the old content is written into the overlay. Only then, after a flush,
 * is the header switched to the new name, in one write by the backend. Until that write the
 * image still reads through the old backing chain, and the ranges copied so far hold what
 * that chain showed there: a failure, a cancel or a kill at any point leaves the guest view
 * unchanged. Unsafe mode switches the header alone.
 *
 * The handle is held exclusively throughout (no other call on it runs), so the overlay's
 * allocation cannot change between the look at a range and the copy into it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "progress.h"
#include "util/checked.h"

/* Bytes compared per step (qemu-img's IO_BUF_SIZE), and the unit of comparison. */
#define REBASE_CHUNK (2u << 20)
#define REBASE_SECTOR 512u

/* Where a failure happened, for the message qemu-img gives there. */
enum rebase_phase {
    PHASE_CHECKS,
    PHASE_OPEN_NEW,
    PHASE_COPY,
    PHASE_SWITCH,
};

struct rebase {
    struct img *img;
    const char *backing_file; /* NULL when detaching */
    const char *given_name;   /* the caller's backing_file (NULL or "" when detaching) */
    const char *backing_fmt;
    unsigned flags;
    struct img *new_backing; /* safe mode: the new chain, read-only; NULL when detaching */
    char *new_full;          /* backing_file resolved from the overlay's folder */
    char *name, *format;     /* copies of backing_file and backing_fmt for the handle */
    uint8_t *buf_old, *buf_new;
    enum rebase_phase phase;
};

/*
 * Length of the run at the start of `a` and `b` (`len` bytes) that is all equal or all
 * different, in whole sectors but for a short tail; *differ says which (compare_buffers()).
 */
static size_t same_kind_run(const uint8_t *a, const uint8_t *b, size_t len, bool *differ)
{
    size_t i = len < REBASE_SECTOR ? len : REBASE_SECTOR;
    *differ = memcmp(a, b, i) != 0;
    while (i < len) {
        size_t n = len - i < REBASE_SECTOR ? len - i : REBASE_SECTOR;
        if ((memcmp(a + i, b + i, n) != 0) != *differ)
            break;
        i += n;
    }
    return i;
}

/*
 * Copies into the overlay what differs in [offset, offset + n) between the old and the new
 * backing view (buf_old, buf_new). Past the old backing file's end the old view is zeros,
 * and qemu-img writes zeros there (a zero cluster) rather than data.
 */
static int copy_differences(struct rebase *r, uint64_t offset, size_t n, bool old_is_zero)
{
    struct img *img = r->img;
    for (size_t done = 0; done < n;) {
        bool differ;
        size_t run = same_kind_run(r->buf_old + done, r->buf_new + done, n - done, &differ);
        if (differ) {
            int64_t ret;
            if (old_is_zero && img->fmt->zero)
                ret = img_zero_guest(img, offset + done, run);
            else
                ret = img_write_guest(img, r->buf_old + done, run, offset + done);
            if (ret < 0)
                return img_error((int)ret, "Error while writing to COW image: %s",
                                 img_last_error());
        }
        done += run;
    }
    return 0;
}

/* The safe mode's copy: every range the overlay does not hold whose old and new views differ. */
static int copy_changed_ranges(struct rebase *r)
{
    struct img *img = r->img;
    uint64_t size = img->size;
    uint64_t old_size = img->backing ? img->backing->size : 0;
    uint64_t new_size = r->new_backing ? r->new_backing->size : 0;
    r->buf_old = malloc(REBASE_CHUNK);
    r->buf_new = malloc(REBASE_CHUNK);
    if (!r->buf_old || !r->buf_new)
        return img_error(-ENOMEM, "out of memory");
    for (uint64_t offset = 0; offset < size;) {
        int ret = img_progress(offset, size);
        if (ret < 0)
            return ret;
        struct img_extent ext = {0};
        ret = img->fmt->map(img, offset, min_u64(REBASE_CHUNK, size - offset), &ext);
        if (ret < 0)
            return img_error(ret, "error while reading image metadata: %s", img_last_error());
        uint64_t n = ext.length;
        if (n == 0)
            return img_error(-EIO, "%s: format backend returned an empty extent", img->filename);
        if (ext.kind != EXTENT_UNALLOCATED) {
            offset += n;
            continue;
        }
        /* As qemu-img: a step never straddles either backing file's end. */
        bool old_is_zero = offset >= old_size;
        if (!old_is_zero)
            n = min_u64(n, old_size - offset);
        if (offset < new_size)
            n = min_u64(n, new_size - offset);
        ret = old_is_zero ? (memset(r->buf_old, 0, n), 0)
                          : img_read_guest(img->backing, r->buf_old, n, offset);
        if (ret < 0)
            return img_error(ret, "error while reading from old backing file: %s",
                             img_last_error());
        ret = r->new_backing ? img_read_guest(r->new_backing, r->buf_new, n, offset)
                             : (memset(r->buf_new, 0, n), 0);
        if (ret < 0)
            return img_error(ret, "error while reading from new backing file: %s",
                             img_last_error());
        ret = copy_differences(r, offset, (size_t)n, old_is_zero);
        if (ret < 0)
            return ret;
        offset += n;
    }
    return 0;
}

/* Replaces the overlay's entry for its backing file in the list of files it names. */
static int rename_named_backing(struct img *img, const char *name)
{
    for (size_t i = 0; i < img->named_count; i++) {
        if (img->named[i].kind != IMG_NAMED_BACKING)
            continue;
        free(img->named[i].path);
        memmove(&img->named[i], &img->named[i + 1],
                (img->named_count - i - 1) * sizeof(img->named[0]));
        img->named_count--;
        break;
    }
    return name ? img_name_file(img, IMG_NAMED_BACKING, name) : 0;
}

/* Puts `chain` (or nothing) under the overlay in place of the old backing chain. */
static void attach_chain(struct img *img, struct img *chain)
{
    struct img *old = img->backing;
    img->backing = chain;
    for (struct img *parent = img, *layer = chain; layer; parent = layer, layer = layer->backing)
        layer->depth = parent->depth + 1;
    img_close(old);
}

/*
 * The copies of the new names the handle takes once the header changed, made beforehand: no
 * failure may come between the switch on disk and the handle's record of it (a later header
 * rewrite would bring the old name back).
 */
static int prepare_names(struct rebase *r)
{
    r->name = r->backing_file ? strdup(r->backing_file) : NULL;
    r->format = r->backing_fmt ? strdup(r->backing_fmt) : NULL;
    if ((r->backing_file && !r->name) || (r->backing_fmt && !r->format))
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

/* After the header changed: the handle's names (and chain) follow, as a fresh open would. */
static void adopt_new_backing(struct rebase *r)
{
    struct img *img = r->img;
    free(img->backing_name);
    free(img->backing_format);
    free(img->backing_full);
    img->backing_name = r->name;
    img->backing_format = r->format;
    img->backing_full = r->new_full;
    r->name = r->format = r->new_full = NULL;
    /* Only the list img_get_named_file() answers from: short of memory, it lacks the entry. */
    (void)rename_named_backing(img, img->backing_name);

    struct img *chain = r->new_backing;
    r->new_backing = NULL;
    /* Unsafe mode on a handle that reads its chain: it reads the new one, where it opens. */
    if (!chain && img->backing && img->backing_full) {
        unsigned flags =
            (img->flags & ~(IMG_OPEN_READ_WRITE | IMG_OPEN_CHECK)) | IMG_OPEN_READ_ONLY;
        if (img_open(&chain, img->backing_full, img->backing_format, flags, NULL) < 0)
            chain = NULL;
    }
    if (chain || img->backing)
        attach_chain(img, chain);
}

static int open_new_backing(struct rebase *r)
{
    struct img *img = r->img;
    unsigned flags =
        IMG_OPEN_READ_ONLY | (img->flags & (IMG_OPEN_ALLOW_DATA_FILE |
                                            IMG_OPEN_ALLOW_EXTERNAL_EXTENTS | IMG_OPEN_UNTRUSTED));
    if (r->flags & IMG_REBASE_FORCE_SHARE)
        flags |= IMG_OPEN_FORCE_SHARE;
    r->phase = PHASE_OPEN_NEW;
    return img_open(&r->new_backing, r->new_full, r->backing_fmt, flags, NULL);
}

static int rebase_locked(struct rebase *r)
{
    struct img *img = r->img;
    bool safe = !(r->flags & IMG_REBASE_UNSAFE);
    /* Refused before anything is copied (qemu-img copies first, then fails the same way). */
    if (!img->fmt->change_backing) {
        r->phase = PHASE_SWITCH;
        return -ENOTSUP;
    }
    if (safe && img->backing_name && !img->backing)
        return img_error(-EINVAL,
                         "%s: a safe rebase reads the old backing file '%s', which was not "
                         "opened (IMG_OPEN_NO_BACKING)",
                         img->filename, img->backing_name);
    if (r->backing_fmt && !format_find(r->backing_fmt))
        return img_error(-EINVAL, "Invalid format name: '%s'", r->backing_fmt);
    if (r->backing_file) {
        r->new_full = img_resolve_path(img->filename, r->backing_file);
        if (!r->new_full)
            return img_error(-ENOMEM, "out of memory");
    }
    int ret = 0;
    if (safe && r->backing_file && (ret = open_new_backing(r)) < 0)
        return ret;
    if (r->backing_file && !r->backing_fmt) {
        r->phase = PHASE_SWITCH;
        return -EINVAL; /* worded by the caller, as qemu-img words it */
    }
    if (safe) {
        r->phase = PHASE_COPY;
        ret = copy_changed_ranges(r);
        if (ret < 0)
            return ret;
    }
    if ((ret = prepare_names(r)) < 0)
        return ret;
    /* Everything copied must be on disk before the header points elsewhere. */
    if (img->fmt->flush && (ret = img->fmt->flush(img)) < 0)
        return ret;
    r->phase = PHASE_SWITCH;
    ret = img->fmt->change_backing(img, r->backing_file, r->backing_fmt);
    if (ret < 0)
        return ret;
    img_progress_final(img->size);
    adopt_new_backing(r);
    return 0;
}

/* Words the failure of the header switch as qemu-img does. */
static int switch_failed(const struct rebase *r, int ret)
{
    /* qemu-img prints a missing -b through glibc's printf, as "(null)". */
    const char *name = r->given_name ? r->given_name : "(null)";
    if (ret == -ENOSPC)
        return img_error(ret,
                         "Could not change the backing file to '%s': No space left in the file "
                         "header",
                         name);
    if (ret == -EINVAL && r->backing_file && !r->backing_fmt)
        return img_error(ret,
                         "Could not change the backing file to '%s': backing format must be "
                         "specified",
                         name);
    return img_error(ret, "Could not change the backing file to '%s': %s", name, strerror(-ret));
}

IMG_API int img_rebase(img *img, const char *backing_file, const char *backing_fmt, unsigned flags)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    if (!img->writable)
        return img_error(-EROFS, "%s: image is opened read-only", img->filename);
    if (flags & ~(IMG_REBASE_UNSAFE | IMG_REBASE_FORCE_SHARE))
        return img_error(-EINVAL, "img_rebase: unknown flags 0x%x", flags);
    struct rebase r = {
        .img = img,
        .backing_file = backing_file && *backing_file ? backing_file : NULL,
        .given_name = backing_file,
        .flags = flags,
        .phase = PHASE_CHECKS,
    };
    /* Detaching records no format, whatever the caller passed (as qemu-img -b "" -F). */
    r.backing_fmt = r.backing_file ? backing_fmt : NULL;
    if (r.backing_fmt && !*r.backing_fmt)
        r.backing_fmt = NULL;

    img_drain_enter(img);
    struct img_op op;
    img_op_begin(&op, img, NULL, NULL);
    int ret = rebase_locked(&r);
    img_op_end(&op);
    img_io_leave(img);

    if (ret < 0 && r.phase == PHASE_OPEN_NEW)
        img_error_prefix("Could not open new backing file '%s'", r.backing_file);
    else if (ret < 0 && r.phase == PHASE_SWITCH)
        switch_failed(&r, ret);
    img_close(r.new_backing);
    free(r.new_full);
    free(r.name);
    free(r.format);
    free(r.buf_old);
    free(r.buf_new);
    return ret;
}
