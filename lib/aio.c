/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The asynchronous API: requests run the synchronous data path (read.c, write.c) on the
 * process-wide worker pool; their completions wait in a per-handle list, signalled through an
 * eventfd, until the caller runs them in img_aio_poll() on its own thread.
 *
 * Locking: `aio->lock` guards the counters, the completion list, the eventfd counter and the
 * poller fields. A worker appends its completion, writes the eventfd and signals `idle` all
 * under the lock, and touches nothing of the request or the state after unlocking, so that
 * img_close (which waits for `running` to reach 0 under the same lock) may free both at once.
 * The eventfd counter is non-zero exactly when the completion list is non-empty: both change
 * together under the lock.
 */
#include "aio.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "image.h"
#include "util/checked.h"
#include "util/workpool.h"

enum aio_op {
    AIO_READ,
    AIO_WRITE,
    AIO_ZERO,
    AIO_DISCARD,
    AIO_FLUSH,
};

static const char *const aio_op_names[] = {"img_aio_pread", "img_aio_pwrite", "img_aio_zero",
                                           "img_aio_discard", "img_aio_flush"};

struct aio_req {
    struct work_item work; /* first: the pool hands this back to aio_run() */
    struct img_aio *aio;
    struct img *img;
    enum aio_op op;
    void *buf;
    size_t len;
    uint64_t offset;
    unsigned flags;
    img_aio_done_fn done;
    void *user;
    int64_t result;
    char *message; /* the worker's img_last_error() when result < 0 (NULL if out of memory) */
    struct aio_req *next;
};

struct img_aio {
    pthread_mutex_t lock;
    pthread_cond_t idle; /* signalled when `running` drops to 0 */
    int efd;
    unsigned in_flight; /* submitted and callback not yet run (or dropped) */
    unsigned running;   /* submitted and not yet finished on a worker */
    struct aio_req *done_head, *done_tail;
    bool polling; /* a thread is inside img_aio_poll() */
    pthread_t poller;
};

/* Serialises the creation of the per-handle state; readers load img->aio atomically. */
static pthread_mutex_t aio_create_lock = PTHREAD_MUTEX_INITIALIZER;

static struct img_aio *aio_state(struct img *img)
{
    return __atomic_load_n(&img->aio, __ATOMIC_ACQUIRE);
}

/* The handle's state, created (with its eventfd) on first use. */
static int aio_state_get(struct img *img, struct img_aio **out)
{
    struct img_aio *aio = aio_state(img);
    if (aio) {
        *out = aio;
        return 0;
    }
    pthread_mutex_lock(&aio_create_lock);
    aio = img->aio;
    int ret = 0;
    if (!aio) {
        aio = calloc(1, sizeof(*aio));
        if (!aio) {
            ret = img_error(-ENOMEM, "%s: out of memory for the asynchronous state", img->filename);
            goto out;
        }
        aio->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (aio->efd < 0) {
            ret = img_error(-errno, "%s: cannot create the completion eventfd: %s", img->filename,
                            img_strerror(-errno));
            free(aio);
            goto out;
        }
        pthread_mutex_init(&aio->lock, NULL);
        pthread_cond_init(&aio->idle, NULL);
        __atomic_store_n(&img->aio, aio, __ATOMIC_RELEASE);
    }
out:
    pthread_mutex_unlock(&aio_create_lock);
    *out = aio;
    return ret;
}

static int64_t aio_execute(struct aio_req *req)
{
    struct img *img = req->img;
    switch (req->op) {
    case AIO_READ:
        /* The public call, so that the read is a shared call like any other (see image.h). */
        return img_pread(img, req->buf, req->len, req->offset);
    case AIO_WRITE:
        return img_pwrite(img, req->buf, req->len, req->offset);
    case AIO_ZERO:
        return img_zero(img, req->offset, req->len, req->flags);
    case AIO_DISCARD:
        return img_discard(img, req->offset, req->len);
    case AIO_FLUSH:
        return img_flush(img);
    }
    return img_error(-EINVAL, "unknown asynchronous operation %d", (int)req->op);
}

/* On a worker of the pool. */
static void aio_run(struct work_item *item)
{
    struct aio_req *req = (struct aio_req *)item;
    struct img_aio *aio = req->aio;
    req->result = aio_execute(req);
    if (req->result < 0)
        req->message = strdup(img_last_error());

    pthread_mutex_lock(&aio->lock);
    req->next = NULL;
    if (aio->done_tail)
        aio->done_tail->next = req;
    else
        aio->done_head = req;
    aio->done_tail = req;
    uint64_t one = 1;
    /* Cannot fail: the counter is far from its maximum, and nothing else writes it. */
    ssize_t n = write(aio->efd, &one, sizeof(one));
    (void)n;
    if (--aio->running == 0)
        pthread_cond_broadcast(&aio->idle);
    pthread_mutex_unlock(&aio->lock);
}

