/* kernels_int8.h - the int8-activation GEMV (llama.cpp's approach), part of kernels_impl.h.
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

#define XB 32

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

static void quantize_x(const float *x, int K, xq8 *out)
{
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
static void qdot_q8_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const ublock_q8_0 *w = (const ublock_q8_0 *)src;
    for (int i = 0; i < nb; i++)
        acc = acc8(acc, dot32((v32i8)load32((const uint8_t *)w[i].qs), x[i].qs),
                      bump_fp16_to_fp32(w[i].d) * x[i].d);    s->acc = acc;
}

static void qdot_q4_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const ublock_q4_0 *w = (const ublock_q4_0 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = (v32i8)nibbles32(w[i].qs) - 8;
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
    s->acc = acc;
}

static void qdot_q4_1(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    float mins = s->mins;
    const ublock_q4_1 *w = (const ublock_q4_1 *)src;
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

static void qdot_q5_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const ublock_q5_0 *w = (const ublock_q5_0 *)src;
    for (int i = 0; i < nb; i++) {
        const v32i8 t = unpack_q5(w[i].qs, w[i].qh) - 16;
        acc = acc8(acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
    s->acc = acc;
}

static void qdot_q5_1(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    float mins = s->mins;
    const ublock_q5_1 *w = (const ublock_q5_1 *)src;
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

static void qdot_q4_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const ublock_q4_K *w = (const ublock_q4_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, NULL, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

static void qdot_q5_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const ublock_q5_K *w = (const ublock_q5_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, w[i].qh, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

/* q6_K: chunk c = 4h + p of a block reads ql[64h + 32(p & 1) + l] (low nibble for p < 2),
 * bits 2p of qh[32h + l], and scales sc[8h + 2p] (values 0-15), sc[8h + 2p + 1] (16-31). */
static void qdot_q6_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    v8f acc = s->acc;
    const ublock_q6_K *w = (const ublock_q6_K *)src;
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

typedef void (*qdot_fn)(const uint8_t *src, int nb, const xq8 *x, qsum *s);

static qdot_fn qdot_of(int32_t dtype)
{
    switch (dtype) {
    case BUMP_DTYPE_Q4_0: return qdot_q4_0;
    case BUMP_DTYPE_Q4_1: return qdot_q4_1;
    case BUMP_DTYPE_Q5_0: return qdot_q5_0;
    case BUMP_DTYPE_Q5_1: return qdot_q5_1;
    case BUMP_DTYPE_Q8_0: return qdot_q8_0;
    case BUMP_DTYPE_Q4_K: return qdot_q4_K;
    case BUMP_DTYPE_Q5_K: return qdot_q5_K;
    case BUMP_DTYPE_Q6_K: return qdot_q6_K;
    default: return NULL;
    }
}

/* One quantized row against the quantized activations, walking its column segments. */
static float qdot_row(const bump_wmat *w, const reader *r, qdot_fn f, size_t re, const xq8 *x,
                      int K)
{
    qsum s = {{0}, 0.0f};
    for (int k0 = 0; k0 < K; k0 += w->k_seg) {
        const int len = min_int(w->k_seg, K - k0);
        f(block_at(w, r, re + col_elem(w, k0)), len / r->be, x + k0 / XB, &s);
    }
    float sum = 0.0f;
    for (int i = 0; i < 8; i++) sum += s.acc[i];
    return sum + s.mins;
}
