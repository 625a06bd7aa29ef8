/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Public format queries: answered from what each backend declares (caps, option table). */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "error.h"
#include "formats/format.h"
#include "opt_table.h"
#include "util/json.h"

IMG_API int img_format_count(void)
{
    size_t n = format_count();
    return n > INT_MAX ? INT_MAX : (int)n;
}

IMG_API const char *img_format_name(int i)
{
    const struct img_format *fmt = i < 0 ? NULL : format_at((size_t)i);
    return fmt ? fmt->name : NULL;
}

static int find_format(const char *format, const struct img_format **out)
{
    if (!format)
        return img_error(-EINVAL, "no format name given");
    *out = format_find(format);
    if (!*out)
        return img_error(-ENOENT, "Unknown file format '%s'", format);
    return 0;
}

IMG_API int img_format_supports(const char *format, const char *what)
{
    static const struct {
        const char *what;
        unsigned cap;
    } names[] = {
        {"read", FORMAT_CAN_READ},
        {"write", FORMAT_CAN_WRITE},
        {"create", FORMAT_CAN_CREATE},
        {"snapshots", FORMAT_SNAPSHOTS},
        {"backing", FORMAT_BACKING},
        {"compress", FORMAT_COMPRESSED_WRITES},
        {"probe_fallback", FORMAT_PROBE_FALLBACK},
        {"resize", FORMAT_CAN_RESIZE},
        {"bitmaps", FORMAT_BITMAPS},
    };
    const struct img_format *fmt;
    int ret = find_format(format, &fmt);
    if (ret < 0)
        return ret;
    if (!what)
        return img_error(-EINVAL, "img_format_supports: no capability given");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i].what, what) == 0)
            return format_has(fmt, names[i].cap) ? 1 : 0;
    return img_error(-EINVAL,
                     "img_format_supports: unknown capability '%s' (known: read, write, "
                     "create, snapshots, backing, compress, probe_fallback, resize, bitmaps)",
                     what);
}

IMG_API int img_format_options_json(const char *format, char **json)
{
    if (!json)
        return img_error(-EINVAL, "img_format_options_json: json is NULL");
    *json = NULL;
    const struct img_format *fmt;
    int ret = find_format(format, &fmt);
    if (ret < 0)
        return ret;
    struct json_writer w;
    json_init(&w);
    json_object_begin(&w, NULL);
    json_string(&w, "format", fmt->name);
    opt_table_json(fmt->create_options, &w, "options");
    json_object_end(&w);
    *json = json_finish(&w);
    if (!*json)
        return img_error(-ENOMEM, "out of memory");
    return 0;
}

IMG_API int img_format_supported(const char *format, const char *what)
{
    return img_format_supports(format, what);
}
