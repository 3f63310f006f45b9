"""Parity: is a blob the same model as its source, and if not, where does it first diverge?

The checks run from coarse to fine, so a failure is located without guessing:

1. token ids: the ids the runtime side's tokenizer (tokenizer.json via ``tokenizers``) produces
   must equal transformers' (a tokenizer mismatch masquerades as a weight bug otherwise);
2. logits of the full model at every position of every prompt (max abs difference, NMSE, KL,
   top-1 agreement) - the only check that decides "same model" on its own;
3. a layer sweep: the hidden state after every layer against HF, naming the first layer beyond
   tolerance;
4. a stage diff of one layer (``--layer N``, or automatically the first failing layer): every
   runtime tap against the HF value, naming the first stage that jumps; when every layer
   matches but the logits do not, the final norm and the logits themselves are diffed instead;
5. optionally a context sweep (context 1..N through both the prefill and the decode path).

Relative error, used for hidden states and stages, is ``max|run - ref| / max|ref|`` over the
whole tensor (fp64 arithmetic; ``ref`` is HF). Entries that are ``-inf`` on both sides (masked
attention scores) are equal; a ``-inf`` on one side only is an infinite error. The position of
a failure is the first position ``p`` whose own ``max|run[p] - ref[p]| / max|ref|`` exceeds the
tolerance. Thresholds and their reasons are in :class:`Thresholds` and docs/parity.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParityError
from .reader import open_blob
from .reference import PromptTokens, Reference, ReferenceRun, tokenize_prompts
from .runtime import BumpModel
from .source import resolve_source_dir
from .spec import ModelSpec, load_spec
from .writer import atomic_output


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria for an fp32 blob (docs/parity.md gives the measured margins).

    ``logit_atol``: max |logit difference| at every position. ``nmse``: per position,
    mean((run - ref)^2) / var(ref) over the vocabulary. ``kl``: per position, KL(ref || run) in
    nats. ``rtol``: relative error of every hidden state and stage (``--tol``). Top-1 must agree
    at every position, except that the runtime may pick a token whose reference logit is within
    ``logit_atol`` of the reference maximum (a tie at fp32 resolution).
    """

    logit_atol: float = 1e-3
    nmse: float = 1e-6
    kl: float = 1e-6
    rtol: float = 1e-5


#: Stage taps in forward order, as ``(stage, tap key)``: the stage is what a failure is
#: attributed to (``rope`` covers both rotated tensors).
STAGES: tuple[tuple[str, str], ...] = (
    ("ln1", "ln1"), ("q", "q"), ("k", "k"), ("v", "v"), ("q_norm", "q_norm"),
    ("k_norm", "k_norm"), ("rope", "q_rope"), ("rope", "k_rope"), ("scores", "scores"),
    ("probs", "probs"), ("attn", "attn"), ("wo", "wo"), ("resid1", "resid1"), ("ln2", "ln2"),
    ("gate", "gate"), ("up", "up"), ("swiglu", "swiglu"), ("down", "down"), ("out", "out"))
#: Taps whose query position is not the first axis ([H, n, n]).
_POSITION_AXIS = {"scores": 1, "probs": 1}

#: Spec fields that must agree before any forward pass: they fix every tensor's shape.
_DIMENSIONS = ("num_layers", "vocab_size", "hidden_size", "intermediate_size", "num_heads",
               "num_kv_heads", "head_dim")
#: Spec fields that may differ (that is what parity then shows the consequences of).
_SETTINGS = ("architecture", "rms_norm_eps", "rope", "tie_word_embeddings", "qkv_bias", "qk_norm",
             "sliding_window")


# -- metrics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """``run`` against ``ref``: overall and per-position error, relative to ``max|ref|``."""

    max_abs: float
    ref_max: float
    per_position: np.ndarray  # max |run[p] - ref[p]| for each position p

    @property
    def rel(self) -> float:
        return _ratio(self.max_abs, self.ref_max)

    def first_position_over(self, rtol: float) -> int | None:
        bad = np.flatnonzero(self.per_position > rtol * self.ref_max)
        return int(bad[0]) if len(bad) else None


def _ratio(num: float, den: float) -> float:
    if num == 0:
        return 0.0
    return num / den if den > 0 else float("inf")


