/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* qemu-img's -l snapshot_param (convert, measure): a read-only view of an internal snapshot. */
#include "cli_snapshot_view.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"

#define SNAPSHOT_PREFIX "snapshot."

/* "snapshot.id=1,snapshot.name=x" into open options; qemu-img's messages for other keys. */
static int parse_param(const char *param, img_opts *opts)
{
    char *copy = strdup(param);
    if (!copy)
        return -ENOMEM;
    int ret = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && ret == 0;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        if (strcmp(item, "snapshot.id") != 0 && strcmp(item, "snapshot.name") != 0) {
            cli_error("Invalid parameter '%s'", item);
            ret = -EINVAL;
        } else {
            ret = img_opts_set(opts, item, eq ? eq + 1 : "");
        }
    }
    free(copy);
    if (ret < 0)
        cli_error("Failed in parsing snapshot param '%s'", param);
    return ret;
}

/* The library's message without the file name it may begin with. */
static const char *bare_message(const char *message, const char *path)
{
    size_t n = strlen(path);
    if (strncmp(message, path, n) == 0 && strncmp(message + n, ": ", 2) == 0)
        return message + n + 2;
    return message;
}

int cli_open_snapshot_view(img **out, const char *path, const char *format, unsigned flags,
                           const char *param)
{
    img_opts *opts = NULL;
    int ret = img_opts_new(&opts);
    if (ret < 0)
        return ret;
    if (strncmp(param, SNAPSHOT_PREFIX, strlen(SNAPSHOT_PREFIX)) == 0)
        ret = parse_param(param, opts);
    else
        ret = img_opts_set(opts, "snapshot", param);
    /* Opened plainly first, so that an image that cannot be opened is reported as usual. */
    img *plain = NULL;
    if (ret == 0)
        ret = cli_open_image(&plain, path, format, flags);
    if (ret == 0 && img_format_supports(img_get_format(plain), "snapshots") != 1) {
        cli_error("Failed to load snapshot: Block format '%s' used by device '' does not "
                  "support temporarily loading internal snapshots",
                  img_get_format(plain));
        ret = -ENOTSUP;
    }
    char *fmt = ret == 0 ? strdup(img_get_format(plain)) : NULL;
    img_close(plain);
    if (ret == 0 && !fmt)
        ret = -ENOMEM;
    if (ret == 0) {
        ret = img_open(out, path, fmt, flags, opts);
        if (ret < 0)
            cli_error("Failed to load snapshot: %s", bare_message(img_last_error(), path));
    }
    free(fmt);
    img_opts_free(opts);
    return ret;
}
