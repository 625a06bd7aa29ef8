/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening: a sparse file with its embedded descriptor (its extent is the file itself), or a
 * descriptor file whose extent lines name the files holding the data. Extent lines are read as
 * QEMU reads them: `ACCESS SECTORS TYPE "NAME" [OFFSET]`, only RW lines of the types QEMU knows
 * count, others are skipped. Every extent file goes through the core's policy for files an image
 * names (img_open_named_file), which locks it like the image.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

/* Each extent holds a descriptor; a bound keeps a crafted descriptor from exhausting them. */
#define VMDK_MAX_EXTENTS 4096

static void state_free(struct vmdk_state *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->count; i++)
        vmdk_extent_free(&s->extents[i]);
    free(s->extents);
    free(s->create_type);
    pthread_cond_destroy(&s->alloc_done);
    free(s);
}

static struct vmdk_extent *add_extent(struct vmdk_state *s, const char *filename)
{
    if (s->count >= VMDK_MAX_EXTENTS) {
        img_error(-EFBIG, "vmdk: '%s' has more than %d extents", filename, VMDK_MAX_EXTENTS);
        return NULL;
    }
    struct vmdk_extent *grown = realloc(s->extents, (s->count + 1) * sizeof(*grown));
    if (!grown) {
        img_error(-ENOMEM, "out of memory");
        return NULL;
    }
    s->extents = grown;
    struct vmdk_extent *e = &s->extents[s->count];
    memset(e, 0, sizeof(*e));
    return e;
}

/* Places the extent after the previous ones; the guest size must stay representable. */
static int place_extent(struct img *img, struct vmdk_state *s, struct vmdk_extent *e)
{
    uint64_t start = 0;
    if (s->count > 0) {
        struct vmdk_extent *prev = &s->extents[s->count - 1];
        start = prev->start + prev->sectors * VMDK_SECTOR;
    }
    if (e->sectors > (uint64_t)INT64_MAX / VMDK_SECTOR ||
        start > (uint64_t)INT64_MAX - e->sectors * VMDK_SECTOR)
        return img_error(-EFBIG, "vmdk: '%s': the extents add up to more than the largest image",
                         img->filename);
    e->start = start;
    s->count++;
    img->size = start + e->sectors * VMDK_SECTOR;
    return 0;
}

static int parse_extent_line(struct img *img, struct vmdk_state *s, const char *line)
{
    char access[11], type[11], fname[512];
    int64_t sectors = 0, flat_offset = -1;
    int matches = sscanf(line, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, access, &sectors,
                         type, fname, &flat_offset);
    if (matches < 4 || strcmp(access, "RW") != 0)
        return 0;
    bool invalid = false;
    if (strcmp(type, "FLAT") == 0) {
        invalid = matches != 5 || flat_offset < 0;
    } else if (strcmp(type, "VMFS") == 0) {
        invalid = matches != 4;
        flat_offset = 0;
    } else {
        invalid = matches != 4;
    }
    if (invalid) {
        size_t n = strcspn(line, "\r\n");
        return img_error(-EINVAL, "vmdk: '%s': invalid extent line: %.*s", img->filename, (int)n,
                         line);
    }
    bool flat = strcmp(type, "FLAT") == 0 || strcmp(type, "VMFS") == 0;
    bool sparse = strcmp(type, "SPARSE") == 0 || strcmp(type, "VMFSSPARSE") == 0;
    bool sesparse = strcmp(type, "SESPARSE") == 0;
    if (sectors <= 0 || (!flat && !sparse && !sesparse))
        return 0;
    if (flat && (uint64_t)flat_offset > (uint64_t)INT64_MAX / VMDK_SECTOR)
        return img_error(-EINVAL, "vmdk: '%s': extent offset %" PRId64 " is out of range",
                         img->filename, flat_offset);

    struct vmdk_extent *e = add_extent(s, img->filename);
    if (!e)
        return -ENOMEM;
    e->type = strdup(type);
    e->filename = img_resolve_path(img->filename, fname);
    if (!e->type || !e->filename) {
        vmdk_extent_free(e);
        return img_error(-ENOMEM, "out of memory");
    }
    /* Listed whether or not the open flags let it be opened (img_get_named_file). */
    int ret = strcmp(e->filename, img->filename) == 0
                  ? 0
                  : img_name_file(img, IMG_NAMED_EXTENT, fname);
    if (ret == 0)
        ret = img_open_named_file(img, fname, IMG_OPEN_ALLOW_EXTERNAL_EXTENTS, "extent",
                                  &e->file);
    if (ret < 0) {
        vmdk_extent_free(e);
        return ret;
    }
    e->own_file = true;
    if (flat) {
        e->kind = VMDK_EXTENT_FLAT;
        e->sectors = (uint64_t)sectors;
        e->flat_offset = (uint64_t)flat_offset * VMDK_SECTOR;
    } else {
        ret = vmdk_open_sparse(img, e, e->filename, sesparse);
    }
    if (ret == 0)
        ret = place_extent(img, s, e);
    if (ret < 0)
        vmdk_extent_free(e);
    return ret;
}

/*
 * The descriptor types QEMU opens, plus ESXi's "vmfsThin" (thin-provisioned VMFS: the same
 * VMFS extent lines), which QEMU 7.2 refuses but reads like "vmfs" once allowed.
 */
