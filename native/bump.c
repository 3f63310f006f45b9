/* bump.c - Llama-family inference over a memory-mapped bump blob, in the spirit of llama2.c:
 * Config (bump_config, bump.h), Weights, RunState, then forward().
 *
 * Conventions follow transformers' modeling_llama / mistral / qwen2 / qwen3 in fp32, operation
 * by operation, so that a divergence means a bug: RMSNorm over the E real columns, rotate-half
 * RoPE with cos/sin computed in fp32 from transformers' inv_freq, attention scores scaled by
 * head_dim^-0.5, softmax in fp32, SwiGLU, tied or untied logits. Matrices are read in place
 * through their views (bump_wmat: the packed layout, segments and all); vectors (norms,
 * biases) are copied out once at open. Padding is never read.
 *
 * Sections: the role table; Weights and RunState; validating and binding the table; the file
 * (mapping, and the guard that turns a file changed under us into an error instead of SIGBUS);
 * RoPE and the KV cache (both grow with the positions used, never sized by the context up
 * front); the layer; forward().
 */
#define _GNU_SOURCE
#include "bump.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "pool.h"
#include "quant.h"
#include "status.h"

#define MAX_DIM (1 << 24) /* any single dimension */
#define MAX_THREADS 256
#define PI 3.14159265358979323846 /* math.pi */
#define POSITION_QUANTUM 256      /* RoPE tables and the KV cache grow in steps of this */

/* ---------------------------------------------------------------------------------------- */
/* the role table: what each tensor of the table must be                                    */

enum extent { X_ONE, X_V, X_E, X_I, X_2I, X_D, X_HD, X_KVD }; /* dimensions of bump_config */
enum group { REQUIRED, OPT_HEAD, OPT_QK_NORM, OPT_BIAS };      /* optional: all of a group or none */

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
    [BUMP_ROLE_LN2] = {"ln2", 1, 1, X_E, X_ONE, REQUIRED},
    [BUMP_ROLE_W1] = {"w1", 1, 0, X_2I, X_E, REQUIRED},
    [BUMP_ROLE_W2] = {"w2", 1, 0, X_E, X_I, REQUIRED},
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

/* ---------------------------------------------------------------------------------------- */
/* Weights and RunState                                                                     */

