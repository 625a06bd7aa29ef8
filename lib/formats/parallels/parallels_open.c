/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Opening and closing Parallels images, and the backend's entry table. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

static void state_free(struct prl_state *s)
{
    if (!s)
        return;
    if (s->data_owned)
        io_file_close(s->data);
    pthread_cond_destroy(&s->inflight_done);
    free(s->data_name);
    free(s->bat);
    free(s->inflight);
    free(s);
}

/* Reads the catalog, refusing one that the file does not hold (bounded memory). */
static int read_catalog(struct prl_state *s, uint64_t file_size)
{
    uint64_t bytes = (uint64_t)s->hdr.bat_entries * 4;
    if (PRL_HEADER_SIZE + bytes > file_size)
        return img_error(-EINVAL,
                         "parallels: '%s': the catalog of %" PRIu32
                         " entries extends past the end of the file (%" PRIu64 " bytes)",
                         s->data_name, s->hdr.bat_entries, file_size);
    s->bat = malloc(bytes ? bytes : 1);
    if (!s->bat)
        return img_error(-ENOMEM,
                         "parallels: '%s': out of memory for a catalog of %" PRIu32 " entries",
                         s->data_name, s->hdr.bat_entries);
    int ret = bytes ? io_pread(s->data, s->bat, bytes, PRL_HEADER_SIZE) : 0;
    if (ret < 0)
        return img_error(ret, "parallels: '%s': cannot read the catalog: %s", s->data_name,
                         img_strerror(ret));
    for (uint32_t i = 0; i < s->hdr.bat_entries; i++)
        s->bat[i] = load_le32(&s->bat[i]);
    return 0;
}

/* The first free sector: past data_off, the catalog and every cluster the catalog names. */
static void compute_data_end(struct prl_state *s)
{
    uint64_t catalog_end =
        align_up_u64(PRL_HEADER_SIZE + (uint64_t)s->hdr.bat_entries * 4, PRL_SECTOR) / PRL_SECTOR;
    uint64_t end = max_u64(s->hdr.data_off, catalog_end);
    for (uint32_t i = 0; i < s->hdr.bat_entries; i++) {
        uint64_t sector = prl_bat_sector(s, i);
        if (sector && sector + s->hdr.tracks > end)
            end = sector + s->hdr.tracks;
    }
    s->data_end = end;
}

static int write_inuse(struct prl_state *s, uint32_t value)
{
    uint8_t buf[4];
    store_le32(buf, value);
    int ret = io_pwrite(s->data, buf, sizeof(buf), PRL_OFF_INUSE);
    if (ret == 0)
        ret = io_fsync(s->data);
    return ret;
}

/* Finds the file holding the image: img->file itself, or the one DiskDescriptor.xml names. */
static int open_data_file(struct img *img, struct prl_state *s)
{
    uint8_t head[2048];
    int64_t size = io_file_size(img->file);
    if (size < 0)
        return img_error((int)size, "parallels: cannot read the size of '%s'", img->filename);
    size_t n = (size_t)min_u64((uint64_t)size, sizeof(head));
    int ret = n ? io_pread(img->file, head, n, 0) : 0;
    if (ret < 0)
        return img_error(ret, "parallels: cannot read '%s': %s", img->filename, img_strerror(ret));
    if (prl_probe(head, n, img->filename) == 0 && prl_xml_probe(head, n, img->filename) > 0) {
        char *name = NULL;
        ret = prl_xml_image_name(img, &name);
        if (ret == 0)
            ret = img_open_named_file(img, name, IMG_OPEN_ALLOW_EXTERNAL_EXTENTS, "image file",
                                      &s->data);
        if (ret == 0) {
            s->data_owned = true;
            s->data_name = img_resolve_path(img->filename, name);
        }
        free(name);
        if (ret < 0)
            return ret;
    } else {
        s->data = img->file;
        s->data_name = strdup(img->filename);
    }
    return s->data_name ? 0 : img_error(-ENOMEM, "out of memory");
}

