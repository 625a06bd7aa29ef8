/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writes flagged into_hole (a new convert target's data): whatever the engine and the file
 * system, the file ends with exactly the bytes written and blocks allocated where they were
 * written and nowhere else, as without the flag; ranges already allocated are overwritten
 * alike. Run under each engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/io.h"
#include "io_test_util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define FILE_SIZE (16 * MiB)

struct piece {
    uint64_t offset;
    size_t len;
};

/* Data runs with holes between them, some unaligned to the file system's blocks. */
static const struct piece pieces[] = {
    {0, 1 * MiB},   {3 * MiB, 64 * KiB},           {5 * MiB + 4 * KiB, 2 * MiB},
    {9 * MiB, 512}, {12 * MiB, 3 * MiB + 4 * KiB},
};
#define NPIECES (sizeof(pieces) / sizeof(pieces[0]))

static void write_done(struct io_req *req, int result)
{
    int *failures = req->user;
    if (result < 0)
        (*failures)++;
}

/*
 * Writes every piece of `data` through a queue, with or without the flag; `waited`: a queue
 * whose owner waits at once, as convert's chunks are (on io_uring its writes run inline).
 */
static void write_pieces(struct io_file *f, const uint8_t *data, bool into_hole, bool waited)
{
    struct io_queue *q;
    assert_int_equal(io_queue_new(&q, 4), 0);
    io_queue_set_waited(q, waited);
    struct io_req reqs[NPIECES];
    int failures = 0;
    for (size_t i = 0; i < NPIECES; i++) {
        reqs[i] = (struct io_req){.op = IO_OP_WRITE,
                                  .file = f,
                                  .buf = (void *)(data + pieces[i].offset),
                                  .len = pieces[i].len,
                                  .offset = pieces[i].offset,
                                  .done = write_done,
                                  .user = &failures,
                                  .into_hole = into_hole};
        assert_int_equal(io_queue_submit(q, &reqs[i]), 0);
    }
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(failures, 0);
    io_queue_free(q);
}

/* The data runs of the file, as SEEK_DATA/SEEK_HOLE report them, into `runs` (start, end). */
static size_t data_runs(struct io_file *f, uint64_t runs[][2], size_t max)
{
    int fd = io_file_fd(f);
    size_t n = 0;
    off_t at = 0;
    for (;;) {
        off_t start = lseek(fd, at, SEEK_DATA);
        if (start < 0)
            break;
        off_t end = lseek(fd, start, SEEK_HOLE);
        assert_true(end > start);
        assert_true(n < max);
        runs[n][0] = (uint64_t)start;
        runs[n][1] = (uint64_t)end;
        n++;
        at = end;
    }
    return n;
}

static bool on_ext4(struct io_file *f)
{
    struct statfs fs;
    return fstatfs(io_file_fd(f), &fs) == 0 && fs.f_type == EXT4_SUPER_MAGIC;
}

/*
 * How many of the file's extents (FIEMAP, without syncing it first) wait for delayed
 * allocation: blocks that were written without being allocated.
 */
static unsigned delalloc_extents(struct io_file *f)
{
    enum { MAX_EXTENTS = 64 };
    struct fiemap *map = calloc(1, sizeof(*map) + MAX_EXTENTS * sizeof(struct fiemap_extent));
    assert_non_null(map);
    map->fm_start = 0;
    map->fm_length = FIEMAP_MAX_OFFSET;
    map->fm_extent_count = MAX_EXTENTS;
    assert_int_equal(ioctl(io_file_fd(f), FS_IOC_FIEMAP, map), 0);
    unsigned n = 0;
    for (unsigned i = 0; i < map->fm_mapped_extents; i++)
        if (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_DELALLOC)
            n++;
    free(map);
    return n;
}

static void test_into_hole_matches_plain_writes(void **state)
{
    (void)state;
    uint8_t *data = malloc(FILE_SIZE);
    uint8_t *back = malloc(FILE_SIZE);
    assert_non_null(data);
    assert_non_null(back);
    fill_random(data, FILE_SIZE, 11);

    struct io_file *plain = open_temp();
    struct io_file *flagged = open_temp();
    assert_non_null(plain);
    assert_non_null(flagged);
    assert_int_equal(io_truncate(plain, FILE_SIZE), 0);
    assert_int_equal(io_truncate(flagged, FILE_SIZE), 0);
    write_pieces(plain, data, false, true);
    write_pieces(flagged, data, true, true);
    /*
     * On ext4 the flagged writes went into blocks allocated for them, not into delayed
     * allocation (should writeback have run already, there is none on either file and this
     * proves nothing, but cannot fail wrongly).
     */
    if (on_ext4(flagged))
        assert_int_equal(delalloc_extents(flagged), 0);

    /* The same bytes: the data where written, zeros elsewhere. */
    uint8_t *want = calloc(1, FILE_SIZE);
    assert_non_null(want);
    for (size_t i = 0; i < NPIECES; i++)
        memcpy(want + pieces[i].offset, data + pieces[i].offset, pieces[i].len);
    assert_int_equal(io_pread(flagged, back, FILE_SIZE, 0), 0);
    assert_memory_equal(back, want, FILE_SIZE);

    /*
     * The same allocation: no block allocated beyond what was written. Synced first, so that
     * both files have their blocks and extent trees on disk (delayed allocation counts the
     * tree's blocks only once it allocates).
     */
    assert_int_equal(io_fsync(plain), 0);
    assert_int_equal(io_fsync(flagged), 0);
    uint64_t runs_plain[32][2], runs_flagged[32][2];
    size_t n_plain = data_runs(plain, runs_plain, 32);
    size_t n_flagged = data_runs(flagged, runs_flagged, 32);
    assert_int_equal(n_flagged, n_plain);
    assert_memory_equal(runs_flagged, runs_plain, n_plain * sizeof(runs_plain[0]));
    struct stat st_plain, st_flagged;
    assert_int_equal(fstat(io_file_fd(plain), &st_plain), 0);
    assert_int_equal(fstat(io_file_fd(flagged), &st_flagged), 0);
    assert_int_equal(st_flagged.st_blocks, st_plain.st_blocks);
    assert_int_equal(st_flagged.st_size, FILE_SIZE);

    /* Over allocated blocks the flag changes nothing either. */
    fill_random(data, FILE_SIZE, 12);
    write_pieces(flagged, data, true, false);
    for (size_t i = 0; i < NPIECES; i++)
        memcpy(want + pieces[i].offset, data + pieces[i].offset, pieces[i].len);
    assert_int_equal(io_pread(flagged, back, FILE_SIZE, 0), 0);
    assert_memory_equal(back, want, FILE_SIZE);
    assert_int_equal(io_fsync(flagged), 0);
    assert_int_equal(fstat(io_file_fd(flagged), &st_flagged), 0);
    assert_int_equal(st_flagged.st_blocks, st_plain.st_blocks);

    free(want);
    free(back);
    free(data);
    io_file_close(plain);
    io_file_close(flagged);
}

/* Past the end of the file (a growing image's new clusters): the size is the write's end. */
static void test_into_hole_past_the_end(void **state)
{
    (void)state;
    uint8_t buf[64 * KiB];
    fill_random(buf, sizeof(buf), 13);
    struct io_file *f = open_temp();
    assert_non_null(f);
    struct io_queue *q;
    assert_int_equal(io_queue_new(&q, 1), 0);
    int failures = 0;
    struct io_req req = {.op = IO_OP_WRITE,
                         .file = f,
                         .buf = buf,
                         .len = sizeof(buf) - 512,
                         .offset = 1 * MiB + 512,
                         .done = write_done,
                         .user = &failures,
                         .into_hole = true};
    assert_int_equal(io_queue_submit(q, &req), 0);
    assert_int_equal(io_queue_drain(q), 0);
    assert_int_equal(failures, 0);
    io_queue_free(q);
    assert_int_equal(io_file_size(f), 1 * MiB + sizeof(buf));
    uint8_t back[sizeof(buf)];
    assert_int_equal(io_pread(f, back, sizeof(buf) - 512, 1 * MiB + 512), 0);
    assert_memory_equal(back, buf, sizeof(buf) - 512);
    io_file_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_into_hole_matches_plain_writes),
        cmocka_unit_test(test_into_hole_past_the_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
