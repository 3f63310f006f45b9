/* kernels_vec.h - what every kernel header shares, compiled with the level that includes it:
 * the vector width and GCC vector types of the target, the helpers on them, how a weight
 * matrix's elements and blocks are addressed through its view, and how a call is cut into
 * parallel chunks. Everything is static (inline where it is on a hot path): each level's
 * kernels_<level>.c gets its own copy, built for its target.
 *
 * Included by kernels_dequant.h, kernels_int8.h and kernels_impl.h, and by nothing below them.
 */
#ifndef BUMP_KERNELS_VEC_H
#define BUMP_KERNELS_VEC_H

#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "kernels.h"
#include "pool.h"
#include "quant.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* The vector width in floats follows the target: 16 with AVX-512, 8 with AVX2 + FMA, else 4. */
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX2__) && defined(__FMA__)
#define VW 8
#else
#define VW 4
#endif

typedef float vfloat __attribute__((vector_size(VW * sizeof(float))));
typedef float vfloat_u __attribute__((vector_size(VW * sizeof(float)), aligned(1)));
typedef int32_t vint __attribute__((vector_size(VW * sizeof(int32_t))));
typedef uint32_t vuint __attribute__((vector_size(VW * sizeof(uint32_t))));
typedef uint8_t vu8 __attribute__((vector_size(VW)));
typedef int8_t vi8 __attribute__((vector_size(VW)));

static inline vfloat load_u(const void *p) { return *(const vfloat_u *)p; }
static inline void store_u(void *p, vfloat v) { *(vfloat_u *)p = v; }

/* Broadcasts through the intrinsic: GCC builds a vector from an element loop one masked
 * broadcast per lane. */
static inline vfloat splat(float s)
{
#if defined(__AVX512F__) && VW == 16
    return (vfloat)_mm512_set1_ps(s);
#elif defined(__AVX__) && VW == 8
    return (vfloat)_mm256_set1_ps(s);
#elif defined(__SSE2__) && VW == 4
    return (vfloat)_mm_set1_ps(s);
#else
    vfloat v;
    for (int i = 0; i < VW; i++) v[i] = s;
    return v;
#endif
}

static inline vuint splat_u(uint32_t s)
{
#if defined(__AVX512F__) && VW == 16
    return (vuint)_mm512_set1_epi32((int)s);
#elif defined(__AVX__) && VW == 8
    return (vuint)_mm256_set1_epi32((int)s);
#elif defined(__SSE2__) && VW == 4
    return (vuint)_mm_set1_epi32((int)s);
#else
    vuint v;
    for (int i = 0; i < VW; i++) v[i] = s;
    return v;
#endif
}

static inline vu8 load_bytes(const uint8_t *p)
{
    vu8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Lane indices first .. first + VW - 1. */
static inline vuint lanes(uint32_t first)
{
    vuint v;
    for (int i = 0; i < VW; i++) v[i] = (uint32_t)i;
    return v + splat_u(first);
}

/* a * b + c, fused when the target has FMA (the only contraction in this file). */
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

static inline float hsum(vfloat v)
{
    float s = 0.0f;
    for (int i = 0; i < VW; i++) s += v[i];
    return s;
}

static inline int min_int(int a, int b) { return a < b ? a : b; }

/* ---------------------------------------------------------------------------------------- */
/* readers and addressing                                                                    */

/* nb blocks at src -> nb * block-elements floats at y (ggml's dequantize_row_<type>), and the
 * same multiply-added with x into a GEMV accumulator (kernels_dequant.h). */
typedef void (*deq_fn)(const uint8_t *src, int nb, float *y);
typedef void (*dot_fn)(const uint8_t *src, int nb, const float *x, vfloat *acc);

/* How the weights of one product are read: the dequantizers of their dtype (NULL for fp32,
 * read in place) from the level's type-traits table, and the dtype's block geometry. */
typedef struct {
    deq_fn deq;
    dot_fn dot;
    int be;    /* elements per block */
    size_t bb; /* bytes per block */
} reader;

/* Element offset of row n of W, at column 0. */
static inline size_t row_elem(const bump_wmat *w, int n)
{
    return (size_t)(n / w->n_seg) * w->n_seg_stride + (size_t)(n % w->n_seg) * w->ld;
}

/* Element offset of column k (the start of a piece within one column segment) in a row. */
static inline size_t col_elem(const bump_wmat *w, int k)
{
    return (size_t)(k / w->k_seg) * w->k_seg_stride + (size_t)(k % w->k_seg);
}

/* The bytes of element e of a block-type matrix (e is on a block boundary). */
static inline const uint8_t *block_at(const bump_wmat *w, const reader *r, size_t e)
{
    return (const uint8_t *)w->base + e / (size_t)r->be * r->bb;
}

/* The rows of a block-type matrix one after another, in bytes, with no division per row (a
 * decode row is short: SmolLM2's are 18 blocks, and the divisions of row_elem, col_elem and
 * block_at cost as much as several of them). */
typedef struct {
    const uint8_t *seg; /* the first block of the current row segment's first row */
    const uint8_t *row; /* the first block of the current row */
    size_t ld, seg_stride, k_stride; /* bytes: next row, next row segment, next column segment */
    int in, n_seg;      /* the current row within its segment */
} row_walk;

static inline row_walk row_walk_at(const bump_wmat *w, const reader *r, int n0)
{
    row_walk it = {.ld = w->ld / (size_t)r->be * r->bb,
                   .seg_stride = w->n_seg_stride / (size_t)r->be * r->bb,
                   .k_stride = w->k_seg_stride / (size_t)r->be * r->bb,
                   .in = n0 % w->n_seg, .n_seg = w->n_seg};
    it.seg = (const uint8_t *)w->base + (size_t)(n0 / w->n_seg) * it.seg_stride;
    it.row = it.seg + (size_t)it.in * it.ld;
    return it;
}

static inline void row_walk_next(row_walk *it)
{
    if (++it->in == it->n_seg) {
        it->in = 0;
        it->seg += it->seg_stride;
    }
    it->row = it->seg + (size_t)it->in * it->ld;
}

/* ---------------------------------------------------------------------------------------- */
/* parallel calls                                                                            */

/* The job and the local index of global row (or panel) index i over the jobs' extents. */
static inline int locate(const int *extent, int njobs, int *i)
{
    int j = 0;
    while (j < njobs - 1 && *i >= extent[j]) *i -= extent[j++];
    return j;
}

/* fn over items [0, total) on the scratch's thread pool, in chunks of `chunk` items. */
static void run_parallel(const bump_gemm_scratch *s, bump_pool_fn fn, void *ctx, long total,
                         long chunk)
{
    bump_pool_run(s->pool, fn, ctx, total, chunk);
}

/* Chunks for items of equal cost: about `per_thread` chunks per thread (so a thread that is
 * late, or preempted, leaves its work to the others), at least `min_items` items each. */
static long chunk_of(const bump_gemm_scratch *s, long total, long per_thread, long min_items)
{
    const long c = total / (per_thread * bump_pool_threads(s->pool));
    return c > min_items ? c : min_items;
}

#endif
