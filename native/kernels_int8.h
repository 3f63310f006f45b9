/* kernels_int8.h - the kernels of products on int8 activations (llama.cpp's approach): GEMV
 * rows on every level, and the GEMM for prefill on every x86 level (512-bit with 512-bit VNNI,
 * 256-bit below it). Which of them a product runs is the level's type-traits table
 * (kernels_impl.h, which includes this file: this file sees only kernels_vec.h).
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
/* The level has AVX2 (every x86 level): the decode rows of the types INT8_512 does not take
 * are the 256-bit ones below (unsigned weight bytes against the signed activations, offsets and
 * scales in integers where they are integers), and without 512-bit VNNI prefill has the
 * 256-bit int8 GEMM. The portable level keeps the generic rows (qdot_*). */
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define INT8_256 1
#else
#define INT8_256 0
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
    /* the 16 bytes in both halves (a load), the upper half shifted by 4 bits per dword */
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return (v32u8)_mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
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

#if INT8_256
/* The same in 256-bit registers: q holds the 32 values in element order. */
static inline __attribute__((always_inline)) void quantize_block256(const float *x, __m256i *q,
                                                                    float *d, int32_t *sum)
{
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v[4];
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 m8 = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], sign), _mm256_and_ps(v[1], sign)),
                                    _mm256_max_ps(_mm256_and_ps(v[2], sign), _mm256_and_ps(v[3], sign)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    *d = _mm_cvtss_f32(m4) / 127.0f;
    const __m256 vid = _mm256_set1_ps(*d != 0.0f ? 1.0f / *d : 0.0f);
    __m256i qi[4];
    for (int k = 0; k < 4; k++)
        qi[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], vid),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    *sum = _mm_cvtsi128_si32(s4);
    /* packs work per 128-bit half: the words come out as 0-3 8-11 16-19 24-27 4-7 12-15 ... */
    const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]),
                                         _mm256_packs_epi32(qi[2], qi[3]));
    *q = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
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
#elif INT8_256
    for (int b = 0; b < K / XB; b++, x += XB) {
        __m256i q;
        quantize_block256(x, &q, &out[b].d, &out[b].sum);
        _mm256_storeu_si256((__m256i *)out[b].qs, q);
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

/* The activations of one GEMV on int8: per block (quantize_x), and for the vector rows also
 * the values contiguous and aligned, and per block the integer and float sums the rows start
 * from or add: its scale in 8 lanes (d), per lane of 4 values -8 x their sum (off4: the q4_0
 * offset's share, which the lane's integer sum starts from; q5_0's is twice it) and d x their
 * sum (s4: the min terms of q4_1/q5_1, lane by lane), per pair of values -32 x their sum
 * (off2, int16: q6_K's offset), and d x the block's sum (ds: the K-quants' min terms, eight
 * sub-blocks a vector). */
typedef struct xacts {
    const xq8 *b;
#if INT8_256
    const int8_t *qs;
    const float *d;
    const int32_t *off4;
    const float *s4;
    const int16_t *off2;
    const float *ds;
#endif
} xacts;

/* Bytes of xacts per block, and xacts built in `mem` (64-byte aligned) from x. */
#define XACTS_BLOCK_BYTES (sizeof(xq8) + (INT8_256 ? 5 * XB + sizeof(float) : 0))

static xacts xacts_build(const float *x, int K, unsigned char *mem)
{
    const int nb = K / XB;
#if INT8_256
    /* the 32-byte arrays first (aligned), then ds, then the blocks */
    int8_t *qs = (int8_t *)mem;
    float *d = (float *)(qs + (size_t)nb * XB);
    int32_t *off4 = (int32_t *)(d + (size_t)nb * 8);
    float *s4 = (float *)(off4 + (size_t)nb * 8);
    int16_t *off2 = (int16_t *)(s4 + (size_t)nb * 8);
    float *ds = (float *)(off2 + (size_t)nb * 16);
    xq8 *b = (xq8 *)(ds + nb);
    quantize_x(x, K, b);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int i = 0; i < nb; i++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)b[i].qs);
        _mm256_store_si256((__m256i *)(qs + (size_t)i * XB), q);
        _mm256_store_ps(d + i * 8, _mm256_set1_ps(b[i].d));
        const __m256i sum2 = _mm256_maddubs_epi16(ones8, q), sum4 = _mm256_madd_epi16(sum2, ones16);
        _mm256_store_si256((__m256i *)(off4 + i * 8),
                           _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum4, 3)));
        _mm256_store_ps(s4 + i * 8, _mm256_mul_ps(_mm256_cvtepi32_ps(sum4), _mm256_set1_ps(b[i].d)));
        _mm256_store_si256((__m256i *)(off2 + i * 16),
                           _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sum2, 5)));
        ds[i] = b[i].d * (float)b[i].sum;
    }
    return (xacts){.b = b, .qs = qs, .d = d, .off4 = off4, .s4 = s4, .off2 = off2, .ds = ds};
