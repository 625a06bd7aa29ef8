/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/huge_buffer.h"

#include <stdint.h>
#include <sys/mman.h>

/*
 * Mapped on its own rather than taken from malloc: the huge-page advice belongs to the
 * mapping, and given to a piece of malloc's heap it would outlive the buffer and reach
 * whatever that memory holds next.
 */
void *huge_buffer_alloc(size_t size)
{
    if (size == 0 || size % HUGE_BUFFER_ALIGN)
        return NULL;
    /* One alignment more than asked, so that an aligned start lies inside; the rest goes back. */
    size_t span = size + HUGE_BUFFER_ALIGN;
    if (span < size)
        return NULL;
    void *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    uintptr_t start =
        ((uintptr_t)map + HUGE_BUFFER_ALIGN - 1) & ~(uintptr_t)(HUGE_BUFFER_ALIGN - 1);
    size_t head = start - (uintptr_t)map;
    size_t tail = span - head - size;
    if (head)
        munmap(map, head);
    if (tail)
        munmap((void *)(start + size), tail);
#ifdef MADV_HUGEPAGE
    /* Only advice: without huge pages (disabled, or none free) the buffer works as well. */
    (void)madvise((void *)start, size, MADV_HUGEPAGE);
#endif
    return (void *)start;
}

void huge_buffer_free(void *buf, size_t size)
{
    if (buf)
        munmap(buf, size);
}
