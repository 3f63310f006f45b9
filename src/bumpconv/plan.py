"""The plan: every output tensor's name, sources, shape, offset and size, from headers alone.

Planning reads no tensor data, so ``--dry-run`` is instant and every structural problem -
a missing tensor, an unused one, a shape that contradicts the config, a model the profile
cannot hold - is reported before a single byte is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .constants import DType
from .errors import SourceError
from .layout import (HeaderVariant, LayoutProfile, TensorSlot, evaluate, expand_tensors,
                     load_profile)
from .safetensors_file import CONVERTIBLE_DTYPES, TensorInfo
from .spec import ModelSpec

#: Non-weight buffers some older checkpoints save; they are derived from config, not packed.
IGNORED_SOURCES = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class PlannedTensor:
    """A layout slot with its place in the file."""

    slot: TensorSlot
    offset: int
    dtype: DType = DType.FP32

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def nbytes(self) -> int:
        return self.slot.nbytes


@dataclass(frozen=True)
class Plan:
    """Everything needed to write (or find) every byte of a blob except the tensor data."""

    profile: LayoutProfile
    spec: ModelSpec
    dims: dict[str, int]
    tensors: tuple[PlannedTensor, ...]
    ignored_sources: tuple[str, ...]

    @property
    def header(self) -> HeaderVariant:
        """The header variant bumpconv writes (the profile's first)."""
        return self.profile.headers[0]

    @property
    def dtype_table_offset(self) -> int:
        return self.header.dtype_table_offset

    @property
    def payload_offset(self) -> int:
        return self.dtype_table_offset + 4 + len(self.tensors)

    @property
    def payload_end(self) -> int:
        return self.tensors[-1].offset + self.tensors[-1].nbytes if self.tensors else self.payload_offset

    def header_values(self) -> dict[str, int]:
        """The integer header fields, evaluated for this model."""
        return {f.name: evaluate(f.value, self.dims) if isinstance(f.value, str) else f.value
                for f in self.header.fields
                if f.type in ("u32", "u64") and f.value is not None}

    def dtype_table(self) -> bytes:
        return len(self.tensors).to_bytes(4, "little") + bytes(int(t.dtype) for t in self.tensors)

    def parameter_count(self) -> int:
        """Parameters actually carried (data boxes), not counting padding or zero tensors."""
        return sum(math.prod(t.slot.box) for t in self.tensors if t.slot.box is not None)


def layout_tensors(profile: LayoutProfile, dims: dict[str, int], flags: dict[str, bool],
                   table_offset: int | None = None) -> tuple[PlannedTensor, ...]:
    """Expand a profile and place its tensors back to back after the dtype table."""
    slots = expand_tensors(profile, dims, flags)
    if table_offset is None:
        table_offset = profile.headers[0].dtype_table_offset
    offset = table_offset + 4 + len(slots)
    out = []
    for slot in slots:
        out.append(PlannedTensor(slot, offset))
        offset += slot.nbytes
    return tuple(out)


def make_plan(spec: ModelSpec, source_tensors: dict[str, TensorInfo], profile_name: str,
              context: int | None = None) -> Plan:
    """Plan a conversion and check the source against it: every expected tensor must exist
    with the shape the config implies, and every source tensor must be consumed."""
    spec = spec.with_context(context)
    profile = load_profile(profile_name)
    _check_tying(spec, source_tensors)
    tensors = layout_tensors(profile, spec.dims(), spec.flags())
    used: set[str] = set()
    for t in tensors:
        for name in t.slot.sources:
            _check_source(t.slot, name, source_tensors)
            used.add(name)
    ignored = tuple(sorted(n for n in source_tensors if n not in used and IGNORED_SOURCES.match(n)))
    unused = sorted(set(source_tensors) - used - set(ignored))
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise SourceError(f"{source_tensors[unused[0]].file}: tensor {unused[0]!r} is not used by "
                          f"the {profile_name} layout for a {spec.architecture} model{more}")
    return Plan(profile, spec, spec.dims(), tensors, ignored)


def _check_tying(spec: ModelSpec, source_tensors: dict[str, TensorInfo]) -> None:
    has_head = "lm_head.weight" in source_tensors
    if spec.tie_word_embeddings and has_head:
        raise SourceError(f"{source_tensors['lm_head.weight'].file}: config says "
                          "tie_word_embeddings=true but the checkpoint has lm_head.weight")
    if not spec.tie_word_embeddings and not has_head:
        why = ("absent (HF default: false)" if "tie_word_embeddings" in spec.derived_keys
               else "false")
        raise SourceError(f"config.json: tie_word_embeddings is {why} but the checkpoint has "
                          "no lm_head.weight")


def _check_source(slot: TensorSlot, name: str, source_tensors: dict[str, TensorInfo]) -> None:
    info = source_tensors.get(name)
    if info is None:
        raise SourceError(f"tensor {name!r} (needed for {slot.name}) is missing from the checkpoint")
    if info.shape != slot.source_shape:
        raise SourceError(f"{info.file}: tensor {name!r} has shape {list(info.shape)} but the "
                          f"config implies {list(slot.source_shape or ())}")
    if info.dtype not in CONVERTIBLE_DTYPES:
        raise SourceError(f"{info.file}: tensor {name!r} has dtype {info.dtype}; "
                          f"supported: {', '.join(CONVERTIBLE_DTYPES)}")
