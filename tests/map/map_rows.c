/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * img_map() from an embedding program's side (only imgutil.h).
 *
 *   map_rows IMAGE OFFSET LENGTH
 *       Prints the rows of [OFFSET, OFFSET + LENGTH) in the layout of qemu-img map
 *       --output=json --start-offset=OFFSET --max-length=LENGTH (without the empty entry
 *       qemu-img invents for an empty range); with OFFSET 0 and LENGTH covering the image, also
 *       checks that img_map_json() returns the same text.
 *   map_rows IMAGE OFFSET LENGTH STOP
 *       A callback that returns 42 at row STOP: img_map() must return 42 having delivered
 *       exactly STOP rows.
 *
 * Exit status: 0 success, 1 a failed call or a mismatch, 2 bad usage.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgutil.h"

struct text {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void append(struct text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->buf, cap);
        if (!p) {
            t->failed = true;
            return;
        }
        t->buf = p;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n + 1);
    t->len += n;
}

struct rows {
    struct text text;
    uint64_t count, stop;
    uint64_t next_start;
    bool out_of_order;
};

static int on_row(void *user, uint64_t start, uint64_t length, int depth, unsigned status,
                  uint64_t offset)
{
    struct rows *r = user;
    char line[256];
    if (r->count && start != r->next_start)
        r->out_of_order = true;
    r->next_start = start + length;
    snprintf(line, sizeof(line),
             "%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": "
             "%s, \"zero\": %s, \"data\": %s",
             r->count ? ",\n" : "[", start, length, depth,
             (status & IMG_BLOCK_ALLOCATED) ? "true" : "false",
             (status & IMG_BLOCK_ZERO) ? "true" : "false",
             (status & IMG_BLOCK_DATA) ? "true" : "false");
    append(&r->text, line);
    if (status & IMG_BLOCK_OFFSET_VALID) {
        snprintf(line, sizeof(line), ", \"offset\": %" PRIu64, offset);
        append(&r->text, line);
    }
    append(&r->text, "}");
    r->count++;
    return r->stop && r->count == r->stop ? 42 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: map_rows IMAGE OFFSET LENGTH [STOP]\n");
        return 2;
    }
    uint64_t offset = strtoull(argv[2], NULL, 0), length = strtoull(argv[3], NULL, 0);
    struct rows rows = {.stop = argc == 5 ? strtoull(argv[4], NULL, 0) : 0};
    img *image;
    if (img_open(&image, argv[1], NULL, IMG_OPEN_READ_ONLY, NULL) < 0) {
        fprintf(stderr, "%s\n", img_last_error());
        return 1;
    }
    int status = 1;
    int ret = img_map(image, offset, length, on_row, &rows);
    if (rows.text.failed || rows.out_of_order) {
        fprintf(stderr, "rows out of order or out of memory\n");
        goto out;
    }
    if (rows.stop) {
        if (ret != 42 || rows.count != rows.stop) {
            fprintf(stderr,
                    "img_map returned %d after %" PRIu64 " rows, expected 42 after %" PRIu64 "\n",
                    ret, rows.count, rows.stop);
            goto out;
        }
        status = 0;
        goto out;
    }
    if (ret != 0) {
        fprintf(stderr, "img_map: %d %s\n", ret, img_last_error());
        goto out;
    }
    append(&rows.text, rows.count ? "]\n" : "[]\n");
    fputs(rows.text.buf, stdout);
    if (offset == 0 && length >= (uint64_t)img_get_size(image)) {
        char *json;
        if (img_map_json(image, &json) < 0) {
            fprintf(stderr, "img_map_json: %s\n", img_last_error());
            goto out;
        }
        bool same = strcmp(json, rows.text.buf) == 0;
        img_free(json);
        if (!same) {
            fprintf(stderr, "img_map_json differs from the img_map rows\n");
            goto out;
        }
    }
    status = 0;
out:
    free(rows.text.buf);
    img_close(image);
    return status;
}
