"""The parity report: where a blob first departs from its source, as text and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import (ContextSweep, LayerSweep, LogitsCheck, Row, StageDiff, Thresholds,
                      first_divergent_layer)
from .reference_data import PromptTokens


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
    stages: list[StageDiff]  # the tables shown in full: --layer, the first layer that differs
    context: ContextSweep | None
    stage_sweep: list[StageDiff] = field(default_factory=list)  # every layer's rows

    def stages_of(self, layer: int | None) -> StageDiff | None:
        """The stage diff of ``layer`` (None: the output head), if one was run."""
        return next((d for d in self.stages if d.layer == layer), None)

    @property
    def passed(self) -> bool:
        return self.divergence is None

    @property
    def divergence(self) -> Divergence | None:
        """The first failing check in forward order: tokens, the embeddings, the first layer
        with a stage or output beyond tolerance (its first such stage, else its output), the
        output head, the logits, a requested layer's stages, then the context sweep."""
        for i, p in enumerate(self.prompts):
            if p.first_mismatch is not None:
                return Divergence(p.first_mismatch, None, "tokens",
                                  f"prompt {i}: the runtime side's tokenizer and transformers' "
                                  f"AutoTokenizer give different ids from position "
                                  f"{p.first_mismatch}")
        bad_layer = self.sweep.first_bad
        if bad_layer is not None and bad_layer.key == "embed":
            return Divergence(bad_layer.first_position, None, "embed", _row_detail(bad_layer))
        layer = self.first_layer
        if layer is not None:
            return self._layer_divergence(layer)
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

    @property
    def first_layer(self) -> int | None:
        """The first layer with a stage or an output beyond tolerance (forward order)."""
        return first_divergent_layer(self.sweep, self.stage_sweep)

    def _layer_divergence(self, layer: int) -> Divergence:
        diff = self.stages_of(layer) or next(
            (d for d in self.stage_sweep if d.layer == layer), None)
        stage = diff.first_bad if diff is not None else None
        if stage is None:
            row = self.sweep.rows[layer + 1]
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
                    + f"within rtol {self.thresholds.rtol:g}"
                    + (f", their stages within {self.thresholds.stage_rtol:g}"
                       if self.stage_sweep else ""))
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
            "stage_sweep": [{"layer": diff.layer, "worst": worst.key, "worst_rel": worst.rel,
                             "first_bad": diff.first_bad.key if diff.first_bad else None}
                            for diff in self.stage_sweep
                            for worst in [max(diff.rows, key=lambda r: r.rel)]],
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
            "scale": None if r.diff is None else r.diff.scale,
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


def format_report(r: ParityReport, dumped: Path | None = None) -> str:
    """The human-readable report: one section per check, the verdict last."""
    t = r.thresholds
    out = [f"parity: {r.blob} against {r.src} (transformers fp32, eager attention)"]
    out += [f"note: {n}" for n in r.notes]
    sizes = ", ".join(str(len(p.ids)) for p in r.prompts)
    bad = [i for i, p in enumerate(r.prompts) if p.first_mismatch is not None]
    if all(p.synthetic for p in r.prompts):
        out.append(f"tokens: {len(r.prompts)} synthetic prompt(s) of {sizes} ids")
    else:
        out.append(f"tokens: {len(r.prompts)} prompt(s) of {sizes} tokens; runtime-side tokenizer and "
                   "AutoTokenizer ids " + ("identical" if not bad else
                                            f"DIFFER in prompt(s) {', '.join(map(str, bad))}"))
    out.append(f"\nlogits at every position (pass: max|diff| <= {t.logit_atol:g}, NMSE <= "
               f"{t.nmse:g}, KL <= {t.kl:g}, top-1 agrees)")
    out.append(f"  {'prompt':>6} {'tokens':>6} {'max|diff|':>10} {'max NMSE':>10} {'max KL':>10} "
               f"{'top-1':>9} {'first bad':>9}")
    for i, c in enumerate(r.logits):
        first = str(int(c.bad_positions[0])) if not c.passed else "-"
        out.append(f"  {i:>6} {len(c.max_abs):>6} {c.max_abs.max():>10.2e} {c.nmse.max():>10.2e} "
                   f"{c.kl.max():>10.2e} {f'{c.top1_identical}/{len(c.max_abs)}':>9} {first:>9}")
    out.append(f"\nhidden state after every layer, prompt {r.sweep_prompt} (relative error "
               f"max|run-ref|/scale, scale max|stream in, out|; rtol {t.rtol:g})")
    out += _rows(r.sweep.rows, r.sweep.first_bad)
    if r.stage_sweep:
        first = r.first_layer
        upto = "" if first is None else ", up to the first layer that differs"
        out.append(f"\nstages of every layer{upto}, prompt {r.sweep_prompt} (the worst stage of "
                   f"each; rtol {t.stage_rtol:g})")
        out.append(f"  {'':<12} {'worst':<12} {'rel':>10} {'first bad':>12}")
        for diff in r.stage_sweep:
            worst = max(diff.rows, key=lambda row: row.rel)
            bad = diff.first_bad.key if diff.first_bad is not None else "-"
            out.append(f"  {f'layer.{diff.layer}':<12} {worst.key:<12} {worst.rel:>10.2e} "
                       f"{bad:>12}" + ("  <- first" if diff.layer == first else ""))
    for diff in r.stages:
        what = "the output head" if diff.layer is None else f"layer {diff.layer}"
        out.append(f"\nstages of {what}, prompt {r.sweep_prompt} (rtol {t.stage_rtol:g})")
        out += _rows(diff.rows, diff.first_bad)
        if diff.first_bad is not None:
            out.append(f"  first stage beyond tolerance: {diff.first_bad.stage}")
    if r.context is not None:
        c = r.context
        out.append(f"\ncontext sweep 1..{len(c.prefill.max_abs)}: the last position's logits, "
                   "prefill of each prefix and decode steps, against HF")
        for name, check in (("prefill", c.prefill), ("decode", c.decode)):
            out.append(f"  {name:<8} max|diff| {check.max_abs.max():.2e}, max KL "
                       f"{check.kl.max():.2e}, top-1 {check.top1_identical}/{len(check.max_abs)}")
        out.append(f"  first context where top-1 changes: {c.first_top1_change or 'none'}; "
                   f"first failing context: {c.first_failure or 'none'}")
    if dumped is not None:
        out.append(f"\nstage tensors saved to {dumped}")
    out.append("\n" + r.verdict)
    return "\n".join(out)


def _rows(rows: list[Row], first_bad: Row | None) -> list[str]:
    out = [f"  {'':<12} {'shape':<16} {'max|diff|':>10} {'max|ref|':>10} {'scale':>10} "
           f"{'rel':>10} {'first pos':>9}"]
    for row in rows:
        if row.diff is None:
            out.append(f"  {row.key:<12} {str(list(row.shape)):<16} {row.problem}"
                       + ("  <- first" if row is first_bad else ""))
            continue
        pos = row.first_position
        out.append(f"  {row.key:<12} {str(list(row.shape)):<16} {row.diff.max_abs:>10.2e} "
                   f"{row.diff.ref_max:>10.2e} {row.diff.scale:>10.2e} {row.rel:>10.2e} "
                   f"{'-' if pos is None else pos:>9}"
                   + ("  <- first" if row is first_bad else ""))
    return out
