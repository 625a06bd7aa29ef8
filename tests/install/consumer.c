/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program built the way a user of the installed library builds one: only <imgutil.h> and the
 * flags pkg-config gives. It writes a small raw image, opens it and reads it back.
 *
 * usage: consumer IMAGE_PATH
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <imgutil.h>

#define IMAGE_SIZE (256 * 1024)

static unsigned char expected_byte(size_t i)
{
    return (unsigned char)((i * 13 + 5) % 251);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGE_PATH\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];

    unsigned char *data = malloc(IMAGE_SIZE);
    if (!data)
        return 1;
    for (size_t i = 0; i < IMAGE_SIZE; i++)
        data[i] = expected_byte(i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, IMAGE_SIZE, f) != IMAGE_SIZE || fclose(f) != 0) {
        perror(path);
        return 1;
    }

    img *image = NULL;
    int ret = img_open(&image, path, "raw", IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0) {
        fprintf(stderr, "img_open: %d: %s\n", ret, img_last_error());
        return 1;
    }
    int status = 0;
    if (img_get_size(image) != IMAGE_SIZE) {
        fprintf(stderr, "size %lld, expected %d\n", (long long)img_get_size(image), IMAGE_SIZE);
        status = 1;
    }
    unsigned char buf[4096];
    const uint64_t offset = 12345;
    int64_t got = img_pread(image, buf, sizeof(buf), offset);
    if (got != (int64_t)sizeof(buf) || memcmp(buf, data + offset, sizeof(buf)) != 0) {
        fprintf(stderr, "img_pread returned %lld or the wrong bytes\n", (long long)got);
        status = 1;
    }
    char *info = NULL;
    ret = img_info_json(image, 0, &info);
    if (ret < 0 || !strstr(info, "\"virtual-size\": 262144")) {
        fprintf(stderr, "img_info_json: %d: %s\n", ret, info ? info : img_last_error());
        status = 1;
    }
    img_free(info);
    img_close(image);
    free(data);
    if (status == 0)
        printf("read %s with libimgutil %s\n", path, img_version());
    return status;
}
