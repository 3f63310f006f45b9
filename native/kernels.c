/* kernels.c - which level of the kernels runs (kernels_impl.h, compiled per level), and the
 * calls the runtime makes through it.
 *
 * The best level this CPU supports is chosen when a model is opened; BUMPCONV_KERNELS=NAME
 * forces one (for tests, and to compare levels on one machine). An unknown name or a level
 * the CPU lacks is an error, never a silent fallback.
 */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

/* Best first. */
static const bump_kernel_level *const LEVELS[] = {&bump_level_avx512vnni, &bump_level_avx512,
                                                  &bump_level_avxvnni, &bump_level_avx2,
                                                  &bump_level_portable};
#define N_LEVELS (sizeof LEVELS / sizeof LEVELS[0])

const bump_kernel_level *bump_kernels_select(char *err, size_t len)
{
    const char *want = getenv("BUMPCONV_KERNELS");
    if (want == NULL || *want == '\0') {
        for (size_t i = 0; i < N_LEVELS; i++)
            if (LEVELS[i]->supported()) return LEVELS[i];
        return &bump_level_portable; /* unreachable: portable is always supported */
    }
    for (size_t i = 0; i < N_LEVELS; i++) {
        if (strcmp(want, LEVELS[i]->name) != 0) continue;
        if (!LEVELS[i]->supported()) {
            bump_fail(err, len, BUMP_ERR_INPUT, "BUMPCONV_KERNELS=%s: this CPU does not "
                      "support the %s kernels", want, want);
            return NULL;
        }
        return LEVELS[i];
    }
    bump_fail(err, len, BUMP_ERR_INPUT, "BUMPCONV_KERNELS=%.40s: unknown kernel level (known: "
              "avx512-vnni, avx512, avx2-vnni, avx2, portable)", want);
    return NULL;
}

const char *bump_kernels_name(const bump_kernel_level *level)
{
    static char names[N_LEVELS][96];
    for (size_t i = 0; i < N_LEVELS; i++)
        if (LEVELS[i] == level) {
            if (!names[i][0])
                snprintf(names[i], sizeof names[i], "%s (%s)", level->name, level->detail);
            return names[i];
        }
    return "?";
}

int bump_kernel_reads(const bump_kernel_level *level, int32_t dtype)
{
    return level->reads(dtype);
}

int bump_kernel_int8_reads(const bump_kernel_level *level, int32_t dtype, int M)
{
    return level->int8_reads(dtype, M);
}

size_t bump_gemm_scratch_floats(const bump_kernel_level *level, int M, int K)
{
    return level->scratch_floats(M, K);
}

void bump_matmul(const bump_matmul_job *jobs, int njobs, const float *in, size_t lda, int M,
                 int K, const bump_gemm_scratch *s)
{
    s->level->matmul(jobs, njobs, in, lda, M, K, s);
}

void bump_wmat_row(const bump_kernel_level *level, const bump_wmat *w, int n, int K, float *out)
{
    level->row(w, n, K, out);
}

void bump_scores(const bump_kernel_level *level, const float *q, int D, const float *kt,
                 size_t ldk, int n, float scale, float *s)
{
    level->scores(q, D, kt, ldk, n, scale, s);
}

void bump_weighted_sum(const bump_kernel_level *level, const float *p, const float *v,
                       size_t ldv, int n, int D, float *out)
{
    level->weighted_sum(p, v, ldv, n, D, out);
}

void bump_swiglu(const bump_kernel_level *level, const float *g, const float *u, int n, float *o)
{
    level->swiglu(g, u, n, o);
}

void bump_geglu(const bump_kernel_level *level, const float *g, const float *u, int n, float *o)
{
    level->geglu(g, u, n, o);
}

void bump_softcap(const bump_kernel_level *level, float *x, size_t n, float cap)
{
    level->softcap(x, n, cap);
}

float bump_exp_sum(const bump_kernel_level *level, float *s, int n, float mx)
{
    return level->exp_sum(s, n, mx);
}
