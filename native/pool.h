/* pool.h - the runtime's thread pool: run one function on n threads and wait for all of them.
 *
 * Why not OpenMP: libgomp's default barrier spins for ~300k iterations before sleeping, which
 * collapses when another process takes a core (a waiting thread burns the time slice of the
 * thread it waits for), and a short spin costs 2-20 % of decode on an idle machine. This pool
 * spins briefly, then sleeps on a futex; see pool.c for the measured policy.
 *
 * The caller is worker 0: bump_pool_run(p, fn, ctx) calls fn(ctx, 0, n) on the calling thread and
 * fn(ctx, i, n) on worker i for 0 < i < n, and returns once every call has returned. Calls are
 * not reentrant (fn must not call bump_pool_run on the same pool), and one pool serves one caller
 * at a time. A pool of one thread runs fn inline; so does a pool used in a forked child (its
 * workers stayed in the parent): fn(ctx, i, n) for every i in turn, the same results.
 */
#ifndef BUMP_POOL_H
#define BUMP_POOL_H

typedef struct bump_pool bump_pool;
typedef void (*bump_pool_fn)(void *ctx, int ith, int nth);

/* NULL on failure (out of memory, thread creation failed). n_threads >= 1. */
bump_pool *bump_pool_create(int n_threads);
void bump_pool_destroy(bump_pool *p);
int bump_pool_threads(const bump_pool *p);
void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx);

/* [*begin, *end) of `total` items for worker ith of nth: contiguous, balanced to within one. */
static inline void bump_pool_range(long total, int ith, int nth, long *begin, long *end)
{
    *begin = total * ith / nth;
    *end = total * (ith + 1) / nth;
}

#endif
