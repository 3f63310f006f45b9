/* pool_omp.c - pool.h on OpenMP, for bench/bench_pool.py only (`build_ffi.py --variant openmp`).
 *
 * The runtime the package ships uses pool.c. This file lets the benchmark build the same
 * sources with libgomp's threads instead, so that "pool vs OpenMP" compares thread mechanisms
 * and nothing else (kernels and results are identical, and the chunks are handed out the same
 * way: to whichever thread is free, schedule(dynamic)).
 */
#include "pool.h"

#include <omp.h>
#include <stdlib.h>

struct bump_pool {
    int n;
};

bump_pool *bump_pool_create(int n_threads)
{
    bump_pool *p = malloc(sizeof *p);
    if (p) p->n = n_threads;
    return p;
}

void bump_pool_destroy(bump_pool *p) { free(p); }

int bump_pool_threads(const bump_pool *p) { return p->n; }

void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx, long total, long chunk)
{
    if (total <= 0) return;
    if (chunk < 1) chunk = 1;
    if (p->n == 1 || total <= chunk) {
        fn(ctx, 0, total, 0);
        return;
    }
    const long chunks = (total + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(p->n)
    for (long c = 0; c < chunks; c++)
        fn(ctx, c * chunk, c * chunk + chunk < total ? c * chunk + chunk : total,
           omp_get_thread_num());
}
