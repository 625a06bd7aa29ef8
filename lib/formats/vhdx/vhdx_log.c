/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata log (spec section 2.3): a circular buffer of 4 KiB sectors holding entries, each
 * a header, descriptors (4 KiB data sectors or runs of zeros, with their file offsets) and the
 * data sectors, all under one CRC-32C and the log GUID of the active header.
 *
 * Replay follows QEMU: the log is searched sector by sector for the sequence of valid entries
 * (consecutive sequence numbers) with the highest sequence number, and its descriptors are
 * applied in order. A read-only open of an image with such a sequence is refused with QEMU's
 * words; a read-write open replays it, then empties the log (a zero log GUID).
 *
 * Hostile logs: entry sizes are bounded by the log, the log by the file, descriptor targets by
 * the file and away from the headers and the log itself, so a crafted log can neither make
 * replay allocate more than its entry nor write outside the metadata of the image.
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

#define LOG_ENTRY_SIGNATURE 0x65676f6cu /* "loge" */
#define LOG_DESC_SIGNATURE 0x63736564u  /* "desc" */
#define LOG_ZERO_SIGNATURE 0x6f72657au  /* "zero" */
#define LOG_DATA_SIGNATURE 0x61746164u  /* "data" */
#define LOG_ENTRY_HEADER 64u
#define LOG_DESC_SIZE 32u
/* Descriptor sectors one entry may have: far more than any writer needs, and bounded. */
#define LOG_MAX_DESC_BYTES (16u * 1024u * 1024u)

struct log_ctx {
    struct img *img;
    struct vhdx_state *s;
    uint64_t offset; /* of the log in the file */
    uint32_t length; /* bytes, a multiple of 1 MiB */
    uint64_t file_size;
};

/* One validated entry: its descriptor sectors are kept for replay. */
struct log_entry {
    uint32_t pos, length;
    uint64_t sequence;
    uint32_t desc_count;
    uint64_t flushed_file_offset, last_file_offset;
    uint8_t *descs; /* desc_sectors * 4096 bytes, starting with the entry header */
};

static uint32_t desc_sectors(uint32_t count)
{
    return (count + 2 + 127) / 128;
}

static int read_log_sector(struct log_ctx *c, uint32_t pos, uint8_t *buf)
{
    int ret = io_pread(c->img->file, buf, VHDX_LOG_SECTOR, c->offset + pos);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot read the log of '%s': %s", c->img->filename,
                         img_strerror(ret));
    return 0;
}

static uint32_t log_next(const struct log_ctx *c, uint32_t pos)
{
    pos += VHDX_LOG_SECTOR;
    return pos >= c->length ? 0 : pos;
}

/*
 * Validates the entry at `pos`: 1 (and *e filled, e->descs to free) when it is whole and
 * checks out, 0 when not, negative on I/O errors.
 */
