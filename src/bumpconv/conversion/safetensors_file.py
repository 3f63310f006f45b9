"""A strict, dependency-free reader for one ``.safetensors`` file.

We parse the header ourselves (8-byte little-endian length, then JSON) instead of using
``safe_open`` so that we can (a) validate everything before any data is read - bounds, overlaps,
holes, a size cap - and report the file and tensor at fault, and (b) read arbitrary element
ranges with ``preadv`` into caller-owned buffers, which keeps peak memory independent of
model size (``safe_open``'s mmap inflates RSS; llama.cpp#15667).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files.inputs import open_regular
from ..files.jsonfile import parse_json
from ..format.errors import SourceError

#: safetensors' own cap on the JSON header, to refuse hostile files before allocating.
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: Every dtype the safetensors format defines, with its element size in bytes.
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
#: The dtypes bumpconv converts (to fp32, exactly).
CONVERTIBLE_DTYPES = ("F32", "BF16", "F16")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are: ``file`` at absolute byte ``offset``, ``nbytes`` long."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return SAFETENSORS_DTYPES[self.dtype]


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate ``path``'s header; returns its tensors and its ``__metadata__``."""
    fd = open_regular(path, SourceError, "safetensors file")
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise SourceError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES:
                raise SourceError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap")
            if 8 + n > size:
                raise SourceError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
            raw = f.read(n)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    if not raw.startswith(b"{"):
        raise SourceError(f"{path}: header is not a JSON object")
    header = parse_json(raw, f"{path}: header", SourceError)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SourceError(f"{path}: __metadata__ must map strings to strings")
    data_start = 8 + n
    data_size = size - data_start
    tensors = {name: _tensor_info(path, name, entry, data_start) for name, entry in header.items()}
    _check_coverage(path, tensors, data_start, data_size)
    return tensors, metadata


def _tensor_info(path: Path, name: str, entry: object, data_start: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SourceError(f"{where}: entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise SourceError(f"{where}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SourceError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets) and offsets[0] <= offsets[1]):
        raise SourceError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
    nbytes = offsets[1] - offsets[0]
    expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
    if nbytes != expected:
        raise SourceError(f"{where}: data_offsets span {nbytes} bytes but {dtype}{shape} needs {expected}")
    return TensorInfo(name, path, dtype, tuple(shape), data_start + offsets[0], nbytes)


def _check_coverage(path: Path, tensors: dict[str, TensorInfo], data_start: int,
                    data_size: int) -> None:
    """The data region must be exactly tiled by the tensors: no overlap, no hole, no tail."""
    pos = data_start
    for t in sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)):
        if t.offset < pos:
            raise SourceError(f"{path}: tensor {t.name!r} overlaps the tensor before it")
        if t.offset > pos:
            raise SourceError(f"{path}: hole of {t.offset - pos} bytes before tensor {t.name!r}")
        pos = t.offset + t.nbytes
    end = data_start + data_size
    if pos > end:
        last = max(tensors.values(), key=lambda t: t.offset + t.nbytes)
        raise SourceError(f"{path}: truncated: tensor {last.name!r} ends at byte {pos} "
                          f"but the file has {end} bytes")
    if pos < end:
        raise SourceError(f"{path}: {end - pos} unindexed bytes after the last tensor")


#: numpy dtypes of the raw bytes of each convertible dtype (bf16 is read as its bit pattern).
_RAW = {"F32": np.dtype("<f4"), "BF16": np.dtype("<u2"), "F16": np.dtype("<f2")}


def _check_read(info: TensorInfo, start: int, count: int) -> None:
    if info.dtype not in CONVERTIBLE_DTYPES:
        raise SourceError(f"{info.file}: tensor {info.name!r} has dtype {info.dtype}; "
                          f"supported: {', '.join(CONVERTIBLE_DTYPES)}")
    if start < 0 or count < 0 or start + count > info.numel:
        raise SourceError(f"{info.file}: read of elements [{start}, {start + count}) is outside "
                          f"tensor {info.name!r} ({info.numel} elements)")


def read_raw(fd: int, info: TensorInfo, start: int, count: int) -> np.ndarray:
    """Elements ``[start, start + count)`` as stored (fp32, fp16, or bf16 bit patterns)."""
    _check_read(info, start, count)
    raw = np.empty(count, dtype=_RAW[info.dtype])
    _pread_exact(fd, raw, info.offset + start * info.itemsize, info)
    return raw


def widen(raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values as fp32, exactly: bf16 is a 16-bit shift of its bit pattern, fp16 widens
    losslessly. fp32 input is returned as is when no ``out`` is given. With a contiguous
    ``out`` the conversion is a single pass straight into it."""
    if raw.dtype == np.uint16:
        if out is None:
            out = np.empty(raw.shape, dtype=np.float32)
        if out.flags.c_contiguous:
            np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            out[...] = (raw.astype(np.uint32) << 16).view(np.float32)
        return out
    if out is None:
        return raw if raw.dtype == np.float32 else raw.astype(np.float32)
    out[...] = raw
    return out


def read_as_fp32(fd: int, info: TensorInfo, start: int, count: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """Elements ``[start, start + count)`` of ``info`` (flat, row-major) as fp32.

    Written into ``out`` (a contiguous fp32 array of ``count`` elements) when given, so the
    caller can read straight into its output buffer; fp32 sources are read with no copy.
    """
    if info.dtype == "F32":
        _check_read(info, start, count)
        if out is None:
            out = np.empty(count, dtype=np.float32)
        _pread_exact(fd, out, info.offset + start * info.itemsize, info)
        return out
    return widen(read_raw(fd, info, start, count), out)


def _pread_exact(fd: int, buf: np.ndarray, offset: int, info: TensorInfo) -> None:
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise SourceError(f"{info.file}: file ended while reading tensor {info.name!r} "
                              "(was it modified during conversion?)")
        done += got
