/* quant.h - quantize fp32 rows into ggml's blocks and back, bit for bit as ggml does.
 *
 * The quantizers produce the bytes of ggml's reference quantizers (quantize_row_<type>_ref in
 * ggml/src/ggml-quants.c: no importance matrix), which is also what llama-quantize writes
 * without --imatrix; the dequantizers produce the floats of ggml's dequantize_row_<type>.
 * quant.c says how (and why the results do not depend on the build machine).
 *
 * Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, and Q8_K (the activation type of the
 * K-quant dot products). A matrix is `rows` rows of `cols` values; a row is cols / elems
 * blocks of bump_block_bytes() each (elems = bump_block_elems()), rows back to back.
 *
 * Every function is reentrant (no global state) and single-threaded: callers parallelise
 * over rows.
 */
#ifndef BUMP_QUANT_H
#define BUMP_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"
#include "status.h"

/* CFFI-BEGIN */
/* Bytes of one block and values per block of a dtype code (enum bump_dtype); 0 for a code
 * the engine does not define. Unquantized types are blocks of one value (INT4: two). */
size_t bump_block_bytes(int32_t dtype);
int32_t bump_block_elems(int32_t dtype);

/* src [rows][cols] fp32 -> dst, rows * (cols / block elements) blocks. Refuses (BUMP_ERR_INPUT,
 * a message in err, dst unspecified) a dtype without a quantizer, cols that are not whole
 * blocks, negative sizes, NULL buffers, and NaN or infinite values (named by row and column:
 * ggml would turn them into garbage blocks silently). Returns BUMP_OK. */
int bump_quantize(int32_t dtype, const float *src, int64_t rows, int64_t cols, void *dst,
                  char *err, size_t err_len);

/* src, blocks of rows x cols values -> dst [rows][cols] fp32. Every bit pattern is a valid
 * block (fp16 scales may be infinite or NaN, as ggml's are then). Same refusals as above,
 * except that values are not checked. */
int bump_dequantize(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst,
                    char *err, size_t err_len);
/* CFFI-END */

#endif
