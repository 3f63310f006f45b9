"""What the engine computes correctly, as data (``schemas/engine.policy.json``).

The engine profiles (those that write the engine's sidecars) quantize as llama.cpp does
(:mod:`.quant_policy`), then apply the engine's rules, each a trap its build step would
otherwise walk into with exit status 0:

* a type it has no kernel for (q4_0, q4_1) is refused, naming why and what to use;
* ``token_emb`` must be a type its embedding lookup reads (fp32, q8_0, q4_k, q6_k): others get
  the policy's ``embedding.instead`` (q5_0/q5_1 -> q8_0, q5_k -> q6_k);
* wq, wk and wv share one quantized input buffer, so they must not mix the q8_0 activation class
  with the q8_K one: the q8_K-class members fall back as llama.cpp falls back (q4_k -> q5_0,
  q6_k -> q8_0);
* nothing is padded: a quantized matrix must be unpadded (its packed shape its data), its rows
  its input dimension (E, H*D or I) in whole blocks of its type; else the llama.cpp fallback,
  else fp32;
* q5_1 and q5_k only up to the input dimension their kernels compute correctly
  (``input_limit``: 8192 and 32768; beyond it q5_0 and q6_k).

The same data drives the check of any engine directory (:mod:`bumpconv.blob.engine_traps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from .dtypes import DType, dtype_named
from .errors import LayoutError
from .packing import quant_row
from .profile import Profile, TensorSlot, evaluate
from .quant_policy import fitting, load_policies

Activation = Literal["fp32", "q8_0", "q8_k"]


class Embedding(BaseModel):
    """The types the engine's embedding lookup reads, and what replaces any other."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    types: tuple[str, ...]
    instead: dict[str, str]


class Matrix(BaseModel):
    """A matrix role's output rows and input dimension (the K of its kernels), as expressions
    of the config's symbols."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: str
    input: str


class InputLimit(BaseModel):
    """The largest input dimension a type's engine kernels compute correctly, what replaces
    the type beyond it, and what the engine does there instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: int
    instead: str
    why: str


class Names(BaseModel):
    """How the engine's manifests name the tensors the policy speaks of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_emb: str
    lm_head: tuple[str, ...]
    layer: str
    misnamed_lm_head: tuple[str, ...]


class QuantSummary(BaseModel):
    """The keys of the manifest's ``quant_summary`` the engine's build step reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: tuple[str, ...]
    layer: tuple[str, ...]


