/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creating an image with QEMU 7.2's layout and rules: the log at 1 MiB, the BAT after it, the
 * metadata region after the BAT, payload blocks from 5 MiB past the BAT on; block size chosen
 * from the virtual size unless given; with block_state_zero (the default) every block starts
 * in the ZERO state, otherwise not present (dynamic) or present in place (fixed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"
#include "opts.h"
#include "util/checked.h"
#include "util/crc32c.h"
#include "util/endian.h"

#define GiB (1024ull * VHDX_MiB)
#define TiB (1024ull * GiB)

static const char *const subformat_values[] = {"dynamic", "fixed", NULL};

/* In the order of QEMU's create options (the "Formatting ..." line). */
const struct opt_desc vhdx_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size; max of 64TB."},
    {.name = "log_size", .type = OPT_SIZE, .def = "1048576", .help = "Log size; min 1MB."},
    {.name = "block_size",
     .type = OPT_SIZE,
     .def = "0",
     .help = "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size."},
    {.name = "subformat",
     .type = OPT_ENUM,
     .values = subformat_values,
     .help = "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'."},
    {.name = "block_state_zero",
     .type = OPT_BOOL,
     .help = "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set "
             "to 'off' when using 'qemu-img convert' with subformat=dynamic."},
    {.name = "nocow",
     .type = OPT_BOOL,
     .flags = OPT_HIDDEN,
     .help = "Turn off copy-on-write (accepted, no effect)"},
    {.name = "extent_size_hint",
     .type = OPT_SIZE,
     .flags = OPT_HIDDEN,
     .help = "Extent size hint for the image file (accepted, no effect)"},
    OPT_TABLE_END,
};

static int parse_options(const struct img_create_args *args, struct vhdx_create_layout *l)
{
    uint64_t size = args->size, log_size = VHDX_MiB, block_size = 0;
    int ret = size ? 0 : opts_get_size(args->opts, "size", &size);
    if (ret == 0 && img_opts_get(args->opts, "log_size"))
        ret = opts_get_size(args->opts, "log_size", &log_size);
    if (ret == 0 && img_opts_get(args->opts, "block_size"))
        ret = opts_get_size(args->opts, "block_size", &block_size);
    bool zero = true;
    if (ret == 0 && img_opts_get(args->opts, "block_state_zero"))
        ret = opts_get_bool(args->opts, "block_state_zero", &zero);
    if (ret < 0)
        return ret;
    const char *sub = img_opts_get(args->opts, "subformat");
    l->fixed = sub && strcmp(sub, "fixed") == 0;
    l->zero_blocks = zero;
    if (args->backing_file)
        return img_error(-ENOTSUP, "Backing file not supported for file format 'vhdx'");
    if (size > VHDX_MAX_IMAGE_SIZE)
        return img_error(-EINVAL, "Image size too large; max of 64TB");
    l->size = align_up_u64(size, 512);
    if (log_size > UINT32_MAX)
        return img_error(-EINVAL, "Log size must be smaller than 4 GB");
    log_size = align_up_u64(log_size, VHDX_MiB);
    if (log_size < VHDX_MiB || log_size > UINT32_MAX)
        return img_error(-EINVAL, "Log size must be a multiple of 1 MB");
    l->log_size = (uint32_t)log_size;
    if (block_size == 0) {
        if (l->size > 32 * TiB)
            block_size = 64 * VHDX_MiB;
        else if (l->size > 100 * GiB)
            block_size = 32 * VHDX_MiB;
        else if (l->size > GiB)
            block_size = 16 * VHDX_MiB;
        else
            block_size = 8 * VHDX_MiB;
    }
    block_size = min_u64(align_up_u64(block_size, VHDX_MiB), VHDX_BLOCK_SIZE_MAX);
    if (block_size & (block_size - 1))
        return img_error(-EINVAL, "Block size must be a power of two");
    l->block_size = (uint32_t)block_size;
    return 0;
}

static void compute_layout(struct vhdx_create_layout *l)
{
    l->chunk_ratio = VHDX_MAX_SECTORS_PER_CHUNK * 512 / l->block_size;
    l->chunk_bits = 0;
    while ((1ull << l->chunk_bits) < l->chunk_ratio)
        l->chunk_bits++;
    uint64_t blocks = (l->size + l->block_size - 1) / l->block_size;
    l->bat_entries = blocks ? blocks + ((blocks - 1) >> l->chunk_bits) : 0;
    l->bat_offset = align_up_u64(VHDX_HEADER_SECTION_END + l->log_size, VHDX_MiB);
    l->bat_length = align_up_u64(l->bat_entries * 8, VHDX_MiB);
    l->metadata_offset = align_up_u64(l->bat_offset + l->bat_length, VHDX_MiB);
    /* Payload after the BAT with room for the metadata region, as QEMU places it. */
    l->data_offset = l->bat_offset + l->bat_length + 5 * VHDX_MiB;
}

static int write_at(struct io_file *f, const void *buf, size_t len, uint64_t offset)
{
    return io_pwrite(f, buf, len, offset);
}

