/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The target file of create and convert: see convert_target.h for the rules. */
#include "convert_target.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "imgutil.h"
#include "io/io.h"
#include "io/lock.h"

/* Leaves room in a 255-byte name for the dot, the random part and the suffix. */
#define TEMP_BASE_MAX 200
#define TEMP_RANDOM_DIGITS 8

static int write_open_error(const struct target_file *t, int err)
{
    if (err == -EROFS)
        return img_error(err, "%s: cannot write '%s': the file system is read-only", t->action,
                         t->path);
    return img_error(err, "%s: cannot open '%s' for writing: %s", t->action, t->path,
                     img_strerror(err));
}

/* Only regular files and block devices hold images; anything else is refused untouched. */
static int check_kind(const struct target_file *t, mode_t mode)
{
    const char *kind = S_ISDIR(mode)                    ? "a directory"
                       : S_ISCHR(mode)                  ? "a character device"
                       : S_ISFIFO(mode)                 ? "a FIFO"
                       : S_ISSOCK(mode)                 ? "a socket"
                       : S_ISREG(mode) || S_ISBLK(mode) ? NULL
                                                        : "not a regular file";
    if (!kind)
        return 0;
    return img_error(S_ISDIR(mode) ? -EISDIR : -EINVAL,
                     "%s: '%s' is %s: an image is written only to a regular file or a block "
                     "device",
                     t->action, t->path, kind);
}

/*
 * Opens what `path` names, following links in the kernel. A name that does not exist is
 * created empty (through a dangling link too, as open(2) does); *created says so. *fd is
 * read-write when created, else an O_PATH descriptor (nothing opened a device or FIFO yet).
 */
