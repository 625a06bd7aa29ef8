/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public API as a small command line, so that the interop scripts can hold the library's
 * answers next to qemu-img's. Only imgutil.h is used: this is what an embedding program sees.
 *
 *   api_driver [-f FORMAT] read-compare IMAGE REFERENCE GRANULE
 *       Reads IMAGE with img_pread() in odd-sized chunks, then around GRANULE boundaries, and
 *       compares every byte with the raw file REFERENCE (qemu-img convert -O raw output).
 *   api_driver [-f FORMAT] dump IMAGE OUTPUT
 *       Writes the guest content, read in odd-sized chunks, to OUTPUT.
 *   api_driver [-f FORMAT] read-at IMAGE OFFSET LENGTH OUTPUT
 *       Writes LENGTH guest bytes from OFFSET to OUTPUT.
 *   api_driver [-f FORMAT] block-status IMAGE
 *       Prints every img_block_status() answer from 0 to the end as one JSON array, unmerged.
 *   api_driver [-f FORMAT] map-json IMAGE
 *   api_driver [-f FORMAT] info-json IMAGE [chain]
 *       Print img_map_json() / img_info_json().
 *   api_driver [-f FORMAT] open IMAGE
 *       Prints "opened FORMAT SIZE" (exit 0) or "refused CODE MESSAGE" (exit 3).
 *   api_driver formats -
 *       Prints one line per format the library knows: its name, then what it supports
 *       (read, write, create), as img_format_supports() answers.
 *
 * Exit status: 0 success, 1 a failed call or a mismatch, 2 bad usage, 3 open refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgutil.h"

#define EXIT_MISMATCH 1
#define EXIT_USAGE 2
#define EXIT_REFUSED 3

/* Chunk sizes for sequential reads: odd, so that reads start and end inside clusters. */
static const size_t odd_chunks[] = {4097, 65535, 511, 131073, 1, 1048583, 3, 262147, 77777};
#define ODD_CHUNK_COUNT (sizeof(odd_chunks) / sizeof(odd_chunks[0]))
#define LARGEST_ODD_CHUNK 1048583u

/* Boundary probes per image: enough to touch every cluster of the small test images. */
#define MAX_BOUNDARY_PROBES 4096

static int usage(void)
{
    fprintf(stderr, "usage: api_driver [-f FORMAT] read-compare|dump|read-at|block-status|"
                    "map-json|info-json|open IMAGE [ARGS...] | formats -\n");
    return EXIT_USAGE;
}

static int open_image(img **out, const char *path, const char *format)
{
    int ret = img_open(out, path, format, IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0) {
        fprintf(stderr, "img_open('%s'): %d (%s): %s\n", path, ret, img_strerror(ret),
                img_last_error());
        return EXIT_MISMATCH;
    }
    return 0;
}

static bool parse_u64(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (errno || end == text || *end)
        return false;
    *out = v;
    return true;
}

/* A small deterministic generator, so that a failing run can be repeated exactly. */
static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

struct compare_ctx {
    img *img;
    int ref_fd;
    uint64_t size;
    uint8_t *got;
    uint8_t *want;
    uint64_t reads;
};

/* Reads [offset, offset+len) both ways; reports the first differing byte. */
static int compare_range(struct compare_ctx *c, uint64_t offset, size_t len)
{
    int64_t n = img_pread(c->img, c->got, len, offset);
    c->reads++;
    size_t expect_n =
        offset >= c->size ? 0 : (size_t)(len < c->size - offset ? len : c->size - offset);
    if (n < 0) {
        fprintf(stderr, "img_pread(offset=%" PRIu64 ", len=%zu) failed: %" PRId64 " (%s): %s\n",
                offset, len, n, img_strerror((int)n), img_last_error());
        return EXIT_MISMATCH;
    }
    if ((size_t)n != expect_n) {
        fprintf(stderr,
                "img_pread(offset=%" PRIu64 ", len=%zu) returned %" PRId64 ", expected %zu "
                "(virtual size %" PRIu64 ")\n",
                offset, len, n, expect_n, c->size);
        return EXIT_MISMATCH;
    }
    if (!expect_n)
        return 0;
    ssize_t r = pread(c->ref_fd, c->want, expect_n, (off_t)offset);
    if (r < 0) {
        perror("reading the reference");
        return EXIT_MISMATCH;
    }
    /* The reference may be shorter than the image only if the sizes disagree (reported). */
    if ((size_t)r < expect_n)
        memset(c->want + r, 0, expect_n - (size_t)r);
    if (memcmp(c->got, c->want, expect_n) == 0)
        return 0;
    size_t first = 0;
    while (c->got[first] == c->want[first])
        first++;
    size_t differing = 0;
    for (size_t i = first; i < expect_n; i++)
        differing += c->got[i] != c->want[i];
    fprintf(stderr,
            "content differs: img_pread(offset=%" PRIu64 ", len=%zu): first difference at guest "
            "offset %" PRIu64 " (0x%" PRIx64 "): qemu-img has 0x%02x, img_pread gave 0x%02x; "
            "%zu bytes differ in this read\n",
            offset, len, offset + first, offset + first, c->want[first], c->got[first], differing);
    return EXIT_MISMATCH;
}

