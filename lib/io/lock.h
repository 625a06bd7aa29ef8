/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_IO_LOCK_H
#define IMG_IO_LOCK_H

/*
 * Image locking that interoperates with QEMU's file-posix driver.
 *
 * QEMU marks what each user of an image file does with shared (read) open-file-description
 * locks on single bytes: byte 100 + n says "I hold permission n", byte 200 + n says "I do not
 * let others hold permission n". Before using a file, a user checks that nobody refuses a
 * permission it holds and that nobody holds a permission it refuses. Taking the same bytes
 * makes a running VM refuse an image this library is writing, and this library refuse an
 * image a VM is writing.
 *
 * A reader holds "consistent read" and refuses "write" and "resize" (as a qcow2 node does on
 * its file, and as `qemu-img convert` does on its source); a writer also holds "write" and
 * "resize". Readers therefore coexist with readers, and nothing coexists with a writer.
 *
 * The locks belong to the open file description: closing the io_file releases them, and a
 * second open of the same file, even in this process, is refused like another process.
 */

#include <stdbool.h>

struct io_file;

/*
 * Takes the locks for a reader (`writable` false) or a writer and checks them against every
 * other holder. Returns 0, or -EBUSY with a message naming the permission that is in the way
 * and `what` (the file name for messages), or another negative errno when the host refused to
 * lock. On failure no lock is left behind. Where the host has no open-file-description locks
 * this does nothing and succeeds, as QEMU's locking=auto does.
 */
int io_file_lock(struct io_file *f, bool writable, const char *what);

/* Drops the locks io_file_lock() took. Closing the file drops them too. */
void io_file_unlock(struct io_file *f);

#endif
