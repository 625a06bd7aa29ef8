/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_CONVERT_TARGET_H
#define IMG_CONVERT_TARGET_H

/*
 * The file an img_create or img_convert writes: opened through the kernel (which follows
 * symbolic links under its own rules, fs.protected_symlinks included), locked as QEMU locks
 * it before a byte of it changes, and either written where it is or replaced by a temporary
 * built beside it.
 *
 * Rules, in the order they apply:
 *  - a folder, character device, FIFO or socket is refused before anything is written;
 *  - an existing file or block device is write-locked (QEMU's byte-range locks) for the whole
 *    operation: a target a VM holds is refused and left untouched;
 *  - a block device is written in place (it cannot be replaced);
 *  - a regular file that is to be replaced is built in a temporary in the folder of the file
 *    opened (not of the link naming it) and renamed over it on success, taking over its mode,
 *    owner (where allowed) and extended attributes (ACLs and security labels included);
 *  - a regular file with other hard links is refused rather than split from them;
 *  - a target that did not exist is created empty first (so the kernel follows a dangling
 *    link), and removed again when the operation fails.
 *
 * Temporaries are named ".<name>.<random>.tmp" and marked in use by their writer (lock.h);
 * one whose writer was killed is removed by the next operation on the same target.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "imgutil.h"

struct io_file;

struct target_file {
    const char *path;     /* as the caller named it, for messages */
    const char *action;   /* "create" or "convert", for messages */
    struct io_file *file; /* the target, open read-write and write-locked */
    dev_t dev;
    ino_t ino;
    bool is_block;
    bool is_source; /* the very file target_open was given as `source` */
    bool created;   /* made empty by target_open: removed on failure */
    bool forgotten; /* that empty file was removed again: the name is to be taken */
    bool was_empty; /* an existing empty regular file: built in place */
    int dir_fd;     /* the folder holding the file opened */
    char *dir_path; /* its name, for paths handed on */
    char *name;     /* the file's name in that folder */
    int temp_fd;    /* the temporary (open, marked in use), or -1 */
    char *temp_name;
    char *temp_path;
};

/*
 * Opens and locks `path` (creating it empty when it does not exist). `action` names the
 * operation in messages. `source` (or NULL) is a file the caller holds open and locked
 * against other writers (convert's source): a target that is that very file is not locked a
 * second time, which would refuse it as another holder. Returns 0 or a negative errno with a
 * message; on failure nothing is left open, created or changed.
 */
int target_open(struct target_file *t, const char *path, const char *action,
                struct io_file *source);

/*
 * Creates the temporary the replacement is built in, beside the file opened, with the mode,
 * owner and extended attributes of the target. Removes stale temporaries of the same target
 * first. t->temp_path then names it.
 */
int target_make_temp(struct target_file *t);

/*
 * For a target target_open created: removes the empty file again, so the finished temporary
 * is renamed to a free name (ext4 writes out at once a file renamed over another one, which
 * would stall the end of every convert to a new name). The folder and name stay as the
 * kernel found them, through any link.
 */
void target_forget_new(struct target_file *t);

/* Renames the finished temporary over the target (or to its free name). */
int target_commit(struct target_file *t);

/*
 * Drops the write lock on the target, for a caller about to open it again by name (which
 * takes the lock again: a second lock of this process would refuse it like another's).
 */
void target_unlock(struct target_file *t);

/*
 * Releases everything. When `failed`, removes the temporary and a target file that
 * target_open created, and empties again an empty target that was built in place.
 */
void target_close(struct target_file *t, bool failed);

/*
 * img_create() of an image built at `path` that will be renamed to `final_path` (convert's
 * temporary): formats naming files after the image (VMDK extents) name them after the final
 * name (struct img_create_args.final_path). Defined in create.c.
 */
int img_create_final(const char *path, const char *final_path, const char *format, uint64_t size,
                     const img_opts *opts);

#endif
