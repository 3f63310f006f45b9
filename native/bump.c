/* bump.c - Llama-family inference over a memory-mapped bump blob, in the spirit of llama2.c:
 * Config (bump_config, bump.h), Weights, RunState, then forward().
 *
 * Conventions follow transformers' modeling_llama / mistral / qwen2 / qwen3 / gemma3 in fp32,
 * operation by operation, so that a divergence means a bug: RMSNorm over the E real columns
 * (Gemma's (1 + w) added to the weights in fp32 at open, as transformers adds it), rotate-half
 * RoPE with cos/sin computed in fp32 from transformers' inv_freq (Gemma: one table per layer
 * type), attention scores scaled by head_dim^-0.5 (or query_pre_attn_scalar^-0.5) over the
 * causal or sliding window of each layer, softmax in fp32, SwiGLU or GeGLU, Gemma's post norms
 * and embedding scale, tied or untied logits, soft-capped where the model says. Matrices are read in place
 * through their views (bump_wmat: the packed layout, segments and all); vectors (norms,
 * biases) are copied out once at open. Padding is never read.
 *
 * Sections: Weights and RunState; binding the table (validate.h has checked it); the file
 * changed under us (guard.h catches a read past a truncated end); RoPE and the KV cache (both
 * grow with the positions used, never sized by the context up front); the layer; forward().
 */
#define _GNU_SOURCE
#include "bump.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard.h"
#include "kernels.h"
#include "pool.h"
#include "status.h"
#include "validate.h"

#define PI 3.14159265358979323846 /* math.pi */
#define POSITION_QUANTUM 256      /* RoPE tables and the KV cache grow in steps of this */

/* ---------------------------------------------------------------------------------------- */
/* Weights and RunState                                                                     */

typedef struct {                  /* one decoder layer */
    const float *ln1, *ln2;       /* [E] */
    const float *q_norm, *k_norm; /* [D]; NULL unless the model has q/k norms (Qwen3, Gemma) */
    const float *post_attn_norm, *post_ffn_norm; /* [E]; NULL unless it has post norms (Gemma) */
    int32_t window;               /* 0: causal over every earlier position; else the last
                                     `window` positions */
    int local_rope;               /* uses the sliding layers' own RoPE tables */
    const float *bq, *bk, *bv;    /* [H*D], [KV*D], [KV*D]; NULL unless it has biases (Qwen2) */
    bump_wmat wq, wk, wv;         /* [H*D][E], [KV*D][E], [KV*D][E] */
    bump_wmat wo;                 /* [E][H*D] */
    bump_wmat w1;                 /* [2I][E]: gate rows 0..I-1, then up rows I..2I-1 */
    bump_wmat w2;                 /* [E][I] */
} LayerWeights;

typedef struct {
    bump_wmat token_emb;          /* [V][E] */
    const float *final_norm;      /* [E] */
    bump_wmat lm_head;            /* [V][E]; the token_emb view when the model is tied */
    LayerWeights *layers;         /* [L] */
    float *vectors;               /* the one allocation every copied vector lives in */
} Weights;

typedef struct {
    /* activations for up to `cap` tokens per call: the residual stream x [n][E], normed input
     * xb [n][E], q [n][H*D], k and v [n][KV*D], attention output att [n][H*D], WO / W2 output
     * proj [n][E], hb [n][2I] (gate | up per row), hb2 [n][I] (silu(gate) * up) */
    int32_t cap;
    float *x, *xb, *q, *k, *v, *att, *proj, *hb, *hb2;
    bump_gemm_scratch gs;
    /* per position, for positions [0, positions): RoPE cos/sin of position * inv_freq
     * [positions][D/2]; keys [L][KV][D][key_stride] (transposed, so that a vector holds
     * consecutive keys' scores), values [L][KV][positions][D]; attention rows
     * [threads][positions] */
    int32_t positions;
    size_t key_stride;            /* positions rounded up to a cache line, plus one: a
                                     power-of-two stride would put all D rows of a key block in
                                     the same cache sets */
    float *inv_freq;              /* [D/2] */
    float *rope_cos, *rope_sin;
    float *inv_freq_local, *rope_cos_local, *rope_sin_local; /* the sliding layers' (or NULL) */
    float *key_cache, *value_cache;
    float *scores;
    int32_t n_cached;             /* positions [0, n_cached) of the cache are filled */
} RunState;

struct bump_model {
    bump_config c;
    int n_threads;
    bump_pool *pool;              /* n_threads threads, the caller's included */
    Weights w;
    RunState s;
    /* the file: mapped read-only, kept open to notice a change (file_changed) */
    int fd;
    void *map;
    size_t map_size;
    struct stat identity;
    int guard_slot;
    const char *changed;          /* why the model is unusable, once the file changed */
};

