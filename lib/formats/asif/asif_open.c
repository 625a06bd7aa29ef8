/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Probing, opening (header and directories, every bound checked), closing, mapping. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

int asif_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < 8 || memcmp(buf, ASIF_MAGIC, 4) != 0)
        return 0;
    return load_be32(buf + ASIF_OFF_VERSION) == ASIF_VERSION ? 100 : 50;
}

static void state_free(struct asif_state *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s->dir);
    free(s);
}

static int parse_header(struct img *img, struct asif_state *s, const uint8_t *h, uint64_t file_size)
{
    const char *name = img->filename;
    if (memcmp(h, ASIF_MAGIC, 4) != 0)
        return img_error(-EINVAL, "asif: '%s' is not an ASIF image (no 'shdw' magic)", name);
    uint32_t version = load_be32(h + ASIF_OFF_VERSION);
    if (version != ASIF_VERSION)
        return img_error(-ENOTSUP, "asif: '%s' has header version %" PRIu32 " (only 1 is known)",
                         name, version);
    s->header_size = load_be32(h + ASIF_OFF_HEADER_SIZE);
    s->flags = load_be32(h + ASIF_OFF_FLAGS);
    uint16_t segments = load_be16(h + ASIF_OFF_SEGMENTS);
    if (segments != 0)
        return img_error(-ENOTSUP,
                         "asif: '%s' has %" PRIu16 " in its segment count field (only 0 is known)",
                         name, segments);
    memcpy(s->uuid, h + ASIF_OFF_UUID, 16);
    s->sectors = load_be64(h + ASIF_OFF_SECTORS);
    uint64_t max_sectors = load_be64(h + ASIF_OFF_MAX_SECTORS);
    int ret = asif_geometry_init(&s->g, load_be16(h + ASIF_OFF_BLOCK_SIZE),
                                 load_be32(h + ASIF_OFF_CHUNK_SIZE), max_sectors, name);
    if (ret < 0)
        return ret;
    if (s->header_size < ASIF_HEADER_MIN || s->header_size > s->g.chunk_size)
        return img_error(-EINVAL, "asif: '%s' has header size %" PRIu32 " (0x%x..%" PRIu32 ")",
                         name, s->header_size, ASIF_HEADER_MIN, s->g.chunk_size);
    if (s->sectors > max_sectors)
        return img_error(-EINVAL,
                         "asif: '%s' has %" PRIu64 " sectors, more than its maximum %" PRIu64, name,
                         s->sectors, max_sectors);
    s->meta_chunk = load_be64(h + ASIF_OFF_META_CHUNK);
    if (s->meta_chunk >= s->g.max_bytes / s->g.chunk_size)
        return img_error(-EINVAL,
                         "asif: '%s' has its metadata at chunk %" PRIu64 ", past its maximum size",
                         name, s->meta_chunk);
    for (int i = 0; i < 2; i++) {
        uint64_t off = load_be64(h + (i ? ASIF_OFF_DIR1 : ASIF_OFF_DIR0)), end;
        if (off < s->header_size || off % 8 || add_overflows_u64(off, s->g.dir_bytes, &end) ||
            end > file_size)
            return img_error(-EINVAL,
                             "asif: '%s': directory %d at 0x%" PRIx64 " (%" PRIu64
                             " bytes) is not inside the file after the header",
                             name, i, off, s->g.dir_bytes);
        s->dir_off[i] = off;
    }
    uint64_t lo = min_u64(s->dir_off[0], s->dir_off[1]);
    if (s->dir_off[0] != s->dir_off[1] &&
        lo + s->g.dir_bytes > max_u64(s->dir_off[0], s->dir_off[1]))
        return img_error(-EINVAL, "asif: '%s': the two directories overlap", name);
    return 0;
}

static int load_directories(struct img *img, struct asif_state *s)
{
    for (int i = 0; i < 2; i++) {
        uint8_t raw[8];
        int ret = io_pread(img->file, raw, 8, s->dir_off[i]);
        if (ret < 0)
            return img_error(ret, "asif: cannot read directory %d of '%s': %s", i, img->filename,
                             img_strerror(ret));
        s->dir_seq[i] = load_be64(raw);
    }
    /* The higher sequence number is in force; on a tie the first (both are then the same). */
    s->active = s->dir_seq[1] > s->dir_seq[0] ? 1 : 0;
    size_t n = (size_t)s->g.dir_entries;
    uint8_t *raw = malloc(n * 8);
    s->dir = calloc(n ? n : 1, sizeof(*s->dir));
    if (!raw || !s->dir) {
        free(raw);
        return img_error(-ENOMEM, "asif: out of memory for the directory of '%s'", img->filename);
    }
    int ret = io_pread(img->file, raw, n * 8, s->dir_off[s->active] + 8);
    if (ret < 0) {
        free(raw);
        return img_error(ret, "asif: cannot read the directory of '%s': %s", img->filename,
                         img_strerror(ret));
    }
    for (size_t i = 0; i < n; i++)
        s->dir[i] = load_be64(raw + 8 * i);
    free(raw);
    return 0;
}

int asif_open(struct img *img, const img_opts *opts)
{
    (void)opts;
    int64_t file_size = io_file_size(img->file);
    if (file_size < 0)
        return img_error((int)file_size, "asif: cannot read the size of '%s'", img->filename);
    if (file_size < ASIF_HEADER_MIN)
        return img_error(-EINVAL, "asif: '%s' is too short for an ASIF header (%" PRId64 " bytes)",
                         img->filename, file_size);
    struct asif_state *s = calloc(1, sizeof(*s));
    if (!s)
        return img_error(-ENOMEM, "asif: out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    uint8_t h[ASIF_HEADER_MIN];
    int ret = io_pread(img->file, h, sizeof(h), 0);
    if (ret < 0)
        img_error(ret, "asif: cannot read the header of '%s': %s", img->filename,
                  img_strerror(ret));
    if (ret == 0)
        ret = parse_header(img, s, h, (uint64_t)file_size);
    if (ret == 0 && img->writable && s->flags != 0)
        ret = img_error(-ENOTSUP,
                        "asif: '%s' has header flags 0x%08" PRIx32
                        ", whose meaning is not known: it can only be opened read-only",
                        img->filename, s->flags);
    if (ret == 0)
        ret = load_directories(img, s);
    if (ret < 0) {
        state_free(s);
        return ret;
    }
    s->file_chunks = ((uint64_t)file_size + s->g.chunk_size - 1) / s->g.chunk_size;
    s->next_chunk = s->file_chunks;
    img->priv = s;
    img->size = s->sectors * s->g.block_size;
    img->cluster_size = s->g.chunk_size;
    asif_load_metadata(img);
    return 0;
}

void asif_close(struct img *img)
{
    state_free(img->priv);
    img->priv = NULL;
}

int asif_map(struct img *img, uint64_t offset, uint64_t length, struct img_extent *ext)
{
    struct asif_state *s = img->priv;
    pthread_mutex_lock(&s->lock);
    int ret = asif_lookup(img, offset, length, ext);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int asif_flush(struct img *img)
{
    int ret = io_fsync(img->file);
    if (ret < 0)
        return img_error(ret, "asif: flush of '%s' failed: %s", img->filename, img_strerror(ret));
    return 0;
}