#else
    xq8 *b = (xq8 *)mem;
    quantize_x(x, K, b);
    (void)nb;
    return (xacts){.b = b};
#endif
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
        row_walk it = row_walk_at(w, r, n0);                                                  \
        for (int n = n0; n < n1; n++, row_walk_next(&it)) {                                   \
            qsum s = {{0}, 0.0f};                                                             \
            const uint8_t *src = it.row;                                                      \
            for (int k0 = 0; k0 < K; k0 += w->k_seg, src += it.k_stride) {                    \
                const int len = min_int(w->k_seg, K - k0);                                    \
                qdot_##T(src, len / r->be, x->b + k0 / XB, &s);                               \
            }                                                                                 \
            out[n] = hsum8(s.acc) + s.mins;                                                   \
        }                                                                                     \
    }
/* qrows_<type>: the level's int8 decode rows of each type (the type-traits table's entry):
 * these generic ones on the portable level, the 256-bit ones below on x86, and for q4_0, q5_0
 * and q4_K the 512-bit ones where the level has 512-bit VNNI. */
#if !INT8_256
QROWS(q8_0)
QROWS(q4_0)
QROWS(q4_1)
QROWS(q5_0)
QROWS(q5_1)
QROWS(q4_K)
QROWS(q5_K)
QROWS(q6_K)
#else
/* The 256-bit rows. The weights are unpacked to *unsigned* bytes (q4_0's nibbles 0..15, not
 * -8..7; q5's 0..31; q6_K's 0..63) and multiplied with the signed activations as they are
 * (maddubs, or VNNI's dpbusd): no sign instructions, and no saturation (a pair of products is
 * at most 2 x 63 x 127). What the offset (-8, -16, -32) takes back out is an integer the
 * activations bring along (xacts: off4, off2), which the integer sum starts from; the K-quants'
 * 6-bit and q6_K's 8-bit scales multiply in integers too (madd with the scale instead of 1),
 * so a 32-value chunk costs one fp32 multiply-add with its activation scale and the block's
 * fp16 scale applies once per block. Only q8_0 (signed bytes, up to 128) keeps the sign trick.
 * Each row alternates two accumulators, so the multiply-add chain does not bound a short
 * block's throughput. */
#define AI inline __attribute__((always_inline))

/* The column segments of a row, counted once per call: n segments of `blocks` blocks of `be`
 * values (the last one `last`), `stride` bytes apart. */
typedef struct {
    int n, blocks, last;
    size_t stride;
} seg_walk;

static inline seg_walk seg_walk_of(const bump_wmat *w, const row_walk *it, int K, int be)
{
    const int n = (K + w->k_seg - 1) / w->k_seg;
    return (seg_walk){.n = n, .blocks = min_int(w->k_seg, K) / be,
                      .last = (K - (n - 1) * w->k_seg) / be, .stride = it->k_stride};
}

/* The fp16 scale at p in 8 lanes. */
static AI __m256 half8(const void *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* init + (per lane of 4) sum of u * x: u unsigned bytes up to 63, x the activations. */
static AI __m256i udot(__m256i init, __m256i u, __m256i x)
{
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(init, u, x);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(init, u, x);
#else
    return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x),
                                                    _mm256_set1_epi16(1)));
#endif
}

/* The activation values, scale and offsets of 32-block b. */
static AI __m256i xqs(const xacts *x, size_t b)
{
    return _mm256_load_si256((const __m256i *)(x->qs + b * XB));
}
static AI __m256 xd(const xacts *x, size_t b) { return _mm256_load_ps(x->d + b * 8); }
static AI __m256i xoff4(const xacts *x, size_t b)
{
    return _mm256_load_si256((const __m256i *)(x->off4 + b * 8));
}

