/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * open_image IMAGE [rw]: opens IMAGE through the public API with its data file allowed
 * (read-only, or read-write with "rw"), reads its first sector, and prints "opened" (exit 0)
 * or "refused CODE MESSAGE" (exit 3).
 */
#include <stdio.h>
#include <string.h>

#include "imgutil.h"

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: open_image IMAGE [rw]\n");
        return 2;
    }
    unsigned flags = IMG_OPEN_ALLOW_DATA_FILE;
    flags |= argc == 3 && strcmp(argv[2], "rw") == 0 ? IMG_OPEN_READ_WRITE : IMG_OPEN_READ_ONLY;
    img *image;
    int ret = img_open(&image, argv[1], NULL, flags, NULL);
    if (ret == 0) {
        char sector[512];
        int64_t n = img_pread(image, sector, sizeof(sector), 0);
        img_close(image);
        if (n < 0) {
            printf("read failed %d %s\n", (int)n, img_last_error());
            return 1;
        }
        printf("opened\n");
        return 0;
    }
    printf("refused %d %s\n", ret, img_last_error());
    return 3;
}