def difference(run: np.ndarray, ref: np.ndarray, position_axis: int = 0) -> Difference:
    """Compare two same-shaped arrays (see the module docstring for the definition)."""
    a, b = run.astype(np.float64), ref.astype(np.float64)
    both_finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_finite, np.abs(a - b), 0.0)
        diff[~both_finite & ~(a == b)] = np.inf  # -inf vs -inf is equal; NaN never is
    finite_ref = np.abs(b[np.isfinite(b)])
    axes = tuple(i for i in range(diff.ndim) if i != position_axis)
    return Difference(float(diff.max(initial=0.0)), float(finite_ref.max(initial=0.0)),
                      diff.max(axis=axes, initial=0.0))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class LogitsCheck:
    """Full-model logits of one prompt, per position."""

    prompt: PromptTokens
    max_abs: np.ndarray   # [n]
    nmse: np.ndarray      # [n]
    kl: np.ndarray        # [n]
    top1_ref: np.ndarray  # [n]
    top1_run: np.ndarray  # [n]
    top1_ok: np.ndarray   # [n] agreement, ties at fp32 resolution allowed
    thresholds: Thresholds

    @property
    def bad_positions(self) -> np.ndarray:
        t = self.thresholds
        bad = (~(self.max_abs <= t.logit_atol) | ~(self.nmse <= t.nmse) | ~(self.kl <= t.kl)
               | ~self.top1_ok)
        return np.flatnonzero(bad)

    @property
    def passed(self) -> bool:
        return len(self.bad_positions) == 0

    @property
    def top1_identical(self) -> int:
        return int((self.top1_ref == self.top1_run).sum())


def compare_logits(prompt: PromptTokens, run: np.ndarray, ref: np.ndarray,
                   thresholds: Thresholds) -> LogitsCheck:
    """Per-position max |difference|, NMSE, KL(ref || run) and top-1 for ``[n, V]`` logits."""
    if run.shape != ref.shape:
        raise ParityError(f"runtime logits have shape {list(run.shape)}, HF {list(ref.shape)}")
    a, b = run.astype(np.float64), ref.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - b)
        diff[~np.isfinite(diff)] = np.inf
        mse = ((a - b) ** 2).mean(axis=-1)
        nmse = np.where(mse == 0, 0.0, mse / b.var(axis=-1))  # 0/0 (constant, equal rows) is 0
        log_ref, log_run = _log_softmax(b), _log_softmax(a)
        kl = (np.exp(log_ref) * (log_ref - log_run)).sum(axis=-1)
    nmse[~np.isfinite(nmse)] = np.inf
    kl[~np.isfinite(kl)] = np.inf
    top_ref, top_run = b.argmax(axis=-1), a.argmax(axis=-1)
    rows = np.arange(len(b))
    tie = b[rows, top_run] >= b[rows, top_ref] - thresholds.logit_atol
    return LogitsCheck(prompt, diff.max(axis=-1), nmse, kl, top_ref, top_run,
                       (top_ref == top_run) | (tie & np.isfinite(a).all(axis=-1)), thresholds)


@dataclass(frozen=True)
class Row:
    """One compared tensor of a sweep or stage diff."""

    stage: str
    key: str
    shape: tuple[int, ...]
    diff: Difference | None   # None when the runtime side lacks the tensor or its shape differs
    problem: str | None
    rtol: float

    @property
    def rel(self) -> float:
        return float("inf") if self.diff is None else self.diff.rel

    @property
    def ok(self) -> bool:
        return self.rel <= self.rtol

    @property
    def first_position(self) -> int | None:
        return None if self.diff is None else self.diff.first_position_over(self.rtol)


def compare_tensor(stage: str, key: str, run: np.ndarray | None, ref: np.ndarray, rtol: float,
                   position_axis: int = 0) -> Row:
    """A :class:`Row` for one tensor; a missing or mis-shaped runtime tensor fails."""
    shape = tuple(ref.shape)
    if run is None:
        return Row(stage, key, shape, None, "missing from the runtime's taps", rtol)
    if tuple(run.shape) != shape:
        return Row(stage, key, shape, None, f"runtime shape {list(run.shape)}", rtol)
    return Row(stage, key, shape, difference(run, ref, position_axis), None, rtol)


@dataclass
class LayerSweep:
    """Hidden state after every layer; entry 0 is the embedding output."""

    rows: list[Row]

    @property
    def first_bad(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)


def layer_sweep(run: np.ndarray, ref: np.ndarray, rtol: float) -> LayerSweep:
    """Compare ``[L + 1, n, E]`` hidden states; row keys are ``embed`` and ``layer.<i>``."""
    if run.shape != ref.shape:
        raise ParityError(f"runtime hidden states have shape {list(run.shape)}, "
                          f"HF {list(ref.shape)}")
    return LayerSweep([compare_tensor("embed" if i == 0 else "out",
                                      "embed" if i == 0 else f"layer.{i - 1}", run[i], ref[i], rtol)
                       for i in range(len(ref))])


