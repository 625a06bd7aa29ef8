/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * create(): the options of `qemu-img create -f qcow2` (without encryption) and the layout it
 * writes: the header cluster, a one-cluster refcount table, one refcount block, then, through
 * an ordinary resize of the new image, the L1 table (and any preallocation).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "formats/format.h"
#include "formats/qcow2/qcow2.h"
#include "formats/qcow2/qcow2_writer.h"
#include "image.h"
#include "io/io.h"
#include "io/lock.h"
#include "opts.h"
#include "util/checked.h"
#include "util/endian.h"

#define DEFAULT_CLUSTER_SIZE 65536u

struct create_opts {
    uint32_t version;
    uint64_t cluster_size;
    uint32_t cluster_bits;
    uint32_t refcount_order;
    bool lazy_refcounts;
    uint8_t compression_type;
    bool extended_l2;
    enum qcow2_prealloc prealloc;
    const char *data_file;
    bool data_file_raw;
};

static const char *const prealloc_values[] = {"off", "metadata", "falloc", "full", NULL};
static const char *const compat_values[] = {"0.10", "v2", "1.1", "v3", NULL};
static const char *const compression_values[] = {"zlib", "zstd", NULL};

/*
 * The options of `qemu-img create -f qcow2`, in the order qemu-img prints them on its
 * "Formatting ..." line, with its defaults and help texts. The encryption keys are accepted
 * only to be refused (encrypted images are not supported), so they are hidden from -o help.
 */
