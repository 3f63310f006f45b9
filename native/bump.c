/* bump.c - Llama-family inference over a memory-mapped bump blob, in the spirit of llama2.c:
 * Config (bump_config), Weights (role pointers into the mapping), RunState (activation buffers
 * and the KV cache), forward().
 *
 * Conventions follow transformers' modeling_llama / mistral / qwen2 / qwen3 in fp32, operation
 * by operation, so that a divergence means a bug: RMSNorm over the E real columns, rotate-half
 * RoPE with cos/sin computed in fp32 from transformers' inv_freq, attention scores scaled by
 * head_dim^-0.5, softmax in fp32, SwiGLU, tied or untied logits. Weights are read in place
 * through their padded layout (see bump_wmat); padding is never read.
 */
#define _POSIX_C_SOURCE 200809L
#include "bump.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"

#define MAX_DIM (1 << 24) /* any single dimension */
#define MAX_THREADS 256
#define PI 3.14159265358979323846 /* math.pi */

/* Per-layer weights: pointers into the mapping (NULL when the model has no such tensor). */
typedef struct {
    const ufloat *ln1, *q_norm, *k_norm, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *ln2, *w1, *w2;
} LayerWeights;

struct bump_model {
    bump_config c;
    int n_threads;
    /* the file */
    void *map;
    size_t map_size;
    /* weights */
    const ufloat *token_emb, *final_norm, *lm_head;
    LayerWeights *layers;
    /* RoPE: cos/sin of position * inv_freq, [T][D/2], computed once in fp32 */
    float *rope_cos, *rope_sin;
    /* KV cache, positions [0, n_cached) filled: keys [L][KV][D][key_stride] (transposed, so
     * that a vector holds consecutive keys' scores), values [L][KV][T][D] */
    float *key_cache, *value_cache;
    size_t key_stride;     /* T rounded up to a cache line, plus one: a power-of-two stride
                              would put all D rows of a key block in the same cache sets */
    int32_t n_cached;
    /* run state for up to `cap` tokens per call: the residual stream x [n][E], normed input
     * xb [n][E], q [n][H*D], k and v [n][KV*D], attention output att [n][H*D], WO / W2 output
     * proj [n][E], hb [n][2I] (gate | up per row), hb2 [n][I] (silu(gate) * up) */
    int32_t cap;
    float *x, *xb, *q, *k, *v, *att, *proj, *hb, *hb2;
    float *scores;         /* [threads][T] attention rows */
    bump_gemm_scratch gs;
};

/* ---------------------------------------------------------------------------------------- */
/* errors                                                                                   */