static int validate_entry(struct log_ctx *c, uint32_t pos, struct log_entry *e)
{
    uint8_t sector[VHDX_LOG_SECTOR];
    int ret = read_log_sector(c, pos, sector);
    if (ret < 0)
        return ret;
    const struct vhdx_header *h = &c->s->hdr[c->s->cur];
    uint32_t length = load_le32(sector + 8);
    uint32_t count = load_le32(sector + 24);
    uint64_t sequence = load_le64(sector + 16);
    if (load_le32(sector) != LOG_ENTRY_SIGNATURE || length == 0 || length > c->length ||
        length % VHDX_LOG_SECTOR || sequence == 0 || memcmp(sector + 32, h->log_guid, 16) != 0 ||
        (uint64_t)count * LOG_DESC_SIZE > length)
        return 0;
    uint32_t nd = desc_sectors(count);
    if ((uint64_t)nd * VHDX_LOG_SECTOR > length ||
        (uint64_t)nd * VHDX_LOG_SECTOR > LOG_MAX_DESC_BYTES)
        return 0;
    uint8_t *descs = malloc((size_t)nd * VHDX_LOG_SECTOR);
    if (!descs)
        return img_error(-ENOMEM, "vhdx: out of memory reading the log of '%s'", c->img->filename);
    uint32_t at = pos;
    for (uint32_t i = 0; i < nd && ret == 0; i++) {
        ret = read_log_sector(c, at, descs + (size_t)i * VHDX_LOG_SECTOR);
        at = log_next(c, at);
    }
    if (ret < 0)
        goto fail;
    uint32_t data_count = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = descs + LOG_ENTRY_HEADER + (size_t)i * LOG_DESC_SIZE;
        uint32_t sig = load_le32(d);
        if (load_le64(d + 24) != sequence || load_le64(d + 16) % VHDX_LOG_SECTOR)
            goto invalid;
        if (sig == LOG_DESC_SIGNATURE)
            data_count++;
        else if (sig != LOG_ZERO_SIGNATURE || load_le64(d + 8) % VHDX_LOG_SECTOR)
            goto invalid;
    }
    uint32_t total = length / VHDX_LOG_SECTOR;
    if ((uint64_t)nd + data_count > total)
        goto invalid;
    /* The checksum covers the whole entry with its own field taken as zero. */
    uint32_t stored = load_le32(descs + 4);
    store_le32(descs + 4, 0);
    uint32_t crc = crc32c_update(0, descs, (size_t)nd * VHDX_LOG_SECTOR);
    store_le32(descs + 4, stored);
    uint32_t data_seen = 0;
    for (uint32_t i = nd; i < total; i++) {
        if ((ret = read_log_sector(c, at, sector)) < 0)
            goto fail;
        if (data_seen < data_count) {
            uint64_t seq = (uint64_t)load_le32(sector + 4) << 32 | load_le32(sector + 4092);
            if (load_le32(sector) != LOG_DATA_SIGNATURE || seq != sequence)
                goto invalid;
            data_seen++;
        }
        crc = crc32c_update(crc, sector, VHDX_LOG_SECTOR);
        at = log_next(c, at);
    }
    if (crc != stored)
        goto invalid;
    *e = (struct log_entry){.pos = pos,
                            .length = length,
                            .sequence = sequence,
                            .desc_count = count,
                            .flushed_file_offset = load_le64(descs + 48),
                            .last_file_offset = load_le64(descs + 56),
                            .descs = descs};
    return 1;
invalid:
    free(descs);
    return 0;
fail:
    free(descs);
    return ret;
}

/* The active sequence: where it starts, how many entries, its last sequence number. */
struct log_sequence {
    bool valid;
    uint32_t start, count;
    uint64_t first_seq, last_seq;
};

static int search_log(struct log_ctx *c, struct log_sequence *best)
{
    *best = (struct log_sequence){0};
    uint32_t pos = 0;
    while (pos < c->length) {
        struct log_entry e;
        int ret = validate_entry(c, pos, &e);
        if (ret < 0)
            return ret;
        if (ret == 0) {
            pos += VHDX_LOG_SECTOR;
            continue;
        }
        free(e.descs);
        struct log_sequence cur = {true, pos, 1, e.sequence, e.sequence};
        uint64_t covered = e.length;
        uint64_t next = (uint64_t)pos + e.length;
        while (covered < c->length) {
            struct log_entry n;
            ret = validate_entry(c, (uint32_t)(next % c->length), &n);
            if (ret < 0)
                return ret;
            if (ret == 0)
                break;
            free(n.descs);
            if (n.sequence != cur.last_seq + 1)
                break;
            cur.count++;
            cur.last_seq = n.sequence;
            covered += n.length;
            next += n.length;
        }
        if (!best->valid || cur.last_seq > best->last_seq)
            *best = cur;
        if (next >= c->length)
            break; /* the sequence wrapped around: everything was seen */
        pos = (uint32_t)next;
    }
    return 0;
}

/* Writes `len` bytes of zeros at `offset`, a sector at a time. */
static int write_zeros(struct log_ctx *c, uint64_t offset, uint64_t len)
{
    static const uint8_t zero[VHDX_LOG_SECTOR];
    while (len) {
        int ret = io_pwrite(c->img->file, zero, VHDX_LOG_SECTOR, offset);
        if (ret < 0)
            return ret;
        offset += VHDX_LOG_SECTOR;
        len -= VHDX_LOG_SECTOR;
    }
    return 0;
}

/* A descriptor may only rewrite metadata inside the file: not the headers, not the log. */
static int check_target(struct log_ctx *c, uint64_t offset, uint64_t len)
{
    uint64_t end;
    if (add_overflows_u64(offset, len, &end) || offset < VHDX_REGION_TABLE1_OFFSET ||
        end > c->file_size || (offset < c->offset + c->length && end > c->offset))
        return img_error(-EINVAL,
                         "vhdx: '%s': a log entry writes %" PRIu64 " bytes at 0x%" PRIx64
                         ", outside the image's metadata",
                         c->img->filename, len, offset);
    return 0;
}

