/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef IMG_UTIL_CPUS_H
#define IMG_UTIL_CPUS_H

/* The CPUs this process may run on (its affinity mask, else those online); at least 1. */
unsigned host_cpu_count(void);

#endif