/* ---------------------------------------------------------------------------------------- */
/* allocation                                                                               */

/* *acc *= f; nonzero (and *acc unchanged) when the product does not fit a size_t. */
static int mul_overflows(size_t *acc, size_t f)
{
    size_t r;
    if (__builtin_mul_overflow(*acc, f, &r)) return 1;
    *acc = r;
    return 0;
}

/* 64-byte aligned, exact size (so that ASan sees an overrun of even one float). */
static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (n == 0 || n > SIZE_MAX / sizeof(float) || posix_memalign(&p, 64, n * sizeof(float)))
        return NULL;
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* binding: views into the mapping, vectors copied out                                      */

static bump_wmat view_of(const bump_model *m, const bump_tensor *t)
{
    return bump_view_of(t, (const char *)m->map + t->offset);
}

/* Copy an fp32 vector tensor (NULL: absent) to *next and advance it, plus `offset` (0: the
 * values as they are); returns the copy. */
static const float *copied(const bump_model *m, const bump_tensor *t, float **next, float offset)
{
    if (!t) return NULL;
    const ufloat *src = (const ufloat *)((const char *)m->map + t->offset);
    float *dst = *next;
    for (int64_t i = 0; i < t->rows; i++) {
        float v = src[(i / t->row_seg) * t->row_seg_stride + (i % t->row_seg) * t->ld];
        dst[i] = offset != 0.0f ? offset + v : v; /* Gemma3RMSNorm's 1.0 + weight.float() */
    }
    *next += t->rows;
    return dst;
}

static const float *vector_of(const bump_model *m, const bump_tensor *t, float **next)
{
    return copied(m, t, next, 0.0f);
}

/* An RMSNorm's weights as it multiplies by them: (norm_offset + w). */
static const float *norm_of(const bump_model *m, const bump_tensor *t, float **next)
{
    return copied(m, t, next, (float)m->c.norm_offset);
}

/* `sliding`: the caller's per-layer flags (bump_config.layer_sliding), valid during open. */
static int bind_weights(bump_model *m, const bump_tensor *const *slots, const uint8_t *sliding)
{
    const bump_config *c = &m->c;
    size_t floats = 0;
    for (size_t i = 0; i < bump_slot_count(c); i++)
        if (slots[i] && bump_role_vector(slots[i]->role)) floats += (size_t)slots[i]->rows;
    Weights *w = &m->w;
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    w->vectors = alloc_floats(floats);
    if (!w->layers || !w->vectors) return BUMP_ERR_NOMEM;
    float *next = w->vectors;
#define SLOT(role, layer) slots[bump_slot(role, layer)]
    w->token_emb = view_of(m, SLOT(BUMP_ROLE_TOKEN_EMB, -1));
    w->final_norm = norm_of(m, SLOT(BUMP_ROLE_FINAL_NORM, -1), &next);
    w->lm_head = SLOT(BUMP_ROLE_LM_HEAD, -1) ? view_of(m, SLOT(BUMP_ROLE_LM_HEAD, -1))
                                              : w->token_emb;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &w->layers[l];
        lw->ln1 = norm_of(m, SLOT(BUMP_ROLE_LN1, l), &next);
        lw->ln2 = norm_of(m, SLOT(BUMP_ROLE_LN2, l), &next);
        lw->q_norm = norm_of(m, SLOT(BUMP_ROLE_Q_NORM, l), &next);
        lw->k_norm = norm_of(m, SLOT(BUMP_ROLE_K_NORM, l), &next);
        lw->post_attn_norm = norm_of(m, SLOT(BUMP_ROLE_POST_ATTENTION_NORM, l), &next);
        lw->post_ffn_norm = norm_of(m, SLOT(BUMP_ROLE_POST_FFN_NORM, l), &next);
        int slides = c->sliding_window > 0 && (!sliding || sliding[l]);
        lw->window = slides ? c->sliding_window : 0;
        lw->local_rope = slides && c->rope_local.theta > 0;
        lw->bq = vector_of(m, SLOT(BUMP_ROLE_BQ, l), &next);
        lw->bk = vector_of(m, SLOT(BUMP_ROLE_BK, l), &next);
        lw->bv = vector_of(m, SLOT(BUMP_ROLE_BV, l), &next);
        lw->wq = view_of(m, SLOT(BUMP_ROLE_WQ, l));
        lw->wk = view_of(m, SLOT(BUMP_ROLE_WK, l));
        lw->wv = view_of(m, SLOT(BUMP_ROLE_WV, l));
        lw->wo = view_of(m, SLOT(BUMP_ROLE_WO, l));
        lw->w1 = view_of(m, SLOT(BUMP_ROLE_W1, l));
        lw->w2 = view_of(m, SLOT(BUMP_ROLE_W2, l));
    }
