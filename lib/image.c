/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Opening and closing images: probing, format dispatch and the backing chain. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "io/lock.h"
#include "unit_cache.h"

#define PROBE_BYTES 2048

/* Files already open in this chain, for loop detection. */
struct chain_seen {
    dev_t dev[IMG_MAX_CHAIN_DEPTH + 1];
    ino_t ino[IMG_MAX_CHAIN_DEPTH + 1];
    int count;
};

char *img_resolve_path(const char *base_path, const char *name)
{
    const char *slash = strrchr(base_path, '/');
    if (name[0] == '/' || !slash)
        return strdup(name);
    size_t dir_len = (size_t)(slash - base_path) + 1;
    char *out = malloc(dir_len + strlen(name) + 1);
    if (!out)
        return NULL;
    memcpy(out, base_path, dir_len);
    strcpy(out + dir_len, name);
    return out;
}

/* True when `name`, resolved from `base_path`, stays inside the folder of `base_path`. */
static bool names_file_in_image_folder(const char *name)
{
    if (name[0] == '/')
        return false;
    /* Any ".." component could climb out. */
    for (const char *p = name; *p;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return false;
        p += n;
        while (*p == '/')
            p++;
    }
    return true;
}

int img_open_named_host_file(struct io_file **out, const char *path, int oflags, const char *owner,
                             const char *what)
{
    /*
     * Without O_NONBLOCK, opening a FIFO waits for a writer, and reading a character device
     * may never end: refuse anything else than a regular file or a block device before the
     * first read, then give the descriptor back its blocking reads.
     */
    const char *sep = owner ? ": " : "";
    owner = owner ? owner : "";
    int ret = io_file_open(out, path, oflags | O_NONBLOCK, 0);
    if (ret < 0)
        return img_error(ret, "%s%scannot open %s '%s': %s", owner, sep, what, path,
                         img_strerror(ret));
    int fd = io_file_fd(*out);
    struct stat st;
    int flags;
    if (fstat(fd, &st) < 0) {
        ret = img_error(-errno, "%s%scannot stat %s '%s'", owner, sep, what, path);
    } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        ret = img_error(-EINVAL,
                        "%s%s%s '%s' is not a regular file or a block device (a FIFO, a "
                        "socket or a character device could block forever)",
                        owner, sep, what, path);
    } else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        ret = img_error(-errno, "%s%scannot set up %s '%s'", owner, sep, what, path);
    }
    if (ret < 0) {
        io_file_close(*out);
        *out = NULL;
    }
    return ret;
}

int img_open_named_file(struct img *img, const char *name, unsigned allow_flag, const char *what,
                        struct io_file **out)
{
    if (img->flags & IMG_OPEN_UNTRUSTED)
        return img_error(-EPERM, "%s: image names a %s '%s', refused for an untrusted image",
                         img->filename, what, name);
    if (!(img->flags & allow_flag) && !names_file_in_image_folder(name))
        return img_error(-EPERM,
                         "%s: %s '%s' is outside the image's folder; opening it needs an explicit "
                         "permission flag",
                         img->filename, what, name);
    if (!(img->flags & allow_flag) && allow_flag == IMG_OPEN_ALLOW_DATA_FILE)
        return img_error(-EPERM,
                         "%s: image uses the %s '%s'; opening it needs "
                         "IMG_OPEN_ALLOW_DATA_FILE",
                         img->filename, what, name);
    char *path = img_resolve_path(img->filename, name);
    if (!path)
        return img_error(-ENOMEM, "out of memory");
    int ret =
        img_open_named_host_file(out, path, img->writable ? O_RDWR : O_RDONLY, img->filename, what);
    if (ret >= 0 && !(img->flags & IMG_OPEN_FORCE_SHARE)) {
        ret = io_file_lock(*out, img->writable ? IO_LOCK_WRITE : IO_LOCK_READ, path);
        if (ret < 0) {
            io_file_close(*out);
            *out = NULL;
        }
    }
    free(path);
    return ret;
}