static int fail(char *err, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t len, int code, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *const ROLE_NAMES[BUMP_N_ROLES] = {
    "token_emb", "final_norm", "lm_head", "ln1", "q_norm", "k_norm", "wq", "bq", "wk", "bk",
    "wv", "bv", "wo", "ln2", "w1", "w2",
};

static int is_layer_role(int role) { return role >= BUMP_ROLE_LN1; }

/* *acc *= f; nonzero (and *acc unchanged) when the product does not fit a size_t. */
static int mul_overflows(size_t *acc, size_t f)
{
    size_t r;
    if (__builtin_mul_overflow(*acc, f, &r)) return 1;
    *acc = r;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* validation: the settings, then every table entry against them and the file size          */

static int check_config(const bump_config *c, char *err, size_t len)
{
    const struct { const char *name; int32_t v; } dims[] = {
        {"n_layers", c->n_layers}, {"vocab_size", c->vocab_size}, {"dim", c->dim},
        {"hidden_dim", c->hidden_dim}, {"n_heads", c->n_heads}, {"n_kv_heads", c->n_kv_heads},
        {"head_dim", c->head_dim}, {"seq_len", c->seq_len}, {"aligned_dim", c->aligned_dim},
        {"aligned_head_dim", c->aligned_head_dim}, {"aligned_hidden", c->aligned_hidden},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v <= 0 || dims[i].v > MAX_DIM)
            return fail(err, len, BUMP_ERR_BLOB, "settings: %s=%d is out of range [1, %d]",
                        dims[i].name, dims[i].v, MAX_DIM);
    /* widths of the activation rows, and attention's task count, must fit an int */
    if ((int64_t)c->n_heads * c->head_dim > MAX_DIM || 2 * (int64_t)c->hidden_dim > MAX_DIM ||
        (int64_t)c->seq_len * c->n_heads > INT32_MAX)
        return fail(err, len, BUMP_ERR_BLOB,
                    "settings: n_heads * head_dim, 2 * hidden_dim or seq_len * n_heads is too "
                    "large");
    if (c->n_heads % c->n_kv_heads)
        return fail(err, len, BUMP_ERR_BLOB, "settings: n_kv_heads=%d does not divide n_heads=%d",
                    c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2)
        return fail(err, len, BUMP_ERR_BLOB, "settings: head_dim=%d is odd", c->head_dim);
    if (c->aligned_dim < c->dim || c->aligned_head_dim < c->head_dim ||
        c->aligned_hidden < c->hidden_dim)
        return fail(err, len, BUMP_ERR_BLOB,
                    "settings: an aligned size is smaller than its dimension "
                    "(E=%d AE=%d, D=%d AD=%d, I=%d AI=%d)", c->dim, c->aligned_dim, c->head_dim,
                    c->aligned_head_dim, c->hidden_dim, c->aligned_hidden);
    if (!(c->rms_eps > 0 && isfinite(c->rms_eps)))
        return fail(err, len, BUMP_ERR_BLOB, "settings: rms_eps=%g must be positive", c->rms_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return fail(err, len, BUMP_ERR_BLOB, "settings: rope_theta=%g must be positive",
                    c->rope_theta);
    if (c->rope_type != BUMP_ROPE_DEFAULT && c->rope_type != BUMP_ROPE_LINEAR &&
        c->rope_type != BUMP_ROPE_LLAMA3)
        return fail(err, len, BUMP_ERR_BLOB, "settings: unknown rope type %d", c->rope_type);
    if (c->rope_type != BUMP_ROPE_DEFAULT && !(c->rope_factor > 0 && isfinite(c->rope_factor)))
        return fail(err, len, BUMP_ERR_BLOB, "settings: rope factor %g must be positive",
                    c->rope_factor);
    if (c->rope_type == BUMP_ROPE_LLAMA3 &&
        !(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          isfinite(c->rope_high_freq_factor) && c->rope_original_max_pos > 0))
        return fail(err, len, BUMP_ERR_BLOB,
                    "settings: llama3 rope needs 0 < low_freq_factor < high_freq_factor and "
                    "original_max_position_embeddings > 0");
    if (c->sliding_window < 0)
        return fail(err, len, BUMP_ERR_BLOB, "settings: sliding_window=%d is negative",
                    c->sliding_window);
    if (c->n_threads < 0 || c->n_threads > MAX_THREADS)
        return fail(err, len, BUMP_ERR_BLOB, "settings: n_threads=%d is out of range [0, %d]",
                    c->n_threads, MAX_THREADS);
    return BUMP_OK;
}

/* The padded shape a role must have; returns its rank. */
static int expected_shape(const bump_config *c, int role, int64_t s[4])
{
    int64_t V = c->vocab_size, H = c->n_heads, KV = c->n_kv_heads;
    int64_t AE = c->aligned_dim, AD = c->aligned_head_dim, AI = c->aligned_hidden;
    switch (role) {
    case BUMP_ROLE_TOKEN_EMB: case BUMP_ROLE_LM_HEAD: s[0] = V; s[1] = AE; return 2;
    case BUMP_ROLE_FINAL_NORM: case BUMP_ROLE_LN1: case BUMP_ROLE_LN2: s[0] = AE; return 1;
    case BUMP_ROLE_Q_NORM: case BUMP_ROLE_K_NORM: s[0] = AD; return 1;
    case BUMP_ROLE_WQ: s[0] = H; s[1] = AD; s[2] = AE; return 3;
    case BUMP_ROLE_WK: case BUMP_ROLE_WV: s[0] = KV; s[1] = AD; s[2] = AE; return 3;
    case BUMP_ROLE_BQ: s[0] = H; s[1] = AD; return 2;
    case BUMP_ROLE_BK: case BUMP_ROLE_BV: s[0] = KV; s[1] = AD; return 2;
    case BUMP_ROLE_WO: s[0] = H; s[1] = AE; s[2] = AD; return 3;
    case BUMP_ROLE_W1: s[0] = 2; s[1] = AI; s[2] = AE; return 3;
    case BUMP_ROLE_W2: s[0] = AE; s[1] = AI; return 2;
    default: return 0;
    }
}

static int role_wanted(const bump_config *c, int role)
{
    switch (role) {
    case BUMP_ROLE_LM_HEAD: return !c->tied_embeddings;
    case BUMP_ROLE_BQ: case BUMP_ROLE_BK: case BUMP_ROLE_BV: return c->qkv_bias;
    case BUMP_ROLE_Q_NORM: case BUMP_ROLE_K_NORM: return c->qk_norm;
    default: return 1;
    }
}

static const ufloat **slot(bump_model *m, int role, int layer)
{
    if (!is_layer_role(role)) {
        switch (role) {
        case BUMP_ROLE_TOKEN_EMB: return &m->token_emb;
        case BUMP_ROLE_FINAL_NORM: return &m->final_norm;
        default: return &m->lm_head;
        }
    }
    LayerWeights *w = &m->layers[layer];
    switch (role) {
    case BUMP_ROLE_LN1: return &w->ln1;
    case BUMP_ROLE_Q_NORM: return &w->q_norm;
    case BUMP_ROLE_K_NORM: return &w->k_norm;
    case BUMP_ROLE_WQ: return &w->wq;
    case BUMP_ROLE_BQ: return &w->bq;
    case BUMP_ROLE_WK: return &w->wk;
    case BUMP_ROLE_BK: return &w->bk;
    case BUMP_ROLE_WV: return &w->wv;
    case BUMP_ROLE_BV: return &w->bv;
    case BUMP_ROLE_WO: return &w->wo;
    case BUMP_ROLE_LN2: return &w->ln2;
    case BUMP_ROLE_W1: return &w->w1;
    default: return &w->w2;
    }
}

/* Check one entry completely, then point its slot into the mapping. */
static int bind_tensor(bump_model *m, const bump_tensor *t, int index, char *err, size_t len)
{
    const bump_config *c = &m->c;
    if (t->role < 0 || t->role >= BUMP_N_ROLES)
        return fail(err, len, BUMP_ERR_BLOB, "tensor table entry %d: unknown role %d", index,
                    t->role);
    const char *name = ROLE_NAMES[t->role];
    if (is_layer_role(t->role) ? (t->layer < 0 || t->layer >= c->n_layers) : t->layer != -1)
        return fail(err, len, BUMP_ERR_BLOB, "tensor %s: layer %d is out of range (%d layers)",
                    name, t->layer, c->n_layers);
    if (!role_wanted(c, t->role))
        return fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): not expected for this model's settings", name,
                    t->layer);
    if (t->dtype != BUMP_DTYPE_FP32)
        return fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): dtype %d is not fp32", name,
                    t->layer, t->dtype);
    int64_t want[4];
    int rank = expected_shape(c, t->role, want);
    int same = t->ndim == rank;
    for (int i = 0; same && i < rank; i++) same = t->shape[i] == want[i];
    if (!same)
        return fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): shape (%lld, %lld, %lld)[:%d] contradicts the model "
                    "dimensions (expected (%lld, %lld, %lld)[:%d])", name, t->layer,
                    (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                    (long long)(t->ndim > 2 ? t->shape[2] : 0), t->ndim, (long long)want[0],
                    (long long)(rank > 1 ? want[1] : 0), (long long)(rank > 2 ? want[2] : 0),
                    rank);
    size_t nbytes = sizeof(float);
    for (int i = 0; i < rank; i++)
        if (mul_overflows(&nbytes, (size_t)want[i]))
            return fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): shape is too large",
                        name, t->layer);
    if (t->nbytes != nbytes)
        return fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): %llu bytes, but its shape needs %llu", name, t->layer,
                    (unsigned long long)t->nbytes, (unsigned long long)nbytes);
    if (t->offset > m->map_size || t->nbytes > m->map_size - t->offset)
        return fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): bytes [%llu, %llu + %llu) run past the end of the "
                    "file (%llu bytes)", name, t->layer, (unsigned long long)t->offset,
                    (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                    (unsigned long long)m->map_size);
    const ufloat **p = slot(m, t->role, t->layer);
    if (*p)
        return fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d) appears twice in the table",
                    name, t->layer);
    *p = (const ufloat *)((const char *)m->map + t->offset);
    return BUMP_OK;
}

