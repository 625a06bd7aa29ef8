/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading the headers, the region table, the metadata items and the BAT, with every bound
 * checked against the file before it is used (spec sections 2.2-2.6; QEMU's vhdx.c for the
 * rules it adds: equal sequence numbers are accepted only when both headers are identical, as
 * Disk2VHD writes them).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/crc32c.h"
#include "util/endian.h"

#define HEADER_SIGNATURE 0x64616568u /* "head" */
#define REGION_SIGNATURE 0x69676572u /* "regi" */
#define REGION_ENTRY_REQUIRED 1u
#define REGION_MAX_ENTRIES 2047u

/* The CRC-32C of `len` bytes with the 4-byte checksum at `crc_at` taken as zero. */
static uint32_t checksum_without(const uint8_t *buf, size_t len, size_t crc_at)
{
    static const uint8_t zero[4];
    uint32_t crc = crc32c_update(0, buf, crc_at);
    crc = crc32c_update(crc, zero, 4);
    return crc32c_update(crc, buf + crc_at + 4, len - crc_at - 4);
}

static void header_decode(struct vhdx_header *h)
{
    const uint8_t *b = h->raw;
    h->sequence = load_le64(b + 8);
    memcpy(h->file_write_guid, b + 16, 16);
    memcpy(h->data_write_guid, b + 32, 16);
    memcpy(h->log_guid, b + 48, 16);
    h->log_version = load_le16(b + 64);
    h->version = load_le16(b + 66);
    h->log_length = load_le32(b + 68);
    h->log_offset = load_le64(b + 72);
    h->valid = load_le32(b) == HEADER_SIGNATURE && h->version == 1 &&
               checksum_without(b, VHDX_HEADER_SIZE, 4) == load_le32(b + 4);
}

void vhdx_header_encode(struct vhdx_header *h)
{
    uint8_t *b = h->raw;
    store_le32(b, HEADER_SIGNATURE);
    store_le64(b + 8, h->sequence);
    memcpy(b + 16, h->file_write_guid, 16);
    memcpy(b + 32, h->data_write_guid, 16);
    memcpy(b + 48, h->log_guid, 16);
    store_le16(b + 64, h->log_version);
    store_le16(b + 66, h->version);
    store_le32(b + 68, h->log_length);
    store_le64(b + 72, h->log_offset);
    store_le32(b + 4, checksum_without(b, VHDX_HEADER_SIZE, 4));
}

int vhdx_region_add(struct vhdx_state *s, uint64_t start, uint64_t len)
{
    struct vhdx_region *r = realloc(s->regions, (s->nb_regions + 1) * sizeof(*r));
    if (!r)
        return img_error(-ENOMEM, "vhdx: out of memory");
    s->regions = r;
    r[s->nb_regions++] = (struct vhdx_region){start, start + len};
    return 0;
}

const struct vhdx_region *vhdx_region_find(const struct vhdx_state *s, uint64_t start, uint64_t len)
{
    uint64_t end = start + len;
    for (size_t i = 0; i < s->nb_regions; i++)
        if (start < s->regions[i].end && end > s->regions[i].start)
            return &s->regions[i];
    return NULL;
}

bool vhdx_region_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t len)
{
    return vhdx_region_find(s, start, len) != NULL;
}

int vhdx_read_headers(struct img *img, struct vhdx_state *s)
{
    static const uint64_t at[2] = {VHDX_HEADER1_OFFSET, VHDX_HEADER2_OFFSET};
    for (int i = 0; i < 2; i++) {
        int ret = io_pread(img->file, s->hdr[i].raw, VHDX_HEADER_SIZE, at[i]);
        if (ret < 0)
            return img_error(ret, "vhdx: cannot read the header of '%s': %s", img->filename,
                             img_strerror(ret));
        header_decode(&s->hdr[i]);
    }
    const struct vhdx_header *h1 = &s->hdr[0], *h2 = &s->hdr[1];
    if (h1->valid && h2->valid) {
        if (h1->sequence > h2->sequence) {
            s->cur = 0;
        } else if (h2->sequence > h1->sequence) {
            s->cur = 1;
        } else if (memcmp(h1->raw, h2->raw, 80) == 0) {
            s->cur = 0; /* Disk2VHD writes two identical headers */
        } else {
            return img_error(-EINVAL,
                             "vhdx: '%s': no valid VHDX header found (two different headers "
                             "with the same sequence number)",
                             img->filename);
        }
    } else if (h1->valid || h2->valid) {
        s->cur = h1->valid ? 0 : 1;
    } else {
        return img_error(-EINVAL, "vhdx: '%s': no valid VHDX header found", img->filename);
    }
    const struct vhdx_header *h = &s->hdr[s->cur];
    if (h->log_offset < VHDX_MiB || h->log_offset % VHDX_MiB)
        return img_error(-EINVAL, "vhdx: '%s': the log offset 0x%" PRIx64 " is invalid",
                         img->filename, h->log_offset);
    if (h->log_version != 0)
        return img_error(-EINVAL, "vhdx: '%s': log version %u is not supported", img->filename,
                         h->log_version);
    return vhdx_region_add(s, h->log_offset, h->log_length);
}

