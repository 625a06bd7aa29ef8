/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_H
#define IMG_QCOW2_H

/*
 * The qcow2 backend's private state and the helpers its files share.
 *
 * Layout of the backend:
 *   qcow2_header.c      fixed header fields: decoding and the checks QEMU applies at open
 *   qcow2_extensions.c  header extensions (backing format, feature names, bitmaps, data file)
 *   qcow2_geometry.c    sizes derived from cluster_bits/refcount_order/extended L2
 *   qcow2_entry.c       decoding single L1/L2 entries (types, subclusters, compressed)
 *   qcow2_cache.c       bounded, thread-safe LRU cache of metadata slices
 *   qcow2_l2.c          guest cluster -> L2 entry lookup through the L1 table and the cache
 *   qcow2_map.c         map(): guest ranges -> extents
 *   qcow2_refcount.c    refcount table and refcount block reading
 *   qcow2_snapshot.c    the snapshot table
 *   qcow2_bitmaps.c     the persistent bitmap directory (listed by info, kept for rewriting)
 *   qcow2_bitmap_*.c    bitmap contents, changes and write tracking (see qcow2_bitmap.h)
 *   qcow2_info.c        "format-specific" for info
 *   qcow2_open.c        probe, open, close and the vtable
 *
 * Concurrency: everything reached from map() is safe to call from several threads at once. The
 * state below is written only by open (and later by writers holding `lock`); the caches lock
 * themselves. Lazily loaded parts (the refcount table) are loaded under `lock`.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "opt_table.h"

struct img;
struct img_extent;
struct io_file;
struct qcow2_cache;
struct qcow2_cache_entry;

/* ---- on-disk constants -------------------------------------------------------------------- */

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_V2_HEADER_LENGTH 72u
#define QCOW2_V3_MIN_HEADER_LENGTH 104u
/* Offset of compression_type; present only when header_length is larger. */
#define QCOW2_COMPRESSION_TYPE_OFFSET 104u
/* Bytes of fixed header this implementation knows (104 + compression_type + padding). */
#define QCOW2_KNOWN_HEADER_LENGTH 112u

#define QCOW2_MIN_CLUSTER_BITS 9u
#define QCOW2_MAX_CLUSTER_BITS 21u

/* QEMU's limits, applied to untrusted images before anything is allocated. */
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS 65536u
#define QCOW2_MAX_SNAPSHOT_TABLE_BYTES (64u << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA_DATA 1024u
#define QCOW2_MAX_BACKING_NAME 1023u
#define QCOW2_MAX_BACKING_FORMAT 15u
#define QCOW2_MAX_BITMAPS 65535u
#define QCOW2_MAX_BITMAP_DIRECTORY_BYTES (1024u * QCOW2_MAX_BITMAPS)
#define QCOW2_MAX_BITMAP_NAME 1023u

/* Feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

#define QCOW2_COMPRESSION_ZLIB 0u
#define QCOW2_COMPRESSION_ZSTD 1u

/* Table entries. */
#define QCOW2_OFLAG_COPIED (1ull << 63)     /* refcount is exactly one */
#define QCOW2_OFLAG_COMPRESSED (1ull << 62) /* L2: compressed cluster descriptor */
#define QCOW2_OFLAG_ZERO (1ull << 0)        /* L2 (v3, no extended L2): reads as zeros */
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define QCOW2_SUBCLUSTERS 32u /* per cluster with extended L2 entries */
#define QCOW2_COMPRESSED_SECTOR 512u

/* Header extension types. */
#define QCOW2_EXT_END 0u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

#define QCOW2_FEATURE_NAME_ENTRY 48u /* type, bit, name[46] */
#define QCOW2_SNAPSHOT_HEADER_BYTES 40u
#define QCOW2_BITMAP_ENTRY_BYTES 24u

/* ---- the header --------------------------------------------------------------------------- */

/* The fixed header fields, in host byte order. v2 images get the v3 defaults. */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

/*
 * Decodes the fixed header from the first `len` bytes of the file and applies the checks that
 * need nothing else: magic, version, cluster_bits range, header_length, backing name offset.
 * `len` must cover header_length (callers pass the whole first cluster).
 */
int qcow2_header_decode(const uint8_t *buf, size_t len, struct qcow2_header *h);

/*
 * Smallest number of bytes that qcow2_header_decode() needs to learn cluster_bits and
 * header_length; read this much, then the first cluster.
 */