static int check_complete(bump_model *m, char *err, size_t len)
{
    for (int role = 0; role < BUMP_N_ROLES; role++) {
        if (!role_wanted(&m->c, role)) continue;
        int layers = is_layer_role(role) ? m->c.n_layers : 1;
        for (int l = 0; l < layers; l++)
            if (!*slot(m, role, is_layer_role(role) ? l : -1))
                return fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d) is missing",
                            ROLE_NAMES[role], is_layer_role(role) ? l : -1);
    }
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* RoPE tables, exactly as transformers computes them (all in fp32)                          */

static void rope_init(bump_model *m)
{
    const bump_config *c = &m->c;
    int half = c->head_dim / 2;
    float D = (float)c->head_dim, base = (float)c->rope_theta;
    for (int i = 0; i < half; i++) {
        /* inv_freq = 1.0 / base ** (arange(0, D, 2).float() / D), fp32 throughout */
        float inv = 1.0f / (float)pow((double)base, (double)((float)(2 * i) / D));
        if (c->rope_type == BUMP_ROPE_LINEAR) {
            inv = inv / (float)c->rope_factor;
        } else if (c->rope_type == BUMP_ROPE_LLAMA3) {
            /* _compute_llama3_parameters. Python scalars meet fp32 tensors as fp32, and torch
             * computes `scalar / tensor` as reciprocal(tensor) * scalar. */
            double old_ctx = c->rope_original_max_pos;
            float factor = (float)c->rope_factor, low = (float)c->rope_low_freq_factor;
            float low_freq_wavelen = (float)(old_ctx / c->rope_low_freq_factor);
            float high_freq_wavelen = (float)(old_ctx / c->rope_high_freq_factor);
            float wavelen = (1.0f / inv) * (float)(2.0 * PI);
            float scaled = wavelen > low_freq_wavelen ? inv / factor : inv;
            float smooth = ((1.0f / wavelen) * (float)old_ctx - low) /
                           (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
            float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
            int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            inv = medium ? smoothed : scaled;
        }
        for (int pos = 0; pos < c->seq_len; pos++) {
            float f = (float)pos * inv;
            m->rope_cos[(size_t)pos * half + i] = cosf(f);
            m->rope_sin[(size_t)pos * half + i] = sinf(f);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* open / close                                                                             */

static void *xcalloc(size_t n, size_t size) { return n && size ? calloc(n, size) : NULL; }

/* 64-byte aligned, exact size (so that ASan sees an overrun of even one float). */
static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (n == 0 || n > SIZE_MAX / sizeof(float) || posix_memalign(&p, 64, n * sizeof(float)))
        return NULL;
    return p;
}

int bump_open(const char *path, const bump_config *cfg, const bump_tensor *table,
              int32_t n_tensors, bump_model **out, char *err, size_t len)
{
    *out = NULL;
    int rc = check_config(cfg, err, len);
    if (rc) return rc;
    if (n_tensors < 0 || (table == NULL && n_tensors > 0))
        return fail(err, len, BUMP_ERR_BLOB, "tensor table: %d entries", n_tensors);

    bump_model *m = xcalloc(1, sizeof *m);
    if (!m) return fail(err, len, BUMP_ERR_NOMEM, "out of memory");
    m->c = *cfg;
#ifdef _OPENMP
    m->n_threads = cfg->n_threads > 0 ? cfg->n_threads : omp_get_max_threads();
    if (m->n_threads > MAX_THREADS) m->n_threads = MAX_THREADS;
#else
    m->n_threads = 1;
#endif
    m->gs.n_threads = m->n_threads;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = fail(err, len, BUMP_ERR_IO, "cannot open: %s", strerror(errno));
        goto error;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        rc = fail(err, len, BUMP_ERR_IO, "not a readable non-empty regular file");
        goto error;
    }
    m->map_size = (size_t)st.st_size;
    m->map = mmap(NULL, m->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        rc = fail(err, len, BUMP_ERR_IO, "mmap failed: %s", strerror(errno));
        goto error;
    }

    const bump_config *c = &m->c;
    size_t T = (size_t)c->seq_len, D = (size_t)c->head_dim, rows = (size_t)c->n_layers;
    m->layers = xcalloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) goto nomem;
    for (int i = 0; i < n_tensors; i++)
        if ((rc = bind_tensor(m, &table[i], i, err, len))) goto error;
    if ((rc = check_complete(m, err, len))) goto error;

    /* calloc: pages of the (possibly long) context are only touched as positions fill */
    m->key_stride = (T + 15) / 16 * 16 + 16;
    if (mul_overflows(&rows, (size_t)c->n_kv_heads) || mul_overflows(&rows, D))
        goto nomem;
    size_t keys = rows, values = rows;
    if (mul_overflows(&keys, m->key_stride) || mul_overflows(&values, T))
        goto nomem;
    m->key_cache = xcalloc(keys, sizeof(float));
    m->value_cache = xcalloc(values, sizeof(float));
    m->rope_cos = alloc_floats(T * D / 2);
    m->rope_sin = alloc_floats(T * D / 2);
    m->scores = alloc_floats((size_t)m->n_threads * T);
    if (!m->rope_cos || !m->rope_sin || !m->key_cache || !m->value_cache || !m->scores)
        goto nomem;
    rope_init(m);
    *out = m;
    return BUMP_OK;

nomem:
    rc = fail(err, len, BUMP_ERR_NOMEM, "out of memory");
error:
    bump_close(m);
    return rc;
}

static void free_run_state(bump_model *m)
{
    float **bufs[] = {&m->x,   &m->xb,   &m->q,  &m->k,   &m->v,
                      &m->att, &m->proj, &m->hb, &m->hb2, &m->gs.pack};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    m->cap = 0;
}

void bump_close(bump_model *m)
{
    if (!m) return;
    free_run_state(m);
    free(m->scores);
    free(m->key_cache);
    free(m->value_cache);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->layers);
    if (m->map) munmap(m->map, m->map_size);
    free(m);
}