/* acc + isum x (weight scale x activation scale of block b) */
static AI __m256 scale_add(__m256i isum, const void *half_d, const xacts *x, size_t b, __m256 acc)
{
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(half8(half_d), xd(x, b)), acc);
}

/* One weight block of each type against the activations from 32-block b: added to *acc, and
 * its min terms to *mins. */
static AI void q256_q8_0(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    (void)mins;
    const block_q8_0 *w = (const block_q8_0 *)src;
    const __m256i q = _mm256_loadu_si256((const __m256i *)w->qs), y = xqs(x, b);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    const __m256i isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q),
                                             _mm256_sign_epi8(y, q));
#elif defined(__AVXVNNI__)
    const __m256i isum = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q),
                                                 _mm256_sign_epi8(y, q));
#else
    const __m256i isum = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(y, q)), _mm256_set1_epi16(1));
#endif
    *acc = scale_add(isum, &w->d, x, b, *acc);
}

static AI void q256_q4_0(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    (void)mins;
    const block_q4_0 *w = (const block_q4_0 *)src;
    const __m256i isum = udot(xoff4(x, b), (__m256i)nibbles32(w->qs), xqs(x, b));
    *acc = scale_add(isum, &w->d, x, b, *acc);
}

static AI void q256_q4_1(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    const block_q4_1 *w = (const block_q4_1 *)src;
    const __m256i isum = udot(_mm256_setzero_si256(), (__m256i)nibbles32(w->qs), xqs(x, b));
    *acc = scale_add(isum, &w->d, x, b, *acc);
    *mins = _mm256_fmadd_ps(half8(&w->m), _mm256_load_ps(x->s4 + b * 8), *mins);
}

static AI void q256_q5_0(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    (void)mins;
    const block_q5_0 *w = (const block_q5_0 *)src;
    const __m256i isum = udot(_mm256_slli_epi32(xoff4(x, b), 1),
                              (__m256i)(nibbles32(w->qs) | bits32(w->qh)), xqs(x, b));
    *acc = scale_add(isum, &w->d, x, b, *acc);
}

static AI void q256_q5_1(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    const block_q5_1 *w = (const block_q5_1 *)src;
    const __m256i isum = udot(_mm256_setzero_si256(),
                              (__m256i)(nibbles32(w->qs) | bits32(w->qh)), xqs(x, b));
    *acc = scale_add(isum, &w->d, x, b, *acc);
    *mins = _mm256_fmadd_ps(half8(&w->m), _mm256_load_ps(x->s4 + b * 8), *mins);
}

/* The 8 scales (bytes 0-7) and 8 mins (bytes 8-15) of a q4_K/q5_K block, 6 bits each, unpacked
 * from its 12 bytes as bump_scale_min_k4 does one at a time. */
static AI __m128i k4_scales_mins(const uint8_t *q)
{
    uint32_t u[3]; /* three loads, not a copy through the stack */
    memcpy(&u[0], q, 4);
    memcpy(&u[1], q + 4, 4);
    memcpy(&u[2], q + 8, 4);
    const uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
    const uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 6) & 0x03030303) << 4;
    const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 6) & 0x03030303) << 4;
    return _mm_set_epi32((int)m_hi, (int)m_lo, (int)sc_hi, (int)sc_lo);
}

/* Bytes selecting 16-bit word w (of each 128-bit half) into every word. */
static AI __m256i word_of(int w)
{
    return _mm256_set1_epi16((short)((2 * w) | (2 * w + 1) << 8));
}

/* q4_K and q5_K (qh NULL for q4_K): sub-block c = the low (c even) or high nibbles of
 * qs[32 * (c / 2)..] (| bit c of qh[l] as 16), times its 6-bit scale in the integer sum; the
 * min terms of the eight sub-blocks in one vector (activation block sums x their mins). */
