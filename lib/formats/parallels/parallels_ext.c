/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Parallels format extension (QEMU's parallels-ext.c, docs/interop/parallels.txt): one
 * cluster at ext_off holding a magic, an MD5 of the rest and a list of features, of which
 * QEMU knows the dirty bitmap. QEMU loads the bitmaps read-only and fails the open on a corrupt
 * extension; guest data does not depend on it, so here it is checked the same way and the
 * bitmaps are not kept (qemu-img info shows none for this format).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "util/endian.h"

#define EXT_MAGIC 0xAB234CEF23DCEA87ull
#define EXT_END_MAGIC 0ull
#define EXT_DIRTY_BITMAP_MAGIC 0x20385FAE252CB34Aull
#define EXT_HEADER_SIZE 24u         /* magic, MD5 */
#define EXT_FEATURE_HEADER_SIZE 24u /* magic, flags, data_size, unused */
#define EXT_BITMAP_HEADER_SIZE 32u  /* size, id[16], granularity, l1_size */
/* Bounds the memory the extension takes: real images use the default 1 MiB clusters. */
#define EXT_MAX_CLUSTER (64u << 20)

static int check_bitmap(struct prl_state *s, const uint8_t *data, uint64_t data_size)
{
    const char *name = s->data_name;
    if (data_size < EXT_BITMAP_HEADER_SIZE)
        return img_error(-EINVAL,
                         "parallels: '%s': Too small Bitmap Feature area in Parallels Format "
                         "Extension: %" PRIu64 " bytes, expected at least %u bytes",
                         name, data_size, EXT_BITMAP_HEADER_SIZE);
    uint64_t size = load_le64(data);
    uint64_t granularity = (uint64_t)load_le32(data + 24) * PRL_SECTOR;
    uint32_t l1_size = load_le32(data + 28);
    if (size != s->hdr.nb_sectors)
        return img_error(-EINVAL,
                         "parallels: '%s': Bitmap size (in sectors) %" PRIu64
                         " differs from disk size in sectors %" PRIu64,
                         name, size, s->hdr.nb_sectors);
    if ((uint64_t)l1_size * 8 > data_size - EXT_BITMAP_HEADER_SIZE)
        return img_error(-EINVAL,
                         "parallels: '%s': Bitmaps feature corrupted: l1 table exceeds "
                         "extension data_size",
                         name);
    if (granularity < PRL_SECTOR || (granularity & (granularity - 1)))
        return img_error(-EINVAL,
                         "parallels: '%s': Granularity must be power of 2 and at least 512", name);
    /* One bit per granule, serialized in 64-bit words, spread over whole clusters. */
    uint64_t bits = (size * PRL_SECTOR + granularity - 1) / granularity;
    uint64_t bytes = (bits + 63) / 64 * 8;
    uint64_t expected = (bytes + s->cluster_bytes - 1) / s->cluster_bytes;
    if (expected != l1_size)
        return img_error(-EINVAL,
                         "parallels: '%s': Bitmap table size %" PRIu32
                         " does not correspond to bitmap size and cluster size. Expected %" PRIu64,
                         name, l1_size, expected);
    return 0;
}

static int parse_features(struct prl_state *s, const uint8_t *cluster, uint64_t len)
{
    const char *name = s->data_name;
    uint64_t pos = EXT_HEADER_SIZE;
    for (;;) {
        uint64_t remaining = len - pos;
        if (remaining < EXT_FEATURE_HEADER_SIZE)
            return img_error(-EINVAL,
                             "parallels: '%s': Can not read feature header, as remaining bytes "
                             "(%" PRIu64 ") in Format Extension is less than Feature header "
                             "size (%u)",
                             name, remaining, EXT_FEATURE_HEADER_SIZE);
        uint64_t magic = load_le64(cluster + pos);
        uint64_t flags = load_le64(cluster + pos + 8);
        uint32_t data_size = load_le32(cluster + pos + 16);
        pos += EXT_FEATURE_HEADER_SIZE;
        remaining -= EXT_FEATURE_HEADER_SIZE;
        if (flags)
            return img_error(-EINVAL,
                             "parallels: '%s': Flags for extension feature are unsupported", name);
        if (data_size > remaining)
            return img_error(-EINVAL,
                             "parallels: '%s': Feature data_size exceedes Format Extension "
                             "cluster",
                             name);
        if (magic == EXT_END_MAGIC)
            return 0;
        if (magic != EXT_DIRTY_BITMAP_MAGIC)
            return img_error(-EINVAL, "parallels: '%s': Unknown feature: 0x%" PRIx64, name, magic);
        int ret = check_bitmap(s, cluster + pos, data_size);
        if (ret < 0)
            return ret;
        pos = (pos + data_size + 7) & ~7ull;
        if (pos > len)
            pos = len;
    }
}

int prl_read_extension(struct img *img, struct prl_state *s, uint64_t ext_off)
{
    (void)img;
    uint64_t len = s->cluster_bytes;
    if (len > EXT_MAX_CLUSTER)
        return img_error(-EFBIG,
                         "parallels: '%s': the format extension cluster (%" PRIu64
                         " bytes) is too large",
                         s->data_name, len);
    int64_t file_size = io_file_size(s->data);
    if (file_size < 0)
        return img_error((int)file_size, "parallels: cannot read the size of '%s'", s->data_name);
    if (ext_off > (uint64_t)file_size || len > (uint64_t)file_size - ext_off)
        return img_error(-EINVAL,
                         "parallels: '%s': the format extension at offset %" PRIu64
                         " lies past the end of the file",
                         s->data_name, ext_off);
    uint8_t *cluster = malloc(len);
    if (!cluster)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(s->data, cluster, len, ext_off);
    if (ret < 0) {
        img_error(ret, "parallels: '%s': Failed to read Format Extension cluster: %s", s->data_name,
                  img_strerror(ret));
    } else if (load_le64(cluster) != EXT_MAGIC) {
        ret = img_error(-EINVAL,
                        "parallels: '%s': Wrong parallels Format Extension magic: 0x%" PRIx64
                        ", expected: 0x%llx",
                        s->data_name, load_le64(cluster), EXT_MAGIC);
    } else {
        uint8_t digest[16];
        prl_md5(cluster + EXT_HEADER_SIZE, len - EXT_HEADER_SIZE, digest);
        if (memcmp(digest, cluster + 8, 16) != 0)
            ret = img_error(-EINVAL,
                            "parallels: '%s': Wrong checksum in Format Extension header. Format "
                            "extension is corrupted.",
                            s->data_name);
        else
            ret = parse_features(s, cluster, len);
    }
    free(cluster);
    return ret;
}