static int check_range(struct img *img, enum aio_op op, uint64_t offset, uint64_t len)
{
    uint64_t end;
    int64_t size = img_get_size(img);
    if (size < 0)
        return (int)size;
    if (add_overflows_u64(offset, len, &end) || end > (uint64_t)size)
        return img_error(-EINVAL,
                         "%s: %s: range %" PRIu64 "+%" PRIu64
                         " is past the end of the image (%" PRId64 " bytes)",
                         aio_op_names[op], img->filename, offset, len, size);
    return 0;
}

/* The checks made before a request is queued: what fails here is never queued. */
static int check_request(struct img *img, enum aio_op op, const void *buf, uint64_t len,
                         uint64_t offset, unsigned flags)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "%s: invalid image handle", aio_op_names[op]);
    if (op != AIO_READ && !img->writable)
        return img_error(-EROFS, "%s: %s: image is opened read-only", aio_op_names[op],
                         img->filename);
    if ((op == AIO_READ || op == AIO_WRITE) && !buf && len)
        return img_error(-EINVAL, "%s: buffer is NULL", aio_op_names[op]);
    if (op == AIO_ZERO && (flags & ~IMG_ZERO_MAY_UNMAP))
        return img_error(-EINVAL, "img_aio_zero: unknown flags 0x%x", flags & ~IMG_ZERO_MAY_UNMAP);
    if (op == AIO_FLUSH)
        return 0;
    return check_range(img, op, offset, len);
}

static int aio_submit(struct img *img, enum aio_op op, void *buf, uint64_t len, uint64_t offset,
                      unsigned flags, img_aio_done_fn done, void *user)
{
    int ret = check_request(img, op, buf, len, offset, flags);
    struct img_aio *aio = NULL;
    if (ret == 0)
        ret = aio_state_get(img, &aio);
    if (ret < 0)
        return ret;
    struct aio_req *req = calloc(1, sizeof(*req));
    if (!req)
        return img_error(-ENOMEM, "%s: %s: out of memory", aio_op_names[op], img->filename);
    *req = (struct aio_req){
        .work = {.run = aio_run},
        .aio = aio,
        .img = img,
        .op = op,
        .buf = buf,
        .len = (size_t)len,
        .offset = offset,
        .flags = flags,
        .done = done,
        .user = user,
    };

    pthread_mutex_lock(&aio->lock);
    if (aio->in_flight >= IMG_AIO_MAX_IN_FLIGHT) {
        pthread_mutex_unlock(&aio->lock);
        free(req);
        return img_error(-EAGAIN,
                         "%s: %s: %u requests are in flight already; poll for completions first",
                         aio_op_names[op], img->filename, (unsigned)IMG_AIO_MAX_IN_FLIGHT);
    }
    aio->in_flight++;
    aio->running++;
    pthread_mutex_unlock(&aio->lock);

    ret = workpool_submit(&req->work);
    if (ret < 0) {
        pthread_mutex_lock(&aio->lock);
        aio->in_flight--;
        if (--aio->running == 0)
            pthread_cond_broadcast(&aio->idle);
        pthread_mutex_unlock(&aio->lock);
        free(req);
        return img_error(ret, "%s: %s: cannot start a worker thread: %s", aio_op_names[op],
                         img->filename, img_strerror(ret));
    }
    return 0;
}

IMG_API int img_aio_pread(img *img, void *buf, size_t len, uint64_t offset, img_aio_done_fn done,
                          void *user)
{
    return aio_submit(img, AIO_READ, buf, len, offset, 0, done, user);
}

IMG_API int img_aio_pwrite(img *img, const void *buf, size_t len, uint64_t offset,
                           img_aio_done_fn done, void *user)
{
    /* The buffer is only read (aio_execute passes it to img_pwrite as const). */
    return aio_submit(img, AIO_WRITE, (void *)(uintptr_t)buf, len, offset, 0, done, user);
}

IMG_API int img_aio_zero(img *img, uint64_t offset, uint64_t len, unsigned flags,
                         img_aio_done_fn done, void *user)
{
    return aio_submit(img, AIO_ZERO, NULL, len, offset, flags, done, user);
}

IMG_API int img_aio_discard(img *img, uint64_t offset, uint64_t len, img_aio_done_fn done,
                            void *user)
{
    return aio_submit(img, AIO_DISCARD, NULL, len, offset, 0, done, user);
}

IMG_API int img_aio_flush(img *img, img_aio_done_fn done, void *user)
{
    return aio_submit(img, AIO_FLUSH, NULL, 0, 0, 0, done, user);
}

IMG_API int img_aio_get_fd(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "img_aio_get_fd: invalid image handle");
    struct img_aio *aio;
    int ret = aio_state_get(img, &aio);
    return ret < 0 ? ret : aio->efd;
}

IMG_API int64_t img_aio_in_flight(img *img)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "img_aio_in_flight: invalid image handle");
    struct img_aio *aio = aio_state(img);
    if (!aio)
        return 0;
    pthread_mutex_lock(&aio->lock);
    int64_t n = aio->in_flight;
    pthread_mutex_unlock(&aio->lock);
    return n;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* With aio->lock held: detaches the waiting completions and resets the eventfd. */
