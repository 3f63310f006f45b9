"""The stages of a decoder layer that the runtime taps and parity compares: one table.

Each stage is named once here, with its shape in dimension symbols and where transformers
produces the same value: the input or output of the module owning a role's tensor. Which module
that is, is the model family's (the architecture registry's names, :func:`stage_module`): in
Llama ``ln2`` is ``post_attention_layernorm``, in Gemma ``pre_feedforward_layernorm``, and
Gemma's ``post_attention_layernorm`` is its role ``post_attention_norm``, so a stage cannot
silently mean another module in another family. Everything else is derived from
:data:`STAGES`: the runtime's tap buffers (:func:`tap_shapes`), the reference's hooks, parity's
stage order and failure attribution, and (checked by tests) the C struct ``bump_taps`` and the
table in docs/runtime-api.md. Adding a stage is one row here plus the C field and the line
that fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .profile import evaluate, holds
from .registry import Family


@dataclass(frozen=True)
class Stage:
    """One tapped value of a decoder layer."""

    key: str
    """The tap's name: the ``bump_taps`` field, the runtime's dict key, the reference's key."""
    stage: str
    """What a divergence here is attributed to (``rope`` covers both rotated tensors)."""
    shape: tuple[str, ...]
    """Shape in dimension symbols; ``n`` is the number of tokens of the forward pass."""
    of: str
    """Where transformers has it: the module owning this role's tensor (the registry's name
    for it, per family); ``layer``: the decoder layer itself; ``attention``: the attention
    module (the module holding ``wq``)."""
    hook: Literal["output", "input", "attention"]
    """``output``: the module's output (forward hook); ``input``: its first input (pre-hook);
    ``attention``: recorded by the tapping attention function (see parity.reference)."""
    when: str | None = None
    """Condition under which the stage exists (q/k norms: Qwen3, Gemma 3; post norms: Gemma 3)."""
    position_axis: int = 0
    """The axis indexing query positions."""

    def dims(self, dims: dict[str, int], n: int) -> tuple[int, ...]:
        """The concrete shape for a model's dimensions and ``n`` tokens."""
        return tuple(evaluate(s, {**dims, "N": n}) for s in _upper(self.shape))


def _upper(shape: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("N" if s == "n" else s for s in shape)


STAGES: tuple[Stage, ...] = (
    Stage("ln1", "ln1", ("n", "E"), "ln1", "output"),
    Stage("q", "q", ("n", "H", "D"), "wq", "output"),
    Stage("k", "k", ("n", "KV", "D"), "wk", "output"),
    Stage("v", "v", ("n", "KV", "D"), "wv", "output"),
    Stage("q_norm", "q_norm", ("n", "H", "D"), "q_norm", "output", when="qk_norm"),
    Stage("k_norm", "k_norm", ("n", "KV", "D"), "k_norm", "output", when="qk_norm"),
    Stage("q_rope", "rope", ("n", "H", "D"), "attention", "attention"),
    Stage("k_rope", "rope", ("n", "KV", "D"), "attention", "attention"),
    Stage("scores", "scores", ("H", "n", "n"), "attention", "attention", position_axis=1),
    Stage("probs", "probs", ("H", "n", "n"), "attention", "attention", position_axis=1),
    Stage("attn", "attn", ("n", "H*D"), "wo", "input"),
    Stage("wo", "wo", ("n", "E"), "wo", "output"),
    Stage("post_attention_norm", "post_attention_norm", ("n", "E"), "post_attention_norm",
          "output", when="post_norms"),
    Stage("resid1", "resid1", ("n", "E"), "ln2", "input"),
    Stage("ln2", "ln2", ("n", "E"), "ln2", "output"),
    Stage("gate", "gate", ("n", "I"), "w1.gate", "output"),
    Stage("up", "up", ("n", "I"), "w1.up", "output"),
    Stage("swiglu", "swiglu", ("n", "I"), "w2", "input"),
    Stage("down", "down", ("n", "E"), "w2", "output"),
    Stage("post_ffn_norm", "post_ffn_norm", ("n", "E"), "post_ffn_norm", "output",
          when="post_norms"),
    Stage("out", "out", ("n", "E"), "layer", "output"),
)

#: Taps of the whole model, after the layers: the final RMSNorm's output (``model.norm``).
FINAL_NORM = Stage("final_norm", "final_norm", ("n", "E"), "final_norm", "output")


def stages_for(flags: dict[str, bool]) -> tuple[Stage, ...]:
    """The stages a model with these flags has, in forward order."""
    return tuple(s for s in STAGES if holds(s.when, flags))


def stage_module(stage: Stage, family: Family) -> str:
    """The module ``stage`` hooks in ``family``'s transformers model: relative to the decoder
    layer for a layer stage ("" for the layer itself), to the model for :data:`FINAL_NORM`."""
    if stage.of == "layer":
        return ""
    if stage.of == "attention":
        return family.module_of("wq").rpartition(".")[0]
    return family.module_of(stage.of)


def tap_shapes(dims: dict[str, int], flags: dict[str, bool], n: int) -> dict[str, tuple[int, ...]]:
    """Every tap of one layer plus ``final_norm``, with concrete shapes for ``n`` tokens."""
    return {s.key: s.dims(dims, n) for s in (*stages_for(flags), FINAL_NORM)}
