/* kernels_int8.h - the kernels of products on int8 activations (llama.cpp's approach): GEMV
 * rows on every level, and the GEMM for prefill where the level has 512-bit VNNI. Which of them
 * a product runs is the level's type-traits table (kernels_impl.h, which includes this file:
 * this file sees only kernels_vec.h).
 *
 * The activation row is quantized once per call to int8 in blocks of 32 (d = max|x| / 127,
 * q = round-to-even(x / d), d kept as fp32, not fp16), and each weight row piece is unpacked
 * to int8 one 32-value chunk at a time and multiplied in integers (maddubs on AVX2, VNNI's
 * dpbusd where the level has it), so the float work is one multiply-add per 32 values. One
 * activation format serves every weight type: the K-quants' sub-blocks (32 values, or two
 * halves of 16 for q6_K) line up with its blocks, so a K-quant needs no q8_K (per-256) copy.
 * The result equals the fp32-activation product with x replaced by its int8 round trip (q * d)
 * up to fp32 summation order; fp32 weights keep the fp32 path.
 */
#ifndef BUMP_KERNELS_INT8_H
#define BUMP_KERNELS_INT8_H

#include "kernels_vec.h"

#define XB 32

/* The level has 512-bit VNNI: q4_0, q5_0 and q4_K rows take 64 values per instruction
 * (QROWS512), the activations are quantized 16 at a time, and prefill has an int8 GEMM
 * (qgemm). */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && VW == 16
#define INT8_512 1
#else
#define INT8_512 0
#endif

/* One block of quantized activations: sum = sum of qs (for the min terms of q4_1/q5_1/K). */
typedef struct {
    float d;
    int32_t sum;
    int8_t qs[XB];
} xq8;

/* Everything here is static and inlined within one level's file, so the 32-byte vector
 * arguments never cross an ABI boundary (the portable level has no 32-byte registers). */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));
/* The 32 weight values of one chunk, unpacked in registers (never through memory: a vector
 * load of bytes just stored one at a time stalls on store forwarding). */
typedef int8_t v32i8 __attribute__((vector_size(32)));
typedef uint8_t v32u8 __attribute__((vector_size(32)));

static inline v32u8 load32(const uint8_t *p)
{
    v32u8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The low nibbles of p[0..16) then their high nibbles (q4_0/q4_1/q5_0/q5_1 order). */
static inline v32u8 nibbles32(const uint8_t *p)
{
#if defined(__AVX2__)
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    return (v32u8)_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b),
                                   _mm256_set1_epi8(0x0f));
#else
    v32u8 v;
    for (int l = 0; l < 16; l++) {
        v[l] = p[l] & 0x0f;
        v[l + 16] = p[l] >> 4;
    }
    return v;
#endif
}

/* Byte e is 16 when bit e of the 32-bit little-endian word at p is set, else 0. */
static inline v32u8 bits32(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, sizeof w);
#if defined(__AVX2__)
    const __m256i bytes = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)w),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i set = _mm256_cmpeq_epi8(
        _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi8(-1));
    return (v32u8)_mm256_and_si256(set, _mm256_set1_epi8(16));
#else
    v32u8 v;
    for (int e = 0; e < 32; e++) v[e] = (uint8_t)(((w >> e) & 1) << 4);
    return v;
#endif
}

#if INT8_512
/* One block of 32 activations quantized as quantize_x's scalar arithmetic defines it (the same
 * d, and round-to-nearest-even of the same products), in registers: the GEMV quantizes its
 * activation row on one thread while the others wait, and the GEMM packs every row. */
static inline __attribute__((always_inline)) void quantize_block512(const float *x, __m128i *q,
                                                                    float *d, int32_t *sum)
{
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(
        _mm512_max_ps(_mm512_and_ps(v0, sign), _mm512_and_ps(v1, sign)));
    *d = amax / 127.0f;
    const __m512 vid = _mm512_set1_ps(*d != 0.0f ? 1.0f / *d : 0.0f);
    const __m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, vid),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, vid),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    q[0] = _mm512_cvtepi32_epi8(q0);
    q[1] = _mm512_cvtepi32_epi8(q1);
}
#endif

