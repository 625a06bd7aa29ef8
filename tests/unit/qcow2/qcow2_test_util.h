/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef QCOW2_TEST_UTIL_H
#define QCOW2_TEST_UTIL_H

/*
 * Helpers for the qcow2 backend tests: opening an image through the backend alone (no core),
 * building small images byte by byte, running qemu-img/qemu-io.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "image.h"
#include "io/io.h"
#include "util/endian.h"

/* ---- temporary folder ---- */

static char qt_dir[256];

static inline const char *qt_tmpdir(void)
{
    if (!qt_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(qt_dir, sizeof(qt_dir), "%s/imgutil-qcow2-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(qt_dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return qt_dir;
}

static inline char *qt_path(const char *name)
{
    size_t size = strlen(qt_tmpdir()) + strlen(name) + 2;
    char *p = malloc(size);
    if (!p)
        abort();
    snprintf(p, size, "%s/%s", qt_tmpdir(), name);
    return p;
}

static inline void qt_cleanup(void)
{
    if (qt_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", qt_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", qt_dir);
    }
}

/* cmocka group teardown: removes the temporary directory the tests used. */
static inline int qt_teardown(void **state)
{
    (void)state;
    qt_cleanup();
    return 0;
}

/* ---- external tools ---- */

static inline bool qt_have_qemu(void)
{
    return system("qemu-img --version >/dev/null 2>&1") == 0 &&
           system("qemu-io --version >/dev/null 2>&1") == 0;
}

/*
 * The start of an interop test's main(): 77 (skip) without qemu-img/qemu-io, 1 when the
 * temporary folder cannot be entered, else 0. qemu-img 7.2 resolves a relative data file name
 * from its working directory, this library from the image's folder: working in the image
 * folder makes both mean the same file.
 */
static inline int qt_interop_begin(void)
{
    if (!qt_have_qemu()) {
        fprintf(stderr, "qemu-img/qemu-io not found: skipping\n");
        return 77;
    }
    if (chdir(qt_tmpdir()) != 0) {
        perror("chdir");
        return 1;
    }
    return 0;
}

/* Runs a shell command; returns its exit status (non-zero on failure). */
__attribute__((format(printf, 1, 2))) static inline int qt_run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int status = system(cmd);
    if (status != 0)
        fprintf(stderr, "command failed (%d): %s\n", status, cmd);
    return status;
}

/* Runs a shell command and returns its standard output (malloc'd), or NULL on failure. */
__attribute__((format(printf, 1, 2))) static inline char *qt_capture(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
        }
    }
    out[len] = '\0';
    if (pclose(p) != 0) {
        fprintf(stderr, "command failed: %s\n", cmd);
        free(out);
        return NULL;
    }
    return out;
}

/* ---- opening through the backend alone ---- */

/* Opens `path` with format_qcow2.open; returns its result. On success *out is the image. */
static inline int qt_open(const char *path, unsigned flags, struct img **out)
{
    *out = NULL;
    struct img *img = calloc(1, sizeof(*img));
    pthread_mutex_init(&img->lock, NULL);
    img->magic = IMG_HANDLE_MAGIC;
    img->flags = flags;
    img->writable = (flags & IMG_OPEN_READ_WRITE) != 0;
    img->filename = strdup(path);
    img->fmt = &format_qcow2;
    int ret = io_file_open(&img->file, path, img->writable ? O_RDWR : O_RDONLY, 0);
    if (ret == 0)
        ret = format_qcow2.open(img, NULL);
    if (ret < 0) {
        io_file_close(img->file);
        img_named_files_free(img);
        free(img->filename);
        pthread_mutex_destroy(&img->lock);
        free(img);
        return ret;
    }
    *out = img;
    return 0;
}

static inline void qt_close(struct img *img)
{
    if (!img)
        return;
    format_qcow2.close(img);
    io_file_close(img->file);
    img_named_files_free(img);
    free(img->filename);
    free(img->backing_name);
    free(img->backing_format);
    pthread_mutex_destroy(&img->lock);
    free(img);
}

/* ---- images built byte by byte ---- */

/*
 * A small valid image: cluster 0 header, 1 refcount table, 2 refcount block, 3 L1 table,
 * 4 an L2 table for the first L1 entry, then data clusters appended by qt_add_cluster().
 */
struct qt_image {
    uint8_t *buf;
    size_t len;
    uint32_t cluster_bits;
    uint32_t cluster_size;
    bool extended_l2;
};

