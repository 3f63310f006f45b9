/* pool.c - the runtime's thread pool (pool.h).
 *
 * One call of bump_pool_run publishes a word `claim` = (tag, chunks, next chunk) and bumps the
 * `generation` counter the workers wait on. Every thread, the caller first, then claims chunks
 * by compare-and-swap on `claim` (next + 1) until none is left, and counts the chunks it
 * finishes in `done`; the caller returns once `done` reaches the number of chunks. A worker that
 * wakes late finds nothing left and waits again, so a preempted or sleeping worker delays a call
 * only by a chunk it had already claimed. The tag (incremented per call) makes a stale worker's
 * compare-and-swap fail, and the call's fields (fn, ctx, total, chunk) are read only after a
 * successful claim: the caller cannot rewrite them before that chunk is done.
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
 * created it runs the whole range on the calling thread (the same results).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

/* How long a waiting thread spins before it sleeps (-DSPIN_NS=... to measure others), and how
 * long while it has not been preempted for CALM_NS (Linux: its involuntary context switches).
 * A long spin is what an idle machine wants (a sleeping thread's wake-up, on a VM, can cost
 * more than a step: SmolLM2 fp32 decode 51 tok/s at 50 us, 57 at 1 ms, as libgomp's default);
 * a short one is what a contended machine wants (1 ms: busy decode 30 -> 22 tok/s), and a
 * thread that was just preempted is on a contended machine. */
#ifndef SPIN_NS
#define SPIN_NS 50000L
#endif
#ifndef LONG_SPIN_NS
#define LONG_SPIN_NS 1000000L
#endif
#ifndef CALM_NS
#define CALM_NS 200000000L
#endif

/* claim = tag << 32 | chunks << 16 | next: up to MAX_CHUNKS chunks per call */
#define MAX_CHUNKS 0xffffL

struct bump_pool {
    int n;
    pid_t owner;                  /* the process whose threads these are */
    pthread_t *threads;           /* [n - 1] */
    int started;                  /* threads actually created */
    uint32_t tag;                 /* the caller's: the current call's tag */
    bump_pool_fn fn;              /* the current call, read after a successful claim */
    void *ctx;
    long total, chunk;
    _Atomic uint64_t claim;
    _Atomic uint32_t generation;  /* futex word of the workers: bumped per call (and at stop) */
    _Atomic uint32_t done;        /* futex word of the caller: chunks finished */
    _Atomic int sleepers;         /* threads asleep (or about to be) on either word */
    _Atomic int stop;
#ifndef __linux__
    pthread_mutex_t lock;
    pthread_cond_t cond;
#endif
};

typedef struct {
    bump_pool *pool;
    int tid;
} worker_arg;

/* A thread's view of whether the machine is contended: its involuntary context switches as
 * last read, and when they last went up. */
typedef struct {
    long nivcsw;
    long preempted_ns;
} calm_state;

static _Thread_local calm_state calm = {0, 0};

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

/* Whether this thread has gone CALM_NS without being preempted (read only once a spin has
 * lasted SPIN_NS: one system call per long wait, none per short one). */
static int machine_calm(long t)
{
#if defined(__linux__) && defined(RUSAGE_THREAD)
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
    if (ru.ru_nivcsw != calm.nivcsw || !calm.preempted_ns) {
        calm.nivcsw = ru.ru_nivcsw;
        calm.preempted_ns = t;
    }
    return t - calm.preempted_ns >= CALM_NS;
#else
    (void)t;
    return 0;
#endif
}

/* Wait until *word != value: spin for SPIN_NS (LONG_SPIN_NS on a calm machine), then sleep.
 * Returns the new value. */
static uint32_t wait_change(bump_pool *p, _Atomic uint32_t *word, uint32_t value)
{
    uint32_t v;
    long start = 0, deadline = 0;
    int extended = 0;
    for (int i = 0;; i++) {
        if ((v = atomic_load_explicit(word, memory_order_acquire)) != value) return v;
        if ((i & 63) == 63) {
            long t = now_ns();
            if (!start) {
                start = t;
                deadline = t + SPIN_NS;
            } else if (t >= deadline) {
                if (extended || !machine_calm(t)) break;
                extended = 1;
                deadline = start + LONG_SPIN_NS;
            }
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

/* Claim and run chunks of the current call until none is left. */
static void run_chunks(bump_pool *p, int tid)
{
    uint64_t v = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        const uint32_t next = (uint32_t)(v & 0xffff), chunks = (uint32_t)(v >> 16 & 0xffff);
        if (next >= chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        const long begin = (long)next * p->chunk;
        p->fn(p->ctx, begin, begin + p->chunk < p->total ? begin + p->chunk : p->total, tid);
        if (atomic_fetch_add(&p->done, 1) + 1 == chunks && atomic_load(&p->sleepers))
            wake_all(p, &p->done);
        v = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *worker(void *arg)
{
    bump_pool *p = ((worker_arg *)arg)->pool;
    int tid = ((worker_arg *)arg)->tid;
    free(arg);
    for (;;) {
        const uint32_t seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_chunks(p, tid);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        wait_change(p, &p->generation, seen);
    }
}

/* Tell the workers a new call (or stop) is published. */
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

void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx, long total, long chunk)
{
    if (total <= 0) return;
    if (chunk < 1) chunk = 1;
    if (p->n == 1 || total <= chunk || getpid() != p->owner) {
        fn(ctx, 0, total, 0);
        return;
    }
    if ((total + chunk - 1) / chunk > MAX_CHUNKS) chunk = (total + MAX_CHUNKS - 1) / MAX_CHUNKS;
    const uint32_t chunks = (uint32_t)((total + chunk - 1) / chunk);
    p->fn = fn;
    p->ctx = ctx;
    p->total = total;
    p->chunk = chunk;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    p->tag++;
    atomic_store_explicit(&p->claim, (uint64_t)p->tag << 32 | (uint64_t)chunks << 16,
                          memory_order_release);
    publish(p);
    run_chunks(p, 0);
    uint32_t finished = atomic_load_explicit(&p->done, memory_order_acquire);
    while (finished != chunks) finished = wait_change(p, &p->done, finished);
}
