/* validate.h - everything the runtime checks before it reads a single weight: the settings,
 * every tensor-table entry against them, the file size and the kernel level, and that the
 * table is complete. The view check is also the one bump_matmul_view (probe.c) applies to its
 * caller's view: one formula for how far a view reaches.
 */
#ifndef BUMP_VALIDATE_H
#define BUMP_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "bump.h"
#include "kernels.h"

/* The largest dimension of the settings the runtime runs: narrower than what the format can
 * describe (FORMAT_MAX_DIM in src/bumpconv/format/spec.py, 2^31 - 1), so that products of two
 * dimensions that size activation rows stay far inside int. */
#define BUMP_RUNTIME_MAX_DIM (1 << 24)
#define BUMP_MAX_THREADS 256

/* The settings: every dimension in [1, BUMP_RUNTIME_MAX_DIM], the products that size activation
 * rows within it, the RoPE and threading settings meaningful. BUMP_OK or BUMP_ERR_BLOB. */
int bump_check_config(const bump_config *c, char *err, size_t len);

/* The table has one slot per (role, layer): bump_slot_count(c) of them, the one of a role
 * that appears once (layer -1) or of a layer's role at bump_slot(role, layer). */
size_t bump_slot_count(const bump_config *c);
int bump_slot(int role, int layer);
/* Whether a role's tensor is a vector (copied out as fp32 [rows]), not a matrix read in place. */
int bump_role_vector(int role);

/* Every entry of table[0, n) against the settings c (already checked), a file of file_size
 * bytes and the dtypes `level` reads, each (role, layer) at most once, every required role
 * present and each optional group (output head, q/k norms, q/k/v biases) all or nothing.
 * On BUMP_OK, slots[bump_slot(role, layer)] is the entry of that role and layer, or NULL for an
 * absent optional one (slots: bump_slot_count(c) entries, NULL on entry). Else BUMP_ERR_BLOB
 * with the entry named in err. */
int bump_check_table(const bump_config *c, size_t file_size, const bump_kernel_level *level,
                     const bump_tensor *table, int32_t n, const bump_tensor **slots, char *err,
                     size_t len);

/* The view of t (rows, cols, numel and the view fields; blocks of be elements): every stride
 * and segment length in [0, numel] (used or not), segments not empty, every element (r, c) with r < rows, c < cols inside
 * [0, numel), and for a block type (be > 1) every row, row segment and column segment
 * starting on a block. BUMP_OK, or `code` with "WHAT: why" in err. */
int bump_check_view(const bump_tensor *t, int64_t be, int code, const char *what, char *err,
                    size_t len);

/* The kernels' view of a tensor whose view passed bump_check_view, element 0 at base (a
 * segment longer than the tensor is cut to it: the same elements, and it fits the kernels'
 * int32 segment lengths). */
bump_wmat bump_view_of(const bump_tensor *t, const void *base);

#endif
