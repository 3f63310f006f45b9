/* kernels.c - blocked SGEMM and GEMV over memory-mapped, unaligned, per-head packed weights,
 * and the two inner loops of attention.
 *
 * SGEMM (prefill, M tokens > 1), in the BLIS structure, each thread owning a contiguous run
 * of NR-wide weight panels:
 *   for each KC slice of K:
 *     pack the activations into MR-row micro-panels       (per thread; small next to weights)
 *     for each of the thread's weight panels:
 *       pack the KC x NR weight panel into L1             (read straight from the mapped file)
 *       for each activation micro-panel: MR x NR register-blocked micro-kernel
 * Every weight is packed exactly once per call, however many tokens there are.
 * The micro-kernel keeps an MR x NR tile of C in vector registers: per k it loads two weight
 * vectors and broadcasts MR activation scalars, 2*MR fused multiply-adds.
 *
 * GEMV (decode, one token) is memory-bound: rows split over threads, each a vectorised dot
 * product read straight from the mapping.
 *
 * Attention (bump_scores, bump_weighted_sum) keeps a block of results in registers while it
 * walks the cache, so no horizontal sums are needed.
 */
#include "kernels.h"

#include "blocks.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX__) || defined(__FMA__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
#define MR 14
#define KERNEL_NAME "avx512 (16-wide, 14x32 micro-kernel)"
#elif defined(__AVX__)
#define VW 8
#define MR 6
#ifdef __FMA__
#define KERNEL_NAME "avx-fma (8-wide, 6x16 micro-kernel)"
#else
#define KERNEL_NAME "avx (8-wide, 6x16 micro-kernel)"
#endif
#else
#define VW 4
#define MR 6
#define KERNEL_NAME "portable (4-wide, 6x8 micro-kernel)"
#endif
#define NR (2 * VW)
#define KC 288
#define PREFETCH_ROWS 4

typedef float vfloat __attribute__((vector_size(VW * sizeof(float))));
typedef float vfloat_u __attribute__((vector_size(VW * sizeof(float)), aligned(1)));

const char *bump_kernel_name(void) { return KERNEL_NAME; }
int bump_kernel_reads(int32_t dtype) { return dtype == BUMP_DTYPE_FP32; }
size_t bump_gemm_scratch_floats(int M)
{
    return (size_t)(M + MR - 1) / MR * MR * KC + (size_t)KC * NR;
}

static inline vfloat load_u(const void *p) { return *(const vfloat_u *)p; }

static inline vfloat splat(float s)
{
#if defined(__AVX512F__) && VW == 16
    return _mm512_set1_ps(s);
#elif defined(__AVX__) && VW == 8
    return _mm256_set1_ps(s);
#else
    vfloat v;
    for (int i = 0; i < VW; i++) v[i] = s;
    return v;
#endif
}

/* a * b + c, fused when the target has FMA. The rest of the runtime is compiled with
 * -ffp-contract=off so that it rounds exactly as written (as transformers does). */
static inline vfloat fma_v(vfloat a, vfloat b, vfloat c)
{
#if defined(__AVX512F__) && VW == 16
    return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__) && VW == 8
    return _mm256_fmadd_ps(a, b, c);
#elif defined(__FMA__) && VW == 4
    return _mm_fmadd_ps(a, b, c);
#else
    return a * b + c;
#endif
}
static inline void store_u(void *p, vfloat v) { *(vfloat_u *)p = v; }

static inline float hsum(vfloat v)
{
    float s = 0.0f;
    for (int i = 0; i < VW; i++) s += v[i];
    return s;
}

