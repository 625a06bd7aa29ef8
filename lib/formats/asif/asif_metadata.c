/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata chunk: a 'meta' header and an XML property list, at a logical address (the
 * header's metadata chunk times the chunk size) resolved through the tables like guest data.
 * Only its "stable uuid" is read, for info; an image whose metadata cannot be read is still
 * readable (the metadata says nothing about where guest data is).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/asif/asif.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"

#define META_READ_MAX 65536u /* header and property list read for info, at most */

static const char *find_in(const char *hay, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; p + n <= end; p++)
        if (memcmp(p, needle, n) == 0)
            return p;
    return NULL;
}

static void parse_stable_uuid(struct asif_state *s, const char *plist, const char *end)
{
    const char *key = find_in(plist, end, "<key>stable uuid</key>");
    const char *open = key ? find_in(key, end, "<string>") : NULL;
    if (!open)
        return;
    open += strlen("<string>");
    if (end - open < 36 + 9 || memcmp(open + 36, "</string>", 9) != 0)
        return;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? open[i] != '-' : !isxdigit((unsigned char)open[i]))
            return;
    }
    memcpy(s->stable_uuid, open, 36);
    s->stable_uuid[36] = '\0';
}

void asif_load_metadata(struct img *img)
{
    struct asif_state *s = img->priv;
    s->stable_uuid[0] = '\0';
    if (s->meta_chunk == 0)
        return;
    uint64_t logical = s->meta_chunk * s->g.chunk_size;
    struct img_extent ext;
    if (asif_lookup(img, logical, s->g.chunk_size, &ext) < 0 || ext.kind != EXTENT_DATA) {
        img_error_clear();
        return;
    }
    size_t len = (size_t)min_u64(ext.length, META_READ_MAX);
    char *buf = malloc(len);
    if (!buf || len < 20 || io_pread(img->file, buf, len, ext.host_offset) < 0 ||
        memcmp(buf, ASIF_META_MAGIC, 4) != 0) {
        free(buf);
        img_error_clear();
        return;
    }
    uint32_t header_size = load_be32(buf + 8);
    if (header_size >= 20 && header_size < len)
        parse_stable_uuid(s, buf + header_size, buf + len);
    free(buf);
}

int asif_metadata_plist(char *buf, size_t cap, const char *stable_uuid)
{
    int n = snprintf(buf, cap,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
                     "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
                     "<plist version=\"1.0\">\n"
                     "<dict>\n"
                     "\t<key>internal metadata</key>\n"
                     "\t<dict>\n"
                     "\t\t<key>stable uuid</key>\n"
                     "\t\t<string>%s</string>\n"
                     "\t</dict>\n"
                     "\t<key>user metadata</key>\n"
                     "\t<dict/>\n"
                     "</dict>\n"
                     "</plist>\n",
                     stable_uuid);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}
