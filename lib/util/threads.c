/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "util/threads.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>

int threads_start_detached(unsigned *count, unsigned want, void *(*fn)(void *))
{
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return -ENOMEM;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Workers inherit a fully blocked signal mask: signals belong to the caller's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    while (*count < want) {
        pthread_t tid;
        err = pthread_create(&tid, &attr, fn, NULL);
        if (err != 0)
            break;
        (*count)++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return *count > 0 ? 0 : -err;
}
