/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "codec/codec_thread.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct thread_states {
    void *state[CODEC_THREAD_SLOTS];
    void (*release[CODEC_THREAD_SLOTS])(void *state);
};

static pthread_key_t states_key;
static pthread_once_t states_key_once = PTHREAD_ONCE_INIT;
static bool states_key_ok;

static void states_free(void *p)
{
    struct thread_states *ts = p;
    if (!ts)
        return;
    for (int i = 0; i < CODEC_THREAD_SLOTS; i++) {
        if (!ts->state[i])
            continue;
        ts->release[i](ts->state[i]);
        free(ts->state[i]);
    }
    free(ts);
}

static void states_key_create(void)
{
    states_key_ok = pthread_key_create(&states_key, states_free) == 0;
}

static struct thread_states *thread_states(void)
{
    pthread_once(&states_key_once, states_key_create);
    if (!states_key_ok)
        return NULL;
    struct thread_states *ts = pthread_getspecific(states_key);
    if (ts)
        return ts;
    ts = calloc(1, sizeof(*ts));
    if (!ts)
        return NULL;
    if (pthread_setspecific(states_key, ts) != 0) {
        free(ts);
        return NULL;
    }
    return ts;
}

void *codec_thread_state(enum codec_thread_slot slot, size_t size, void (*release)(void *state))
{
    struct thread_states *ts = thread_states();
    if (!ts)
        return NULL;
    if (!ts->state[slot]) {
        ts->state[slot] = calloc(1, size);
        if (!ts->state[slot])
            return NULL;
        ts->release[slot] = release;
    }
    return ts->state[slot];
}
