/* blocks.c - block geometry of every dtype code (see blocks.h). */
#include "blocks.h"

#include <stddef.h>

size_t bump_block_bytes(int32_t dtype)
{
    switch (dtype) {
    case BUMP_DTYPE_FP32: return 4;
    case BUMP_DTYPE_BF16: case BUMP_DTYPE_FP16: return 2;
    case BUMP_DTYPE_INT8: case BUMP_DTYPE_INT4: return 1;
    case BUMP_DTYPE_Q4_0: return sizeof(block_q4_0);
    case BUMP_DTYPE_Q4_1: return sizeof(block_q4_1);
    case BUMP_DTYPE_Q5_0: return sizeof(block_q5_0);
    case BUMP_DTYPE_Q5_1: return sizeof(block_q5_1);
    case BUMP_DTYPE_Q8_0: return sizeof(block_q8_0);
    case BUMP_DTYPE_Q4_K: return sizeof(block_q4_K);
    case BUMP_DTYPE_Q5_K: return sizeof(block_q5_K);
    case BUMP_DTYPE_Q6_K: return sizeof(block_q6_K);
    case BUMP_DTYPE_Q8_K: return sizeof(block_q8_K);
    default: return 0;
    }
}

int32_t bump_block_elems(int32_t dtype)
{
    switch (dtype) {
    case BUMP_DTYPE_FP32: case BUMP_DTYPE_BF16: case BUMP_DTYPE_FP16: case BUMP_DTYPE_INT8:
        return 1;
    case BUMP_DTYPE_INT4: return 2;
    case BUMP_DTYPE_Q4_0: case BUMP_DTYPE_Q4_1: case BUMP_DTYPE_Q5_0: case BUMP_DTYPE_Q5_1:
    case BUMP_DTYPE_Q8_0: return 32;
    case BUMP_DTYPE_Q4_K: case BUMP_DTYPE_Q5_K: case BUMP_DTYPE_Q6_K: case BUMP_DTYPE_Q8_K:
        return QK_K;
    default: return 0;
    }
}
