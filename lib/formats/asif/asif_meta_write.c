/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Taking new chunks at the end of the file and linking new tables through the directories,
 * the format's own crash-safe way: the inactive directory receives the whole new directory,
 * is synced, and only then gets a sequence number above the active one's. Callers hold s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/endian.h"

int asif_take_chunk(struct img *img, uint64_t *index)
{
    struct asif_state *s = img->priv;
    uint64_t idx = s->next_chunk;
    if (idx > ASIF_ENTRY_INDEX_MASK || (idx + 1) > UINT64_MAX / s->g.chunk_size)
        return img_error(-EFBIG, "asif: '%s' has no chunk numbers left", img->filename);
    /* The file grows by whole chunks, so every chunk taken reads as zeros until written. */
    int ret = io_truncate(img->file, (idx + 1) * s->g.chunk_size);
    if (ret < 0)
        return img_error(ret, "asif: cannot extend '%s' by a chunk: %s", img->filename,
                         img_strerror(ret));
    s->next_chunk = idx + 1;
    if (s->file_chunks < s->next_chunk)
        s->file_chunks = s->next_chunk;
    *index = idx;
    return 0;
}

static int write_directory(struct img *img, int slot, uint64_t seq)
{
    struct asif_state *s = img->priv;
    size_t n = (size_t)s->g.dir_entries;
    uint8_t *raw = malloc(n * 8 + 8);
    if (!raw)
        return img_error(-ENOMEM, "asif: out of memory for the directory of '%s'", img->filename);
    for (size_t i = 0; i < n; i++)
        store_be64(raw + 8 + 8 * i, s->dir[i]);
    /* Entries first, synced; the sequence number that puts them in force last. */
    int ret = io_pwrite(img->file, raw + 8, n * 8, s->dir_off[slot] + 8);
    if (ret == 0)
        ret = io_fsync(img->file);
    store_be64(raw, seq);
    if (ret == 0)
        ret = io_pwrite(img->file, raw, 8, s->dir_off[slot]);
    free(raw);
    if (ret < 0)
        return img_error(ret, "asif: cannot write directory %d of '%s': %s", slot, img->filename,
                         img_strerror(ret));
    return 0;
}

int asif_ensure_table(struct img *img, uint64_t table)
{
    struct asif_state *s = img->priv;
    if (s->dir[table] != 0)
        return 0;
    uint64_t seq = s->dir_seq[s->active];
    if (seq == UINT64_MAX)
        return img_error(-EFBIG, "asif: '%s': the directory sequence number is exhausted",
                         img->filename);
    uint64_t chunk;
    int ret = asif_take_chunk(img, &chunk);
    if (ret < 0)
        return ret;
    int slot = 1 - s->active;
    s->dir[table] = chunk;
    ret = write_directory(img, slot, seq + 1);
    if (ret < 0) {
        /* The old directory stays in force: the new table is not linked (the chunk leaks). */
        s->dir[table] = 0;
        return ret;
    }
    s->dir_seq[slot] = seq + 1;
    s->active = slot;
    return 0;
}

void asif_inflight_wait(struct asif_state *s, uint64_t chunk)
{
    for (;;) {
        bool busy = false;
        for (struct asif_inflight *n = s->inflight; n && !busy; n = n->next)
            busy = n->chunk == chunk;
        if (!busy)
            return;
        pthread_cond_wait(&s->idle, &s->lock);
    }
}