static int cmd_read_compare(img *image, const char *ref_path, uint64_t granule)
{
    struct compare_ctx c = {.img = image};
    int64_t size = img_get_size(image);
    if (size < 0) {
        fprintf(stderr, "img_get_size: %" PRId64 ": %s\n", size, img_last_error());
        return EXIT_MISMATCH;
    }
    c.size = (uint64_t)size;
    c.ref_fd = open(ref_path, O_RDONLY | O_CLOEXEC);
    if (c.ref_fd < 0) {
        perror(ref_path);
        return EXIT_MISMATCH;
    }
    struct stat st;
    int ret = EXIT_MISMATCH;
    if (fstat(c.ref_fd, &st) < 0) {
        perror(ref_path);
        goto out;
    }
    if ((uint64_t)st.st_size != c.size) {
        fprintf(stderr,
                "virtual size differs: img_get_size() = %" PRIu64 ", qemu-img reads %lld "
                "bytes\n",
                c.size, (long long)st.st_size);
        goto out;
    }
    size_t buf_size = LARGEST_ODD_CHUNK;
    if (granule * 4 > buf_size)
        buf_size = (size_t)granule * 4;
    c.got = malloc(buf_size);
    c.want = malloc(buf_size);
    if (!c.got || !c.want) {
        fprintf(stderr, "out of memory\n");
        goto out;
    }

    /* Sequential pass: every byte once, in chunks that start and end at odd places. */
    uint64_t offset = 0;
    for (size_t i = 0; offset < c.size; i++) {
        size_t len = odd_chunks[i % ODD_CHUNK_COUNT];
        if (compare_range(&c, offset, len))
            goto out;
        offset += len;
    }

    /* Reads that start before and end after a granule boundary, by a varying amount. */
    if (granule) {
        uint64_t boundaries = c.size / granule;
        uint64_t step = boundaries / MAX_BOUNDARY_PROBES + 1;
        uint64_t seed = 0x9e3779b97f4a7c15ull;
        for (uint64_t b = 1; b <= boundaries; b += step) {
            uint64_t edge = b * granule;
            uint64_t before = next_random(&seed) % (granule * 2) + 1;
            uint64_t after = next_random(&seed) % (granule * 2) + 1;
            if (before > edge)
                before = edge;
            if (compare_range(&c, edge - before, (size_t)(before + after)))
                goto out;
        }
    }

    /* The end of the image: short reads, then nothing at and past the end. */
    if (c.size >= 7 && compare_range(&c, c.size - 7, 100))
        goto out;
    if (compare_range(&c, c.size, 10) || compare_range(&c, c.size + 65536, 10))
        goto out;
    printf("%" PRIu64 " reads, %" PRIu64 " bytes identical\n", c.reads, c.size);
    ret = 0;
out:
    free(c.got);
    free(c.want);
    close(c.ref_fd);
    return ret;
}

static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t offset)
{
    while (len) {
        ssize_t w = pwrite(fd, buf, len, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("write");
            return EXIT_MISMATCH;
        }
        buf += w;
        len -= (size_t)w;
        offset += (uint64_t)w;
    }
    return 0;
}

static int read_to_file(img *image, uint64_t offset, uint64_t length, const char *out_path)
{
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(out_path);
        return EXIT_MISMATCH;
    }
    uint8_t *buf = malloc(LARGEST_ODD_CHUNK);
    int ret = EXIT_MISMATCH;
    if (!buf)
        goto out;
    uint64_t done = 0;
    for (size_t i = 0; done < length; i++) {
        size_t len = odd_chunks[i % ODD_CHUNK_COUNT];
        if (len > length - done)
            len = (size_t)(length - done);
        int64_t n = img_pread(image, buf, len, offset + done);
        if (n < 0) {
            fprintf(stderr, "img_pread(offset=%" PRIu64 ", len=%zu): %" PRId64 " (%s): %s\n",
                    offset + done, len, n, img_strerror((int)n), img_last_error());
            goto out;
        }
        if (n == 0)
            break;
        if (write_all(fd, buf, (size_t)n, done))
            goto out;
        done += (uint64_t)n;
    }
    ret = 0;
out:
    free(buf);
    close(fd);
    return ret;
}

