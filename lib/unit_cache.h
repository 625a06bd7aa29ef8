/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UNIT_CACHE_H
#define IMG_UNIT_CACHE_H

/*
 * The last decompressed unit of an extent its backend marked `cacheable` (a unit that never
 * changes while its image is open, such as a DMG chunk or a cloop block). Such units may be
 * far larger than the reads that cross them (DMG chunks reach 64 MiB), and without it every
 * read of a piece would decompress the whole unit again: a small hostile image could then
 * cost minutes. One unit for the process, under a mutex, dropped when its file closes.
 */

#include <stdbool.h>
#include <stdint.h>

#include "image.h"

struct io_file;

/* Copies ext->length bytes at guest `offset` from the cached unit of `ext`, if it is there. */
bool unit_cache_read(const struct img_extent *ext, void *buf, uint64_t offset);
/* Keeps `unit` (malloc'd, ext->unit_size bytes: the cache takes it) as the cached unit. */
void unit_cache_keep(const struct img_extent *ext, void *unit);
/* Drops the cached unit if it came from `file` (called before the file is closed). */
void unit_cache_forget(const struct io_file *file);

#endif
