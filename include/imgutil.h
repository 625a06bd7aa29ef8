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
 * Thread safety: an img handle may be used from several threads at once. Each function below
 * says which of two kinds it is:
 *  - "Shared": runs beside every other shared call on the same handle. Reads run in parallel,
 *    and so do writes (metadata updates are serialised inside the format backend). Writes from
 *    several threads to disjoint ranges are safe.
 *  - "Exclusive": waits until the calls in flight on the handle have returned, and keeps new
 *    calls waiting until it is done (as QEMU drains a disk for these). A read therefore sees the
 *    image wholly before or wholly after a resize or a snapshot apply. Waiting exclusive calls
 *    go first: a stream of reads cannot hold one off for ever.
 * Calls on different handles (even of the same file, or a handle and its backing handle) never
 * wait for each other. A progress callback must not call functions on the handle whose call
 * reports the progress (the call holds it: an exclusive call would wait for itself, and a
 * shared one could wait behind a waiting exclusive call). img_close() is exclusive, but
 * the handle is gone once it returns: no call may start on a handle once close has begun.
 * Functions without a handle (img_create, img_opts_*, img_version, ...) are safe anywhere;
 * an img_opts object must not be changed while another thread uses it.
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

/*
 * The version of this header. IMGUTIL_VERSION_NUMBER is MAJOR * 10000 + MINOR * 100 + MICRO;
 * IMGUTIL_CHECK_VERSION(1, 1, 0) is true when the header is version 1.1.0 or later. What the
 * program runs with is img_version_number() (the library loaded may be newer). Every function
 * added after 1.0 has an IMGUTIL_HAVE_<NAME> macro beside it, as in
 *     #ifdef IMGUTIL_HAVE_IMG_PROBE ... #endif
 */
#define IMGUTIL_VERSION_MAJOR 1
#define IMGUTIL_VERSION_MINOR 1
#define IMGUTIL_VERSION_MICRO 0
#define IMGUTIL_VERSION_NUMBER                                                                     \
    (IMGUTIL_VERSION_MAJOR * 10000 + IMGUTIL_VERSION_MINOR * 100 + IMGUTIL_VERSION_MICRO)
#define IMGUTIL_CHECK_VERSION(major, minor, micro)                                                 \
    (IMGUTIL_VERSION_NUMBER >= (major)*10000 + (minor)*100 + (micro))

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

/* "1.1.0": the version of the library actually loaded. */
IMG_API const char *img_version(void);

/*
 * The version of the library actually loaded as a number, in the form of
 * IMGUTIL_VERSION_NUMBER (10100 for 1.1.0). Thread-safe; never fails. Since 1.1.
 */
IMG_API int img_version_number(void);
#define IMGUTIL_HAVE_IMG_VERSION_NUMBER 1

/* This thread's message for the most recent failure. Never NULL. */
IMG_API const char *img_last_error(void);

/*
 * This thread's negative errno for the most recent failure (the code img_last_error() is
 * about), or 0 when nothing has failed yet. For the functions that return a pointer (NULL on
 * failure). Thread-safe. Since 1.1.
 */
IMG_API int img_last_errno(void);
#define IMGUTIL_HAVE_IMG_LAST_ERRNO 1

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
 * `opts` may be NULL. Open options (since 1.1): "snapshot.id" and/or "snapshot.name" (both
 * must match when both are given), or "snapshot" (an ID, else a name): a read-only view of
 * that internal snapshot of the image (not of its backing files), as QEMU loads one
 * temporarily for `qemu-img convert -l`: reads show the snapshot's content, the virtual size
 * stays the image's (zeros past the snapshot's own size). -ENOENT ("Can't find snapshot")
 * when none matches; -ENOTSUP for a format without internal snapshots; -EINVAL with
 * IMG_OPEN_READ_WRITE.
 *
 * Unless IMG_OPEN_FORCE_SHARE is given, the image files are locked as QEMU locks them, so that
 * a running VM and this library keep out of each other's way (-EBUSY): a writer excludes
 * every other writer and reader; a reader of a format with metadata (qcow2) excludes writers;
 * a reader of a raw image lets others write, as `qemu-img info` does, and img_convert then
 * refuses writers only while it copies (failing with -EBUSY if one is writing).
 */
IMG_API int img_open(img **out, const char *path, const char *format, unsigned flags,
                     const img_opts *opts);

/*
 * Opens the image in the open file `fd`, as img_open() opens a path (same flags, locks and
 * options). The library works on a duplicate of `fd`: the caller keeps its descriptor and may
 * close it at any time; the locks are released by img_close(). `fd` must be open for reading
 * (and writing with IMG_OPEN_READ_WRITE). Files the image names (a backing file, ...) are
 * resolved from the folder of the path the descriptor was opened with, where the system says
 * it (/proc/self/fd); otherwise from the current folder, and messages call the image "fd N".
 * Returns 0 or a negative errno (-EBADF for a descriptor that is not open). Since 1.1.
 */
IMG_API int img_open_fd(img **out, int fd, const char *format, unsigned flags,
                        const img_opts *opts);
#define IMGUTIL_HAVE_IMG_OPEN_FD 1

/*
 * Finds the format of the image at `path` as img_open() would (from its first bytes, and
 * its name for formats recognised by it), without opening it as an image or taking locks.
 * *format receives a static string ("qcow2", "raw", ...): do not free it. A file of a format
 * QEMU knows that this library does not read fails with -ENOTSUP (the message names the
 * format). Returns 0 or a negative errno. Thread-safe. Since 1.1.
 */
IMG_API int img_probe(const char *path, const char **format);
#define IMGUTIL_HAVE_IMG_PROBE 1
/*
 * Flushes (read-write handles) and frees the handle and its backing chain. Exclusive: waits
 * for calls in flight; nothing may call the handle once close has begun.
 */
