/* kernels_dequant.h - the dequantizers of every block type the kernels read, for products on
 * fp32 activations: ggml's dequantize_row_<type> in vector registers.
 *
 * Each computes every value exactly as ggml does (the same operations in the same order, no
 * contraction: the runtime is compiled with -ffp-contract=off and multiply-adds are fused only
 * where written), so a product over quantized weights equals the product over
 * gguf.quants.dequantize's fp32 matrix up to the order of the fp32 sums. Each is written once
 * and used two ways (DEQ_PAIR): deq_<type> stores the values (GEMM panels, embedding rows),
 * dot_<type> multiply-adds them straight into a GEMV accumulator, in registers.
 */
#ifndef BUMP_KERNELS_DEQUANT_H
#define BUMP_KERNELS_DEQUANT_H

#include "kernels_vec.h"

#define TO_F(v) __builtin_convertvector((v), vfloat)
#define TO_I(v) _Generic((v), vu8: widen_u8, vi8: widen_i8)(v)

/* VW bytes widened to int32 lanes. GCC lowers __builtin_convertvector from bytes to int32
 * element by element (20x slower than the dequantization around it), so the targets with a
 * widening instruction use it. */
static inline vint widen_u8(vu8 b)
{
#if defined(__AVX512F__) && VW == 16
    __m128i x;
    memcpy(&x, &b, sizeof x);
    return (vint)_mm512_cvtepu8_epi32(x);
#elif defined(__AVX2__) && VW == 8
    long long x;
    memcpy(&x, &b, sizeof x);
    return (vint)_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(x));
#else
    return __builtin_convertvector(b, vint);
#endif
}

static inline vint widen_i8(vi8 b)
{
#if defined(__AVX512F__) && VW == 16
    __m128i x;
    memcpy(&x, &b, sizeof x);
    return (vint)_mm512_cvtepi8_epi32(x);
#elif defined(__AVX2__) && VW == 8
    long long x;
    memcpy(&x, &b, sizeof x);
    return (vint)_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(x));
#else
    return __builtin_convertvector(b, vint);
#endif
}

/* Value vector v of element offset `off`: stored at y + off, or (y NULL) multiply-added with
 * x + off into *acc. Inlined into always-inline dequantizers, the branch folds away. */
static inline __attribute__((always_inline)) void emit(float *y, const float *x, vfloat *acc,
                                                       size_t off, vfloat v)
{
    if (y)
        store_u(y + off, v);
    else
        *acc = fma_v(v, load_u(x + off), *acc);
}

static inline __attribute__((always_inline)) void deq_q4_0_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q4_0 *x = (const block_q4_0 *)src;
    for (int i = 0; i < nb; i++, o += QK4_0) {
        const vfloat d = splat(bump_fp16_to_fp32(x[i].d));
        for (int j = 0; j < QK4_0 / 2; j += VW) {
            const vu8 b = load_bytes(x[i].qs + j);
            emit(y, xs, acc, o + j, TO_F(TO_I(b & 0x0f) - 8) * d);
            emit(y, xs, acc, o + j + QK4_0 / 2, TO_F(TO_I(b >> 4) - 8) * d);
        }
    }
}

static inline __attribute__((always_inline)) void deq_q4_1_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q4_1 *x = (const block_q4_1 *)src;
    for (int i = 0; i < nb; i++, o += QK4_1) {
        const vfloat d = splat(bump_fp16_to_fp32(x[i].d)), m = splat(bump_fp16_to_fp32(x[i].m));
        for (int j = 0; j < QK4_1 / 2; j += VW) {
            const vu8 b = load_bytes(x[i].qs + j);
            emit(y, xs, acc, o + j, TO_F(TO_I(b & 0x0f)) * d + m);
            emit(y, xs, acc, o + j + QK4_1 / 2, TO_F(TO_I(b >> 4)) * d + m);
        }
    }
}

/* The fifth bits of q5_0/q5_1 elements j.. and j + 16.., as 0 or 16. */
static inline void high_bits(const uint8_t qh_bytes[4], int j, vint *h0, vint *h1)
{
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    const vuint q = splat_u(qh), idx = lanes((uint32_t)j);
    *h0 = (vint)(((q >> idx) << 4) & 0x10);
    *h1 = (vint)((q >> (idx + 12)) & 0x10);
}

static inline __attribute__((always_inline)) void deq_q5_0_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q5_0 *x = (const block_q5_0 *)src;
    for (int i = 0; i < nb; i++, o += QK5_0) {
        const vfloat d = splat(bump_fp16_to_fp32(x[i].d));
        for (int j = 0; j < QK5_0 / 2; j += VW) {
            vint h0, h1;
            high_bits(x[i].qh, j, &h0, &h1);
            const vu8 b = load_bytes(x[i].qs + j);
            emit(y, xs, acc, o + j, TO_F((TO_I(b & 0x0f) | h0) - 16) * d);
            emit(y, xs, acc, o + j + QK5_0 / 2, TO_F((TO_I(b >> 4) | h1) - 16) * d);
        }
    }
}

