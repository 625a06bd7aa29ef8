/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_amend(): changes creation options of an open image in place (qemu-img amend). The core
 * checks the request against the format's amend table, in qemu-img's words, drains the handle
 * and hands the rest to the backend's amend entry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "image.h"
#include "opt_table.h"
#include "opts.h"
#include "progress.h"
#include "util/json.h"

static int refuse_unamendable(const char *format)
{
    return img_error(-ENOTSUP, "Format driver '%s' does not support option amendment", format);
}

/*
 * qemu-img parses the request against the amend options; when that fails and the creation
 * options would have taken it, its message gets a second line saying so.
 */
static int check_amend_options(const struct img_format *fmt, const img_opts *opts)
{
    /* qemu-img explains a bad size over three lines; amend's callers print it as it is. */
    unsigned i = 0;
    const char *key, *value;
    while (opts_iter(opts, &i, &key, &value)) {
        const struct opt_desc *d = opt_table_find(fmt->amend_options, key);
        uint64_t size;
        if (d && d->type == OPT_SIZE && parse_size(value, &size) < 0)
            return img_error(-EINVAL,
                             "Parameter '%s' expects a non-negative number below 2^64\n"
                             "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                             "tera-, peta-\nand exabytes, respectively.",
                             key);
    }
    int ret = opt_table_check(fmt->amend_options, opts);
    if (ret == 0)
        return 0;
    char *msg = strdup(img_last_error());
    if (opt_table_check(fmt->create_options, opts) == 0)
        ret = img_error(ret, "%s\nThis option is only supported for image creation",
                        msg ? msg : "Invalid parameter");
    else
        ret = img_error(ret, "%s", msg ? msg : "Invalid parameter");
    free(msg);
    return ret;
}

IMG_API int img_amend(img *img, const img_opts *opts)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "invalid image handle");
    unsigned first = 0;
    const char *key, *value;
    if (!opts || !opts_iter(opts, &first, &key, &value))
        return img_error(-EINVAL, "Must specify options (-o)");
    if (!img->fmt->amend)
        return refuse_unamendable(img->fmt->name);
    int ret = check_amend_options(img->fmt, opts);
    if (ret < 0)
        return ret;
    if (!img->writable)
        return img_error(-EROFS, "%s: image is opened read-only", img->filename);
    /* Amending rewrites tables that map() reads without locks: nothing else may run. */
    img_drain_enter(img);
    struct img_op op;
    img_op_begin(&op, img, NULL, NULL);
    ret = img->fmt->amend(img, opts);
    img_op_end(&op);
    img_io_leave(img);
    return ret;
}

IMG_API int img_amend_options_json(const char *format, char **json)
{
    if (!json)
        return img_error(-EINVAL, "img_amend_options_json: json is NULL");
    *json = NULL;
    if (!format)
        return img_error(-EINVAL, "no format name given");
    const struct img_format *fmt = format_find(format);
    if (!fmt)
        return img_error(-ENOENT, "Unknown file format '%s'", format);
    if (!fmt->amend)
        return refuse_unamendable(fmt->name);
    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    json_string(&w, "format", fmt->name);
    opt_table_json(fmt->amend_options, &w, "options");
    json_object_end(&w);
    *json = json_finish(&w);
    if (!*json)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}