IMG_API void img_close(img *img);

/* Virtual size in bytes, or a negative errno. Shared: never a size between two resizes. */
IMG_API int64_t img_get_size(img *img);
/* The format name ("raw", "qcow2", ...). Valid while the handle is open. Shared. */
IMG_API const char *img_get_format(img *img);
/*
 * The backing image handle (owned by `img`), or NULL. Shared. The backing handle is read-only
 * and has its own lock: calls on it do not wait for exclusive calls on `img`.
 */
IMG_API img *img_get_backing(img *img);

/*
 * Typed answers about an open image (since 1.1). All are shared, and the strings they return
 * belong to the handle: valid until img_close(), not to be freed.
 */

/* The file name as img_open() was given it (for img_open_fd(), the path found or "fd N"). */
IMG_API const char *img_get_filename(img *img);
#define IMGUTIL_HAVE_IMG_GET_FILENAME 1

/*
 * The backing file as the image names it (`qemu-img info`'s "backing-filename") in *name, and
 * its format in *format (NULL when the image does not say: it is then probed). Both NULL when
 * the image has no backing file. Answers with IMG_OPEN_NO_BACKING as well. Either out pointer
 * may be NULL. Returns 0 or -EINVAL (bad handle).
 */
IMG_API int img_get_backing_filename(img *img, const char **name, const char **format);
#define IMGUTIL_HAVE_IMG_GET_BACKING_FILENAME 1

/* Bytes the image's files take on disk (info's "actual-size"), or a negative errno. */
IMG_API int64_t img_get_allocated_size(img *img);
#define IMGUTIL_HAVE_IMG_GET_ALLOCATED_SIZE 1

/* The cluster (or block, grain) size in bytes; 0 for formats without one (raw). */
IMG_API int64_t img_get_cluster_size(img *img);
#define IMGUTIL_HAVE_IMG_GET_CLUSTER_SIZE 1

/* img_get_flags bits */
#define IMG_FLAG_DIRTY (1u << 0)     /* not closed cleanly (info's "dirty-flag") */
#define IMG_FLAG_CORRUPT (1u << 1)   /* marked corrupt: check and repair it */
#define IMG_FLAG_ENCRYPTED (1u << 2) /* the data is encrypted */
#define IMG_FLAG_DATA_FILE (1u << 3) /* guest data lives in an external data file */
#define IMG_FLAG_SNAPSHOTS (1u << 4) /* has internal snapshots */
#define IMG_FLAG_BITMAPS (1u << 5)   /* has persistent dirty bitmaps */
#define IMG_FLAG_BACKING (1u << 6)   /* names a backing file */

/* A set of IMG_FLAG_* bits (>= 0), or a negative errno. */
IMG_API int img_get_flags(img *img);
#define IMGUTIL_HAVE_IMG_GET_FLAGS 1

/* What a file named by an image is to it (img_get_named_file). */
#define IMG_NAMED_BACKING 1   /* the backing file */
#define IMG_NAMED_DATA_FILE 2 /* an external data file */
#define IMG_NAMED_EXTENT 3    /* an extent file (VMDK) */

/*
 * The files this image names (not those of its backing images): how many, and the i-th
 * (0 <= i < count) as the path the library opens (resolved from the image's folder), with its
 * kind (IMG_NAMED_*) in *kind (may be NULL). Listed whether or not the open flags allowed the
 * library to open them. img_get_named_file() returns NULL for an index out of range.
 */
IMG_API int img_get_named_file_count(img *img);
#define IMGUTIL_HAVE_IMG_GET_NAMED_FILE_COUNT 1
IMG_API const char *img_get_named_file(img *img, int i, int *kind);
#define IMGUTIL_HAVE_IMG_GET_NAMED_FILE 1

/*
 * Progress and cancellation of the long calls on a handle (since 1.1): img_check() (and its
 * repairs), img_resize() with preallocation, img_snapshot_create/apply/delete(). The callback
 * set here, `fn(user, done, total)`, gets progress in bytes of virtual size (of the
 * preallocated range for a resize); it runs on the thread that made the long call, never on a
 * library thread, and must not call functions on `img` (the call holds it). A snapshot apply
 * reports each of its two passes from 0. Returning non-zero from it cancels that call, as
 * img_cancel() does. NULL `fn` stops the reports. img_convert() keeps its own callback.
 */
IMG_API int img_set_progress(img *img, img_progress_fn fn, void *user);
#define IMGUTIL_HAVE_IMG_SET_PROGRESS 1

/*
 * Cancels the long calls running on `img` now (not later ones): each fails with -ECANCELED at
 * its next point where stopping leaves the image consistent, nothing half done: a check or a
 * repair stops before it writes anything (once a repair has begun writing, it finishes; the
 * call then succeeds); a resize keeps the old size (the clusters it had taken may show as
 * leaks, which `qemu-img check -r leaks` reclaims); a snapshot operation leaves the snapshots
 * as they were. Thread-safe: meant to be called from another thread than the long call.
 * Returns 0, or -EINVAL for a bad handle.
 */
IMG_API int img_cancel(img *img);
#define IMGUTIL_HAVE_IMG_CANCEL 1

/* ---- reading ------------------------------------------------------------------------------ */

/*
 * Reads up to `len` bytes at `offset`. Returns the number of bytes read: `len`, or fewer at the
 * end of the image (0 at or past the end), or a negative errno. Shared.
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
 * IMG_BLOCK_OFFSET_VALID is set. Any out pointer except pnum may be NULL. Shared.
 */
IMG_API int img_block_status(img *img, uint64_t offset, uint64_t length, uint64_t *pnum,
                             unsigned *status, int *depth, uint64_t *host_offset);

/* ---- information -------------------------------------------------------------------------- */

/* Info flags. */
#define IMG_INFO_BACKING_CHAIN (1u << 0) /* a JSON array: this image, then each backing image */

