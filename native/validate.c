/* validate.c - the checks of validate.h: the role table (what each tensor of the table must
 * be), the settings, each entry (bounds first, meaning second), the view, completeness.
 */
#include "validate.h"

#include <math.h>
#include <stdio.h>

#include "quant.h"
#include "status.h"

/* ---------------------------------------------------------------------------------------- */
/* the role table: what each tensor of the table must be                                    */

enum extent { X_ONE, X_V, X_E, X_I, X_2I, X_D, X_HD, X_KVD }; /* dimensions of bump_config */
enum group { REQUIRED, OPT_HEAD, OPT_QK_NORM, OPT_BIAS, OPT_POST_NORM }; /* optional: all or none */

static const struct role {
    const char *name;
    int per_layer;
    int vector;            /* copied out as fp32 [rows]; else a matrix read in place */
    int rows, cols;        /* enum extent */
    int group;
} ROLES[BUMP_N_ROLES] = {
    [BUMP_ROLE_TOKEN_EMB] = {"token_emb", 0, 0, X_V, X_E, REQUIRED},
    [BUMP_ROLE_FINAL_NORM] = {"final_norm", 0, 1, X_E, X_ONE, REQUIRED},
    [BUMP_ROLE_LM_HEAD] = {"lm_head", 0, 0, X_V, X_E, OPT_HEAD},
    [BUMP_ROLE_LN1] = {"ln1", 1, 1, X_E, X_ONE, REQUIRED},
    [BUMP_ROLE_Q_NORM] = {"q_norm", 1, 1, X_D, X_ONE, OPT_QK_NORM},
    [BUMP_ROLE_K_NORM] = {"k_norm", 1, 1, X_D, X_ONE, OPT_QK_NORM},
    [BUMP_ROLE_WQ] = {"wq", 1, 0, X_HD, X_E, REQUIRED},
    [BUMP_ROLE_BQ] = {"bq", 1, 1, X_HD, X_ONE, OPT_BIAS},
    [BUMP_ROLE_WK] = {"wk", 1, 0, X_KVD, X_E, REQUIRED},
    [BUMP_ROLE_BK] = {"bk", 1, 1, X_KVD, X_ONE, OPT_BIAS},
    [BUMP_ROLE_WV] = {"wv", 1, 0, X_KVD, X_E, REQUIRED},
    [BUMP_ROLE_BV] = {"bv", 1, 1, X_KVD, X_ONE, OPT_BIAS},
    [BUMP_ROLE_WO] = {"wo", 1, 0, X_E, X_HD, REQUIRED},
    [BUMP_ROLE_POST_ATTENTION_NORM] = {"post_attention_norm", 1, 1, X_E, X_ONE, OPT_POST_NORM},
    [BUMP_ROLE_LN2] = {"ln2", 1, 1, X_E, X_ONE, REQUIRED},
    [BUMP_ROLE_W1] = {"w1", 1, 0, X_2I, X_E, REQUIRED},
    [BUMP_ROLE_W2] = {"w2", 1, 0, X_E, X_I, REQUIRED},
    [BUMP_ROLE_POST_FFN_NORM] = {"post_ffn_norm", 1, 1, X_E, X_ONE, OPT_POST_NORM},
};

static int64_t extent(const bump_config *c, int x)
{
    switch (x) {
    case X_V: return c->vocab_size;
    case X_E: return c->hidden;
    case X_I: return c->intermediate;
    case X_2I: return 2 * (int64_t)c->intermediate;
    case X_D: return c->head_dim;
    case X_HD: return (int64_t)c->n_heads * c->head_dim;
    case X_KVD: return (int64_t)c->n_kv_heads * c->head_dim;
    default: return 1;
    }
}

size_t bump_slot_count(const bump_config *c)
{
    return (size_t)BUMP_N_ROLES * ((size_t)c->n_layers + 1);
}

int bump_slot(int role, int layer)
{
    return ROLES[role].per_layer ? BUMP_N_ROLES * (1 + layer) + role : role;
}

int bump_role_vector(int role) { return ROLES[role].vector; }

