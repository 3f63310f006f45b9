"""The plan: every output tensor's name, sources, shape, offset and size, from headers alone.

Planning reads no tensor data, so ``--dry-run`` is instant and every structural problem -
a missing tensor, an unused one, a shape that contradicts the config, a model the profile
cannot hold - is reported before a single byte is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from ..format.codec import pack_dtype_table
from ..format.dtypes import DType
from ..format.errors import LayoutError, SourceError
from ..format.engine_policy import check_kept, engine_dtypes, is_engine_profile, refused_quant
from ..format.quant_policy import choose_dtype
from ..format.profile import (HeaderVariant, PlacedTensor, Profile, TensorSlot,
                             check_representable, evaluate, expand_tensors, load_profile,
                             place_tensors)
from ..format.spec import ModelSpec
from ..format.vocab import VocabCounts
from .safetensors_file import CONVERTIBLE_DTYPES, TensorInfo
from .tensor_source import BlockSource, TensorSource

if TYPE_CHECKING:
    from ..format.registry import Family

#: ``--quant`` words beside the policy names: keep a GGUF's own blocks; plain fp32 (the word is
#: llama.cpp's spelling, ``convert_hf_to_gguf --outtype f32``; bumpconv's own names say fp32).
KEEP, FP32 = "keep", "f32"

@dataclass(frozen=True)
class Plan:
    """Everything needed to write (or find) every byte of a blob except the tensor data."""

    profile: Profile
    spec: ModelSpec
    dims: dict[str, int]
    tensors: tuple[PlacedTensor, ...]
    ignored_sources: tuple[str, ...]
    #: the sizes of the tokenizer arrays the blob carries (None: it carries none)
    vocab: VocabCounts | None = None
    #: the quantization policy the dtypes come from (None: every tensor its rule's dtype)
    quant: str | None = None

    @property
    def carries_tokenizer(self) -> bool:
        return any(t.slot.content == "tokenizer" for t in self.tensors)

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
        return self.tensors[-1].end if self.tensors else self.payload_offset

    def header_values(self) -> dict[str, int]:
        """The integer header fields, evaluated for this model."""
        return {f.name: evaluate(f.value, self.dims) if isinstance(f.value, str) else f.value
                for f in self.header.fields
                if f.type in ("u32", "u64") and f.value is not None}

    def dtype_table(self) -> bytes:
        return pack_dtype_table([int(t.dtype) for t in self.tensors])

    def parameter_count(self) -> int:
        """Parameters actually carried (data boxes), not counting padding or zero tensors."""
        return sum(math.prod(t.slot.box) for t in self.tensors if t.slot.box is not None)


def make_plan(spec: ModelSpec, source_tensors: dict[str, TensorInfo], profile_name: str,
              context: int | None = None, vocab: VocabCounts | None = None,
              quant: str | None = None,
              keep: Callable[[TensorSlot], DType] | None = None) -> Plan:
    """Plan a conversion and check the source against it: every expected tensor must exist
    with the shape the config implies, and every source tensor must be consumed. ``vocab``:
    the source's tokenizer arrays, for a profile that carries them; ``quant``: a quantization
    policy's name (schemas/quant.policy.json), ``"f32"`` for none, or ``"keep"``: each tensor
    the dtype ``keep`` gives it (a GGUF source's own blocks; see :mod:`.gguf_source`)."""
    spec = spec.with_context(context)
    profile = load_profile(profile_name)
    dims, flags = spec.dims(vocab), spec.flags(tokenizer=vocab is not None)
    family = spec.family
    _check_tying(profile, spec, source_tensors)
    check_representable(profile, dims, flags)
    needed = profile.tensor_count(spec.num_layers, flags, sources=True)
    if needed > len(source_tensors):  # before anything of the config's size is built
        raise SourceError(f"config.json: num_hidden_layers={spec.num_layers} needs {needed:,} "
                          f"source tensors in the {profile_name} layout, but the checkpoint "
                          f"has {len(source_tensors):,}")
    dtype_of = None
    if quant == FP32:
        quant = None
    if quant == KEEP:
        if keep is None:
            raise LayoutError("--quant keep: only a GGUF source has quantized blocks to keep; "
                              "a checkpoint converts to fp32 (no --quant) or --quant TYPE")
        dtype_of = keep
        if all(dtype_of(t.slot) == t.slot.dtype
               for t in place_tensors(profile, dims, flags, family)):
            quant, dtype_of = None, None  # nothing quantized to keep: a plain fp32 blob
    if quant is not None:
        if profile.dtype_enum != "current":
            raise LayoutError(f"{profile_name}: its dtype table has only fp32 and a stale q4_k "
                              "code; quantized blobs need another profile (engine-v7, bumpwgt5)")
        if is_engine_profile(profile):
            dtype_of = _engine_dtype_of(profile, dims, flags, family, quant, spec, dtype_of)
        elif dtype_of is None:
            dtype_of = partial(_policy_dtype, quant, spec)
    tensors = place_tensors(profile, dims, flags, family, dtype_of=dtype_of)
    used: set[str] = set()
    for t in tensors:
        for name in t.slot.sources:
            _check_source(t.slot, name, source_tensors)
            used.add(name)
    derived = [re.compile(p) for p in family.ignored]
    ignored = tuple(sorted(n for n in source_tensors
                           if n not in used and any(p.match(n) for p in derived)))
    unused = sorted(set(source_tensors) - used - set(ignored))
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise SourceError(f"{source_tensors[unused[0]].file}: tensor {unused[0]!r} is not used by "
                          f"the {profile_name} layout for a {spec.architecture} model{more}")
    return Plan(profile, spec, dims, tensors, ignored,
                vocab if any(t.slot.content == "tokenizer" for t in tensors) else None, quant)


def _policy_dtype(quant: str, spec: ModelSpec, slot: TensorSlot) -> DType:
    return choose_dtype(quant, slot, spec.num_layers, spec.tie_word_embeddings)


def _engine_dtype_of(profile: Profile, dims: dict[str, int], flags: dict[str, bool],
                     family: Family, quant: str, spec: ModelSpec,
                     kept: Callable[[TensorSlot], DType] | None) -> Callable[[TensorSlot], DType]:
    """An engine profile's dtypes: a GGUF's kept blocks only where the engine runs them as they
    are (else an error), a policy's choice adjusted by the engine's rules (engine.policy.json)."""
    slots = expand_tensors(profile, dims, flags, family)
    if quant == KEEP:
        assert kept is not None
        check_kept(slots, kept, dims)
        return kept
    refused = refused_quant(quant)
    if refused is not None:
        raise LayoutError(refused)
    chosen = engine_dtypes(slots, partial(_policy_dtype, quant, spec), dims)
    return lambda slot: chosen[slot.name]


def _check_tying(profile: Profile, spec: ModelSpec,
                 source_tensors: dict[str, TensorInfo]) -> None:
    """The config and the weights must agree about tying (engine bug: silent tying). The output
    head's source is whatever the profile's ``lm_head`` rule reads, as the model's family names
    it; a profile without one refuses untied models itself."""
    heads = [spec.family.hf_name(role, None)
             for rule in profile.rules() if rule.role == "lm_head" for role in rule.sources]
    for head in heads:
        has_head = head in source_tensors
        if spec.tie_word_embeddings and has_head:
            raise SourceError(f"{source_tensors[head].file}: config says "
                              f"tie_word_embeddings=true but the checkpoint has {head}")
        if not spec.tie_word_embeddings and not has_head:
            why = ("absent (HF default: false)" if "tie_word_embeddings" in spec.derived_keys
                   else "false")
            raise SourceError(f"config.json: tie_word_embeddings is {why} but the checkpoint "
                              f"has no {head}")


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


def plan_conversion(source: TensorSource, profile_name: str, context: int | None = None,
                    quant: str | None = None) -> Plan:
    """The plan of converting ``source`` (opened with its tokenizer when the profile carries
    one: see :func:`bumpconv.conversion.source.open_source`)."""
    vocab = source.tokenizer[0].counts if source.tokenizer is not None else None
    keep = source.kept_dtype if isinstance(source, BlockSource) else None
    if keep is not None and quant is None:
        quant = KEEP  # a GGUF's default: its own blocks where the blob can hold them
    return make_plan(source.spec, source.tensors, profile_name, context, vocab, quant, keep)
