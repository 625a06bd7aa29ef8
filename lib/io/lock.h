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
 * "resize". Readers therefore coexist with readers, and nothing coexists with a writer. A
 * shared reader holds "consistent read" and refuses nothing, as QEMU's raw driver does for
 * `qemu-img info` or `map`: a raw image stays readable while a VM writes it, since there is no
 * metadata to see half-written.
 *
 * The locks belong to the open file description: closing the io_file releases them, and a
 * second open of the same file, even in this process, is refused like another process.
 */

#include <stdbool.h>

struct io_file;

enum io_lock_mode {
    IO_LOCK_SHARED_READ, /* holds consistent read; lets others write and resize */
    IO_LOCK_READ,        /* holds consistent read; refuses write and resize */
    IO_LOCK_WRITE,       /* holds consistent read, write and resize; refuses write and resize */
};

/*
 * Takes the locks for `mode` and checks them against every other holder. Returns 0, or -EBUSY
 * with a message naming the permission that is in the way and `what` (the file name for
 * messages), or another negative errno when the host refused to lock. On failure no lock is
 * left behind. Where the host has no open-file-description locks this does nothing and
 * succeeds, as QEMU's locking=auto does.
 */
int io_file_lock(struct io_file *f, enum io_lock_mode mode, const char *what);

/*
 * Only for a file locked IO_LOCK_SHARED_READ: turns its locks into a reader's (`refuse` true:
 * others may no longer write or resize; -EBUSY when someone already does) or back (`refuse` false).
 * A failed change leaves the locks as they were.
 */
int io_file_lock_refuse_writes(struct io_file *f, bool refuse, const char *what);

/* Drops the locks io_file_lock() took. Closing the file drops them too. */
void io_file_unlock(struct io_file *f);

/*
 * For files only this library names (the temporary a target is built in): marks the file in
 * use by the open file description `fd` with an exclusive lock on a byte QEMU never looks at,
 * so that a temporary whose writer was killed can be told from one being written. Returns 0
 * or a negative errno; succeeds without marking where the host has no such locks.
 */
int io_fd_mark_in_use(int fd);

/*
 * 1 when another open file description marks the file of `fd` in use (or the host cannot
 * tell: then every file counts as in use), 0 when nobody does, or a negative errno.
 */
int io_fd_in_use_elsewhere(int fd);

#endif
