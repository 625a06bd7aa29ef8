/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * aio_copy: copies the guest content of an image (any format the library reads) into a raw
 * file, keeping N asynchronous reads in flight, driven by an epoll loop on img_aio_get_fd().
 *
 *   aio_copy [-f FORMAT] [-n REQUESTS] SOURCE TARGET.raw
 *
 * Each completion writes its chunk to the target (chunks of zeros are left as holes) and
 * submits the read of the next chunk not yet asked for, from inside the callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <imgutil.h>

#define CHUNK (1u << 20)

struct copy;

struct chunk {
    struct copy *copy;
    uint8_t *buf;
    uint64_t offset;
    size_t len;
};

struct copy {
    img *source;
    int target_fd;
    uint64_t size;
    uint64_t next_offset; /* the first byte no read has asked for yet */
    int error;            /* the first failure, as a negative errno */
};

static bool all_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i])
            return false;
    return true;
}

static void chunk_done(void *user, int64_t result);

/* Asks for the next chunk of the image into `c`; false when everything has been asked for. */
static bool submit_next(struct chunk *c)
{
    struct copy *copy = c->copy;
    if (copy->error || copy->next_offset >= copy->size)
        return false;
    c->offset = copy->next_offset;
    c->len = copy->size - c->offset < CHUNK ? (size_t)(copy->size - c->offset) : CHUNK;
    copy->next_offset += c->len;
    int ret = img_aio_pread(copy->source, c->buf, c->len, c->offset, chunk_done, c);
    if (ret < 0) {
        fprintf(stderr, "aio_copy: cannot read at %llu: %s\n", (unsigned long long)c->offset,
                img_last_error());
        copy->error = ret;
        return false;
    }
    return true;
}

/* Runs inside img_aio_poll(), on the thread of the event loop. */
static void chunk_done(void *user, int64_t result)
{
    struct chunk *c = user;
    struct copy *copy = c->copy;
    if (result < 0) {
        fprintf(stderr, "aio_copy: read at %llu failed: %s\n", (unsigned long long)c->offset,
                img_last_error());
        if (!copy->error)
            copy->error = (int)result;
        return;
    }
    if (!all_zero(c->buf, c->len)) {
        size_t done = 0;
        while (done < c->len) {
            ssize_t n =
                pwrite(copy->target_fd, c->buf + done, c->len - done, (off_t)(c->offset + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                perror("aio_copy: write");
                copy->error = -EIO;
                return;
            }
            done += (size_t)n;
        }
    }
    submit_next(c);
}

static int event_loop(struct copy *copy)
{
    int fd = img_aio_get_fd(copy->source);
    if (fd < 0) {
        fprintf(stderr, "aio_copy: %s\n", img_last_error());
        return fd;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("aio_copy: epoll");
        return -errno;
    }
    int ret = 0;
    while (img_aio_in_flight(copy->source) > 0) {
        int n = epoll_wait(ep, &ev, 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("aio_copy: epoll_wait");
            ret = -errno;
            break;
        }
        int ran = img_aio_poll(copy->source, 0);
        if (ran < 0) {
            fprintf(stderr, "aio_copy: %s\n", img_last_error());
            ret = ran;
            break;
        }
    }
    close(ep);
    return ret;
}

int main(int argc, char **argv)
{
    const char *format = NULL;
    unsigned requests = 8;
    int opt;
    while ((opt = getopt(argc, argv, "f:n:")) != -1) {
        if (opt == 'f')
            format = optarg;
        else if (opt == 'n' && atoi(optarg) > 0)
            requests = (unsigned)atoi(optarg);
        else
            goto usage;
    }
    if (argc - optind != 2)
        goto usage;

    struct copy copy = {.target_fd = -1};
    int ret = img_open(&copy.source, argv[optind], format, IMG_OPEN_READ_ONLY, NULL);
    if (ret < 0) {
        fprintf(stderr, "aio_copy: %s\n", img_last_error());
        return 1;
    }
    int64_t size = img_get_size(copy.source);
    copy.size = size > 0 ? (uint64_t)size : 0;
    copy.target_fd = open(argv[optind + 1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (copy.target_fd < 0 || ftruncate(copy.target_fd, (off_t)copy.size) < 0) {
        perror(argv[optind + 1]);
        img_close(copy.source);
        return 1;
    }

    struct chunk *chunks = calloc(requests, sizeof(*chunks));
    for (unsigned i = 0; chunks && i < requests; i++) {
        chunks[i] = (struct chunk){.copy = &copy, .buf = malloc(CHUNK)};
        if (!chunks[i].buf)
            copy.error = -ENOMEM;
        if (!chunks[i].buf || !submit_next(&chunks[i]))
            break;
    }
    ret = chunks ? event_loop(&copy) : -ENOMEM;
    if (ret == 0)
        ret = copy.error;
    /* A failure may leave reads in flight: img_close waits for them before buffers go. */
    img_close(copy.source);
    for (unsigned i = 0; chunks && i < requests; i++)
        free(chunks[i].buf);
    free(chunks);
    if (close(copy.target_fd) < 0 && ret == 0)
        ret = -errno;
    if (ret < 0) {
        fprintf(stderr, "aio_copy: copy failed (%s)\n", img_strerror(ret));
        return 1;
    }
    return 0;

usage:
    fprintf(stderr, "usage: %s [-f FORMAT] [-n REQUESTS] SOURCE TARGET.raw\n", argv[0]);
    return 2;
}