static const char *const descriptor_types[] = {
    "monolithicFlat",     "vmfs", "vmfsThin", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat", NULL,
};

static int open_descriptor(struct img *img, struct vmdk_state *s, const char *desc)
{
    char ct[128];
    if (vmdk_desc_value(desc, "createType", ct, sizeof(ct)) < 0)
        return img_error(-EINVAL, "vmdk: '%s': invalid VMDK image descriptor", img->filename);
    bool known = false;
    for (int i = 0; descriptor_types[i]; i++)
        known = known || strcmp(ct, descriptor_types[i]) == 0;
    if (!known)
        return img_error(-ENOTSUP, "vmdk: '%s': unsupported image type '%s'", img->filename, ct);
    s->create_type = strdup(ct);
    if (!s->create_type)
        return img_error(-ENOMEM, "out of memory");
    char line[2048];
    for (const char *p = desc; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        size_t copy = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
        memcpy(line, p, copy);
        line[copy] = 0;
        int ret = parse_extent_line(img, s, line);
        if (ret < 0)
            return ret;
        p += n + (nl ? 1 : 0);
    }
    return 0;
}

static int open_embedded(struct img *img, struct vmdk_state *s)
{
    struct vmdk_extent *e = add_extent(s, img->filename);
    if (!e)
        return -ENOMEM;
    e->file = img->file;
    e->filename = strdup(img->filename);
    if (!e->filename)
        return img_error(-ENOMEM, "out of memory");
    int ret = vmdk_open_sparse(img, e, img->filename, false);
    if (ret == 0)
        ret = place_extent(img, s, e);
    if (ret < 0) {
        vmdk_extent_free(e);
        return ret;
    }
    s->embedded = true;
    /* QEMU names only hosted sparse files; a COWD file has no create type. */
    s->create_type = strdup(e->kind == VMDK_EXTENT_COWD ? ""
                            : e->compressed             ? "streamOptimized"
                                                        : "monolithicSparse");
    return s->create_type ? 0 : img_error(-ENOMEM, "out of memory");
}

struct vmdk_extent *vmdk_find_extent(struct vmdk_state *s, uint64_t offset)
{
    /* Binary search: extents are in guest order. */
    unsigned lo = 0, hi = s->count;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        struct vmdk_extent *e = &s->extents[mid];
        if (offset < e->start)
            hi = mid;
        else if (offset >= e->start + e->sectors * VMDK_SECTOR)
            lo = mid + 1;
        else
            return e;
    }
    return NULL;
}

int vmdk_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    struct vmdk_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "out of memory");
    pthread_cond_init(&s->alloc_done, NULL);
    img->size = 0;
    char *text = NULL, *backing = NULL;
    uint8_t magic[4];
    int ret = vmdk_read_text(img->file, 0, VMDK_DESC_MAX, img->filename, &text);
    if (ret == 0) {
        memcpy(magic, text, 4);
        uint32_t m = load_le32(magic);
        if (m == VMDK4_MAGIC || m == VMDK3_MAGIC) {
            ret = open_embedded(img, s);
            free(text);
            text = NULL;
            /* The embedded descriptor: QEMU reads it from sector 1, whatever the header says. */
            if (ret == 0)
                ret = vmdk_read_text(img->file, 0x200, VMDK_DESC_SIZE - 1, img->filename, &text);
        } else {
            ret = open_descriptor(img, s, text);
        }
    }
    if (ret == 0) {
        /* The CIDs and the parent come from the descriptor's first 20 sectors, as in QEMU. */
        if (strlen(text) > VMDK_DESC_SIZE - 1)
            text[VMDK_DESC_SIZE - 1] = 0;
        ret = vmdk_desc_parent(text, img->filename, &backing);
    }
    if (ret == 0 && (vmdk_desc_cid(text, "CID", &s->cid) < 0 ||
                     vmdk_desc_cid(text, "parentCID", &s->parent_cid) < 0))
        ret = img_error(-EINVAL, "vmdk: '%s': the descriptor has no valid CID or parentCID",
                        img->filename);
    free(text);
    if (ret < 0) {
        free(backing);
        state_free(s);
        return ret;
    }
    if (backing) {
        img->backing_name = backing;
        img->backing_format = strdup("vmdk");
        if (!img->backing_format) {
            state_free(s);
            return img_error(-ENOMEM, "out of memory");
        }
    }
    /* As QEMU: a cluster size only when every extent is sparse with the same grain. */
    uint64_t grain = 0;
    bool same = s->count > 0;
    for (unsigned i = 0; i < s->count; i++) {
        struct vmdk_extent *e = &s->extents[i];
        uint64_t g = e->kind == VMDK_EXTENT_FLAT ? 0 : e->grain_sectors * VMDK_SECTOR;
        if (i == 0)
            grain = g;
        same = same && g == grain && e->compressed == s->extents[0].compressed;
    }
    img->cluster_size = same && grain <= UINT32_MAX ? (uint32_t)grain : 0;
    img->needs_compressed_writes = same && s->extents[0].compressed;
    img->priv = s;
    return 0;
}

void vmdk_close(struct img *img)
{
    state_free(img->priv);
    img->priv = NULL;
}