static void quantize_x(const float *x, int K, xq8 *out)
{
#if INT8_512
    for (int b = 0; b < K / XB; b++, x += XB) {
        __m128i q[2];
        quantize_block512(x, q, &out[b].d, &out[b].sum);
        _mm_storeu_si128((__m128i *)out[b].qs, q[0]);
        _mm_storeu_si128((__m128i *)(out[b].qs + 16), q[1]);
    }
#else
    for (int b = 0; b < K / XB; b++, x += XB) {
        float amax = 0.0f;
        for (int i = 0; i < XB; i++) amax = __builtin_fmaxf(amax, __builtin_fabsf(x[i]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < XB; i++) {
            const int q = (int)__builtin_roundevenf(x[i] * id);
            out[b].qs[i] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].sum = sum;
    }
#endif
}

/* Lane j of the result: sum over i in [4j, 4j + 4) of a[i] * b[i] (a: weights, any int8
 * value; b: activations, |b| <= 127). Lanes 0-3 cover values 0-15, lanes 4-7 values 16-31. */
static inline v8i dot32(v32i8 a, const int8_t *b)
{
#if defined(__AVX2__)
    const __m256i x = (__m256i)a;
    const __m256i y = _mm256_loadu_si256((const __m256i *)b);
    const __m256i ax = _mm256_sign_epi8(x, x), sy = _mm256_sign_epi8(y, x);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return (v8i)_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy);
#elif defined(__AVXVNNI__)
    return (v8i)_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy);
#else
    return (v8i)_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
#endif
#else
    v8i s;
    for (int j = 0; j < 8; j++) {
        int32_t t = 0;
        for (int i = 4 * j; i < 4 * j + 4; i++) t += (int32_t)a[i] * b[i];
        s[j] = t;
    }
    return s;
#endif
}

static inline v8f splat8(float s) { return (v8f){s, s, s, s, s, s, s, s}; }

/* acc + s * f, fused when the target has FMA. */
static inline v8f acc8(v8f acc, v8i s, float f)
{
    const v8f v = __builtin_convertvector(s, v8f);
#if defined(__FMA__)
    return (v8f)_mm256_fmadd_ps((__m256)v, (__m256)splat8(f), (__m256)acc);
#else
    return v * splat8(f) + acc;
#endif
}

/* The running sums of one row: acc (per-lane integer products times scales) and the min
 * terms (q4_1, q5_1, q4_K, q5_K), kept apart. Each function works on local copies (a store
 * through the pointer might alias the activations' float scales, so GCC would keep them in
 * memory). */
typedef struct {
    v8f acc;
    float mins;
} qsum;

/* One function per weight type: nb blocks at src against the activation blocks from x. */
static inline __attribute__((always_inline)) void qdot_q8_0(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const block_q8_0 *w = (const block_q8_0 *)src;
    for (int i = 0; i < nb; i++)
        acc = acc8(acc, dot32((v32i8)load32((const uint8_t *)w[i].qs), x[i].qs),
                      bump_fp16_to_fp32(w[i].d) * x[i].d);    s->acc = acc;
}

