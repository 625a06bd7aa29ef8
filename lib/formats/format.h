/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_FORMAT_H
#define IMG_FORMAT_H

/*
 * The backend contract. A backend answers where the data is; the core moves the data. A
 * backend never reads or writes guest data itself (except copy-on-write through
 * img_backing_pread and compressed writes it must encode).
 *
 * Rules that hold for every entry unless the entry says otherwise:
 *  - Only the core calls an entry (the files of lib/ outside lib/formats/), never the CLI or
 *    another backend, and only on an image this backend opened: open() returned 0 and
 *    close() has not been called.
 *  - open(), close() and create() run alone: the core never calls another entry on the same
 *    image (or file) at the same time. Every other entry may be called from any thread,
 *    concurrently with any entry but those three, since a public handle may be used from
 *    several threads at once. The core holds no lock of its own while it calls one: an entry
 *    that reads or changes metadata others may change takes the backend's lock itself
 *    (img->lock or one of the backend's own) and says so where it matters.
 *  - Optional entries may be NULL; the core then answers -ENOTSUP (or omits the output). What
 *    the core and the CLI need to know beyond the entries is declared in `caps`, never found
 *    out by comparing a backend with a known one.
 *  - A failure returns a negative errno after img_error() has set a message naming the file
 *    and the problem. There are no short successes: an entry that returns 0 did all it was
 *    asked (map and alloc say how far they reach through ext->length instead).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "imgutil.h"
#include "opt_table.h"
#include "util/json.h"

/* What the core passes to create(): already-validated generic settings plus the options. */
struct img_create_args {
    const char *path;
    uint64_t size;
    const img_opts *opts; /* format options (cluster_size, compat, ...) */
    const char *backing_file;
    const char *backing_fmt;
    /*
     * The file to build the image in, already open read-write (`path` names it): the target
     * itself, write-locked by the core, or a fresh temporary beside it that nobody else
     * knows. create() writes through it and shortens it (a regular file) only through it,
     * never by opening `path` with O_TRUNC. Before opening `path` as an image it drops the
     * lock with io_file_unlock(): img_open() takes it again, and would refuse a second holder.
     */
    struct io_file *file;
    /*
     * The caller set "overwrite_named": files the new image names (a data file, extents) may
     * be emptied even if they hold data. Without it img_create_named_file() refuses them.
     */
    bool overwrite_named;
    /*
     * The name the image will have: `path`, or, when convert builds the image in a temporary
     * beside the target and renames it at the end, the target's (in the folder of the file
     * opened). Files named after the image (VMDK extents), which keep their names, take it.
     */
    const char *final_path;
};

/*
 * Opens a file the new image will name (`name` as the image will record it, resolved from
 * the image's folder; `what` words messages: "data file", "extent"), creating it when absent,
 * write-locked, and empty. An existing file that holds data is refused (-EEXIST) unless
 * args->overwrite_named, so that nothing of the user's is lost to a mistyped name; one that is
 * not a regular file (a device, a FIFO) is refused (-EINVAL). *created says whether this call
 * created the file: on a later failure the caller removes it again.
 */
int img_create_named_file(const struct img_create_args *args, const char *name, const char *what,
                          struct io_file **out, char **out_path, bool *created);

struct img_check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t image_end_offset;
    uint64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
    /*
     * Set by the core before check() (may be NULL): receives each finding as one line worded
     * as qemu-img prints it ("Leaked cluster 6 refcount=1 reference=0"). The backend keeps it.
     */
    void (*log)(void *user, const char *line);
    void *log_user;
};

struct img_alloc; /* a backend's record of an allocation in progress */

/* What measure() is asked about: the image would be made from `src`, or hold `size` bytes. */
struct img_measure_args {
    struct img *src;      /* the source image (its whole backing chain is read), or NULL */
    uint64_t size;        /* the source's virtual size, or the size asked for when src is NULL */
    const img_opts *opts; /* the target's creation options, checked against create_options */
};

/* What measure() answers, in bytes (qemu-img measure's "required", "fully-allocated"). */
struct img_measure_result {
    uint64_t required;
    uint64_t fully_allocated;
    bool has_bitmaps; /* "bitmaps" is reported: the source and the target both keep them */
    uint64_t bitmaps;
};

