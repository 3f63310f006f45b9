/* pool.h - the runtime's thread pool: run one function over a range of items on n threads.
 *
 * Why not OpenMP: libgomp's default barrier spins for ~300k iterations before sleeping, which
 * collapses when another process takes a core (a waiting thread burns the time slice of the
 * thread it waits for), and a short spin costs 2-20 % of decode on an idle machine. This pool
 * spins briefly, then sleeps on a futex; see pool.c for the measured policy.
 *
 * bump_pool_run(p, fn, ctx, total, chunk) cuts items [0, total) into chunks of `chunk` items;
 * every chunk runs once, as fn(ctx, begin, end, tid), on whichever thread claims it first. The
 * caller (tid 0) claims chunks from the start and returns once every chunk has run: it never
 * waits for a worker that has not woken up or was preempted before claiming (it runs those
 * chunks itself), only for chunks already running. tid (< bump_pool_threads) names the thread
 * for per-thread scratch; which thread runs a chunk must not change its result. Calls are not
 * reentrant (fn must not call bump_pool_run on the same pool), and one pool serves one caller at
 * a time. A pool of one thread, or one used in a forked child (its workers stayed in the parent),
 * runs fn(ctx, 0, total, 0) on the calling thread.
 */
#ifndef BUMP_POOL_H
#define BUMP_POOL_H

typedef struct bump_pool bump_pool;
typedef void (*bump_pool_fn)(void *ctx, long begin, long end, int tid);

/* NULL on failure (out of memory, thread creation failed). n_threads >= 1. */
bump_pool *bump_pool_create(int n_threads);
void bump_pool_destroy(bump_pool *p);
int bump_pool_threads(const bump_pool *p);
void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx, long total, long chunk);

#endif