static inline __attribute__((always_inline)) void qdot_q4_0(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const block_q4_0 *w = (const block_q4_0 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = (v32i8)nibbles32(w[i].qs) - 8;
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
    s->acc = acc;
}

static inline __attribute__((always_inline)) void qdot_q4_1(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    float mins = s->mins;
    const block_q4_1 *w = (const block_q4_1 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = (v32i8)nibbles32(w[i].qs);
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
        mins += bump_fp16_to_fp32(w[i].m) * x[i].d * (float)x[i].sum;
    }
    s->acc = acc;
    s->mins = mins;
}

/* q5_0/q5_1 values 0..31 (before the q5_0 offset) of one block. */
static inline v32i8 unpack_q5(const uint8_t *qs, const uint8_t qh[4])
{
    return (v32i8)(nibbles32(qs) | bits32(qh));
}

static inline __attribute__((always_inline)) void qdot_q5_0(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const block_q5_0 *w = (const block_q5_0 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = unpack_q5(w[i].qs, w[i].qh) - 16;
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
    s->acc = acc;
}

static inline __attribute__((always_inline)) void qdot_q5_1(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    float mins = s->mins;
    const block_q5_1 *w = (const block_q5_1 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = unpack_q5(w[i].qs, w[i].qh);
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
        mins += bump_fp16_to_fp32(w[i].m) * x[i].d * (float)x[i].sum;
    }
    s->acc = acc;
    s->mins = mins;
}

/* q4_K and q5_K: sub-block c (32 values) is the low (c even) or high nibbles of
 * qs[32 * (c / 2) ..], plus bit c of qh[l] as 16 for q5_K. */
static inline void qdot_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float d,
                            float dmin, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    float mins = s->mins;
    const v32u8 high = qh ? load32(qh) : (v32u8){0};
    for (int c = 0; c < QK_K / 32; c++) {
        uint8_t sc, m;
        bump_scale_min_k4(c, scales, &sc, &m);
        const v32u8 q = load32(qs + 32 * (c / 2));
        const v32i8 t = (v32i8)((c % 2 ? q >> 4 : q & 0x0f) | (((high >> c) & 1) << 4));
        acc = acc8(acc, dot32(t, x[c].qs), d * sc * x[c].d);
        mins -= dmin * m * x[c].d * (float)x[c].sum;
    }
    s->acc = acc;
    s->mins = mins;
}

static inline __attribute__((always_inline)) void qdot_q4_K(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    const block_q4_K *w = (const block_q4_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, NULL, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

static inline __attribute__((always_inline)) void qdot_q5_K(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    const block_q5_K *w = (const block_q5_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, w[i].qh, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

/* q6_K: chunk c = 4h + p of a block reads ql[64h + 32(p & 1) + l] (low nibble for p < 2),
 * bits 2p of qh[32h + l], and scales sc[8h + 2p] (values 0-15), sc[8h + 2p + 1] (16-31). */
static inline __attribute__((always_inline)) void qdot_q6_K(const uint8_t *src, int nb,
                                                            const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const block_q6_K *w = (const block_q6_K *)src;
    for (int i = 0; i < nb; i++) {
        const float d = bump_fp16_to_fp32(w[i].d);
        for (int c = 0; c < QK_K / 32; c++, x++) {
            const int h = c / 4, p = c % 4;
            const uint8_t *ql = w[i].ql + 64 * h + 32 * (p & 1), *qh = w[i].qh + 32 * h;
            const v32u8 lo = load32(ql), hb = load32(qh);
            const v32i8 t = (v32i8)((p < 2 ? lo & 0x0f : lo >> 4) | (((hb >> (2 * p)) & 3) << 4))
                            - 32;
            const int32_t s0 = w[i].scales[8 * h + 2 * p], s1 = w[i].scales[8 * h + 2 * p + 1];
            const v8i sc = {s0, s0, s0, s0, s1, s1, s1, s1};
            acc = acc8(acc, dot32(t, x->qs) * sc, d * x->d);
        }
    }
    s->acc = acc;
}

/* The sum of the 8 lanes, in registers. */
static inline float hsum8(v8f v)
{
#if defined(__AVX__)
    __m128 a = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
#else
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
#endif
}

/* The activations of one GEMV on int8: per block (quantize_x), and for the 512-bit rows also
 * the values contiguous with, per lane of 4 values, its block's scale and -8 x the lane's sum
 * (the q4_0 offset's share, which the lane's integer sum starts from). */
typedef struct xacts {
    const xq8 *b;
#if INT8_512
    const int8_t *qs;
    const float *d;
    const int32_t *off4;
#endif
} xacts;

/* Bytes of xacts for nb blocks, and xacts built in `mem` (64-byte aligned) from x. */
static size_t xacts_bytes(int nb)
{
    return (size_t)nb * (sizeof(xq8) + (INT8_512 ? XB + 2 * (XB / 4) * 4 : 0));
}

static xacts xacts_build(const float *x, int K, unsigned char *mem)
{
    xq8 *b = (xq8 *)mem;
    quantize_x(x, K, b);
    xacts a = {.b = b};
#if INT8_512
    const int nb = K / XB;
    int8_t *qs = (int8_t *)(b + nb);
    float *d = (float *)(qs + (size_t)nb * XB);
    int32_t *off4 = (int32_t *)(d + (size_t)nb * (XB / 4));
    for (int i = 0; i < nb; i++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)b[i].qs);
        _mm256_storeu_si256((__m256i *)(qs + (size_t)i * XB), q);
        _mm256_storeu_ps(d + i * (XB / 4), _mm256_set1_ps(b[i].d));
        const __m256i sum4 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q);
        _mm256_storeu_si256((__m256i *)(off4 + i * (XB / 4)), _mm256_slli_epi32(
                                _mm256_sub_epi32(_mm256_setzero_si256(), sum4), 3));
    }
    a.qs = qs, a.d = d, a.off4 = off4;
#endif
    return a;
}

typedef void (*qrows_fn)(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0,
                         int n1, float *out);

/* Rows [n0, n1) of a quantized matrix against the quantized activations, one function per
 * weight type with its block loop inlined: a decode row is short (SmolLM2: 18 blocks), so a
 * call, and a round trip of the sums through memory, per row would cost as much as the row. */
#define QROWS(T)                                                                              \
    static void qrows_##T(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0, \
                          int n1, float *out)                                                 \
    {                                                                                         \
        for (int n = n0; n < n1; n++) {                                                       \
            qsum s = {{0}, 0.0f};                                                             \
            const size_t re = row_elem(w, n);                                                 \
            for (int k0 = 0; k0 < K; k0 += w->k_seg) {                                        \
                const int len = min_int(w->k_seg, K - k0);                                    \
                qdot_##T(block_at(w, r, re + col_elem(w, k0)), len / r->be, x->b + k0 / XB,   \
                         &s);                                                                 \
            }                                                                                 \
            out[n] = hsum8(s.acc) + s.mins;                                                   \
        }                                                                                     \
    }