/*
 * Writes the image's description as `qemu-img info --output=json` does: the same field names
 * and values. *out is freed with img_free(). Shared.
 */
IMG_API int img_info_json(img *img, unsigned flags, char **out);

/*
 * The allocation map as `qemu-img map --output=json` prints it. *out is freed with img_free().
 * The text grows with the number of rows: use img_map() to walk a map of any size.
 * Shared, one block status query at a time: an exclusive call (a resize) may run between two
 * of them, so do not resize a handle while mapping it.
 */
IMG_API int img_map_json(img *img, char **out);

/* ---- allocation map ----------------------------------------------------------------------- */

/*
 * Receives one row of the map: `length` bytes from guest offset `start`, answered by the layer
 * at chain `depth` (0 = this image), with `status` a set of IMG_BLOCK_* flags and `offset` the
 * host file offset when IMG_BLOCK_OFFSET_VALID is set (0 otherwise). A non-zero return stops
 * the walk, and img_map() returns that value.
 */
typedef int (*img_map_fn)(void *user, uint64_t start, uint64_t length, int depth, unsigned status,
                          uint64_t offset);

/*
 * Walks the allocation map of [offset, offset + length), clipped to the virtual size, calling
 * `fn` for each row in guest order, with neighbouring runs merged exactly as `qemu-img map`
 * merges them: the same depth and flags, and host offsets (where valid) that continue each
 * other. Rows are delivered as they are found, so memory stays bounded whatever the image.
 * Returns 0 when the range was walked (nothing is delivered for an empty range), the
 * callback's non-zero return, or a negative errno (the rows before the failure were delivered).
 * Thread-safe like img_block_status(); the callback runs on the calling thread and must not
 * close the handle.
 */