int32_t bump_cached(const bump_model *m) { return m->n_cached; }
void bump_reset(bump_model *m) { m->n_cached = 0; }
int32_t bump_threads(const bump_model *m) { return m->n_threads; }

/* Activation buffers and GEMM scratch for n tokens (grown on demand, never shrunk). */
static int reserve(bump_model *m, int n)
{
    if (n <= m->cap) return BUMP_OK;
    free_run_state(m);
    const bump_config *c = &m->c;
    size_t N = (size_t)n, E = c->dim, I = c->hidden_dim;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    m->x = alloc_floats(N * E);
    m->xb = alloc_floats(N * E);
    m->proj = alloc_floats(N * E);
    m->q = alloc_floats(N * QD);
    m->att = alloc_floats(N * QD);
    m->k = alloc_floats(N * KD);
    m->v = alloc_floats(N * KD);
    m->hb = alloc_floats(N * 2 * I);
    m->hb2 = alloc_floats(N * I);
    m->gs.floats_per_thread = bump_gemm_scratch_floats(n);
    m->gs.pack = alloc_floats(m->gs.floats_per_thread * (size_t)m->n_threads);
    if (!m->x || !m->xb || !m->proj || !m->q || !m->att || !m->k || !m->v || !m->hb || !m->hb2 ||
        !m->gs.pack) {
        free_run_state(m);
        return BUMP_ERR_NOMEM;
    }
    m->cap = n;
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the layer operations                                                                     */

/* transformers' RMSNorm: w * (x * rsqrt(mean(x^2) + eps)), in fp32, over n real columns. */
static void rmsnorm(float *out, const float *x, const ufloat *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

static void rmsnorm_rows(float *out, const float *x, const ufloat *w, int rows, int cols,
                         float eps, int nt)
{
#pragma omp parallel for schedule(static) num_threads(nt) if (rows > 1)
    for (int i = 0; i < rows; i++)
        rmsnorm(out + (size_t)i * cols, x + (size_t)i * cols, w, cols, eps);
}

/* q * cos + rotate_half(q) * sin for one head; `interleaved` is the engine's old bug. */
static void rope(float *h, const float *cs, const float *sn, int D, int interleaved)
{
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        float x1 = h[a], x2 = h[b];
        h[a] = x1 * cs[i] - x2 * sn[i];
        h[b] = x2 * cs[i] + x1 * sn[i];
    }
}

/* Weight views (see bump_wmat): per-head Q/K/V blocks, per-head WO, stacked gate/up, W2. */
static bump_wmat wmat_rows(const ufloat *base, int rows, size_t ld, int cols)
{
    return (bump_wmat){base, ld, rows, 0, cols, 0};
}

static bump_wmat wmat_heads(const bump_config *c, const ufloat *w)
{
    size_t AD = c->aligned_head_dim, AE = c->aligned_dim;
    return (bump_wmat){w, AE, c->head_dim, AD * AE, c->dim, 0};
}

static bump_wmat wmat_wo(const bump_config *c, const ufloat *w)
{
    size_t AD = c->aligned_head_dim, AE = c->aligned_dim;
    return (bump_wmat){w, AD, c->dim, 0, c->head_dim, AE * AD};
}

static bump_wmat wmat_w1(const bump_config *c, const ufloat *w)
{
    size_t AI = c->aligned_hidden, AE = c->aligned_dim;
    return (bump_wmat){w, AE, c->hidden_dim, AI * AE, c->dim, 0};
}

static void add_head_bias(float *x, const ufloat *b, int n, int heads, int D, int AD)
{
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++)
            for (int d = 0; d < D; d++)
                x[((size_t)i * heads + h) * D + d] += b[(size_t)h * AD + d];
}

