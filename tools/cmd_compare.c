/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* imgutil compare: compares the guest content of two images, as qemu-img compare does. */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_progress.h"
#include "cli_util.h"

/* qemu-img compare's exit codes. */
#define COMPARE_EXIT_DIFFERENT 1
#define COMPARE_EXIT_OPEN 2
#define COMPARE_EXIT_STATUS 3
#define COMPARE_EXIT_READ 4

#define COMPARE_BUF_SIZE (2u << 20)
/* Mismatches are reported at sector granularity, as qemu-img reports them. */
#define SECTOR_SIZE 512
#define STATUS_MASK (IMG_BLOCK_DATA | IMG_BLOCK_ZERO | IMG_BLOCK_ALLOCATED)

struct side {
    const char *filename;
    img *image;
    int64_t size;
    unsigned char *buf;
};

struct compare {
    struct side a, b;
    bool strict, quiet;
    struct cli_progress progress;
    uint64_t total;
};

static void say(const struct compare *cmp, const char *fmt, ...) CLI_PRINTF(2, 3);

static void say(const struct compare *cmp, const char *fmt, ...)
{
    if (cmp->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* The status of the run at `offset`; 0, or COMPARE_EXIT_STATUS after reporting. */
static int block_status(struct side *s, uint64_t offset, uint64_t length, uint64_t *pnum,
                        unsigned *status)
{
    if (img_block_status(s->image, offset, length, pnum, status, NULL, NULL) < 0 || !*pnum) {
        cli_lib_error("Sector allocation test failed for %s", s->filename);
        return COMPARE_EXIT_STATUS;
    }
    return 0;
}

static int read_chunk(struct side *s, uint64_t offset, size_t len)
{
    int64_t n = img_pread(s->image, s->buf, len, offset);
    if (n != (int64_t)len) {
        cli_lib_error("Error while reading offset %" PRIu64 " of %s", offset, s->filename);
        return COMPARE_EXIT_READ;
    }
    return 0;
}

/* Index of the first byte that differs, or len. */
static size_t first_difference(const unsigned char *x, const unsigned char *y, size_t len)
{
    size_t i = 0;
    /* memcmp finds out quickly whether any difference is there at all. */
    if (memcmp(x, y, len) == 0)
        return len;
    while (i < len && x[i] == y[i])
        i++;
    return i;
}

static size_t first_nonzero(const unsigned char *x, size_t len)
{
    size_t i = 0;
    while (i < len && x[i] == 0)
        i++;
    return i;
}

static int report_mismatch(const struct compare *cmp, uint64_t offset, size_t index)
{
    say(cmp, "Content mismatch at offset %" PRIu64 "!\n",
        offset + (uint64_t)(index / SECTOR_SIZE * SECTOR_SIZE));
    return COMPARE_EXIT_DIFFERENT;
}

static bool interrupted(struct compare *cmp, uint64_t done)
{
    return cli_progress_update(&cmp->progress, done, cmp->total) != 0;
}

/* Compares [0, common) of both images. */
static int compare_common(struct compare *cmp, uint64_t common)
{
    uint64_t offset = 0;
    while (offset < common) {
        uint64_t pnum_a, pnum_b;
        unsigned st_a, st_b;
        int ret = block_status(&cmp->a, offset, common - offset, &pnum_a, &st_a);
        if (!ret)
            ret = block_status(&cmp->b, offset, common - offset, &pnum_b, &st_b);
        if (ret)
            return ret;
        uint64_t chunk = pnum_a < pnum_b ? pnum_a : pnum_b;
        if (cmp->strict && (st_a & STATUS_MASK) != (st_b & STATUS_MASK)) {
            say(cmp, "Strict mode: Offset %" PRIu64 " block status mismatch!\n", offset);
            return COMPARE_EXIT_DIFFERENT;
        }
        if (!((st_a & IMG_BLOCK_ZERO) && (st_b & IMG_BLOCK_ZERO))) {
            if (chunk > COMPARE_BUF_SIZE)
                chunk = COMPARE_BUF_SIZE;
            ret = read_chunk(&cmp->a, offset, (size_t)chunk);
            if (!ret)
                ret = read_chunk(&cmp->b, offset, (size_t)chunk);
            if (ret)
                return ret;
            size_t diff = first_difference(cmp->a.buf, cmp->b.buf, (size_t)chunk);
            if (diff < chunk)
                return report_mismatch(cmp, offset, diff);
        }
        offset += chunk;
        if (interrupted(cmp, offset))
            return CLI_EXIT_FAILURE;
    }
    return 0;
}

/* Checks that the part of the longer image past `from` reads as zeros. */
static int compare_tail(struct compare *cmp, struct side *longer, uint64_t from)
{
    uint64_t offset = from, end = (uint64_t)longer->size;
    while (offset < end) {
        uint64_t chunk;
        unsigned status;
        int ret = block_status(longer, offset, end - offset, &chunk, &status);
        if (ret)
            return ret;
        if (!(status & IMG_BLOCK_ZERO)) {
            if (chunk > COMPARE_BUF_SIZE)
                chunk = COMPARE_BUF_SIZE;
            ret = read_chunk(longer, offset, (size_t)chunk);
            if (ret)
                return ret;
            size_t nonzero = first_nonzero(longer->buf, (size_t)chunk);
            if (nonzero < chunk)
                return report_mismatch(cmp, offset, nonzero);
        }
        offset += chunk;
        if (interrupted(cmp, offset))
            return CLI_EXIT_FAILURE;
    }
    return 0;
}

static int run_compare(struct compare *cmp)
{
    if (cmp->a.size != cmp->b.size && cmp->strict) {
        say(cmp, "Strict mode: Image size mismatch!\n");
        return COMPARE_EXIT_DIFFERENT;
    }
    struct side *longer = cmp->a.size > cmp->b.size ? &cmp->a : &cmp->b;
    uint64_t common = (uint64_t)(cmp->a.size < cmp->b.size ? cmp->a.size : cmp->b.size);
    cmp->total = (uint64_t)longer->size;

    int ret = compare_common(cmp, common);
    if (!ret && cmp->a.size != cmp->b.size) {
        say(cmp, "Warning: Image size mismatch!\n");
        ret = compare_tail(cmp, longer, common);
    }
    if (!ret)
        say(cmp, "Images are identical.\n");
    return ret;
}

static int open_side(struct side *s, const char *format, unsigned flags)
{
    if (cli_open_image(&s->image, s->filename, format, flags) < 0)
        return COMPARE_EXIT_OPEN;
    s->size = img_get_size(s->image);
    if (s->size < 0) {
        cli_lib_error("Can't get size of %s", s->filename);
        return COMPARE_EXIT_OPEN;
    }
    s->buf = malloc(COMPARE_BUF_SIZE);
    if (!s->buf) {
        cli_error("compare: out of memory");
        return COMPARE_EXIT_OPEN;
    }
    return 0;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORCE_SHARE,
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args args = {.format = NULL};
    const char *format_b = NULL;
    struct compare cmp;
    bool show_progress = false;
    int c;

    memset(&cmp, 0, sizeof(cmp));
    while ((c = cli_image_getopt(argc, argv, ":hf:F:pqsU", long_options, &args)) != -1) {
        switch (c) {
        case 'F':
            format_b = optarg;
            break;
        case 'p':
            show_progress = true;
            break;
        case 's':
            cmp.strict = true;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (args.stop)
        return args.status;
    cmp.quiet = args.quiet;
    unsigned flags = IMG_OPEN_READ_ONLY | args.share;
    if (optind != argc - 2)
        return cli_usage_error("Expecting two image file names");
    cmp.a.filename = argv[optind];
    cmp.b.filename = argv[optind + 1];

    int status = open_side(&cmp.a, args.format, flags);
    if (!status)
        status = open_side(&cmp.b, format_b, flags);
    if (!status) {
        cli_progress_start(&cmp.progress, show_progress && !cmp.quiet);
        status = run_compare(&cmp);
        cli_progress_finish(&cmp.progress, status == 0);
    }
    img_close(cmp.a.image);
    img_close(cmp.b.image);
    free(cmp.a.buf);
    free(cmp.b.buf);
    cli_progress_reraise();
    return status;
}
