/* kernels_impl.h - the kernels, written once and compiled once per instruction-set level.
 *
 * Each kernels_<level>.c sets its target with #pragma GCC target, defines LEVEL_TABLE (the name
 * of its bump_kernel_level), LEVEL_NAME and LEVEL_SUPPORTED, and includes this file; the vector
 * width then follows the target (GCC vector extensions): 16 floats with AVX-512, 8 with AVX2,
 * 4 otherwise. Everything here is static: the levels never see each other's symbols.
 *
 * The headers, each included once, in one direction: kernels_vec.h (vector helpers, weight
 * addressing, parallel chunks) <- kernels_dequant.h (the fp32-activation dequantizers) and
 * kernels_int8.h (the int8-activation kernels) <- this file: the type-traits table (which
 * kernels read which dtype at this level), the GEMV and GEMM drivers that dispatch through it,
 * attention, the elementwise exp, and the level's bump_kernel_level.
 *
 * GEMM (prefill, M tokens > 1), in the BLIS structure, the NR-wide weight panels cut into one
 * contiguous run per thread, each run claimed by whichever thread is free (pool.h):
 *   for each KC slice of K:
 *     pack the activations into MR-row micro-panels       (per thread; small next to weights)
 *     for each of the thread's weight panels:
 *       pack the KC x NR weight panel into L1             (read straight from the mapped file;
 *                                                          a quantized row piece is dequantized
 *                                                          on the way, once per call)
 *       for each activation micro-panel: MR x NR register-blocked micro-kernel
 * The micro-kernel keeps an MR x NR tile of C in vector registers: per k it loads two weight
 * vectors and broadcasts MR activation scalars, 2*MR fused multiply-adds.
 *
 * GEMV (decode, one token) is memory-bound: rows split into one chunk per thread; an fp32 row is a
 * vectorised dot product read straight from the mapping, a quantized row is dequantized in
 * registers block by block and each vector multiply-added with x as it is decoded (fp32
 * activations), or multiplied in integers against int8 activations (kernels_int8.h).
 *
 * Attention (scores, weighted_sum) keeps a block of results in registers while it walks the
 * cache, so no horizontal sums are needed.
 */
#include "kernels_dequant.h"
#include "kernels_int8.h"
#include "kernels_vec.h"

/* The fp32 GEMM's register tile: MR activation rows x NR = 2 vectors of weight columns. */
#if VW == 16
#define MR 14
#define DETAIL "16-wide, 14x32 micro-kernel"
#elif VW == 8
#define MR 6
#define DETAIL "8-wide, 6x16 micro-kernel"
#else
#define MR 6
#define DETAIL "4-wide, 6x8 micro-kernel"
#endif
#define NR (2 * VW)
#define KC 288
#define PREFETCH_ROWS 4

/* ---------------------------------------------------------------------------------------- */
/* the type-traits table (ggml's type_traits_cpu)                                            */

/* What this level does with weights of one dtype. */
typedef struct {
    int reads;               /* the products read weights of this dtype */
    deq_fn deq;              /* blocks -> floats (GEMM panels, embedding rows); NULL: fp32 */
    dot_fn dot;              /* a GEMV row on fp32 activations */
    qrows_fn qrows;          /* GEMV rows on int8 activations; NULL: none at this level */
    qgemm_kernels qgemm;     /* the GEMM on int8 activations; {NULL}: none at this level */
} type_traits;

/* Every per-dtype choice a product makes at this level, one row per dtype the level reads (a
 * dtype without a row is one it does not read, and the runtime refuses a blob that has it).
 * Written once and compiled per level, as ggml compiles its type_traits_cpu per CPU variant:
 * a kernel that differs between levels (qrows_q4_0 is the 512-bit one where the level has
 * 512-bit VNNI; QGEMM_OF is empty where it has no int8 GEMM) is chosen where it is defined.
 * Block sizes are not here: they are quant.h's (checked against format/dtypes.py). */