/*
 * For measure(): the bytes of `src`'s guest data (its backing chain included) that a copy
 * must store, counted in whole `unit`s, as QEMU counts them: every run that is allocated data
 * is extended to the end of its unit and counted from the start of its unit; runs that read
 * as zeros count nothing. `unit` is not 0. measure.c; a failure has a message.
 */
int measure_allocated_bytes(struct img *src, uint64_t unit, uint64_t *bytes);

/* One persistent dirty bitmap, as bitmap_list() reports it. */
struct img_bitmap_desc {
    char *name;
    uint64_t granularity;
    unsigned flags; /* IMG_BITMAP_ENABLED, IMG_BITMAP_IN_USE */
};
void img_bitmap_descs_free(struct img_bitmap_desc *descs, size_t count);

enum img_bitmap_op {
    IMG_BITMAP_OP_ADD,
    IMG_BITMAP_OP_REMOVE,
    IMG_BITMAP_OP_CLEAR,
    IMG_BITMAP_OP_ENABLE,
    IMG_BITMAP_OP_DISABLE,
    IMG_BITMAP_OP_MERGE,
};

/* What bitmap_change() is asked to do to bitmap `name`. */
struct img_bitmap_change {
    enum img_bitmap_op op;
    const char *name;
    uint64_t granularity; /* ADD: bytes per bit, 0 for the format's default */
    bool disabled;        /* ADD: the new bitmap does not track writes */
    /* MERGE: the source's bits (as bitmap_read() gives them), its size and granularity. */
    const uint8_t *src_bits;
    uint64_t src_size;
    unsigned src_granularity_bits;
};

/*
 * For measure() of formats that store guest data in whole units of `unit` bytes: how many
 * units a copy of args->src stores, counted as measure_allocated_bytes counts them; every unit
 * of args->size when `every_unit` (the target gets a backing file: what it shares with the
 * source is unknown); 0 for a size alone. measure.c; a failure has a message.
 */
int measure_data_units(const struct img_measure_args *args, uint64_t unit, bool every_unit,
                       uint64_t *units);

/*
 * Host file systems allocate whole blocks: "required" figures of the formats other than raw
 * and qcow2 are rounded up to them, so that they bound the bytes a file occupies (du).
 */
#define MEASURE_HOST_BLOCK 4096u
/* How many `unit`s hold `bytes`: the count of whole units measure() figures are made of. */
static inline uint64_t measure_units_of(uint64_t bytes, uint64_t unit)
{
    return bytes / unit + (bytes % unit != 0);
}
uint64_t measure_host_bytes(uint64_t bytes);

/*
 * What a backend declares about itself in `caps`. Other capabilities follow from the entries
 * it fills (format_caps() in registry.c adds them): FORMAT_CAN_READ from open() and map(),
 * FORMAT_CAN_CREATE from create(), FORMAT_CAN_WRITE from alloc(), FORMAT_COMPRESSED_WRITES
 * from compress_unit() and write_compressed_data(), FORMAT_SNAPSHOTS from snapshot_list(),
 * FORMAT_CAN_RESIZE from resize().
 */
enum format_cap {
    /* Bids lowest on anything: the format an unrecognised file is taken for. A file probed as
     * such is guarded against receiving another format's header (see write.c). */
    FORMAT_PROBE_FALLBACK = 1u << 0,
    /* A reader may let others write the file (QEMU's shared read lock): there is no metadata
     * a half-done write could make us misread. */
    FORMAT_SHARED_READ_LOCK = 1u << 1,
    /* The file holds metadata besides the guest data (a header, tables). */
    FORMAT_HAS_METADATA = 1u << 2,
    /* Images of this format may name a backing file. */
    FORMAT_BACKING = 1u << 3,
    /* qemu's driver answers no block status: every range maps as allocated data, without a
     * host offset (qemu-img map prints one "data" row), whatever map() says for reads. */
    FORMAT_NO_BLOCK_STATUS = 1u << 4,
    /* qemu's driver has no image info: `info` prints no "dirty-flag" (nor "cluster-size"). */
    FORMAT_NO_DRIVER_INFO = 1u << 5,
    /*
     * One thread may hold allocations of different clusters in progress at once (alloc()
     * twice before either alloc_commit()): convert then batches its allocating writes. Without
     * it, an alloc() may wait for any allocation in progress, so convert commits each one
     * before it asks for the next.
     */
    FORMAT_PARALLEL_ALLOCS = 1u << 6,

