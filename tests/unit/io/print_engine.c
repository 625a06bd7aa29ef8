/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Prints the I/O engine this process gets (IMGUTIL_IO applies), for the shell tests. */
#include <stdio.h>

#include "io/io.h"

int main(void)
{
    printf("%s\n", io_engine_name());
    return 0;
}
