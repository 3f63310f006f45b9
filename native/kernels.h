/* kernels.h - the hot loops of the runtime: matrix products over fp32 or ggml-quantized weights
 * (a blocked GEMM for prefill, a GEMV for decode) and the two inner loops of attention.
 *
 * One source (kernels_impl.h) is compiled once per instruction-set level (kernels_portable.c,
 * kernels_avx2.c, kernels_avxvnni.c, kernels_avx512.c, kernels_avx512vnni.c: each sets its
 * target with #pragma GCC target), and the level is chosen at run time from what the CPU
 * supports (BUMPCONV_KERNELS overrides): a build made on one machine runs at full speed on
 * another. Which weight dtypes a level reads, and with which kernels, is its type-traits table
 * (kernels_impl.h). This layer knows matrices, views and levels, never a model or a file:
 * nothing here includes bump.h.
 */
#ifndef BUMP_KERNELS_H
#define BUMP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* Weights are memory-mapped at whatever byte offset the file puts them (bump files do not align
 * tensors), so every access to fp32 weights goes through this 1-byte-aligned float type. */
typedef float ufloat __attribute__((aligned(1)));

/* A weight matrix W[N][K] (y = x W^T) of dtype `dtype` (enum bump_dtype) seen through the packed
 * layout: element (n, k) is element number
 *   (n / n_seg) * n_seg_stride + (n % n_seg) * ld + (k / k_seg) * k_seg_stride + k % k_seg
 * of the tensor at `base`, so per-head blocks (wq [H][AD][AE], wo [H][AE][AD]) and the stacked
 * gate/up halves of w1 are read in place, without touching their padding. Strides count
 * elements; for a block type they (and k_seg, unless it spans K) are whole blocks, so every row
 * piece a kernel reads starts on a block (validate.h checks this before a view gets here). */
typedef struct {
    int32_t dtype;
    const void *base;
    size_t ld;
    int32_t n_seg;
    size_t n_seg_stride;
    int32_t k_seg;
    size_t k_seg_stride;
} bump_wmat;

typedef struct bump_kernel_level bump_kernel_level;

/* Scratch for one model's products: the level's kernels, the threads, and per thread the packed
 * activations and one weight panel. floats_per_thread >= bump_gemm_scratch_floats(level, M, K)
 * for every M and K the caller passes (the int8 GEMM packs a panel over the whole of K). */
typedef struct {
    const bump_kernel_level *level;
    float *pack;
    size_t floats_per_thread;
    bump_pool *pool;
    int int8_activations; /* products over quantized weights on int8 activations (kernels_int8.h) */
} bump_gemm_scratch;

/* One product of a matmul call: out[m][n] = sum_k in[m][k] * W(n, k) for n < N; out has row
 * stride ldc. */
typedef struct {
    bump_wmat w;
    int32_t N;
    float *out;
    size_t ldc;
} bump_matmul_job;

#define BUMP_MAX_JOBS 4

/* The level BUMPCONV_KERNELS names, else the best this CPU supports; NULL (and a message in
 * err) when the variable names an unknown level or one the CPU lacks. */
const bump_kernel_level *bump_kernels_select(char *err, size_t len);
const char *bump_kernels_name(const bump_kernel_level *level);
size_t bump_gemm_scratch_floats(const bump_kernel_level *level, int M, int K);

/* Up to BUMP_MAX_JOBS products of the same input in[M][K] (row stride lda) in one parallel
 * region (Q, K and V share their input): activations are packed once, the weight panels of all
 * jobs are split over the threads together. M == 1 takes the GEMV path. Quantized weights are
 * dequantized exactly as ggml's dequantize_row_* does, so the result equals the product with
 * the dequantized fp32 matrix up to the order of the fp32 sums. */
void bump_matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s);

/* Row n of W as K fp32 values (an embedding lookup in a quantized table). */
void bump_wmat_row(const bump_kernel_level *level, const bump_wmat *w, int n, int K, float *out);

/* Attention for one query: s[t] = scale * sum_d q[d] * kt[d * ldk + t] for t < n (keys stored
 * transposed, one row per component, so a vector holds the scores of consecutive keys). */
void bump_scores(const bump_kernel_level *level, const float *q, int D, const float *kt,
                 size_t ldk, int n, float scale, float *s);
/* out[c] = sum_t p[t] * v[t * ldv + c] for c < D: the probability-weighted sum of n values. */
void bump_weighted_sum(const bump_kernel_level *level, const float *p, const float *v,
                       size_t ldv, int n, int D, float *out);

/* o[j] = silu(g[j]) * u[j] for j < n (the MLP's SwiGLU), with a vectorized exp. */
void bump_swiglu(const bump_kernel_level *level, const float *g, const float *u, int n, float *o);
/* o[j] = gelu_tanh(g[j]) * u[j] for j < n (Gemma's GeGLU: torch's fp32 gelu(approximate="tanh")
 * operation for operation), with a vectorized tanh. */
void bump_geglu(const bump_kernel_level *level, const float *g, const float *u, int n, float *o);
/* x[i] = tanh(x[i] / cap) * cap for i < n (the final logit soft-cap). */
void bump_softcap(const bump_kernel_level *level, float *x, size_t n, float cap);
/* s[t] = exp(s[t] - mx) for t < n, returning their sum (the softmax's numerators). */
float bump_exp_sum(const bump_kernel_level *level, float *s, int n, float mx);

/* Whether bump_matmul at this level reads weights of `dtype` (enum bump_dtype), and whether a
 * product of M activation rows over them runs on int8 activations when the scratch asks for
 * them (the level's type-traits table answers both). */
int bump_kernel_reads(const bump_kernel_level *level, int32_t dtype);
int bump_kernel_int8_reads(const bump_kernel_level *level, int32_t dtype, int M);

/* ---- the per-level implementations (kernels_impl.h), for kernels.c only ------------------- */
struct bump_kernel_level {
    const char *name;        /* BUMPCONV_KERNELS value */
    const char *detail;      /* vector width, micro-kernel */
    int (*supported)(void);
    size_t (*scratch_floats)(int M, int K);
    int (*reads)(int32_t dtype);
    int (*int8_reads)(int32_t dtype, int M);
    void (*swiglu)(const float *g, const float *u, int n, float *o);
    void (*geglu)(const float *g, const float *u, int n, float *o);
    void (*softcap)(float *x, size_t n, float cap);
    float (*exp_sum)(float *s, int n, float mx);
    void (*matmul)(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                   int K, const bump_gemm_scratch *s);
    void (*row)(const bump_wmat *w, int n, int K, float *out);
    void (*scores)(const float *q, int D, const float *kt, size_t ldk, int n, float scale,
                   float *s);
    void (*weighted_sum)(const float *p, const float *v, size_t ldv, int n, int D, float *out);
};

extern const bump_kernel_level bump_level_portable, bump_level_avx2, bump_level_avxvnni,
    bump_level_avx512, bump_level_avx512vnni;

#endif