/* Copy `rows` rows of `cols` floats taken every `stride` floats (NULL destination: skip). */
static void tap(float *dst, const float *src, int rows, int cols, size_t stride)
{
    if (!dst) return;
    for (int i = 0; i < rows; i++)
        memcpy(dst + (size_t)i * cols, src + (size_t)i * stride, (size_t)cols * sizeof(float));
}

static inline int thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The cached keys of one kv head, [D][key_stride] (transposed), and its values, [T][D]. */
static float *keys_of(const bump_model *m, int l, int kvh)
{
    return m->key_cache + ((size_t)l * m->c.n_kv_heads + kvh) * m->c.head_dim * m->key_stride;
}

static float *values_of(const bump_model *m, int l, int kvh)
{
    return m->value_cache +
           ((size_t)l * m->c.n_kv_heads + kvh) * (size_t)m->c.seq_len * m->c.head_dim;
}

/* Causal (optionally sliding-window) GQA attention of n new queries at positions
 * start..start+n-1 against the cache. */
static void attention(bump_model *m, int l, int n, int start, const bump_taps *tp)
{
    const bump_config *c = &m->c;
    int H = c->n_heads, D = c->head_dim, T = c->seq_len, group = c->n_heads / c->n_kv_heads;
    float scale = (float)pow((double)D, -0.5);
    float *tap_scores = tp ? tp->scores : NULL, *tap_probs = tp ? tp->probs : NULL;
#pragma omp parallel for schedule(static, 1) num_threads(m->n_threads) if (n * H > 1)
    for (int task = 0; task < n * H; task++) {
        int h = task / n, i = task % n, kvh = h / group, pos = start + i;
        int lo = c->sliding_window > 0 && pos - c->sliding_window + 1 > 0
                     ? pos - c->sliding_window + 1 : 0;
        const float *q = m->q + ((size_t)i * H + h) * D;
        float *s = m->scores + (size_t)thread_num() * T;
        int span = pos - lo + 1;
        bump_scores(q, D, keys_of(m, l, kvh) + lo, m->key_stride, span, scale, s + lo);
        float mx = -INFINITY;
        for (int t = lo; t <= pos; t++)
            if (s[t] > mx) mx = s[t];
        if (tap_scores) {
            float *row = tap_scores + ((size_t)h * n + i) * n;
            for (int t = 0; t < n; t++) row[t] = t >= lo && t <= pos ? s[t] : -INFINITY;
        }
        float sum = 0.0f;
        for (int t = lo; t <= pos; t++) {
            s[t] = expf(s[t] - mx);
            sum += s[t];
        }
        for (int t = lo; t <= pos; t++) s[t] = s[t] / sum;
        bump_weighted_sum(s + lo, values_of(m, l, kvh) + (size_t)lo * D, D, span, D,
                          m->att + ((size_t)i * H + h) * D);
        if (tap_probs) {
            float *row = tap_probs + ((size_t)h * n + i) * n;
            for (int t = 0; t < n; t++) row[t] = t >= lo && t <= pos ? s[t] : 0.0f;
        }
    }
}

