/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Parallels header: probe, parse with QEMU's checks and limits, encode. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "util/endian.h"

static bool known_magic(const uint8_t *buf, bool *v2)
{
    if (memcmp(buf, PRL_MAGIC_V1, 16) == 0) {
        *v2 = false;
        return true;
    }
    if (memcmp(buf, PRL_MAGIC_V2, 16) == 0) {
        *v2 = true;
        return true;
    }
    return false;
}

int prl_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    bool v2;
    if (len < PRL_HEADER_SIZE || !known_magic(buf, &v2))
        return 0;
    return load_le32(buf + 0x10) == PRL_VERSION ? 100 : 0;
}

int prl_parse_header(const uint8_t *buf, size_t len, const char *name, struct prl_header *h)
{
    memset(h, 0, sizeof(*h));
    if (len < PRL_HEADER_SIZE)
        return img_error(-EINVAL, "parallels: '%s' is too short for a Parallels header (%zu bytes)",
                         name, len);
    h->version = load_le32(buf + 0x10);
    if (h->version != PRL_VERSION || !known_magic(buf, &h->v2))
        return img_error(-EINVAL, "parallels: '%s': Image not in Parallels format", name);
    h->heads = load_le32(buf + 0x14);
    h->cylinders = load_le32(buf + 0x18);
    h->tracks = load_le32(buf + 0x1c);
    h->bat_entries = load_le32(buf + 0x20);
    h->nb_sectors = load_le64(buf + 0x24);
    /* Version 1 images keep the size in 32 bits; what follows was padding. */
    if (!h->v2)
        h->nb_sectors &= 0xffffffffu;
    h->inuse = load_le32(buf + 0x2c);
    h->data_off = load_le32(buf + 0x30);
    h->flags = load_le32(buf + 0x34);
    h->ext_off = load_le64(buf + 0x38);

    if (h->tracks == 0)
        return img_error(-EINVAL, "parallels: '%s': Invalid image: Zero sectors per track", name);
    if (h->tracks > PRL_MAX_TRACKS)
        return img_error(-EFBIG,
                         "parallels: '%s': Invalid image: Too big cluster (%" PRIu32 " sectors)",
                         name, h->tracks);
    if (h->bat_entries > PRL_MAX_BAT_ENTRIES)
        return img_error(-EFBIG, "parallels: '%s': Catalog too large (%" PRIu32 " entries)", name,
                         h->bat_entries);
    if (h->nb_sectors > (uint64_t)INT64_MAX / PRL_SECTOR)
        return img_error(-EFBIG,
                         "parallels: '%s': virtual size of %" PRIu64 " sectors is too large", name,
                         h->nb_sectors);
    /* QEMU shifts ext_off into a signed byte offset and asserts it is positive. */
    if (h->ext_off > (uint64_t)INT64_MAX / PRL_SECTOR)
        return img_error(-EINVAL,
                         "parallels: '%s': format extension offset %" PRIu64 " is out of range",
                         name, h->ext_off);
    return 0;
}

void prl_encode_header(const struct prl_header *h, uint8_t *buf)
{
    memset(buf, 0, PRL_HEADER_SIZE);
    memcpy(buf, h->v2 ? PRL_MAGIC_V2 : PRL_MAGIC_V1, 16);
    store_le32(buf + 0x10, h->version);
    store_le32(buf + 0x14, h->heads);
    store_le32(buf + 0x18, h->cylinders);
    store_le32(buf + 0x1c, h->tracks);
    store_le32(buf + 0x20, h->bat_entries);
    store_le64(buf + 0x24, h->nb_sectors);
    store_le32(buf + 0x2c, h->inuse);
    store_le32(buf + 0x30, h->data_off);
    store_le32(buf + 0x34, h->flags);
    store_le64(buf + 0x38, h->ext_off);
}
