"""HF's own model running a blob's weights: transformers' modules, the blob's numbers.

This reference separates two sources of error in a quantized blob. Against HF fp32 it measures
the quantization alone (the same modules, only the weights rounded); the C runtime against it
measures the kernels alone, which must stay at fp32 noise when activations are fp32.

It is built by loading SRC with :meth:`Reference.load` (fp32, eager) and replacing every
parameter with the blob's value: each packed tensor is dequantized to fp32 when its dtype is not
fp32 (a packed row-quantized tensor is rows of :func:`~bumpconv.format.packing.quant_row` values,
the rows its blocks run along), then inverted by the layout's packing rule
(:func:`bumpconv.format.packing.unpack`) back to its HF tensors, which are copied into the
parameters of the same name. Every HF parameter must be replaced exactly once: a parameter the
blob does not hold would silently keep SRC's value, and a blob tensor HF has no parameter for
would be silently ignored; both are refused by name. (Tied embeddings are one parameter in HF
and one tensor in the blob.) For an fp32 blob of SRC the result equals SRC's model bit for bit;
a norm stored with Gemma's offset baked in is given back as
:func:`~bumpconv.format.packing.source_values` says. Parameters are matched by their module
names (a multimodal checkpoint saves them under others: the registry's ``saved_as``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..blob.reader import BumpFile, open_blob
from ..blob.tensors import packed_fp32
from ..format.dtypes import DType
from ..format.errors import ParityError
from ..format.packing import source_values
from .reference import Reference, source_root


@dataclass
class DequantizedReference:
    """SRC's HF model with the blob's weights; ``identical``: every replaced parameter was
    bit-identical to SRC's own (the blob adds no weight error at all)."""

    reference: Reference
    identical: bool
    dtypes: frozenset[DType]


def load_blob_weights(model: Any, bf: BumpFile) -> bool:
    """Copy every tensor of ``bf`` into ``model``'s parameters (see the module docstring);
    return whether every value was already bit-identical."""
    import torch
    params = dict(model.named_parameters())
    if bf.spec is None:
        raise ParityError(f"{bf.path}: the blob does not say its architecture; pass its "
                          "config.json")
    family = bf.spec.family
    replaced: set[str] = set()
    unused: list[str] = []
    identical = True
    with torch.no_grad():
        for t in bf.tensors:
            if t.slot.content != "weights" or t.slot.zeros:
                continue  # the tokenizer's arrays, or a zero-filled slot: no HF tensor behind it
            values = source_values(t.slot, packed_fp32(bf, t))
            for role, value in zip(t.slot.source_roles, values):
                name = family.module_name(role, t.slot.layer)  # checkpoints may say otherwise
                param = params.get(name)
                if param is None:
                    unused.append(f"{name} (from {t.name})")
                    continue
                if name in replaced:
                    raise ParityError(f"{bf.path}: HF parameter {name!r} is filled twice "
                                      f"(again by {t.name!r})")
                if tuple(param.shape) != value.shape:
                    raise ParityError(f"{bf.path}: tensor {t.name!r} unpacks {name!r} as "
                                      f"{list(value.shape)}, HF has {list(param.shape)}")
                new = torch.from_numpy(np.array(value, dtype=np.float32))  # a writable copy
                identical = identical and bool(torch.equal(param, new))
                param.copy_(new)
                replaced.add(name)
    ignored = [re.compile(p) for p in family.ignored]  # another tower: not the model's text
    missing = sorted(n for n in set(params) - replaced
                     if not any(r.match(family.saved(n)) for r in ignored))
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"HF parameters the blob does not hold: {', '.join(missing)}")
        if unused:
            parts.append(f"blob tensors HF has no parameter for: {', '.join(unused)}")
        raise ParityError(f"{bf.path}: the blob's weights do not map onto {type(model).__name__}"
                          f" one to one; " + "; ".join(parts))
    return identical


def load_dequantized(src: str, blob: Path, threads: int | None = 2) -> DequantizedReference:
    """SRC's model (fp32, eager, with parity's taps) carrying ``blob``'s weights."""
    root = source_root(src)
    reference = Reference.load(str(root), threads)
    with open_blob(blob, config=root / "config.json" if root.is_dir() else None) as bf:
        identical = load_blob_weights(reference.model, bf)
        dtypes = frozenset(t.dtype for t in bf.tensors)
    return DequantizedReference(reference, identical, dtypes)
