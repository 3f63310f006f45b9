"""The engine's traps, checked in any model directory: bumpconv's, or one the engine's own
converters wrote (whose blobs bumpconv's reader need not understand).

Everything is read from the directory's ``weights_manifest.json`` (and ``config.json``, which
the engine's build step merges into the manifest's config), plus the blob's size: the engine's
build step picks kernels from the manifest alone, so that is where its traps are. Each trap is
a rule of ``schemas/engine.policy.json`` and says what the engine does when it is broken - most
of them build with exit status 0 and then compute something else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files.jsonfile import load_json
from ..format.dtypes import DType
from ..format.engine_policy import EnginePolicy, load_engine_policy
from ..format.errors import BlobError, BumpError, LayoutError
from ..format.profile import evaluate
from ..format.engine_directory import BLOB_NAME, ENGINE_CONFIG, MANIFEST_JSON


@dataclass(frozen=True)
class Trap:
    """One broken rule: ``kind`` names the rule, ``detail`` the tensor or key and what the
    engine does with it."""

    kind: str
    detail: str


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    offset: int
    size: int
    role: str | None
    layer: int | None


def engine_traps(directory: Path, hf_order: bool | None = None) -> list[Trap] | None:
    """Every engine trap in the model directory ``directory``; None when it holds no
    ``weights_manifest.json`` (not an engine directory). ``hf_order``: whether the blob's Q/K
    rows are in HF order (bumpconv's blobs), which needs ``rope_layout: split``; None when not
    known (an engine-written blob)."""
    manifest_path = directory / MANIFEST_JSON
    if not manifest_path.is_file():
        return None
    policy = load_engine_policy()
    manifest = load_json(manifest_path, BlobError, MANIFEST_JSON)
    config_path = directory / ENGINE_CONFIG
    build_config = load_json(config_path, BlobError, ENGINE_CONFIG) if config_path.is_file() else {}
    config = _merged_config(manifest, build_config, policy)
    try:
        entries = _entries(manifest, policy)
    except ValueError as exc:
        return [Trap("manifest", f"{MANIFEST_JSON}: {exc}")]
    dims = {symbol: config[key] for symbol, key in policy.config_dims.items()
            if isinstance(config.get(key), int) and not isinstance(config.get(key), bool)}
    blob = directory / BLOB_NAME
    traps = _entry_traps(entries, dims, policy)
    traps += _head_traps(entries, config, policy)
    traps += _shared_input_traps(entries, policy)
    traps += _summary_traps(manifest, entries, policy)
    traps += _template_traps(manifest, entries, config, policy, hf_order)
    if blob.is_file():
        traps += _bounds_traps(entries, os.stat(blob).st_size)
    else:
        traps.append(Trap("blob", f"no {BLOB_NAME} beside {MANIFEST_JSON}: the engine's "
                                  "drivers run only a directory holding both"))
    return traps


def _merged_config(manifest: dict[str, Any], build_config: dict[str, Any],
                   policy: EnginePolicy) -> dict[str, Any]:
    """The manifest's config, with keys it lacks taken from config.json's HF names, as the
    engine's build step fills them."""
    config = dict(manifest["config"]) if isinstance(manifest.get("config"), dict) else {}
    for key, hf_key in policy.config_json_keys.items():
        if key not in config and hf_key in build_config:
            config[key] = build_config[hf_key]
    return config


def _entries(manifest: dict[str, Any], policy: EnginePolicy) -> list[_Entry]:
    raw = manifest.get("entries")
    if not isinstance(raw, list):
        raise ValueError("no 'entries' list")
    layer_name = re.compile(re.escape(policy.names.layer).replace(r"\{layer\}", r"(\d+)")
                            .replace(r"\{role\}", r"(\w+)") + "$")
    out = []
    for i, e in enumerate(raw):
        offset = e.get("file_offset", e.get("offset")) if isinstance(e, dict) else None
        if not (isinstance(e, dict) and isinstance(e.get("name"), str)
                and isinstance(e.get("dtype"), str) and isinstance(offset, int)
                and isinstance(e.get("size"), int)):
            raise ValueError(f"entry {i} is not {{name, dtype, file_offset, size}}")
        name, role, layer = e["name"], None, None
        m = layer_name.match(name)
        if m:
            layer, role = int(m[1]), m[2]
        elif name == policy.names.token_emb:
            role = policy.embedding.role
        elif name in policy.names.lm_head:
            role = "lm_head"
        out.append(_Entry(name, e["dtype"].lower(), offset, e["size"], role, layer))
    return out


def _entry_traps(entries: list[_Entry], dims: dict[str, int],
                 policy: EnginePolicy) -> list[Trap]:
    traps = []
    for e in entries:
        matrix = policy.matrices.get(e.role or "")
        if matrix is None:
            continue
        if e.dtype in policy.refused:
            traps.append(Trap("refused type", f"{e.name} is {e.dtype}: {policy.refused[e.dtype]}"))
            continue
        if e.dtype not in policy.activation:
            traps.append(Trap("no kernel", f"{e.name} is {e.dtype}: the engine has no kernel "
                                           f"for {e.dtype} matrices"))
            continue
        if e.role == policy.embedding.role and e.dtype not in policy.embedding.types:
            traps.append(Trap("embedding type", f"{e.name} is {e.dtype}: the engine's embedding "
                              f"lookup reads only {', '.join(policy.embedding.types)}; its build "
                              "step drops the embedding (exit 0) and every token is 0"))
        try:
            k, rows = evaluate(matrix.input, dims), evaluate(matrix.rows, dims)
        except LayoutError:
            traps.append(Trap("input dim", f"{e.name}: the config does not give its input "
                                           f"dimension {matrix.input}"))
            continue
        block = DType[e.dtype.upper()].block
        if k % block.elements:
            traps.append(Trap("input dim", f"{e.name} is {e.dtype} but its input dimension "
                              f"{matrix.input} = {k} is not whole {block.elements}-value blocks: "
                              "nothing is padded, so the engine's kernels abort or misread it"))
        elif (limit := policy.input_limit.get(e.dtype)) is not None and k > limit.max:
            traps.append(Trap("input limit", f"{e.name} is {e.dtype} with input dimension "
                              f"{matrix.input} = {k}: {limit.why}"))
        elif e.size != rows * k // block.elements * block.nbytes:
            traps.append(Trap("padding", f"{e.name}: {e.size} bytes, but [{rows}][{k}] "
                              f"{e.dtype} is {rows * k // block.elements * block.nbytes}: the "
                              "engine reads unpadded rows (and computes garbage)"))
    return traps


def _head_traps(entries: list[_Entry], config: dict[str, Any],
                policy: EnginePolicy) -> list[Trap]:
    names = {e.name for e in entries}
    traps = [Trap("head name", f"the untied head is named {name}: the engine's build step maps "
                               f"only {' or '.join(policy.names.lm_head)} and stops ('Weights "
                               "not mapped to any template op')")
             for name in policy.names.misnamed_lm_head if name in names]
    if config.get("tie_word_embeddings") is False and not traps \
            and not names & set(policy.names.lm_head):
        traps.append(Trap("head name", "tie_word_embeddings is false but no "
                                       f"{' or '.join(policy.names.lm_head)} entry: the build "
                                       "step stops ('Logits contract failed')"))
    return traps


def _shared_input_traps(entries: list[_Entry], policy: EnginePolicy) -> list[Trap]:
    traps = []
    for group in policy.shared_input:
        layers: dict[int | None, dict[str, str]] = {}
        for e in entries:
            if e.role in group and e.dtype in policy.activation:
                layers.setdefault(e.layer, {})[e.role] = e.dtype
        for layer, dtypes in sorted(layers.items(), key=lambda kv: kv[0] or 0):
            classes = {policy.activation[d] for d in dtypes.values()} - {"fp32"}
            if len(classes) > 1:
                mix = ", ".join(f"{role} {d}" for role, d in dtypes.items())
                traps.append(Trap("mixed activation", f"layer {layer}: {mix}: these share one "
                                  "quantized input, made in the format of the first; the others "
                                  "read it as their own (exit 0, wrong output)"))
    return traps


def _summary_traps(manifest: dict[str, Any], entries: list[_Entry],
                   policy: EnginePolicy) -> list[Trap]:
    summary = manifest.get("quant_summary")
    quantized = [e for e in entries if e.role in policy.matrices and e.dtype != "fp32"]
    if not isinstance(summary, dict) or not summary:
        if quantized:
            return [Trap("quant summary", f"no quant_summary while {quantized[0].name} is "
                                          f"{quantized[0].dtype}: the engine's build step picks "
                                          "kernels from it and takes fp32 ones without it")]
        return []
    traps = []
    for e in entries:
        if e.layer is not None and e.role in policy.quant_summary.layer:
            said = summary.get(f"layer.{e.layer}", {})
            said = said.get(e.role, "fp32") if isinstance(said, dict) else "fp32"
        elif e.role in policy.quant_summary.header and e.role in summary:
            said = summary[e.role]
        else:
            continue
        if str(said).lower() != e.dtype:
            traps.append(Trap("quant summary", f"quant_summary says {e.name} is {said}, the "
                                               f"entry is {e.dtype}: the build step picks the "
                                               "kernel by the summary"))
    return traps


def _template_traps(manifest: dict[str, Any], entries: list[_Entry], config: dict[str, Any],
                    policy: EnginePolicy, hf_order: bool | None) -> list[Trap]:
    template = manifest.get("template") if isinstance(manifest.get("template"), dict) else {}
    name = str(template.get("name") or config.get("model") or "").lower()
    traps = [Trap("template policy", f"the manifest's template carries {path}: the v8 build "
                                     "step refuses dtype policy in templates")
             for path in _policy_keys(template, policy)]
    names = {e.name for e in entries}
    if name not in policy.qk_norm_templates and any(n.endswith(("q_norm", "k_norm"))
                                                   for n in names):
        traps.append(Trap("qk norm", f"q_norm/k_norm entries for the {name or '?'} template, "
                                     "which has no q/k norm: its build step refuses them"))
    layout = config.get("rope_layout")
    if hf_order and layout != "split":
        traps.append(Trap("rope layout", f"rope_layout is {layout!r} but Q/K rows are in HF "
                                         "order: only 'split' gives the rotate-half kernel"))
    elif layout is None and name in policy.pairwise_templates:
        traps.append(Trap("rope layout", f"no rope_layout for the {name} template: the build "
                                         "step picks the pairwise kernel, right only for "
                                         "llama.cpp-permuted Q/K rows (HF rows need 'split')"))
    if "rope_theta" not in config:
        traps.append(Trap("rope theta", "no top-level rope_theta in the manifest's config or "
                                        f"{ENGINE_CONFIG}: the build step uses 10000"))
    contract = manifest.get("tokenizer_contract") or config.get("tokenizer_contract")
    flags = template.get("flags") if isinstance(template.get("flags"), dict) else {}
    spm = flags.get("tokenizer") == "sentencepiece" or (
        "tokenizer" not in flags and name in policy.sentencepiece_templates)
    if "vocab_merges" in names and spm and not (isinstance(contract, dict)
                                                and contract.get("tokenizer_type")):
        traps.append(Trap("tokenizer type", f"BPE merges but the {name} template's tokenizer is "
                                            "sentencepiece and no tokenizer_contract says bpe: "
                                            "the engine's tokenizer splits text into other ids"))
    return traps


def _policy_keys(node: Any, policy: EnginePolicy, path: tuple[str, ...] = ()) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, str(key))
            if key in policy.template_policy_keys or (
                    len(here) == 2 and here[0] == "flags" and key in policy.template_policy_flags):
                found.append(".".join(here))
            found += _policy_keys(value, policy, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _policy_keys(item, policy, (*path, f"[{i}]"))
    return found


def _bounds_traps(entries: list[_Entry], size: int) -> list[Trap]:
    ordered = sorted(entries, key=lambda e: e.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.size > b.offset:
            return [Trap("bounds", f"{a.name} and {b.name} overlap: the engine copies both")]
    bad = next((e for e in ordered if e.offset < 0 or e.offset + e.size > size), None)
    if bad is not None:
        return [Trap("bounds", f"{bad.name} ends at {bad.offset + bad.size}, past the blob's "
                               f"{size} bytes: the engine's loader has no bounds check")]
    return []


def check_engine_directory(directory: Path, hf_order: bool | None = None) -> list[Trap] | None:
    """:func:`engine_traps`, with an unreadable sidecar reported as a trap instead of raised."""
    try:
        return engine_traps(directory, hf_order)
    except BumpError as exc:
        return [Trap("manifest", str(exc))]
