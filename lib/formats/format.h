/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_FORMAT_H
#define IMG_FORMAT_H

/*
 * The backend contract. A backend answers where the data is; the core moves the data. A
 * backend never reads or writes guest data itself (except copy-on-write through
 * img_backing_pread and compressed writes it must encode).
 *
 * Entries are only ever appended; `version` says how many a backend fills. Optional entries
 * may be NULL (the core answers -ENOTSUP).
 */

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "imgutil.h"
#include "util/json.h"

#define IMG_FORMAT_VERSION 1

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
};

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

struct img_format {
    uint32_t version;
    const char *name;

    /*
     * Bids on the first bytes of a file (buf holds min(file size, 2048) bytes). Returns a score
     * 0..100; the highest wins. Raw bids 1 so that it is the fallback.
     */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    /*
     * Parses metadata from img->file and fills img->size, cluster_size, backing_name,
     * backing_format, dirty and priv. img->writable says whether writes will follow.
     */
    int (*open)(struct img *img, const img_opts *opts);
    void (*close)(struct img *img);

    /*
     * The longest run starting at `offset` (< img->size), at most `length` bytes, that is one
     * kind of extent. Must be safe to call from several threads at once.
     */
    int (*map)(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext);

    /* Writes the members of "format-specific" ("type", "data"). NULL: omitted. */
    int (*info_specific)(struct img *img, struct json_writer *w);

    /* Internal snapshots (info's "snapshots"); NULL when the format has none. */
    int (*snapshot_list)(struct img *img, struct img_snapshot **out, size_t *count);

    /* ---- writing ---- */

    int (*create)(const struct img_create_args *args);

    /*
     * Makes [offset, offset+length) writable and returns in *ext a DATA extent (possibly
     * shorter than length) saying where to write. Partial clusters are filled from the backing
     * image (copy-on-write) by the backend. When *token is set, the core calls alloc_commit()
     * after writing the data, so metadata is linked only once the data is on disk.
     */
    int (*alloc)(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext,
                 struct img_alloc **token);
    int (*alloc_commit)(struct img *img, struct img_alloc *token, int write_result);

    int (*zero)(struct img *img, uint64_t offset, uint64_t length, unsigned flags);
    int (*discard)(struct img *img, uint64_t offset, uint64_t length);
    int (*flush)(struct img *img);
    int (*resize)(struct img *img, uint64_t new_size, unsigned flags, const img_opts *opts);
    /* Writes one whole compressed unit (cluster) at a unit-aligned guest offset. */
    int (*write_compressed)(struct img *img, uint64_t offset, const void *buf, size_t len);

    /* `result` arrives zeroed but for its log sink. flags are IMG_CHECK_REPAIR_*. */
    int (*check)(struct img *img, unsigned flags, struct img_check_result *result);

    int (*snapshot_create)(struct img *img, const char *name);
    int (*snapshot_apply)(struct img *img, const char *name_or_id);
    int (*snapshot_delete)(struct img *img, const char *name_or_id);

    /*
     * write_compressed() in two steps, so that a caller can compress many units in parallel
     * and still place them in the file in an order of its choosing (convert: guest order).
     *
     * compress_unit() compresses one unit (`len` bytes: a whole cluster, or the image's short
     * last one) with the image's codec and rules, into `out`, which holds at least a cluster
     * (`out_cap`). *out_len receives the stream's length, or 0 when compression does not pay
     * and the unit is to be stored as it is. It touches no image state: any thread, any time.
     *
     * write_compressed_data() allocates room for one unit at the unit-aligned guest `offset`
     * and writes it: the stream of `len` bytes from compress_unit(), or, when
     * `stored_uncompressed`, the unit's own `len` plain bytes.
     */
    int (*compress_unit)(struct img *img, const void *buf, size_t len, void *out, size_t out_cap,
                         size_t *out_len);
    int (*write_compressed_data)(struct img *img, uint64_t offset, const void *data, size_t len,
                                 bool stored_uncompressed);
};

/* The registry (formats/registry.c): every backend, in probe-tie-break order. */
const struct img_format *format_find(const char *name);
const struct img_format *format_probe(const uint8_t *buf, size_t len, const char *filename);
/*
 * Formats QEMU knows that this library does not read yet: probed so that such images are
 * refused with "format not supported yet" instead of being misread as raw. Returns the name
 * or NULL.
 */
const char *format_probe_unsupported(const uint8_t *buf, size_t len, const char *filename);

extern const struct img_format format_raw;
extern const struct img_format format_qcow2;

#endif