@dataclass
class StageDiff:
    """Every stage of one layer (``layer`` None: the output head, final norm and logits)."""

    layer: int | None
    rows: list[Row]
    run: dict[str, np.ndarray] = field(repr=False)
    ref: dict[str, np.ndarray] = field(repr=False)

    @property
    def first_bad(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)


def stage_diff(layer: int, run: dict[str, np.ndarray], ref: dict[str, np.ndarray],
               rtol: float) -> StageDiff:
    """Diff every stage HF has for this layer (``q_norm``/``k_norm`` only for Qwen3)."""
    rows = [compare_tensor(stage, key, run.get(key), ref[key], rtol, _POSITION_AXIS.get(key, 0))
            for stage, key in STAGES if key in ref]
    return StageDiff(layer, rows, {k: v for k, v in run.items() if k in ref}, ref)


def output_diff(run: dict[str, np.ndarray], ref: ReferenceRun, rtol: float) -> StageDiff:
    """Final norm and logits, for when every layer matches but the logits do not."""
    ref_out = {"final_norm": ref.final_norm, "logits": ref.logits}
    rows = [compare_tensor(key, key, run.get(key), value, rtol) for key, value in ref_out.items()]
    return StageDiff(None, rows, {k: run[k] for k in ref_out if k in run}, ref_out)


@dataclass
class ContextSweep:
    """Context 1..N: the last position's logits through prefill, and through decode steps.

    Position ``c - 1`` of each check is context length ``c``; the criteria are the logits'.
    """

    prefill: LogitsCheck
    decode: LogitsCheck

    def _first(self, bad: np.ndarray) -> int | None:
        return int(bad[0]) + 1 if len(bad) else None

    @property
    def first_top1_change(self) -> int | None:
        return self._first(np.flatnonzero(~(self.prefill.top1_ok & self.decode.top1_ok)))

    @property
    def first_failure(self) -> int | None:
        return self._first(np.union1d(self.prefill.bad_positions, self.decode.bad_positions))

    @property
    def passed(self) -> bool:
        return self.first_failure is None


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


# -- the report ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Divergence:
    """Where the blob first departs from its source."""

    position: int | None
    layer: int | None
    stage: str
    detail: str


@dataclass
class ParityReport:
    """Everything one parity run measured; :attr:`passed` is the exit status."""

    src: str
    blob: str
    thresholds: Thresholds
    notes: list[str]
    prompts: list[PromptTokens]
    logits: list[LogitsCheck]
    sweep_prompt: int
    sweep: LayerSweep
    stages: list[StageDiff]
    context: ContextSweep | None

    def stages_of(self, layer: int | None) -> StageDiff | None:
        """The stage diff of ``layer`` (None: the output head), if one was run."""
        return next((d for d in self.stages if d.layer == layer), None)

    @property
    def passed(self) -> bool:
        return self.divergence is None

    @property
    def divergence(self) -> Divergence | None:
        """The first failing check in forward order: tokens, layers (with the stage diff of the
        failing layer), output head, logits, a requested layer's stages, then the context sweep."""
        for i, p in enumerate(self.prompts):
            if p.first_mismatch is not None:
                return Divergence(p.first_mismatch, None, "tokens",
                                  f"prompt {i}: tokenizer.json and transformers' AutoTokenizer "
                                  f"give different ids from position {p.first_mismatch}")
        bad_layer = self.sweep.first_bad
        if bad_layer is not None:
            return self._layer_divergence(bad_layer)
        bad_logits = next((c for c in self.logits if not c.passed), None)
        if bad_logits is not None:
            head = self.stages_of(None)
            stage = head.first_bad if head is not None else None
            p = int(bad_logits.bad_positions[0])
            if stage is not None:
                return Divergence(p, None, stage.stage,
                                  "every layer matches; " + _row_detail(stage))
            return Divergence(p, None, "logits", _logits_detail(bad_logits, p))
        for diff in self.stages:
            if diff.first_bad is not None:
                row = diff.first_bad
                return Divergence(row.first_position, diff.layer, row.stage, _row_detail(row))
        if self.context is not None and not self.context.passed:
            c = self.context.first_failure
            return Divergence(c - 1, None, "context",
                              f"context {c}: prefill or decode logits differ from HF's")
        return None

    def _layer_divergence(self, row: Row) -> Divergence:
        if row.key == "embed":
            return Divergence(row.first_position, None, "embed", _row_detail(row))
        layer = self.sweep.rows.index(row) - 1
        diff = self.stages_of(layer)
        stage = diff.first_bad if diff is not None else None
        if stage is None:
            return Divergence(row.first_position, layer, "out", _row_detail(row))
        return Divergence(stage.first_position, layer, stage.stage, _row_detail(stage))

    @property
    def verdict(self) -> str:
        d = self.divergence
        if d is None:
            worst = max(float(c.max_abs.max()) for c in self.logits)
            positions = sum(len(c.max_abs) for c in self.logits)
            return (f"PASS: logits match at all {positions} positions of {len(self.logits)} "
                    f"prompt(s) (max |diff| {worst:.2e}); all {len(self.sweep.rows) - 1} layers "
                    f"within rtol {self.thresholds.rtol:g}")
        where = [f"position {d.position}" if d.position is not None else None,
                 f"layer {d.layer}" if d.layer is not None else None, f"stage {d.stage}"]
        return f"FAIL at {', '.join(w for w in where if w)}: {d.detail}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (non-finite numbers become the strings "inf" / "nan")."""
        d = self.divergence
        return _finite({
            "src": self.src, "blob": self.blob, "passed": self.passed, "verdict": self.verdict,
            "divergence": None if d is None else d.__dict__,
            "thresholds": self.thresholds.__dict__, "notes": self.notes,
            "tokens": [{"prompt": p.text, "synthetic": p.synthetic, "n": len(p.ids),
                        "ids_match": p.first_mismatch is None, "first_mismatch": p.first_mismatch}
                       for p in self.prompts],
            "logits": [_logits_json(i, c) for i, c in enumerate(self.logits)],
            "layers": {"prompt_index": self.sweep_prompt,
                       "rows": [_row_json(r) for r in self.sweep.rows],
                       "first_bad": self.sweep.first_bad.key if self.sweep.first_bad else None},
            "stages": [{"layer": diff.layer, "rows": [_row_json(r) for r in diff.rows],
                        "first_bad": diff.first_bad.stage if diff.first_bad else None}
                       for diff in self.stages],
            "context": None if self.context is None else {
                "first_top1_change": self.context.first_top1_change,
                "first_failure": self.context.first_failure,
                "prefill": _logits_json(self.sweep_prompt, self.context.prefill),
                "decode": _logits_json(self.sweep_prompt, self.context.decode)},
        })


