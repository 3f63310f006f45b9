"""Parity metrics: how far a runtime tensor is from HF's, and which checks pass.

The parity run as a whole (:mod:`.parity_run`) is:

1. token ids: the ids the runtime side's tokenizer (tokenizer.json via ``tokenizers``) produces
   must equal transformers' (a tokenizer mismatch masquerades as a weight bug otherwise);
2. logits of the full model at every position of every prompt (max abs difference, NMSE, KL,
   top-1 agreement) - the only check that decides "same model" on its own;
3. a layer sweep: the hidden state after every layer against HF, naming the first layer beyond
   tolerance;
4. a stage sweep: every runtime tap of every layer against the HF value, in forward order up
   to the first layer that differs, naming the first stage beyond the stage tolerance
   (``--layer N`` prints one layer's table); when every layer and stage matches but the logits
   do not, the final norm and the logits are diffed;
5. optionally a context sweep (context 1..N through both the prefill and the decode path).

**Relative error** is ``max|run - ref| / scale`` over the whole tensor (fp64 arithmetic;
``ref`` is HF). Entries that are ``-inf`` on both sides (masked attention scores) are equal; a
``-inf`` on one side only is an infinite error. The position of a failure is the first position
``p`` whose own ``max|run[p] - ref[p]|`` exceeds ``rtol * scale``.

The **scale** is the magnitude the tensor's fp32 rounding is proportional to: not the tensor's
own maximum alone, because the residual stream carries values that some layers cancel (SmolLM2
-135M carries ~17,000 in one channel; its layer 28 takes it to ~2,100), and what rounding left in
the large value stays, in absolute terms, in the small one (docs/parity.md, "The scale"). With
``h[i]`` HF's residual stream entering layer ``i`` (``h[0]`` the embeddings, ``h[i + 1]`` the
layer's output) and ``|x|`` the largest finite magnitude of ``x``:

* **layer sweep** (decision (b) of issue 18): layer ``i``'s output against
  ``max(|h[i]|, |h[i + 1]|)``, the largest magnitude of the stream that enters or leaves it;
  the embeddings against ``|h[0]|``.
* **stage sweep**, layer ``i``: the stream enters at the scale the sweep accepted it at,
  ``S_in = max(|h[i - 1]|, |h[i]|)`` (``|h[0]|`` for layer 0). The two stages that *are* the
  stream are measured like the sweep: ``resid1`` (= in + wo) against ``S_mid = max(S_in,
  |resid1|)``, ``out`` (= resid1 + down) against ``max(S_mid, |out|)``. Every other stage is a
  branch read through an RMSNorm from the stream before it (attention: ``ln1`` .. ``wo`` from
  the layer input; MLP: ``ln2`` .. ``down`` from ``resid1``); a norm turns the stream's error
  relative to the stream's own maximum into the same relative error of the branch, so a branch
  stage is measured against its own maximum widened by how far that stream is below the scale
  its error was accepted at: ``|stage| * S_in / |h[i]|`` (attention), ``|stage| * S_mid /
  |resid1|`` (MLP). Where the stream does not shrink the factor is 1 and a branch stage is
  held to its own magnitude (on SmolLM2 it exceeds 1.1 only in layers 10, 11 and 29).
* **output head**: ``final_norm`` and ``logits`` read the last layer's output through the
  final norm: their own maximum times ``S / |h[L]|``, ``S`` the last layer's sweep scale.

Thresholds and their reasons are in :class:`Thresholds` and docs/parity.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.errors import ParityError
from ..format.stages import STAGES
from .reference_data import PromptTokens, ReferenceRun


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria for an fp32 blob (docs/parity.md gives the measured margins).

    ``logit_atol``: max |logit difference| at every position. ``nmse``: per position,
    mean((run - ref)^2) / var(ref) over the vocabulary. ``kl``: per position, KL(ref || run) in
    nats. ``rtol``: relative error of the hidden state after every layer (``--tol``).
    ``stage_rtol``: relative error of every stage (``--stage-tol``), ten times ``rtol`` because
    a stage is held to its own magnitude, where fp32 noise is larger than in the stream: on
    SmolLM2-135M's blobs HF fp32 itself is up to 3.6e-5 from HF float64 at a stage (q5_k_m,
    layer 25 probs) and the runtime up to 2.9e-5 from HF fp32, while a layout bug is off by
    ~1 and the smallest planted defects by 3e-4 (docs/parity.md). Top-1 must agree at every
    position, except that the runtime may pick a token whose reference logit is within
    ``logit_atol`` of the reference maximum (a tie at fp32 resolution).
    """

    logit_atol: float = 1e-3
    nmse: float = 1e-6
    kl: float = 1e-6
    rtol: float = 1e-5
    stage_rtol: float = 1e-4



