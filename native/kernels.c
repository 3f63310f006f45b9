/* kernels.c - which level of the kernels runs (kernels_impl.h, compiled per level), and the
 * calls bump.c makes through it.
 *
 * The best level this CPU supports is chosen when a model is opened; BUMPCONV_KERNELS=NAME
 * forces one (for tests, and to compare levels on one machine). An unknown name or a level
 * the CPU lacks is an error, never a silent fallback.
 */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "kernels.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "bump.h"
#include "quant.h"

/* Best first. */
static const bump_kernel_level *const LEVELS[] = {&bump_level_avx512vnni, &bump_level_avx512,
                                                  &bump_level_avxvnni, &bump_level_avx2,
                                                  &bump_level_portable};
#define N_LEVELS (sizeof LEVELS / sizeof LEVELS[0])

static const bump_kernel_level *refuse(char *err, size_t len, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

const bump_kernel_level *bump_kernels_select(char *err, size_t len)
{
    const char *want = getenv("BUMPCONV_KERNELS");
    if (want == NULL || *want == '\0') {
        for (size_t i = 0; i < N_LEVELS; i++)
            if (LEVELS[i]->supported()) return LEVELS[i];
        return &bump_level_portable; /* unreachable: portable is always supported */
    }
    for (size_t i = 0; i < N_LEVELS; i++) {
        if (strcmp(want, LEVELS[i]->name) != 0) continue;
        if (!LEVELS[i]->supported())
            return refuse(err, len, "BUMPCONV_KERNELS=%s: this CPU does not support the %s "
                          "kernels", want, want);
        return LEVELS[i];
    }
    return refuse(err, len, "BUMPCONV_KERNELS=%.40s: unknown kernel level (known: avx512-vnni, "
                  "avx512, avx2-vnni, avx2, portable)", want);
}

const char *bump_kernels_name(const bump_kernel_level *level)
{
    static char names[N_LEVELS][96];
    for (size_t i = 0; i < N_LEVELS; i++)
        if (LEVELS[i] == level) {
            if (!names[i][0])
                snprintf(names[i], sizeof names[i], "%s (%s)", level->name, level->detail);
            return names[i];
        }
    return "?";
}

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

int bump_kernel_reads(const bump_kernel_level *level, int32_t dtype)
{
    return level->reads(dtype);
}

int bump_kernel_int8_reads(const bump_kernel_level *level, int32_t dtype, int M)
{
    return level->int8_reads(dtype, M);
}

size_t bump_gemm_scratch_floats(const bump_kernel_level *level, int M, int K)
{
    return level->scratch_floats(M, K);
}

void bump_matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s)
{
    s->level->matmul(jobs, njobs, in, lda, M, K, s);
}

void bump_wmat_row(const bump_kernel_level *level, const bump_wmat *w, int n, int K, float *out)
{
    level->row(w, n, K, out);
}

void bump_scores(const bump_kernel_level *level, const float *q, int D, const float *kt,
                 size_t ldk, int n, float scale, float *s)
{
    level->scores(q, D, kt, ldk, n, scale, s);
}

void bump_weighted_sum(const bump_kernel_level *level, const float *p, const float *v,
                       size_t ldv, int n, int D, float *out)
{
    level->weighted_sum(p, v, ldv, n, D, out);
}

void bump_swiglu(const bump_kernel_level *level, const float *g, const float *u, int n, float *o)
{
    level->swiglu(g, u, n, o);
}

float bump_exp_sum(const bump_kernel_level *level, float *s, int n, float mx)
{
    return level->exp_sum(s, n, mx);
}

int bump_swiglu_rows(const float *g, const float *u, int32_t n, float *o, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    level->swiglu(g, u, n, o);
    return BUMP_OK;
}

float bump_exp_sum_rows(float *s, int32_t n, float mx, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    return level ? level->exp_sum(s, n, mx) : -1.0f;
}

int bump_matmul_view(int32_t dtype, const void *w, int64_t numel, int64_t ld, int64_t row_seg,
                     int64_t row_seg_stride, int64_t col_seg, int64_t col_seg_stride, int32_t N,
                     int32_t K, const float *in, int32_t M, float *out, int32_t n_threads,
                     int32_t int8_activations, char *err, size_t len)
{
    const bump_kernel_level *level = bump_kernels_select(err, len);
    if (!level) return BUMP_ERR_INPUT;
    const int64_t be = bump_block_elems(dtype);
    if (!bump_kernel_reads(level, dtype) || be <= 0 || N < 1 || K < 1 || M < 1 || n_threads < 1 ||
        row_seg < 1 || col_seg < 1 || ld < 0 || row_seg_stride < 0 || col_seg_stride < 0 ||
        !w || !in || !out) {
        refuse(err, len, "bump_matmul_view: bad arguments");
        return BUMP_ERR_INPUT;
    }
    const int64_t reach = (int64_t)(N - 1) / row_seg * row_seg_stride +
                          (int64_t)((N - 1) % row_seg) * ld + (int64_t)(K - 1) / col_seg *
                          col_seg_stride + (K - 1) % col_seg;
    if (reach >= numel || numel % be || K % be || ld % be || row_seg_stride % be ||
        col_seg_stride % be || (col_seg < K && col_seg % be)) {
        refuse(err, len, "bump_matmul_view: the view leaves the buffer or splits a block");
        return BUMP_ERR_INPUT;
    }
    if (col_seg > K) col_seg = K; /* one segment spans the row either way */
    if (row_seg > N) row_seg = N;
    bump_gemm_scratch s = {.level = level, .pool = bump_pool_create(n_threads),
                           .int8_activations = int8_activations != 0};
    s.floats_per_thread = bump_gemm_scratch_floats(level, M, K);
    void *pack = NULL; /* the panels are read with aligned vector loads */
    if (!s.pool ||
        posix_memalign(&pack, 64, s.floats_per_thread * (size_t)n_threads * sizeof(float))) {
        bump_pool_destroy(s.pool);
        refuse(err, len, "out of memory");
        return BUMP_ERR_NOMEM;
    }
    s.pack = pack;
    bump_matmul_job job = {.w = {.dtype = dtype, .base = w, .ld = (size_t)ld,
                                 .n_seg = (int32_t)row_seg, .n_seg_stride = (size_t)row_seg_stride,
                                 .k_seg = (int32_t)col_seg, .k_seg_stride = (size_t)col_seg_stride},
                           .N = N, .out = out, .ldc = (size_t)N};
    bump_matmul(&job, 1, in, (size_t)K, M, K, &s);
    free(s.pack);
    bump_pool_destroy(s.pool);
    return BUMP_OK;
}
