/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * imgutil dd: copies an image, from `skip` blocks in and for up to `count` blocks, into a new
 * image, as qemu-img dd does: the output is created (replacing any file of that name) with
 * the input's size less the skipped bytes (count * bs, when smaller, less the skipped bytes:
 * qemu-img counts the skipped blocks in `count`), then written block by block.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_commands.h"
#include "cli_image_args.h"
#include "cli_util.h"

enum {
    OPT_IMAGE_OPTS = CLI_OPT_OWN,
    OPT_OBJECT,
};

struct dd_args {
    const char *in_format, *out_format;
    unsigned share;
    const char *in_name, *out_name;
    uint64_t block_size;
    bool has_count, has_skip;
    uint64_t count, skip;
};

/* Parses the value of a number operand; prints qemu-img's message when it is refused. */
static int parse_number(const char *what, const char *text, uint64_t *out)
{
    int ret = cli_parse_size(text, out);
    if (ret < 0) {
        cli_size_error(ret, what);
        return -1;
    }
    return 0;
}

/* One "key=value" operand. Returns 0, or -1 after printing why it was refused. */
static int parse_operand(const char *word, struct dd_args *a)
{
    const char *eq = strchr(word, '=');
    size_t key_len = eq ? (size_t)(eq - word) : 0;
#define KEY_IS(k) (eq && key_len == strlen(k) && strncmp(word, k, key_len) == 0)
    if (KEY_IS("bs")) {
        int ret = cli_parse_size(eq + 1, &a->block_size);
        if (ret == 0 && (a->block_size < 1 || a->block_size > INT_MAX))
            ret = -ERANGE;
        if (ret == -ERANGE) {
            cli_error("Invalid bs specified. Must be between 1 and %d.", INT_MAX);
            return -1;
        }
        if (ret < 0) {
            cli_size_error(ret, "bs");
            return -1;
        }
    } else if (KEY_IS("count")) {
        if (parse_number("count", eq + 1, &a->count))
            return -1;
        a->has_count = true;
    } else if (KEY_IS("skip")) {
        if (parse_number("skip", eq + 1, &a->skip))
            return -1;
        a->has_skip = true;
    } else if (KEY_IS("if")) {
        a->in_name = eq + 1;
    } else if (KEY_IS("of")) {
        a->out_name = eq + 1;
    } else {
        /* qemu-img names the key alone when there is one. */
        cli_error("unrecognized operand %.*s", eq ? (int)key_len : (int)strlen(word), word);
        return -1;
    }
#undef KEY_IS
    return 0;
}

/* Returns -1 to go on, or the exit status when the options end the command. */
static int parse_options(int argc, char **argv, struct dd_args *a)
{
    static const struct option long_options[] = {
        CLI_LONG_HELP,
        CLI_LONG_FORMAT,
        CLI_LONG_FORCE_SHARE,
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"object", required_argument, NULL, OPT_OBJECT},
        {NULL, 0, NULL, 0},
    };
    struct cli_image_args image = {.format = NULL};
    int c;
    while ((c = cli_image_getopt(argc, argv, ":hf:O:U", long_options, &image)) != -1) {
        switch (c) {
        case 'O':
            a->out_format = optarg;
            break;
        case OPT_IMAGE_OPTS:
        case OPT_OBJECT:
            cli_error("--image-opts and --object are not supported");
            return CLI_EXIT_FAILURE;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (image.stop)
        return image.status;
    a->in_format = image.format;
    a->share = image.share;
    for (int i = optind; i < argc; i++)
        if (parse_operand(argv[i], a))
            return CLI_EXIT_FAILURE;
    return -1;
}

/* Copies [in_pos, end) of `in` to `out` from offset 0, one block at a time. */
static int copy_blocks(img *in, img *out, uint64_t in_pos, uint64_t end, size_t block_size)
{
    void *buf = malloc(block_size);
    if (!buf) {
        cli_error("out of memory for a block of %zu bytes", block_size);
        return -1;
    }
    int ret = 0;
    for (uint64_t out_pos = 0; in_pos < end;) {
        size_t n = end - in_pos < block_size ? (size_t)(end - in_pos) : block_size;
        int64_t done = img_pread(in, buf, n, in_pos);
        if (done < 0) {
            cli_error("error while reading from input image file: %s", img_last_error());
            ret = -1;
            break;
        }
        in_pos += n;
        done = img_pwrite(out, buf, n, out_pos);
        if (done < 0) {
            cli_error("error while writing to output image file: %s", img_last_error());
            ret = -1;
            break;
        }
        out_pos += n;
    }
    free(buf);
    return ret;
}

/* The bytes the output holds and where the copy starts, as qemu-img dd computes them. */
static void dd_extent(const struct dd_args *a, uint64_t in_size, uint64_t *start, uint64_t *end,
                      bool *skip_beyond)
{
    uint64_t bs = a->block_size;
    uint64_t size = in_size;
    if (a->has_count && a->count <= INT64_MAX / bs && a->count * bs < size)
        size = a->count * bs;
    *skip_beyond = a->has_skip && (a->skip > INT64_MAX / bs || size < a->skip * bs);
    *start = *skip_beyond ? size : (a->has_skip ? a->skip * bs : 0);
    *end = size;
}

static int dd(const struct dd_args *a)
{
    img *in = NULL, *out = NULL;
    img_opts *opts = NULL;
    int status = CLI_EXIT_FAILURE;
    if (cli_open_image(&in, a->in_name, a->in_format, IMG_OPEN_READ_ONLY | a->share) < 0)
        return CLI_EXIT_FAILURE;
    if (img_format_supports(a->out_format, "create") != 1) {
        if (img_format_supports(a->out_format, "read") < 0)
            cli_error("Unknown file format");
        else
            cli_error("Format driver '%s' does not support image creation", a->out_format);
        goto out;
    }
    int64_t in_size = img_get_size(in);
    if (in_size < 0) {
        cli_error("Failed to get size for '%s'", a->in_name);
        goto out;
    }
    uint64_t start, end;
    bool skip_beyond;
    dd_extent(a, (uint64_t)in_size, &start, &end, &skip_beyond);

    /* qemu-img dd replaces an existing output file. */
    if (cli_opts_set(&opts, "overwrite", "on"))
        goto out;
    if (img_create(a->out_name, a->out_format, end - start, opts) < 0) {
        cli_error("%s: error while creating output image: %s", a->out_name, img_last_error());
        goto out;
    }
    if (cli_open_image(&out, a->out_name, a->out_format, IMG_OPEN_READ_WRITE) < 0)
        goto out;
    if (skip_beyond)
        cli_error("%s: cannot skip to specified offset", a->in_name); /* a warning, as dd(1) */
    if (copy_blocks(in, out, start, end, (size_t)a->block_size) < 0)
        goto out;
    if (img_flush(out) < 0) {
        cli_error("error while writing to output image file: %s", img_last_error());
        goto out;
    }
    status = 0;
out:
    img_close(out);
    img_close(in);
    img_opts_free(opts);
    return status;
}

int cmd_dd(int argc, char **argv)
{
    struct dd_args a = {.out_format = "raw", .block_size = 512};
    int status = parse_options(argc, argv, &a);
    if (status >= 0)
        return status;
    if (!a.in_name || !a.out_name) {
        cli_error("Must specify both input and output files");
        return CLI_EXIT_FAILURE;
    }
    return dd(&a);
}
