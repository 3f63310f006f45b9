/* kernels_avxvnni.c - the AVX2 kernels with AVX-VNNI (vpdpbusd on 256-bit registers, Intel's
 * cores without AVX-512), chosen at run time. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define LEVEL_TABLE bump_level_avxvnni
#define LEVEL_NAME "avx2-vnni"
#define LEVEL_SUPPORTED avxvnni_supported

static int avxvnni_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("avxvnni");
}

#include "kernels_impl.h"
#else
#include "kernels.h"
static int unsupported(void) { return 0; }
const bump_kernel_level bump_level_avxvnni = {.name = "avx2-vnni", .supported = unsupported};
#endif