static AI void q256_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
                        const ggml_half *d, const ggml_half *dmin, const xacts *x, size_t b,
                        __m256 *acc, __m256 *mins)
{
    const __m128i sm = k4_scales_mins(scales);
    const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    const __m256 mf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
    *mins = _mm256_fnmadd_ps(_mm256_mul_ps(half8(dmin), mf), _mm256_loadu_ps(x->ds + b), *mins);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i high = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int j = 0; j < QK_K / 64; j++) {
        const __m256i y = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
        __m256i lo = _mm256_and_si256(y, m4), hi = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);
        if (qh) { /* bits 2j and 2j + 1 of each byte to bit 4 */
            const __m256i h = _mm256_srli_epi16(high, 2 * j);
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(h, 4), _mm256_set1_epi8(16)));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(h, 3), _mm256_set1_epi8(16)));
        }
        const __m256i s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xqs(x, b + 2 * j)),
                                             _mm256_shuffle_epi8(sc, word_of(2 * j)));
        const __m256i s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xqs(x, b + 2 * j + 1)),
                                             _mm256_shuffle_epi8(sc, word_of(2 * j + 1)));
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), xd(x, b + 2 * j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), xd(x, b + 2 * j + 1), a1);
    }
    *acc = _mm256_fmadd_ps(half8(d), _mm256_add_ps(a0, a1), *acc);
}

static AI void q256_q4_K(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    const block_q4_K *w = (const block_q4_K *)src;
    q256_k45(w->scales, w->qs, NULL, &w->d, &w->dmin, x, b, acc, mins);
}

static AI void q256_q5_K(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    const block_q5_K *w = (const block_q5_K *)src;
    q256_k45(w->scales, w->qs, w->qh, &w->d, &w->dmin, x, b, acc, mins);
}

/* q6_K: chunk c = 4h + p reads ql[64h + 32(p & 1) + l] (low nibble for p < 2), bits 2p of
 * qh[32h + l] as bits 4-5, values 0..63; the offset -32 enters the pair sums (off2), whose
 * halves then multiply by their 8-bit scales sc[8h + 2p] (values 0-15) and sc[8h + 2p + 1]. */
static AI void q256_q6_K(const uint8_t *src, const xacts *x, size_t b, __m256 *acc, __m256 *mins)
{
    (void)mins;
    const block_q6_K *w = (const block_q6_K *)src;
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i sch = _mm256_permute2x128_si256(s16, s16, h ? 0x11 : 0x00);
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
        const __m256i u[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
            _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
        };
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            const size_t c = b + 4 * h + p;
            const __m256i pairs = _mm256_add_epi16(
                _mm256_maddubs_epi16(u[p], xqs(x, c)),
                _mm256_load_si256((const __m256i *)(x->off2 + c * 16)));
            /* words 0-7 (values 0-15) take scale 2p of the half, words 8-15 scale 2p + 1 */
            const __m256i sel = _mm256_set_m128i(_mm_set1_epi16((short)((4 * p + 2) | (4 * p + 3) << 8)),
                                                 _mm_set1_epi16((short)((4 * p) | (4 * p + 1) << 8)));
            const __m256i isum = _mm256_madd_epi16(pairs, _mm256_shuffle_epi8(sch, sel));
            if (p % 2)
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), xd(x, c), a1);
            else
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), xd(x, c), a0);
        }
    }
    *acc = _mm256_fmadd_ps(half8(&w->d), _mm256_add_ps(a0, a1), *acc);
}

/* Rows [n0, n1) of a type with 32-value blocks, two at a time: the pair shares the activation
 * loads and the loop, and each row keeps one accumulator (two independent chains), so a row's
 * sum is the same whether it is paired or the last one alone: results do not depend on where a
 * thread's rows start. */
