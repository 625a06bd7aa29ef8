/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "runner.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static int api_failure(struct runner *r, const char *call, int64_t ret)
{
    fprintf(stderr, "%s: %s returned %" PRId64 " (%s): %s\n", r->when, call, ret,
            img_strerror((int)ret), img_last_error());
    return -1;
}

/* The range an operation touched, widened by a cluster on each side: neighbours must not move. */
static int verify_around(struct runner *r, uint64_t offset, uint64_t length)
{
    uint64_t start = offset > r->cluster ? offset - r->cluster : 0;
    uint64_t end = offset + length + r->cluster;
    return shadow_verify_range(&r->cur, r->img, start, end - start, r->when);
}

int runner_open(struct runner *r)
{
    int ret = img_open(&r->img, r->path, r->format, IMG_OPEN_READ_WRITE, NULL);
    if (ret < 0) {
        fprintf(stderr, "%s: img_open('%s', read-write) returned %d (%s): %s\n", r->when, r->path,
                ret, img_strerror(ret), img_last_error());
        r->img = NULL;
        return -1;
    }
    return 0;
}

static int do_write(struct runner *r, const struct op *op)
{
    uint8_t *buf = malloc(op->length ? (size_t)op->length : 1);
    if (!buf) {
        fprintf(stderr, "%s: out of memory\n", r->when);
        return -1;
    }
    pattern_fill(buf, (size_t)op->length, op->seed, op->offset);
    int64_t ret = img_pwrite(r->img, buf, (size_t)op->length, op->offset);
    if (ret == (int64_t)op->length)
        memcpy(r->cur.data + op->offset, buf, (size_t)op->length);
    free(buf);
    if (ret != (int64_t)op->length)
        return api_failure(r, "img_pwrite", ret);
    return verify_around(r, op->offset, op->length);
}

static int do_zero(struct runner *r, const struct op *op, unsigned flags)
{
    int ret = img_zero(r->img, op->offset, op->length, flags);
    if (ret < 0)
        return api_failure(r, "img_zero", ret);
    memset(r->cur.data + op->offset, 0, (size_t)op->length);
    return verify_around(r, op->offset, op->length);
}

/* Whether the cluster holding `offset` lies wholly inside [start, end). */
static bool whole_cluster(const struct runner *r, uint64_t offset, uint64_t start, uint64_t end)
{
    uint64_t first = offset / r->cluster * r->cluster;
    uint64_t last = min_u64(first + r->cluster, r->cur.size);
    return first >= start && last <= end;
}

static int do_discard(struct runner *r, const struct op *op)
{
    int ret = img_discard(r->img, op->offset, op->length);
    if (ret < 0)
        return api_failure(r, "img_discard", ret);
    uint8_t *got = malloc(op->length ? (size_t)op->length : 1);
    if (!got) {
        fprintf(stderr, "%s: out of memory\n", r->when);
        return -1;
    }
    int64_t n = img_pread(r->img, got, (size_t)op->length, op->offset);
    if (n != (int64_t)op->length) {
        free(got);
        return api_failure(r, "img_pread", n);
    }
    uint64_t end = op->offset + op->length;
    for (uint64_t i = 0; i < op->length; i++) {
        uint64_t at = op->offset + i;
        uint8_t old = r->cur.data[at];
        bool ok;
        const char *allowed;
        switch (r->discard) {
        case DISCARD_ZEROES:
            if (whole_cluster(r, at, op->offset, end)) {
                ok = got[i] == 0;
                allowed = "zero (the range covers this whole cluster)";
            } else {
                ok = got[i] == 0 || got[i] == old;
                allowed = "zero or unchanged (partial cluster)";
            }
            break;
        case DISCARD_KEEP_OR_BACKING:
            ok = got[i] == old || got[i] == shadow_at(&r->backing, at);
            allowed = "unchanged or the backing file's byte";
            break;
        default:
            ok = got[i] == 0 || got[i] == old;
            allowed = "zero or unchanged";
        }
        if (!ok) {
            fprintf(stderr,
                    "%s: after the discard, guest offset %" PRIu64 " (0x%" PRIx64
                    ") reads 0x%02x; it held 0x%02x, the backing file has 0x%02x; allowed: %s\n",
                    r->when, at, at, got[i], old, shadow_at(&r->backing, at), allowed);
            free(got);
            return -1;
        }
    }
    memcpy(r->cur.data + op->offset, got, (size_t)op->length);
    free(got);
    return verify_around(r, op->offset, op->length);
}