static void img_destroy(struct img *img)
{
    if (!img)
        return;
    img_destroy(img->backing);
    if (img->fmt && img->priv)
        img->fmt->close(img);
    unit_cache_forget(img->file);
    /* The caller's descriptor shares our open file description, and with it the locks. */
    if (img->file_from_caller && img->file)
        io_file_unlock(img->file);
    io_file_close(img->file);
    img_named_files_free(img);
    free(img->filename);
    free(img->backing_name);
    free(img->backing_format);
    free(img->backing_full);
    pthread_mutex_destroy(&img->lock);
    pthread_rwlock_destroy(&img->drain);
    img->magic = 0;
    free(img);
}

/* Finds the format of `file` from its first bytes and `name`, as img_open() probes. */
static int probe_file(struct io_file *file, const char *name, const struct img_format **out)
{
    uint8_t head[PROBE_BYTES] = {0};
    int64_t size = io_file_size(file);
    if (size < 0)
        return img_error((int)size, "%s: cannot read its size", name);
    size_t n = size < PROBE_BYTES ? (size_t)size : PROBE_BYTES;
    int ret = io_pread(file, head, n, 0);
    if (ret < 0)
        return img_error(ret, "%s: cannot read: %s", name, img_strerror(ret));
    const struct img_format *fmt = format_probe(head, n, name);
    if (fmt && format_has(fmt, FORMAT_PROBE_FALLBACK)) {
        const char *other = format_probe_unsupported(head, n, name);
        if (other)
            return img_error(-ENOTSUP, "%s: format %s is not supported yet", name, other);
    }
    if (!fmt)
        return img_error(-ENOTSUP, "%s: no format recognises the file", name);
    *out = fmt;
    return 0;
}

static int pick_format(struct img *img, const char *format)
{
    if (format) {
        img->fmt = format_find(format);
        if (!img->fmt)
            return img_error(-ENOTSUP, "%s: unknown or unsupported format '%s'", img->filename,
                             format);
        return 0;
    }
    int ret = probe_file(img->file, img->filename, &img->fmt);
    if (ret < 0)
        return ret;
    img->format_probed_raw = format_has(img->fmt, FORMAT_PROBE_FALLBACK);
    return 0;
}

IMG_API int img_probe(const char *path, const char **format)
{
    if (!path || !format)
        return img_error(-EINVAL, "img_probe: path and format are required");
    *format = NULL;
    struct io_file *file = NULL;
    int ret = io_file_open(&file, path, O_RDONLY, 0);
    if (ret < 0)
        return img_error(ret, "could not open '%s': %s", path, img_strerror(ret));
    struct stat st;
    const struct img_format *fmt = NULL;
    if (fstat(io_file_fd(file), &st) < 0)
        ret = img_error(-errno, "could not stat '%s'", path);
    else if (S_ISDIR(st.st_mode))
        ret = img_error(-EISDIR, "'%s' is a directory", path);
    else
        ret = probe_file(file, path, &fmt);
    io_file_close(file);
    if (ret == 0)
        *format = fmt->name;
    return ret;
}

void img_named_files_free(struct img *img)
{
    for (size_t i = 0; i < img->named_count; i++)
        free(img->named[i].path);
    free(img->named);
    img->named = NULL;
    img->named_count = 0;
}

int img_name_file(struct img *img, int kind, const char *name)
{
    char *path = img_resolve_path(img->filename, name);
    struct img_named_file *grown =
        path ? realloc(img->named, (img->named_count + 1) * sizeof(*grown)) : NULL;
    if (!grown) {
        free(path);
        return img_error(-ENOMEM, "out of memory");
    }
    img->named = grown;
    img->named[img->named_count++] = (struct img_named_file){.path = path, .kind = kind};
    return 0;
}

static int open_backing(struct img *img, struct chain_seen *seen, const img_opts *opts);