const struct opt_desc qcow2_create_options[] = {
    {.name = "cluster_size",
     .type = OPT_SIZE,
     .def = "65536",
     .min = 512,
     .max = 2u << 20,
     .help = "qcow2 cluster size"},
    {.name = "extended_l2", .type = OPT_BOOL, .def = "off", .help = "Extended L2 tables"},
    {.name = "preallocation",
     .type = OPT_ENUM,
     .values = prealloc_values,
     .help = "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {.name = "compression_type",
     .type = OPT_ENUM,
     .def = "zlib",
     .values = compression_values,
     .help = "Compression method used for image cluster compression"},
    {.name = "size", .type = OPT_SIZE, .help = "Virtual disk size"},
    {.name = "compat",
     .type = OPT_ENUM,
     .values = compat_values,
     .help = "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {.name = "backing_file", .type = OPT_PATH, .help = "File name of a base image"},
    {.name = "backing_fmt", .type = OPT_STRING, .help = "Image format of the base image"},
    {.name = "data_file", .type = OPT_PATH, .help = "File name of an external data file"},
    {.name = "data_file_raw",
     .type = OPT_BOOL,
     .help = "The external data file must stay valid as a raw image"},
    {.name = "encryption",
     .type = OPT_BOOL,
     .flags = OPT_HIDDEN,
     .help = "Encrypt the image with format 'aes' (not supported)"},
    {.name = "encrypt.format",
     .type = OPT_STRING,
     .flags = OPT_HIDDEN,
     .help = "Encrypt the image (not supported)"},
    {.name = "lazy_refcounts", .type = OPT_BOOL, .def = "off", .help = "Postpone refcount updates"},
    {.name = "refcount_bits",
     .type = OPT_INT,
     .def = "16",
     .min = 1,
     .max = 64,
     .help = "Width of a reference count entry in bits"},
    {.name = "nocow", .type = OPT_BOOL, .help = "Turn off copy-on-write (accepted, no effect)"},
    {.name = "extent_size_hint",
     .type = OPT_SIZE,
     .help = "Extent size hint for the image file (accepted, no effect)"},
    OPT_TABLE_END,
};

static int parse_version(const char *text, uint32_t *version)
{
    *version = 3;
    if (!text)
        return 0;
    if (strcmp(text, "0.10") == 0 || strcmp(text, "v2") == 0)
        *version = 2;
    else if (strcmp(text, "1.1") == 0 || strcmp(text, "v3") == 0)
        *version = 3;
    else
        return img_error(-EINVAL, "Parameter 'compat' does not accept value '%s'", text);
    return 0;
}

static int parse_options(const struct img_create_args *args, struct create_opts *o)
{
    const img_opts *opts = args->opts;
    memset(o, 0, sizeof(*o));
    /* Each option was checked against qcow2_create_options; what is left is how they combine. */
    bool encrypted = false;
    int ret = opts_get_bool(opts, "encryption", &encrypted);
    if (ret < 0)
        return ret;
    if (encrypted || img_opts_get(opts, "encrypt.format"))
        return img_error(-ENOTSUP, "qcow2: encrypted images are not supported");
    uint64_t hint;
    bool nocow;
    if ((ret = opts_get_size(opts, "extent_size_hint", &hint)) < 0 ||
        (ret = opts_get_bool(opts, "nocow", &nocow)) < 0)
        return ret;

    if ((ret = parse_version(img_opts_get(opts, "compat"), &o->version)) < 0)
        return ret;

    o->cluster_size = DEFAULT_CLUSTER_SIZE;
    if ((ret = opts_get_size(opts, "cluster_size", &o->cluster_size)) < 0)
        return ret;
    if (o->cluster_size < 512 || o->cluster_size > (2u << 20) ||
        (o->cluster_size & (o->cluster_size - 1)))
        return img_error(-EINVAL,
                         "qcow2: Cluster size must be a power of two between 512 and 2048k "
                         "(cluster_size %" PRIu64 ")",
                         o->cluster_size);
    o->cluster_bits = (uint32_t)__builtin_ctzll(o->cluster_size);

    uint64_t refcount_bits = 16;
    if ((ret = opts_get_u64(opts, "refcount_bits", &refcount_bits)) < 0)
        return ret;
    if (refcount_bits == 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1)))
        return img_error(-EINVAL,
                         "qcow2: Refcount width must be a power of two and may not exceed 64 bits "
                         "(refcount_bits %" PRIu64 ")",
                         refcount_bits);
    if (o->version < 3 && refcount_bits != 16)
        return img_error(-EINVAL, "qcow2: refcount_bits other than 16 needs compat=1.1 (v3)");
    o->refcount_order = (uint32_t)__builtin_ctzll(refcount_bits);

    if ((ret = opts_get_bool(opts, "lazy_refcounts", &o->lazy_refcounts)) < 0)
        return ret;
    if (o->lazy_refcounts && o->version < 3)
        return img_error(-EINVAL, "qcow2: lazy_refcounts needs compat=1.1 (v3)");

    const char *ctype = img_opts_get(opts, "compression_type");
    if (ctype && strcmp(ctype, "zstd") == 0)
        o->compression_type = QCOW2_COMPRESSION_ZSTD;
    else if (ctype && strcmp(ctype, "zlib") != 0)
        return img_error(-EINVAL, "Parameter 'compression_type' does not accept value '%s'", ctype);
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB && o->version < 3)
        return img_error(-EINVAL, "qcow2: compression_type zstd needs compat=1.1 (v3)");

    if ((ret = opts_get_bool(opts, "extended_l2", &o->extended_l2)) < 0)
        return ret;
    if (o->extended_l2 && o->version < 3)
        return img_error(-EINVAL, "qcow2: extended_l2 needs compat=1.1 (v3)");
    if (o->extended_l2 && o->cluster_size < 16384)
        return img_error(-EINVAL,
                         "qcow2: extended_l2 needs a cluster_size of at least 16384 bytes");

    if ((ret = qcow2_parse_prealloc(img_opts_get(opts, "preallocation"), &o->prealloc)) < 0)
        return ret;
    if (o->prealloc != QCOW2_PREALLOC_OFF && args->backing_file && !o->extended_l2)
        return img_error(-EINVAL, "qcow2: a backing file and preallocation can only be used "
                                  "together with extended_l2=on");

    o->data_file = img_opts_get(opts, "data_file");
    if (o->data_file && !*o->data_file)
        return img_error(-EINVAL, "qcow2: data_file is empty");
    if ((ret = opts_get_bool(opts, "data_file_raw", &o->data_file_raw)) < 0)
        return ret;
    if (o->data_file && o->version < 3)
        return img_error(-EINVAL, "qcow2: data_file needs compat=1.1 (v3)");
    if (o->data_file_raw && !o->data_file)
        return img_error(-EINVAL, "qcow2: data_file_raw needs data_file");
    if (o->data_file_raw && args->backing_file)
        return img_error(-EINVAL, "qcow2: a backing file and data_file_raw cannot be used "
                                  "together");
    /* A raw data file must read the same with or without the metadata: map it all. */
    if (o->data_file_raw && o->prealloc == QCOW2_PREALLOC_OFF)
        o->prealloc = QCOW2_PREALLOC_METADATA;
    if (args->backing_fmt && strlen(args->backing_fmt) > QCOW2_MAX_BACKING_FORMAT)
        return img_error(-EINVAL, "qcow2: backing_fmt '%s' is too long", args->backing_fmt);
    return 0;
}