/* qrows_<type>: the level's int8 decode rows of each type (the type-traits table's entry);
 * q4_0, q5_0 and q4_K take the 512-bit rows below where the level has them. */
QROWS(q8_0)
QROWS(q4_1)
QROWS(q5_1)
QROWS(q5_K)
QROWS(q6_K)
#if !INT8_512
QROWS(q4_0)
QROWS(q5_0)
QROWS(q4_K)
#endif

#if INT8_512
/* Two consecutive blocks of a 4-bit type (`bytes` each, fp16 scale first, nibbles at `qs_at`)
 * at src against activation values 64 at blk: the nibbles as unsigned bytes (ORed with `high`,
 * the fifth bits of q5_0) times the signed activations in one vpdpbusd, which starts from
 * 2^shift x -8 x the activations' lane sums (x->off4: the offset, -8 for q4_0, -16 for q5_0),
 * then one fp32 multiply-add with the two blocks' scales (both fp16 scales picked out of one
 * 32-byte load). Half the instructions of two 256-bit blocks. (Four rows at a time, sharing
 * the activation loads, ran 28 % faster from cache but no faster from memory in decode, so
 * rows go one at a time.) */
static inline __attribute__((always_inline)) __m512 qdot2_nibbles(const uint8_t *src, int bytes,
                                                                  int qs_at, __m512i high,
                                                                  int shift, const xacts *x,
                                                                  int blk, __m512 acc)
{
    const __m256i y = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(src + qs_at))),
        _mm_loadu_si128((const __m128i *)(src + bytes + qs_at)), 1);
    const __m256i lo = _mm256_and_si256(y, _mm256_set1_epi8(0x0f));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(y, 4), _mm256_set1_epi8(0x0f));
    /* [low nibbles of block 0, its high nibbles, block 1's low, its high]: element order */
    const __m512i q = _mm512_or_si512(
        high, _mm512_permutex2var_epi64(_mm512_castsi256_si512(lo),
                                        _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0),
                                        _mm512_castsi256_si512(hi)));
    const __m512i init = _mm512_slli_epi32(_mm512_loadu_si512(x->off4 + blk * (XB / 4)), shift);
    const __m512i isum = _mm512_dpbusd_epi32(init, q, _mm512_loadu_si512(x->qs + blk * XB));
    const short second = (short)(bytes / 2); /* the 16-bit word of block 1's scale */
    const __m256i words = _mm256_permutexvar_epi16(
        _mm256_set_epi16(second, second, second, second, second, second, second, second,
                         0, 0, 0, 0, 0, 0, 0, 0),
        _mm256_loadu_si256((const __m256i *)src));
    const __m512 scale = _mm512_mul_ps(_mm512_cvtph_ps(words), _mm512_loadu_ps(x->d + blk * (XB / 4)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc);
}

static inline __attribute__((always_inline)) __m512 qdot2_q4_0(const uint8_t *src,
                                                               const xacts *x, int blk,
                                                               __m512 acc)
{
    return qdot2_nibbles(src, sizeof(block_q4_0), offsetof(block_q4_0, qs),
                         _mm512_setzero_si512(), 0, x, blk, acc);
}

/* q5_0: the 64 bits of the two qh words are, in element order, a byte mask that ORs 16 into
 * the nibbles (one masked move, no per-byte shuffle and compare as in the 256-bit unpack). */
static inline __attribute__((always_inline)) __m512 qdot2_q5_0(const uint8_t *src,
                                                               const xacts *x, int blk,
                                                               __m512 acc)
{
    uint32_t h0, h1;
    memcpy(&h0, src + offsetof(block_q5_0, qh), sizeof h0);
    memcpy(&h1, src + sizeof(block_q5_0) + offsetof(block_q5_0, qh), sizeof h1);
    const __m512i high = _mm512_maskz_mov_epi8((__mmask64)h1 << 32 | h0, _mm512_set1_epi8(16));
    return qdot2_nibbles(src, sizeof(block_q5_0), offsetof(block_q5_0, qs), high, 1, x, blk,
                         acc);
}

/* Rows [n0, n1) of a q4_0 or q5_0 matrix, two blocks per step (qdot2_*), a segment's odd last
 * block through the 256-bit qdot_*. */
