"""The ``bumpconv eval`` report: every statistic of every blob, its gate, text and JSON.

Numbers are printed with a fixed number of digits, so that two runs on the same inputs print
the same text (the computation is deterministic; timings are not part of the report).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .gates import Check, Limits, WeightGate
from .stats import Estimate, Summary, TokenScores

#: Comparison keys (see :mod:`.lockstep`) with their labels in the text report.
LABELS = {"blob_vs_hf": "(a) blob vs HF",
          "dequantized_vs_hf": "(b) dequantized vs HF",
          "blob_vs_dequantized": "(c) blob vs dequantized"}


@dataclass(frozen=True)
class SampleInfo:
    """What was evaluated: the corpus, its hash and how it was cut."""

    name: str
    description: str
    kind: str
    language: str
    licence: str
    source: str
    sha256: str
    tokens: int
    chunks: int
    scored: int
    gated: bool
    synthetic: bool


@dataclass(frozen=True)
class GateCheck:
    """A gate limit applied to one comparison of one corpus."""

    sample: str
    comparison: str
    check: Check


@dataclass
class BlobResult:
    """One blob: its weight types, its gate, and the three comparisons on every corpus."""

    blob: str
    notes: list[str]
    dtypes: list[str]
    gate: WeightGate
    identical: bool                             # weights bit-identical to SRC's
    summaries: dict[str, dict[str, Summary]]    # corpus -> comparison -> statistics
    scores: dict[str, TokenScores]              # corpus -> per-token scores of (a), for plots


@dataclass
class EvalReport:
    """Everything one ``bumpconv eval`` run measured; :attr:`passed` is the exit status."""

    src: str
    ctx: int
    first_scored: int
    gates_source: str
    kernels: Limits
    samples: list[SampleInfo]
    blobs: list[BlobResult]

    def checks(self, b: BlobResult) -> list[GateCheck]:
        """The weight-type gate on (a) and the kernel gate on (c), for every gated corpus."""
        out = []
        for s in self.samples:
            if s.gated:
                comp = b.summaries[s.name]
                out += [GateCheck(s.name, "blob_vs_hf", c) for c in b.gate.check(comp["blob_vs_hf"])]
                out += [GateCheck(s.name, "blob_vs_dequantized", c)
                        for c in self.kernels.check(comp["blob_vs_dequantized"])]
        return out

    def blob_passed(self, b: BlobResult) -> bool:
        return all(g.check.passed for g in self.checks(b))

    @property
    def passed(self) -> bool:
        return all(self.blob_passed(b) for b in self.blobs)

    def to_json(self) -> dict[str, Any]:
        """Every figure, the gates used and the verdicts (non-finite numbers as strings)."""
        return _finite({
            "src": self.src, "passed": self.passed,
            "reference": "transformers fp32, eager attention",
            "protocol": {"ctx": self.ctx, "scored_positions": [self.first_scored, self.ctx - 2],
                         "definition": "llama.cpp llama-perplexity --kl-divergence"},
            "gates": {"source": self.gates_source, "kernels": self.kernels.model_dump()},
            "corpora": [asdict(s) for s in self.samples],
            "blobs": [{
                "blob": b.blob, "notes": b.notes, "weight_types": b.dtypes,
                "gate": b.gate.model_dump(), "weights_identical_to_source": b.identical,
                "passed": self.blob_passed(b),
                "results": {s: {c: asdict(v) for c, v in comp.items()}
                            for s, comp in b.summaries.items()},
                "checks": [{"corpus": g.sample, "comparison": g.comparison,
                            "metric": g.check.metric, "value": g.check.value, "op": g.check.op,
                            "limit": g.check.limit, "passed": g.check.passed}
                           for g in self.checks(b)],
            } for b in self.blobs],
        })


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _pm(e: Estimate, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return f"{format(e.value * scale, fmt)} ± {format(e.se * scale, fmt)}{unit}"


#: The statistic rows of a blob's table: (label, formatter of a Summary).
ROWS: tuple[tuple[str, Any], ...] = (
    ("PPL (test side)", lambda s: _pm(s.ppl, ".4f")),
    ("PPL (base side)", lambda s: _pm(s.ppl_base, ".4f")),
    ("PPL ratio", lambda s: _pm(s.ppl_ratio, ".6f")),
    ("ln(PPL ratio)", lambda s: _pm(s.ln_ppl_ratio, ".3e")),
    ("mean KL", lambda s: _pm(s.kl_mean, ".3e")),
    ("median KL", lambda s: f"{s.kl_median:.3e}"),
    ("99% KL", lambda s: f"{s.kl_p99:.3e}"),
    ("99.9% KL", lambda s: f"{s.kl_p999:.3e}"),
    ("max KL", lambda s: f"{s.kl_max:.3e}"),
    ("same top", lambda s: _pm(s.same_top, ".3f", 100, " %")),
    ("RMS Δp", lambda s: _pm(s.dp_rms, ".3f", 100, " %")),
    ("max |Δp|", lambda s: f"{100 * s.dp_max:.3f} %"),
)


def _limits(limits: Limits) -> str:
    parts = []
    if limits.mean_kl_max is not None:
        parts.append(f"mean KL < {limits.mean_kl_max:g}")
    if limits.same_top_min is not None:
        parts.append(f"same top >= {100 * limits.same_top_min:g} %")
    if limits.ppl_ratio_max is not None:
        parts.append(f"PPL ratio < {limits.ppl_ratio_max:g}")
    return ", ".join(parts) or "no limits"


def _check_text(g: GateCheck) -> str:
    c = g.check
    value, limit = (f"{100 * c.value:.3f} %", f"{100 * c.limit:g} %") if c.metric == "same top" \
        else (f"{c.value:.3e}" if c.metric == "mean KL" else f"{c.value:.6f}", f"{c.limit:g}")
    mark = "ok" if c.passed else "FAIL"
    return f"{LABELS[g.comparison][:3]} {g.sample}: {c.metric} {value} {c.op} {limit} {mark}"


def format_report(r: EvalReport) -> str:
    """The human-readable report: the corpora, then one table per blob and corpus, verdicts."""
    out = [f"eval: {len(r.blobs)} blob(s) against {r.src} (transformers fp32, eager attention)",
           f"chunks of {r.ctx} tokens from position 0; scored: logits at positions "
           f"{r.first_scored}..{r.ctx - 2} of each chunk (llama.cpp --kl-divergence)",
           f"gates: {r.gates_source}; kernels (c): {_limits(r.kernels)}"]
    for s in r.samples:
        role = "gated" if s.gated else "reported only"
        out.append(f"\ncorpus {s.name} ({s.kind}, {s.language}; {role}): {s.description}")
        out.append(f"  source: {s.source}; licence: {s.licence}")
        out.append(f"  {s.tokens} tokens, {s.chunks} chunks, {s.scored} scored tokens, "
                   f"sha256 {s.sha256}")
    for b in r.blobs:
        out.append(f"\nblob {b.blob}: weight types {', '.join(b.dtypes)}; gate {b.gate.dtype}: "
                   f"{_limits(b.gate)}")
        out += [f"  note: {n}" for n in b.notes]
        if b.identical:
            out.append("  weights bit-identical to the source: (b) is zero by construction and "
                       "(c) equals (a)")
        for s in r.samples:
            comp = b.summaries[s.name]
            out.append(f"  corpus {s.name}, {s.scored} tokens"
                       + ("" if s.gated else " (reported only)"))
            out.append(f"    {'':<16}" + "".join(f"{LABELS[c]:>26}" for c in comp))
            for label, fmt in ROWS:
                out.append(f"    {label:<16}" + "".join(f"{fmt(v):>26}" for v in comp.values()))
        checks = r.checks(b)
        out += [f"  {_check_text(g)}" for g in checks]
        verdict = "PASS" if r.blob_passed(b) else "FAIL"
        out.append(f"  {verdict}: {b.blob}" + ("" if checks else " (no gated corpus)"))
    passed = sum(r.blob_passed(b) for b in r.blobs)
    out.append(f"\n{'PASS' if r.passed else 'FAIL'}: {passed} of {len(r.blobs)} blob(s) within "
               "their gates")
    return "\n".join(out)
