/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Crash safety. The writer applies a seeded sequence of writes and zeroes and calls img_flush()
 * now and then; it reports each step on stdout, unbuffered, so a parent that kills it with
 * SIGKILL knows exactly how far it got:
 *
 *   start N     operation N is about to be issued
 *   ack N       img_flush() returned success: operations 0..N-1 must survive a crash
 *   done        the sequence ended normally
 *
 *   crash_writer write IMAGE SEED CLUSTER OPS [-f FORMAT]
 *   crash_writer verify IMAGE SEED CLUSTER ACKED STARTED [-f FORMAT] [--shadow-in FILE]
 *
 * verify replays the sequence in memory and reads IMAGE (for instance the image after the
 * crash, or its qemu-img convert -O raw copy opened with -f raw). Every byte must read as it
 * was after the first ACKED operations, or as one of the operations ACKED..STARTED-1 (issued
 * but not acknowledged) left it: anything else is garbage. Exit 0 clean, 1 failure, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgutil.h"
#include "ops.h"
#include "pattern.h"
#include "shadow.h"

struct sequence {
    const char *path;
    const char *format;
    uint64_t seed;
    uint64_t cluster;
    struct opgen gen;
};

/* One line on stdout with write(2): nothing may wait in a stdio buffer when the kill comes. */
static void say(const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (int done = 0; n > 0 && done < n;) {
        ssize_t w = write(STDOUT_FILENO, line + done, (size_t)(n - done));
        if (w < 0 && errno != EINTR)
            exit(1);
        done += w > 0 ? (int)w : 0;
    }
}

static int failed(const char *call, int64_t ret)
{
    fprintf(stderr, "crash_writer: %s returned %" PRId64 " (%s): %s\n", call, ret,
            img_strerror((int)ret), img_last_error());
    return 1;
}

static void sequence_start(struct sequence *q)
{
    /* Short operations: many of them between kills, each one a chance to die half-way. */
    q->gen = (struct opgen){.cluster = q->cluster,
                            .subcluster = q->cluster,
                            .max_length = 3 * q->cluster < 262144 ? 262144 : 3 * q->cluster};
    rng_seed(&q->gen.rng, q->seed);
}

/* Flushes, reopens and verifies are flush points in this sequence; the rest modify data. */
static bool is_flush_point(const struct op *op)
{
    return op->kind == OP_FLUSH || op->kind == OP_REOPEN || op->kind == OP_VERIFY;
}

static int apply(img *image, const struct op *op, uint8_t *buf)
{
    int64_t ret;
    if (op->kind == OP_WRITE) {
        pattern_fill(buf, (size_t)op->length, op->seed, op->offset);
        ret = img_pwrite(image, buf, (size_t)op->length, op->offset);
        return ret == (int64_t)op->length ? 0 : failed("img_pwrite", ret);
    }
    ret =
        img_zero(image, op->offset, op->length, op->kind == OP_ZERO_UNMAP ? IMG_ZERO_MAY_UNMAP : 0);
    return ret == 0 ? 0 : failed("img_zero", ret);
}

static int cmd_write(struct sequence *q, uint64_t count)
{
    img *image = NULL;
    int ret = img_open(&image, q->path, q->format, IMG_OPEN_READ_WRITE, NULL);
    if (ret < 0)
        return failed("img_open", ret);
    int64_t size = img_get_size(image);
    uint8_t *buf = malloc(8u << 20);
    if (size <= 0 || !buf) {
        fprintf(stderr, "crash_writer: no size or no memory\n");
        return 1;
    }
    sequence_start(q);
    int status = 0;
    for (uint64_t i = 0; i < count && status == 0; i++) {
        struct op op;
        opgen_next(&q->gen, (uint64_t)size, &op);
        if (!is_flush_point(&op)) {
            say("start %" PRIu64 "\n", i);
            status = apply(image, &op, buf);
            continue;
        }
        ret = img_flush(image);
        if (ret < 0) {
            status = failed("img_flush", ret);
            break;
        }
        say("ack %" PRIu64 "\n", i);
        if (op.kind == OP_REOPEN) {
            img_close(image);
            ret = img_open(&image, q->path, q->format, IMG_OPEN_READ_WRITE, NULL);
            if (ret < 0) {
                image = NULL;
                status = failed("img_open", ret);
            }
        }
    }
    if (status == 0) {
        ret = img_flush(image);
        if (ret < 0)
            status = failed("img_flush", ret);
        else
            say("ack %" PRIu64 "\ndone\n", count);
    }
    img_close(image);
    free(buf);
    return status;
}

static uint8_t op_byte(const struct op *op, uint64_t offset)
{
    return op->kind == OP_WRITE ? pattern_byte(op->seed, offset) : 0;
}