#undef SLOT
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the file changed under us                                                                */

/* NULL while the file is as it was at open; else why it is not, and the model refuses further
 * use. A read past the end of a file truncated under the mapping trips the guard (guard.h: it
 * reads zeros, the forward runs to its end and its results are void); content rewritten in
 * place raises no signal, so the fstat identity (size, mtime, inode) is compared before and
 * after every forward. A file replaced by rename is harmless: the mapping keeps the old inode.
 * (Not ctime: unlinking the file, as a rename over it does, changes the ctime of the inode we
 * still map, harmlessly.) */
static const char *file_changed(bump_model *m)
{
    if (m->changed) return m->changed;
    struct stat st;
    int stat_ok = fstat(m->fd, &st) == 0;
    if (bump_guard_tripped(m->guard_slot) ||
        (stat_ok && st.st_size < m->identity.st_size))
        m->changed = "the file was truncated while in use";
    else if (!stat_ok || st.st_size != m->identity.st_size || st.st_ino != m->identity.st_ino ||
             st.st_mtim.tv_sec != m->identity.st_mtim.tv_sec ||
             st.st_mtim.tv_nsec != m->identity.st_mtim.tv_nsec)
        m->changed = "the file was modified while in use";
    return m->changed;
}

/* ---------------------------------------------------------------------------------------- */
/* RoPE and the KV cache, grown to the positions in use                                     */

/* inv_freq exactly as transformers computes it (all in fp32). */
static void rope_inv_freq(const bump_rope *r, int head_dim, float *inv_freq)
{
    int half = head_dim / 2;
    float D = (float)head_dim, base = (float)r->theta;
    for (int i = 0; i < half; i++) {
        /* inv_freq = 1.0 / base ** (arange(0, D, 2).float() / D), fp32 throughout */
        float inv = 1.0f / (float)pow((double)base, (double)((float)(2 * i) / D));
        if (r->type == BUMP_ROPE_LINEAR) {
            inv = inv / (float)r->factor;
        } else if (r->type == BUMP_ROPE_LLAMA3) {
            /* _compute_llama3_parameters. Python scalars meet fp32 tensors as fp32, and torch
             * computes `scalar / tensor` as reciprocal(tensor) * scalar. */
            double old_ctx = r->original_max_pos;
            float factor = (float)r->factor, low = (float)r->low_freq_factor;
            float low_freq_wavelen = (float)(old_ctx / r->low_freq_factor);
            float high_freq_wavelen = (float)(old_ctx / r->high_freq_factor);
            float wavelen = (1.0f / inv) * (float)(2.0 * PI);
            float scaled = wavelen > low_freq_wavelen ? inv / factor : inv;
            float smooth = ((1.0f / wavelen) * (float)old_ctx - low) /
                           (float)(r->high_freq_factor - r->low_freq_factor);
            float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
            int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            inv = medium ? smoothed : scaled;
        }
        inv_freq[i] = inv;
    }
}

static float *keys_of(const bump_model *m, int l, int kvh)
{
    return m->s.key_cache + ((size_t)l * m->c.n_kv_heads + kvh) * m->c.head_dim * m->s.key_stride;
}

static float *values_of(const bump_model *m, int l, int kvh)
{
    return m->s.value_cache +
           ((size_t)l * m->c.n_kv_heads + kvh) * (size_t)m->s.positions * m->c.head_dim;
}

/* cos and sin of position * inv_freq, [P][half], in fp32 as transformers computes them. */
static void rope_tables(const float *inv_freq, size_t P, size_t half, float *cs, float *sn)
{
    for (size_t p = 0; p < P; p++)
        for (size_t i = 0; i < half; i++) {
            float f = (float)p * inv_freq[i];
            cs[p * half + i] = cosf(f);
            sn[p * half + i] = sinf(f);
        }
}

