/* pool.c - the runtime's thread pool (pool.h).
 *
 * A call of bump_pool_run cuts its range into chunks. Chunk t < n (n threads) is thread t's own
 * (a static split: a decode GEMV is one chunk per thread): thread t takes it by a
 * compare-and-swap on its own cache line, slot[t], from an older call's tag to this call's, so
 * on time it touches no line another thread writes. The chunks past the first n go to whichever
 * thread asks first, through one shared word `claim` = (tag, chunks, next chunk). Every thread
 * counts the chunks it finishes in `done`; the caller returns once `done` reaches the number of
 * chunks. A thread that is late (asleep when the call was published, preempted, or just slower
 * than a short grace) has its chunk taken by the caller: the caller claims slot[t] itself and
 * runs the chunk, and the late thread's compare-and-swap then fails. So the caller never waits
 * for a worker that has not started, only for chunks already running. A call is published by
 * writing its fields and then `call` = (tag, chunks) and the `generation` counter the workers
 * wait on, all on one cache line the workers only read; a call's fields are read only after a
 * successful claim of one of its chunks (the caller cannot finish that call, nor so rewrite
 * them, before that chunk is done). The tags only grow, 48 bits of them: no wrap-around.
 *
 * Measured against the previous pool, where every chunk was claimed through the one shared
 * word and every field lived on two shared cache lines: see docs/runtime.md (Threads).
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
#include <string.h>
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

/* How long the caller, its own chunks done, waits for a worker that was awake when the call was
 * published before it takes that worker's chunk if not yet started (a worker that slept then
 * has its chunk taken at once). */
#ifndef GRACE_NS
#define GRACE_NS 2000L
#endif

/* claim = tag << 32 | chunks << 16 | next, call = tag << 16 | chunks: up to MAX_CHUNKS chunks */
#define MAX_CHUNKS 0xffffL
#define LINE 64

/* Thread t's claim on chunk t: the tag of the last call whose chunk t was claimed. */
typedef struct {
    _Alignas(LINE) _Atomic uint64_t tag;
} slot;

struct bump_pool {
    int n;
    pid_t owner;                  /* the process whose threads these are */
    pthread_t *threads;           /* [n - 1] */
    int started;                  /* threads actually created */
    uint64_t tag;                 /* the caller's: the current call's tag */
    slot *slots;                  /* [n], each on its own line */
    /* the current call: written by the caller, read by the workers */
    _Alignas(LINE) bump_pool_fn fn; /* read after a successful claim */
    void *ctx;
    long total, chunk;
    _Atomic uint64_t call;        /* tag << 16 | chunks */
    _Atomic uint32_t generation;  /* futex word of the workers: bumped per call (and at stop) */
    _Atomic int stop;
    _Alignas(LINE) _Atomic uint64_t claim; /* the chunks from n on */
    _Alignas(LINE) _Atomic uint32_t done;  /* futex word of the caller: chunks finished */
    _Alignas(LINE) _Atomic int sleepers;   /* threads asleep (or about to be) on either word */
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

/* Chunk `c` of the current call, on thread `tid`, and its count in `done`. */
static void run_one(bump_pool *p, long c, uint32_t chunks, int tid)
{
    const long begin = c * p->chunk;
    p->fn(p->ctx, begin, begin + p->chunk < p->total ? begin + p->chunk : p->total, tid);
    if (atomic_fetch_add(&p->done, 1) + 1 == chunks && atomic_load(&p->sleepers))
        wake_all(p, &p->done);
}

/* Chunk t (< n) of call `tag`, on thread `tid`, if nobody has claimed it yet; 1 if it ran here. */
static int run_static(bump_pool *p, int t, uint64_t tag, uint32_t chunks, int tid)
{
    uint64_t seen = atomic_load_explicit(&p->slots[t].tag, memory_order_relaxed);
    if (seen >= tag ||
        !atomic_compare_exchange_strong_explicit(&p->slots[t].tag, &seen, tag,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return 0;
    run_one(p, t, chunks, tid);
    return 1;
}

/* Claim and run the chunks past the first n of the current call until none is left. */
static void run_shared(bump_pool *p, int tid)
{
    uint64_t v = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        const uint32_t next = (uint32_t)(v & 0xffff), chunks = (uint32_t)(v >> 16 & 0xffff);
        if (next >= chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        run_one(p, next, chunks, tid);
        v = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

/* The caller: every chunk below n nobody has claimed yet. */
static void take_unclaimed(bump_pool *p, uint64_t tag, uint32_t chunks)
{
    const int statics = chunks < (uint32_t)p->n ? (int)chunks : p->n;
    for (int t = 1; t < statics; t++) run_static(p, t, tag, chunks, 0);
}

static void *worker(void *arg)
{
    bump_pool *p = ((worker_arg *)arg)->pool;
    int tid = ((worker_arg *)arg)->tid;
    free(arg);
    for (;;) {
        const uint32_t seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        const uint64_t call = atomic_load_explicit(&p->call, memory_order_acquire);
        const uint32_t chunks = (uint32_t)(call & 0xffff);
        if ((uint32_t)tid < chunks) run_static(p, tid, call >> 16, chunks, tid);
        run_shared(p, tid);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        wait_change(p, &p->generation, seen);
    }
}

/* Tell the workers a new call (or stop) is published; whether one of them was asleep. */
static int publish(bump_pool *p)
{
    atomic_fetch_add(&p->generation, 1);
    if (!atomic_load(&p->sleepers)) return 0;
    wake_all(p, &p->generation);
    return 1;
}

bump_pool *bump_pool_create(int n_threads)
{
    if (n_threads < 1) return NULL;
    const size_t bytes = (sizeof(bump_pool) + LINE - 1) / LINE * LINE; /* its lines aligned */
    bump_pool *p = aligned_alloc(LINE, bytes);
    if (!p) return NULL;
    memset(p, 0, bytes);
    p->n = n_threads;
    p->owner = getpid();
    p->slots = aligned_alloc(LINE, (size_t)n_threads * sizeof(slot));
    if (!p->slots) {
        free(p);
        return NULL;
    }
    for (int t = 0; t < n_threads; t++) atomic_init(&p->slots[t].tag, 0);
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
    free(p->slots);
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
    const uint32_t statics = chunks < (uint32_t)p->n ? chunks : (uint32_t)p->n;
    const uint64_t tag = ++p->tag;
    p->fn = fn;
    p->ctx = ctx;
    p->total = total;
    p->chunk = chunk;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->claim, (tag & 0xffffffff) << 32 | (uint64_t)chunks << 16 | statics,
                          memory_order_release);
    atomic_store_explicit(&p->call, tag << 16 | chunks, memory_order_release);
    const int late = publish(p);
    run_static(p, 0, tag, chunks, 0);
    run_shared(p, 0);
    uint32_t finished = atomic_load_explicit(&p->done, memory_order_acquire);
    if (finished != chunks && !late) { /* the workers were awake: give them a moment */
        const long deadline = now_ns() + GRACE_NS;
        for (int i = 1; finished != chunks; i++) {
            cpu_relax();
            finished = atomic_load_explicit(&p->done, memory_order_acquire);
            if ((i & 15) == 0 && now_ns() >= deadline) break;
        }
    }
    if (finished != chunks) take_unclaimed(p, tag, chunks);
    finished = atomic_load_explicit(&p->done, memory_order_acquire);
    while (finished != chunks) finished = wait_change(p, &p->done, finished);
}