/*
 * As QEMU: a raw image opened for reading lets others keep writing it (a VM's disk stays
 * inspectable, as with `qemu-img info`); readers that need a stable image (convert) refuse
 * writers for as long as they read, with img_refuse_writers(). Formats with metadata always
 * refuse writers, since a half-written table would mislead us.
 */
static enum io_lock_mode lock_mode_for(struct img *img)
{
    if (img->writable)
        return IO_LOCK_WRITE;
    if (format_has(img->fmt, FORMAT_SHARED_READ_LOCK)) {
        img->lock_shared_read = true;
        return IO_LOCK_SHARED_READ;
    }
    return IO_LOCK_READ;
}

static int refuse_writers_now(struct img *img, bool refuse)
{
    int ret = 0;
    for (struct img *layer = img; layer; layer = layer->backing) {
        if (!layer->lock_shared_read)
            continue;
        ret = io_file_lock_refuse_writes(layer->file, refuse, layer->filename);
        if (ret < 0) {
            /* All or nothing: give back what the layers above took. */
            for (struct img *done = img; done != layer; done = done->backing)
                if (done->lock_shared_read)
                    io_file_lock_refuse_writes(done->file, false, done->filename);
            return ret;
        }
    }
    return ret;
}

int img_refuse_writers(struct img *img, bool refuse)
{
    /* Counted: converts running side by side on one handle share the refusal. */
    pthread_mutex_lock(&img->lock);
    int ret = 0;
    if (refuse) {
        if (img->writer_refusals == 0)
            ret = refuse_writers_now(img, true);
        if (ret == 0)
            img->writer_refusals++;
    } else if (img->writer_refusals > 0 && --img->writer_refusals == 0) {
        ret = refuse_writers_now(img, false);
    }
    pthread_mutex_unlock(&img->lock);
    return ret;
}

/*
 * The descriptor to open when the caller names a folder that is a bundle: the first format's
 * `folder_file` found in it (malloc'd), or NULL.
 */
static char *bundle_descriptor(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    for (size_t i = 0; i < format_count(); i++) {
        const struct img_format *fmt = format_at(i);
        if (!fmt->folder_file)
            continue;
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/')
            len--;
        size_t n = len + strlen(fmt->folder_file) + 2;
        char *file = malloc(n);
        if (!file)
            return NULL;
        snprintf(file, n, "%.*s/%s", (int)len, path, fmt->folder_file);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
            return file;
        free(file);
    }
    return NULL;
}

/* Opens `path` as an image; with `given` (img_open_fd), that file instead, named `path`. */
static int open_one_named(struct img **out, const char *path, struct io_file *given,
                          const char *format, unsigned flags, const img_opts *opts, int depth,
                          struct chain_seen *seen);

/* Opens one layer; every message of its failure names its file. */
static int open_one(struct img **out, const char *path, struct io_file *given, const char *format,
                    unsigned flags, const img_opts *opts, int depth, struct chain_seen *seen)
{
    img_error_context_push(path);
    int ret = open_one_named(out, path, given, format, flags, opts, depth, seen);
    img_error_context_pop();
    return ret;
}