/* Every operation of the sequence up to `limit` that touches `at`: the story of one byte. */
static void explain_byte(struct sequence *q, const struct shadow *got, uint64_t at, uint64_t limit)
{
    uint64_t size = got->size;
    sequence_start(q);
    fprintf(stderr, "  operations touching offset %" PRIu64 ":", at);
    unsigned shown = 0;
    for (uint64_t i = 0; i < limit; i++) {
        struct op op;
        opgen_next(&q->gen, size, &op);
        if (is_flush_point(&op) || at < op.offset || at - op.offset >= op.length)
            continue;
        char text[OP_NAME_MAX + 64];
        op_format(&op, text, sizeof(text));
        /* How far the image agrees with this operation from here: its data or a coincidence. */
        uint64_t same = 0;
        while (at + same < size && same < 4096 && at + same - op.offset < op.length &&
               got->data[at + same] == op_byte(&op, at + same))
            same++;
        fprintf(stderr, "%s #%" PRIu64 " (%s) -> 0x%02x, %" PRIu64 " bytes from here match it",
                shown++ ? "," : "", i, text, op_byte(&op, at), same);
    }
    fprintf(stderr, "%s\n", shown ? "" : " none");
}

static int cmd_verify(struct sequence *q, uint64_t acked, uint64_t started, const char *shadow_in)
{
    img *image = NULL;
    int ret = img_open(&image, q->path, q->format, IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0)
        return failed("img_open", ret);
    int64_t size = img_get_size(image);
    struct shadow base = {0}, got = {0};
    struct op *pending = calloc(started > acked ? started - acked : 1, sizeof(*pending));
    int status = 1;
    if (size <= 0 || !pending)
        goto out;
    if ((shadow_in ? shadow_load(&base, shadow_in, (uint64_t)size)
                   : shadow_init(&base, (uint64_t)size)) < 0 ||
        shadow_init(&got, (uint64_t)size) < 0)
        goto out;
    int64_t n = img_pread(image, got.data, (size_t)size, 0);
    if (n != size) {
        failed("img_pread", n);
        goto out;
    }
    sequence_start(q);
    size_t pending_count = 0;
    for (uint64_t i = 0; i < started; i++) {
        struct op op;
        opgen_next(&q->gen, (uint64_t)size, &op);
        if (is_flush_point(&op))
            continue;
        if (i >= acked) {
            pending[pending_count++] = op;
            continue;
        }
        if (op.kind == OP_WRITE)
            pattern_fill(base.data + op.offset, (size_t)op.length, op.seed, op.offset);
        else
            memset(base.data + op.offset, 0, (size_t)op.length);
    }
    for (uint64_t at = 0; at < (uint64_t)size; at++) {
        if (got.data[at] == base.data[at])
            continue;
        bool explained = false;
        for (size_t k = 0; k < pending_count && !explained; k++) {
            const struct op *op = &pending[k];
            explained =
                at >= op->offset && at - op->offset < op->length && got.data[at] == op_byte(op, at);
        }
        if (!explained) {
            fprintf(stderr,
                    "crash_writer: %s: guest offset %" PRIu64 " (0x%" PRIx64 ", cluster %" PRIu64
                    ") reads 0x%02x; after the %" PRIu64 " acknowledged operations it holds "
                    "0x%02x, and none of the %zu unacknowledged ones (up to #%" PRIu64
                    ") writes 0x%02x there\n",
                    q->path, at, at, at / q->cluster, got.data[at], acked, base.data[at],
                    pending_count, started, got.data[at]);
            explain_byte(q, &got, at, started + 64);
            goto out;
        }
    }
    status = 0;
out:
    free(pending);
    shadow_free(&base);
    shadow_free(&got);
    img_close(image);
    return status;
}

int main(int argc, char **argv)
{
    struct sequence q = {0};
    const char *shadow_in = NULL;
    uint64_t numbers[4];
    int positional = 0;
    if (argc < 3)
        goto usage;
    bool verify = strcmp(argv[1], "verify") == 0;
    if (!verify && strcmp(argv[1], "write") != 0)
        goto usage;
    q.path = argv[2];
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0 && i + 1 < argc)
            q.format = argv[++i];
        else if (strcmp(argv[i], "--shadow-in") == 0 && i + 1 < argc)
            shadow_in = argv[++i];
        else if (positional < 4 && op_parse_number(argv[i], &numbers[positional]))
            positional++;
        else
            goto usage;
    }
    if (positional != (verify ? 4 : 3))
        goto usage;
    q.seed = numbers[0];
    q.cluster = numbers[1];
    if (q.cluster == 0)
        goto usage;
    return verify ? cmd_verify(&q, numbers[2], numbers[3], shadow_in) : cmd_write(&q, numbers[2]);
usage:
    fprintf(stderr, "usage: crash_writer write IMAGE SEED CLUSTER OPS [-f FORMAT]\n"
                    "       crash_writer verify IMAGE SEED CLUSTER ACKED STARTED [-f FORMAT] "
                    "[--shadow-in FILE]\n");
    return 2;
}