#define QCOW2_HEADER_PROBE_BYTES QCOW2_KNOWN_HEADER_LENGTH

struct qcow2_extensions;

/*
 * Checks the feature bits and the fields that select algorithms: unknown incompatible
 * features (named from the feature table), the corrupt bit for writable opens, encryption,
 * compression type, refcount width, subcluster size, data file bits.
 */
int qcow2_header_check_features(const struct qcow2_header *h, const struct qcow2_extensions *ext,
                                bool writable);

/*
 * Checks table locations and sizes against QEMU's limits and the file size: refcount table,
 * snapshot table, L1 table (and that it covers the virtual size), backing file name.
 */
int qcow2_header_check_tables(const struct qcow2_header *h, uint64_t file_size);

/* ---- header extensions -------------------------------------------------------------------- */

struct qcow2_feature_name {
    uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[47]; /* NUL-terminated (46 bytes on disk) */
};

/* An extension this implementation does not interpret, kept so a rewrite can preserve it. */
struct qcow2_unknown_extension {
    uint32_t magic;
    uint32_t len;
    uint8_t *data;
};

struct qcow2_extensions {
    char *backing_format; /* NULL when absent */
    char *data_file;      /* external data file name, NULL when absent */

    struct qcow2_feature_name *features;
    size_t nb_features;

    /* Bitmaps extension, only when the autoclear bit says it is consistent. */
    bool has_bitmaps;
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    /* The extension was present but stale (autoclear bit clear): a rewrite drops it. */
    bool stale_bitmaps;

    bool has_crypto_header;
    uint64_t crypto_header_offset;
    uint64_t crypto_header_length;

    struct qcow2_unknown_extension *unknown;
    size_t nb_unknown;

    /* Offset just past the end marker (or the end of the area when there is none). */
    uint64_t end_offset;
};

/*
 * Parses the extensions in buf[start, end) (buf is the first cluster; end is the backing file
 * name offset, or the cluster size). Never reads outside `buf`.
 */
int qcow2_extensions_parse(const uint8_t *buf, size_t start, size_t end,
                           const struct qcow2_header *h, struct qcow2_extensions *ext);
void qcow2_extensions_free(struct qcow2_extensions *ext);

/* The name the feature table gives to bit `bit` of feature type `type`, or NULL. */
const char *qcow2_feature_name(const struct qcow2_extensions *ext, uint8_t type, unsigned bit);

/* ---- snapshots and bitmaps ---------------------------------------------------------------- */

struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size; /* the 64-bit extra-data field when present, else the 32-bit one */
    uint64_t disk_size;     /* from extra data, else the image's virtual size */
    bool has_icount;
    uint64_t icount;
    uint32_t extra_data_size; /* as stored */
    uint8_t *unknown_extra;   /* extra data past the fields known here, kept for rewriting */
    uint32_t unknown_extra_size;
};

struct qcow2_bitmap {
    char *name;
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags; /* QCOW2_BITMAP_IN_USE, ... */
    uint8_t type;
    uint8_t granularity_bits;
    /* Loaded on demand (qcow2_bitmap_store.c); NULL until then. Host order. */
    uint64_t *table;
    /* The bits (bit i = granule i, byte i / 8, bit i % 8), NULL while not loaded. */
    uint8_t *bits;
    /* QCOW2_BITMAP_IN_USE was set by this session to track writes; cleared at close. */
    bool tracking;
};

#define QCOW2_BITMAP_IN_USE (1u << 0)
#define QCOW2_BITMAP_AUTO (1u << 1)
#define QCOW2_BITMAP_EXTRA_DATA_COMPATIBLE (1u << 2)

/* ---- the state ---------------------------------------------------------------------------- */

struct qcow2_state {
    struct qcow2_header hdr;
    struct qcow2_extensions ext;
    /* Header bytes between the known fields and header_length, kept for rewriting. */
    uint8_t *unknown_header_fields;
    size_t unknown_header_fields_len;

