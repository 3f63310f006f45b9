/* kernels_avx2.c - the kernels for AVX2 + FMA (8 floats per vector), chosen at run time. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,f16c")
#define LEVEL_TABLE bump_level_avx2
#define LEVEL_NAME "avx2"
#define LEVEL_SUPPORTED avx2_supported

static int avx2_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#include "kernels_impl.h"
#else
#include "kernels.h"
static int unsupported(void) { return 0; }
const bump_kernel_level bump_level_avx2 = {.name = "avx2", .supported = unsupported};
#endif