static inline int min_int(int a, int b) { return a < b ? a : b; }

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int thread_count(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Row n of W, at column 0. */
static inline const ufloat *w_row(const bump_wmat *w, int n)
{
    return w->base + (size_t)(n / w->n_seg) * w->n_seg_stride + (size_t)(n % w->n_seg) * w->ld;
}

/* sum_k row(k) * x[k] for k < K, walking the column segments of one weight row. */
static float dot_row(const bump_wmat *w, const ufloat *row, const float *x, int K)
{
    vfloat s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    float tail = 0.0f;
    for (int k0 = 0; k0 < K; k0 += w->k_seg) {
        const ufloat *r = row + (size_t)(k0 / w->k_seg) * w->k_seg_stride;
        const float *xs = x + k0;
        int len = min_int(w->k_seg, K - k0), i = 0;
        for (; i + 4 * VW <= len; i += 4 * VW) {
            s0 = fma_v(load_u(r + i), load_u(xs + i), s0);
            s1 = fma_v(load_u(r + i + VW), load_u(xs + i + VW), s1);
            s2 = fma_v(load_u(r + i + 2 * VW), load_u(xs + i + 2 * VW), s2);
            s3 = fma_v(load_u(r + i + 3 * VW), load_u(xs + i + 3 * VW), s3);
        }
        for (; i + VW <= len; i += VW) s0 = fma_v(load_u(r + i), load_u(xs + i), s0);
        for (; i < len; i++) tail += r[i] * xs[i];
    }
    return hsum((s0 + s1) + (s2 + s3)) + tail;
}

/* The job and the local index of global row (or panel) index i over the jobs' extents. */
static inline int locate(const int *extent, int njobs, int *i)
{
    int j = 0;
    while (j < njobs - 1 && *i >= extent[j]) *i -= extent[j++];
    return j;
}

static void gemv(const bump_matmul_job *jobs, int njobs, const float *x, int K, int nt)
{
    int rows[BUMP_MAX_JOBS], total = 0;
    for (int j = 0; j < njobs; j++) total += rows[j] = jobs[j].N;
#pragma omp parallel for schedule(static) num_threads(nt) if (total >= 64)
    for (int r = 0; r < total; r++) {
        int n = r, j = locate(rows, njobs, &n);
        jobs[j].out[n] = dot_row(&jobs[j].w, w_row(&jobs[j].w, n), x, K);
    }
}

/* Activation rows i0.. (mv of them, the rest of the panel zero), columns k0..k0+kc, into
 * [kc][MR]. */
static void pack_a(const float *in, size_t lda, int i0, int mv, int k0, int kc, float *out)
{
    for (int i = 0; i < MR; i++) {
        if (i < mv) {
            const float *src = in + (size_t)(i0 + i) * lda + k0;
            for (int k = 0; k < kc; k++) out[k * MR + i] = src[k];
        } else {
            for (int k = 0; k < kc; k++) out[k * MR + i] = 0.0f;
        }
    }
}

/* Weight rows n0.. (nv of them, the rest zero), columns k0..k0+kc, into [kc][NR]. The weights
 * come from DRAM (a model is much larger than the caches) one short row piece at a time, too
 * irregular for the hardware prefetcher: while a row is copied, the row PREFETCH_ROWS ahead is
 * requested (this doubles the packing rate). */
static void pack_b(const bump_wmat *w, int n0, int nv, int k0, int kc, float *out)
{
    for (int j = 0; j < NR; j++) {
        if (j >= nv) {
            for (int k = 0; k < kc; k++) out[k * NR + j] = 0.0f;
            continue;
        }
        const ufloat *row = w_row(w, n0 + j);
        const ufloat *ahead = j + PREFETCH_ROWS < nv ? w_row(w, n0 + j + PREFETCH_ROWS) : NULL;
        for (int k = k0; k < k0 + kc;) {
            int seg = k / w->k_seg, col = k - seg * w->k_seg;
            int len = min_int(w->k_seg - col, k0 + kc - k);
            size_t at = (size_t)seg * w->k_seg_stride + col;
            if (ahead)
                for (int t = 0; t < len; t += 16) __builtin_prefetch(ahead + at + t); /* a line */
            const ufloat *src = row + at;
            float *dst = out + (size_t)(k - k0) * NR + j;
            for (int t = 0; t < len; t++) dst[t * NR] = src[t];
            k += len;
        }
    }
}

/* C[0..m)[0..n) (+)= A-panel x B-panel over kc; the full MR x NR tile lives in registers. */
static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, size_t ldc, int m, int n, int accumulate)
{
    vfloat acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (vfloat){0};
    for (int k = 0; k < kc; k++) {
        vfloat b0 = *(const vfloat *)b, b1 = *(const vfloat *)(b + VW);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            vfloat ai = splat(a[i]);
            acc[i][0] = fma_v(ai, b0, acc[i][0]);
            acc[i][1] = fma_v(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    if (m == MR && n == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            if (accumulate) {
                store_u(ci, load_u(ci) + acc[i][0]);
                store_u(ci + VW, load_u(ci + VW) + acc[i][1]);
            } else {
                store_u(ci, acc[i][0]);
                store_u(ci + VW, acc[i][1]);
            }
        }
        return;
    }
    float tile[MR][NR] __attribute__((aligned(64)));
    for (int i = 0; i < MR; i++) {
        *(vfloat *)&tile[i][0] = acc[i][0];
        *(vfloat *)&tile[i][VW] = acc[i][1];
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[(size_t)i * ldc + j] = accumulate ? c[(size_t)i * ldc + j] + tile[i][j] : tile[i][j];
}

static void gemm(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s)
{
    int kblocks = (K + KC - 1) / KC;
    int kc_step = (K + kblocks - 1) / kblocks; /* even slices: no thin last slice */
    int panels[BUMP_MAX_JOBS], npanels = 0, npanels_a = (M + MR - 1) / MR;
    for (int j = 0; j < njobs; j++) npanels += panels[j] = (jobs[j].N + NR - 1) / NR;
    /* Each thread owns a contiguous run of weight panels (across the jobs) and packs its own
     * copy of the activations (small next to the weights): no barrier until the region ends,
     * so a thread that the OS preempts delays the others once per call, not once per block. */
#pragma omp parallel num_threads(s->n_threads)
    {
        int nth = thread_count(), tid = thread_id();
        int q0 = (int)((long)npanels * tid / nth), q1 = (int)((long)npanels * (tid + 1) / nth);
        float *ap = s->pack + (size_t)tid * s->floats_per_thread;
        float *bp = ap + (size_t)npanels_a * MR * KC;
        for (int k0 = 0; k0 < K && q0 < q1; k0 += kc_step) {
            int kc = min_int(kc_step, K - k0);
            for (int p = 0; p < npanels_a; p++)
                pack_a(in, lda, p * MR, min_int(MR, M - p * MR), k0, kc, ap + (size_t)p * MR * kc);
            for (int q = q0; q < q1; q++) {
                int local = q, j = locate(panels, njobs, &local);
                const bump_matmul_job *job = &jobs[j];
                int n0 = local * NR, nv = min_int(NR, job->N - n0);
                pack_b(&job->w, n0, nv, k0, kc, bp);
                for (int p = 0; p < npanels_a; p++)
                    micro_kernel(kc, ap + (size_t)p * MR * kc, bp,
                                 job->out + (size_t)p * MR * job->ldc + n0, job->ldc,
                                 min_int(MR, M - p * MR), nv, k0 > 0);
            }
        }
    }
}

void bump_matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s)
{
    if (M == 1)
        gemv(jobs, njobs, in, K, s->n_threads);
    else
        gemm(jobs, njobs, in, lda, M, K, s);
}

void bump_scores(const float *q, int D, const float *kt, size_t ldk, int n, float scale,
                 float *s)
{
    /* a block of SCORE_VECS vectors of keys accumulates in registers while the D rows of the
     * transposed cache are walked, each a contiguous run */
    enum { SCORE_VECS = 8 };
    int t = 0;
    for (; t + SCORE_VECS * VW <= n; t += SCORE_VECS * VW) {
        vfloat acc[SCORE_VECS];
        for (int v = 0; v < SCORE_VECS; v++) acc[v] = (vfloat){0};
        for (int d = 0; d < D; d++) {
            const float *k = kt + (size_t)d * ldk + t;
            vfloat qd = splat(q[d]);
#pragma GCC unroll 8
            for (int v = 0; v < SCORE_VECS; v++) acc[v] = fma_v(qd, load_u(k + v * VW), acc[v]);
        }
        for (int v = 0; v < SCORE_VECS; v++) store_u(s + t + v * VW, acc[v] * scale);
    }
    for (; t + VW <= n; t += VW) {
        vfloat a = {0};
        for (int d = 0; d < D; d++) a = fma_v(splat(q[d]), load_u(kt + (size_t)d * ldk + t), a);
        store_u(s + t, a * scale);
    }
    for (; t < n; t++) {
        float a = 0.0f;
        for (int d = 0; d < D; d++) a += q[d] * kt[(size_t)d * ldk + t];
        s[t] = a * scale;
    }
}

void bump_weighted_sum(const float *p, const float *v, size_t ldv, int n, int D, float *out)
{
    int c = 0;
    for (; c + 4 * VW <= D; c += 4 * VW) {
        vfloat a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int t = 0; t < n; t++) {
            const float *row = v + (size_t)t * ldv + c;
            vfloat pt = splat(p[t]);
            a0 = fma_v(pt, load_u(row), a0);
            a1 = fma_v(pt, load_u(row + VW), a1);
            a2 = fma_v(pt, load_u(row + 2 * VW), a2);
            a3 = fma_v(pt, load_u(row + 3 * VW), a3);
        }
        store_u(out + c, a0);
        store_u(out + c + VW, a1);
        store_u(out + c + 2 * VW, a2);
        store_u(out + c + 3 * VW, a3);
    }
    for (; c + VW <= D; c += VW) {
        vfloat a = {0};
        for (int t = 0; t < n; t++) a = fma_v(splat(p[t]), load_u(v + (size_t)t * ldv + c), a);
        store_u(out + c, a);
    }
    for (; c < D; c++) {
        float a = 0.0f;
        for (int t = 0; t < n; t++) a += p[t] * v[(size_t)t * ldv + c];
        out[c] = a;
    }
}
