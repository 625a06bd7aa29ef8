/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * inspect: what `qemu-img info` says of an image, through the typed getters (no JSON).
 *
 *   inspect IMAGE
 *
 * Prints one "key: value" line per fact, then the files the image names and its snapshots.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <imgutil.h>

static const char *kind_name(int kind)
{
    switch (kind) {
    case IMG_NAMED_BACKING:
        return "backing file";
    case IMG_NAMED_DATA_FILE:
        return "data file";
    case IMG_NAMED_EXTENT:
        return "extent";
    default:
        return "file";
    }
}

static void print_flags(int flags)
{
    static const struct {
        int bit;
        const char *name;
    } names[] = {
        {IMG_FLAG_DIRTY, "dirty"},         {IMG_FLAG_CORRUPT, "corrupt"},
        {IMG_FLAG_ENCRYPTED, "encrypted"}, {IMG_FLAG_DATA_FILE, "data-file"},
        {IMG_FLAG_SNAPSHOTS, "snapshots"}, {IMG_FLAG_BITMAPS, "bitmaps"},
        {IMG_FLAG_BACKING, "backing"},
    };
    printf("flags:");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & names[i].bit)
            printf(" %s", names[i].name);
    printf("\n");
}

static int print_snapshots(img *image)
{
    int count = img_snapshot_count(image);
    if (count < 0)
        return count;
    for (int i = 0; i < count; i++) {
        char *id, *name;
        int64_t date_sec;
        int32_t date_nsec;
        uint64_t clock_ns, state_size;
        int ret =
            img_snapshot_get(image, i, &id, &name, &date_sec, &date_nsec, &clock_ns, &state_size);
        if (ret < 0)
            return ret;
        printf("snapshot: id=%s name=%s date=%" PRId64 " vm-clock-ns=%" PRIu64
               " vm-state-size=%" PRIu64 "\n",
               id, name, date_sec, clock_ns, state_size);
        img_free(id);
        img_free(name);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: inspect IMAGE\n");
        return 2;
    }
#if IMGUTIL_CHECK_VERSION(1, 1, 0)
    if (img_version_number() < IMGUTIL_VERSION_NUMBER)
        fprintf(stderr, "inspect: built against libimgutil %d, running with %s\n",
                IMGUTIL_VERSION_NUMBER, img_version());
#endif
    img *image;
    /* Read-only and without locks, as `qemu-img info -U`: a VM may be using the image. */
    int ret = img_open(&image, argv[1], NULL,
                       IMG_OPEN_READ_ONLY | IMG_OPEN_FORCE_SHARE | IMG_OPEN_NO_BACKING, NULL);
    if (ret < 0) {
        fprintf(stderr, "inspect: %s\n", img_last_error());
        return 1;
    }
    const char *backing, *backing_format;
    img_get_backing_filename(image, &backing, &backing_format);
    printf("filename: %s\n", img_get_filename(image));
    printf("format: %s\n", img_get_format(image));
    printf("virtual-size: %" PRId64 "\n", img_get_size(image));
    printf("actual-size: %" PRId64 "\n", img_get_allocated_size(image));
    printf("cluster-size: %" PRId64 "\n", img_get_cluster_size(image));
    printf("backing-filename: %s\n", backing ? backing : "-");
    printf("backing-filename-format: %s\n", backing_format ? backing_format : "-");
    int flags = img_get_flags(image);
    if (flags >= 0)
        print_flags(flags);
    for (int i = 0; i < img_get_named_file_count(image); i++) {
        int kind;
        const char *path = img_get_named_file(image, i, &kind);
        printf("names: %s %s\n", kind_name(kind), path);
    }
    ret = flags < 0 ? flags : print_snapshots(image);
    if (ret < 0)
        fprintf(stderr, "inspect: %s\n", img_last_error());
    img_close(image);
    return ret < 0 ? 1 : 0;
}
