/* kernels.h - the two hot loops of the runtime: a blocked SGEMM (prefill) and a GEMV (decode),
 * plus the small vector helpers attention uses.
 *
 * The vector width follows the compile target (GCC vector extensions): 16 floats with AVX-512,
 * 8 with AVX, 4 otherwise (SSE2, NEON, or scalar code the compiler lowers). The only intrinsics
 * are the fused multiply-adds, used when the target has FMA. One source serves every build.
 */
#ifndef BUMP_KERNELS_H
#define BUMP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Weights are memory-mapped at whatever byte offset the file puts them (bump files do not align
 * tensors), so every access to them goes through this 1-byte-aligned float type. */
typedef float ufloat __attribute__((aligned(1)));

/* A weight matrix W[N][K] (y = x W^T) seen through the packed layout: element (n, k) lives at
 *   base + (n / n_seg) * n_seg_stride + (n % n_seg) * ld + (k / k_seg) * k_seg_stride + k % k_seg
 * so per-head blocks (wq [H][AD][AE], wo [H][AE][AD]) and the stacked gate/up halves of w1 are
 * read in place, without ever touching their zero padding. Strides count floats. */
typedef struct {
    const ufloat *base;
    size_t ld;
    int32_t n_seg;
    size_t n_seg_stride;
    int32_t k_seg;
    size_t k_seg_stride;
} bump_wmat;

/* Scratch for the SGEMM: per thread, the packed activations and one packed weight panel;
 * floats_per_thread >= bump_gemm_scratch_floats(M) for every M the caller passes. */
typedef struct {
    float *pack;
    size_t floats_per_thread;
    int n_threads;
} bump_gemm_scratch;

size_t bump_gemm_scratch_floats(int M);

/* One product of a matmul call: out[m][n] = sum_k in[m][k] * W(n, k) for n < N; out has row
 * stride ldc. */
typedef struct {
    bump_wmat w;
    int32_t N;
    float *out;
    size_t ldc;
} bump_matmul_job;

#define BUMP_MAX_JOBS 4

/* Up to BUMP_MAX_JOBS products of the same input in[M][K] (row stride lda) in one parallel
 * region (Q, K and V share their input): the activations are packed once, the weight panels
 * of all jobs are split over the threads together. M == 1 takes the GEMV path. */
void bump_matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s);

/* Attention for one query: s[t] = scale * sum_d q[d] * kt[d * ldk + t] for t < n (keys stored
 * transposed, one row per component, so a vector holds the scores of consecutive keys). */
void bump_scores(const float *q, int D, const float *kt, size_t ldk, int n, float scale,
                 float *s);
/* out[c] = sum_t p[t] * v[t * ldv + c] for c < D: the probability-weighted sum of n values. */
void bump_weighted_sum(const float *p, const float *v, size_t ldv, int n, int D, float *out);

const char *bump_kernel_name(void);
/* Whether bump_matmul reads weights of this dtype (enum bump_dtype). */
int bump_kernel_reads(int32_t dtype);

#endif