    /* Geometry (qcow2_geometry_init). */
    uint32_t cluster_bits;
    uint32_t cluster_size;
    bool extended_l2;
    uint32_t l2_entry_bytes; /* 8, or 16 with extended L2 entries */
    uint32_t l2_bits;        /* log2 of entries per L2 table */
    uint32_t l2_entries;
    uint32_t subcluster_bits;
    uint32_t subcluster_size;
    uint32_t csize_shift; /* compressed descriptor: sector count field position */
    uint32_t csize_mask;
    uint64_t compressed_offset_mask;
    uint32_t refcount_order;
    uint32_t refcount_bits;
    uint32_t refcount_block_bits; /* log2 of entries per refcount block */
    uint64_t refcount_max;

    enum img_codec codec; /* for compressed clusters */

    /* Active L1 table, host byte order. */
    uint64_t *l1_table;
    uint32_t l1_size;

    /* Refcount table, host byte order, loaded on first use (qcow2_refcount_load_table). */
    uint64_t *refcount_table;
    uint64_t refcount_table_entries;
    bool refcount_table_loaded;

    struct qcow2_cache *l2_cache;       /* slices of L2 tables */
    struct qcow2_cache *refcount_cache; /* slices of refcount blocks */

    struct qcow2_snapshot *snapshots;
    uint32_t nb_snapshots;
    uint64_t snapshot_table_bytes;

    struct qcow2_bitmap *bitmaps;
    uint32_t nb_bitmaps;

    struct io_file *file;      /* metadata (and data without an external data file) */
    struct io_file *data_file; /* external data file, owned; NULL when none */
    bool data_file_raw;
    uint64_t file_size; /* of `file` at open */

    pthread_mutex_t lock;

    /*
     * Sequence count of extended L2 entry updates: odd while qcow2_l2_set() is between the
     * two words of an entry, so lockless readers (qcow2_l2_lookup) can retry instead of
     * pairing an old entry with a new subcluster bitmap.
     */
    uint64_t l2_update_seq;

    /*
     * Whether the image looks metadata-preallocated, as QEMU judges it: 0 while not yet known,
     * then set once by the first map() that returns DATA (which takes `lock` for it, so map()
     * must not be called with `lock` held). See qcow2_map.c.
     */
    int metadata_preallocation; /* __atomic loads and stores */

    /* Write-side state (qcow2_writer.c); NULL for read-only opens. */
    struct qcow2_writer *writer;
};

/* Derives the geometry fields from cluster_bits, extended L2 and refcount_order. */
void qcow2_geometry_init(struct qcow2_state *s, uint32_t cluster_bits, bool extended_l2,
                         uint32_t refcount_order);

/* L1 entries needed to map `size` guest bytes (may exceed UINT32_MAX for absurd sizes). */
uint64_t qcow2_l1_entries_for_size(uint32_t cluster_bits, uint32_t l2_bits, uint64_t size);

/* ---- L2 entries --------------------------------------------------------------------------- */

/* What a (sub)cluster is, from its L2 entry (QEMU's QCow2SubclusterType). */
enum qcow2_subcluster_type {
    QCOW2_SC_NORMAL,            /* data at the host offset */
    QCOW2_SC_COMPRESSED,        /* a compressed cluster */
    QCOW2_SC_ZERO_PLAIN,        /* reads as zeros, no host space */
    QCOW2_SC_ZERO_ALLOC,        /* reads as zeros, host space preallocated */
    QCOW2_SC_UNALLOCATED_PLAIN, /* not in this layer */
    QCOW2_SC_UNALLOCATED_ALLOC, /* not in this layer, host space reserved (extended L2) */
    QCOW2_SC_INVALID,           /* contradictory bits: the image is corrupt */
};

/* Host cluster offset of a standard descriptor (0 when unallocated). */
static inline uint64_t qcow2_l2_entry_offset(uint64_t entry)
{
    return entry & QCOW2_L2E_OFFSET_MASK;
}

/*
 * The type of subcluster `sc` (0 without extended L2 entries) described by `entry` and, with
 * extended L2 entries, `bitmap`. `has_data_file`: a zero offset with the COPIED bit means host
 * offset 0 in the external data file.
 */
enum qcow2_subcluster_type qcow2_subcluster_type(const struct qcow2_state *s, uint64_t entry,
                                                 uint64_t bitmap, unsigned sc, bool has_data_file);

/*
 * How many subclusters starting at `sc` share the type of `sc` (1..32; 1 without extended L2,
 * where the unit is the whole cluster).
 */
unsigned qcow2_subcluster_run(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                              unsigned sc, bool has_data_file);

