/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Header extensions: the typed records between the header and the end of the first cluster. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "util/checked.h"
#include "util/endian.h"

/* A string extension is not NUL-terminated; a NUL inside it ends the name, as in QEMU. */
static char *dup_name(const uint8_t *p, size_t len)
{
    const uint8_t *nul = memchr(p, 0, len);
    if (nul)
        len = (size_t)(nul - p);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

static int parse_feature_table(const uint8_t *p, uint32_t len, struct qcow2_extensions *ext)
{
    size_t n = len / QCOW2_FEATURE_NAME_ENTRY;
    free(ext->features);
    ext->features = NULL;
    ext->nb_features = 0;
    if (n == 0)
        return 0;
    ext->features = calloc(n, sizeof(*ext->features));
    if (!ext->features)
        return img_error(-ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++, p += QCOW2_FEATURE_NAME_ENTRY) {
        struct qcow2_feature_name *f = &ext->features[i];
        f->type = p[0];
        f->bit = p[1];
        memcpy(f->name, p + 2, QCOW2_FEATURE_NAME_ENTRY - 2);
        f->name[QCOW2_FEATURE_NAME_ENTRY - 2] = '\0';
    }
    ext->nb_features = n;
    return 0;
}

static int parse_bitmaps(const uint8_t *p, uint32_t len, const struct qcow2_header *h,
                         struct qcow2_extensions *ext)
{
    if (len != 24)
        return img_error(-EIO, "qcow2: bitmaps extension has length %" PRIu32 " (expected 24)",
                         len);
    /* Without the autoclear bit a program unaware of bitmaps wrote the image: all are stale. */
    if (!(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        ext->stale_bitmaps = true;
        return 0;
    }
    uint32_t nb = load_be32(p);
    uint32_t reserved = load_be32(p + 4);
    uint64_t dir_size = load_be64(p + 8);
    uint64_t dir_offset = load_be64(p + 16);
    if (reserved != 0)
        return img_error(-EIO, "qcow2: bitmaps extension reserved field is not zero");
    if (nb > QCOW2_MAX_BITMAPS)
        return img_error(-EFBIG, "qcow2: image has %" PRIu32 " bitmaps (at most %u)", nb,
                         QCOW2_MAX_BITMAPS);
    if (nb == 0)
        return img_error(-EIO, "qcow2: bitmaps extension lists zero bitmaps");
    if (dir_offset & ((1ull << h->cluster_bits) - 1))
        return img_error(-EIO,
                         "qcow2: bitmap directory offset 0x%" PRIx64 " is not cluster-aligned",
                         dir_offset);
    if (dir_size > QCOW2_MAX_BITMAP_DIRECTORY_BYTES)
        return img_error(-EFBIG,
                         "qcow2: bitmap directory of %" PRIu64 " bytes exceeds the limit of %u",
                         dir_size, QCOW2_MAX_BITMAP_DIRECTORY_BYTES);
    ext->has_bitmaps = true;
    ext->nb_bitmaps = nb;
    ext->bitmap_directory_size = dir_size;
    ext->bitmap_directory_offset = dir_offset;
    return 0;
}

static int keep_unknown(uint32_t magic, const uint8_t *p, uint32_t len,
                        struct qcow2_extensions *ext)
{
    struct qcow2_unknown_extension *list =
        realloc(ext->unknown, (ext->nb_unknown + 1) * sizeof(*list));
    if (!list)
        return img_error(-ENOMEM, "out of memory");
    ext->unknown = list;
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return img_error(-ENOMEM, "out of memory");
    memcpy(data, p, len);
    list[ext->nb_unknown++] = (struct qcow2_unknown_extension){magic, len, data};
    return 0;
}

static int parse_one(uint32_t magic, const uint8_t *p, uint32_t len, const struct qcow2_header *h,
                     struct qcow2_extensions *ext)
{
    switch (magic) {
    case QCOW2_EXT_BACKING_FORMAT:
        if (len > QCOW2_MAX_BACKING_FORMAT)
            return img_error(-EIO, "qcow2: backing format name is too long (%" PRIu32 " bytes)",
                             len);
        free(ext->backing_format);
        ext->backing_format = dup_name(p, len);
        return ext->backing_format ? 0 : img_error(-ENOMEM, "out of memory");
    case QCOW2_EXT_FEATURE_TABLE:
        return parse_feature_table(p, len, ext);
    case QCOW2_EXT_BITMAPS:
        return parse_bitmaps(p, len, h, ext);
    case QCOW2_EXT_CRYPTO:
        ext->has_crypto_header = true;
        if (len >= 16) {
            ext->crypto_header_offset = load_be64(p);
            ext->crypto_header_length = load_be64(p + 8);
        }
        return 0;
    case QCOW2_EXT_DATA_FILE:
        free(ext->data_file);
        ext->data_file = dup_name(p, len);
        return ext->data_file ? 0 : img_error(-ENOMEM, "out of memory");
    default:
        return keep_unknown(magic, p, len, ext);
    }
}

int qcow2_extensions_parse(const uint8_t *buf, size_t start, size_t end,
                           const struct qcow2_header *h, struct qcow2_extensions *ext)
{
    memset(ext, 0, sizeof(*ext));
    uint64_t off = start;
    while (off < end) {
        if (end - off < 8)
            return img_error(-EIO,
                             "qcow2: header extension at offset %" PRIu64
                             " is cut off by the end of the extension area",
                             off);
        uint32_t magic = load_be32(buf + off);
        uint32_t len = load_be32(buf + off + 4);
        off += 8;
        if (magic == QCOW2_EXT_END) {
            ext->end_offset = off;
            return 0;
        }
        if (len > end - off)
            return img_error(-EIO,
                             "qcow2: header extension 0x%08" PRIx32 " at offset %" PRIu64
                             " is too large (%" PRIu32 " bytes)",
                             magic, off - 8, len);
        int ret = parse_one(magic, buf + off, len, h, ext);
        if (ret < 0)
            return ret;
        off += align_up_u64(len, 8);
    }
    ext->end_offset = end;
    return 0;
}

void qcow2_extensions_free(struct qcow2_extensions *ext)
{
    free(ext->backing_format);
    free(ext->data_file);
    free(ext->features);
    for (size_t i = 0; i < ext->nb_unknown; i++)
        free(ext->unknown[i].data);
    free(ext->unknown);
    memset(ext, 0, sizeof(*ext));
}

const char *qcow2_feature_name(const struct qcow2_extensions *ext, uint8_t type, unsigned bit)
{
    for (size_t i = 0; ext && i < ext->nb_features; i++) {
        const struct qcow2_feature_name *f = &ext->features[i];
        if (f->type == type && f->bit == bit && f->name[0])
            return f->name;
    }
    return NULL;
}
