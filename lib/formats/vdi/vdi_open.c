/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* VDI: probing, opening (header and block map), and where guest data lives. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vdi/vdi.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

/* The block map is read in pieces this large, so one request stays modest. */
#define BMAP_READ_CHUNK (4u << 20)

static int vdi_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    /* As QEMU: a whole header with the signature. */
    return len >= VDI_HEADER_SIZE && load_le32(buf + VDI_OFF_SIGNATURE) == VDI_SIGNATURE ? 100 : 0;
}

static int read_bmap(struct img *img, struct vdi_state *s)
{
    uint32_t blocks = s->hdr.blocks_in_image;
    uint64_t bytes = (uint64_t)blocks * 4;
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "vdi: cannot read the size of '%s'", img->filename);
    /* The map is bounded by the file: a crafted count cannot make us allocate more. */
    if ((uint64_t)s->hdr.offset_bmap + bytes > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vdi: '%s': the block map (%" PRIu32 " entries at offset 0x%" PRIx32
                         ") extends past the end of the file (%" PRId64 " bytes)",
                         img->filename, blocks, s->hdr.offset_bmap, file_size);
    s->bmap = malloc(bytes ? (size_t)bytes : 1);
    if (!s->bmap)
        return img_error(-ENOMEM, "vdi: '%s': out of memory for a block map of %" PRIu32 " entries",
                         img->filename, blocks);
    uint8_t *raw = (uint8_t *)s->bmap;
    for (uint64_t done = 0; done < bytes;) {
        size_t n = (size_t)min_u64(bytes - done, BMAP_READ_CHUNK);
        int ret = io_pread(img->file, raw + done, n, s->hdr.offset_bmap + done);
        if (ret < 0)
            return img_error(ret, "vdi: '%s': cannot read the block map: %s", img->filename,
                             img_strerror(ret));
        done += n;
    }
    for (uint32_t i = 0; i < blocks; i++)
        s->bmap[i] = load_le32(&s->bmap[i]);
    return 0;
}

static void free_state(struct vdi_state *s)
{
    if (!s)
        return;
    free(s->bmap);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->alloc_done);
    free(s);
}

static int vdi_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    struct vdi_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "vdi: out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->alloc_done, NULL);
    int64_t file_size = io_file_size(img->file);
    int ret = file_size < 0 ? (int)file_size : 0;
    if (ret < 0) {
        img_error(ret, "vdi: cannot read the size of '%s'", img->filename);
        goto fail;
    }
    size_t have = (size_t)min_u64((uint64_t)file_size, VDI_HEADER_SIZE);
    ret = io_pread(img->file, s->raw_header, VDI_HEADER_SIZE, 0);
    if (ret < 0) {
        img_error(ret, "vdi: '%s': cannot read the header: %s", img->filename, img_strerror(ret));
        goto fail;
    }
    ret = vdi_header_parse(s->raw_header, have, img->filename, &s->hdr);
    if (ret == 0)
        ret = read_bmap(img, s);
    if (ret < 0)
        goto fail;
    img->size = vdi_guest_size(&s->hdr);
    img->cluster_size = s->hdr.block_size;
    img->priv = s;
    return 0;
fail:
    free_state(s);
    return ret;
}

static void vdi_close(struct img *img)
{
    free_state(img->priv);
    img->priv = NULL;
}

/* Where block `entry` keeps its data. */
static uint64_t block_host_offset(const struct vdi_state *s, uint32_t entry)
{
    return s->hdr.offset_data + (uint64_t)entry * s->hdr.block_size;
}

/*
 * Allocated blocks are DATA (static images let block status look at holes in the file, as
 * QEMU's BDRV_BLOCK_RECURSE does); unallocated and discarded blocks read as zeros, in this
 * layer: VDI has no backing file. Runs of blocks that continue one another are merged.
 */
static int vdi_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct vdi_state *s = img->priv;
    uint32_t bs = s->hdr.block_size;
    uint64_t block = offset / bs;
    uint64_t in_block = offset % bs;
    length = min_u64(length, img->size - offset);
    pthread_mutex_lock(&s->lock);
    uint32_t entry = s->bmap[block];
    bool data = VDI_IS_ALLOCATED(entry);
    uint64_t run = min_u64(bs - in_block, length);
    for (uint64_t b = block + 1; run < length; b++) {
        uint32_t next = s->bmap[b];
        if (data ? next != entry + (b - block) : VDI_IS_ALLOCATED(next))
            break;
        run = min_u64(run + bs, length);
    }
    pthread_mutex_unlock(&s->lock);
    *ext = (struct img_extent){.length = run};
    if (data) {
        ext->kind = EXTENT_DATA;
        ext->file = img->file;
        ext->host_offset = block_host_offset(s, entry) + in_block;
        ext->host_offset_valid = true;
        ext->refine_with_host = s->hdr.image_type == VDI_TYPE_STATIC;
    } else {
        ext->kind = EXTENT_ZERO;
    }
    return 0;
}

static const struct opt_desc vdi_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "static", .type = OPT_BOOL, .def = "off", .help = "VDI static (pre-allocated) image"},
    OPT_TABLE_END,
};

const struct img_format format_vdi = {
    .name = "vdi",
    .caps = FORMAT_HAS_METADATA,
    .create_options = vdi_create_options,
    .probe = vdi_probe,
    .open = vdi_open,
    .close = vdi_close,
    .map = vdi_map,
    .create = vdi_create,
    .measure = vdi_measure,
    .alloc = vdi_alloc,
    .alloc_commit = vdi_alloc_commit,
    .zero = vdi_zero,
    .flush = vdi_flush,
    .check = vdi_check,
};