/* Make room for positions [0, need): new tables, the filled part of the cache copied over. */
static int reserve_positions(bump_model *m, int32_t need)
{
    RunState *s = &m->s;
    if (need <= s->positions) return BUMP_OK;
    const bump_config *c = &m->c;
    size_t grow = (size_t)s->positions * 2, P = (size_t)need;
    if (grow > P) P = grow;
    P = (P + POSITION_QUANTUM - 1) / POSITION_QUANTUM * POSITION_QUANTUM;
    if (P > (size_t)c->context) P = (size_t)c->context;
    size_t half = (size_t)c->head_dim / 2, D = (size_t)c->head_dim;
    size_t stride = (P + 15) / 16 * 16 + 16, heads = (size_t)c->n_layers;
    size_t keys = stride, values = P;
    if (mul_overflows(&heads, (size_t)c->n_kv_heads) || mul_overflows(&heads, D) ||
        mul_overflows(&keys, heads) || mul_overflows(&values, heads))
        return BUMP_ERR_NOMEM;
    const int local = s->inv_freq_local != NULL;
    float *cs = alloc_floats(P * half), *sn = alloc_floats(P * half);
    float *lcs = local ? alloc_floats(P * half) : NULL, *lsn = local ? alloc_floats(P * half) : NULL;
    float *kc = alloc_floats(keys), *vc = alloc_floats(values);
    float *sc = alloc_floats((size_t)m->n_threads * P);
    if (!cs || !sn || !kc || !vc || !sc || (local && (!lcs || !lsn))) {
        free(cs), free(sn), free(lcs), free(lsn), free(kc), free(vc), free(sc);
        return BUMP_ERR_NOMEM;
    }
    rope_tables(s->inv_freq, P, half, cs, sn);
    if (local) rope_tables(s->inv_freq_local, P, half, lcs, lsn);
    size_t rows = heads / D, filled = (size_t)s->n_cached;
    for (size_t h = 0; h < rows && filled; h++) {
        for (size_t d = 0; d < D; d++)
            memcpy(kc + (h * D + d) * stride, s->key_cache + (h * D + d) * s->key_stride,
                   filled * sizeof(float));
        memcpy(vc + h * P * D, s->value_cache + h * (size_t)s->positions * D,
               filled * D * sizeof(float));
    }
    free(s->rope_cos), free(s->rope_sin), free(s->key_cache), free(s->value_cache);
    free(s->rope_cos_local), free(s->rope_sin_local), free(s->scores);
    s->rope_cos = cs, s->rope_sin = sn, s->key_cache = kc, s->value_cache = vc, s->scores = sc;
    s->rope_cos_local = lcs, s->rope_sin_local = lsn;
    s->positions = (int32_t)P;
    s->key_stride = stride;
    return BUMP_OK;
}

/* Activation buffers and GEMM scratch for n tokens (grown on demand, never shrunk). */
static void free_activations(RunState *s)
{
    float **bufs[] = {&s->x, &s->xb, &s->q, &s->k, &s->v, &s->att, &s->proj, &s->hb, &s->hb2,
                      &s->gs.pack};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    s->cap = 0;
}

