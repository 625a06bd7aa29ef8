/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_CRC32C_H
#define IMG_UTIL_CRC32C_H

/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), the checksum of VHDX headers, region
 * tables and log entries, and of iSCSI and ext4 metadata.
 */

#include <stddef.h>
#include <stdint.h>

/*
 * Continues a checksum over `len` bytes. Start with crc32c_update(0, ...) for the standard
 * CRC-32C of a buffer (initial value ~0, final xor ~0 are applied inside), and chain calls
 * by passing the previous result: crc32c_update(crc32c_update(0, a, n), b, m) equals the
 * checksum of a followed by b. Pure: any thread.
 */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

#endif
