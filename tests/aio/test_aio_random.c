/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thousands of random asynchronous reads, writes, zeroes and flushes, hundreds in flight,
 * driven by an epoll loop on img_aio_get_fd(), checked against an in-memory shadow of the
 * guest. Requests in flight never overlap when one of them changes data, so the shadow is
 * exact: every read must return the shadow's bytes, and afterwards the image must pass
 * `qemu-img check` and read back in `qemu-img compare` as a raw file holding the shadow.
 *
 * usage: test_aio_random raw|qcow2-backing|qcow2-compressed|qcow2-extl2
 * The seed is random unless AIO_SEED is set; it is printed so that a failure can be replayed.
 */
#include "aio_test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define IMAGE_SIZE (32u << 20)
#define BACKING_SIZE (24u << 20) /* shorter than the image: the tail reads as zeros */
#define OPERATIONS 4000
#define IN_FLIGHT 256
#define MAX_LEN (64u << 10)

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_FLUSH };

struct slot {
    bool used;
    enum op op;
    uint64_t offset;
    size_t len;
    uint8_t *buf;
};

static uint8_t *shadow;
static struct slot slots[IN_FLIGHT];
static unsigned in_flight;
static unsigned completed;
static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: reproducible from the printed seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Data that compresses (words from a small alphabet) with some zero clusters between. */
static void fill_initial(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = ((i >> 16) % 5 == 3) ? 0 : (uint8_t)("imgutil aio "[(i * 7 + (i >> 9)) % 12]);
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(buf, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

static bool overlaps(uint64_t off, size_t len, const struct slot *s)
{
    if (s->op == OP_FLUSH)
        return false;
    return off < s->offset + s->len && s->offset < off + len;
}

/* True when [off, off+len) may be submitted as `op` next to what is in flight. */
static bool range_free(enum op op, uint64_t off, size_t len)
{
    for (unsigned i = 0; i < IN_FLIGHT; i++) {
        const struct slot *s = &slots[i];
        if (!s->used || !overlaps(off, len, s))
            continue;
        if (op != OP_READ || s->op != OP_READ)
            return false;
    }
    return true;
}

static void done(void *user, int64_t result)
{
    struct slot *s = user;
    switch (s->op) {
    case OP_READ:
        CHECK_EQ(result, s->len);
        if (memcmp(s->buf, shadow + s->offset, s->len) != 0) {
            size_t i = 0;
            while (s->buf[i] == shadow[s->offset + i])
                i++;
            fprintf(stderr, "read of %zu bytes at %llu differs from the shadow at %llu\n", s->len,
                    (unsigned long long)s->offset, (unsigned long long)(s->offset + i));
            exit(1);
        }
        break;
    case OP_WRITE:
        CHECK_EQ(result, s->len);
        break;
    case OP_ZERO:
    case OP_FLUSH:
        CHECK_EQ(result, 0);
        break;
    }
    free(s->buf);
    s->buf = NULL;
    s->used = false;
    in_flight--;
    completed++;
}

static struct slot *free_slot(void)
{
    for (unsigned i = 0; i < IN_FLIGHT; i++)
        if (!slots[i].used)
            return &slots[i];
    return NULL;
}

/* Submits one random request, or returns false when its range is busy. */
static bool try_submit(img *image)
{
    unsigned pick = (unsigned)(rnd() % 100);
    enum op op = pick < 45 ? OP_READ : pick < 85 ? OP_WRITE : pick < 97 ? OP_ZERO : OP_FLUSH;
    size_t len = 1 + (size_t)(rnd() % ((rnd() & 1) ? 4096 : MAX_LEN));
    if (rnd() % 4 == 0)
        len = (len + 511) & ~(size_t)511;
    uint64_t offset = rnd() % (IMAGE_SIZE - len + 1);
    if (rnd() % 4 == 0)
        offset &= ~(uint64_t)511;
    if (!range_free(op, offset, len))
        return false;

    struct slot *s = free_slot();
    CHECK(s != NULL);
    *s = (struct slot){.used = true, .op = op, .offset = offset, .len = len};
    int ret = 0;
    switch (op) {
    case OP_READ:
        s->buf = malloc(len);
        CHECK(s->buf != NULL);
        memset(s->buf, 0xa5, len);
        ret = img_aio_pread(image, s->buf, len, offset, done, s);
        break;
    case OP_WRITE:
        s->buf = malloc(len);
        CHECK(s->buf != NULL);
        for (size_t i = 0; i < len; i++)
            s->buf[i] = (uint8_t)rnd();
        memcpy(shadow + offset, s->buf, len);
        ret = img_aio_pwrite(image, s->buf, len, offset, done, s);
        break;
    case OP_ZERO:
        memset(shadow + offset, 0, len);
        ret = img_aio_zero(image, offset, len, (rnd() & 1) ? IMG_ZERO_MAY_UNMAP : 0, done, s);
        break;
    case OP_FLUSH:
        ret = img_aio_flush(image, done, s);
        break;
    }
    CHECK_EQ(ret, 0);
    in_flight++;
    return true;
}

/*
 * Submits one random request, or returns false when every range tried was busy (try again
 * after some completions). Several tries, so that hundreds of requests get in flight.
 */
static bool submit_one(img *image)
{
    for (int tries = 0; tries < 64; tries++)
        if (try_submit(image))
            return true;
    return false;
}

/* Creates the image for `kind` with qemu-img; fills the shadow with its initial content. */
static const char *make_image(const char *kind, const char *dir, char **path)
{
    char *base = path_in(dir, "base.raw");
    const char *fmt = "qcow2";
    int rc = -1;
    memset(shadow, 0, IMAGE_SIZE);
    if (strcmp(kind, "raw") == 0) {
        *path = path_in(dir, "image.raw");
        fmt = "raw";
        rc = run("qemu-img create -q -f raw '%s' %u", *path, IMAGE_SIZE);
    } else if (strcmp(kind, "qcow2-backing") == 0 || strcmp(kind, "qcow2-extl2") == 0) {
        fill_initial(shadow, BACKING_SIZE);
        write_file(base, shadow, BACKING_SIZE);
        *path = path_in(dir, "image.qcow2");
        rc =
            run("qemu-img create -q -f qcow2 -o cluster_size=65536%s -b '%s' -F raw '%s' %u",
                strcmp(kind, "qcow2-extl2") == 0 ? ",extended_l2=on" : "", base, *path, IMAGE_SIZE);
    } else if (strcmp(kind, "qcow2-compressed") == 0) {
        fill_initial(shadow, IMAGE_SIZE);
        write_file(base, shadow, IMAGE_SIZE);
        *path = path_in(dir, "image.qcow2");
        rc = run("qemu-img convert -q -c -f raw -O qcow2 '%s' '%s'", base, *path);
        CHECK_EQ(rc, 0);
        rc = run("qemu-img check --output=json '%s' | grep -q '\"compressed-clusters\": [1-9]'",
                 *path);
    } else {
        fprintf(stderr, "unknown image kind '%s'\n", kind);
        exit(2);
    }
    CHECK_EQ(rc, 0);
    free(base);
    return fmt;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s raw|qcow2-backing|qcow2-compressed|qcow2-extl2\n", argv[0]);
        return 2;
    }
    if (!have_qemu_img()) {
        fprintf(stderr, "SKIP: qemu-img not found\n");
        return SKIP;
    }
    const char *env_seed = getenv("AIO_SEED");
    uint64_t seed =
        env_seed ? strtoull(env_seed, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    rng_state = seed ? seed : 1;
    printf("seed %llu (replay with AIO_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);

    shadow = malloc(IMAGE_SIZE);
    CHECK(shadow != NULL);
    char *dir = scratch_dir();
    char *path;
    const char *fmt = make_image(argv[1], dir, &path);

    img *image;
    CHECK_EQ(img_open(&image, path, fmt, IMG_OPEN_READ_WRITE, NULL), 0);
    int fd = img_aio_get_fd(image);
    CHECK(fd >= 0);
    CHECK_EQ(img_aio_get_fd(image), fd); /* the same descriptor every time */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);

    unsigned submitted = 0, most_in_flight = 0;
    while (submitted < OPERATIONS || in_flight > 0) {
        while (submitted < OPERATIONS && in_flight < IN_FLIGHT && submit_one(image))
            submitted++;
        if (in_flight > most_in_flight)
            most_in_flight = in_flight;
        CHECK_EQ(img_aio_in_flight(image), in_flight);
        int n = epoll_wait(ep, &ev, 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK_EQ(n, 1);
        int ran = img_aio_poll(image, 0);
        CHECK(ran > 0); /* the descriptor was readable: completions were waiting */
    }
    CHECK_EQ(completed, OPERATIONS);
    CHECK_EQ(img_aio_in_flight(image), 0);
    CHECK_EQ(img_aio_poll(image, -1), 0); /* nothing in flight: returns at once */
    printf("%u requests, at most %u in flight\n", completed, most_in_flight);
    /* The first batch fills every slot: callbacks run only in img_aio_poll(). */
    CHECK_EQ(most_in_flight, IN_FLIGHT);
    close(ep);
    img_close(image);

    char *expected = path_in(dir, "shadow.raw");
    write_file(expected, shadow, IMAGE_SIZE);
    if (strcmp(fmt, "qcow2") == 0)
        CHECK_EQ(run("qemu-img check -q -f qcow2 '%s'", path), 0);
    CHECK_EQ(run("qemu-img compare -q -f %s -F raw '%s' '%s'", fmt, path, expected), 0);

    scratch_remove(dir);
    free(expected);
    free(path);
    free(dir);
    free(shadow);
    return 0;
}
