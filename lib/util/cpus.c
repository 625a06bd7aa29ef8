/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/cpus.h"

#include <sched.h>
#include <unistd.h>

unsigned host_cpu_count(void)
{
    /* The affinity mask first: a container limited to two CPUs should not start sixty. */
    long cpus = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        cpus = CPU_COUNT(&set);
    if (cpus <= 0)
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1u : (unsigned)cpus;
}
