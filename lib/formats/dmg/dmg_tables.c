/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The chunk tables of a DMG: "mish" blocks read from the resource fork or from the base64
 * <data> elements of the XML property list, as QEMU reads them. Memory stays bounded by the
 * file: the resource fork lies inside it and the property list is at most 16 MiB.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/dmg/dmg.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

#define MISH_MAGIC 0x6d697368u /* "mish" */
#define MISH_HEADER_SIZE 204u
#define MISH_ENTRY_SIZE 40u

static bool type_is_kept(uint32_t type)
{
    switch (type) {
    case DMG_UDZE:
    case DMG_UDRW:
    case DMG_UDIG:
    case DMG_UDZO:
    case DMG_UDBZ:
    case DMG_UDCO:
    case DMG_ULFO:
        return true;
    default:
        return false;
    }
}

static bool type_is_zeros(uint32_t type)
{
    return type == DMG_UDZE || type == DMG_UDIG;
}

static int add_chunk(struct img *img, struct dmg_state *s, const struct dmg_chunk *c)
{
    if (s->n_chunks == s->cap_chunks) {
        if (s->cap_chunks >= UINT32_MAX / 2)
            return img_error(-EFBIG, "dmg: '%s' has too many chunks", img->filename);
        uint32_t cap = s->cap_chunks ? s->cap_chunks * 2 : 64;
        struct dmg_chunk *p = realloc(s->chunks, (size_t)cap * sizeof(*p));
        if (!p)
            return img_error(-ENOMEM, "dmg: out of memory for the chunks of '%s'", img->filename);
        s->chunks = p;
        s->cap_chunks = cap;
    }
    s->chunks[s->n_chunks++] = *c;
    return 0;
}

/* One resource: a "mish" block adds its chunks; anything else is skipped, as QEMU does. */
static int read_mish_block(struct img *img, struct dmg_state *s, const uint8_t *buf, uint32_t count)
{
    if (count < MISH_HEADER_SIZE + MISH_ENTRY_SIZE || load_be32(buf) != MISH_MAGIC)
        return 0;
    uint64_t first_sector = load_be64(buf + 8);
    uint64_t data_base = s->data_fork_offset + load_be64(buf + 0x18);
    uint32_t entries = (count - MISH_HEADER_SIZE) / MISH_ENTRY_SIZE;
    for (uint32_t i = 0; i < entries; i++) {
        const uint8_t *e = buf + MISH_HEADER_SIZE + (size_t)i * MISH_ENTRY_SIZE;
        struct dmg_chunk c = {.type = load_be32(e)};
        if (!type_is_kept(c.type))
            continue;
        /* QEMU adds in 64 bits and lets the sums wrap; so does this. */
        c.sector = load_be64(e + 8) + first_sector;
        c.sector_count = load_be64(e + 0x10);
        c.offset = load_be64(e + 0x18) + data_base;
        c.length = load_be64(e + 0x20);
        /* Zeros need no buffer and may be as large as they like. */
        if (!type_is_zeros(c.type) && c.sector_count > DMG_SECTORCOUNT_MAX)
            return img_error(-EINVAL,
                             "dmg: '%s': sector count %" PRIu64 " for chunk %" PRIu32
                             " is larger than max (%u)",
                             img->filename, c.sector_count, s->n_chunks, DMG_SECTORCOUNT_MAX);
        if (c.length > DMG_LENGTH_MAX)
            return img_error(-EINVAL,
                             "dmg: '%s': length %" PRIu64 " for chunk %" PRIu32
                             " is larger than max (%u)",
                             img->filename, c.length, s->n_chunks, DMG_LENGTH_MAX);
        int ret = add_chunk(img, s, &c);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int read_be32_at(struct img *img, uint64_t offset, uint32_t *out)
{
    uint8_t b[4];
    int ret = io_pread(img->file, b, sizeof(b), offset);
    if (ret < 0)
        return img_error(ret, "dmg: cannot read '%s' at %" PRIu64 ": %s", img->filename, offset,
                         img_strerror(ret));
    *out = load_be32(b);
    return 0;
}

int dmg_read_resource_fork(struct img *img, struct dmg_state *s, uint64_t offset, uint64_t length)
{
    uint32_t data_offset, count;
    int ret = read_be32_at(img, offset, &data_offset);
    if (ret == 0)
        ret = read_be32_at(img, offset + 8, &count);
    if (ret < 0)
        return ret;
    if (data_offset > length || count == 0 || (uint64_t)data_offset + count > length)
        return img_error(-EINVAL,
                         "dmg: '%s': the resource data (%" PRIu32 " bytes at %" PRIu32
                         ") does not fit in the resource fork (%" PRIu64 " bytes)",
                         img->filename, count, data_offset, length);
    uint64_t at = offset + data_offset, end = at + count;
    uint8_t *buf = NULL;
    while (ret == 0 && at < end) {
        uint32_t size;
        ret = read_be32_at(img, at, &size);
        if (ret < 0)
            break;
        if (size == 0 || size > end - at) {
            ret = img_error(-EINVAL,
                            "dmg: '%s': a resource of %" PRIu32 " bytes at %" PRIu64
                            " runs past the resource data",
                            img->filename, size, at);
            break;
        }
        at += 4;
        /* Bounded by the resource fork, which lies inside the file. */
        uint8_t *p = realloc(buf, size);
        if (!p) {
            ret = img_error(-ENOMEM, "dmg: out of memory for a resource of '%s'", img->filename);
            break;
        }
        buf = p;
        ret = io_pread(img->file, buf, size, at);
        if (ret < 0) {
            img_error(ret, "dmg: cannot read a resource of '%s': %s", img->filename,
                      img_strerror(ret));
            break;
        }
        ret = read_mish_block(img, s, buf, size);
        at += size;
    }
    free(buf);
    return ret;
}

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decodes base64 in place (the output is never longer than the input), skipping what is not
 * in the alphabet (white space, padding), as GLib's decoder that QEMU uses does. Returns the
 * decoded length.
 */
static size_t base64_decode_in_place(char *text)
{
    uint8_t *out = (uint8_t *)text;
    size_t n = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (const char *p = text; *p; p++) {
        int v = base64_value(*p);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

int dmg_read_plist_xml(struct img *img, struct dmg_state *s, uint64_t offset, uint64_t length)
{
    if (length == 0 || length > DMG_XML_MAX)
        return img_error(-EINVAL,
                         "dmg: '%s': the property list's length %" PRIu64
                         " is not between 1 and %u bytes",
                         img->filename, length, DMG_XML_MAX);
    char *xml = malloc(length + 1);
    if (!xml)
        return img_error(-ENOMEM, "dmg: out of memory for the property list of '%s'",
                         img->filename);
    int ret = io_pread(img->file, xml, length, offset);
    if (ret < 0) {
        free(xml);
        return img_error(ret, "dmg: cannot read the property list of '%s': %s", img->filename,
                         img_strerror(ret));
    }
    xml[length] = '\0';
    /* Every <data> element is looked at; those that are not mish blocks are skipped. */
    char *at = xml, *begin;
    while (ret == 0 && (begin = strstr(at, "<data>")) != NULL) {
        begin += 6;
        char *end = strstr(begin, "</data>");
        if (!end) {
            ret = img_error(-EINVAL, "dmg: '%s': malformed property list (<data> not closed)",
                            img->filename);
            break;
        }
        *end = '\0';
        size_t n = base64_decode_in_place(begin);
        ret = read_mish_block(img, s, (const uint8_t *)begin,
                              n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
        at = end + 1;
    }
    free(xml);
    return ret;
}