static int prl_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    struct prl_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "out of memory");
    pthread_cond_init(&s->inflight_done, NULL);
    int ret = open_data_file(img, s);
    int64_t file_size = ret == 0 ? io_file_size(s->data) : 0;
    if (ret == 0 && file_size < 0)
        ret = img_error((int)file_size, "parallels: cannot read the size of '%s'", s->data_name);
    if (ret == 0 && (uint64_t)file_size < PRL_HEADER_SIZE)
        ret =
            img_error(-EINVAL, "parallels: '%s' is too short for a Parallels header", s->data_name);
    if (ret == 0)
        ret = io_pread(s->data, s->raw_header, PRL_HEADER_SIZE, 0);
    if (ret == 0)
        ret = prl_parse_header(s->raw_header, PRL_HEADER_SIZE, s->data_name, &s->hdr);
    if (ret == 0) {
        s->off_multiplier = s->hdr.v2 ? s->hdr.tracks : 1;
        s->cluster_bytes = (uint64_t)s->hdr.tracks * PRL_SECTOR;
        s->stale_end = (uint64_t)file_size;
        ret = read_catalog(s, (uint64_t)file_size);
    }
    if (ret == 0) {
        compute_data_end(s);
        s->header_unclean = s->hdr.inuse == PRL_INUSE_MAGIC;
        if (s->header_unclean && img->writable && !(img->flags & IMG_OPEN_CHECK))
            ret = img_error(-EACCES,
                            "parallels: '%s': Image was not closed correctly; cannot be opened "
                            "read/write",
                            s->data_name);
    }
    /*
     * qemu-img 7.2 opens such an image for writing by ignoring the extension, then cuts it off
     * with the rest of the file past the data when it closes, leaving a header that points
     * past the end: the image no longer opens. Here writers are refused instead.
     */
    if (ret == 0 && s->hdr.ext_off && img->writable)
        ret = img_error(-ENOTSUP,
                        "parallels: '%s' has a format extension (dirty bitmaps), which writing "
                        "would destroy; it can only be opened read-only",
                        s->data_name);
    if (ret == 0 && s->hdr.ext_off)
        ret = prl_read_extension(img, s, s->hdr.ext_off * PRL_SECTOR);
    if (ret == 0 && img->writable) {
        ret = write_inuse(s, PRL_INUSE_MAGIC);
        if (ret < 0)
            img_error(ret, "parallels: '%s': cannot mark the image in use: %s", s->data_name,
                      img_strerror(ret));
        s->marked_in_use = ret == 0;
    }
    if (ret < 0) {
        state_free(s);
        return ret;
    }
    img->size = s->hdr.nb_sectors * PRL_SECTOR;
    img->cluster_size = 0; /* qemu-img info prints no cluster size for Parallels */
    img->priv = s;
    return 0;
}

/*
 * A writer clears the in-use marker and cuts the file after its last cluster, as QEMU does on
 * close. Best effort: a failure leaves the marker, which check reports.
 */
static void prl_close(struct img *img)
{
    struct prl_state *s = img->priv;
    if (s->marked_in_use) {
        if (io_truncate(s->data, s->data_end * PRL_SECTOR) == 0 && io_fsync(s->data) == 0)
            write_inuse(s, 0);
    }
    state_free(s);
    img->priv = NULL;
}

int prl_flush(struct img *img)
{
    struct prl_state *s = img->priv;
    int ret = io_fsync(s->data);
    if (ret < 0)
        return img_error(ret, "parallels: '%s': flush failed: %s", s->data_name, img_strerror(ret));
    return 0;
}

static int prl_any_probe(const uint8_t *buf, size_t len, const char *filename)
{
    int score = prl_probe(buf, len, filename);
    return score ? score : prl_xml_probe(buf, len, filename);
}

const struct img_format format_parallels = {
    .name = "parallels",
    .caps = FORMAT_HAS_METADATA | FORMAT_NO_DRIVER_INFO,
    .create_options = prl_create_options,
    .folder_file = "DiskDescriptor.xml",
    .probe = prl_any_probe,
    .open = prl_open,
    .close = prl_close,
    .map = prl_map,
    .create = prl_create,
    .measure = prl_measure,
    .alloc = prl_alloc,
    .alloc_commit = prl_alloc_commit,
    .zero = prl_zero,
    .flush = prl_flush,
    .check = prl_check,
};
