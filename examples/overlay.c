/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * overlay: creates a qcow2 overlay on a base image, as `qemu-img create -f qcow2 -F FMT -b
 * BASE OVERLAY [SIZE]` does: the base's format is probed (and recorded, so that QEMU never
 * has to guess it), the overlay is as large as the base unless SIZE says more.
 *
 *   overlay BASE OVERLAY [SIZE_BYTES]
 *
 * The base's name is stored as given: relative to the overlay's folder, as QEMU resolves it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <imgutil.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: overlay BASE OVERLAY [SIZE_BYTES]\n");
        return 2;
    }
    const char *base_format;
    img *base = NULL;
    img_opts *opts = NULL;
    int ret = img_probe(argv[1], &base_format);
    /* The size comes from the base itself; the overlay may only be larger. */
    if (ret == 0)
        ret =
            img_open(&base, argv[1], base_format, IMG_OPEN_READ_ONLY | IMG_OPEN_FORCE_SHARE, NULL);
    uint64_t size = 0;
    if (ret == 0) {
        size = (uint64_t)img_get_size(base);
        if (argc == 4 && strtoull(argv[3], NULL, 10) > size)
            size = strtoull(argv[3], NULL, 10);
        img_close(base);
        ret = img_opts_new(&opts);
    }
    if (ret == 0)
        ret = img_opts_set(opts, "backing_file", argv[1]);
    if (ret == 0)
        ret = img_opts_set(opts, "backing_fmt", base_format);
    if (ret == 0)
        ret = img_create(argv[2], "qcow2", size, opts);
    img_opts_free(opts);
    if (ret < 0) {
        fprintf(stderr, "overlay: %s\n", img_last_error());
        return 1;
    }
    printf("%s: qcow2 overlay of %s (%s), %" PRIu64 " bytes\n", argv[2], argv[1], base_format,
           size);
    return 0;
}