static int apply_entry(struct log_ctx *c, const struct log_entry *e)
{
    if (e->flushed_file_offset > c->file_size)
        return img_error(-EINVAL,
                         "vhdx: '%s': the log expects a file of at least %" PRIu64
                         " bytes; the image has probably been truncated",
                         c->img->filename, e->flushed_file_offset);
    uint8_t sector[VHDX_LOG_SECTOR];
    uint32_t at = e->pos;
    uint32_t nd = desc_sectors(e->desc_count);
    for (uint32_t i = 0; i < nd; i++)
        at = log_next(c, at);
    for (uint32_t i = 0; i < e->desc_count; i++) {
        const uint8_t *d = e->descs + LOG_ENTRY_HEADER + (size_t)i * LOG_DESC_SIZE;
        uint64_t target = load_le64(d + 16);
        int ret;
        if (load_le32(d) == LOG_ZERO_SIGNATURE) {
            uint64_t len = load_le64(d + 8);
            ret = check_target(c, target, len);
            if (ret == 0 && (ret = write_zeros(c, target, len)) < 0)
                img_error(ret, "vhdx: cannot replay the log of '%s': %s", c->img->filename,
                          img_strerror(ret));
        } else {
            ret = check_target(c, target, VHDX_LOG_SECTOR);
            if (ret == 0)
                ret = read_log_sector(c, at, sector);
            at = log_next(c, at);
            if (ret == 0) {
                /* The first 8 and last 4 bytes travel in the descriptor. */
                memcpy(sector, d + 8, 8);
                memcpy(sector + 4092, d + 4, 4);
                ret = io_pwrite(c->img->file, sector, VHDX_LOG_SECTOR, target);
                if (ret < 0)
                    img_error(ret, "vhdx: cannot replay the log of '%s': %s", c->img->filename,
                              img_strerror(ret));
            }
        }
        if (ret < 0)
            return ret;
    }
    if (e->last_file_offset > c->file_size) {
        uint64_t size = align_up_u64(e->last_file_offset, VHDX_MiB);
        int ret = io_truncate(c->img->file, size);
        if (ret < 0)
            return img_error(ret, "vhdx: cannot extend '%s' after the log: %s", c->img->filename,
                             img_strerror(ret));
        c->file_size = size;
    }
    return 0;
}

static int replay(struct log_ctx *c, const struct log_sequence *seq)
{
    uint32_t pos = seq->start;
    for (uint32_t i = 0; i < seq->count; i++) {
        struct log_entry e;
        int ret = validate_entry(c, pos, &e);
        if (ret == 0)
            ret = img_error(-EIO, "vhdx: the log of '%s' changed while it was replayed",
                            c->img->filename);
        if (ret < 0)
            return ret;
        ret = apply_entry(c, &e);
        free(e.descs);
        if (ret < 0)
            return ret;
        pos = (uint32_t)(((uint64_t)pos + e.length) % c->length);
    }
    int ret = io_fsync(c->img->file);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot flush '%s': %s", c->img->filename, img_strerror(ret));
    return 0;
}

int vhdx_log_replay_if_needed(struct img *img, struct vhdx_state *s)
{
    const struct vhdx_header *h = &s->hdr[s->cur];
    s->log_sequence = 1;
    if (vhdx_guid_is_zero(h->log_guid) || h->log_length == 0)
        return 0;
    if (h->log_length % VHDX_MiB)
        return img_error(-EINVAL,
                         "vhdx: '%s': the log length %" PRIu32 " is not a multiple of 1 MiB",
                         img->filename, h->log_length);
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "vhdx: cannot read the size of '%s'", img->filename);
    if (h->log_offset + h->log_length > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vhdx: '%s': the log (%" PRIu32 " bytes at 0x%" PRIx64
                         ") is past the end of the file",
                         img->filename, h->log_length, h->log_offset);
    struct log_ctx c = {img, s, h->log_offset, h->log_length, (uint64_t)file_size};
    struct log_sequence seq;
    int ret = search_log(&c, &seq);
    if (ret < 0)
        return ret;
    if (seq.valid && !img->writable)
        return img_error(-EPERM,
                         "VHDX image file '%s' opened read-only, but contains a log that needs "
                         "to be replayed\nTo replay the log, run:\nqemu-img check -r all '%s'",
                         img->filename, img->filename);
    if (!img->writable)
        return 0;
    if (seq.valid) {
        if ((ret = replay(&c, &seq)) < 0)
            return ret;
        s->log_replayed = true;
        s->log_sequence = seq.last_seq + 1;
    }
    /* An empty log (nothing valid, or all replayed) is said so by a zero log GUID. */
    static const uint8_t zero_guid[16];
    return vhdx_update_headers(img, s, false, zero_guid);
}