static const type_traits TRAITS[] = {
    [BUMP_DTYPE_FP32] = {.reads = 1},
    [BUMP_DTYPE_Q8_0] = {1, deq_q8_0, dot_q8_0, qrows_q8_0, QGEMM_OF(q8_0)},
    [BUMP_DTYPE_Q4_0] = {1, deq_q4_0, dot_q4_0, qrows_q4_0, QGEMM_OF(q4_0)},
    [BUMP_DTYPE_Q4_1] = {1, deq_q4_1, dot_q4_1, qrows_q4_1, QGEMM_OF(q4_1)},
    [BUMP_DTYPE_Q5_0] = {1, deq_q5_0, dot_q5_0, qrows_q5_0, QGEMM_OF(q5_0)},
    [BUMP_DTYPE_Q5_1] = {1, deq_q5_1, dot_q5_1, qrows_q5_1, QGEMM_OF(q5_1)},
    [BUMP_DTYPE_Q4_K] = {1, deq_q4_K, dot_q4_K, qrows_q4_K, QGEMM_OF(q4_K)},
    [BUMP_DTYPE_Q5_K] = {1, deq_q5_K, dot_q5_K, qrows_q5_K, QGEMM_OF(q5_K)},
    [BUMP_DTYPE_Q6_K] = {1, deq_q6_K, dot_q6_K, qrows_q6_K, QGEMM_NONE}, /* a scale per 16 */
};

/* The row of dtype; an all-empty row for a dtype the level does not read. */
static const type_traits *traits_of(int32_t dtype)
{
    static const type_traits none;
    return dtype >= 0 && (size_t)dtype < sizeof TRAITS / sizeof TRAITS[0] ? &TRAITS[dtype]
                                                                          : &none;
}

static reader reader_of(int32_t dtype)
{
    const type_traits *t = traits_of(dtype);
    return (reader){t->deq, t->dot, bump_block_elems(dtype), bump_block_bytes(dtype)};
}

/* Whether the products read weights of dtype (validate.h refuses a blob with any other). */
static int reads(int32_t dtype) { return traits_of(dtype)->reads; }

/* Whether a product of M activation rows over dtype weights runs on int8 activations when they
 * are asked for: the GEMV where the row has qrows, the GEMM where it has an int8 GEMM. */
