/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Probe, open and close, and the backend's entry table. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vhdx/vhdx.h"
#include "io/io.h"

static int vhdx_probe(const uint8_t *buf, size_t len, const char *filename)
{
    return len >= 8 && memcmp(buf, "vhdxfile", 8) == 0 ? 100 : 0;
}

static void state_free(struct vhdx_state *s)
{
    if (!s)
        return;
    free(s->bat);
    free(s->regions);
    free(s);
}

void vhdx_close(struct img *img)
{
    state_free(img->priv);
    img->priv = NULL;
}

int vhdx_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    uint8_t sig[8];
    int ret = io_pread(img->file, sig, sizeof(sig), 0);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot read '%s': %s", img->filename, img_strerror(ret));
    if (memcmp(sig, "vhdxfile", 8) != 0)
        return img_error(-EINVAL, "vhdx: '%s' is not a VHDX image (no 'vhdxfile' signature)",
                         img->filename);
    struct vhdx_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "vhdx: out of memory");
    vhdx_guid_generate(s->session_guid);
    /* The log is replayed before the region table and metadata are read: it may change them. */
    if ((ret = vhdx_read_headers(img, s)) < 0 || (ret = vhdx_log_replay_if_needed(img, s)) < 0 ||
        (ret = vhdx_read_regions(img, s)) < 0 || (ret = vhdx_read_metadata(img, s)) < 0 ||
        (ret = vhdx_read_bat(img, s)) < 0)
        goto fail;
    img->priv = s;
    /* As QEMU: a BAT naming blocks past the end of the file or on metadata refuses the open,
     * unless the image is opened to be checked, when check reports it. */
    if (!(img->flags & IMG_OPEN_CHECK) && (ret = vhdx_check_bat(img, s, NULL)) < 0)
        goto fail;
    img->size = s->virtual_size;
    img->cluster_size = s->block_size;
    /* Each session names itself in the headers before it writes anything else. */
    if (img->writable && (ret = vhdx_update_headers(img, s, false, NULL)) < 0)
        goto fail;
    return 0;
fail:
    free(img->backing_name);
    img->backing_name = NULL;
    img->priv = NULL;
    state_free(s);
    return ret;
}

int vhdx_flush(struct img *img)
{
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "vhdx: cannot flush '%s': %s", img->filename, img_strerror(ret));
    return 0;
}

const struct img_format format_vhdx = {
    .name = "vhdx",
    /* QEMU's vhdx driver answers no block status: map reports every range as data. */
    .caps = FORMAT_HAS_METADATA | FORMAT_NO_BLOCK_STATUS,
    .create_options = vhdx_create_options,
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .map = vhdx_map,
    .create = vhdx_create,
    .measure = vhdx_measure,
    .alloc = vhdx_alloc,
    .alloc_commit = vhdx_alloc_commit,
    .zero = vhdx_zero,
    .discard = vhdx_discard,
    .flush = vhdx_flush,
    .check = vhdx_check,
};