#define QROWS512(T)                                                                           \
    static void qrows_##T(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0, \
                          int n1, float *out)                                                 \
    {                                                                                         \
        for (int n = n0; n < n1; n++) {                                                       \
            __m512 acc = _mm512_setzero_ps();                                                 \
            qsum s = {{0}, 0.0f};                                                             \
            const size_t re = row_elem(w, n);                                                 \
            for (int k0 = 0; k0 < K; k0 += w->k_seg) {                                        \
                const int nb = min_int(w->k_seg, K - k0) / XB, b0 = k0 / XB;                  \
                const uint8_t *src = block_at(w, r, re + col_elem(w, k0));                    \
                int i = 0;                                                                    \
                for (; i + 2 <= nb; i += 2)                                                   \
                    acc = qdot2_##T(src + (size_t)i * sizeof(block_##T), x, b0 + i, acc);     \
                if (i < nb)                                                                   \
                    qdot_##T(src + (size_t)i * sizeof(block_##T), 1, x->b + b0 + i, &s);      \
            }                                                                                 \
            out[n] = _mm512_reduce_add_ps(acc) + hsum8(s.acc);                                \
        }                                                                                     \
    }
QROWS512(q4_0)
QROWS512(q5_0)

/* One q4_K block against the activations from 32-block blk: its sub-blocks two at a time (the
 * low and high nibbles of 32 bytes are sub-blocks 2j and 2j + 1, one 512-bit vector of unsigned
 * values, so no sign trick), scales d * sc per half of the vector; the min terms in `mins`. */
static inline __attribute__((always_inline)) __m512 qdot512_q4_K(const block_q4_K *w,
                                                                 const xacts *x, int blk,
                                                                 __m512 acc, float *mins)
{
    const float d = bump_fp16_to_fp32(w->d), dmin = bump_fp16_to_fp32(w->dmin);
    for (int j = 0; j < QK_K / 64; j++) {
        uint8_t sc0, m0, sc1, m1;
        bump_scale_min_k4(2 * j, w->scales, &sc0, &m0);
        bump_scale_min_k4(2 * j + 1, w->scales, &sc1, &m1);
        const int b = blk + 2 * j;
        const __m256i y = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * j));
        const __m512i q = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_and_si256(y, _mm256_set1_epi8(0x0f))),
            _mm256_and_si256(_mm256_srli_epi16(y, 4), _mm256_set1_epi8(0x0f)), 1);
        const __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q,
                                                 _mm512_loadu_si512(x->qs + (size_t)b * XB));
        const __m512 s = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(d * sc0)),
                                            _mm256_set1_ps(d * sc1), 1);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                              _mm512_mul_ps(s, _mm512_loadu_ps(x->d + b * (XB / 4))), acc);
        *mins -= dmin * m0 * x->b[b].d * (float)x->b[b].sum;
        *mins -= dmin * m1 * x->b[b + 1].d * (float)x->b[b + 1].sum;
    }
    return acc;
}

static void qrows_q4_K(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0,
                       int n1, float *out)
{
    for (int n = n0; n < n1; n++) {
        __m512 acc = _mm512_setzero_ps();
        float mins = 0.0f;
        const size_t re = row_elem(w, n);
        for (int k0 = 0; k0 < K; k0 += w->k_seg) {
            const block_q4_K *src = (const block_q4_K *)block_at(w, r, re + col_elem(w, k0));
            const int nb = min_int(w->k_seg, K - k0) / QK_K;
            for (int i = 0; i < nb; i++)
                acc = qdot512_q4_K(src + i, x, k0 / XB + i * (QK_K / XB), acc, &mins);
        }
        out[n] = _mm512_reduce_add_ps(acc) + mins;
    }
}
#endif

/* ---------------------------------------------------------------------------------------- */
/* int8 GEMM (prefill on int8 activations), where the level has 512-bit VNNI                 */

/* The int8 GEMM's kernels for one weight type, the type-traits table's entry: the panel
 * packer (weight rows unpacked to int8 with their scales) and the tile (activation rows times
 * one panel, with the min terms for the types that have a min). {NULL, NULL} where the level
 * has no int8 GEMM for the type. */
typedef struct qpanel_blk qpanel_blk;
typedef void (*qpack_fn)(const bump_wmat *w, const reader *r, int n0, int nv, int K,
                         qpanel_blk *out);
typedef void (*qtile_fn)(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx,
                         const float *dxs, int mpad, int m0, int mv, int nv, float *out,
                         size_t ldc);
typedef struct {
    qpack_fn pack;
    qtile_fn tile;
} qgemm_kernels;

#if INT8_512
/* llama.cpp's repacked-weights approach, written for this runtime's views: each thread owns a
 * run of QNR-row weight panels; a panel is unpacked once per call to int8 in the order the
 * VNNI instruction wants it (for every 4 columns, 4 bytes of each of the QNR rows: one vector),
 * with per row and 32-block the fp32 scale, the min coefficient and a correction term. The
 * activations are quantized per block of 32 exactly as quantize_x does and stored as unsigned
 * bytes (q + 128), so one vpdpbusd (unsigned x signed) multiplies 4 columns of QNR rows with a
 * broadcast activation word, and the +128 comes back out through the correction
 * -128 * sum(weights) that each block's integer accumulator starts from. A block's integer
 * sum then becomes fp32 once: acc += float(isum) * dx * dw (+ mw * dx * sum(q)).
 * Weight types with one scale per 32 values (and an optional min) take this path; q6_K (a
 * scale per 16) and fp32 weights take the fp32 GEMM. */