/*
 * Decodes a compressed cluster descriptor: the host offset of the stream and how many bytes to
 * read (whole sectors from the one holding the offset, minus the offset into that sector).
 */
void qcow2_compressed_decode(const struct qcow2_state *s, uint64_t entry, uint64_t *host_offset,
                             uint64_t *length);

/* ---- L1/L2 lookup ------------------------------------------------------------------------- */

/*
 * Holds at most one pinned L2 slice between lookups, so walking consecutive clusters costs one
 * cache lookup per slice. Start zeroed; release when done.
 */
struct qcow2_l2_cursor {
    struct qcow2_cache_entry *slice;
    uint64_t slice_offset; /* host offset of the pinned slice */
    const uint8_t *data;
};

/*
 * Finds the L2 entry of guest cluster `guest_cluster`. On success *entry (and *bitmap, 0
 * without extended L2 entries) hold it; when the L1 entry is empty, *no_l2 is true and the
 * whole L2 span reads as unallocated. Fails with -EIO on misaligned L2 table offsets.
 */
int qcow2_l2_lookup(struct qcow2_state *s, struct qcow2_l2_cursor *cur, uint64_t guest_cluster,
                    uint64_t *entry, uint64_t *bitmap, bool *no_l2);
void qcow2_l2_cursor_release(struct qcow2_state *s, struct qcow2_l2_cursor *cur);

/* Slice size of the L2 cache for this geometry. */
uint32_t qcow2_l2_slice_bytes(const struct qcow2_state *s);

/* The backend's map(). */
int qcow2_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);

/* ---- metadata cache ----------------------------------------------------------------------- */

/*
 * A bounded LRU cache of fixed-size slices of `file`, keyed by host offset. Entries are pinned
 * while used; eviction only takes unpinned ones (if all are pinned the cache briefly exceeds its
 * bound by the number of concurrent users). Thread-safe.
 */
int qcow2_cache_new(struct qcow2_cache **out, struct io_file *file, uint32_t slice_bytes,
                    uint64_t max_bytes);
void qcow2_cache_free(struct qcow2_cache *c);
/* Returns the pinned slice at host offset `offset` (a multiple of slice_bytes). */
int qcow2_cache_get(struct qcow2_cache *c, uint64_t offset, struct qcow2_cache_entry **entry,
                    const uint8_t **data);
void qcow2_cache_put(struct qcow2_cache *c, struct qcow2_cache_entry *entry);
/* Drops unpinned slices overlapping [offset, offset + len) (after metadata was rewritten). */
void qcow2_cache_invalidate(struct qcow2_cache *c, uint64_t offset, uint64_t len);
uint32_t qcow2_cache_slice_bytes(const struct qcow2_cache *c);
/* Slices currently held (for tests and statistics). */
size_t qcow2_cache_count(struct qcow2_cache *c);

/* ---- refcounts ---------------------------------------------------------------------------- */

/* Entry `index` of a refcount block with entries of 2^order bits (bit 0 = least significant). */
uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint64_t index, uint32_t order);
void qcow2_refcount_entry_set(uint8_t *block, uint64_t index, uint32_t order, uint64_t value);

/* Loads the refcount table if it is not loaded yet (takes s->lock). */
int qcow2_refcount_load_table(struct qcow2_state *s);

/* The refcount of host cluster `cluster_index` (0 beyond the table or in absent blocks). */
int qcow2_refcount_get(struct qcow2_state *s, uint64_t cluster_index, uint64_t *value);

/* ---- snapshots, bitmaps, info ------------------------------------------------------------- */

/* Reads the snapshot table named by the header into s->snapshots. */
int qcow2_snapshots_read(struct qcow2_state *s, uint64_t virtual_size);
/*
 * Open option "snapshot.id"/"snapshot.name"/"snapshot": replaces the active L1 table with the
 * snapshot's, for a read-only view (qcow2_snapshot_view.c). Nothing when none is given.
 */
int qcow2_snapshot_view_load(struct img *img, struct qcow2_state *s, const img_opts *opts);
void qcow2_snapshots_free(struct qcow2_state *s);

struct img_snapshot;
int qcow2_snapshot_list(struct img *img, struct img_snapshot **out, size_t *count);

/* Reads and checks the bitmap directory named by the bitmaps extension. */
int qcow2_bitmaps_read(struct qcow2_state *s, uint64_t virtual_size);
void qcow2_bitmaps_free(struct qcow2_state *s);

