/* pool.c - the runtime's thread pool (pool.h).
 *
 * One call of bump_pool_run is one "generation": the caller publishes fn/ctx, increments the
 * generation counter and runs its own share; each worker notices the new generation, runs its
 * share and decrements `pending`; the caller returns once `pending` is zero.
 *
 * Waiting, on both sides, is a bounded spin (SPIN_NS of pause instructions: the gap between two
 * parallel regions of a forward pass is usually shorter, so an idle machine pays no wake-up),
 * then a sleep on a futex (Linux) or a condition variable (elsewhere). The bound is what keeps
 * a contended machine usable: a waiting thread gives its core back after SPIN_NS instead of
 * burning the time slice of the thread it waits for (libgomp's default spins ~300k iterations).
 * A sleeper announces itself in `sleepers` before it sleeps, so the waking side makes a system
 * call only when somebody sleeps (sequentially consistent on both sides: either the waker sees
 * the sleeper, or the sleeper's futex sees the new value and does not sleep).
 *
 * After fork() the child has no workers: a pool used in another process than the one that
 * created it runs every share on the calling thread, in order (the same results).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

/* How long a waiting thread spins before it sleeps (-DSPIN_NS=... to measure others). */
#ifndef SPIN_NS
#define SPIN_NS 50000L
#endif

struct bump_pool {
    int n;
    pid_t owner;                  /* the process whose threads these are */
    pthread_t *threads;           /* [n - 1] */
    int started;                  /* threads actually created */
    bump_pool_fn fn;
    void *ctx;
    _Atomic uint32_t generation;  /* futex word of the workers */
    _Atomic uint32_t pending;     /* futex word of the caller: workers still running */
    _Atomic int sleepers;         /* threads asleep (or about to be) on either word */
    _Atomic int stop;
#ifndef __linux__
    pthread_mutex_t lock;
    pthread_cond_t cond;
#endif
};

typedef struct {
    bump_pool *pool;
    int ith;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Sleep while *word == value (spurious returns are fine: callers loop). */
static void sleep_on(bump_pool *p, _Atomic uint32_t *word, uint32_t value)
{
#ifdef __linux__
    (void)p;
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    pthread_mutex_lock(&p->lock);
    while (atomic_load(word) == value) pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
#endif
}

static void wake_all(bump_pool *p, _Atomic uint32_t *word)
{
#ifdef __linux__
    (void)p;
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
#endif
}

/* Wait until *word != value: spin for SPIN_NS, then sleep. Returns the new value. */
static uint32_t wait_change(bump_pool *p, _Atomic uint32_t *word, uint32_t value)
{
    uint32_t v;
    long deadline = 0;
    for (int i = 0;; i++) {
        if ((v = atomic_load_explicit(word, memory_order_acquire)) != value) return v;
        if ((i & 63) == 63) {
            long t = now_ns();
            if (!deadline) deadline = t + SPIN_NS;
            else if (t >= deadline) break;
        }
        cpu_relax();
    }
    while ((v = atomic_load(word)) == value) {
        atomic_fetch_add(&p->sleepers, 1);
        sleep_on(p, word, value);
        atomic_fetch_sub(&p->sleepers, 1);
    }
    return v;
}

static void *worker(void *arg)
{
    bump_pool *p = ((worker_arg *)arg)->pool;
    int ith = ((worker_arg *)arg)->ith;
    free(arg);
    uint32_t seen = 0;
    for (;;) {
        seen = wait_change(p, &p->generation, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        p->fn(p->ctx, ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->sleepers))
            wake_all(p, &p->pending);
    }
}

/* Tell the workers a new generation (work or stop) is published. */
static void publish(bump_pool *p)
{
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers)) wake_all(p, &p->generation);
}

bump_pool *bump_pool_create(int n_threads)
{
    if (n_threads < 1) return NULL;
    bump_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->owner = getpid();
#ifndef __linux__
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
#endif
    if (n_threads == 1) return p;
    p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
    if (!p->threads) goto fail;
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) goto fail;
        *a = (worker_arg){p, i};
        if (pthread_create(&p->threads[i - 1], NULL, worker, a)) {
            free(a);
            goto fail;
        }
        p->started++;
    }
    return p;
fail:
    bump_pool_destroy(p);
    return NULL;
}

void bump_pool_destroy(bump_pool *p)
{
    if (!p) return;
    if (p->started && getpid() == p->owner) {
        atomic_store_explicit(&p->stop, 1, memory_order_release);
        publish(p);
        for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    }
#ifndef __linux__
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
#endif
    free(p->threads);
    free(p);
}

int bump_pool_threads(const bump_pool *p) { return p->n; }

void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx)
{
    if (p->n == 1 || getpid() != p->owner) {
        for (int i = 0; i < p->n; i++) fn(ctx, i, p->n);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
    publish(p);
    fn(ctx, 0, p->n);
    uint32_t left = atomic_load_explicit(&p->pending, memory_order_acquire);
    while (left) left = wait_change(p, &p->pending, left);
}
