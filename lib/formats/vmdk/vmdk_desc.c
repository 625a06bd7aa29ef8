/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text descriptor: probing, and the few fields read from it. QEMU finds fields by
 * searching the text rather than parsing lines ("CID" is the first occurrence of the word);
 * the same search is made here so that every descriptor QEMU accepts reads the same.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "io/io.h"
#include "util/endian.h"

static bool starts_with(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0;
}

int vmdk_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < 4)
        return 0;
    uint32_t magic = load_le32(buf);
    if (magic == VMDK4_MAGIC || magic == VMDK3_MAGIC)
        return 100;
    /* A descriptor: comment and blank lines, then "version=1|2|3". */
    const char *p = (const char *)buf, *end = p + len;
    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n')
                p++;
            p++;
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ')
                p++;
            if (p < end && *p == '\r')
                p++;
            if (p == end || *p != '\n')
                return 0;
            p++;
            continue;
        }
        for (char v = '1'; v <= '3'; v++) {
            char nl[] = {'v', 'e', 'r', 's', 'i', 'o', 'n', '=', v, '\n', 0};
            char crlf[] = {'v', 'e', 'r', 's', 'i', 'o', 'n', '=', v, '\r', '\n', 0};
            if (starts_with(p, end, nl) || starts_with(p, end, crlf))
                return 100;
        }
        return 0;
    }
    return 0;
}

int vmdk_desc_value(const char *desc, const char *name, char *out, size_t cap)
{
    const char *end = desc + strlen(desc);
    const char *p = strstr(desc, name);
    if (!p)
        return -ENOENT;
    p += strlen(name) + 2; /* past `="` */
    if (p >= end)
        return -EINVAL;
    const char *q = p;
    while (q < end && *q != '"')
        q++;
    if (q == end || (size_t)(q - p) + 1 > cap)
        return -EINVAL;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = 0;
    return 0;
}

int vmdk_desc_cid(const char *desc, const char *name, uint32_t *out)
{
    const char *p = strstr(desc, name);
    if (!p)
        return -EINVAL;
    p += strlen(name) + 1;
    if (p > desc + strlen(desc))
        return -EINVAL;
    unsigned int v;
    if (sscanf(p, "%x", &v) != 1)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

int vmdk_desc_parent(const char *desc, const char *filename, char **out)
{
    *out = NULL;
    const char *p = strstr(desc, "parentFileNameHint");
    if (!p)
        return 0;
    p += strlen("parentFileNameHint") + 2; /* past `="` */
    if (p > desc + strlen(desc))
        return img_error(-EINVAL, "vmdk: '%s': parentFileNameHint is cut short", filename);
    const char *q = strchr(p, '"');
    if (!q)
        return img_error(-EINVAL, "vmdk: '%s': parentFileNameHint has no closing quote", filename);
    /* QEMU's limit on a backing file name. */
    if (q - p > 4095)
        return img_error(-EINVAL, "vmdk: '%s': parentFileNameHint is too long", filename);
    if (q == p)
        return 0;
    *out = strndup(p, (size_t)(q - p));
    return *out ? 0 : img_error(-ENOMEM, "out of memory");
}

int vmdk_read_text(struct io_file *f, uint64_t offset, size_t max, const char *filename, char **out)
{
    int64_t size = io_file_size(f);
    if (size < 0)
        return img_error((int)size, "vmdk: cannot read the size of '%s'", filename);
    if (size < 4)
        return img_error(-EINVAL, "vmdk: '%s' is too small, not a valid image", filename);
    size_t n = 0;
    if ((uint64_t)size > offset)
        n = (size_t)((uint64_t)size - offset < max ? (uint64_t)size - offset : max);
    char *buf = calloc(1, max + 1);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    int ret = n ? io_pread(f, buf, n, offset) : 0;
    if (ret < 0) {
        free(buf);
        return img_error(ret, "vmdk: cannot read the descriptor of '%s': %s", filename,
                         img_strerror(ret));
    }
    *out = buf;
    return 0;
}