    /* Derived from the entries (never set in `caps` by hand). */
    FORMAT_CAN_READ = 1u << 7,
    FORMAT_CAN_CREATE = 1u << 8,
    FORMAT_CAN_WRITE = 1u << 9,
    FORMAT_COMPRESSED_WRITES = 1u << 10,
    FORMAT_SNAPSHOTS = 1u << 11,
    FORMAT_CAN_RESIZE = 1u << 12,
    FORMAT_BITMAPS = 1u << 13, /* from bitmap_change() */
};

struct img_format {
    const char *name;
    unsigned caps; /* enum format_cap: the declared bits (below 1 << 7) only */

    /*
     * The options create() takes, ending with OPT_TABLE_END (NULL: none). The core checks
     * every option against it before create() runs, so create() sees only known keys with
     * well-formed values; it still checks how they combine (e.g. "needs compat=1.1"). "-o help"
     * and img_format_options_json() are printed from it. The order is the order in which
     * `imgutil create` lists them on its "Formatting ..." line (qemu-img's).
     */
    const struct opt_desc *create_options;

    /*
     * For formats stored as a folder (a bundle): the descriptor inside it that the core opens
     * as the image when the caller names the folder. NULL: none.
     */
    const char *folder_file;

    /*
     * Bids on the first bytes of a file (buf holds min(file size, 2048) bytes; `filename` may
     * be NULL). Returns a score 0..100; the highest wins, 0 means "not mine". Pure: no I/O, no
     * state, any thread.
     */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    /*
     * Parses metadata from img->file and fills img->size, cluster_size, backing_name,
     * backing_format, dirty and priv. img->writable says whether writes will follow. Called
     * once, before any other entry on this image, with the file locked (not with
     * IMG_OPEN_FORCE_SHARE: then the file may change under it, and it must still fail
     * cleanly rather than misread). On failure
     * the backend has freed what it allocated and left img->priv NULL; close() is not called.
     */
    int (*open)(struct img *img, const img_opts *opts);
    /*
     * Frees img->priv. Called once, last, when img->priv is set (a backend without state is
     * never called), after flush() when the image was writable, with no other entry running
     * on the image. Cannot fail: anything still to write was written by flush().
     */
    void (*close)(struct img *img);

    /*
     * The longest run starting at `offset` (< img->size), at most `length` bytes, that is one
     * kind of extent; ext->length > 0 on success. Any thread, concurrently with everything but
     * open/close (a writer's metadata changes are made visible under the backend's lock). A
     * failure (-EIO for a corrupt table) changes nothing; the core fails the read.
     */
    int (*map)(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);

    /* Writes the members of "format-specific" ("type", "data"). NULL: omitted. Any thread. */
    int (*info_specific)(struct img *img, struct json_writer *w);

    /*
     * Internal snapshots (info's "snapshots"); NULL when the format has none. *out is the
     * caller's (img_snapshots_free). Any thread.
     */
    int (*snapshot_list)(struct img *img, struct img_snapshot **out, size_t *count);

    /* ---- writing: called only on images opened with img->writable ---- */

    /*
     * Creates a new image at args->path (no image is open). args->opts holds only options of
     * create_options, already checked one by one. On failure the file may exist, partly
     * written; the core's callers (convert) create into a temporary file for that reason.
     */
    int (*create)(const struct img_create_args *args);

    /*
     * Makes [offset, offset+length) writable and returns in *ext a DATA extent (possibly
     * shorter than length, never empty) saying where to write. Partial clusters are filled
     * from the backing image (copy-on-write) by the backend. When *token is set, the core
     * calls alloc_commit() after writing the data, exactly once, with the result of the
     * write, so metadata is linked only once the data is on disk. Any thread: allocations
     * of several threads are serialised by the backend's lock. On failure nothing is linked;
     * clusters taken may leak (check finds them), never be referenced twice.
     */
    int (*alloc)(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                 struct img_alloc **token);
    /*
     * Links the allocation if `write_result` is 0, or abandons it (the guest range keeps its
     * old content) if it is negative; frees `token` either way. Any thread.
     */
    int (*alloc_commit)(struct img *img, struct img_alloc *token, int write_result);

