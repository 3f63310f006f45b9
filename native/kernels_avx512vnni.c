/* kernels_avx512vnni.c - the AVX-512 kernels with VNNI (vpdpbusd for the int8-activation
 * dot products), chosen at run time. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#define LEVEL_TABLE bump_level_avx512vnni
#define LEVEL_NAME "avx512-vnni"
#define LEVEL_SUPPORTED avx512vnni_supported

static int avx512vnni_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
}

#include "kernels_impl.h"
#else
#include "kernels.h"
static int unsupported(void) { return 0; }
const bump_kernel_level bump_level_avx512vnni = {.name = "avx512-vnni", .supported = unsupported};
#endif