static inline __attribute__((always_inline)) void deq_q5_1_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q5_1 *x = (const block_q5_1 *)src;
    for (int i = 0; i < nb; i++, o += QK5_1) {
        const vfloat d = splat(bump_fp16_to_fp32(x[i].d)), m = splat(bump_fp16_to_fp32(x[i].m));
        for (int j = 0; j < QK5_1 / 2; j += VW) {
            vint h0, h1;
            high_bits(x[i].qh, j, &h0, &h1);
            const vu8 b = load_bytes(x[i].qs + j);
            emit(y, xs, acc, o + j, TO_F(TO_I(b & 0x0f) | h0) * d + m);
            emit(y, xs, acc, o + j + QK5_1 / 2, TO_F(TO_I(b >> 4) | h1) * d + m);
        }
    }
}

static inline __attribute__((always_inline)) void deq_q8_0_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q8_0 *x = (const block_q8_0 *)src;
    for (int i = 0; i < nb; i++, o += QK8_0) {
        const vfloat d = splat(bump_fp16_to_fp32(x[i].d));
        for (int j = 0; j < QK8_0; j += VW) {
            vi8 q;
            memcpy(&q, x[i].qs + j, sizeof q);
            emit(y, xs, acc, o + j, TO_F(TO_I(q)) * d);
        }
    }
}

static inline __attribute__((always_inline)) void deq_q4_K_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q4_K *x = (const block_q4_K *)src;
    for (int i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = bump_fp16_to_fp32(x[i].d), min = bump_fp16_to_fp32(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2, o += 64) {
            uint8_t sc, m;
            bump_scale_min_k4(is, x[i].scales, &sc, &m);
            const vfloat d1 = splat(d * sc), m1 = splat(min * m);
            bump_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const vfloat d2 = splat(d * sc), m2 = splat(min * m);
            for (int l = 0; l < 32; l += VW) {
                const vu8 b = load_bytes(q + l);
                emit(y, xs, acc, o + l, d1 * TO_F(TO_I(b & 0x0f)) - m1);
                emit(y, xs, acc, o + l + 32, d2 * TO_F(TO_I(b >> 4)) - m2);
            }
        }
    }
}

static inline __attribute__((always_inline)) void deq_q5_K_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q5_K *x = (const block_q5_K *)src;
    for (int i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = bump_fp16_to_fp32(x[i].d), min = bump_fp16_to_fp32(x[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2, o += 64) {
            uint8_t sc, m;
            bump_scale_min_k4(is, x[i].scales, &sc, &m);
            const vfloat d1 = splat(d * sc), m1 = splat(min * m);
            bump_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const vfloat d2 = splat(d * sc), m2 = splat(min * m);
            for (int l = 0; l < 32; l += VW) {
                const vu8 b = load_bytes(ql + l), h = load_bytes(qh + l);
                const vu8 add1 = (vu8)((h & u1) != 0) & 16, add2 = (vu8)((h & u2) != 0) & 16;
                emit(y, xs, acc, o + l, d1 * TO_F(TO_I((vu8)((b & 0x0f) + add1))) - m1);
                emit(y, xs, acc, o + l + 32, d2 * TO_F(TO_I((vu8)((b >> 4) + add2))) - m2);
            }
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static inline __attribute__((always_inline)) void deq_q6_K_(const uint8_t *src, int nb, float *y,
                                                            const float *xs, vfloat *acc)
{
    size_t o = 0;
    const block_q6_K *x = (const block_q6_K *)src;
    for (int i = 0; i < nb; i++) {
        const float d = bump_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, o += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l += VW) {
                const int is = l / 16; /* VW <= 16: one sub-block scale per vector */
                const vint a = TO_I(load_bytes(ql + l)), b = TO_I(load_bytes(ql + l + 32));
                const vint h = TO_I(load_bytes(qh + l));
                const vint q1 = ((a & 0x0f) | (((h >> 0) & 3) << 4)) - 32;
                const vint q2 = ((b & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
                const vint q3 = ((a >> 4) | (((h >> 4) & 3) << 4)) - 32;
                const vint q4 = ((b >> 4) | (((h >> 6) & 3) << 4)) - 32;
                emit(y, xs, acc, o + l, splat(d * sc[is]) * TO_F(q1));
                emit(y, xs, acc, o + l + 32, splat(d * sc[is + 2]) * TO_F(q2));
                emit(y, xs, acc, o + l + 64, splat(d * sc[is + 4]) * TO_F(q3));
                emit(y, xs, acc, o + l + 96, splat(d * sc[is + 6]) * TO_F(q4));
            }
        }
    }
}

/* Each dequantizer is written once and used two ways: storing the values (GEMM panels,
 * embedding rows) or multiply-adding them straight into a GEMV accumulator, in registers. */
#define DEQ_PAIR(T)                                                                           \
    static void deq_##T(const uint8_t *src, int nb, float *y)                                 \
    {                                                                                         \
        deq_##T##_(src, nb, y, NULL, NULL);                                                   \
    }                                                                                         \
    static void dot_##T(const uint8_t *src, int nb, const float *x, vfloat *acc)              \
    {                                                                                         \
        deq_##T##_(src, nb, NULL, x, acc);                                                    \
    }
DEQ_PAIR(q4_0)
DEQ_PAIR(q4_1)
DEQ_PAIR(q5_0)
DEQ_PAIR(q5_1)
DEQ_PAIR(q8_0)
DEQ_PAIR(q4_K)
DEQ_PAIR(q5_K)
DEQ_PAIR(q6_K)

#endif