typedef struct {                  /* one decoder layer */
    const float *ln1, *ln2;       /* [E] */
    const float *q_norm, *k_norm; /* [D]; NULL unless the model has q/k norms (Qwen3) */
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
    /* the file: mapped read-only, kept open to notice a change (see the guard below) */
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
/* validation: the settings, then every table entry against them and the file size          */

static int check_config(const bump_config *c, char *err, size_t len)
{
    const struct { const char *name; int32_t v; } dims[] = {
        {"n_layers", c->n_layers}, {"vocab_size", c->vocab_size}, {"hidden", c->hidden},
        {"intermediate", c->intermediate}, {"n_heads", c->n_heads},
        {"n_kv_heads", c->n_kv_heads}, {"head_dim", c->head_dim}, {"context", c->context},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v <= 0 || dims[i].v > MAX_DIM)
            return bump_fail(err, len, BUMP_ERR_BLOB, "settings: %s=%d is out of range [1, %d]",
                        dims[i].name, dims[i].v, MAX_DIM);
    /* widths of the activation rows, and attention's task count, must fit an int */
    if ((int64_t)c->n_heads * c->head_dim > MAX_DIM || 2 * (int64_t)c->intermediate > MAX_DIM ||
        (int64_t)c->context * c->n_heads > INT32_MAX)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                    "settings: n_heads * head_dim, 2 * intermediate or context * n_heads is too "
                    "large");
    if (c->n_heads % c->n_kv_heads)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: n_kv_heads=%d does not divide n_heads=%d",
                    c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: head_dim=%d is odd", c->head_dim);
    if (!(c->rms_eps > 0 && isfinite(c->rms_eps)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: rms_eps=%g must be positive", c->rms_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: rope_theta=%g must be positive",
                    c->rope_theta);
    if (c->rope_type != BUMP_ROPE_DEFAULT && c->rope_type != BUMP_ROPE_LINEAR &&
        c->rope_type != BUMP_ROPE_LLAMA3)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: unknown rope type %d", c->rope_type);
    if (c->rope_type != BUMP_ROPE_DEFAULT && !(c->rope_factor > 0 && isfinite(c->rope_factor)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: rope factor %g must be positive",
                    c->rope_factor);
    if (c->rope_type == BUMP_ROPE_LLAMA3 &&
        !(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          isfinite(c->rope_high_freq_factor) && c->rope_original_max_pos > 0))
        return bump_fail(err, len, BUMP_ERR_BLOB,
                    "settings: llama3 rope needs 0 < low_freq_factor < high_freq_factor and "
                    "original_max_position_embeddings > 0");
    if (c->sliding_window < 0)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: sliding_window=%d is negative",
                    c->sliding_window);
    if (c->n_threads < 0 || c->n_threads > MAX_THREADS)
        return bump_fail(err, len, BUMP_ERR_BLOB, "settings: n_threads=%d is out of range [0, %d]",
                    c->n_threads, MAX_THREADS);
    return BUMP_OK;
}

/* The largest packed element index a view reaches for indices [0, n) along one axis. */
static int64_t view_reach(int64_t n, int64_t seg, int64_t seg_stride, int64_t step)
{
    int64_t last = n - 1, q = last / seg;
    int64_t reach = q * seg_stride + (last % seg) * step;
    if (q > 0) { /* the end of the previous full segment may reach further */
        int64_t prev = (q - 1) * seg_stride + (seg - 1) * step;
        if (prev > reach) reach = prev;
    }
    return reach;
}

/* Check one entry completely (bounds first, meaning second); returns its slot index. */
static int check_tensor(const bump_model *m, const bump_tensor *t, int index, char *err,
                        size_t len)
{
    const bump_config *c = &m->c;
    if (t->role < 0 || t->role >= BUMP_N_ROLES)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor table entry %d: unknown role %d", index,
                    t->role);
    const struct role *r = &ROLES[t->role];
    if (r->per_layer ? (t->layer < 0 || t->layer >= c->n_layers) : t->layer != -1)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s: layer %d is out of range (%d layers)",
                    r->name, t->layer, c->n_layers);
    int64_t be = bump_block_elems(t->dtype);
    size_t bb = bump_block_bytes(t->dtype);
    if (be <= 0 || (r->vector ? t->dtype != BUMP_DTYPE_FP32
                              : !bump_kernel_reads(m->s.gs.level, t->dtype)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): dtype %d is not one the "
                    "runtime reads for a %s", r->name, t->layer, t->dtype,
                    r->vector ? "vector (fp32 only)" : "matrix");
    if (t->numel <= 0 || t->numel % be ||
        (uint64_t)(t->numel / be) > UINT64_MAX / bb || (uint64_t)(t->numel / be) * bb != t->nbytes)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): %llu bytes do not hold %lld elements of dtype %d",
                    r->name, t->layer, (unsigned long long)t->nbytes, (long long)t->numel,
                    t->dtype);
    if (t->offset > m->map_size || t->nbytes > m->map_size - t->offset)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): bytes [%llu, %llu + %llu) run past the end of the "
                    "file (%llu bytes)", r->name, t->layer, (unsigned long long)t->offset,
                    (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                    (unsigned long long)m->map_size);
    int64_t rows = extent(c, r->rows), cols = extent(c, r->cols);
    if (t->rows != rows || t->cols != cols)
        return bump_fail(err, len, BUMP_ERR_BLOB,
                    "tensor %s (layer %d): logical shape [%lld, %lld], the settings need "
                    "[%lld, %lld]", r->name, t->layer, (long long)t->rows, (long long)t->cols,
                    (long long)rows, (long long)cols);
    const int64_t v[] = {t->ld, t->row_seg, t->row_seg_stride, t->col_seg, t->col_seg_stride};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] < 0 || v[i] > t->numel)
            return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): view stride %lld is out "
                        "of range", r->name, t->layer, (long long)v[i]);
    if (t->row_seg < 1 || t->col_seg < 1)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): empty view segment",
                    r->name, t->layer);
    int64_t reach = view_reach(rows, t->row_seg, t->row_seg_stride, t->ld) +
                    view_reach(cols, t->col_seg, t->col_seg_stride, 1);
    if (reach >= t->numel)
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): its view reaches element "
                    "%lld of %lld", r->name, t->layer, (long long)reach, (long long)t->numel);
    if (be > 1 && (t->ld % be || t->row_seg_stride % be || t->col_seg_stride % be ||
                   (t->col_seg < cols && t->col_seg % be) || cols % be))
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d): its view does not start "
                    "every row and segment on a block of %lld", r->name, t->layer, (long long)be);
    return BUMP_OK;
}