static int reserve_tokens(bump_model *m, int n)
{
    RunState *s = &m->s;
    if (n <= s->cap) return BUMP_OK;
    free_activations(s);
    const bump_config *c = &m->c;
    size_t N = (size_t)n, E = c->hidden, I = c->intermediate;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    s->x = alloc_floats(N * E);
    s->xb = alloc_floats(N * E);
    s->proj = alloc_floats(N * E);
    s->q = alloc_floats(N * QD);
    s->att = alloc_floats(N * QD);
    s->k = alloc_floats(N * KD);
    s->v = alloc_floats(N * KD);
    s->hb = alloc_floats(N * 2 * I);
    s->hb2 = alloc_floats(N * I);
    const size_t kmax = E > I ? (E > QD ? E : QD) : (I > QD ? I : QD); /* longest input */
    s->gs.floats_per_thread = bump_gemm_scratch_floats(s->gs.level, n, (int)kmax);
    s->gs.pack = alloc_floats(s->gs.floats_per_thread * (size_t)m->n_threads);
    if (!s->x || !s->xb || !s->proj || !s->q || !s->att || !s->k || !s->v || !s->hb ||
        !s->hb2 || !s->gs.pack) {
        free_activations(s);
        return BUMP_ERR_NOMEM;
    }
    s->cap = n;
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* open / close                                                                             */

int bump_open(const char *path, int fd, const bump_config *cfg, const bump_tensor *table,
              int32_t n_tensors, bump_model **out, char *err, size_t len)
{
    *out = NULL;
    int rc = bump_check_config(cfg, err, len);
    if (rc) return rc;
    if (n_tensors < 0 || (table == NULL && n_tensors > 0))
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor table: %d entries", n_tensors);

    bump_model *m = calloc(1, sizeof *m);
    if (!m) return bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory");
    const bump_tensor **slots = NULL;
    m->c = *cfg;
    m->c.layer_sliding = NULL; /* the caller's array lives for this call only: bound per layer */
    m->fd = -1;
    m->guard_slot = -1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    m->n_threads = cfg->n_threads > 0 ? cfg->n_threads : online > 0 ? (int)online : 1;
    if (m->n_threads > BUMP_MAX_THREADS) m->n_threads = BUMP_MAX_THREADS;
    m->pool = bump_pool_create(m->n_threads);
    if (!m->pool) {
        rc = bump_fail(err, len, BUMP_ERR_NOMEM, "cannot start %d threads", m->n_threads);
        free(m);
        return rc;
    }
    m->s.gs.pool = m->pool;
    m->s.gs.int8_activations = cfg->int8_activations != 0;
    m->s.gs.level = bump_kernels_select(err, len);
    if (!m->s.gs.level) {
        bump_pool_destroy(m->pool);
        free(m);
        return BUMP_ERR_INPUT;
    }

    m->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (m->fd < 0) {
        rc = bump_fail(err, len, BUMP_ERR_IO, "cannot open: %s", strerror(errno));
        goto error;
    }
    if (fstat(m->fd, &m->identity) || !S_ISREG(m->identity.st_mode) ||
        m->identity.st_size <= 0) {
        rc = bump_fail(err, len, BUMP_ERR_IO, "not a readable non-empty regular file");
        goto error;
    }
    m->map_size = (size_t)m->identity.st_size;
    m->map = mmap(NULL, m->map_size, PROT_READ, MAP_PRIVATE, m->fd, 0);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        rc = bump_fail(err, len, BUMP_ERR_IO, "mmap failed: %s", strerror(errno));
        goto error;
    }
    m->guard_slot = bump_guard_mapping(m->map, m->map_size);

    const bump_config *c = &m->c;
    slots = calloc(bump_slot_count(c), sizeof *slots);
    if (!slots) goto nomem;
    rc = bump_check_table(c, m->map_size, m->s.gs.level, table, n_tensors, slots, err, len);
    if (rc) goto error;
    if (bind_weights(m, slots, cfg->layer_sliding)) goto nomem;
    m->s.inv_freq = alloc_floats((size_t)c->head_dim / 2);
    if (!m->s.inv_freq) goto nomem;
    rope_inv_freq(&c->rope, c->head_dim, m->s.inv_freq);
    if (c->rope_local.theta > 0) {
        m->s.inv_freq_local = alloc_floats((size_t)c->head_dim / 2);
        if (!m->s.inv_freq_local) goto nomem;
        rope_inv_freq(&c->rope_local, c->head_dim, m->s.inv_freq_local);
    }
    free(slots);
    *out = m;
    return BUMP_OK;

nomem:
    rc = bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory");
error:
    free(slots);
    bump_close(m);
    return rc;
}

void bump_close(bump_model *m)
{
    if (!m) return;
    RunState *s = &m->s;
    free_activations(s);
    free(s->scores), free(s->key_cache), free(s->value_cache);
    free(s->rope_cos), free(s->rope_sin), free(s->inv_freq);
    free(s->rope_cos_local), free(s->rope_sin_local), free(s->inv_freq_local);
    free(m->w.layers), free(m->w.vectors);
    bump_guard_release(m->guard_slot);
    if (m->map) munmap(m->map, m->map_size);
    if (m->fd >= 0) close(m->fd);
    bump_pool_destroy(m->pool);
    free(m);
}

int32_t bump_cached(const bump_model *m) { return m->s.n_cached; }
void bump_reset(bump_model *m) { m->s.n_cached = 0; }
int32_t bump_threads(const bump_model *m) { return m->n_threads; }
const char *bump_model_kernels(const bump_model *m) { return bump_kernels_name(m->s.gs.level); }
int32_t bump_positions_allocated(const bump_model *m) { return m->s.positions; }

/* ---------------------------------------------------------------------------------------- */
/* the layer operations                                                                     */

/* transformers' RMSNorm: w * (x * rsqrt(mean(x^2) + eps)), in fp32, over n real columns. */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

/* fn over `items` independent items on the model's threads, in chunks of `chunk` (inline when
 * there is one chunk: waking the workers costs more than it saves). Every item is computed by
 * one thread the same way whatever thread that is, so results do not depend on the thread
 * count. */
static void parallel(const bump_model *m, long items, long chunk, bump_pool_fn fn, void *ctx)
{
    bump_pool_run(m->pool, fn, ctx, items, chunk);
}

/* Rows of equal cost: one chunk per thread. */
static long per_thread(const bump_model *m, long items)
{
    return (items + m->n_threads - 1) / m->n_threads;
}

typedef struct {
    float *out;
    const float *x, *w;
    int rows, cols;
    float eps;
} RmsnormRows;

