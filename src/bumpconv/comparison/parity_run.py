"""Parity: is a blob the same model as its source, and if not, where does it first diverge?

The checks run from coarse to fine, so a failure is located without guessing:

1. token ids: the ids the runtime side's tokenizer (tokenizer.json via ``tokenizers``) produces
   must equal transformers' (a tokenizer mismatch masquerades as a weight bug otherwise);
2. logits of the full model at every position of every prompt (max abs difference, NMSE, KL,
   top-1 agreement) - the only check that decides "same model" on its own;
3. a layer sweep: the hidden state after every layer against HF;
4. a stage sweep: every runtime tap of every layer against HF's. The first failure in forward
   order over 3 and 4 (a stage inside a layer before the layer's output) names the layer and
   stage; when every layer and stage matches but the logits do not, the final norm and the
   logits themselves are diffed instead;
5. optionally a context sweep (context 1..N through both the prefill and the decode path).

What "relative error" means for a hidden state and for each stage, and why, is
:mod:`.metrics`' docstring; thresholds and their reasons are in :class:`.metrics.Thresholds`
and docs/parity.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..blob.reader import BumpFile, open_blob
from ..files.atomic import atomic_output
from ..format.dtypes import DType
from ..format.errors import ParityError
from ..format.spec import ModelSpec
from ..format.stages import tap_shapes
from ..run.carried_tokenizer import blob_tokenizer
from ..run.runtime import BumpModel
from .dequantized import load_blob_weights
from .metrics import (ContextSweep, LayerSweep, LogitsCheck, StageDiff, Thresholds,
                      compare_logits, first_divergent_layer, layer_sweep, output_diff, stage_diff)
from ..conversion.plan import KEEP
from .reference import Reference, source_root, source_spec, tokenize_prompts
from .reference_data import PromptTokens
from .parity_report import ParityReport

#: Spec fields that must agree before any forward pass: they fix every tensor's shape.
_DIMENSIONS = ("num_layers", "vocab_size", "hidden_size", "intermediate_size", "num_heads",
               "num_kv_heads", "head_dim")
#: Spec fields that may differ (that is what parity then shows the consequences of).
_SETTINGS = ("architecture", "rms_norm_eps", "rope", "tie_word_embeddings", "qkv_bias", "qk_norm",
             "sliding_window")


def context_sweep(model: BumpModel, prompt: PromptTokens, ref_logits: np.ndarray, limit: int,
                  thresholds: Thresholds) -> ContextSweep:
    """For each context length c in 1..limit, compare HF's logits at position c-1 (causal, so
    equal to HF run on the prefix alone) with a fresh prefill of the first c tokens, and with
    step c of one prefill-then-decode pass (the KV-cache path)."""
    ids = list(prompt.ids)
    prefilled = [model.prefill(ids[:c]) for c in range(1, limit + 1)]
    decoded = [model.prefill(ids[:1])] + [model.decode(ids[c - 1]) for c in range(2, limit + 1)]
    ref = ref_logits[:limit]
    return ContextSweep(compare_logits(prompt, np.stack(prefilled), ref, thresholds),
                        compare_logits(prompt, np.stack(decoded), ref, thresholds))


@dataclass(frozen=True)
class ParityOptions:
    """What to check. ``context_sweep``: None = no sweep, 0 = the whole sweep prompt."""

    prompts: tuple[str, ...] | None = None
    layer: int | None = None
    context_sweep: int | None = None
    thresholds: Thresholds = Thresholds()
    threads: int | None = 2
    rope_pairing: str | None = None


def compare_specs(src: ModelSpec, blob: ModelSpec, src_name: str, blob_name: str) -> list[str]:
    """Refuse a blob whose dimensions differ from the source's (before any forward pass);
    return notes for settings that differ, whose consequences the comparison then shows."""
    dims = [f"{k} {getattr(blob, k)} vs {getattr(src, k)}" for k in _DIMENSIONS
            if getattr(blob, k) != getattr(src, k)]
    if dims:
        raise ParityError(f"{blob_name} is not the same model as {src_name}: "
                          + ", ".join(dims) + " (blob vs source)")
    return [f"blob {k}={_setting(getattr(blob, k))} but source {k}={_setting(getattr(src, k))}"
            for k in _SETTINGS if getattr(blob, k) != getattr(src, k)]


def _setting(value: Any) -> str:
    if hasattr(value, "model_dump"):  # RopeSpec
        return json.dumps(value.model_dump(exclude_none=True))
    return str(value)


#: The HF taps one reference pass may hold (the stage sweep records as many layers per pass as
#: fit): attention maps grow with the square of the prompt, so a long --prompt takes one pass per
#: layer or few, while the default prompts take one pass for all of SmolLM2's 30 layers (~130 MB).
STAGE_PASS_BYTES = 256 << 20


def stage_sweep(reference: Reference, model: BumpModel, ids: list[int], hidden: np.ndarray,
                sweep: LayerSweep, rtol: float, keep: int | None = None) -> list[StageDiff]:
    """Every stage of every layer on ``ids`` against HF (``hidden``: HF's residual stream on
    them), in forward order up to the first layer that differs (a stage beyond tolerance, or
    its output in ``sweep``): what comes after a divergence is not separately meaningful, and
    each layer costs a runtime pass. Layer ``keep`` (``--layer``) is diffed in any case and is
    the only one whose tensors are kept (for ``--dump``). HF records the taps of as many layers
    per forward pass as fit in :data:`STAGE_PASS_BYTES`; the runtime taps one layer per pass."""
    spec = reference.spec
    per_layer = 4 * sum(np.prod(shape) for shape in
                        tap_shapes(spec.dims(), spec.flags(), len(ids)).values())
    chunk = max(1, int(STAGE_PASS_BYTES // max(per_layer, 1)))
    diffs: list[StageDiff] = []
    pending = list(range(spec.num_layers))
    first: int | None = None
    while pending:
        layers, pending = pending[:chunk], pending[chunk:]
        ref = reference.run(ids, layers)
        for layer in layers:
            if first is not None and layer != keep:
                continue
            diff = stage_diff(layer, model.taps(ids, layer), ref.stages.pop(layer), rtol, hidden)
            diffs.append(diff if layer == keep else StageDiff(diff.layer, diff.rows, {}, {}))
            if first is None and (diff.first_bad is not None or not sweep.rows[layer + 1].ok):
                first = layer
        if first is not None:
            pending = [layer for layer in pending if layer == keep]
    return diffs


def check_parity(reference: Reference, model: BumpModel, prompts: list[PromptTokens],
                 options: ParityOptions, src: str, blob: str, notes: list[str]) -> ParityReport:
    """Run every check of the module docstring with an opened reference and runtime."""
    th = options.thresholds
    sweep_index = max(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    ids = list(prompts[sweep_index].ids)
    logits: list[LogitsCheck] = []
    for i, prompt in enumerate(prompts):
        ref = reference.run(prompt.ids)
        model.reset()
        run = np.asarray(model.forward(list(prompt.ids), start_pos=0, all_logits=True))
        logits.append(compare_logits(prompt, run, ref.logits, th))
        if i == sweep_index:
            sweep_ref = ref
    sweep = layer_sweep(np.asarray(model.hidden_states(ids)), sweep_ref.hidden_states, th.rtol)
    every = stage_sweep(reference, model, ids, sweep_ref.hidden_states, sweep, th.stage_rtol,
                        options.layer)
    by_layer = {d.layer: d for d in every}
    shown = [by_layer[options.layer]] if options.layer is not None else []
    first = first_divergent_layer(sweep, every)
    if first is not None and first != options.layer:
        shown.append(by_layer[first])  # the first layer that differs: its whole table
    if first is None and not all(c.passed for c in logits):  # every layer and stage matches
        shown.append(output_diff(model.taps(ids, len(sweep.rows) - 2), sweep_ref,
                                 th.stage_rtol))
    context = None
    if options.context_sweep is not None:
        context = context_sweep(model, prompts[sweep_index], sweep_ref.logits,
                                options.context_sweep or len(ids), th)
    if any(p.synthetic for p in prompts):
        notes = [*notes, f"the source has no tokenizer: prompts are fixed synthetic ids "
                         f"(lengths {', '.join(str(len(p.ids)) for p in prompts)})"]
    return ParityReport(src, blob, th, notes, prompts, logits, sweep_index, sweep, shown, context,
                        every)


def blob_spec(blob: Path, root: Path) -> tuple[ModelSpec, Path | None]:
    """The blob's own spec; for a blob that does not record one (BUMPWGT3/4), the source's
    config.json supplies the runtime settings (and is passed on to the runtime)."""
    with open_blob(blob) as bf:
        if bf.spec is not None:
            return bf.spec, None
    config = _settings_config(blob, root)
    with open_blob(blob, config=config) as bf:
        assert bf.spec is not None  # the reader builds a spec whenever it has a config
        return bf.spec, config


def _settings_config(blob: Path, root: Path) -> Path:
    """The config.json that supplies the settings of a blob recording none (BUMPWGT3/4)."""
    if not root.is_dir():
        raise ParityError(f"{blob}: records no runtime settings (eps, rope), and the GGUF source "
                          f"{root.name} has no config.json to supply them; convert it with "
                          "--profile engine-v7 or bumpwgt5")
    return root / "config.json"


def open_runtime(bf: BumpFile, threads: int | None, rope_pairing: str | None = None
                 ) -> BumpModel:
    """The runtime on the already opened blob; ``rope_pairing="interleaved"`` is its fault
    injection."""
    fault = {"rope_pairing": rope_pairing} if rope_pairing else {}
    return BumpModel.from_blob(bf, threads=threads, **fault)


def _reference_for(bf: BumpFile, root: Path, threads: int | None
                   ) -> tuple[Reference, list[str]]:
    """transformers' model from ``root``; for a blob with quantized weights, that model carrying
    the blob's dequantized weights, so that parity measures the runtime (which must then meet the
    fp32 thresholds) and not the quantization (that is ``bumpconv eval``'s job)."""
    quantized = sorted({t.dtype.label for t in bf.tensors
                        if t.slot.content == "weights" and t.dtype != DType.FP32})
    section = bf.metadata.bumpconv.quantization if bf.metadata is not None else None
    reference = Reference.load(str(root), threads)
    if not quantized or (section is not None and section.policy == KEEP):
        # kept GGUF blocks: transformers' GGUF model already holds exactly their values
        return reference, []
    load_blob_weights(reference.model, bf)
    return reference, [f"the blob's weights are {', '.join(quantized)}: the reference is "
                       "transformers' model carrying the blob's dequantized weights"]


def run_parity(src: str, blob: Path, options: ParityOptions,
               reference: Reference | None = None) -> ParityReport:
    """Check ``blob`` against ``src`` end to end. Everything that can be refused - missing
    files, different dimensions, a bad layer or context, prompts that do not tokenize - is
    refused before the model is loaded. ``reference`` reuses an already loaded source."""
    root = source_root(src)
    src_spec = source_spec(root)
    # the blob's own settings when it records them; else (BUMPWGT3/4) the source's config.json
    # supplies them, which needs a second parse of the header for those files only
    with open_blob(blob) as bf:
        if bf.spec is not None:
            return _run(bf, src, root, src_spec, options, reference)
    with open_blob(blob, config=_settings_config(blob, root)) as bf:
        return _run(bf, src, root, src_spec, options, reference)


def _run(bf: BumpFile, src: str, root: Path, src_spec: ModelSpec, options: ParityOptions,
         reference: Reference | None) -> ParityReport:
    assert bf.spec is not None
    blob = bf.path
    notes = compare_specs(src_spec, bf.spec, src, str(blob))
    if options.layer is not None and not 0 <= options.layer < src_spec.num_layers:
        raise ParityError(f"--layer {options.layer} is out of range: the model has layers "
                          f"0..{src_spec.num_layers - 1}")
    carried = blob_tokenizer(bf)
    prompts = tokenize_prompts(root, options.prompts, src_spec.vocab_size,
                               carried[0] if carried is not None else None)
    longest = max(len(p.ids) for p in prompts)
    if options.context_sweep is not None and not 0 <= options.context_sweep <= longest:
        raise ParityError(f"--context-sweep {options.context_sweep}: must be 1..{longest} "
                          "(the longest prompt's token count)")
    if reference is None:
        reference, note = _reference_for(bf, root, options.threads)
        notes = [*notes, *note]
    with open_runtime(bf, options.threads, options.rope_pairing) as model:
        return check_parity(reference, model, prompts, options, src, str(blob), notes)


def write_dump(path: Path, report: ParityReport, layer: int, force: bool = False) -> None:
    """Save both sides' stage tensors of ``layer`` (``hf.<stage>``, ``bump.<stage>``) and the
    token ids to an .npz, atomically (an existing file is replaced only with ``force``)."""
    diff = report.stages_of(layer)
    if diff is None:
        raise ParityError(f"--dump: layer {layer} was not diffed (pass --layer {layer})")
    arrays = {"tokens": np.asarray(report.prompts[report.sweep_prompt].ids, dtype=np.int64),
              "layer": np.asarray(layer)}
    arrays.update({f"hf.{k}": v for k, v in diff.ref.items()})
    arrays.update({f"bump.{k}": v for k, v in diff.run.items()})
    with atomic_output(path, force=force) as fd:
        with os.fdopen(os.dup(fd), "wb") as f:
            np.savez(f, **arrays)
