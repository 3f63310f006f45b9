/* status.h - the runtime's return codes, and the one helper every C file reports an error with.
 *
 * Every entry point returns one of these codes and writes the reason into the caller's
 * `err` buffer (err_len bytes, always NUL-terminated when err_len > 0). The part between the
 * CFFI markers is parsed by cffi (native/build_ffi.py): plain C only.
 */
#ifndef BUMP_STATUS_H
#define BUMP_STATUS_H

#include <stddef.h>

/* CFFI-BEGIN */
/* Return codes; the message goes to the caller's err buffer. */
enum bump_status {
    BUMP_OK = 0,
    BUMP_ERR_BLOB = 1,   /* the file or the tensor table is unusable, or the file changed */
    BUMP_ERR_INPUT = 2,  /* a token id out of range, a sequence past the context, a bad start_pos;
                            at open: BUMPCONV_KERNELS names no usable kernel level */
    BUMP_ERR_NOMEM = 3,
    BUMP_ERR_IO = 4      /* open/fstat/mmap failed */
};
/* CFFI-END */

/* Format the message into err (when err and len are set) and return code. */
int bump_fail(char *err, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
