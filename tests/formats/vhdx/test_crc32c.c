/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* CRC-32C against the published check values, whole and in chained pieces of every split. */
#include <stdio.h>
#include <string.h>

#include "util/crc32c.h"

static int failures;

static void expect(const char *what, uint32_t got, uint32_t want)
{
    if (got != want) {
        fprintf(stderr, "FAIL %s: 0x%08x, want 0x%08x\n", what, got, want);
        failures++;
    }
}

int main(void)
{
    /* RFC 3720 B.4 and the CRC catalogue's check value. */
    static const char check[] = "123456789";
    expect("\"123456789\"", crc32c_update(0, check, 9), 0xe3069283u);
    uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];
    memset(ones, 0xff, sizeof(ones));
    for (int i = 0; i < 32; i++) {
        inc[i] = (uint8_t)i;
        dec[i] = (uint8_t)(31 - i);
    }
    expect("32 zeros", crc32c_update(0, zeros, 32), 0x8a9136aau);
    expect("32 0xff", crc32c_update(0, ones, 32), 0x62a8ab43u);
    expect("0..31", crc32c_update(0, inc, 32), 0x46dd794eu);
    expect("31..0", crc32c_update(0, dec, 32), 0x113fdb5cu);
    expect("empty", crc32c_update(0, "", 0), 0);
    for (size_t split = 0; split <= 32; split++) {
        uint32_t crc = crc32c_update(crc32c_update(0, inc, split), inc + split, 32 - split);
        char what[32];
        snprintf(what, sizeof(what), "0..31 split at %zu", split);
        expect(what, crc, 0x46dd794eu);
    }
    if (failures == 0)
        printf("crc32c: all passed\n");
    return failures ? 1 : 0;
}
