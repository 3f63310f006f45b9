/* probe.h - the kernels called one at a time, for tests and benchmarks (src/bumpconv/native/):
 * the same code paths a forward pass runs, at the level a model opened now would use
 * (BUMPCONV_KERNELS, else the CPU's best), without a model.
 *
 * The part between the CFFI markers is parsed by cffi (native/build_ffi.py): plain C only.
 */
#ifndef BUMP_PROBE_H
#define BUMP_PROBE_H

#include <stddef.h>
#include <stdint.h>

/* CFFI-BEGIN */
/* The kernel level a model opened now would use. */
const char *bump_kernel_name(void);
/* Whether, at that level, a product of M activation rows over weights of `dtype` runs on int8
 * activations when a model is opened with them (the GEMV for every quantized type; the GEMM
 * only where the level has an int8 one, for the types it reads). */
int32_t bump_int8_products(int32_t dtype, int32_t M);
/* One matrix product through the kernels: out[M][N] = in[M][K] W^T with W of `dtype` at w
 * (numel elements) seen through the view of bump_tensor (ld, row_seg, row_seg_stride,
 * col_seg, col_seg_stride, in elements), on n_threads threads, on int8 activations when
 * int8_activations (where bump_int8_products says so). The view is checked as the runtime
 * checks a tensor's (validate.h): one that leaves the buffer or splits a block is refused. */
int bump_matmul_view(int32_t dtype, const void *w, int64_t numel, int64_t ld, int64_t row_seg,
                     int64_t row_seg_stride, int64_t col_seg, int64_t col_seg_stride, int32_t N,
                     int32_t K, const float *in, int32_t M, float *out, int32_t n_threads,
                     int32_t int8_activations, char *err, size_t err_len);
/* o[j] = silu(g[j]) * u[j] for j < n through the SwiGLU kernel. */
int bump_swiglu_rows(const float *g, const float *u, int32_t n, float *o, char *err,
                     size_t err_len);
/* o[j] = gelu_tanh(g[j]) * u[j] for j < n through the GeGLU kernel. */
int bump_geglu_rows(const float *g, const float *u, int32_t n, float *o, char *err,
                    size_t err_len);
/* x[i] = tanh(x[i] / cap) * cap for i < n through the soft-cap kernel. */
int bump_softcap_rows(float *x, int64_t n, float cap, char *err, size_t err_len);
/* s[t] = exp(s[t] - mx) for t < n through the softmax kernel, returning their sum (-1 when
 * BUMPCONV_KERNELS names no usable level). */
float bump_exp_sum_rows(float *s, int32_t n, float mx, char *err, size_t err_len);
/* CFFI-END */

#endif
