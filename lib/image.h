/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_IMAGE_H
#define IMG_IMAGE_H

/* The generic core's view of an open image, shared with the format backends. */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "imgutil.h"

struct img_aio;
struct img_format;
struct io_file;

#define IMG_HANDLE_MAGIC 0x494d4731u /* "IMG1": checked at every public entry point */

struct img {
    uint32_t magic;
    const struct img_format *fmt;
    void *priv; /* the backend's state */

    struct io_file *file; /* the image file itself */
    char *filename;       /* as the caller (or the naming image) gave it */
    unsigned flags;       /* IMG_OPEN_* */
    bool writable;
    bool format_probed_raw;   /* raw was guessed, not asked for: guard the first sector */
    bool lock_shared_read;    /* locked as a reader that lets others write (see image.c) */
    unsigned writer_refusals; /* img_refuse_writers() calls in force, under `lock` */

    /* Filled in by the backend's open. */
    uint64_t size;         /* virtual size in bytes */
    uint32_t cluster_size; /* 0 when the format has none ("cluster-size" omitted) */
    uint32_t alloc_unit;   /* smallest unit a write allocates (a subcluster); 0: cluster_size */
    bool dirty;            /* "dirty-flag" */
    bool needs_compressed_writes; /* takes only compressed writes: convert compresses into it */

    /* Backing file as the image names it (backend fills; the core opens it). */
    char *backing_name;   /* "backing-filename", or NULL */
    char *backing_format; /* "backing-filename-format", or NULL to probe */
    char *backing_full;   /* "full-backing-filename" (resolved by the core) */
    struct img *backing;  /* NULL when none or IMG_OPEN_NO_BACKING */
    int depth;            /* 0 for the image the caller opened, 1 for its backing file, ... */

    /* The files this image names (img_get_named_file), added with img_name_file(). */
    struct img_named_file *named;
    size_t named_count;
    bool file_from_caller; /* opened by img_open_fd(): its locks are dropped at close */

    /* img_set_progress(), under `lock`; img_cancel() counts requests (atomic). */
    img_progress_fn progress;
    void *progress_user;
    uint64_t cancel_requests;

    pthread_mutex_t lock; /* serialises metadata updates; backends may use it or their own */
    struct img_aio *aio;  /* asynchronous requests (aio.c); NULL until first used */

    /*
     * The drain lock of the handle's public entry points. Data-path calls (read, write, zero,
     * discard, flush, block status, info) hold it shared and run side by side; calls that
     * change what the data path relies on (resize, snapshot apply/create/delete, check with
     * repair, close) hold it exclusively, so they start once the calls in flight have finished
     * and no other call starts until they end. Writers are preferred: a stream of reads cannot
     * starve a resize. Internal paths (copy-on-write reads of the backing image, a backend's
     * own helpers) never take it, so nothing re-enters it; an entry point that holds it calls
     * no public function on the same handle.
     */
    pthread_rwlock_t drain;
};

/* Enter/leave a data-path call on `img` (shared with other data-path calls). */
static inline void img_io_enter(struct img *img)
{
    pthread_rwlock_rdlock(&img->drain);
    img_error_context_push(img->filename);
}

/* Enter an exclusive call on `img`: waits for the calls in flight, keeps new ones out. */
static inline void img_drain_enter(struct img *img)
{
    pthread_rwlock_wrlock(&img->drain);
    img_error_context_push(img->filename);
}

/* Leaves either kind of call. */
static inline void img_io_leave(struct img *img)
{
    img_error_context_pop();
    pthread_rwlock_unlock(&img->drain);
}

/* A run of the guest address space, as a backend's map() reports it. */
enum extent_kind {
    EXTENT_DATA,        /* stored uncompressed at file:host_offset */
    EXTENT_ZERO,        /* reads as zeros in this layer */
    EXTENT_UNALLOCATED, /* not in this layer: read the backing image, or zeros */
    EXTENT_COMPRESSED,  /* a compressed unit (cluster/grain) */
};

struct img_extent {
    enum extent_kind kind;
    uint64_t length; /* guest bytes from the offset asked for (> 0) */
    struct io_file *file;
    /*
     * DATA: host offset of the first byte asked for. ZERO and UNALLOCATED: host offset of
     * space reserved for the range when host_offset_valid (qemu-img map prints it).
     * COMPRESSED: offset of the stream.
     */
    uint64_t host_offset;
    bool host_offset_valid;