#define QROWS256(T, MINS)                                                                     \
    static inline __attribute__((always_inline)) void qrow2_##T(                             \
        const uint8_t *r0, const uint8_t *r1, int two, const seg_walk *sw, const xacts *x,    \
        float *out)                                                                           \
    {                                                                                         \
        const size_t bb = sizeof(block_##T);                                                  \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, m0 = a0, m1 = a0;                           \
        size_t b = 0;                                                                         \
        for (int s = 0; s < sw->n; s++, r0 += sw->stride, r1 += sw->stride) {                 \
            const int nb = s + 1 < sw->n ? sw->blocks : sw->last;                             \
            for (int j = 0; j < nb; j++, b++) {                                               \
                q256_##T(r0 + (size_t)j * bb, x, b, &a0, &m0);                                \
                if (two) q256_##T(r1 + (size_t)j * bb, x, b, &a1, &m1);                       \
            }                                                                                 \
        }                                                                                     \
        out[0] = hsum8((v8f)a0) + (MINS ? hsum8((v8f)m0) : 0.0f);                             \
        if (two) out[1] = hsum8((v8f)a1) + (MINS ? hsum8((v8f)m1) : 0.0f);                    \
    }                                                                                         \
    static void qrows_##T(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0, \
                          int n1, float *out)                                                 \
    {                                                                                         \
        row_walk it = row_walk_at(w, r, n0);                                                  \
        const seg_walk sw = seg_walk_of(w, &it, K, XB);                                       \
        const xacts xl = *x; /* a local copy: its pointers stay in registers */               \
        int n = n0;                                                                           \
        for (; n + 2 <= n1; n += 2) {                                                         \
            const uint8_t *r0 = it.row;                                                       \
            row_walk_next(&it);                                                               \
            qrow2_##T(r0, it.row, 1, &sw, &xl, out + n);                                      \
            row_walk_next(&it);                                                               \
        }                                                                                     \
        if (n < n1) qrow2_##T(it.row, it.row, 0, &sw, &xl, out + n);                          \
    }

/* Rows [n0, n1) of a K-quant, one at a time (a block of 256 has independent chains of its own,
 * and two rows in flight spill registers). */
#define QROWS256_K(T)                                                                         \
    static void qrows_##T(const bump_wmat *w, const reader *r, const xacts *x, int K, int n0, \
                          int n1, float *out)                                                 \
    {                                                                                         \
        row_walk it = row_walk_at(w, r, n0);                                                  \
        for (int n = n0; n < n1; n++, row_walk_next(&it)) {                                   \
            __m256 acc = _mm256_setzero_ps(), mins = acc;                                     \
            const uint8_t *seg = it.row;                                                      \
            for (int k0 = 0; k0 < K; k0 += w->k_seg, seg += it.k_stride) {                    \
                const int nb = min_int(w->k_seg, K - k0) / QK_K;                              \
                for (int i = 0; i < nb; i++)                                                  \
                    q256_##T(seg + (size_t)i * sizeof(block_##T), x,                          \
                             (size_t)(k0 / XB + i * (QK_K / XB)), &acc, &mins);               \
            }                                                                                 \
            out[n] = hsum8((v8f)acc) + hsum8((v8f)mins);                                      \
        }                                                                                     \
    }
QROWS256(q8_0, 0)
QROWS256(q4_1, 1)
QROWS256(q5_1, 1)
QROWS256_K(q5_K)
QROWS256_K(q6_K)
#if !INT8_512
QROWS256(q4_0, 0)
QROWS256(q5_0, 0)
QROWS256_K(q4_K)
#endif
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
        row_walk it = row_walk_at(w, r, n0);                                                  \
        for (int n = n0; n < n1; n++, row_walk_next(&it)) {                                   \
            __m512 acc = _mm512_setzero_ps();                                                 \
            qsum s = {{0}, 0.0f};                                                             \
            for (int k0 = 0, seg = 0; k0 < K; k0 += w->k_seg, seg++) {                        \
                const int nb = min_int(w->k_seg, K - k0) / XB, b0 = k0 / XB;                  \
                const uint8_t *src = it.row + (size_t)seg * it.k_stride;                      \
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
    row_walk it = row_walk_at(w, r, n0);
    for (int n = n0; n < n1; n++, row_walk_next(&it)) {
        __m512 acc = _mm512_setzero_ps();
        float mins = 0.0f;
        for (int k0 = 0, seg = 0; k0 < K; k0 += w->k_seg, seg++) {
            const block_q4_K *src = (const block_q4_K *)(it.row + (size_t)seg * it.k_stride);
            const int nb = min_int(w->k_seg, K - k0) / QK_K;
            for (int i = 0; i < nb; i++)
                acc = qdot512_q4_K(src + i, x, k0 / XB + i * (QK_K / XB), acc, &mins);
        }
        out[n] = _mm512_reduce_add_ps(acc) + mins;
    }
}
#endif

/* ---------------------------------------------------------------------------------------- */
/* int8 GEMM (prefill on int8 activations), on every x86 level                               */

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

#if INT8_256
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
 * scale per 16) and fp32 weights take the fp32 GEMM.
 *
 * The panel, the activations and the driver are the same at both widths; the tile is the
 * width's: 16 rows per panel and 12 activation rows per tile in 512-bit registers with VNNI;
 * 8 rows per panel in 256-bit ones below it, 6 activation rows with AVX-VNNI, 4 without (where
 * maddubs and madd stand in for vpdpbusd: see qtile256_). */