static int open_one_named(struct img **out, const char *path, struct io_file *given,
                          const char *format, unsigned flags, const img_opts *opts, int depth,
                          struct chain_seen *seen)
{
    char *descriptor = depth == 0 && !given ? bundle_descriptor(path) : NULL;
    if (descriptor) {
        int ret = open_one(out, descriptor, NULL, format, flags, opts, depth, seen);
        free(descriptor);
        return ret;
    }
    struct img *img = calloc(1, sizeof(*img));
    if (!img) {
        io_file_close(given);
        return img_error(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&img->lock, NULL);
    pthread_rwlockattr_t drain_attr;
    pthread_rwlockattr_init(&drain_attr);
    pthread_rwlockattr_setkind_np(&drain_attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&img->drain, &drain_attr);
    pthread_rwlockattr_destroy(&drain_attr);
    img->magic = IMG_HANDLE_MAGIC;
    img->flags = flags;
    img->depth = depth;
    img->writable = (flags & IMG_OPEN_READ_WRITE) != 0;
    img->filename = strdup(path);
    int ret = -ENOMEM;
    if (!img->filename) {
        io_file_close(given);
        img_error(ret, "out of memory");
        goto fail;
    }
    int oflags = img->writable ? O_RDWR : O_RDONLY;
    /* The image the caller named is opened as given; files that images name are checked. */
    if (given) {
        img->file = given;
        img->file_from_caller = true;
        ret = 0;
    } else if (depth > 0)
        ret = img_open_named_host_file(&img->file, path, oflags, NULL, "backing file");
    else
        ret = io_file_open(&img->file, path, oflags, 0);
    if (ret < 0) {
        if (depth == 0)
            img_error(ret, "could not open '%s': %s", path, img_strerror(ret));
        goto fail;
    }
    struct stat st;
    if (fstat(io_file_fd(img->file), &st) < 0) {
        ret = img_error(-errno, "could not stat '%s'", path);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        ret = img_error(-EISDIR, "'%s' is a directory", path);
        goto fail;
    }
    for (int i = 0; i < seen->count; i++) {
        if (seen->dev[i] == st.st_dev && seen->ino[i] == st.st_ino) {
            ret = img_error(-ELOOP, "backing chain loops: '%s' is already in the chain", path);
            goto fail;
        }
    }
    seen->dev[seen->count] = st.st_dev;
    seen->ino[seen->count] = st.st_ino;
    seen->count++;

    /* Probing reads one sector unlocked: nothing is trusted until the locks are held. */
    ret = pick_format(img, format);
    if (ret < 0)
        goto fail;
    /* After the loop check, so a chain naming itself reports the loop. */
    if (!(flags & IMG_OPEN_FORCE_SHARE)) {
        ret = io_file_lock(img->file, lock_mode_for(img), path);
        if (ret < 0)
            goto fail;
    }
    /* A snapshot's view (qcow2_snapshot_view.c) from a format without snapshots: refused. */
    if (depth == 0 && !format_has(img->fmt, FORMAT_SNAPSHOTS) &&
        (img_opts_get(opts, "snapshot") || img_opts_get(opts, "snapshot.id") ||
         img_opts_get(opts, "snapshot.name"))) {
        ret = img_error(-ENOTSUP, "format %s does not support loading internal snapshots",
                        img->fmt->name);
        goto fail;
    }
    ret = img->fmt->open(img, opts);
    if (ret < 0) {
        img->priv = NULL; /* a failed open cleans up after itself */
        goto fail;
    }
    if (img->backing_name) {
        ret = open_backing(img, seen, opts);
        if (ret < 0)
            goto fail;
    }
    *out = img;
    return 0;
fail:
    img_destroy(img);
    return ret;
}

static int open_backing(struct img *img, struct chain_seen *seen, const img_opts *opts)
{
    if (img->flags & IMG_OPEN_UNTRUSTED)
        return img_error(-EPERM,
                         "%s: image names a backing file '%s', refused for an untrusted "
                         "image",
                         img->filename, img->backing_name);
    img->backing_full = img_resolve_path(img->filename, img->backing_name);
    if (!img->backing_full)
        return img_error(-ENOMEM, "out of memory");
    int ret = img_name_file(img, IMG_NAMED_BACKING, img->backing_name);
    if (ret < 0)
        return ret;
    if (img->flags & IMG_OPEN_NO_BACKING)
        return 0;
    if (img->depth + 1 > IMG_MAX_CHAIN_DEPTH)
        return img_error(-ELOOP, "backing chain is deeper than %d images (at '%s')",
                         IMG_MAX_CHAIN_DEPTH, img->filename);
    /* Backing files are only read; writes go to the top layer. */
    unsigned flags = (img->flags & ~IMG_OPEN_READ_WRITE) | IMG_OPEN_READ_ONLY;
    ret = open_one(&img->backing, img->backing_full, NULL, img->backing_format, flags, opts,
                   img->depth + 1, seen);
    /* A loop or an over-deep chain explains itself; nesting prefixes would bury it. */
    if (ret < 0 && ret != -ELOOP)
        img_error_prefix("%s: could not open backing file", img->filename);
    return ret;
}

static int check_open_flags(const char *fn, unsigned flags)
{
    if ((flags & IMG_OPEN_READ_ONLY) && (flags & IMG_OPEN_READ_WRITE))
        return img_error(-EINVAL, "%s: IMG_OPEN_READ_ONLY and IMG_OPEN_READ_WRITE are both set",
                         fn);
    if ((flags & IMG_OPEN_FORCE_SHARE) && (flags & IMG_OPEN_READ_WRITE))
        return img_error(-EINVAL, "%s: IMG_OPEN_FORCE_SHARE is only for read-only opens", fn);
    return 0;
}

IMG_API int img_open(img **out, const char *path, const char *format, unsigned flags,
                     const img_opts *opts)
{
    if (!out || !path)
        return img_error(-EINVAL, "img_open: out and path are required");
    *out = NULL;
    int ret = check_open_flags("img_open", flags);
    if (ret < 0)
        return ret;
    if (!*path)
        return img_error(-EINVAL, "img_open: empty file name");
    struct chain_seen seen = {.count = 0};
    img_error_clear();
    return open_one(out, path, NULL, format, flags, opts, 0, &seen);
}

/*
 * The name an image opened from a descriptor goes by: the path it was opened with, where the
 * system still knows it, so that the names it holds resolve as for img_open(); else "fd N".
 */
static void name_of_fd(int fd, char *name, size_t size)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, name, size - 1);
    if (n > 0 && (size_t)n < size - 1 && name[0] == '/') {
        name[n] = '\0';
        if (!strstr(name, " (deleted)"))
            return;
    }
    snprintf(name, size, "fd %d", fd);
}

