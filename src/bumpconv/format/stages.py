"""The stages of a decoder layer that the runtime taps and parity compares: one table.

Each stage is named once here, with its shape in dimension symbols and where transformers
produces the same value. Everything else is derived from :data:`STAGES`: the runtime's tap
buffers (:func:`tap_shapes`), the reference's hooks, parity's stage order and failure
attribution, and (checked by tests) the C struct ``bump_taps`` and the table in
docs/runtime-api.md. Adding a stage is one row here plus the C field and the line that fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .profile import evaluate


@dataclass(frozen=True)
class Stage:
    """One tapped value of a decoder layer."""

    key: str
    """The tap's name: the ``bump_taps`` field, the runtime's dict key, the reference's key."""
    stage: str
    """What a divergence here is attributed to (``rope`` covers both rotated tensors)."""
    shape: tuple[str, ...]
    """Shape in dimension symbols; ``n`` is the number of tokens of the forward pass."""
    hf: str
    """Where transformers has it, relative to the decoder layer (``""``: the layer itself)."""
    hook: Literal["output", "input", "attention"]
    """``output``: the module's output (forward hook); ``input``: its first input (pre-hook);
    ``attention``: recorded by the tapping attention function (see parity.reference)."""
    when: str | None = None
    """Spec flag under which the stage exists (q/k norms: Qwen3)."""
    position_axis: int = 0
    """The axis indexing query positions."""

    def dims(self, dims: dict[str, int], n: int) -> tuple[int, ...]:
        """The concrete shape for a model's dimensions and ``n`` tokens."""
        return tuple(evaluate(s, {**dims, "N": n}) for s in _upper(self.shape))


def _upper(shape: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("N" if s == "n" else s for s in shape)


STAGES: tuple[Stage, ...] = (
    Stage("ln1", "ln1", ("n", "E"), "input_layernorm", "output"),
    Stage("q", "q", ("n", "H", "D"), "self_attn.q_proj", "output"),
    Stage("k", "k", ("n", "KV", "D"), "self_attn.k_proj", "output"),
    Stage("v", "v", ("n", "KV", "D"), "self_attn.v_proj", "output"),
    Stage("q_norm", "q_norm", ("n", "H", "D"), "self_attn.q_norm", "output", when="qk_norm"),
    Stage("k_norm", "k_norm", ("n", "KV", "D"), "self_attn.k_norm", "output", when="qk_norm"),
    Stage("q_rope", "rope", ("n", "H", "D"), "self_attn", "attention"),
    Stage("k_rope", "rope", ("n", "KV", "D"), "self_attn", "attention"),
    Stage("scores", "scores", ("H", "n", "n"), "self_attn", "attention", position_axis=1),
    Stage("probs", "probs", ("H", "n", "n"), "self_attn", "attention", position_axis=1),
    Stage("attn", "attn", ("n", "H*D"), "self_attn.o_proj", "input"),
    Stage("wo", "wo", ("n", "E"), "self_attn.o_proj", "output"),
    Stage("resid1", "resid1", ("n", "E"), "post_attention_layernorm", "input"),
    Stage("ln2", "ln2", ("n", "E"), "post_attention_layernorm", "output"),
    Stage("gate", "gate", ("n", "I"), "mlp.gate_proj", "output"),
    Stage("up", "up", ("n", "I"), "mlp.up_proj", "output"),
    Stage("swiglu", "swiglu", ("n", "I"), "mlp.down_proj", "input"),
    Stage("down", "down", ("n", "E"), "mlp.down_proj", "output"),
    Stage("out", "out", ("n", "E"), "", "output"),
)

#: Taps of the whole model, after the layers: the final RMSNorm's output (``model.norm``).
FINAL_NORM = Stage("final_norm", "final_norm", ("n", "E"), "norm", "output")


def stages_for(flags: dict[str, bool]) -> tuple[Stage, ...]:
    """The stages a model with these spec flags has, in forward order."""
    return tuple(s for s in STAGES if s.when is None or flags[s.when])


def tap_shapes(dims: dict[str, int], flags: dict[str, bool], n: int) -> dict[str, tuple[int, ...]]:
    """Every tap of one layer plus ``final_norm``, with concrete shapes for ``n`` tokens."""
    return {s.key: s.dims(dims, n) for s in (*stages_for(flags), FINAL_NORM)}