#define QGEMM 1
#if INT8_512
#define QNR 16
#define QMR 12
#elif defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#define QVNNI256 1
#define QNR 8
#define QMR 6
#else
#define QVNNI256 0
#define QNR 8
#define QMR 4
#endif

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

/* Rows of in[M][K] quantized per block of 32 (quantize_block512/256) into
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
            float d;
            int32_t sum;
#if INT8_512
            __m128i q[2];
            quantize_block512(x + b * XB, q, &d, &sum);
            const __m128i off = _mm_set1_epi8((char)0x80);
            _mm_storeu_si128((__m128i *)dst, _mm_xor_si128(q[0], off));
            _mm_storeu_si128((__m128i *)(dst + 16), _mm_xor_si128(q[1], off));
#else
            __m256i q;
            quantize_block256(x + b * XB, &q, &d, &sum);
            _mm256_storeu_si256((__m256i *)dst, _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)));
#endif
            dx[o] = d;
            dxs[o] = d * (float)sum;
        }
    }
}

#if INT8_512
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

/* qtile_<type>: the tile of each type, the min terms where the type has a min. */
#define QTILE512(T, has_min)                                                                  \
    static void qtile_##T(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx,   \
                          const float *dxs, int mpad, int m0, int mv, int nv, float *out,     \
                          size_t ldc)                                                         \
    {                                                                                         \
        qgemm_tile_(wp, nb, xq, dx, dxs, mpad, m0, mv, nv, out, ldc, has_min);                \
    }
QTILE512(q8_0, 0)
QTILE512(q4_0, 0)
QTILE512(q4_1, 1)
QTILE512(q5_0, 0)
QTILE512(q5_1, 1)
QTILE512(q4_K, 1)
QTILE512(q5_K, 1)
#else
/* The same in 256-bit registers: out[i][0..nv) for the QMR activation rows from m0 (mv of
 * them real) against one panel of QNR = 8 rows. With VNNI, as the 512-bit tile. Without it,
 * maddubs (unsigned activation x signed weight bytes, pairs summed to int16 with saturation)
 * and madd (int16 pairs to int32): a pair is at most 2 x 255 x |w|, so the products of
 * `groups` column groups add up in int16 before one madd widens them (8 groups for q4_0's
 * |w| <= 8, 4 for |w| <= 16, 2 for the 5-bit types' 31); q8_0's weights reach 128, where a
 * pair could saturate, so with `sign` the activations go back to signed bytes and the sign
 * trick (|w| x sign(x, w), at most 2 x 128 x 127) multiplies them, without the correction. */
/* GCC reassociates a chain of integer vector additions into a tree, computing all of a block's
 * products before it adds them: 32 live vectors, spilled to the stack (q4_0's tile: 67 stack
 * accesses per block). An empty asm on the running sum keeps the chain a chain. */
#define KEEP(v) __asm__("" : "+x"(v))

static inline __attribute__((always_inline)) void
qtile256_(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx, const float *dxs,
          int mpad, int m0, int mv, int nv, float *out, size_t ldc, int groups, int sign,
          int has_min)
{
    __m256 acc[QMR];
    for (int i = 0; i < QMR; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const qpanel_blk *p = wp + b;
        const uint8_t *xb = xq + ((size_t)b * mpad + m0) * XB;
        __m256i isum[QMR];
#if QVNNI256
        (void)groups, (void)sign;
        const __m256i corr = _mm256_loadu_si256((const __m256i *)p->corr);
        for (int i = 0; i < QMR; i++) isum[i] = corr;
#pragma GCC unroll 8
        for (int g = 0; g < XB / 4; g++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)p->qs[g]);
#pragma GCC unroll 8
            for (int i = 0; i < QMR; i++) {
                int32_t word;
                memcpy(&word, xb + i * XB + 4 * g, 4);
#if defined(__AVXVNNI__)
                isum[i] = _mm256_dpbusd_avx_epi32(isum[i], _mm256_set1_epi32(word), wv);
#else
                isum[i] = _mm256_dpbusd_epi32(isum[i], _mm256_set1_epi32(word), wv);
#endif
            }
        }
