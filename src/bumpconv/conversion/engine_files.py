"""The files the engine's build steps (v7 and v8) read next to a blob in a model directory:
``weights_manifest.json``, ``weights_manifest.map`` and a ``config.json`` (see
../shared/reference/engine-v7.md and engine-quant-v8.md).

All three are derived from the plan alone (names, dtypes, offsets and sizes are known before a
byte of the blob is written), so they are byte-reproducible: the manifest names the blob by its
file name (no absolute path, no time), references the engine template by name instead of
embedding it, and the map lists every tensor in runtime-offset order with runtime offset ==
file offset (the engine's "region" layout).

The config.json carries what the engine's build step reads and would otherwise get wrong: a
top-level ``rope_theta`` (transformers 5 nests it, and the engine then silently uses 10000),
``rope_layout: split`` (its llama template defaults to the interleaved RoPE kernel, right for
llama.cpp-permuted GGUF weights and wrong for HF weights) and ``rotary_dim``.

The engine's v7 runtime has no bias operations and no RoPE scaling, reads every matrix
unpadded, and its gemma3 template has one window and one RoPE base for every layer: for a model
that needs what it lacks, or whose E, D or I bumpconv's layout pads, it would
compute a different model, so no sidecars are made for it (:func:`engine_refusal`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_output, write_all
from ..format.engine_policy import load_engine_policy
from ..format.engine_tokenizer import engine_template, engine_tokenizer_warnings
from ..format.metadata import engine_config
from ..format.engine_directory import (ENGINE_CONFIG, MANIFEST_FORMAT, MANIFEST_JSON, MANIFEST_MAP,
                               MAP_HEADER)
from ..format.profile import PlacedTensor
from ..format.spec import ALIGNED, ModelSpec
from .plan import Plan
from .tensor_source import TensorSource


#: The engine config keys of its manifest (its converter writes exactly these).
_CONFIG_KEYS = ("model", "num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim",
                "intermediate_size", "context_length", "rope_theta", "vocab_size", "rms_eps")


def engine_refusal(spec: ModelSpec) -> str | None:
    """Why the engine's runtime cannot run this model as transformers does, or None."""
    if spec.qkv_bias:
        return ("the engine's v7 runtime has no q/k/v bias operations (and its build step "
                "refuses manifest entries no operation reads)")
    if spec.rope.type != "default":
        return f"the engine's v7 runtime has no RoPE scaling (the model uses {spec.rope.type!r})"
    dims = spec.dims()
    padded = [f"{base} = {dims[base]}" for aligned, base in ALIGNED.items()
              if aligned != "AC" and dims[aligned] != dims[base]]
    if padded:  # measured: its runtime then computes garbage (top-1 0-0.5 %, tools/engine_check.py)
        return (f"the engine reads every matrix unpadded, and bumpconv's engine layout pads "
                f"rows to 64 bytes (not a multiple of 16: {', '.join(padded)})")
    return _gemma3_refusal(spec)


def _gemma3_refusal(spec: ModelSpec) -> str | None:
    """Where the engine's gemma3 template computes another model than transformers' Gemma 3
    (build_ir_v7/v8, codegen_v7 and its kernels at commit 991d0874): one sliding_window for
    every attn_sliding op, one rope_theta for every layer, attention scaled by 1/sqrt(head_dim)
    (hardcoded in its attention kernels), no logit soft-cap."""
    windows = {min(spec.window(i) or spec.context_length, spec.context_length)
               for i in range(spec.num_layers)}
    if len(windows) > 1:
        full = [i for i in range(spec.num_layers) if spec.window(i) is None]
        return (f"the engine's runtime applies one sliding_window to every layer, and this "
                f"model's full-attention layers ({', '.join(map(str, full))}) attend to every "
                f"position while the others slide over {spec.sliding_window}")
    thetas = {spec.rope_of(i) for i in range(spec.num_layers)}
    if len(thetas) > 1:
        return (f"the engine's runtime uses one rope_theta for every layer, and this model's "
                f"sliding layers use {spec.rope_local.theta:g} and its full layers "  # type: ignore[union-attr]
                f"{spec.rope.theta:g}")
    scalar = spec.query_pre_attn_scalar
    if scalar is not None and scalar != spec.head_dim:
        return (f"the engine's runtime scales attention by 1/sqrt(head_dim={spec.head_dim}), "
                f"and this model by 1/sqrt(query_pre_attn_scalar={scalar:g})")
    if spec.final_logit_softcapping is not None:
        return (f"the engine's runtime has no logit soft-cap, and this model caps its logits at "
                f"{spec.final_logit_softcapping:g}")
    return None


