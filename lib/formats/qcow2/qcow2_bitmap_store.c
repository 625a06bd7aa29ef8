/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bitmap tables and bits, and storing them (docs/interop/qcow2.txt "Bitmap table"; QEMU's
 * block/qcow2-bitmap.c store_bitmap() and update_ext_header_and_dir()).
 *
 * A table entry names one cluster of bits (bits 9..55), or none: then bit 0 says whether
 * the cluster reads as all ones. Bits are stored as QEMU serialises them: granule i is bit
 * i % 8 of byte i / 8. Stored clusters that are all zero get no cluster, as QEMU writes them.
 *
 * Crash safety of a store: the new tables, bits and directory go into newly allocated
 * clusters and are fsynced before the header names them; the old clusters are freed only
 * after the header switched. A crash leaves the old or the new bitmaps, and maybe leaks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_bitmap.h"
#include "formats/qcow2/qcow2_writer.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define BME_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_RESERVED_MASK 0xff000000000001feull
#define BME_ALL_ONES 1ull

void qcow2_bitmap_release(struct qcow2_bitmap *b)
{
    free(b->name);
    free(b->table);
    free(b->bits);
    b->name = NULL;
    b->table = NULL;
    b->bits = NULL;
}

int qcow2_bitmap_load_table(struct qcow2_state *s, struct qcow2_bitmap *b)
{
    if (b->table)
        return 0;
    /* table_size was bounded when the directory was read (at most 2^27 entries). */
    size_t bytes = (size_t)b->table_size * 8;
    uint8_t *raw = malloc(bytes);
    uint64_t *table = malloc(bytes);
    int ret = raw && table ? 0 : img_error(-ENOMEM, "out of memory");
    uint64_t end;
    if (ret == 0 && (add_overflows_u64(b->table_offset, bytes, &end) || end > s->file_size))
        ret = img_error(-EIO, "qcow2: the table of bitmap '%s' is beyond the end of the file",
                        b->name);
    if (ret == 0 && (ret = io_pread(s->file, raw, bytes, b->table_offset)) < 0)
        img_error(ret, "qcow2: cannot read the table of bitmap '%s': %s", b->name,
                  img_strerror(ret));
    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
        uint64_t e = load_be64(raw + (size_t)i * 8);
        uint64_t off = e & BME_OFFSET_MASK;
        if ((e & BME_RESERVED_MASK) || (off && (e & BME_ALL_ONES)) ||
            (off & (s->cluster_size - 1)) ||
            (off && (add_overflows_u64(off, s->cluster_size, &end) || end > s->file_size)))
            ret = img_error(-EIO, "qcow2: bitmap '%s' has an invalid table entry 0x%" PRIx64,
                            b->name, e);
        table[i] = e;
    }
    free(raw);
    if (ret < 0) {
        free(table);
        return ret;
    }
    b->table = table;
    return 0;
}