    /*
     * zero: the range reads as zeros afterwards (IMG_ZERO_* flags); discard: the range may
     * read as anything the format allows for discarded data (an advisory call: 0 when nothing
     * was done). Any thread. On failure part of the range may already be done.
     */
    int (*zero)(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
    int (*discard)(struct img *img, uint64_t offset, uint64_t length);
    /* Everything written so far (data and metadata) reaches stable storage. Any thread. */
    int (*flush)(struct img *img);
    /*
     * Changes the virtual size and sets img->size, under the backend's lock. On failure
     * img->size is unchanged and the image is consistent at the old size.
     */
    int (*resize)(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts);

    /*
     * `result` arrives zeroed but for its log sink. flags are IMG_CHECK_REPAIR_*. Without a
     * repair flag it changes nothing; repairs are made under the backend's lock, and only on
     * an image opened writable.
     */
    int (*check)(struct img *img, unsigned flags, struct img_check_result *result);

    /*
     * Internal snapshots, changed under the backend's lock. On failure the image stays
     * consistent (clusters taken may leak, as check reports).
     */
    int (*snapshot_create)(struct img *img, const char *name);
    int (*snapshot_apply)(struct img *img, const char *name_or_id);
    int (*snapshot_delete)(struct img *img, const char *name_or_id);

    /*
     * Compressed writes in two steps, so that a caller can compress many units in parallel
     * and still place them in the file in an order of its choosing (convert: guest order).
     *
     * compress_unit() compresses one unit (`len` bytes: a whole cluster, or the image's short
     * last one) with the image's codec and rules, into `out`, which holds at least a cluster
     * (`out_cap`). *out_len receives the stream's length, or 0 when compression does not pay
     * and the unit is to be stored as it is. It touches no image state: any thread, any time.
     *
     * write_compressed_data() allocates room for one unit at the unit-aligned guest `offset`
     * and writes it: the stream of `len` bytes from compress_unit(), or, when
     * `stored_uncompressed`, the unit's own `len` plain bytes. Any thread (serialised by the
     * backend's lock). On failure the unit is not linked: the guest range keeps its content.
     */
    int (*compress_unit)(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                         size_t *out_len);
    int (*write_compressed_data)(struct img *img, uint64_t offset, const void *data, size_t len,
                                 bool stored_uncompressed);

    /*
     * Optional, for formats with FORMAT_COMPRESSED_WRITES: whether an image created with the
     * creation options `opts` (not yet checked) will take compressed writes; when not, a
     * negative errno and a message saying why. Any thread; touches no file, so that convert
     * can refuse before it creates or empties anything. NULL: always.
     */
    int (*compress_allowed)(const img_opts *opts);

    /*
     * Optional: the IMG_FLAG_* bits only the backend knows (IMG_FLAG_CORRUPT, _ENCRYPTED,
     * _DATA_FILE, _BITMAPS); the core adds DIRTY, SNAPSHOTS and BACKING. Any thread.
     */
    unsigned (*status_flags)(struct img *img);
    /*
     * Optional, for images stored in several files: info's "actual-size", given `file_bytes`,
     * the bytes allocated to img->file. NULL: file_bytes. Any thread.
     */
    int64_t (*allocated_size)(struct img *img, int64_t file_bytes);
    /*
     * Optional: how large an image of this format would be (qemu-img measure). `args` says
     * what would go into it: a source image, or only a virtual size. Fills *out and returns 0,
     * or a negative errno with qemu-img's message for options that do not combine. Any
     * thread; touches no file but by reading `args->src` through the public calls
     * (img_block_status), so the core calls it holding no lock of `args->src`. NULL: the format
     * cannot measure (the core refuses with qemu-img's "does not support size measurement").
     */
    int (*measure)(const struct img_measure_args *args, struct img_measure_result *out);

    /*
     * Optional: rewrites the image's reference to its backing file, header only (rebase -u,
     * amend backing_file, the last step of a safe rebase). `backing_file` NULL or "" detaches
     * the image; `backing_fmt` NULL records no format. Called on an image opened writable,
     * with the handle drained (no other I/O); the update is atomic on disk (one sector, or
     * written beside and switched), and img->backing_name/backing_format are the caller's to
     * refresh. A negative errno with a message, such as -ENOSPC when the name does not fit
     * where the format keeps it. NULL: the format has no backing files.
     */
    int (*change_backing)(struct img *img, const char *backing_file, const char *backing_fmt);
    /*
     * Optional: makes every guest range read through to the backing file (commit's emptying
     * of the top image), freeing what the image held. Handle drained, image writable; on a
     * failure part way, ranges not yet emptied keep their data. NULL: the image is left as it
     * is (qemu-img leaves such images unchanged too).
     */
    int (*make_empty)(struct img *img);
    /*
     * Optional: changes creation options of an existing image in place (qemu-img amend).
     * `opts` holds only the options the user named, already checked against the format's
     * option table. Handle drained, image writable; progress through lib/progress.h. Each
     * change is ordered so that a crash leaves either the old or the new image. Options that
     * cannot change are refused with qemu-img's message, in qemu-img's order: values the
     * option table rejects before anything is written, but some refusals (qcow2's
     * backing_file) only after the changes QEMU makes before them, as `qemu-img amend` does
     * (each of those changes complete and consistent on its own). NULL:
     * the core refuses with "Format driver 'FMT' does not support option amendment".
     */
    int (*amend)(struct img *img, const img_opts *opts);
    /*
     * With `amend`: the options it takes (qemu-img's amend_opts), from which the core checks
     * an amend request and answers "-o help". An option of the creation table missing here
     * is refused with "This option is only supported for image creation".
     */
    const struct opt_desc *amend_options;

    /*
     * Optional, persistent dirty bitmaps (qemu-img bitmap); NULL: the format keeps none (the
     * core answers with qemu-img's messages). Called by lib/bitmap.c only.
     *
     * bitmap_list(): every bitmap, in the image's order (*out is the caller's, freed with
     * img_bitmap_descs_free()). Any thread; takes the backend's lock.
     *
     * bitmap_read(): a copy of the bits of bitmap `name` (granule i is bit i % 8 of byte i / 8;
     * *bits the caller's to free()), the virtual size it covers and its granularity (log2).
     * -ENOENT "Dirty bitmap 'NAME' not found"; -EBUSY for a bitmap marked in use ("...is
     * inconsistent and cannot be used"). Any thread; takes the backend's lock.
     *
     * bitmap_change(): one operation, stored crash-safely before it returns. Image writable,
     * handle drained (no other I/O); takes the backend's lock. qemu-img's messages for names
     * that exist or not, granularity, sizes and bitmaps in use.
     */
    int (*bitmap_list)(struct img *img, struct img_bitmap_desc **out, size_t *count);
    int (*bitmap_read)(struct img *img, const char *name, uint8_t **bits, uint64_t *size,
                       unsigned *granularity_bits);
    int (*bitmap_change)(struct img *img, const struct img_bitmap_change *change);
};

/* The registry (formats/registry.c): every backend, in probe-tie-break order. */
const struct img_format *format_find(const char *name);
const struct img_format *format_probe(const uint8_t *buf, size_t len, const char *filename);
/* The backends in registry order: index 0 .. format_count() - 1; NULL past the end. */
size_t format_count(void);
const struct img_format *format_at(size_t index);
/* fmt->caps plus the capabilities that follow from its entries (enum format_cap). */
unsigned format_caps(const struct img_format *fmt);
static inline bool format_has(const struct img_format *fmt, unsigned cap)
{
    return (format_caps(fmt) & cap) == cap;
}
/*
 * Checks create options against the format's table (opt_table_check): -EINVAL with
 * qemu-img's message for an unknown key or a bad value.
 */
int format_check_create_options(const struct img_format *fmt, const img_opts *opts);
/*
 * Formats QEMU knows that this library does not read yet: probed so that such images are
 * refused with "format not supported yet" instead of being misread as raw. Returns the name
 * or NULL.
 */
const char *format_probe_unsupported(const uint8_t *buf, size_t len, const char *filename);

extern const struct img_format format_raw;
extern const struct img_format format_qcow2;
extern const struct img_format format_vpc;
extern const struct img_format format_asif;
extern const struct img_format format_bochs;
extern const struct img_format format_cloop;
extern const struct img_format format_dmg;
extern const struct img_format format_parallels;
extern const struct img_format format_vdi;
extern const struct img_format format_qed;
extern const struct img_format format_vmdk;
extern const struct img_format format_vhdx;

#endif