static int cmd_block_status(img *image)
{
    int64_t size = img_get_size(image);
    if (size < 0) {
        fprintf(stderr, "img_get_size: %s\n", img_last_error());
        return EXIT_MISMATCH;
    }
    uint64_t calls = 0;
    printf("[");
    for (uint64_t offset = 0; offset < (uint64_t)size;) {
        uint64_t remaining = (uint64_t)size - offset;
        uint64_t pnum = 0, host = 0;
        unsigned status = 0;
        int depth = -1;
        int ret = img_block_status(image, offset, remaining, &pnum, &status, &depth, &host);
        calls++;
        if (ret < 0) {
            printf("]\n");
            fprintf(stderr, "img_block_status(offset=%" PRIu64 "): %d (%s): %s\n", offset, ret,
                    img_strerror(ret), img_last_error());
            return EXIT_MISMATCH;
        }
        if (pnum == 0 || pnum > remaining) {
            printf("]\n");
            fprintf(stderr,
                    "img_block_status(offset=%" PRIu64 ", length=%" PRIu64 ") gave pnum=%" PRIu64
                    "\n",
                    offset, remaining, pnum);
            return EXIT_MISMATCH;
        }
        printf("%s{\"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, "
               "\"present\": %s, \"zero\": %s, \"data\": %s, \"compressed\": %s",
               offset ? ",\n" : "", offset, pnum, depth,
               (status & IMG_BLOCK_ALLOCATED) ? "true" : "false",
               (status & IMG_BLOCK_ZERO) ? "true" : "false",
               (status & IMG_BLOCK_DATA) ? "true" : "false",
               (status & IMG_BLOCK_COMPRESSED) ? "true" : "false");
        if (status & IMG_BLOCK_OFFSET_VALID)
            printf(", \"offset\": %" PRIu64, host);
        printf("}");
        offset += pnum;
    }
    printf("]\n");
    fprintf(stderr, "block-status calls: %" PRIu64 "\n", calls);
    return 0;
}

static int print_library_json(int ret, char *json, const char *what)
{
    if (ret < 0) {
        fprintf(stderr, "%s: %d (%s): %s\n", what, ret, img_strerror(ret), img_last_error());
        return EXIT_MISMATCH;
    }
    fputs(json, stdout);
    size_t len = strlen(json);
    if (!len || json[len - 1] != '\n')
        putchar('\n');
    img_free(json);
    return 0;
}

static int cmd_open(const char *path, const char *format)
{
    img *image = NULL;
    int ret = img_open(&image, path, format, IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0) {
        printf("refused %d %s\n", ret, img_last_error());
        if (image) {
            fprintf(stderr, "img_open failed but left *out set\n");
            return EXIT_MISMATCH;
        }
        return EXIT_REFUSED;
    }
    printf("opened %s %" PRId64 "\n", img_get_format(image), img_get_size(image));
    img_close(image);
    return 0;
}

static int cmd_formats(void)
{
    static const char *const abilities[] = {"read", "write", "create"};
    for (int i = 0; i < img_format_count(); i++) {
        const char *name = img_format_name(i);
        printf("%s", name);
        for (size_t a = 0; a < sizeof(abilities) / sizeof(abilities[0]); a++)
            if (img_format_supports(name, abilities[a]) > 0)
                printf(" %s", abilities[a]);
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *format = NULL;
    int argi = 1;
    if (argi + 1 < argc && strcmp(argv[argi], "-f") == 0) {
        format = argv[argi + 1];
        argi += 2;
    }
    if (argc - argi < 2)
        return usage();
    const char *cmd = argv[argi];
    const char *path = argv[argi + 1];
    char **rest = argv + argi + 2;
    int nrest = argc - argi - 2;

    if (strcmp(cmd, "open") == 0)
        return nrest == 0 ? cmd_open(path, format) : usage();
    if (strcmp(cmd, "formats") == 0)
        return nrest == 0 ? cmd_formats() : usage();

    img *image = NULL;
    int ret = open_image(&image, path, format);
    if (ret)
        return ret;
    char *json = NULL;
    uint64_t a, b, granule;
    if (strcmp(cmd, "read-compare") == 0 && nrest == 2 && parse_u64(rest[1], &granule))
        ret = cmd_read_compare(image, rest[0], granule);
    else if (strcmp(cmd, "dump") == 0 && nrest == 1)
        ret = read_to_file(image, 0, UINT64_MAX, rest[0]);
    else if (strcmp(cmd, "read-at") == 0 && nrest == 3 && parse_u64(rest[0], &a) &&
             parse_u64(rest[1], &b))
        ret = read_to_file(image, a, b, rest[2]);
    else if (strcmp(cmd, "block-status") == 0 && nrest == 0)
        ret = cmd_block_status(image);
    else if (strcmp(cmd, "map-json") == 0 && nrest == 0) {
        ret = img_map_json(image, &json);
        ret = print_library_json(ret, json, "img_map_json");
    } else if (strcmp(cmd, "info-json") == 0 && nrest <= 1) {
        unsigned flags = nrest && strcmp(rest[0], "chain") == 0 ? IMG_INFO_BACKING_CHAIN : 0;
        ret = img_info_json(image, flags, &json);
        ret = print_library_json(ret, json, "img_info_json");
    } else
        ret = usage();
    img_close(image);
    return ret;
}