static void rmsnorm_rows_part(void *ctx, long i0, long i1, int tid)
{
    const RmsnormRows *a = ctx;
    (void)tid;
    for (long i = i0; i < i1; i++)
        rmsnorm(a->out + (size_t)i * a->cols, a->x + (size_t)i * a->cols, a->w, a->cols, a->eps);
}

static void rmsnorm_rows(const bump_model *m, float *out, const float *x, const float *w,
                         int rows, int cols, float eps)
{
    RmsnormRows a = {out, x, w, rows, cols, eps};
    parallel(m, rows, per_thread(m, rows), rmsnorm_rows_part, &a);
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

static void add_bias(float *x, const float *b, int rows, int cols)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) x[(size_t)i * cols + j] += b[j];
}

/* One stage tap: copy `rows` rows of `cols` floats taken every `stride` floats (NULL: skip). */
static void tap(float *dst, const float *src, int rows, int cols, size_t stride)
{
    if (!dst) return;
    for (int i = 0; i < rows; i++)
        memcpy(dst + (size_t)i * cols, src + (size_t)i * stride, (size_t)cols * sizeof(float));
}

#define TAP(tp, key, src, rows, cols, stride) tap((tp) ? (tp)->key : NULL, src, rows, cols, stride)

typedef struct {
    bump_model *m;
    int l, n, start;
    const bump_taps *tp;
} Attention;

/* Tasks (head, query) dealt round-robin: queries late in a prefill cost more. */
static void attention_part(void *ctx, long t0, long t1, int tid)
{
    const Attention *a = ctx;
    bump_model *m = a->m;
    int l = a->l, n = a->n, start = a->start;
    const bump_taps *tp = a->tp;
    const bump_config *c = &m->c;
    RunState *s = &m->s;
    int H = c->n_heads, D = c->head_dim, P = s->positions, group = c->n_heads / c->n_kv_heads;
    int window = m->w.layers[l].window;
    /* transformers' `scaling` (head_dim**-0.5, or query_pre_attn_scalar**-0.5), a Python float
     * meeting fp32 scores as fp32 */
    float scale = (float)pow(c->query_scale > 0 ? c->query_scale : (double)D, -0.5);
    float *tap_scores = tp ? tp->scores : NULL, *tap_probs = tp ? tp->probs : NULL;
    float *sc = s->scores + (size_t)tid * P;
    for (int task = (int)t0; task < (int)t1; task++) {
        int h = task / n, i = task % n, kvh = h / group, pos = start + i;
        int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        const float *q = s->q + ((size_t)i * H + h) * D;
        int span = pos - lo + 1;
        bump_scores(m->s.gs.level, q, D, keys_of(m, l, kvh) + lo, s->key_stride, span, scale, sc + lo);
        float mx = -INFINITY;
        for (int t = lo; t <= pos; t++)
            if (sc[t] > mx) mx = sc[t];
        if (tap_scores) {
            float *row = tap_scores + ((size_t)h * n + i) * n;
            for (int t = 0; t < n; t++) row[t] = t >= lo && t <= pos ? sc[t] : -INFINITY;
        }
        float sum = bump_exp_sum(m->s.gs.level, sc + lo, span, mx);
        for (int t = lo; t <= pos; t++) sc[t] = sc[t] / sum;
        bump_weighted_sum(m->s.gs.level, sc + lo, values_of(m, l, kvh) + (size_t)lo * D, D, span, D,
                          s->att + ((size_t)i * H + h) * D);
        if (tap_probs) {
            float *row = tap_probs + ((size_t)h * n + i) * n;
            for (int t = 0; t < n; t++) row[t] = t >= lo && t <= pos ? sc[t] : 0.0f;
        }
    }
}

/* Causal (optionally sliding-window) GQA attention of n new queries at positions
 * start..start+n-1 against the cache. */
static void attention(bump_model *m, int l, int n, int start, const bump_taps *tp)
{
    Attention a = {m, l, n, start, tp};
    /* (head, query) tasks; later queries attend to more keys: small chunks balance them */
    const long tasks = (long)n * m->c.n_heads;
    parallel(m, tasks, 1 + tasks / (2L * m->n_threads), attention_part, &a);
}

typedef struct {
    const bump_model *m;
    int n, start;
    const float *cos, *sin;       /* the layer's tables */
} Rope;

