/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/huge_buffer.h"

#include <stdlib.h>
#include <sys/mman.h>

void *huge_buffer_alloc(size_t size)
{
    void *buf = aligned_alloc(HUGE_BUFFER_ALIGN, size);
#ifdef MADV_HUGEPAGE
    /* Only advice: without huge pages (disabled, or none free) the buffer works as well. */
    if (buf)
        (void)madvise(buf, size, MADV_HUGEPAGE);
#endif
    return buf;
}