def _row_detail(row: Row) -> str:
    if row.diff is None:
        return f"{row.key}: {row.problem}"
    return f"{row.key} relative error {row.rel:.2e} > {row.rtol:g}"


def _logits_detail(c: LogitsCheck, p: int) -> str:
    return (f"logits max |diff| {c.max_abs[p]:.2e}, NMSE {c.nmse[p]:.2e}, KL {c.kl[p]:.2e}, "
            f"top-1 {c.top1_run[p]} vs HF {c.top1_ref[p]}")


def _row_json(r: Row) -> dict[str, Any]:
    return {"stage": r.stage, "key": r.key, "shape": list(r.shape), "rel": r.rel,
            "max_abs": None if r.diff is None else r.diff.max_abs,
            "ref_max": None if r.diff is None else r.diff.ref_max,
            "first_position": r.first_position, "ok": r.ok, "problem": r.problem}


def _logits_json(i: int, c: LogitsCheck) -> dict[str, Any]:
    bad = c.bad_positions
    return {"prompt_index": i, "n": len(c.max_abs), "passed": c.passed,
            "max_abs": float(c.max_abs.max()), "max_nmse": float(c.nmse.max()),
            "max_kl": float(c.kl.max()), "top1_identical": c.top1_identical,
            "top1_ok": int(c.top1_ok.sum()),
            "first_bad_position": int(bad[0]) if len(bad) else None,
            "per_position": {"max_abs": c.max_abs.tolist(), "nmse": c.nmse.tolist(),
                             "kl": c.kl.tolist(), "top1_ref": c.top1_ref.tolist(),
                             "top1_run": c.top1_run.tolist()}}


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# -- running it ---------------------------------------------------------------------------

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