#else
        const __m256i ones = _mm256_set1_epi16(1);
        if (sign) {
            for (int i = 0; i < QMR; i++) isum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int g = 0; g < XB / 4; g++) {
                const __m256i wv = _mm256_loadu_si256((const __m256i *)p->qs[g]);
                const __m256i aw = _mm256_abs_epi8(wv);
#pragma GCC unroll 8
                for (int i = 0; i < QMR; i++) {
                    int32_t word;
                    memcpy(&word, xb + i * XB + 4 * g, 4);
                    const __m256i xs = _mm256_xor_si256(_mm256_set1_epi32(word),
                                                         _mm256_set1_epi8((char)0x80));
                    isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(
                        _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xs, wv)), ones));
                    KEEP(isum[i]);
                }
            }
        } else {
            const __m256i corr = _mm256_loadu_si256((const __m256i *)p->corr);
            for (int i = 0; i < QMR; i++) isum[i] = corr;
#pragma GCC unroll 8
            for (int g0 = 0; g0 < XB / 4; g0 += groups) {
                __m256i s16[QMR];
#pragma GCC unroll 8
                for (int g = g0; g < g0 + groups; g++) {
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)p->qs[g]);
#pragma GCC unroll 8
                    for (int i = 0; i < QMR; i++) {
                        int32_t word;
                        memcpy(&word, xb + i * XB + 4 * g, 4);
                        const __m256i t = _mm256_maddubs_epi16(_mm256_set1_epi32(word), wv);
                        s16[i] = g == g0 ? t : _mm256_add_epi16(s16[i], t);
                        KEEP(s16[i]);
                    }
                }
                for (int i = 0; i < QMR; i++) {
                    isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(s16[i], ones));
                    KEEP(isum[i]);
                }
            }
        }
#endif
        const __m256 d = _mm256_loadu_ps(p->d);
        const float *sx = dx + (size_t)b * mpad + m0;
#pragma GCC unroll 8
        for (int i = 0; i < QMR; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[i]),
                                                   _mm256_set1_ps(sx[i])), d, acc[i]);
        if (has_min) {
            const __m256 mn = _mm256_loadu_ps(p->m);
            const float *ss = dxs + (size_t)b * mpad + m0;
#pragma GCC unroll 8
            for (int i = 0; i < QMR; i++) acc[i] = _mm256_fmadd_ps(mn, _mm256_set1_ps(ss[i]), acc[i]);
        }
    }
    if (nv == QNR) {
        for (int i = 0; i < mv; i++) _mm256_storeu_ps(out + (size_t)i * ldc, acc[i]);
    } else {
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int i = 0; i < mv; i++) _mm256_maskstore_ps(out + (size_t)i * ldc, keep, acc[i]);
    }
}

/* qtile_<type>: the tile of each type: its int16 groups, the sign trick for q8_0, the min terms
 * where the type has a min. */
#define QTILE256(T, groups, sign, has_min)                                                    \
    static void qtile_##T(const qpanel_blk *wp, int nb, const uint8_t *xq, const float *dx,   \
                          const float *dxs, int mpad, int m0, int mv, int nv, float *out,     \
                          size_t ldc)                                                         \
    {                                                                                         \
        qtile256_(wp, nb, xq, dx, dxs, mpad, m0, mv, nv, out, ldc, groups, sign, has_min);    \
    }
QTILE256(q8_0, 1, 1, 0)
QTILE256(q4_0, 8, 0, 0)
QTILE256(q4_1, 4, 0, 1)
QTILE256(q5_0, 4, 0, 0)
QTILE256(q5_1, 2, 0, 1)
QTILE256(q4_K, 4, 0, 1)
QTILE256(q5_K, 2, 0, 1)
#endif

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

#define QGEMM_OF(T) {qpack_##T, qtile_##T}
#else
#define QGEMM 0
#define QGEMM_OF(T) QGEMM_NONE
#endif
/* The type-traits table's int8 GEMM entry: QGEMM_OF(type) names the type's panel packer and
 * its tile at this level, and is empty where the level has no int8 GEMM; QGEMM_NONE for a
 * type the int8 GEMM reads at no level. */
#define QGEMM_NONE {NULL, NULL}

#endif
