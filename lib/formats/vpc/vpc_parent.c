/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The parent of a differencing disk, from its parent locators: "W2ru" (a Windows path
 * relative to the child, UTF-16 little-endian), "MacX" (a file:// URL, UTF-8), "W2ku" (an
 * absolute Windows path, UTF-16 little-endian), in that order of preference, else the
 * header's parent name (UTF-16 big-endian). Windows separators become '/', and a drive-letter
 * path keeps only its last component, found beside the child.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "io/io.h"
#include "util/checked.h"
#include "util/endian.h"
#include "vpc.h"

/* Locator data is a path: bound it well above PATH_MAX. */
#define VPC_LOCATOR_MAX 8192u

static void put_utf8(char **p, uint32_t c)
{
    char *o = *p;
    if (c < 0x80) {
        *o++ = (char)c;
    } else if (c < 0x800) {
        *o++ = (char)(0xc0 | (c >> 6));
        *o++ = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        *o++ = (char)(0xe0 | (c >> 12));
        *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *o++ = (char)(0x80 | (c & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (c >> 18));
        *o++ = (char)(0x80 | ((c >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *o++ = (char)(0x80 | (c & 0x3f));
    }
    *p = o;
}

/* UTF-16 to UTF-8, stopping at a NUL; NULL when malformed or out of memory. */
static char *utf16_to_utf8(const uint8_t *buf, size_t len, bool big_endian)
{
    char *out = malloc(len / 2 * 4 + 1), *p = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t c = big_endian ? load_be16(buf + i) : load_le16(buf + i);
        if (c == 0)
            break;
        if (c >= 0xd800 && c < 0xdc00) {
            uint32_t lo =
                i + 3 < len ? (big_endian ? load_be16(buf + i + 2) : load_le16(buf + i + 2)) : 0;
            if (lo < 0xdc00 || lo >= 0xe000) {
                free(out);
                return NULL;
            }
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        } else if (c >= 0xdc00 && c < 0xe000) {
            free(out);
            return NULL;
        }
        put_utf8(&p, c);
    }
    *p = '\0';
    return out;
}

/* A Windows path made usable here: '/' separators, no ".\" prefix, no drive letter. */
static void windows_to_posix(char *path)
{
    for (char *c = path; *c; c++)
        if (*c == '\\')
            *c = '/';
    if (((path[0] >= 'A' && path[0] <= 'Z') || (path[0] >= 'a' && path[0] <= 'z')) &&
        path[1] == ':') {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path + 2;
        memmove(path, base, strlen(base) + 1);
    }
    while (path[0] == '.' && path[1] == '/')
        memmove(path, path + 2, strlen(path + 2) + 1);
}

/* "file://localhost/dir/name" or "file:///dir/name" to the path, in place. */
static void url_to_path(char *url)
{
    const char *p = url;
    if (strncmp(p, "file://", 7) == 0) {
        p += 7;
        if (strncmp(p, "localhost", 9) == 0)
            p += 9;
    }
    memmove(url, p, strlen(p) + 1);
}

static int read_locator(struct vpc_state *s, const uint8_t *entry, uint64_t file_size, char **out)
{
    struct img *img = s->img;
    uint32_t platform = load_be32(entry);
    uint32_t len = load_be32(entry + 8);
    uint64_t off = load_be64(entry + 16), end;
    if (len == 0 || len > VPC_LOCATOR_MAX || add_overflows_u64(off, len, &end) || end > file_size)
        return img_error(-EINVAL,
                         "vpc: '%s': parent locator data (%" PRIu32 " bytes at 0x%" PRIx64
                         ") is empty, too long or past the end of the file",
                         img->filename, len, off);
    uint8_t *buf = malloc(len);
    if (!buf)
        return img_error(-ENOMEM, "vpc: '%s': out of memory", img->filename);
    int ret = io_pread(img->file, buf, len, off);
    if (ret < 0) {
        free(buf);
        return img_error(ret, "vpc: '%s': cannot read a parent locator: %s", img->filename,
                         img_strerror(ret));
    }
    char *name;
    if (platform == 0x4d616358) { /* "MacX" */
        name = malloc((size_t)len + 1);
        if (name) {
            memcpy(name, buf, len);
            name[len] = '\0';
            url_to_path(name);
        }
    } else {
        name = utf16_to_utf8(buf, len, false);
        if (name)
            windows_to_posix(name);
    }
    free(buf);
    if (!name)
        return img_error(-EINVAL, "vpc: '%s': a parent locator holds a malformed name",
                         img->filename);
    *out = name;
    return 0;
}

int vpc_parent_name(struct vpc_state *s, const uint8_t *header, uint64_t file_size, char **out)
{
    /* "W2ru", "MacX", "W2ku" */
    static const uint32_t preferred[] = {0x57327275, 0x4d616358, 0x57326b75};
    for (size_t p = 0; p < sizeof(preferred) / sizeof(preferred[0]); p++) {
        for (int i = 0; i < VPC_LOCATOR_COUNT; i++) {
            const uint8_t *entry = header + VPC_H_PARENT_LOCATORS + i * VPC_LOCATOR_SIZE;
            if (load_be32(entry) != preferred[p])
                continue;
            int ret = read_locator(s, entry, file_size, out);
            if (ret < 0)
                return ret;
            if (**out)
                return 0;
            free(*out);
            *out = NULL;
        }
    }
    char *name = utf16_to_utf8(header + VPC_H_PARENT_NAME, 512, true);
    if (name && *name) {
        windows_to_posix(name);
        *out = name;
        return 0;
    }
    free(name);
    return img_error(-EINVAL, "vpc: '%s': a differencing disk that names no parent",
                     s->img->filename);
}
