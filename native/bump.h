/* bump.h - the C runtime of bumpconv: a Llama-family forward pass over a memory-mapped bump blob.
 *
 * The caller (src/bumpconv/run/runtime.py) resolves the file layout through the reader and the
 * layout profiles and hands this runtime one row per tensor: its role, where its bytes are, and
 * how its logical matrix sits inside them (the view, derived from the profile's packing rule).
 * The C side knows what a tensor is for, never a file layout; everything in the table is
 * bound-checked against the file size and the model dimensions before a single weight is read.
 *
 * Every function returning int returns a code of enum bump_status (status.h) and writes the
 * reason into err. The kernels' entry points for tests and benchmarks are in probe.h, the
 * SIGBUS guard for any mapping in guard.h.
 *
 * The declarations between the CFFI markers are parsed by cffi (native/build_ffi.py), so they
 * must stay plain C declarations: no macros, no preprocessor lines.
 */
#ifndef BUMP_H
#define BUMP_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"
#include "status.h"

/* CFFI-BEGIN */
/* What a tensor is for. Layer roles repeat once per layer; the others appear once (layer -1).
 * The role names are those of the layout profiles (schemas/ *.profile.json, "role"). */
enum bump_role {
    BUMP_ROLE_TOKEN_EMB, BUMP_ROLE_FINAL_NORM, BUMP_ROLE_LM_HEAD,
    BUMP_ROLE_LN1, BUMP_ROLE_Q_NORM, BUMP_ROLE_K_NORM,
    BUMP_ROLE_WQ, BUMP_ROLE_BQ, BUMP_ROLE_WK, BUMP_ROLE_BK, BUMP_ROLE_WV, BUMP_ROLE_BV,
    BUMP_ROLE_WO, BUMP_ROLE_POST_ATTENTION_NORM, BUMP_ROLE_LN2, BUMP_ROLE_W1, BUMP_ROLE_W2,
    BUMP_ROLE_POST_FFN_NORM,
    BUMP_N_ROLES
};

enum bump_rope_type { BUMP_ROPE_DEFAULT = 0, BUMP_ROPE_LINEAR = 1, BUMP_ROPE_LLAMA3 = 2 };

/* The MLP's gate activation: SwiGLU (silu) or Gemma's GeGLU (tanh-approximated GELU). */
enum bump_activation { BUMP_ACT_SILU = 0, BUMP_ACT_GELU_TANH = 1 };

/* One RoPE: its base and scaling (transformers' rope_parameters). */
typedef struct {
    double theta;              /* rope_theta */
    int32_t type;              /* enum bump_rope_type */
    double factor;             /* linear, llama3 */
    double low_freq_factor, high_freq_factor;  /* llama3 */
    int32_t original_max_pos;                   /* llama3 */
} bump_rope;

/* Model settings (HF config names in comments). Which optional tensors exist (lm_head, q/k/v
 * biases, q/k norms, post norms) is not a setting: the table says it. A zero in a field added
 * for Gemma 3 means the Llama behaviour. */
typedef struct {
    int32_t n_layers;          /* num_hidden_layers, L */
    int32_t vocab_size;        /* V */
    int32_t hidden;            /* hidden_size, E */
    int32_t intermediate;      /* intermediate_size, I */
    int32_t n_heads;           /* num_attention_heads, H */
    int32_t n_kv_heads;        /* num_key_value_heads, KV */
    int32_t head_dim;          /* D */
    int32_t context;           /* max_position_embeddings (or the blob's context), T */
    double rms_eps;
    bump_rope rope;            /* every layer's, or the full-attention layers' */
    bump_rope rope_local;      /* theta 0: none; else the sliding layers' (Gemma 3's local base) */
    int32_t sliding_window;    /* 0: none; else the window of the layers that slide: attend to
                                  the last sliding_window keys */
    const uint8_t *layer_sliding; /* [n_layers], 1 for a layer that slides (Gemma 3's
                                     layer_types); NULL: all do (Mistral) */
    int32_t activation;        /* enum bump_activation (hidden_act / hidden_activation) */
    double norm_offset;        /* every RMSNorm scales by (norm_offset + w), added in fp32 at
                                  open (Gemma's 1; 0 when the blob has it baked in) */
    double embed_scale;        /* 0: none; else embeddings times (float)embed_scale (Gemma:
                                  sqrt(hidden_size)) */
    double query_scale;        /* 0: scores scaled by head_dim^-0.5; else by query_scale^-0.5
                                  (query_pre_attn_scalar) */
    double logit_softcap;      /* 0: none; else logits = tanh(logits / cap) * cap
                                  (final_logit_softcapping) */
    int32_t rope_interleaved;  /* fault injection: pair (2i, 2i+1) instead of (i, i + D/2) */
    int32_t n_threads;         /* 0: the number of online CPUs */
    int32_t int8_activations;  /* decode over quantized weights on int8 activations */
} bump_config;

/* One tensor of the file. The logical tensor is [rows][cols] (nn.Linear's [out][in]; a vector
 * has cols == 1); element (r, c) is the packed element
 *   (r / row_seg) * row_seg_stride + (r % row_seg) * ld + (c / col_seg) * col_seg_stride + c % col_seg
 * counted from `offset` in units of the dtype's elements (blocks hold block_elems of them). */
typedef struct {
    int32_t role;
    int32_t layer;
    int32_t dtype;             /* enum bump_dtype */
    uint64_t offset;           /* bytes from the start of the file */
    uint64_t nbytes;
    int64_t numel;             /* elements those bytes hold (the packed, padded shape) */
    int64_t rows, cols;
    int64_t ld, row_seg, row_seg_stride, col_seg, col_seg_stride;
} bump_tensor;

/* Output buffers for the intermediate values of one forward pass (any pointer may be NULL).
 * Shapes are unpadded, row-major, n = tokens in the call; see docs/runtime-api.md. The fields
 * are the stage keys of src/bumpconv/format/stages.py (a test checks they agree). */
typedef struct {
    int32_t layer;             /* the layer whose stages are recorded; -1 for none */
    float *ln1, *q, *k, *v, *q_norm, *k_norm, *q_rope, *k_rope;
    float *scores, *probs;     /* [H][n][n], start_pos must be 0 */
    float *attn, *wo, *post_attention_norm, *resid1, *ln2, *gate, *up, *swiglu, *down,
        *post_ffn_norm, *out;
    float *final_norm;         /* [n][E] */
    float *hidden;             /* [L + 1][n][E]: the embeddings, then every layer's output */
} bump_taps;

typedef struct bump_model bump_model;

/* Map the file `path`, or, when fd >= 0, the file already open as fd (duplicated: the caller
 * keeps its own), so that what was validated is what runs. */
int bump_open(const char *path, int fd, const bump_config *cfg, const bump_tensor *table,
              int32_t n_tensors, bump_model **out, char *err, size_t err_len);
int bump_forward(bump_model *m, const int32_t *tokens, int32_t n, int32_t start_pos,
                 float *logits, int32_t all_logits, const bump_taps *taps,
                 char *err, size_t err_len);
int32_t bump_cached(const bump_model *m);
void bump_reset(bump_model *m);
void bump_close(bump_model *m);
/* The kernel level this model uses (probe.h: the one a model opened now would use). */
const char *bump_model_kernels(const bump_model *m);
int32_t bump_threads(const bump_model *m);
/* Positions whose RoPE tables and KV cache are allocated (they grow with use, not with the
 * context length). */
int32_t bump_positions_allocated(const bump_model *m);
/* CFFI-END */

#endif