/* ---------------------------------------------------------------------------------------- */
/* the settings                                                                             */

static int check_rope(const bump_rope *r, const char *what, char *err, size_t len)
{
    if (!(r->theta > 0 && isfinite(r->theta)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: %s theta=%g must be positive",
                         what, r->theta);
    if (r->type != BUMP_ROPE_DEFAULT && r->type != BUMP_ROPE_LINEAR && r->type != BUMP_ROPE_LLAMA3)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: unknown %s type %d", what, r->type);
    if (r->type != BUMP_ROPE_DEFAULT && !(r->factor > 0 && isfinite(r->factor)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: %s factor %g must be positive",
                         what, r->factor);
    if (r->type == BUMP_ROPE_LLAMA3 &&
        !(r->low_freq_factor > 0 && r->high_freq_factor > r->low_freq_factor &&
          isfinite(r->high_freq_factor) && r->original_max_pos > 0))
        return bump_fail(err, len, BUMP_ERR_BLOB,
                         "settings: llama3 %s needs 0 < low_freq_factor < high_freq_factor "
                         "and original_max_position_embeddings > 0", what);
    return BUMP_OK;
}

int bump_check_config(const bump_config *c, char *err, size_t len)
{
    const struct { const char *name; int32_t v; } dims[] = {
        {"n_layers", c->n_layers}, {"vocab_size", c->vocab_size}, {"hidden", c->hidden},
        {"intermediate", c->intermediate}, {"n_heads", c->n_heads},
        {"n_kv_heads", c->n_kv_heads}, {"head_dim", c->head_dim}, {"context", c->context},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v <= 0 || dims[i].v > BUMP_RUNTIME_MAX_DIM)
            return bump_fail(err, len, BUMP_ERR_BLOB, "settings: %s=%d is out of range [1, %d]",
                             dims[i].name, dims[i].v, BUMP_RUNTIME_MAX_DIM);
    /* widths of the activation rows, and attention's task count, must fit an int */
    if ((int64_t)c->n_heads * c->head_dim > BUMP_RUNTIME_MAX_DIM ||
        2 * (int64_t)c->intermediate > BUMP_RUNTIME_MAX_DIM ||
        (int64_t)c->context * c->n_heads > INT32_MAX)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: n_heads * head_dim, 2 * "
                         "intermediate or context * n_heads is too large");
    if (c->n_heads % c->n_kv_heads)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                         "settings: n_kv_heads=%d does not divide n_heads=%d", c->n_kv_heads,
                         c->n_heads);
    if (c->head_dim % 2)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: head_dim=%d is odd", c->head_dim);
    if (!(c->rms_eps > 0 && isfinite(c->rms_eps)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: rms_eps=%g must be positive",
                         c->rms_eps);
    int rc = check_rope(&c->rope, "rope", err, len);
    if (rc) return rc;
    if (c->rope_local.theta != 0 && (rc = check_rope(&c->rope_local, "local rope", err, len)))
        return rc;
    if (c->sliding_window < 0)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: sliding_window=%d is negative",
                         c->sliding_window);
    if (c->layer_sliding)
        for (int l = 0; l < c->n_layers; l++)
            if (c->layer_sliding[l] > 1)
                return bump_fail(err, len, BUMP_ERR_BLOB, "settings: layer_sliding[%d]=%d is "
                                 "not 0 or 1", l, c->layer_sliding[l]);
    if (c->activation != BUMP_ACT_SILU && c->activation != BUMP_ACT_GELU_TANH)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: unknown activation %d",
                         c->activation);
    const struct { const char *name; double v; } scalars[] = {
        {"norm_offset", c->norm_offset}, {"embed_scale", c->embed_scale},
        {"query_scale", c->query_scale}, {"logit_softcap", c->logit_softcap},
    };
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++)
        if (!(scalars[i].v >= 0 && isfinite(scalars[i].v)))
            return bump_fail(err, len, BUMP_ERR_BLOB, "settings: %s=%g must be finite and not "
                             "negative", scalars[i].name, scalars[i].v);
    if (c->n_threads < 0 || c->n_threads > BUMP_MAX_THREADS)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: n_threads=%d is out of range "
                         "[0, %d]", c->n_threads, BUMP_MAX_THREADS);
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* views                                                                                    */

