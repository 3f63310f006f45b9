"""The runtime's matrix kernels called directly from numpy, for tests and benchmarks.

``bump_matmul_view`` (native/probe.c) runs one product through the same code path the runtime
uses for every weight of a forward pass, with the kernel level :func:`bumpconv.native.kernel_name`
reports (``BUMPCONV_KERNELS`` forces one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.dtypes import DType
from ..format.errors import KernelError
from . import native

_ERR_LEN = 256
#: What the activations of a product over quantized weights are: fp32 (exact against the
#: dequantized weights), or int8 per block of 32 (integer dot products, where
#: :func:`int8_products` says the level has them).
ACTIVATIONS = ("fp32", "int8")


@dataclass(frozen=True)
class View:
    """How W[N][K] sits in its buffer, in elements (the runtime's tensor-table fields): element
    (n, k) is (n // row_seg) * row_seg_stride + (n % row_seg) * ld + (k // col_seg) *
    col_seg_stride + k % col_seg."""

    ld: int
    row_seg: int
    row_seg_stride: int
    col_seg: int
    col_seg_stride: int

    @classmethod
    def row_major(cls, N: int, K: int) -> "View":
        return cls(K, N, N * K, K, K)


def matmul(dtype: DType, weights: np.ndarray, numel: int, view: View, N: int, K: int,
           x: np.ndarray, threads: int = 1, activations: str = "fp32") -> np.ndarray:
    """``x`` [M, K] float32 times W^T -> [M, N] float32, W of ``dtype`` in ``weights`` (the raw
    bytes: float32 values or ggml blocks, ``numel`` elements). ``activations="int8"``: the
    product runs on int8 activations where :func:`int8_products` says so, else on fp32."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activations!r}")
    mod = native()
    ffi = mod.ffi
    x = np.ascontiguousarray(x, dtype=np.float32)
    buf = np.ascontiguousarray(weights).view(np.uint8)
    # C checks the view against numel; that numel is what the buffer holds is checked here
    # (C gets a bare pointer), so a short buffer is an error, not a read past its end.
    if x.ndim != 2 or x.shape[1] != K:
        raise KernelError(f"activations: shape {x.shape}, expected [M, {K}]")
    try:
        want = dtype.nbytes(numel)
    except ValueError as e:
        raise KernelError(f"weights: {e}") from None
    if buf.nbytes != want:
        raise KernelError(f"weights: {buf.nbytes} bytes, but {numel} {dtype.label} elements "
                          f"take {want}")
    out = np.empty((x.shape[0], N), dtype=np.float32)
    err = ffi.new("char[]", _ERR_LEN)
    rc = mod.lib.bump_matmul_view(
        int(dtype), ffi.from_buffer(buf), numel, view.ld, view.row_seg, view.row_seg_stride,
        view.col_seg, view.col_seg_stride, N, K, ffi.from_buffer("float[]", x), x.shape[0],
        ffi.from_buffer("float[]", out), threads, int(activations == "int8"), err, _ERR_LEN)
    if rc != 0:
        raise KernelError(ffi.string(err).decode(errors="replace"))
    return out


def int8_products(dtype: DType, M: int) -> bool:
    """Whether a product of ``M`` activation rows over ``dtype`` weights runs on int8 activations
    when they are asked for, at the level :func:`bumpconv.native.kernel_name` reports: the GEMV
    (M == 1) for every quantized type, the GEMM where the level has an int8 one (every x86
    level: 512-bit with 512-bit VNNI, 256-bit below it; not portable) for the types it reads
    (one scale per 32 values: not q6_K). The C side decides; this asks it, so tests and
    benchmarks never hold a copy of the rule."""
    return bool(native().lib.bump_int8_products(int(dtype), M))