# -- metrics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """``run`` against ``ref``: overall and per-position error, relative to ``scale`` (at least
    ``max|ref|``; see the module docstring for what widens it)."""

    max_abs: float
    ref_max: float
    per_position: np.ndarray  # max |run[p] - ref[p]| for each position p
    scale: float

    @property
    def rel(self) -> float:
        return _ratio(self.max_abs, self.scale)

    def first_position_over(self, rtol: float) -> int | None:
        bad = np.flatnonzero(self.per_position > rtol * self.scale)
        return int(bad[0]) if len(bad) else None


def _ratio(num: float, den: float) -> float:
    if num == 0:
        return 0.0
    return num / den if den > 0 else float("inf")


def magnitude(x: np.ndarray) -> float:
    """The largest finite magnitude of ``x`` (0 for none): ``|x|`` of the module docstring."""
    finite = np.abs(x[np.isfinite(x)].astype(np.float64))
    return float(finite.max(initial=0.0))


def difference(run: np.ndarray, ref: np.ndarray, position_axis: int = 0,
               widen: float = 1.0, floor: float = 0.0) -> Difference:
    """Compare two same-shaped arrays (see the module docstring for the definition): the
    scale is ``max(widen * max|ref|, floor)``."""
    a, b = run.astype(np.float64), ref.astype(np.float64)
    both_finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_finite, np.abs(a - b), 0.0)
        diff[~both_finite & ~(a == b)] = np.inf  # -inf vs -inf is equal; NaN never is
    ref_max = magnitude(b)
    axes = tuple(i for i in range(diff.ndim) if i != position_axis)
    return Difference(float(diff.max(initial=0.0)), ref_max, diff.max(axis=axes, initial=0.0),
                      max(widen * ref_max, floor))


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
                   position_axis: int = 0, widen: float = 1.0, floor: float = 0.0) -> Row:
    """A :class:`Row` for one tensor; a missing or mis-shaped runtime tensor fails."""
    shape = tuple(ref.shape)
    if run is None:
        return Row(stage, key, shape, None, "missing from the runtime's taps", rtol)
    if tuple(run.shape) != shape:
        return Row(stage, key, shape, None, f"runtime shape {list(run.shape)}", rtol)
    return Row(stage, key, shape, difference(run, ref, position_axis, widen, floor), None, rtol)


def sweep_scales(hidden: np.ndarray) -> list[float]:
    """The layer sweep's scale of every row of ``[L + 1, n, E]`` hidden states (HF's):
    ``|h[0]|`` for the embeddings, ``max(|h[i]|, |h[i + 1]|)`` for layer i's output."""
    mags = [magnitude(h) for h in hidden]
    return [mags[0]] + [max(mags[i], mags[i + 1]) for i in range(len(mags) - 1)]


def _widen(scale: float, stream: float) -> float:
    """How far a stream of magnitude ``stream`` is below the ``scale`` its error was accepted
    at (>= 1; 1 for a stream of nothing, whose branches are then held to their own size)."""
    return max(scale / stream, 1.0) if stream > 0 else 1.0


@dataclass
class LayerSweep:
    """Hidden state after every layer; entry 0 is the embedding output."""

    rows: list[Row]

    @property
    def first_bad(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)


def layer_sweep(run: np.ndarray, ref: np.ndarray, rtol: float) -> LayerSweep:
    """Compare ``[L + 1, n, E]`` hidden states; row keys are ``embed`` and ``layer.<i>``; each
    against its :func:`sweep_scales` entry."""
    if run.shape != ref.shape:
        raise ParityError(f"runtime hidden states have shape {list(run.shape)}, "
                          f"HF {list(ref.shape)}")
    scales = sweep_scales(ref)
    return LayerSweep([compare_tensor("embed" if i == 0 else "out",
                                      "embed" if i == 0 else f"layer.{i - 1}", run[i], ref[i], rtol,
                                      floor=scales[i])
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


#: The stages that are the residual stream itself (in STAGES order: the stages before the first
#: are the attention branch, read from the layer input; those between them the MLP branch).
STREAM = ("resid1", "out")


def stage_diff(layer: int, run: dict[str, np.ndarray], ref: dict[str, np.ndarray],
               rtol: float, hidden: np.ndarray) -> StageDiff:
    """Diff every stage HF has for this layer (``q_norm``/``k_norm`` only for Qwen3), each
    against the scale the module docstring defines; ``hidden`` is HF's ``[L + 1, n, E]``
    residual stream (entry ``layer`` enters the layer)."""
    scales = sweep_scales(hidden)
    accepted = scales[layer]  # S_in: the scale the sweep accepted the layer's input at
    stream = magnitude(hidden[layer])
    rows = []
    for s in STAGES:
        if s.key not in ref:
            continue
        if s.key in STREAM:
            accepted = max(accepted, magnitude(ref[s.key]))
            stream = magnitude(ref[s.key])
            rows.append(compare_tensor(s.stage, s.key, run.get(s.key), ref[s.key], rtol,
                                       s.position_axis, floor=accepted))
        else:
            rows.append(compare_tensor(s.stage, s.key, run.get(s.key), ref[s.key], rtol,
                                       s.position_axis, widen=_widen(accepted, stream)))
    return StageDiff(layer, rows, {k: v for k, v in run.items() if k in ref}, ref)


def first_divergent_layer(sweep: LayerSweep, stages: list[StageDiff]) -> int | None:
    """The first layer, in forward order, with a stage beyond tolerance (``stages``: the stage
    diffs of layers 0, 1, ..., in order) or an output beyond it (None: every layer matches; the
    embeddings, before any layer, are the sweep's row 0)."""
    for diff in stages:
        if diff.layer is not None and (diff.first_bad is not None
                                       or not sweep.rows[diff.layer + 1].ok):
            return diff.layer
    bad = sweep.first_bad
    return None if bad is None or bad.key == "embed" else sweep.rows.index(bad) - 1


def output_diff(run: dict[str, np.ndarray], ref: ReferenceRun, rtol: float) -> StageDiff:
    """Final norm and logits, for when every layer matches but the logits do not; widened by
    how far the last layer's output is below its sweep scale (the module docstring)."""
    ref_out = {"final_norm": ref.final_norm, "logits": ref.logits}
    widen = _widen(sweep_scales(ref.hidden_states)[-1], magnitude(ref.hidden_states[-1]))
    rows = [compare_tensor(key, key, run.get(key), value, rtol, widen=widen)
            for key, value in ref_out.items()]
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