static void rope_part(void *ctx, long i0, long i1, int tid)
{
    const Rope *a = ctx;
    const bump_config *c = &a->m->c;
    const RunState *s = &a->m->s;
    int H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, half = D / 2;
    (void)tid;
    for (long i = i0; i < i1; i++) {
        const float *cs = a->cos + (size_t)(a->start + i) * half;
        const float *sn = a->sin + (size_t)(a->start + i) * half;
        for (int h = 0; h < H; h++)
            rope(s->q + ((size_t)i * H + h) * D, cs, sn, D, c->rope_interleaved);
        for (int h = 0; h < KV; h++)
            rope(s->k + ((size_t)i * KV + h) * D, cs, sn, D, c->rope_interleaved);
    }
}

typedef struct {
    const bump_model *m;
    int n;
} Glu;

/* hb2 = act(gate) * up per row of hb = [gate (I) | up (I)]: SwiGLU, or Gemma's GeGLU. */
static void glu_part(void *ctx, long i0, long i1, int tid)
{
    const Glu *a = ctx;
    const RunState *s = &a->m->s;
    int I = a->m->c.intermediate, gelu = a->m->c.activation == BUMP_ACT_GELU_TANH;
    (void)tid;
    for (long i = i0; i < i1; i++) {
        const float *g = s->hb + (size_t)i * 2 * I, *u = g + I;
        float *o = s->hb2 + (size_t)i * I;
        if (gelu)
            bump_geglu(s->gs.level, g, u, I, o);
        else
            bump_swiglu(s->gs.level, g, u, I, o);
    }
}

static void layer(bump_model *m, int l, int n, int start, const bump_taps *taps)
{
    const bump_config *c = &m->c;
    const LayerWeights *w = &m->w.layers[l];
    RunState *s = &m->s;
    const bump_taps *tp = taps && taps->layer == l ? taps : NULL;
    int E = c->hidden, I = c->intermediate, H = c->n_heads, KV = c->n_kv_heads,
        D = c->head_dim;
    int QD = H * D, KD = KV * D;
    float eps = (float)c->rms_eps;

    /* attention block */
    rmsnorm_rows(m, s->xb, s->x, w->ln1, n, E, eps);
    TAP(tp, ln1, s->xb, n, E, E);
    bump_matmul_job qkv[3] = {{w->wq, QD, s->q, QD}, {w->wk, KD, s->k, KD},
                              {w->wv, KD, s->v, KD}};
    bump_matmul(qkv, 3, s->xb, E, n, E, &s->gs);
    if (w->bq) {
        add_bias(s->q, w->bq, n, QD);
        add_bias(s->k, w->bk, n, KD);
        add_bias(s->v, w->bv, n, KD);
    }
    TAP(tp, q, s->q, n, QD, QD);
    TAP(tp, k, s->k, n, KD, KD);
    TAP(tp, v, s->v, n, KD, KD);
    if (w->q_norm) {
        rmsnorm_rows(m, s->q, s->q, w->q_norm, n * H, D, eps);
        rmsnorm_rows(m, s->k, s->k, w->k_norm, n * KV, D, eps);
        TAP(tp, q_norm, s->q, n, QD, QD);
        TAP(tp, k_norm, s->k, n, KD, KD);
    }
    Rope rp = {m, n, start, w->local_rope ? s->rope_cos_local : s->rope_cos,
               w->local_rope ? s->rope_sin_local : s->rope_sin};
    parallel(m, n, per_thread(m, n), rope_part, &rp);
    TAP(tp, q_rope, s->q, n, QD, QD);
    TAP(tp, k_rope, s->k, n, KD, KD);
    for (int h = 0; h < KV; h++) {
        float *keys = keys_of(m, l, h) + start, *values = values_of(m, l, h) + (size_t)start * D;
        for (int i = 0; i < n; i++) {
            const float *k = s->k + ((size_t)i * KV + h) * D, *v = s->v + ((size_t)i * KV + h) * D;
            for (int d = 0; d < D; d++) keys[(size_t)d * s->key_stride + i] = k[d];
            memcpy(values + (size_t)i * D, v, (size_t)D * sizeof(float));
        }
    }
    attention(m, l, n, start, tp);
    TAP(tp, attn, s->att, n, QD, QD);
    bump_matmul_job wo = {w->wo, E, s->proj, E};
    bump_matmul(&wo, 1, s->att, QD, n, QD, &s->gs);
    TAP(tp, wo, s->proj, n, E, E);
    if (w->post_attn_norm) {
        rmsnorm_rows(m, s->proj, s->proj, w->post_attn_norm, n, E, eps);
        TAP(tp, post_attention_norm, s->proj, n, E, E);
    }
    for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] = s->x[i] + s->proj[i];
    TAP(tp, resid1, s->x, n, E, E);

    /* MLP block: hb row = [gate (I) | up (I)] */
    rmsnorm_rows(m, s->xb, s->x, w->ln2, n, E, eps);
    TAP(tp, ln2, s->xb, n, E, E);
    bump_matmul_job w1 = {w->w1, 2 * I, s->hb, 2 * (size_t)I};
    bump_matmul(&w1, 1, s->xb, E, n, E, &s->gs);
    TAP(tp, gate, s->hb, n, I, 2 * (size_t)I);
    TAP(tp, up, s->hb + I, n, I, 2 * (size_t)I);
    Glu glu = {m, n};
    parallel(m, n, per_thread(m, n), glu_part, &glu);
    TAP(tp, swiglu, s->hb2, n, I, I);
    bump_matmul_job w2 = {w->w2, E, s->proj, E};
    bump_matmul(&w2, 1, s->hb2, I, n, I, &s->gs);
    TAP(tp, down, s->proj, n, E, E);
    if (w->post_ffn_norm) {
        rmsnorm_rows(m, s->proj, s->proj, w->post_ffn_norm, n, E, eps);
        TAP(tp, post_ffn_norm, s->proj, n, E, E);
    }
    for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] = s->x[i] + s->proj[i];
    TAP(tp, out, s->x, n, E, E);
}