#define QGEMM 1
#define QNR 16
#define QMR 12

struct qpanel_blk {
    int8_t qs[XB / 4][QNR][4]; /* column group g, row j: columns 4g..4g+3 */
    int32_t corr[QNR];         /* -128 * sum of the row's 32 values */
    float d[QNR];              /* value = d * q + m */
    float m[QNR];
};

/* Bytes of one thread's int8 GEMM scratch: the quantized activations (Mpad rows) and one
 * weight panel over the whole of K. */
static size_t qgemm_scratch_bytes(int M, int K)
{
    const size_t mpad = (size_t)(M + QMR - 1) / QMR * QMR, nb = (size_t)K / XB;
    return nb * sizeof(qpanel_blk) + mpad * (size_t)K + 2 * mpad * nb * sizeof(float);
}

/* unpack_<type>: the 32 values of 32-block t of a row piece at src as signed bytes, with their
 * scale and min coefficient (value = d * q + m, as ggml's dequantizer computes it up to fp32
 * rounding). */
static inline __attribute__((always_inline)) v32i8 unpack_q8_0(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q8_0 *w = (const block_q8_0 *)src + t;
    *d = bump_fp16_to_fp32(w->d);
    *m = 0.0f;
    return (v32i8)load32((const uint8_t *)w->qs);
}

static inline __attribute__((always_inline)) v32i8 unpack_q4_0(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q4_0 *w = (const block_q4_0 *)src + t;
    *d = bump_fp16_to_fp32(w->d);
    *m = 0.0f;
    return (v32i8)nibbles32(w->qs) - 8;
}

static inline __attribute__((always_inline)) v32i8 unpack_q4_1(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q4_1 *w = (const block_q4_1 *)src + t;
    *d = bump_fp16_to_fp32(w->d);
    *m = bump_fp16_to_fp32(w->m);
    return (v32i8)nibbles32(w->qs);
}

static inline __attribute__((always_inline)) v32i8 unpack_q5_0(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q5_0 *w = (const block_q5_0 *)src + t;
    *d = bump_fp16_to_fp32(w->d);
    *m = 0.0f;
    return unpack_q5(w->qs, w->qh) - 16;
}

static inline __attribute__((always_inline)) v32i8 unpack_q5_1(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q5_1 *w = (const block_q5_1 *)src + t;
    *d = bump_fp16_to_fp32(w->d);
    *m = bump_fp16_to_fp32(w->m);
    return unpack_q5(w->qs, w->qh);
}

/* q4_K, q5_K (qh NULL for q4_K): sub-block c of a block, as qdot_k45 reads it. */
static inline __attribute__((always_inline)) v32i8
unpack_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, ggml_half hd,
           ggml_half hmin, int c, float *d, float *m)
{
    uint8_t sc, mn;
    bump_scale_min_k4(c, scales, &sc, &mn);
    *d = bump_fp16_to_fp32(hd) * sc;
    *m = -(bump_fp16_to_fp32(hmin) * mn);
    const v32u8 q = load32(qs + 32 * (c / 2));
    const v32u8 high = qh ? ((load32(qh) >> c) & 1) << 4 : (v32u8){0};
    return (v32i8)((c % 2 ? q >> 4 : q & 0x0f) | high);
}

static inline __attribute__((always_inline)) v32i8 unpack_q4_K(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q4_K *w = (const block_q4_K *)src + t / (QK_K / XB);
    return unpack_k45(w->scales, w->qs, NULL, w->d, w->dmin, t % (QK_K / XB), d, m);
}

static inline __attribute__((always_inline)) v32i8 unpack_q5_K(const uint8_t *src, int t,
                                                               float *d, float *m)
{
    const block_q5_K *w = (const block_q5_K *)src + t / (QK_K / XB);
    return unpack_k45(w->scales, w->qs, w->qh, w->d, w->dmin, t % (QK_K / XB), d, m);
}

/* Rows n0.. (nv of them; the rest of the panel zero) of one job over all of K, unpacked:
 * written once, instantiated per type with its unpack_<type> inlined (QPACK). */
