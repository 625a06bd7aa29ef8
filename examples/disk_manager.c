/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * disk_manager: what a VM manager such as Lima does with disks, through the library alone.
 *
 *   disk_manager BASE_IMAGE DIR DISK_SIZE_BYTES
 *
 *  1. probes the base (a downloaded cloud image, any format) and inspects it;
 *  2. makes DIR/diffdisk, a qcow2 overlay on the base, of DISK_SIZE_BYTES (create -F -b);
 *  3. writes to the overlay (as the guest would) and grows it by 1 MiB (resize);
 *  4. takes, lists, applies and deletes an internal snapshot (snapshot -c/-l/-a/-d);
 *  5. converts the overlay (with its base) to DIR/disk.raw for a hypervisor that wants raw,
 *     grown to at least DISK_SIZE_BYTES + 4 MiB in the same atomic step (min_size);
 *  6. makes DIR/disk.raw sparse again after the guest wrote zeros (zero with unmap).
 *
 * Each step prints one line; any failure prints img_last_error() and exits 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <imgutil.h>

#define MIB (1024 * 1024)

static int fail(const char *step)
{
    fprintf(stderr, "disk_manager: %s: %s\n", step, img_last_error());
    return 1;
}

static int make_overlay(const char *base, const char *base_format, const char *diffdisk,
                        uint64_t size)
{
    img_opts *opts;
    int ret = img_opts_new(&opts);
    if (ret == 0)
        ret = img_opts_set(opts, "backing_file", base);
    if (ret == 0)
        ret = img_opts_set(opts, "backing_fmt", base_format);
    if (ret == 0)
        ret = img_create(diffdisk, "qcow2", size, opts);
    img_opts_free(opts);
    return ret;
}

static int guest_writes(img *disk)
{
    char block[4096];
    memset(block, 'G', sizeof(block));
    for (uint64_t off = 0; off < 8 * MIB; off += 2 * MIB)
        if (img_pwrite(disk, block, sizeof(block), off) != (int64_t)sizeof(block))
            return -1;
    return img_flush(disk);
}

static int snapshots(img *disk)
{
    int ret = img_snapshot_create(disk, "before-upgrade");
    if (ret < 0)
        return ret;
    printf("snapshots: %d\n", img_snapshot_count(disk));
    char bad[4096];
    memset(bad, 'X', sizeof(bad));
    if (img_pwrite(disk, bad, sizeof(bad), 0) != (int64_t)sizeof(bad))
        return -1;
    ret = img_snapshot_apply(disk, "before-upgrade");
    if (ret == 0)
        ret = img_snapshot_delete(disk, "before-upgrade");
    char back[4096];
    if (ret == 0 && img_pread(disk, back, sizeof(back), 0) != (int64_t)sizeof(back))
        ret = -1;
    if (ret == 0)
        printf("snapshot: applied and deleted; first byte back to '%c'\n", back[0]);
    return ret;
}

static int to_raw(img *disk, const char *raw, uint64_t min_size)
{
    img_opts *opts;
    char value[32];
    snprintf(value, sizeof(value), "%" PRIu64, min_size);
    int ret = img_opts_new(&opts);
    if (ret == 0)
        ret = img_opts_set(opts, "min_size", value);
    if (ret == 0)
        ret = img_convert(disk, raw, "raw", opts, NULL, NULL);
    img_opts_free(opts);
    return ret;
}

static int make_sparse(const char *raw)
{
    img *disk;
    int ret = img_open(&disk, raw, "raw", IMG_OPEN_READ_WRITE, NULL);
    if (ret < 0)
        return ret;
    /* The guest zeroed its second write; give the space back to the host. */
    char block[4096];
    uint64_t off = 2 * MIB;
    memset(block, 0, sizeof(block));
    if (img_pwrite(disk, block, sizeof(block), off) != (int64_t)sizeof(block))
        ret = -1;
    if (ret == 0)
        ret = img_zero(disk, off, sizeof(block), IMG_ZERO_MAY_UNMAP);
    printf("sparse: %s now takes %" PRId64 " bytes\n", raw, img_get_allocated_size(disk));
    img_close(disk);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: disk_manager BASE_IMAGE DIR DISK_SIZE_BYTES\n");
        return 2;
    }
    const char *base = argv[1];
    uint64_t disk_size = strtoull(argv[3], NULL, 10);
    char diffdisk[4096], raw[4096];
    snprintf(diffdisk, sizeof(diffdisk), "%s/diffdisk", argv[2]);
    snprintf(raw, sizeof(raw), "%s/disk.raw", argv[2]);

    const char *base_format;
    if (img_probe(base, &base_format) < 0)
        return fail("probe");
    printf("base: %s is %s\n", base, base_format);
    /* The overlay names the base by an absolute path: it lives in another folder. */
    char *base_path = realpath(base, NULL);
    if (!base_path || make_overlay(base_path, base_format, diffdisk, disk_size) < 0)
        return fail("create");
    free(base_path);
    printf("create: %s (qcow2 on %s)\n", diffdisk, base_format);

    img *disk;
    if (img_open(&disk, diffdisk, "qcow2", IMG_OPEN_READ_WRITE, NULL) < 0)
        return fail("open");
    if (guest_writes(disk) < 0) {
        img_close(disk);
        return fail("write");
    }
    if (img_resize(disk, disk_size + MIB, 0, NULL) < 0) {
        img_close(disk);
        return fail("resize");
    }
    printf("resize: %" PRId64 " bytes\n", img_get_size(disk));
    if (snapshots(disk) < 0) {
        img_close(disk);
        return fail("snapshot");
    }
    int ret = to_raw(disk, raw, disk_size + 4 * MIB);
    img_close(disk);
    if (ret < 0)
        return fail("convert");
    printf("convert: %s\n", raw);
    if (make_sparse(raw) < 0)
        return fail("sparse");
    return 0;
}