/* a * b + c for non-negative operands, or INT64_MAX when it does not fit an int64. */
static int64_t mul_add(int64_t a, int64_t b, int64_t c)
{
    int64_t p, s;
    return __builtin_mul_overflow(a, b, &p) || __builtin_add_overflow(p, c, &s) ? INT64_MAX : s;
}

/* The largest packed element index that indices [0, n) reach along one axis (index i at
 * (i / seg) * seg_stride + (i % seg) * step; n, seg >= 1, strides >= 0), INT64_MAX when that
 * does not fit an int64. Not always index n - 1's: when the last segment is short, the end of
 * the one before it may reach further. */
static int64_t axis_reach(int64_t n, int64_t seg, int64_t seg_stride, int64_t step)
{
    const int64_t last = n - 1, q = last / seg;
    int64_t reach = mul_add(q, seg_stride, 0);
    if (reach != INT64_MAX) reach = mul_add(last % seg, step, reach);
    if (q > 0) {
        int64_t prev = mul_add(q - 1, seg_stride, 0);
        if (prev != INT64_MAX) prev = mul_add(seg - 1, step, prev);
        if (prev > reach) reach = prev;
    }
    return reach;
}

int bump_check_view(const bump_tensor *t, int64_t be, int code, const char *what, char *err,
                    size_t len)
{
    const struct { const char *name; int64_t v; } f[] = {
        {"ld", t->ld}, {"row_seg", t->row_seg}, {"row_seg_stride", t->row_seg_stride},
        {"col_seg", t->col_seg}, {"col_seg_stride", t->col_seg_stride},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v < 0)
            return bump_fail(err, len, code, "%s: view %s=%lld is negative", what, f[i].name,
                             (long long)f[i].v);
        if (f[i].v > t->numel)
            return bump_fail(err, len, code, "%s: view %s=%lld is out of range (it leaves "
                             "the buffer of %lld elements)", what, f[i].name, (long long)f[i].v,
                             (long long)t->numel);
    }
    if (t->row_seg < 1 || t->col_seg < 1)
        return bump_fail(err, len, code, "%s: empty view segment", what);
    const int64_t rows = axis_reach(t->rows, t->row_seg, t->row_seg_stride, t->ld);
    const int64_t cols = axis_reach(t->cols, t->col_seg, t->col_seg_stride, 1);
    const int64_t reach = rows == INT64_MAX || cols == INT64_MAX ? INT64_MAX
                          : mul_add(1, rows, cols);
    if (reach >= t->numel)
        return bump_fail(err, len, code, "%s: its view reaches element %lld of %lld (it leaves "
                         "the buffer)", what, (long long)reach, (long long)t->numel);
    if (be > 1 && (t->ld % be || t->row_seg_stride % be || t->col_seg_stride % be ||
                   (t->col_seg < t->cols && t->col_seg % be) || t->cols % be))
        return bump_fail(err, len, code, "%s: its view does not start every row and segment on "
                         "a block of %lld (it splits a block)", what, (long long)be);
    return BUMP_OK;
}

bump_wmat bump_view_of(const bump_tensor *t, const void *base)
{
    return (bump_wmat){.dtype = t->dtype, .base = base, .ld = (size_t)t->ld,
                       .n_seg = (int32_t)(t->row_seg < t->rows ? t->row_seg : t->rows),
                       .n_seg_stride = (size_t)t->row_seg_stride,
                       .k_seg = (int32_t)(t->col_seg < t->cols ? t->col_seg : t->cols),
                       .k_seg_stride = (size_t)t->col_seg_stride};
}

/* ---------------------------------------------------------------------------------------- */
/* the table                                                                                */