static struct aio_req *take_completions(struct img_aio *aio)
{
    struct aio_req *list = aio->done_head;
    aio->done_head = aio->done_tail = NULL;
    uint64_t count;
    ssize_t n = read(aio->efd, &count, sizeof(count)); /* EAGAIN when it was 0 already */
    (void)n;
    return list;
}

/*
 * With aio->lock held on entry and on return: waits until a completion is waiting, nothing is
 * in flight, or `timeout_ms` has passed. Returns 0 or a negative errno from poll(2).
 */
static int wait_for_completion(struct img_aio *aio, int timeout_ms)
{
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    while (!aio->done_head && aio->in_flight > 0 && timeout_ms != 0) {
        int wait_ms = -1;
        if (timeout_ms > 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                break;
            wait_ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        pthread_mutex_unlock(&aio->lock);
        struct pollfd pfd = {.fd = aio->efd, .events = POLLIN};
        int n = poll(&pfd, 1, wait_ms);
        int err = errno;
        pthread_mutex_lock(&aio->lock);
        if (n < 0 && err != EINTR)
            return img_error(-err, "img_aio_poll: poll failed: %s", img_strerror(-err));
    }
    return 0;
}

IMG_API int img_aio_poll(img *img, int timeout_ms)
{
    if (!img || img->magic != IMG_HANDLE_MAGIC)
        return img_error(-EINVAL, "img_aio_poll: invalid image handle");
    struct img_aio *aio = aio_state(img);
    if (!aio)
        return 0; /* nothing was ever submitted */

    pthread_mutex_lock(&aio->lock);
    if (aio->polling) {
        pthread_mutex_unlock(&aio->lock);
        return img_error(-EBUSY,
                         "img_aio_poll: %s: already polling (from a completion callback or "
                         "another thread)",
                         img->filename);
    }
    aio->polling = true;
    aio->poller = pthread_self();
    int ret = wait_for_completion(aio, timeout_ms);
    struct aio_req *list = ret < 0 ? NULL : take_completions(aio);
    pthread_mutex_unlock(&aio->lock);

    int ran = 0;
    while (list) {
        struct aio_req *req = list;
        list = req->next;
        /* Counted out first, so that the callback may submit in its place at the cap. */
        pthread_mutex_lock(&aio->lock);
        aio->in_flight--;
        pthread_mutex_unlock(&aio->lock);
        if (req->result < 0)
            img_error((int)req->result, "%s",
                      req->message ? req->message : "asynchronous request failed");
        if (req->done)
            req->done(req->user, req->result);
        free(req->message);
        free(req);
        ran++;
    }

    pthread_mutex_lock(&aio->lock);
    aio->polling = false;
    pthread_mutex_unlock(&aio->lock);
    return ret < 0 ? ret : ran;
}

/* True when this thread is running completion callbacks of `img`. */
static bool polled_by_this_thread(struct img *img)
{
    struct img_aio *aio = aio_state(img);
    if (!aio)
        return false;
    pthread_mutex_lock(&aio->lock);
    bool mine = aio->polling && pthread_equal(aio->poller, pthread_self());
    pthread_mutex_unlock(&aio->lock);
    return mine;
}

/*
 * Waits for the layer's requests, drops their completions and frees its state. Returns how
 * many requests it dropped.
 */
static unsigned close_layer(struct img *img)
{
    struct img_aio *aio = aio_state(img);
    if (!aio)
        return 0;
    pthread_mutex_lock(&aio->lock);
    while (aio->running > 0)
        pthread_cond_wait(&aio->idle, &aio->lock);
    unsigned dropped = aio->in_flight;
    struct aio_req *list = take_completions(aio);
    pthread_mutex_unlock(&aio->lock);

    while (list) {
        struct aio_req *req = list;
        list = req->next;
        free(req->message);
        free(req);
    }
    close(aio->efd);
    pthread_cond_destroy(&aio->idle);
    pthread_mutex_destroy(&aio->lock);
    free(aio);
    img->aio = NULL;
    return dropped;
}

/*
 * The backing images go with the image that owns them (img_get_backing handles are never
 * closed by the caller), so requests submitted on them are waited for here too.
 */
int img_aio_close(struct img *img)
{
    for (struct img *layer = img; layer; layer = layer->backing)
        if (polled_by_this_thread(layer))
            return img_error(-EBUSY,
                             "img_close: %s: refused from a completion callback of the image "
                             "or of its backing chain",
                             layer->filename);
    unsigned long dropped = 0;
    for (struct img *layer = img; layer; layer = layer->backing)
        dropped += close_layer(layer);
    if (dropped)
        img_error(-ECANCELED,
                  "img_close: %s: %lu asynchronous requests were not polled; they finished, "
                  "and their completion callbacks were not run",
                  img->filename, dropped);
    return 0;
}
