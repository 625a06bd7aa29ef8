/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img amend for qcow2: which options may change and in which order the changes are made,
 * after QEMU 7.2's qcow2_amend_options(): upgrade first (later steps may need version 3),
 * then the refcount width, the data file bits, the backing file (only confirmed: changing it
 * is rebase's job), lazy refcounts, the size, and the downgrade last (once the features it
 * cannot keep are gone).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_amend.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "opts.h"
#include "progress.h"

/* QEMU's qcow2_amend_opts: QCOW_COMMON_OPTIONS and the LUKS keyslot options. */
const struct opt_desc qcow2_amend_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "compat", .type = OPT_STRING, .help = "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {.name = "backing_file", .type = OPT_STRING, .help = "File name of a base image"},
    {.name = "backing_fmt", .type = OPT_STRING, .help = "Image format of the base image"},
    {.name = "data_file", .type = OPT_STRING, .help = "File name of an external data file"},
    {.name = "data_file_raw",
     .type = OPT_BOOL,
     .help = "The external data file must stay valid as a raw image"},
    {.name = "lazy_refcounts", .type = OPT_BOOL, .help = "Postpone refcount updates"},
    {.name = "refcount_bits", .type = OPT_INT, .help = "Width of a reference count entry in bits"},
    {.name = "encrypt.state",
     .type = OPT_STRING,
     .help = "Select new state of affected keyslots (active/inactive)"},
    {.name = "encrypt.keyslot",
     .type = OPT_INT,
     .help = "Select a single keyslot to modify explicitly"},
    {.name = "encrypt.old-secret",
     .type = OPT_STRING,
     .help = "Select all keyslots that match this password"},
    {.name = "encrypt.new-secret",
     .type = OPT_STRING,
     .help = "New secret to set in the matching keyslots. Empty string to erase"},
    {.name = "encrypt.iter-time",
     .type = OPT_INT,
     .help = "Time to spend in PBKDF in milliseconds"},
    OPT_TABLE_END,
};

/* What the request asks for, each field only when the option was given. */
struct amend_request {
    uint32_t version;
    uint64_t size; /* 0: unchanged (as in QEMU, size=0 changes nothing) */
    const char *backing_file, *backing_fmt, *data_file;
    bool lazy_refcounts, data_file_raw;
    uint32_t refcount_bits;
};

static bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Reads the options in QEMU's order of checks; nothing is written yet. */
static int parse_request(struct img *img, const img_opts *opts, struct amend_request *r)
{
    struct qcow2_state *s = img->priv;
    r->version = s->hdr.version;
    r->lazy_refcounts = (s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    r->data_file_raw = s->data_file_raw;
    r->refcount_bits = s->refcount_bits;
    for (const struct opt_desc *d = qcow2_amend_options; d->name; d++) {
        const char *value = img_opts_get(opts, d->name);
        if (!value)
            continue;
        int ret = 0;
        if (strcmp(d->name, "compat") == 0) {
            if (strcmp(value, "0.10") == 0 || strcmp(value, "v2") == 0)
                r->version = 2;
            else if (strcmp(value, "1.1") == 0 || strcmp(value, "v3") == 0)
                r->version = 3;
            else
                return img_error(-EINVAL, "Unknown compatibility level %s", value);
        } else if (strcmp(d->name, "size") == 0) {
            ret = opts_get_size(opts, "size", &r->size);
        } else if (strcmp(d->name, "backing_file") == 0) {
            r->backing_file = value;
        } else if (strcmp(d->name, "backing_fmt") == 0) {
            r->backing_fmt = value;
        } else if (strncmp(d->name, "encrypt.", 8) == 0) {
            return img_error(-EINVAL, "Can't amend encryption options - encryption not present");
        } else if (strcmp(d->name, "lazy_refcounts") == 0) {
            ret = opts_get_bool(opts, "lazy_refcounts", &r->lazy_refcounts);
        } else if (strcmp(d->name, "refcount_bits") == 0) {
            uint64_t bits = 0;
            ret = opts_get_u64(opts, "refcount_bits", &bits);
            if (ret == 0 && (bits > 64 || !is_power_of_two(bits)))
                return img_error(-EINVAL, "Refcount width must be a power of two and may not "
                                          "exceed 64 bits");
            r->refcount_bits = (uint32_t)bits;
        } else if (strcmp(d->name, "data_file") == 0) {
            r->data_file = value;
            if (!qcow2_has_data_file(s))
                return img_error(-EINVAL, "data-file can only be set for images that use an "
                                          "external data file");
        } else if (strcmp(d->name, "data_file_raw") == 0) {
            ret = opts_get_bool(opts, "data_file_raw", &r->data_file_raw);
            if (ret == 0 && r->data_file_raw && !s->data_file_raw)
                return img_error(-EINVAL, "data-file-raw cannot be set on existing images");
        }
        if (ret < 0)
            return ret;
    }
    return 0;
}

int qcow2_amend_report(struct qcow2_amend_progress *p, uint64_t done, uint64_t total)
{
    /* Reported in bytes of virtual size, as the public callback takes them. */
    uint64_t scale = p->img->size ? p->img->size : 1;
    uint64_t step = scale / p->steps;
    uint64_t within = total ? (uint64_t)((double)step * ((double)done / (double)total)) : 0;
    return img_progress(step * p->current + within, scale);
}

static int write_header_locked(struct img *img)
{
    struct qcow2_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_flush_caches(s, true);
    if (ret == 0)
        ret = qcow2_write_header(img);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        img_error_prefix("Failed to update the image header");
    return ret;
}

/* data_file_raw off, or data_file renamed: one header rewrite (QEMU rewrites it always). */
static int amend_data_file(struct img *img, const struct amend_request *r)
{
    struct qcow2_state *s = img->priv;
    uint64_t old_autoclear = s->hdr.autoclear_features;
    char *old_name = s->ext.data_file;
    char *new_name = old_name;
    if (r->data_file) {
        new_name = *r->data_file ? strdup(r->data_file) : NULL;
        if (*r->data_file && !new_name)
            return img_error(-ENOMEM, "out of memory");
    }
    if (r->data_file_raw)
        s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    else
        s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    s->ext.data_file = new_name;
    int ret = write_header_locked(img);
    if (ret < 0) {
        s->hdr.autoclear_features = old_autoclear;
        s->ext.data_file = old_name;
        if (new_name != old_name)
            free(new_name);
        return ret;
    }
    s->data_file_raw = r->data_file_raw;
    if (new_name != old_name)
        free(old_name);
    return 0;
}

static bool same_text(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* QEMU 7.2 amends the backing file no more: it only accepts what the image already says. */
static int amend_backing(struct img *img, const struct amend_request *r)
{
    if (!r->backing_file && !r->backing_fmt)
        return 0;
    struct qcow2_state *s = img->priv;
    if (!same_text(r->backing_file, img->backing_name) ||
        !same_text(r->backing_fmt, s->ext.backing_format))
        return img_error(-EINVAL,
                         "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
    return 0;
}

static int amend_lazy_refcounts(struct img *img, const struct amend_request *r)
{
    struct qcow2_state *s = img->priv;
    bool current = (s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    if (current == r->lazy_refcounts)
        return 0;
    if (r->lazy_refcounts && r->version < 3)
        return img_error(-EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                                  "and above (use compat=1.1 or greater)");
    pthread_mutex_lock(&s->lock);
    /* Off: every refcount on disk first, then the image clean, then the bit gone. */
    int ret = qcow2_flush_caches(s, true);
    if (ret == 0 && !r->lazy_refcounts && (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_write_incompat(s, s->hdr.incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
        if (ret == 0) {
            s->writer->set_dirty_bit = false;
            img->dirty = false;
        }
        if (ret < 0)
            img_error_prefix("Failed to make the image clean");
    }
    if (ret == 0) {
        uint64_t old = s->hdr.compatible_features;
        if (r->lazy_refcounts)
            s->hdr.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        else
            s->hdr.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        ret = qcow2_write_header(img);
        if (ret < 0) {
            s->hdr.compatible_features = old;
            img_error_prefix("Failed to update the image header");
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int amend_size(struct img *img, uint64_t size)
{
    if (!size || size == img->size)
        return 0;
    /* QEMU truncates to a signed offset. */
    if (size > (uint64_t)INT64_MAX)
        return img_error(-EINVAL, "Image size cannot be negative");
    if (size & 511)
        return img_error(-EINVAL, "The new size must be a multiple of 512");
    /* qemu-img amend truncates exactly: shrinking is allowed as resize --shrink would. */
    return qcow2_resize(img, size, IMG_RESIZE_SHRINK, NULL);
}

int qcow2_amend(struct img *img, const img_opts *opts)
{
    struct qcow2_state *s = img->priv;
    if (!s->writer)
        return img_error(-EROFS, "qcow2: the image is opened read-only");
    int ret = qcow2_writer_usable(s);
    if (ret < 0)
        return ret;
    struct amend_request r;
    memset(&r, 0, sizeof(r));
    ret = parse_request(img, opts, &r);
    if (ret < 0)
        return ret;
    struct qcow2_amend_progress p = {.img = img};
    p.steps = (r.version != s->hdr.version) + (r.refcount_bits != s->refcount_bits);
    if (p.steps == 0)
        p.steps = 1;

    if (r.version > s->hdr.version) {
        ret = qcow2_amend_upgrade(img, &p);
        if (ret < 0)
            return ret;
        p.current++;
    }
    if (r.refcount_bits != s->refcount_bits) {
        if (r.version < 3 && r.refcount_bits != 16)
            return img_error(-EINVAL, "Refcount widths other than 16 bits require compatibility "
                                      "level 1.1 or above (use compat=1.1 or greater)");
        uint32_t order = 0;
        while ((1u << order) < r.refcount_bits)
            order++;
        ret = qcow2_amend_refcount_order(img, order, &p);
        if (ret < 0)
            return ret;
        p.current++;
    }
    ret = amend_data_file(img, &r);
    if (ret == 0)
        ret = amend_backing(img, &r);
    if (ret == 0)
        ret = amend_lazy_refcounts(img, &r);
    if (ret == 0)
        ret = amend_size(img, r.size);
    if (ret == 0 && r.version < s->hdr.version)
        ret = qcow2_amend_downgrade(img, &p);
    if (ret == 0)
        img_progress_final(img->size ? img->size : 1);
    return ret;
}
