"""ggml's block quantizers from numpy: fp32 rows in, the exact bytes of ggml's reference
quantizers out, and back (native/quant.c does the work, with the GIL released).

Sizes come from :meth:`DType.nbytes` (``bumpconv.format.dtypes``), the one table of block
geometry; a test checks that the C side agrees with it.
"""

from __future__ import annotations

import numpy as np

from ..format.dtypes import DType
from ..format.errors import QuantizeError
from . import native

_ERR_LEN = 256


def _row_bytes(dtype: DType, cols: int) -> int:
    """Bytes of one row of ``cols`` values; a row must be whole blocks."""
    try:
        return dtype.nbytes(cols)
    except ValueError as exc:
        raise QuantizeError(f"{dtype.label}: {exc}") from None


def _call(fn_name: str, dtype: DType, *args: object) -> None:
    mod = native()
    err = mod.ffi.new("char[]", _ERR_LEN)
    rc = getattr(mod.lib, fn_name)(int(dtype), *args, err, _ERR_LEN)  # refuses unquantized types
    if rc != 0:
        raise QuantizeError(mod.ffi.string(err).decode(errors="replace"))


def quantize(x: np.ndarray, dtype: DType) -> np.ndarray:
    """``x`` [rows, cols] float32 -> uint8 [rows, row_bytes]: each row as ggml blocks.

    Bit-identical to ggml's ``quantize_row_<type>_ref`` (no importance matrix). NaN and
    infinite values are refused (:class:`QuantizeError`, naming row and column)."""
    dtype = DType(dtype)
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise QuantizeError(f"quantize {dtype.label}: expected a 2-D array [rows, cols], got "
                            f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
    if x.dtype != np.float32:
        raise QuantizeError(f"quantize {dtype.label}: expected float32 values, got {x.dtype}")
    rows, cols = x.shape
    out = np.empty((rows, _row_bytes(dtype, cols)), dtype=np.uint8)
    ffi = native().ffi
    _call("bump_quantize", dtype, ffi.from_buffer("float[]", np.ascontiguousarray(x)), rows,
          cols, ffi.from_buffer(out))
    return out


def dequantize(data: bytes | bytearray | memoryview | np.ndarray, dtype: DType, rows: int,
               cols: int) -> np.ndarray:
    """Blocks of ``rows`` x ``cols`` values -> float32 [rows, cols], bit-identical to ggml's
    ``dequantize_row_<type>``. ``data`` must hold exactly those blocks."""
    dtype = DType(dtype)
    if rows < 0 or cols < 0:
        raise QuantizeError(f"dequantize {dtype.label}: negative shape [{rows}, {cols}]")
    need = rows * _row_bytes(dtype, cols)
    buf = np.ascontiguousarray(data).view(np.uint8) if isinstance(data, np.ndarray) \
        else np.frombuffer(data, dtype=np.uint8)
    if buf.nbytes != need:
        raise QuantizeError(f"dequantize {dtype.label}: {buf.nbytes} bytes given, "
                            f"[{rows}, {cols}] takes {need}")
    out = np.empty((rows, cols), dtype=np.float32)
    ffi = native().ffi
    _call("bump_dequantize", dtype, ffi.from_buffer(buf), rows, cols,
          ffi.from_buffer("float[]", out))
    return out
