/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* DMG: finding the koly trailer, opening and closing (the layout is in dmg.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/dmg/dmg.h"
#include "formats/format.h"
#include "io/io.h"
#include "util/endian.h"

#define KOLY_SIZE 512u

/*
 * Like QEMU, by the file name's ".dmg" suffix alone: a DMG starts with guest data. An empty
 * file QEMU never probes (it is raw).
 */
static int dmg_probe(const uint8_t *buf, size_t len, const char *filename)
{
    if (!filename || len == 0)
        return 0;
    size_t n = strlen(filename);
    return n > 4 && strcmp(filename + n - 4, ".dmg") == 0 ? 2 : 0;
}

/*
 * The trailer is the last 512 bytes, but a DMG may have an odd size: QEMU looks for "koly" in
 * the last 511 bytes of the second-last sector or the first 4 bytes of the last one.
 */
static int find_koly(struct img *img, uint64_t file_size, uint64_t *koly)
{
    if (file_size < KOLY_SIZE)
        return img_error(-EINVAL, "dmg: '%s': dmg file must be at least 512 bytes long",
                         img->filename);
    uint64_t file_end = (file_size + 511) & ~511ull; /* QEMU sees whole sectors */
    uint64_t start = file_end > 511 + 512 ? file_end - 511 - 512 : 0;
    uint64_t len = file_end < 515 ? file_end : 515;
    uint8_t buf[515];
    int ret = io_pread(img->file, buf, (size_t)len, start);
    if (ret < 0)
        return img_error(ret, "dmg: '%s': Failed while reading UDIF trailer: %s", img->filename,
                         img_strerror(ret));
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(buf + i, "koly", 4) == 0) {
            *koly = start + i;
            return 0;
        }
    }
    return img_error(-EINVAL, "dmg: '%s': Could not locate UDIF trailer in dmg file",
                     img->filename);
}

/* A table named by the trailer must lie before it, as QEMU requires. */
static int check_fork(struct img *img, const char *what, uint64_t koly, uint64_t offset,
                      uint64_t length)
{
    if (offset >= koly || length > koly - offset)
        return img_error(-EINVAL,
                         "dmg: '%s': the %s (%" PRIu64 " bytes at %" PRIu64
                         ") does not lie before the UDIF trailer at %" PRIu64,
                         img->filename, what, length, offset, koly);
    return 0;
}

static int read_tables(struct img *img, struct dmg_state *s, uint64_t *sectors)
{
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "dmg: cannot read the size of '%s'", img->filename);
    uint64_t koly = 0;
    int ret = find_koly(img, (uint64_t)file_size, &koly);
    if (ret < 0)
        return ret;
    uint8_t t[KOLY_SIZE];
    ret = io_pread(img->file, t, sizeof(t), koly);
    if (ret < 0)
        return img_error(ret, "dmg: cannot read the UDIF trailer of '%s': %s", img->filename,
                         img_strerror(ret));
    s->data_fork_offset = load_be64(t + 0x18);
    if (s->data_fork_offset > koly)
        return img_error(-EINVAL,
                         "dmg: '%s': the data fork offset %" PRIu64
                         " lies past the UDIF trailer at %" PRIu64,
                         img->filename, s->data_fork_offset, koly);
    uint64_t rsrc_offset = load_be64(t + 0x28), rsrc_length = load_be64(t + 0x30);
    uint64_t xml_offset = load_be64(t + 0xd8), xml_length = load_be64(t + 0xe0);
    ret = check_fork(img, "resource fork", koly, rsrc_offset, rsrc_length);
    if (ret == 0)
        ret = check_fork(img, "property list", koly, xml_offset, xml_length);
    if (ret < 0)
        return ret;
    *sectors = load_be64(t + 0x1ec);
    if (*sectors > (uint64_t)INT64_MAX / 512)
        return img_error(-EFBIG, "dmg: '%s': the sector count %" PRIu64 " is too large",
                         img->filename, *sectors);
    if (rsrc_length)
        return dmg_read_resource_fork(img, s, rsrc_offset, rsrc_length);
    if (xml_length)
        return dmg_read_plist_xml(img, s, xml_offset, xml_length);
    return img_error(-EINVAL, "dmg: '%s' has neither a resource fork nor a property list",
                     img->filename);
}

static int dmg_open(struct img *img, const img_opts *opts)
{
    if (img->writable)
        return img_error(-EROFS, "dmg: '%s': Image is read-only (the format is read-only)",
                         img->filename);
    struct dmg_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "dmg: out of memory");
    uint64_t sectors = 0;
    int ret = read_tables(img, s, &sectors);
    if (ret < 0) {
        free(s->chunks);
        free(s);
        return ret;
    }
    img->priv = s;
    img->size = sectors * 512;
    return 0;
}

static void dmg_close(struct img *img)
{
    struct dmg_state *s = img->priv;
    free(s->chunks);
    free(s);
}

const struct img_format format_dmg = {
    .name = "dmg",
    .caps = FORMAT_HAS_METADATA | FORMAT_NO_BLOCK_STATUS | FORMAT_NO_DRIVER_INFO,
    .probe = dmg_probe,
    .open = dmg_open,
    .close = dmg_close,
    .map = dmg_map,
};