    /*
     * DATA only: block status should also ask the host file whether the range is a hole or
     * past its end, and then report zeros (qemu does this for qcow2 images it judges to be
     * metadata-preallocated). Reads are unaffected.
     */
    bool refine_with_host;

    /* COMPRESSED only. The offset asked for lies inside [unit_start, unit_start + unit_size). */
    uint64_t comp_length; /* stored bytes to read from host_offset */
    uint64_t unit_start;  /* guest offset of the first decompressed byte */
    uint32_t unit_size;   /* decompressed size */
    int codec;            /* enum img_codec */
    /*
     * COMPRESSED only: the unit never changes while the image is open (a read-only format),
     * so the core may keep it decompressed for the next read inside it (unit_cache.h).
     */
    bool cacheable;
};

/* A file an image names, as img_get_named_file() lists it. */
struct img_named_file {
    char *path; /* resolved from the image's folder */
    int kind;   /* IMG_NAMED_* */
};

/* An internal snapshot as info lists it. */
struct img_snapshot {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    bool has_icount;
    uint64_t icount;
};
void img_snapshots_free(struct img_snapshot *list, size_t count);

/* ---- services the core offers backends ---- */

/*
 * Reads guest data of the backing image for this layer (copy-on-write), zero-filling past the
 * end of a shorter backing file or where there is none.
 */
int img_backing_pread(struct img *img, void *buf, size_t len, uint64_t offset);

/*
 * Resolves `name` as QEMU does: relative to the folder of `base_path`, absolute as written.
 * Returns a malloc'd path or NULL (out of memory).
 */
char *img_resolve_path(const char *base_path, const char *name);

/*
 * Opens a file an image names (backing file, data file, extent) without blocking, and refuses
 * it unless it is a regular file or a block device: a FIFO would hang the first open or read.
 * `owner` (the naming image, or NULL) and `what` word the message.
 */
int img_open_named_host_file(struct io_file **out, const char *path, int oflags, const char *owner,
                             const char *what);

/*
 * Records that the image names the file `name` (resolved from the image's folder) as `kind`
 * (IMG_NAMED_DATA_FILE, IMG_NAMED_EXTENT; the core adds the backing file itself). A backend
 * calls it from open() for every such file, whether or not it opens it, so that
 * img_get_named_file() lists them. 0 or -ENOMEM.
 */
int img_name_file(struct img *img, int kind, const char *name);
/* Frees the list img_name_file() built (the core does at close). */
void img_named_files_free(struct img *img);

/* Bytes the image's files take on disk (info's actual-size), or a negative errno. */
int64_t img_allocated_size(struct img *img);

/*
 * Opens a file named by the image (external data file, VMDK extent) subject to the open-flag
 * policy: `allow_flag` (e.g. IMG_OPEN_ALLOW_DATA_FILE) must be set for names outside the image's
 * folder, and IMG_OPEN_UNTRUSTED refuses any. `what` names the reference in messages.
 */
int img_open_named_file(struct img *img, const char *name, unsigned allow_flag, const char *what,
                        struct io_file **out);

/*
 * With `refuse`, stops others from writing or resizing any raw layer of the chain that was
 * opened as a shared reader (-EBUSY, changing nothing, when someone writes one now); without,
 * lets them again. For reads that must see one consistent image, such as convert.
 */
int img_refuse_writers(struct img *img, bool refuse);

/* Reads guest data through the chain (the public img_pread without the entry checks). */
int img_read_guest(struct img *img, void *buf, size_t len, uint64_t offset);

/*
 * Writes guest data into the top layer (the public img_pwrite without the entry checks and
 * the drain lock), for a core call that holds the handle itself. `len` or a negative errno.
 */
int64_t img_write_guest(struct img *img, const void *buf, size_t len, uint64_t offset);
/* Zeroes guest bytes of the top layer as img_zero() does, for the same callers. */
int img_zero_guest(struct img *img, uint64_t offset, uint64_t len);

/* Fills `buf` with the ext->length guest bytes at `offset` that `ext` describes. */
int img_read_extent(const struct img_extent *ext, void *buf, uint64_t offset);

/* True when all `len` bytes are zero. */
bool buffer_is_zero(const void *buf, size_t len);

/* Lists a (possibly partial) map: the extent at `offset` following unallocated runs down
 * the chain; *depth receives the layer that answered. */
int img_map_chain(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                  int *depth);

#endif
