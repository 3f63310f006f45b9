"""Parity metrics: how far a runtime tensor is from HF's, and which checks pass.

The parity run as a whole (:mod:`.check`) is:

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

from dataclasses import dataclass, field

import numpy as np

from ..format.errors import ParityError
from ..format.stages import STAGES
from .reference import PromptTokens, ReferenceRun


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
    rows = [compare_tensor(s.stage, s.key, run.get(s.key), ref[s.key], rtol, s.position_axis)
            for s in STAGES if s.key in ref]
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
