"""Test support for parity: converting fixtures, and blobs with deliberate defects.

Each defect is one the engine shipped or a peer converter's users hit (engine-bump-format.md
section 6). A defective blob is made the way a buggy converter would make it: the defect edits
the source's arrays or config.json (a copy, saved as an ordinary safetensors checkpoint), and
the unchanged `bumpconv convert` packs it. Its checksums, manifest and metadata are therefore
consistent, so it opens and passes ``inspect --check`` - only its numbers are wrong, which is
what parity must catch. Only public surfaces are used (safetensors, config.json, the CLI), so
the defects keep applying whatever the writer does internally; test_parity_defects.py checks
that they do.

Every :class:`Defect` records where parity has to find it (stage, and layer or None for the
output head), so the tests state the expectation next to the mutation.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from bumpconv.format.spec import ModelSpec, spec_from_config
from runtime_helpers import convert

#: Edits a loaded checkpoint in place: (tensors, config.json dict, its spec).
Edit = Callable[[dict[str, np.ndarray], dict[str, Any], ModelSpec], None]


@dataclass(frozen=True)
class Defect:
    """A deliberate defect and where parity must attribute it."""

    name: str
    stage: str
    layer: int | None
    edit: Edit


def build_defective(src: Path, out: Path, defect: Defect) -> Path:
    """Copy ``src`` (a single-file checkpoint) with ``defect`` applied beside ``out`` and
    convert the copy to ``out``."""
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    defect.edit(tensors, config, spec_from_config(config))
    edited = out.parent / (re.sub(r"\W+", "-", defect.name) + "-src")
    shutil.rmtree(edited, ignore_errors=True)
    edited.mkdir(parents=True)
    save_file(tensors, edited / "model.safetensors", metadata={"format": "pt"})
    (edited / "config.json").write_text(json.dumps(config, indent=2))
    return convert(edited, out)


def _layer(layer: int, name: str) -> str:
    return f"model.layers.{layer}.{name}"


def swap_gate_up(layer: int) -> Defect:
    """w1 with its gate and up halves exchanged (same size: passes every size check)."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        gate, up = _layer(layer, "mlp.gate_proj.weight"), _layer(layer, "mlp.up_proj.weight")
        t[gate], t[up] = t[up], t[gate]
    return Defect("gate/up swapped", "gate", layer, edit)


def wo_row_major(layer: int) -> Defect:
    """WO written row-major ([E][H*D]) where the per-head form ([H][E][D]) belongs.

    The replacement o_proj is chosen so that the converter's per-head packing of it is, byte
    for byte, the row-major packing of the real o_proj. That identity needs E and D to need no
    padding, so this defect is only built for such models (SmolLM2, llama-tied).
    """
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        dims = spec.dims()
        if (dims["AE"], dims["AD"]) != (dims["E"], dims["D"]):
            raise ValueError("wo_row_major needs a model whose E and D need no padding")
        name = _layer(layer, "self_attn.o_proj.weight")
        e, h, d = spec.hidden_size, spec.num_heads, spec.head_dim
        per_head_view = t[name].reshape(h, e, d).transpose(1, 0, 2)
        t[name] = np.ascontiguousarray(per_head_view.reshape(e, h * d))
    return Defect("wo row-major", "wo", layer, edit)


def permute_k_heads(layer: int) -> Defect:
    """K heads rotated by one (k_proj rows and bias): a per-head stride bug."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        if spec.num_kv_heads < 2:
            raise ValueError("permute_k_heads needs at least 2 KV heads")
        for suffix in ("weight", "bias"):
            name = _layer(layer, f"self_attn.k_proj.{suffix}")
            if name in t:
                w = t[name]
                t[name] = np.roll(w.reshape(spec.num_kv_heads, spec.head_dim, -1), 1,
                                  axis=0).reshape(w.shape)
    return Defect("K heads permuted", "k", layer, edit)


def gguf_qk_order(layer: int) -> Defect:
    """Q/K rows permuted into llama.cpp's interleaved order (what a GGUF file holds) and not
    un-permuted: a rotate-half kernel then gets a wrong q from the first projection on."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        d = spec.head_dim
        for proj in ("q_proj", "k_proj"):
            name = _layer(layer, f"self_attn.{proj}.weight")
            w = t[name]
            t[name] = np.ascontiguousarray(
                w.reshape(w.shape[0] // d, 2, d // 2, -1).swapaxes(1, 2).reshape(w.shape))
    return Defect("Q/K in GGUF interleaved order", "q", layer, edit)


def drop_qkv_bias(layer: int, which: tuple[str, ...] = ("q", "k", "v")) -> Defect:
    """Biases zero-filled, as the engine's v4+ writers drop them (Qwen2 breaks)."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        for p in which:
            name = _layer(layer, f"self_attn.{p}_proj.bias")
            t[name] = np.zeros_like(t[name])
    return Defect(f"{'/'.join(which)} bias dropped", which[0], layer, edit)


def wrong_eps(eps: float) -> Defect:
    """Metadata carrying another RMSNorm eps (the engine's misspelled-key default)."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        config["rms_norm_eps"] = eps
    return Defect(f"rms eps {eps:g}", "ln1", 0, edit)


def tie_untied() -> Defect:
    """An untied model written as tied: lm_head dropped, logits from token_emb."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        config["tie_word_embeddings"] = True
        del t["lm_head.weight"]
    return Defect("untied written as tied", "logits", None, edit)


def bump_w2_element(layer: int, row: int = 3, col: int = 5, delta: float = 1.0) -> Defect:
    """One element of one layer's w2 (down_proj) changed."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        name = _layer(layer, "mlp.down_proj.weight")
        t[name] = t[name].copy()
        t[name][row, col] += delta
    return Defect(f"w2[{row},{col}] of layer {layer} changed", "down", layer, edit)


def bump_wq_element(layer: int, row: int = 5, col: int = 7, delta: float = 1e-2) -> Defect:
    """One element of one layer's wq (q_proj) nudged by ``delta``: a small defect. In a model
    whose residual stream is large (SmolLM2: ~17,000 from layer 11 on), its effect on the layer
    output is far below what the layer sweep resolves at that scale; only the stage check,
    which holds q to q's own magnitude, sees it."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: ModelSpec) -> None:
        name = _layer(layer, "self_attn.q_proj.weight")
        t[name] = t[name].copy()
        t[name][row, col] += delta
    return Defect(f"wq[{row},{col}] of layer {layer} nudged by {delta:g}", "q", layer, edit)


#: Every defect on a tiny model, with the model it is built from. Tiny models have 2 layers;
#: defects target layer 1 where the layer matters, so "first layer" is not trivially 0.
TINY_DEFECTS: tuple[tuple[str, Defect], ...] = (
    ("llama-untied", swap_gate_up(1)),
    ("llama-tied", wo_row_major(1)),
    ("llama-untied", permute_k_heads(1)),
    ("llama-gqa-pad", gguf_qk_order(0)),
    ("llama-untied", wrong_eps(1e-6)),
    ("qwen2", drop_qkv_bias(0)),
    ("qwen2", drop_qkv_bias(1, which=("v",))),
    ("llama-untied", tie_untied()),
    ("mistral", bump_w2_element(1)),
)