def check_parity(reference: Reference, model: BumpModel, prompts: list[PromptTokens],
                 options: ParityOptions, src: str, blob: str, notes: list[str]) -> ParityReport:
    """Run every check of the module docstring with an opened reference and runtime."""
    th = options.thresholds
    sweep_index = max(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    ids = list(prompts[sweep_index].ids)
    requested = [] if options.layer is None else [options.layer]
    logits: list[LogitsCheck] = []
    for i, prompt in enumerate(prompts):
        ref = reference.run(prompt.ids, requested if i == sweep_index else ())
        model.reset()
        run = np.asarray(model.forward(list(prompt.ids), start_pos=0, all_logits=True))
        logits.append(compare_logits(prompt, run, ref.logits, th))
        if i == sweep_index:
            sweep_ref = ref
    sweep = layer_sweep(np.asarray(model.hidden_states(ids)), sweep_ref.hidden_states, th.rtol)
    stages = []
    if options.layer is not None:
        stages.append(stage_diff(options.layer, model.taps(ids, options.layer),
                                 sweep_ref.stages[options.layer], th.rtol))
    bad = sweep.first_bad
    if bad is not None and bad.key != "embed":  # drill into the first failing layer
        layer = sweep.rows.index(bad) - 1
        if layer != options.layer:
            stages.append(stage_diff(layer, model.taps(ids, layer),
                                     reference.run(ids, [layer]).stages[layer], th.rtol))
    elif bad is None and not all(c.passed for c in logits):  # every layer matches
        stages.append(output_diff(model.taps(ids, len(sweep.rows) - 2), sweep_ref, th.rtol))
    context = None
    if options.context_sweep is not None:
        context = context_sweep(model, prompts[sweep_index], sweep_ref.logits,
                                options.context_sweep or len(ids), th)
    if any(p.synthetic for p in prompts):
        notes = [*notes, f"the source has no tokenizer: prompts are fixed synthetic ids "
                         f"(lengths {', '.join(str(len(p.ids)) for p in prompts)})"]
    return ParityReport(src, blob, th, notes, prompts, logits, sweep_index, sweep, stages, context)


def _blob_spec(blob: Path, root: Path) -> tuple[ModelSpec, Path | None]:
    """The blob's own spec; for a blob that does not record one (BUMPWGT3/4), the source's
    config.json supplies the runtime settings (and is passed on to the runtime)."""
    with open_blob(blob) as bf:
        if bf.spec is not None:
            return bf.spec, None
    config = root / "config.json"
    with open_blob(blob, config=config) as bf:
        assert bf.spec is not None  # the reader builds a spec whenever it has a config
        return bf.spec, config


def open_runtime(blob: Path, config: Path | None, threads: int | None,
                 rope_pairing: str | None = None) -> BumpModel:
    """``BumpModel.open``; ``rope_pairing="interleaved"`` is the runtime's fault injection."""
    fault = {"rope_pairing": rope_pairing} if rope_pairing else {}
    return BumpModel.open(blob, config=config, verify=False, threads=threads, **fault)


def run_parity(src: str, blob: Path, options: ParityOptions,
               reference: Reference | None = None) -> ParityReport:
    """Check ``blob`` against ``src`` end to end. Everything that can be refused - missing
    files, different dimensions, a bad layer or context, prompts that do not tokenize - is
    refused before the model is loaded. ``reference`` reuses an already loaded source."""
    root, _, _ = resolve_source_dir(src)
    src_spec = load_spec(root / "config.json")
    blob_spec, config = _blob_spec(blob, root)
    notes = compare_specs(src_spec, blob_spec, src, str(blob))
    if options.layer is not None and not 0 <= options.layer < src_spec.num_layers:
        raise ParityError(f"--layer {options.layer} is out of range: the model has layers "
                          f"0..{src_spec.num_layers - 1}")
    prompts = tokenize_prompts(root, options.prompts, src_spec.vocab_size)
    longest = max(len(p.ids) for p in prompts)
    if options.context_sweep is not None and not 0 <= options.context_sweep <= longest:
        raise ParityError(f"--context-sweep {options.context_sweep}: must be 1..{longest} "
                          "(the longest prompt's token count)")
    if reference is None:
        reference = Reference.load(str(root), options.threads)
    with open_runtime(blob, config, options.threads, options.rope_pairing) as model:
        return check_parity(reference, model, prompts, options, src, str(blob), notes)


def write_dump(path: Path, report: ParityReport, layer: int) -> None:
    """Save both sides' stage tensors of ``layer`` (``hf.<stage>``, ``bump.<stage>``) and the
    token ids to an .npz, atomically (an existing file is replaced)."""
    diff = report.stages_of(layer)
    if diff is None:
        raise ParityError(f"--dump: layer {layer} was not diffed (pass --layer {layer})")
    arrays = {"tokens": np.asarray(report.prompts[report.sweep_prompt].ids, dtype=np.int64),
              "layer": np.asarray(layer)}
    arrays.update({f"hf.{k}": v for k, v in diff.ref.items()})
    arrays.update({f"bump.{k}": v for k, v in diff.run.items()})
    with atomic_output(path, force=True) as fd:
        with os.fdopen(os.dup(fd), "wb") as f:
            np.savez(f, **arrays)
