/* quant.c - ggml's reference quantizers and its dequantizers, reproduced bit for bit.
 *
 * The oracle is the code llama.cpp builds: quantize_row_<type>_ref and dequantize_row_<type> in
 * ggml/src/ggml-quants.c (read at llama.cpp 0c1e57098, vendored by llama-cpp-python 0.3.36).
 * llama-quantize without --imatrix and ggml_quantize_chunk(..., imatrix = NULL) call exactly
 * those. This is our own code with the same arithmetic: every float operation ggml performs,
 * in ggml's order, with ggml's roundings. What that takes:
 *
 * - fp16. ggml-base converts with the software routine of ggml-impl.h (round to nearest
 *   even, subnormals included, NaN -> 0x7e00 with the sign); fp16_from_fp32() gives the same
 *   16 bits for every float (compared once with libggml-base's ggml_fp32_to_fp16_row over all
 *   2^32 inputs, and bump_fp16_to_fp32() with ggml_fp16_to_fp32_row over all 2^16).
 * - nearest_int(). ggml rounds with the 1.5 * 2^23 trick (ties to even, and its own garbage for
 *   |x| > 2^22); nearest() is the same trick, not lrintf().
 * - Contraction. ggml writes x*id + 8.5f, scale*L + min - x, w*l*x as separate operations;
 *   fusing any of them into an FMA changes roundings and so the blocks. llama.cpp compiles the
 *   reference quantizers into ggml-base, and its CMake gives -march/-mcpu only to the ggml-cpu
 *   backend: on x86-64 ggml-base is built for the baseline ISA, which has no FMA, so GCC's
 *   default -ffp-contract=fast has nothing to fuse and every operation rounds as written (the
 *   peer build's libggml-base.so contains no vfmadd instruction). This file is compiled with
 *   -ffp-contract=off (native/build_ffi.py), so it rounds as written under -march=native too.
 *   A ggml built where the baseline has FMA (aarch64; GCC contracts by default) can differ from
 *   both in the last bit of a scale, and then in a block; x86 llama.cpp is the reference here.
 * - Float to integer. ggml converts with C casts such as (int8_t)(x0 + 8.5f), which x86 does
 *   as a truncation to int32 (INT32_MIN when the value is NaN or out of range) followed by
 *   keeping the low byte. With finite input the values are in range, except where a subnormal
 *   scale makes 1/d infinite; v_trunc() and low_i8() spell out x86's behaviour so those
 *   blocks match too, and so that this file has no undefined behaviour.
 * - Nothing is reassociated. Every sum (sum_x2, sumlx, suml2, the errors) is accumulated in
 *   ggml's order, and the dequantizers keep ggml's operand order (q * d + m, d1 * q - m1,
 *   d * sc * q). Vector lanes (GCC vector extensions) only ever run independent copies of
 *   ggml's sequence:
 *     q4_K, q5_K: lane k searches sub-block k. The candidates of make_qkx2_quants are not
 *       independent (a winner replaces `min` for the candidates after it), the sub-blocks are.
 *     q6_K: lane k holds candidate scale k of make_qx_quants (independent there; the winner
 *       is then picked in ggml's order).
 *     32-value types: one value per lane; maxima and minima with ggml's comparisons, and the
 *       first index where ggml's scan would stop when it matters (a vs -a, +0 vs -0).
 *
 * NaN and infinite inputs are refused (bump_quantize): ggml quantizes them into meaningless
 * blocks without a word, which in a converter only hides a broken checkpoint.
 */
#include "quant.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "blocks.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "ggml's blocks are little-endian; so are the byte tricks below");

/* ---------------------------------------------------------------------------------------- */
/* scalar helpers                                                                            */

#define GROUP_MAX_EPS 1e-15f  /* ggml: below this a group is "all zero" */

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* IEEE binary16 of f, round to nearest even; NaN -> quiet NaN 0x7e00 keeping the sign. */
static uint16_t fp16_from_fp32(float f)
{
    const uint32_t w = bits_of(f);
    const uint16_t sign = (uint16_t)((w >> 16) & 0x8000u);
    const uint32_t a = w & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;
    if (a >= 0x477ff000u) return sign | 0x7c00u;  /* >= 65520 rounds to infinity */
    if (a < 0x38800000u) {                        /* below 2^-14: zero or a subnormal half */
        /* |f| * 2^24 is exact and below 1024; adding and removing 2^23 rounds it to an
         * integer, ties to even. 1024 is the smallest normal half, encoded correctly. */
        const float units = float_of(a) * 0x1p24f;
        return sign | (uint16_t)((units + 0x1p23f) - 0x1p23f);
    }
    /* Drop 13 mantissa bits, ties to even; a carry ripples into the exponent (rebias 127-15). */
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((r >> 13) - (112u << 10));
}