IMG_API int img_map(img *img, uint64_t offset, uint64_t length, img_map_fn fn, void *user);
#define IMGUTIL_HAVE_IMG_MAP 1

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
 *   "min_size"     bytes: the target's virtual size is at least this (the space past the
 *                  source's end reads as zeros, left unallocated), set before the target is
 *                  renamed into place, so "convert and grow" is one atomic step (since 1.1),
 *   "size"         bytes: the target's virtual size exactly; less than the source's is
 *                  refused (since 1.1). Both work the same for every target format.
 * and, since 1.1, the rest of `qemu-img convert`'s flags, refused in its words where it
 * refuses them:
 *   "backing_file" (-B) with "backing_fmt" (-F, required): the target gets that backing file
 *                  and, as qemu-img does, only what the source's top layer holds is written:
 *                  ranges the source leaves to its own backing chain stay unallocated (they
 *                  show the target's backing file), the source's zeros are written as zeros
 *                  (left out past the end of the target's backing file). Formats that cannot
 *                  create a backing file refuse it (-ENOTSUP),
 *   "skip_create"  "on" (-n): write into the existing image `dst_path` (of `dst_format`),
 *                  which is not created, keeps its size (-EINVAL "output file is smaller than
 *                  input file" when it is smaller than the source) and is write-locked for the
 *                  whole convert. Creation options are refused. The source's zeros are written
 *                  (as zeros) unless "target_is_zero". A failed or cancelled convert leaves the
 *                  target partly written: its old content is not kept (as with qemu-img),
 *   "target_is_zero" "on" (--target-is-zero, with "skip_create" only): the caller vouches
 *                  that the target reads as zeros; the source's zeros are not written,
 *   "rate_limit"   bytes per second (suffixes k, M, G, ...; 0: none): the writes to the
 *                  target are throttled to it,
 *   "salvage"      "on" (--salvage): a range whose reading fails is read again sector by
 *                  sector; sectors that still fail read as zeros, each with a line "warning:
 *                  error while reading offset N: <reason>" written to the descriptor
 *                  "salvage_log_fd" (none by default) after "salvage_log_prefix",
 *   "out_of_order" "on" (-W): the target's clusters may be allocated in any order. Without
 *                  it they are allocated in guest order, so that the target's layout is
 *                  qemu-img's (the data is still copied by several chunks at once),
 *   "copy_range"   "on" (-C): what the source stores as data is copied with
 *                  copy_file_range(2) into the target (the kernel shares the blocks on a file
 *                  system with reflinks), whole, without looking for zeros in it; compressed
 *                  clusters, and file systems where the kernel cannot, are read and written.
 *                  Refused with "compress", "sparse_size" or "salvage", as qemu-img refuses,
 *   "num_coroutines" 1..16 (-m): at most this many chunks are copied at once (each chunk's
 *                  reads and writes in flight together); without it the library sizes that
 *                  to the CPUs.
 * img_cancel() on `src` from another thread stops a running convert: it returns -ECANCELED
 * and leaves no target (an existing one untouched), as the progress callback's cancel does;
 * while the convert waits for its rate limit, a cancel is seen within 50 ms.
 * A source opened with the open option "snapshot.id", "snapshot.name" or "snapshot" (qcow2:
 * img_open()) is converted as that internal snapshot shows it (qemu-img convert -l).
 * Shared on `src` for the whole copy: exclusive calls on `src` (a resize) wait until it ends.
 */
IMG_API int img_convert(img *src, const char *dst_path, const char *dst_format,
                        const img_opts *opts, img_progress_fn progress, void *user);

/*
 * img_convert() of the `n` images `srcs`, concatenated in that order into one target whose
 * virtual size is the sum of theirs (qemu-img convert with several sources). The options are
 * img_convert()'s; a backing file for the target is refused when n > 1 (-EINVAL). Progress
 * counts the bytes of all the sources; img_cancel() on the first source cancels. Every source
 * is shared for the whole copy, as img_convert() shares its one. Returns 0 or a negative
 * errno. Since 1.1.
 */
IMG_API int img_convert_many(img **srcs, size_t n, const char *dst_path, const char *dst_format,
                             const img_opts *opts, img_progress_fn progress, void *user);
#define IMGUTIL_HAVE_IMG_CONVERT_MANY 1

/* ---- creating and writing ----------------------------------------------------------------- */

/*
 * Creates an image. Options are those of `qemu-img create -o` for the format, plus
 * "backing_file", "backing_fmt". An existing file at `path` is refused with -EEXIST unless
 * the option "overwrite" is "on". Takes no handle: safe from any thread. The target rules are
 * img_convert's: an existing file is write-locked before a byte of it changes (-EBUSY, untouched,
 * when a VM holds it); a block device is written in place; a non-empty regular file is replaced by
 * an image built in a temporary beside it, so a create that fails (a full disk during
 * preallocation) leaves the old image as it was, and a new file it made is removed again (where the
 * folder takes no new file from the caller, the file is written in place, under its lock, as
 * qemu-img does). Files the new image names (a qcow2 "data_file", extents) are created when
 * absent; an existing one is refused when it is not a regular file, and, when it holds data,
 * unless the option "overwrite_named" is "on" (-EEXIST, untouched: qemu-img would empty it).
 * Taken over, it is locked the same way before it is emptied.
 */
IMG_API int img_create(const char *path, const char *format, uint64_t size, const img_opts *opts);

/*
 * img_create() reporting progress (bytes of the preallocation done, of the bytes to
 * preallocate) to `fn` on the calling thread, which stops it by returning non-zero: the create
 * then fails with -ECANCELED and leaves nothing behind (no new file, an existing target as it
 * was). Only preallocation ("preallocation=falloc|full") takes long enough to report. Since 1.1.
 */
IMG_API int img_create_progress(const char *path, const char *format, uint64_t size,
                                const img_opts *opts, img_progress_fn fn, void *user);
#define IMGUTIL_HAVE_IMG_CREATE_PROGRESS 1

/*
 * Writes `len` bytes at `offset`; returns `len` or a negative errno. Needs READ_WRITE. Shared.
 */
IMG_API int64_t img_pwrite(img *img, const void *buf, size_t len, uint64_t offset);

/* img_zero flags */
#define IMG_ZERO_MAY_UNMAP (1u << 0) /* the range may be deallocated if it then reads as zero */

/* Makes the range read as zeros. Shared. */
IMG_API int img_zero(img *img, uint64_t offset, uint64_t len, unsigned flags);
/* Lets the format drop the range's data (a hint: formats without it keep the data). Shared. */
IMG_API int img_discard(img *img, uint64_t offset, uint64_t len);
/* Makes everything written so far durable. Shared. */
IMG_API int img_flush(img *img);

/* img_resize flags */
#define IMG_RESIZE_SHRINK (1u << 0) /* allow the image to get smaller (data past the end lost) */

/*
 * Options (may be NULL): "preallocation" = off|metadata|falloc|full for the new space.
 * Exclusive. The new size becomes visible (in the file: the header's size field, a raw file's
 * length) only once everything under it is in place: a resize that fails (-ENOSPC, ...) leaves
 * the old size and guest content; on qcow2 it may leave leaked clusters (img_check repairs).
 */
IMG_API int img_resize(img *img, uint64_t new_size, unsigned flags, const img_opts *opts);

/* img_rebase flags */
#define IMG_REBASE_UNSAFE (1u << 0) /* rewrite the reference only, copying nothing */
/* Open the new backing file without taking locks (qemu-img rebase -U). */
#define IMG_REBASE_FORCE_SHARE (1u << 1)

/*
 * Moves the image (opened read-write) onto the backing file `backing_file`, of format
 * `backing_fmt`, as `qemu-img rebase` does; NULL or "" detaches it from any backing file. A
 * relative name is recorded as given and resolved from the image's folder. A new backing file
 * needs its format (-EINVAL "backing format must be specified", as qemu-img 7.2).
 *
 * Safe mode (flags 0): the guest view stays the same. Every range the image does not hold
 * itself and whose content differs between the old backing chain (opened with the image: an
 * image opened with IMG_OPEN_NO_BACKING that names one is refused) and the new one (opened
 * read-only here; detaching: zeros) is first copied into the image, then the reference is
 * switched. IMG_REBASE_UNSAFE switches the reference alone: the caller vouches that both
 * backing files hold the same data (renaming or moving one).
 *
 * Progress (bytes of virtual size scanned) goes to the callback of img_set_progress(), and
 * img_cancel() stops the copy. A failure, cancel or crash at any point leaves the guest view
 * unchanged: the data is copied (and flushed) first, and the reference is switched last in
 * one write; ranges already copied stay in the image, holding what they showed before. On
 * success the handle reads through the new backing file (none when detached; after an unsafe
 * rebase, none when the new one cannot be opened).
 *
 * Formats that cannot change their backing file (all but qcow2 and qed, as in QEMU 7.2) fail
 * with -ENOTSUP; -ENOSPC when the name does not fit where the format keeps it. Messages are
 * qemu-img's ("Could not open new backing file 'NAME': ...", "Could not change the backing
 * file to 'NAME': ..."). Exclusive: other calls on `img` wait until it returns. Since 1.1.
 */
IMG_API int img_rebase(img *img, const char *backing_file, const char *backing_fmt,
                       unsigned flags);
#define IMGUTIL_HAVE_IMG_REBASE 1

/* ---- asynchronous requests ---------------------------------------------------------------- */

/*
 * Asynchronous requests, for programs built around an event loop (epoll, poll, GLib, libuv,
 * QEMU's), in the manner of libnbd's nbd_aio_* calls.
 *
 * A submit call (img_aio_pread, img_aio_pwrite, img_aio_zero, img_aio_discard, img_aio_flush)
 * checks its arguments, queues the request and returns at once: 0 when queued, or a negative
 * errno when refused, in which case the request does not exist and its callback never runs:
 *   -EINVAL  invalid handle, NULL buffer with len > 0, unknown flags, or a range that does not
 *            lie inside the image (unlike img_pread, an asynchronous read does not stop short
 *            at the end of the image: offset + len must not exceed img_get_size()),
 *   -EROFS   a write, zero, discard or flush on a handle opened read-only,
 *   -EAGAIN  IMG_AIO_MAX_IN_FLIGHT requests of this handle are in flight already: run some
 *            completions with img_aio_poll() and submit again,
 *   -ENOMEM, or the errno of a worker thread that could not be started.
 *
 * A queued request runs on the library's process-wide worker pool, through exactly the data
 * path of the matching synchronous call (img_pread, img_pwrite, img_zero, img_discard,
 * img_flush), with the same ordering of data and metadata writes and so the same crash
 * safety. Its completion callback then waits until the caller runs it in img_aio_poll(), on
 * the caller's thread; no callback ever runs on a thread of the library. `result` is the
 * number of bytes transferred for reads and writes (`len`; a read may
 * return fewer when a resize shrank the image meanwhile), 0 for zero, discard and
 * flush, or a negative errno; during a callback with a negative result, img_last_error()
 * holds the request's message. `done` may be NULL (the result is then dropped).
 *
 * Buffers: `buf` belongs to the caller, who must keep it valid and (for a read) leave it
 * alone until the callback has run or img_close() has returned. Memory is bounded: the library
 * allocates a small fixed record per request and at most IMG_AIO_MAX_IN_FLIGHT are in flight
 * per handle.
 *
 * Ordering: requests in flight run concurrently, in any order. Overlapping requests where one
 * is a write, zero or discard give an undefined result in the overlap, as on a disk; wait for
 * one's callback before submitting the other. A flush makes durable the writes whose callbacks
 * ran before it was submitted (the same rule as NBD_CMD_FLUSH).
 *
 * Threads: the submit calls, img_aio_get_fd() and img_aio_in_flight() may be called from any
 * thread, also together with the synchronous calls on the same handle. img_aio_poll() runs on
 * one thread at a time per handle (a second concurrent call fails with -EBUSY).
 *
 * A completion callback may submit new requests on the same handle (or any other), and may
 * call the synchronous functions. It must not call img_aio_poll() on the same handle (that
 * fails with -EBUSY) nor img_close() on it or on the image whose backing chain it belongs to
 * (refused: img_close() then sets img_last_error() and returns without closing). It should return
 * quickly: the other completions wait for it.
 *
 * img_close() with requests in flight (on the handle, or on one of its backing images as
 * img_get_backing() returns them) waits until every one of them has finished executing
 * (so buffers are no longer used and written data has reached the image, which img_close()
 * then flushes), drops their completions without running the callbacks, and reports how many
 * it dropped on img_last_error() (a message starting with "img_close: "). To run every
 * callback, poll until img_aio_in_flight() is 0 before img_close().
 */

/* The most requests one handle may have in flight (submitted, callback not yet run). */
#define IMG_AIO_MAX_IN_FLIGHT 1024

/* Called from img_aio_poll() when a request has completed: see above for `result`. */
typedef void (*img_aio_done_fn)(void *user, int64_t result);

/* Reads `len` bytes at `offset` into `buf`; result `len` or a negative errno. */
IMG_API int img_aio_pread(img *img, void *buf, size_t len, uint64_t offset, img_aio_done_fn done,
                          void *user);
#define IMGUTIL_HAVE_IMG_AIO_PREAD 1
/* Writes `len` bytes from `buf` at `offset`; result `len` or a negative errno. */
IMG_API int img_aio_pwrite(img *img, const void *buf, size_t len, uint64_t offset,
                           img_aio_done_fn done, void *user);
#define IMGUTIL_HAVE_IMG_AIO_PWRITE 1
/* As img_zero() (flags IMG_ZERO_*); result 0 or a negative errno. */
IMG_API int img_aio_zero(img *img, uint64_t offset, uint64_t len, unsigned flags,
                         img_aio_done_fn done, void *user);
#define IMGUTIL_HAVE_IMG_AIO_ZERO 1
/* As img_discard(); result 0 or a negative errno. */
IMG_API int img_aio_discard(img *img, uint64_t offset, uint64_t len, img_aio_done_fn done,
                            void *user);
#define IMGUTIL_HAVE_IMG_AIO_DISCARD 1
/* As img_flush(); result 0 or a negative errno. */
IMG_API int img_aio_flush(img *img, img_aio_done_fn done, void *user);
#define IMGUTIL_HAVE_IMG_AIO_FLUSH 1

/*
 * A descriptor (an eventfd, created on the first call of the handle's asynchronous API) that
 * is readable while completions wait to be run by img_aio_poll(). Watch it for input in
 * epoll/poll/GLib, level- or edge-triggered; never read, write or close it (img_aio_poll()
 * resets it, img_close() closes it). The same descriptor for the life of the handle. Returns
 * the descriptor or a negative errno.
 */
IMG_API int img_aio_get_fd(img *img);
#define IMGUTIL_HAVE_IMG_AIO_GET_FD 1

/*
 * Runs the completions that are waiting, on the calling thread, and returns how many callbacks
 * ran (0 or more), or a negative errno (-EBUSY: called from a callback of this handle or while
 * another thread polls it). When none is waiting and requests are in flight, it first waits up
 * to `timeout_ms` milliseconds (-1: without limit, 0: not at all) for one to complete. With
 * nothing in flight it returns 0 at once, whatever the timeout.
 */
IMG_API int img_aio_poll(img *img, int timeout_ms);
#define IMGUTIL_HAVE_IMG_AIO_POLL 1

/*
 * The number of requests of the handle in flight: submitted, and whose callback has not yet
 * started to run (executing, or completed and waiting for img_aio_poll()). Never more than
 * IMG_AIO_MAX_IN_FLIGHT. A negative errno for an invalid handle.
 */
IMG_API int64_t img_aio_in_flight(img *img);
#define IMGUTIL_HAVE_IMG_AIO_IN_FLIGHT 1

/* ---- internal snapshots ------------------------------------------------------------------- */

/*
 * Names need not be unique (as in QEMU). Where several snapshots match, apply takes the first
 * whose id matches, else the first whose name matches; delete the first whose name matches,
 * else the first whose id matches (qemu-img snapshot -a / -d). Create, apply and delete are
 * exclusive; list is shared.
 */
IMG_API int img_snapshot_create(img *img, const char *name);
/* Reverts the active layer to the snapshot `name_or_id`. */
IMG_API int img_snapshot_apply(img *img, const char *name_or_id);
IMG_API int img_snapshot_delete(img *img, const char *name_or_id);
/* The snapshot list as JSON, in the form of the "snapshots" array of img_info_json(). */
IMG_API int img_snapshot_list(img *img, char **out);

/* The number of internal snapshots (>= 0), or a negative errno. Shared. Since 1.1. */
IMG_API int img_snapshot_count(img *img);
#define IMGUTIL_HAVE_IMG_SNAPSHOT_COUNT 1

/*
 * Snapshot `i` (0 <= i < img_snapshot_count(), in the order of img_snapshot_list()): its id
 * and name (copies: free them with img_free()), the time it was taken (seconds and
 * nanoseconds since the epoch), the guest clock then (ns) and the size of the saved VM state
 * (0 for disk-only snapshots). Any out pointer may be NULL. Returns 0, -ENOENT when `i` is out
 * of range, or another negative errno. Shared. Since 1.1.
 */
IMG_API int img_snapshot_get(img *img, int i, char **id, char **name, int64_t *date_sec,
                             int32_t *date_nsec, uint64_t *vm_clock_nsec, uint64_t *vm_state_size);
#define IMGUTIL_HAVE_IMG_SNAPSHOT_GET 1

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
 *
 * Shared without repair flags; exclusive with IMG_CHECK_REPAIR_LEAKS or _ERRORS.
 */
IMG_API int img_check(img *img, unsigned flags, char **report);

/* ---- formats: what each format supports and which options it takes (since 1.1) ---- */

/*
 * The number of formats this library knows. Formats are numbered 0 .. count - 1 in a fixed
 * order (the order in which probing breaks ties). Thread-safe; never fails.
 */
IMG_API int img_format_count(void);
#define IMGUTIL_HAVE_IMG_FORMAT_COUNT 1

/*
 * The name of format `i` ("qcow2", "raw", ...), as img_open() and img_create() take it, or NULL
 * when `i` is out of range. The string is static: do not free it. Thread-safe.
 */
IMG_API const char *img_format_name(int i);
#define IMGUTIL_HAVE_IMG_FORMAT_NAME 1

/*
 * Whether `format` can do `what`: "read" (open and read images), "write" (write to them),
 * "create" (img_create), "snapshots" (internal snapshots), "backing" (images may have a
 * backing file), "compress" (compressed writes: img_convert's "compress" option),
 * "probe_fallback" (the format an unrecognised file is taken for when img_open() probes; writes
 * to the first sector of an image opened that way must not make it look like another format),
 * "resize" (img_resize; since 1.1), "bitmaps" (persistent dirty bitmaps, img_bitmap_*; since
 * 1.1).
 * Returns 1 (yes) or 0 (no); -ENOENT for an unknown format and -EINVAL for an unknown `what`
 * or a NULL argument, with img_last_error() set. Thread-safe.
 */
IMG_API int img_format_supports(const char *format, const char *what);
#define IMGUTIL_HAVE_IMG_FORMAT_SUPPORTS 1
/* The same answer under the name libraries of this kind often use for it. */
IMG_API int img_format_supported(const char *format, const char *what);
#define IMGUTIL_HAVE_IMG_FORMAT_SUPPORTED 1

/*
 * The options img_create() takes for `format` (the keys of `qemu-img create -o`), as JSON:
 *   {"format": "qcow2", "options": [{"name": "cluster_size", "type": "size",
 *     "default": "65536", "min": 512, "max": 2097152, "help": "qcow2 cluster size"}, ...]}
 * "type" is one of "bool", "size", "int", "enum", "string", "path". "default" (the value as
 * the option's text) is present when the option has a fixed default; "values" (an array of
 * strings) lists what an "enum" option accepts; "min" and "max" bound a "size" or "int" where
 * the format restricts it (other format rules, such as powers of two, are checked by
 * img_create). The options are listed in the order `qemu-img create` prints them.
 * Returns 0 and the text in *json (free it with img_free), or a negative errno (-ENOENT for an
 * unknown format, -EINVAL for NULL arguments, -ENOMEM) with *json set to NULL. Thread-safe.
 */
IMG_API int img_format_options_json(const char *format, char **json);
#define IMGUTIL_HAVE_IMG_FORMAT_OPTIONS_JSON 1

/* ---- measuring: how large a converted or new image would be (since 1.1) ---- */

/*
 * What `qemu-img measure` answers: the size of an image of `format`, created with the
 * creation options `opts` (may be NULL; the keys img_create() takes), that would hold either
 * the content of `src` (its whole backing chain, as img_convert() would copy it) or, when
 * `src` is NULL, `size` bytes of guest data (`qemu-img measure --size`). `size` must be 0 when
 * `src` is given.
 *
 * On success returns 0 and *json (free it with img_free) holds qemu-img measure's JSON:
 *   {"required": 1507328, "fully-allocated": 105185280}
 * "required" is the file size the image needs for the source's data (for `--size`: with no
 * data written), "fully-allocated" its size with every cluster allocated, both in bytes and
 * equal to qemu-img 7.2's figures. "bitmaps" comes first, in bytes, when the source is a
 * qcow2 v3 image and the target a qcow2 v3 image (room for the source's persistent bitmaps,
 * 0 when it has none).
 *
 * On failure *json is NULL and a negative errno is returned with img_last_error() set to
 * qemu-img's message: -ENOENT "Unknown file format 'F'", -ENOTSUP "Block driver 'F' does not
 * support size measurement", -EINVAL for an option the format does not take or values that
 * do not combine, -EFBIG for a size the format cannot address.
 *
 * Shared on `src` (one block status query at a time, like img_map()); thread-safe.
 */
IMG_API int img_measure(img *src, uint64_t size, const char *format, const img_opts *opts,
                        char **json);
#define IMGUTIL_HAVE_IMG_MEASURE 1

/* ---- committing an overlay into its backing image (since 1.1) ---- */

#define IMG_COMMIT_KEEP_TOP (1u << 0) /* leave `top` as it is (qemu-img commit -d) */

/*
 * What `qemu-img commit` does: copies every range that `top`, or an image between `top` and
 * the base, holds (data, and zeros where it reads as zeros) into the base image, which is
 * `top`'s backing image, or with `base` the image of `top`'s backing chain that `base` names
 * (as an image names its backing file: relative to the folder of the image that names it, or
 * absolute; the names are compared after both are resolved). A base smaller than `top` grows
 * to `top`'s size first; a larger one keeps its size. The base is reopened read-write for the
 * commit (refused with -EBUSY, "Failed to get "write" lock", while another process such as a
 * running VM holds it) and read-only again afterwards. Once the base holds the data durably
 * (flushed), `top` is emptied so that it reads through to the base, as qemu-img does, where
 * its format can empty images (qcow2); other formats keep their data. `top` is kept as it is
 * with IMG_COMMIT_KEEP_TOP, and whenever the base is not `top`'s own backing image: the
 * images in between are not changed and may hold older data that an emptied `top` would show.
 * The chain's backing references are not changed.
 *
 * `top` must be opened with its backing chain (not IMG_OPEN_NO_BACKING), read-write unless
 * IMG_COMMIT_KEEP_TOP. Progress goes to the callback img_set_progress() gave `top` (bytes of
 * `top`'s virtual size done); img_cancel() or a non-zero return from it stops the copy with
 * -ECANCELED.
 *
 * Returns 0, or a negative errno with img_last_error() set: -EINVAL "Image does not have a
 * backing file", -ENOENT "Did not find 'BASE' in the backing chain of 'TOP'", -EBUSY for a base
 * another process holds, -EACCES (or another open error) when the base cannot be opened for
 * writing, -ENOTSUP when its format cannot be written. A failure or cancellation during the
 * copy leaves `top` unchanged and the base holding part of `top`'s data (its guest view
 * changed in the ranges copied so far); a failure while emptying leaves `top` partly emptied,
 * reading the same data as before, since the base already holds it.
 *
 * Exclusive on `top`: waits for calls in flight on it and holds new ones off until it returns
 * (the progress callback must not call into `top`); other handles are unaffected.
 */
IMG_API int img_commit(img *top, const char *base, unsigned flags);
#define IMGUTIL_HAVE_IMG_COMMIT 1

/* ---- comparing: whether two images show the guest the same bytes (since 1.1) ---- */

/* img_compare flags */
#define IMG_COMPARE_STRICT (1u << 0) /* allocation status and size count too (compare -s) */

/* img_compare results */
#define IMG_COMPARE_IDENTICAL 0
#define IMG_COMPARE_CONTENT_MISMATCH 1 /* the guest bytes differ at *offset */
#define IMG_COMPARE_STATUS_MISMATCH 2  /* strict: the allocation status differs at *offset */
#define IMG_COMPARE_SIZE_MISMATCH 3    /* strict: the virtual sizes differ */

/*
 * What `qemu-img compare [-s]` decides: whether `a` and `b` (each read through its backing
 * chain) show the guest the same content. Without IMG_COMPARE_STRICT, images of different
 * sizes are identical when the part of the longer one past the shorter one reads as zeros;
 * with it, the sizes must match and every run must have the same status in both, as
 * qemu-img compares it: IMG_BLOCK_DATA, _ZERO, _ALLOCATED and _OFFSET_VALID as
 * img_block_status() reports them, and whether the run reaches the end of the image.
 *
 * Returns IMG_COMPARE_IDENTICAL (0) or one of the mismatches above (> 0) and sets *offset
 * (may be NULL) to where the images first differ: the start of the 512-byte sector for a
 * content mismatch (an offset past the shorter image's end when the longer one's tail is not
 * zeros), the start of the run for a status mismatch, 0 otherwise.
 * On failure returns a negative errno with img_last_error() set to qemu-img's message:
 * "Sector allocation test failed for FILE: ..." when a block status failed, "Error while
 * reading offset N of FILE: ..." when a read did, -ECANCELED when cancelled, -EINVAL for a bad
 * handle or unknown flags.
 *
 * Progress (bytes of the longer image compared) and cancellation are those of `a`'s handle
 * (img_set_progress(), img_cancel()). Shared on both handles: other threads may read them
 * meanwhile. Thread-safe.
 */
IMG_API int img_compare(img *a, img *b, unsigned flags, uint64_t *offset);
#define IMGUTIL_HAVE_IMG_COMPARE 1
/* ---- amending: changing an existing image's options in place (since 1.1) ---- */

/*
 * What `qemu-img amend` does: changes the options of `img` (opened read-write) named in `opts`,
 * with the keys and values `qemu-img amend -o` takes for its format (for qcow2: compat,
 * lazy_refcounts, refcount_bits, data_file, data_file_raw, size, and backing_file/backing_fmt
 * when they repeat what the image already says). Only the options given change.
 *
 * Returns 0, or a negative errno with img_last_error() set to qemu-img's message: -ENOTSUP
 * "Format driver 'F' does not support option amendment" for a format that cannot be amended;
 * -EINVAL "Invalid parameter 'K'" for a key the format does not amend (followed, on a second
 * line, by "This option is only supported for image creation" for a creation option),
 * -EINVAL or -ENOTSUP for a change the image does not allow ("compat=0.10 requires
 * refcount_bits=16", ...); -EROFS for a read-only handle; -ECANCELED when the progress
 * callback or img_cancel() stopped it. Each change is ordered so that the image is left
 * either before or after it, also after a crash (clusters may leak, as with qemu-img); a
 * failure part way leaves the changes made until then, as qemu-img leaves them.
 *
 * Progress goes to the callback of img_set_progress(), in bytes of virtual size spread over
 * the steps that rewrite metadata. Takes the handle exclusively: other calls on `img` wait
 * until it returns. Thread-safe.
 */
IMG_API int img_amend(img *img, const img_opts *opts);
#define IMGUTIL_HAVE_IMG_AMEND 1

/*
 * The options img_amend() takes for `format`, as JSON in the shape of img_format_options_json()
 * ({"format": "qcow2", "options": [...]}), for `qemu-img amend -o help`. Returns 0 and the text
 * in *json (free it with img_free), or a negative errno with *json set to NULL: -ENOENT for an
 * unknown format, -ENOTSUP "Format driver 'F' does not support option amendment", -EINVAL for
 * NULL arguments. Thread-safe.
 */
IMG_API int img_amend_options_json(const char *format, char **json);
#define IMGUTIL_HAVE_IMG_AMEND_OPTIONS_JSON 1
/* ---- persistent dirty bitmaps (qemu-img bitmap) -------------------------------------------- */

/*
 * Persistent dirty bitmaps record which guest ranges changed, for incremental backups (qcow2
 * keeps them; other formats have none). Since 1.1.
 *
 * While an image is open writable, the enabled bitmaps follow every write, zero and discard
 * made through this library (img_pwrite, img_zero, img_discard, the img_aio_* calls,
 * img_convert into an existing image): before the first change they are marked in use in the
 * file, and img_close() stores them with their new bits and clears the mark, as QEMU does. A
 * crash in between leaves them marked in use (IMG_BITMAP_IN_USE), which QEMU and this library
 * refuse to trust: remove such a bitmap and start a new full backup.
 *
 * The changing calls need a handle opened writable, wait for the handle's I/O in flight (like
 * img_resize) and store the change crash-safely before they return: the new tables and
 * directory are written to free space and the header switched to them. They return 0 or a
 * negative errno with qemu-img's message: -ENOENT "Dirty bitmap 'NAME' not found", -EEXIST for
 * a name in use, -EINVAL for a bad granularity or name, -EBUSY for a bitmap marked in use,
 * -ENOTSUP for a format without bitmaps, -EROFS for a read-only handle.
 */

/* img_bitmap_get flags */
#define IMG_BITMAP_ENABLED (1u << 0) /* follows writes (qemu-img info's "auto") */
#define IMG_BITMAP_IN_USE (1u << 1)  /* not stored cleanly: its bits cannot be trusted */

/* img_bitmap_add flags */
#define IMG_BITMAP_ADD_DISABLED (1u << 0) /* the new bitmap does not follow writes */

/*
 * Adds an empty bitmap `name` (at most 1023 bytes) with one bit per `granularity` bytes (a
 * power of two from 512 to 2^31; 0 for the default: the cluster size, within 4 KiB..64 KiB).
 */
IMG_API int img_bitmap_add(img *img, const char *name, uint64_t granularity, unsigned flags);
#define IMGUTIL_HAVE_IMG_BITMAP_ADD 1

/* Removes bitmap `name` and frees its space (also a bitmap marked in use). */
IMG_API int img_bitmap_remove(img *img, const char *name);
#define IMGUTIL_HAVE_IMG_BITMAP_REMOVE 1

/* Clears every bit of bitmap `name`. */
IMG_API int img_bitmap_clear(img *img, const char *name);
#define IMGUTIL_HAVE_IMG_BITMAP_CLEAR 1

/* Makes bitmap `name` follow writes from now on (enable), or stop following them (disable). */
IMG_API int img_bitmap_enable(img *img, const char *name);
#define IMGUTIL_HAVE_IMG_BITMAP_ENABLE 1
IMG_API int img_bitmap_disable(img *img, const char *name);
#define IMGUTIL_HAVE_IMG_BITMAP_DISABLE 1

/*
 * Sets in bitmap `name` of `dst` every range set in bitmap `src_name` of `src` (NULL: `dst`
 * itself), which may have another granularity; both images must have the same virtual size
 * (-EINVAL otherwise). `src` may be opened read-only; it is only read.
 */
IMG_API int img_bitmap_merge(img *dst, const char *name, img *src, const char *src_name);
#define IMGUTIL_HAVE_IMG_BITMAP_MERGE 1

/* The number of persistent bitmaps (>= 0; 0 for formats without any), or a negative errno. */
IMG_API int img_bitmap_count(img *img);
#define IMGUTIL_HAVE_IMG_BITMAP_COUNT 1

/*
 * Bitmap `i` (0 <= i < img_bitmap_count(), in the image's order): its name (a copy: free it
 * with img_free()), granularity in bytes and IMG_BITMAP_* flags. Out pointers may be NULL.
 * Returns 0, -ENOENT when `i` is out of range, or another negative errno. Shared; thread-safe.
 */
IMG_API int img_bitmap_get(img *img, int i, char **name, uint64_t *granularity, unsigned *flags);
#define IMGUTIL_HAVE_IMG_BITMAP_GET 1

#ifdef __cplusplus
}
#endif

#endif /* IMGUTIL_H */