static inline __attribute__((always_inline)) void
qpack_panel_(const bump_wmat *w, const reader *r, int n0, int nv, int K, qpanel_blk *out,
             v32i8 (*unpack)(const uint8_t *src, int t, float *d, float *m))
{
    const int nb = K / XB;
    for (int j = 0; j < QNR; j++) {
        if (j >= nv) {
            for (int b = 0; b < nb; b++) {
                for (int g = 0; g < XB / 4; g++) memset(out[b].qs[g][j], 0, 4);
                out[b].corr[j] = 0;
                out[b].d[j] = out[b].m[j] = 0.0f;
            }
            continue;
        }
        const size_t re = row_elem(w, n0 + j);
        if (j + 2 < nv) { /* rows are short and scattered: ask for a later one early */
            const uint8_t *ahead = block_at(w, r, row_elem(w, n0 + j + 2));
            const size_t bytes = (size_t)min_int(w->k_seg, K) / (size_t)r->be * r->bb;
            for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(ahead + o);
        }
        int b = 0;
        for (int k0 = 0; k0 < K; k0 += w->k_seg) {
            const int len = min_int(w->k_seg, K - k0);
            const uint8_t *src = block_at(w, r, re + col_elem(w, k0));
            for (int t = 0; t < len / XB; t++, b++) {
                float d, m;
                const v32i8 q = unpack(src, t, &d, &m);
                const __m256i v = (__m256i)q;
                int32_t words[XB / 4];
                memcpy(words, &q, sizeof words);
                for (int g = 0; g < XB / 4; g++) memcpy(out[b].qs[g][j], &words[g], 4);
                /* sum of the 32 signed bytes: (1 x q) pairs, then pairs of those */
                const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
                const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
                const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s32),
                                                _mm256_extracti128_si256(s32, 1));
                const __m128i h2 = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
                const __m128i h3 = _mm_add_epi32(h2, _mm_shuffle_epi32(h2, 0xb1));
                out[b].corr[j] = -128 * _mm_cvtsi128_si32(h3);
                out[b].d[j] = d;
                out[b].m[j] = m;
            }
        }
    }
}

#define QPACK(T)                                                                              \
    static void qpack_##T(const bump_wmat *w, const reader *r, int n0, int nv, int K,         \
                          qpanel_blk *out)                                                    \
    {                                                                                         \
        qpack_panel_(w, r, n0, nv, K, out, unpack_##T);                                       \
    }
QPACK(q8_0)
QPACK(q4_0)
QPACK(q4_1)
QPACK(q5_0)
QPACK(q5_1)
QPACK(q4_K)
QPACK(q5_K)

/* Rows of in[M][K] quantized per block of 32 (quantize_block512) into
 * xq [nb][mpad][32] as q + 128, with dx [nb][mpad] = d and dxs = d * sum(q); rows M..mpad are
 * zeros (byte 128, scales 0). */
static void qpack_acts(const float *in, size_t lda, int M, int mpad, int K, uint8_t *xq,
                       float *dx, float *dxs)
{
    const int nb = K / XB;
    for (int i = 0; i < mpad; i++) {
        const float *x = in + (size_t)i * lda;
        for (int b = 0; b < nb; b++) {
            uint8_t *dst = xq + ((size_t)b * mpad + i) * XB;
            const size_t o = (size_t)b * mpad + i;
            if (i >= M) {
                memset(dst, 128, XB);
                dx[o] = dxs[o] = 0.0f;
                continue;
            }
            __m128i q[2];
            float d;
            int32_t sum;
            quantize_block512(x + b * XB, q, &d, &sum);
            const __m128i off = _mm_set1_epi8((char)0x80);
            _mm_storeu_si128((__m128i *)dst, _mm_xor_si128(q[0], off));
            _mm_storeu_si128((__m128i *)(dst + 16), _mm_xor_si128(q[1], off));
            dx[o] = d;
            dxs[o] = d * (float)sum;
        }
    }
}

/* out[i][0..nv) for the QMR activation rows from m0 (mv of them real) against one panel. */
static inline __attribute__((always_inline)) void
qgemm_tile_(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx, const float *dxs,
            int mpad, int m0, int mv, int nv, float *out, size_t ldc, int has_min)
{
    __m512 acc[QMR];
    for (int i = 0; i < QMR; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const qpanel_blk *p = wp + b;
        const uint8_t *xb = xq + ((size_t)b * mpad + m0) * XB;
        const __m512i corr = _mm512_loadu_si512(p->corr);
        __m512i isum[QMR];
        for (int i = 0; i < QMR; i++) isum[i] = corr;
#pragma GCC unroll 8
        for (int g = 0; g < XB / 4; g++) {
            const __m512i wv = _mm512_loadu_si512(p->qs[g]);
#pragma GCC unroll 16
            for (int i = 0; i < QMR; i++) {
                int32_t word;
                memcpy(&word, xb + i * XB + 4 * g, 4);
                isum[i] = _mm512_dpbusd_epi32(isum[i], _mm512_set1_epi32(word), wv);
            }
        }
        const __m512 d = _mm512_loadu_ps(p->d);
        const float *sx = dx + (size_t)b * mpad + m0;
#pragma GCC unroll 16
        for (int i = 0; i < QMR; i++)
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum[i]),
                                                   _mm512_set1_ps(sx[i])), d, acc[i]);
        if (has_min) {
            const __m512 mn = _mm512_loadu_ps(p->m);
            const float *ss = dxs + (size_t)b * mpad + m0;
#pragma GCC unroll 16
            for (int i = 0; i < QMR; i++) acc[i] = _mm512_fmadd_ps(mn, _mm512_set1_ps(ss[i]), acc[i]);
        }
    }
    const __mmask16 keep = (__mmask16)((1u << nv) - 1u);
    for (int i = 0; i < mv; i++) _mm512_mask_storeu_ps(out + (size_t)i * ldc, keep, acc[i]);
}