int vhdx_read_regions(struct img *img, struct vhdx_state *s)
{
    uint8_t *buf = malloc(VHDX_TABLE_SIZE);
    if (!buf)
        return img_error(-ENOMEM, "vhdx: out of memory");
    int ret = io_pread(img->file, buf, VHDX_TABLE_SIZE, VHDX_REGION_TABLE1_OFFSET);
    if (ret < 0) {
        img_error(ret, "vhdx: cannot read the region table of '%s': %s", img->filename,
                  img_strerror(ret));
        goto out;
    }
    ret = -EINVAL;
    if (load_le32(buf) != REGION_SIGNATURE ||
        checksum_without(buf, VHDX_TABLE_SIZE, 4) != load_le32(buf + 4)) {
        img_error(ret, "vhdx: '%s': the region table is corrupt (bad signature or checksum)",
                  img->filename);
        goto out;
    }
    uint32_t count = load_le32(buf + 8);
    if (count > REGION_MAX_ENTRIES) {
        img_error(ret, "vhdx: '%s': the region table has %" PRIu32 " entries (at most %u)",
                  img->filename, count, REGION_MAX_ENTRIES);
        goto out;
    }
    bool have_bat = false, have_meta = false;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = buf + 16 + 32 * (size_t)i;
        uint64_t off = load_le64(e + 16);
        uint32_t len = load_le32(e + 24);
        uint32_t bits = load_le32(e + 28);
        if (off > INT64_MAX || vhdx_region_overlaps(s, off, len)) {
            img_error(ret, "vhdx: '%s': region %" PRIu64 "-%" PRIu64 " overlaps another region",
                      img->filename, off, off + len);
            goto out;
        }
        if ((ret = vhdx_region_add(s, off, len)) < 0)
            goto out;
        ret = -EINVAL;
        bool is_bat = memcmp(e, vhdx_guid_bat, 16) == 0;
        bool is_meta = memcmp(e, vhdx_guid_metadata, 16) == 0;
        if ((is_bat && have_bat) || (is_meta && have_meta)) {
            img_error(ret, "vhdx: '%s': the region table names the %s twice", img->filename,
                      is_bat ? "BAT" : "metadata region");
            goto out;
        }
        if (is_bat) {
            have_bat = true;
            s->bat_offset = off;
            s->bat_region_length = len;
        } else if (is_meta) {
            have_meta = true;
            s->metadata_offset = off;
            s->metadata_length = len;
        } else if (bits & REGION_ENTRY_REQUIRED) {
            img_error(-ENOTSUP, "vhdx: '%s': unknown required region in the region table",
                      img->filename);
            ret = -ENOTSUP;
            goto out;
        }
    }
    if (!have_bat || !have_meta) {
        img_error(ret, "vhdx: '%s': the region table has no %s", img->filename,
                  have_bat ? "metadata region" : "BAT");
        goto out;
    }
    ret = 0;
out:
    free(buf);
    return ret;
}

/* Reads metadata item `e` (a table entry) into `out`, which must be `need` bytes long. */
static int read_item(struct img *img, struct vhdx_state *s, const uint8_t *e, void *out,
                     uint32_t need, const char *what)
{
    uint32_t off = load_le32(e + 16), len = load_le32(e + 20);
    if (len < need || off < VHDX_TABLE_SIZE || (uint64_t)off + need > s->metadata_length)
        return img_error(-EINVAL, "vhdx: '%s': the %s metadata item is out of bounds",
                         img->filename, what);
    int ret = io_pread(img->file, out, need, s->metadata_offset + off);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot read the %s of '%s': %s", what, img->filename,
                         img_strerror(ret));
    return 0;
}