IMG_API int img_open_fd(img **out, int fd, const char *format, unsigned flags, const img_opts *opts)
{
    if (!out)
        return img_error(-EINVAL, "img_open_fd: out is required");
    *out = NULL;
    int ret = check_open_flags("img_open_fd", flags);
    if (ret < 0)
        return ret;
    int mode = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (mode < 0)
        return img_error(-EBADF, "img_open_fd: %d is not an open descriptor", fd);
    char name[4096];
    name_of_fd(fd, name, sizeof(name));
    bool need_write = (flags & IMG_OPEN_READ_WRITE) != 0;
    if ((mode & O_ACCMODE) == O_WRONLY || (need_write && (mode & O_ACCMODE) != O_RDWR))
        return img_error(-EBADF, "%s: the descriptor is not open for %s", name,
                         need_write ? "reading and writing (IMG_OPEN_READ_WRITE)" : "reading");
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0)
        return img_error(-errno, "%s: cannot duplicate the descriptor", name);
    struct io_file *file = NULL;
    ret = io_file_from_fd(&file, own);
    if (ret < 0) {
        close(own);
        return ret;
    }
    struct chain_seen seen = {.count = 0};
    img_error_clear();
    return open_one(out, name, file, format, flags, opts, 0, &seen);
}

IMG_API void img_close(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return;
    /* Requests in flight finish first; refused (handle left open) from their own callback. */
    if (img_aio_close(img) < 0)
        return;
    /* Let calls still in flight on other threads finish first. */
    img_drain_enter(img);
    if (img->writable && img->fmt->flush)
        img->fmt->flush(img);
    img_io_leave(img);
    img_destroy(img);
}

IMG_API int64_t img_get_size(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    img_io_enter(img);
    int64_t size = (int64_t)img->size;
    img_io_leave(img);
    return size;
}

IMG_API const char *img_get_format(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return NULL;
    return img->fmt->name;
}

IMG_API img *img_get_backing(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return NULL;
    return img->backing;
}

void img_snapshots_free(struct img_snapshot *list, size_t count)
{
    for (size_t i = 0; list && i < count; i++) {
        free(list[i].id);
        free(list[i].name);
    }
    free(list);
}