static void qgemm_tile(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx,
                       const float *dxs, int mpad, int m0, int mv, int nv, float *out,
                       size_t ldc)
{
    qgemm_tile_(wp, nb, xq, dx, dxs, mpad, m0, mv, nv, out, ldc, 0);
}

static void qgemm_tile_min(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx,
                           const float *dxs, int mpad, int m0, int mv, int nv, float *out,
                           size_t ldc)
{
    qgemm_tile_(wp, nb, xq, dx, dxs, mpad, m0, mv, nv, out, ldc, 1);
}

typedef struct {
    const bump_matmul_job *jobs;
    const float *in;
    size_t lda;
    int njobs, M, K, npanels;
    int panels[BUMP_MAX_JOBS];
    reader rd[BUMP_MAX_JOBS];
    qgemm_kernels k[BUMP_MAX_JOBS];
    const bump_gemm_scratch *s;
} qgemm_ctx;

/* One chunk of panels, on whichever thread claimed it: its own copy of the quantized activations
 * (small next to the weights, and no barrier between quantizing and multiplying), then each
 * panel unpacked once and multiplied by every row. */
static void qgemm_work(void *arg, long q0, long q1, int tid)
{
    const qgemm_ctx *c = arg;
    const int M = c->M, K = c->K, nb = K / XB, mpad = (M + QMR - 1) / QMR * QMR;
    uint8_t *base = (uint8_t *)(c->s->pack + (size_t)tid * c->s->floats_per_thread);
    qpanel_blk *wp = (qpanel_blk *)base;
    uint8_t *xq = base + (size_t)nb * sizeof(qpanel_blk);
    float *dx = (float *)(xq + (size_t)mpad * K), *dxs = dx + (size_t)mpad * nb;
    qpack_acts(c->in, c->lda, M, mpad, K, xq, dx, dxs);
    for (long q = q0; q < q1; q++) {
        int local = (int)q, j = locate(c->panels, c->njobs, &local);
        const bump_matmul_job *job = &c->jobs[j];
        const int n0 = local * QNR, nv = min_int(QNR, job->N - n0);
        c->k[j].pack(&job->w, &c->rd[j], n0, nv, K, wp);
        for (int m0 = 0; m0 < M; m0 += QMR)
            c->k[j].tile(wp, nb, xq, dx, dxs, mpad, m0, min_int(QMR, M - m0), nv,
                         job->out + (size_t)m0 * job->ldc + n0, job->ldc);
    }
}

/* One int8 GEMM call over the jobs, job j's weights read through rd[j] with the kernels k[j]
 * of their type (the caller has checked that the level has them). */
static void qgemm(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                  int K, const bump_gemm_scratch *s, const reader *rd, const qgemm_kernels *k)
{
    qgemm_ctx c = {.jobs = jobs, .in = in, .lda = lda, .njobs = njobs, .M = M, .K = K, .s = s};
    for (int j = 0; j < njobs; j++) {
        c.npanels += c.panels[j] = (jobs[j].N + QNR - 1) / QNR;
        c.rd[j] = rd[j];
        c.k[j] = k[j];
    }
    run_parallel(s, qgemm_work, &c, c.npanels, chunk_of(s, c.npanels, 1, 1));
}

#define QGEMM_OF(T, tile) {qpack_##T, tile}
#else
#define QGEMM 0
#define QGEMM_OF(T, tile) QGEMM_NONE
#endif
/* The type-traits table's int8 GEMM entry: QGEMM_OF(type, tile) names the type's panel packer
 * and its tile (qgemm_tile_min for a type with a min), and is empty where the level has no
 * int8 GEMM; QGEMM_NONE for a type the int8 GEMM reads at no level. */
#define QGEMM_NONE {NULL, NULL}

#endif
