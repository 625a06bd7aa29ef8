/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_COMMIT_REOPEN_H
#define IMG_COMMIT_REOPEN_H

#include <stdbool.h>

struct img;

/*
 * Reopens one layer of a backing chain in place, read-write (`writable`) or read-only again,
 * as QEMU reopens the base of a commit: a new descriptor of the same file, the locks of the
 * new mode, and the backend opened anew on it; the layer keeps its place in the chain, its
 * name and its backing image. Takes the layer's drain lock itself; the caller keeps the data
 * path of every image above it quiet (commit holds the top's drain lock).
 *
 * Returns 0, or a negative errno with qemu-img's message, the layer unchanged: -EBUSY 'Failed
 * to get "write" lock' when another process holds or refuses what the new mode needs, the open
 * error ("Could not open 'F': Permission denied"). Should the backend refuse the file in the
 * new mode, the layer is opened in its old mode again; where even that fails, its reads fail
 * with -EIO from then on, never touching freed state.
 */
int commit_reopen_layer(struct img *layer, bool writable);

#endif
