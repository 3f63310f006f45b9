/* kernels_portable.c - the kernels for the baseline target (SSE2 on x86-64, NEON on arm64, or
 * plain C): always supported, and what BUMPCONV_KERNELS=portable forces. */
#define LEVEL_TABLE bump_level_portable
#define LEVEL_NAME "portable"
#define LEVEL_SUPPORTED portable_supported

static int portable_supported(void) { return 1; }

#include "kernels_impl.h"
