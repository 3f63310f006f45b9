"""The safetensors header parser: strict validation, exact dtype conversion."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from bumpconv.format.errors import SourceError
from bumpconv.conversion.safetensors_file import MAX_HEADER_BYTES, read_as_fp32, read_header


def write_raw(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.model
def test_reads_what_the_safetensors_library_writes(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "b": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
               "c": torch.tensor([0.1, 65504.0], dtype=torch.float16)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    infos, meta = read_header(path)
    assert meta == {"format": "pt"} and set(infos) == {"a", "b", "c"}
    fd = os.open(path, os.O_RDONLY)
    try:
        for name, t in tensors.items():
            got = read_as_fp32(fd, infos[name], 0, infos[name].numel)
            np.testing.assert_array_equal(got, t.float().numpy().ravel())  # bit-exact widening
        assert read_as_fp32(fd, infos["a"], 2, 3).tolist() == [2.0, 3.0, 4.0]
    finally:
        os.close(fd)


def test_bf16_widening_is_a_16_bit_shift(tmp_path: Path) -> None:
    bits = np.array([0x0001, 0x7F80, 0xFF80, 0x7FC1, 0x8000, 0x3F81], dtype="<u2")
    path = write_raw(tmp_path / "b.safetensors", {"x": entry("BF16", [6], 0, 12)}, bits.tobytes())
    infos, _ = read_header(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = read_as_fp32(fd, infos["x"], 0, 6).view(np.uint32)
    finally:
        os.close(fd)
    assert got.tolist() == [int(b) << 16 for b in bits]  # subnormals, inf, NaN payload, -0 kept


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x01\x02"), "no header length"),
    (lambda p: write_raw(p, {}, length=1 << 20), "runs past the end of the file"),
    (lambda p: write_raw(p, {}, length=MAX_HEADER_BYTES + 1), "exceeds the"),
    (lambda p: write_raw(p, b"[1, 2]"), "not a JSON object"),
    (lambda p: write_raw(p, b"{not json"), "not valid JSON"),
    (lambda p: write_raw(p, {"x": entry("F32", [2], 0, 8)}, b"\0" * 4), "truncated"),
    (lambda p: write_raw(p, {"x": entry("F32", [2], 0, 8), "y": entry("F32", [2], 4, 12)},
                         b"\0" * 12), "overlaps"),
    (lambda p: write_raw(p, {"x": entry("F32", [1], 4, 8)}, b"\0" * 8), "hole of 4 bytes"),
    (lambda p: write_raw(p, {"x": entry("F32", [1], 0, 4)}, b"\0" * 8), "unindexed bytes"),
    (lambda p: write_raw(p, {"x": entry("Q9", [1], 0, 4)}, b"\0" * 4), "unknown dtype 'Q9'"),
    (lambda p: write_raw(p, {"x": entry("F32", [3], 0, 8)}, b"\0" * 8), "needs 12"),
    (lambda p: write_raw(p, {"x": entry("F32", [-1], 0, 4)}, b"\0" * 4), "non-negative"),
    (lambda p: write_raw(p, {"x": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "exactly dtype"),
    (lambda p: write_raw(p, {"__metadata__": {"a": 1}}), "__metadata__"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(SourceError, match=message) as info:
        read_header(path)
    assert str(path) in str(info.value)


def test_unsupported_dtype_is_refused_on_read(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "i.safetensors", {"x": entry("I32", [2], 0, 8)}, b"\0" * 8)
    infos, _ = read_header(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(SourceError, match="tensor 'x' has dtype I32; supported: F32, BF16, F16"):
            read_as_fp32(fd, infos["x"], 0, 2)
    finally:
        os.close(fd)