class EnginePolicy(BaseModel):
    """The policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    engine: str
    refused: dict[str, str]
    instead: str
    activation: dict[str, Activation]
    input_limit: dict[str, InputLimit]
    shared_input: tuple[tuple[str, ...], ...]
    class_fallback: dict[str, str]
    embedding: Embedding
    matrices: dict[str, Matrix]
    config_dims: dict[str, str]
    config_json_keys: dict[str, str]
    names: Names
    quant_summary: QuantSummary
    qk_norm_templates: tuple[str, ...]
    sentencepiece_templates: tuple[str, ...]
    pairwise_templates: tuple[str, ...]
    template_policy_keys: tuple[str, ...]
    template_policy_flags: tuple[str, ...]

    @model_validator(mode="after")
    def _known_types(self) -> "EnginePolicy":
        named = [*self.refused, *self.activation, *self.class_fallback,
                 *self.class_fallback.values(), *self.embedding.types,
                 *self.embedding.instead, *self.embedding.instead.values(),
                 *self.input_limit, *(r.instead for r in self.input_limit.values())]
        for label in named:
            if label.upper() not in DType.__members__:
                raise ValueError(f"unknown dtype {label!r}")
        for label, other in self.class_fallback.items():
            if self.activation[label] == self.activation[other]:
                raise ValueError(f"class_fallback {label} -> {other} stays in one class")
        return self

    def runs(self, dtype: DType) -> bool:
        """Whether the engine has a kernel for matrices of ``dtype``."""
        return dtype.label in self.activation


@cache
def load_engine_policy() -> EnginePolicy:
    text = resources.files("bumpconv.schemas").joinpath("engine.policy.json").read_text("utf-8")
    return EnginePolicy.model_validate_json(text)


def is_engine_profile(profile: Profile) -> bool:
    """Whether ``profile`` is written for the engine (it carries the engine's sidecars)."""
    return profile.sidecars is not None


def refused_quant(name: str) -> str | None:
    """Why ``--quant name`` cannot be written for the engine (one line), or None."""
    policy = load_engine_policy()
    quant = load_policies().policies.get(name)
    if quant is None:
        return None
    types = [quant.default, *([quant.output] if quant.output else []),
             *(r.type for r in quant.rules)]
    bad = next((t for t in types if t in policy.refused), None)
    if bad is None:
        return None
    return (f"--quant {name}: {policy.refused[bad]}; for the engine use --quant "
            f"{policy.instead}, or --profile bumpwgt5 for bumpconv's own runtime")


def engine_input(slot: TensorSlot, dims: dict[str, int]) -> int | None:
    """The engine's input dimension K of a matrix slot (unpadded), or None for other slots."""
    matrix = load_engine_policy().matrices.get(slot.role)
    return None if matrix is None else evaluate(matrix.input, dims)


def engine_dtypes(slots: Sequence[TensorSlot], choose: Callable[[TensorSlot], DType],
                  dims: dict[str, int]) -> dict[str, DType]:
    """Each slot's dtype: ``choose`` (llama.cpp's policy), then the engine's rules."""
    policy = load_engine_policy()
    out: dict[str, DType] = {}
    for slot in slots:
        dtype = choose(slot)
        if slot.role not in policy.matrices or dtype == DType.FP32:
            out[slot.name] = dtype  # norms, biases, the tokenizer's arrays: never quantized
            continue
        if slot.role == policy.embedding.role and dtype.label not in policy.embedding.types:
            dtype = dtype_named(policy.embedding.instead[dtype.label])
        out[slot.name] = _engine_fitting(dtype, slot, dims)
    for group in policy.shared_input:
        members: dict[int | None, list[TensorSlot]] = {}
        for slot in slots:
            if slot.role in group:
                members.setdefault(slot.layer, []).append(slot)
        for sharing in members.values():
            classes = {policy.activation[out[s.name].label] for s in sharing} - {"fp32"}
            if len(classes) < 2:
                continue
            for s in sharing:
                label = out[s.name].label
                if label in policy.class_fallback:
                    fallback = dtype_named(policy.class_fallback[label])
                    out[s.name] = _engine_fitting(fallback, s, dims)
    return out


def _engine_fitting(dtype: DType, slot: TensorSlot, dims: dict[str, int]) -> DType:
    """``dtype`` when the engine can run it for this matrix slot: its blocks run along the
    unpadded input dimension; else llama.cpp's fallback, else fp32."""
    k = engine_input(slot, dims)
    if k is None or quant_row(slot) != k or slot.box != slot.shape:
        return DType.FP32  # padded rows or columns: the engine reads [rows][K] unpadded
    chosen = fitting(dtype.label, k)
    limit = load_engine_policy().input_limit.get(chosen.label)
    if limit is not None and k > limit.max:  # its kernels compute garbage beyond it
        return _engine_fitting(dtype_named(limit.instead), slot, dims)
    return chosen


_KEEP_ADVICE = ("--quant q8_0 (or another type) re-quantizes it for the engine, --profile "
                "bumpwgt5 keeps the GGUF's blocks for bumpconv's runtime")


def check_kept(slots: Sequence[TensorSlot], dtype_of: Callable[[TensorSlot], DType],
               dims: dict[str, int]) -> None:
    """A GGUF's own blocks kept in an engine profile must be blocks the engine runs as they
    are: otherwise a LayoutError naming the first tensor that is not, and why."""
    adjusted = engine_dtypes(slots, _refusing_keep(dtype_of), dims)
    for slot in slots:
        kept = dtype_of(slot)
        if adjusted[slot.name] != kept:
            raise LayoutError(f"--quant keep: {slot.name} is {kept.label}, which the engine "
                              f"cannot run there ({_why_not(slot, kept, dims)}); {_KEEP_ADVICE}")


def _refusing_keep(kept: Callable[[TensorSlot], DType]) -> Callable[[TensorSlot], DType]:
    policy = load_engine_policy()

    def choose(slot: TensorSlot) -> DType:
        dtype = kept(slot)
        if slot.role in policy.matrices and not policy.runs(dtype):
            why = policy.refused.get(dtype.label, "the engine has no kernel for it")
            raise LayoutError(f"--quant keep: {slot.name} is {dtype.label}: {why}; "
                              f"{_KEEP_ADVICE}")
        return dtype
    return choose


def _why_not(slot: TensorSlot, dtype: DType, dims: dict[str, int]) -> str:
    policy = load_engine_policy()
    if slot.role == policy.embedding.role and dtype.label not in policy.embedding.types:
        return f"its embedding lookup reads only {', '.join(policy.embedding.types)}"
    k = engine_input(slot, dims)
    if k is not None and (quant_row(slot) != k or k % dtype.block.elements):
        return f"its input dimension {k} is not whole {dtype.label} blocks of unpadded rows"
    limit = policy.input_limit.get(dtype.label)
    if k is not None and limit is not None and k > limit.max:
        return f"its input dimension {k} exceeds {limit.max}: {limit.why}"
    return "wq, wk and wv would mix the q8_0 and q8_K activation classes"
