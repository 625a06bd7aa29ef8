/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Differencing images (spec 2.6.2.6 and 2.5.1.2): the parent locator names the parent by
 * key/value pairs of UTF-16 strings; its "relative_path" (else "absolute_win32_path") becomes
 * the backing file, which the core opens under its policy for named files. Blocks "partially
 * present" say sector by sector, in the sector bitmap block of their chunk, whether this image
 * or the parent holds the data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"
#include "util/endian.h"

#define LOCATOR_MAX (64u * 1024u) /* a locator bigger than this is refused */
#define PATH_MAX_UTF8 4096u

/* The parent locator type for VHDX parents: B04AEFB7-D19E-4A81-B789-25B8E9445913. */
static const uint8_t parent_vhdx_type[16] = {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
                                             0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13};

/* UTF-16LE to UTF-8 (surrogate pairs joined); backslashes become slashes. NULL if invalid. */
static char *utf16_to_path(const uint8_t *p, size_t bytes)
{
    char *out = malloc(bytes / 2 * 3 + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i + 1 < bytes; i += 2) {
        uint32_t c = load_le16(p + i);
        if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes) {
            uint32_t lo = load_le16(p + i + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                i += 2;
            }
        }
        if (c == 0 || (c >= 0xd800 && c < 0xe000)) {
            free(out);
            return NULL;
        }
        if (c == '\\')
            c = '/';
        if (c < 0x80) {
            out[n++] = (char)c;
        } else if (c < 0x800) {
            out[n++] = (char)(0xc0 | c >> 6);
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[n++] = (char)(0xe0 | c >> 12);
            out[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[n++] = (char)(0xf0 | c >> 18);
            out[n++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[n++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[n] = '\0';
    return out;
}

static bool key_is(const uint8_t *key, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (load_le16(key + 2 * i) != (uint8_t)name[i])
            return false;
    return true;
}

int vhdx_read_parent_locator(struct img *img, struct vhdx_state *s, uint32_t item_offset,
                             uint32_t item_length)
{
    if (item_length < 20 || item_length > LOCATOR_MAX || item_offset < VHDX_TABLE_SIZE ||
        (uint64_t)item_offset + item_length > s->metadata_length)
        return img_error(-EINVAL, "vhdx: '%s': the parent locator is out of bounds", img->filename);
    uint8_t *loc = malloc(item_length);
    if (!loc)
        return img_error(-ENOMEM, "vhdx: out of memory");
    int ret = io_pread(img->file, loc, item_length, s->metadata_offset + item_offset);
    if (ret < 0) {
        img_error(ret, "vhdx: cannot read the parent locator of '%s': %s", img->filename,
                  img_strerror(ret));
        goto out;
    }
    ret = -EINVAL;
    if (memcmp(loc, parent_vhdx_type, 16) != 0) {
        img_error(-ENOTSUP, "vhdx: '%s': the parent locator is not of the VHDX type",
                  img->filename);
        ret = -ENOTSUP;
        goto out;
    }
    uint16_t count = load_le16(loc + 18);
    if (20 + (size_t)count * 12 > item_length) {
        img_error(ret, "vhdx: '%s': the parent locator has %u entries past its end", img->filename,
                  count);
        goto out;
    }
    const uint8_t *relative = NULL, *absolute = NULL;
    size_t relative_len = 0, absolute_len = 0;
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *e = loc + 20 + 12 * i;
        uint32_t koff = load_le32(e), voff = load_le32(e + 4);
        uint16_t klen = load_le16(e + 8), vlen = load_le16(e + 10);
        if ((uint64_t)koff + klen > item_length || (uint64_t)voff + vlen > item_length ||
            vlen % 2 || vlen == 0) {
            img_error(ret, "vhdx: '%s': parent locator entry %u is out of bounds", img->filename,
                      i);
            goto out;
        }
        if (key_is(loc + koff, klen, "relative_path")) {
            relative = loc + voff;
            relative_len = vlen;
        } else if (key_is(loc + koff, klen, "absolute_win32_path")) {
            absolute = loc + voff;
            absolute_len = vlen;
        }
    }
    const uint8_t *name = relative ? relative : absolute;
    size_t name_len = relative ? relative_len : absolute_len;
    if (!name) {
        img_error(ret, "vhdx: '%s': the parent locator names no parent path", img->filename);
        goto out;
    }
    char *path = utf16_to_path(name, name_len);
    if (!path || strlen(path) > PATH_MAX_UTF8) {
        free(path);
        img_error(ret, "vhdx: '%s': the parent path in the locator is not valid UTF-16",
                  img->filename);
        goto out;
    }
    /* A relative path written by Windows starts with "./"; it resolves the same without. */
    if (strncmp(path, "./", 2) == 0)
        memmove(path, path + 2, strlen(path + 2) + 1);
    img->backing_name = path;
    ret = 0;
out:
    free(loc);
    return ret;
}

int vhdx_bitmap_run(struct img *img, const struct vhdx_state *s, uint64_t block, uint64_t in_block,
                    uint64_t length, bool *present, uint64_t *run)
{
    uint64_t chunk = block >> s->chunk_bits;
    uint64_t index = chunk * (s->chunk_ratio + 1) + s->chunk_ratio;
    uint64_t entry = index < s->bat_entries ? s->bat[index] : 0;
    if ((entry & VHDX_BAT_STATE_MASK) != VHDX_BITMAP_PRESENT)
        return img_error(-EIO,
                         "vhdx: '%s': block %" PRIu64 " is partially present but its sector "
                         "bitmap is not",
                         img->filename, block);
    uint64_t sector_size = s->logical_sector_size;
    uint64_t first = ((block & (s->chunk_ratio - 1)) << s->block_bits | in_block) / sector_size;
    uint64_t sectors = (length + (in_block % sector_size) + sector_size - 1) / sector_size;
    /* Reads the bits of the sectors asked for, at most 4 KiB of them (a shorter run is a
     * valid answer: the caller asks again from where it ends). */
    uint64_t first_byte = first / 8, last_byte = (first + sectors - 1) / 8;
    uint8_t bits[4096];
    uint64_t nbytes = last_byte - first_byte + 1;
    if (nbytes > sizeof(bits))
        nbytes = sizeof(bits);
    int ret = io_pread(img->file, bits, nbytes, (entry & VHDX_BAT_OFFSET_MASK) + first_byte);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot read a sector bitmap of '%s': %s", img->filename,
                         img_strerror(ret));
    uint64_t i = first;
    bool want = (bits[0] >> (first % 8)) & 1;
    while (i < first + sectors && (i / 8 - first_byte) < nbytes &&
           (bool)((bits[i / 8 - first_byte] >> (i % 8)) & 1) == want)
        i++;
    *present = want;
    uint64_t bytes = (i - first) * sector_size - in_block % sector_size;
    *run = bytes < length ? bytes : length;
    return 0;
}