static void layer(bump_model *m, int l, int n, int start, const bump_taps *taps)
{
    const bump_config *c = &m->c;
    const LayerWeights *w = &m->layers[l];
    const bump_taps *tp = taps && taps->layer == l ? taps : NULL;
    int E = c->dim, I = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim;
    int QD = H * D, KD = KV * D, nt = m->n_threads;
    float eps = (float)c->rms_eps;

    /* attention block */
    rmsnorm_rows(m->xb, m->x, w->ln1, n, E, eps, nt);
    bump_matmul_job qkv[3] = {{wmat_heads(c, w->wq), QD, m->q, QD},
                              {wmat_heads(c, w->wk), KD, m->k, KD},
                              {wmat_heads(c, w->wv), KD, m->v, KD}};
    bump_matmul(qkv, 3, m->xb, E, n, E, &m->gs);
    if (c->qkv_bias) {
        add_head_bias(m->q, w->bq, n, H, D, c->aligned_head_dim);
        add_head_bias(m->k, w->bk, n, KV, D, c->aligned_head_dim);
        add_head_bias(m->v, w->bv, n, KV, D, c->aligned_head_dim);
    }
    if (tp) {
        tap(tp->ln1, m->xb, n, E, E);
        tap(tp->q, m->q, n, QD, QD);
        tap(tp->k, m->k, n, KD, KD);
        tap(tp->v, m->v, n, KD, KD);
    }
    if (c->qk_norm) {
        rmsnorm_rows(m->q, m->q, w->q_norm, n * H, D, eps, nt);
        rmsnorm_rows(m->k, m->k, w->k_norm, n * KV, D, eps, nt);
        if (tp) {
            tap(tp->q_norm, m->q, n, QD, QD);
            tap(tp->k_norm, m->k, n, KD, KD);
        }
    }
    int half = D / 2;
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *cs = m->rope_cos + (size_t)(start + i) * half;
        const float *sn = m->rope_sin + (size_t)(start + i) * half;
        for (int h = 0; h < H; h++)
            rope(m->q + ((size_t)i * H + h) * D, cs, sn, D, c->rope_interleaved);
        for (int h = 0; h < KV; h++)
            rope(m->k + ((size_t)i * KV + h) * D, cs, sn, D, c->rope_interleaved);
    }
    if (tp) {
        tap(tp->q_rope, m->q, n, QD, QD);
        tap(tp->k_rope, m->k, n, KD, KD);
    }
    for (int h = 0; h < KV; h++) {
        float *keys = keys_of(m, l, h) + start, *values = values_of(m, l, h) + (size_t)start * D;
        for (int i = 0; i < n; i++) {
            const float *k = m->k + ((size_t)i * KV + h) * D, *v = m->v + ((size_t)i * KV + h) * D;
            for (int d = 0; d < D; d++) keys[(size_t)d * m->key_stride + i] = k[d];
            memcpy(values + (size_t)i * D, v, (size_t)D * sizeof(float));
        }
    }
    attention(m, l, n, start, tp);
    bump_matmul_job wo = {wmat_wo(c, w->wo), E, m->proj, E};
    bump_matmul(&wo, 1, m->att, QD, n, QD, &m->gs);
    for (size_t i = 0; i < (size_t)n * E; i++) m->x[i] = m->x[i] + m->proj[i];
    if (tp) {
        tap(tp->attn, m->att, n, QD, QD);
        tap(tp->wo, m->proj, n, E, E);
        tap(tp->resid1, m->x, n, E, E);
    }

    /* MLP block: hb row = [gate (I) | up (I)] */
    rmsnorm_rows(m->xb, m->x, w->ln2, n, E, eps, nt);
    bump_matmul_job w1 = {wmat_w1(c, w->w1), 2 * I, m->hb, 2 * (size_t)I};
    bump_matmul_job w2 = {wmat_rows(w->w2, E, c->aligned_hidden, I), E, m->proj, E};
    bump_matmul(&w1, 1, m->xb, E, n, E, &m->gs);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *g = m->hb + (size_t)i * 2 * I, *u = g + I;
        float *o = m->hb2 + (size_t)i * I;
        for (int j = 0; j < I; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
    bump_matmul(&w2, 1, m->hb2, I, n, I, &m->gs);
    for (size_t i = 0; i < (size_t)n * E; i++) m->x[i] = m->x[i] + m->proj[i];
    if (tp) {
        tap(tp->ln2, m->xb, n, E, E);
        tap(tp->gate, m->hb, n, I, 2 * (size_t)I);
        tap(tp->up, m->hb + I, n, I, 2 * (size_t)I);
        tap(tp->swiglu, m->hb2, n, I, I);
        tap(tp->down, m->proj, n, E, E);
        tap(tp->out, m->x, n, E, E);
    }
}