int bump_forward(bump_model *m, const int32_t *tokens, int32_t n, int32_t start_pos,
                 float *logits, int32_t all_logits, const bump_taps *taps, char *err,
                 size_t len)
{
    const bump_config *c = &m->c;
    RunState *s = &m->s;
    const char *changed = file_changed(m);
    if (changed) return bump_fail(err, len, BUMP_ERR_BLOB, "%s; reopen it", changed);
    if (n <= 0)
        return bump_fail(err, len, BUMP_ERR_INPUT, "no tokens");
    if (start_pos != s->n_cached)
        return bump_fail(err, len, BUMP_ERR_INPUT, "start_pos %d but the cache holds %d "
                         "positions", start_pos, s->n_cached);
    if (n > c->context - start_pos)
        return bump_fail(err, len, BUMP_ERR_INPUT,
                         "%d tokens from position %d exceed the context length %d", n,
                         start_pos, c->context);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return bump_fail(err, len, BUMP_ERR_INPUT, "token id %d at index %d is outside "
                             "[0, %d)", tokens[i], i, c->vocab_size);
    if (taps && (taps->scores || taps->probs) && start_pos != 0)
        return bump_fail(err, len, BUMP_ERR_INPUT,
                         "attention taps need a forward from position 0");
    if (taps && taps->layer >= c->n_layers)
        return bump_fail(err, len, BUMP_ERR_INPUT, "tap layer %d is out of range (%d layers)",
                         taps->layer, c->n_layers);
    if (reserve_tokens(m, n) || reserve_positions(m, start_pos + n))
        return bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory for %d tokens at position %d",
                         n, start_pos);

    int E = c->hidden;
    for (int i = 0; i < n; i++) bump_wmat_row(s->gs.level, &m->w.token_emb, tokens[i], E, s->x + (size_t)i * E);
    if (c->embed_scale > 0) { /* Gemma: embeddings * embed_scale.to(fp32) */
        const float scale = (float)c->embed_scale;
        for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] = s->x[i] * scale;
    }
    float *hidden = taps ? taps->hidden : NULL;
    if (hidden) memcpy(hidden, s->x, (size_t)n * E * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        layer(m, l, n, start_pos, taps);
        if (hidden) memcpy(hidden + (size_t)(l + 1) * n * E, s->x, (size_t)n * E * sizeof(float));
    }

    /* final norm over the rows that are needed, then logits */
    int first = logits && !all_logits && !(taps && taps->final_norm) ? n - 1 : 0;
    if (logits || (taps && taps->final_norm)) {
        rmsnorm_rows(m, s->xb + (size_t)first * E, s->x + (size_t)first * E, m->w.final_norm,
                     n - first, E, (float)c->rms_eps);
        if (taps) tap(taps->final_norm, s->xb, n, E, E);
    }
    if (logits) {
        int row0 = all_logits ? 0 : n - 1;
        bump_matmul_job head = {m->w.lm_head, c->vocab_size, logits, (size_t)c->vocab_size};
        bump_matmul(&head, 1, s->xb + (size_t)row0 * E, E, n - row0, E, &s->gs);
        if (c->logit_softcap > 0)
            bump_softcap(s->gs.level, logits, (size_t)(n - row0) * c->vocab_size,
                         (float)c->logit_softcap);
    }
    if ((changed = file_changed(m)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "%s; its results are void, reopen it", changed);
    s->n_cached = start_pos + n;
    return BUMP_OK;
}
