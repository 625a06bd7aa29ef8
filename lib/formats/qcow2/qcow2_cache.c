/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bounded LRU cache of metadata slices (parts of L2 tables or refcount blocks), shared by
 * every thread that maps the image.
 *
 * The lock is never held across I/O. A miss inserts a pinned entry marked `loading` and reads
 * the slice with the lock dropped; other threads wanting the same slice wait for that read
 * rather than reading their own copy. (A private copy could be stale by the time it was
 * inserted: a writer may have changed the slice, written it back and let it be evicted while
 * the read was in flight.) Entries in use are pinned and never evicted or freed under their
 * user.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "error.h"
#include "formats/qcow2/qcow2.h"
#include "imgutil.h"
#include "io/io.h"

/* Fewer slices than this would thrash as soon as a few threads map at once. */
#define CACHE_MIN_ENTRIES 8

struct qcow2_cache_entry {
    uint64_t offset;
    uint8_t *data;
    unsigned pins;
    bool loading;   /* its first read is in flight; `data` is not valid yet */
    int load_error; /* why that read failed (the entry is then detached) */
    bool detached;  /* invalidated while pinned: freed by the last put */
    struct qcow2_cache_entry *hash_next;
    struct qcow2_cache_entry *lru_prev, *lru_next; /* head = most recently used */
};

struct qcow2_cache {
    struct io_file *file;
    uint32_t slice_bytes;
    size_t max_entries;
    size_t count;
    struct qcow2_cache_entry **buckets;
    unsigned bucket_bits;
    struct qcow2_cache_entry *lru_head, *lru_tail;
    pthread_mutex_t lock;
    pthread_cond_t loaded; /* an entry's `loading` ended */
};

static size_t bucket_of(const struct qcow2_cache *c, uint64_t offset)
{
    /* Slices sit at multiples of their size, often a cluster apart: mix all the bits. */
    return (size_t)(((offset / c->slice_bytes) * 0x9e3779b97f4a7c15ull) >> (64 - c->bucket_bits));
}