static bool is_pow2(uint64_t v)
{
    return v && (v & (v - 1)) == 0;
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

int vhdx_read_metadata(struct img *img, struct vhdx_state *s)
{
    static const uint8_t *const known[] = {vhdx_guid_file_params,     vhdx_guid_virtual_size,
                                           vhdx_guid_page83,          vhdx_guid_logical_sector,
                                           vhdx_guid_physical_sector, vhdx_guid_parent_locator};
    static const char *const names[] = {"file parameters",      "virtual disk size",
                                        "page 83 data",         "logical sector size",
                                        "physical sector size", "parent locator"};
    enum { N_KNOWN = 6, ALL_REQUIRED = 0x1f };
    if (s->metadata_length < VHDX_TABLE_SIZE)
        return img_error(-EINVAL, "vhdx: '%s': the metadata region is too small", img->filename);
    uint8_t *buf = malloc(VHDX_TABLE_SIZE);
    if (!buf)
        return img_error(-ENOMEM, "vhdx: out of memory");
    const uint8_t *entry[N_KNOWN] = {0};
    unsigned present = 0;
    int ret = io_pread(img->file, buf, VHDX_TABLE_SIZE, s->metadata_offset);
    if (ret < 0) {
        img_error(ret, "vhdx: cannot read the metadata table of '%s': %s", img->filename,
                  img_strerror(ret));
        goto out;
    }
    ret = -EINVAL;
    if (memcmp(buf, "metadata", 8) != 0) {
        img_error(ret, "vhdx: '%s': the metadata table has no signature", img->filename);
        goto out;
    }
    uint16_t count = load_le16(buf + 10);
    if ((size_t)count * 32 > VHDX_TABLE_SIZE - 32) {
        img_error(ret, "vhdx: '%s': the metadata table has %u entries (at most 2047)",
                  img->filename, count);
        goto out;
    }
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *e = buf + 32 + 32 * (size_t)i;
        int k = 0;
        while (k < N_KNOWN && memcmp(e, known[k], 16) != 0)
            k++;
        if (k == N_KNOWN) {
            if (load_le32(e + 24) & VHDX_META_IS_REQUIRED) {
                ret = -ENOTSUP;
                img_error(ret, "vhdx: '%s': unknown required metadata item", img->filename);
                goto out;
            }
            continue;
        }
        if (present & (1u << k)) {
            img_error(ret, "vhdx: '%s': the %s metadata item appears twice", img->filename,
                      names[k]);
            goto out;
        }
        present |= 1u << k;
        entry[k] = e;
    }
    if ((present & ALL_REQUIRED) != ALL_REQUIRED) {
        ret = -ENOTSUP;
        for (int k = 0; k < 5; k++)
            if (!(present & (1u << k))) {
                img_error(ret, "vhdx: '%s': the %s metadata item is missing", img->filename,
                          names[k]);
                break;
            }
        goto out;
    }
    uint8_t params[8], vsize[8], lss[4], pss[4];
    if ((ret = read_item(img, s, entry[0], params, 8, names[0])) < 0 ||
        (ret = read_item(img, s, entry[1], vsize, 8, names[1])) < 0 ||
        (ret = read_item(img, s, entry[2], s->page83, 16, names[2])) < 0 ||
        (ret = read_item(img, s, entry[3], lss, 4, names[3])) < 0 ||
        (ret = read_item(img, s, entry[4], pss, 4, names[4])) < 0)
        goto out;
    ret = -EINVAL;
    s->block_size = load_le32(params);
    s->params_flags = load_le32(params + 4);
    s->virtual_size = load_le64(vsize);
    s->logical_sector_size = load_le32(lss);
    s->physical_sector_size = load_le32(pss);
    if ((s->params_flags & VHDX_PARAMS_HAS_PARENT) && !(present & (1u << 5))) {
        img_error(ret, "vhdx: '%s': a differencing image without a parent locator", img->filename);
        goto out;
    }
    if ((s->params_flags & VHDX_PARAMS_HAS_PARENT) &&
        (ret = vhdx_read_parent_locator(img, s, load_le32(entry[5] + 16),
                                        load_le32(entry[5] + 20))) < 0)
        goto out;
    ret = -EINVAL;
    if (s->block_size < VHDX_BLOCK_SIZE_MIN || s->block_size > VHDX_BLOCK_SIZE_MAX ||
        !is_pow2(s->block_size)) {
        img_error(ret, "vhdx: '%s': invalid block size %" PRIu32, img->filename, s->block_size);
        goto out;
    }
    if (s->logical_sector_size != 512 && s->logical_sector_size != 4096) {
        img_error(ret, "vhdx: '%s': invalid logical sector size %" PRIu32, img->filename,
                  s->logical_sector_size);
        goto out;
    }
    if (s->virtual_size > VHDX_MAX_IMAGE_SIZE || s->virtual_size % s->logical_sector_size) {
        img_error(ret, "vhdx: '%s': invalid virtual disk size %" PRIu64, img->filename,
                  s->virtual_size);
        goto out;
    }
    s->chunk_ratio = VHDX_MAX_SECTORS_PER_CHUNK * s->logical_sector_size / s->block_size;
    s->block_bits = log2_u64(s->block_size);
    s->chunk_bits = log2_u64(s->chunk_ratio);
    ret = 0;
out:
    free(buf);
    return ret;
}

