/* blocks.h - the quantized block layouts the engine's kernels read: ggml's, byte for byte.
 *
 * One block holds the values of consecutive elements of one row. Sizes and element counts are
 * also in src/bumpconv/format/dtypes.py (BLOCKS), which is where Python sizes tensors; a test
 * compares the two through bump_block_bytes()/bump_block_elems() (quant.h).
 *
 * ggml_half is an IEEE binary16 bit pattern. No struct has padding (checked at compile time).
 * The part between the CFFI markers is parsed by cffi (native/build_ffi.py): plain C only.
 */
#ifndef BUMP_BLOCKS_H
#define BUMP_BLOCKS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

typedef uint16_t ggml_half;

/* CFFI-BEGIN */
/* The engine's current dtype codes (src/bumpconv/format/dtypes.py: DType), as tensor tables
 * carry them. A test checks that the two agree. */
enum bump_dtype {
    BUMP_DTYPE_FP32 = 0, BUMP_DTYPE_BF16 = 1, BUMP_DTYPE_FP16 = 2, BUMP_DTYPE_INT8 = 3,
    BUMP_DTYPE_INT4 = 4, BUMP_DTYPE_Q4_0 = 5, BUMP_DTYPE_Q4_1 = 6, BUMP_DTYPE_Q4_K = 7,
    BUMP_DTYPE_Q6_K = 8, BUMP_DTYPE_Q8_0 = 9, BUMP_DTYPE_Q8_K = 10, BUMP_DTYPE_Q5_0 = 11,
    BUMP_DTYPE_Q5_1 = 12, BUMP_DTYPE_Q5_K = 13,
    /* bumpconv's extension codes (the engine's enum has none for the tokenizer's arrays) */
    BUMP_DTYPE_I32 = 128, BUMP_DTYPE_U8 = 129
};
/* CFFI-END */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* Every block type has alignment 1: bump files place tensors at any byte offset, so a block
 * (and its fp16 scale) is read and written wherever it lies, through these types directly. */
#define BUMP_ANY_OFFSET __attribute__((aligned(1)))

/* x = d * (q - 8), q 4-bit */
typedef struct { ggml_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0 BUMP_ANY_OFFSET;
/* x = d * q + m, q 4-bit */
typedef struct { ggml_half d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1 BUMP_ANY_OFFSET;
/* x = d * (q - 16), q 5-bit: low 4 bits in qs, the fifth in qh */
typedef struct { ggml_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0 BUMP_ANY_OFFSET;
/* x = d * q + m, q 5-bit */
typedef struct { ggml_half d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1 BUMP_ANY_OFFSET;
/* x = d * q, q int8 */
typedef struct { ggml_half d; int8_t qs[QK8_0]; } block_q8_0 BUMP_ANY_OFFSET;
/* 8 sub-blocks of 32: x = d * sc * q - dmin * m, 6-bit sc/m packed in scales, q 4-bit */
typedef struct {
    ggml_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K BUMP_ANY_OFFSET;
/* as q4_K with a fifth bit per value in qh */
typedef struct {
    ggml_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K BUMP_ANY_OFFSET;
/* 16 sub-blocks of 16: x = d * sc * (q - 32), q 6-bit (low 4 bits in ql, high 2 in qh) */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    ggml_half d;
} block_q6_K BUMP_ANY_OFFSET;
/* activations for the K-quant dot products: x = d * q, bsums = sums of 16 q's */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K BUMP_ANY_OFFSET;

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K");
_Static_assert(_Alignof(block_q6_K) == 1 && _Alignof(block_q8_K) == 1, "any offset");

/* The float of an IEEE binary16 (exact; NaNs come out quiet, as from ggml's routine). Every
 * scale of every block type is decoded by this one function. */
static inline float bump_fp16_to_fp32(ggml_half h)
{
#if defined(__F16C__)
    return _cvtsh_ss(h); /* the same exact conversion in one instruction (quiet NaNs too) */
#else
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (e == 0) {
        const float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        bits = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);
    else
        bits = sign | ((e + 112u) << 23) | (m << 13);
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

/* The 6-bit scale and min of sub-block j of a q4_K / q5_K block (ggml's get_scale_min_k4). */
static inline void bump_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