static int open_through_kernel(struct target_file *t, int *fd, bool *created)
{
    *created = false;
    *fd = open(t->path, O_PATH | O_CLOEXEC);
    if (*fd >= 0)
        return 0;
    if (errno != ENOENT)
        return write_open_error(t, -errno);
    *fd = open(t->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
    if (*fd < 0 && errno == EEXIST) {
        /* A dangling link: O_EXCL does not follow it; a plain O_CREAT creates what it names. */
        *fd = open(t->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0666);
    }
    if (*fd < 0)
        return write_open_error(t, -errno);
    *created = true;
    return 0;
}

/* A read-write descriptor of the file opened as `path_fd` (the same file, not the name). */
static int reopen_read_write(const struct target_file *t, int path_fd, const struct stat *st)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", path_fd);
    int fd = open(proc, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) {
        /* No /proc: open the name again and make sure it is still the same file. */
        fd = open(t->path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        struct stat again;
        if (fd >= 0 &&
            (fstat(fd, &again) < 0 || again.st_dev != st->st_dev || again.st_ino != st->st_ino)) {
            close(fd);
            return img_error(-EAGAIN, "%s: '%s' changed while it was being opened", t->action,
                             t->path);
        }
    }
    if (fd < 0)
        return write_open_error(t, -errno);
    return fd;
}

/* Splits the name the kernel gives the open file into its folder and its own name. */
static int find_folder(struct target_file *t, int fd)
{
    char proc[64], resolved[PATH_MAX];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, resolved, sizeof(resolved) - 1);
    const char *source = resolved;
    if (n > 0 && (size_t)n < sizeof(resolved) - 1 && resolved[0] == '/') {
        resolved[n] = '\0';
    } else {
        /* No /proc: the name as given, which must then not be a link. */
        struct stat lst;
        if (lstat(t->path, &lst) < 0 || S_ISLNK(lst.st_mode))
            return img_error(-ENOTSUP, "%s: cannot find the folder of the file '%s' names",
                             t->action, t->path);
        source = t->path;
    }
    const char *slash = strrchr(source, '/');
    if (slash)
        t->dir_path = slash == source ? strdup("/") : strndup(source, (size_t)(slash - source));
    else
        t->dir_path = strdup(".");
    t->name = strdup(slash ? slash + 1 : source);
    if (!t->dir_path || !t->name)
        return img_error(-ENOMEM, "out of memory");
    t->dir_fd = open(t->dir_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (t->dir_fd < 0)
        return img_error(-errno, "%s: cannot open the folder '%s' of '%s': %s", t->action,
                         t->dir_path, t->path, img_strerror(-errno));
    struct stat st;
    if (fstatat(t->dir_fd, t->name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != t->dev ||
        st.st_ino != t->ino)
        return img_error(-EAGAIN, "%s: '%s' moved while it was being opened", t->action, t->path);
    return 0;
}

static bool is_same_file(struct io_file *f, const struct stat *st)
{
    struct stat other;
    return f && fstat(io_file_fd(f), &other) == 0 && other.st_dev == st->st_dev &&
           other.st_ino == st->st_ino;
}

int target_open(struct target_file *t, const char *path, const char *action, struct io_file *source)
{
    memset(t, 0, sizeof(*t));
    t->path = path;
    t->action = action;
    t->dir_fd = -1;
    t->temp_fd = -1;
    int fd, rw_fd = -1;
    int ret = open_through_kernel(t, &fd, &t->created);
    if (ret < 0)
        return ret;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ret = img_error(-errno, "%s: cannot stat '%s': %s", action, path, img_strerror(-errno));
        goto fail;
    }
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->is_block = S_ISBLK(st.st_mode);
    /* A dangling link's file might have appeared meanwhile: only an empty one is ours. */
    t->created = t->created && S_ISREG(st.st_mode) && st.st_size == 0;
    t->was_empty = S_ISREG(st.st_mode) && st.st_size == 0;
    if ((ret = check_kind(t, st.st_mode)) < 0)
        goto fail;
    /* A device is written where it is: its folder is not needed. */
    if (!t->is_block && (ret = find_folder(t, fd)) < 0)
        goto fail;
    if (t->created) {
        rw_fd = fd;
        fd = -1;
    } else if ((rw_fd = ret = reopen_read_write(t, fd, &st)) < 0) {
        goto fail;
    }
    if ((ret = io_file_from_fd(&t->file, rw_fd)) < 0)
        goto fail;
    rw_fd = -1;
    /* Before a byte changes: a VM holding the image keeps it. */
    t->is_source = is_same_file(source, &st);
    if (!t->is_source && (ret = io_file_lock(t->file, IO_LOCK_WRITE, path)) < 0)
        goto fail;
    if (fd >= 0)
        close(fd);
    return 0;
fail:
    if (rw_fd >= 0)
        close(rw_fd);
    if (fd >= 0)
        close(fd);
    target_close(t, true);
    return ret;
}

/* Copies every extended attribute (user.*, ACLs, security labels) from `from` to `to`. */
static int copy_xattrs(const struct target_file *t, int from, int to)
{
    ssize_t len = flistxattr(from, NULL, 0);
    if (len < 0 && (errno == ENOTSUP || errno == ENOSYS))
        return 0;
    if (len <= 0)
        return len < 0 ? img_error(-errno, "%s: cannot list the attributes of '%s': %s", t->action,
                                   t->path, img_strerror(-errno))
                       : 0;
    char *names = malloc((size_t)len);
    if (!names)
        return img_error(-ENOMEM, "out of memory");
    len = flistxattr(from, names, (size_t)len);
    int ret = len < 0 ? img_error(-errno, "%s: cannot list the attributes of '%s': %s", t->action,
                                  t->path, img_strerror(-errno))
                      : 0;
    for (ssize_t at = 0; ret == 0 && at < len; at += (ssize_t)strlen(names + at) + 1) {
        const char *name = names + at;
        ssize_t vlen = fgetxattr(from, name, NULL, 0);
        void *value = vlen >= 0 ? malloc(vlen ? (size_t)vlen : 1) : NULL;
        if (vlen >= 0 && !value) {
            ret = img_error(-ENOMEM, "out of memory");
            break;
        }
        if (vlen >= 0)
            vlen = fgetxattr(from, name, value, (size_t)vlen);
        if (vlen < 0 || fsetxattr(to, name, value, (size_t)vlen, 0) < 0) {
            int err = -errno;
            /* Labels only the administrator may set stay as the system gave them to us. */
            bool privileged =
                strncmp(name, "trusted.", 8) == 0 || strncmp(name, "security.", 9) == 0;
            if (!(privileged && (err == -EPERM || err == -ENOTSUP)))
                ret = img_error(err, "%s: cannot carry the attribute '%s' of '%s' over: %s",
                                t->action, name, t->path, img_strerror(err));
        }
        free(value);
    }
    free(names);
    return ret;
}

/* ".<name>.": the start of every temporary name of this target. */
static int temp_prefix(const struct target_file *t, char *buf, size_t cap)
{
    return snprintf(buf, cap, ".%.*s.", TEMP_BASE_MAX, t->name);
}

static bool is_our_temp_name(const char *entry, const char *prefix, size_t prefix_len)
{
    if (strncmp(entry, prefix, prefix_len) != 0)
        return false;
    const char *rest = entry + prefix_len;
    if (strlen(rest) != TEMP_RANDOM_DIGITS + 4 || strcmp(rest + TEMP_RANDOM_DIGITS, ".tmp") != 0)
        return false;
    for (int i = 0; i < TEMP_RANDOM_DIGITS; i++)
        if (!strchr("0123456789abcdef", rest[i]))
            return false;
    return true;
}

/* Removes temporaries of this target that nobody is writing (their writer was killed). */
static void remove_stale_temps(const struct target_file *t)
{
    char prefix[TEMP_BASE_MAX + 8];
    size_t prefix_len = (size_t)temp_prefix(t, prefix, sizeof(prefix));
    int list_fd = openat(t->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (!dir) {
        if (list_fd >= 0)
            close(list_fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!is_our_temp_name(e->d_name, prefix, prefix_len))
            continue;
        int fd =
            openat(t->dir_fd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
            st.st_nlink == 1 && io_fd_in_use_elsewhere(fd) == 0)
            unlinkat(t->dir_fd, e->d_name, 0);
        close(fd);
    }
    closedir(dir);
}

static unsigned temp_random(unsigned attempt)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t r = (uint64_t)getpid() * 2654435761u ^ (uint64_t)now.tv_nsec ^
                 ((uint64_t)now.tv_sec << 20) ^ ((uint64_t)attempt * 40503u);
    return (unsigned)(r ^ (r >> 32));
}

/*
 * An unnamed file in the folder (O_TMPFILE), marked in use before it gets its name, so no
 * other writer ever sees it unmarked; -1 where the file system cannot make one.
 */
static int open_unnamed(const struct target_file *t)
{
    int fd = openat(t->dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    if (io_fd_mark_in_use(fd) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int create_named_temp(struct target_file *t)
{
    char prefix[TEMP_BASE_MAX + 8];
    temp_prefix(t, prefix, sizeof(prefix));
    int unnamed = open_unnamed(t);
    for (unsigned attempt = 0; attempt < 16; attempt++) {
        char name[sizeof(prefix) + TEMP_RANDOM_DIGITS + 8];
        snprintf(name, sizeof(name), "%s%08x.tmp", prefix, temp_random(attempt));
        int fd = -1, err;
        if (unnamed >= 0) {
            char proc[64];
            snprintf(proc, sizeof(proc), "/proc/self/fd/%d", unnamed);
            if (linkat(AT_FDCWD, proc, t->dir_fd, name, AT_SYMLINK_FOLLOW) == 0) {
                fd = unnamed;
                unnamed = -1;
            }
            err = -errno;
            if (fd < 0 && err != -EEXIST) {
                /* No /proc to name it through: make a named one instead. */
                close(unnamed);
                unnamed = -1;
                attempt--;
                continue;
            }
        } else {
            fd = openat(t->dir_fd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666);
            err = -errno;
            if (fd >= 0 && io_fd_mark_in_use(fd) < 0) {
                err = -errno;
                close(fd);
                unlinkat(t->dir_fd, name, 0);
                return img_error(err, "%s: cannot lock a temporary file beside '%s': %s", t->action,
                                 t->path, img_strerror(err));
            }
        }
        if (fd >= 0) {
            t->temp_fd = fd;
            t->temp_name = strdup(name);
            size_t cap = strlen(t->dir_path) + strlen(name) + 2;
            t->temp_path = malloc(cap);
            if (!t->temp_name || !t->temp_path)
                return img_error(-ENOMEM, "out of memory");
            snprintf(t->temp_path, cap, "%s/%s", t->dir_path, name);
            return 0;
        }
        if (err != -EEXIST) {
            if (err == -EROFS)
                return img_error(err, "%s: cannot write beside '%s': the file system is read-only",
                                 t->action, t->path);
            return img_error(err, "%s: cannot create a temporary file beside '%s': %s", t->action,
                             t->path, img_strerror(err));
        }
    }
    if (unnamed >= 0)
        close(unnamed);
    return img_error(-EEXIST, "%s: cannot find a free temporary name beside '%s'", t->action,
                     t->path);
}

int target_make_temp(struct target_file *t)
{
    struct stat old;
    if (fstat(io_file_fd(t->file), &old) < 0)
        return img_error(-errno, "%s: cannot stat '%s': %s", t->action, t->path,
                         img_strerror(-errno));
    /* Replacing the file would leave its other names with the old content. */
    if (old.st_nlink > 1)
        return img_error(-EMLINK,
                         "%s: '%s' has %ju other hard link(s): replacing it would part it from "
                         "them; remove the links or write to another name",
                         t->action, t->path, (uintmax_t)(old.st_nlink - 1));
    remove_stale_temps(t);
    int ret = create_named_temp(t);
    if (ret < 0)
        return ret;
    /* Only root may give a file away; anyone else keeps the file as their own. */
    if (fchown(t->temp_fd, old.st_uid, old.st_gid) < 0 && errno != EPERM)
        return img_error(-errno, "%s: cannot give the new '%s' its owner: %s", t->action, t->path,
                         img_strerror(-errno));
    if (fchmod(t->temp_fd, old.st_mode & 07777) < 0)
        return img_error(-errno, "%s: cannot give the new '%s' its mode: %s", t->action, t->path,
                         img_strerror(-errno));
    return copy_xattrs(t, io_file_fd(t->file), t->temp_fd);
}

void target_forget_new(struct target_file *t)
{
    struct stat st;
    if (t->created && !t->forgotten && t->dir_fd >= 0 &&
        fstatat(t->dir_fd, t->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == t->dev &&
        st.st_ino == t->ino && unlinkat(t->dir_fd, t->name, 0) == 0)
        t->forgotten = true;
}

int target_commit(struct target_file *t)
{
    if (!t->temp_name)
        return 0;
    int ret = -1;
    if (t->forgotten) {
        /* Whatever took the free name meanwhile is someone else's: keep it. */
        ret = renameat2(t->dir_fd, t->temp_name, t->dir_fd, t->name, RENAME_NOREPLACE);
        if (ret < 0 && errno == EEXIST)
            return img_error(-EEXIST, "%s: '%s' was created by someone else meanwhile", t->action,
                             t->path);
    }
    if (ret < 0 && (!t->forgotten || errno == EINVAL || errno == ENOSYS))
        ret = renameat(t->dir_fd, t->temp_name, t->dir_fd, t->name);
    if (ret < 0)
        return img_error(-errno, "%s: cannot rename the finished image to '%s': %s", t->action,
                         t->path, img_strerror(-errno));
    free(t->temp_name);
    t->temp_name = NULL;
    return 0;
}

void target_unlock(struct target_file *t)
{
    if (t->file)
        io_file_unlock(t->file);
}

void target_close(struct target_file *t, bool failed)
{
    if (t->temp_name)
        unlinkat(t->dir_fd, t->temp_name, 0);
    struct stat st;
    if (failed && t->created && !t->forgotten && t->dir_fd >= 0 &&
        fstatat(t->dir_fd, t->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == t->dev &&
        st.st_ino == t->ino)
        unlinkat(t->dir_fd, t->name, 0);
    else if (failed && t->was_empty && !t->temp_path && t->file)
        /* It was empty, and it was written in place: empty it again. */
        io_truncate(t->file, 0);
    io_file_close(t->file);
    if (t->temp_fd >= 0)
        close(t->temp_fd);
    if (t->dir_fd >= 0)
        close(t->dir_fd);
    free(t->temp_name);
    free(t->temp_path);
    free(t->dir_path);
    free(t->name);
    memset(t, 0, sizeof(*t));
    t->dir_fd = -1;
    t->temp_fd = -1;
}
