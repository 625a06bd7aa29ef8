/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DiskDescriptor.xml, the descriptor of a Parallels disk bundle (a folder holding the
 * descriptor and the image files, "harddisk.hdd.0.{GUID}.hds"). It names, per snapshot, the
 * image file of that snapshot; the image to read is the one of Snapshots/TopGUID (or the only
 * one). qemu-img 7.2 does not read descriptors: it takes the file for a raw image.
 *
 * The reader is a bounded scan for the few elements it needs, not a general XML parser: the
 * descriptor is at most PRL_XML_MAX bytes, and element text is taken as is but for the five
 * predefined entities.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/parallels/parallels.h"
#include "io/io.h"
#include "util/checked.h"

#define PRL_XML_MAX (1u << 20)
#define PRL_NULL_GUID "{00000000-0000-0000-0000-000000000000}"

static const char *find_bounded(const char *from, const char *end, const char *what)
{
    size_t n = strlen(what);
    for (const char *p = from; p && p + n <= end; p++) {
        p = memchr(p, what[0], (size_t)(end - p));
        if (!p || p + n > end)
            return NULL;
        if (memcmp(p, what, n) == 0)
            return p;
    }
    return NULL;
}

/*
 * The text of the first <tag>...</tag> within [from, end), entities decoded and surrounding
 * blanks trimmed, malloc'd; NULL when absent (or out of memory: *nomem is set).
 */
static char *element_text(const char *from, const char *end, const char *tag, bool *nomem)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *start = find_bounded(from, end, open);
    if (!start)
        return NULL;
    start += strlen(open);
    const char *stop = find_bounded(start, end, close);
    if (!stop)
        return NULL;
    while (start < stop && strchr(" \t\r\n", *start))
        start++;
    while (stop > start && strchr(" \t\r\n", stop[-1]))
        stop--;
    char *out = malloc((size_t)(stop - start) + 1);
    if (!out) {
        *nomem = true;
        return NULL;
    }
    static const struct {
        const char *name;
        char c;
    } entities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t n = 0;
    for (const char *p = start; p < stop;) {
        bool decoded = false;
        for (size_t i = 0; *p == '&' && i < sizeof(entities) / sizeof(entities[0]); i++) {
            size_t len = strlen(entities[i].name);
            if ((size_t)(stop - p) >= len && memcmp(p, entities[i].name, len) == 0) {
                out[n++] = entities[i].c;
                p += len;
                decoded = true;
                break;
            }
        }
        if (!decoded)
            out[n++] = *p++;
    }
    out[n] = '\0';
    return out;
}

int prl_xml_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    const char *text = (const char *)buf;
    if (len < 5 || memcmp(text, "<?xml", 5) != 0)
        return 0;
    return find_bounded(text, text + len, "<Parallels_disk_image") ? 100 : 0;
}

/* Picks the <Image> of `guid` (NULL: the only one) and returns its <File>. */
static int image_file(const char *name, const char *doc, const char *end, const char *guid,
                      char **file)
{
    bool nomem = false;
    int found = 0;
    for (const char *p = find_bounded(doc, end, "<Image>"); p;
         p = find_bounded(p + 1, end, "<Image>")) {
        const char *stop = find_bounded(p, end, "</Image>");
        if (!stop)
            break;
        char *id = element_text(p, stop, "GUID", &nomem);
        bool match = !guid || (id && strcmp(id, guid) == 0);
        free(id);
        if (match) {
            free(*file);
            *file = element_text(p, stop, "File", &nomem);
            found++;
        }
    }
    if (nomem)
        return img_error(-ENOMEM, "out of memory");
    if (found == 0 || !*file || !**file)
        return img_error(-EINVAL, "parallels: '%s': the descriptor names no image file%s%s", name,
                         guid ? " for snapshot " : "", guid ? guid : "");
    if (found > 1)
        return img_error(-ENOTSUP,
                         "parallels: '%s': the descriptor lists several images and no "
                         "Snapshots/TopGUID to choose one",
                         name);
    return 0;
}

int prl_xml_image_name(struct img *img, char **name)
{
    *name = NULL;
    int64_t size = io_file_size(img->file);
    if (size < 0)
        return img_error((int)size, "parallels: cannot read the size of '%s'", img->filename);
    if ((uint64_t)size > PRL_XML_MAX)
        return img_error(-EFBIG, "parallels: '%s': a DiskDescriptor.xml of %lld bytes is too large",
                         img->filename, (long long)size);
    char *doc = malloc((size_t)size + 1);
    if (!doc)
        return img_error(-ENOMEM, "out of memory");
    int ret = io_pread(img->file, doc, (size_t)size, 0);
    if (ret < 0) {
        free(doc);
        return img_error(ret, "parallels: cannot read '%s': %s", img->filename, img_strerror(ret));
    }
    doc[size] = '\0';
    const char *end = doc + size;
    bool nomem = false;
    char *top = NULL;
    if (find_bounded(doc, end, "<Storage>") != NULL) {
        const char *second =
            find_bounded(find_bounded(doc, end, "<Storage>") + 1, end, "<Storage>");
        if (second)
            ret = img_error(-ENOTSUP,
                            "parallels: '%s': disks split over several storages are not supported",
                            img->filename);
    }
    if (ret == 0)
        top = element_text(doc, end, "TopGUID", &nomem);
    if (ret == 0 && nomem)
        ret = img_error(-ENOMEM, "out of memory");
    if (ret == 0)
        ret = image_file(img->filename, doc, end, top, name);
    /* A snapshot with a parent is a delta over its parent's image: a chain, not read here. */
    for (const char *p = find_bounded(doc, end, "<Shot>"); ret == 0 && top && p;
         p = find_bounded(p + 1, end, "<Shot>")) {
        const char *stop = find_bounded(p, end, "</Shot>");
        if (!stop)
            break;
        char *id = element_text(p, stop, "GUID", &nomem);
        char *parent = element_text(p, stop, "ParentGUID", &nomem);
        if (id && strcmp(id, top) == 0 && parent && strcmp(parent, PRL_NULL_GUID) != 0)
            ret = img_error(-ENOTSUP,
                            "parallels: '%s': snapshot %s has a parent; chains of Parallels "
                            "snapshots are not supported",
                            img->filename, top);
        free(id);
        free(parent);
    }
    free(top);
    free(doc);
    if (ret < 0) {
        free(*name);
        *name = NULL;
    }
    return ret;
}