uint64_t vhdx_bat_index(const struct vhdx_state *s, uint64_t block)
{
    return block + (block >> s->chunk_bits);
}

int vhdx_read_bat(struct img *img, struct vhdx_state *s)
{
    uint64_t blocks = (s->virtual_size + s->block_size - 1) >> s->block_bits;
    /* As QEMU counts: payload entries and the bitmap entries between them. */
    s->bat_entries = blocks ? blocks + ((blocks - 1) >> s->chunk_bits) : 0;
    if (s->params_flags & VHDX_PARAMS_HAS_PARENT)
        s->bat_entries = ((blocks + s->chunk_ratio - 1) >> s->chunk_bits) * (s->chunk_ratio + 1);
    if (s->bat_entries > s->bat_region_length / 8)
        return img_error(-EINVAL,
                         "vhdx: '%s': the BAT region (%" PRIu64 " bytes) is too small for %" PRIu64
                         " entries",
                         img->filename, s->bat_region_length, s->bat_entries);
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "vhdx: cannot read the size of '%s'", img->filename);
    uint64_t bytes = align_up_u64(s->bat_entries * 8, VHDX_LOG_SECTOR);
    if (bytes > s->bat_region_length)
        bytes = s->bat_entries * 8;
    if (s->bat_offset + bytes > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vhdx: '%s': the BAT (%" PRIu64 " bytes at 0x%" PRIx64
                         ") is past the end of the file",
                         img->filename, bytes, s->bat_offset);
    s->bat_alloc = bytes / 8;
    s->bat = malloc(bytes ? bytes : 8);
    if (!s->bat)
        return img_error(-ENOMEM, "vhdx: out of memory for a BAT of %" PRIu64 " bytes", bytes);
    int ret = bytes ? io_pread(img->file, s->bat, bytes, s->bat_offset) : 0;
    if (ret < 0)
        return img_error(ret, "vhdx: cannot read the BAT of '%s': %s", img->filename,
                         img_strerror(ret));
    for (uint64_t i = 0; i < s->bat_alloc; i++)
        s->bat[i] = load_le64(&s->bat[i]);
    return 0;
}

static int write_header(struct img *img, struct vhdx_state *s, int idx)
{
    static const uint64_t at[2] = {VHDX_HEADER1_OFFSET, VHDX_HEADER2_OFFSET};
    vhdx_header_encode(&s->hdr[idx]);
    int ret = io_pwrite(img->file, s->hdr[idx].raw, VHDX_HEADER_SIZE, at[idx]);
    if (ret == 0)
        ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot write the header of '%s': %s", img->filename,
                         img_strerror(ret));
    return 0;
}

static int update_header(struct img *img, struct vhdx_state *s, bool new_data_guid,
                         const uint8_t log_guid[16])
{
    int next = 1 - s->cur;
    struct vhdx_header *h = &s->hdr[next];
    const struct vhdx_header *active = &s->hdr[s->cur];
    /* The inactive header becomes a copy of the active one with the changes. */
    memcpy(h->raw, active->raw, VHDX_HEADER_SIZE);
    header_decode(h);
    h->sequence = active->sequence + 1;
    memcpy(h->file_write_guid, s->session_guid, 16);
    if (new_data_guid)
        vhdx_guid_generate(h->data_write_guid);
    if (log_guid)
        memcpy(h->log_guid, log_guid, 16);
    int ret = write_header(img, s, next);
    if (ret < 0)
        return ret;
    h->valid = true;
    s->cur = next;
    return 0;
}

int vhdx_update_headers(struct img *img, struct vhdx_state *s, bool new_data_guid,
                        const uint8_t log_guid[16])
{
    int ret = update_header(img, s, new_data_guid, log_guid);
    if (ret == 0)
        ret = update_header(img, s, false, NULL);
    return ret;
}