static int write_identifier_and_headers(struct io_file *f, const struct vhdx_create_layout *l)
{
    uint8_t ident[VHDX_HEADER_SIZE] = {0};
    memcpy(ident, "vhdxfile", 8);
    static const char creator[] = "libimgutil";
    for (size_t i = 0; creator[i]; i++)
        ident[8 + 2 * i] = (uint8_t)creator[i];
    int ret = write_at(f, ident, sizeof(ident), 0);
    struct vhdx_header h = {0};
    uint32_t seq;
    if (getrandom(&seq, sizeof(seq), 0) != sizeof(seq))
        seq = 1;
    h.sequence = seq;
    h.version = 1;
    h.log_length = l->log_size;
    h.log_offset = VHDX_HEADER_SECTION_END;
    vhdx_guid_generate(h.file_write_guid);
    vhdx_guid_generate(h.data_write_guid);
    vhdx_header_encode(&h);
    if (ret == 0)
        ret = write_at(f, h.raw, VHDX_HEADER_SIZE, VHDX_HEADER1_OFFSET);
    h.sequence++;
    vhdx_header_encode(&h);
    if (ret == 0)
        ret = write_at(f, h.raw, VHDX_HEADER_SIZE, VHDX_HEADER2_OFFSET);
    return ret;
}

static int write_region_tables(struct io_file *f, const struct vhdx_create_layout *l)
{
    uint8_t *t = calloc(1, VHDX_TABLE_SIZE);
    if (!t)
        return -ENOMEM;
    store_le32(t, 0x69676572u); /* "regi" */
    store_le32(t + 8, 2);
    memcpy(t + 16, vhdx_guid_bat, 16);
    store_le64(t + 32, l->bat_offset);
    store_le32(t + 40, (uint32_t)l->bat_length);
    memcpy(t + 48, vhdx_guid_metadata, 16);
    store_le64(t + 64, l->metadata_offset);
    store_le32(t + 72, (uint32_t)VHDX_MiB);
    store_le32(t + 4, crc32c_update(0, t, VHDX_TABLE_SIZE));
    int ret = write_at(f, t, VHDX_TABLE_SIZE, VHDX_REGION_TABLE1_OFFSET);
    if (ret == 0)
        ret = write_at(f, t, VHDX_TABLE_SIZE, VHDX_REGION_TABLE2_OFFSET);
    free(t);
    return ret;
}

static int write_metadata(struct io_file *f, const struct vhdx_create_layout *l)
{
    /* The table, then the five items packed after it at 64 KiB. */
    enum { ITEMS = 8 + 8 + 16 + 4 + 4 };
    uint8_t *m = calloc(1, VHDX_TABLE_SIZE + ITEMS);
    if (!m)
        return -ENOMEM;
    memcpy(m, "metadata", 8);
    store_le16(m + 10, 5);
    const uint8_t *ids[5] = {vhdx_guid_file_params, vhdx_guid_virtual_size, vhdx_guid_page83,
                             vhdx_guid_logical_sector, vhdx_guid_physical_sector};
    static const uint32_t lens[5] = {8, 8, 16, 4, 4};
    uint32_t at = VHDX_TABLE_SIZE;
    for (int i = 0; i < 5; i++) {
        uint8_t *e = m + 32 + 32 * i;
        memcpy(e, ids[i], 16);
        store_le32(e + 16, at);
        store_le32(e + 20, lens[i]);
        store_le32(e + 24, i == 0 ? VHDX_META_IS_REQUIRED
                                  : VHDX_META_IS_REQUIRED | VHDX_META_IS_VIRTUAL_DISK);
        at += lens[i];
    }
    uint8_t *item = m + VHDX_TABLE_SIZE;
    store_le32(item, l->block_size);
    store_le32(item + 4, l->fixed ? VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED : 0);
    store_le64(item + 8, l->size);
    vhdx_guid_generate(item + 16);
    store_le32(item + 32, 512);
    store_le32(item + 36, 512);
    int ret = write_at(f, m, VHDX_TABLE_SIZE + ITEMS, l->metadata_offset);
    free(m);
    return ret;
}

static int write_bat(struct io_file *f, const struct vhdx_create_layout *l)
{
    /* Extending the file zero-fills the BAT: entries "not present" need no writing. */
    int ret = io_truncate(f, l->fixed ? l->data_offset + l->size : l->data_offset);
    if (ret < 0 || !(l->fixed || l->zero_blocks) || l->bat_entries == 0)
        return ret;
    size_t bytes = (size_t)l->bat_entries * 8;
    uint8_t *bat = calloc(1, bytes);
    if (!bat)
        return -ENOMEM;
    uint64_t blocks = (l->size + l->block_size - 1) / l->block_size;
    for (uint64_t b = 0; b < blocks; b++) {
        uint64_t entry = VHDX_BLOCK_ZERO;
        if (!l->zero_blocks)
            entry = align_up_u64(l->data_offset + b * l->block_size, VHDX_MiB) |
                    VHDX_BLOCK_FULLY_PRESENT;
        store_le64(bat + 8 * (b + (b >> l->chunk_bits)), entry);
    }
    ret = write_at(f, bat, bytes, l->bat_offset);
    free(bat);
    return ret;
}

int vhdx_create_plan(const struct img_create_args *args, struct vhdx_create_layout *l)
{
    memset(l, 0, sizeof(*l));
    int ret = parse_options(args, l);
    if (ret == 0)
        compute_layout(l);
    return ret;
}

int vhdx_create(const struct img_create_args *args)
{
    struct vhdx_create_layout l;
    int ret = vhdx_create_plan(args, &l);
    if (ret < 0)
        return ret;
    struct io_file *f = args->file;
    ret = io_truncate(f, 0);
    if (ret == 0)
        ret = write_identifier_and_headers(f, &l);
    if (ret == 0)
        ret = write_bat(f, &l);
    if (ret == 0)
        ret = write_region_tables(f, &l);
    if (ret == 0)
        ret = write_metadata(f, &l);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot create '%s': %s", args->path, img_strerror(ret));
    return 0;
}
