/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* QEMU-compatible byte-range locks on image files (see lock.h for the protocol). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "error.h"
#include "io.h"

/* Libvirt uses byte 0; QEMU keeps its bytes well clear of it. */
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

/* QEMU's block permissions, by bit number: the lock bytes are BASE + bit. */
enum lock_perm {
    PERM_CONSISTENT_READ = 1u << 0,
    PERM_WRITE = 1u << 1,
    PERM_WRITE_UNCHANGED = 1u << 2,
    PERM_RESIZE = 1u << 3,
};
#define PERM_COUNT 4

/* The names QEMU prints for each permission, so messages read the same. */
static const char *const perm_names[PERM_COUNT] = {
    "consistent read",
    "write",
    "write unchanged",
    "resize",
};

#ifdef F_OFD_SETLK

static int set_byte_lock(int fd, int byte, short type)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };
    int ret;
    do {
        ret = fcntl(fd, F_OFD_SETLK, &fl);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

/*
 * True (1) when another open file description holds a lock on `byte`. Testing for a write
 * lock finds every other holder, since QEMU's locks are all shared ones; our own locks never
 * conflict with themselves.
 */
static int byte_is_held_elsewhere(int fd, int byte)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };
    int ret;
    do {
        ret = fcntl(fd, F_OFD_GETLK, &fl);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

/* A busy byte reads as the image being in use; anything else is the host refusing to lock. */
static int lock_failure(int err, int byte, const char *what)
{
    if (err == -EAGAIN || err == -EACCES)
        return img_error(-EBUSY,
                         "Failed to lock byte %d of '%s': is another process using the image?",
                         byte, what);
    char reason[128];
    return img_error(err, "Failed to lock byte %d of '%s': %s", byte, what,
                     strerror_r(-err, reason, sizeof(reason)));
}

static int take_locks(int fd, unsigned held, unsigned refused, const char *what)
{
    for (int i = 0; i < PERM_COUNT; i++) {
        if (held & (1u << i)) {
            int ret = set_byte_lock(fd, LOCK_PERM_BASE + i, F_RDLCK);
            if (ret < 0)
                return lock_failure(ret, LOCK_PERM_BASE + i, what);
        }
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        if (refused & (1u << i)) {
            int ret = set_byte_lock(fd, LOCK_SHARED_BASE + i, F_RDLCK);
            if (ret < 0)
                return lock_failure(ret, LOCK_SHARED_BASE + i, what);
        }
    }
    return 0;
}

static int conflict(int ret, bool shared, int perm, int byte, const char *what)
{
    if (ret < 0) {
        char reason[128];
        return img_error(ret, "Failed to test lock byte %d of '%s': %s", byte, what,
                         strerror_r(-ret, reason, sizeof(reason)));
    }
    return img_error(-EBUSY,
                     "Failed to get %s\"%s\" lock on '%s': is another process (a running VM?) "
                     "using the image?",
                     shared ? "shared " : "", perm_names[perm], what);
}

/* The same order as QEMU, so the permission named in the message is the one QEMU names. */
static int check_locks(int fd, unsigned held, unsigned refused, const char *what)
{
    for (int i = 0; i < PERM_COUNT; i++) {
        if (!(held & (1u << i)))
            continue;
        int ret = byte_is_held_elsewhere(fd, LOCK_SHARED_BASE + i);
        if (ret != 0)
            return conflict(ret, false, i, LOCK_SHARED_BASE + i, what);
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        if (!(refused & (1u << i)))
            continue;
        int ret = byte_is_held_elsewhere(fd, LOCK_PERM_BASE + i);
        if (ret != 0)
            return conflict(ret, true, i, LOCK_PERM_BASE + i, what);
    }
    return 0;
}

/* The bytes a refusal of others' writing takes, and what others must not hold meanwhile. */
#define WRITE_REFUSALS (PERM_WRITE | PERM_RESIZE)

static bool host_has_ofd_locks(int fd)
{
    /* A kernel without OFD locks says EINVAL; QEMU then runs unlocked, and so do we. */
    return byte_is_held_elsewhere(fd, LOCK_PERM_BASE) != -EINVAL;
}

static void release_bytes(int fd, int base, unsigned perms)
{
    for (int i = 0; i < PERM_COUNT; i++)
        if (perms & (1u << i))
            set_byte_lock(fd, base + i, F_UNLCK);
}

int io_file_lock(struct io_file *f, enum io_lock_mode mode, const char *what)
{
    int fd = io_file_fd(f);
    if (fd < 0)
        return img_error(-EBADF, "cannot lock '%s': the file is not open", what);

    unsigned held = PERM_CONSISTENT_READ;
    if (mode == IO_LOCK_WRITE)
        held |= PERM_WRITE | PERM_RESIZE;
    /* Metadata and data may not change under us, unless the caller can live with it. */
    unsigned refused = mode == IO_LOCK_SHARED_READ ? 0 : WRITE_REFUSALS;

    if (!host_has_ofd_locks(fd))
        return 0;
    int ret = take_locks(fd, held, refused, what);
    if (ret == 0)
        ret = check_locks(fd, held, refused, what);
    if (ret < 0)
        io_file_unlock(f);
    return ret;
}

int io_file_lock_refuse_writes(struct io_file *f, bool refuse, const char *what)
{
    int fd = io_file_fd(f);
    if (fd < 0)
        return img_error(-EBADF, "cannot lock '%s': the file is not open", what);
    if (!host_has_ofd_locks(fd))
        return 0;
    if (!refuse) {
        release_bytes(fd, LOCK_SHARED_BASE, WRITE_REFUSALS);
        return 0;
    }
    int ret = take_locks(fd, 0, WRITE_REFUSALS, what);
    if (ret == 0)
        ret = check_locks(fd, 0, WRITE_REFUSALS, what);
    if (ret < 0)
        release_bytes(fd, LOCK_SHARED_BASE, WRITE_REFUSALS);
    return ret;
}

void io_file_unlock(struct io_file *f)
{
    int fd = io_file_fd(f);
    if (fd < 0)
        return;
    struct flock fl = {
        .l_type = F_UNLCK,
        .l_whence = SEEK_SET,
        .l_start = LOCK_PERM_BASE,
        .l_len = LOCK_SHARED_BASE + PERM_COUNT - LOCK_PERM_BASE,
    };
    /* Releasing only shrinks what we hold; the file closes soon either way. */
    while (fcntl(fd, F_OFD_SETLK, &fl) < 0 && errno == EINTR)
        ;
}

/* Below QEMU's bytes (100 and up) and clear of libvirt's byte 0. */
#define IN_USE_BYTE 1

int io_fd_mark_in_use(int fd)
{
    if (!host_has_ofd_locks(fd))
        return 0;
    return set_byte_lock(fd, IN_USE_BYTE, F_WRLCK);
}

int io_fd_in_use_elsewhere(int fd)
{
    int ret = byte_is_held_elsewhere(fd, IN_USE_BYTE);
    return ret == -EINVAL ? 1 : ret;
}

#else /* no open-file-description locks on this host: run unlocked, as QEMU does */

int io_fd_mark_in_use(int fd)
{
    (void)fd;
    return 0;
}

int io_fd_in_use_elsewhere(int fd)
{
    (void)fd;
    return 1;
}

int io_file_lock(struct io_file *f, enum io_lock_mode mode, const char *what)
{
    (void)f;
    (void)mode;
    (void)what;
    return 0;
}

int io_file_lock_refuse_writes(struct io_file *f, bool refuse, const char *what)
{
    (void)f;
    (void)refuse;
    (void)what;
    return 0;
}

void io_file_unlock(struct io_file *f)
{
    (void)f;
}

#endif