struct json_writer;
int qcow2_info_specific(struct img *img, struct json_writer *w);

/* ---- writing ------------------------------------------------------------------------------
 *
 *   qcow2_writer.c          write-side state: open/close (dirty bit), in-flight tracking, locks
 *   qcow2_refcount_write.c  refcount updates, refcount blocks, refcount table growth
 *   qcow2_alloc.c           finding free host clusters and compressed byte ranges
 *   qcow2_meta_write.c      L1/L2 updates held in memory and written back in crash-safe order
 *   qcow2_header_write.c    encoding and rewriting the header cluster
 *   qcow2_write.c           alloc()/alloc_commit(): allocation, copy-on-write, COPIED handling
 *   qcow2_zero.c            zero() and discard()
 *   qcow2_compressed_write.c write_compressed()
 *   qcow2_resize.c          resize(): L1 growth, shrinking, preallocation
 *   qcow2_create.c          create()
 *   qcow2_flush.c           flush()
 *
 * Locking: every metadata change happens with s->lock held. The backend's write entries take
 * it themselves; other code that changes metadata (check repairs, snapshots) takes it around
 * its work and calls the functions below with it held. qcow2_refcount_get() and
 * qcow2_refcount_load_table() take s->lock themselves: with it held, use
 * qcow2_refcount_get_locked(). (The refcount table is loaded when a writable image is opened.)
 * resize(), the snapshot calls and check() with repairs are entered with the handle's data path
 * drained (img->drain held exclusively, see image.h): no map(), alloc(), zero() or flush() of
 * the same handle runs meanwhile. Tables that lock-free readers use are still replaced through
 * qcow2_retire_reserve()/qcow2_retire_commit(), since the refcount table also grows under
 * ordinary writes.
 *
 * Crash safety (a crash may leak clusters, never corrupt data):
 *  - new clusters get their refcounts on disk before any L2/L1 entry points to them;
 *  - guest data reaches the disk before the L2 entry that links it;
 *  - L2 entries set through qcow2_l2_set() and L1 entries marked with qcow2_l1_mark_dirty()
 *    are held in memory (the L2 slices stay pinned in the cache, so map() sees them at once)
 *    and written by qcow2_flush_caches(), which first fsyncs data and refcounts;
 *  - refcount decreases given to qcow2_free_clusters() are applied only after the metadata
 *    that dropped those references is on disk.
 * Code that rewrites L1/L2 tables or refcount blocks directly in the file must first call
 * qcow2_flush_caches() and afterwards qcow2_cache_invalidate() the rewritten range.
 */

/* Sets up the write side for a writable open (called last by open; repairs a dirty image). */
int qcow2_writer_open(struct img *img);
/* Writes back everything held, clears the dirty bit this session set, frees. NULL-safe. */
void qcow2_writer_close(struct qcow2_state *s);

/* The refcount of host cluster `cluster_index`, with s->lock held (0 past the table). */
int qcow2_refcount_get_locked(struct qcow2_state *s, uint64_t cluster_index, uint64_t *value);

/*
 * Adds `delta` to the refcount of every host cluster that [host_offset, host_offset + length)
 * touches, writing the blocks at once. Increases allocate refcount blocks (and grow the
 * refcount table) where needed. Fails with -EIO, changing nothing, when a refcount would
 * overflow or drop below zero. A decrease takes effect immediately: for clusters that on-disk
 * metadata may still reference, use qcow2_free_clusters() instead.
 */
int qcow2_refcount_update(struct qcow2_state *s, uint64_t host_offset, uint64_t length,
                          int64_t delta);

/* Sets the refcount of one host cluster (repairs), allocating its block when needed. */
int qcow2_refcount_set(struct qcow2_state *s, uint64_t cluster_index, uint64_t value);

/*
 * Allocates `count` contiguous free host clusters (refcount 0, reused or past the end of the
 * file), sets their refcounts to 1 on disk and returns the offset of the first.
 */
int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t count, uint64_t *host_offset);

/*
 * Drops one reference from every host cluster that [host_offset, host_offset + length)
 * touches, once the metadata that referenced them is on disk (at the next
 * qcow2_flush_caches()). Clusters left unreferenced are discarded on the host.
 */
int qcow2_free_clusters(struct qcow2_state *s, uint64_t host_offset, uint64_t length);

