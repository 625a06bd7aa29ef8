/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_QCOW2_AMEND_H
#define IMG_QCOW2_AMEND_H

/*
 * qemu-img amend for qcow2 (QEMU's block/qcow2.c qcow2_amend_options and what it calls):
 *   qcow2_amend.c           the option table, the request, the order of the steps
 *   qcow2_amend_compat.c    compat=1.1 <-> 0.10 (upgrade, downgrade with zero clusters expanded)
 *   qcow2_amend_refcount.c  refcount_bits (new refcount structures at the new width)
 * Every step is entered with the handle drained and takes s->lock itself.
 */

#include <stdint.h>

#include "formats/qcow2/qcow2.h"

struct img;

/* Progress over the steps that rewrite metadata (QEMU's Qcow2AmendHelperCBInfo). */
struct qcow2_amend_progress {
    struct img *img;
    unsigned steps;   /* how many rewriting steps the request has (at least 1) */
    unsigned current; /* the step running, from 0 */
};

/* Reports `done` of `total` of the current step; -ECANCELED when asked to stop. */
int qcow2_amend_report(struct qcow2_amend_progress *p, uint64_t done, uint64_t total);

/* The image becomes version `3` (from 2): snapshot extra data checked, header rewritten. */
int qcow2_amend_upgrade(struct img *img, struct qcow2_amend_progress *p);
/* The image becomes version 2, refused with QEMU's messages where it cannot. */
int qcow2_amend_downgrade(struct img *img, struct qcow2_amend_progress *p);
/* Rewrites the refcount structures with entries of 2^order bits. */
int qcow2_amend_refcount_order(struct img *img, uint32_t order, struct qcow2_amend_progress *p);

#endif