static int slot_index(int role, int layer)
{
    return ROLES[role].per_layer ? BUMP_N_ROLES * (1 + layer) + role : role;
}

/* Every required role present once per layer (or once); an optional group (the output head,
 * q/k norms, q/k/v biases) is present when any of its tensors is, and then entirely. */
static int check_complete(const bump_model *m, const bump_tensor *const *slots, char *err,
                          size_t len)
{
    const bump_config *c = &m->c;
    int group_present[OPT_BIAS + 1] = {1, 0, 0, 0};
    for (int i = 0; i < BUMP_N_ROLES * (c->n_layers + 1); i++)
        if (slots[i]) group_present[ROLES[slots[i]->role].group] = 1;
    for (int role = 0; role < BUMP_N_ROLES; role++) {
        const struct role *r = &ROLES[role];
        int layers = r->per_layer ? c->n_layers : 1;
        int wanted = group_present[r->group];
        for (int l = 0; l < layers; l++) {
            int layer = r->per_layer ? l : -1;
            int present = slots[slot_index(role, layer)] != NULL;
            if (present != wanted)
                return bump_fail(err, len, BUMP_ERR_BLOB, wanted ? "tensor %s (layer %d) is missing"
                            : "tensor %s (layer %d) is present, but not the rest of its group "
                              "in every layer", r->name, layer);
        }
    }
    return BUMP_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* binding: views into the mapping, vectors copied out                                      */

static bump_wmat view_of(const bump_model *m, const bump_tensor *t)
{
    return (bump_wmat){.dtype = t->dtype, .base = (const char *)m->map + t->offset,
                       .ld = (size_t)t->ld, .n_seg = (int32_t)t->row_seg,
                       .n_seg_stride = (size_t)t->row_seg_stride, .k_seg = (int32_t)t->col_seg,
                       .k_seg_stride = (size_t)t->col_seg_stride};
}

/* Copy an fp32 vector tensor (NULL: absent) to *next and advance it; returns the copy. */
static const float *vector_of(const bump_model *m, const bump_tensor *t, float **next)
{
    if (!t) return NULL;
    const ufloat *src = (const ufloat *)((const char *)m->map + t->offset);
    float *dst = *next;
    for (int64_t i = 0; i < t->rows; i++)
        dst[i] = src[(i / t->row_seg) * t->row_seg_stride + (i % t->row_seg) * t->ld];
    *next += t->rows;
    return dst;
}

static int bind_weights(bump_model *m, const bump_tensor *const *slots)
{
    const bump_config *c = &m->c;
    size_t floats = 0;
    for (int i = 0; i < BUMP_N_ROLES * (c->n_layers + 1); i++)
        if (slots[i] && ROLES[slots[i]->role].vector) floats += (size_t)slots[i]->rows;
    Weights *w = &m->w;
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    w->vectors = alloc_floats(floats);
    if (!w->layers || !w->vectors) return BUMP_ERR_NOMEM;
    float *next = w->vectors;
#define SLOT(role, layer) slots[slot_index(role, layer)]
    w->token_emb = view_of(m, SLOT(BUMP_ROLE_TOKEN_EMB, -1));
    w->final_norm = vector_of(m, SLOT(BUMP_ROLE_FINAL_NORM, -1), &next);
    w->lm_head = SLOT(BUMP_ROLE_LM_HEAD, -1) ? view_of(m, SLOT(BUMP_ROLE_LM_HEAD, -1))
                                              : w->token_emb;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &w->layers[l];
        lw->ln1 = vector_of(m, SLOT(BUMP_ROLE_LN1, l), &next);
        lw->ln2 = vector_of(m, SLOT(BUMP_ROLE_LN2, l), &next);
        lw->q_norm = vector_of(m, SLOT(BUMP_ROLE_Q_NORM, l), &next);
        lw->k_norm = vector_of(m, SLOT(BUMP_ROLE_K_NORM, l), &next);
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
/* the file guard: a blob truncated or rewritten while mapped must not kill the process     */
/*
 * A read of a mapped page past a truncated file's end raises SIGBUS. The handler maps
 * anonymous zero pages over the rest of the mapping (so the faulting load, retried, reads 0
 * and the forward pass runs to its end) and marks the model; bump_forward then reports the
 * change as an error and the model refuses further use. Content rewritten in place without a
 * truncation raises no signal: fstat identity (size, mtime, inode) is compared before
 * and after every forward for that. A file replaced by rename is harmless: the mapping keeps
 * the old inode.
 */

#define GUARD_SLOTS 64
static struct {
    _Atomic(uintptr_t) start;
    _Atomic(size_t) size;
    atomic_int tripped;
} guards[GUARD_SLOTS];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous_bus;
static int guard_installed;
static uintptr_t page_mask; /* read in the handler, where sysconf is not async-signal-safe */

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t start = atomic_load(&guards[i].start);
        size_t size = atomic_load(&guards[i].size);
        if (start && addr >= start && addr < start + size) {
            uintptr_t page = addr & page_mask;
            mmap((void *)page, start + size - page, PROT_READ,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            atomic_store(&guards[i].tripped, 1);
            return;
        }
    }
    /* not ours: whatever was there before us */
    if (previous_bus.sa_flags & SA_SIGINFO) {
        previous_bus.sa_sigaction(sig, info, uctx);
    } else if (previous_bus.sa_handler != SIG_IGN && previous_bus.sa_handler != SIG_DFL) {
        previous_bus.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

static int guard_register(void *map, size_t size)
{
    int slot = -1;
    pthread_mutex_lock(&guard_lock);
    if (!guard_installed) {
        page_mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &previous_bus) == 0) guard_installed = 1;
    }
    for (int i = 0; i < GUARD_SLOTS && slot < 0; i++) {
        if (!atomic_load(&guards[i].start)) {
            atomic_store(&guards[i].tripped, 0);
            atomic_store(&guards[i].size, size);
            atomic_store(&guards[i].start, (uintptr_t)map);
            slot = i;
        }
    }
    pthread_mutex_unlock(&guard_lock);
    return slot;
}

static void guard_release(int slot)
{
    if (slot < 0) return;
    pthread_mutex_lock(&guard_lock);
    atomic_store(&guards[slot].start, 0);
    atomic_store(&guards[slot].size, 0);
    pthread_mutex_unlock(&guard_lock);
}

int bump_guard_mapping(const void *start, size_t size)
{
    return guard_register((void *)start, size);
}

int bump_guard_tripped(int slot)
{
    return slot >= 0 && slot < GUARD_SLOTS && atomic_load(&guards[slot].tripped);
}

void bump_guard_release(int slot)
{
    if (slot >= 0 && slot < GUARD_SLOTS) guard_release(slot);
}

/* NULL while the file is as it was at open; else why it is not. (Not ctime: unlinking the file,
 * as a rename over it does, changes the ctime of the inode we still map, harmlessly.) */
static const char *file_changed(bump_model *m)
{
    if (m->changed) return m->changed;
    struct stat st;
    int stat_ok = fstat(m->fd, &st) == 0;
    if ((m->guard_slot >= 0 && atomic_load(&guards[m->guard_slot].tripped)) ||
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
static void rope_inv_freq(const bump_config *c, float *inv_freq)
{
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
    float *cs = alloc_floats(P * half), *sn = alloc_floats(P * half);
    float *kc = alloc_floats(keys), *vc = alloc_floats(values);
    float *sc = alloc_floats((size_t)m->n_threads * P);
    if (!cs || !sn || !kc || !vc || !sc) {
        free(cs), free(sn), free(kc), free(vc), free(sc);
        return BUMP_ERR_NOMEM;
    }
    for (size_t p = 0; p < P; p++)
        for (size_t i = 0; i < half; i++) {
            float f = (float)p * s->inv_freq[i];
            cs[p * half + i] = cosf(f);
            sn[p * half + i] = sinf(f);
        }
    size_t rows = heads / D, filled = (size_t)s->n_cached;
    for (size_t h = 0; h < rows && filled; h++) {
        for (size_t d = 0; d < D; d++)
            memcpy(kc + (h * D + d) * stride, s->key_cache + (h * D + d) * s->key_stride,
                   filled * sizeof(float));
        memcpy(vc + h * P * D, s->value_cache + h * (size_t)s->positions * D,
               filled * D * sizeof(float));
    }
    free(s->rope_cos), free(s->rope_sin), free(s->key_cache), free(s->value_cache);
    free(s->scores);
    s->rope_cos = cs, s->rope_sin = sn, s->key_cache = kc, s->value_cache = vc, s->scores = sc;
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
    int rc = check_config(cfg, err, len);
    if (rc) return rc;
    if (n_tensors < 0 || (table == NULL && n_tensors > 0))
        return bump_fail(err, len, BUMP_ERR_BLOB, "tensor table: %d entries", n_tensors);

    bump_model *m = calloc(1, sizeof *m);
    if (!m) return bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory");
    const bump_tensor **slots = NULL;
    m->c = *cfg;
    m->fd = -1;
    m->guard_slot = -1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    m->n_threads = cfg->n_threads > 0 ? cfg->n_threads : online > 0 ? (int)online : 1;
    if (m->n_threads > MAX_THREADS) m->n_threads = MAX_THREADS;
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
    m->guard_slot = guard_register(m->map, m->map_size);

    const bump_config *c = &m->c;
    size_t n_slots = (size_t)BUMP_N_ROLES * ((size_t)c->n_layers + 1);
    slots = calloc(n_slots, sizeof *slots);
    if (!slots) goto nomem;
    for (int i = 0; i < n_tensors; i++) {
        const bump_tensor *t = &table[i];
        if ((rc = check_tensor(m, t, i, err, len))) goto error;
        const bump_tensor **p = &slots[slot_index(t->role, t->layer)];
        if (*p) {
            rc = bump_fail(err, len, BUMP_ERR_BLOB, "tensor %s (layer %d) appears twice in the table",
                      ROLES[t->role].name, t->layer);
            goto error;
        }
        *p = t;
    }
    if ((rc = check_complete(m, slots, err, len))) goto error;
    if (bind_weights(m, slots)) goto nomem;
    m->s.inv_freq = alloc_floats((size_t)c->head_dim / 2);
    if (!m->s.inv_freq) goto nomem;
    rope_inv_freq(c, m->s.inv_freq);
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
    free(m->w.layers), free(m->w.vectors);
    guard_release(m->guard_slot);
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
    float scale = (float)pow((double)D, -0.5);
    float *tap_scores = tp ? tp->scores : NULL, *tap_probs = tp ? tp->probs : NULL;
    float *sc = s->scores + (size_t)tid * P;
    for (int task = (int)t0; task < (int)t1; task++) {
        int h = task / n, i = task % n, kvh = h / group, pos = start + i;
        int lo = c->sliding_window > 0 && pos - c->sliding_window + 1 > 0
                     ? pos - c->sliding_window + 1 : 0;
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
} Rope;

static void rope_part(void *ctx, long i0, long i1, int tid)
{
    const Rope *a = ctx;
    const bump_config *c = &a->m->c;
    const RunState *s = &a->m->s;
    int H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, half = D / 2;
    (void)tid;
    for (long i = i0; i < i1; i++) {
        const float *cs = s->rope_cos + (size_t)(a->start + i) * half;
        const float *sn = s->rope_sin + (size_t)(a->start + i) * half;
        for (int h = 0; h < H; h++)
            rope(s->q + ((size_t)i * H + h) * D, cs, sn, D, c->rope_interleaved);
        for (int h = 0; h < KV; h++)
            rope(s->k + ((size_t)i * KV + h) * D, cs, sn, D, c->rope_interleaved);
    }
}

typedef struct {
    const bump_model *m;
    int n;
} Swiglu;

/* hb2 = silu(gate) * up per row of hb = [gate (I) | up (I)]. */
static void swiglu_part(void *ctx, long i0, long i1, int tid)
{
    const Swiglu *a = ctx;
    const RunState *s = &a->m->s;
    int I = a->m->c.intermediate;
    (void)tid;
    for (long i = i0; i < i1; i++) {
        const float *g = s->hb + (size_t)i * 2 * I, *u = g + I;
        float *o = s->hb2 + (size_t)i * I;
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
    Rope rp = {m, n, start};
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
    for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] = s->x[i] + s->proj[i];
    TAP(tp, resid1, s->x, n, E, E);

    /* MLP block: hb row = [gate (I) | up (I)] */
    rmsnorm_rows(m, s->xb, s->x, w->ln2, n, E, eps);
    TAP(tp, ln2, s->xb, n, E, E);
    bump_matmul_job w1 = {w->w1, 2 * I, s->hb, 2 * (size_t)I};
    bump_matmul(&w1, 1, s->xb, E, n, E, &s->gs);
    TAP(tp, gate, s->hb, n, I, 2 * (size_t)I);
    TAP(tp, up, s->hb + I, n, I, 2 * (size_t)I);
    Swiglu sw = {m, n};
    parallel(m, n, per_thread(m, n), swiglu_part, &sw);
    TAP(tp, swiglu, s->hb2, n, I, I);
    bump_matmul_job w2 = {w->w2, E, s->proj, E};
    bump_matmul(&w2, 1, s->hb2, I, n, I, &s->gs);
    TAP(tp, down, s->proj, n, E, E);
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
        return bump_fail(err, len, BUMP_ERR_INPUT, "start_pos %d but the cache holds %d positions",
                    start_pos, s->n_cached);
    if (n > c->context - start_pos)
        return bump_fail(err, len, BUMP_ERR_INPUT,
                    "%d tokens from position %d exceed the context length %d", n, start_pos,
                    c->context);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return bump_fail(err, len, BUMP_ERR_INPUT, "token id %d at index %d is outside [0, %d)",
                        tokens[i], i, c->vocab_size);
    if (taps && (taps->scores || taps->probs) && start_pos != 0)
        return bump_fail(err, len, BUMP_ERR_INPUT, "attention taps need a forward from position 0");
    if (taps && taps->layer >= c->n_layers)
        return bump_fail(err, len, BUMP_ERR_INPUT, "tap layer %d is out of range (%d layers)",
                    taps->layer, c->n_layers);
    if (reserve_tokens(m, n) || reserve_positions(m, start_pos + n))
        return bump_fail(err, len, BUMP_ERR_NOMEM, "out of memory for %d tokens at position %d", n,
                    start_pos);

    int E = c->hidden;
    for (int i = 0; i < n; i++) bump_wmat_row(s->gs.level, &m->w.token_emb, tokens[i], E, s->x + (size_t)i * E);
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
    }
    if ((changed = file_changed(m)))
        return bump_fail(err, len, BUMP_ERR_BLOB, "%s; its results are void, reopen it", changed);
    s->n_cached = start_pos + n;
    return BUMP_OK;
}
