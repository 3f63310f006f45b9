"""A blob's tensors by their Hugging Face names: the reading verb behind ``bumpconv.safe_open``.

A packed tensor holds one or more HF tensors (``w1`` is gate and up stacked; ``wq`` is q_proj
per head, padded). Reading one back is the inverse of writing it: dequantize the packed tensor
to fp32 when its dtype is a ggml block type (ggml's own ``dequantize_row_<type>`` arithmetic,
:func:`bumpconv.native.quant.dequantize`), then invert its profile's packing rule
(:func:`bumpconv.format.packing.unpack`) - the same two steps ``verify`` and parity's
dequantized reference run, so what this returns is what they compare. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..format.dtypes import DType
from ..format.errors import BlobError
from ..format.packing import quant_row, source_values
from ..format.profile import PlacedTensor
from ..native.quant import dequantize
from .reader import BumpFile, open_blob


def packed_fp32(bf: BumpFile, t: PlacedTensor) -> np.ndarray:
    """A packed tensor as fp32 in its padded shape: viewed when fp32, else dequantized."""
    if t.dtype == DType.FP32:
        return bf.array(t.name)
    raw = bf.tensor_bytes(t.name)
    cols = quant_row(t.slot)  # the rows its blocks run along (engine-v7's wo: rows of H*D)
    rows = t.slot.numel // cols
    values = np.asarray(dequantize(raw, t.dtype, rows, cols), dtype=np.float32)
    return values.reshape(t.slot.shape)


class TensorReader:
    """An open blob, read like a safetensors file (``safe_open``): :meth:`keys` are the HF
    tensor names it holds, :meth:`get_tensor` one of them as fp32 in its HF shape,
    :meth:`get_raw` a packed tensor as stored, :meth:`metadata` the blob's metadata.

    Arrays returned are copies: they stay valid after :meth:`close`."""

    def __init__(self, bf: BumpFile) -> None:
        self._bf = bf
        #: HF name -> (packed tensor, index among its sources)
        self._where: dict[str, tuple[PlacedTensor, int]] = {
            name: (t, i) for t in bf.tensors if t.slot.content == "weights"
            for i, name in enumerate(t.slot.sources)}

    @property
    def path(self) -> Path:
        return self._bf.path

    def keys(self) -> list[str]:
        """The HF tensor names the blob holds, in file order (zero-filled slots such as
        bumpwgt3's ``pos_emb`` and the tokenizer's arrays have none: see :meth:`packed_keys`)."""
        return list(self._where)

    def packed_keys(self) -> list[str]:
        """Every packed tensor's name in the blob (``layer.0.wq``, ``vocab_strings``, ...)."""
        return [t.name for t in self._bf.tensors]

    def get_tensor(self, name: str) -> np.ndarray:
        """HF tensor ``name`` as fp32 in its HF shape: dequantized from its ggml blocks where
        the blob quantized it, un-packed by its profile's rule (un-padded, heads and stacks
        undone; a norm weight offset the profile baked in taken off again:
        :func:`~bumpconv.format.packing.source_values`). A GGUF-made blob gives the HF names and
        orders transformers' GGUF loader gives (Q/K rows un-permuted)."""
        found = self._where.get(name)
        if found is None:
            hint = (f"; {name!r} is a packed tensor: get_raw({name!r})"
                    if name in self._bf.by_name else "")
            raise BlobError(f"{self.path}: no tensor {name!r} (HF names: "
                            f"{_some(self.keys())}){hint}")
        t, i = found
        return np.array(source_values(t.slot, packed_fp32(self._bf, t))[i], dtype=np.float32)

    def get_raw(self, name: str) -> np.ndarray:
        """Packed tensor ``name`` as stored: fp32 in its padded packed shape, a ggml block type
        as its bytes, one row of blocks per quantized row (``uint8 [rows, row bytes]``, the rows
        its blocks run along: :func:`~bumpconv.format.packing.quant_row`), the
        tokenizer's arrays as bytes."""
        t = self._bf.by_name.get(name)
        if t is None:
            found = self._where.get(name)
            hint = (f"; {name!r} is an HF name, held by packed tensor {found[0].name!r}"
                    if found is not None else "")
            raise BlobError(f"{self.path}: no packed tensor {name!r} (packed names: "
                            f"{_some(self.packed_keys())}){hint}")
        if t.dtype == DType.FP32 and t.slot.content == "weights":
            return np.array(self._bf.array(name))
        data = np.frombuffer(self._bf.tensor_bytes(name), dtype=np.uint8)
        if t.slot.content != "weights":
            return data.copy()
        return data.reshape(t.slot.numel // quant_row(t.slot), -1).copy()  # one quantized row each

    def dtype(self, name: str) -> str:
        """The stored dtype of a packed tensor or of the packed tensor holding an HF tensor
        (``"fp32"``, ``"q8_0"``, ``"q4_K"``, ...)."""
        t = self._bf.by_name.get(name) or self._where.get(name, (None, 0))[0]
        if t is None:
            raise BlobError(f"{self.path}: no tensor {name!r}")
        return t.dtype.label

    def metadata(self) -> dict[str, Any] | None:
        """The blob's metadata document: bumpconv's (config, source provenance, manifest,
        tokenizer record, quantization), an engine-written file's own, or None (BUMPWGT3)."""
        if self._bf.metadata is not None:
            return self._bf.metadata.model_dump(mode="json")
        return self._bf.engine_metadata

    def close(self) -> None:
        self._bf.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tensors(path: Path | str, config: Path | str | None = None) -> TensorReader:
    """Open ``path`` for reading its tensors (``config``: a BUMPWGT3 file's config.json, when
    its shapes are ambiguous from sizes alone)."""
    return TensorReader(open_blob(path, config=Path(config) if config is not None else None))


def _some(names: list[str], shown: int = 3) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
