/* probe.c - the entry points of probe.h: each selects the level as bump_open does and calls
 * the kernels' API (kernels.h) the way bump.c does. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "probe.h"

#include <stdlib.h>

#include "bump.h"
#include "kernels.h"
#include "pool.h"
#include "quant.h"
#include "status.h"
#include "validate.h"

const char *bump_kernel_name(void)
{
    char err[160];
    const bump_kernel_level *level = bump_kernels_select(err, sizeof err);
    return level ? bump_kernels_name(level) : "none (BUMPCONV_KERNELS names no usable level)";
}

int32_t bump_int8_products(int32_t dtype, int32_t M)
{
    char err[160];
    const bump_kernel_level *level = bump_kernels_select(err, sizeof err);
    return level && M >= 1 ? bump_kernel_int8_reads(level, dtype, M) : 0;
}

int bump_swiglu_rows(const float *g, const float *u, int32_t n, float *o, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    bump_swiglu(level, g, u, n, o);
    return BUMP_OK;
}

int bump_geglu_rows(const float *g, const float *u, int32_t n, float *o, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    bump_geglu(level, g, u, n, o);
    return BUMP_OK;
}

int bump_softcap_rows(float *x, int64_t n, float cap, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    if (n < 0) return bump_fail(err, len, BUMP_ERR_INPUT, "bump_softcap_rows: n < 0");
    bump_softcap(level, x, (size_t)n, cap);
    return BUMP_OK;
}

float bump_exp_sum_rows(float *s, int32_t n, float mx, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    return level ? bump_exp_sum(level, s, n, mx) : -1.0f;
}

int bump_matmul_view(int32_t dtype, const void *w, int64_t numel, int64_t ld, int64_t row_seg,
                     int64_t row_seg_stride, int64_t col_seg, int64_t col_seg_stride, int32_t N,
                     int32_t K, const float *in, int32_t M, float *out, int32_t n_threads,
                     int32_t int8_activations, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    if (!bump_kernel_reads(level, dtype) || N < 1 || K < 1 || M < 1 || n_threads < 1 ||
        n_threads > BUMP_MAX_THREADS || !w || !in || !out)
        return bump_fail(err, len, BUMP_ERR_INPUT, "bump_matmul_view: bad arguments");
    const int64_t be = bump_block_elems(dtype);
    if (numel < 1 || numel % be)
        return bump_fail(err, len, BUMP_ERR_INPUT, "bump_matmul_view: %lld elements are not "
                         "whole blocks of %lld", (long long)numel, (long long)be);
    const bump_tensor t = {.dtype = dtype, .numel = numel, .rows = N, .cols = K, .ld = ld,
                           .row_seg = row_seg, .row_seg_stride = row_seg_stride,
                           .col_seg = col_seg, .col_seg_stride = col_seg_stride};
    int rc = bump_check_view(&t, be, BUMP_ERR_INPUT, "bump_matmul_view", err, len);
    if (rc) return rc;
    bump_gemm_scratch s = {.level = level, .pool = bump_pool_create(n_threads),
                           .int8_activations = int8_activations != 0};
    s.floats_per_thread = bump_gemm_scratch_floats(level, M, K);
    void *pack = NULL; /* the panels are read with aligned vector loads */
    if (!s.pool ||
        posix_memalign(&pack, 64, s.floats_per_thread * (size_t)n_threads * sizeof(float))) {
        bump_pool_destroy(s.pool);
        return bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory");
    }
    s.pack = pack;
    bump_matmul_job job = {.w = bump_view_of(&t, w), .N = N, .out = out, .ldc = (size_t)N};
    bump_matmul(&job, 1, in, (size_t)K, M, K, &s);
    free(s.pack);
    bump_pool_destroy(s.pool);
    return BUMP_OK;
}