/* One entry completely (bounds first, meaning second). */
static int check_tensor(const bump_config *c, size_t file_size, const bump_kernel_level *level,
                        const bump_tensor *t, int index, char *err, size_t len)
{
    if (t->role < 0 || t->role >= BUMP_N_ROLES)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor table entry %d: unknown role %d",
                         index, t->role);
    const struct role *r = &ROLES[t->role];
    if (r->per_layer ? (t->layer < 0 || t->layer >= c->n_layers) : t->layer != -1)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s: layer %d is out of range (%d "
                         "layers)", r->name, t->layer, c->n_layers);
    const int64_t be = bump_block_elems(t->dtype);
    const size_t bb = bump_block_bytes(t->dtype);
    if (be <= 0 ||
        (r->vector ? t->dtype != BUMP_DTYPE_FP32 : !bump_kernel_reads(level, t->dtype)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): dtype %d is not one "
                         "the runtime reads for a %s", r->name, t->layer, t->dtype,
                         r->vector ? "vector (fp32 only)" : "matrix");
    if (t->numel <= 0 || t->numel % be || (uint64_t)(t->numel / be) > UINT64_MAX / bb ||
        (uint64_t)(t->numel / be) * bb != t->nbytes)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                         "tensor %s (layer %d): %llu bytes do not hold %lld elements of dtype "
                         "%d", r->name, t->layer, (unsigned long long)t->nbytes,
                         (long long)t->numel, t->dtype);
    if (t->offset > file_size || t->nbytes > file_size - t->offset)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                         "tensor %s (layer %d): bytes [%llu, %llu + %llu) run past the end of "
                         "the file (%llu bytes)", r->name, t->layer,
                         (unsigned long long)t->offset, (unsigned long long)t->offset,
                         (unsigned long long)t->nbytes, (unsigned long long)file_size);
    const int64_t rows = extent(c, r->rows), cols = extent(c, r->cols);
    if (t->rows != rows || t->cols != cols)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                         "tensor %s (layer %d): logical shape [%lld, %lld], the settings need "
                         "[%lld, %lld]", r->name, t->layer, (long long)t->rows,
                         (long long)t->cols, (long long)rows, (long long)cols);
    char what[64];
    snprintf(what, sizeof what, "tensor %s (layer %d)", r->name, t->layer);
    return bump_check_view(t, be, BUMP_ERR_BLOB, what, err, len);
}

/* Every required role present once per layer (or once); an optional group is present when
 * any of its tensors is, and then entirely. */
static int check_complete(const bump_config *c, const bump_tensor *const *slots, char *err,
                          size_t len)
{
    int group_present[OPT_POST_NORM + 1] = {1, 0, 0, 0, 0};
    for (size_t i = 0; i < bump_slot_count(c); i++)
        if (slots[i]) group_present[ROLES[slots[i]->role].group] = 1;
    for (int role = 0; role < BUMP_N_ROLES; role++) {
        const struct role *r = &ROLES[role];
        int layers = r->per_layer ? c->n_layers : 1;
        int wanted = group_present[r->group];
        for (int l = 0; l < layers; l++) {
            int layer = r->per_layer ? l : -1;
            int present = slots[bump_slot(role, layer)] != NULL;
            if (present != wanted)
                return bump_fail(err, len, BUMP_ERR_BLOB,
                                 wanted ? "tensor %s (layer %d) is missing"
                                        : "tensor %s (layer %d) is present, but not the rest "
                                          "of its group in every layer", r->name, layer);
        }
    }
    return BUMP_OK;
}

int bump_check_table(const bump_config *c, size_t file_size, const bump_kernel_level *level,
                     const bump_tensor *table, int32_t n, const bump_tensor **slots, char *err,
                     size_t len)
{
    for (int i = 0; i < n; i++) {
        const bump_tensor *t = &table[i];
        int rc = check_tensor(c, file_size, level, t, i, err, len);
        if (rc) return rc;
        const bump_tensor **p = &slots[bump_slot(t->role, t->layer)];
        if (*p)
            return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d) appears twice in "
                             "the table", ROLES[t->role].name, t->layer);
        *p = t;
    }
    return check_complete(c, slots, err, len);
}