/* The image size: the positional size, else the "size" option; whole sectors. */
static int image_size(const struct img_create_args *args, const struct create_opts *o,
                      uint64_t *size)
{
    *size = args->size;
    if (*size == 0) {
        int ret = opts_get_size(args->opts, "size", size);
        if (ret < 0)
            return ret;
    }
    if (*size > (uint64_t)INT64_MAX - 511)
        return img_error(-EFBIG, "qcow2: size %" PRIu64 " is too large", *size);
    *size = align_up_u64(*size, 512);
    uint32_t l2_bits = o->cluster_bits - (o->extended_l2 ? 4 : 3);
    if (qcow2_l1_entries_for_size(o->cluster_bits, l2_bits, *size) >
        QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
        return img_error(-EFBIG,
                         "qcow2: size %" PRIu64 " is too large for cluster size %" PRIu64
                         " (try a larger cluster size)",
                         *size, o->cluster_size);
    return 0;
}

static bool is_block_device(struct io_file *f)
{
    struct stat st;
    return fstat(io_file_fd(f), &st) == 0 && S_ISBLK(st.st_mode);
}

/* Writes the header cluster, the refcount table and the first refcount block. */
static int write_skeleton(struct io_file *f, const struct img_create_args *args,
                          const struct create_opts *o)
{
    uint32_t cs = (uint32_t)o->cluster_size;
    struct qcow2_header h;
    memset(&h, 0, sizeof(h));
    h.version = o->version;
    h.cluster_bits = o->cluster_bits;
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.refcount_order = o->refcount_order;
    h.compression_type = o->compression_type;
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB)
        h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    if (o->extended_l2)
        h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
    if (o->data_file)
        h.incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
    if (o->lazy_refcounts)
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (o->data_file_raw)
        h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;

    struct qcow2_extensions ext;
    memset(&ext, 0, sizeof(ext));
    ext.backing_format = (char *)args->backing_fmt;
    ext.data_file = (char *)o->data_file;

    uint8_t *buf = calloc(3, cs);
    if (!buf)
        return img_error(-ENOMEM, "out of memory");
    int ret = qcow2_header_encode(&h, &ext, args->backing_file, NULL, 0, buf, cs);
    if (ret == 0) {
        store_be64(buf + cs, 2ull * cs);
        for (unsigned i = 0; i < 3; i++)
            qcow2_refcount_entry_set(buf + 2 * cs, i, o->refcount_order, 1);
        ret = io_pwrite(f, buf, 3ull * cs, 0);
        if (ret == 0)
            ret = io_fsync(f);
        if (ret < 0)
            img_error(ret, "qcow2: cannot write '%s': %s", args->path, img_strerror(ret));
    }
    free(buf);
    return ret;
}

int qcow2_create(const struct img_create_args *args)
{
    struct create_opts o;
    int ret = parse_options(args, &o);
    uint64_t size = 0;
    if (ret == 0)
        ret = image_size(args, &o, &size);
    if (ret < 0)
        return ret;
    if (args->backing_file && strlen(args->backing_file) > QCOW2_MAX_BACKING_NAME)
        return img_error(-EINVAL, "qcow2: backing file name is too long (at most %u bytes)",
                         QCOW2_MAX_BACKING_NAME);

    /* The core holds the lock on args->file: emptying it now loses nothing a VM uses. */
    struct io_file *f = args->file;
    if (!is_block_device(f) && (ret = io_truncate(f, 0)) < 0)
        return img_error(ret, "qcow2: cannot empty '%s': %s", args->path, img_strerror(ret));
    /*
     * The data file is touched last: only once the image is written and locked, and the data
     * file itself locked, is it emptied. Until then a failure leaves it as it was.
     */
    struct io_file *data = NULL;
    char *data_path = NULL;
    bool data_created = false;
    ret = write_skeleton(f, args, &o);
    if (ret == 0 && o.data_file)
        ret =
            img_create_named_file(args, o.data_file, "data file", &data, &data_path, &data_created);
    if (ret < 0 && data_created)
        unlink(data_path);
    io_file_close(data);
    free(data_path);
    if (ret < 0)
        return ret;
    /* img_open() below takes the lock again on its own open of the file. */
    io_file_unlock(f);

    /* The rest is an ordinary resize of the empty image, as qemu-img does it. */
    struct img *img;
    ret = img_open(&img, args->path, "qcow2",
                   IMG_OPEN_READ_WRITE | IMG_OPEN_NO_BACKING | IMG_OPEN_ALLOW_DATA_FILE, NULL);
    if (ret < 0) {
        img_error_prefix("qcow2: cannot open the new image");
        return ret;
    }
    img_opts *ropts = NULL;
    static const char *const names[] = {"off", "metadata", "falloc", "full"};
    ret = img_opts_new(&ropts);
    if (ret == 0 && o.prealloc != QCOW2_PREALLOC_OFF)
        ret = img_opts_set(ropts, "preallocation", names[o.prealloc]);
    if (ret == 0 && (size || o.prealloc != QCOW2_PREALLOC_OFF))
        ret = img_resize(img, size, 0, ropts);
    img_opts_free(ropts);
    if (ret == 0)
        ret = img_flush(img);
    img_close(img);
    return ret;
}
