/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Files a new image names (data files, extents): created, or taken over only when safe. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "io/io.h"
#include "io/lock.h"

/* May an existing file become the new image's `what`? Only an empty one, or when asked. */
static int check_existing(const struct img_create_args *args, struct io_file *f, const char *path,
                          const char *what)
{
    struct stat st;
    if (fstat(io_file_fd(f), &st) < 0)
        return img_error(-errno, "%s: cannot stat the %s '%s'", args->path, what, path);
    if (!S_ISREG(st.st_mode))
        return img_error(-EINVAL, "%s: the %s '%s' is not a regular file: refused", args->path,
                         what, path);
    if (st.st_size > 0 && !args->overwrite_named)
        return img_error(-EEXIST,
                         "%s: the %s '%s' exists and holds data: refused, so that nothing in "
                         "it is lost (set overwrite_named=on to empty it)",
                         args->path, what, path);
    return 0;
}

int img_create_named_file(const struct img_create_args *args, const char *name, const char *what,
                          struct io_file **out, char **out_path, bool *created)
{
    *created = false;
    *out = NULL;
    char *path = img_resolve_path(args->path, name);
    if (!path)
        return img_error(-ENOMEM, "out of memory");
    int ret;
    if (access(path, F_OK) < 0 && errno == ENOENT) {
        /* O_EXCL: a file that appears meanwhile is someone else's, not ours to remove. */
        ret = io_file_open(out, path, O_RDWR | O_CREAT | O_EXCL, 0644);
        if (ret < 0)
            img_error(ret, "%s: cannot create the %s '%s': %s", args->path, what, path,
                      img_strerror(ret));
        *created = ret == 0;
    } else {
        /* Without blocking on a FIFO; checked before anything is changed. */
        ret = img_open_named_host_file(out, path, O_RDWR, args->path, what);
        if (ret == 0)
            ret = check_existing(args, *out, path, what);
    }
    /* Locked before it is emptied: a file a VM (or this very convert) holds is refused. */
    if (ret == 0) {
        ret = io_file_lock(*out, IO_LOCK_WRITE, path);
        if (ret < 0)
            img_error_prefix("%s: cannot take the %s", args->path, what);
    }
    if (ret == 0 && !*created) {
        ret = io_truncate(*out, 0);
        if (ret < 0)
            img_error(ret, "%s: cannot empty the %s '%s': %s", args->path, what, path,
                      img_strerror(ret));
    }
    if (ret < 0) {
        io_file_close(*out);
        *out = NULL;
        if (*created)
            unlink(path);
        *created = false;
        free(path);
        return ret;
    }
    *out_path = path;
    return 0;
}
