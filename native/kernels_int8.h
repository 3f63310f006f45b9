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

typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));

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
static inline v8i dot32(const int8_t *a, const int8_t *b)
{
#if defined(__AVX2__)
    const __m256i x = _mm256_loadu_si256((const __m256i *)a);
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
 * terms (q4_1, q5_1, q4_K, q5_K), kept apart. */
typedef struct {
    v8f acc;
    float mins;
} qsum;

/* One function per weight type: nb blocks at src against the activation blocks from x. */
static void qdot_q8_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q8_0 *w = (const block_q8_0 *)src;
    for (int i = 0; i < nb; i++)
        s->acc = acc8(s->acc, dot32(w[i].qs, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
}

static void qdot_q4_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q4_0 *w = (const block_q4_0 *)src;
    int8_t t[32] __attribute__((aligned(32)));
    for (int i = 0; i < nb; i++) {
        for (int l = 0; l < 16; l++) {
            t[l] = (int8_t)((w[i].qs[l] & 0x0f) - 8);
            t[l + 16] = (int8_t)((w[i].qs[l] >> 4) - 8);
        }
        s->acc = acc8(s->acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
}

static void qdot_q4_1(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q4_1 *w = (const block_q4_1 *)src;
    int8_t t[32] __attribute__((aligned(32)));
    for (int i = 0; i < nb; i++) {
        for (int l = 0; l < 16; l++) {
            t[l] = (int8_t)(w[i].qs[l] & 0x0f);
            t[l + 16] = (int8_t)(w[i].qs[l] >> 4);
        }
        s->acc = acc8(s->acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
        s->mins += bump_fp16_to_fp32(w[i].m) * x[i].d * (float)x[i].sum;
    }
}

/* q5_0/q5_1 values 0..31 (before the q5_0 offset) of one block into t. */
static inline void unpack_q5(const uint8_t *qs, const uint8_t qh_bytes[4], int8_t *t)
{
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int l = 0; l < 16; l++) {
        t[l] = (int8_t)((qs[l] & 0x0f) | (((qh >> l) << 4) & 0x10));
        t[l + 16] = (int8_t)((qs[l] >> 4) | ((qh >> (l + 12)) & 0x10));
    }
}

static void qdot_q5_0(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q5_0 *w = (const block_q5_0 *)src;
    int8_t t[32] __attribute__((aligned(32)));
    for (int i = 0; i < nb; i++) {
        unpack_q5(w[i].qs, w[i].qh, t);
        for (int l = 0; l < 32; l++) t[l] = (int8_t)(t[l] - 16);
        s->acc = acc8(s->acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
    }
}

static void qdot_q5_1(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q5_1 *w = (const block_q5_1 *)src;
    int8_t t[32] __attribute__((aligned(32)));
    for (int i = 0; i < nb; i++) {
        unpack_q5(w[i].qs, w[i].qh, t);
        s->acc = acc8(s->acc, dot32(t, x[i].qs), bump_fp16_to_fp32(w[i].d) * x[i].d);
        s->mins += bump_fp16_to_fp32(w[i].m) * x[i].d * (float)x[i].sum;
    }
}

/* q4_K and q5_K: sub-block c (32 values) is the low (c even) or high nibbles of
 * qs[32 * (c / 2) ..], plus bit c of qh[l] as 16 for q5_K. */
static void qdot_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float d,
                     float dmin, const xq8 *x, qsum *s)
{
    int8_t t[32] __attribute__((aligned(32)));
    for (int c = 0; c < QK_K / 32; c++) {
        uint8_t sc, m;
        bump_scale_min_k4(c, scales, &sc, &m);
        const uint8_t *q = qs + 32 * (c / 2);
        const int shift = 4 * (c % 2);
        for (int l = 0; l < 32; l++) t[l] = (int8_t)((q[l] >> shift) & 0x0f);
        if (qh)
            for (int l = 0; l < 32; l++) t[l] = (int8_t)(t[l] | (((qh[l] >> c) & 1) << 4));
        s->acc = acc8(s->acc, dot32(t, x[c].qs), d * sc * x[c].d);
        s->mins -= dmin * m * x[c].d * (float)x[c].sum;
    }
}

static void qdot_q4_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q4_K *w = (const block_q4_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, NULL, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

static void qdot_q5_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q5_K *w = (const block_q5_K *)src;
    for (int i = 0; i < nb; i++, x += QK_K / XB)
        qdot_k45(w[i].scales, w[i].qs, w[i].qh, bump_fp16_to_fp32(w[i].d),
                 bump_fp16_to_fp32(w[i].dmin), x, s);
}

/* q6_K: chunk c = 4h + p of a block reads ql[64h + 32(p & 1) + l] (low nibble for p < 2),
 * bits 2p of qh[32h + l], and scales sc[8h + 2p] (values 0-15), sc[8h + 2p + 1] (16-31). */
static void qdot_q6_K(const uint8_t *src, int nb, const xq8 *x, qsum *s)
{
    const block_q6_K *w = (const block_q6_K *)src;
    int8_t t[32] __attribute__((aligned(32)));
    for (int i = 0; i < nb; i++) {
        const float d = bump_fp16_to_fp32(w[i].d);
        for (int c = 0; c < QK_K / 32; c++, x++) {
            const int h = c / 4, p = c % 4;
            const uint8_t *ql = w[i].ql + 64 * h + 32 * (p & 1), *qh = w[i].qh + 32 * h;
            const int nshift = p < 2 ? 0 : 4, hshift = 2 * p;
            for (int l = 0; l < 32; l++)
                t[l] = (int8_t)((((ql[l] >> nshift) & 0x0f) | (((qh[l] >> hshift) & 3) << 4)) - 32);
            const int32_t lo = w[i].scales[8 * h + 2 * p], hi = w[i].scales[8 * h + 2 * p + 1];
            const v8i sc = {lo, lo, lo, lo, hi, hi, hi, hi};
            s->acc = acc8(s->acc, dot32(t, x->qs) * sc, d * x->d);
        }
    }
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
