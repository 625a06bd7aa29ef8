/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creating, as qemu-img 7.2 creates: the same subformats, options, header fields, table layout
 * (grain directory, redundant directory, grain tables preallocated as zeros, 64 KiB grains of
 * 512-entry tables) and descriptor text. Split and flat subformats put their extents beside the
 * descriptor, named <name>-flat.<ext>, <name>-s001.<ext>, <name>-f001.<ext>, ...; when create
 * fails, the extent files it made are removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "error.h"
#include "formats/vmdk/vmdk.h"
#include "image.h"
#include "io/io.h"
#include "io/lock.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"

static const char *const subformats[] = {
    "monolithicSparse",   "monolithicFlat",  "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat", "streamOptimized", NULL,
};
static const char *const adapter_types[] = {"ide", "buslogic", "lsilogic", "legacyESX", NULL};

/* In the order of qemu-img's "Formatting ..." line. */
const struct opt_desc vmdk_create_options[] = {
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "adapter_type",
     .type = OPT_STRING,
     .help = "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or "
             "legacyESX"},
    {.name = "backing_file", .type = OPT_PATH, .help = "File name of a base image"},
    {.name = "backing_fmt", .type = OPT_STRING, .help = "Must be 'vmdk' if present"},
    {.name = "compat6", .type = OPT_BOOL, .def = "off", .help = "VMDK version 6 image"},
    {.name = "hwversion", .type = OPT_STRING, .def = "undefined", .help = "VMDK hardware version"},
    {.name = "toolsversion", .type = OPT_STRING, .help = "VMware guest tools version"},
    {.name = "subformat",
     .type = OPT_STRING,
     .help = "VMDK flat extent format, can be one of {monolithicSparse (default) | "
             "monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "},
    {.name = "zeroed_grain",
     .type = OPT_BOOL,
     .help = "Enable efficient zero writes using the zeroed-grain GTE feature"},
    OPT_TABLE_END,
};

struct create_plan {
    const char *subformat;
    const char *adapter;
    const char *hwversion;
    const char *toolsversion;
    bool flat, split, compress, zeroed_grain;
    uint64_t size;
    uint32_t parent_cid;
    const char *backing_file;
};

/* Extent files made so far, removed if create fails. */
struct made_files {
    char **paths;
    size_t count;
};

static int enum_index(const char *const *values, const char *v)
{
    for (int i = 0; values[i]; i++)
        if (strcmp(values[i], v) == 0)
            return i;
    return -1;
}

