/* guard.c - the SIGBUS guard of guard.h.
 *
 * A fixed table of slots, one per guarded mapping, read by the handler without a lock (each
 * field atomic; a slot is free while its start is 0). The handler is installed once, at the
 * first registration, and chains to the handler it replaced for faults it does not own.
 */
#define _GNU_SOURCE
#include "guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_SLOTS 64
static struct {
    _Atomic(uintptr_t) start;
    _Atomic(size_t) size;
    atomic_int tripped;
} guards[GUARD_SLOTS];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous_bus;
static int guard_installed;
static uintptr_t page_mask; /* read in the handler, where sysconf is not async-signal-safe */

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t start = atomic_load(&guards[i].start);
        size_t size = atomic_load(&guards[i].size);
        if (start && addr >= start && addr < start + size) {
            uintptr_t page = addr & page_mask;
            mmap((void *)page, start + size - page, PROT_READ,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            atomic_store(&guards[i].tripped, 1);
            return;
        }
    }
    /* not ours: whatever was there before us */
    if (previous_bus.sa_flags & SA_SIGINFO) {
        previous_bus.sa_sigaction(sig, info, uctx);
    } else if (previous_bus.sa_handler != SIG_IGN && previous_bus.sa_handler != SIG_DFL) {
        previous_bus.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

int bump_guard_mapping(const void *start, size_t size)
{
    int slot = -1;
    pthread_mutex_lock(&guard_lock);
    if (!guard_installed) {
        page_mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &previous_bus) == 0) guard_installed = 1;
    }
    for (int i = 0; i < GUARD_SLOTS && slot < 0; i++) {
        if (!atomic_load(&guards[i].start)) {
            atomic_store(&guards[i].tripped, 0);
            atomic_store(&guards[i].size, size);
            atomic_store(&guards[i].start, (uintptr_t)start);
            slot = i;
        }
    }
    pthread_mutex_unlock(&guard_lock);
    return slot;
}

int bump_guard_tripped(int slot)
{
    return slot >= 0 && slot < GUARD_SLOTS && atomic_load(&guards[slot].tripped);
}

void bump_guard_release(int slot)
{
    if (slot < 0 || slot >= GUARD_SLOTS) return;
    pthread_mutex_lock(&guard_lock);
    atomic_store(&guards[slot].start, 0);
    atomic_store(&guards[slot].size, 0);
    pthread_mutex_unlock(&guard_lock);
}