int qcow2_cache_new(struct qcow2_cache **out, struct io_file *file, uint32_t slice_bytes,
                    uint64_t max_bytes)
{
    *out = NULL;
    if (slice_bytes == 0 || (slice_bytes & (slice_bytes - 1)))
        return img_error(-EINVAL, "qcow2: cache slice size %u is not a power of two", slice_bytes);
    struct qcow2_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return img_error(-ENOMEM, "out of memory");
    c->file = file;
    c->slice_bytes = slice_bytes;
    uint64_t entries = max_bytes / slice_bytes;
    c->max_entries = entries < CACHE_MIN_ENTRIES ? CACHE_MIN_ENTRIES : (size_t)entries;
    c->bucket_bits = 4;
    while (((size_t)1 << c->bucket_bits) < c->max_entries && c->bucket_bits < 24)
        c->bucket_bits++;
    c->buckets = calloc((size_t)1 << c->bucket_bits, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return img_error(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->loaded, NULL);
    *out = c;
    return 0;
}

static void entry_free(struct qcow2_cache_entry *e)
{
    free(e->data);
    free(e);
}

static void lru_unlink(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

static void hash_unlink(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    struct qcow2_cache_entry **pp = &c->buckets[bucket_of(c, e->offset)];
    while (*pp && *pp != e)
        pp = &(*pp)->hash_next;
    if (*pp)
        *pp = e->hash_next;
    e->hash_next = NULL;
}

/* Takes `e` out of the cache; frees it now or, when pinned, at its last put. */
static void detach(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    hash_unlink(c, e);
    lru_unlink(c, e);
    c->count--;
    if (e->pins)
        e->detached = true;
    else
        entry_free(e);
}

static struct qcow2_cache_entry *find(struct qcow2_cache *c, uint64_t offset)
{
    for (struct qcow2_cache_entry *e = c->buckets[bucket_of(c, offset)]; e; e = e->hash_next)
        if (e->offset == offset)
            return e;
    return NULL;
}

static void evict_for_one_more(struct qcow2_cache *c)
{
    struct qcow2_cache_entry *e = c->lru_tail;
    while (c->count >= c->max_entries && e) {
        struct qcow2_cache_entry *prev = e->lru_prev;
        if (!e->pins)
            detach(c, e);
        e = prev;
    }
}

/* Drops a pin with c->lock held; true when the caller must free the entry. */
static bool unpin_locked(struct qcow2_cache_entry *e)
{
    e->pins--;
    return e->detached && e->pins == 0;
}

static void insert(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    size_t b = bucket_of(c, e->offset);
    e->hash_next = c->buckets[b];
    c->buckets[b] = e;
    c->count++;
    lru_push_head(c, e);
}

int qcow2_cache_get(struct qcow2_cache *c, uint64_t offset, struct qcow2_cache_entry **entry,
                    const uint8_t **data)
{
    pthread_mutex_lock(&c->lock);
    struct qcow2_cache_entry *e = find(c, offset);
    if (e) {
        e->pins++;
        lru_unlink(c, e);
        lru_push_head(c, e);
        while (e->loading)
            pthread_cond_wait(&c->loaded, &c->lock);
        int ret = e->load_error;
        bool free_now = ret < 0 && unpin_locked(e);
        pthread_mutex_unlock(&c->lock);
        if (free_now)
            entry_free(e);
        if (ret < 0)
            return img_error(ret, "qcow2: cannot read metadata at 0x%" PRIx64 ": %s", offset,
                             img_strerror(ret));
        *entry = e;
        *data = e->data;
        return 0;
    }

    e = calloc(1, sizeof(*e));
    if (e)
        e->data = malloc(c->slice_bytes);
    if (!e || !e->data) {
        pthread_mutex_unlock(&c->lock);
        free(e);
        return img_error(-ENOMEM, "out of memory");
    }
    e->offset = offset;
    e->pins = 1;
    e->loading = true;
    evict_for_one_more(c);
    insert(c, e);
    pthread_mutex_unlock(&c->lock);

    int ret = io_pread(c->file, e->data, c->slice_bytes, offset);

    pthread_mutex_lock(&c->lock);
    e->loading = false;
    if (ret < 0) {
        e->load_error = ret;
        if (!e->detached)
            detach(c, e);
    }
    bool free_now = ret < 0 && unpin_locked(e);
    pthread_cond_broadcast(&c->loaded);
    pthread_mutex_unlock(&c->lock);
    if (free_now)
        entry_free(e);
    if (ret < 0)
        return ret;
    *entry = e;
    *data = e->data;
    return 0;
}

void qcow2_cache_put(struct qcow2_cache *c, struct qcow2_cache_entry *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&c->lock);
    bool free_now = unpin_locked(e);
    pthread_mutex_unlock(&c->lock);
    if (free_now)
        entry_free(e);
}

void qcow2_cache_invalidate(struct qcow2_cache *c, uint64_t offset, uint64_t len)
{
    pthread_mutex_lock(&c->lock);
    struct qcow2_cache_entry *e = c->lru_head;
    while (e) {
        struct qcow2_cache_entry *next = e->lru_next;
        if (e->offset < offset + len && offset < e->offset + c->slice_bytes)
            detach(c, e);
        e = next;
    }
    pthread_mutex_unlock(&c->lock);
}

uint32_t qcow2_cache_slice_bytes(const struct qcow2_cache *c)
{
    return c->slice_bytes;
}

size_t qcow2_cache_count(struct qcow2_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
    if (!c)
        return;
    struct qcow2_cache_entry *e = c->lru_head;
    while (e) {
        struct qcow2_cache_entry *next = e->lru_next;
        entry_free(e);
        e = next;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->loaded);
    free(c);
}
