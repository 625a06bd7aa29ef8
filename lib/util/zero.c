/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Zero detection, for leaving zero blocks out of the images the library writes. */
#include "util/zero.h"

#include <stdint.h>

bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        len--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)p;
    /* Data blocks usually differ from zero in their first bytes: look there first. */
    if (len >= 64 && (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]))
        return false;
    for (; len >= 256; len -= 256, w += 32) {
        uint64_t acc = 0;
        for (int i = 0; i < 32; i++)
            acc |= w[i];
        if (acc)
            return false;
    }
    p = (const uint8_t *)w;
    while (len--)
        if (*p++)
            return false;
    return true;
}
