"""Prove a blob holds exactly a source's weights: unpack every tensor and compare bit for bit.

This is independent of how the blob was written: the expected layout is re-planned from the
source, every packed tensor is inverted with :func:`bumpconv.format.packing.unpack` (plain numpy, not
the streaming writer's row map) and compared with the source as raw fp32 bit patterns, and all
padding must be zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..conversion.plan import FP32, KEEP, plan_conversion
from ..conversion.gguf_source import GGUFSource
from ..conversion.tensor_source import BlockSource, TensorSource
from ..conversion.tokenizer_section import TOKENIZER_JSON
from ..files.jsonfile import load_json
from ..format.dtypes import DType
from ..format.errors import BumpError, VerifyError
from ..format.tokenizer_meta import rebuild_tokenizer_json
from ..format.vocab import ARRAY_NAMES, VocabArrays
from ..format.packing import first_nonzero_padding, pack, quant_row, unpack
from ..format.profile import PlacedTensor
from ..native.quant import quantize
from .reader import BumpFile

_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class VerifyResult:
    tensors: int
    source_tensors: int
    elements: int
    #: the blob's tokenizer arrays equal the source's and decode back to its tokenizer.json
    tokenizer: bool = False


def verify_against(bf: BumpFile, source: TensorSource) -> VerifyResult:
    """Raise VerifyError naming the first tensor (and element) that differs; else a summary.
    ``source`` must be opened with its tokenizer when the blob's profile carries one."""
    section = bf.metadata.bumpconv.quantization if bf.metadata is not None else None
    plan = plan_conversion(source, bf.profile.profile, context=bf.dims["T"],
                           quant=section.policy if section is not None else FP32)
    if len(plan.tensors) != len(bf.tensors):
        raise VerifyError(f"{bf.path}: has {len(bf.tensors)} tensors but {source.root} needs "
                          f"{len(plan.tensors)} in the {bf.profile.profile} layout")
    elements = 0
    vocab: dict[str, bytes] = {}
    for want, got in zip(plan.tensors, bf.tensors):
        if (want.name, want.offset, want.nbytes, want.slot.shape) != (
                got.name, got.offset, got.nbytes, got.slot.shape):
            raise VerifyError(f"{bf.path}: tensor {got.name!r} (offset {got.offset}, shape "
                              f"{list(got.slot.shape)}) is not where the source's layout puts "
                              f"{want.name!r} (offset {want.offset}, shape {list(want.slot.shape)})")
        if got.slot.content == "tokenizer":
            vocab[got.name] = bf.tensor_bytes(got.name)
            continue
        if got.dtype != want.dtype:
            raise VerifyError(f"{bf.path}: tensor {got.name!r} is {got.dtype.label} but the "
                              f"source's plan makes it {want.dtype.label}")
        if got.dtype != DType.FP32:
            elements += _compare_blocks(bf, got, source, plan.quant == KEEP)
            continue
        packed = bf.array(got.name)
        where = first_nonzero_padding(want.slot, packed)
        if where is not None:
            raise VerifyError(f"{bf.path}: tensor {got.name!r} has non-zero padding at index {list(where)}")
        for name, values in zip(want.slot.sources, unpack(want.slot, packed)):
            elements += _compare(bf, got.name, name, values, source, want.slot.offset)
    if vocab:
        _verify_tokenizer(bf, source, vocab)
    bf.raise_if_changed()
    return VerifyResult(len(plan.tensors), len(source.tensors), elements, bool(vocab))


def _compare_blocks(bf: BumpFile, got: PlacedTensor, source: TensorSource, kept: bool) -> int:
    """A quantized tensor is the source, packed and quantized again, block for block (the
    quantizer is ggml's reference, deterministic); a kept GGUF tensor is the GGUF's blocks."""
    slot = got.slot
    if kept:
        if not isinstance(source, BlockSource):
            raise VerifyError(f"{bf.path}: keeps {got.name!r} as source blocks, but "
                              f"{source.root} has no quantized blocks (only a GGUF file has)")
        want = source.kept_rows(slot, got.dtype).tobytes()
    else:
        packed = pack(slot, [source.read_all(n) for n in slot.sources])
        want = quantize(packed.reshape(-1, quant_row(slot)), got.dtype).tobytes()
    have = bf.tensor_bytes(got.name)
    if have != want:
        block = got.dtype.block.nbytes
        at = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
        raise VerifyError(f"{bf.path}: tensor {got.name!r} ({got.dtype.label}) differs from the "
                          f"source quantized again, in block {at // block} (byte {at})")
    return math.prod(slot.box) if slot.box is not None else 0


def _verify_tokenizer(bf: BumpFile, source: TensorSource, vocab: dict[str, bytes]) -> None:
    """The arrays are byte for byte what the source's tokenizer gives, and with the recorded
    record they rebuild the source's tokenizer.json exactly."""
    assert source.tokenizer is not None and bf.metadata is not None
    want = source.tokenizer[0].by_name()
    for name, data in vocab.items():
        if data != want[name]:
            at = next((i for i, (a, b) in enumerate(zip(data, want[name])) if a != b),
                      min(len(data), len(want[name])))
            raise VerifyError(f"{bf.path}: tensor {name!r} differs from the source's tokenizer "
                              f"at byte {at}")
    section = bf.metadata.bumpconv.tokenizer
    if section is None:
        raise VerifyError(f"{bf.path}: carries tokenizer arrays but no tokenizer record")
    try:
        arrays = VocabArrays.from_bytes(*(vocab[n] for n in ARRAY_NAMES))
    except BumpError as exc:
        raise VerifyError(f"{bf.path}: {exc}") from None
    if isinstance(source, GGUFSource):
        path, doc = source.path, source.tokenizer_document()
    else:
        path = source.root / TOKENIZER_JSON
        doc = load_json(path, VerifyError)
    if rebuild_tokenizer_json(arrays, section.record) != doc:
        raise VerifyError(f"{bf.path}: its tokenizer arrays and record do not rebuild {path}")


def _compare(bf: BumpFile, packed_name: str, src_name: str, values: np.ndarray,
             source: TensorSource, offset: float = 0.0) -> int:
    """Compare an unpacked view with the source tensor (plus the slot's baked ``offset``, in
    fp32) in row blocks, as uint32 bit patterns."""
    shape = source.tensors[src_name].shape
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows = shape[0] if shape else 1
    block = max(1, _BLOCK_BYTES // (4 * row))
    flat_view = values.reshape(rows, row)
    for a in range(0, rows, block):
        b = min(rows, a + block)
        got = np.ascontiguousarray(flat_view[a:b]).view(np.uint32).ravel()
        want = source.read(src_name, a * row, (b - a) * row)
        if offset:
            want = want + np.float32(offset)
        want = want.view(np.uint32)
        diff = np.flatnonzero(got != want)
        if len(diff):
            i = a * row + int(diff[0])
            index = [int(x) for x in np.unravel_index(i, shape)]
            g = float(got[diff[0]:diff[0] + 1].view(np.float32)[0])
            w = float(want[diff[0]:diff[0] + 1].view(np.float32)[0])
            baked = f" + {offset!r}" if offset else ""
            raise VerifyError(f"{bf.path}: tensor {packed_name!r} differs from source {src_name!r}"
                              f"{baked} at {index}: blob {g!r} vs source{baked} {w!r} "
                              f"({int(np.count_nonzero(got != want))} differing in this block)")
    return rows * row