static int keep_ghost(struct runner *r, uint64_t new_size, uint64_t old_size)
{
    uint64_t cluster_end = (new_size + r->cluster - 1) / r->cluster * r->cluster;
    uint64_t len = min_u64(cluster_end, old_size) - new_size;
    free(r->ghost);
    r->ghost = malloc(len ? (size_t)len : 1);
    if (!r->ghost) {
        fprintf(stderr, "%s: out of memory\n", r->when);
        return -1;
    }
    memcpy(r->ghost, r->cur.data + new_size, (size_t)len);
    r->ghost_start = new_size;
    r->ghost_len = len;
    return 0;
}

/* After growing from old_size: the start of the new space reads as zeros or as the ghost. */
static int adopt_ghost(struct runner *r, uint64_t old_size, uint64_t new_size)
{
    if (!r->ghost || r->ghost_start != old_size)
        return 0;
    uint64_t len = min_u64(r->ghost_len, new_size - old_size);
    uint8_t *got = malloc(len ? (size_t)len : 1);
    if (!got) {
        fprintf(stderr, "%s: out of memory\n", r->when);
        return -1;
    }
    int64_t n = img_pread(r->img, got, (size_t)len, old_size);
    if (n != (int64_t)len) {
        free(got);
        return api_failure(r, "img_pread", n);
    }
    for (uint64_t i = 0; i < len; i++) {
        if (got[i] != 0 && got[i] != r->ghost[i]) {
            fprintf(stderr,
                    "%s: the grown space at guest offset %" PRIu64 " reads 0x%02x; allowed are "
                    "zero and 0x%02x, what a shrink cut off there\n",
                    r->when, old_size + i, got[i], r->ghost[i]);
            free(got);
            return -1;
        }
    }
    memcpy(r->cur.data + old_size, got, (size_t)len);
    free(got);
    return 0;
}

static int do_resize(struct runner *r, const struct op *op)
{
    uint64_t old_size = r->cur.size;
    uint64_t new_size = op->offset;
    img_opts *opts = NULL;
    if (op->name[0]) {
        if (img_opts_new(&opts) < 0 || img_opts_set(opts, "preallocation", op->name) < 0) {
            img_opts_free(opts);
            return api_failure(r, "img_opts_set", -ENOMEM);
        }
    }
    int ret = img_resize(r->img, new_size, new_size < old_size ? IMG_RESIZE_SHRINK : 0, opts);
    img_opts_free(opts);
    int64_t size = img_get_size(r->img);
    if (ret == -ENOTSUP && r->resize_may_refuse && new_size > old_size) {
        printf("# img_resize refused to grow: %s\n", img_last_error());
        new_size = old_size;
    } else if (ret < 0) {
        return api_failure(r, "img_resize", ret);
    }
    if (size < 0 || (uint64_t)size != new_size) {
        fprintf(stderr,
                "%s: img_resize returned %d, then img_get_size() = %" PRId64 ", expected %" PRIu64
                "\n",
                r->when, ret, size, new_size);
        return -1;
    }
    if (new_size < old_size && keep_ghost(r, new_size, old_size) < 0)
        return -1;
    if (shadow_resize(&r->cur, new_size) < 0)
        return -1;
    if (new_size > old_size && adopt_ghost(r, old_size, new_size) < 0)
        return -1;
    uint64_t edge = min_u64(old_size, new_size);
    if (verify_around(r, edge, 0) < 0)
        return -1;
    /* The new space (or what was regrown after a shrink) must read as zeros. */
    return shadow_verify_range(&r->cur, r->img, edge, new_size - edge, r->when);
}

static int reopen(struct runner *r)
{
    img_close(r->img);
    r->img = NULL;
    if (runner_open(r) < 0)
        return -1;
    return shadow_verify_all(&r->cur, r->img, r->when);
}

static struct saved_snapshot *find_snapshot(struct runner *r, const char *name)
{
    for (size_t i = 0; i < r->snapshot_count; i++)
        if (strcmp(r->snapshots[i].name, name) == 0)
            return &r->snapshots[i];
    return NULL;
}