static int sync_file(struct img *img)
{
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot flush '%s': %s", img->filename, img_strerror(ret));
    return 0;
}

/* Builds one entry carrying `count` sectors; returns its length in bytes. */
static uint32_t build_entry(struct vhdx_state *s, uint8_t *buf, const uint64_t *offsets,
                            const uint8_t *data, uint32_t count, uint64_t file_size)
{
    uint32_t nd = desc_sectors(count);
    uint32_t length = (nd + count) * VHDX_LOG_SECTOR;
    memset(buf, 0, length);
    store_le32(buf, LOG_ENTRY_SIGNATURE);
    store_le32(buf + 8, length);
    store_le32(buf + 12, 0); /* tail: the entry itself starts the sequence */
    store_le64(buf + 16, s->log_sequence);
    store_le32(buf + 24, count);
    memcpy(buf + 32, s->hdr[s->cur].log_guid, 16);
    store_le64(buf + 48, file_size);
    store_le64(buf + 56, file_size);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *d = buf + LOG_ENTRY_HEADER + (size_t)i * LOG_DESC_SIZE;
        const uint8_t *src = data + (size_t)i * VHDX_LOG_SECTOR;
        uint8_t *ds = buf + (size_t)(nd + i) * VHDX_LOG_SECTOR;
        store_le32(d, LOG_DESC_SIGNATURE);
        memcpy(d + 4, src + 4092, 4);
        memcpy(d + 8, src, 8);
        store_le64(d + 16, offsets[i]);
        store_le64(d + 24, s->log_sequence);
        store_le32(ds, LOG_DATA_SIGNATURE);
        store_le32(ds + 4, (uint32_t)(s->log_sequence >> 32));
        memcpy(ds + 8, src + 8, 4084);
        store_le32(ds + 4092, (uint32_t)s->log_sequence);
    }
    store_le32(buf + 4, crc32c_update(0, buf, length));
    return length;
}

int vhdx_log_write_sectors(struct img *img, struct vhdx_state *s, const uint64_t *offsets,
                           const uint8_t *data, uint32_t count)
{
    const struct vhdx_header *h = &s->hdr[s->cur];
    uint32_t length = (desc_sectors(count) + count) * VHDX_LOG_SECTOR;
    /* One sector of the circular log stays open, as QEMU keeps it. */
    if (length >= h->log_length)
        return img_error(
            -ENOSPC, "vhdx: '%s': a metadata update of %" PRIu32 " sectors does not fit in the log",
            img->filename, count);
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "vhdx: cannot read the size of '%s'", img->filename);
    /* A log the header places past the end of the file would have writes land there. */
    if (h->log_offset + length > (uint64_t)file_size)
        return img_error(-EINVAL,
                         "vhdx: '%s': the log at 0x%" PRIx64 " is past the end of the file",
                         img->filename, h->log_offset);
    uint8_t *buf = malloc(length);
    if (!buf)
        return img_error(-ENOMEM, "vhdx: out of memory");
    int ret = 0;
    if (!s->data_guid_updated) {
        ret = vhdx_update_headers(img, s, true, NULL);
        s->data_guid_updated = ret == 0;
    }
    /* The data the new metadata points at reaches the disk before the metadata does. */
    if (ret == 0)
        ret = sync_file(img);
    uint8_t guid[16];
    vhdx_guid_generate(guid);
    if (ret == 0)
        ret = vhdx_update_headers(img, s, false, guid);
    if (ret == 0) {
        build_entry(s, buf, offsets, data, count, (uint64_t)file_size);
        ret = io_pwrite(img->file, buf, length, s->hdr[s->cur].log_offset);
        if (ret < 0)
            img_error(ret, "vhdx: cannot write the log of '%s': %s", img->filename,
                      img_strerror(ret));
        else
            ret = sync_file(img);
    }
    /* The entry is durable: from here a kill is repaired by replaying it. */
    for (uint32_t i = 0; ret == 0 && i < count; i++) {
        ret = io_pwrite(img->file, data + (size_t)i * VHDX_LOG_SECTOR, VHDX_LOG_SECTOR, offsets[i]);
        if (ret < 0)
            img_error(ret, "vhdx: cannot write metadata of '%s': %s", img->filename,
                      img_strerror(ret));
    }
    if (ret == 0)
        ret = sync_file(img);
    if (ret == 0) {
        static const uint8_t zero_guid[16];
        s->log_sequence++;
        ret = vhdx_update_headers(img, s, false, zero_guid);
    }
    free(buf);
    return ret;
}