static int int8_reads(int32_t dtype, int M)
{
    const type_traits *t = traits_of(dtype);
    return M == 1 ? t->qrows != NULL : t->qgemm.pack != NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* embedding rows                                                                            */

/* Columns [k, k + n) of row `re` (a row's element offset) as floats, within one column
 * segment: dequantized (whole blocks) or copied. */
static void row_piece(const bump_wmat *w, const reader *r, size_t re, int k, int n, float *out)
{
    size_t e = re + col_elem(w, k);
    if (r->deq)
        r->deq(block_at(w, r, e), n / r->be, out);
    else
        memcpy(out, (const char *)w->base + e * sizeof(float), (size_t)n * sizeof(float));
}

static void wmat_row(const bump_wmat *w, int n, int K, float *out)
{
    const reader r = reader_of(w->dtype);
    size_t re = row_elem(w, n);
    for (int k0 = 0; k0 < K; k0 += w->k_seg)
        row_piece(w, &r, re, k0, min_int(w->k_seg, K - k0), out + k0);
}

/* ---------------------------------------------------------------------------------------- */
/* GEMV                                                                                      */

/* sum_k row(k) * x[k] for k < K, walking the column segments of one fp32 weight row. */
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

/* The same over a quantized row: each block dequantized in registers and multiply-added
 * with x as it is decoded (the row is streamed once, nothing goes through memory). */
static float dot_row_q(const bump_wmat *w, const reader *r, size_t re, const float *x, int K)
{
    vfloat acc = {0};
    for (int k0 = 0; k0 < K; k0 += w->k_seg) {
        const int len = min_int(w->k_seg, K - k0);
        r->dot(block_at(w, r, re + col_elem(w, k0)), len / r->be, x + k0, &acc);
    }
    return hsum(acc);
}

/* One GEMV call: rows of all jobs numbered together, cut into contiguous chunks (a row is
 * computed by one thread, whichever, so the result does not depend on the thread count). */
typedef struct {
    const bump_matmul_job *jobs;
    int njobs, K, total;
    int rows[BUMP_MAX_JOBS];
    reader rd[BUMP_MAX_JOBS];
    qrows_fn qd[BUMP_MAX_JOBS]; /* set: this job runs on int8 activations */
    const float *x;
    xacts xq;
} gemv_ctx;

static void gemv_work(void *arg, long r0, long r1, int tid)
{
    const gemv_ctx *c = arg;
    (void)tid;
    for (int j = 0, first = 0; j < c->njobs && first < r1; first += c->rows[j++]) {
        const int lo = (int)(r0 > first ? r0 - first : 0);
        const int hi = (int)(r1 - first < c->rows[j] ? r1 - first : c->rows[j]);
        if (lo >= hi) continue;
        const bump_wmat *w = &c->jobs[j].w;
        const reader *rd = &c->rd[j];
        float *out = c->jobs[j].out;
        if (c->qd[j]) {
            c->qd[j](w, rd, &c->xq, c->K, lo, hi, out);
            continue;
        }
        for (int n = lo; n < hi; n++)
            out[n] = rd->deq ? dot_row_q(w, rd, row_elem(w, n), c->x, c->K)
                             : dot_row(w, (const ufloat *)w->base + row_elem(w, n), c->x, c->K);
    }
}

#define XQ_STACK 256 /* activation blocks kept on the stack: K up to 8192 */

static void gemv(const bump_matmul_job *jobs, int njobs, const float *x, int K,
                 const bump_gemm_scratch *s)
{
    gemv_ctx c = {.jobs = jobs, .njobs = njobs, .K = K, .x = x};
    int quantized = 0;
    for (int j = 0; j < njobs; j++) {
        c.total += c.rows[j] = jobs[j].N;
        c.rd[j] = reader_of(jobs[j].w.dtype);
        c.qd[j] = s->int8_activations ? traits_of(jobs[j].w.dtype)->qrows : NULL;
        quantized |= c.qd[j] != NULL;
    }
    unsigned char stack[XQ_STACK * XACTS_BLOCK_BYTES] __attribute__((aligned(64)));
    unsigned char *heap = NULL;
    if (quantized) { /* K is whole blocks: validate.h checks it */
        const int nb = K / XB;
        const size_t bytes = ((size_t)nb * XACTS_BLOCK_BYTES + 63) / 64 * 64;
        heap = nb > XQ_STACK ? aligned_alloc(64, bytes) : NULL;
        if (nb > XQ_STACK && !heap) { /* no memory for the int8 copy: the fp32 path */
            for (int j = 0; j < njobs; j++) c.qd[j] = NULL;
        } else {
            c.xq = xacts_build(x, K, heap ? heap : stack);
        }
    }
    /* one chunk per thread (at least 16 rows), claimed by whichever thread is free */
    run_parallel(s, gemv_work, &c, c.total, chunk_of(s, c.total, 1, 16));
    free(heap);
}

/* ---------------------------------------------------------------------------------------- */
/* GEMM                                                                                      */

static size_t scratch_floats(int M, int K)
{
    /* activation panels, one weight panel, and its rows before the transpose */
    size_t floats = (size_t)(M + MR - 1) / MR * MR * KC + 2 * (size_t)KC * NR;
#if QGEMM
    if (K % XB == 0) { /* the int8 GEMM's, rounded up to whole 64-byte lines */
        const size_t q = (qgemm_scratch_bytes(M, K) + 63) / 64 * 16;
        if (q > floats) floats = q;
    }
#else
    (void)K;
#endif
    return floats;
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

/* VW x VW floats at src (row stride lds) transposed into dst (row stride ldd), in registers. */
static inline void transpose_block(const float *src, size_t lds, float *dst, size_t ldd)
{
#if defined(__AVX512F__) && VW == 16
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]),
                      c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        _mm512_storeu_ps(dst + (size_t)i * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
        _mm512_storeu_ps(dst + (size_t)(i + 8) * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
    }
#elif defined(__AVX__) && VW == 8
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (size_t)i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + (size_t)i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (size_t)(i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
#else
    for (int i = 0; i < VW; i++)
        for (int j = 0; j < VW; j++) dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
#endif
}

/* Weight rows n0.. (nv of them, the rest zero), columns k0..k0+kc, into [kc][NR], in two
 * steps: each row piece into rows[j][0..kc) (row stride KC; read straight from the mapping, or
 * dequantized: pieces start on blocks, k0, kc and the column segments being whole blocks),
 * then VW x VW blocks transposed in registers (one strided scalar store per value cost more
 * than the micro-kernel's share of a panel). The weights come from DRAM one short row piece at
 * a time, too irregular for the hardware prefetcher: while a row is copied, the row
 * PREFETCH_ROWS ahead is requested (this doubles the packing rate). */
static void pack_b(const bump_wmat *w, const reader *r, int n0, int nv, int k0, int kc,
                   float *out, float *rows)
{
    for (int j = 0; j < NR; j++) {
        float *row = rows + (size_t)j * KC;
        if (j >= nv) {
            memset(row, 0, (size_t)kc * sizeof(float));
            continue;
        }
        size_t re = row_elem(w, n0 + j);
        size_t ahead = j + PREFETCH_ROWS < nv ? row_elem(w, n0 + j + PREFETCH_ROWS) : (size_t)-1;
        for (int k = k0; k < k0 + kc;) {
            int col = k % w->k_seg, len = min_int(w->k_seg - col, k0 + kc - k);
            size_t at = col_elem(w, k);
            if (r->deq) {
                if (ahead != (size_t)-1) {
                    const uint8_t *p = block_at(w, r, ahead + at);
                    size_t bytes = (size_t)len / (size_t)r->be * r->bb;
                    for (size_t t = 0; t < bytes; t += 64) __builtin_prefetch(p + t);
                }
                r->deq(block_at(w, r, re + at), len / r->be, row + (k - k0));
            } else {
                const ufloat *base = (const ufloat *)w->base; /* at any byte offset */
                if (ahead != (size_t)-1)
                    for (int t = 0; t < len; t += 16) __builtin_prefetch(base + ahead + at + t);
                memcpy(row + (k - k0), (const void *)(base + re + at), (size_t)len * sizeof(float));
            }
            k += len;
        }
    }
    int k = 0;
    for (; k + VW <= kc; k += VW)
        for (int jb = 0; jb < NR; jb += VW)
            transpose_block(rows + (size_t)jb * KC + k, KC, out + (size_t)k * NR + jb, NR);
    for (; k < kc; k++)
        for (int j = 0; j < NR; j++) out[(size_t)k * NR + j] = rows[(size_t)j * KC + k];
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

/* One GEMM call. Each chunk is a contiguous run of weight panels (across the jobs) whose thread
 * packs its own copy of the activations (small next to the weights): no barrier until the
 * call ends, and a thread that is late or preempted before it claims a chunk leaves it to the
 * others. */
typedef struct {
    const bump_matmul_job *jobs;
    const float *in;
    size_t lda;
    int njobs, M, K, kc_step, npanels, npanels_a;
    int panels[BUMP_MAX_JOBS];
    reader rd[BUMP_MAX_JOBS];
    const bump_gemm_scratch *s;
} gemm_ctx;

static void gemm_work(void *arg, long q0, long q1, int tid)
{
    const gemm_ctx *c = arg;
    const int M = c->M, K = c->K;
    float *ap = c->s->pack + (size_t)tid * c->s->floats_per_thread;
    float *bp = ap + (size_t)c->npanels_a * MR * KC;
    float *rows = bp + (size_t)KC * NR;
    for (int k0 = 0; k0 < K && q0 < q1; k0 += c->kc_step) {
        int kc = min_int(c->kc_step, K - k0);
        for (int p = 0; p < c->npanels_a; p++)
            pack_a(c->in, c->lda, p * MR, min_int(MR, M - p * MR), k0, kc,
                   ap + (size_t)p * MR * kc);
        for (long q = q0; q < q1; q++) {
            int local = (int)q, j = locate(c->panels, c->njobs, &local);
            const bump_matmul_job *job = &c->jobs[j];
            int n0 = local * NR, nv = min_int(NR, job->N - n0);
            pack_b(&job->w, &c->rd[j], n0, nv, k0, kc, bp, rows);
            for (int p = 0; p < c->npanels_a; p++)
                micro_kernel(kc, ap + (size_t)p * MR * kc, bp,
                             job->out + (size_t)p * MR * job->ldc + n0, job->ldc,
                             min_int(MR, M - p * MR), nv, k0 > 0);
        }
    }
}

static void gemm(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s)
{
    gemm_ctx c = {.jobs = jobs, .in = in, .lda = lda, .njobs = njobs, .M = M, .K = K,
                  .npanels_a = (M + MR - 1) / MR, .s = s};
    int be = 1;
    for (int j = 0; j < njobs; j++) {
        c.npanels += c.panels[j] = (jobs[j].N + NR - 1) / NR;
        c.rd[j] = reader_of(jobs[j].w.dtype);
        if (c.rd[j].be > be) be = c.rd[j].be;
    }
    if (be == 1) { /* fp32: even slices, no thin last slice */
        int kblocks = (K + KC - 1) / KC;
        c.kc_step = (K + kblocks - 1) / kblocks;
    } else {       /* whole blocks of the largest block type (32 and 256 both divide 256) */
        c.kc_step = KC / be * be;
    }
    /* one chunk per thread (each packs its own activations per chunk), claimed by whichever
     * thread is free */
    run_parallel(s, gemm_work, &c, c.npanels, chunk_of(s, c.npanels, 1, 1));
}

#if QGEMM
/* The int8 GEMM when this call takes it (int8 activations asked for, and every job's dtype
 * has an int8 GEMM at this level); 0 when it does not. */
static int qgemm_if_int8(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda,
                         int M, int K, const bump_gemm_scratch *s)
{
    if (!s->int8_activations) return 0;
    reader rd[BUMP_MAX_JOBS];
    qgemm_kernels k[BUMP_MAX_JOBS];
    for (int j = 0; j < njobs; j++) {
        k[j] = traits_of(jobs[j].w.dtype)->qgemm;
        if (!k[j].pack) return 0;
        rd[j] = reader_of(jobs[j].w.dtype);
    }
    qgemm(jobs, njobs, in, lda, M, K, s, rd, k);
    return 1;
}
#endif

static void matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                   int K, const bump_gemm_scratch *s)
{
    if (M == 1) {
        gemv(jobs, njobs, in, K, s);
        return;
    }
#if QGEMM
    if (qgemm_if_int8(jobs, njobs, in, lda, M, K, s)) return;
#endif
    gemm(jobs, njobs, in, lda, M, K, s);
}

/* ---------------------------------------------------------------------------------------- */
/* attention                                                                                 */

static void scores(const float *q, int D, const float *kt, size_t ldk, int n, float scale,
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

static void weighted_sum(const float *p, const float *v, size_t ldv, int n, int D, float *out)
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

/* ---------------------------------------------------------------------------------------- */
/* elementwise exp: SwiGLU and the softmax                                                    */

/* exp(x) per lane, correctly rounded but for ties closer than ~1e-14 relative (as glibc's expf
 * nearly is): the exponential is computed in double precision (x = n ln2 + r with |r| <= ln2 / 2,
 * a degree-11 Taylor polynomial in r, truncation error < 1e-14, times 2^n) and rounded to float
 * once. A float-precision exp (Cephes', up to 2 ulp; torch's Sleef exp, up to 1) adds its own
 * error to the softmax and SwiGLU, which parity's 1e-5 cannot afford where a model cancels a
 * large residual value. Cost (`python bench/bench_kernels.py`, one thread, avx512-vnni):
 * 1.72 ns per value against 0.70 for Cephes' and 4.38 for libm's expf. The float conversion
 * gives inf above (x is clamped at 89, exp(89) > FLT_MAX), subnormals and then 0 below (clamped
 * at -104, exp(-104) < FLT_TRUE_MIN / 2), NaN for NaN. */
/* Half a vector's lanes in double precision: one register at every level (a VW-lane double
 * vector would be two, and GCC scalarizes conversions of vectors wider than a register). */
typedef float vhalf __attribute__((vector_size(VW * 2)));
typedef double vdouble __attribute__((vector_size(VW * 4)));
typedef int64_t vlong __attribute__((vector_size(VW * 4)));

/* exp(x) per lane in double precision (relative error < 1e-14), x clamped to [-104, 89] (the
 * float range's ends); NaN for NaN. */
static inline vdouble vexp_d(vdouble x0)
{
    const vlong nan = x0 != x0, over = x0 > 89.0, under = x0 < -104.0;
    const vdouble hi = (vdouble){0} + 89.0, lo = (vdouble){0} - 104.0;
    const vdouble x =
        (vdouble)(((vlong)x0 & ~(over | under | nan)) | ((vlong)hi & over) | ((vlong)lo & under));
    /* t = x log2(e) + 1.5 * 2^52 rounds to an integer n held in t's low mantissa bits */
    const vdouble magic = (vdouble){0} + 6755399441055744.0;
    const vdouble t = x * 1.4426950408889634 + magic, n = t - magic;
    const vdouble r = (x - n * 0.6931471805599453) - n * 2.3190468138462996e-17;
    /* the degree-11 Taylor polynomial by Estrin's scheme (a short dependency chain) */
    const vdouble r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const vdouble a0 = r + 1.0, a1 = r * (1.0 / 6.0) + 0.5;
    const vdouble a2 = r * (1.0 / 120.0) + 1.0 / 24.0, a3 = r * (1.0 / 5040.0) + 1.0 / 720.0;
    const vdouble a4 = r * (1.0 / 362880.0) + 1.0 / 40320.0;
    const vdouble a5 = r * (1.0 / 39916800.0) + 1.0 / 3628800.0;
    const vdouble b0 = r2 * a1 + a0, b1 = r2 * a3 + a2, b2 = r2 * a5 + a4;
    const vdouble p = r8 * b2 + (r4 * b1 + b0);
    /* n is in [-150, 129] (0 for NaN lanes): 2^n is a normal double */
    const vdouble scale = (vdouble)(((vlong)t - (vlong)magic + 1023) << 52);
    const vdouble y = p * scale;
    return (vdouble)(((vlong)y & ~nan) | ((vlong)x0 & nan));
}

static inline vhalf vexp_half(vhalf xf)
{
    return __builtin_convertvector(vexp_d(__builtin_convertvector(xf, vdouble)), vhalf);
}

/* tanh(z) per lane, correctly rounded but for ties closer than ~1e-15 relative: computed in
 * double precision and rounded to float once - an odd Taylor polynomial for |z| < 1/8 (the
 * first omitted term < 4e-16 relative), 1 - 2 / (exp(2|z|) + 1) above (|z| clamped at 20, where
 * tanh is 1 in double), the sign of z put back; NaN for NaN. */
static inline vhalf vtanh_half(vhalf zf)
{
    const vdouble z = __builtin_convertvector(zf, vdouble);
    const vlong sign = (vlong){0} + INT64_MIN, nan = z != z;
    const vdouble a0 = (vdouble)((vlong)z & ~sign), cap = (vdouble){0} + 20.0;
    const vlong huge = a0 > cap;
    const vdouble a = (vdouble)(((vlong)a0 & ~huge) | ((vlong)cap & huge));
    const vdouble a2 = a * a;
    const vdouble poly =
        a * (1.0 + a2 * (-1.0 / 3 + a2 * (2.0 / 15 + a2 * (-17.0 / 315 + a2 * (62.0 / 2835 +
             a2 * (-1382.0 / 155925 + a2 * (21844.0 / 6081075)))))));
    const vdouble big = 1.0 - 2.0 / (vexp_d(a + a) + 1.0);
    const vlong small = a < 0.125;
    const vdouble r = (vdouble)((((vlong)poly & small) | ((vlong)big & ~small)) |
                                ((vlong)z & sign));
    return __builtin_convertvector((vdouble)(((vlong)r & ~nan) | ((vlong)z & nan)), vhalf);
}

static inline vfloat vexp(vfloat x)
{
    vhalf h[2];
    memcpy(h, &x, sizeof x);
    h[0] = vexp_half(h[0]);
    h[1] = vexp_half(h[1]);
    memcpy(&x, h, sizeof x);
    return x;
}

static inline vfloat vtanh(vfloat x)
{
    vhalf h[2];
    memcpy(h, &x, sizeof x);
    h[0] = vtanh_half(h[0]);
    h[1] = vtanh_half(h[1]);
    memcpy(&x, h, sizeof x);
    return x;
}

/* o[j] = silu(g[j]) * u[j] = g / (1 + exp(-g)) * u. */
static void swiglu(const float *g, const float *u, int n, float *o)
{
    int j = 0;
    for (; j + VW <= n; j += VW) {
        const vfloat gv = load_u(g + j);
        store_u(o + j, gv / (splat(1.0f) + vexp(-gv)) * load_u(u + j));
    }
    for (; j < n; j++) {
        vfloat t = splat(-g[j]);
        o[j] = g[j] / (1.0f + vexp(t)[0]) * u[j];
    }
}

/* o[j] = gelu_tanh(g[j]) * u[j] (Gemma's GeGLU), torch's fp32 gelu(approximate="tanh") operation
 * for operation - x^3 as (x * x) * x, inner = beta * (x + kappa * x^3), (0.5 * x) * (1 + tanh(
 * inner)), beta = sqrt(2/pi) and kappa = 0.044715 rounded to float from double as torch has them
 * - with tanh correctly rounded where torch's (Sleef's tanhf) is within 1 ulp; then times u. */
static void geglu(const float *g, const float *u, int n, float *o)
{
    const float beta = (float)0.7978845608028654, kappa = 0.044715f;
    int j = 0;
    for (; j + VW <= n; j += VW) {
        const vfloat x = load_u(g + j);
        const vfloat inner = splat(beta) * (x + splat(kappa) * (x * x * x));
        store_u(o + j, splat(0.5f) * x * (splat(1.0f) + vtanh(inner)) * load_u(u + j));
    }
    for (; j < n; j++) {
        const float x = g[j], inner = beta * (x + kappa * (x * x * x));
        o[j] = 0.5f * x * (1.0f + vtanh(splat(inner))[0]) * u[j];
    }
}

/* x[i] = tanh(x[i] / cap) * cap for i < n (the final logit soft-cap: a division, tanh and a
 * product, each rounded to float as transformers computes them). */
static void softcap(float *x, size_t n, float cap)
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        store_u(x + i, vtanh(load_u(x + i) / splat(cap)) * splat(cap));
    for (; i < n; i++) x[i] = vtanh(splat(x[i] / cap))[0] * cap;
}

/* s[t] = exp(s[t] - mx) for t < n; returns their sum (the softmax's numerators). */
static float exp_sum(float *s, int n, float mx)
{
    vfloat acc = {0};
    int t = 0;
    for (; t + VW <= n; t += VW) {
        const vfloat e = vexp(load_u(s + t) - splat(mx));
        store_u(s + t, e);
        acc += e;
    }
    float sum = hsum(acc);
    for (; t < n; t++) {
        s[t] = vexp(splat(s[t] - mx))[0];
        sum += s[t];
    }
    return sum;
}

const bump_kernel_level LEVEL_TABLE = {
    .name = LEVEL_NAME,
    .detail = DETAIL,
    .supported = LEVEL_SUPPORTED,
    .scratch_floats = scratch_floats,
    .reads = reads,
    .int8_reads = int8_reads,
    .swiglu = swiglu,
    .geglu = geglu,
    .softcap = softcap,
    .exp_sum = exp_sum,
    .matmul = matmul,
    .row = wmat_row,
    .scores = scores,
    .weighted_sum = weighted_sum,
};