def sidecar_files(plan: Plan, blob_name: str, tokenizer_type: str = "bpe") -> dict[str, bytes]:
    """The three sidecar files for a plan whose blob is named ``blob_name``, by file name."""
    spec = plan.spec
    config = {k: v for k, v in engine_config(spec).model_dump().items() if k in _CONFIG_KEYS}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": plan.profile.version,
        "weights_path": blob_name,
        "config": config,
        "template": {"name": engine_template(spec.architecture)},
        "quant_summary": quant_summary(plan.tensors),
        "entries": [{"name": t.name, "dtype": t.dtype.label, "file_offset": t.offset,
                     "size": t.nbytes} for t in plan.tensors],
    }
    if plan.vocab is not None:
        manifest.update(num_merges=plan.vocab.num_merges,
                        total_vocab_bytes=plan.vocab.total_vocab_bytes,
                        tokenizer_contract={"tokenizer_type": tokenizer_type})
    lines = list(MAP_HEADER)
    lines += [f"{t.name}|{t.dtype.label}|0x{t.offset:016X}|0x{t.nbytes:016X}|0x{t.offset:016X}"
              for t in sorted(plan.tensors, key=lambda t: t.offset)]
    return {MANIFEST_JSON: _json(manifest), MANIFEST_MAP: ("\n".join(lines) + "\n").encode(),
            ENGINE_CONFIG: _json(build_config(spec))}


def build_config(spec: ModelSpec) -> dict[str, Any]:
    """The config.json the engine's build step merges into its manifest config."""
    out: dict[str, Any] = {
        "model_type": spec.architecture, "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.context_length, "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope.theta, "rotary_dim": spec.head_dim, "rope_layout": "split",
        "rope_scaling_type": "none", "vocab_size": spec.vocab_size,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }
    if spec.sliding_window:
        out["sliding_window"] = spec.sliding_window
    return out


def quant_summary(tensors: Sequence[PlacedTensor]) -> dict[str, Any]:
    """The dtypes the engine's build step picks kernels by (without this it silently takes fp32
    kernels): ``token_emb``, ``lm_head`` (the embedding's when tied) and each layer's matrices,
    the keys named by engine.policy.json."""
    policy = load_engine_policy()
    keys = policy.quant_summary
    by_role = {t.slot.role: t.dtype.label for t in tensors if t.slot.layer is None}
    summary: dict[str, Any] = {}
    for role in keys.header:  # a tied head is the embedding
        label = by_role.get(role, by_role.get(policy.embedding.role))
        if label is not None:
            summary[role] = label
    for t in tensors:
        if t.slot.layer is not None and t.slot.role in keys.layer:
            summary.setdefault(f"layer.{t.slot.layer}", {})[t.slot.role] = t.dtype.label
    return summary


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def write_sidecars(files: dict[str, bytes], directory: Path) -> list[Path]:
    """Write each sidecar into ``directory`` (a model directory being staged); returns their
    paths."""
    written = []
    for name, data in files.items():
        with atomic_output(directory / name, False, size=len(data)) as fd:
            write_all(fd, data)
        written.append(directory / name)
    return written


def engine_warnings(plan: Plan, source: TensorSource) -> list[str]:
    """What an engine user must know about a conversion for the engine's runtime: its tokenizer
    would give other ids than HF's (with what to set), or the blob carries no tokenizer."""
    if source.tokenizer is None:
        return [f"{source.root}: no tokenizer.json, so the blob carries no tokenizer; the "
                "engine's runtime and `bumpconv run` then need one from elsewhere"]
    return engine_tokenizer_warnings(source.tokenizer[1], engine_template(plan.spec.architecture),
                                     tokenizer_type="bpe")
