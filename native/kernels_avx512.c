/* kernels_avx512.c - the kernels for AVX-512 (16 floats per vector, a 14x32 micro-kernel),
 * chosen at run time. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define LEVEL_TABLE bump_level_avx512
#define LEVEL_NAME "avx512"
#define LEVEL_SUPPORTED avx512_supported

static int avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
}

#include "kernels_impl.h"
#else
#include "kernels.h"
static int unsupported(void) { return 0; }
const bump_kernel_level bump_level_avx512 = {.name = "avx512", .supported = unsupported};
#endif
