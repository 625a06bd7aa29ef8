/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The decompressed-unit cache (see unit_cache.h). */
#include "unit_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const struct io_file *file; /* NULL: empty */
    uint64_t host_offset, comp_length, unit_start;
    uint32_t unit_size;
    int codec;
    void *data;
} cached;

static bool same_unit(const struct img_extent *ext)
{
    return cached.file == ext->file && cached.host_offset == ext->host_offset &&
           cached.comp_length == ext->comp_length && cached.unit_start == ext->unit_start &&
           cached.unit_size == ext->unit_size && cached.codec == ext->codec;
}

bool unit_cache_read(const struct img_extent *ext, void *buf, uint64_t offset)
{
    bool hit = false;
    pthread_mutex_lock(&cache_lock);
    /* The caller checked that the range lies inside the unit. */
    if (cached.file && same_unit(ext)) {
        memcpy(buf, (const uint8_t *)cached.data + (offset - ext->unit_start), ext->length);
        hit = true;
    }
    pthread_mutex_unlock(&cache_lock);
    return hit;
}

void unit_cache_keep(const struct img_extent *ext, void *unit)
{
    pthread_mutex_lock(&cache_lock);
    void *old = cached.data;
    cached.file = ext->file;
    cached.host_offset = ext->host_offset;
    cached.comp_length = ext->comp_length;
    cached.unit_start = ext->unit_start;
    cached.unit_size = ext->unit_size;
    cached.codec = ext->codec;
    cached.data = unit;
    pthread_mutex_unlock(&cache_lock);
    free(old);
}

void unit_cache_forget(const struct io_file *file)
{
    void *old = NULL;
    pthread_mutex_lock(&cache_lock);
    if (cached.file && cached.file == file) {
        old = cached.data;
        cached.file = NULL;
        cached.data = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    free(old);
}