int bump_forward(bump_model *m, const int32_t *tokens, int32_t n, int32_t start_pos,
                 float *logits, int32_t all_logits, const bump_taps *taps, char *err,
                 size_t len)
{
    const bump_config *c = &m->c;
    if (n <= 0)
        return fail(err, len, BUMP_ERR_INPUT, "no tokens");
    if (start_pos != m->n_cached)
        return fail(err, len, BUMP_ERR_INPUT, "start_pos %d but the cache holds %d positions",
                    start_pos, m->n_cached);
    if (n > c->seq_len - start_pos)
        return fail(err, len, BUMP_ERR_INPUT,
                    "%d tokens from position %d exceed the context length %d", n, start_pos,
                    c->seq_len);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return fail(err, len, BUMP_ERR_INPUT, "token id %d at index %d is outside [0, %d)",
                        tokens[i], i, c->vocab_size);
    if (taps && (taps->scores || taps->probs) && start_pos != 0)
        return fail(err, len, BUMP_ERR_INPUT, "attention taps need a forward from position 0");
    if (taps && taps->layer >= c->n_layers)
        return fail(err, len, BUMP_ERR_INPUT, "tap layer %d is out of range (%d layers)",
                    taps->layer, c->n_layers);
    if (reserve(m, n)) return fail(err, len, BUMP_ERR_NOMEM, "out of memory for %d tokens", n);

    int E = c->dim, AE = c->aligned_dim;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < E; j++)
            m->x[(size_t)i * E + j] = m->token_emb[(size_t)tokens[i] * AE + j];
    float *hidden = taps ? taps->hidden : NULL;
    if (hidden) memcpy(hidden, m->x, (size_t)n * E * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        layer(m, l, n, start_pos, taps);
        if (hidden) memcpy(hidden + (size_t)(l + 1) * n * E, m->x, (size_t)n * E * sizeof(float));
    }
    m->n_cached = start_pos + n;

    /* final norm over the rows that are needed, then logits */
    int first = logits && !all_logits && !(taps && taps->final_norm) ? n - 1 : 0;
    if (logits || (taps && taps->final_norm)) {
        rmsnorm_rows(m->xb + (size_t)first * E, m->x + (size_t)first * E, m->final_norm,
                     n - first, E, (float)c->rms_eps, m->n_threads);
        if (taps) tap(taps->final_norm, m->xb, n, E, E);
    }
    if (logits) {
        int row0 = all_logits ? 0 : n - 1;
        bump_matmul_job head = {wmat_rows(c->tied_embeddings ? m->token_emb : m->lm_head,
                                          c->vocab_size, AE, E),
                                c->vocab_size, logits, (size_t)c->vocab_size};
        bump_matmul(&head, 1, m->xb + (size_t)row0 * E, E, n - row0, E, &m->gs);
    }
    return BUMP_OK;
}
