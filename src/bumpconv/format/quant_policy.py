"""Quantization policies as data (``schemas/quant.policy.json``): which dtype each packed tensor
gets under ``convert --quant NAME``.

Quantization runs along each packed row (a matrix's input dimension, padded to 16 values:
:func:`~bumpconv.format.packing.quant_row`), so a type is usable for a tensor only when its block
divides that row; otherwise the policy's fallback chain applies, ending at fp32. Only matrices
are quantized: norms, biases and the tokenizer's arrays keep their dtype. The engine profiles
then apply the engine's own rules on top (:mod:`.engine_policy`).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .dtypes import DType, dtype_named
from .errors import LayoutError
from .packing import quant_row
from .profile import TensorSlot

#: Roles that are the output head (the token embedding is one too when the model is tied).
OUTPUT_ROLES = ("lm_head",)


class Rule(BaseModel):
    """A dtype for some roles, in every layer or in llama.cpp's ``use_more_bits`` layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[str, ...]
    layers: Literal["all", "more_bits"] = "all"
    type: str


class Policy(BaseModel):
    """One ``--quant`` name: the default type of a matrix, the output head's, and rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    output: str | None = Field(default=None, description="the output head's type (llama.cpp's "
                               "rule); null: the head is a matrix like any other")
    rules: tuple[Rule, ...] = ()


class Policies(BaseModel):
    """The policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    fallback: dict[str, str]
    last_resort: str
    policies: dict[str, Policy]

    @model_validator(mode="after")
    def _known_types(self) -> "Policies":
        named = [self.last_resort, *self.fallback, *self.fallback.values()]
        for p in self.policies.values():
            named += [p.default, *([p.output] if p.output else []), *(r.type for r in p.rules)]
        for label in named:
            if label.upper() not in DType.__members__:
                raise ValueError(f"unknown dtype {label!r}")
        return self


@cache
def load_policies() -> Policies:
    text = resources.files("bumpconv.schemas").joinpath("quant.policy.json").read_text("utf-8")
    return Policies.model_validate_json(text)


@cache
def policy_hash() -> str:
    """SHA-256 of the canonical policy file: recorded with every quantized blob."""
    canon = json.dumps(load_policies().model_dump(mode="json"), sort_keys=True,
                       separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def quant_names() -> tuple[str, ...]:
    return tuple(load_policies().policies)


def more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third in
    between (integer arithmetic, as in C)."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def choose_dtype(name: str, slot: TensorSlot, layers: int, tied: bool) -> DType:
    """The dtype policy ``name`` gives ``slot`` in a model of ``layers`` layers."""
    policies = load_policies()
    policy = policies.policies.get(name)
    if policy is None:
        raise LayoutError(f"unknown --quant {name!r} (known: {', '.join(policies.policies)})")
    if slot.content != "weights" or slot.zeros or len(slot.shape) < 2:
        return slot.dtype
    row = quant_row(slot)
    label = policy.default
    output = slot.role in OUTPUT_ROLES or (tied and slot.role == "token_emb")
    if output and policy.output is not None:
        block = dtype_named(policy.default).block.elements
        label = "q8_0" if row % block or policy.default == "q8_0" else policy.output
    for rule in policy.rules:
        if slot.role in rule.roles and slot.layer is not None and (
                rule.layers == "all" or more_bits(slot.layer, layers)):
            label = rule.type
    return _fitting(label, row, policies)


def fitting(label: str, row: int) -> DType:
    """``label``, or its llama.cpp fallback when its block does not divide ``row``, else the
    last resort (fp32)."""
    return _fitting(label, row, load_policies())


def _fitting(label: str, row: int, policies: Policies) -> DType:
    """``label``, or its fallback when its block does not divide ``row``, else the last resort."""
    dtype = dtype_named(label)
    if row % dtype.block.elements == 0:
        return dtype
    if label in policies.fallback:
        fallback = dtype_named(policies.fallback[label])
        if row % fallback.block.elements == 0:
            return fallback
    return dtype_named(policies.last_resort)