/*
 * Writes everything held in memory in crash-safe order: fsync (data, refcounts, new tables),
 * new refcount table entries, dirty L2 slices and L1 entries, fsync, deferred refcount
 * decreases. With `sync` the file (and an external data file) is fsynced at the end, so all
 * of it is durable.
 */
int qcow2_flush_caches(struct qcow2_state *s, bool sync);

/*
 * Sets the L2 entry (and the subcluster bitmap with extended L2 entries) of guest cluster
 * `guest_cluster` in the active L2 table, which must exist and be unshared (L1 entry COPIED;
 * see qcow2_l2_prepare()). Held in memory until qcow2_flush_caches().
 */
int qcow2_l2_set(struct qcow2_state *s, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap);

/*
 * Makes the active L2 table for guest cluster `guest_cluster` present and unshared: allocates
 * a zeroed table for an empty L1 entry, copies a table shared with a snapshot. Fails with
 * -EIO past the L1 table.
 */
int qcow2_l2_prepare(struct qcow2_state *s, uint64_t guest_cluster);

/*
 * The one L1 table encoder: entries [first, first + count) of `l1` (host order) as big-endian
 * words into `out` (count * 8 bytes), with the bits in `clear` removed (a snapshot's copy
 * drops QCOW2_OFLAG_COPIED). With s->lock held when `l1` is the active table.
 */
void qcow2_l1_encode(const uint64_t *l1, uint64_t first, uint64_t count, uint64_t clear,
                     uint8_t *out);

/* Marks active L1 entries [first, first + count) of s->l1_table to be written back. */
void qcow2_l1_mark_dirty(struct qcow2_state *s, uint32_t first, uint32_t count);

/*
 * Encodes a header cluster (`cluster_size` bytes into `buf`): the fixed fields of `h`, the
 * extensions of `ext` (backing format, data file, feature names, bitmaps, unknown ones kept),
 * the end marker and the backing file name. Sets h->header_length, backing_file_offset and
 * backing_file_size. -EFBIG when it does not fit in one cluster.
 */
int qcow2_header_encode(struct qcow2_header *h, const struct qcow2_extensions *ext,
                        const char *backing_name, const uint8_t *unknown_fields, size_t unknown_len,
                        uint8_t *buf, size_t cluster_size);

/* Rewrites the header cluster from s->hdr, s->ext and img->backing_name, then fsyncs. */
int qcow2_write_header(struct img *img);

/* change_backing() (qcow2_backing.c): the header cluster rewritten with the new name. */
int qcow2_change_backing(struct img *img, const char *backing_file, const char *backing_fmt);

/*
 * Rewrites the incompatible feature bits in the header (one field, fsynced) and s->hdr:
 * for the dirty and corrupt bits.
 */
int qcow2_write_incompat(struct qcow2_state *s, uint64_t incompatible_features);

/* The backend's write entries. */
struct img_create_args;
struct img_alloc;
struct img_opts;
int qcow2_create(const struct img_create_args *args);
struct img_measure_args;
struct img_measure_result;
int qcow2_measure(const struct img_measure_args *args, struct img_measure_result *out); /* measure() */
/* amend() and the options it takes (qcow2_amend.c). */
int qcow2_amend(struct img *img, const img_opts *opts);
extern const struct opt_desc qcow2_amend_options[];
/* The options create() takes (qcow2_create.c). */
extern const struct opt_desc qcow2_create_options[];
int qcow2_alloc(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                struct img_alloc **token);
int qcow2_alloc_commit(struct img *img, struct img_alloc *token, int write_result);
int qcow2_zero(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
int qcow2_discard(struct img *img, uint64_t offset, uint64_t length);
int qcow2_make_empty(struct img *img); /* make_empty(): qcow2_empty.c */
int qcow2_flush(struct img *img);
int qcow2_resize(struct img *img, uint64_t new_size, unsigned flags, const struct img_opts *opts);
int qcow2_compress_unit(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                        size_t *out_len);
/* Whether images made with these creation options take compressed writes (no data file). */
int qcow2_compress_allowed(const img_opts *opts);

/* The IMG_FLAG_* bits the header and extensions give (corrupt, encrypted, data file, bitmaps). */
unsigned qcow2_status_flags(struct img *img);
int qcow2_write_compressed_data(struct img *img, uint64_t offset, const void *data, size_t len,
                                bool stored_uncompressed);

#endif
