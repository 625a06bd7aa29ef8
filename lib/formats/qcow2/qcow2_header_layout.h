/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where each field of the qcow2 header lies (docs/interop/qcow2.txt, "Header"): byte offsets
 * from the start of the file, all fields big-endian. Fields from QCOW2_HDR_INCOMPATIBLE_FEATURES
 * on exist in version 3 only (version 2 headers end at QCOW2_V2_HEADER_LENGTH); the compression
 * type byte (QCOW2_COMPRESSION_TYPE_OFFSET, qcow2.h) only when header_length covers it.
 */
#ifndef IMG_QCOW2_HEADER_LAYOUT_H
#define IMG_QCOW2_HEADER_LAYOUT_H

enum qcow2_header_offset {
    QCOW2_HDR_MAGIC = 0,                    /* u32 "QFI\xfb" */
    QCOW2_HDR_VERSION = 4,                  /* u32 */
    QCOW2_HDR_BACKING_FILE_OFFSET = 8,      /* u64 */
    QCOW2_HDR_BACKING_FILE_SIZE = 16,       /* u32 */
    QCOW2_HDR_CLUSTER_BITS = 20,            /* u32 */
    QCOW2_HDR_SIZE = 24,                    /* u64 virtual size */
    QCOW2_HDR_CRYPT_METHOD = 32,            /* u32 */
    QCOW2_HDR_L1_SIZE = 36,                 /* u32 entries */
    QCOW2_HDR_L1_TABLE_OFFSET = 40,         /* u64 */
    QCOW2_HDR_REFCOUNT_TABLE_OFFSET = 48,   /* u64 */
    QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS = 56, /* u32 */
    QCOW2_HDR_NB_SNAPSHOTS = 60,            /* u32 */
    QCOW2_HDR_SNAPSHOTS_OFFSET = 64,        /* u64 */
    /* version 3 */
    QCOW2_HDR_INCOMPATIBLE_FEATURES = 72, /* u64 */
    QCOW2_HDR_COMPATIBLE_FEATURES = 80,   /* u64 */
    QCOW2_HDR_AUTOCLEAR_FEATURES = 88,    /* u64 */
    QCOW2_HDR_REFCOUNT_ORDER = 96,        /* u32 */
    QCOW2_HDR_HEADER_LENGTH = 100,        /* u32 */
};

#endif
