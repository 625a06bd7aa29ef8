/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reopening a layer of a backing chain read-write and back, for commit (see commit_reopen.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "commit_reopen.h"
#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "io/lock.h"
#include "unit_cache.h"

/* What a layer's reads meet when it could be opened in neither mode again. */
static int lost_layer_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    (void)offset;
    (void)length;
    (void)ext;
    return img_error(-EIO, "%s: the image could not be reopened after a commit", img->filename);
}

static const struct img_format lost_layer = {
    .name = "unavailable",
    .map = lost_layer_map,
};

/* The lock mode image.c gives a layer opened this way (a raw reader lets others write). */
static enum io_lock_mode lock_mode(const struct img *layer, bool writable)
{
    if (writable)
        return IO_LOCK_WRITE;
    return format_has(layer->fmt, FORMAT_SHARED_READ_LOCK) ? IO_LOCK_SHARED_READ : IO_LOCK_READ;
}

static int open_file(struct img *layer, bool writable, struct io_file **out)
{
    int ret = io_file_open(out, layer->filename, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (ret < 0) {
        char reason[128];
        return img_error(ret, "Could not open '%s': %s", layer->filename,
                         strerror_r(-ret, reason, sizeof(reason)));
    }
    return 0;
}

/* Takes the locks of the new mode on `file`, our own old ones dropped (they would conflict). */
static int lock_file(struct img *layer, struct io_file *file, bool writable)
{
    if (layer->flags & IMG_OPEN_FORCE_SHARE)
        return 0;
    io_file_unlock(layer->file);
    int ret = io_file_lock(file, lock_mode(layer, writable), layer->filename);
    if (ret == 0)
        return 0;
    /*
     * Keep the layer as it was: its old locks again. Another process may have taken a lock in
     * the moment between (the two descriptions would conflict if both were locked at once);
     * then the layer stays open unlocked and says so.
     */
    if (ret == -EBUSY)
        img_error(ret, "Failed to get \"%s\" lock\nIs another process using the image [%s]?",
                  writable ? "write" : "consistent read", layer->filename);
    char *why = strdup(img_last_error());
    if (io_file_lock(layer->file, lock_mode(layer, layer->writable), layer->filename) < 0)
        img_error(ret, "%s (and its earlier lock could not be taken again)", why ? why : "");
    else
        img_error(ret, "%s", why ? why : "");
    free(why);
    return ret;
}

/* Closes the layer's backend and file and opens the backend on `file` in the new mode. */
static int swap_backend(struct img *layer, struct io_file *file, bool writable)
{
    if (layer->priv)
        layer->fmt->close(layer);
    layer->priv = NULL;
    unit_cache_forget(layer->file);
    io_file_close(layer->file);
    layer->file = file;
    layer->writable = writable;
    layer->flags &= ~(IMG_OPEN_READ_ONLY | IMG_OPEN_READ_WRITE);
    layer->flags |= writable ? IMG_OPEN_READ_WRITE : IMG_OPEN_READ_ONLY;
    layer->lock_shared_read =
        !(layer->flags & IMG_OPEN_FORCE_SHARE) && lock_mode(layer, writable) == IO_LOCK_SHARED_READ;

    /* The names the layer had stay: the backend's open records them again, and they are the same.
     */
    struct img_named_file *named = layer->named;
    size_t named_count = layer->named_count;
    char *backing_name = layer->backing_name, *backing_format = layer->backing_format;
    layer->named = NULL;
    layer->named_count = 0;
    layer->backing_name = layer->backing_format = NULL;
    int ret = layer->fmt->open(layer, NULL);
    if (ret < 0)
        layer->priv = NULL;
    img_named_files_free(layer);
    free(layer->backing_name);
    free(layer->backing_format);
    layer->named = named;
    layer->named_count = named_count;
    layer->backing_name = backing_name;
    layer->backing_format = backing_format;
    return ret;
}

static int reopen_locked(struct img *layer, bool writable)
{
    int ret = 0;
    if (layer->writable && layer->fmt->flush)
        ret = layer->fmt->flush(layer);
    struct io_file *file = NULL;
    if (ret == 0)
        ret = open_file(layer, writable, &file);
    if (ret == 0) {
        ret = lock_file(layer, file, writable);
        if (ret < 0)
            io_file_close(file);
    }
    if (ret < 0)
        return ret;
    bool old_mode = layer->writable;
    uint64_t old_size = layer->size;
    ret = swap_backend(layer, file, writable);
    /* Open options are not kept (vpc's force_size_calc): a layer must not change size. */
    if (ret == 0 && layer->size != old_size)
        ret = img_error(-EIO, "%s: the image's size changed when it was reopened", layer->filename);
    if (ret == 0)
        return 0;
    /* The backend refused the file in the new mode: back to the old one, keeping the message. */
    char *why = strdup(img_last_error());
    int back = open_file(layer, old_mode, &file);
    if (back == 0) {
        back = lock_file(layer, file, old_mode);
        if (back < 0)
            io_file_close(file);
    }
    if (back == 0)
        back = swap_backend(layer, file, old_mode);
    if (back < 0)
        layer->fmt = &lost_layer;
    img_error(ret, "%s", why ? why : "out of memory");
    free(why);
    return ret;
}

int commit_reopen_layer(struct img *layer, bool writable)
{
    if (layer->writable == writable)
        return 0;
    img_drain_enter(layer);
    int ret = reopen_locked(layer, writable);
    img_io_leave(layer);
    return ret;
}
