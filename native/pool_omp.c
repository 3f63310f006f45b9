/* pool_omp.c - pool.h on OpenMP, for bench/bench_pool.py only (`build_ffi.py --variant openmp`).
 *
 * The runtime the package ships uses pool.c. This file lets the benchmark build the same
 * sources with libgomp's threads instead, so that "pool vs OpenMP" compares thread mechanisms
 * and nothing else (kernels, scheduling of work over threads and results are identical: every
 * region still splits its work with bump_pool_range over the threads it actually got).
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

void bump_pool_run(bump_pool *p, bump_pool_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
#pragma omp parallel num_threads(p->n)
    fn(ctx, omp_get_thread_num(), omp_get_num_threads());
}
