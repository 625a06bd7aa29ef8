/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libimgutil: read, write, inspect and convert virtual disk images.
 *
 * Conventions that hold for every function below:
 *
 *  - Every type is opaque. Results come back through getters, plain scalars or JSON text.
 *  - A function returns 0 (or a count) on success and a negative errno on failure:
 *    -EINVAL bad argument or option, -ENOTSUP format/feature not supported, -EIO damaged image,
 *    -ENOSPC, -EBUSY (image locked by another process), -ECANCELED (progress callback said stop),
 *    -EFBIG (image exceeds a safety limit), -ELOOP (backing chain loops or is too deep),
 *    -EPERM (an image names a file that the open flags do not allow).
 *  - img_last_error() returns this thread's message for the last failure. It is never NULL and
 *    is set even when img_open() fails.
 *  - Results passed back through `**out` belong to the caller. Free them with the matching
 *    *_free()/img_close(); every such function accepts NULL. Strings the library returns are
 *    freed with img_free().
 *  - Options are strings, with the keys `qemu-img -o` takes ("cluster_size", "compat", ...).
 *
 * Thread safety: an img handle may be used from several threads at once. Reads run in
 * parallel; metadata updates are serialised inside the format backend. Writes from several
 * threads to disjoint ranges are safe. img_close() must not race with other calls on the handle.
 *
 * Files an image names (backing files, external data files, VMDK extents):
 *  - Backing files are followed as QEMU follows them: a relative name is resolved from the
 *    folder of the image that names it, an absolute name is used as written. Loops are refused
 *    with -ELOOP and the chain depth is capped at IMG_MAX_CHAIN_DEPTH.
 *  - A qcow2 external data file is opened only with IMG_OPEN_ALLOW_DATA_FILE. img_info_json()
 *    never opens one. A relative data file name is resolved from the image's folder, like a
 *    backing file name (QEMU 7.2 resolves it from the working directory instead, so the two
 *    agree when run from the image's folder).
 *  - IMG_OPEN_UNTRUSTED (for downloaded images) refuses any image that names another file at
 *    all and applies tighter resource limits.
 */
#ifndef IMGUTIL_H
#define IMGUTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(IMGUTIL_BUILDING) && defined(__GNUC__)
#define IMG_API __attribute__((visibility("default")))
#else
#define IMG_API
#endif

#define IMGUTIL_VERSION_MAJOR 1
#define IMGUTIL_VERSION_MINOR 0
#define IMGUTIL_VERSION_MICRO 0

/* Backing chains deeper than this are refused with -ELOOP. */
#define IMG_MAX_CHAIN_DEPTH 32

typedef struct img img;
typedef struct img_opts img_opts;

/*
 * Progress callback: `done` of `total` units. Return non-zero to cancel; the operation then
 * fails with -ECANCELED and leaves no partial target behind.
 */
typedef int (*img_progress_fn)(void *user, uint64_t done, uint64_t total);

/* ---- library ------------------------------------------------------------------------------ */

/* "1.0.0": the version of the library actually loaded. */
IMG_API const char *img_version(void);

/* This thread's message for the most recent failure. Never NULL. */
IMG_API const char *img_last_error(void);

/* A short name for a (negative or positive) errno code. Never NULL. */
IMG_API const char *img_strerror(int code);

/* Frees a string or buffer returned by the library. Accepts NULL. */
IMG_API void img_free(void *ptr);

/* ---- options ------------------------------------------------------------------------------ */

IMG_API int img_opts_new(img_opts **out);
IMG_API void img_opts_free(img_opts *opts);
/* Sets (or replaces) key=value. */
IMG_API int img_opts_set(img_opts *opts, const char *key, const char *value);
/* Parses "key=value,key=value" as `qemu-img -o` does (",," is a literal comma). */
IMG_API int img_opts_parse(img_opts *opts, const char *text);
/* Returns the value of key, or NULL when unset. The string lives as long as the opts. */
IMG_API const char *img_opts_get(const img_opts *opts, const char *key);

/* ---- opening ------------------------------------------------------------------------------ */

/* Open flags. Without IMG_OPEN_READ_WRITE an image is opened read-only. */
#define IMG_OPEN_READ_ONLY (1u << 0)
#define IMG_OPEN_READ_WRITE (1u << 1)
/* Open read-only without taking locks, as `qemu-img info -U` does. */
#define IMG_OPEN_FORCE_SHARE (1u << 2)
/* Do not open the backing file; unallocated ranges read as zeros. */
#define IMG_OPEN_NO_BACKING (1u << 3)
/* Allow a qcow2 external data file (data_file header extension). */
#define IMG_OPEN_ALLOW_DATA_FILE (1u << 4)
/* Allow VMDK extents outside the image's folder. */
#define IMG_OPEN_ALLOW_EXTERNAL_EXTENTS (1u << 5)
/* Refuse any image that names another file and apply tight resource limits. */
#define IMG_OPEN_UNTRUSTED (1u << 6)
/*
 * Open for checking and repair, as `qemu-img check` opens: with IMG_OPEN_READ_WRITE, an image
 * marked corrupt may be opened, and an image with lazy refcounts that was not closed cleanly
 * (dirty) is not repaired at open, so that img_check() reports and repairs what it finds.
 * Either image refuses writes until img_check() with IMG_CHECK_REPAIR_* has left it consistent
 * (and cleared its corrupt and dirty bits). No effect on read-only opens.
 */
#define IMG_OPEN_CHECK (1u << 7)

/*
 * Opens the image at `path`. `format` is a format name ("raw", "qcow2", ...) or NULL to probe.
 * `opts` may be NULL.
 *
 * Unless IMG_OPEN_FORCE_SHARE is given, the image files are locked as QEMU locks them, so that
 * a running VM and this library keep out of each other's way (-EBUSY): a writer excludes
 * every other writer and reader; a reader of a format with metadata (qcow2) excludes writers;
 * a reader of a raw image lets others write, as `qemu-img info` does, and img_convert then
 * refuses writers only while it copies (failing with -EBUSY if one is writing).
 */
IMG_API int img_open(img **out, const char *path, const char *format, unsigned flags,
                     const img_opts *opts);
IMG_API void img_close(img *img);

/* Virtual size in bytes, or a negative errno. */
IMG_API int64_t img_get_size(img *img);
/* The format name ("raw", "qcow2", ...). Valid while the handle is open. */
IMG_API const char *img_get_format(img *img);
/* The backing image handle (owned by `img`), or NULL. */
IMG_API img *img_get_backing(img *img);

/* ---- reading ------------------------------------------------------------------------------ */

/*
 * Reads up to `len` bytes at `offset`. Returns the number of bytes read: `len`, or fewer at the
 * end of the image (0 at or past the end), or a negative errno.
 */
IMG_API int64_t img_pread(img *img, void *buf, size_t len, uint64_t offset);

/* Block status flags. */
#define IMG_BLOCK_DATA (1u << 0)         /* reads come from stored data */
#define IMG_BLOCK_ZERO (1u << 1)         /* reads as zeros */
#define IMG_BLOCK_ALLOCATED (1u << 2)    /* allocated in the layer at `depth` ("present") */
#define IMG_BLOCK_COMPRESSED (1u << 3)   /* stored compressed */
#define IMG_BLOCK_OFFSET_VALID (1u << 4) /* *host_offset is the location in the host file */

/*
 * Status of the run starting at `offset`, at most `length` bytes long. On success *pnum is
 * the length of the run (>0), *status is a set of IMG_BLOCK_* flags, *depth the chain depth of
 * the layer that answered (0 = this image) and *host_offset its host file offset when
 * IMG_BLOCK_OFFSET_VALID is set. Any out pointer except pnum may be NULL.
 */
IMG_API int img_block_status(img *img, uint64_t offset, uint64_t length, uint64_t *pnum,
                             unsigned *status, int *depth, uint64_t *host_offset);

/* ---- information -------------------------------------------------------------------------- */

/* Info flags. */
#define IMG_INFO_BACKING_CHAIN (1u << 0) /* a JSON array: this image, then each backing image */

/*
 * Writes the image's description as `qemu-img info --output=json` does: the same field names
 * and values. *out is freed with img_free().
 */
IMG_API int img_info_json(img *img, unsigned flags, char **out);

/* The allocation map as `qemu-img map --output=json` prints it. *out is freed with img_free(). */
IMG_API int img_map_json(img *img, char **out);

/* ---- conversion --------------------------------------------------------------------------- */

/*
 * Copies the guest content of `src` into a new image `dst_path` of format `dst_format`.
 * The target rules (img_create follows the same ones):
 *  - `dst_path` is opened by the kernel, so a symbolic link is followed as open(2) follows it
 *    (fs.protected_symlinks applies) and the link stays;
 *  - a folder, character device, FIFO or socket is refused before anything is copied;
 *  - an existing target is write-locked with QEMU's locks for the whole convert: one a VM
 *    holds is refused with -EBUSY ("<target>: error while converting <fmt>: Failed to get
 *    "write" lock ...") and left as it is;
 *  - a block device is written in place (refused with -ENOSPC when smaller than the image);
 *  - a regular file is written to a temporary file in the folder of the file opened and
 *    renamed over it only on success, so a failure or cancellation leaves an existing target
 *    untouched. The new file keeps the old one's mode, owner (where allowed) and extended
 *    attributes (user.*, ACLs, security labels). A target with other hard links is refused
 *    (-EMLINK) rather than parted from them. A temporary left by a convert that was killed
 *    (".<name>.<hex>.tmp", no longer in use) is removed by the next convert to that name.
 *  - a read-only file system is reported as such (-EROFS).
 * Ranges the source reports as zeros stay holes (or, when the target names a backing file,
 * are written as zeros). Options: target creation options (as for img_create) plus
 *   "sparse_size"  bytes, a multiple of 512 up to 16 MiB: aligned runs of zeros this long in
 *                  the data become holes too (default 4096; "0" writes every byte, the
 *                  source's zeros included),
 *   "compress"     "on": write compressed clusters where the target format can,
 *   "sync"         "on": flush the target to stable storage before renaming it into place
 *                  (off by default, as qemu-img convert does not flush either).
 */
IMG_API int img_convert(img *src, const char *dst_path, const char *dst_format,
                        const img_opts *opts, img_progress_fn progress, void *user);

/* ---- creating and writing ----------------------------------------------------------------- */

/*
 * Creates an image. Options are those of `qemu-img create -o` for the format, plus
 * "backing_file", "backing_fmt". An existing file at `path` is refused with -EEXIST unless
 * the option "overwrite" is "on". The target rules are img_convert's: an existing file is
 * write-locked before a byte of it changes (-EBUSY, untouched, when a VM holds it); a block
 * device is written in place; a non-empty regular file is replaced by an image built in a
 * temporary beside it, so a create that fails (a full disk during preallocation) leaves the
 * old image as it was, and a new file it made is removed again (where the folder takes no new
 * file from the caller, the file is written in place, under its lock, as qemu-img does). A
 * qcow2 "data_file" is locked the same way before it is emptied.
 */
IMG_API int img_create(const char *path, const char *format, uint64_t size, const img_opts *opts);

/* Writes `len` bytes at `offset`; returns `len` or a negative errno. Needs READ_WRITE. */
IMG_API int64_t img_pwrite(img *img, const void *buf, size_t len, uint64_t offset);

/* img_zero flags */
#define IMG_ZERO_MAY_UNMAP (1u << 0) /* the range may be deallocated if it then reads as zero */

IMG_API int img_zero(img *img, uint64_t offset, uint64_t len, unsigned flags);
IMG_API int img_discard(img *img, uint64_t offset, uint64_t len);
IMG_API int img_flush(img *img);

/* img_resize flags */
#define IMG_RESIZE_SHRINK (1u << 0) /* allow the image to get smaller (data past the end lost) */

/* Options (may be NULL): "preallocation" = off|metadata|falloc|full for the new space. */
IMG_API int img_resize(img *img, uint64_t new_size, unsigned flags, const img_opts *opts);

/* ---- internal snapshots ------------------------------------------------------------------- */

/*
 * Names need not be unique (as in QEMU). Where several snapshots match, apply takes the first
 * whose id matches, else the first whose name matches; delete the first whose name matches,
 * else the first whose id matches (qemu-img snapshot -a / -d).
 */
IMG_API int img_snapshot_create(img *img, const char *name);
/* Reverts the active layer to the snapshot `name_or_id`. */
IMG_API int img_snapshot_apply(img *img, const char *name_or_id);
IMG_API int img_snapshot_delete(img *img, const char *name_or_id);
/* The snapshot list as JSON, in the form of the "snapshots" array of img_info_json(). */
IMG_API int img_snapshot_list(img *img, char **out);

/* ---- consistency check -------------------------------------------------------------------- */

/* img_check flags */
#define IMG_CHECK_REPAIR_LEAKS (1u << 0)
#define IMG_CHECK_REPAIR_ERRORS (1u << 1)

/*
 * Checks the image's metadata as `qemu-img check` does. Returns 0 when the check ran (whatever
 * it found), a negative errno when it could not run to the end. Repairing needs the image
 * opened read-write; open with IMG_OPEN_CHECK as well to repair an image marked corrupt or a
 * dirty lazy-refcounts image (see IMG_OPEN_CHECK). A repair that leaves no corruptions clears
 * the corrupt and dirty bits.
 *
 * On success *report (may be NULL) receives the JSON report of `qemu-img check --output=json`
 * ("check-errors", "leaks", "corruptions", ...), plus, when the check found anything, the
 * member "imgutil-findings" (which qemu-img's report does not have): an array of the
 * individual findings, one string each, worded as qemu-img prints them on stderr
 * ("Leaked cluster 6 refcount=1 reference=0", "ERROR cluster 5 refcount=1 reference=2",
 * "Repairing cluster 6 refcount=1 reference=0", ...), in the order found. Past 65536 findings
 * the last string says how many more there were.
 *
 * On failure *report is NULL and img_last_error() holds the findings made until then, one per
 * line (the most recent ones, as many as fit), followed by the reason on its last line.
 */
IMG_API int img_check(img *img, unsigned flags, char **report);

#ifdef __cplusplus
}
#endif

#endif /* IMGUTIL_H */