/* ggml's nearest_int: round to nearest, ties to even, via the float adder (|f| <= 2^22; larger
 * values give ggml's garbage, reproduced). */
static inline int nearest(float f)
{
    const float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* The int8_t of the low byte of v: what a narrowing cast to int8_t keeps. */
static inline int low_i8(int32_t v) { return (int)(((uint32_t)v & 0xffu) ^ 0x80u) - 0x80; }

/* Index of the first NaN or infinity of x[0..n), or -1. */
static int64_t first_non_finite(const float *x, int64_t n)
{
    uint32_t any = 0;
    for (int64_t i = 0; i < n; ++i) any |= (bits_of(x[i]) & 0x7f800000u) == 0x7f800000u;
    if (!any) return -1;
    for (int64_t i = 0; i < n; ++i)
        if ((bits_of(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* vectors: VL lanes of fp32/int32 (GCC vector extensions; no operation below reassociates)  */

#if defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

#define TO_VF(l) __builtin_convertvector((l), vf)

static inline vf v_load(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef uint8_t vbytes __attribute__((vector_size(VL * sizeof(int32_t))));

static inline void v_store_bytes(uint8_t *p, vi v)  /* the low byte of every lane */
{
    vbytes b;
    memcpy(&b, &v, sizeof b);
#if VL == 8
    const vbytes pick = {0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28,
                         0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28};
#else
    const vbytes pick = {0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12};
#endif
    b = __builtin_shuffle(b, pick);  /* little-endian: byte 0 of a lane is its low byte */
    memcpy(p, &b, VL);
}

static inline vf v_iota(float first)
{
    vf v;
    for (int k = 0; k < VL; ++k) v[k] = first + (float)k;
    return v;
}

static inline vf v_select(vi mask, vf yes, vf no)  /* mask lanes are 0 or -1 */
{
    vi y, n, r;
    memcpy(&y, &yes, sizeof y);
    memcpy(&n, &no, sizeof n);
    r = (y & mask) | (n & ~mask);
    vf out;
    memcpy(&out, &r, sizeof out);
    return out;
}

static inline vf v_abs(vf v)
{
    vi i;
    memcpy(&i, &v, sizeof i);
    i &= 0x7fffffff;
    memcpy(&v, &i, sizeof v);
    return v;
}

static inline vi v_nearest(vf f)  /* nearest() in every lane */
{
    const vf v = f + 12582912.f;
    vi i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline vi v_min_int(vi l, int hi)
{
    const vi above = l > hi;
    return (l & ~above) | (hi & above);
}

static inline vi v_clamp(vi l, int lo, int hi)
{
    const vi below = l < lo;
    return v_min_int((l & ~below) | (lo & below), hi);
}

/* (int32_t)f and (int32_t)roundf(f) (half away from zero) in every lane, as x86 computes them:
 * INT32_MIN for NaN and values out of int32 range, which are kept out of the conversion (C
 * leaves it undefined). f - trunc(f) is exact, so the rounding needs no libm call. */
static inline vi v_trunc(vf f)
{
    const vi ok = (f >= -2147483648.0f) & (f < 2147483648.0f);
    const vi t = __builtin_convertvector(v_select(ok, f, (vf){0}), vi);
    return (t & ok) | (INT32_MIN & ~ok);
}

static inline vi v_round(vf f)
{
    const vi ok = (f >= -2147483648.0f) & (f < 2147483648.0f);
    const vf safe = v_select(ok, f, (vf){0});
    const vi t = __builtin_convertvector(safe, vi);
    const vf frac = safe - TO_VF(t);
    const vi r = t - (frac >= 0.5f) + (frac <= -0.5f);  /* comparisons give -1 */
    return (r & ok) | (INT32_MIN & ~ok);
}

static inline vi v_low_i8(vi v) { return ((v & 0xff) ^ 0x80) - 0x80; }

/* ---------------------------------------------------------------------------------------- */
/* block statistics, as ggml's scans find them (n is a multiple of VL, values are finite)    */

/* Largest |x|. */
static inline float abs_max(const float *x, int n)
{
    vf m = {0};
    for (int j = 0; j < n; j += VL) {
        const vf a = v_abs(v_load(x + j));
        m = v_select(a > m, a, m);
    }
    float amax = 0.0f;
    for (int k = 0; k < VL; ++k) amax = m[k] > amax ? m[k] : amax;
    return amax;
}

/* ggml's `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` from 0: the first value of
 * largest magnitude (a and -a tie), and +0 (whatever the signs of its zeros) for a group of
 * zeros. Lane k keeps the first value of x[k], x[k + VL], ... that beats its best so far,
 * and its index; among the lanes that end at the largest magnitude the smallest index wins. */
static inline float signed_absmax(const float *x, int n)
{
    vf m = {0}, val = {0};
    vi at = {0};
    const vi lane = __builtin_convertvector(v_iota(0.0f), vi);
    for (int j = 0; j < n; j += VL) {
        const vf v = v_load(x + j), a = v_abs(v);
        const vi gt = a > m;
        m = v_select(gt, a, m);
        val = v_select(gt, v, val);
        at = ((lane + j) & gt) | (at & ~gt);
    }
    float amax = 0.0f;
    for (int k = 0; k < VL; ++k) amax = m[k] > amax ? m[k] : amax;
    if (amax == 0.0f) return 0.0f;
    float max = 0.0f;
    int first = n;
    for (int k = 0; k < VL; ++k)
        if (m[k] == amax && at[k] < first) {
            first = at[k];
            max = val[k];
        }
    return max;
}

/* ggml's `if (v < min) min = v; if (v > max) max = v;` from +-FLT_MAX. Equal non-zero floats
 * have equal bits, so only a zero minimum or maximum needs the first index: found by a scan. */
static inline void min_max(const float *x, int n, float *min, float *max)
{
    vf lo = (vf){0} + FLT_MAX, hi = (vf){0} - FLT_MAX;
    for (int j = 0; j < n; j += VL) {
        const vf v = v_load(x + j);
        lo = v_select(v < lo, v, lo);
        hi = v_select(v > hi, v, hi);
    }
    float l = lo[0], h = hi[0];
    for (int k = 1; k < VL; ++k) {
        l = lo[k] < l ? lo[k] : l;
        h = hi[k] > h ? hi[k] : h;
    }
    if (l == 0.0f || h == 0.0f) {
        int j = 0;
        while (x[j] != 0.0f) ++j;  /* the first zero, +0 or -0, is the zero ggml keeps */
        if (l == 0.0f) l = x[j];
        if (h == 0.0f) h = x[j];
    }
    *min = l;
    *max = h;
}

/* ---------------------------------------------------------------------------------------- */
/* 32-value types: q4_0, q4_1, q5_0, q5_1, q8_0                                             */

/* The levels of x[0..VL) as ggml stores them in a uint8_t: (x - min) * id + offset
 * truncated, then MIN(top, (int8_t)level) when top >= 0, or just the low byte (q5_1). The
 * types without a min pass +0: x - +0 is x, bit for bit, for every x. */
static inline vi levels(const float *x, float min, float id, float offset, int top)
{
    vi t = v_trunc((v_load(x) - min) * id + offset);
    if (top >= 0) t = v_min_int(v_low_i8(t), top);
    return t & 0xff;
}

/* q4_0/q4_1: qs[j] = level j | level j + 16 << 4. */
static inline void pack4(const float *x, float min, float id, float offset, uint8_t qs[16])
{
    for (int j = 0; j < 16; j += VL) {
        const vi lo = levels(x + j, min, id, offset, 15);
        const vi hi = levels(x + j + 16, min, id, offset, 15);
        v_store_bytes(qs + j, lo | (hi << 4));
    }
}

/* q5_0/q5_1: low nibbles as in pack4, the fifth bits of levels j and j + 16 in bits j and
 * j + 16 of qh (ggml's masks, so out-of-range levels pack as ggml packs them). */
static inline void pack5(const float *x, float min, float id, float offset, int top,
                         uint8_t qs[16], uint8_t qh_out[4])
{
    const vi lane = __builtin_convertvector(v_iota(0.0f), vi);
    vi bits = {0};
    for (int j = 0; j < 16; j += VL) {
        const vi lo = levels(x + j, min, id, offset, top);
        const vi hi = levels(x + j + 16, min, id, offset, top);
        v_store_bytes(qs + j, (lo & 0x0f) | ((hi & 0x0f) << 4));
        bits |= (((lo & 0x10) >> 4) << (lane + j)) | (((hi & 0x10) >> 4) << (lane + j + 16));
    }
    uint32_t qh = 0;
    for (int k = 0; k < VL; ++k) qh |= (uint32_t)bits[k];
    memcpy(qh_out, &qh, sizeof qh);
}

static void quantize_q4_0(const float *x, void *dst, int64_t nb)
{
    block_q4_0 *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_fp32(d);
        pack4(x, 0.0f, id, 8.5f, y[i].qs);
    }
}

static void quantize_q4_1(const float *x, void *dst, int64_t nb)
{
    block_q4_1 *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK4_1) {
        float min, max;
        min_max(x, QK4_1, &min, &max);
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_fp32(d);
        y[i].m = fp16_from_fp32(min);
        pack4(x, min, id, 0.5f, y[i].qs);
    }
}

static void quantize_q5_0(const float *x, void *dst, int64_t nb)
{
    block_q5_0 *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK5_0) {
        const float d = signed_absmax(x, QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_fp32(d);
        pack5(x, 0.0f, id, 16.5f, 31, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_1(const float *x, void *dst, int64_t nb)
{
    block_q5_1 *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK5_1) {
        float min, max;
        min_max(x, QK5_1, &min, &max);
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_fp32(d);
        y[i].m = fp16_from_fp32(min);
        pack5(x, min, id, 0.5f, -1, y[i].qs, y[i].qh);  /* ggml: (uint8_t)(x0 + 0.5f) */
    }
}

static void quantize_q8_0(const float *x, void *dst, int64_t nb)
{
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK8_0) {
        const float d = abs_max(x, QK8_0) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_fp32(d);
        for (int j = 0; j < QK8_0; j += VL)
            v_store_bytes((uint8_t *)y[i].qs + j, v_round(v_load(x + j) * id));
    }
}

static void dequantize_q4_0(const void *src, float *y, int64_t nb)
{
    const block_q4_0 *x = src;
    for (int64_t i = 0; i < nb; ++i, y += QK4_0) {
        const float d = bump_fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = (float)((x[i].qs[j] & 0x0f) - 8) * d;
            y[j + QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequantize_q4_1(const void *src, float *y, int64_t nb)
{
    const block_q4_1 *x = src;
    for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
        const float d = bump_fp16_to_fp32(x[i].d), m = bump_fp16_to_fp32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = (float)(x[i].qs[j] & 0x0f) * d + m;
            y[j + QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequantize_q5_0(const void *src, float *y, int64_t nb)
{
    const block_q5_0 *x = src;
    for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
        const float d = bump_fp16_to_fp32(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_0 / 2; ++j) {
            const int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (float)(((x[i].qs[j] & 0x0f) | h0) - 16) * d;
            y[j + QK5_0 / 2] = (float)(((x[i].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dequantize_q5_1(const void *src, float *y, int64_t nb)
{
    const block_q5_1 *x = src;
    for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
        const float d = bump_fp16_to_fp32(x[i].d), m = bump_fp16_to_fp32(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (float)((x[i].qs[j] & 0x0f) | h0) * d + m;
            y[j + QK5_1 / 2] = (float)((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void dequantize_q8_0(const void *src, float *y, int64_t nb)
{
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < nb; ++i, y += QK8_0) {
        const float d = bump_fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = (float)x[i].qs[j] * d;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* K-quant searches                                                                          */

enum { QKX2_N = 32, QX_N = 16, QX_NMAX = 32, QX_CANDIDATES = 19 };
#define QX_VECS ((QX_CANDIDATES + VL - 1) / VL)

/* ggml's make_qkx2_quants(32, nmax, x, weights, L, the_min, Laux, rmin, 0.1f, nstep, false)
 * for VL sub-blocks at once: lane k of x[i] and w[i] is value i of sub-block k, and each lane
 * runs ggml's sequence exactly. The scale and min of x ~ scale * L - the_min (L in 0..nmax)
 * minimise the weighted squared error over a first guess and the candidates
 * iscale = (rmin + 0.1 * is + nmax) / (max - min), is = 0..nstep, tried in that order. A
 * candidate that wins replaces min, and the later candidates start from the new min: the
 * candidates depend on each other, the sub-blocks do not. */
static void qkx2_lanes(const vf x[QKX2_N], const vf w[QKX2_N], vi L[QKX2_N], vf *scale_out,
                       vf *the_min, int nmax, float rmin, int nstep)
{
    const float rdelta = 0.1f;
    const vf zero = {0}, one = zero + 1.0f;
    vf min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < QKX2_N; ++i) {
        min = v_select(x[i] < min, x[i], min);
        max = v_select(x[i] > max, x[i], max);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    min = v_select(min > 0, zero, min);
    const vi flat = max == min;  /* ggml: L = 0, scale 0, the_min = -min */

    const vf iscale = (float)nmax / (max - min);
    vf scale = 1.0f / iscale;
    vf best = zero;
    for (int i = 0; i < QKX2_N; ++i) {
        L[i] = v_clamp(v_nearest(iscale * (x[i] - min)), 0, nmax);
        vf diff = scale * TO_VF(L[i]) + min - x[i];
        diff = diff * diff;
        best += w[i] * diff;
    }
    vi laux[QKX2_N];
    for (int is = 0; is <= nstep; ++is) {
        const vf isc = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        vf s_l = zero, s_l2 = zero, s_xl = zero;
        for (int i = 0; i < QKX2_N; ++i) {
            const vi l = v_clamp(v_nearest(isc * (x[i] - min)), 0, nmax);
            laux[i] = l;
            const vf wl = w[i] * TO_VF(l);
            s_l += wl;
            s_l2 += wl * TO_VF(l);
            s_xl += wl * x[i];
        }
        const vf D = sum_w * s_l2 - s_l * s_l;
        const vi usable = D > 0;
        const vf Ds = v_select(usable, D, one);  /* unusable lanes divide by 1, then drop out */
        vf ts = (sum_w * s_xl - sum_x * s_l) / Ds;
        vf tm = (s_l2 * sum_x - s_l * s_xl) / Ds;
        const vi clip = tm > 0;
        ts = v_select(clip, s_xl / v_select(usable, s_l2, one), ts);
        tm = v_select(clip, zero, tm);
        vf err = zero;
        for (int i = 0; i < QKX2_N; ++i) {
            vf diff = ts * TO_VF(laux[i]) + tm - x[i];
            diff = diff * diff;
            err += w[i] * diff;
        }
        const vi take = usable & (err < best) & ~flat;
        best = v_select(take, err, best);
        scale = v_select(take, ts, scale);
        min = v_select(take, tm, min);
        for (int i = 0; i < QKX2_N; ++i) L[i] = (laux[i] & take) | (L[i] & ~take);
    }
    for (int i = 0; i < QKX2_N; ++i) L[i] &= ~flat;
    *scale_out = v_select(flat, zero, scale);
    *the_min = -min;
}

/* ggml's make_qx_quants(16, 32, x, L, rmse_type = 1, NULL): the scale of x ~ scale * (L - 32),
 * L in 0..63, weights x^2, over iscale = -(32 + 0.1 * is) / max for is = -9..9 (is = 0 is
 * ggml's first guess -32 / max, the same number). */
static float qx_quants(const float *x, int8_t *L)
{
    const float max = signed_absmax(x, QX_N);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, QX_N);
        return 0.f;
    }
    vf isc[QX_VECS], s_lx[QX_VECS], s_l2[QX_VECS];
    vi ls[QX_N][QX_VECS];
    for (int v = 0; v < QX_VECS; ++v) {
        isc[v] = -((float)QX_NMAX + 0.1f * v_iota((float)(v * VL - 9))) / max;
        s_lx[v] = s_l2[v] = (vf){0};
    }
    for (int i = 0; i < QX_N; ++i) {
        const float w = x[i] * x[i], wx = w * x[i];
        for (int v = 0; v < QX_VECS; ++v) {
            const vi l = v_clamp(v_nearest(isc[v] * x[i]), -QX_NMAX, QX_NMAX - 1);
            ls[i][v] = l;
            s_lx[v] += wx * TO_VF(l);
            s_l2[v] += (w * TO_VF(l)) * TO_VF(l);
        }
    }
#define LANE(a, c) (a)[(c) / VL][(c) % VL]
    int chosen = 9;  /* is = 0 */
    float sumlx = LANE(s_lx, 9), suml2 = LANE(s_l2, 9);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int c = 0; c < QX_CANDIDATES; ++c) {
        if (c == 9) continue;
        sumlx = LANE(s_lx, c);
        suml2 = LANE(s_l2, c);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            scale = sumlx / suml2;
            best = scale * sumlx;
            chosen = c;
        }
    }
    for (int i = 0; i < QX_N; ++i) L[i] = (int8_t)(LANE(ls[i], chosen) + QX_NMAX);
#undef LANE
    return scale;
}

/* ---------------------------------------------------------------------------------------- */
/* q4_K, q5_K                                                                                */

/* What q4_K and q5_K share: each 32-value sub-block gets a scale and a min (qkx2_lanes,
 * weights |x| + rms), both stored as 6 bits against the super-block's fp16 d and dmin, and
 * the values are requantized against the stored scales. L gets 0..nmax per value. */
static void k_super_block(const float *x, int nmax, float rmin, int nstep, uint8_t L[QK_K],
                          uint8_t packed[K_SCALE_SIZE], ggml_half *d, ggml_half *dmin)
{
    enum { NSUB = QK_K / 32, NG = NSUB / VL };
    /* xt[g][i] lane k: value i of sub-block g * VL + k */
    vf xt[NG][32], wt[NG][32], sc_v[NG], mn_v[NG];
    vi Lt[NG][32];
    float scales[NSUB], mins[NSUB];
    for (int g = 0; g < NG; ++g) {
        for (int i = 0; i < 32; ++i)
            for (int k = 0; k < VL; ++k) xt[g][i][k] = x[32 * (g * VL + k) + i];
        vf sum_x2 = {0};
        for (int i = 0; i < 32; ++i) sum_x2 += xt[g][i] * xt[g][i];
        vf av_x;
        for (int k = 0; k < VL; ++k) av_x[k] = sqrtf(sum_x2[k] / 32);
        for (int i = 0; i < 32; ++i) {
            vi a;
            memcpy(&a, &xt[g][i], sizeof a);
            a &= 0x7fffffff;  /* fabsf */
            vf ax;
            memcpy(&ax, &a, sizeof ax);
            wt[g][i] = av_x + ax;
        }
        qkx2_lanes(xt[g], wt[g], Lt[g], &sc_v[g], &mn_v[g], nmax, rmin, nstep);
        for (int k = 0; k < VL; ++k) {
            scales[g * VL + k] = sc_v[g][k];
            mins[g * VL + k] = mn_v[g][k];
            for (int i = 0; i < 32; ++i) L[32 * (g * VL + k) + i] = (uint8_t)Lt[g][i][k];
        }
    }
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < NSUB; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < NSUB; ++j) {
        /* ggml stores nearest_int() into a uint8_t before clamping: negative values wrap */
        const uint8_t ls = (uint8_t)imin(63, (uint8_t)nearest(inv_scale * scales[j]));
        const uint8_t lm = (uint8_t)imin(63, (uint8_t)nearest(inv_min * mins[j]));
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (uint8_t)((ls & 0x0f) | ((lm & 0x0f) << 4));
            packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
            packed[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d = fp16_from_fp32(max_scale / 63.f);
    *dmin = fp16_from_fp32(max_min / 63.f);
    const float d_all = bump_fp16_to_fp32(*d), dmin_all = bump_fp16_to_fp32(*dmin);
    for (int j = 0; j < NSUB; ++j) {
        uint8_t sc, m;
        bump_scale_min_k4(j, packed, &sc, &m);
        const float ds = d_all * sc;
        if (!ds) continue;  /* ggml keeps the search's L for this sub-block */
        const float dm = dmin_all * m;
        for (int l = 0; l < 32; ++l)
            L[32 * j + l] = (uint8_t)imax(0, imin(nmax, nearest((x[32 * j + l] + dm) / ds)));
    }
}

static void quantize_q4_K(const float *x, void *dst, int64_t nb)
{
    block_q4_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        k_super_block(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quantize_q5_K(const float *x, void *dst, int64_t nb)
{
    block_q5_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        k_super_block(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

static void dequantize_q4_K(const void *src, float *y, int64_t nb)
{
    const block_q4_K *x = src;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *q = x[i].qs;
        const float d = bump_fp16_to_fp32(x[i].d), min = bump_fp16_to_fp32(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            bump_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            bump_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequantize_q5_K(const void *src, float *y, int64_t nb)
{
    const block_q5_K *x = src;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = bump_fp16_to_fp32(x[i].d), min = bump_fp16_to_fp32(x[i].dmin);
        unsigned u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            bump_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            bump_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* q6_K, q8_K                                                                                */

static void quantize_q6_K(const float *x, void *dst, int64_t nb)
{
    block_q6_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            const float scale = qx_quants(x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = fp16_from_fp32(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib)
            y[i].scales[ib] = (int8_t)low_i8(imin(127, nearest(iscale * scales[ib])));
        const float d_all = bump_fp16_to_fp32(y[i].d);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = d_all * y[i].scales[j];
            if (!d) continue;  /* ggml keeps the search's L for this sub-block */
            for (int l = 0; l < 16; ++l)
                L[16 * j + l] = (int8_t)(imax(-32, imin(31, nearest(x[16 * j + l] / d))) + 32);
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                ql[l] = (uint8_t)((q1 & 0x0f) | ((q3 & 0x0f) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0x0f) | ((q4 & 0x0f) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                  ((q4 >> 4) << 6));
            }
        }
    }
}

static void dequantize_q6_K(const void *src, float *y, int64_t nb)
{
    const block_q6_K *x = src;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = bump_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
        }
    }
}

static void quantize_q8_K(const float *x, void *dst, int64_t nb)
{
    block_q8_K *y = dst;
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        const float max = signed_absmax(x, QK_K);
        if (!max) {
            /* ggml leaves bsums as they were; zero is what the zero qs sum to */
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j)
            y[i].qs[j] = (int8_t)low_i8(imin(127, nearest(iscale * x[j])));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

static void dequantize_q8_K(const void *src, float *y, int64_t nb)
{
    const block_q8_K *x = src;
    for (int64_t i = 0; i < nb; ++i)
        for (int j = 0; j < QK_K; ++j) *y++ = x[i].d * (float)x[i].qs[j];
}

/* ---------------------------------------------------------------------------------------- */
/* the API                                                                                    */

typedef void (*quantize_fn)(const float *x, void *y, int64_t nblocks);
typedef void (*dequantize_fn)(const void *x, float *y, int64_t nblocks);

/* Every code of enum bump_dtype: block geometry, and the codecs of the quantized types. */
static const struct codec {
    const char *name;
    size_t bytes;
    int32_t elems;
    quantize_fn quantize;
    dequantize_fn dequantize;
} CODECS[] = {
    [BUMP_DTYPE_FP32] = {"fp32", 4, 1, NULL, NULL},
    [BUMP_DTYPE_BF16] = {"bf16", 2, 1, NULL, NULL},
    [BUMP_DTYPE_FP16] = {"fp16", 2, 1, NULL, NULL},
    [BUMP_DTYPE_INT8] = {"int8", 1, 1, NULL, NULL},
    [BUMP_DTYPE_INT4] = {"int4", 1, 2, NULL, NULL},
    [BUMP_DTYPE_Q4_0] = {"q4_0", sizeof(block_q4_0), QK4_0, quantize_q4_0, dequantize_q4_0},
    [BUMP_DTYPE_Q4_1] = {"q4_1", sizeof(block_q4_1), QK4_1, quantize_q4_1, dequantize_q4_1},
    [BUMP_DTYPE_Q4_K] = {"q4_k", sizeof(block_q4_K), QK_K, quantize_q4_K, dequantize_q4_K},
    [BUMP_DTYPE_Q6_K] = {"q6_k", sizeof(block_q6_K), QK_K, quantize_q6_K, dequantize_q6_K},
    [BUMP_DTYPE_Q8_0] = {"q8_0", sizeof(block_q8_0), QK8_0, quantize_q8_0, dequantize_q8_0},
    [BUMP_DTYPE_Q8_K] = {"q8_k", sizeof(block_q8_K), QK_K, quantize_q8_K, dequantize_q8_K},
    [BUMP_DTYPE_Q5_0] = {"q5_0", sizeof(block_q5_0), QK5_0, quantize_q5_0, dequantize_q5_0},
    [BUMP_DTYPE_Q5_1] = {"q5_1", sizeof(block_q5_1), QK5_1, quantize_q5_1, dequantize_q5_1},
    [BUMP_DTYPE_Q5_K] = {"q5_k", sizeof(block_q5_K), QK_K, quantize_q5_K, dequantize_q5_K},
    [BUMP_DTYPE_I32] = {"i32", 4, 1, NULL, NULL},
    [BUMP_DTYPE_U8] = {"u8", 1, 1, NULL, NULL},
};
#define N_CODECS ((int32_t)(sizeof CODECS / sizeof CODECS[0]))

static const struct codec *codec_of(int32_t dtype)
{
    return dtype >= 0 && dtype < N_CODECS && CODECS[dtype].name ? &CODECS[dtype] : NULL;
}

size_t bump_block_bytes(int32_t dtype)
{
    const struct codec *c = codec_of(dtype);
    return c ? c->bytes : 0;
}

int32_t bump_block_elems(int32_t dtype)
{
    const struct codec *c = codec_of(dtype);
    return c ? c->elems : 0;
}

/* The codec for a call, or NULL with the reason in err. */
static const struct codec *checked(const char *what, int32_t dtype, int64_t rows, int64_t cols,
                                   const void *src, const void *dst, char *err, size_t len)
{
    const struct codec *c = codec_of(dtype);
    if (!c) {
        bump_fail(err, len, BUMP_ERR_INPUT, "%s: unknown dtype code %" PRId32, what, dtype);
        return NULL;
    }
    if (!c->quantize) {
        bump_fail(err, len, BUMP_ERR_INPUT, "%s: %s is not a quantized type", what, c->name);
        return NULL;
    }
    if (rows < 0 || cols < 0) {
        bump_fail(err, len, BUMP_ERR_INPUT, "%s %s: negative shape [%" PRId64 ", %" PRId64 "]",
                  what, c->name, rows, cols);
        return NULL;
    }
    if (cols % c->elems) {
        bump_fail(err, len, BUMP_ERR_INPUT, "%s %s: a row of %" PRId64 " values is not a whole "
                  "number of %" PRId32 "-value blocks", what, c->name, cols, c->elems);
        return NULL;
    }
    if ((rows && cols) && (!src || !dst)) {
        bump_fail(err, len, BUMP_ERR_INPUT, "%s %s: NULL buffer", what, c->name);
        return NULL;
    }
    return c;
}

int bump_quantize(int32_t dtype, const float *src, int64_t rows, int64_t cols, void *dst,
                  char *err, size_t err_len)
{
    const struct codec *c = checked("quantize", dtype, rows, cols, src, dst, err, err_len);
    if (!c) return BUMP_ERR_INPUT;
    const int64_t nb = cols / c->elems;
    const size_t row_bytes = (size_t)nb * c->bytes;
    for (int64_t r = 0; r < rows && cols; ++r) {
        const float *x = src + r * cols;
        const int64_t bad = first_non_finite(x, cols);
        if (bad >= 0)
            return bump_fail(err, err_len, BUMP_ERR_INPUT, "quantize %s: row %" PRId64
                             ", column %" PRId64 " is %g; only finite values can be quantized",
                             c->name, r, bad, (double)x[bad]);
        c->quantize(x, (char *)dst + (size_t)r * row_bytes, nb);
    }
    return BUMP_OK;
}

int bump_dequantize(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst,
                    char *err, size_t err_len)
{
    const struct codec *c = checked("dequantize", dtype, rows, cols, src, dst, err, err_len);
    if (!c) return BUMP_ERR_INPUT;
    const int64_t nb = cols / c->elems;
    const size_t row_bytes = (size_t)nb * c->bytes;
    for (int64_t r = 0; r < rows && cols; ++r)
        c->dequantize((const char *)src + (size_t)r * row_bytes, dst + r * cols, nb);
    return BUMP_OK;
}