#define QT_REFTABLE 1
#define QT_REFBLOCK 2
#define QT_L1 3
#define QT_L2 4

static inline void qt_grow(struct qt_image *im, size_t len)
{
    if (len <= im->len)
        return;
    im->buf = realloc(im->buf, len);
    memset(im->buf + im->len, 0, len - im->len);
    im->len = len;
}

static inline uint64_t qt_cluster(const struct qt_image *im, unsigned n)
{
    return (uint64_t)n << im->cluster_bits;
}

/* Sets the refcount (16-bit entries) of host cluster n. */
static inline void qt_set_refcount(struct qt_image *im, uint64_t n, uint16_t value)
{
    store_be16(im->buf + qt_cluster(im, QT_REFBLOCK) + n * 2, value);
}

static inline void qt_build(struct qt_image *im, uint32_t version, uint32_t cluster_bits,
                            uint64_t size, bool extended_l2)
{
    memset(im, 0, sizeof(*im));
    im->cluster_bits = cluster_bits;
    im->cluster_size = 1u << cluster_bits;
    im->extended_l2 = extended_l2;
    qt_grow(im, (size_t)5 << cluster_bits);
    uint8_t *h = im->buf;
    uint32_t l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
    uint64_t span = 1ull << (cluster_bits + l2_bits);
    uint32_t l1_size = (uint32_t)((size + span - 1) / span);
    if (l1_size == 0)
        l1_size = 1;
    store_be32(h, QCOW2_MAGIC);
    store_be32(h + 4, version);
    store_be32(h + 20, cluster_bits);
    store_be64(h + 24, size);
    store_be32(h + 36, l1_size);
    store_be64(h + 40, qt_cluster(im, QT_L1));
    store_be64(h + 48, qt_cluster(im, QT_REFTABLE));
    store_be32(h + 56, 1);
    if (version >= 3) {
        store_be64(h + 72, extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
        store_be32(h + 96, 4);
        store_be32(h + 100, QCOW2_KNOWN_HEADER_LENGTH);
    }
    store_be64(im->buf + qt_cluster(im, QT_REFTABLE), qt_cluster(im, QT_REFBLOCK));
    for (unsigned n = 0; n <= QT_L2; n++)
        qt_set_refcount(im, n, 1);
    store_be64(im->buf + qt_cluster(im, QT_L1), qt_cluster(im, QT_L2) | QCOW2_OFLAG_COPIED);
}

/* Appends a data cluster filled with `fill`; returns its host offset. */
static inline uint64_t qt_add_cluster(struct qt_image *im, uint8_t fill)
{
    uint64_t off = im->len;
    qt_grow(im, im->len + im->cluster_size);
    memset(im->buf + off, fill, im->cluster_size);
    qt_set_refcount(im, off >> im->cluster_bits, 1);
    return off;
}

/* Sets L2 entry `index` of the first L2 table (and its bitmap with extended L2 entries). */
static inline void qt_set_l2(struct qt_image *im, unsigned index, uint64_t entry, uint64_t bitmap)
{
    uint32_t bytes = im->extended_l2 ? 16 : 8;
    uint8_t *p = im->buf + qt_cluster(im, QT_L2) + (uint64_t)index * bytes;
    store_be64(p, entry);
    if (im->extended_l2)
        store_be64(p + 8, bitmap);
}

/* Adds a header extension at `*pos` (starting after the header); keeps 8-byte alignment. */
static inline void qt_add_extension(struct qt_image *im, size_t *pos, uint32_t magic,
                                    const void *data, uint32_t len)
{
    if (*pos == 0)
        *pos = im->buf[7] == 2 ? QCOW2_V2_HEADER_LENGTH : QCOW2_KNOWN_HEADER_LENGTH;
    store_be32(im->buf + *pos, magic);
    store_be32(im->buf + *pos + 4, len);
    memcpy(im->buf + *pos + 8, data, len);
    *pos += 8 + ((len + 7) & ~7u);
}

static inline void qt_write(const struct qt_image *im, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(im->buf, 1, im->len, f) != im->len) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static inline void qt_free(struct qt_image *im)
{
    free(im->buf);
    im->buf = NULL;
}

/* Writes the image to a fresh file in the test folder and opens it read-only. */
static inline int qt_open_built(const struct qt_image *im, const char *name, struct img **out)
{
    char *path = qt_path(name);
    qt_write(im, path);
    int ret = qt_open(path, 0, out);
    free(path);
    return ret;
}

#endif