/* Writes an empty sparse extent of `size` bytes into `f`, laid out as QEMU lays it out. */
static int init_sparse(struct io_file *f, uint64_t size, bool compress, bool zeroed_grain,
                       const char *path)
{
    uint64_t capacity = size / VMDK_SECTOR, granularity = 128;
    uint32_t gtes = 512;
    uint64_t grains = (capacity + granularity - 1) / granularity;
    uint64_t gt_size = (gtes * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    uint64_t gt_count = (grains + gtes - 1) / gtes;
    uint64_t gd_sectors = (gt_count * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    uint64_t desc_offset = 1, desc_size = 20;
    uint64_t rgd = desc_offset + desc_size;
    uint64_t gd = rgd + gd_sectors + gt_size * gt_count;
    uint64_t grain_offset = align_up_u64(gd + gd_sectors + gt_size * gt_count, granularity);
    if (gd + gd_sectors + gt_size * gt_count > UINT32_MAX)
        return img_error(-EFBIG, "vmdk: '%s': %" PRIu64 " bytes is too large for a sparse extent",
                         path, size);
    uint8_t h[512] = {0};
    store_le32(h, VMDK4_MAGIC);
    store_le32(h + 4, compress ? 3 : zeroed_grain ? 2 : 1);
    store_le32(h + 8, VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT |
                          (compress ? VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER : 0) |
                          (zeroed_grain ? VMDK4_FLAG_ZERO_GRAIN : 0));
    store_le64(h + 12, capacity);
    store_le64(h + 20, granularity);
    store_le64(h + 28, desc_offset);
    store_le64(h + 36, desc_size);
    store_le32(h + 44, gtes);
    store_le64(h + 48, rgd);
    store_le64(h + 56, gd);
    store_le64(h + 64, grain_offset);
    memcpy(h + 73, "\n \r\n", 4); /* detects newline conversion in transfers */
    store_le16(h + 77, compress ? VMDK4_COMPRESSION_DEFLATE : 0);
    int ret = io_truncate(f, 0);
    if (ret == 0)
        ret = io_pwrite(f, h, sizeof(h), 0);
    if (ret == 0)
        ret = io_truncate(f, grain_offset * VMDK_SECTOR);
    size_t gd_bytes = (size_t)(gd_sectors * VMDK_SECTOR);
    uint8_t *dir = ret == 0 ? calloc(1, gd_bytes ? gd_bytes : 1) : NULL;
    if (ret == 0 && !dir)
        return img_error(-ENOMEM, "out of memory");
    for (int pass = 0; ret == 0 && pass < 2; pass++) {
        uint64_t base = pass == 0 ? rgd : gd;
        for (uint64_t i = 0; i < gt_count; i++)
            store_le32(dir + 4 * i, (uint32_t)(base + gd_sectors + i * gt_size));
        if (gd_bytes)
            ret = io_pwrite(f, dir, gd_bytes, base * VMDK_SECTOR);
    }
    free(dir);
    if (ret < 0)
        return img_error(ret, "vmdk: cannot write '%s': %s", path, img_strerror(ret));
    return 0;
}

/* "<dir>/<prefix><postfix>" split as QEMU splits it: the extension starts at the last dot. */
static char *extent_path(const char *path, bool flat, bool split, unsigned idx)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t prefix_len = dot ? (size_t)(dot - path) : strlen(path);
    const char *postfix = dot ? dot : "";
    size_t cap = strlen(path) + 16;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    if (split)
        snprintf(out, cap, "%.*s-%c%03u%s", (int)prefix_len, path, flat ? 'f' : 's', idx, postfix);
    else
        snprintf(out, cap, "%.*s-flat%s", (int)prefix_len, path, postfix);
    return out;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/*
 * Creates one extent file, or takes over an existing one only as img_create_named_file()
 * allows (empty, or overwrite_named=on): locked, emptied, then laid out.
 */
static int make_extent(const struct img_create_args *args, const struct create_plan *p,
                       const char *path, uint64_t size, struct made_files *made)
{
    char **grown = realloc(made->paths, (made->count + 1) * sizeof(*grown));
    if (!grown)
        return img_error(-ENOMEM, "out of memory");
    made->paths = grown;
    struct io_file *f;
    char *taken = NULL;
    bool created = false;
    int ret = img_create_named_file(args, path, "extent", &f, &taken, &created);
    if (ret < 0)
        return ret;
    /* Only a file this create made is removed again when it fails. */
    if (created) {
        made->paths[made->count] = taken;
        made->count++;
    } else {
        free(taken);
    }
    if (p->flat) {
        ret = io_truncate(f, size);
        if (ret < 0)
            img_error(ret, "vmdk: cannot size '%s': %s", path, img_strerror(ret));
    } else if (ret == 0) {
        ret = init_sparse(f, size, p->compress, p->zeroed_grain, path);
    }
    io_file_close(f);
    return ret;
}

static int read_parent_cid(const struct img_create_args *args, struct create_plan *p)
{
    if (args->backing_fmt && strcmp(args->backing_fmt, "vmdk") != 0)
        return img_error(-EINVAL, "vmdk: backing_file must be a vmdk image");
    char *full = img_resolve_path(args->path, args->backing_file);
    if (!full)
        return img_error(-ENOMEM, "out of memory");
    struct img *b;
    int ret = img_open(&b, full, NULL,
                       IMG_OPEN_READ_ONLY | IMG_OPEN_NO_BACKING | IMG_OPEN_FORCE_SHARE, NULL);
    free(full);
    if (ret < 0)
        return ret;
    if (strcmp(b->fmt->name, "vmdk") != 0) {
        ret =
            img_error(-EINVAL, "vmdk: invalid backing file format: %s. Must be vmdk", b->fmt->name);
    } else {
        p->parent_cid = ((struct vmdk_state *)b->priv)->cid;
    }
    img_close(b);
    return ret;
}

static int plan_create(const struct img_create_args *args, struct create_plan *p)
{
    const char *sub = img_opts_get(args->opts, "subformat");
    p->subformat = sub ? sub : "monolithicSparse";
    int which = enum_index(subformats, p->subformat);
    if (which < 0)
        return img_error(-EINVAL, "invalid parameter value: %s", p->subformat);
    const char *adapter = img_opts_get(args->opts, "adapter_type");
    p->adapter = adapter ? adapter : "ide";
    if (enum_index(adapter_types, p->adapter) < 0)
        return img_error(-EINVAL, "invalid parameter value: %s", p->adapter);
    bool compat6 = false;
    int ret = opts_get_bool(args->opts, "compat6", &compat6);
    if (ret == 0)
        ret = opts_get_bool(args->opts, "zeroed_grain", &p->zeroed_grain);
    if (ret < 0)
        return ret;
    p->hwversion = img_opts_get(args->opts, "hwversion");
    if (p->hwversion && strcmp(p->hwversion, "undefined") == 0)
        p->hwversion = NULL;
    if (compat6) {
        if (p->hwversion)
            return img_error(-EINVAL, "vmdk: compat6 cannot be enabled with hwversion set");
        p->hwversion = "6";
    }
    if (!p->hwversion)
        p->hwversion = "4";
    p->toolsversion = img_opts_get(args->opts, "toolsversion");
    if (!p->toolsversion)
        p->toolsversion = "2147483647";
    p->split = which == 2 || which == 3;
    p->flat = which == 1 || which == 3;
    p->compress = which == 4;
    if (p->flat && args->backing_file)
        return img_error(-ENOTSUP, "vmdk: Flat image can't have backing file");
    if (p->flat && p->zeroed_grain)
        return img_error(-ENOTSUP, "vmdk: Flat image can't enable zeroed grain");
    uint64_t size = args->size;
    if (!size && (ret = opts_get_size(args->opts, "size", &size)) < 0)
        return ret;
    if (size > (uint64_t)INT64_MAX - 511)
        return img_error(-EFBIG, "vmdk: size %" PRIu64 " is too large", size);
    p->size = align_up_u64(size, VMDK_SECTOR);
    p->parent_cid = 0xffffffff;
    p->backing_file = args->backing_file;
    if (args->backing_file)
        return read_parent_cid(args, p);
    return 0;
}

static int append(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int append(char **buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *grown = n >= 0 ? realloc(*buf, *len + (size_t)n + 1) : NULL;
    if (!grown)
        return img_error(-ENOMEM, "out of memory");
    va_start(ap, fmt);
    vsnprintf(grown + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *buf = grown;
    *len += (size_t)n;
    return 0;
}

static int build(const struct img_create_args *args, const struct create_plan *p,
                 struct made_files *made)
{
    char *lines = NULL;
    size_t lines_len = 0;
    int ret = append(&lines, &lines_len, "%s", "");
    const char *kind = p->flat ? "FLAT" : "SPARSE";
    const char *tail = p->flat ? " 0" : "";
    if (ret == 0 && !p->split && !p->flat) {
        ret = init_sparse(args->file, p->size, p->compress, p->zeroed_grain, args->path);
        if (ret == 0)
            ret = append(&lines, &lines_len, "RW %" PRIu64 " %s \"%s\"%s\n", p->size / VMDK_SECTOR,
                         kind, base_name(args->path), tail);
    } else if (ret == 0) {
        uint64_t chunk = p->split ? VMDK_SPLIT_SIZE : p->size;
        uint64_t done = 0;
        /* Extents keep their names: they are named after the image's final name. */
        char *naming = strdup(args->final_path ? args->final_path : args->path);
        if (!naming)
            ret = img_error(-ENOMEM, "out of memory");
        for (unsigned idx = 1; ret == 0 && done < p->size; idx++) {
            uint64_t n = min_u64(p->size - done, chunk);
            /* A name beside the descriptor: the named-file service resolves it from there. */
            char *path = extent_path(base_name(naming), p->flat, p->split, idx);
            ret = path ? make_extent(args, p, path, n, made)
                       : img_error(-ENOMEM, "out of memory");
            if (ret == 0)
                ret = append(&lines, &lines_len, "RW %" PRIu64 " %s \"%s\"%s\n", n / VMDK_SECTOR,
                             kind, base_name(path), tail);
            free(path);
            done += n;
        }
        free(naming);
    }
    char *parent_line = NULL;
    size_t parent_len = 0;
    if (ret == 0)
        ret = append(&parent_line, &parent_len, "%s", "");
    if (ret == 0 && p->backing_file)
        ret = append(&parent_line, &parent_len, "parentFileNameHint=\"%s\"", p->backing_file);
    uint32_t heads = strcmp(p->adapter, "ide") == 0 ? 16 : 255;
    uint32_t cid = 0;
    if (getrandom(&cid, sizeof(cid), GRND_NONBLOCK) != sizeof(cid))
        cid = (uint32_t)rand();
    char *desc = NULL;
    size_t desc_len = 0;
    if (ret == 0)
        ret = append(&desc, &desc_len,
                     "# Disk DescriptorFile\n"
                     "version=1\n"
                     "CID=%" PRIx32 "\n"
                     "parentCID=%" PRIx32 "\n"
                     "createType=\"%s\"\n"
                     "%s"
                     "\n"
                     "# Extent description\n"
                     "%s"
                     "\n"
                     "# The Disk Data Base\n"
                     "#DDB\n"
                     "\n"
                     "ddb.virtualHWVersion = \"%s\"\n"
                     "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
                     "ddb.geometry.heads = \"%" PRIu32 "\"\n"
                     "ddb.geometry.sectors = \"63\"\n"
                     "ddb.adapterType = \"%s\"\n"
                     "ddb.toolsVersion = \"%s\"\n",
                     cid, p->parent_cid, p->subformat, parent_line, lines, p->hwversion,
                     p->size / ((uint64_t)63 * heads * VMDK_SECTOR), heads, p->adapter,
                     p->toolsversion);
    bool embedded = !p->split && !p->flat;
    if (ret == 0 && embedded && desc_len > VMDK_DESC_SIZE)
        ret = img_error(-EINVAL, "vmdk: the descriptor (%zu bytes) does not fit in its %u bytes",
                        desc_len, VMDK_DESC_SIZE);
    if (ret == 0) {
        ret = embedded ? 0 : io_truncate(args->file, 0);
        if (ret == 0)
            ret = io_pwrite(args->file, desc, desc_len, embedded ? 0x200 : 0);
        if (ret < 0)
            img_error(ret, "vmdk: could not write description to '%s': %s", args->path,
                      img_strerror(ret));
    }
    free(desc);
    free(parent_line);
    free(lines);
    return ret;
}

int vmdk_compress_allowed(const img_opts *opts)
{
    const char *sub = img_opts_get(opts, "subformat");
    if (sub && (strcmp(sub, "monolithicFlat") == 0 || strcmp(sub, "twoGbMaxExtentFlat") == 0))
        return img_error(-ENOTSUP, "vmdk: a %s image cannot write compressed data", sub);
    return 0;
}

int vmdk_create(const struct img_create_args *args)
{
    struct create_plan p = {0};
    int ret = plan_create(args, &p);
    if (ret < 0)
        return ret;
    struct made_files made = {0};
    ret = build(args, &p, &made);
    for (size_t i = 0; i < made.count; i++) {
        if (ret < 0)
            unlink(made.paths[i]);
        free(made.paths[i]);
    }
    free(made.paths);
    return ret;
}