int qcow2_bitmap_load_bits(struct qcow2_state *s, struct qcow2_bitmap *b, uint64_t virtual_size)
{
    if (b->bits)
        return 0;
    int ret = qcow2_bitmap_load_table(s, b);
    if (ret < 0)
        return ret;
    uint64_t nb_bits = qcow2_bitmap_nb_bits(virtual_size, b->granularity_bits);
    uint64_t nb_bytes = qcow2_bitmap_nb_bytes(nb_bits);
    /* The directory check made sure the table covers the disk (bounded by 512 MiB). */
    if (nb_bytes > (uint64_t)b->table_size * s->cluster_size)
        return img_error(-EIO, "qcow2: the table of bitmap '%s' is too short", b->name);
    uint8_t *bits = calloc(1, nb_bytes ? nb_bytes : 1);
    uint8_t *cluster = malloc(s->cluster_size);
    if (!bits || !cluster) {
        free(bits);
        free(cluster);
        return img_error(-ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; ret == 0 && i * s->cluster_size < nb_bytes; i++) {
        uint64_t pos = i * s->cluster_size;
        size_t n = (size_t)min_u64(s->cluster_size, nb_bytes - pos);
        uint64_t off = b->table[i] & BME_OFFSET_MASK;
        if (!off) {
            memset(bits + pos, (b->table[i] & BME_ALL_ONES) ? 0xff : 0, n);
            continue;
        }
        ret = io_pread(s->file, cluster, s->cluster_size, off);
        if (ret < 0)
            img_error(ret, "qcow2: cannot read bitmap '%s': %s", b->name, img_strerror(ret));
        else
            memcpy(bits + pos, cluster, n);
    }
    free(cluster);
    if (ret < 0) {
        free(bits);
        return ret;
    }
    /* Bits past the disk's end mean nothing; keep them clear so they are stored as zeros. */
    for (uint64_t i = nb_bits; i < nb_bytes * 8; i++)
        bits[i / 8] &= (uint8_t) ~(1u << (i % 8));
    b->bits = bits;
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Clusters this session allocated for a store, given back when the store fails. */
struct new_clusters {
    uint64_t *offsets; /* cluster-sized runs */
    uint64_t *lengths;
    size_t count, cap;
};

static int remember(struct new_clusters *nc, uint64_t offset, uint64_t length)
{
    if (nc->count == nc->cap) {
        size_t cap = nc->cap ? nc->cap * 2 : 16;
        uint64_t *o = realloc(nc->offsets, cap * sizeof(*o));
        if (o)
            nc->offsets = o;
        uint64_t *l = o ? realloc(nc->lengths, cap * sizeof(*l)) : NULL;
        if (!l)
            return img_error(-ENOMEM, "out of memory");
        nc->lengths = l;
        nc->cap = cap;
    }
    nc->offsets[nc->count] = offset;
    nc->lengths[nc->count++] = length;
    return 0;
}

static int alloc_and_write(struct qcow2_state *s, struct new_clusters *nc, const uint8_t *data,
                           uint64_t length, uint64_t *offset)
{
    uint64_t clusters = align_up_u64(length, s->cluster_size) >> s->cluster_bits;
    int ret = qcow2_alloc_clusters(s, clusters, offset);
    if (ret < 0)
        return ret;
    ret = remember(nc, *offset, clusters << s->cluster_bits);
    if (ret < 0) {
        qcow2_refcount_update(s, *offset, clusters << s->cluster_bits, -1);
        return ret;
    }
    ret = io_pwrite(s->file, data, length, *offset);
    if (ret < 0)
        return img_error(ret, "qcow2: cannot write bitmap data: %s", img_strerror(ret));
    return 0;
}

/* Writes the bits of `b` and its table; the new table is returned in host order. */
static int write_bitmap(struct qcow2_state *s, struct new_clusters *nc,
                        const struct qcow2_bitmap *b, uint64_t virtual_size, uint64_t **table_out,
                        uint32_t *table_size, uint64_t *table_offset)
{
    uint64_t nb_bytes =
        qcow2_bitmap_nb_bytes(qcow2_bitmap_nb_bits(virtual_size, b->granularity_bits));
    uint64_t entries = align_up_u64(nb_bytes, s->cluster_size) >> s->cluster_bits;
    if (entries == 0)
        entries = 1;
    uint64_t *table = calloc(entries, sizeof(*table));
    uint64_t raw_bytes = align_up_u64(entries * 8, s->cluster_size);
    uint8_t *raw = calloc(1, raw_bytes);
    uint8_t *cluster = malloc(s->cluster_size);
    int ret = table && raw && cluster ? 0 : img_error(-ENOMEM, "out of memory");
    for (uint64_t i = 0; ret == 0 && i < entries; i++) {
        uint64_t pos = i * s->cluster_size;
        if (pos >= nb_bytes)
            break;
        size_t n = (size_t)min_u64(s->cluster_size, nb_bytes - pos);
        if (all_zero(b->bits + pos, n))
            continue;
        memset(cluster, 0, s->cluster_size);
        memcpy(cluster, b->bits + pos, n);
        ret = alloc_and_write(s, nc, cluster, s->cluster_size, &table[i]);
    }
    for (uint64_t i = 0; ret == 0 && i < entries; i++)
        store_be64(raw + i * 8, table[i]);
    if (ret == 0)
        ret = alloc_and_write(s, nc, raw, raw_bytes, table_offset);
    free(raw);
    free(cluster);
    if (ret < 0) {
        free(table);
        return ret;
    }
    *table_out = table;
    *table_size = (uint32_t)entries;
    return 0;
}

static uint64_t entry_bytes(const struct qcow2_bitmap *b)
{
    return align_up_u64(QCOW2_BITMAP_ENTRY_BYTES + strlen(b->name), 8);
}

/* The directory for the bitmaps of `s`, with the new tables where `tables` has them. */
static uint8_t *encode_directory(const struct qcow2_state *s, const uint64_t *offsets,
                                 const uint32_t *sizes, uint64_t *size_out)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        size += entry_bytes(&s->bitmaps[i]);
    uint8_t *dir = calloc(1, size ? size : 1);
    if (!dir)
        return NULL;
    uint8_t *e = dir;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        size_t name_len = strlen(b->name);
        store_be64(e, offsets[i]);
        store_be32(e + 8, sizes[i]);
        store_be32(e + 12, b->flags);
        e[16] = b->type;
        e[17] = b->granularity_bits;
        store_be16(e + 18, (uint16_t)name_len);
        store_be32(e + 20, 0);
        memcpy(e + QCOW2_BITMAP_ENTRY_BYTES, b->name, name_len);
        e += entry_bytes(b);
    }
    *size_out = size;
    return dir;
}

static int free_bitmap_clusters(struct qcow2_state *s, const struct qcow2_bitmap *b)
{
    int ret = 0;
    for (uint32_t i = 0; ret == 0 && b->table && i < b->table_size; i++) {
        uint64_t off = b->table[i] & BME_OFFSET_MASK;
        if (off)
            ret = qcow2_free_clusters(s, off, s->cluster_size);
    }
    if (ret == 0 && b->table_offset)
        ret = qcow2_free_clusters(s, b->table_offset,
                                  align_up_u64((uint64_t)b->table_size * 8, s->cluster_size));
    return ret;
}