static int do_snapshot(struct runner *r, const struct op *op)
{
    struct saved_snapshot *saved = find_snapshot(r, op->name);
    int ret;
    switch (op->kind) {
    case OP_SNAPSHOT_CREATE:
        ret = img_snapshot_create(r->img, op->name);
        if (ret < 0)
            return api_failure(r, "img_snapshot_create", ret);
        if (!saved) {
            struct saved_snapshot *grown =
                realloc(r->snapshots, (r->snapshot_count + 1) * sizeof(*grown));
            if (!grown)
                return api_failure(r, "realloc", -ENOMEM);
            r->snapshots = grown;
            saved = &r->snapshots[r->snapshot_count++];
            snprintf(saved->name, sizeof(saved->name), "%s", op->name);
        } else {
            shadow_free(&saved->content);
        }
        if (shadow_copy(&saved->content, &r->cur) < 0)
            return -1;
        break;
    case OP_SNAPSHOT_APPLY:
        ret = img_snapshot_apply(r->img, op->name);
        if (ret < 0)
            return api_failure(r, "img_snapshot_apply", ret);
        if (!saved) {
            fprintf(stderr, "%s: the script never created snapshot '%s' here\n", r->when, op->name);
            return -1;
        }
        shadow_free(&r->cur);
        if (shadow_copy(&r->cur, &saved->content) < 0)
            return -1;
        break;
    default:
        ret = img_snapshot_delete(r->img, op->name);
        if (ret < 0)
            return api_failure(r, "img_snapshot_delete", ret);
        if (saved) {
            shadow_free(&saved->content);
            *saved = r->snapshots[--r->snapshot_count];
        }
    }
    return shadow_verify_all(&r->cur, r->img, r->when);
}

int runner_apply(struct runner *r, const struct op *op)
{
    char text[OP_NAME_MAX + 64];
    op_format(op, text, sizeof(text));
    r->applied++;
    snprintf(r->when, sizeof(r->when), "after operation #%" PRIu64 " (%s)", r->applied, text);
    if (op->kind <= OP_DISCARD &&
        (op->offset > r->cur.size || op->length > r->cur.size - op->offset)) {
        fprintf(stderr, "%s: the range is past the end of the image (%" PRIu64 " bytes)\n", r->when,
                r->cur.size);
        return -1;
    }
    int ret;
    switch (op->kind) {
    case OP_WRITE:
        return do_write(r, op);
    case OP_ZERO:
        return do_zero(r, op, 0);
    case OP_ZERO_UNMAP:
        return do_zero(r, op, IMG_ZERO_MAY_UNMAP);
    case OP_DISCARD:
        return do_discard(r, op);
    case OP_RESIZE:
        return do_resize(r, op);
    case OP_FLUSH:
        ret = img_flush(r->img);
        return ret < 0 ? api_failure(r, "img_flush", ret) : 0;
    case OP_REOPEN:
        return reopen(r);
    case OP_VERIFY:
        return shadow_verify_all(&r->cur, r->img, r->when);
    case OP_SAVE:
        return shadow_save(&r->cur, op->name);
    default:
        return do_snapshot(r, op);
    }
}

static int write_report(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int runner_finish(struct runner *r, const char *check_report)
{
    snprintf(r->when, sizeof(r->when), "at the end (after %" PRIu64 " operations)", r->applied);
    int ret = img_flush(r->img);
    if (ret < 0)
        return api_failure(r, "img_flush", ret);
    img_close(r->img);
    r->img = NULL;
    snprintf(r->when, sizeof(r->when), "opened again read-only after %" PRIu64 " operations",
             r->applied);
    ret = img_open(&r->img, r->path, r->format, IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0) {
        r->img = NULL;
        return api_failure(r, "img_open", ret);
    }
    if (shadow_verify_all(&r->cur, r->img, r->when) < 0)
        return -1;
    if (!check_report)
        return 0;
    char *report = NULL;
    ret = img_check(r->img, 0, &report);
    if (ret == -ENOTSUP && strcmp(img_get_format(r->img), "raw") == 0)
        return write_report(check_report, "null\n");
    if (ret < 0)
        return api_failure(r, "img_check", ret);
    ret = write_report(check_report, report);
    img_free(report);
    return ret;
}

void runner_free(struct runner *r)
{
    img_close(r->img);
    r->img = NULL;
    shadow_free(&r->cur);
    shadow_free(&r->backing);
    free(r->ghost);
    r->ghost = NULL;
    for (size_t i = 0; i < r->snapshot_count; i++)
        shadow_free(&r->snapshots[i].content);
    free(r->snapshots);
    r->snapshots = NULL;
    r->snapshot_count = 0;
}
