/* guard.h - the SIGBUS guard for read-only file mappings: a blob truncated or rewritten while
 * mapped must not kill the process.
 *
 * A read of a mapped page past a truncated file's end raises SIGBUS. The guard's handler maps
 * anonymous zero pages over the rest of the guarded mapping (so the faulting load, retried,
 * reads 0 and the caller's loop runs to its end) and marks the slot; the owner then reports the
 * change as an error (bump.c after every forward, blob/reader.py after every read). Faults
 * outside every guarded mapping go to the handler that was installed before, or kill the
 * process as SIGBUS would. The runtime guards its own mapping; Python guards the reader's.
 *
 * The part between the CFFI markers is parsed by cffi (native/build_ffi.py): plain C only.
 */
#ifndef BUMP_GUARD_H
#define BUMP_GUARD_H

#include <stddef.h>

/* CFFI-BEGIN */
/* Guard the read-only mapping [start, start + size). Returns the slot, or -1 when all slots
 * are taken (the mapping is then unguarded). */
int bump_guard_mapping(const void *start, size_t size);
/* Whether a read past the end of the file behind the slot's mapping was caught. */
int bump_guard_tripped(int slot);
/* Stop guarding (before the mapping is unmapped); -1 is ignored. */
void bump_guard_release(int slot);
/* CFFI-END */

#endif