/* Points the header at the new directory (or at none), fsynced. */
static int switch_header(struct img *img, uint64_t dir_offset, uint64_t dir_size)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_extensions old_ext = s->ext;
    uint64_t old_autoclear = s->hdr.autoclear_features;
    s->ext.has_bitmaps = s->nb_bitmaps > 0;
    s->ext.stale_bitmaps = false;
    s->ext.nb_bitmaps = s->nb_bitmaps;
    s->ext.bitmap_directory_offset = s->nb_bitmaps ? dir_offset : 0;
    s->ext.bitmap_directory_size = s->nb_bitmaps ? dir_size : 0;
    if (s->nb_bitmaps)
        s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    else
        s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    int ret = qcow2_write_header(img);
    if (ret < 0) {
        s->ext = old_ext;
        s->hdr.autoclear_features = old_autoclear;
    }
    return ret;
}

int qcow2_bitmaps_store(struct img *img, struct qcow2_bitmap *dropped, size_t nb_dropped)
{
    struct qcow2_state *s = img->priv;
    uint32_t n = s->nb_bitmaps;
    uint64_t *offsets = calloc(n ? n : 1, sizeof(*offsets));
    uint32_t *sizes = calloc(n ? n : 1, sizeof(*sizes));
    uint64_t **tables = calloc(n ? n : 1, sizeof(*tables));
    struct new_clusters nc = {0};
    uint8_t *dir = NULL;
    uint64_t dir_size = 0, dir_offset = 0;
    int ret = offsets && sizes && tables ? 0 : img_error(-ENOMEM, "out of memory");
    uint64_t old_dir_offset = s->ext.has_bitmaps ? s->ext.bitmap_directory_offset : 0;
    uint64_t old_dir_size = s->ext.has_bitmaps ? s->ext.bitmap_directory_size : 0;

    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        offsets[i] = b->table_offset;
        sizes[i] = b->table_size;
        if (b->bits)
            ret = write_bitmap(s, &nc, b, s->hdr.size, &tables[i], &sizes[i], &offsets[i]);
    }
    if (ret == 0 && n) {
        dir = encode_directory(s, offsets, sizes, &dir_size);
        if (!dir)
            ret = img_error(-ENOMEM, "out of memory");
        else if (dir_size > QCOW2_MAX_BITMAP_DIRECTORY_BYTES)
            ret = img_error(-ENOSPC, "qcow2: not enough space in the bitmap directory");
        else
            ret = alloc_and_write(s, &nc, dir, dir_size, &dir_offset);
    }
    /*
     * Everything the new directory names durable first, the refcounts of its clusters
     * included: a new refcount block or table they needed is linked only by this flush.
     */
    if (ret == 0 && (ret = qcow2_flush_caches(s, true)) < 0)
        img_error(ret, "qcow2: cannot flush the bitmaps: %s", img_strerror(ret));
    bool header_tried = false;
    if (ret == 0) {
        header_tried = true;
        ret = switch_header(img, dir_offset, dir_size);
    }
    if (ret < 0) {
        /*
         * Before the header was rewritten nothing names the new clusters: give them back at
         * once. A failed header write may still have reached the disk: then they stay
         * allocated (a leak at worst), never freed under a header that names them.
         */
        for (size_t k = 0; k < nc.count && !header_tried; k++)
            qcow2_refcount_update(s, nc.offsets[k], nc.lengths[k], -1);
        for (uint32_t i = 0; tables && i < n; i++)
            free(tables[i]);
        goto out;
    }

    /* The header names the new bitmaps: the old clusters may go. */
    int freed = 0;
    if (old_dir_offset)
        freed = qcow2_free_clusters(s, old_dir_offset, align_up_u64(old_dir_size, s->cluster_size));
    for (uint32_t i = 0; i < n; i++) {
        struct qcow2_bitmap *b = &s->bitmaps[i];
        if (!tables[i])
            continue;
        if (freed == 0)
            freed = free_bitmap_clusters(s, b);
        free(b->table);
        b->table = tables[i];
        b->table_offset = offsets[i];
        b->table_size = sizes[i];
    }
    for (size_t k = 0; freed == 0 && k < nb_dropped; k++)
        freed = free_bitmap_clusters(s, &dropped[k]);
    if (freed == 0)
        freed = qcow2_flush_caches(s, true);
    /* A failure to free only leaks clusters; the bitmaps themselves are stored. */
    (void)freed;
    s->file_size = max_u64(s->file_size, (uint64_t)s->writer->end_cluster << s->cluster_bits);
out:
    free(nc.offsets);
    free(nc.lengths);
    free(dir);
    free(offsets);
    free(sizes);
    free(tables);
    return ret;
}
